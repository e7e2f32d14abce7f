//! The systemd notification protocol (`sd_notify`) for a `Type=notify` service: tells the
//! service manager `READY=1` once the gateway serves and `STOPPING=1` when it begins to stop,
//! and, while a long start reads `storage.dir` back, asks for more time than its start timeout
//! (`EXTEND_TIMEOUT_USEC`, see [`starting`]).
//!
//! This module owns reading `NOTIFY_SOCKET` and sending one datagram per state to it, a path
//! (`/run/systemd/notify`) or an abstract address (`@name`). Without `NOTIFY_SOCKET` (run by
//! hand, or by a service manager that does not ask) it does nothing.
//!
//! A notification never blocks and never fails the service: the socket is non-blocking, and
//! every error is logged at debug level and otherwise ignored. The worst a lost `READY=1` can
//! do is make systemd time the start out, which is visible in `systemctl status`; an error
//! here must not stop a gateway that is otherwise serving.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How often a start that is still reading asks for more time.
const EXTEND_EVERY: Duration = Duration::from_secs(10);

/// How much more time it asks for each time: three times [`EXTEND_EVERY`], so one late tick
/// on a busy host does not end the start.
const EXTEND_BY: Duration = Duration::from_secs(30);

/// Tells the service manager that the gateway is up and serving, and replaces the status a
/// long start set ([`starting`]).
pub fn ready() {
    notify("READY=1\nSTATUS=serving");
}

/// Begins a start that may outlast the service manager's start timeout (systemd's
/// `TimeoutStartSec=`, 90 s by default): a log of many GiB waiting for InfluxDB is read back
/// before the gateway serves, at several seconds per GiB.
///
/// Until the returned value is dropped, a thread looks every 10 s at how many bytes the
/// process's main thread (which reads `storage.dir` back) has read: `rchar` in
/// `/proc/self/task/<pid>/io`, which the watching thread's own reads of that file do not
/// grow. When that has grown since it last looked, it sends `EXTEND_TIMEOUT_USEC=30000000`
/// (30 s more from now) with a `STATUS=` naming the bytes read, which `systemctl status`
/// shows. A start that reads nothing for 30 s (stuck, not slow) still times out; so does every
/// start when that file cannot be read. Without `NOTIFY_SOCKET` no thread is started. See
/// systemd's `sd_notify(3)`. Called by the process's main thread.
pub fn starting() -> Starting {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => Starting::begin(socket, EXTEND_EVERY, EXTEND_BY, main_thread_read()),
        None => Starting::default(),
    }
}

/// The bytes the process's main thread has read so far ([`read_so_far`] of its `io` file:
/// the main thread's id is the process's).
fn main_thread_read() -> Progress {
    let io = format!("/proc/self/task/{}/io", std::process::id());
    Box::new(move || read_so_far(&io))
}

