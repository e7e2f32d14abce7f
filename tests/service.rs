//! Running as a systemd service: the `sd_notify` messages the real binary sends
//! (`READY=1`, `STOPPING=1`).
//!
//! No test here needs systemd to be running: the notification socket is the test's own.

mod common;

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Gateway, TempDir, get};

/// Nothing listens on the discard port: these tests need no InfluxDB.
const NO_INFLUX: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\n[influxdb]\nurl = \"http://127.0.0.1:9\"\n";
/// How long a notification may take to arrive.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The next datagram on `receiver`, waiting up to `NOTIFY_TIMEOUT`.
fn next_notification(receiver: &UnixDatagram, waiting_for: &str) -> String {
    receiver.set_read_timeout(Some(NOTIFY_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    let n = receiver
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification while waiting for {waiting_for}: {e}"));
    text(&buf[..n])
}

fn assert_nothing_more(receiver: &UnixDatagram) {
    receiver.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    match receiver.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("unexpected notification: {other:?}"),
    }
    receiver.set_nonblocking(false).unwrap();
}

/// Starts the gateway with `NOTIFY_SOCKET=notify_socket`, then checks: `READY=1` arrives
/// once, after `listening on` is logged and when ping answers; SIGTERM brings
/// `STOPPING=1` and a clean exit.
fn ready_then_stopping(notify_socket: &OsStr, receiver: &UnixDatagram) {
    let mut gw = Gateway::start_in_with_env(
        TempDir::new("gateway-notify"),
        NO_INFLUX,
        &[("NOTIFY_SOCKET", notify_socket)],
    );
    assert_eq!(next_notification(receiver, "READY=1"), "READY=1");
    assert!(gw.log().contains("listening on http://"), "{}", gw.log());
    assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
    assert_nothing_more(receiver);

    gw.terminate();
    assert_eq!(next_notification(receiver, "STOPPING=1"), "STOPPING=1");
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits after SIGTERM");
    assert!(status.success(), "{status:?}: {}", gw.log());
    assert_nothing_more(receiver);
}

#[test]
fn ready_and_stopping_reach_a_path_notify_socket() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let receiver = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(path.as_os_str(), &receiver);
}

#[test]
fn ready_and_stopping_reach_an_abstract_notify_socket() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("metrics-consumer-test-{}-{nanos}", std::process::id());
    let receiver =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    ready_then_stopping(OsStr::new(&format!("@{name}")), &receiver);
}

#[test]
fn a_notify_socket_nobody_listens_on_does_not_stop_the_gateway() {
    let dir = TempDir::new("notify-nobody");
    let absent = dir.join("nobody.sock");
    for socket in [absent.as_os_str(), OsStr::new("not-a-socket-address")] {
        let mut gw = Gateway::start_in_with_env(
            TempDir::new("gateway-notify"),
            NO_INFLUX,
            &[("NOTIFY_SOCKET", socket)],
        );
        assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
        gw.terminate();
        let status = gw.wait_exit(Duration::from_secs(15)).expect("exits");
        assert!(status.success(), "{status:?}: {}", gw.log());
    }
}
