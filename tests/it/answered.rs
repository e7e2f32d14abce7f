//! Answers sent by the thread that settles a request's record (the log's writer in
//! `delivery.acknowledge = "disk"` mode, the deliverer in `"influxdb"` mode) to clients on
//! kept-alive connections as k6, Telegraf, the client libraries and Locust keep them: writes
//! through each of InfluxDB's APIs, one after the other and pipelined, every point read back
//! from a real influxd; a run registered, then committed, found at once from another
//! connection; and, in `"influxdb"` mode, a refusal by InfluxDB answered as one, not as stored.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ConsumerToml, Gateway, Influxd, KeptAlive, RawResponse, get, wait_until};

const TOKEN: &str = "k6-token-0123456789abcdef";

/// A kept-alive connection to `addr`, whose sends and answers must work.
struct Kept(KeptAlive);

impl Kept {
    fn open(addr: SocketAddr) -> Kept {
        Kept(KeptAlive::open(addr).expect("connect"))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.send(bytes).expect("send");
    }

    fn answer(&mut self) -> RawResponse {
        self.0.answer().expect("an answer")
    }
}

/// A POST of `body` to `path`, kept alive, with the token.
fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Token {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A POST of the JSON `body` to the run route `path`, kept alive, without a token.
fn run_post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A gateway writing to `influx_url`, acknowledging as `acknowledge` says, with `influxdb`'s
/// lines added to `[influxdb]`, and the token [`TOKEN`] (named `k6`) that may write the
/// database `k6`.
fn with_token(influx_url: &str, acknowledge: &str, influxdb: &str) -> Gateway {
    Gateway::start(
        &ConsumerToml::new(influx_url, "runs")
            .influxdb(influxdb)
            .rest(&format!(
                "[delivery]\nacknowledge = \"{acknowledge}\"\n\
                 [auth]\n[[auth.token]]\nname = \"k6\"\ntoken = \"{TOKEN}\"\ndatabases = [\"k6\"]\n"
            ))
            .toml(),
    )
}

/// Each of the three APIs' write paths for the database `k6`, in nanoseconds.
const WRITE_PATHS: [&str; 3] = [
    "/write?db=k6&precision=ns",
    "/api/v2/write?bucket=k6&precision=ns",
    "/api/v3/write_lp?db=k6&precision=nanosecond",
];

/// Four connections write 150 single lines each, one after the other and through each API in
/// turn, then one connection pipelines 30 in one send: every write is answered 204, kept alive,
/// in order, and every point is in influxd.
#[test]
fn writes_on_kept_connections_are_answered_in_order_and_all_stored() {
    writes_answered_in_order("disk");
}

/// [`writes_on_kept_connections_are_answered_in_order_and_all_stored`], answered once influxd
/// stored each write.
#[test]
fn in_influxdb_mode_writes_on_kept_connections_are_answered_in_order_and_all_stored() {
    writes_answered_in_order("influxdb");
}

fn writes_answered_in_order(acknowledge: &str) {
    let influx = Influxd::start();
    let gw = with_token(&influx.url, acknowledge, "");
    let addr = gw.addr;
    let writers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut kept = Kept::open(addr);
                for i in 0..150_u64 {
                    let line = format!(
                        "http_reqs,conn=c{t} value={i}i {}\n",
                        1_700_000_000_000_000_000 + i
                    );
                    kept.send(&post(WRITE_PATHS[i as usize % 3], &line));
                    let answer = kept.answer();
                    assert_eq!(
                        answer.status, 204,
                        "write {i} of connection {t}: {}",
                        answer.body
                    );
                    assert_eq!(answer.header("connection"), None, "kept alive");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("a writer");
    }
    let mut kept = Kept::open(addr);
    let mut burst = Vec::new();
    for i in 0..30_u64 {
        let line = format!(
            "http_reqs,conn=burst value={i}i {}\n",
            1_700_000_000_000_000_000 + i
        );
        burst.extend(post(WRITE_PATHS[i as usize % 3], &line));
    }
    kept.send(&burst);
    for i in 0..30 {
        let answer = kept.answer();
        assert_eq!(answer.status, 204, "pipelined write {i}: {}", answer.body);
    }
    wait_until(Duration::from_secs(30), "every point in influxd", || {
        influx.series("k6", "http_reqs").len() >= 630
    });
    let rows = influx.series("k6", "http_reqs");
    assert_eq!(rows.len(), 630, "each point once");
    for conn in ["c0", "c1", "c2", "c3", "burst"] {
        let n = rows.iter().filter(|r| r["conn"] == conn).count();
        assert_eq!(n, if conn == "burst" { 30 } else { 150 }, "{conn}");
    }
}

/// A run registered on a kept-alive connection, given a progress there, is committed at once
/// from a new connection, and its result read at once from a third: each answer went only once
/// the job table showed it.
#[test]
fn a_run_answered_on_one_connection_is_found_at_once_on_another() {
    run_found_at_once("disk");
}

/// [`a_run_answered_on_one_connection_is_found_at_once_on_another`], answered once influxd
/// stored each record: every answer says so.
#[test]
fn in_influxdb_mode_a_run_answered_on_one_connection_is_found_at_once_on_another() {
    run_found_at_once("influxdb");
}

fn run_found_at_once(acknowledge: &str) {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!("[delivery]\nacknowledge = \"{acknowledge}\"\n"))
            .toml(),
    );
    let delivered = acknowledge == "influxdb";
    let mut kept = Kept::open(gw.addr);
    for i in 0..40 {
        kept.send(&register_request("lg"));
        let registered = kept.answer();
        assert_eq!(registered.status, 200, "register {i}: {}", registered.body);
        assert_eq!(
            registered.json()["delivered"],
            delivered,
            "{}",
            registered.body
        );
        let uuid = registered.json()["uuid"]
            .as_str()
            .expect("a uuid")
            .to_string();
        // A progress on the same connection, answered and kept alive.
        let progress = format!(
            r#"{{"uuid": "{uuid}", "measurement": {{"fields": {{"users": {}}}}}}}"#,
            i + 10
        );
        kept.send(&run_post("/apiv0.1/events/progress", &progress));
        let updated = kept.answer();
        assert_eq!(updated.status, 200, "progress {i}: {}", updated.body);
        assert_eq!(updated.json()["uuid"], Value::from(uuid.as_str()));
        assert_eq!(updated.header("connection"), None, "kept alive");
        let commit = format!(r#"{{"uuid": "{uuid}", "measurement": {{"fields": {{}}}}}}"#);
        let mut other = Kept::open(gw.addr);
        other.send(&run_post("/apiv0.1/events/commit", &commit));
        let committed = other.answer();
        assert_eq!(
            committed.status, 200,
            "commit {i} of {uuid}: {}",
            committed.body
        );
        assert_eq!(
            committed.json()["delivered"],
            delivered,
            "{}",
            committed.body
        );
        let run = get(gw.addr, &format!("/apiv0.1/runs/{uuid}"));
        assert_eq!(run.status, 200, "the result of {uuid}: {}", run.body);
        assert_eq!(
            run.json()["uuid"],
            Value::from(uuid.as_str()),
            "{}",
            run.body
        );
    }
}