/// A start being watched by [`starting`]; dropping it stops the watch (before `READY=1`).
#[derive(Default)]
pub struct Starting {
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Bytes read so far, or `None` when that cannot be told.
type Progress = Box<dyn Fn() -> Option<u64> + Send>;

impl Starting {
    /// Watches a start, telling `socket` every `every` that it needs `by` more, as long as
    /// `progress` grows. A thread that cannot be started leaves the start unwatched.
    fn begin(socket: OsString, every: Duration, by: Duration, progress: Progress) -> Starting {
        let (stop, stopped) = mpsc::channel::<()>();
        let watch = move || {
            let mut last = progress();
            // Every message is sent until `stop` is dropped; any other end of the wait means
            // the same.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let now = progress();
                let Some(read) = now.filter(|&read| last.is_some_and(|last| read > last)) else {
                    last = now;
                    continue;
                };
                last = now;
                let state = format!(
                    "EXTEND_TIMEOUT_USEC={}\nSTATUS=starting: reading storage.dir back ({} MiB read)",
                    by.as_micros(),
                    read >> 20
                );
                if let Err(e) = send(&socket, &state) {
                    log::debug!(
                        "sd_notify: cannot send {state:?} to NOTIFY_SOCKET={socket:?}: {e}"
                    );
                }
            }
        };
        match std::thread::Builder::new()
            .name("starting".into())
            .spawn(watch)
        {
            Ok(thread) => Starting {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(e) => {
                log::debug!("sd_notify: no thread to extend a long start: {e}");
                Starting::default()
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `rchar` of an `io` file of `/proc` (a process's or a thread's, `io`): the bytes read so far
/// through `read` and its kin (proc(5)); `None` when the file cannot be read, as under a
/// hardening that hides it.
fn read_so_far(io: &str) -> Option<u64> {
    let io = std::fs::read_to_string(io).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Tells the service manager that the gateway has begun to stop, and what it does meanwhile.
pub fn stopping() {
    notify(
        "STOPPING=1\nSTATUS=stopping: finishing the requests in flight, then saving the job table",
    );
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

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

    /// `progress`, counting its looks in the returned counter.
    fn counted(progress: impl Fn() -> Option<u64> + Send + 'static) -> (Arc<AtomicU64>, Progress) {
        let looks = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&looks);
        let progress = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            progress()
        });
        (looks, progress)
    }

    /// Waits (10 s at most) until the watch looked `n` times.
    fn until_looked(looks: &AtomicU64, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while looks.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the watch never looked"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Nothing was sent to `receiver`.
    fn assert_nothing_sent(receiver: &UnixDatagram) {
        receiver.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let err = receiver.recv(&mut buf).expect_err("no message");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        receiver.set_nonblocking(false).unwrap();
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

    #[test]
    fn a_start_that_reads_asks_for_more_time_and_one_that_does_not_is_left_to_time_out() {
        let dir = temp_dir("starting");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let read = Arc::new(AtomicU64::new(5 << 20));
        let (looks, progress) = counted({
            let read = Arc::clone(&read);
            move || Some(read.load(Ordering::SeqCst))
        });
        let starting = Starting::begin(
            path.into_os_string(),
            Duration::from_millis(20),
            Duration::from_secs(30),
            progress,
        );
        // The watch looked as it began and at three ticks, with nothing read: no message.
        until_looked(&looks, 4);
        assert_nothing_sent(&receiver);
        read.store(7 << 20, Ordering::SeqCst);
        assert_eq!(
            receive(&receiver),
            "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=starting: reading storage.dir back (7 MiB read)"
        );
        drop(starting);
        // Dropped: the thread has ended, so more reading brings nothing.
        read.store(9 << 20, Ordering::SeqCst);
        assert_nothing_sent(&receiver);
    }

    /// Watches `progress` every 10 ms, telling a socket of its own, until it looked `looks`
    /// times; then asserts that nothing was sent.
    fn nothing_sent_while_watching(
        name: &str,
        progress: impl Fn() -> Option<u64> + Send + 'static,
        looks: u64,
    ) {
        let dir = temp_dir(name);
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let (looked, progress) = counted(progress);
        let starting = Starting::begin(
            path.into_os_string(),
            Duration::from_millis(10),
            Duration::from_secs(30),
            progress,
        );
        until_looked(&looked, looks);
        drop(starting);
        assert_nothing_sent(&receiver);
    }

    #[test]
    fn a_start_that_cannot_tell_what_it_read_is_left_to_time_out() {
        nothing_sent_while_watching("starting-blind", || None, 4);
    }

    #[test]
    fn the_bytes_a_thread_read_are_read_from_proc() {
        let before = read_so_far("/proc/thread-self/io").expect("readable here");
        std::fs::read("/proc/self/status").unwrap();
        assert!(read_so_far("/proc/thread-self/io").unwrap() > before);
    }

    /// What a start reads is the main thread's reads: not the watch's own, which would grow
    /// at each look. Here the main thread is the test harness's, idle meanwhile.
    #[test]
    fn the_main_threads_reads_are_what_a_start_is_watched_by() {
        let read = main_thread_read();
        assert!(
            read().is_some(),
            "the main thread's io file is readable here"
        );
        nothing_sent_while_watching("starting-main", read, 6);
    }

    /// The watch reads a file of `/proc` at each look: its own reads must not count as the
    /// start's, or a start stuck for good would be given more time for ever.
    #[test]
    fn the_watchs_own_reads_do_not_count_as_the_starts() {
        // A thread that reads nothing, as a start stuck on its disk: the watch looks at it.
        let (unstick, stuck) = mpsc::channel::<()>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            // `/proc/thread-self` links to `<pid>/task/<tid>`, under `/proc`.
            let task = std::fs::read_link("/proc/thread-self").unwrap();
            tid_tx
                .send(Path::new("/proc").join(task).join("io"))
                .unwrap();
            let _ = stuck.recv();
        });
        let io = tid_rx.recv().unwrap().to_string_lossy().into_owned();
        assert!(read_so_far(&io).is_some(), "{io} is readable here");
        nothing_sent_while_watching(
            "starting-stuck",
            {
                let io = io.clone();
                move || read_so_far(&io)
            },
            6,
        );
        assert!(
            read_so_far(&io).is_some(),
            "the stuck thread was alive throughout"
        );
        drop(unstick);
        sleeper.join().unwrap();
    }
}
