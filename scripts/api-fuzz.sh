#!/usr/bin/env bash
# Fuzzes the HTTP API of a real `jetpost serve` against its contracts (Outpost's openapi.yaml and
# docs/openapi-jetpost.yaml) with schemathesis, as the admin and as a tenant, and fails on any
# server error (5xx), on a crash, or when the service is not healthy afterwards.
# Usage: scripts/api-fuzz.sh [SECONDS]   (default 240, split over the runs below)
# schemathesis (pinned) is installed into .tools/ (git-ignored). The service's log is kept in
# target/api-fuzz/serve.log, schemathesis' reports in target/api-fuzz/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-240}"

SCHEMATHESIS_VERSION="4.32.5"
tools="$root/.tools"
st="$tools/bin/schemathesis"
if ! { [ -x "$st" ] && "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; }; then
  [ -x "$tools/bin/pip" ] || python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked --quiet --bin jetpost
out="$root/target/api-fuzz"
rm -rf "$out"
mkdir -p "$out/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
api_key="api-fuzz-admin-key"

# Hookdeck's hosts point at a closed local port: fuzzed hookdeck destinations are refused at
# once instead of reaching out to the internet.
API_PORT="$port" API_KEY="$api_key" API_JWT_SECRET="api-fuzz-jwt-secret" \
  AES_ENCRYPTION_SECRET="api-fuzz-aes-secret" DATABASE_URL="sqlite://$out/data/jetpost.db" \
  LOG_LEVEL=warn DESTINATIONS_HOOKDECK_API_URL="http://127.0.0.1:9" \
  DESTINATIONS_HOOKDECK_EVENTS_URL="http://127.0.0.1:9" \
  "$root/target/debug/jetpost" serve >"$out/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

healthy() { curl -sf -o /dev/null "$base/healthz"; }
for _ in $(seq 1 100); do healthy && break; sleep 0.1; done
healthy || { echo "api-fuzz: jetpost serve did not start; log:" >&2; cat "$out/serve.log" >&2; exit 1; }

admin() { curl -sf -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' "$@"; }
# Fixtures the fuzzer's path parameters point at, so requests reach the handlers, not only 404s.
admin -X PUT "$base/api/v1/tenants/acme" >/dev/null
admin -X POST "$base/api/v1/tenants/acme/destinations" \
  -d '{"id":"des_fuzz","type":"webhook","topics":["*"],"config":{"url":"https://example.invalid/hook"}}' >/dev/null
admin -X POST "$base/api/v1/publish" \
  -d '{"id":"evt_fuzz","tenant_id":"acme","topic":"order.paid","data":{"big":1e400,"n":1}}' >/dev/null
token=$(admin "$base/api/v1/tenants/acme/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

cat >"$out/schemathesis.toml" <<'TOML'
[parameters]
tenant_id = "acme"
destination_id = "des_fuzz"
event_id = "evt_fuzz"
TOML

failed=0
run() {
  local name="$1" schema="$2" url="$3" bearer="$4" budget="$5"
  shift 5
  echo "api-fuzz: $name (${budget}s)"
  # From $out, where schemathesis keeps its cache (.schemathesis/). One worker: with two, its
  # threads have crashed CPython's compiler inside schemathesis ("AST constructor recursion
  # depth mismatch"), an error of the fuzzer, not of jetpost.
  if ! (cd "$out" && "$st" --config-file "$out/schemathesis.toml" run "$schema" --url "$url" \
      -H "Authorization: Bearer $bearer" --checks "${CHECKS:-not_a_server_error}" --max-time "$budget" \
      --workers 1 --suppress-health-check all --warnings off --request-timeout 10 \
      --report junit --report-dir "$out/$name" "$@" >"$out/$name.log" 2>&1); then
    failed=1
    echo "api-fuzz: $name found problems:" >&2
    tail -n 60 "$out/$name.log" >&2
  else
    grep -E "generated|passed" "$out/$name.log" | tail -n 1
  fi
  if ! kill -0 "$pid" 2>/dev/null || ! healthy; then
    echo "api-fuzz: jetpost serve died or is unhealthy after $name; log tail:" >&2
    tail -n 40 "$out/serve.log" >&2
    exit 1
  fi
}

slice=$((seconds / 4))
outpost="$root/tests/contract/outpost-openapi.yaml"
# Deleting the fixtures would leave the rest of the run with 404s: those routes get random ids
# in the last run.
keep_fixtures=(--exclude-method DELETE)
run admin "$outpost" "$base/api/v1" "$api_key" "$slice" "${keep_fixtures[@]}"
run tenant "$outpost" "$base/api/v1" "$token" "$slice" "${keep_fixtures[@]}"
run jetpost "$root/docs/openapi-jetpost.yaml" "$base" "$api_key" "$((slice / 2))"
# The one route of jetpost's own a tenant may call.
run jetpost-tenant "$root/docs/openapi-jetpost.yaml" "$base" "$token" "$((slice / 4))" \
  --include-path /api/v1/filters/match
rm "$out/schemathesis.toml"
touch "$out/schemathesis.toml"
run random-ids "$outpost" "$base/api/v1" "$api_key" "$((seconds - 3 * slice - slice / 2 - slice / 4))"

if grep -q "panicked" "$out/serve.log"; then
  echo "api-fuzz: a handler panicked (see $out/serve.log):" >&2
  grep -A3 "panicked" "$out/serve.log" | head -n 40 >&2
  failed=1
fi
[ "$failed" = 0 ] && echo "api-fuzz: no server errors, no crashes"
exit "$failed"
