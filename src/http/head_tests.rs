//! Tests of `head.rs`, kept beside it so that the module itself stays short.

use super::*;

const LIMIT: u64 = 1024 * 1024;

/// What a raw request should turn into; each variant checks one aspect.
#[derive(Debug)]
enum Want {
    /// Refused with this status.
    Status(u16),
    /// Not complete yet: more bytes are needed.
    Incomplete,
    /// Accepted with this request line.
    Target {
        method: &'static str,
        path: &'static str,
        version: u8,
    },
    /// Accepted with this body length.
    Body(u64),
    /// Accepted with a chunked body.
    Chunked,
    /// Accepted; the connection stays open (true) or closes (false).
    KeepAlive(bool),
    /// Accepted; the client waits for 100 Continue (true) or not.
    Continue(bool),
    /// Accepted and the head is exactly this many bytes long.
    HeadLen(usize),
}

/// Parses `raw` and frames it as the server would, and compares with `want`.
fn check(name: &str, raw: &[u8], want: Want) {
    let outcome = parse_head(raw).and_then(|parsed| match parsed {
        Some((head, len)) => framing(&head, LIMIT).map(|f| Some((head, len, f))),
        None => Ok(None),
    });
    let ok = match (&want, &outcome) {
        (Want::Status(status), Err(e)) => e.code().status() == *status,
        (Want::Incomplete, Ok(None)) => true,
        (
            Want::Target {
                method,
                path,
                version,
            },
            Ok(Some((head, _, _))),
        ) => head.line.method() == *method && head.line.path() == *path && head.version == *version,
        (Want::Body(n), Ok(Some((_, _, f)))) => f.body_len == *n && !f.chunked,
        (Want::Chunked, Ok(Some((_, _, f)))) => f.chunked && f.body_len == 0,
        (Want::KeepAlive(k), Ok(Some((_, _, f)))) => f.keep_alive == *k,
        (Want::Continue(c), Ok(Some((_, _, f)))) => f.expect_continue == *c,
        (Want::HeadLen(n), Ok(Some((_, len, _)))) => len == n,
        _ => false,
    };
    assert!(ok, "case {name:?}: wanted {want:?}, got {outcome:?}");
}

fn post(extra_headers: &str) -> Vec<u8> {
    format!("POST /write HTTP/1.1\r\nHost: x\r\n{extra_headers}\r\n").into_bytes()
}

