#!/usr/bin/env bash
# bench-decisions.sh: how often the decision procedure is wrong, in one run on this machine,
# written to bench-results/decisions.md: the share of 1,000 A/A experiments (an exact copy as
# candidate) with any FAIL or fired alert over 7 days of looks every 10 minutes at 10 labeled
# requests/s, next to the previous procedure's share on the same runs, and the power against a
# candidate 1 point less accurate, one 20 % slower at p99 and one with prediction PSI 0.2. The
# simulation drives the production code (integration/cmd/decisionbench).
#   scripts/bench-decisions.sh [--runs 1000] [--power-runs 1000] [--days 7] [--look 10m]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$root/bench-results"
cd "$root/integration" && go run ./cmd/decisionbench --out "$root/bench-results/decisions.md" "$@"
