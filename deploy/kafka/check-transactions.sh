#!/usr/bin/env bash
# Transaction check against a real Kafka broker, with Kafka's own Java client (KafkaCheck.java,
# compiled once with javac against the cached jars):
#   create a topic; a transactional producer commits 1,000 records and aborts 1,000 more; a
#   read_committed consumer must see exactly the 1,000 committed ones (read_uncommitted: 2,000);
#   delete the topic. Exits non-zero on any mismatch.
#
#   deploy/kafka/check-transactions.sh [BOOTSTRAP|DIR]
#
# Which broker: the argument (a host:port, or a directory made by 'kafka.sh start'), else
# $KAFKA_BOOTSTRAP, else $KAFKA_DIR. With none of them it starts its own broker in a temporary
# directory and stops and removes it at the end.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_SH="$HERE/kafka.sh"

target=${1:-${KAFKA_BOOTSTRAP:-${KAFKA_DIR:-}}}
own_dir=

cleanup() {
  if [[ -n $own_dir ]]; then
    "$KAFKA_SH" stop --clean "$own_dir" || true
  fi
}
trap cleanup EXIT

if [[ -z $target ]]; then
  env_lines=$("$KAFKA_SH" start)
  own_dir=$(sed -n 's/^export KAFKA_DIR=//p' <<<"$env_lines")
  target=$(sed -n 's/^export KAFKA_BOOTSTRAP=//p' <<<"$env_lines")
elif [[ -d $target ]]; then
  [[ -f $target/bootstrap ]] || { echo "check-transactions.sh: error: $target has no 'bootstrap' file; was it made by 'kafka.sh start'?" >&2; exit 1; }
  target=$(<"$target/bootstrap")
fi

echo "check-transactions.sh: checking transactions against $target" >&2
"$KAFKA_SH" tool transactions "$target"
