//! Sans-I/O request heads: parsing a request head out of a byte slice and deciding how
//! the request is framed (body length, keep-alive, `Expect`), plus the one mapping of
//! every request-side failure to a status, a machine code and a message.
//!
//! Everything here is a pure function of its arguments; nothing here reads a socket,
//! looks at a clock or allocates more than the head it is given. It must never
//! panic on any input, never accept a body length it cannot represent exactly, and
//! never put a header value into an error message, because header values may be
//! credentials.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use crate::code::Code;

/// Largest request head accepted, request line and headers included.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest number of header fields accepted in one request head.
pub const MAX_HEADERS: usize = 64;

/// How many empty lines may precede a request line. RFC 9112 asks servers to skip
/// at least one; allowing a few more is harmless, but allowing thousands would let a
/// client make every re-parse of the buffer walk over them again.
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// A parsed request head, owning its parts: three allocations whatever its number of headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub line: RequestLine,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Headers,
}

impl RequestHead {
    /// Values of every header called `name`, compared without regard to case.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.values(name)
    }
}

/// The method and the target of a request line, in one string (RFC 9112 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The method, then the path, then the query, end to end.
    text: String,
    path_at: usize,
    query_at: usize,
}

impl RequestLine {
    /// A request line of `method`, `path` (the target up to its first `?`) and `query` (what
    /// follows that `?`), each as sent.
    pub fn new(method: &str, path: &str, query: &str) -> RequestLine {
        let mut text = String::with_capacity(method.len() + path.len() + query.len());
        for part in [method, path, query] {
            text.push_str(part);
        }
        RequestLine {
            text,
            path_at: method.len(),
            query_at: method.len() + path.len(),
        }
    }

    pub fn method(&self) -> &str {
        self.text.get(..self.path_at).unwrap_or_default()
    }

    /// The target up to the first '?', as sent (not percent-decoded).
    pub fn path(&self) -> &str {
        self.text
            .get(self.path_at..self.query_at)
            .unwrap_or_default()
    }

    /// What follows the first '?' of the target, as sent (not percent-decoded); empty without
    /// one. It may hold credentials (InfluxDB's `u=` and `p=`): it is never logged.
    pub fn query(&self) -> &str {
        self.text.get(self.query_at..).unwrap_or_default()
    }
}

/// The header fields of a request, in the order sent: names as sent, values as raw bytes
/// (surrounding whitespace removed; HTTP allows bytes that are not UTF-8), all in one buffer.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    /// The byte ranges of each field's name and value in `bytes`.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl Headers {
    /// Room for `fields` fields of `bytes` bytes of names and values in all.
    pub fn with_capacity(fields: usize, bytes: usize) -> Headers {
        Headers {
            bytes: Vec::with_capacity(bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        let middle = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.fields.push((start..middle, middle..self.bytes.len()));
    }

    /// Every field, in order: its name and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(name, value)| {
            // Names went in as `&str`.
            let name = self.bytes.get(name.clone()).unwrap_or_default();
            (
                std::str::from_utf8(name).unwrap_or_default(),
                self.bytes.get(value.clone()).unwrap_or_default(),
            )
        })
    }

    /// Values of every field called `name`, compared without regard to case.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields.iter().filter_map(move |(n, value)| {
            let n = self.bytes.get(n.clone())?;
            n.eq_ignore_ascii_case(name.as_bytes())
                .then(|| self.bytes.get(value.clone()).unwrap_or_default())
        })
    }

    /// The value of the first field called `name`, compared without regard to case.
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// Removes every field called `name`, compared without regard to case.
    pub fn remove(&mut self, name: &str) {
        let bytes = &self.bytes;
        self.fields.retain(|(n, _)| {
            !bytes
                .get(n.clone())
                .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        });
    }
}

/// Two header lists are equal when they hold the same fields in the same order.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in fields {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

