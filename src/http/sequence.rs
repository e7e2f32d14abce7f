//! The sequence of one request, as values without any I/O: head → admit → reserve → body →
//! handle → answer. The connection loop (`conn.rs`) drives it over a socket; the tests
//! (`sequence_tests.rs`) run the same loop over byte slices, through an in-memory transport.
//!
//! Each stage is a value that only offers the moves the protocol allows from there:
//! `RecvHead` finds a whole head in the buffered bytes; `HeadIn::admit` frames it and asks
//! `Handler::admit`; a `Reserve` says how much body memory to take; a `RecvBody` gathers the
//! body's bytes, says when `100 Continue` is owed, and hands the whole request to the handler
//! (a panic there becomes a 500); every path ends in an `Answer`, which renders itself and
//! says what becomes of the connection once it was written (`After`). It never reads a
//! socket or a clock, never waits, and never calls the handler for a request that was not
//! admitted: time (deadlines, pace), the body budget's waits, eviction and the connection
//! table are the driver's, which tells the values what happened.

// `core::net::SocketAddr` is the plain address type: this module never opens a socket.
use core::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, SystemTime};

use crate::code::Code;

use super::budget::Shortage;
use super::chunked::{ChunkError, Decoder};
use super::early::EarlyAnswer;
use super::encoding::{self, Allowance, DecodeError};
use super::head::{self, Framing, HeadError, RequestHead, RequestLine};
use super::render::{Disposition, Rendered, render};
use super::{Handler, Head, Request, Response};

/// Most body bytes read (and allocated ahead of their arrival) in one step.
const BODY_STEP: usize = 64 * 1024;

/// The least a chunked body's buffer grows by (bytes): what one fill of the input buffer can
/// bring, so that a small body is one allocation and one take from the budget.
const CHUNKED_STEP: usize = 16 * 1024;

/// An answer the client took no byte of for this long was not read: the requests it pipelined
/// behind it are not served, and the connection is closed after it.
pub(super) const UNREAD_ANSWER: Duration = Duration::from_millis(500);

/// The interim answer to a client that waits before sending its body.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Looking for a whole head at the front of the input buffer.
///
/// Re-parsing the whole buffer after every read would let a client that sends one byte per
/// packet cost quadratic time. A head can only become complete when a line ends, so it parses
/// when new bytes hold a newline, and otherwise only each time the buffer has doubled (which
/// still catches garbage early).
pub(super) struct RecvHead {
    parse_now: bool,
    parsed_len: usize,
}

impl RecvHead {
    pub(super) fn new() -> RecvHead {
        RecvHead {
            parse_now: true,
            parsed_len: 0,
        }
    }

    /// The head at the front of `buffered` and its length in bytes, when it is whole; `None`
    /// when more bytes are needed (`full` says the buffer has no room for them: refused 431).
    /// The error is the refusal to answer with `Answer::unparsed`.
    pub(super) fn try_head(
        &mut self,
        buffered: &[u8],
        full: bool,
    ) -> Result<Option<(HeadIn, usize)>, HeadError> {
        if self.parse_now {
            match head::parse_head(buffered) {
                Ok(Some((head, len))) => return Ok(Some((HeadIn { head }, len))),
                Ok(None) => self.parsed_len = buffered.len(),
                Err(e) => return Err(e),
            }
        }
        if full {
            // parse_head reports a full, incomplete buffer itself; this is only reached if
            // that ever changes.
            return Err(HeadError::TooLarge);
        }
        Ok(None)
    }

    /// `fresh` bytes arrived at the end of `buffered` (none after a wait that brought none).
    pub(super) fn received(&mut self, buffered: &[u8], fresh: usize, full: bool) {
        let tail = buffered
            .get(buffered.len().saturating_sub(fresh)..)
            .unwrap_or_default();
        self.parse_now = fresh > 0
            && (tail.contains(&b'\n')
                || buffered.len() >= self.parsed_len.saturating_mul(2)
                || full);
    }
}

/// A whole head, not yet framed nor admitted.
pub(super) struct HeadIn {
    head: RequestHead,
}

/// What `HeadIn::admit` decided.
pub(super) enum Admission {
    /// The request goes on: reserve its body.
    Admitted(Reserve),
    /// The request is answered at once, its body never read.
    Refused(Answer),
}

