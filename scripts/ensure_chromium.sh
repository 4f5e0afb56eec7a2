#!/usr/bin/env bash
# Make sure Debian's headless browser and its WebDriver are installed (`chromium` and `chromium-driver`), for the web
# console's end-to-end tests (tests/integration/test_console.py drives /usr/bin/chromium through
# /usr/bin/chromedriver with Selenium; nothing is downloaded at test time). Usage: scripts/ensure_chromium.sh
set -euo pipefail
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  (apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver) >&2
fi
/usr/bin/chromedriver --version
