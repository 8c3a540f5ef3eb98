#!/usr/bin/env bash
# Runs the workspace's tests: with cargo-nextest when it is installed (each test in
# its own process, a summary at the end), else with cargo test; then the doc tests
# (nextest does not run those). Fails when any test fails. Expects the binaries to
# be built already (`cargo build --workspace --bins`), since the integration tests
# start them. Installs the browser the console's tests drive (scripts/browser.sh)
# when it is missing. Extra arguments go to the test runner.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$WEFT_ROOT"

# Keep failure output readable: no backtraces captured into anyhow errors (a test
# returning Err); panics still follow RUST_BACKTRACE.
export RUST_LIB_BACKTRACE=${RUST_LIB_BACKTRACE:-0}

# The web console's browser tests (ui.rs) drive Debian's headless Chromium.
"$WEFT_ROOT/scripts/browser.sh" >/dev/null

status=0
if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast --no-tests=warn --failure-output final "$@" || status=$?
    log "cargo test --workspace --doc"
    cargo test --workspace --doc || status=$?
else
    log "cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast "$@" || status=$?
fi
if ((status != 0)); then
    die "tests failed"
fi
log "all tests passed"
