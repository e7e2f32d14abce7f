//! The tests' reader of the layer's responses, one for the tests over sockets (`tests.rs`,
//! `early_tests.rs`) and over byte slices (`sequence_tests.rs`): one response at a time from
//! any `BufRead`, its head parsed by `httparse` and its body framed as a client frames it
//! (RFC 9112, section 6.3): none after a 1xx, 204 or 304 or for a HEAD request; else a
//! chunked body decoded by `chunked.rs`, `Content-Length` bytes, or the rest of the input.

use std::io::ErrorKind::{InvalidData, UnexpectedEof};
use std::io::{self, BufRead, Read};

use serde_json::Value;

use super::chunked::Decoder;

/// Most header fields of a response the reader takes; the layer sends a handful.
const MAX_FIELDS: usize = 64;

/// Most body bytes a `Content-Length` may announce: the layer's answers are far smaller, and a
/// larger number is taken for the mistake it would be.
const MAX_BODY: u64 = 1 << 30;

/// One response as a client reads it.
#[derive(Debug)]
pub(super) struct Resp {
    pub(super) status: u16,
    /// Names and values as sent, in order.
    pub(super) headers: Vec<(String, String)>,
    /// The body without its framing (a chunked one decoded).
    pub(super) body: Vec<u8>,
}

impl Resp {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }

    /// Checks the shape every layer-generated error must have.
    #[track_caller]
    pub(super) fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("connection"), Some("close"));
        assert!(self.header("date").is_some());
        let body = self.json();
        let object = body.as_object().expect("object");
        assert_eq!(object.len(), 2, "{body}");
        assert_eq!(body["code"], code);
        body["error"].as_str().expect("error message").to_owned()
    }
}

/// An error of `kind` saying `what`, with the bytes at fault.
fn failed(kind: io::ErrorKind, what: &str, bytes: &[u8]) -> io::Error {
    io::Error::new(
        kind,
        format!("{what}: {:?}", String::from_utf8_lossy(bytes)),
    )
}

/// Reads the next response from `input`; `Ok(None)` when the input ends before any byte of
/// one. `head` says it answers a HEAD request: no body follows, whatever its head says. An
/// interim 1xx response comes as one of its own, without a body.
pub(super) fn read_response(input: &mut impl BufRead, head: bool) -> io::Result<Option<Resp>> {
    let mut raw = Vec::new();
    let (status, headers) = loop {
        if input.read_until(b'\n', &mut raw)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            let what = "the input ended inside a response head";
            return Err(failed(UnexpectedEof, what, &raw));
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&raw) {
            Ok(httparse::Status::Complete(_)) => {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_owned(), value)
                    })
                    .collect::<Vec<_>>();
                break (parsed.code.expect("a status"), headers);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                let what = format!("not a response head ({e})");
                return Err(failed(InvalidData, &what, &raw));
            }
        }
    };
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status < 200 || status == 204 || status == 304 {
        return Ok(Some(resp));
    }
    let chunked = resp.header("transfer-encoding").is_some_and(|codings| {
        let last = codings.rsplit(',').next().unwrap_or_default();
        last.trim().eq_ignore_ascii_case("chunked")
    });
    let lengths: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    if let Some(&length) = lengths.first() {
        // As a client must (RFC 9112, section 6.3): digits alone, the same value if repeated,
        // never beside chunked framing; and no more than a layer's answer could be.
        let all = lengths.join(",");
        if chunked {
            return Err(failed(
                InvalidData,
                "a Content-Length beside chunked",
                all.as_bytes(),
            ));
        }
        let digits = !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit());
        let length = match length.parse::<u64>() {
            Ok(n) if digits && lengths.iter().all(|l| *l == lengths[0]) && n <= MAX_BODY => n,
            _ => {
                return Err(failed(
                    InvalidData,
                    "not one Content-Length",
                    all.as_bytes(),
                ));
            }
        };
        input.by_ref().take(length).read_to_end(&mut resp.body)?;
        if resp.body.len() as u64 != length {
            return Err(failed(UnexpectedEof, "the body cut short", &resp.body));
        }
    } else if chunked {
        resp.body = read_chunked(input)?;
    } else {
        input.read_to_end(&mut resp.body)?;
    }
    Ok(Some(resp))
}

/// A chunked body, up to its final CRLF, decoded.
fn read_chunked(input: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut decoder = Decoder::new(u64::MAX);
    let mut body = Vec::new();
    while !decoder.is_done() {
        let buffered = input.fill_buf()?;
        if buffered.is_empty() {
            let what = "the input ended inside a chunked body, decoded so far";
            return Err(failed(UnexpectedEof, what, &body));
        }
        let used = decoder
            .feed(buffered, &mut body)
            .map_err(|e| io::Error::new(InvalidData, e.to_string()))?;
        input.consume(used);
    }
    Ok(body)
}

/// The reader frames each kind of body, and leaves what follows for the next response.
#[test]
fn each_framing_is_read_and_the_next_response_follows() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi\
        HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;x\r\nd\r\n0\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\
        HTTP/1.1 200 OK\r\n\r\nto the end";
    let mut rest = &input[..];
    let mut read = |head: bool| read_response(&mut rest, head).expect("a response");
    let statuses_and_bodies: Vec<(u16, Vec<u8>)> = [false, false, false, false, true, false]
        .into_iter()
        .map(|head| read(head).map(|r| (r.status, r.body)).expect("one more"))
        .collect();
    assert_eq!(
        statuses_and_bodies,
        [
            (100, b"".to_vec()),
            (200, b"hi".to_vec()),
            (200, b"abcd".to_vec()),
            (204, b"".to_vec()),
            (200, b"".to_vec()),
            (200, b"to the end".to_vec()),
        ]
    );
    assert!(read(false).is_none(), "the end of the input");
    let cut = read_response(
        &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"[..],
        false,
    );
    assert_eq!(cut.map(|_| ()).map_err(|e| e.kind()), Err(UnexpectedEof));
}

/// A framing a client may not guess at is an error, not a body of some length: a
/// `Content-Length` that is not digits, two that differ, one beside chunked framing, one past
/// what an answer could be. Repeated with the same value, it is one.
#[test]
fn a_framing_a_client_may_not_guess_at_is_an_error() {
    for head in [
        "Content-Length: +2",
        "Content-Length: 2 2",
        "Content-Length: 2\r\nContent-Length: 3",
        "Content-Length: 2, 3",
        "Content-Length: 2\r\nTransfer-Encoding: chunked",
        "Content-Length: 99999999999999",
        "Content-Length: ",
    ] {
        let input = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\nhi");
        let read = read_response(&mut input.as_bytes(), false);
        assert_eq!(
            read.map(|_| ()).map_err(|e| e.kind()),
            Err(InvalidData),
            "{head:?}"
        );
    }
    let input = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
    let read = read_response(&mut input.as_bytes(), false).expect("a response");
    assert_eq!(read.expect("one").body, b"hi");
}