impl HeadIn {
    /// Frames the head against `max_body_bytes` (bytes) and has the handler decide from it,
    /// before its body costs anything: a refused request is never reserved nor read. A request
    /// refused with a body (or on a connection that closes, or with a 500) closes the
    /// connection after its answer; one without a body keeps it.
    pub(super) fn admit(
        self,
        handler: &dyn Handler,
        peer: SocketAddr,
        max_body_bytes: u64,
    ) -> Admission {
        let head = self.head;
        let framing = match head::framing(&head, max_body_bytes) {
            Ok(framing) => framing,
            Err(e) => return Admission::Refused(Answer::refusal(Some(head), &e)),
        };
        // The length is within max_body_bytes here; this only fails where usize is narrower
        // than the configured limit.
        let Ok(body_len) = usize::try_from(framing.body_len) else {
            let e = HeadError::BodyTooLarge {
                length: framing.body_len,
                limit: max_body_bytes,
            };
            return Admission::Refused(Answer::refusal(Some(head), &e));
        };
        match call_admit(handler, &head, peer) {
            Ok(client) => Admission::Admitted(Reserve {
                head,
                framing,
                body_len,
                max_body_bytes,
                client,
            }),
            Err(response)
                if body_len > 0
                    || framing.chunked
                    || !framing.keep_alive
                    || response.status == 500 =>
            {
                Admission::Refused(Answer::new(response, Some(head), Kind::Refusal))
            }
            Err(response) => Admission::Refused(Answer::new(response, Some(head), Kind::Kept)),
        }
    }
}

/// An admitted request whose whole body is to be reserved in the body budget before any of it
/// is read; a chunked body, whose length is not known, is reserved as it arrives instead (see
/// `RecvBody::to_hold`).
pub(super) struct Reserve {
    head: RequestHead,
    framing: Framing,
    body_len: usize,
    /// The most a chunked body may decode to (`server.max_body_bytes`).
    max_body_bytes: u64,
    client: Option<String>,
}

impl Reserve {
    /// The body's length in bytes, as framed: what to reserve before reading it (0 for a
    /// chunked body).
    pub(super) fn length(&self) -> u64 {
        self.framing.body_len
    }

    /// Whether a body follows the head (of some length, or chunked).
    pub(super) fn has_body(&self) -> bool {
        self.framing.body_len > 0 || self.framing.chunked
    }

    /// The reservation was granted: read the body.
    pub(super) fn reserved(self) -> RecvBody {
        let (body, chunked) = if self.framing.chunked {
            (Vec::new(), Some(Decoder::new(self.max_body_bytes)))
        } else {
            (Vec::with_capacity(self.body_len.min(BODY_STEP)), None)
        };
        RecvBody {
            body,
            mark: 0,
            chunked,
            reserve: self,
        }
    }

    /// The body got no memory: 503, or 413 for one larger than all the memory there is for
    /// bodies (`budget` bytes; the limits' check rules that out, but the answer must be right).
    pub(super) fn short(self, shortage: Shortage, budget: u64) -> Answer {
        let response = match shortage {
            Shortage::Never { .. } if self.framing.chunked => Response::error(
                Code::BodyTooLarge,
                &format!(
                    "chunked request body is larger than the {budget} bytes of request bodies the gateway holds at most (server.max_body_bytes_in_flight)"
                ),
            ),
            Shortage::Never { .. } => Response::error(
                Code::BodyTooLarge,
                &format!(
                    "request body is {} bytes; the gateway holds at most {budget} bytes of request bodies (server.max_body_bytes_in_flight)",
                    self.framing.body_len
                ),
            ),
            Shortage::Busy | Shortage::Evicted => {
                let busy = DecodeError::Busy { budget };
                Response::error(busy.code(), &busy.to_string())
            }
        };
        Answer::new(response, Some(self.head), Kind::Refusal)
    }
}

/// Memory for handling a request, taken from the body budget: what its body inflates to
/// (`Allowance`) and what handling it will hold beyond that.
pub(super) trait Memory: Allowance {
    /// Takes `bytes` more for handling (see `budget::Hold::take_for_handling`); false when
    /// they could not be had in time.
    fn charge(&mut self, bytes: u64) -> bool;
    /// The whole budget in bytes, for the answer when memory is short.
    fn budget(&self) -> u64;
}

