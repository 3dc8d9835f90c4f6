#!/usr/bin/env bash
# Fuzzes with cargo-fuzz (libFuzzer), the time split evenly between the targets:
#   event_input  the event parser, tenant splice and filter engine;
#   api_input    API request bodies and query strings, and every view a listing serves a
#                stored event through (data byte for byte).
# Usage: scripts/fuzz.sh [SECONDS] [extra cargo-fuzz flags]
# Default 600 s in all; CI runs a short smoke version with a fixed FUZZ_SEED so that its outcome
# is reproducible. A crash leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-600}"
shift || true

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd "$root/fuzz"
# cargo-fuzz needs nightly-only rustc flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
targets=(event_input api_input)
each=$(( seconds / ${#targets[@]} ))
[ "$each" -ge 1 ] || each=1
for target in "${targets[@]}"; do
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$@" "$target" -- -max_total_time="$each" -max_len=65536 "${seed[@]}"
done
