#!/usr/bin/env bash
# The development broker: Tansu (a Kafka-compatible broker), pinned, on loopback,
# with its data in a SQLite file under .weft/broker/.
#
#   scripts/broker.sh install   build the pinned Tansu with Weft's patches into $WEFT_CACHE_DIR (once)
#   scripts/broker.sh start     start it in the background on 127.0.0.1:$WEFT_BROKER_PORT and wait
#   scripts/broker.sh wait      wait until it accepts connections and answers a metadata request
#   scripts/broker.sh status    say whether it runs
#   scripts/broker.sh stop      stop it
#
# Files: .weft/broker.pid, .weft/logs/broker.log, .weft/broker/tansu.db (kept across restarts;
# `make clean-data` removes it).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIDFILE=$WEFT_STATE_DIR/broker.pid
LOGFILE=$WEFT_STATE_DIR/logs/broker.log
DATADIR=$WEFT_STATE_DIR/broker
WAIT_SECONDS=60

tansu_version_ok() {
    [[ -x $WEFT_TANSU_BIN ]] && "$WEFT_TANSU_BIN" --version 2>/dev/null | grep -qF "$TANSU_VERSION"
}

# sha256 of the published tansu-$TANSU_VERSION.crate.
TANSU_CRATE_SHA256=4fdd85473ec265140488cf8d55e82b844f5c051c8916fabdd4a71156ac053f6d

# Downloads crate $1 version $2 from crates.io, checks its sha256 ($3) and unpacks it into $4.
fetch_crate() {
    local name=$1 version=$2 sum=$3 into=$4 file
    file="$into/$name-$version.crate"
    curl -sSfL --retry 3 -o "$file" "https://static.crates.io/crates/$name/$version/download" ||
        die "could not download $name $version from crates.io"
    echo "$sum  $file" | sha256sum -c --quiet - || die "$name-$version.crate does not match its checksum"
    tar -xzf "$file" -C "$into"
}

