#!/usr/bin/env bash
# Installs Weft's build prerequisites, each only if it is missing:
#   - libclang (bindgen for the rocksdb crate), from Debian's libclang-dev
#   - a C/C++ compiler and make (RocksDB and the bundled librdkafka build from source)
#   - curl (make run polls the HTTP API with it)
#   - sqlite3 (adds the index Tansu's SQLite schema lacks: scripts/tansu-indexes.sql)
# The Rust toolchain itself is not installed here: install it with rustup first.
# Idempotent, and fast when everything is present. The broker is installed by
# scripts/broker.sh install.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install the Rust toolchain (https://rustup.rs) and put ~/.cargo/bin on PATH"

have_libclang() {
    local f
    # libclang-<version>.so*, not libclang-cpp*.so* (another library, which
    # some machines have without libclang itself).
    for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so*; do
        [[ -e $f ]] && return 0
    done
    [[ -n ${LIBCLANG_PATH:-} && -d $LIBCLANG_PATH ]] && return 0
    return 1
}

missing=()
have_libclang || missing+=(libclang-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
# librdkafka with OpenSSL (rdkafka's `ssl` feature): SSL, SASL_SSL and SCRAM.
[[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# TLS material and JWT keys of the security tests (scripts/tls-test-material.sh).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if ((${#missing[@]} == 0)); then
    log "build prerequisites present (libclang, cc, c++, make, curl, sqlite3)"
else
    command -v apt-get >/dev/null 2>&1 ||
        die "missing: ${missing[*]}; this script installs them with apt-get only. Install them by hand."
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing: ${missing[*]}; not root and no sudo to install them"
        SUDO=(sudo)
    fi
    log "installing missing build prerequisites with apt-get: ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    have_libclang || die "libclang still not found after installing libclang-dev"
fi

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        log "note: cargo $component is not installed (make lint needs it: rustup component add $component)"
    fi
done
