#!/usr/bin/env bash
# A real, single-node Apache Kafka broker (KRaft: broker + controller in one JVM) for twinlog's
# tests and developers. No Docker; the only download is the broker's jars from Maven Central.
#
#   deploy/kafka/kafka.sh fetch                 populate the jar cache (idempotent)
#   deploy/kafka/kafka.sh start [DIR]           start on free 127.0.0.1 ports; prints export lines
#   deploy/kafka/kafka.sh stop [--clean] [DIR]  SIGTERM, wait up to 30 s, then SIGKILL
#   deploy/kafka/kafka.sh status [DIR]          exit 0 if running, 1 if not
#   deploy/kafka/kafka.sh probe HOST:PORT       exit 0 if a broker answers a metadata request
#
#   out=$(deploy/kafka/kafka.sh start) && eval "$out"   # sets KAFKA_BOOTSTRAP and KAFKA_DIR
#
# See deploy/kafka/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$HERE/pom.xml"
LOG4J_CONF="$HERE/log4j2.properties"
TOOL_SRC="$HERE/KafkaCheck.java"

pom_prop() { sed -n "s:.*<$1>\\(.*\\)</$1>.*:\\1:p" "$POM" | head -n1; }
KAFKA_VERSION=${KAFKA_VERSION:-$(pom_prop kafka.version)}
LOG4J_VERSION=${KAFKA_LOG4J_VERSION:-$(pom_prop log4j.version)}
CACHE=${TWINLOG_KAFKA_CACHE:-$HOME/.cache/twinlog/kafka-$KAFKA_VERSION}
MARKER="$CACHE/.twinlog-complete"
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
BROKER_HEAP=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { # usage [EXIT_CODE]
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# ---------------------------------------------------------------------------------------------
# Prerequisites

require_java() {
  command -v java >/dev/null 2>&1 || die "java not found: apt-get install openjdk-17-jre-headless"
  local v major
  v=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  major=${v%%.*}
  [[ $major =~ ^[0-9]+$ ]] || die "cannot read the Java version from 'java -version' (got '$v')"
  ((major >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17 or newer, found $v: apt-get install openjdk-17-jre-headless"
}

require_javac() {
  command -v javac >/dev/null 2>&1 || die "javac not found: apt-get install openjdk-17-jdk-headless"
}

require_mvn() {
  command -v mvn >/dev/null 2>&1 || die "mvn not found: apt-get install maven"
}

# ---------------------------------------------------------------------------------------------
# Jar cache

pom_key() {
  { cat "$POM"; printf 'kafka=%s log4j=%s\n' "$KAFKA_VERSION" "$LOG4J_VERSION"; } | sha256sum | cut -d' ' -f1
}

cache_complete() {
  [[ -f $MARKER ]] && grep -qx "pom_key=$(pom_key)" "$MARKER" \
    && [[ -f $CACHE/kafka_2.13-$KAFKA_VERSION.jar ]]
}

# Takes a lock on the cache so that parallel test runs do not fetch into it at the same time.
with_cache_lock() {
  mkdir -p "$(dirname "$CACHE")"
  if command -v flock >/dev/null 2>&1; then
    (
      flock -w 600 9 || die "timed out waiting for the cache lock $CACHE.lock"
      "$@"
    ) 9>"$CACHE.lock"
  else
    "$@"
  fi
}

fetch_locked() {
  cache_complete && return 0
  require_mvn
  local t0=$SECONDS tmp mvnlog n
  tmp=$(mktemp -d "$CACHE.partial.XXXXXX")
  mvnlog="$tmp.mvn.log"
  log "fetching Kafka $KAFKA_VERSION (log4j $LOG4J_VERSION) from Maven Central into $CACHE ..."
  if ! mvn -B -q -f "$POM" \
      -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$mvnlog" 2>&1; then
    tail -n 40 "$mvnlog" >&2 || true
    rm -rf "$tmp"
    die "Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (full log: $mvnlog). Is Maven Central reachable? To try another version: KAFKA_VERSION=4.3.1 $0 fetch"
  fi
  rm -f "$mvnlog"
  [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf "$tmp"; die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not in the output"; }
  [[ -f $tmp/log4j-slf4j-impl-$LOG4J_VERSION.jar ]] || { rm -rf "$tmp"; die "log4j-slf4j-impl-$LOG4J_VERSION.jar missing from the output"; }
  n=$(find "$tmp" -maxdepth 1 -name '*.jar' | wc -l)
  {
    printf 'pom_key=%s\n' "$(pom_key)"
    printf 'kafka_version=%s\nlog4j_version=%s\njars=%s\nfetched=%s\n' \
      "$KAFKA_VERSION" "$LOG4J_VERSION" "$n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$tmp/.twinlog-complete"
  rm -rf "$CACHE"
  mv -T "$tmp" "$CACHE"
  log "fetched $n jars into $CACHE in $((SECONDS - t0)) s"
}

ensure_cache() {
  cache_complete && return 0
  with_cache_lock fetch_locked
  cache_complete || die "the jar cache $CACHE is still incomplete after fetching"
}

cmd_fetch() {
  [[ $# -eq 0 ]] || usage
  if cache_complete; then
    log "cache complete: $CACHE ($(sed -n 's/^jars=//p' "$MARKER") jars)"
    return 0
  fi
  ensure_cache
}

# Compiles KafkaCheck.java (readiness probe + transaction check) against the cached jars once per
# source version; prints the class directory.
ensure_tool() {
  local h out tmp
  h=$(sha256sum "$TOOL_SRC" | cut -c1-16)
  out="$CACHE/tool-$h"
  if [[ ! -f $out/KafkaCheck.class ]]; then
    require_javac
    tmp=$(mktemp -d "$CACHE/.tool.XXXXXX")
    javac -nowarn -encoding UTF-8 -cp "$CACHE/*" -d "$tmp" "$TOOL_SRC" >&2 \
      || { rm -rf "$tmp"; die "javac failed on $TOOL_SRC"; }
    mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp" # a parallel run may have won
  fi
  printf '%s\n' "$out"
}

# Runs KafkaCheck with the cached classpath: run_tool MODE ARGS...
run_tool() {
  local cls
  cls=$(ensure_tool)
  java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONF" -cp "$cls:$CACHE/*" KafkaCheck "$@"
}

# ---------------------------------------------------------------------------------------------
# Broker directory helpers

resolve_dir() { # resolve_dir [DIR] -> absolute dir, from the argument or $KAFKA_DIR
  local d=${1:-${KAFKA_DIR:-}}
  [[ -n $d ]] || die "no broker directory: pass DIR or set KAFKA_DIR (as printed by 'kafka.sh start')"
  [[ -d $d ]] || die "broker directory $d does not exist"
  (cd "$d" && pwd)
}

# Is PID the broker JVM of DIR? (guards against pid reuse after a crash or reboot)
is_our_broker() {
  local pid=$1 dir=$2 cmd
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *kafka.Kafka* && $cmd == *"$dir/server.properties"* ]]
}

broker_pid() { # prints the pid if the broker of DIR is running
  local dir=$1 pid
  [[ -f $dir/broker.pid ]] || return 1
  pid=$(<"$dir/broker.pid")
  is_our_broker "$pid" "$dir" || return 1
  printf '%s\n' "$pid"
}

# port_in_use PORT [listen]: true if a TCP socket (IPv4 or IPv6) uses local port PORT; in any
# state (so a new broker never lands on a port with TIME_WAIT leftovers), or with "listen" only
# listening sockets (restarting a stopped broker on its own ports: Java servers set SO_REUSEADDR).
port_in_use() {
  local hex
  hex=$(printf ':%04X' "$1")
  awk -v h="$hex" -v listen_only="${2:-}" \
    'FNR > 1 && substr($2, length($2) - 4) == h && (listen_only == "" || $4 == "0A") { found = 1 }
     END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Picks a free port below the kernel's ephemeral range (so client sockets cannot take it).
pick_port() {
  local lo hi eph_lo p i
  eph_lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  if ((eph_lo > 21000)); then lo=20000 hi=$((eph_lo - 1)); else lo=$((10000)) hi=$((eph_lo - 1)); fi
  ((hi > lo)) || { lo=61000 hi=65000; }
  for ((i = 0; i < 200; i++)); do
    p=$(((RANDOM << 15 | RANDOM) % (hi - lo + 1) + lo))
    [[ $p -ne ${1:-0} ]] || continue
    port_in_use "$p" || { printf '%s\n' "$p"; return 0; }
  done
  die "could not find a free TCP port in $lo-$hi"
}

write_config() { # write_config DIR BROKER_PORT CONTROLLER_PORT
  local dir=$1 bp=$2 cp=$3
  cat >"$dir/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh: single-node KRaft broker for tests, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cp
listeners=PLAINTEXT://127.0.0.1:$bp,CONTROLLER://127.0.0.1:$cp
advertised.listeners=PLAINTEXT://127.0.0.1:$bp
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

config_port() { # config_port DIR LISTENER_NAME
  sed -n "s/^listeners=.*$2:\\/\\/127\\.0\\.0\\.1:\\([0-9]*\\).*/\\1/p" "$1/server.properties" | head -n1
}

# Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars); the same
# format as 'StorageTool random-uuid', without paying for a JVM start.
random_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id != -* && ${#id} -eq 22 ]] && { printf '%s\n' "$id"; return 0; }
  done
}

java_opts_common() {
  printf '%s\n' -Djava.awt.headless=true "-Dlog4j2.configurationFile=$LOG4J_CONF"
}

format_storage() { # format_storage DIR
  local dir=$1 opts
  mapfile -t opts < <(java_opts_common)
  rm -rf "$dir/data"
  if ! java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${opts[@]}" -cp "$CACHE/*" \
      kafka.tools.StorageTool format --standalone -t "$(random_cluster_id)" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "formatting the storage in $dir/data failed (output above, also in $dir/format.log)"
  fi
}

launch_broker() { # launch_broker DIR -> sets BROKER_PID
  local dir=$1 opts heap
  mapfile -t opts < <(java_opts_common)
  read -r -a heap <<<"$BROKER_HEAP"
  # shellcheck disable=SC2086 # KAFKA_JVM_EXTRA_OPTS is a list of options
  java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    "${opts[@]}" ${KAFKA_JVM_EXTRA_OPTS:-} -cp "$CACHE/*" \
    kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/broker.log" 2>&1 &
  BROKER_PID=$!
  printf '%s\n' "$BROKER_PID" >"$dir/broker.pid"
}

# One Metadata request (API key 3, version 4: the oldest that Kafka 4.x still serves) over a raw
# TCP socket from bash: no JVM start, no Python. Succeeds if the answer carries our correlation id
# and lists at least one broker.
#   request: int32 size=28 | int16 api_key=3 | int16 version=4 | int32 correlation_id=0x74776C67 |
#            int16 len=13 "twinlog-probe" | int32 topics=-1 (null: all) | int8 allow_auto_create=0
#   answer:  int32 size | int32 correlation_id | int32 throttle_ms | int32 broker count | ...
bash_metadata_probe() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "%b" "\x00\x00\x00\x1c\x00\x03\x00\x04\x74\x77\x6c\x67\x00\x0dtwinlog-probe\xff\xff\xff\xff\x00" >&3
    answer=$(head -c 16 <&3 | od -An -v -tx1 | tr -d " \n")
    exec 3>&-
    [[ ${#answer} -eq 32 && ${answer:8:8} == 74776c67 ]] || exit 1
    (( 16#${answer:24:8} >= 1 && 16#${answer:24:8} < 1000 ))
  ' "${1%:*}" "${1##*:}" 2>/dev/null
}

probe() { # probe BOOTSTRAP: one metadata request, with kcat if installed, else from bash
  if command -v kcat >/dev/null 2>&1; then
    kcat -b "$1" -L -m 5 >/dev/null 2>&1
  else
    bash_metadata_probe "$1"
  fi
}

# wait_ready DIR PID BOOTSTRAP LOG_OFFSET -> 0 ready, 1 failed/timeout, 2 port already in use
wait_ready() {
  local dir=$1 pid=$2 bootstrap=$3 offset=$4 deadline=$((SECONDS + START_TIMEOUT)) started=0
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      if tail -c +"$offset" "$dir/broker.log" | grep -q -e 'Address already in use' -e 'BindException'; then
        return 2
      fi
      log "the broker exited during start-up; last 50 lines of $dir/broker.log:"
      tail -n 50 "$dir/broker.log" >&2
      return 1
    fi
    if ((started == 0)) && tail -c +"$offset" "$dir/broker.log" | grep -q 'Kafka Server started'; then
      started=1
    fi
    if ((started == 1)) && probe "$bootstrap"; then
      return 0
    fi
    sleep 0.5
  done
  log "the broker did not become ready within $START_TIMEOUT s; last 50 lines of $dir/broker.log:"
  tail -n 50 "$dir/broker.log" >&2
  return 1
}

kill_broker() { # kill_broker PID: SIGTERM, bounded wait, SIGKILL
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after $STOP_TIMEOUT s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_start() {
  [[ $# -le 1 ]] || usage
  local dir t0=$SECONDS reuse=0 attempt bp cp pid offset rc
  require_java
  if [[ -n ${1:-} ]]; then
    mkdir -p "$1"
    dir=$(cd "$1" && pwd)
  else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/twinlog-kafka.XXXXXX")
  fi
  if pid=$(broker_pid "$dir"); then
    die "a broker is already running in $dir (pid $pid, $(cat "$dir/bootstrap" 2>/dev/null)): 'kafka.sh stop $dir' first"
  fi
  ensure_cache

  if [[ -f $dir/data/meta.properties && -f $dir/server.properties ]]; then
    reuse=1 # restart of a stopped broker: keep its data, cluster id and ports
    bp=$(config_port "$dir" PLAINTEXT)
    cp=$(config_port "$dir" CONTROLLER)
    [[ -n $bp && -n $cp ]] || die "cannot read the ports from $dir/server.properties"
    for p in "$bp" "$cp"; do
      port_in_use "$p" listen && die "port $p of the existing broker in $dir is taken; start with a new DIR or 'kafka.sh stop --clean $dir'"
    done
    log "restarting the existing broker in $dir (ports $bp/$cp)"
  fi

  for attempt in 1 2 3; do
    if ((reuse == 0)); then
      bp=$(pick_port)
      cp=$(pick_port "$bp")
      write_config "$dir" "$bp" "$cp"
      format_storage "$dir"
    fi
    printf '127.0.0.1:%s\n' "$bp" >"$dir/bootstrap"
    touch "$dir/broker.log"
    offset=$(($(stat -c %s "$dir/broker.log") + 1))
    launch_broker "$dir"
    pid=$BROKER_PID
    rc=0
    wait_ready "$dir" "$pid" "127.0.0.1:$bp" "$offset" || rc=$?
    case $rc in
      0)
        log "broker ready at 127.0.0.1:$bp (controller 127.0.0.1:$cp), pid $pid, dir $dir, in $((SECONDS - t0)) s"
        printf 'export KAFKA_BOOTSTRAP=127.0.0.1:%s\n' "$bp"
        printf 'export KAFKA_DIR=%s\n' "$dir"
        return 0
        ;;
      2)
        if ((reuse == 0 && attempt < 3)); then
          log "port $bp or $cp was taken meanwhile; retrying with new ports"
          continue
        fi
        log "a port is already in use; last 50 lines of $dir/broker.log:"
        tail -n 50 "$dir/broker.log" >&2
        break
        ;;
      *)
        kill_broker "$pid"
        break
        ;;
    esac
  done
  die "the broker in $dir did not start (log: $dir/broker.log)"
}

cmd_stop() {
  local clean=0 dir pid
  if [[ ${1:-} == --clean ]]; then clean=1; shift; fi
  [[ $# -le 1 ]] || usage
  dir=$(resolve_dir "${1:-}")
  if pid=$(broker_pid "$dir"); then
    log "stopping the broker in $dir (pid $pid)"
    kill_broker "$pid"
    is_our_broker "$pid" "$dir" && die "pid $pid is still running"
    log "stopped"
  else
    log "no broker running in $dir"
  fi
  if ((clean == 1)); then
    [[ -f $dir/server.properties || -f $dir/broker.log ]] \
      || die "refusing to remove $dir: it does not look like a kafka.sh directory"
    rm -rf "$dir"
    log "removed $dir"
  fi
}

cmd_status() {
  [[ $# -le 1 ]] || usage
  local dir pid bootstrap rss
  dir=$(resolve_dir "${1:-}")
  bootstrap=$(cat "$dir/bootstrap" 2>/dev/null || echo '?')
  if pid=$(broker_pid "$dir"); then
    rss=$(ps -o rss= -p "$pid" | tr -d ' ')
    printf 'running pid=%s bootstrap=%s rss=%sMiB dir=%s\n' "$pid" "$bootstrap" "$((rss / 1024))" "$dir"
    return 0
  fi
  printf 'stopped bootstrap=%s dir=%s\n' "$bootstrap" "$dir"
  return 1
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  case $cmd in
    fetch) require_java; cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    probe) # probe BOOTSTRAP [--java]: exit 0 if a broker answers a metadata request
      if [[ ${2:-} == --java ]]; then require_java; ensure_cache; run_tool probe "${1:?}"; else probe "${1:?usage: kafka.sh probe BOOTSTRAP [--java]}"; fi ;;
    tool) require_java; ensure_cache; run_tool "$@" ;; # used by check-transactions.sh
    -h | --help | help) usage 0 ;;
    *) log "unknown command '$cmd'"; usage ;;
  esac
}

main "$@"
