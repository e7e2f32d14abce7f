//! The connection loop: driving `sequence`'s steps for each request over one connection's
//! socket (reading the head, having the handler admit it before its body is reserved or read,
//! reserving and reading the body, handling it, writing the answer) within the deadlines, for
//! as long as the connection is kept alive; and `report`, which tells the handler about every
//! exchange.
//!
//! Every read and write here is bounded by a deadline taken from `Limits`, and every
//! byte buffered by a constant or a checked limit. It must never let a handler panic
//! take its thread down, never allocate a body ahead of the bytes that actually arrive,
//! never close a connection whose client may still be sending without draining it
//! first, and never log header values or bodies. It never touches the listener or the
//! connection caps; it reports what the connection is doing to its `Activity`, and stops as
//! soon as that says the connection was evicted (its socket is then shut down, so any wait
//! ends at once), never calling the handler for an evicted connection.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::budget::{BODY_GRACE, BODY_WAIT, BodyBudget, Hold, Pace, Shortage};
use super::buffer::InBuf;
use super::caps::{Activity, ConnTable, Phase, client_of};
use super::deadline::{
    Armed, SHUTDOWN_POLL, is_retryable, remaining, write_all_before, write_all_watched,
};
use super::early::{self, EarlyAnswer, Finished};
use super::encoding;
use super::head::HeadError;
use super::sequence::{Admission, After, Answer, HeadIn, Kind, Memory, RecvBody, RecvHead};
use super::shutdown::ShutdownHandle;
use super::transport::Transport;
use super::{Exchange, Handler, Limits};
use crate::code::Code;

/// After an answer that closes the connection while the client may still be sending (a
/// refusal, or one with requests pipelined behind it), the connection is drained for at most
/// this long (and at most `LINGER_BYTES`) before closing; see `linger`.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What a connection thread needs besides its socket.
pub(super) struct ConnContext {
    pub(super) limits: Limits,
    /// Set when the server speaks HTTPS.
    pub(super) tls: Option<Arc<ServerConfig>>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) shutdown: ShutdownHandle,
    /// The open connections: a body short of memory closes a stalled one through it.
    pub(super) conns: Arc<ConnTable>,
    /// Request-body bytes held in memory at once (`Limits::max_body_bytes_in_flight`).
    pub(super) budget: Arc<BodyBudget>,
}

/// What to do with the connection after one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Keep the connection open for the next request.
    KeepAlive,
    /// Close; everything the client sent has been read.
    Close,
    /// Close, but the client may still be sending: drain first (see `linger`).
    Linger,
    /// The connection is broken (reset, timed-out write, client gone): just drop it.
    Drop,
}

/// How the service of a connection ended ([`serve_connection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// No next request came: the client closed or went silent (`idle_timeout`) between
    /// requests, the connection broke while idle, or the server is stopping.
    Idle,
    /// Closed after an answer; everything the client sent had been read.
    Close,
    /// Closed after an answer, once what the client still sent was drained (see `linger`).
    Linger,
    /// Dropped inside a request: the client gone or too slow, the connection broken or
    /// evicted.
    Drop,
}

/// Serves requests on `stream` while the connection is kept; `socket` is the plain TCP socket
/// under it (`None` over TLS), on which an early answer may be written by another thread.
/// Returns how it ended.
pub(super) fn serve_connection<S: Transport>(
    stream: &mut S,
    socket: Option<&Arc<TcpStream>>,
    peer: SocketAddr,
    activity: &Activity,
    ctx: &ConnContext,
) -> Ended {
    let peer = stream.peer_addr().unwrap_or(peer);
    let stream = &mut Armed::new(stream);
    let mut inbuf = InBuf::new();
    loop {
        inbuf.skip_line_ends();
        inbuf.compact();
        // Pipelined bytes left over from the previous request start the next one at
        // once; otherwise wait, bounded by the idle timeout, for its first byte.
        let pipelined = !inbuf.is_empty();
        if !pipelined && !wait_for_request(stream, &mut inbuf, ctx) {
            return Ended::Idle;
        }
        let next = serve_one(stream, &mut inbuf, socket, peer, pipelined, activity, ctx);
        match next {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
                return Ended::Close;
            }
            Next::Linger => {
                ctx.conns.unprotect(activity);
                linger(
                    stream,
                    &mut inbuf,
                    ctx.limits.header_timeout.min(LINGER_TIME),
                );
                return Ended::Linger;
            }
            Next::Drop => return Ended::Drop,
        }
    }
}

