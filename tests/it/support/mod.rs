//! What the integration tests share, one module per concern: temporary directories
//! (`tempdir`), child processes (`process`), a throwaway InfluxDB 1.x server and its queries
//! (`influxd`), the gateway binary run as a child process (`gateway`), a raw HTTP/1.1 client
//! that can also send malformed bytes (`http`), the consumer.toml builder (`config`) and headless
//! Chromium with its screenshots (`browser`). The test modules use all of it through
//! `crate::support`.
//!
//! Every server started here listens on 127.0.0.1 only and is stopped by its PID
//! when its handle is dropped, so a failing test cannot leave one running.

pub mod browser;
mod config;
mod gateway;
mod http;
mod influxd;
mod process;
mod stub;
mod tempdir;

use std::thread;
use std::time::{Duration, Instant};

pub use config::ConsumerToml;
pub use gateway::{Gateway, gateway_binary, parse_listening};
pub use http::{
    KeptAlive, RawResponse, connect_from, get, post_json, read_response, register, request,
    send_raw, states, try_request, try_send_raw, urlencode,
};
pub use influxd::Influxd;
pub use process::run_to_completion;
pub use stub::{Seen, stand_in};
pub use tempdir::TempDir;

/// How often every wait in these modules looks again.
const POLL: Duration = Duration::from_millis(20);
/// How long a server may take to come up: a deadline, not a wait, so it is set for a busy
/// machine (a gateway restoring a full job table next to another heavy test takes over 10 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `f` every 20 ms until it returns true; panics naming `what` on timeout.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(POLL);
    }
}
