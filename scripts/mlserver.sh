#!/usr/bin/env bash
# mlserver.sh: a real Seldon MLServer (PyPI `mlserver` with its scikit-learn runtime) serving
# two iris classifiers, for the integration tests and for trying Understudy by hand.
#
#   scripts/mlserver.sh install      create the virtualenv (MLSERVER_VENV, default .cache/mlserver-venv)
#   scripts/mlserver.sh start DIR    train iris-a (champion) and iris-b (candidate) into DIR, serve
#                                    them on a free loopback port, print the base URL (also in DIR/url)
#   scripts/mlserver.sh stop DIR     stop it
#
# Versions are pinned (MLSERVER_VERSION, default 1.7.1); DIR/testset.json holds every iris row,
# its class and both models' predictions (scripts/mlserver/models.py).
set -euo pipefail
die() { echo "mlserver.sh: $*" >&2; exit 1; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MLSERVER_VENV:-$root/.cache/mlserver-venv}
version=${MLSERVER_VERSION:-1.7.1}

install() {
  if [ -x "$venv/bin/mlserver" ] && "$venv/bin/python" -c 'import mlserver_sklearn, sklearn' 2>/dev/null; then
    return
  fi
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || {
    echo "mlserver.sh: installing python3-venv" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  }
  echo "mlserver.sh: installing mlserver $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "mlserver==$version" "mlserver-sklearn==$version" >&2
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
  local dir=$1
  install
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  local http grpc metrics
  http=$(free_port); grpc=$(free_port); metrics=$(free_port)
  "$venv/bin/python" "$root/scripts/mlserver/models.py" "$dir" "$http" "$grpc" "$metrics"
  # MLServer binds 0.0.0.0 by default; settings.json has no host key in 1.7, so use the env.
  rm -f "$dir/pid"
  # Its own session (so stop can signal the whole group); the pid file holds mlserver's pid.
  # The redirections are the background job's own, so no process keeps the caller's stdout
  # open (a caller reading this script's output would wait for ever).
  (cd "$dir/models" && exec env MLSERVER_HOST=127.0.0.1 setsid bash -c 'echo $$ >"$1"; exec "$2" start .' _ "$dir/pid" "$venv/bin/mlserver") \
    >"$dir/mlserver.log" 2>&1 </dev/null &
  for _ in $(seq 1 20); do [ -s "$dir/pid" ] && break; sleep 0.1; done
  local url="http://127.0.0.1:$http"
  for _ in $(seq 1 240); do
    if curl -fsS "$url/v2/models/iris-a/ready" >/dev/null 2>&1 && curl -fsS "$url/v2/models/iris-b/ready" >/dev/null 2>&1; then
      echo "$url" | tee "$dir/url"
      return
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -20 "$dir/mlserver.log" >&2; die "mlserver exited"; }
    sleep 0.5
  done
  tail -20 "$dir/mlserver.log" >&2
  die "mlserver not ready after 120 s"
}

stop() {
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  install) install ;;
  start) [ $# -ge 2 ] || die "usage: mlserver.sh start DIR"; start "$2" ;;
  stop) [ $# -ge 2 ] || die "usage: mlserver.sh stop DIR"; stop "$2" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
