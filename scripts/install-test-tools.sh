#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers and tooling, when missing:
#   promtool (prometheus)   lints metric names and scrapes /metrics in a test
#   go + sprig + yaml.v3    build the small Helm-template renderer in test/helm/render (no helm binary here)
#   openssl                 makes the certificates of the TLS and mTLS tests
#   faketime (libfaketime)  skews one meterd process's clock in the chaos suite (test/chaos)
# Idempotent and quick when everything is there; run by `npm test` (pretest) and .ci/run.
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v go >/dev/null || missing+=(golang-go)
command -v openssl >/dev/null || missing+=(openssl)
[ -n "$(find /usr/lib -name libfaketime.so.1 -print -quit 2>/dev/null)" ] || missing+=(faketime)
[ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || missing+=(golang-github-masterminds-sprig-dev)
[ -d /usr/share/gocode/src/gopkg.in/yaml.v3 ] || missing+=(golang-gopkg-yaml.v3-dev)

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "installing test tools: ${missing[*]}"
SUDO=''
if [ "$(id -u)" -ne 0 ]; then SUDO='sudo'; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