/// How a request with a valid head is to be read and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Exact number of body bytes that follow the head (`Content-Length`); 0 when `chunked`.
    pub body_len: u64,
    /// The body is sent chunked (`Transfer-Encoding: chunked`), its length known only at its
    /// end (see `chunked`).
    pub chunked: bool,
    /// Whether the client allows the connection to stay open after the response.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// Every reason for which the layer refuses a request on the client's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head is not valid HTTP/1.x syntax; the detail names the part at fault.
    Malformed(&'static str),
    /// The request line names a version other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// The head is larger than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// The request target is not in origin form (it does not start with '/').
    BadTarget,
    /// A `Transfer-Encoding` other than `chunked` alone (a list, another coding, empty): its
    /// body cannot be read here, and a `Content-Length` could.
    TransferEncoding,
    /// A request framed more ways than one, or in a way its version does not have:
    /// `Transfer-Encoding` with `Content-Length`, `Transfer-Encoding` twice, or on HTTP/1.0.
    AmbiguousFraming,
    /// A chunked body is not valid chunked framing; the detail names the part at fault.
    Chunked(&'static str),
    /// A chunked body passed the configured limit (bytes) as it was decoded.
    ChunkedTooLarge { limit: u64 },
    /// A `Content-Length` value is not a plain decimal number that fits in 64 bits.
    InvalidContentLength,
    /// Several `Content-Length` headers with different values.
    ConflictingContentLength,
    /// The declared body is larger than the configured limit.
    BodyTooLarge { length: u64, limit: u64 },
    /// An `Expect` value other than `100-continue`.
    UnsupportedExpectation,
    /// The head did not arrive in full within the head deadline.
    HeadTimeout(Duration),
    /// The body did not arrive in full within the body deadline.
    BodyTimeout(Duration),
    /// The body fell behind its pace: `received` of its `length` bytes had arrived `after`
    /// it began, and at the pace `limit` (`server.header_timeout`) asks of its length it was
    /// due to have more, for longer than the grace allows. A chunked body has no length: its
    /// pace is that of the memory it holds, and `length` is half of that (`chunked`).
    BodyTooSlow {
        received: u64,
        length: u64,
        after: Duration,
        limit: Duration,
        chunked: bool,
    },
}

impl HeadError {
    /// The code of the answer to this failure (its status comes with it).
    pub fn code(&self) -> Code {
        match self {
            HeadError::Malformed(_) => Code::MalformedRequest,
            HeadError::UnsupportedVersion => Code::UnsupportedVersion,
            HeadError::TooLarge => Code::HeadTooLarge,
            HeadError::BadTarget => Code::InvalidTarget,
            HeadError::TransferEncoding => Code::TransferEncodingUnsupported,
            HeadError::AmbiguousFraming => Code::AmbiguousFraming,
            HeadError::Chunked(_) => Code::MalformedRequest,
            HeadError::ChunkedTooLarge { .. } => Code::BodyTooLarge,
            HeadError::InvalidContentLength | HeadError::ConflictingContentLength => {
                Code::InvalidContentLength
            }
            HeadError::BodyTooLarge { .. } => Code::BodyTooLarge,
            HeadError::UnsupportedExpectation => Code::ExpectationFailed,
            HeadError::HeadTimeout(_) => Code::HeadTimeout,
            HeadError::BodyTimeout(_) | HeadError::BodyTooSlow { .. } => Code::BodyTimeout,
        }
    }
}

/// The message says what went wrong and what the client can do; it is what goes into
/// the "error" field of the JSON body.
impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(detail) => {
                write!(
                    f,
                    "malformed request head ({detail}); send a valid HTTP/1.1 request"
                )
            }
            HeadError::UnsupportedVersion => {
                f.write_str("unsupported protocol; only HTTP/1.1 and HTTP/1.0 are served here")
            }
            HeadError::TooLarge => write!(
                f,
                "request head is larger than {MAX_HEAD_BYTES} bytes or has more than {MAX_HEADERS} headers"
            ),
            HeadError::BadTarget => f.write_str("request target must be a path starting with '/'"),
            HeadError::TransferEncoding => f.write_str(
                "only 'Transfer-Encoding: chunked' is supported; send the body chunked, or with Content-Length",
            ),
            HeadError::AmbiguousFraming => f.write_str(
                "the body is framed more than one way (Transfer-Encoding with Content-Length, Transfer-Encoding twice, or Transfer-Encoding on HTTP/1.0); send one Content-Length, or 'Transfer-Encoding: chunked' alone over HTTP/1.1",
            ),
            HeadError::Chunked(detail) => write!(
                f,
                "malformed chunked body ({detail}); send hex chunk sizes and CRLF line ends, ending with a 0 chunk and an empty line"
            ),
            HeadError::ChunkedTooLarge { limit } => write!(
                f,
                "chunked request body is larger than {limit} bytes (server.max_body_bytes)"
            ),
            HeadError::InvalidContentLength => f.write_str(
                "Content-Length must be a single non-negative decimal number that fits in 64 bits",
            ),
            HeadError::ConflictingContentLength => {
                f.write_str("several different Content-Length values; send exactly one")
            }
            HeadError::BodyTooLarge { length, limit } => write!(
                f,
                "request body is {length} bytes; the limit is {limit} (server.max_body_bytes)"
            ),
            HeadError::UnsupportedExpectation => {
                f.write_str("only 'Expect: 100-continue' is supported; remove the Expect header")
            }
            HeadError::HeadTimeout(limit) => {
                write!(f, "request head not received within {}", Secs(*limit))
            }
            HeadError::BodyTimeout(limit) => write!(
                f,
                "request body not received within {}; send it right after the head",
                Secs(*limit)
            ),
            HeadError::BodyTooSlow {
                received,
                length,
                after,
                limit,
                chunked,
            } => {
                let rate = u128::from(*length) * 1000 / limit.as_millis().max(1);
                if *chunked {
                    return write!(
                        f,
                        "request body too slow: {received} bytes in {}; a chunked body must keep the pace of the memory it holds ({} bytes, half of it within server.header_timeout ({})), here {rate} bytes/s",
                        Secs(*after),
                        length.saturating_mul(2),
                        Secs(*limit)
                    );
                }
                write!(
                    f,
                    "request body too slow: {received} of {length} bytes in {}; a body must keep the pace that brings all of it within server.header_timeout ({}), here {rate} bytes/s",
                    Secs(*after),
                    Secs(*limit)
                )
            }
        }
    }
}

