//! Hostile input against the real binary over loopback, with a real throwaway `influxd` behind
//! it: malformed and ambiguous framing (Content-Length, Transfer-Encoding, smuggling), oversized
//! and stalled heads and bodies, protocol garbage, pathological JSON, every name and value rule
//! of SPEC §4 sent over HTTP, hostile commit data, slowloris from a second address, and all of
//! it again without a token. Each test sends its inputs, checks the exact answer (or that the
//! connection was closed), then checks with `after_each` that the process is alive, answers
//! ping within a second, keeps its threads and memory bounded, and that InfluxDB holds exactly
//! the series the test meant to write: no injected point, no smuggled run, ever.
//!
//! The gateway runs with tokens, and requests carry the valid one, so that hostile input gets
//! past authentication and reaches the parser and the handlers; `nothing_works_without_a_token`
//! replays the framing tables without it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::support::{
    Gateway, Influxd, RawResponse, config_with, connect_from, read_response, request, send_raw,
    wait_until,
};

const DB: &str = "runs";
const TOKEN: &str = "hostile-suite-token-5f0c9a7e21d4";
const REGISTER: &str = "/apiv0.1/events/register";
const COMMIT: &str = "/apiv0.1/events/commit";
const ISRUNNING: &str = "/apiv0.1/events/isrunning";
const STATES: &str = "/apiv0.1/states";
const PING: &str = "/apiv0.1/ping";

/// `server.header_timeout` for most tests: short, so stalls are cheap to wait out.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds checked after every batch of hostile input. The pool keeps up to 16 threads once
/// started and grows by one per open connection (at most 64 from one address), so a gateway that leaks
/// threads per request or per refused connection passes 150 quickly.
const MAX_THREADS: u64 = 150;
const MAX_RSS_KIB: u64 = 64 * 1024;
const MIB: usize = 1024 * 1024;
/// Largest error answer expected: a message and a key path of at most 128-byte names.
const MAX_ERROR_BYTES: usize = 2048;

// ---------------------------------------------------------------------------
// Starting the gateway
// ---------------------------------------------------------------------------

/// InfluxDB and a gateway with tokens. `server` lines go into `[server]` (with
/// `header_timeout = "1s"` unless they set it), `rest` is appended after `[jobs]`. Heartbeats
/// are an hour apart, so the only points in InfluxDB are the ones the requests wrote.
fn start(server: &str, rest: &str) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let mut server = server.to_string();
    if !server.contains("header_timeout") {
        server.push_str("\nheader_timeout = \"1s\"\n");
    }
    let rest =
        format!("[auth]\ntokens = [\"{TOKEN}\"]\n[jobs]\nheartbeat_interval = \"1h\"\n{rest}");
    let gw = Gateway::start(&config_with(&influx.url, DB, &server, "", &rest));
    (influx, gw)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

// ---------------------------------------------------------------------------
// Raw requests
// ---------------------------------------------------------------------------

/// A request with `Host`, the valid token and `Connection: close`, then `extra` header lines
/// (each ending in CRLF) and `body` exactly as given: no Content-Length is added.
fn raw(method: &str, target: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n{extra}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A well-framed POST with the valid token.
fn post_raw(path: &str, body: &[u8]) -> Vec<u8> {
    raw(
        "POST",
        path,
        &format!("Content-Length: {}\r\n", body.len()),
        body,
    )
}

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

/// Everything the server sent on one connection, up to its close.
struct Reply {
    raw: Vec<u8>,
    elapsed: Duration,
}

/// Connects, sends `bytes` and reads until the server closes the connection.
///
/// A failed write is not an error: the server may answer (413, 431) and close while the rest
/// is still being sent, which is exactly what it should do. A reset after the answer counts
/// as a close. The server must close within 8 s (every request here says `Connection:
/// close` or is refused, and the longest stall is shorter), else the test fails.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let _ = stream.write_all(bytes);
    let reply = read_until_closed(&mut stream, Duration::from_secs(8));
    Reply {
        raw: reply,
        elapsed: started.elapsed(),
    }
}

/// Reads until EOF or a reset; panics when the peer neither closes nor finishes in `limit`.
/// At most 4 MiB is kept, so a runaway answer fails the test instead of filling memory.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server kept the connection open for {limit:?}; it sent {:?}",
            String::from_utf8_lossy(&out)
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                assert!(out.len() <= 4 * MIB, "the server sent more than 4 MiB");
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // A reset after the answer: the server closed with our unread bytes in its buffer.
            Err(_) => return out,
        }
    }
}

/// One hostile request and the answer it must get.
#[derive(Clone)]
struct Case {
    name: String,
    raw: Vec<u8>,
    status: u16,
    /// The `code` of the JSON error, or "" where any is fine.
    code: &'static str,
    /// The server can only answer once `header_timeout` has passed (a stalled head or body).
    stalls: bool,
}

fn case(name: impl Into<String>, raw: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
    Case {
        name: name.into(),
        raw: raw.into(),
        status,
        code,
        stalls: false,
    }
}

impl Case {
    fn stalls(mut self) -> Case {
        self.stalls = true;
        self
    }
}

/// Sends one case and checks its answer: the status and code, a JSON body, exactly one
/// response (no 100 Continue for a refused body, nothing after it: a second response would
/// be a smuggled or pipelined request that ran), and the connection closed afterwards.
fn check(addr: SocketAddr, case: &Case) -> RawResponse {
    let name = &case.name;
    let reply = exchange(addr, &case.raw);
    let text = String::from_utf8_lossy(&reply.raw).into_owned();
    assert!(
        !reply.raw.starts_with(b"HTTP/1.1 100"),
        "{name}: 100 Continue for a request that is not accepted: {text:?}"
    );
    let mut cursor = Cursor::new(reply.raw.as_slice());
    let response = read_response(&mut cursor, false).unwrap_or_else(|e| {
        panic!(
            "{name}: no HTTP answer before the close ({e}); got {text:?}; wanted {}",
            case.status
        )
    });
    let rest = &reply.raw[cursor.position() as usize..];
    assert!(
        rest.is_empty(),
        "{name}: more followed the answer, a second request ran: {:?}",
        String::from_utf8_lossy(rest)
    );
    assert_eq!(
        response.status, case.status,
        "{name}: wanted {} ({}), got {}",
        case.status, case.code, response.body
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{name}"
    );
    // An error names what was wrong; it never echoes kilobytes of the client's input back.
    if response.status >= 400 {
        assert!(
            response.body.len() <= MAX_ERROR_BYTES,
            "{name}: a {}-byte error answer: {:?}…",
            response.body.len(),
            &response.body[..response.body.len().min(300)]
        );
    }
    let body = response.json();
    if !case.code.is_empty() {
        assert_eq!(body["code"], case.code, "{name}: {body}");
    }
    assert_eq!(response.header("connection"), Some("close"), "{name}");
    if case.stalls {
        assert!(
            reply.elapsed >= HEADER_TIMEOUT.mul_f32(0.9)
                && reply.elapsed < HEADER_TIMEOUT + Duration::from_secs(3),
            "{name}: a stall must be answered when header_timeout ({HEADER_TIMEOUT:?}) is up, not after {:?}",
            reply.elapsed
        );
    }
    response
}

/// How many cases `check_all` runs at once: enough that stalls overlap rather than add up,
/// and well below `server.max_connections_per_ip` (64), which the cases all share.
const PARALLEL: usize = 24;

