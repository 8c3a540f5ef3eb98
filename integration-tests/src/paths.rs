//! Where the harness finds things: our own binaries (next to the test executable,
//! or `WEFT_TEST_BIN_DIR`), the Tansu broker (`WEFT_TANSU_BIN` or the cached install
//! made by `make setup`), and free loopback ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The pinned Tansu version (`scripts/lib.sh` pins the same).
pub const TANSU_VERSION: &str = "0.6.0";
/// Weft's patches on it (`scripts/tansu-patches/`; `scripts/lib.sh` names the same).
pub const TANSU_PATCHLEVEL: &str = "weft5";

/// The directory holding `weft-orchestrator`, `weft-worker` and `weft`.
///
/// `WEFT_TEST_BIN_DIR` when set; otherwise the profile directory of the running test
/// executable (`<target>/debug/deps/<test>` → `<target>/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("cannot find the current executable");
    let mut dir = exe
        .parent()
        .expect("executable has no parent directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The path of one of our binaries (`weft-orchestrator`, `weft-worker`, `weft`, …).
///
/// Panics with what to do when it has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (make test does), \
         or point WEFT_TEST_BIN_DIR at the directory holding it",
        path.display()
    );
    path
}

/// The Tansu binary: `WEFT_TANSU_BIN`, else `$WEFT_CACHE_DIR/tansu-<version>-<patchlevel>/bin/tansu`
/// (`WEFT_CACHE_DIR` defaults to `~/.cache/weft`).
///
/// Panics telling the user to run `make setup` when it is missing.
pub fn tansu_bin() -> PathBuf {
    let path = match std::env::var_os("WEFT_TANSU_BIN") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join(format!(
            "tansu-{TANSU_VERSION}-{TANSU_PATCHLEVEL}/bin/tansu"
        )),
    };
    assert!(
        path.is_file(),
        "the Tansu broker is not installed at {}: run `make setup` (or scripts/broker.sh install), \
         or set WEFT_TANSU_BIN to a tansu {TANSU_VERSION} binary",
        path.display()
    );
    path
}

/// `WEFT_CACHE_DIR`, else `~/.cache/weft`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(".cache/weft")
}

/// A loopback port that was free a moment ago: bound on 127.0.0.1:0, then released.
///
/// Never hands out the same port twice within one test process, so concurrent
/// tests in one binary do not race for it.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    loop {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("bound socket has an address")
            .port();
        drop(listener);
        if handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// A loopback address with a [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}
