//! The connection loop: reading requests off one connection, checking them against the
//! limits, having the handler admit each from its head before its body is reserved or read,
//! handing it to the handler and writing the responses, for as long as the connection is kept
//! alive; and `report`, which tells the handler about every exchange.
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
use std::net::{Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::code::Code;

use super::budget::{BODY_GRACE, BODY_WAIT, BodyBudget, Hold, Pace, Shortage};
use super::buffer::InBuf;
use super::caps::{Activity, ConnTable, Phase, client_of};
use super::deadline::{
    Armed, SHUTDOWN_POLL, is_retryable, remaining, write_all_before, write_all_watched,
};
use super::encoding;
use super::head::{self, HeadError, RequestHead};
use super::render::{Disposition, render};
use super::shutdown::ShutdownHandle;
use super::transport::Transport;
use super::{Exchange, Handler, Head, Limits, Request, Response};

/// Most body bytes read (and allocated ahead of their arrival) in one step.
const BODY_STEP: usize = 64 * 1024;

/// An answer the client took no byte of for this long was not read: the requests it pipelined
/// behind it are not served, and the connection is closed after it.
const UNREAD_ANSWER: Duration = Duration::from_millis(500);

/// After an error response, the connection is drained for at most this long (and at
/// most `LINGER_BYTES`) before closing; see `linger`.
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
    pub(super) budget: BodyBudget,
}

/// What to do with the connection after one exchange.
enum Next {
    /// Keep the connection open for the next request.
    KeepAlive,
    /// Close; everything the client sent has been read.
    Close,
    /// Close, but the client may still be sending: drain first (see `linger`).
    Linger,
    /// The connection is broken (reset, timed-out write, client gone): just drop it.
    Drop,
}

