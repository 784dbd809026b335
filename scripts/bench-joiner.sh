#!/usr/bin/env bash
# bench-joiner.sh: joiner throughput against the same join written with Kafka Streams, on the
# same real Kafka broker and data, with and without labels. Writes bench-results/joiner.md.
#   scripts/bench-joiner.sh [--requests 200000] [--partitions 4] [--streams 1:100,2:100,2:1000]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
cd "$root/integration"
exec go run ./cmd/joinerbench --out "$root/bench-results/joiner.md" "$@"
