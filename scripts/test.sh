#!/usr/bin/env bash
# Runs every jetpost test: installs the pinned tools if missing, then formatting, lints and the
# whole test suite (unit + integration against real nats-server, SQLite and PostgreSQL).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-tools.sh
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/bin/nats-server}"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