pub(super) fn serve_connection<S: Transport>(
    stream: &mut S,
    peer: SocketAddr,
    activity: &Activity,
    ctx: &ConnContext,
) {
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
            return;
        }
        let next = serve_one(stream, &mut inbuf, peer, pipelined, activity, ctx);
        match next {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Next::Linger => {
                linger(
                    stream,
                    &mut inbuf,
                    ctx.limits.header_timeout.min(LINGER_TIME),
                );
                return;
            }
            Next::Drop => return,
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
/// when it was, before the answer to the one before it was written.
fn serve_one<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    peer: SocketAddr,
    pipelined: bool,
    activity: &Activity,
    ctx: &ConnContext,
) -> Next {
    let started = Instant::now();
    let limits = &ctx.limits;
    if !activity.begin(pipelined) {
        return Next::Drop;
    }
    let (head, head_len) = match read_head(stream, inbuf, limits.header_timeout) {
        Ok(parsed) => parsed,
        Err(Failure::Refuse(e)) => {
            return refuse_request(stream, peer, started, None, refusal(&e), activity, ctx);
        }
        Err(Failure::Gone) => return Next::Drop,
    };
    inbuf.consume(head_len);
    let head_only = head.method == "HEAD";

    let framing = match head::framing(&head, limits.max_body_bytes) {
        Ok(framing) => framing,
        Err(e) => {
            let response = refusal(&e);
            return refuse_request(stream, peer, started, Some(&head), response, activity, ctx);
        }
    };
    // The length is within max_body_bytes here; this only fails where usize is
    // narrower than the configured limit.
    let Ok(body_len) = usize::try_from(framing.body_len) else {
        let e = HeadError::BodyTooLarge {
            length: framing.body_len,
            limit: limits.max_body_bytes,
        };
        return refuse_request(
            stream,
            peer,
            started,
            Some(&head),
            refusal(&e),
            activity,
            ctx,
        );
    };
    // The handler decides from the head whether the request goes on (the token, the route,
    // the method), before its body costs anything: a refused one is never reserved nor read.
    let admitted = match call_admit(ctx.handler.as_ref(), &head, peer) {
        Ok(client) => client,
        // Its body is never read: with one, the connection is closed after the answer.
        Err(response) if body_len > 0 || !framing.keep_alive || response.status == 500 => {
            return refuse_request(stream, peer, started, Some(&head), response, activity, ctx);
        }
        Err(response) => {
            return refuse_keeping(stream, peer, started, &head, response, activity, ctx);
        }
    };
    if body_len > 0 && !activity.enter(Phase::Body) {
        return Next::Drop;
    }
    // The whole body is reserved before any of it is read, and held, with what it inflates to,
    // until the request has been handled (see `budget`).
    let evict = || ctx.conns.evict_stalled_body();
    let mut hold = ctx.budget.hold(activity, client_of(peer.ip()), &evict);
    match hold.take(framing.body_len, Instant::now() + BODY_WAIT) {
        Ok(()) => {}
        Err(Shortage::Evicted) => return Next::Drop,
        Err(shortage) => {
            let response = short_of_memory(shortage, framing.body_len, &ctx.budget);
            return refuse_request(stream, peer, started, Some(&head), response, activity, ctx);
        }
    }

    // The body is accepted now, so a client waiting for 100 Continue may send it.
    if framing.expect_continue && inbuf.len() < body_len {
        let deadline = Instant::now() + limits.header_timeout;
        if write_all_before(stream, b"HTTP/1.1 100 Continue\r\n\r\n", deadline).is_err() {
            return Next::Drop;
        }
    }
    let body = match read_body(stream, inbuf, body_len, limits.header_timeout, activity) {
        Ok(body) => body,
        Err(Failure::Refuse(e)) => {
            let response = refusal(&e);
            return refuse_request(stream, peer, started, Some(&head), response, activity, ctx);
        }
        Err(Failure::Gone) => return Next::Drop,
    };
    // From here the request is handled: the connection can no longer be evicted, and if it
    // was a moment ago, the request is dropped unhandled.
    if !activity.enter(Phase::Busy) {
        return Next::Drop;
    }

    // The version stays here: keep-alive is decided inside this layer, and handlers
    // have no use for it.
    let RequestHead {
        method,
        path,
        version,
        mut headers,
    } = head;
    // The body is whole, so a refusal here keeps the connection: nothing is left unread.
    let decoded = encoding::decode(
        &mut headers,
        body,
        usize::try_from(limits.max_inflated_bytes).unwrap_or(usize::MAX),
        &mut Inflating {
            hold: &mut hold,
            deadline: Instant::now() + BODY_WAIT,
        },
    );
    let (body, refused) = match decoded {
        Ok(body) => (body, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let request = Request {
        method,
        path,
        headers,
        body,
        peer,
        client: admitted,
    };
    // What handling it costs is held too, beyond the body: bodies that inflate to millions of
    // members take far more to parse than their bytes, and 32 of them at once took 930 MiB.
    let refused = refused.or_else(|| {
        let cost = ctx.handler.cost(&request);
        (cost > 0)
            .then(|| hold.take_for_handling(cost, Instant::now() + BODY_WAIT))
            .and_then(Result::err)
            .map(|_| encoding::DecodeError::Busy {
                budget: ctx.budget.limit(),
            })
    });
    let (response, failed) = match refused {
        None => call_handler(ctx.handler.as_ref(), &request),
        Some(e) => (decode_refusal(&e), false),
    };
    // Handled: the body's memory goes back before the answer is written, which takes as long
    // as the client takes to read it.
    let Request { method, path, .. } = request;
    drop(hold);

    let close = !framing.keep_alive || failed || ctx.shutdown.is_stopping();
    let disposition = match (close, version) {
        (true, _) => Disposition::Close,
        (false, 0) => Disposition::KeepAlive10,
        (false, _) => Disposition::KeepAlive,
    };
    let rendered = render(
        &response,
        disposition,
        head_only,
        std::time::SystemTime::now(),
    );
    let written = send(stream, &rendered.bytes, limits.header_timeout, activity);
    report(
        ctx.handler.as_ref(),
        &Exchange {
            peer,
            method: &method,
            path: &path,
            status: rendered.status,
            bytes: rendered.body_bytes,
            duration: started.elapsed(),
            client: response.client.as_deref(),
        },
    );
    // A client whose answer sat unread is not served the requests it pipelined behind it: it
    // would hold its slot as long as it keeps sending and does not read.
    let unread = written
        .as_ref()
        .is_ok_and(|stalled| *stalled >= UNREAD_ANSWER && !inbuf.is_empty());
    // The client the request authenticated as protects the connection, within its share (a
    // request refused from its head, a 429 for its request rate among them, never gets here).
    match (written, close || unread) {
        (Err(_), _) => Next::Drop,
        (Ok(_), false) if ctx.conns.idle(activity, response.client.as_deref()) => Next::KeepAlive,
        (Ok(_), false) => Next::Drop,
        (Ok(_), true) if inbuf.is_empty() => Next::Close,
        (Ok(_), true) => Next::Linger,
    }
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
    /// The client went away or the connection broke; there is no one to answer.
    Gone,
}

/// Reads until a whole head is buffered, all of it within `limit` from now (the
/// first byte is already buffered, so this counts from the first byte).
///
/// The read timeout is set to the time left before every read, so a client that
/// trickles one byte at a time cannot stretch the head past the deadline.
fn read_head<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    limit: Duration,
) -> Result<(RequestHead, usize), Failure> {
    let deadline = Instant::now() + limit;
    // Re-parsing the whole buffer after every read would let a client that sends
    // one byte per packet cost quadratic time. A head can only become complete when
    // a line ends, so parse when new bytes contain a newline, and otherwise only
    // each time the buffer has doubled (which still catches garbage early).
    let mut parse_now = true;
    let mut parsed_len = 0;
    loop {
        if parse_now {
            match head::parse_head(inbuf.data()) {
                Ok(Some(parsed)) => return Ok(parsed),
                Ok(None) => parsed_len = inbuf.len(),
                Err(e) => return Err(Failure::Refuse(e)),
            }
        }
        if inbuf.is_full() {
            // parse_head reports a full, incomplete buffer itself; this is only
            // reached if that ever changes.
            return Err(Failure::Refuse(HeadError::TooLarge));
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
            Ok(n) => {
                parse_now = inbuf.tail(n).contains(&b'\n')
                    || inbuf.len() >= parsed_len.saturating_mul(2)
                    || inbuf.is_full();
            }
            Err(e) if is_retryable(&e) => parse_now = false,
            Err(_) => return Err(Failure::Gone),
        }
    }
}

/// Reads exactly `len` body bytes, all of them within `limit` from now, and never more than
/// `BODY_GRACE` behind the pace that takes (`budget::Pace`): a body trickled far slower than
/// its length needs is closed with 408 as soon as it is behind, not when `limit` is up, so
/// that the memory reserved for it is not held for nothing.
///
/// `len` was checked against the body limit before this is called. Even so the
/// buffer grows with the bytes that actually arrive (geometrically, never past
/// `len`) rather than being allocated in full up front, so that many clients
/// announcing large bodies and then stalling cost only what they really sent.
fn read_body<S: Transport>(
    stream: &mut S,
    inbuf: &mut InBuf,
    len: usize,
    limit: Duration,
    activity: &Activity,
) -> Result<Vec<u8>, Failure> {
    let started = Instant::now();
    let deadline = started + limit;
    let pace = Pace::new(started, u64::try_from(len).unwrap_or(u64::MAX), limit);
    let mut body = Vec::with_capacity(len.min(BODY_STEP));
    let from_buffer = len.min(inbuf.len());
    body.extend_from_slice(inbuf.data().get(..from_buffer).unwrap_or_default());
    inbuf.consume(from_buffer);
    let received = |body: &Vec<u8>| u64::try_from(body.len()).unwrap_or(u64::MAX);
    if !activity.progressed(pace.due(received(&body))) {
        return Err(Failure::Gone);
    }
    while body.len() < len {
        let Some(left) = remaining(deadline) else {
            return Err(Failure::Refuse(HeadError::BodyTimeout(limit)));
        };
        let Some(grace) = remaining(pace.due(received(&body)) + BODY_GRACE) else {
            return Err(Failure::Refuse(HeadError::BodyTooSlow {
                received: received(&body),
                length: pace.length(),
                after: pace.elapsed(),
                limit,
            }));
        };
        if stream
            .set_read_timeout(Some(left.min(grace).min(SHUTDOWN_POLL)))
            .is_err()
        {
            return Err(Failure::Gone);
        }
        let filled = body.len();
        let step = (len - filled).min(BODY_STEP);
        if body.capacity() < filled + step {
            let target = body
                .capacity()
                .saturating_mul(2)
                .max(filled + step)
                .min(len);
            body.reserve_exact(target.saturating_sub(filled));
        }
        body.resize(filled + step, 0);
        let read = match body.get_mut(filled..) {
            Some(dst) => stream.read(dst),
            None => Ok(0),
        };
        match read {
            Ok(0) => return Err(Failure::Gone),
            Ok(n) => {
                body.truncate(filled + n.min(step));
                if !activity.progressed(pace.due(received(&body))) {
                    return Err(Failure::Gone);
                }
            }
            Err(e) if is_retryable(&e) => body.truncate(filled),
            Err(_) => return Err(Failure::Gone),
        }
    }
    Ok(body)
}

/// The answer to a request refused while it was read.
fn refusal(error: &HeadError) -> Response {
    Response::error(error.code(), &error.to_string())
}

/// The answer to a body that got no memory: 503, or 413 for one larger than all the memory
/// there is for bodies (which the limits' check rules out, but the answer must be right).
fn short_of_memory(shortage: Shortage, body_len: u64, budget: &BodyBudget) -> Response {
    match shortage {
        Shortage::Never { .. } => Response::error(
            Code::BodyTooLarge,
            &format!(
                "request body is {body_len} bytes; the gateway holds at most {} bytes of request bodies (server.max_body_bytes_in_flight)",
                budget.limit()
            ),
        ),
        Shortage::Busy | Shortage::Evicted => {
            let busy = encoding::DecodeError::Busy {
                budget: budget.limit(),
            };
            Response::error(busy.code(), &busy.to_string())
        }
    }
}

/// A request's hold on the body budget, for inflating its body: every step may wait, all of
/// them together until one deadline.
struct Inflating<'h, 'a> {
    hold: &'h mut Hold<'a>,
    deadline: Instant,
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

/// Calls `Handler::admit` on the head: a panic there becomes a 500 (closing the connection,
/// since the framing decides that and the head was fine).
fn call_admit(
    handler: &dyn Handler,
    head: &RequestHead,
    peer: SocketAddr,
) -> Result<Option<String>, Response> {
    let view = Head {
        method: &head.method,
        path: &head.path,
        headers: &head.headers,
        peer,
    };
    match catch_unwind(AssertUnwindSafe(|| handler.admit(&view))) {
        Ok(Err(response)) if !(200..=599).contains(&response.status) => {
            log::warn!(
                "admit returned status {}, which is not a final status; answering 500",
                response.status
            );
            Err(internal_error())
        }
        Ok(admitted) => admitted,
        Err(payload) => {
            log::warn!("admit panicked; answering 500 and closing the connection");
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Err(internal_error())
        }
    }
}

/// Answers a request without a body that `Handler::admit` refused, keeping the connection
/// alive (nothing is left unread), unless the server is stopping or the client left the
/// answer unread for `UNREAD_ANSWER`; a refused request never earns its connection the
/// protection of an authenticated one (see `caps`).
fn refuse_keeping<S: Transport>(
    stream: &mut S,
    peer: SocketAddr,
    started: Instant,
    head: &RequestHead,
    response: Response,
    activity: &Activity,
    ctx: &ConnContext,
) -> Next {
    if ctx.shutdown.is_stopping() {
        return refuse_request(stream, peer, started, Some(head), response, activity, ctx);
    }
    if !activity.enter(Phase::Busy) {
        return Next::Drop;
    }
    let disposition = if head.version == 0 {
        Disposition::KeepAlive10
    } else {
        Disposition::KeepAlive
    };
    let rendered = render(
        &response,
        disposition,
        head.method == "HEAD",
        std::time::SystemTime::now(),
    );
    let written = send(stream, &rendered.bytes, ctx.limits.header_timeout, activity);
    report(
        ctx.handler.as_ref(),
        &Exchange {
            peer,
            method: &head.method,
            path: &head.path,
            status: rendered.status,
            bytes: rendered.body_bytes,
            duration: started.elapsed(),
            client: response.client.as_deref(),
        },
    );
    match written {
        // A refusal whose answer sat unread: the client is not reading.
        Ok(stalled) if stalled >= UNREAD_ANSWER => Next::Linger,
        Ok(_) if ctx.conns.idle(activity, None) => Next::KeepAlive,
        _ => Next::Drop,
    }
}

/// Writes `response` (an error), reports it, and asks for the connection to be closed (after
/// draining, since the client may still be sending).
fn refuse_request<S: Transport>(
    stream: &mut S,
    peer: SocketAddr,
    started: Instant,
    head: Option<&RequestHead>,
    response: Response,
    activity: &Activity,
    ctx: &ConnContext,
) -> Next {
    let head_only = head.is_some_and(|h| h.method == "HEAD");
    let rendered = render(
        &response,
        Disposition::Close,
        head_only,
        std::time::SystemTime::now(),
    );
    let written = write_all_before(
        stream,
        &rendered.bytes,
        Instant::now() + ctx.limits.header_timeout,
    );
    report(
        ctx.handler.as_ref(),
        &Exchange {
            peer,
            method: head.map_or("-", |h| h.method.as_str()),
            path: head.map_or("-", |h| h.path.as_str()),
            status: rendered.status,
            bytes: rendered.body_bytes,
            duration: started.elapsed(),
            client: response.client.as_deref(),
        },
    );
    if written.is_err() || !activity.enter(Phase::Closing) {
        Next::Drop
    } else {
        Next::Linger
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

/// Calls the handler, turning a panic or an unusable status into a 500. The flag is
/// true when that happened, and the connection is then closed: after a panic
/// nothing is known about the state the handler left behind.
fn call_handler(handler: &dyn Handler, request: &Request) -> (Response, bool) {
    match catch_unwind(AssertUnwindSafe(|| handler.handle(request))) {
        Ok(response) if (200..=599).contains(&response.status) => (response, false),
        Ok(response) => {
            log::warn!(
                "handler returned status {}, which is not a final status; answering 500",
                response.status
            );
            (internal_error(), true)
        }
        Err(payload) => {
            log::warn!("handler panicked; answering 500 and closing the connection");
            // Dropping a panic payload runs arbitrary code, which could panic again.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            (internal_error(), true)
        }
    }
}

/// The answer to a body whose `Content-Encoding` cannot be undone; a 415 names the codings
/// that can (RFC 9110 §15.5.16).
fn decode_refusal(e: &encoding::DecodeError) -> Response {
    let response = Response::error(e.code(), &e.to_string());
    if e.code() == Code::UnsupportedContentEncoding {
        response.with_header("Accept-Encoding", encoding::ACCEPTED)
    } else {
        response
    }
}

fn internal_error() -> Response {
    Response::error(
        Code::InternalError,
        "the server failed while handling this request; retry, and report it if it persists",
    )
}

/// Calls `Handler::completed`, which must not be able to take a thread down either.
pub(super) fn report(handler: &dyn Handler, exchange: &Exchange<'_>) {
    if catch_unwind(AssertUnwindSafe(|| handler.completed(exchange))).is_err() {
        log::warn!("Handler::completed panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_results_are_checked() {
        struct Odd;
        impl Handler for Odd {
            fn handle(&self, req: &Request) -> Response {
                match req.path.as_str() {
                    "/panic" => panic!("handler panic requested by the test"),
                    "/101" => Response::json(101, &serde_json::json!({})),
                    _ => Response::json(200, &serde_json::json!({})),
                }
            }
        }
        let request = |path: &str| Request {
            method: "GET".to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().expect("addr"),
            client: None,
        };
        let (ok, failed) = call_handler(&Odd, &request("/"));
        assert_eq!((ok.status, failed), (200, false));
        let (panicked, failed) = call_handler(&Odd, &request("/panic"));
        assert_eq!((panicked.status, failed), (500, true));
        let (informational, failed) = call_handler(&Odd, &request("/101"));
        assert_eq!((informational.status, failed), (500, true));
    }
}
