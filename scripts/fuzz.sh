#!/usr/bin/env bash
# Fuzzes the event parser, tenant splice and filter engine (fuzz/fuzz_targets/event_input.rs)
# with cargo-fuzz (libFuzzer). Usage: scripts/fuzz.sh [SECONDS] [extra cargo-fuzz flags]
# Default 600 s; CI runs a short smoke version with a fixed FUZZ_SEED so that its outcome is
# reproducible. A crash leaves its input in fuzz/artifacts/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-600}"
shift || true

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd "$root/fuzz"
# cargo-fuzz needs nightly-only rustc flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
RUSTC_BOOTSTRAP=1 cargo fuzz run "$@" event_input -- -max_total_time="$seconds" -max_len=65536 "${seed[@]}"
