//! Hostile input against the real binary over loopback, with a real throwaway `influxd` behind
//! it, one module per kind: malformed and ambiguous framing (`framing`: Content-Length,
//! Transfer-Encoding, smuggling), oversized and stalled heads and bodies (`heads_and_bodies`),
//! protocol garbage and odd targets (`garbage`), gzip bombs and other hostile compressed bodies
//! (`encoding`), pathological JSON (`json`), every rule for tag
//! and field names and values sent over HTTP (`names`), hostile commit data (`commit_data`),
//! slowloris from a second address (`slowloris`) and from nine at once, clients that never read
//! their answers and a token holder on every slot (`fairness`), bodies held in memory
//! (`bodies_in_flight`), floods of the log (`log_flood`), and the framing tables again without a
//! token (`no_token`). Each test sends its inputs, checks the exact answer (or that the connection
//! was closed), then checks with `after_each` that the process is alive, answers ping within a
//! second, keeps its threads and memory bounded, and that InfluxDB holds exactly the series the
//! test meant to write: no injected point, no smuggled run, ever.
//!
//! The gateway runs with tokens, and requests carry the valid one, so that hostile input gets
//! past authentication and reaches the parser and the handlers.
//!
//! This module holds what they share: starting the gateway, building raw requests, sending a
//! table of cases and checking each answer, and the checks after each batch.

mod bodies_in_flight;
mod commit_data;
mod encoding;
mod fairness;
mod framing;
mod garbage;
mod heads_and_bodies;
mod json;
mod log_flood;
mod names;
mod no_token;
mod slowloris;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::support::{
    ConsumerToml, Gateway, Influxd, RawResponse, TempDir, read_response, request,
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
    start_with_env(server, rest, &[])
}

/// `start` with `env` added to the gateway's environment (`CONSUMER_AUTH_*`, say: `rest` comes
/// after `[auth]` and cannot add to it).
fn start_with_env(
    server: &str,
    rest: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let mut server = server.to_string();
    if !server.contains("header_timeout") {
        server.push_str("\nheader_timeout = \"1s\"\n");
    }
    let rest =
        format!("[auth]\ntokens = [\"{TOKEN}\"]\n[jobs]\nheartbeat_interval = \"1h\"\n{rest}");
    let config = ConsumerToml::new(&influx.url, DB)
        .server(&server)
        .rest(&rest)
        .toml();
    let gw = Gateway::start_in_with_env(TempDir::new("hostile"), &config, env);
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
    after_each_with_threads(gw, influx, expected, MAX_THREADS);
}

/// `after_each` for a batch that filled every connection slot: the pool keeps a thread per
/// connection it served for 30 s after, so up to `max_threads` are no leak.
fn after_each_with_threads(
    gw: &mut Gateway,
    influx: &Influxd,
    expected: &Expected,
    max_threads: u64,
) {
    assert!(gw.is_alive(), "the gateway died; its log:\n{}", gw.log());
    let took = ping_within_a_second(gw.addr);
    let threads = gw.threads();
    let rss = gw.rss_kib();
    let peak = peak_rss_kib(gw);
    let fds = gw.open_fds();
    println!(
        "after hostile input: ping {took:?}, {threads} threads, RSS {rss} KiB (peak {peak} KiB), {fds} open fds"
    );
    assert!(threads < max_threads, "{threads} threads");
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
