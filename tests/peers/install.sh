#!/usr/bin/env bash
# Installs the third-party interop peers the tests drive, each only when missing:
#   libcoap3-bin (Debian): coap-client-notls and friends;
#   aiocoap (PyPI): a scriptable CoAP client and server;
#   cbor2 (PyPI): an independent CBOR codec for the SenML CBOR interop client;
#   lwm2m-node-lib (npm): an LWM2M 1.0 client and server, into tests/peers/node_modules;
#   chromium (Debian) and playwright (PyPI, driving the system Chromium; no browser
#   download): the console example's browser test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v coap-client-notls >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libcoap3-bin >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if ! python3 -c 'import playwright.sync_api' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'playwright==1.65.2'
fi

if ! python3 -c 'import aiocoap' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'aiocoap==0.4.17'
fi

if ! python3 -c 'import cbor2' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'cbor2==6.3.0'
fi

if [ ! -d "$here/node_modules/lwm2m-node-lib" ]; then
  (cd "$here" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

echo "peers: $(command -v coap-client-notls) | $(chromium --version 2>/dev/null || echo 'chromium ?') | playwright $(python3 -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || echo '?') | aiocoap $(python3 -c 'import aiocoap.meta as m; print(m.version)' 2>/dev/null || echo '?') | cbor2 $(python3 -c 'import cbor2, importlib.metadata as m; print(m.version("cbor2"))' 2>/dev/null || echo '?') | lwm2m-node-lib $(node -p "require('$here/node_modules/lwm2m-node-lib/package.json').version")"
