#!/usr/bin/env bash
# kafka.sh: run a real single-node Apache Kafka broker (KRaft, broker+controller) from Maven Central.
#
#   scripts/kafka.sh fetch          resolve the broker's jars into scripts/kafka/.cache/libs
#   scripts/kafka.sh start DIR      format DIR (first time), start the broker, wait for a real
#                                   metadata answer; prints the bootstrap address (also in DIR/bootstrap)
#   scripts/kafka.sh stop DIR       graceful stop (SIGTERM), waits up to 30 s
#   scripts/kafka.sh kill DIR       hard kill (SIGKILL), as a crash would
#   scripts/kafka.sh status DIR     exit 0 when the broker answers a metadata request
#
# A restarted DIR keeps its port, cluster id and data. Env: KAFKA_PORT (default: a free port),
# KAFKA_HEAP (default 512m), JAVA (default java; must be 17+), KAFKA_ADVERTISED_PORT (advertise
# another port, e.g. a latency-injecting proxy in front of the broker; default: the broker's),
# KAFKA_PROXIED_PORT and KAFKA_PROXIED_ADVERTISED_PORT (a second listener, advertised at another
# port: clients that bootstrap through a proxy stay behind it while others connect directly).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
libs="$here/kafka/.cache/libs"
java=${JAVA:-java}

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  if [ -f "$libs/kafka_2.13-"*.jar ] 2>/dev/null && [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: run scripts/bootstrap.sh"
  rm -rf "$libs"
  mvn -B -q -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >&2 || die "maven could not resolve the broker"
  touch "$libs/.complete"
}

# free_port picks a port below the kernel's ephemeral range: a port in that range can be taken
# at any moment as the local end of an outgoing connection (the tests make thousands), and the
# broker's bind then fails with "Address already in use".
free_port() {
  local p low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$low" -gt 12000 ] || die "the ephemeral port range starts at $low: no room below it for the broker"
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 10000) + low - 10000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

ready() { # ready BOOTSTRAP SECONDS
  "$java" -cp "$libs/*" "$here/kafka/Ready.java" "$1" "$2" >&2
}

start() {
  local dir=$1
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    die "a broker already runs from $dir (pid $(cat "$dir/pid"))"
  fi
  local port cport
  if [ -f "$dir/broker.port" ]; then
    port=$(cat "$dir/broker.port"); cport=$(cat "$dir/controller.port")
  else
    port=${KAFKA_PORT:-$(free_port)}; cport=$(free_port)
    [ "$cport" = "$port" ] && cport=$(free_port)
    echo "$port" >"$dir/broker.port"; echo "$cport" >"$dir/controller.port"
  fi
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport${KAFKA_PROXIED_PORT:+,PROXIED://127.0.0.1:$KAFKA_PROXIED_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_ADVERTISED_PORT:-$port}${KAFKA_PROXIED_PORT:+,PROXIED://127.0.0.1:${KAFKA_PROXIED_ADVERTISED_PORT:-$KAFKA_PROXIED_PORT}}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
PROPS
  local cp="$libs/*"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cid
    cid=$("$java" -cp "$cp" kafka.tools.StorageTool random-uuid)
    "$java" -cp "$cp" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "storage format failed"; }
  fi
  mkdir -p "$dir/logs"
  local started=$SECONDS
  # setsid: the broker outlives this script and is not killed with the caller's process group.
  setsid "$java" -Xms256m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  if ! ready "127.0.0.1:$port" "${KAFKA_READY_TIMEOUT:-90}"; then
    tail -n 30 "$dir/logs/server.log" "$dir/logs/stdout.log" >&2 || true
    die "broker did not become ready"
  fi
  echo "127.0.0.1:$port" >"$dir/bootstrap"
  echo "kafka.sh: broker ready at 127.0.0.1:$port in $((SECONDS - started)) s (pid $(cat "$dir/pid"))" >&2
  echo "127.0.0.1:$port"
}

signal_stop() { # signal_stop DIR SIGNAL
  local dir=$1 sig=$2 pid
  [ -f "$dir/pid" ] || die "no broker pid in $dir"
  pid=$(cat "$dir/pid")
  kill "-$sig" "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) fetch ;;
  start) [ $# -ge 1 ] || die "usage: kafka.sh start DIR"; start "$1" ;;
  stop) [ $# -ge 1 ] || die "usage: kafka.sh stop DIR"; signal_stop "$1" TERM ;;
  kill) [ $# -ge 1 ] || die "usage: kafka.sh kill DIR"; signal_stop "$1" KILL ;;
  status) [ $# -ge 1 ] || die "usage: kafka.sh status DIR"; fetch; ready "$(cat "$1/bootstrap")" 3 ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
