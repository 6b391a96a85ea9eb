#!/usr/bin/env bash
# Fetches playwright-core (pinned) into DEST (a folder of the build tree),
# once, for the web view's browser test (tests/e2e/test_ui.sh). It drives
# Debian's chromium (scripts/install-deps.sh): no browser is downloaded.
# Reruns find DEST/.stamp and return at once, offline.
#
#   scripts/fetch-ui-test-tools.sh DEST
#
# Exits 1 with a message saying so when the npm registry cannot be reached.
set -euo pipefail

DEST=${1:?usage: fetch-ui-test-tools.sh DEST}
PKG=playwright-core@1.65.2
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
exec 9>"$DEST/.lock"
flock 9
if [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$PKG" ] &&
   [ -d "$DEST/node_modules/playwright-core" ]; then
  exit 0
fi
die() { echo "fetch-ui-test-tools: $*" >&2; exit 1; }
command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"
export npm_config_cache="$DEST/npm-cache" npm_config_update_notifier=false \
       npm_config_fund=false npm_config_audit=false npm_config_loglevel=error
export npm_config_fetch_retries=1 npm_config_fetch_timeout=60000
# playwright-core downloads no browser on install (that is the playwright package).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
rm -f "$DEST/.stamp"
[ -f "$DEST/package.json" ] || echo '{"name":"trellis-ui-test-tools","private":true}' >"$DEST/package.json"
(cd "$DEST" && timeout 600 npm install --no-save --ignore-scripts "$PKG" >/dev/null) ||
  die "cannot install $PKG from the npm registry (unreachable?)"
echo "$PKG" >"$DEST/.stamp"
