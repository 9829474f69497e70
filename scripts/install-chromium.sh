#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the console's browser tests (tests/console_browser.rs), from
# Debian's packages. Idempotent: does nothing when both are there. The tests fail with a clear message,
# never pass, when they are missing.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    echo "install-chromium: need root (or sudo) to install chromium and chromium-driver" >&2
    exit 1
fi
sudo=""
[[ "$(id -u)" != 0 ]] && sudo="sudo"
echo "== installing chromium and chromium-driver (the console's browser tests)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
