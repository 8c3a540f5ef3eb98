#!/usr/bin/env bash
# Installs the Python worker library (sdk/python) with its pinned dependencies
# (confluent-kafka and fastavro from PyPI, pytest; sdk/python/requirements.lock)
# into a virtualenv outside the clone, $WEFT_CACHE_DIR/venv-sdk (WEFT_SDK_VENV
# moves it), and prints the path of its python on stdout. Idempotent: when the
# venv was made from the same lock file and package sources it only prints the
# path. A lock serialises concurrent callers (tests run in parallel).
# WEFT_PYTHON picks the interpreter (default python3, 3.9 or newer).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sdk=$WEFT_ROOT/sdk/python
venv=${WEFT_SDK_VENV:-$WEFT_CACHE_DIR/venv-sdk}
python=${WEFT_PYTHON:-python3}
mkdir -p "$(dirname "$venv")"

exec 9>"$venv.lock"
flock 9

# What the venv is made of: the interpreter, the lock file, the package's sources.
stamp=$(
    cd "$sdk"
    {
        "$python" -c 'import sys; print(sys.version)'
        find pyproject.toml requirements.lock src -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 |
            sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
)
if [[ -x $venv/bin/python && -f $venv/.weft-stamp && $(<"$venv/.weft-stamp") == "$stamp" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' ||
    die "$python is older than Python 3.9 (set WEFT_PYTHON)"
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import pip' 2>/dev/null; then
    log "creating the Python SDK virtualenv in $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 || die "could not create a virtualenv with $python (Debian: apt-get install python3-venv)"
fi
log "installing sdk/python and its dependencies into $venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
"${pip[@]}" install -q -r "$sdk/requirements.lock" >&2
# A copy, not an editable install: the venv outlives this clone. Built in a
# temporary copy so the clone gets no build/ or egg-info directories.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r "$sdk/pyproject.toml" "$sdk/README.md" "$sdk/src" "$build/"
"${pip[@]}" install -q --no-deps --no-build-isolation --force-reinstall "$build" >&2
"$venv/bin/python" -c 'import weft_worker, confluent_kafka, fastavro' >&2
echo "$stamp" >"$venv/.weft-stamp"
echo "$venv/bin/python"