/// In `"influxdb"` mode, on one kept-alive connection, with the gateway's own check of field
/// types off so that a conflict reaches influxd: a register and a write influxd refuses are
/// answered as refused (never as stored), and those before and after as stored; every answer
/// keeps the connection.
#[test]
fn in_influxdb_mode_a_refusal_by_influxdb_is_answered_as_one_on_a_kept_connection() {
    let influx = Influxd::start();
    let gw = with_token(&influx.url, "influxdb", "check_schema = false\n");
    let mut kept = Kept::open(gw.addr);
    let register = |fields: &str| {
        let body = format!(r#"{{"host": "lg", "measurement": {{"fields": {fields}}}}}"#);
        format!(
            "POST /apiv0.1/events/register HTTP/1.1\r\nHost: gw\r\nAuthorization: Token {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    for (fields, delivered) in [
        (r#"{"clients": 1}"#, true),
        (r#"{"clients": "many"}"#, false),
        (r#"{"clients": 2}"#, true),
    ] {
        kept.send(&register(fields));
        let answer = kept.answer();
        assert_eq!(answer.status, 200, "{fields}: {}", answer.body);
        assert_eq!(
            answer.json()["delivered"],
            delivered,
            "{fields}: {}",
            answer.body
        );
        assert_eq!(answer.header("connection"), None, "kept alive");
        if !delivered {
            let why = answer.json()["dead_letter"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(why.contains("conflict"), "{why}");
        }
    }
    for (i, (value, status)) in [("1i", 204), ("\"text\"", 400), ("2i", 204)]
        .into_iter()
        .enumerate()
    {
        let line = format!(
            "http_reqs,vu=1 value={value} {}\n",
            1_700_000_000_000_000_000u64 + i as u64
        );
        kept.send(&post(WRITE_PATHS[0], &line));
        let answer = kept.answer();
        assert_eq!(answer.status, status, "{line}: {}", answer.body);
        assert_eq!(answer.header("connection"), None, "kept alive");
    }
    let rows = influx.series("k6", "http_reqs");
    assert_eq!(rows.len(), 2, "the two stored, at once: {rows:?}");
}

/// In `"influxdb"` mode, six kept-alive connections write at once, a fifth of their lines of a
/// type influxd refuses, so that influxd gets writes that hold both and refuses them in part
/// (a partial write, which stores the good lines): every 204 means the point is in influxd
/// when the client reads it, and every refusal that it is not, and neither is ever the other.
#[test]
fn in_influxdb_mode_a_204_means_influxd_has_the_point_even_in_a_write_it_refused_in_part() {
    let influx = Influxd::start();
    let gw = with_token(&influx.url, "influxdb", "check_schema = false\n");
    let mut first = Kept::open(gw.addr);
    first.send(&post(WRITE_PATHS[0], "mixed,c=seed v=0.5 1\n"));
    assert_eq!(first.answer().status, 204, "the field's type set as float");
    let addr = gw.addr;
    let influx = &influx;
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..6_u64)
            .map(|t| {
                scope.spawn(move || {
                    let mut kept = Kept::open(addr);
                    let (mut stored, mut refused) = (0, 0);
                    for i in 0..25_u64 {
                        let ts = 1_700_000_000_000_000_000 + t * 1_000 + i;
                        let value = match i % 5 {
                            2 => "\"text\"".to_string(),
                            _ => format!("{i}.5"),
                        };
                        let line = format!("mixed,c=c{t} v={value} {ts}\n");
                        kept.send(&post(WRITE_PATHS[i as usize % 3], &line));
                        let answer = kept.answer();
                        assert_eq!(answer.header("connection"), None, "{line}: kept alive");
                        let found = influx.query_ns(
                            "k6",
                            &format!("SELECT v FROM mixed WHERE c = 'c{t}' AND time = {ts}"),
                        );
                        let rows = found["results"][0]["series"][0]["values"]
                            .as_array()
                            .map_or(0, Vec::len);
                        match answer.status {
                            204 => {
                                assert_ne!(i % 5, 2, "{line}: a refused line answered 204");
                                assert_eq!(
                                    rows, 1,
                                    "{line}: answered 204, not in influxd: {found}"
                                );
                                stored += 1;
                            }
                            400 => {
                                assert_eq!(i % 5, 2, "{line}: {}", answer.body);
                                assert!(answer.body.contains("dead letter"), "{}", answer.body);
                                assert_eq!(rows, 0, "{line}: refused, yet in influxd: {found}");
                                refused += 1;
                            }
                            other => panic!("{line}: answered {other}: {}", answer.body),
                        }
                    }
                    (stored, refused)
                })
            })
            .collect();
        for writer in writers {
            let (stored, refused) = writer.join().expect("a writer");
            assert_eq!((stored, refused), (20, 5));
        }
    });
}

/// A stand-in InfluxDB that takes 0 to 1.1 s to answer a write (`influxdb.timeout` is 1 s, so
/// some writes time out while others end just as a request's wait does), answers every seventh
/// one 503, and refuses any write holding the register of host `badhost`: registers on four
/// kept-alive connections, in `"influxdb"` mode. Each is answered once, in order, within the
/// bound; `"delivered": true` only after the stand-in answered 204 to a write holding that
/// run's register; `badhost` never delivered; and nothing more ever comes on a connection (no
/// answer the deliverer sent late, after the request's own thread answered).
#[test]
fn in_influxdb_mode_a_slow_and_failing_influxdb_never_gets_a_run_answered_stored_or_twice() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let stored: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (influx, _seen) = {
        let stored = Arc::clone(&stored);
        let writes = Arc::clone(&writes);
        crate::support::stand_in(move |seen| {
            let reply = |status: u16, body: &str| {
                format!(
                    "HTTP/1.1 {status} X\r\nX-Influxdb-Version: 1.8.10\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            if !seen.request_line.starts_with("POST /write") {
                return reply(200, r#"{"results":[{"statement_id":0}]}"#);
            }
            let n = writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(n * 397 % 1100));
            if seen.body.contains("started on badhost") {
                return reply(400, r#"{"error":"field type conflict: badhost"}"#);
            }
            if n % 7 == 3 {
                return reply(503, r#"{"error":"busy"}"#);
            }
            stored
                .lock()
                .unwrap()
                .push((Instant::now(), seen.body.clone()));
            reply(204, "")
        })
    };
    let gw = Gateway::start(
        &ConsumerToml::new(&format!("http://{influx}"), "runs")
            .influxdb("timeout = \"1s\"\ncheck_schema = false\n")
            .rest("[delivery]\nacknowledge = \"influxdb\"\n")
            .toml(),
    );
    let addr = gw.addr;
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let stored = Arc::clone(&stored);
            std::thread::spawn(move || {
                let mut kept = Kept::open(addr);
                let mut delivered = 0;
                for i in 0..20 {
                    let host = if i % 4 == 1 {
                        "badhost".to_string()
                    } else {
                        format!("lg{t}")
                    };
                    let sent = Instant::now();
                    kept.send(&register_request(&host));
                    let answer = kept.answer();
                    let at = Instant::now();
                    assert_eq!(answer.status, 200, "{t}/{i}: {}", answer.body);
                    // Within the bound (1 s, twice at most when the deliverer took the answer
                    // just as it passed), with room for a busy machine: a request left
                    // waiting would take far longer.
                    assert!(
                        at - sent < Duration::from_secs(6),
                        "{t}/{i}: answered after {:?}",
                        at - sent
                    );
                    let json = answer.json();
                    let uuid = json["uuid"].as_str().expect("a uuid").to_string();
                    if json["delivered"] == true {
                        assert_ne!(host, "badhost", "{t}/{i}: {}", answer.body);
                        let line = format!("started on {host} (run {uuid})");
                        let before = stored
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|(when, body)| *when < at && body.contains(&line));
                        assert!(before, "{t}/{i}: delivered, never stored: {}", answer.body);
                        delivered += 1;
                    }
                }
                // Nothing more comes: no answer sent late on this connection.
                kept.0
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("a read timeout");
                match kept.0.answer() {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::UnexpectedEof
                        ) => {}
                    other => panic!("{t}: something more came: {other:?}"),
                }
                delivered
            })
        })
        .collect();
    let delivered: usize = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .sum();
    assert!(delivered > 0, "some registers answered as stored");
}

/// A register of host `host`, kept alive.
fn register_request(host: &str) -> Vec<u8> {
    let body = format!(r#"{{"host": "{host}", "measurement": {{"fields": {{"users": 5}}}}}}"#);
    run_post("/apiv0.1/events/register", &body)
}

/// In `"influxdb"` mode, against a stand-in that takes 400 ms to store each write, with answers
/// left to the deliverer: a request sent while the one before it waits for InfluxDB is answered
/// after it, each once; a client that closes while its answer waits leaves the gateway as it
/// was; and a SIGTERM while requests wait answers each of them once (then closes) and stops.
#[test]
fn in_influxdb_mode_a_request_behind_a_waiting_one_a_client_gone_and_a_stop_are_answered_once() {
    let (influx, _seen) = crate::support::stand_in(|seen| {
        let (status, body) = match seen.request_line.starts_with("POST /write") {
            true => {
                std::thread::sleep(Duration::from_millis(400));
                (204, "")
            }
            false => (200, r#"{"results":[{"statement_id":0}]}"#),
        };
        format!(
            "HTTP/1.1 {status} X\r\nX-Influxdb-Version: 1.8.10\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    let mut gw = Gateway::start(
        &ConsumerToml::new(&format!("http://{influx}"), "runs")
            .influxdb("timeout = \"5s\"\n")
            .rest("[delivery]\nacknowledge = \"influxdb\"\n")
            .toml(),
    );
    // The runs registered so far, by the gateway's log: each record on disk, its answer
    // waiting for the stand-in.
    let registered = |n: usize| {
        wait_until(Duration::from_secs(30), "registered", || {
            gw.log().matches("registered").count() >= n
        })
    };
    // One sent while the one before waits for InfluxDB.
    let mut kept = Kept::open(gw.addr);
    kept.send(&register_request("first"));
    registered(1);
    kept.send(&register_request("second"));
    let (a, b) = (kept.answer(), kept.answer());
    for answer in [&a, &b] {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["delivered"], true, "{}", answer.body);
    }
    assert_ne!(a.json()["uuid"], b.json()["uuid"]);
    // A client gone while its answer waits.
    {
        let mut gone = Kept::open(gw.addr);
        gone.send(&register_request("gone"));
        registered(3);
    }
    kept.send(&register_request("after"));
    let after = kept.answer();
    assert_eq!(after.json()["delivered"], true, "{}", after.body);
    // A stop while three wait.
    let mut waiting: Vec<Kept> = (0..3).map(|_| Kept::open(gw.addr)).collect();
    for (i, kept) in waiting.iter_mut().enumerate() {
        kept.send(&register_request(&format!("stopping{i}")));
    }
    registered(7);
    gw.terminate();
    for (i, kept) in waiting.iter_mut().enumerate() {
        let answer = kept.answer();
        assert_eq!(answer.status, 200, "{i}: {}", answer.body);
        assert!(answer.json()["delivered"].is_boolean(), "{}", answer.body);
        match kept.0.answer() {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            other => panic!("{i}: after its answer, not the connection's end: {other:?}"),
        }
    }
    let status = gw.wait_exit(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{}", gw.log());
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
    assert_eq!(gw.log().matches("registered").count(), 7, "{}", gw.log());
}

/// In `"influxdb"` mode, on kept-alive connections, influxd stopped while the gateway thinks
/// it up: a register and a write whose answers were left to the deliverer are answered at
/// once by their own threads, as recorded and not delivered (`"delivered": false`; the write
/// API's 204, which says no more), never left to wait out `influxdb.timeout`; once influxd is
/// back, both reach it.
#[test]
fn in_influxdb_mode_influxd_gone_answers_the_waiting_requests_at_once_as_not_delivered() {
    let mut influx = Influxd::start();
    let gw = with_token(&influx.url, "influxdb", "timeout = \"8s\"\n");
    let register_request = |host: &str| {
        let plain = String::from_utf8(register_request(host)).expect("text");
        let auth = format!("Host: gw\r\nAuthorization: Token {TOKEN}\r\n");
        plain.replacen("Host: gw\r\n", &auth, 1).into_bytes()
    };
    let mut kept = Kept::open(gw.addr);
    kept.send(&post(WRITE_PATHS[0], "gone,c=a v=1i 1\n"));
    assert_eq!(kept.answer().status, 204);
    kept.send(&register_request("before"));
    assert_eq!(kept.answer().json()["delivered"], true);
    influx.stop();
    let sent = std::time::Instant::now();
    kept.send(&register_request("while-gone"));
    let registered = kept.answer();
    assert_eq!(registered.json()["delivered"], false, "{}", registered.body);
    let uuid = registered.json()["uuid"]
        .as_str()
        .expect("a uuid")
        .to_string();
    kept.send(&post(WRITE_PATHS[1], "gone,c=b v=2i 2\n"));
    let written = kept.answer();
    assert_eq!(written.status, 204, "{}", written.body);
    // Well within `influxdb.timeout` (8 s), with room for a busy machine.
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "answered after {:?}",
        sent.elapsed()
    );
    influx.restart();
    wait_until(Duration::from_secs(60), "both in influxd", || {
        influx.series("k6", "gone").len() == 2
            && influx
                .series("runs", "load_testing_events")
                .iter()
                .any(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid.as_str()))
    });
}
