//! `ShutdownHandle`: the flag that tells every part of the server to stop, and the
//! connection that wakes the accept loop to see it.
//!
//! It owns no thread and serves nothing; it never blocks longer than `WAKE_TIMEOUT`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long `ShutdownHandle::shutdown` waits to connect to the listener to wake it.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The address `shutdown` connects to: the listening address, with a wildcard IP
/// replaced by loopback, because connecting to a wildcard address is not portable.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Stops a running server from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownState>,
}

#[derive(Debug)]
struct ShutdownState {
    stopping: AtomicBool,
    wake_addr: SocketAddr,
}

impl ShutdownHandle {
    /// Asks the server to stop and wakes its accept loop by connecting to it. It
    /// returns at once (or after at most a second, if the listener is unreachable);
    /// `Server::run` returns once the server has drained. Calling it again is
    /// harmless.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // The accept loop checks the flag after every accept, so one connection is
        // enough to wake it. If the connection fails, the listener is already gone
        // or the next real client will wake it instead.
        if let Err(e) = TcpStream::connect_timeout(&self.inner.wake_addr, WAKE_TIMEOUT) {
            log::debug!("could not wake the accept loop: {e}");
        }
    }

    /// The handle of a server listening on `local`.
    pub(super) fn new(local: SocketAddr) -> ShutdownHandle {
        ShutdownHandle {
            inner: Arc::new(ShutdownState {
                stopping: AtomicBool::new(false),
                wake_addr: wake_addr(local),
            }),
        }
    }

    /// True once `shutdown` was called.
    pub(super) fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_address_replaces_wildcards() {
        let v4: SocketAddr = "0.0.0.0:8086".parse().expect("addr");
        let v6: SocketAddr = "[::]:8086".parse().expect("addr");
        let fixed: SocketAddr = "192.0.2.1:8086".parse().expect("addr");
        assert_eq!(wake_addr(v4), "127.0.0.1:8086".parse().expect("addr"));
        assert_eq!(wake_addr(v6), "[::1]:8086".parse().expect("addr"));
        assert_eq!(wake_addr(fixed), fixed);
    }
}
