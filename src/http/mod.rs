//! The HTTP layer of the gateway: the public types that the rest of the program sees
//! (limits, requests, responses, the handler trait), the re-exports of the server, and
//! `tls`, which loads the certificate and key for HTTPS.
//!
//! This layer is the security boundary of the process. It speaks a strict subset of
//! HTTP/1.1 and HTTP/1.0 over `std::net`, bounds every buffer, every wait and every
//! thread, and turns every malformed or hostile input into a JSON error response. It
//! must never panic on input, never allocate in proportion to a number the client
//! claims before that number has been checked against a limit, and never log header
//! values or bodies, which may carry credentials.
//!
//! Each file owns one part, roughly in the order a connection meets them:
//! - `server.rs`: the lifecycle, `Server` (bind, run, drain);
//! - `shutdown.rs`: `ShutdownHandle`, the flag every part reads, and waking the accept loop;
//! - `accept.rs`: the accept loop, and the 503 for a connection refused at a cap;
//! - `caps.rs` (tests in `caps_tests.rs`): the connection caps, in total and per client (an IPv4 address or an IPv6
//!   /64), the slot that an open connection holds, what each connection is doing, and
//!   which one gives way to a new connection when every slot is taken;
//! - `budget.rs`: the budget of request-body bytes held in memory at once, and the hold
//!   of one request on it;
//! - `pool.rs`: the generic pool of threads that runs each connection as one job;
//! - `serve.rs`: a connection's thread, from the accepted socket (and the TLS handshake,
//!   over HTTPS) to the connection loop;
//! - `transport.rs`: the `Transport` trait over TCP and TLS;
//! - `tls.rs`: loading the certificate and key, and `TlsStream`;
//! - `sequence.rs` (tests in `sequence_tests.rs`): the steps of one request (head, admit,
//!   reserve, body, handle, answer) as values without any I/O;
//! - `conn.rs`: the connection loop, which drives those steps over the socket within the
//!   deadlines and keeps the connection or closes it;
//! - `early.rs`: an answer a handler arms before it waits, written by the thread that
//!   settles the wait;
//! - `chunked.rs`: decoding a chunked request body, strictly and within its limits, without
//!   any I/O;
//! - `encoding.rs`: undoing a body's `Content-Encoding` (gzip, deflate) within a bound,
//!   before the handler sees it, without any I/O;
//! - `buffer.rs`: the fixed-size input buffer of one connection;
//! - `deadline.rs`: deadlines, and the socket timeouts that hold every wait to them;
//! - `head.rs` (tests in `head_tests.rs`) and `render.rs`: parsing request heads and rendering responses,
//!   both without any I/O;
//! - `tests.rs`: end-to-end tests of the whole layer over loopback;
//! - `responses.rs`: the tests' reader of responses, over a socket or over bytes.

mod accept;
mod budget;
mod buffer;
mod caps;
mod chunked;
mod conn;
mod deadline;
mod early;
#[cfg(test)]
mod early_tests;
pub mod encoding;
mod head;
mod pool;
mod render;
#[cfg(test)]
mod responses;
mod sequence;
mod serve;
mod server;
mod shutdown;
#[cfg(test)]
mod tests;
pub mod tls;
mod transport;

use std::net::SocketAddr;

use crate::code::Code;
use std::time::Duration;

pub use early::EarlyAnswer;
pub use head::{Headers, RequestLine};
pub use server::{Gauges, Server};
pub use shutdown::ShutdownHandle;