#[test]
fn request_heads() {
    let many_headers: String = (0..65).map(|i| format!("X-H{i}: v\r\n")).collect();
    let max_headers: String = (0..64).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_value = "a".repeat(MAX_HEAD_BYTES);
    let just_fits = {
        // A head of exactly MAX_HEAD_BYTES bytes.
        let base = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
        format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES - base)
        )
    };
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        // Content-Length values.
        ("no body", post(""), Want::Body(0)),
        ("plain length", post("Content-Length: 5\r\n"), Want::Body(5)),
        (
            "leading zeros",
            post("Content-Length: 0005\r\n"),
            Want::Body(5),
        ),
        (
            "length at limit",
            post("Content-Length: 1048576\r\n"),
            Want::Body(LIMIT),
        ),
        (
            "length over limit",
            post("Content-Length: 1048577\r\n"),
            Want::Status(413),
        ),
        (
            "absurd length",
            post("Content-Length: 9000000000000000000\r\n"),
            Want::Status(413),
        ),
        (
            "u64 max",
            post("Content-Length: 18446744073709551615\r\n"),
            Want::Status(413),
        ),
        (
            "u64 max plus one",
            post("Content-Length: 18446744073709551616\r\n"),
            Want::Status(400),
        ),
        (
            "very long digit string",
            post(&format!("Content-Length: {}\r\n", "9".repeat(200))),
            Want::Status(400),
        ),
        (
            "negative",
            post("Content-Length: -1\r\n"),
            Want::Status(400),
        ),
        ("list", post("Content-Length: 1, 2\r\n"), Want::Status(400)),
        (
            "same list",
            post("Content-Length: 5, 5\r\n"),
            Want::Status(400),
        ),
        (
            "plus sign",
            post("Content-Length: +5\r\n"),
            Want::Status(400),
        ),
        ("hex", post("Content-Length: 0x5\r\n"), Want::Status(400)),
        ("empty", post("Content-Length:\r\n"), Want::Status(400)),
        (
            "inner space",
            post("Content-Length: 1 2\r\n"),
            Want::Status(400),
        ),
        // Whitespace around a field value is not part of it (RFC 9110 5.5), and
        // httparse strips it, so these are plain 5s. A space inside the value as
        // stored is refused; see `content_length_values` below.
        (
            "space before",
            post("Content-Length:   5\r\n"),
            Want::Body(5),
        ),
        (
            "space after",
            post("Content-Length: 5  \r\n"),
            Want::Body(5),
        ),
        (
            "two equal",
            post("Content-Length: 5\r\ncontent-length: 5\r\n"),
            Want::Body(5),
        ),
        (
            "two differing",
            post("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Want::Status(400),
        ),
        (
            "two equal numbers, different digits",
            post("Content-Length: 5\r\nContent-Length: 05\r\n"),
            Want::Status(400),
        ),
        (
            "one valid one invalid",
            post("Content-Length: 5\r\nContent-Length: x\r\n"),
            Want::Status(400),
        ),
        (
            "space before colon",
            post("Content-Length : 5\r\n"),
            Want::Status(400),
        ),
        // Transfer-Encoding: chunked alone, in any casing, on HTTP/1.1 frames the body.
        (
            "chunked",
            post("Transfer-Encoding: chunked\r\n"),
            Want::Chunked,
        ),
        (
            "te odd casing",
            post("tRaNsFeR-eNcOdInG: ChUnKeD\r\n"),
            Want::Chunked,
        ),
        (
            "te with spaces around",
            post("Transfer-Encoding:   chunked  \r\n"),
            Want::Chunked,
        ),
        (
            "chunked with expect",
            post("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"),
            Want::Continue(true),
        ),
        // Framed two ways, twice, or on HTTP/1.0: 400.
        (
            "te and cl",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Want::Status(400),
        ),
        (
            "cl after te",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            Want::Status(400),
        ),
        (
            "te beats huge cl",
            post("Content-Length: 99999999999999999999999\r\nTransfer-Encoding: chunked\r\n"),
            Want::Status(400),
        ),
        (
            "te twice",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Want::Status(400),
        ),
        (
            "te on http/1.0",
            b"POST /write HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        // Any coding but chunked alone: 411.
        (
            "te identity",
            post("Transfer-Encoding: identity\r\n"),
            Want::Status(411),
        ),
        (
            "te a list",
            post("Transfer-Encoding: gzip, chunked\r\n"),
            Want::Status(411),
        ),
        (
            "te chunked twice in a list",
            post("Transfer-Encoding: chunked, chunked\r\n"),
            Want::Status(411),
        ),
        (
            "te unknown",
            post("Transfer-Encoding: xchunked\r\n"),
            Want::Status(411),
        ),
        (
            "te empty",
            post("Transfer-Encoding:\r\n"),
            Want::Status(411),
        ),
        // Head size and header count.
        (
            "64 headers",
            format!("GET / HTTP/1.1\r\n{max_headers}\r\n").into_bytes(),
            Want::Body(0),
        ),
        (
            "65 headers",
            format!("GET / HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
            Want::Status(431),
        ),
        (
            "65 headers, head not finished",
            format!("GET / HTTP/1.1\r\n{many_headers}").into_bytes(),
            Want::Status(431),
        ),
        (
            "head over 16 KiB",
            format!("GET / HTTP/1.1\r\nX: {long_value}\r\n\r\n").into_bytes(),
            Want::Status(431),
        ),
        (
            "16 KiB without line end",
            format!("GET / HTTP/1.1\r\nX: {long_value}").into_bytes(),
            Want::Status(431),
        ),
        (
            "head of exactly 16 KiB",
            just_fits.clone().into_bytes(),
            Want::HeadLen(MAX_HEAD_BYTES),
        ),
        (
            "head one byte short of 16 KiB, still incomplete",
            just_fits.as_bytes()[..MAX_HEAD_BYTES - 1].to_vec(),
            Want::Incomplete,
        ),
        // Protocol and syntax.
        (
            "http2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "http/1.2",
            b"GET / HTTP/1.2\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        ("http/0.9", b"GET /\r\n\r\n".to_vec(), Want::Status(400)),
        (
            "binary garbage",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
            Want::Status(400),
        ),
        (
            "nul in method",
            b"GE\0T / HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "control byte in header value",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "bare cr",
            b"GET / HTTP/1.1\rX: a\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "non-utf8 target",
            b"GET /\xff HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "double space in request line",
            b"GET  / HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "lowercase method is passed through",
            b"get /write HTTP/1.1\r\n\r\n".to_vec(),
            Want::Target {
                method: "get",
                path: "/write",
                version: 1,
            },
        ),
        (
            "absolute-form target",
            b"GET http://example.com/write HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "asterisk target",
            b"OPTIONS * HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "authority target",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "query split",
            b"GET /api/v2/write?org=a&bucket=b?c HTTP/1.1\r\n\r\n".to_vec(),
            Want::Target {
                method: "GET",
                path: "/api/v2/write",
                version: 1,
            },
        ),
        (
            "empty query",
            b"GET /x? HTTP/1.1\r\n\r\n".to_vec(),
            Want::Target {
                method: "GET",
                path: "/x",
                version: 1,
            },
        ),
        (
            "http/1.0",
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            Want::Target {
                method: "GET",
                path: "/",
                version: 0,
            },
        ),
        (
            "bare lf line endings",
            b"GET / HTTP/1.1\nHost: x\n\n".to_vec(),
            Want::HeadLen(24),
        ),
        (
            "incomplete request line",
            b"GET / HT".to_vec(),
            Want::Incomplete,
        ),
        (
            "incomplete headers",
            b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(),
            Want::Incomplete,
        ),
        ("nothing yet", Vec::new(), Want::Incomplete),
        (
            "one leading empty line",
            b"\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            Want::HeadLen(20),
        ),
        (
            "too many leading empty lines",
            b"\r\n"
                .repeat(9)
                .into_iter()
                .chain(*b"GET / HTTP/1.1\r\n\r\n")
                .collect(),
            Want::Status(400),
        ),
        (
            "body bytes after head are not part of it",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET".to_vec(),
            Want::HeadLen(38),
        ),
        // Keep-alive.
        (
            "1.1 default",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Want::KeepAlive(true),
        ),
        (
            "1.1 close",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            Want::KeepAlive(false),
        ),
        (
            "1.1 close in a list, odd casing",
            b"GET / HTTP/1.1\r\nConnection: TE, CLOSE\r\n\r\n".to_vec(),
            Want::KeepAlive(false),
        ),
        (
            "1.0 default",
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            Want::KeepAlive(false),
        ),
        (
            "1.0 keep-alive",
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n".to_vec(),
            Want::KeepAlive(true),
        ),
        (
            "1.0 keep-alive and close",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n".to_vec(),
            Want::KeepAlive(false),
        ),
        (
            "1.0 keep-alive as a substring does not count",
            b"GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n".to_vec(),
            Want::KeepAlive(false),
        ),
        // Expect.
        (
            "100-continue",
            post("Content-Length: 5\r\nExpect: 100-continue\r\n"),
            Want::Continue(true),
        ),
        (
            "100-continue odd casing",
            post("Content-Length: 5\r\nExpect: 100-Continue\r\n"),
            Want::Continue(true),
        ),
        (
            "no expect",
            post("Content-Length: 5\r\n"),
            Want::Continue(false),
        ),
        (
            "100-continue ignored for http/1.0",
            b"POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n".to_vec(),
            Want::Continue(false),
        ),
        (
            "other expectation",
            post("Content-Length: 5\r\nExpect: 200-ok\r\n"),
            Want::Status(417),
        ),
        (
            "expectation list",
            post("Content-Length: 5\r\nExpect: 100-continue, foo\r\n"),
            Want::Status(417),
        ),
        ("empty expectation", post("Expect:\r\n"), Want::Status(417)),
        (
            "too large beats expectation",
            post("Content-Length: 9000000000000000000\r\nExpect: 100-continue\r\n"),
            Want::Status(413),
        ),
    ];
    for (name, raw, want) in cases {
        check(name, &raw, want);
    }
}

#[test]
fn content_length_values() {
    // Values as stored after parsing, to cover what httparse would already trim.
    type Case<'a> = (&'a [&'a [u8]], Result<u64, u16>);
    let cases: &[Case] = &[
        (&[], Ok(0)),
        (&[b"0"], Ok(0)),
        (&[b"18446744073709551615"], Ok(u64::MAX)),
        (&[b"18446744073709551616"], Err(400)),
        (&[b" 5"], Err(400)),
        (&[b"5 "], Err(400)),
        (&[b"5\t"], Err(400)),
        (&[b"\xd9\xa5"], Err(400)),
        (&[b"5", b"5", b"5"], Ok(5)),
        (&[b"5", b"5", b"6"], Err(400)),
    ];
    for (values, want) in cases {
        let headers: Headers = values.iter().map(|v| ("Content-Length", v)).collect();
        let got = body_length(&headers).map_err(|e| e.code().status());
        assert_eq!(&got, want, "values {values:?}");
    }
}

#[test]
fn every_prefix_of_a_valid_head_is_incomplete() {
    let raw = b"POST /api/v2/write?org=o HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
    for end in 0..raw.len() {
        assert_eq!(parse_head(&raw[..end]), Ok(None), "prefix of {end} bytes");
    }
    assert!(matches!(parse_head(raw), Ok(Some((_, n))) if n == raw.len()));
}

#[test]
fn no_input_panics() {
    // A cheap deterministic fuzz: every byte value at every position of a small
    // valid head must give an answer, never a panic.
    let base = b"GET /a?b HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx".to_vec();
    for pos in 0..base.len() {
        for byte in 0..=255u8 {
            let mut raw = base.clone();
            raw[pos] = byte;
            if let Ok(Some((head, _))) = parse_head(&raw) {
                let _ = framing(&head, LIMIT);
            }
        }
    }
}

#[test]
fn messages() {
    let cases = [
        (
            HeadError::BodyTooLarge {
                length: 9_000_000_000_000_000_000,
                limit: 1_048_576,
            },
            413,
            "body_too_large",
            "request body is 9000000000000000000 bytes; the limit is 1048576 (server.max_body_bytes)",
        ),
        (
            HeadError::TransferEncoding,
            411,
            "transfer_encoding_unsupported",
            "only 'Transfer-Encoding: chunked' is supported; send the body chunked, or with Content-Length",
        ),
        (
            HeadError::AmbiguousFraming,
            400,
            "ambiguous_framing",
            "the body is framed more than one way (Transfer-Encoding with Content-Length, Transfer-Encoding twice, or Transfer-Encoding on HTTP/1.0); send one Content-Length, or 'Transfer-Encoding: chunked' alone over HTTP/1.1",
        ),
        (
            HeadError::Chunked("bare LF after a chunk size"),
            400,
            "malformed_request",
            "malformed chunked body (bare LF after a chunk size); send hex chunk sizes and CRLF line ends, ending with a 0 chunk and an empty line",
        ),
        (
            HeadError::ChunkedTooLarge { limit: 1_048_576 },
            413,
            "body_too_large",
            "chunked request body is larger than 1048576 bytes (server.max_body_bytes)",
        ),
        (
            HeadError::TooLarge,
            431,
            "head_too_large",
            "request head is larger than 16384 bytes or has more than 64 headers",
        ),
        (
            HeadError::HeadTimeout(Duration::from_secs(10)),
            408,
            "head_timeout",
            "request head not received within 10s",
        ),
        (
            HeadError::HeadTimeout(Duration::from_millis(250)),
            408,
            "head_timeout",
            "request head not received within 250ms",
        ),
        (
            HeadError::HeadTimeout(Duration::from_millis(1500)),
            408,
            "head_timeout",
            "request head not received within 1.5s",
        ),
        (
            HeadError::BodyTooSlow {
                received: 4,
                length: 1_048_576,
                after: Duration::from_millis(1200),
                limit: Duration::from_secs(10),
                chunked: false,
            },
            408,
            "body_timeout",
            "request body too slow: 4 of 1048576 bytes in 1.2s; a body must keep the pace that brings all of it within server.header_timeout (10s), here 104857 bytes/s",
        ),
        (
            HeadError::BodyTooSlow {
                received: 6,
                length: 8192,
                after: Duration::from_millis(1200),
                limit: Duration::from_secs(10),
                chunked: true,
            },
            408,
            "body_timeout",
            "request body too slow: 6 bytes in 1.2s; a chunked body must keep the pace of the memory it holds (16384 bytes, half of it within server.header_timeout (10s)), here 819 bytes/s",
        ),
    ];
    for (error, status, code, message) in cases {
        assert_eq!(error.code().status(), status);
        assert_eq!(error.code().as_str(), code);
        assert_eq!(error.to_string(), message);
    }
}

/// Requests built from the pieces smuggling and overflow attacks use: any method, target
/// and header soup, Content-Length and Transfer-Encoding in every spelling.
fn hostile_request() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let header = prop_oneof![
        "[0-9]{0,25}".prop_map(|v| format!("Content-Length: {v}")),
        "[-+ ,0-9a-f]{0,12}".prop_map(|v| format!("content-length:{v}")),
        Just("Transfer-Encoding: chunked".to_string()),
        Just("transfer-encoding : identity".to_string()),
        Just("Expect: 100-continue".to_string()),
        "[a-zA-Z-]{1,10}: [ -~]{0,30}".prop_map(String::from),
        any::<String>(),
    ];
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("PRI"),
            Just("get"),
            Just("")
        ],
        prop_oneof![
            Just("/apiv0.1/ping".to_string()),
            "[ -~]{0,40}".prop_map(String::from)
        ],
        prop_oneof![
            Just("HTTP/1.1"),
            Just("HTTP/1.0"),
            Just("HTTP/2.0"),
            Just("")
        ],
        prop::collection::vec(header, 0..70),
        prop_oneof![Just("\r\n"), Just("\n")],
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(method, target, version, headers, eol, tail)| {
            let mut raw = format!("{method} {target} {version}{eol}");
            for h in headers {
                raw.push_str(&h);
                raw.push_str(eol);
            }
            raw.push_str(eol);
            let mut raw = raw.into_bytes();
            raw.extend(tail);
            raw
        })
}

