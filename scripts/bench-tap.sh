#!/usr/bin/env bash
# bench-tap.sh: measure the tap's added latency and CPU against the same champion driven
# directly and through nginx (proxy_pass + mirror), at constant rates, plus its isolation from
# Kafka trouble (Kafka stopped, Kafka +500 ms). Writes bench-results/tap.md and .json.
#   scripts/bench-tap.sh [--rates 1000,5000] [--duration 15s] [--rounds 3] [--isolation-rate 1000]
#                        [--variant NAME:ITEM...] [--cpuprofile FILE]
# Needs nginx (Debian's nginx-light, installed if missing), Java and the Kafka jars.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
if ! command -v nginx >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
cd "$root/integration"
exec go run ./cmd/tapbench --out "$root/bench-results/tap.md" "$@"
