//! Response rendering: turning a `Response` into the bytes that go on the wire, with
//! the headers that frame the connection (`Date`, `Content-Length`, `Connection`), which
//! only this layer sets, and the reason phrase of each status.
//!
//! Like `head.rs` it is sans-I/O: everything here is a function of its arguments, the
//! clock read for `Date` aside, and nothing here touches a socket. It must never let a
//! handler-supplied header decide the framing of the connection, and never write a
//! header name or value that could split the response or corrupt the stream.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Response;
use crate::code::Code;

/// How the connection continues after a response, as the response must announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    /// The server closes: `Connection: close`.
    Close,
    /// HTTP/1.1 persistence is the default and needs no header.
    KeepAlive,
    /// An HTTP/1.0 client asked to keep the connection and must be told it was kept.
    KeepAlive10,
}

/// A response serialised for the wire.
pub(super) struct Rendered {
    pub(super) bytes: Vec<u8>,
    pub(super) status: u16,
    pub(super) body_bytes: usize,
    /// The response's `code`: why the request was refused, if it was.
    pub(super) code: Option<Code>,
}

/// Response headers that only the layer may set, because they decide the framing
/// of the connection (or, for Date, are always set by the layer).
const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "date",
];

/// Serialises a response, dated `date` (the caller reads the clock: this module works on
/// bytes alone). Every response carries `Date` and `Content-Length`
/// (except 204 and 304, which by definition have no body and where RFC 9110 forbids
/// or discourages it); a HEAD response carries the length but no body.
pub(super) fn render(
    response: &Response,
    disposition: Disposition,
    head_only: bool,
    date: SystemTime,
) -> Rendered {
    let status = response.status;
    let bodiless = status == 204 || status == 304;
    let body: &[u8] = if bodiless || head_only {
        &[]
    } else {
        &response.body
    };

    let mut out = Vec::with_capacity(256 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    out.extend_from_slice(b"Date: ");
    http_date(date, &mut out);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &response.headers {
        if RESERVED_HEADERS
            .iter()
            .any(|reserved| name.eq_ignore_ascii_case(reserved))
        {
            continue;
        }
        if !is_token(name) || !is_field_value(value) {
            // Writing it could split the response or corrupt the stream.
            log::warn!("dropping response header {name:?}: invalid name or value");
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", response.body.len());
    }
    match disposition {
        Disposition::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Disposition::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Disposition::KeepAlive => {}
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Rendered {
        bytes: out,
        status,
        body_bytes: body.len(),
        code: response.code,
    }
}

/// Sets the `Date` of an answer `render` made (`bytes`, whole) to `date`: an answer rendered
/// ahead of when it is sent (an early answer, armed before its wait) says when it went. Leaves
/// `bytes` as they are where the date would not fit the same length (a year outside
/// 1000–9999), or where `bytes` are not such an answer.
pub(super) fn set_date(bytes: &mut [u8], date: SystemTime) {
    let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let start = line_end + 2 + b"Date: ".len();
    let mut value = Vec::with_capacity(29);
    http_date(date, &mut value);
    let Some(old) = bytes.get(start..start + value.len()) else {
        return;
    };
    let framed = bytes[line_end + 2..].starts_with(b"Date: ")
        && bytes.get(start + value.len()..start + value.len() + 2) == Some(b"\r\n")
        && old.len() == value.len();
    if framed {
        bytes[start..start + value.len()].copy_from_slice(&value);
    }
}

/// Appends `Date`'s value for `date`: the HTTP date of its second, which each thread formats
/// once a second and copies for the other answers of that second.
fn http_date(date: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static LAST: RefCell<Option<(u64, String)>> = const { RefCell::new(None) };
    }
    let Ok(second) = date.duration_since(UNIX_EPOCH).map(|d| d.as_secs()) else {
        out.extend_from_slice(httpdate::fmt_http_date(date).as_bytes());
        return;
    };
    LAST.with_borrow_mut(|last| match last {
        Some((at, text)) if *at == second => out.extend_from_slice(text.as_bytes()),
        _ => {
            let text = httpdate::fmt_http_date(date);
            out.extend_from_slice(text.as_bytes());
            *last = Some((second, text));
        }
    });
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        // The reason phrase is optional (RFC 9112 section 4); clients go by the code.
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(rendered: &Rendered) -> String {
        String::from_utf8_lossy(&rendered.bytes).into_owned()
    }

    /// `set_date` changes the `Date` of a rendered answer and nothing else; bytes that are not
    /// such an answer are left as they are.
    #[test]
    fn set_date_changes_the_date_alone() {
        let response = Response {
            status: 200,
            headers: vec![("X-Ok", "fine".into())],
            body: b"hello".to_vec(),
            client: None,
            code: None,
        };
        let then = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let later = then + std::time::Duration::from_secs(5);
        let mut bytes = render(&response, Disposition::KeepAlive, false, then).bytes;
        let again = render(&response, Disposition::KeepAlive, false, later).bytes;
        assert_ne!(bytes, again);
        set_date(&mut bytes, later);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&again)
        );
        for odd in [
            &b""[..],
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK\r\nX-Ok: fine\r\n\r\n",
        ] {
            let mut bytes = odd.to_vec();
            set_date(&mut bytes, later);
            assert_eq!(bytes, odd);
        }
    }

    #[test]
    fn render_sets_framing_headers_itself() {
        let response = Response {
            status: 200,
            headers: vec![
                ("Content-Length", "1".to_owned()),
                ("Transfer-Encoding", "chunked".to_owned()),
                ("connection", "keep-alive".to_owned()),
                ("X-Split", "a\r\nSet-Cookie: x".to_owned()),
                ("Bad Name", "v".to_owned()),
                ("X-Ok", "fine\tvalue".to_owned()),
            ],
            body: b"hello".to_vec(),
            client: None,
            code: None,
        };
        let out = text(&render(
            &response,
            Disposition::KeepAlive,
            false,
            SystemTime::UNIX_EPOCH,
        ));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{out}");
        assert!(
            out.ends_with("\r\nX-Ok: fine\tvalue\r\nContent-Length: 5\r\n\r\nhello"),
            "{out}"
        );
        for absent in ["chunked", "Set-Cookie", "Bad Name", "keep-alive", ": 1\r\n"] {
            assert!(!out.contains(absent), "{absent} in {out}");
        }

        let closing = text(&render(
            &response,
            Disposition::Close,
            true,
            SystemTime::UNIX_EPOCH,
        ));
        assert!(
            closing.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{closing}"
        );
        let old = text(&render(
            &response,
            Disposition::KeepAlive10,
            false,
            SystemTime::UNIX_EPOCH,
        ));
        assert!(old.contains("\r\nConnection: keep-alive\r\n"), "{old}");

        let empty = Response {
            status: 204,
            headers: Vec::new(),
            body: b"dropped".to_vec(),
            client: None,
            code: None,
        };
        let rendered = render(
            &empty,
            Disposition::KeepAlive,
            false,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(rendered.body_bytes, 0);
        assert!(!text(&rendered).contains("Content-Length"));
        let odd = Response {
            status: 299,
            ..empty
        };
        assert!(
            text(&render(
                &odd,
                Disposition::KeepAlive,
                false,
                SystemTime::UNIX_EPOCH
            ))
            .starts_with("HTTP/1.1 299 \r\n")
        );
    }
}