/// Runs the cases `PARALLEL` at a time and returns the answers in table order.
fn check_all(addr: SocketAddr, cases: &[Case]) -> Vec<RawResponse> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut answers: Vec<(usize, RawResponse)> = thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL.min(cases.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(c) = cases.get(i) else {
                            return done;
                        };
                        done.push((i, check(addr, c)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// A register with the valid token that must succeed; returns the run's uuid.
fn register(addr: SocketAddr, body: &Value) -> String {
    let answer = post(addr, REGISTER, body);
    assert_eq!(answer.status, 200, "register {body}: {}", answer.body);
    answer.json()["uuid"]
        .as_str()
        .expect("register answers a uuid")
        .to_string()
}

/// POSTs JSON with the valid token.
fn post(addr: SocketAddr, path: &str, body: &Value) -> RawResponse {
    let auth = bearer();
    request(
        addr,
        "POST",
        path,
        &[("Authorization", &auth)],
        Some(&body.to_string()),
    )
}

fn get_authed(addr: SocketAddr, path: &str) -> RawResponse {
    let auth = bearer();
    request(addr, "GET", path, &[("Authorization", &auth)], None)
}

/// Ping on a fresh connection; panics unless it answers 200 within a second.
fn ping_within_a_second(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let answer = request(addr, "GET", PING, &[], None);
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "ping: {}", answer.body);
    assert!(took < Duration::from_secs(1), "ping took {took:?}");
    took
}

/// Connections the gateway has open right now (the request asking counts as one).
fn open_connections(addr: SocketAddr) -> u64 {
    get_authed(addr, STATES).json()["connections"]
        .as_u64()
        .expect("states.connections")
}

// ---------------------------------------------------------------------------
// What InfluxDB and the job table must hold
// ---------------------------------------------------------------------------

/// The series (and points per series) a test wrote on purpose, and its runs.
#[derive(Default, Debug)]
struct Expected {
    /// Series key as `SHOW SERIES` prints it → (measurement, points in it).
    series: BTreeMap<String, (String, usize)>,
    runs: BTreeSet<String>,
}

impl Expected {
    fn point(&mut self, measurement: &str, tags: &[(&str, &str)]) {
        let key = series_key(measurement, tags);
        self.series
            .entry(key)
            .or_insert_with(|| (measurement.to_string(), 0))
            .1 += 1;
    }

    /// A register: the `started` event and the first heartbeat.
    fn register(&mut self, uuid: &str, host: &str, client_tags: &[(&str, &str)]) {
        self.runs.insert(uuid.to_string());
        self.point(
            "load_testing_events",
            &[("event", "started"), ("host", host), ("uuid", uuid)],
        );
        self.point("load_testing", &run_tags(uuid, host, client_tags, &[]));
    }

    /// A commit: the result (when it has fields), one point per stats row (`rows` are their
    /// tags), and the `finished` event.
    fn commit(&mut self, uuid: &str, host: &str, result: bool, rows: &[Vec<(&str, &str)>]) {
        if result {
            self.point("load_testing_result", &run_tags(uuid, host, &[], &[]));
        }
        for row in rows {
            self.point(
                "load_testing_request_stats",
                &run_tags(uuid, host, &[], row),
            );
        }
        self.point(
            "load_testing_events",
            &[("event", "finished"), ("host", host), ("uuid", uuid)],
        );
    }

    fn measurements(&self) -> BTreeSet<String> {
        self.series.values().map(|(m, _)| m.clone()).collect()
    }

    fn points_in(&self, measurement: &str) -> usize {
        self.series
            .values()
            .filter(|(m, _)| m == measurement)
            .map(|(_, n)| n)
            .sum()
    }
}

fn run_tags<'a>(
    uuid: &'a str,
    host: &'a str,
    client: &[(&'a str, &'a str)],
    row: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut tags: Vec<(&str, &str)> = client.to_vec();
    tags.extend_from_slice(row);
    tags.push(("host", host));
    tags.push(("uuid", uuid));
    tags
}

/// A series key as InfluxDB 1.x prints it in `SHOW SERIES`: tags sorted by key, commas and
/// spaces escaped in the measurement, commas, spaces and equals signs in tag keys and values.
fn series_key(measurement: &str, tags: &[(&str, &str)]) -> String {
    fn escape(text: &str, specials: &[char]) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if specials.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }
    let mut tags = tags.to_vec();
    tags.sort();
    let mut key = escape(measurement, &[',', ' ']);
    for (k, v) in tags {
        key.push(',');
        key.push_str(&escape(k, &[',', ' ', '=']));
        key.push('=');
        key.push_str(&escape(v, &[',', ' ', '=']));
    }
    key
}

/// Every series key in the test database.
fn show_series(influx: &Influxd) -> BTreeSet<String> {
    let v = influx.query(DB, "SHOW SERIES");
    let result = &v["results"][0];
    assert!(result.get("error").is_none(), "SHOW SERIES: {v}");
    result["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .map(|row| row[0].as_str().expect("a series key").to_string())
        .collect()
}

/// Points of `measurement` belonging to run `uuid`, as column → value.
fn rows_of(influx: &Influxd, measurement: &str, uuid: &str) -> Vec<Map<String, Value>> {
    influx
        .series(DB, measurement)
        .into_iter()
        .filter(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid))
        .collect()
}

/// The one point of `measurement` for run `uuid`.
fn only_row(influx: &Influxd, measurement: &str, uuid: &str) -> Map<String, Value> {
    let mut rows = rows_of(influx, measurement, uuid);
    assert_eq!(rows.len(), 1, "{measurement} of run {uuid}: {rows:?}");
    rows.remove(0)
}

/// The most memory the gateway ever had resident (VmHWM), in KiB: what a burst really cost,
/// which the current RSS may no longer show.
fn peak_rss_kib(gw: &Gateway) -> u64 {
    let path = format!("/proc/{}/status", gw.pid());
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {path}"))
}

/// After a batch of hostile input: the process is alive, ping answers within a second,
/// threads and resident memory are bounded (and printed), InfluxDB holds exactly the expected
/// measurements, series and number of points, and the job table holds exactly the expected
/// runs.
fn after_each(gw: &mut Gateway, influx: &Influxd, expected: &Expected) {
    assert!(gw.is_alive(), "the gateway died; its log:\n{}", gw.log());
    let took = ping_within_a_second(gw.addr);
    let threads = gw.threads();
    let rss = gw.rss_kib();
    let peak = peak_rss_kib(gw);
    let fds = gw.open_fds();
    println!(
        "after hostile input: ping {took:?}, {threads} threads, RSS {rss} KiB (peak {peak} KiB), {fds} open fds"
    );
    assert!(threads < MAX_THREADS, "{threads} threads");
    assert!(
        rss < MAX_RSS_KIB,
        "resident memory {rss} KiB (peak {peak} KiB)"
    );
    assert!(fds < 64, "{fds} open file descriptors: a leak");

    let series = show_series(influx);
    let wanted: BTreeSet<String> = expected.series.keys().cloned().collect();
    assert_eq!(
        series, wanted,
        "SHOW SERIES must list exactly the series written on purpose"
    );
    let measurements: BTreeSet<String> = influx.measurements(DB).into_iter().collect();
    assert_eq!(measurements, expected.measurements(), "SHOW MEASUREMENTS");
    for m in &measurements {
        assert_eq!(influx.count(DB, m), expected.points_in(m), "points in {m}");
    }

    let jobs = get_authed(gw.addr, ISRUNNING);
    assert_eq!(jobs.status, 200, "{}", jobs.body);
    let runs: BTreeSet<String> = jobs
        .json()
        .as_object()
        .expect("isrunning is an object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        runs, expected.runs,
        "the job table holds only deliberate runs"
    );
}

