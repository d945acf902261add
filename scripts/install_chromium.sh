#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the browser test (tests/test_serving_process.py),
# unless both are already installed. Uses sudo when not root. Nothing downloads a browser.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver
