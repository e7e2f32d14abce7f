//! Tests of `sequence.rs` over byte slices: a connection's bytes go in, through the connection
//! loop itself (`conn::serve_connection`, over a `Script` in place of a socket), the real input
//! buffer and the real body budget, and the bytes it would be answered with come out, with how
//! the connection ended. No socket and no thread; the input never stalls, so no deadline
//! passes, and the only wait is the body budget's own (a request it refuses waits its
//! second). What only sockets show (deadlines, pace, eviction, caps, TLS, shutdown, early
//! answers) is tested over loopback in `tests.rs`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::http::budget::{BODY_WAIT, BodyBudget};
use crate::http::caps::{Activity, ConnTable, Phase, client_of};
use crate::http::conn::{ConnContext, Ended, Inflating, Next, conclude, serve_connection};
use crate::http::responses::{Resp, read_response};
use crate::http::shutdown::ShutdownHandle;
use crate::http::tests::{TestHandler, get, limits};
use crate::http::transport::Transport;
use crate::http::{Headers, Limits};

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().expect("addr")
}

/// What one connection's bytes came to.
struct Served {
    /// Every byte answered, interim `100 Continue` included, in order.
    out: Vec<u8>,
    /// What became of the connection: `Idle` when the input ran out between requests,
    /// `Drop` when it ran out inside one, or how the last answer closed it.
    end: Ended,
    /// The bytes the body budget held as each write began.
    held_at_writes: Vec<u64>,
    /// The connection's phase when its socket was first shut down (`None`: never was), as
    /// the connection table would rank it meanwhile.
    phase_at_shutdown: Option<Phase>,
    /// Connections protected as `"tester"` then, and when the connection loop returned
    /// (`Faults::in_table`).
    protected_at_shutdown: Option<usize>,
    protected_at_end: Option<usize>,
}

impl Served {
    /// The answers, in order, interim ones included; `heads` says which of the others were to
    /// HEAD requests (no body follows).
    fn responses(&self, heads: &[bool]) -> Vec<Resp> {
        let mut rest = self.out.as_slice();
        let mut all = Vec::new();
        let mut finals = 0;
        loop {
            let head = heads.get(finals).copied().unwrap_or(false);
            let unread = rest;
            match read_response(&mut rest, head) {
                Ok(Some(resp)) => {
                    if resp.status >= 200 {
                        finals += 1;
                    }
                    all.push(resp);
                }
                Ok(None) => return all,
                Err(e) => panic!(
                    "an incomplete or malformed response ({e}): {:?}",
                    String::from_utf8_lossy(unread)
                ),
            }
        }
    }

    /// The only answer.
    #[track_caller]
    fn response(&self) -> Resp {
        let mut all = self.responses(&[]);
        assert_eq!(all.len(), 1, "{:?}", String::from_utf8_lossy(&self.out));
        all.remove(0)
    }
}

/// Serves `input`, all of it sent at once, as the connection loop would, with `budget` as the
/// body budget.
fn serve_with(
    handler: &Arc<TestHandler>,
    limits: &Limits,
    budget: &Arc<BodyBudget>,
    input: &[u8],
) -> Served {
    let mut rest = input;
    serve_from(handler, limits, budget, &mut rest)
}

/// A client whose every byte comes after a read interrupted by a signal (`EINTR`), as a
/// blocking read with a timeout may be: the connection loop reads again.
struct Jolted<'a> {
    rest: &'a [u8],
    jolt: bool,
}

impl std::io::Read for Jolted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.jolt = !self.jolt;
        if self.jolt && !self.rest.is_empty() {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        Trickle(self.rest)
            .read(buf)
            .inspect(|&n| self.rest = &self.rest[n..])
    }
}

/// A client that sends one byte at a time: every read brings one.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// A connection without a socket: what the client sends is read from `input`, what the
/// gateway writes is kept (or, `broken`, refused as by a socket the client reset), and a
/// shutdown ends the reading.
struct Script<'a> {
    input: &'a mut dyn std::io::Read,
    out: Vec<u8>,
    shut: bool,
    broken: bool,
    /// The body budget, and the bytes it held at each write.
    budget: &'a BodyBudget,
    held_at_writes: Vec<u64>,
    /// The connection's activity, marked evicted (as the table does) as soon as this many
    /// bytes were read.
    activity: &'a Activity,
    evict_after: Option<usize>,
    /// Marked evicted as its first write is taken.
    evict_at_write: bool,
    /// Writes take at most `CHOPPY_BYTES`, and every other one times out (`Faults::choppy`).
    choppy: bool,
    timed_out: bool,
    read: usize,
    phase_at_shutdown: Option<Phase>,
    /// The table its slot is in, and its connections protected as `"tester"` at the first
    /// shutdown.
    table: Option<&'a ConnTable>,
    protected_at_shutdown: Option<usize>,
}

impl std::io::Read for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.shut {
            return Ok(0);
        }
        let n = self.input.read(buf)?;
        self.read += n;
        if self.evict_after.is_some_and(|after| self.read >= after) {
            self.evict_after = None;
            self.activity.mark_evicted_for_tests();
        }
        Ok(n)
    }
}

impl std::io::Write for Script<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.broken {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let buf = if self.choppy {
            self.timed_out = !self.timed_out;
            if self.timed_out {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            &buf[..buf.len().min(CHOPPY_BYTES)]
        } else {
            buf
        };
        self.held_at_writes.push(self.budget.held_and_waiting().0);
        self.out.extend_from_slice(buf);
        if std::mem::take(&mut self.evict_at_write) {
            self.activity.mark_evicted_for_tests();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Transport for Script<'_> {
    fn set_read_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }

    fn set_write_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }

    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(peer())
    }

    fn shutdown(&mut self, _: std::net::Shutdown) -> std::io::Result<()> {
        if !self.shut {
            self.phase_at_shutdown = Some(self.activity.phase_for_tests());
            self.protected_at_shutdown = self.table.map(|t| t.protected_for_tests("tester"));
        }
        self.shut = true;
        Ok(())
    }
}

/// Serves what `rest` reads through the connection loop itself (`conn::serve_connection`),
/// over a [`Script`] instead of a socket.
fn serve_from(
    handler: &Arc<TestHandler>,
    limits: &Limits,
    budget: &Arc<BodyBudget>,
    rest: &mut dyn std::io::Read,
) -> Served {
    serve_in(handler, limits, budget, rest, Faults::default())
}

/// The most a choppy [`Script`] takes of one write, in bytes.
const CHOPPY_BYTES: usize = 5;

/// What goes wrong with a [`Script`]ed connection.
#[derive(Default)]
struct Faults {
    /// Its writes fail, as on a socket the client reset.
    broken: bool,
    /// The table closes it as soon as this many bytes were read.
    evicted_after: Option<usize>,
    /// The table closes it as its first write is taken.
    evicted_at_write: bool,
    /// Its writes take a few bytes at most, and every other one times out first (a client
    /// reading slowly), as a socket's may.
    choppy: bool,
    /// It holds a slot in a connection table (else its activity is no table's), whose
    /// connections protected as `"tester"` are counted when its socket is first shut down.
    in_table: bool,
}

/// [`serve_in`] with the test limits and a body budget of their own.
fn serve_script(
    handler: &Arc<TestHandler>,
    rest: &mut dyn std::io::Read,
    faults: Faults,
) -> Served {
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    serve_in(handler, &limits, &budget, rest, faults)
}

/// [`serve_from`], over a connection with `faults`.
fn serve_in(
    handler: &Arc<TestHandler>,
    limits: &Limits,
    budget: &Arc<BodyBudget>,
    rest: &mut dyn std::io::Read,
    faults: Faults,
) -> Served {
    let local = "127.0.0.1:2".parse().expect("addr");
    let ctx = ConnContext {
        limits: limits.clone(),
        tls: None,
        handler: Arc::clone(handler) as Arc<dyn Handler>,
        shutdown: ShutdownHandle::new(local),
        conns: Arc::new(ConnTable::new(
            limits.max_connections,
            limits.max_connections_per_ip,
        )),
        budget: Arc::clone(budget),
    };
    let slot = faults.in_table.then(|| {
        ctx.conns
            .try_acquire(peer().ip(), Weak::new())
            .expect("a slot")
    });
    let detached = Activity::detached();
    let activity = slot.as_ref().map_or(&detached, |slot| slot.activity());
    let mut script = Script {
        input: rest,
        out: Vec::new(),
        shut: false,
        broken: faults.broken,
        budget,
        held_at_writes: Vec::new(),
        activity,
        evict_after: faults.evicted_after,
        evict_at_write: faults.evicted_at_write,
        choppy: faults.choppy,
        timed_out: false,
        read: 0,
        phase_at_shutdown: None,
        table: faults.in_table.then_some(ctx.conns.as_ref()),
        protected_at_shutdown: None,
    };
    let ended = serve_connection(&mut script, None, peer(), activity, &ctx);
    Served {
        out: script.out,
        end: ended,
        held_at_writes: script.held_at_writes,
        phase_at_shutdown: script.phase_at_shutdown,
        protected_at_shutdown: script.protected_at_shutdown,
        protected_at_end: slot.map(|_| ctx.conns.protected_for_tests("tester")),
    }
}

fn serve(handler: &Arc<TestHandler>, input: impl AsRef<[u8]>) -> Served {
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    serve_with(handler, &limits, &budget, input.as_ref())
}

fn log(handler: &TestHandler) -> Vec<(u16, String, String)> {
    handler.log.lock().expect("log").clone()
}

#[test]
fn keep_alive_serves_three_requests_on_one_connection() {
    let handler = Arc::new(TestHandler::default());
    let input: String = (0..3).map(|i| get(&format!("/echo/{i}?i={i}"))).collect();
    let served = serve(&handler, input);
    let responses = served.responses(&[]);
    assert_eq!(responses.len(), 3);
    for (i, resp) in responses.iter().enumerate() {
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), None);
        assert!(resp.header("date").is_some());
        let length = resp.body.len().to_string();
        assert_eq!(resp.header("content-length"), Some(length.as_str()));
        assert_eq!(resp.json()["path"], format!("/echo/{i}"));
        assert_eq!(resp.json()["host"], "test");
    }
    assert_eq!(served.end, Ended::Idle, "kept alive");
    assert_eq!(
        log(&handler)[0],
        (200, "GET".to_owned(), "/echo/0".to_owned())
    );
}

#[test]
fn pipelined_requests_are_all_answered_and_connection_close_ends_them() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(
        &handler,
        "POST /first HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
         GET /second?x HTTP/1.1\r\n\r\n\
         POST /third HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
    );
    let responses = served.responses(&[]);
    assert_eq!(responses.len(), 3);
    assert_eq!(responses[0].json()["path"], "/first");
    assert_eq!(responses[0].json()["body"], "hello");
    assert_eq!(responses[1].json()["path"], "/second");
    assert_eq!(responses[2].header("connection"), Some("close"));
    assert_eq!(responses[2].json()["body"], "bye");
    assert_eq!(served.end, Ended::Close);
    // Behind a `Connection: close`, what the client sent is drained, not served, in
    // `Draining`, ranked as `Sending`: closed early, the socket's reset could lose the answer
    // unread; not counted as closed when it is.
    let served = serve(
        &handler,
        format!(
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n{}",
            get("/never")
        ),
    );
    assert_eq!(served.responses(&[]).len(), 1);
    assert_eq!(served.end, Ended::Linger);
    assert_eq!(served.phase_at_shutdown, Some(Phase::Draining));
}

#[test]
fn expect_100_continue_gets_continue_before_the_body() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(
        &handler,
        "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(
        served.out, CONTINUE,
        "the continue, then the body is awaited"
    );
    assert_eq!(served.end, Ended::Drop);
    let served = serve(
        &handler,
        "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    );
    assert_eq!(served.responses(&[])[0].json()["body"], "hello");
    assert!(
        !served.out.starts_with(CONTINUE),
        "no continue for a body already sent"
    );
    // An expectation the server does not know is refused before any body.
    let served = serve(
        &handler,
        "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nExpect: 200-ok\r\n\r\n",
    );
    served.response().assert_error(417, "expectation_failed");
    assert_eq!(served.end, Ended::Linger);
}

#[test]
fn oversized_body_is_refused_before_any_body_byte() {
    let handler = Arc::new(TestHandler::default());
    // Only the head is sent; the client even waits for 100 Continue, which must not come.
    let served = serve(
        &handler,
        "POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000000000000000\r\n\
         Expect: 100-continue\r\n\r\n",
    );
    let message = served.response().assert_error(413, "body_too_large");
    assert_eq!(
        message,
        "request body is 9000000000000000000 bytes; the limit is 1048576 (server.max_body_bytes)"
    );
    assert_eq!(served.end, Ended::Linger);
    assert_eq!(
        log(&handler),
        [(413, "POST".to_owned(), "/write".to_owned())]
    );
    assert_eq!(handler.started.load(Ordering::SeqCst), 0);
}

#[test]
fn body_at_the_limit_is_read_in_full_and_one_more_byte_is_refused() {
    let handler = Arc::new(TestHandler::default());
    let body: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    let mut input = format!(
        "POST /sum HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(&body);
    input.extend_from_slice(b"POST /sum HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n");
    let served = serve(&handler, input);
    let responses = served.responses(&[]);
    assert_eq!(responses[0].json()["len"], body.len());
    assert_eq!(responses[0].json()["sum"], sum);
    responses[1].assert_error(413, "body_too_large");
}

#[test]
fn stray_line_ends_between_requests_are_skipped() {
    let handler = Arc::new(TestHandler::default());
    let input = format!(
        "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nok\r\n\r\n{}\r\n",
        get("/b")
    );
    let served = serve(&handler, input);
    let responses = served.responses(&[]);
    assert_eq!(responses[1].json()["path"], "/b");
    assert_eq!(
        served.end,
        Ended::Idle,
        "a stray line end alone is idleness"
    );
    assert_eq!(handler.log.lock().expect("log").len(), 2);
}

fn chunked(path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{extra}\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

/// `data` as chunks of `size` bytes, the last chunk and an empty trailer.
fn chunks(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn a_chunked_body_is_decoded_and_the_connection_kept_for_pipelined_requests() {
    let input = [
        chunked(
            "/a",
            "",
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        ),
        chunked("/b", "", b"0\r\n\r\n"),
        get("/c").into_bytes(),
    ]
    .concat();
    // All at once, and one byte per read: the same answers.
    for trickle in [false, true] {
        let handler = Arc::new(TestHandler::default());
        let limits = limits();
        let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
        let served = if trickle {
            serve_from(&handler, &limits, &budget, &mut Trickle(&input))
        } else {
            serve_with(&handler, &limits, &budget, &input)
        };
        let responses = served.responses(&[]);
        assert_eq!(responses.len(), 3, "trickled: {trickle}");
        assert_eq!(responses[0].json()["body"], "hello world");
        assert_eq!(responses[1].json()["path"], "/b");
        assert_eq!(responses[1].json()["body"], "");
        assert_eq!(responses[2].json()["path"], "/c");
        assert_eq!(served.end, Ended::Idle);
    }
}

#[test]
fn a_gzipped_chunked_body_is_inflated() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let text = "cpu,host=a usage=1 1\n".repeat(2000);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let handler = Arc::new(TestHandler::default());
    let served = serve(
        &handler,
        chunked("/sum", "Content-Encoding: gzip\r\n", &chunks(&gz, 100)),
    );
    let json = served.response().json();
    assert_eq!(json["len"], text.len());
    let sum: u64 = text.bytes().map(u64::from).sum();
    assert_eq!(json["sum"], sum);
}

#[test]
fn expect_100_continue_with_a_chunked_body() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(&handler, chunked("/a", "Expect: 100-continue\r\n", b""));
    assert_eq!(
        served.out, CONTINUE,
        "the continue, then the body is awaited"
    );
    assert_eq!(served.end, Ended::Drop);
    let served = serve(
        &handler,
        chunked("/a", "Expect: 100-continue\r\n", b"2\r\nok\r\n0\r\n\r\n"),
    );
    assert!(
        !served.out.starts_with(CONTINUE),
        "no continue for a body already sent"
    );
    assert_eq!(served.response().json()["body"], "ok");
}

#[test]
fn a_malformed_chunked_body_is_refused_with_400_and_closes() {
    let handler = Arc::new(TestHandler::default());
    let smuggled = get("/smuggled");
    for body in [
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhello!\r\n0\r\n\r\n",
        "-1\r\n",
        "5 junk\r\nhello\r\n0\r\n\r\n",
        "00000000000000005\r\nhello\r\n0\r\n\r\n",
        "0\r\nX: a\nb\r\n\r\n",
    ] {
        let input = [
            chunked("/a", "", body.as_bytes()),
            smuggled.clone().into_bytes(),
        ]
        .concat();
        let served = serve(&handler, input);
        let message = served.response().assert_error(400, "malformed_request");
        assert!(message.starts_with("malformed chunked body ("), "{message}");
        assert_eq!(served.end, Ended::Linger, "{body:?}");
    }
    assert!(log(&handler).iter().all(|(_, _, path)| path != "/smuggled"));
}

#[test]
fn a_chunked_body_past_max_body_bytes_gets_413_before_its_data() {
    let handler = Arc::new(TestHandler::default());
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    // A chunk claiming far more than the limit: refused at its size line, holding next to
    // nothing.
    let served = serve_with(
        &handler,
        &limits,
        &budget,
        &chunked("/a", "", b"7fffffffffffffff\r\nabc"),
    );
    served.response().assert_error(413, "body_too_large");
    assert_eq!(served.end, Ended::Linger);
    // Chunks that pass the limit only together.
    let limit = usize::try_from(limits.max_body_bytes).expect("fits");
    let data = vec![b'x'; limit + 1];
    let served = serve_with(
        &handler,
        &limits,
        &budget,
        &chunked("/a", "", &chunks(&data, 4096)),
    );
    let message = served.response().assert_error(413, "body_too_large");
    assert!(message.contains("server.max_body_bytes"), "{message}");
    // Exactly at the limit: taken.
    let served = serve_with(
        &handler,
        &limits,
        &budget,
        &chunked("/sum", "", &chunks(&data[..limit], 4096)),
    );
    assert_eq!(served.response().json()["len"], limit);
}

#[test]
fn a_chunk_claiming_more_than_the_limit_gets_413_and_the_next_connection_is_served() {
    let handler = Arc::new(TestHandler::default());
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    // Past any limit, one byte past `max_body_bytes` (0x100000), and more than 16 hex digits.
    for size in ["7fffffffffffffff", "100001", "ffffffffffffffffffff"] {
        let body = format!("{size}\r\nabc");
        let served = serve_with(
            &handler,
            &limits,
            &budget,
            &chunked("/sum", "", body.as_bytes()),
        );
        let resp = served.response();
        if size.len() > 16 {
            resp.assert_error(400, "malformed_request");
        } else {
            resp.assert_error(413, "body_too_large");
        }
        assert_eq!(served.end, Ended::Linger, "{size}");
    }
    // Framed two ways, the chunked body ending at once: what follows it is not served.
    let served = serve_with(
        &handler,
        &limits,
        &budget,
        b"POST /sum HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    );
    served.response().assert_error(400, "ambiguous_framing");
    assert_eq!(served.end, Ended::Linger);
    let served = serve_with(&handler, &limits, &budget, get("/after").as_bytes());
    assert_eq!(served.response().status, 200);
    assert_eq!(log(&handler).len(), 5);
    assert!(log(&handler).iter().all(|(_, _, path)| path != "/smuggled"));
}

#[test]
fn framing_two_ways_is_refused_with_400_and_other_codings_with_411() {
    let handler = Arc::new(TestHandler::default());
    for (headers, status, code) in [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            400,
            "ambiguous_framing",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
            "ambiguous_framing",
        ),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            411,
            "transfer_encoding_unsupported",
        ),
        (
            "Transfer-Encoding: gzip\r\n",
            411,
            "transfer_encoding_unsupported",
        ),
    ] {
        let input = format!(
            "POST /write HTTP/1.1\r\n{headers}\r\n5\r\nhello\r\n0\r\n\r\n{}",
            get("/smuggled")
        );
        let served = serve(&handler, input);
        served.response().assert_error(status, code);
        assert_eq!(served.end, Ended::Linger);
    }
    let served = serve(
        &handler,
        "POST /write HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    served.response().assert_error(400, "ambiguous_framing");
    assert!(log(&handler).iter().all(|(_, _, path)| path != "/smuggled"));
}

#[test]
fn megabyte_header_line_without_line_end_gets_431() {
    let handler = Arc::new(TestHandler::default());
    let mut input = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    input.resize(1024 * 1024, b'a');
    let served = serve(&handler, input);
    let message = served.response().assert_error(431, "head_too_large");
    assert_eq!(
        message,
        "request head is larger than 16384 bytes or has more than 64 headers"
    );
    assert_eq!(log(&handler), [(431, "-".to_owned(), "-".to_owned())]);
}

#[test]
fn too_many_headers_get_431() {
    let handler = Arc::new(TestHandler::default());
    let headers: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let served = serve(&handler, format!("GET / HTTP/1.1\r\n{headers}\r\n"));
    served.response().assert_error(431, "head_too_large");
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(&handler, "GET /old HTTP/1.0\r\n\r\n");
    let resp = served.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(served.end, Ended::Close);

    let kept = "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".repeat(2);
    let served = serve(&handler, kept);
    for resp in served.responses(&[]) {
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    assert_eq!(served.end, Ended::Idle);
}

#[test]
fn garbage_and_other_protocols_get_400() {
    let handler = Arc::new(TestHandler::default());
    let cases: [(&[u8], &str); 4] = [
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "unsupported_version"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            "malformed_request",
        ),
        (
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            "invalid_target",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            "invalid_content_length",
        ),
    ];
    for (raw, code) in cases {
        let served = serve(&handler, raw);
        served.response().assert_error(400, code);
        assert_eq!(served.end, Ended::Linger);
    }
    let statuses: Vec<u16> = log(&handler).iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [400; 4]);
    assert_eq!(log(&handler)[0], (400, "-".to_owned(), "-".to_owned()));
    assert_eq!(handler.started.load(Ordering::SeqCst), 0);
}

#[test]
fn head_requests_get_headers_only() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(
        &handler,
        format!("HEAD /h HTTP/1.1\r\n\r\n{}", get("/next")),
    );
    let responses = served.responses(&[true, false]);
    assert_eq!(responses[0].status, 200);
    assert!(responses[0].body.is_empty());
    assert!(
        responses[0]
            .header("content-length")
            .is_some_and(|l| l != "0")
    );
    // Had a body been sent, this would not parse as the next answer.
    assert_eq!(responses[1].json()["path"], "/next");
}

#[test]
fn handler_headers_cannot_break_framing() {
    let handler = Arc::new(TestHandler::default());
    let input = [get("/bad-header"), get("/no-content"), get("/after")].concat();
    let served = serve(&handler, input);
    let responses = served.responses(&[]);
    let resp = &responses[0];
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-split"), None);
    assert_eq!(resp.header("injected"), None);
    assert_eq!(resp.header("x-fine"), Some("ok"));
    assert_eq!(resp.header("content-length"), Some("2"));
    let resp = &responses[1];
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("content-length"), None);
    assert!(resp.body.is_empty());
    assert_eq!(responses[2].json()["path"], "/after");
}

#[test]
fn a_request_refused_from_its_head_is_answered_without_its_body_being_read() {
    let handler = Arc::new(TestHandler::default());
    // A body announced, the client waiting for 100 Continue: refused at once, without it.
    let served = serve(
        &handler,
        "POST /refused HTTP/1.1\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n",
    );
    served.response().assert_error(401, "unauthorized");
    assert_eq!(served.end, Ended::Linger, "closed, its body drained");
    // The body sent anyway is not read either.
    let served = serve(
        &handler,
        "POST /refused HTTP/1.1\r\nContent-Length: 1048576\r\n\r\nx",
    );
    served.response().assert_error(401, "unauthorized");
    assert_eq!(served.end, Ended::Linger);
    // Without a body nothing is left unread: the connection goes on.
    let served = serve(&handler, [get("/refused"), get("/after")].concat());
    let responses = served.responses(&[]);
    assert_eq!(responses[0].status, 401);
    assert_eq!(responses[0].header("connection"), None, "kept alive");
    assert_eq!(responses[1].json()["path"], "/after");
    // A panic in admit is a 500 that closes the connection.
    let served = serve(&handler, [get("/admit-panic"), get("/never")].concat());
    served.response().assert_error(500, "internal_error");
    assert_eq!(served.end, Ended::Linger);
    assert_eq!(
        handler.started.load(Ordering::SeqCst),
        1,
        "only /after reached handle"
    );
}

#[test]
fn a_handler_panic_is_a_500_that_closes_the_connection() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(&handler, get("/panic"));
    served.response().assert_error(500, "internal_error");
    assert_eq!(served.end, Ended::Close);
}

/// The request whose whole head is `raw`, admitted or refused from its head by `handler`.
fn admit(handler: &TestHandler, raw: &str) -> Admission {
    match RecvHead::new().try_head(raw.as_bytes(), false) {
        Ok(Some((head, _))) => head.admit(handler, peer(), 1024),
        _ => panic!("a whole head"),
    }
}

/// The answer to the request whose whole head is `raw` (no body), refused from its head.
fn refused_from_its_head(handler: &TestHandler, raw: &str) -> Answer {
    let Admission::Refused(answer) = admit(handler, raw) else {
        panic!("refused from its head");
    };
    answer
}

/// The answer `handler` gives the request whose whole head is `raw` (no body).
fn handled(handler: &TestHandler, raw: &str) -> Answer {
    let Admission::Admitted(reserve) = admit(handler, raw) else {
        panic!("admitted");
    };
    let budget = BodyBudget::new(1024);
    let activity = Activity::detached();
    let mut hold = budget.hold(&activity, client_of(peer().ip()), &|| false);
    reserve.reserved().handle(
        handler,
        peer(),
        1024,
        &mut Inflating {
            hold: &mut hold,
            deadline: Instant::now() + BODY_WAIT,
        },
        None,
    )
}

#[test]
fn a_refusal_without_a_body_closes_when_the_server_is_stopping() {
    let handler = TestHandler::default();
    let refused =
        |stopping: bool| refused_from_its_head(&handler, &get("/refused")).settle(stopping);
    let kept = refused(false);
    assert_eq!(kept.kind(), Kind::Kept);
    assert_eq!(
        kept.after(Some(Duration::ZERO), false),
        After::KeepIfIdle(None)
    );
    assert_eq!(kept.after(Some(UNREAD_ANSWER), false), After::Linger);
    assert_eq!(kept.after(None, false), After::Drop);
    let closing = refused(true);
    assert_eq!(closing.kind(), Kind::Refusal);
    let rendered = closing.render(SystemTime::UNIX_EPOCH);
    assert!(String::from_utf8_lossy(&rendered.bytes).contains("Connection: close\r\n"));
}

/// Every connection takes its next phase before its answer is counted, so the table counts
/// no close of it afterwards: kept alive, it goes idle; closing with everything read, or
/// draining after a refusal (kept alive but left unread too), `Closing`; draining after a
/// handled answer, `Draining`. One the table closed first, or whose answer was not written, is
/// dropped (its answer not counted: the close is, by the table).
#[test]
fn a_connection_takes_its_next_phase_before_its_answer_is_counted() {
    let handler = TestHandler::default();
    let kept = refused_from_its_head(&handler, &get("/refused"));
    assert_eq!(kept.kind(), Kind::Kept);
    let answered = handled(&handler, &get("/a"));
    let closing = handled(
        &handler,
        "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let conns = ConnTable::new(8, 8);
    let (quick, unread) = (Duration::ZERO, UNREAD_ANSWER);
    // (answer, the longest the client took no byte of it, bytes behind it, what follows)
    let cases = [
        (&kept, quick, true, Next::KeepAlive, Phase::Idle),
        (&kept, unread, true, Next::Linger, Phase::Closing),
        (&answered, quick, true, Next::KeepAlive, Phase::Idle),
        (&answered, unread, true, Next::Linger, Phase::Draining),
        (&closing, quick, false, Next::Close, Phase::Closing),
        (&closing, quick, true, Next::Linger, Phase::Draining),
    ];
    for (answer, written, buffered, next, phase) in cases {
        let activity = Activity::detached();
        let said = conclude(answer, Ok(written), buffered, &activity, &conns);
        assert_eq!((said, activity.phase_for_tests()), (next, phase));
        // Closed by the table first: not the connection's.
        let activity = Activity::detached();
        activity.mark_evicted_for_tests();
        assert_eq!(
            conclude(answer, Ok(written), buffered, &activity, &conns),
            Next::Drop,
            "{next:?}"
        );
        // Not written.
        let gone = Err(std::io::ErrorKind::BrokenPipe.into());
        let activity = Activity::detached();
        assert_eq!(
            conclude(answer, gone, buffered, &activity, &conns),
            Next::Drop
        );
    }
}

#[test]
fn an_answer_left_unread_is_not_followed_by_the_requests_behind_it() {
    let answer = handled(&TestHandler::default(), &get("/authenticated"));
    let quick = Some(Duration::ZERO);
    let stalled = Some(UNREAD_ANSWER);
    assert_eq!(answer.after(quick, true), After::KeepIfIdle(Some("tester")));
    assert_eq!(
        answer.after(stalled, false),
        After::KeepIfIdle(Some("tester"))
    );
    assert_eq!(answer.after(stalled, true), After::Linger);
}

#[test]
fn what_handling_costs_is_charged_to_the_body_budget() {
    // A body of a few bytes that costs 40 MiB to handle, while another request holds 40 MiB
    // of the 64: the body fits, its cost does not, so it gets 503 without reaching the
    // handler; once the other is done it is handled.
    let handler = Arc::new(TestHandler::default());
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    let request = "POST /costly/40/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    let other = Activity::detached();
    let mut held = budget.hold(&other, "10.0.0.9".parse().expect("ip"), &|| false);
    held.take_for_handling(40 << 20, Instant::now())
        .expect("40 MiB of 64");
    let served = serve_with(&handler, &limits, &budget, request.as_bytes());
    let refused = served.response();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["code"], "too_many_bodies", "{refused:?}");
    assert_eq!(handler.started.load(Ordering::SeqCst), 0);
    drop(held);
    let served = serve_with(&handler, &limits, &budget, request.as_bytes());
    assert_eq!(served.response().status, 200);
}

#[test]
fn a_cost_beyond_the_whole_budget_takes_all_of_it_and_is_handled() {
    let handler = Arc::new(TestHandler::default());
    let post = "POST /costly/1000/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(serve(&handler, post).response().status, 200);
}

#[test]
fn handler_results_are_checked() {
    struct Odd;
    impl Handler for Odd {
        fn handle(&self, req: &Request) -> Response {
            match req.path() {
                "/panic" => panic!("handler panic requested by the test"),
                "/101" => Response::json(101, &json!({})),
                _ => Response::json(200, &json!({})),
            }
        }
    }
    let request = |path: &str| Request {
        line: RequestLine::new("GET", path, ""),
        headers: Headers::default(),
        body: Vec::new(),
        peer: peer(),
        client: None,
        early: None,
    };
    let (ok, failed) = call_handler(&Odd, &request("/"));
    assert_eq!((ok.status, failed), (200, false));
    let (panicked, failed) = call_handler(&Odd, &request("/panic"));
    assert_eq!((panicked.status, failed), (500, true));
    let (informational, failed) = call_handler(&Odd, &request("/101"));
    assert_eq!((informational.status, failed), (500, true));
}

/// Every answer is reported with its code: a refusal the handler made, one from the head, the
/// layer's own, a panic's; none for an answer that is no refusal. A refusal the client never
/// got (the write failed) is reported without its code: it is not counted.
#[test]
fn every_answer_is_reported_with_its_code_once_written() {
    let handler = Arc::new(TestHandler::default());
    let bad_json = "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{";
    serve(&handler, [get("/a"), bad_json.to_owned()].concat());
    serve(&handler, get("/refused"));
    let too_large = limits().max_body_bytes + 1;
    serve(
        &handler,
        format!("POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: {too_large}\r\n\r\n"),
    );
    serve(&handler, get("/panic"));
    let request = get("/refused");
    let served = serve_script(
        &handler,
        &mut request.as_bytes(),
        Faults {
            broken: true,
            ..Faults::default()
        },
    );
    assert!(served.out.is_empty());
    let codes = handler.codes.lock().expect("codes").clone();
    assert_eq!(
        codes,
        [
            None,
            Some(Code::InvalidJson),
            Some(Code::Unauthorized),
            Some(Code::BodyTooLarge),
            Some(Code::InternalError),
            None,
        ]
    );
    assert_eq!(log(&handler).last().map(|(status, ..)| *status), Some(401));
}

/// A read interrupted by a signal is read again: requests whose every byte comes after one
/// are answered, and the connection kept.
#[test]
fn interrupted_reads_are_read_again() {
    let handler = Arc::new(TestHandler::default());
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    let input = [
        "POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
        get("/second"),
    ]
    .concat();
    let mut jolted = Jolted {
        rest: input.as_bytes(),
        jolt: false,
    };
    let served = serve_from(&handler, &limits, &budget, &mut jolted);
    let answers = served.responses(&[]);
    assert_eq!(
        answers.len(),
        2,
        "{:?}",
        String::from_utf8_lossy(&served.out)
    );
    assert_eq!(answers[0].json()["len"], 5);
    assert_eq!(answers[1].json()["path"], "/second");
    assert_eq!(served.end, Ended::Idle);
}

/// A body's memory goes back before its answer is written, refused or handled: a client that
/// does not read its answer holds none of the budget meanwhile, where no waiting body could
/// close it to take the memory back (it reads no body any more).
#[test]
fn a_body_s_memory_goes_back_before_its_answer_is_written() {
    let handler = Arc::new(TestHandler::default());
    let limits = limits();
    let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
    // A chunked body refused at its second chunk's size, after its buffer took memory; one
    // handled.
    let refused = chunked("/sum", "", b"5\r\nhello\r\nzz\r\n");
    let handled = "POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let small = Arc::new(BodyBudget::new(20_000));
    // A chunked body that outgrows a budget of 20 000 bytes: 413 once its buffer would pass it.
    let outgrown = chunked("/sum", "", &chunks(&[b'x'; 30_000], 4096));
    for (input, budget) in [
        (refused, &budget),
        (handled.as_bytes().to_vec(), &budget),
        (outgrown, &small),
    ] {
        let served = serve_with(&handler, &limits, budget, &input);
        let status = served.response().status;
        assert!(!served.held_at_writes.is_empty(), "{status}: answered");
        if std::ptr::eq(budget, &small) {
            assert_eq!(status, 413, "the chunked body outgrew the budget");
        }
        assert!(
            served.held_at_writes.iter().all(|&held| held == 0),
            "{status}: {:?} bytes held as the answer was written",
            served.held_at_writes
        );
    }
}

/// A connection the table closes (to admit another, or for its body's memory) just as its
/// request turns out to be refused gets no answer, and its refusal is not counted: the close
/// is, once, by the table.
#[test]
fn a_connection_closed_as_its_refusal_is_decided_is_not_answered() {
    let handler = Arc::new(TestHandler::default());
    let input = chunked("/sum", "", b"5\r\nhello\r\nzz\r\n");
    // Closed as the first `z`, where the refusal is decided, is read.
    let first_z = input.iter().position(|&b| b == b'z').expect("a z") + 1;
    let served = serve_script(
        &handler,
        &mut Trickle(&input),
        Faults {
            evicted_after: Some(first_z),
            ..Faults::default()
        },
    );
    assert!(
        served.out.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&served.out)
    );
    assert!(handler.codes.lock().expect("codes").is_empty());
    assert_eq!(served.end, Ended::Drop);
}

/// A request the layer refuses from its head (an expectation it does not know), its body
/// unsent: answered 417 and drained.
const REFUSED: &str = "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nExpect: 200-ok\r\n\r\n";

/// A connection closing anyway after a refusal, or after an answer with nothing behind it, is
/// in `Closing` as it closes: the first a newcomer closes at the connection cap, and not
/// counted as closed to admit it (its answer was counted). One draining after a handled
/// answer is in `Draining`: see `pipelined_requests_are_all_answered_and_connection_close_ends_them`.
#[test]
fn a_connection_closing_anyway_after_its_answer_is_closing() {
    let handler = Arc::new(TestHandler::default());
    let served = serve(&handler, REFUSED);
    served.response().assert_error(417, "expectation_failed");
    assert_eq!(served.end, Ended::Linger);
    assert_eq!(served.phase_at_shutdown, Some(Phase::Closing));
    // Everything was read, so closing it sooner resets nothing.
    let served = serve(&handler, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(served.end, Ended::Close);
    assert_eq!(served.phase_at_shutdown, Some(Phase::Closing));
}

/// A refusal is counted once: as refused when it was written and its connection entered
/// `Closing` (where the table counts no close), or as the close alone when the table closed
/// the connection as the refusal was taken (its socket's reset may lose it).
#[test]
fn a_refusal_closed_as_it_is_written_counts_as_the_close_alone() {
    for evicted_at_write in [false, true] {
        let handler = Arc::new(TestHandler::default());
        let served = serve_script(
            &handler,
            &mut REFUSED.as_bytes(),
            Faults {
                evicted_at_write,
                ..Faults::default()
            },
        );
        served.response().assert_error(417, "expectation_failed");
        let codes = handler.codes.lock().expect("codes").clone();
        if evicted_at_write {
            assert_eq!(codes, [None], "closed: not counted as refused");
            assert_eq!(served.end, Ended::Drop, "not drained: the table closed it");
        } else {
            assert_eq!(codes, [Some(Code::ExpectationFailed)]);
            assert_eq!(served.end, Ended::Linger);
            assert_eq!(served.phase_at_shutdown, Some(Phase::Closing));
        }
    }
}

/// Writes the socket takes in part, or not at all before a timeout (a client reading slowly),
/// are written on: every answer arrives whole and in order, interim ones included, as over a
/// socket that takes them at once.
#[test]
fn answers_written_in_pieces_arrive_whole() {
    let input = [
        get("/first"),
        "POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
            .to_owned(),
        "GET /refused HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        REFUSED.to_owned(),
    ]
    .concat();
    let answers = |choppy| {
        let handler = Arc::new(TestHandler::default());
        let served = serve_script(
            &handler,
            &mut input.as_bytes(),
            Faults {
                choppy,
                ..Faults::default()
            },
        );
        let answers: Vec<(u16, Vec<u8>)> = served
            .responses(&[])
            .into_iter()
            .map(|resp| (resp.status, resp.body))
            .collect();
        let codes = handler.codes.lock().expect("codes").clone();
        (answers, codes, served.end)
    };
    let whole = answers(false);
    assert_eq!(
        whole
            .0
            .iter()
            .map(|(status, _)| *status)
            .collect::<Vec<_>>(),
        [200, 200, 401, 417],
        "the control"
    );
    assert_eq!(answers(true), whole);
}

/// A connection protected by its client's token gives its place back as it starts to drain
/// before its close, not only once it is gone (a second later): another of the client's
/// connections may take it meanwhile.
#[test]
fn a_draining_connection_is_no_longer_protected() {
    for (then, drains) in [(REFUSED, true), ("", false)] {
        let handler = Arc::new(TestHandler::default());
        let input = [get("/authenticated").as_str(), then].concat();
        let served = serve_script(
            &handler,
            &mut input.as_bytes(),
            Faults {
                in_table: true,
                ..Faults::default()
            },
        );
        if drains {
            assert_eq!(served.end, Ended::Linger);
            assert_eq!(
                served.protected_at_shutdown,
                Some(0),
                "its place given back"
            );
        } else {
            // The control: kept alive, it stays protected until it is gone.
            assert_eq!(served.end, Ended::Idle);
            assert_eq!(served.protected_at_end, Some(1));
        }
    }
}