// ---------------------------------------------------------------------------
// HTTP framing
// ---------------------------------------------------------------------------

/// Content-Length abuse on register, with the valid token. The one accepted case registers
/// the run `cl-twice`.
fn content_length_cases() -> Vec<Case> {
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
fn transfer_encoding_cases() -> Vec<Case> {
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
    let te = |name: &str, headers: &str| {
        case(
            name,
            raw("POST", REGISTER, headers, &te_body),
            411,
            "transfer_encoding_unsupported",
        )
    };
    vec![
        case(
            "chunked",
            raw(
                "POST",
                REGISTER,
                "Transfer-Encoding: chunked\r\n",
                &chunked_register,
            ),
            411,
            "transfer_encoding_unsupported",
        ),
        te(
            "Content-Length 4 and chunked, smuggling a register",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        ),
        te(
            "chunked then Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        ),
        case(
            "the same on a keep-alive connection",
            keep_alive_smuggle,
            411,
            "transfer_encoding_unsupported",
        ),
        te(
            "odd casing",
            "Content-Length: 4\r\ntRaNsFeR-eNcOdInG: cHuNkEd\r\n",
        ),
        te("tab before the value", "Transfer-Encoding:\tchunked\r\n"),
        te(
            "spaces around the value",
            "Transfer-Encoding:   chunked   \r\n",
        ),
        te("identity", "Transfer-Encoding: identity\r\n"),
        te("a list", "Transfer-Encoding: gzip, chunked\r\n"),
        te("an unknown coding", "Transfer-Encoding: xchunked\r\n"),
        te("empty", "Transfer-Encoding:\r\n"),
        te(
            "twice",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ),
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
            "HTTP/1.0",
            {
                let mut r = format!(
                    "POST {REGISTER} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                r.extend_from_slice(&te_body);
                r
            },
            411,
            "transfer_encoding_unsupported",
        ),
        case(
            "on a GET",
            raw("GET", PING, "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
            411,
            "transfer_encoding_unsupported",
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
fn transfer_encoding_is_refused_and_nothing_is_smuggled() {
    let (influx, mut gw) = start("", "");
    check_all(gw.addr, &transfer_encoding_cases());
    after_each(&mut gw, &influx, &Expected::default());
}

// ---------------------------------------------------------------------------
// Oversized and stalled heads and bodies
// ---------------------------------------------------------------------------

#[test]
fn oversized_heads_are_431_and_cost_no_memory() {
    let (influx, mut gw) = start("", "");
    let rss_before = gw.rss_kib();
    let line = |n: usize| "a".repeat(n);
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let sixty: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_but_fits = format!("X-Big: {}\r\n", line(15 * 1024));
    let cases = vec![
        case(
            "a 1 MiB header line without a line end",
            format!("GET {PING} HTTP/1.1\r\nX-Big: {}", line(MIB)),
            431,
            "head_too_large",
        ),
        case(
            "10 000 headers",
            raw("GET", PING, &many_headers, b""),
            431,
            "head_too_large",
        ),
        case(
            "a 100 KiB header value",
            raw(
                "GET",
                PING,
                &format!("X-Big: {}\r\n", line(100 * 1024)),
                b"",
            ),
            431,
            "head_too_large",
        ),
        case(
            "a 1 MiB request line",
            format!("GET /{} HTTP/1.1\r\nConnection: close\r\n\r\n", line(MIB)),
            431,
            "head_too_large",
        ),
        case(
            "a 1 MiB method",
            format!("{} {PING} HTTP/1.1\r\n\r\n", "G".repeat(MIB)),
            431,
            "head_too_large",
        ),
        case(
            "a 100 KiB header name",
            raw("GET", PING, &format!("{}: v\r\n", line(100 * 1024)), b""),
            431,
            "head_too_large",
        ),
        case(
            "a 15 KiB header fits",
            raw("GET", PING, &big_but_fits, b""),
            200,
            "",
        ),
        case("63 headers fit", raw("GET", PING, &sixty, b""), 200, ""),
        case(
            "a head that never ends",
            format!("GET {PING} HTTP/1.1\r\nX-Slow: a"),
            408,
            "head_timeout",
        )
        .stalls(),
    ];
    check_all(gw.addr, &cases);
    let rss_after = gw.rss_kib();
    println!("RSS before {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "megabytes of refused head must not stay resident: {rss_before} -> {rss_after} KiB"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

/// A head sent one byte at a time gets 408 when header_timeout is up, counted from its first
/// byte: slow bytes do not extend the deadline.
#[test]
fn a_trickled_head_is_cut_off_at_the_deadline() {
    let (influx, mut gw) = start("", "");
    let mut stream = TcpStream::connect(gw.addr).expect("connect");
    let writer = stream.try_clone().expect("clone the socket");
    let started = Instant::now();
    // One byte every 100 ms from another thread, until the server stops taking them.
    let trickle = thread::spawn(move || {
        let mut writer = writer;
        let head = format!("GET {PING} HTTP/1.1\r\nX-Slow: {}", "a".repeat(1000));
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(4) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .expect("read timeout");
    let mut first = [0u8; 256];
    let n = stream
        .read(&mut first)
        .expect("an answer while the head trickles in");
    let took = started.elapsed();
    let mut answer = first[..n].to_vec();
    answer.extend(read_until_closed(&mut stream, Duration::from_secs(3)));
    trickle.join().expect("trickle thread");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("head_timeout"), "{text}");
    println!("a trickled head was answered after {took:?}");
    assert!(
        took >= HEADER_TIMEOUT.mul_f32(0.9) && took < HEADER_TIMEOUT + Duration::from_millis(900),
        "the head deadline counts from the first byte; the answer came after {took:?}"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

/// Stalled bodies hold a connection only until header_timeout: each gets 408 and its slot is
/// given back. The pool parks a thread it grew for up to 30 s in case more connections come,
/// so the OS thread count does not drop within the test; what must hold is that a second
/// wave runs on those same threads instead of adding 50 more.
#[test]
fn stalled_bodies_get_408_and_release_their_threads() {
    // 2 s rather than 1 s, so that all 50 are surely open and measured before the first 408.
    const STALL: Duration = Duration::from_secs(2);
    let (influx, mut gw) = start("header_timeout = \"2s\"\n", "");
    let threads_idle = gw.threads();
    let mut peaks = Vec::new();
    for wave in 0..2 {
        let head = raw(
            "POST",
            REGISTER,
            "Content-Length: 1000\r\n",
            br#"{"host":"stalled","#,
        );
        let mut stalled: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(gw.addr).expect("connect");
                s.write_all(&head)
                    .expect("send the head and a part of the body");
                s
            })
            .collect();
        let sent = Instant::now();
        // All 50 hold a connection (the states request is one more).
        wait_until(STALL / 2, "50 stalled connections", || {
            open_connections(gw.addr) > 50
        });
        let took = ping_within_a_second(gw.addr);
        let peak = gw.threads();
        println!("wave {wave}: 50 stalled bodies, {peak} threads, ping {took:?}");
        assert!(peak < MAX_THREADS, "{peak} threads");
        peaks.push(peak);
        for s in &mut stalled {
            let answer = read_until_closed(s, Duration::from_secs(4));
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with("HTTP/1.1 408 ") && text.contains("body_timeout"),
                "{text}"
            );
        }
        assert!(
            sent.elapsed() < STALL + Duration::from_secs(2),
            "every stalled body was answered when header_timeout was up"
        );
        // Closing our ends ends the server's lingering on them at once.
        drop(stalled);
        wait_until(Duration::from_secs(2), "the slots to be given back", || {
            open_connections(gw.addr) == 1
        });
    }
    println!(
        "threads: {threads_idle} idle, {} and {} with 50 stalled bodies, {} after",
        peaks[0],
        peaks[1],
        gw.threads()
    );
    assert!(
        peaks[1] <= peaks[0] + 2,
        "the second wave reuses the threads of the first: {peaks:?}"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

// ---------------------------------------------------------------------------
// Protocol garbage, odd targets and the access log
// ---------------------------------------------------------------------------

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

#[test]
fn protocol_garbage_and_odd_targets_are_refused_and_cannot_forge_log_lines() {
    let (influx, mut gw) = start("", "");
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
    check_all(gw.addr, &cases);

    // Every line of the log is the gateway's own: client text is escaped, so no request can
    // start a line of its own or smuggle terminal control sequences.
    let log = gw.log();
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
    assert!(
        log.contains("/x?FORGED-NEL?31m"),
        "C1 controls are replaced in the access log:\n{log}"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

#[test]
fn pathological_json_is_refused_and_what_is_valid_is_stored_exactly() {
    let (influx, mut gw) = start(
        &format!("max_body_bytes = {}\n", 2 * MIB),
        &format!("[limits]\nmax_string_bytes = {MIB}\n"),
    );
    let deep = |open: &str, inner: &str, close: &str, depth: usize| {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    };
    let field =
        |value: &str| format!(r#"{{"host":"lg","measurement":{{"fields":{{"f":{value}}}}}}}"#);
    let refused: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid UTF-8 inside a string",
            b"{\"host\":\"lg-\xff\xfe\"}".to_vec(),
            "invalid_json",
        ),
        (
            "invalid UTF-8 in a key",
            b"{\"ho\xc3st\":\"lg\"}".to_vec(),
            "invalid_json",
        ),
        (
            "an overlong encoding of '/'",
            b"{\"host\":\"\xc0\xaf\"}".to_vec(),
            "invalid_json",
        ),
        (
            "an encoded surrogate",
            b"{\"host\":\"\xed\xa0\x80\"}".to_vec(),
            "invalid_json",
        ),
        (
            "a lone surrogate escape",
            br#"{"host":"\ud800"}"#.to_vec(),
            "invalid_json",
        ),
        (
            "arrays nested 100 000 deep",
            deep("[", "", "]", 100_000),
            "invalid_json",
        ),
        (
            "objects nested 100 000 deep",
            deep("{\"a\":", "1", "}", 100_000),
            "invalid_json",
        ),
        (
            "100 000 unclosed brackets",
            "[".repeat(100_000).into_bytes(),
            "invalid_json",
        ),
        (
            "a field nested 100 000 deep",
            field(&String::from_utf8(deep("[", "", "]", 100_000)).unwrap()).into_bytes(),
            "invalid_json",
        ),
        ("1e400", field("1e400").into_bytes(), "invalid_json"),
        ("-1e400", field("-1e400").into_bytes(), "invalid_json"),
        ("NaN", field("NaN").into_bytes(), "invalid_json"),
        ("Infinity", field("Infinity").into_bytes(), "invalid_json"),
        ("-Infinity", field("-Infinity").into_bytes(), "invalid_json"),
        ("a hex number", field("0x10").into_bytes(), "invalid_json"),
        ("a leading zero", field("01").into_bytes(), "invalid_json"),
        (
            "startedAt 1e400",
            br#"{"startedAt":1e400}"#.to_vec(),
            "invalid_json",
        ),
        (
            "startedAt 2^64+1",
            br#"{"startedAt":18446744073709551617}"#.to_vec(),
            "invalid_time",
        ),
        ("null", b"null".to_vec(), "not_an_object"),
        ("a string", br#""string""#.to_vec(), "not_an_object"),
        ("an empty array", b"[]".to_vec(), "not_an_object"),
        ("0", b"0".to_vec(), "not_an_object"),
        ("true", b"true".to_vec(), "not_an_object"),
        ("two objects", b"{}{}".to_vec(), "invalid_json"),
        ("trailing garbage", b"{} x".to_vec(), "invalid_json"),
        (
            "a byte-order mark",
            b"\xef\xbb\xbf{}".to_vec(),
            "invalid_json",
        ),
        ("a NUL after the object", b"{}\0".to_vec(), "invalid_json"),
        ("only whitespace", b" \r\n\t ".to_vec(), "empty_body"),
        ("empty", Vec::new(), "empty_body"),
        (
            "a string field one byte over max_string_bytes",
            field(&format!("\"{}\"", "s".repeat(MIB + 1))).into_bytes(),
            "string_too_long",
        ),
        (
            "a 1 MiB tag value",
            format!(r#"{{"tags":{{"t":"{}"}}}}"#, "v".repeat(MIB)).into_bytes(),
            "invalid_tag",
        ),
        (
            "an integer of 1 MiB digits",
            field(&format!("1{}", "0".repeat(MIB))).into_bytes(),
            "invalid_json",
        ),
    ];
    let cases: Vec<Case> = refused
        .into_iter()
        .map(|(name, body, code)| case(name, post_raw(REGISTER, &body), 400, code))
        .collect();
    check_all(gw.addr, &cases);

    // Valid JSON, however odd, is accepted and stored exactly.
    let mut expected = Expected::default();
    let exact = "s".repeat(MIB);
    let quotes = "\"\\".repeat(MIB / 4);
    let accepted: Vec<(&str, String)> = vec![
        (
            "nested-100",
            format!(
                r#"{{"host":"nested-100","ignored":{}}}"#,
                String::from_utf8(deep("[", "", "]", 100)).unwrap()
            ),
        ),
        (
            "numbers",
            r#"{"host":"numbers","measurement":{"fields":{"big":18446744073709551617,"huge":1e308,"tiny":5e-324,"negzero":-0.0,"neg":-18446744073709551617}}}"#.into(),
        ),
        (
            "duplicates",
            r#"{"host":"dup-a","host":"duplicates","measurement":{"fields":{"x":1,"x":2}}}"#.into(),
        ),
        (
            "exact-limit",
            json!({"host": "exact-limit", "measurement": {"fields": {"s": exact}}}).to_string(),
        ),
        (
            "quotes",
            json!({"host": "quotes", "measurement": {"fields": {"s": quotes}}}).to_string(),
        ),
        (
            "long-fraction",
            format!(
                r#"{{"host":"long-fraction","measurement":{{"fields":{{"f":0.{}1}}}}}}"#,
                "0".repeat(MIB)
            ),
        ),
    ];
    let mut uuids = BTreeMap::new();
    for (host, body) in &accepted {
        let answer = send_raw(gw.addr, &post_raw(REGISTER, body.as_bytes()));
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        let uuid = answer.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&uuid, host, &[]);
        uuids.insert(*host, uuid);
    }
    let beat = |host: &str| only_row(&influx, "load_testing", &uuids[host]);
    let numbers = beat("numbers");
    assert_eq!(numbers["big"].as_f64(), Some(18446744073709551617.0));
    assert_eq!(numbers["neg"].as_f64(), Some(-18446744073709551617.0));
    assert_eq!(numbers["huge"].as_f64(), Some(1e308));
    assert_eq!(numbers["tiny"].as_f64(), Some(5e-324));
    assert_eq!(numbers["negzero"].as_f64(), Some(0.0));
    let duplicates = beat("duplicates");
    assert_eq!(
        (duplicates["host"].as_str(), duplicates["x"].as_f64()),
        (Some("duplicates"), Some(2.0)),
        "the last of duplicate keys wins, as in every mainstream JSON parser"
    );
    let stored = beat("exact-limit");
    assert_eq!(
        stored["s"].as_str().map(str::len),
        Some(MIB),
        "a string field of exactly max_string_bytes is stored whole"
    );
    assert_eq!(stored["s"].as_str(), Some(exact.as_str()));
    assert_eq!(beat("quotes")["s"].as_str(), Some(quotes.as_str()));
    assert_eq!(
        beat("long-fraction")["f"].as_f64(),
        Some(0.0),
        "a fraction below the smallest float is 0"
    );
    after_each(&mut gw, &influx, &expected);
}

/// An error names the key at fault, but a key can be as long as the body: the answer must
/// not carry a megabyte of the client's own input back (values are already quoted short).
#[test]
fn errors_name_a_huge_key_without_echoing_it_whole() {
    let (influx, mut gw) = start(&format!("max_body_bytes = {}\n", 2 * MIB), "");
    let key = "k".repeat(MIB);
    let run = register(gw.addr, &json!({"host": "echo"}));
    let mut expected = Expected::default();
    expected.register(&run, "echo", &[]);
    let bodies = [
        (
            "a 1 MiB field key",
            REGISTER,
            json!({"measurement": {"fields": {&key: 1}}}),
            "invalid_field",
        ),
        (
            "a 1 MiB tag key",
            REGISTER,
            json!({"tags": {&key: "v"}}),
            "invalid_tag",
        ),
        (
            "a 1 MiB measurement tag key",
            REGISTER,
            json!({"measurement": {"tags": {&key: "v"}}}),
            "invalid_tag",
        ),
        (
            "a 1 MiB field key on commit",
            COMMIT,
            json!({"uuid": run, "measurement": {"fields": {&key: 1}}}),
            "invalid_field",
        ),
        (
            "a 1 MiB startedAt",
            REGISTER,
            json!({"startedAt": key}),
            "invalid_time",
        ),
        ("a 1 MiB uuid", COMMIT, json!({"uuid": key}), "invalid_uuid"),
    ];
    let cases: Vec<Case> = bodies
        .iter()
        .map(|(name, path, body, code)| {
            case(
                *name,
                post_raw(path, body.to_string().as_bytes()),
                400,
                code,
            )
        })
        .collect();
    check_all(gw.addr, &cases);
    after_each(&mut gw, &influx, &expected);
}

/// A body within `server.max_body_bytes` must cost memory in proportion to its size. Parsed
/// into a JSON tree, each 8-byte `{"a":1}` becomes a map node of several hundred bytes, so
/// 1 MiB of them under a key the gateway ignores would take tens of MiB per request, and
/// every connection can send one at the same time.
#[test]
fn a_body_of_tiny_objects_does_not_multiply_into_memory() {
    let (influx, mut gw) = start("", "");
    let before = gw.rss_kib();
    let prefix = r#"{"host":"tiny-objects","ignored":["#;
    let count = (MIB - prefix.len() - 2) / 8;
    let body = format!("{prefix}{}]}}", vec![r#"{"a":1}"#; count].join(","));
    assert!(body.len() <= MIB);
    let answer = send_raw(gw.addr, &post_raw(REGISTER, body.as_bytes()));
    assert!(
        matches!(answer.status, 200 | 400 | 413),
        "{}: {}",
        answer.status,
        answer.body
    );
    println!(
        "a {}-byte body of {count} tiny objects: {}, RSS {before} -> {} KiB, peak {} KiB",
        body.len(),
        answer.status,
        gw.rss_kib(),
        peak_rss_kib(&gw)
    );
    let mut expected = Expected::default();
    if answer.status == 200 {
        let uuid = answer.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&uuid, "tiny-objects", &[]);
    }
    let peak = peak_rss_kib(&gw);
    assert!(
        peak < before + 32 * 1024,
        "one 1 MiB request must not cost tens of MiB: resident memory went from {before} KiB to a peak of {peak} KiB"
    );
    after_each(&mut gw, &influx, &expected);
}

// ---------------------------------------------------------------------------
// SPEC §4 name and value rules, through HTTP
// ---------------------------------------------------------------------------

#[test]
fn every_name_and_value_rule_holds_over_http_and_nothing_is_injected() {
    let (influx, mut gw) = start("", "");
    let tags = |k: &str, v: Value| json!({"host": "lg", "tags": {k: v}});
    let mtags = |k: &str, v: Value| json!({"host": "lg", "measurement": {"tags": {k: v}}});
    let fields = |k: &str, v: Value| json!({"host": "lg", "measurement": {"fields": {k: v}}});
    // Tags are t0, t1, …, fields f0, f1, …: a tag and a field of one name would shadow
    // each other in InfluxQL queries.
    let many = |prefix: &str, n: usize, v: Value| -> Map<String, Value> {
        (0..n)
            .map(|i| (format!("{prefix}{i}"), v.clone()))
            .collect()
    };
    let mut refused: Vec<(String, Value, &str, String)> = vec![
        (
            "empty tag key".into(),
            tags("", json!("v")),
            "invalid_tag",
            "tags.".into(),
        ),
        (
            "empty field key".into(),
            fields("", json!(1)),
            "invalid_field",
            "measurement.fields.".into(),
        ),
        (
            "129-byte tag key".into(),
            tags(&"k".repeat(129), json!("v")),
            "invalid_tag",
            "tags.k".into(),
        ),
        (
            "129-byte field key".into(),
            fields(&"k".repeat(129), json!(1)),
            "invalid_field",
            "measurement.fields.k".into(),
        ),
        (
            "257-byte tag value".into(),
            tags("t", json!("v".repeat(257))),
            "invalid_tag",
            "tags.t".into(),
        ),
        (
            "257-byte host".into(),
            json!({"host": "h".repeat(257)}),
            "invalid_tag",
            "host".into(),
        ),
        (
            "257-byte targetHost".into(),
            json!({"host": "lg", "targetHost": "h".repeat(257)}),
            "invalid_tag",
            "targetHost".into(),
        ),
        (
            "tag key time".into(),
            tags("time", json!("v")),
            "invalid_tag",
            "tags.time".into(),
        ),
        (
            "field key time".into(),
            fields("time", json!(1)),
            "invalid_field",
            "measurement.fields.time".into(),
        ),
        (
            "tag key _x".into(),
            mtags("_x", json!("v")),
            "invalid_tag",
            "measurement.tags._x".into(),
        ),
        (
            "field key _x".into(),
            fields("_x", json!(1)),
            "invalid_field",
            "measurement.fields._x".into(),
        ),
        (
            "33 tags".into(),
            json!({"host": "lg", "tags": many("t", 33, json!("v"))}),
            "too_many_tags",
            "tags".into(),
        ),
        (
            "32 tags and targetHost".into(),
            json!({"host": "lg", "targetHost": "t", "tags": many("t", 32, json!("v"))}),
            "too_many_tags",
            "tags".into(),
        ),
        (
            "65 fields".into(),
            json!({"host": "lg", "measurement": {"fields": many("f", 65, json!(1))}}),
            "too_many_fields",
            "measurement.fields".into(),
        ),
        (
            "an object tag value".into(),
            tags("t", json!({"a": 1})),
            "invalid_tag",
            "tags.t".into(),
        ),
        (
            "an array tag value".into(),
            mtags("t", json!(["a"])),
            "invalid_tag",
            "measurement.tags.t".into(),
        ),
        (
            "an object field value".into(),
            fields("f", json!({"a": 1})),
            "invalid_field",
            "measurement.fields.f".into(),
        ),
        (
            "an array field value".into(),
            fields("f", json!([1])),
            "invalid_field",
            "measurement.fields.f".into(),
        ),
        (
            "an array host".into(),
            json!({"host": ["lg"]}),
            "invalid_tag",
            "host".into(),
        ),
        (
            "a tag value injecting a line".into(),
            tags("t", json!("a\nload_testing_result,uuid=x f=1")),
            "invalid_tag",
            "tags.t".into(),
        ),
        (
            "a field key injecting a line".into(),
            fields("f=1 123\nx", json!(1)),
            "invalid_field",
            "measurement.fields.f=1 123".into(),
        ),
        (
            "a host injecting a line".into(),
            json!({"host": "lg\nload_testing_events,event=started,host=x,uuid=y text=\"t\" 1"}),
            "invalid_tag",
            "host".into(),
        ),
        (
            "a hostname injecting a line".into(),
            json!({"hostname": "lg\r\nload_testing f=1"}),
            "invalid_tag",
            "hostname".into(),
        ),
        (
            "a startedAt with a line end".into(),
            json!({"host": "lg", "startedAt": "2016-11-20T10:00:00Z\nx"}),
            "invalid_time",
            "startedAt".into(),
        ),
    ];
    // Every forbidden character, in every place a name or a tag value comes from.
    for (label, c) in [
        ("tab", '\t'),
        ("CR", '\r'),
        ("LF", '\n'),
        ("DEL", '\u{7f}'),
        ("NUL", '\0'),
        ("ESC", '\u{1b}'),
        ("U+0085", '\u{85}'),
        ("U+009B", '\u{9b}'),
        ("backslash", '\\'),
    ] {
        let bad = format!("a{c}b");
        let code_for = |field: bool| {
            if field {
                "invalid_field"
            } else {
                "invalid_tag"
            }
        };
        for (place, body, field, key) in [
            (
                "tag key",
                tags(&bad, json!("v")),
                false,
                "tags.a".to_string(),
            ),
            ("tag value", tags("t", json!(bad)), false, "tags.t".into()),
            (
                "measurement tag key",
                mtags(&bad, json!("v")),
                false,
                "measurement.tags.a".into(),
            ),
            (
                "measurement tag value",
                mtags("t", json!(bad)),
                false,
                "measurement.tags.t".into(),
            ),
            (
                "field key",
                fields(&bad, json!(1)),
                true,
                "measurement.fields.a".into(),
            ),
            ("host", json!({"host": bad}), false, "host".into()),
            (
                "hostname",
                json!({"hostname": bad}),
                false,
                "hostname".into(),
            ),
            (
                "targetHost",
                json!({"host": "lg", "targetHost": bad}),
                false,
                "targetHost".into(),
            ),
        ] {
            refused.push((format!("{label} in a {place}"), body, code_for(field), key));
        }
    }
    let cases: Vec<Case> = refused
        .iter()
        .map(|(name, body, code, _)| {
            case(
                name.clone(),
                post_raw(REGISTER, body.to_string().as_bytes()),
                400,
                code,
            )
        })
        .collect();
    let answers = check_all(gw.addr, &cases);
    for ((name, _, _, key), answer) in refused.iter().zip(&answers) {
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.starts_with(key.as_str()),
            "{name}: the error names {key:?}: {error}"
        );
    }
    // Commits are checked by the same rules (the run exists, so only the payload can refuse).
    let run = register(gw.addr, &json!({"host": "rules"}));
    let mut expected = Expected::default();
    expected.register(&run, "rules", &[]);
    for (name, body, code, _) in refused.iter().take(12) {
        let mut body = body.clone();
        body["uuid"] = json!(run);
        let answer = post(gw.addr, COMMIT, &body);
        assert_eq!(
            (answer.status, answer.json()["code"].as_str()),
            (400, Some(*code)),
            "commit, {name}"
        );
    }
    assert_eq!(
        get_authed(gw.addr, ISRUNNING).json()[&run],
        true,
        "refused commits end nothing"
    );

    // At the limits, and escaping: accepted, and stored exactly as sent.
    let key128 = "k".repeat(128);
    let value256 = "v".repeat(256);
    let mut at_limits = many("t", 30, json!("v"));
    at_limits.insert(key128.clone(), json!(value256));
    let mut many_fields = many("f", 63, json!(1));
    many_fields.insert("f".repeat(128), json!(2.5));
    let limits_run = register(
        gw.addr,
        &json!({"host": "at-limits", "targetHost": "t", "tags": at_limits,
                "measurement": {"fields": many_fields}}),
    );
    let mut limit_tags: Vec<(String, String)> =
        (0..30).map(|i| (format!("t{i}"), "v".into())).collect();
    limit_tags.push((key128.clone(), value256.clone()));
    limit_tags.push(("targetHost".into(), "t".into()));
    let limit_refs: Vec<(&str, &str)> = limit_tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    expected.register(&limits_run, "at-limits", &limit_refs);
    let beat = only_row(&influx, "load_testing", &limits_run);
    assert_eq!(beat[&key128], value256.as_str());
    assert_eq!(beat[&"f".repeat(128)], 2.5);
    let short = |prefix: char| {
        beat.keys()
            .filter(|k| k.starts_with(prefix) && k.len() <= 3)
            .count()
    };
    assert_eq!(
        (short('t'), short('f')),
        (30, 63),
        "every tag and field is stored"
    );

    let fake_line = "a\"\nload_testing_result,uuid=evil,host=evil f=1 1\n\\\" \\\u{0}\u{2028}é\\";
    let tricky = json!({
        "host": "lg, h=1 \"q\"",
        "startedAt": 1_479_636_000,
        "tags": {"a,b c=d": "x,y z=w\"q'", "uuid": "forged-uuid", "host": "forged-host",
                 "num": 1.5, "yes": true, "big": 18446744073709551617u128 as f64, "empty": "", "none": null},
        "measurement": {"tags": {"a,b c=d": "measurement wins"},
                        "fields": {"f=1 123": 1, "k\"q": 2, "s": fake_line, "e": ""}},
    });
    let tricky_run = register(gw.addr, &tricky);
    let big_text = json!(18446744073709551617u128 as f64).to_string();
    let tricky_tags = [
        ("a,b c=d", "measurement wins"),
        ("num", "1.5"),
        ("yes", "true"),
        ("big", big_text.as_str()),
    ];
    expected.register(&tricky_run, "lg, h=1 \"q\"", &tricky_tags);
    let beat = only_row(&influx, "load_testing", &tricky_run);
    assert_eq!(beat["host"], "lg, h=1 \"q\"");
    assert_eq!(beat["a,b c=d"], "measurement wins");
    assert_eq!(beat["f=1 123"], 1.0);
    assert_eq!(beat["k\"q"], 2.0);
    assert_eq!(
        beat["s"], fake_line,
        "a string field is stored exactly as sent"
    );
    assert_eq!(beat["e"], "");
    assert_eq!(beat["big"], big_text.as_str());
    assert!(!beat.contains_key("empty") && !beat.contains_key("none"));
    let started = only_row(&influx, "load_testing_events", &tricky_run);
    assert_eq!(started["time"], 1_479_636_000_000i64);
    after_each(&mut gw, &influx, &expected);
}

/// InfluxQL resolves a name that is a field anywhere in a measurement as that field, so a
/// single point with a field called like one of the gateway's tags (`uuid`, `host`, and
/// `name`/`method` on endpoint rows) makes `WHERE uuid = '…'` find nothing, for every run in
/// that measurement and shard, not just the sender's. Such fields must never be written.
#[test]
fn field_keys_cannot_shadow_the_gateways_tags() {
    let (influx, mut gw) = start("", "");
    let mut expected = Expected::default();
    let a = register(gw.addr, &json!({"host": "lg-a"}));
    expected.register(&a, "lg-a", &[]);

    // Refusing these fields (400 naming the key) or leaving them out are both fine.
    let shadow = post(
        gw.addr,
        REGISTER,
        &json!({"host": "lg-b", "measurement": {"fields": {"uuid": 1, "host": 2, "clients": 3}}}),
    );
    assert!(
        matches!(shadow.status, 200 | 400),
        "{}: {}",
        shadow.status,
        shadow.body
    );
    if shadow.status == 200 {
        let b = shadow.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&b, "lg-b", &[]);
    }

    // requestStats is data and never makes a commit fail: its members named like the tags
    // must simply not become fields.
    let commit = post(
        gw.addr,
        COMMIT,
        &json!({"uuid": a, "measurement": {"fields": {"requestStats": {
            "uuid": 1, "host": 2, "total_rps": 3,
            "stats": [{"name": 12, "method": 34, "uuid": 5, "host": 6, "num_requests": 7}]
        }}}}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    expected.commit(&a, "lg-a", true, &[vec![("method", "34"), ("name", "12")]]);

    let reserved = ["uuid", "host", "event", "name", "method"];
    for measurement in [
        "load_testing",
        "load_testing_result",
        "load_testing_request_stats",
        "load_testing_events",
    ] {
        let v = influx.query(DB, &format!("SHOW FIELD KEYS FROM \"{measurement}\""));
        let keys: Vec<String> = v["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[0].as_str().map(str::to_string))
            .collect();
        let clashing: Vec<&String> = keys
            .iter()
            .filter(|k| reserved.contains(&k.as_str()))
            .collect();
        assert!(
            clashing.is_empty(),
            "{measurement} has fields named like the gateway's tags: {clashing:?} (all fields: {keys:?})"
        );
    }
    for (measurement, want) in [
        ("load_testing", 1),
        ("load_testing_result", 1),
        ("load_testing_request_stats", 1),
    ] {
        let v = influx.query(
            DB,
            &format!(
                "SELECT * FROM \"{measurement}\" WHERE \"uuid\" = '{a}' AND \"host\" = 'lg-a'"
            ),
        );
        let found = v["results"][0]["series"][0]["values"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(
            found, want,
            "{measurement}: run {a} is found by its uuid and host: {v}"
        );
    }
    after_each(&mut gw, &influx, &expected);
}

// ---------------------------------------------------------------------------
// Commit-side hostility
// ---------------------------------------------------------------------------

#[test]
fn hostile_commit_data_is_refused_or_made_safe() {
    let (influx, mut gw) = start(
        &format!("max_body_bytes = {}\n", 3 * MIB),
        &format!("[limits]\nmax_string_bytes = {}\n", 3 * MIB),
    );
    let addr = gw.addr;
    let mut expected = Expected::default();
    let run = |expected: &mut Expected, host: &str| {
        let uuid = register(addr, &json!({"host": host}));
        expected.register(&uuid, host, &[]);
        uuid
    };
    let stats_of = |uuid: &str, stats: Value| json!({"uuid": uuid, "measurement": {"fields": {"requestStats": stats}}});

    // Refused: requestStats that is not an object or JSON text holding one. The run goes on.
    let garbage_run = run(&mut expected, "garbage");
    let deep_text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    for (name, stats) in [
        (
            "nested garbage",
            json!("{\"stats\": [[[[[[{\"name\": \"/x\""),
        ),
        (
            "a string holding arrays nested 100 000 deep",
            json!(deep_text),
        ),
        (
            "a string holding objects nested 100 000 deep",
            json!(deep_object),
        ),
        ("a string holding a string", json!("\"just text\"")),
        ("a string holding an array", json!("[{\"name\": \"/x\"}]")),
        ("a string holding NaN", json!("{\"total_rps\": NaN}")),
        ("a number", json!(5)),
        ("an array", json!([{"name": "/x", "num_requests": 1}])),
        ("a boolean", json!(true)),
    ] {
        let answer = post(gw.addr, COMMIT, &stats_of(&garbage_run, stats));
        assert_eq!(
            (answer.status, answer.json()["code"].as_str()),
            (400, Some("invalid_stats")),
            "requestStats as {name}: {}",
            answer.body
        );
    }
    assert_eq!(get_authed(gw.addr, ISRUNNING).json()[&garbage_run], true);
    // stats that is not an array: the commit is recorded, without endpoint rows.
    let answer = post(
        gw.addr,
        COMMIT,
        &stats_of(&garbage_run, json!({"stats": "oops", "total_rps": 1})),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    expected.commit(&garbage_run, "garbage", true, &[]);
    for stats in [json!({"a": 1}), json!(5), json!(null)] {
        let host = format!("stats-{}", stats.to_string().len());
        let uuid = run(&mut expected, &host);
        let answer = post(gw.addr, COMMIT, &stats_of(&uuid, json!({"stats": stats})));
        assert_eq!(answer.status, 200, "stats {stats}: {}", answer.body);
        expected.commit(&uuid, &host, true, &[]);
    }

    // A hostile endpoint name: made safe for the tag, kept exactly in full_name.
    let names_run = run(&mut expected, "names");
    let long_name = format!(
        "/x?q=1,2 y=\"z\"\n\\evil\r\nload_testing_result,uuid=forged f=1 1\t{}é{}",
        "\u{85}",
        "n".repeat(10 * 1024)
    );
    let safe_name: String = {
        let replaced: String = long_name
            .chars()
            .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
            .collect();
        let mut end = 256;
        while !replaced.is_char_boundary(end) {
            end -= 1;
        }
        replaced[..end].to_string()
    };
    let stats = json!({
        "stats": [
            {"name": long_name, "method": "GE\nT", "num_requests": 5, "_bad": 1, "time": 2,
             "a\nb": 3, "s": "text", "nested": {"x": 1}, "list": [1]},
            5, "x", null, [], {"name": "/nothing-to-record"}
        ],
        "total_rps": 1.5, "_x": 1, "time": 2, "a b": 3, "bad\tkey": 4,
    });
    let answer = post(gw.addr, COMMIT, &stats_of(&names_run, stats.clone()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    expected.commit(
        &names_run,
        "names",
        true,
        &[vec![("method", "GE_T"), ("name", safe_name.as_str())]],
    );
    let row = only_row(&influx, "load_testing_request_stats", &names_run);
    assert_eq!(row["name"], safe_name.as_str(), "the name tag is made safe");
    assert_eq!(
        row["full_name"],
        long_name.as_str(),
        "full_name holds the exact text"
    );
    assert_eq!(row["method"], "GE_T");
    assert_eq!(row["num_requests"], 5.0);
    let mut columns: Vec<&str> = row.keys().map(String::as_str).collect();
    columns.sort();
    assert_eq!(
        columns,
        [
            "full_name",
            "host",
            "method",
            "name",
            "num_requests",
            "time",
            "uuid"
        ],
        "members that cannot be fields are skipped"
    );
    let result = only_row(&influx, "load_testing_result", &names_run);
    let text: Value = serde_json::from_str(result["requestStats"].as_str().unwrap()).unwrap();
    assert_eq!(text, stats, "requestStats keeps the whole original");
    assert_eq!(
        (result["total_rps"].as_f64(), result["a b"].as_f64()),
        (Some(1.5), Some(3.0))
    );
    assert!(!result.contains_key("_x") && !result.contains_key("bad\tkey"));

    // 100 000 rows in one commit of about 2.3 MB: only limits.max_stats_rows (1000) become
    // points; the answer says so; the whole text is kept in requestStats.
    let rows_run = run(&mut expected, "rows");
    let rows: Vec<Value> = (0..100_000)
        .map(|i| json!({"name": format!("{i}"), "n": 1}))
        .collect();
    let body = stats_of(&rows_run, json!({"stats": rows}));
    let size = body.to_string().len();
    let answer = post(gw.addr, COMMIT, &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let description = answer.json()["data"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description.contains("1000 of 100000 stats rows"),
        "{description}"
    );
    let written = rows_of(&influx, "load_testing_request_stats", &rows_run).len();
    println!(
        "100 000 stats rows in {size} bytes: {written} written; RSS {} KiB",
        gw.rss_kib()
    );
    assert_eq!(
        written, 1000,
        "rows beyond limits.max_stats_rows are not written"
    );
    let names: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let row_tags: Vec<Vec<(&str, &str)>> =
        names.iter().map(|n| vec![("name", n.as_str())]).collect();
    expected.commit(&rows_run, "rows", true, &row_tags);
    after_each(&mut gw, &influx, &expected);
}

// ---------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------

/// 600 connections from 127.0.0.2, half idle and half trickling a head one byte every
/// 500 ms from two threads: at most max_connections_per_ip (64) of them hold a slot and a
/// thread at any time, the rest get 503 at once, 127.0.0.1 is served within a second all
/// along, and when header_timeout and idle_timeout are up every slot is given back.
#[test]
fn slowloris_from_one_address_does_not_starve_another() {
    const PER_IP: u64 = 64;
    let (influx, mut gw) = start("header_timeout = \"3s\"\nidle_timeout = \"3s\"\n", "");
    let other = IpAddr::from([127, 0, 0, 2]);
    let head = format!("GET {PING} HTTP/1.1\r\nX-Slow: {}", "a".repeat(100));
    // Odd connections trickle. Their first byte goes out on connect, so the server sees a
    // head begin (and its deadline start) however long the 600 connects take.
    let mut idle = Vec::new();
    let mut halves = vec![Vec::new(), Vec::new()];
    for n in 0..600usize {
        let mut c = connect_from(other, gw.addr);
        if n % 2 == 0 {
            idle.push((n, c));
        } else {
            let _ = c.write_all(&head.as_bytes()[..1]);
            halves[n / 2 % 2].push((n, c));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers: Vec<_> = halves
        .into_iter()
        .map(|mut conns| {
            let stop = Arc::clone(&stop);
            let head = head.clone();
            thread::spawn(move || {
                let mut at = 1;
                while !stop.load(Ordering::SeqCst) && at < head.len() {
                    thread::sleep(Duration::from_millis(500));
                    for (_, c) in &mut conns {
                        // Refused connections are closed: their writes fail, which is fine.
                        let _ = c.write_all(&head.as_bytes()[at..=at]);
                    }
                    at += 1;
                }
                conns
            })
        })
        .collect();

    let started = Instant::now();
    let (mut slowest, mut max_threads, mut max_rss, mut max_open) = (Duration::ZERO, 0, 0, 0);
    while started.elapsed() < Duration::from_millis(2500) {
        slowest = slowest.max(ping_within_a_second(gw.addr));
        max_threads = max_threads.max(gw.threads());
        max_rss = max_rss.max(gw.rss_kib());
        // Minus the states request itself and the ping just before it, which may still be
        // closing: what is left is 127.0.0.2's.
        max_open = max_open.max(open_connections(gw.addr).saturating_sub(2));
        thread::sleep(Duration::from_millis(100));
    }
    println!(
        "slowloris: slowest ping {slowest:?}, at most {max_open} connections held, {max_threads} threads, {max_rss} KiB"
    );
    assert!(max_threads < MAX_THREADS, "{max_threads} threads");
    assert!(
        max_open <= PER_IP,
        "{max_open} connections held at once; max_connections_per_ip is {PER_IP}"
    );

    // Every connection was refused at once (503), or held until its deadline: a trickled
    // head gets 408, an idle connection is closed without a word.
    let (mut refused, mut timed_out, mut closed) = (0, 0, 0);
    let mut outcomes = Vec::new();
    for (n, mut c) in idle {
        outcomes.push((n, false, read_until_closed(&mut c, Duration::from_secs(5))));
    }
    stop.store(true, Ordering::SeqCst);
    for t in tricklers {
        for (n, mut c) in t.join().expect("trickler") {
            outcomes.push((n, true, read_until_closed(&mut c, Duration::from_secs(5))));
        }
    }
    for (n, trickled, answer) in &outcomes {
        let text = String::from_utf8_lossy(answer);
        if text.starts_with("HTTP/1.1 503 ") {
            refused += 1;
        } else if *trickled && text.starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        } else if !*trickled && answer.is_empty() {
            closed += 1;
        } else {
            panic!("connection {n} (trickled: {trickled}) got {text:?}");
        }
    }
    println!("slowloris: {refused} refused at once, {timed_out} got 408, {closed} idle closed");
    assert!(
        timed_out > 0 && closed > 0 && refused >= 600 - 2 * PER_IP,
        "most connections beyond the per-IP cap are refused at once"
    );
    wait_until(
        Duration::from_secs(2),
        "every slot to be given back",
        || open_connections(gw.addr) == 1,
    );
    println!("slowloris: {} threads afterwards", gw.threads());
    after_each(&mut gw, &influx, &Expected::default());
}

// ---------------------------------------------------------------------------
// Without a token
// ---------------------------------------------------------------------------

/// The codes the HTTP layer and the router give before authentication is looked at.
const BEFORE_AUTH: &[&str] = &[
    "malformed_request",
    "unsupported_version",
    "head_too_large",
    "invalid_target",
    "transfer_encoding_unsupported",
    "invalid_content_length",
    "body_too_large",
    "expectation_failed",
    "head_timeout",
    "body_timeout",
    "not_found",
    "method_not_allowed",
];

#[test]
fn nothing_works_without_a_token() {
    let (influx, mut gw) = start("", "");
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
            if !BEFORE_AUTH.contains(&c.code) {
                (c.status, c.code) = (401, "unauthorized");
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
