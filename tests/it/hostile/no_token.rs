//! Without a token: the framing tables again, and every way to slip a token past the check,
//! get the HTTP layer's answer or 401, and nothing changes.

use serde_json::json;

use super::framing::{content_length_cases, transfer_encoding_cases};
use super::{
    COMMIT, Case, Expected, ISRUNNING, MIB, REGISTER, STATES, TOKEN, after_each, case, check_all,
    get_authed, post_raw, register, start_with_env,
};

/// `raw` with every copy of the token's Authorization line removed (smuggled requests in a
/// body included).
fn without_token(bytes: &[u8]) -> Vec<u8> {
    let line = format!("Authorization: Bearer {TOKEN}\r\n").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(&line) {
            i += line.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The codes the HTTP layer and the router give before authentication is looked at. A body
/// is not among them: the token is checked from the head, so a body without one is never read
/// (a stalled one gets 401 at once, not 408 once `header_timeout` is up).
const BEFORE_AUTH: &[&str] = &[
    "malformed_request",
    "unsupported_version",
    "head_too_large",
    "invalid_target",
    "transfer_encoding_unsupported",
    "ambiguous_framing",
    "invalid_content_length",
    "body_too_large",
    "expectation_failed",
    "head_timeout",
    "not_found",
    "method_not_allowed",
];

#[test]
fn nothing_works_without_a_token() {
    // Every case fails a token check, more of them than `auth.max_failures` allows one
    // address (`auth.rs` tests that limit): here each must reach the check.
    let many = std::ffi::OsStr::new("1000");
    let (influx, mut gw) = start_with_env("", "", &[("CONSUMER_AUTH_MAX_FAILURES", many)]);
    let mut expected = Expected::default();
    // One run made on purpose, so an unauthenticated commit has something to try to end.
    let run = register(gw.addr, &json!({"host": "deliberate"}));
    expected.register(&run, "deliberate", &[]);

    // The framing tables again, without the token: the HTTP layer answers exactly as before,
    // and whatever reached a handler before is now refused with 401.
    let mut cases: Vec<Case> = content_length_cases()
        .into_iter()
        .chain(transfer_encoding_cases())
        .map(|c| {
            let mut c = Case {
                name: format!("{} (no token)", c.name),
                raw: without_token(&c.raw),
                ..c
            };
            // A chunked body is decoded only once its head is admitted: without a token its
            // malformed chunks are never read.
            let in_the_body = c.name.starts_with("a malformed chunk");
            if !BEFORE_AUTH.contains(&c.code) || in_the_body {
                (c.status, c.code, c.stalls) = (401, "unauthorized", false);
            }
            c
        })
        .collect();
    let valid = json!({"host": "no-token"}).to_string();
    let commit = json!({"uuid": run}).to_string();
    let huge = "A".repeat(MIB);
    cases.extend([
        case(
            "a valid register",
            without_token(&post_raw(REGISTER, valid.as_bytes())),
            401,
            "unauthorized",
        ),
        case(
            "a commit of the deliberate run",
            without_token(&post_raw(COMMIT, commit.as_bytes())),
            401,
            "unauthorized",
        ),
        case(
            "Bearer and 1 MiB",
            format!(
                "POST {REGISTER} HTTP/1.1\r\nAuthorization: Bearer {huge}\r\nContent-Length: {}\r\n\r\n{valid}",
                valid.len()
            ),
            431,
            "head_too_large",
        ),
        case(
            "Basic and 1 MiB",
            format!("GET {ISRUNNING} HTTP/1.1\r\nAuthorization: Basic {huge}\r\n\r\n"),
            431,
            "head_too_large",
        ),
        case(
            "Bearer and 15 KiB",
            format!(
                "POST {REGISTER} HTTP/1.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{valid}",
                &huge[..15 * 1024],
                valid.len()
            ),
            401,
            "unauthorized",
        ),
        case(
            "the token with a NUL after it",
            format!("GET {ISRUNNING} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\0\r\n\r\n"),
            400,
            "malformed_request",
        ),
        case(
            "a wrong token first, the valid one second",
            format!(
                "POST {REGISTER} HTTP/1.1\r\nAuthorization: Bearer wrong-token-0123456789\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{valid}",
                valid.len()
            ),
            401,
            "unauthorized",
        ),
        case(
            "the token in the query string",
            format!("GET {ISRUNNING}?token={TOKEN}&access_token={TOKEN} HTTP/1.1\r\nConnection: close\r\n\r\n"),
            401,
            "unauthorized",
        ),
        case(
            "the token as a cookie",
            format!("GET {STATES} HTTP/1.1\r\nCookie: token={TOKEN}\r\nConnection: close\r\n\r\n"),
            401,
            "unauthorized",
        ),
    ]);
    check_all(gw.addr, &cases);
    assert_eq!(
        get_authed(gw.addr, ISRUNNING).json(),
        json!({run.clone(): true}),
        "the deliberate run is the only one, and still running"
    );
    let log = gw.log();
    assert!(!log.contains(TOKEN), "the token never reaches the log");
    assert!(
        !log.contains(&huge[..64]),
        "header values never reach the log"
    );
    after_each(&mut gw, &influx, &expected);
}