proptest::proptest! {
    #[test]
    fn random_requests_are_answered_within_the_limits(raw in hostile_request()) {
        match parse_head(&raw) {
            Ok(Some((head, len))) => {
                proptest::prop_assert!(len <= raw.len() && len <= MAX_HEAD_BYTES);
                if let Ok(f) = framing(&head, LIMIT) {
                    proptest::prop_assert!(f.body_len <= LIMIT);
                    // Framed one way only: chunked alone on HTTP/1.1, or no Transfer-Encoding.
                    let te: Vec<&[u8]> = head.values("transfer-encoding").collect();
                    if f.chunked {
                        proptest::prop_assert!(te.len() == 1 && te[0].eq_ignore_ascii_case(b"chunked"));
                        proptest::prop_assert!(head.version == 1 && f.body_len == 0);
                        proptest::prop_assert!(head.values("content-length").next().is_none());
                    } else {
                        proptest::prop_assert!(te.is_empty());
                    }
                }
            }
            Ok(None) => proptest::prop_assert!(raw.len() < MAX_HEAD_BYTES),
            Err(e) => proptest::prop_assert!((400..500).contains(&e.code().status())),
        }
    }

    #[test]
    fn random_bytes_are_answered(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
        if let Ok(Some((head, _))) = parse_head(&raw) {
            let _ = framing(&head, LIMIT);
        }
    }
}

