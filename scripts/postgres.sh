#!/usr/bin/env bash
# postgres.sh: a throwaway PostgreSQL cluster from Debian's postgresql package, for manual use.
# (Tests and the demo start theirs from Go: services/platform/pgrun.)
#
#   scripts/postgres.sh start DIR   initdb DIR (first time), start on a free loopback port,
#                                   print the connection URL (also in DIR/url)
#   scripts/postgres.sh stop DIR    fast shutdown
#
# Postgres refuses to run as root: as root, the cluster runs as the postgres user.
set -euo pipefail
die() { echo "postgres.sh: $*" >&2; exit 1; }
bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$bindir/initdb" ] || die "PostgreSQL server not found: run scripts/bootstrap.sh"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start() {
  local dir=$1
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then
    # The cluster runs as the postgres user, who must be able to reach DIR: say which parent
    # stops it rather than let initdb fail with "permission denied".
    local d
    d=$(dirname "$dir")
    if ! runuser -u postgres -- test -x "$d"; then
      local p=/ part
      IFS=/ read -ra parts <<<"${d#/}"
      for part in "${parts[@]}"; do   # the first directory from / that postgres cannot search
        runuser -u postgres -- test -x "$p" || break
        p=${p%/}/$part
      done
      runuser -u postgres -- test -x "$p" || d=$p
      die "as root the cluster runs as the postgres user, who cannot reach $dir: $d is mode $(stat -c %a "$d") (needs o+x); use a directory under /tmp, or chmod o+x $d"
    fi
    chown postgres: "$dir"; chmod 700 "$dir"
  fi
  [ -f "$dir/PG_VERSION" ] || as_pg "$bindir/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $(( (RANDOM % 20000) + 30000 )))
  as_pg "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" | tee "$dir/url"
}

case "${1:-}" in
  start) [ $# -ge 2 ] || die "usage: postgres.sh start DIR"; start "$2" ;;
  stop) [ $# -ge 2 ] || die "usage: postgres.sh stop DIR"; as_pg "$bindir/pg_ctl" -D "$(cd "$2" && pwd)" -m fast -w stop >/dev/null ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
