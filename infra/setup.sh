#!/usr/bin/env bash
# Prepares a Debian machine (run as root, or with sudo available) to run the system and its tests:
# Bun and Deno from npm; ffmpeg, libheif-examples (and for the tests: procps, iproute2, chromium for the console's browser tests,
# libvips-tools for the benchmarks, Python with pika, jsonschema and boto3 for the other-language backend, and promtool) from apt; RabbitMQ started if installed but stopped; then
# `bun install`.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION=1.4.5
# The API also runs on Deno (tests/deno.test.ts proves it); the processors run on Bun.
DENO_VERSION=2.9.6
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if ! command -v bun >/dev/null || [ "$(bun --version)" != "$BUN_VERSION" ]; then
  echo "setup: installing bun $BUN_VERSION from npm"
  $SUDO npm install -g --allow-scripts=bun "bun@$BUN_VERSION" >/dev/null 2>&1 \
    || $SUDO npm install -g "bun@$BUN_VERSION" >/dev/null
fi
if ! command -v deno >/dev/null || [ "$(deno --version | head -1 | cut -d' ' -f2)" != "$DENO_VERSION" ]; then
  echo "setup: installing deno $DENO_VERSION from npm"
  $SUDO npm install -g --allow-scripts=deno "deno@$DENO_VERSION" >/dev/null 2>&1 \
    || $SUDO npm install -g "deno@$DENO_VERSION" >/dev/null
fi

missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v heif-convert >/dev/null || missing+=(libheif-examples)
# The fault tests find processes' ffmpeg children and broker connections with these.
command -v pgrep >/dev/null || missing+=(procps)
command -v ss >/dev/null || missing+=(iproute2)
# The console's tests drive Debian's Chromium through playwright-core, which downloads no browser of its own.
command -v chromium >/dev/null || missing+=(chromium)
# The benchmark suite's figure 2 compares with libvips' own vipsthumbnail.
command -v vipsthumbnail >/dev/null || missing+=(libvips-tools)
# tests/interop runs a backend in Python against the processors, with Debian's interpreter and packages.
if ! /usr/bin/python3 -c 'import pika, jsonschema, boto3' >/dev/null 2>&1; then
  missing+=(python3 python3-pika python3-jsonschema python3-boto3)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The tests check the metrics, the alert rules and the Prometheus config with promtool, which Debian ships in the
# prometheus package (the server itself is not started; without recommends it brings no exporters).
if ! command -v promtool >/dev/null; then
  echo "setup: installing prometheus (for promtool) with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if command -v rabbitmqctl >/dev/null; then
  if ! $SUDO rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then
    echo "setup: starting RabbitMQ"
    $SUDO rabbitmq-server -detached || true
    # A node started a moment ago is not yet known to epmd, and await_startup fails at once on a node it cannot find:
    # ask again until it answers (60 s at most), then once more so a failure prints why.
    for _ in $(seq 1 60); do
      $SUDO rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 && break
      sleep 1
    done
    $SUDO rabbitmqctl -q await_startup --timeout 5 >/dev/null
  fi
else
  echo "setup: RabbitMQ is not installed here; set RABBITMQ_URL to a broker (Debian: apt-get install rabbitmq-server)" >&2
fi

bun install --frozen-lockfile >/dev/null
echo "setup: ready (bun $(bun --version), deno $(deno --version | head -1 | cut -d' ' -f2), $(ffmpeg -version | head -1 | cut -d' ' -f1-3))"
