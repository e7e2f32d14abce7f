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
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[delivery]\nacknowledge = \"{acknowledge}\"\n\
                 [auth]\n[[auth.token]]\nname = \"k6\"\ntoken = \"{TOKEN}\"\ndatabases = [\"k6\"]\n"
            ))
            .toml(),
    );
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

/// A run registered on a kept-alive connection is committed at once from a new connection, and
/// its result read at once from a third: each answer went only once the job table showed it.
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
        let body = r#"{"host": "lg", "measurement": {"fields": {"users": 5}}}"#;
        kept.send(
            format!(
                "POST /apiv0.1/events/register HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
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
        let commit = format!(r#"{{"uuid": "{uuid}", "measurement": {{"fields": {{}}}}}}"#);
        let mut other = Kept::open(gw.addr);
        other.send(
            format!(
                "POST /apiv0.1/events/commit HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{commit}",
                commit.len()
            )
            .as_bytes(),
        );
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
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest(&format!(
                "[delivery]\nacknowledge = \"influxdb\"\n\
                 [auth]\n[[auth.token]]\nname = \"k6\"\ntoken = \"{TOKEN}\"\ndatabases = [\"k6\"]\n"
            ))
            .toml(),
    );
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