cmd_install() {
    if tansu_version_ok; then
        log "tansu $TANSU_VERSION already installed: $WEFT_TANSU_BIN"
        return 0
    fi
    if [[ $WEFT_TANSU_BIN != "$TANSU_INSTALL_ROOT/bin/tansu" ]]; then
        die "WEFT_TANSU_BIN=$WEFT_TANSU_BIN is not an executable tansu $TANSU_VERSION; unset it to install into the cache"
    fi
    mkdir -p "$WEFT_CACHE_DIR"
    # One install at a time: a second caller waits for the first and then finds the binary.
    exec 9>"$WEFT_CACHE_DIR/tansu-install.lock"
    if ! flock -n 9; then
        log "another tansu install is running; waiting for it"
        flock 9
    fi
    if tansu_version_ok; then
        log "tansu $TANSU_VERSION installed by the other run: $WEFT_TANSU_BIN"
        return 0
    fi
    log "building tansu $TANSU_VERSION with Weft's patches ($TANSU_PATCHLEVEL) into $TANSU_INSTALL_ROOT (build dir $TANSU_BUILD_DIR; ~15 minutes on 2 cores when cold)"
    local src=$TANSU_BUILD_DIR/src-$TANSU_VERSION-$TANSU_PATCHLEVEL
    rm -rf "$src"
    mkdir -p "$src"
    # The published crates, checked against the checksums tansu's own Cargo.lock pins.
    fetch_crate tansu "$TANSU_VERSION" "$TANSU_CRATE_SHA256" "$src"
    # A patch names its crate after its number: NNNN-<name>-….patch applies to tansu-<name>.
    local patch crate sum
    local -A patched=()
    printf '\n[patch.crates-io]\n' >>"$src/tansu-$TANSU_VERSION/Cargo.toml"
    for patch in "$WEFT_ROOT"/scripts/tansu-patches/*.patch; do
        crate=tansu-$(basename "$patch" | cut -d- -f2)
        if [[ -z ${patched[$crate]:-} ]]; then
            sum=$(awk -v name="name = \"$crate\"" '$0 == name {found=1} found && /^checksum/{gsub(/"/, "", $3); print $3; exit}' \
                "$src/tansu-$TANSU_VERSION/Cargo.lock")
            [[ -n $sum ]] || die "tansu's Cargo.lock pins no $crate checksum (patch $(basename "$patch"))"
            fetch_crate "$crate" "$TANSU_VERSION" "$sum" "$src"
            printf '%s = { path = "../%s-%s" }\n' "$crate" "$crate" "$TANSU_VERSION" >>"$src/tansu-$TANSU_VERSION/Cargo.toml"
            patched[$crate]=1
        fi
        log "applying $(basename "$patch") to $crate"
        (cd "$src/$crate-$TANSU_VERSION" && git apply -p1 "$patch") || die "could not apply $patch to $crate"
    done
    # tansu's Cargo.lock pins every other dependency; only the patched crates' sources change.
    # libsql: the SQLite engine `make run` uses; dynostore: the memory engine `make bench` compares with.
    cargo build --release --features libsql,dynostore --bin tansu \
        --manifest-path "$src/tansu-$TANSU_VERSION/Cargo.toml" --target-dir "$TANSU_BUILD_DIR"
    install -D -m 0755 "$TANSU_BUILD_DIR/release/tansu" "$TANSU_INSTALL_ROOT/bin/tansu"
    tansu_version_ok || die "installed tansu does not report version $TANSU_VERSION: $("$WEFT_TANSU_BIN" --version 2>&1 || true)"
    log "installed $("$WEFT_TANSU_BIN" --version)"
}

# Sends a Kafka Metadata v0 request (all topics, client id "weft") and checks that
# the response carries the same correlation id and lists at least one broker.
# Bash only: no Kafka client needed.
metadata_ok() {
    local port=$1 reply
    reply=$(
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        # size=18 | api_key=3 (Metadata) | api_version=0 | correlation_id=0x5745 | client_id="weft" | topics=[] (all)
        printf '\x00\x00\x00\x12\x00\x03\x00\x00\x00\x00\x57\x45\x00\x04weft\x00\x00\x00\x00' >&3
        timeout 5 head -c 12 <&3 | od -An -v -tx1 | tr -d ' \n'
    ) 2>/dev/null || return 1
    # size (4 bytes, any) | correlation id echoed back | broker array length (> 0)
    [[ ${#reply} -eq 24 && ${reply:8:8} == 00005745 && ${reply:16:8} != 00000000 ]]
}

cmd_wait() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    log "waiting for the broker on 127.0.0.1:$WEFT_BROKER_PORT (up to ${WAIT_SECONDS}s)"
    until port_open "$WEFT_BROKER_PORT" && metadata_ok "$WEFT_BROKER_PORT"; do
        if [[ -f $PIDFILE ]] && ! pid_alive "$PIDFILE"; then
            tail -n 30 "$LOGFILE" >&2 || true
            die "the broker exited; see $LOGFILE"
        fi
        ((SECONDS < deadline)) || die "the broker did not answer within ${WAIT_SECONDS}s; see $LOGFILE"
        sleep 0.2
    done
    log "broker ready on 127.0.0.1:$WEFT_BROKER_PORT"
}

cmd_start() {
    if pid_alive "$PIDFILE"; then
        log "broker already running (pid $(<"$PIDFILE")) on 127.0.0.1:$WEFT_BROKER_PORT"
        cmd_wait
        index_tansu
        return 0
    fi
    [[ -x $WEFT_TANSU_BIN ]] || die "tansu not found at $WEFT_TANSU_BIN: run \`make setup\` (or scripts/broker.sh install)"
    if port_open "$WEFT_BROKER_PORT"; then
        die "something else already listens on 127.0.0.1:$WEFT_BROKER_PORT; stop it or set WEFT_BROKER_PORT"
    fi
    mkdir -p "$DATADIR" "$(dirname "$LOGFILE")"
    local url="tcp://127.0.0.1:$WEFT_BROKER_PORT"
    log "starting tansu on $url (data: $DATADIR/tansu.db, log: $LOGFILE)"
    # The sqlite path is relative to the broker's working directory.
    (
        cd "$DATADIR"
        exec setsid "$WEFT_TANSU_BIN" broker \
            --listener-url "$url" --advertised-listener-url "$url" \
            --storage-engine "sqlite://tansu.db" </dev/null >>"$LOGFILE" 2>&1
    ) &
    echo $! >"$PIDFILE"
    cmd_wait
    index_tansu
}

# Adds the index Tansu's SQLite schema lacks (scripts/tansu-indexes.sql); the
# schema exists once the broker answers.
index_tansu() {
    command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 not found: run \`make setup\` (scripts/setup.sh installs it)"
    sqlite3 -cmd ".timeout 10000" "$DATADIR/tansu.db" <"$WEFT_ROOT/scripts/tansu-indexes.sql" ||
        die "could not index the broker's SQLite file $DATADIR/tansu.db"
}

cmd_status() {
    if pid_alive "$PIDFILE"; then
        if metadata_ok "$WEFT_BROKER_PORT"; then
            echo "broker running (pid $(<"$PIDFILE")) on 127.0.0.1:$WEFT_BROKER_PORT, answering"
        else
            echo "broker running (pid $(<"$PIDFILE")) but not answering on 127.0.0.1:$WEFT_BROKER_PORT"
        fi
    else
        echo "broker not running"
        return 1
    fi
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
stop) stop_pidfile "$PIDFILE" broker ;;
status) cmd_status ;;
wait) cmd_wait ;;
*)
    echo "usage: $0 install|start|stop|status|wait" >&2
    exit 2
    ;;
esac