#[test]
fn headers_keep_their_order_and_are_found_and_removed_without_regard_to_case() {
    let mut headers: Headers = [
        ("Host", &b"gw"[..]),
        ("Content-Encoding", b"gzip"),
        ("X-Bytes", b"\xff\x00"),
        ("content-encoding", b"deflate"),
    ]
    .into_iter()
    .collect();
    let encodings: Vec<&[u8]> = headers.values("CONTENT-ENCODING").collect();
    assert_eq!(encodings, [&b"gzip"[..], b"deflate"]);
    assert_eq!(headers.first("x-bytes"), Some(&b"\xff\x00"[..]));
    assert_eq!(headers.first("missing"), None);
    headers.remove("Content-encoding");
    let left: Vec<(&str, &[u8])> = headers.iter().collect();
    assert_eq!(left, [("Host", &b"gw"[..]), ("X-Bytes", b"\xff\x00")]);
    // Equal to the same fields built afresh, whatever the buffer still holds.
    let fresh: Headers = [("Host", &b"gw"[..]), ("X-Bytes", b"\xff\x00")]
        .into_iter()
        .collect();
    assert_eq!(headers, fresh);
    headers.push("Accept", b"*/*");
    assert_ne!(headers, fresh);
}

#[test]
fn a_request_line_gives_back_its_three_parts() {
    let line = RequestLine::new("POST", "/write", "db=k6&p=secret");
    assert_eq!(
        (line.method(), line.path(), line.query()),
        ("POST", "/write", "db=k6&p=secret")
    );
    let head = parse_head(b"GET /a/b?x=1?y HTTP/1.1\r\nHost: gw\r\n\r\n")
        .expect("valid")
        .expect("complete")
        .0;
    assert_eq!(
        (head.line.method(), head.line.path(), head.line.query()),
        ("GET", "/a/b", "x=1?y")
    );
    let empty = RequestLine::new("GET", "/", "");
    assert_eq!(empty.query(), "");
}
