#!/usr/bin/env bash
# The local stack of `make run`: one weft-orchestrator and one weft-worker against the
# development broker (scripts/broker.sh), built in the workspace's dev profile.
#
#   scripts/dev.sh up      what `make run` does: install prerequisites, build the broker
#                          and the workspace side by side (with a progress line), start
#                          the broker, orchestrator and worker, run the demo
#   scripts/dev.sh start   (re)start orchestrator and worker, wait for their /readyz
#   scripts/dev.sh demo    register examples/demo.yaml and run one demo workflow to completion
#   scripts/dev.sh stop    stop worker and orchestrator
#   scripts/dev.sh status  say what runs
#
# With WEFT_KAFKA_BOOTSTRAP set (host:port of a Kafka-compatible broker you already
# run), `up` neither builds nor starts the development broker, and the stack uses it.
#
# Files: .weft/{orchestrator,worker}.pid, .weft/logs/{orchestrator,worker}.log,
# .weft/orchestrator/ (RocksDB projections; rebuilt from the topics if deleted),
# .weft/logs/build-{workspace,broker}.log (the builds of `up`).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

API_ADDR=${WEFT_DEV_API_ADDR:-127.0.0.1:8080}
WORKER_ADDR=${WEFT_DEV_WORKER_ADDR:-127.0.0.1:9464}
READY_SECONDS=${WEFT_DEV_READY_SECONDS:-120}
EXTERNAL_BROKER=${WEFT_KAFKA_BOOTSTRAP:-}
BOOTSTRAP=${WEFT_KAFKA_BOOTSTRAP:-127.0.0.1:$WEFT_BROKER_PORT}
LOGDIR=$WEFT_STATE_DIR/logs
export WEFT_API=${WEFT_API:-http://$API_ADDR}

bin_dir() {
    local target
    target=$(cargo_target_dir)
    [[ -n $target ]] || die "could not find cargo's target directory"
    printf '%s/debug\n' "$target"
}

need_bin() {
    local path
    path=$(bin_dir)/$1
    [[ -x $path ]] || die "$path not found: run \`cargo build --workspace --bins\` (make run does)"
    printf '%s\n' "$path"
}

# start_process NAME ARGS...: runs a binary in the background with its log and pid file.
start_process() {
    local name=$1 bin pidfile=$WEFT_STATE_DIR/$1.pid
    shift
    bin=$(need_bin "weft-$name")
    if pid_alive "$pidfile"; then
        log "$name already running; restarting it (to pick up a new build)"
        stop_pidfile "$pidfile" "$name" 20
    fi
    mkdir -p "$LOGDIR"
    log "starting weft-$name $* (log: $LOGDIR/$name.log)"
    (
        cd "$WEFT_ROOT"
        # NO_COLOR: plain log files, no ANSI escapes.
        exec "${WEFT_CLEAN_ENV[@]}" NO_COLOR=1 setsid "$bin" "$@" </dev/null >>"$LOGDIR/$name.log" 2>&1
    ) &
    echo $! >"$pidfile"
}

# wait_ready NAME ADDR: waits until http://ADDR/readyz answers 200 (both binaries serve it).
wait_ready() {
    local name=$1 url=http://$2/readyz deadline=$((SECONDS + READY_SECONDS)) other
    log "waiting for $name: $url (up to ${READY_SECONDS}s)"
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        for other in orchestrator worker; do
            if ! pid_alive "$WEFT_STATE_DIR/$other.pid"; then
                tail -n 40 "$LOGDIR/$other.log" >&2 || true
                die "weft-$other exited; see $LOGDIR/$other.log"
            fi
        done
        if ((SECONDS >= deadline)); then
            tail -n 40 "$LOGDIR/$name.log" >&2 || true
            die "weft-$name was not ready within ${READY_SECONDS}s; see $LOGDIR/$name.log"
        fi
        sleep 0.5
    done
    log "$name ready"
}

# Whether host:port (the first of a broker list) accepts TCP connections.
reachable() {
    local first=${1%%,*}
    (exec 3<>"/dev/tcp/${first%:*}/${first##*:}") 2>/dev/null
}

cmd_start() {
    if [[ -n $EXTERNAL_BROKER ]]; then
        reachable "$BOOTSTRAP" || die "no broker answers on $BOOTSTRAP (WEFT_KAFKA_BOOTSTRAP)"
    else
        port_open "$WEFT_BROKER_PORT" || die "no broker on $BOOTSTRAP: run scripts/broker.sh start"
    fi
    start_process orchestrator --bootstrap "$BOOTSTRAP" --http-addr "$API_ADDR" \
        --data-dir "$WEFT_STATE_DIR/orchestrator"
    start_process worker --bootstrap "$BOOTSTRAP" --http-addr "$WORKER_ADDR"
    wait_ready orchestrator "$API_ADDR"
    wait_ready worker "$WORKER_ADDR"
}

cmd_demo() {
    local weft
    weft=$(need_bin weft)
    log "weft def apply examples/demo.yaml"
    "${WEFT_CLEAN_ENV[@]}" "$weft" def apply "$WEFT_ROOT/examples/demo.yaml"
    log "web console: $WEFT_API/ui (open it now to watch the demo run live)"
    log "weft start demo --input '{\"customer\":\"ada\"}' --wait"
    local out=$WEFT_STATE_DIR/demo-start.out id
    "${WEFT_CLEAN_ENV[@]}" "$weft" start demo --input '{"customer":"ada"}' --wait --timeout 5m | tee "$out"
    id=$(grep -m1 -Eo '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$out" || true)
    id=${id:-<id>}
    cat <<MSG

Weft is running:
  web console   $WEFT_API/ui   (this run: $WEFT_API/ui#/instances/demo/$id)
  API           $WEFT_API   (try: curl $WEFT_API/v1/definitions/demo)
  metrics       $WEFT_API/metrics, worker http://$WORKER_ADDR/metrics
  broker        $BOOTSTRAP $(if [[ -n $EXTERNAL_BROKER ]]; then echo "(WEFT_KAFKA_BOOTSTRAP)"; else echo "(Tansu, data in .weft/broker/)"; fi)
  logs          .weft/logs/orchestrator.log, .weft/logs/worker.log, .weft/logs/broker.log

Look at the workflow (the CLI talks to \$WEFT_API, default $WEFT_API):
  $weft get demo $id
  $weft history demo $id
  $weft trace demo $id
  $weft analytics demo
Start another one:
  $weft start demo --input '{"customer":"grace"}' --wait

Stop everything with: make stop   (data stays in .weft/; \`make clean-data\` removes it)
MSG
}

# The number of crates a cargo log says were compiled, and the last one.
build_progress() {
    local log=$1 n last
    [[ -f $log ]] || { echo "starting"; return; }
    n=$(grep -c '^ *Compiling ' "$log" || true)
    last=$(grep '^ *Compiling ' "$log" | tail -n1 | awk '{print $2}')
    if grep -q '^ *Finished \|^==> installed\|already installed' "$log"; then
        echo "done ($n crates)"
    else
        echo "$n crates${last:+ (now $last)}"
    fi
}

# Runs the workspace build and, unless WEFT_KAFKA_BOOTSTRAP names a broker, the
# broker's install side by side, printing one progress line every 20 seconds.
build_all() {
    local target bins_ok=1 broker_ok=1 ws_log=$LOGDIR/build-workspace.log br_log=$LOGDIR/build-broker.log
    local ws_pid br_pid="" ws_rc=0 br_rc=0 start=$SECONDS next=$((SECONDS + 20)) line
    mkdir -p "$LOGDIR"
    target=$(cargo_target_dir)
    for b in weft-orchestrator weft-worker weft; do
        [[ -x $target/debug/$b ]] || bins_ok=0
    done
    if [[ -z $EXTERNAL_BROKER ]] && ! { [[ -x $WEFT_TANSU_BIN ]] && "$WEFT_TANSU_BIN" --version 2>/dev/null | grep -qF "$TANSU_VERSION"; }; then
        broker_ok=0
    fi
    if ((bins_ok == 0 || broker_ok == 0)); then
        if ((broker_ok == 0)); then
            log "first build: 25 to 30 minutes on a 2-core machine (the workspace, with RocksDB and librdkafka, and the Tansu broker compile from source, side by side); later runs take seconds"
        else
            log "first build: about 20 minutes on a 2-core machine (RocksDB and librdkafka compile from source); later runs take seconds"
        fi
        if [[ -z $EXTERNAL_BROKER && $broker_ok == 0 ]]; then
            log "already run a Kafka-compatible broker? Skip its build: WEFT_KAFKA_BOOTSTRAP=host:9092 make run"
        fi
    fi
    log "building the workspace (log: $ws_log)"
    (cd "$WEFT_ROOT" && exec cargo build --workspace --bins --color never) >"$ws_log" 2>&1 &
    ws_pid=$!
    if [[ -z $EXTERNAL_BROKER ]]; then
        log "installing the broker at the same time (log: $br_log)"
        "$WEFT_ROOT/scripts/broker.sh" install >"$br_log" 2>&1 &
        br_pid=$!
    fi
    # shellcheck disable=SC2064  # the pids are known now
    trap "kill $ws_pid ${br_pid} 2>/dev/null || true" INT TERM
    while kill -0 "$ws_pid" 2>/dev/null || { [[ -n $br_pid ]] && kill -0 "$br_pid" 2>/dev/null; }; do
        sleep 1
        if ((SECONDS >= next)); then
            next=$((SECONDS + 20))
            line=$(printf '[%dm%02ds] workspace: %s' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "$(build_progress "$ws_log")")
            if [[ -n $br_pid ]]; then
                line+=" | broker: $(build_progress "$br_log")"
            fi
            log "$line"
        fi
    done
    wait "$ws_pid" || ws_rc=$?
    if [[ -n $br_pid ]]; then
        wait "$br_pid" || br_rc=$?
    fi
    trap - INT TERM
    if ((ws_rc != 0)); then
        tail -n 40 "$ws_log" >&2
        die "the workspace build failed; see $ws_log"
    fi
    if ((br_rc != 0)); then
        tail -n 40 "$br_log" >&2
        die "the broker install failed; see $br_log"
    fi
    log "built in $((SECONDS - start))s"
}

cmd_up() {
    "$WEFT_ROOT/scripts/setup.sh"
    build_all
    if [[ -z $EXTERNAL_BROKER ]]; then
        "$WEFT_ROOT/scripts/broker.sh" start
    else
        log "using the broker at $BOOTSTRAP (WEFT_KAFKA_BOOTSTRAP); the development broker is not started"
    fi
    cmd_start
    cmd_demo
}

cmd_status() {
    local name
    for name in orchestrator worker; do
        if pid_alive "$WEFT_STATE_DIR/$name.pid"; then
            echo "$name running (pid $(<"$WEFT_STATE_DIR/$name.pid"))"
        else
            echo "$name not running"
        fi
    done
}

case ${1:-} in
up) cmd_up ;;
start) cmd_start ;;
demo) cmd_demo ;;
stop)
    stop_pidfile "$WEFT_STATE_DIR/worker.pid" worker 30
    stop_pidfile "$WEFT_STATE_DIR/orchestrator.pid" orchestrator 30
    ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|start|demo|stop|status" >&2
    exit 2
    ;;
esac
