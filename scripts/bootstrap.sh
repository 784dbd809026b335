#!/usr/bin/env bash
# bootstrap.sh: install what Understudy's build, tests and demo need on a fresh Debian machine,
# skipping whatever is already there. Idempotent; safe to run before every `make` target.
#
#   Go (1.26+, from the machine; older Go fetches the toolchain named in go.work from the module proxy)
#   Java 17+ and Maven        (Debian packages; run the real Kafka broker from Maven Central)
#   PostgreSQL server         (Debian package; tests and the demo start throwaway clusters)
#   Kafka broker jars         (scripts/kafka.sh fetch, into scripts/kafka/.cache)
#   Go modules                (go mod download in every module of go.work)
#   Node.js and npm           (Debian packages; the dashboard's charting library comes from npm)
#   dashboard assets          (scripts/dashboard-assets.sh: uPlot from npm, embedded at build time)
#   Chromium                  (only with --browser: Debian's package, for the dashboard's browser test)
#   MLServer                  (only with --mlserver: PyPI's mlserver + mlserver-sklearn in a venv,
#                              scripts/mlserver.sh install; the integration tests' real model server)
#   docker-compose            (only with --compose: Debian's package, to validate docker-compose.yml)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "bootstrap: $*" >&2; }

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    sudo_ apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }

need=()
want_mlserver=0
command -v go >/dev/null || need+=(golang-go)
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ]; then need+=(openjdk-17-jre-headless); fi
command -v mvn >/dev/null || need+=(maven)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  # Do not let the package create and start a system cluster: tests start their own.
  sudo_ mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | sudo_ tee /etc/postgresql-common/createcluster.conf >/dev/null
  need+=(postgresql)
fi
command -v npm >/dev/null || need+=(nodejs npm)
for arg in "$@"; do
  case "$arg" in
    --compose) command -v docker-compose >/dev/null || need+=(docker-compose) ;;
    --browser) command -v chromium >/dev/null || need+=(chromium) ;;
    --mlserver) want_mlserver=1; python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv); command -v curl >/dev/null || need+=(curl) ;;
  esac
done
if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi

"$root/scripts/kafka.sh" fetch
"$root/scripts/dashboard-assets.sh"
if [ "$want_mlserver" -eq 1 ]; then "$root/scripts/mlserver.sh" install; fi

cd "$root"
for m in $(go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p'); do
  (cd "$m" && go mod download)
done
log "ok: $(go version | cut -d' ' -f3), java $(java_major), $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'), postgres $(ls -d /usr/lib/postgresql/*/ 2>/dev/null | xargs -n1 basename | sort -n | tail -1)"