/// Waits for the first byte of a request. False means close silently: the idle
/// timeout passed, the client closed, the connection broke, or the server is
/// shutting down.
fn wait_for_request<S: Transport>(stream: &mut S, inbuf: &mut InBuf, ctx: &ConnContext) -> bool {
    let deadline = Instant::now() + ctx.limits.idle_timeout;
    loop {
        if ctx.shutdown.is_stopping() {
            return false;
        }
        let Some(left) = remaining(deadline) else {
            return false;
        };
        // Waiting in short slices lets an idle connection notice shutdown promptly.
        if stream
            .set_read_timeout(Some(left.min(SHUTDOWN_POLL)))
            .is_err()
        {
            return false;
        }
        match inbuf.read_from(stream) {
            Ok(0) => return false,
            Ok(_) => {
                inbuf.skip_line_ends();
                if !inbuf.is_empty() {
                    return true;
                }
            }
            Err(e) if is_retryable(&e) => {}
            Err(_) => return false,
        }
    }
}

/// Reads, checks and answers one request whose first byte is already buffered; `pipelined`
/// when it was, before the answer to the one before it was written. The steps are
/// `sequence`'s; this drives them over the socket, within the deadlines, telling `activity`
/// what the connection is doing.
fn serve_one<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    socket: Option<&Arc<TcpStream>>,
    peer: SocketAddr,
    pipelined: bool,
    activity: &Activity,
    ctx: &ConnContext,
) -> Next {
    let started = Instant::now();
    let limits = &ctx.limits;
    let finish = |stream: &mut S, inbuf: &InBuf, answer: Answer| {
        answer_with(stream, inbuf, answer, peer, started, activity, ctx)
    };
    if !activity.begin(pipelined) {
        return Next::Drop;
    }
    let head = match read_head(stream, inbuf, limits.header_timeout) {
        Ok(head) => head,
        Err(Failure::Refuse(e)) => return finish(stream, inbuf, Answer::unparsed(&e)),
        Err(Failure::Short(_) | Failure::Gone) => return Next::Drop,
    };
    let reserve = match head.admit(ctx.handler.as_ref(), peer, limits.max_body_bytes) {
        Admission::Admitted(reserve) => reserve,
        Admission::Refused(answer) => return finish(stream, inbuf, answer),
    };
    if reserve.has_body() && !activity.enter(Phase::Body) {
        return Next::Drop;
    }
    // The whole body is reserved before any of it is read (a chunked one as it arrives), and
    // held, with what it inflates to, until the request has been handled or refused (see
    // `budget`): given back before the answer is written.
    let evict = || ctx.conns.evict_stalled_body();
    let mut hold = ctx.budget.hold(activity, client_of(peer.ip()), &evict);
    match hold.take(reserve.length(), Instant::now() + BODY_WAIT) {
        Ok(()) => {}
        Err(Shortage::Evicted) => return Next::Drop,
        Err(shortage) => {
            let answer = reserve.short(shortage, ctx.budget.limit());
            return finish(stream, inbuf, answer);
        }
    }
    let mut body = reserve.reserved();
    // The body is accepted now, so a client waiting for 100 Continue may send it.
    if let Some(interim) = body.interim(inbuf.len()) {
        let deadline = Instant::now() + limits.header_timeout;
        if write_all_before(stream, interim, deadline).is_err() {
            return Next::Drop;
        }
    }
    let read = if body.is_chunked() {
        read_chunked(
            stream,
            inbuf,
            &mut body,
            &mut hold,
            limits.header_timeout,
            activity,
        )
    } else {
        read_body(stream, inbuf, &mut body, limits.header_timeout, activity)
    };
    // A refused body's memory goes back before its answer is written, as a handled one's
    // does: a client that does not read the answer holds none of the budget meanwhile.
    match read {
        Ok(()) => {}
        Err(Failure::Refuse(e)) => {
            let answer = body.refuse(&e);
            drop(hold);
            return finish(stream, inbuf, answer);
        }
        Err(Failure::Short(shortage)) => {
            let answer = body.short(shortage, ctx.budget.limit());
            drop(hold);
            return finish(stream, inbuf, answer);
        }
        Err(Failure::Gone) => return Next::Drop,
    }
    // From here the request is handled: the connection can no longer be evicted, and if it
    // was a moment ago, the request is dropped unhandled.
    if !activity.enter(Phase::Busy) {
        return Next::Drop;
    }
    // Another thread may write the answer only when nothing the client sent behind this
    // request waits to be answered first, and the server is not stopping (its answers close).
    // A stop that begins while the record is written finds the early answer announcing
    // keep-alive, and closes the connection after it, as it closes an idle one.
    let early = socket
        .filter(|_| inbuf.is_empty() && !ctx.shutdown.is_stopping())
        .map(|socket| EarlyAnswer::new(Arc::clone(socket), body.version()));
    let answer = body.handle(
        ctx.handler.as_ref(),
        peer,
        usize::try_from(limits.max_inflated_bytes).unwrap_or(usize::MAX),
        &mut Inflating {
            hold: &mut hold,
            deadline: Instant::now() + BODY_WAIT,
        },
        early.as_ref(),
    );
    // Handled: the body's memory goes back before the answer is written, which takes as long
    // as the client takes to read it.
    drop(hold);
    if let Some(Finished::Sent { answer: sent, at }) = early.as_ref().map(EarlyAnswer::finish) {
        return answered_early(
            stream, inbuf, answer, sent, at, peer, started, activity, ctx,
        );
    }
    finish(stream, inbuf, answer)
}

