#!/usr/bin/env bash
# check-metrics-doc.sh: fail when a Prometheus metric registered in the services' code is not
# described in docs/metrics.md (make lint runs it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
missing=0
for m in $(grep -rhoE 'Name: +"understudy_[a-z_]+"' --include='*.go' --exclude='*_test.go' "$root/services" | sed -E 's/.*"(.*)"/\1/' | sort -u); do
  if ! grep -q "\`$m\`" "$root/docs/metrics.md"; then
    echo "docs/metrics.md does not describe $m"
    missing=1
  fi
done
# The Prometheus rules and the Grafana dashboard may only use metrics that exist.
known=$(grep -rhoE 'Name: +"understudy_[a-z_]+"' --include='*.go' --exclude='*_test.go' "$root/services" | sed -E 's/.*"(.*)"/\1/' | sort -u)
for m in $(grep -hoE 'understudy_[a-z_]+' "$root/deploy/prometheus/understudy.rules.yml" "$root/deploy/grafana/understudy.json" | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
  if ! grep -qx "$m" <<<"$known"; then
    echo "deploy/ uses $m, which no service registers"
    missing=1
  fi
done
exit $missing
