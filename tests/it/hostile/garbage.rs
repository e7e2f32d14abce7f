//! Protocol garbage and odd request targets: other protocols, random bytes, bad request lines
//! and headers, path traversal and control characters in the path, all refused; and no client
//! text can forge a line of the gateway's log.

use std::time::Duration;

use crate::support::wait_until;

use super::{Case, Expected, PING, REGISTER, after_each, case, check_all, exchange, raw, start};

/// Deterministic pseudo-random bytes (xorshift64), so a failure can be replayed.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A TLS 1.3 ClientHello for `metrics.example`, as a client configured with https:// sends it.
fn tls_client_hello() -> Vec<u8> {
    let name = b"metrics.example";
    let mut sni = vec![0x00, 0x00]; // extension: server_name
    let list_len = name.len() + 3;
    sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let versions = [0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]; // supported_versions: TLS 1.3
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // two cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let extensions_len = sni.len() + versions.len();
    hello.extend_from_slice(&(extensions_len as u16).to_be_bytes());
    hello.extend_from_slice(&sni);
    hello.extend_from_slice(&versions);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Requests that are not HTTP/1.x, or carry odd targets, and the answer each gets.
fn garbage_cases() -> Vec<Case> {
    let get = |target: &str| raw("GET", target, "", b"");
    let bytes = |head: &[u8]| head.to_vec();
    let mut cases = vec![
        case(
            "HTTP/2 preface",
            bytes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            400,
            "unsupported_version",
        ),
        case("1 KiB of NULs", vec![0u8; 1024], 400, "malformed_request"),
        case(
            "a NUL in a header value",
            raw("GET", PING, "X-A: a\0b\r\n", b""),
            400,
            "malformed_request",
        ),
        case(
            "a TLS ClientHello",
            tls_client_hello(),
            400,
            "malformed_request",
        ),
        case(
            "absolute-form target",
            get("http://example.com/apiv0.1/ping"),
            400,
            "invalid_target",
        ),
        case(
            "CONNECT to an authority",
            bytes(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            400,
            "invalid_target",
        ),
        case(
            "CONNECT to a route",
            raw("CONNECT", PING, "", b""),
            405,
            "method_not_allowed",
        ),
        case(
            "OPTIONS *",
            bytes(b"OPTIONS * HTTP/1.1\r\n\r\n"),
            400,
            "invalid_target",
        ),
        case(
            "lowercase get",
            raw("get", PING, "", b""),
            405,
            "method_not_allowed",
        ),
        case(
            "lowercase post with a valid register",
            raw("post", REGISTER, "Content-Length: 2\r\n", b"{}"),
            405,
            "method_not_allowed",
        ),
        case(
            "a 1 KiB method",
            raw(&"GET".repeat(350), PING, "", b""),
            405,
            "method_not_allowed",
        ),
        case(
            "HTTP/1.2",
            bytes(b"GET /apiv0.1/ping HTTP/1.2\r\n\r\n"),
            400,
            "unsupported_version",
        ),
        case("HTTP/0.9", bytes(b"GET /apiv0.1/ping\r\n\r\n"), 400, ""),
        case(
            "HTTP/1.1 in lowercase",
            bytes(b"GET /apiv0.1/ping http/1.1\r\n\r\n"),
            400,
            "",
        ),
        case(
            "a space before the method",
            bytes(b" GET /apiv0.1/ping HTTP/1.1\r\n\r\n"),
            400,
            "malformed_request",
        ),
        case(
            "a header without a colon",
            raw("GET", PING, "NoColon\r\n", b""),
            400,
            "malformed_request",
        ),
        case(
            "a space in a header name",
            raw("GET", PING, "X Bad: v\r\n", b""),
            400,
            "malformed_request",
        ),
        case(
            "a bare CR ending a line",
            bytes(b"GET /apiv0.1/ping HTTP/1.1\rHost: x\r\n\r\n"),
            400,
            "malformed_request",
        ),
        case(
            "bare LF line ends (accepted)",
            bytes(b"GET /apiv0.1/ping HTTP/1.1\nConnection: close\n\n"),
            200,
            "",
        ),
        case(
            "/../../etc/passwd",
            get("/../../etc/passwd"),
            404,
            "not_found",
        ),
        case(
            "a dot-dot path under the prefix",
            get("/apiv0.1/ping/../../../etc/passwd"),
            404,
            "not_found",
        ),
        case(
            "percent-encoded dots",
            get("/apiv0.1/%2e%2e/%2e%2e/etc/passwd"),
            404,
            "not_found",
        ),
        case(
            "%00 after a route",
            get("/apiv0.1/ping%00"),
            404,
            "not_found",
        ),
        case(
            "%0d%0a and a forged log line",
            get("/x%0d%0aFORGED-PERCENT%201.2.3.4%20GET%20/%20200"),
            404,
            "not_found",
        ),
        case(
            "a raw control character in the path",
            get("/apiv0.1/ping\x01"),
            400,
            "malformed_request",
        ),
        case(
            "an escape sequence in the path",
            get("/x\x1b[2J\x1b[31mRED"),
            400,
            "malformed_request",
        ),
        case("DEL in the path", get("/x\x7fy"), 400, "malformed_request"),
        case("a tab in the path", get("/x\ty"), 400, "malformed_request"),
        case(
            "a raw LF in the path",
            bytes(b"GET /x\nFORGED-RAW 200 HTTP/1.1\r\n\r\n"),
            400,
            "",
        ),
        case(
            "invalid UTF-8 in the path",
            bytes(b"GET /x\xff\xfe HTTP/1.1\r\n\r\n"),
            400,
            "malformed_request",
        ),
        // Valid UTF-8 passes the HTTP parser; C1 controls must still not reach the log raw.
        case(
            "C1 controls (NEL, CSI) in the path",
            get("/x\u{85}FORGED-NEL\u{9b}31m"),
            404,
            "not_found",
        ),
        case(
            "a 10 KiB query on ping (accepted)",
            get(&format!("{PING}?q={}", "a".repeat(10 * 1024))),
            200,
            "",
        ),
        case(
            "a 10 KiB path",
            get(&format!("/{}", "a".repeat(10 * 1024))),
            404,
            "not_found",
        ),
        case(
            "an Expect other than 100-continue",
            raw(
                "POST",
                REGISTER,
                "Content-Length: 2\r\nExpect: 200-ok\r\n",
                b"{}",
            ),
            417,
            "expectation_failed",
        ),
    ];
    for seed in 1..=16u64 {
        cases.push(case(
            format!("random bytes, seed {seed}"),
            garbage(seed, 64 << (seed % 8)),
            400,
            "",
        ));
    }
    cases
}

#[test]
fn protocol_garbage_and_odd_targets_are_refused() {
    let (influx, mut gw) = start("", "");
    check_all(gw.addr, &garbage_cases());
    after_each(&mut gw, &influx, &Expected::default());
}

/// The same requests again, whatever their answers, for what they leave in the log.
#[test]
fn protocol_garbage_and_odd_targets_cannot_forge_log_lines() {
    let (influx, mut gw) = start("", "");
    for c in garbage_cases() {
        exchange(gw.addr, &c.raw);
    }
    // Every line of the log is the gateway's own: client text is escaped, so no request can
    // start a line of its own or smuggle terminal control sequences. The access log line of a
    // request may follow its answer by a moment; the one with C1 controls is waited for.
    wait_until(
        Duration::from_secs(5),
        "the access log line of the request with C1 controls",
        || gw.log().contains("FORGED-NEL"),
    );
    let log = gw.log();
    assert!(
        log.contains("/x?FORGED-NEL?31m"),
        "C1 controls are replaced in the access log:\n{log}"
    );
    let raw_controls: Vec<(usize, char)> = log
        .char_indices()
        .filter(|(_, c)| c.is_control() && *c != '\n')
        .collect();
    assert!(
        raw_controls.is_empty(),
        "control characters in the log at {raw_controls:?}:\n{log}"
    );
    assert!(
        !log.contains('\u{fffd}'),
        "invalid UTF-8 in the log:\n{log}"
    );
    for line in log.lines() {
        // Every line the gateway writes starts with its timestamp.
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()) && !line.contains("FORGED-RAW"),
            "a request forged a log line: {line:?}"
        );
    }
    after_each(&mut gw, &influx, &Expected::default());
}