/// Finishes an exchange whose answer another thread wrote (see `early`), at `at`: writes what
/// the socket did not take then, reports the answer as written (the handler's own is not
/// sent), and says what becomes of the connection, as `answer_with` does.
#[allow(clippy::too_many_arguments)]
fn answered_early<S: Transport>(
    stream: &mut S,
    inbuf: &InBuf,
    answer: Answer,
    sent: early::Outgoing,
    at: Instant,
    peer: SocketAddr,
    started: Instant,
    activity: &Activity,
    ctx: &ConnContext,
) -> Next {
    let written = if sent.rest.is_empty() {
        Ok(Duration::ZERO)
    } else {
        send(stream, &sent.rest, ctx.limits.header_timeout, activity)
    };
    let duration = at.saturating_duration_since(started);
    let answer = answer.settle(ctx.shutdown.is_stopping());
    let next = conclude(&answer, written, !inbuf.is_empty(), activity, &ctx.conns);
    let written_as = (sent.status, sent.body_bytes, sent.code);
    report_answer(ctx, peer, &answer, written_as, next != Next::Drop, duration);
    next
}

/// Writes an answer within `header_timeout` in the `Sending` phase, watched for a client that
/// does not take it (see `send`), reports it, and says what becomes of the connection (see
/// `conclude`).
fn answer_with<S: Transport>(
    stream: &mut S,
    inbuf: &InBuf,
    answer: Answer,
    peer: SocketAddr,
    started: Instant,
    activity: &Activity,
    ctx: &ConnContext,
) -> Next {
    let answer = answer
        .settle(ctx.shutdown.is_stopping())
        .dress(ctx.handler.as_ref());
    let kind = answer.kind();
    if kind == Kind::Kept && !activity.enter(Phase::Busy) {
        return Next::Drop;
    }
    // A refusal is being written: from here no waiting body closes the connection for its
    // memory (it holds none: see `serve_one`), so one event is not also counted as a body
    // closed; one closed a moment ago gets no answer, and its refusal is not counted. (`send`
    // enters `Sending` too, but only after the answer is rendered.)
    if kind == Kind::Refusal && !activity.enter(Phase::Sending) {
        return Next::Drop;
    }
    let rendered = answer.render(std::time::SystemTime::now());
    let written = send(stream, &rendered.bytes, ctx.limits.header_timeout, activity);
    let next = conclude(&answer, written, !inbuf.is_empty(), activity, &ctx.conns);
    let written_as = (rendered.status, rendered.body_bytes, rendered.code);
    let ours = next != Next::Drop;
    report_answer(ctx, peer, &answer, written_as, ours, started.elapsed());
    next
}