impl std::error::Error for HeadError {}

/// A duration written the way people configure it: "10s", "1.5s" or "250ms".
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis < 1000 {
            write!(f, "{millis}ms")
        } else if millis.is_multiple_of(1000) {
            write!(f, "{}s", millis / 1000)
        } else {
            let fraction = format!("{:03}", millis % 1000);
            write!(f, "{}.{}s", millis / 1000, fraction.trim_end_matches('0'))
        }
    }
}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, and `Ok(Some((head, len)))` once
/// it is complete, where `len` is the number of bytes the head takes up (anything
/// after it is body or the next pipelined request). Only the first
/// [`MAX_HEAD_BYTES`] bytes are ever looked at: a head that is not complete within
/// them is [`HeadError::TooLarge`].
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let window = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);
    check_leading_empty_lines(window)?;

    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(from_httparse(e)),
    };

    // A complete parse always fills in the request line; the fallbacks only keep
    // this function total.
    let method = parsed
        .method
        .ok_or(HeadError::Malformed("missing method"))?;
    let target = parsed
        .path
        .ok_or(HeadError::Malformed("missing request target"))?;
    let version = parsed.version.ok_or(HeadError::UnsupportedVersion)?;
    if version > 1 {
        return Err(HeadError::UnsupportedVersion);
    }
    // Only origin form is served: absolute form is meant for proxies, and authority
    // and asterisk forms belong to CONNECT and OPTIONS *, which this server does not
    // offer.
    if !target.starts_with('/') {
        return Err(HeadError::BadTarget);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let fields = parsed.headers;
    let bytes = fields.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut headers = Headers::with_capacity(fields.len(), bytes);
    for field in fields.iter() {
        headers.push(field.name, field.value);
    }

    let head = RequestHead {
        line: RequestLine::new(method, path, query),
        version,
        headers,
    };
    Ok(Some((head, len)))
}

fn check_leading_empty_lines(buf: &[u8]) -> Result<(), HeadError> {
    let mut rest = buf;
    let mut lines = 0;
    loop {
        rest = if let Some(r) = rest.strip_prefix(b"\r\n") {
            r
        } else if let Some(r) = rest.strip_prefix(b"\n") {
            r
        } else {
            return Ok(());
        };
        lines += 1;
        if lines > MAX_LEADING_EMPTY_LINES {
            return Err(HeadError::Malformed(
                "too many empty lines before the request line",
            ));
        }
    }
}

