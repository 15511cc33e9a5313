#!/usr/bin/env bash
# Installs Debian's chromium for the browser test of the web app (Playwright drives it; no browser download).
# Without root or apt-get the browser test skips with a message instead.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium for the browser test (apt-get)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
else
  echo "note: /usr/bin/chromium not found and not root; the browser test will be skipped (apt-get install chromium)"
fi
exit 0