/// What becomes of the connection once `answer` was written (`written`: the longest the
/// client took no byte of it) or failed to be, `buffered` when the client sent bytes behind
/// its request. `Next::Drop` when it is no longer the connection's to decide: the write
/// failed, or the table closed the connection first; its answer is then not counted.
///
/// The connection takes its next phase here, before its answer is counted, so that the table
/// counts no close of it afterwards: kept alive, it goes idle (see `ConnTable::idle`); closing
/// with everything read, or draining after a refusal (kept alive or not), it enters `Closing`
/// (the first to give its slot); draining after a handled answer, `Draining` (given up only
/// when its client does not take the answer, like `Sending`: closed early, the socket's reset
/// could lose the answer). Each answer is counted once: as written, or, when the table closed
/// the connection first, as the close alone (its reset may lose the answer).
pub(super) fn conclude(
    answer: &Answer,
    written: std::io::Result<Duration>,
    buffered: bool,
    activity: &Activity,
    conns: &ConnTable,
) -> Next {
    let (next, ours) = match answer.after(written.ok(), buffered) {
        After::Drop => (Next::Drop, false),
        // The client the request authenticated as protects the connection, within its share.
        After::KeepIfIdle(client) => (Next::KeepAlive, conns.idle(activity, client)),
        After::Close => (Next::Close, activity.enter(Phase::Closing)),
        After::Linger if matches!(answer.kind(), Kind::Handled { .. }) => {
            (Next::Linger, activity.enter(Phase::Draining))
        }
        After::Linger => (Next::Linger, activity.enter(Phase::Closing)),
    };
    if ours { next } else { Next::Drop }
}

/// Reports an exchange whose `answer` was rendered as `(status, body bytes, code)`, `duration`
/// after the request's first byte. One not `ours` (its write failed, or the table closed the
/// connection before it took its next phase: see `conclude`) reports no body bytes and no
/// code: a refusal the client never got is not counted (as at the accept, see
/// `accept::refuse`), and one the table's close is counted for is not counted twice.
fn report_answer(
    ctx: &ConnContext,
    peer: SocketAddr,
    answer: &Answer,
    (status, bytes, code): (u16, usize, Option<Code>),
    ours: bool,
    duration: Duration,
) {
    let (bytes, code) = if ours { (bytes, code) } else { (0, None) };
    report(
        ctx.handler.as_ref(),
        &Exchange {
            peer,
            method: answer.method(),
            path: answer.path(),
            status,
            bytes,
            duration,
            client: answer.client(),
            code,
        },
    );
}

/// Writes an answer within `limit`, in the `Sending` phase, telling `activity` each time the
/// client takes bytes of it: a connection whose answer the client does not take makes no
/// progress, and gives way at the connection cap (see `caps`). Returns the longest the client
/// took no byte.
fn send<S: Transport>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
    activity: &Activity,
) -> std::io::Result<Duration> {
    if !activity.enter(Phase::Sending) {
        return Err(std::io::ErrorKind::ConnectionAborted.into());
    }
    write_all_watched(stream, bytes, Instant::now() + limit, &|| {
        activity.enter(Phase::Sending)
    })
}

/// Why reading a request stopped short.
enum Failure {
    /// Answer with this error and close.
    Refuse(HeadError),
    /// A chunked body got no more memory from the body budget: answer (413, 503) and close;
    /// evicted, drop.
    Short(Shortage),
    /// The client went away or the connection broke; there is no one to answer.
    Gone,
}