/// Bounds that the server enforces on every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deadline for reading a whole request head, counted from its first byte, and
    /// separately the deadline for reading the body once the head is in; a body must also
    /// keep the pace that brings all of it within this span (its length over it, in bytes
    /// per second), or it is refused with 408 once a second behind. The same span bounds the
    /// writing of one response.
    pub header_timeout: Duration,
    /// How long a connection may wait for the first byte of a request, whether it is
    /// the first request on the connection or the next one on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Largest request body accepted; larger declared bodies are refused with 413
    /// before any body byte is read.
    pub max_body_bytes: u64,
    /// Largest body once its `Content-Encoding` is undone; a body that would inflate past it is
    /// refused with 413 without the memory being taken.
    pub max_inflated_bytes: u64,
    /// Bytes of request bodies held in memory at once, all connections together, counting
    /// what compressed bodies inflate to. A body is reserved whole before it is read (and only
    /// once `Handler::admit` let its head through); one that finds too little free waits up to
    /// a second (closing bodies that have gone silent, or fallen behind their pace, to make
    /// room) and is refused with 503 `too_many_bodies` after. At least `max_body_bytes`.
    pub max_body_bytes_in_flight: u64,
    /// Connection threads kept alive while idle. The pool starts threads as
    /// connections arrive (none before the first), and of those it keeps this many
    /// waiting for the next connection; the others exit after 30 s without one.
    pub workers: usize,
    /// Global cap on open connections, which is also the cap on connection threads. At the
    /// cap a new connection takes the slot of the open one making the least progress, when
    /// one can give way (see `caps`), and is refused with 503 otherwise.
    pub max_connections: usize,
    /// Cap on open connections from one client: one IPv4 address, or one IPv6 /64.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            max_body_bytes: 1024 * 1024,
            max_inflated_bytes: encoding::MAX_INFLATED_BYTES as u64,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            workers: 16,
            max_connections: 256,
            max_connections_per_ip: 64,
        }
    }
}

/// A request head, checked against the limits, before any byte of its body is reserved or
/// read: what `Handler::admit` decides on.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target up to the first '?', exactly as sent (not percent-decoded).
    pub path: &'a str,
    /// What follows the first '?', as sent (not percent-decoded); empty without one. It may
    /// hold credentials (InfluxDB's `u=` and `p=`): never log it.
    pub query: &'a str,
    /// Header names as sent, in order, with their raw values (`Content-Encoding` included:
    /// the body it applies to is not read yet).
    pub headers: &'a Headers,
    pub peer: SocketAddr,
}

impl Head<'_> {
    /// The value of the first header called `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.first(name)
    }
}

/// A complete request: head and body, both already checked against the limits.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method and the target, as sent.
    pub line: RequestLine,
    /// Header names as sent, in order; values are raw bytes because HTTP allows
    /// bytes that are not UTF-8. `Content-Encoding` is never among them: the layer has
    /// undone it (see `encoding`). (The API reads what it needs of them in `admit`; the
    /// layer's tests read them here.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub headers: Headers,
    /// The body as the client meant it: inflated when it was sent compressed.
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// What `Handler::admit` said of the head: the name of the client the request
    /// authenticated as, or `None`.
    pub client: Option<String>,
    /// An answer the handler may arm before it waits for another thread, written by that
    /// thread (see [`EarlyAnswer`]); `None` where the layer offers none (TLS, a pipelined
    /// request behind it, a connection that closes after the answer).
    pub early: Option<EarlyAnswer>,
}

impl Request {
    pub fn method(&self) -> &str {
        self.line.method()
    }

    /// The request target up to the first '?', exactly as sent (not percent-decoded).
    pub fn path(&self) -> &str {
        self.line.path()
    }

    /// What follows the first '?', as sent (not percent-decoded); empty without one. It may
    /// hold credentials (InfluxDB's `u=` and `p=`): never log it.
    pub fn query(&self) -> &str {
        self.line.query()
    }

    /// The value of the first header called `name`, compared without regard to case.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.first(name)
    }
}

/// A response produced by a handler or by the layer itself.
///
/// The layer adds `Content-Length`, `Date` and `Connection` when it writes the
/// response; handler-supplied headers with those names are ignored so that a handler
/// can never break the framing of the connection.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The name of the client the request authenticated as; set by the API after a token
    /// check passed, `None` otherwise (and always when no tokens are configured). It is never
    /// sent. The layer protects a kept-alive connection whose last request authenticated and
    /// was handled: such a connection is not closed to admit another, for at most
    /// `max_connections_per_ip` connections of one client name (and half of
    /// `max_connections`); the others give way like anyone's (see `caps`). A request refused
    /// by `Handler::admit` (a 429 for its request rate, say) never protects its connection.
    /// The access log names it.
    pub client: Option<String>,
    /// The error code of a refusal (`Response::error`, and the write API's answers in
    /// InfluxDB's shapes); `None` for an answer that is none. Never sent beyond the body: the
    /// state page and the Prometheus page count refusals by it (`Exchange::code`).
    pub code: Option<Code>,
}

