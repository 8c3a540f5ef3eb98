#!/usr/bin/env bash
# Installs what the web console's browser tests (integration-tests/tests/ui.rs)
# drive: Debian's Chromium and its WebDriver server, chromedriver (packages
# chromium and chromium-driver, through apt-get; sudo when not root), each only
# if missing. Prints the two paths. Idempotent and quick when both are present.
# WEFT_CHROMIUM / WEFT_CHROMEDRIVER name binaries installed some other way
# (then nothing is installed). The tests start Chromium headless with a fresh
# profile; nothing is downloaded at test time.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

chromium_bin() {
    if [[ -n ${WEFT_CHROMIUM:-} ]]; then
        echo "$WEFT_CHROMIUM"
    elif [[ -x /usr/lib/chromium/chromium ]]; then
        echo /usr/lib/chromium/chromium
    else
        command -v chromium || true
    fi
}
driver_bin() {
    if [[ -n ${WEFT_CHROMEDRIVER:-} ]]; then
        echo "$WEFT_CHROMEDRIVER"
    else
        command -v chromedriver || true
    fi
}

missing=()
[[ -n $(chromium_bin) ]] || missing+=(chromium)
[[ -n $(driver_bin) ]] || missing+=(chromium-driver)

if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing: ${missing[*]}; this script installs them with apt-get only. Install Chromium and chromedriver by hand and set WEFT_CHROMIUM and WEFT_CHROMEDRIVER."
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing: ${missing[*]}; not root and no sudo to install them"
        SUDO=(sudo)
    fi
    log "installing the browser for the console tests with apt-get: ${missing[*]}"
    # One lock: tests or scripts running side by side install once.
    mkdir -p "$WEFT_CACHE_DIR"
    exec 9>"$WEFT_CACHE_DIR/browser-install.lock"
    flock 9
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

chromium=$(chromium_bin)
driver=$(driver_bin)
[[ -n $chromium && -n $driver ]] || die "chromium or chromedriver still missing after installing"
log "browser for the console tests: $("$chromium" --version 2>/dev/null | head -n1) ($chromium), $("$driver" --version | head -n1)"
printf '%s\n%s\n' "$chromium" "$driver"
