//! The systemd notification protocol (`sd_notify`) for a `Type=notify` service: tells the
//! service manager `READY=1` once the gateway serves and `STOPPING=1` when it begins to stop.
//!
//! This module owns reading `NOTIFY_SOCKET` and sending one datagram per state to it, a path
//! (`/run/systemd/notify`) or an abstract address (`@name`). Without `NOTIFY_SOCKET` (run by
//! hand, or by a service manager that does not ask) it does nothing.
//!
//! A notification never blocks and never fails the service: the socket is non-blocking, and
//! every error is logged at debug level and otherwise ignored. The worst a lost `READY=1` can
//! do is make systemd time the start out, which is visible in `systemctl status`; an error
//! here must not stop a gateway that is otherwise serving.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells the service manager that the gateway is up and serving.
pub fn ready() {
    notify("READY=1");
}

/// Tells the service manager that the gateway has begun to stop.
pub fn stopping() {
    notify("STOPPING=1");
}

/// Sends `state` to `NOTIFY_SOCKET` when it is set.
fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        log::debug!("sd_notify: cannot send {state} to NOTIFY_SOCKET={socket:?}: {e}");
    }
}

/// Sends one datagram holding `state` to `socket`, as written in `NOTIFY_SOCKET`.
fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = address(socket)?;
    let sender = UnixDatagram::unbound()?;
    // A receiver that does not read lets its queue fill up; then this fails with
    // WouldBlock instead of holding up the thread that serves or stops the gateway.
    sender.set_nonblocking(true)?;
    let sent = sender.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

/// `@name` is an abstract address (the `@` stands for its leading NUL byte); anything else
/// must be an absolute path. systemd also knows `vsock:` addresses, which a service on the
/// host it runs on never gets.
fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    match socket.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        [b'/', ..] => SocketAddr::from_pathname(Path::new(socket)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract address (@name)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fresh directory for a socket, removed on drop; Unix socket paths are limited to 108
    /// bytes, so it lives directly under the temporary directory with a short name.
    fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("mc-notify-{name}-"))
            .tempdir()
            .unwrap()
    }

    fn receive(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).expect("a notification arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = temp_dir("path");
        let dir = dir.path();
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
        send(path.as_os_str(), "STOPPING=1").unwrap();
        assert_eq!(receive(&receiver), "STOPPING=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("metrics-consumer-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
    }

    #[test]
    fn bad_or_absent_sockets_are_errors_not_panics() {
        for bad in ["", "relative/notify.sock", "vsock:2:1234"] {
            let err = send(OsStr::new(bad), "READY=1").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {err}");
        }
        let dir = temp_dir("absent");
        let dir = dir.path();
        assert!(send(dir.join("nobody.sock").as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn a_receiver_that_does_not_read_never_blocks_the_sender() {
        let dir = temp_dir("full");
        let dir = dir.path();
        let path = dir.join("notify.sock");
        let _receiver = UnixDatagram::bind(&path).unwrap();
        // The kernel queues a handful of datagrams (net.unix.max_dgram_qlen, 10 by default)
        // and then refuses more; a blocking send would hang this test instead.
        let refused = (0..10_000).find_map(|_| send(path.as_os_str(), "READY=1").err());
        let err = refused.expect("the queue fills up");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    }
}