impl Response {
    /// A response whose body is `body` serialised as JSON.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        // Serialising a `Value` cannot fail (its map keys are always strings), but a
        // fallback keeps this path free of panics all the same.
        let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
        Response::json_bytes(status, bytes)
    }

    /// A JSON error response: `{"error": message, "code": code}`, with the status of `code`
    /// and, when the code asks for one, `Retry-After`.
    ///
    /// The message should say what went wrong and what the caller can do about it. It
    /// must never contain header values or body content, which may be secrets.
    pub fn error(code: Code, message: &str) -> Response {
        // The object is written by hand so that "error" comes before "code" whatever
        // features serde_json was built with; the strings themselves go through
        // serde_json so that they are always escaped correctly.
        let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_owned());
        let name = serde_json::to_string(code.as_str()).unwrap_or_else(|_| "\"\"".to_owned());
        let body = format!("{{\"error\":{message},\"code\":{name}}}");
        let response = Response {
            code: Some(code),
            ..Response::json_bytes(code.status(), body.into_bytes())
        };
        match code.retry_after() {
            Some(seconds) => response.with_header("Retry-After", seconds.to_string()),
            None => response,
        }
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// A JSON response of `body`, already serialized (`Content-Type: application/json`).
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_owned())],
            body,
            client: None,
            code: None,
        }
    }
}

/// What the layer reports after each response it writes, including the error
/// responses it generates itself (400, 408, 411, 413, 417, 431, 500, 503).
///
/// Over HTTPS two cases differ: a connection refused at a connection cap is closed
/// without a response but still reported as 503 with no body bytes, and a connection
/// whose TLS handshake fails is not reported at all, since it never carried a request.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub peer: SocketAddr,
    /// "-" when the request head could not be parsed.
    pub method: &'a str,
    /// "-" when the request head could not be parsed.
    pub path: &'a str,
    pub status: u16,
    /// Response body bytes written.
    pub bytes: usize,
    /// From the first byte of the request (or the accept, for a refused connection)
    /// to the end of the response.
    pub duration: Duration,
    /// `Response::client` of the answer: who the request authenticated as, if anyone. Client
    /// text for a log line: escape it (see `logtext`).
    pub client: Option<&'a str>,
    /// `Response::code` of the answer written: why the request was refused, if it was.
    pub code: Option<Code>,
}

/// The application side of the server.
pub trait Handler: Send + Sync + 'static {
    /// Decides from the head alone, before any byte of the body is reserved in the body budget
    /// or read, whether the request goes on: `Ok` with the name of the client it authenticated
    /// as (or `None`), which `handle` then finds in `Request::client`; or `Err` with the answer,
    /// which is sent at once. A refused request's body is never read: the connection is closed
    /// after the answer when there is one (and kept alive otherwise). So a request without a
    /// valid token, on a route that does not exist or with the wrong method, costs no memory
    /// and no wait, however large the body it announces. A panic here becomes a 500 and closes
    /// the connection. Without an implementation every request goes on, as no one's.
    fn admit(&self, head: &Head<'_>) -> Result<Option<String>, Response> {
        let _ = head;
        Ok(None)
    }

    /// Bytes of memory that handling `req` takes beyond its (inflated) body, at most: what
    /// parsing it and making its output hold at once. The body budget charges them before
    /// `handle` runs, up to all of `server.max_body_bytes_in_flight`, so requests whose bodies
    /// inflate to much work queue for memory instead of all being handled at once (see
    /// `budget::Hold::take_for_handling`). Must be quick and must not panic. Without an
    /// implementation, nothing beyond the body.
    fn cost(&self, req: &Request) -> u64 {
        let _ = req;
        0
    }

    /// Answers one request that `admit` let through, its body read. A panic here becomes a
    /// 500 response and closes the connection; it never takes a worker thread down.
    fn handle(&self, req: &Request) -> Response;

    /// Adds to an answer this layer made itself, for a request whose head it read (a body too
    /// large, too slow, or framed two ways; no memory for it), what the service puts on every
    /// answer of that route (InfluxDB's routes: `X-Influxdb-Version` and v2's error shape).
    /// Must be quick; a panic leaves the answer as it was. Without an implementation, nothing.
    fn dress(&self, method: &str, path: &str, response: Response) -> Response {
        let _ = (method, path);
        response
    }

    /// Called once per response written (access log and counters live in the
    /// implementor). It runs on the connection's thread, or on the accept thread for
    /// connections refused at the cap, so it must be quick.
    fn completed(&self, exchange: &Exchange<'_>) {
        let _ = exchange;
    }
}
