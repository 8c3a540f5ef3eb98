# syntax=docker/dockerfile:1.7
# Weft's images, one per binary, from one build:
#
#   docker build --target orchestrator -t weft/weft-orchestrator:0.1.0 .
#   docker build --target worker       -t weft/weft-worker:0.1.0 .
#   docker build --target cli          -t weft/weft:0.1.0 .
#
# The binaries are built with the workspace's release profile (stripped). The
# runtime images are distroless (glibc, libstdc++ and libssl, no shell, no
# package manager) and run as the non-root user 65532. librdkafka is built with
# OpenSSL (rdkafka's `ssl` feature) so SSL and SASL_SSL listeners and SCRAM
# work; zlib is linked statically.
ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# libclang: bindgen for RocksDB; libssl-dev and pkg-config: librdkafka with SSL.
# Unpinned on purpose: the Debian release is pinned by the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never \
    LIBZ_SYS_STATIC=1
# --locked: the workspace's rdkafka has the `ssl` feature (librdkafka with
# OpenSSL, for SSL, SASL_SSL and SCRAM), so Cargo.lock lists everything.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weft-orchestrator -p weft-worker -p weft-cli \
    && mkdir -p /out \
    && cp target/release/weft-orchestrator target/release/weft-worker target/release/weft /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.vendor="Weft" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/weft" \
      org.opencontainers.image.documentation="https://example.invalid/weft/blob/main/docs/kubernetes.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
USER 65532:65532

FROM runtime AS cli
LABEL org.opencontainers.image.title="weft" \
      org.opencontainers.image.description="The weft CLI: definitions, workflows, traces over the orchestrator's HTTP API"
COPY --from=build /out/weft /usr/local/bin/weft
ENTRYPOINT ["/usr/local/bin/weft"]

FROM runtime AS worker
LABEL org.opencontainers.image.title="weft-worker" \
      org.opencontainers.image.description="Weft worker with the built-in task handlers"
COPY --from=build /out/weft-worker /usr/local/bin/weft-worker
# /metrics, /healthz, /readyz (worker.http_addr)
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/weft-worker"]

FROM runtime AS orchestrator
LABEL org.opencontainers.image.title="weft-orchestrator" \
      org.opencontainers.image.description="Weft orchestrator: projections, timers, HTTP API"
COPY --from=build /out/weft-orchestrator /usr/local/bin/weft-orchestrator
# HTTP API, /metrics, /healthz, /readyz (orchestrator.http_addr)
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/weft-orchestrator"]
