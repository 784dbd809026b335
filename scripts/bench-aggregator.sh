#!/usr/bin/env bash
# bench-aggregator.sh: the aggregator's measured targets, in one run on this machine, written to
# bench-results/aggregator.md:
#   - comparisons folded into windows per second on one core (go test -bench Fold -cpu 1)
#   - time to compute PSI and KS for one window pair (go test -bench PSIAndKS)
#   - Postgres rows written per minute at 5,000 comparisons/s against a real Kafka broker and
#     Postgres (integration/cmd/aggregatorbench)
#   scripts/bench-aggregator.sh [--rate 5000] [--duration 2m]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
out="$root/bench-results/aggregator.md"
mkdir -p "$root/bench-results"
micro=$(cd "$root/services/aggregator" && go test -run '^$' -bench 'Fold|PSIAndKS' -benchmem -count 3 -cpu 1 ./window ./internal/sketch | grep '^Benchmark')
(cd "$root/integration" && go run ./cmd/aggregatorbench --out "$root/bench-results/aggregator-kafka.md" "$@")
{
  echo "# Aggregator benchmark"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), command: scripts/bench-aggregator.sh $*"
  echo
  echo "## Micro-benchmarks (one core, three runs)"
  echo
  echo '```'
  echo "$micro"
  echo '```'
  echo
  echo "## Real Kafka and Postgres"
  echo
  echo "| measure | value |"
  echo "|---|---|"
  cat "$root/bench-results/aggregator-kafka.md"
} > "$out"
cat "$out"
