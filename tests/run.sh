#!/usr/bin/env bash
# Runs every twinlog test: formatting, lints, then the whole test suite.
# This is the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Shipped builds have no dev-dependency features (such as auditlog's `tamper`): lint them too.
cargo clippy --workspace --locked -- -D warnings
echo "== kafka broker"
# The Kafka bus's tests (services/bus/tests/it/kafka.rs) run against a real
# broker; under CI they fail when KAFKA_BOOTSTRAP is missing.
deploy/kafka/kafka.sh fetch
# Not `out=$(...) && eval`: under `set -e` a failure on the left of `&&`
# would not stop the script.
out=$(deploy/kafka/kafka.sh start) || { echo "run.sh: the Kafka broker did not start" >&2; exit 1; }
eval "$out"
export KAFKA_BOOTSTRAP KAFKA_DIR
trap 'deploy/kafka/kafka.sh stop --clean "$KAFKA_DIR"' EXIT
echo "== cargo test"
cargo test --workspace --locked
