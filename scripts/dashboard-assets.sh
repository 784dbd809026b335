#!/usr/bin/env bash
# dashboard-assets.sh: install the dashboard's front-end dependencies from the npm registry
# (versions pinned by services/aggregator/internal/dashboard/package-lock.json) and copy the files the
# page needs into services/aggregator/internal/dashboard/static/vendor/, which go:embed bundles into the
# aggregator and understudy binaries: the page never loads anything from a CDN. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/services/aggregator/internal/dashboard"
vendor="$dir/static/vendor"
if [ -f "$vendor/uPlot.iife.min.js" ] && [ "$vendor/uPlot.iife.min.js" -nt "$dir/package-lock.json" ]; then
  exit 0
fi
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
mkdir -p "$vendor"
cp "$dir/node_modules/uplot/dist/uPlot.iife.min.js" "$dir/node_modules/uplot/dist/uPlot.min.css" "$dir/node_modules/uplot/LICENSE" "$vendor/"
echo "dashboard-assets: uPlot $(node -p "require('$dir/node_modules/uplot/package.json').version") in $vendor" >&2
