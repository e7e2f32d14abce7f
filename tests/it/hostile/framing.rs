//! Malformed and ambiguous framing: Content-Length in every wrong shape, Transfer-Encoding in
//! every shape, and requests smuggled behind them. The tables are also replayed without a token
//! by `no_token`.

use super::{
    Case, Expected, PING, REGISTER, TOKEN, after_each, case, check_all, post_raw, raw, start,
};

/// Content-Length abuse on register, with the valid token. The one accepted case registers
/// the run `cl-twice`.
pub(super) fn content_length_cases() -> Vec<Case> {
    let body = br#"{"host":"cl-twice"}"#;
    let with = |cl: &str| raw("POST", REGISTER, cl, body);
    let smuggled = post_raw(REGISTER, br#"{"host":"smuggled"}"#);
    let mut cl0_then_request = raw("POST", REGISTER, "Content-Length: 0\r\n", b"");
    cl0_then_request.extend_from_slice(&smuggled);
    let mut no_cl_then_request = raw("POST", REGISTER, "", b"");
    no_cl_then_request.extend_from_slice(&smuggled);
    vec![
        case(
            "9e18",
            with("Content-Length: 9000000000000000000\r\n"),
            413,
            "body_too_large",
        ),
        case(
            "2^64-1",
            with("Content-Length: 18446744073709551615\r\n"),
            413,
            "body_too_large",
        ),
        case(
            "2^64-1 with Expect: 100-continue gets no 100",
            with("Content-Length: 18446744073709551615\r\nExpect: 100-continue\r\n"),
            413,
            "body_too_large",
        ),
        case(
            "2^64",
            with("Content-Length: 18446744073709551616\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "10^30",
            with("Content-Length: 1000000000000000000000000000000\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "-1",
            with("Content-Length: -1\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "a list",
            with("Content-Length: 1, 2\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "a list of equal values",
            with("Content-Length: 19, 19\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "+5",
            with("Content-Length: +5\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "hex",
            with("Content-Length: 0x13\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "exponent",
            with("Content-Length: 1e1\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "inner space",
            with("Content-Length: 1 9\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "empty",
            with("Content-Length:\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "two differing",
            with("Content-Length: 19\r\nContent-Length: 20\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "two differing, the first huge",
            with("Content-Length: 9000000000000000000\r\nContent-Length: 19\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "equal numbers spelled differently",
            with("Content-Length: 19\r\ncontent-length: 019\r\n"),
            400,
            "invalid_content_length",
        ),
        case(
            "space before the colon",
            with("Content-Length : 19\r\n"),
            400,
            "malformed_request",
        ),
        case(
            "two equal (accepted)",
            with("Content-Length: 19\r\ncontent-length: 19\r\n"),
            200,
            "",
        ),
        case(
            "larger than the body, then a stall",
            raw(
                "POST",
                REGISTER,
                "Content-Length: 100\r\n",
                br#"{"host":"st"#,
            ),
            408,
            "body_timeout",
        )
        .stalls(),
        case(
            "Content-Length 0 and a request behind it, with Connection: close",
            cl0_then_request,
            400,
            "empty_body",
        ),
        case(
            "no Content-Length and a request as the body",
            no_cl_then_request,
            400,
            "empty_body",
        ),
    ]
}

/// Transfer-Encoding in every shape; each body smuggles a valid register with the token.
pub(super) fn transfer_encoding_cases() -> Vec<Case> {
    let smuggled = post_raw(REGISTER, br#"{"host":"smuggled"}"#);
    // What a front end that honours Transfer-Encoding reads as one empty chunked body,
    // leaving the smuggled request for a back end that went by Content-Length.
    let mut te_body = b"0\r\n\r\n".to_vec();
    te_body.extend_from_slice(&smuggled);
    let chunked_register = {
        let json = br#"{"host":"chunked"}"#;
        let mut b = format!("{:x}\r\n", json.len()).into_bytes();
        b.extend_from_slice(json);
        b.extend_from_slice(b"\r\n0\r\n\r\n");
        b
    };
    let keep_alive_smuggle = {
        let mut r = format!(
            "POST {REGISTER} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            te_body.len()
        )
        .into_bytes();
        r.extend_from_slice(&te_body);
        r
    };
    let te = |name: &str, headers: &str, status: u16, code: &'static str| {
        case(name, raw("POST", REGISTER, headers, &te_body), status, code)
    };
    let ambiguous = |name: &str, headers: &str| te(name, headers, 400, "ambiguous_framing");
    let unsupported =
        |name: &str, headers: &str| te(name, headers, 411, "transfer_encoding_unsupported");
    vec![
        case(
            "chunked (accepted)",
            raw(
                "POST",
                REGISTER,
                "Transfer-Encoding: chunked\r\n",
                &chunked_register,
            ),
            200,
            "",
        ),
        ambiguous(
            "Content-Length 4 and chunked, smuggling a register",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        ),
        ambiguous(
            "chunked then Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        ),
        case(
            "the same on a keep-alive connection",
            keep_alive_smuggle,
            400,
            "ambiguous_framing",
        ),
        ambiguous(
            "odd casing",
            "Content-Length: 4\r\ntRaNsFeR-eNcOdInG: cHuNkEd\r\n",
        ),
        ambiguous(
            "tab before the value",
            "Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n",
        ),
        ambiguous(
            "spaces around the value",
            "Content-Length: 4\r\nTransfer-Encoding:   chunked   \r\n",
        ),
        ambiguous(
            "twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        ambiguous(
            "identity, then chunked",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ),
        unsupported("identity", "Transfer-Encoding: identity\r\n"),
        unsupported("a list", "Transfer-Encoding: gzip, chunked\r\n"),
        unsupported(
            "chunked twice in a list",
            "Transfer-Encoding: chunked, chunked\r\n",
        ),
        unsupported("an unknown coding", "Transfer-Encoding: xchunked\r\n"),
        unsupported("empty", "Transfer-Encoding:\r\n"),
        case(
            "a space before the colon",
            raw(
                "POST",
                REGISTER,
                "Content-Length: 4\r\nTransfer-Encoding : chunked\r\n",
                &te_body,
            ),
            400,
            "malformed_request",
        ),
        case(
            "folded onto the next line",
            raw(
                "POST",
                REGISTER,
                "Content-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n",
                &te_body,
            ),
            400,
            "malformed_request",
        ),
        case(
            "a NUL in the value",
            raw(
                "POST",
                REGISTER,
                "Content-Length: 4\r\nTransfer-Encoding: chun\0ked\r\n",
                &te_body,
            ),
            400,
            "malformed_request",
        ),
        case(
            "a malformed chunk size, smuggling a register",
            raw(
                "POST",
                REGISTER,
                "Transfer-Encoding: chunked\r\n",
                &[b"4 ;\n\r\n0\r\n\r\n".as_slice(), &smuggled].concat(),
            ),
            400,
            "malformed_request",
        ),
        case(
            "HTTP/1.0",
            {
                let mut r = format!(
                    "POST {REGISTER} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                r.extend_from_slice(&te_body);
                r
            },
            400,
            "ambiguous_framing",
        ),
        case(
            "on a GET, with Content-Length",
            raw(
                "GET",
                PING,
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                b"0\r\n\r\n",
            ),
            400,
            "ambiguous_framing",
        ),
    ]
}

#[test]
fn content_length_abuse_is_refused_before_any_body_byte() {
    let (influx, mut gw) = start("", "");
    let cases = content_length_cases();
    let answers = check_all(gw.addr, &cases);
    let mut expected = Expected::default();
    for (c, answer) in cases.iter().zip(&answers) {
        if c.status == 200 {
            let uuid = answer.json()["uuid"].as_str().expect("uuid").to_string();
            expected.register(&uuid, "cl-twice", &[]);
        }
    }
    assert_eq!(expected.runs.len(), 1);
    after_each(&mut gw, &influx, &expected);
}

#[test]
fn transfer_encoding_but_chunked_alone_is_refused_and_nothing_is_smuggled() {
    let (influx, mut gw) = start("", "");
    let cases = transfer_encoding_cases();
    let answers = check_all(gw.addr, &cases);
    let mut expected = Expected::default();
    for (c, answer) in cases.iter().zip(&answers) {
        if c.status == 200 {
            let uuid = answer.json()["uuid"].as_str().expect("uuid").to_string();
            expected.register(&uuid, "chunked", &[]);
        }
    }
    assert_eq!(expected.runs.len(), 1, "the chunked register, alone");
    after_each(&mut gw, &influx, &expected);
}
