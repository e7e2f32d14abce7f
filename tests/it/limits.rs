//! The HTTP layer's limits, through the real binary: hostile requests are answered with a 4xx
//! or a 503, and the server keeps answering ping within a second.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{ConsumerToml, Gateway, Influxd, connect_from, get, send_raw};

/// Ping answers 200 within a second, on a fresh connection from 127.0.0.1.
fn assert_ping_within_a_second(addr: SocketAddr) {
    let start = Instant::now();
    let ping = get(addr, "/apiv0.1/ping");
    let took = start.elapsed();
    assert_eq!(ping.status, 200, "{}", ping.body);
    assert!(took < Duration::from_secs(1), "ping took {took:?}");
}

#[test]
fn absurd_content_length_is_413_before_any_body_byte() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let answer = send_raw(
        gw.addr,
        b"POST /apiv0.1/events/register HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000000000000000\r\n\r\n",
    );
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], "body_too_large");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("server.max_body_bytes")
    );
    assert_ping_within_a_second(gw.addr);
    let mut gw = gw;
    assert!(gw.is_alive());
}

#[test]
fn a_one_mib_header_line_is_431() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /apiv0.1/ping HTTP/1.1\r\nX-Big: ")
        .unwrap();
    // The server may answer and close before all of it is sent; that is the point.
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..16 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert_ping_within_a_second(gw.addr);
    let rss = gw.rss_kib();
    assert!(rss < 64 * 1024, "resident memory stays small: {rss} KiB");
}

#[test]
fn six_hundred_idle_connections_do_not_block_ping() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .server("idle_timeout = \"30s\"\nheader_timeout = \"30s\"\n")
            .toml(),
    );
    let other = IpAddr::from([127, 0, 0, 2]);
    let idle: Vec<TcpStream> = (0..600).map(|_| connect_from(other, gw.addr)).collect();
    // The last connections' answers are the sign that the accept loop saw all of them: the ones
    // past the per-IP cap get 503 and are closed.
    let mut refused = 0;
    for mut s in idle.iter().rev().take(10) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 503") {
            refused += 1;
            // The answer names the limit that was reached.
            assert!(answer.contains("server.max_connections_per_ip"), "{answer}");
        }
    }
    assert_ping_within_a_second(gw.addr);
    let threads = gw.threads();
    assert!(
        threads < 200,
        "threads stay bounded by the per-IP cap: {threads}"
    );
    drop(idle);
    assert_eq!(
        refused, 10,
        "connections over server.max_connections_per_ip get 503 at once"
    );
}

#[test]
fn a_transfer_coding_other_than_chunked_is_refused() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let answer = send_raw(
        gw.addr,
        b"POST /apiv0.1/events/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    );
    assert_eq!(answer.status, 411);
    assert!(influx.measurements("runs").is_empty());
    assert_ping_within_a_second(gw.addr);
}

#[test]
fn body_limit_comes_from_the_configuration() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .server("max_body_bytes = 100\n")
            .toml(),
    );
    let body = format!("{{\"host\": \"{}\"}}", "x".repeat(100));
    let answer = crate::support::request(
        gw.addr,
        "POST",
        "/apiv0.1/events/register",
        &[],
        Some(&body),
    );
    assert_eq!(answer.status, 413);
    assert!(
        answer.json()["error"].as_str().unwrap().contains("100"),
        "{}",
        answer.body
    );
    let small =
        crate::support::request(gw.addr, "POST", "/apiv0.1/events/register", &[], Some("{}"));
    assert_eq!(small.status, 200, "{}", small.body);
}

/// A connection refused because every slot is taken, and none can give way, is told which
/// limit it met: `server.max_connections`, not the cap per address.
#[test]
fn the_503_at_the_global_cap_names_server_max_connections() {
    let influx = Influxd::start();
    let token = "limits-test-token-0123456789";
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .server("max_connections = 1\nworkers = 1\nidle_timeout = \"10s\"\n")
            .rest(&format!("[auth]\ntokens = [\"{token}\"]\n"))
            .toml(),
    );
    // The only slot, kept alive by a client whose requests carry the token: it never gives way.
    let mut kept = TcpStream::connect(gw.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        kept,
        "GET /apiv0.1/events/isrunning HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let first = crate::support::read_response(&mut std::io::BufReader::new(&kept), false).unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let answer = get(gw.addr, "/apiv0.1/ping");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.json()["code"], "too_many_connections");
    let message = answer.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.contains("server.max_connections") && !message.contains("per_ip"),
        "{message}"
    );
}
