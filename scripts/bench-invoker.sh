#!/usr/bin/env bash
# bench-invoker.sh: invoker throughput against a fast local shadow and its memory under a shadow
# 10x slower than the champion, on the real Kafka broker. Writes bench-results/invoker.md.
#   scripts/bench-invoker.sh [--events 50000] [--shadows 2] [--slow-for 30s]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
cd "$root/integration"
exec go run ./cmd/invokerbench --out "$root/bench-results/invoker.md" "$@"