/// Gathering an admitted request's body. The buffer grows with the bytes that actually arrive
/// (geometrically, never past the framed length) rather than being allocated in full up
/// front, so that many clients announcing large bodies and then stalling cost only what they
/// really sent.
///
/// A chunked body is decoded from the input buffer (`feed`) as it arrives; its buffer grows by
/// doubling (at least `CHUNKED_STEP`, never past `server.max_body_bytes`), each growth taken
/// from the body budget first (`to_hold`), so what it holds follows what was sent.
pub(super) struct RecvBody {
    reserve: Reserve,
    body: Vec<u8>,
    /// The body's length before the space last handed out.
    mark: usize,
    /// The decoder of a chunked body; `None` for a `Content-Length` one.
    chunked: Option<Decoder>,
}

impl RecvBody {
    /// `100 Continue` when the client waits for it and the `buffered` bytes do not already
    /// hold the body (for a chunked body: when none of it is buffered).
    pub(super) fn interim(&self, buffered: usize) -> Option<&'static [u8]> {
        let owed = if self.chunked.is_some() {
            buffered == 0
        } else {
            buffered < self.reserve.body_len
        };
        (self.reserve.framing.expect_continue && owed).then_some(CONTINUE)
    }

    /// The request's HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(super) fn version(&self) -> u8 {
        self.reserve.head.version
    }

    /// Whether the body is chunked: read it with `to_hold` and `feed`, not `space`.
    pub(super) fn is_chunked(&self) -> bool {
        self.chunked.is_some()
    }

    /// The capacity (bytes) the chunked body's buffer needs before `buffered` more bytes are
    /// fed: its capacity when they fit, else double it (at least `CHUNKED_STEP`), and never
    /// past `server.max_body_bytes`, which the decoder never lets the body pass.
    fn room_for(&self, buffered: usize) -> usize {
        let limit = usize::try_from(self.reserve.max_body_bytes).unwrap_or(usize::MAX);
        let len = self.body.len();
        let needed = len.saturating_add(buffered.min(limit.saturating_sub(len)));
        let capacity = self.body.capacity();
        if capacity >= needed {
            return capacity;
        }
        capacity
            .saturating_mul(2)
            .max(CHUNKED_STEP)
            .min(limit)
            .max(needed)
    }

    /// Bytes to take from the body budget, beyond the `held` bytes, before `buffered` bytes of
    /// a chunked body are fed (0 when what is held covers them).
    pub(super) fn to_hold(&self, held: u64, buffered: usize) -> u64 {
        u64::try_from(self.room_for(buffered))
            .unwrap_or(u64::MAX)
            .saturating_sub(held)
    }

    /// Decodes what it can of the `buffered` bytes of a chunked body, after `to_hold`'s bytes
    /// were taken; returns how many it used (every one until the body ends). The error is the
    /// refusal (400 for broken framing, 413 past `server.max_body_bytes`); the connection
    /// closes after it.
    pub(super) fn feed(&mut self, buffered: &[u8]) -> Result<usize, HeadError> {
        let room = self.room_for(buffered.len());
        if room > self.body.capacity() {
            self.body
                .reserve_exact(room.saturating_sub(self.body.len()));
        }
        let Some(decoder) = self.chunked.as_mut() else {
            return Ok(0);
        };
        decoder.feed(buffered, &mut self.body).map_err(|e| match e {
            ChunkError::Malformed(detail) => HeadError::Chunked(detail),
            ChunkError::TooLarge { limit } => HeadError::ChunkedTooLarge { limit },
        })
    }

    /// A chunked body got no more memory from the body budget (see `Reserve::short`).
    pub(super) fn short(self, shortage: Shortage, budget: u64) -> Answer {
        self.reserve.short(shortage, budget)
    }

    /// Takes what of the body is at the front of `buffered`; returns how many bytes.
    pub(super) fn take_buffered(&mut self, buffered: &[u8]) -> usize {
        let n = self
            .reserve
            .body_len
            .saturating_sub(self.body.len())
            .min(buffered.len());
        self.body
            .extend_from_slice(buffered.get(..n).unwrap_or_default());
        n
    }

    /// Body bytes received so far.
    pub(super) fn received(&self) -> u64 {
        u64::try_from(self.body.len()).unwrap_or(u64::MAX)
    }

    /// The framed length in bytes (0 for a chunked body).
    pub(super) fn length(&self) -> u64 {
        self.reserve.framing.body_len
    }

    pub(super) fn is_whole(&self) -> bool {
        match &self.chunked {
            Some(decoder) => decoder.is_done(),
            None => self.body.len() >= self.reserve.body_len,
        }
    }

    /// Room for the next bytes of the body (at most `BODY_STEP`); say with `filled` how many
    /// were written into it.
    pub(super) fn space(&mut self) -> &mut [u8] {
        let len = self.reserve.body_len;
        let filled = self.body.len();
        let step = len.saturating_sub(filled).min(BODY_STEP);
        if self.body.capacity() < filled + step {
            let target = self
                .body
                .capacity()
                .saturating_mul(2)
                .max(filled + step)
                .min(len);
            self.body.reserve_exact(target.saturating_sub(filled));
        }
        self.body.resize(filled + step, 0);
        self.mark = filled;
        self.body.get_mut(filled..).unwrap_or_default()
    }

    /// `n` bytes were written at the front of the last `space` (0 when none came).
    pub(super) fn filled(&mut self, n: usize) {
        let end = self.mark.saturating_add(n).min(self.body.len());
        self.body.truncate(end);
    }

    /// Reading the body failed on the client's account (too slow, timed out).
    pub(super) fn refuse(self, e: &HeadError) -> Answer {
        Answer::refusal(Some(self.reserve.head), e)
    }

    /// The body is whole: undoes its `Content-Encoding` within `max_inflated` bytes, charges
    /// what handling costs to `memory`, and calls the handler (a panic or a status that is not
    /// final becomes a 500 that closes the connection). A refusal here keeps the connection:
    /// nothing is left unread.
    pub(super) fn handle(
        self,
        handler: &dyn Handler,
        peer: SocketAddr,
        max_inflated: usize,
        memory: &mut dyn Memory,
        early: Option<&EarlyAnswer>,
    ) -> Answer {
        let Reserve {
            head,
            framing,
            client,
            ..
        } = self.reserve;
        // The version stays here: keep-alive is decided inside this layer, and handlers have
        // no use for it.
        let RequestHead {
            line,
            version,
            mut headers,
        } = head;
        let decoded = encoding::decode(&mut headers, self.body, max_inflated, &mut *memory);
        let (body, refused) = match decoded {
            Ok(body) => (body, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        // An early answer keeps the connection: offered only to a request whose answer does.
        let early = early.filter(|_| framing.keep_alive).cloned();
        let request = Request {
            line,
            headers,
            body,
            peer,
            client,
            early,
        };
        // What handling it costs is held too, beyond the body: bodies that inflate to millions
        // of members take far more to parse than their bytes, and 32 of them at once took
        // 930 MiB.
        let refused = refused.or_else(|| {
            let cost = handler.cost(&request);
            (cost > 0 && !memory.charge(cost)).then(|| DecodeError::Busy {
                budget: memory.budget(),
            })
        });
        let (response, failed) = match refused {
            None => call_handler(handler, &request),
            Some(e) => (decode_refusal(&e), false),
        };
        let line = Line {
            line: request.line,
            version,
        };
        Answer {
            response,
            line: Some(line),
            kind: Kind::Handled {
                close: !framing.keep_alive || failed,
            },
        }
    }
}

/// What of the head an answer needs: for its framing and for the access log.
struct Line {
    line: RequestLine,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
}

/// How an answer came about, which decides how it is written and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A refusal while the request was read: written at once with `Connection: close`, then
    /// the connection is drained and closed (the client may still be sending).
    Refusal,
    /// A request without a body refused from its head: the connection is kept.
    Kept,
    /// A handled request; `close` when it cannot be kept (the client asked, or the handler
    /// failed).
    Handled { close: bool },
}

