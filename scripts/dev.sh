#!/usr/bin/env bash
# One command to try jetpost locally: installs the pinned tools if missing, builds, and runs
# `jetpost dev` (a local nats-server in operator/JWT mode, demo tenants, a demo webhook receiver).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-tools.sh >/dev/null
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$root/.tools/bin/nats-server}"
cargo build --release --locked --bin jetpost
exec target/release/jetpost dev "$@"