/// Reads until a whole head is buffered, all of it within `limit` from now (the first byte is
/// already buffered, so this counts from the first byte), and takes it out of the buffer.
///
/// The read timeout is set to the time left before every read, so a client that trickles one
/// byte at a time cannot stretch the head past the deadline.
fn read_head<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    limit: Duration,
) -> Result<HeadIn, Failure> {
    let deadline = Instant::now() + limit;
    let mut recv = RecvHead::new();
    loop {
        match recv.try_head(inbuf.data(), inbuf.is_full()) {
            Ok(Some((head, len))) => {
                inbuf.consume(len);
                return Ok(head);
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::Refuse(e)),
        }
        let Some(left) = remaining(deadline) else {
            return Err(Failure::Refuse(HeadError::HeadTimeout(limit)));
        };
        // In slices, like the wait for a request, so the timeout in force stays the same.
        if stream
            .set_read_timeout(Some(left.min(SHUTDOWN_POLL)))
            .is_err()
        {
            return Err(Failure::Gone);
        }
        match inbuf.read_from(stream) {
            Ok(0) => return Err(Failure::Gone),
            Ok(n) => recv.received(inbuf.data(), n, inbuf.is_full()),
            Err(e) if is_retryable(&e) => recv.received(inbuf.data(), 0, inbuf.is_full()),
            Err(_) => return Err(Failure::Gone),
        }
    }
}

/// Reads the rest of the body, all of it within `limit` from now, and never more than
/// `BODY_GRACE` behind the pace that takes (`budget::Pace`): a body trickled far slower than
/// its length needs is closed with 408 as soon as it is behind, not when `limit` is up, so
/// that the memory reserved for it is not held for nothing.
fn read_body<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    body: &mut RecvBody,
    limit: Duration,
    activity: &Activity,
) -> Result<(), Failure> {
    let started = Instant::now();
    let deadline = started + limit;
    let pace = Pace::new(started, body.length(), limit);
    let taken = body.take_buffered(inbuf.data());
    inbuf.consume(taken);
    if !activity.progressed(pace.due(body.received())) {
        return Err(Failure::Gone);
    }
    while !body.is_whole() {
        arm_body_read(stream, deadline, &pace, body.received(), limit)?;
        match stream.read(body.space()) {
            Ok(0) => return Err(Failure::Gone),
            Ok(n) => {
                body.filled(n);
                if !activity.progressed(pace.due(body.received())) {
                    return Err(Failure::Gone);
                }
            }
            Err(e) if is_retryable(&e) => body.filled(0),
            Err(_) => return Err(Failure::Gone),
        }
    }
    Ok(())
}

/// Sets the socket's read timeout for the next read of a body that has `received` bytes: no
/// later than `deadline` (the whole body's), nor than `BODY_GRACE` past when `pace` wants them
/// (then the shutdown poll). Errors: the deadline passed (408 `body_timeout`), the body is
/// behind its pace by the grace (408 too slow), the socket is gone.
fn arm_body_read<S: Transport>(
    stream: &mut S,
    deadline: Instant,
    pace: &Pace,
    received: u64,
    limit: Duration,
) -> Result<(), Failure> {
    let Some(left) = remaining(deadline) else {
        return Err(Failure::Refuse(HeadError::BodyTimeout(limit)));
    };
    let Some(grace) = remaining(pace.due(received) + BODY_GRACE) else {
        return Err(Failure::Refuse(HeadError::BodyTooSlow {
            received,
            length: pace.length(),
            after: pace.elapsed(),
            limit,
            chunked: pace.is_chunked(),
        }));
    };
    stream
        .set_read_timeout(Some(left.min(grace).min(SHUTDOWN_POLL)))
        .map_err(|_| Failure::Gone)
}

