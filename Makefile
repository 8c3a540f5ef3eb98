# Weft's developer entry points. `make run` starts a local stack and runs a demo
# workflow; `make test` runs every test against a real broker. Both install what
# they need (scripts/setup.sh, scripts/broker.sh install) on first use.
#
# CARGO_TARGET_DIR is honoured when set (CI keeps it outside the clone); otherwise
# cargo's default (./target) is used. One dev profile serves binaries, tests and
# benchmarks, so RocksDB and librdkafka are built once.

SHELL := /bin/bash
CARGO ?= cargo
BENCH_ARGS ?=
# 200,000 events, and deadlines, keep `make bench` within 10 minutes on 2 cores
# (1,000,000 events take about 7 minutes alone); docs/benchmarks.md.
REBUILD_BENCH_ARGS ?= --events 200000 --produce-budget-secs 90 --rebuild-deadline-secs 180

.PHONY: help setup build run stop status test soak lint fmt bench clean-data

help:
	@echo "make run         start broker + orchestrator + worker and run the demo workflow"
	@echo "make stop        stop them"
	@echo "make test        build everything and run all tests (starts its own brokers)"
	@echo "make soak        the partition-processor simulation with many more schedules (SOAK_SCHEDULES=50000)"
	@echo "make lint        rustfmt check and clippy -D warnings"
	@echo "make fmt         format the code"
	@echo "make bench       run weft-bench and weft-rebuild-bench (BENCH_ARGS=..., REBUILD_BENCH_ARGS=...)"
	@echo "make setup       install build prerequisites and the Tansu broker"
	@echo "make build       build binaries and tests"
	@echo "make clean-data  stop everything and delete .weft/ (broker data, projections, logs)"

setup:
	scripts/setup.sh
	scripts/broker.sh install

build:
	$(CARGO) build --workspace --bins --tests

# The broker and the workspace build side by side (scripts/dev.sh up); with
# WEFT_KAFKA_BOOTSTRAP=host:port it uses that broker and builds none.
run:
	scripts/dev.sh up

stop:
	scripts/dev.sh stop
	scripts/broker.sh stop

status:
	-scripts/broker.sh status
	-scripts/dev.sh status

test: setup
	$(CARGO) build --workspace --bins
	scripts/test.sh

SOAK_SCHEDULES ?= 50000

# The seeded simulation of partition processors and workers (ADR 0009), far
# longer than the 2,000 schedules `make test` runs. A failing seed prints itself;
# WEFT_SIM_SEED=<seed> replays it.
soak:
	WEFT_SIM_SCHEDULES=$(SOAK_SCHEDULES) $(CARGO) test -p weft-orchestrator --lib partition::sim -- --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: setup
	$(CARGO) build --workspace --bins
	$(CARGO) run -p weft-integration-tests --bin weft-bench -- $(BENCH_ARGS)
	$(CARGO) run -p weft-integration-tests --bin weft-rebuild-bench -- $(REBUILD_BENCH_ARGS)

clean-data: stop
	rm -rf .weft
