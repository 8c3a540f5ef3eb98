# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Common variables and helpers for Weft's scripts. Source it; do not run it.
#
#   WEFT_ROOT        the repository root (derived from this file's location)
#   WEFT_CACHE_DIR   where builds that outlive a clone go (default ~/.cache/weft)
#   TANSU_VERSION    the pinned Tansu broker version
#   TANSU_PATCHLEVEL Weft's patches on it (scripts/tansu-patches/); part of the install path
#   WEFT_TANSU_BIN   the Tansu binary (default: the cached install of TANSU_VERSION)
#   WEFT_STATE_DIR   run-time state of `make run`: pid files, logs, data (.weft/)
#   WEFT_BROKER_PORT the port of the development broker (default 9092)
#
# WEFT_CACHE_DIR and WEFT_TANSU_BIN are exported: the test harness reads them too.

WEFT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEFT_CACHE_DIR=${WEFT_CACHE_DIR:-$HOME/.cache/weft}
TANSU_VERSION=0.6.0
TANSU_PATCHLEVEL=weft5
TANSU_INSTALL_ROOT=$WEFT_CACHE_DIR/tansu-$TANSU_VERSION-$TANSU_PATCHLEVEL
TANSU_BUILD_DIR=$WEFT_CACHE_DIR/tansu-build
WEFT_TANSU_BIN=${WEFT_TANSU_BIN:-$TANSU_INSTALL_ROOT/bin/tansu}
WEFT_STATE_DIR=$WEFT_ROOT/.weft
WEFT_BROKER_PORT=${WEFT_BROKER_PORT:-9092}
export WEFT_CACHE_DIR WEFT_TANSU_BIN

# Weft's binaries reject WEFT_* variables that are not configuration keys; the
# scripts' own ones are removed from their environment with this prefix command.
WEFT_CLEAN_ENV=(env -u WEFT_BROKER_PORT -u WEFT_DEV_API_ADDR -u WEFT_DEV_WORKER_ADDR -u WEFT_DEV_READY_SECONDS)

# Prints a progress message.
log() { printf '==> %s\n' "$*" >&2; }

# Prints an error and exits.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Whether the process in pid file $1 is alive.
pid_alive() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(<"$1")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Stops the process in pid file $1 (named $2): SIGTERM, then SIGKILL after ${3:-10} s.
stop_pidfile() {
    local pidfile=$1 name=$2 grace=${3:-10} pid i
    if ! pid_alive "$pidfile"; then
        log "$name is not running"
        rm -f "$pidfile"
        return 0
    fi
    pid=$(<"$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not stop within ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# The cargo target directory of the workspace (honours CARGO_TARGET_DIR and cargo config).
cargo_target_dir() {
    if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
        printf '%s\n' "$CARGO_TARGET_DIR"
        return
    fi
    (cd "$WEFT_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null) |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}