/// An answer to write, and what it decides for the connection.
pub(super) struct Answer {
    response: Response,
    /// `None` when the head could not be parsed.
    line: Option<Line>,
    kind: Kind,
}

/// What becomes of the connection once an answer was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After<'a> {
    /// Keep it for the next request, as protected by this client name (if any), when the
    /// connection table lets it wait (see `caps::ConnTable::idle`); drop it otherwise.
    KeepIfIdle(Option<&'a str>),
    /// Close; everything the client sent has been read.
    Close,
    /// Close, but the client may still be sending: drain first.
    Linger,
    /// The connection is broken (reset, timed-out write, client gone): just drop it.
    Drop,
}

impl Answer {
    fn new(response: Response, head: Option<RequestHead>, kind: Kind) -> Answer {
        let line = head.map(|h| Line {
            line: h.line,
            version: h.version,
        });
        Answer {
            response,
            line,
            kind,
        }
    }

    fn refusal(head: Option<RequestHead>, error: &HeadError) -> Answer {
        let response = Response::error(error.code(), &error.to_string());
        Answer::new(response, head, Kind::Refusal)
    }

    /// The refusal of a request whose head was not read whole (unparsable, too large, too
    /// slow).
    pub(super) fn unparsed(error: &HeadError) -> Answer {
        Answer::refusal(None, error)
    }