fn from_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::UnsupportedVersion,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Token => HeadError::Malformed("invalid method or request target"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
    }
}

/// Decides how the request is framed, refusing anything this server does not read.
///
/// The checks run in a fixed order: `Transfer-Encoding` (400 with `Content-Length`, twice or
/// on HTTP/1.0; 411 for anything but `chunked` alone), then `Content-Length` syntax and
/// agreement (400), then the body limit (413), then `Expect` (417). So a client that waits
/// for `100 Continue` is told no before it sends a body that would be refused anyway.
pub fn framing(head: &RequestHead, max_body_bytes: u64) -> Result<Framing, HeadError> {
    let chunked = transfer_coding(head)?;
    let body_len = body_length(&head.headers)?;
    if body_len > max_body_bytes {
        return Err(HeadError::BodyTooLarge {
            length: body_len,
            limit: max_body_bytes,
        });
    }

    let mut expect_continue = false;
    for value in head.values("expect") {
        if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
            expect_continue = true;
        } else {
            return Err(HeadError::UnsupportedExpectation);
        }
    }
    // RFC 9110 section 10.1.1: a 100-continue expectation in an HTTP/1.0 request
    // must be ignored, because HTTP/1.0 clients do not understand 1xx responses.
    if head.version == 0 {
        expect_continue = false;
    }

    let close = connection_has(head, b"close");
    let keep_alive = if head.version >= 1 {
        !close
    } else {
        !close && connection_has(head, b"keep-alive")
    };

    Ok(Framing {
        body_len,
        chunked,
        keep_alive,
        expect_continue,
    })
}

/// Whether the body is chunked: true for exactly one `Transfer-Encoding` header whose value
/// is `chunked` (any case) on HTTP/1.1 without `Content-Length`, false without the header.
///
/// No request is ever framed two ways, the classic request smuggling vector (RFC 9112 §6.1):
/// `Transfer-Encoding` with `Content-Length`, the header twice (front ends join or pick them
/// differently) and `Transfer-Encoding` on HTTP/1.0 (which has none) are
/// [`HeadError::AmbiguousFraming`], 400. Any other value (a list such as `gzip, chunked`,
/// `identity`, an unknown coding, empty) is [`HeadError::TransferEncoding`], 411: a body
/// in a coding not read here, which the client can send with `Content-Length` instead.
/// Either way the connection is closed, its body unread.
pub fn transfer_coding(head: &RequestHead) -> Result<bool, HeadError> {
    let mut values = head.values("transfer-encoding");
    let Some(value) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some()
        || head.version == 0
        || head.values("content-length").next().is_some()
    {
        return Err(HeadError::AmbiguousFraming);
    }
    if !value.eq_ignore_ascii_case(b"chunked") {
        return Err(HeadError::TransferEncoding);
    }
    Ok(true)
}

/// The body length a request declares: 0 without `Content-Length`. Several
/// `Content-Length` headers are accepted only when they are the very same digit string.
/// `Transfer-Encoding` is [`transfer_coding`]'s.
pub fn body_length(headers: &Headers) -> Result<u64, HeadError> {
    let mut declared: Option<(&[u8], u64)> = None;
    for value in headers.values("content-length") {
        let length = parse_decimal(value).ok_or(HeadError::InvalidContentLength)?;
        match declared {
            Some((first, _)) if first != value => {
                return Err(HeadError::ConflictingContentLength);
            }
            Some(_) => {}
            None => declared = Some((value, length)),
        }
    }
    Ok(declared.map_or(0, |(_, length)| length))
}

/// A non-empty run of ASCII digits as a `u64`, or `None` for anything else (signs,
/// spaces, lists, overflow).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            _ => return None,
        };
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// Whether any `Connection` header lists `token` (the header is a comma-separated
/// list of case-insensitive tokens).
fn connection_has(head: &RequestHead, token: &[u8]) -> bool {
    head.values("connection").any(|value| {
        value
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