/// Reads a chunked body through the input buffer, decoding it as it comes, all of it within
/// `limit` from now and at the pace of a body half as long as what it holds (`budget::Pace`:
/// at least half the first growth of its buffer, so a body dripped a few bytes at a time is
/// closed with 408 as a `Content-Length` one is; a steady body is never behind right after its
/// buffer doubled). A body sent fast and then trickled holds at most twice what it sent until
/// `limit`. Each growth of its buffer is taken from the body
/// budget before the bytes are decoded into it. Bytes after the body stay buffered for the next
/// request.
fn read_chunked<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    body: &mut RecvBody,
    hold: &mut Hold<'_>,
    limit: Duration,
    activity: &Activity,
) -> Result<(), Failure> {
    let started = Instant::now();
    let deadline = started + limit;
    loop {
        if !inbuf.is_empty() {
            let more = body.to_hold(hold.bytes(), inbuf.len());
            if more > 0 {
                match hold.take(more, Instant::now() + BODY_WAIT) {
                    Ok(()) => {}
                    Err(Shortage::Evicted) => return Err(Failure::Gone),
                    Err(shortage) => return Err(Failure::Short(shortage)),
                }
            }
            let used = body.feed(inbuf.data()).map_err(Failure::Refuse)?;
            inbuf.consume(used);
            if body.is_whole() {
                return Ok(());
            }
        }
        // Paced as a body half as long as what it holds: the buffer doubles, so right after a
        // growth a steady body has half of it, and must not be behind then.
        let pace = Pace::chunked(started, hold.bytes(), limit);
        if !activity.progressed(pace.due(body.received())) {
            return Err(Failure::Gone);
        }
        arm_body_read(stream, deadline, &pace, body.received(), limit)?;
        inbuf.compact();
        match inbuf.read_from(stream) {
            Ok(0) => return Err(Failure::Gone),
            Ok(_) => {}
            Err(e) if is_retryable(&e) => {}
            Err(_) => return Err(Failure::Gone),
        }
    }
}

/// A request's hold on the body budget, for inflating its body (every step may wait, all of
/// them together until one deadline) and for what handling it costs.
pub(super) struct Inflating<'h, 'a> {
    pub(super) hold: &'h mut Hold<'a>,
    /// When every step of inflating must have had its bytes.
    pub(super) deadline: Instant,
}

impl encoding::Allowance for Inflating<'_, '_> {
    fn take(&mut self, bytes: usize) -> Result<(), encoding::DecodeError> {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.hold
            .take(bytes, self.deadline)
            .map_err(|shortage| match shortage {
                Shortage::Never { room } => encoding::DecodeError::TooLarge {
                    limit: usize::try_from(room).unwrap_or(usize::MAX),
                },
                Shortage::Busy | Shortage::Evicted => encoding::DecodeError::Busy {
                    budget: self.hold.limit(),
                },
            })
    }

    fn give(&mut self, bytes: usize) {
        self.hold.give(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}

impl Memory for Inflating<'_, '_> {
    fn charge(&mut self, bytes: u64) -> bool {
        self.hold
            .take_for_handling(bytes, Instant::now() + BODY_WAIT)
            .is_ok()
    }

    fn budget(&self) -> u64 {
        self.hold.limit()
    }
}

/// Closes a connection whose client may still be sending.
///
/// Closing a socket with unread input makes the kernel send a reset, and a reset can
/// make the client discard the error response before reading it. So the write side
/// is shut first (the client sees the response, then end of stream), and input is
/// read and discarded until the client closes, `max_time` passes or `LINGER_BYTES`
/// have been drained.
fn linger<S: Transport>(stream: &mut S, inbuf: &mut InBuf, max_time: Duration) {
    let _ = stream.flush();
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + max_time;
    let scratch = inbuf.scratch();
    let mut drained = 0usize;
    while drained < LINGER_BYTES {
        let Some(left) = remaining(deadline) else {
            return;
        };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(scratch) {
            Ok(0) => return,
            Ok(n) => drained = drained.saturating_add(n),
            Err(e) if is_retryable(&e) => {}
            Err(_) => return,
        }
    }
}

/// Calls `Handler::completed`, which must not be able to take a thread down either.
pub(super) fn report(handler: &dyn Handler, exchange: &Exchange<'_>) {
    if catch_unwind(AssertUnwindSafe(|| handler.completed(exchange))).is_err() {
        log::warn!("Handler::completed panicked");
    }
}