    /// A refusal this layer made, dressed by `handler` for its route (`Handler::dress`); a
    /// handled answer, or one without a head, as it is.
    pub(super) fn dress(mut self, handler: &dyn Handler) -> Answer {
        let Some(line) = &self.line else {
            return self;
        };
        if matches!(self.kind, Kind::Handled { .. }) {
            return self;
        }
        let plain = self.response.clone();
        self.response = catch_unwind(AssertUnwindSafe(|| {
            handler.dress(line.line.method(), line.line.path(), plain)
        }))
        .unwrap_or_else(|_| {
            log::warn!("Handler::dress panicked; the answer goes as it was");
            self.response.clone()
        });
        self
    }

    /// The same answer for a server that is `stopping`: it closes the connection.
    pub(super) fn settle(mut self, stopping: bool) -> Answer {
        if stopping {
            self.kind = match self.kind {
                Kind::Kept => Kind::Refusal,
                Kind::Handled { .. } => Kind::Handled { close: true },
                Kind::Refusal => Kind::Refusal,
            };
        }
        self
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// The method, or "-" when the head could not be parsed.
    pub(super) fn method(&self) -> &str {
        self.line.as_ref().map_or("-", |l| l.line.method())
    }

    /// The path, or "-" when the head could not be parsed.
    pub(super) fn path(&self) -> &str {
        self.line.as_ref().map_or("-", |l| l.line.path())
    }

    /// Who the request authenticated as (`Response::client`).
    pub(super) fn client(&self) -> Option<&str> {
        self.response.client.as_deref()
    }

    /// The answer on the wire, dated `date`, announcing what becomes of the connection.
    pub(super) fn render(&self, date: SystemTime) -> Rendered {
        let version = self.line.as_ref().map_or(1, |l| l.version);
        let disposition = match (self.kind, version) {
            (Kind::Refusal | Kind::Handled { close: true }, _) => Disposition::Close,
            (_, 0) => Disposition::KeepAlive10,
            (_, _) => Disposition::KeepAlive,
        };
        let head_only = self
            .line
            .as_ref()
            .is_some_and(|l| l.line.method() == "HEAD");
        render(&self.response, disposition, head_only, date)
    }

    /// What follows the answer: `stalled` is the longest the client took no byte of it (`None`
    /// when writing it failed), `buffered` whether bytes the client sent after the request
    /// wait unread. A client whose answer sat unread is not served the requests it pipelined
    /// behind it: it would hold its slot as long as it keeps sending and does not read.
    pub(super) fn after(&self, stalled: Option<Duration>, buffered: bool) -> After<'_> {
        let Some(stalled) = stalled else {
            return After::Drop;
        };
        let unread = stalled >= UNREAD_ANSWER;
        match self.kind {
            Kind::Refusal => After::Linger,
            // A refused request never earns its connection the protection of an authenticated
            // one (see `caps`).
            Kind::Kept if unread => After::Linger,
            Kind::Kept => After::KeepIfIdle(None),
            Kind::Handled { close } if !(close || unread && buffered) => {
                After::KeepIfIdle(self.client())
            }
            Kind::Handled { .. } if buffered => After::Linger,
            Kind::Handled { .. } => After::Close,
        }
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
        method: head.line.method(),
        path: head.line.path(),
        query: head.line.query(),
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

/// Calls the handler, turning a panic or an unusable status into a 500. The flag is true when
/// that happened, and the connection is then closed: after a panic nothing is known about the
/// state the handler left behind.
pub(super) fn call_handler(handler: &dyn Handler, request: &Request) -> (Response, bool) {
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
fn decode_refusal(e: &DecodeError) -> Response {
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

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
