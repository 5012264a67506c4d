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
echo "== cargo test"
cargo test --workspace --locked
