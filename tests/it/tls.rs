//! HTTPS through the real binary: a certificate made with the `openssl` command, real
//! clients (`curl`, and a rustls client where the test must control every byte on the
//! wire), hostile handshakes, and the start-up errors for a bad certificate or key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{
    ConsumerToml, Gateway, Influxd, TempDir, read_response, try_request, wait_until,
};

const PING: &str = "/apiv0.1/ping";
const PONG: &str = r#"{"res":"PONG!"}"#;
/// Nothing listens on the discard port: ping needs no InfluxDB.
const NO_INFLUX: &str = "http://127.0.0.1:9";

/// Writes a self-signed certificate for localhost and 127.0.0.1 into `dir` as
/// `cert.pem` and `key.pem`, with the openssl command. It is marked as no CA
/// certificate: rustls clients refuse a CA certificate as a server's own, while curl
/// takes either.
pub(crate) fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run openssl ({e}): install Debian's `openssl` package \
                 (apt-get install openssl) or run scripts/test.sh, which installs it"
            )
        });
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `[server]` lines for HTTPS with the files `self_signed` writes, plus `more`.
fn tls_server(more: &str) -> String {
    format!("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n{more}")
}

/// The gateway serving HTTPS with a fresh certificate, writing to `influx_url`.
fn start_https(influx_url: &str, server_extra: &str) -> Gateway {
    let dir = TempDir::new("gateway-tls");
    self_signed(dir.path());
    Gateway::start_in(
        dir,
        &ConsumerToml::new(influx_url, "runs")
            .server(&tls_server(server_extra))
            .toml(),
    )
}

/// Runs curl with `args` (5 s at most) and returns the HTTP status and the body.
fn curl(args: &[&str]) -> (u16, String) {
    let out: Output = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run curl ({e}): install Debian's `curl` package \
                 (apt-get install curl) or run scripts/test.sh, which installs it"
            )
        });
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let status = code.trim().parse().unwrap_or(0);
    (status, body.to_owned())
}

fn curl_ping(gw: &Gateway, host: &str) -> (u16, String) {
    let cacert = gw.dir.join("cert.pem");
    let url = format!("https://{host}:{}{PING}", gw.addr.port());
    curl(&["--cacert", &cacert.to_string_lossy(), &url])
}

/// Whether the server closes `stream` within `within`: true when a read sees the end of
/// the stream or a reset. Bytes the server sends (a TLS alert, session tickets) are
/// read and ignored. `each` runs between reads, e.g. to send one more byte.
fn closed_within(stream: &mut TcpStream, within: Duration, mut each: impl FnMut()) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set read timeout");
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        each();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A rustls client that trusts `cert` and offers `alpn`.
pub(crate) fn tls_client(cert: &Path, alpn: &[&[u8]]) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).expect("open cert.pem") {
        roots
            .add(der.expect("parse cert.pem"))
            .expect("trust cert.pem");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from("localhost").expect("server name");
    rustls::ClientConnection::new(Arc::new(config), name).expect("client connection")
}

/// Connects and completes the handshake (5 s timeouts).
fn handshake(addr: SocketAddr, conn: &mut rustls::ClientConnection) -> std::io::Result<TcpStream> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(sock)
}

#[test]
fn curl_pings_over_https_and_the_log_says_https() {
    let gw = start_https(NO_INFLUX, "");
    assert!(
        gw.log()
            .contains(&format!("listening on https://{}", gw.addr)),
        "{}",
        gw.log()
    );
    assert_eq!(curl_ping(&gw, "127.0.0.1"), (200, PONG.to_owned()));
    assert_eq!(curl_ping(&gw, "localhost"), (200, PONG.to_owned()));
}

#[test]
fn a_register_over_https_lands_in_influxdb() {
    let influx = Influxd::start();
    let gw = start_https(&influx.url, "");
    let cacert = gw.dir.join("cert.pem");
    let url = format!(
        "https://localhost:{}/apiv0.1/events/register",
        gw.addr.port()
    );
    let (status, body) = curl(&["--cacert", &cacert.to_string_lossy(), "-d", "{}", &url]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(influx.count("runs", "load_testing_events"), 1);
    assert_eq!(influx.count("runs", "load_testing"), 1);
}

#[test]
fn only_http_1_1_is_offered_over_alpn() {
    let gw = start_https(NO_INFLUX, "");
    let cert = gw.dir.join("cert.pem");

    let mut conn = tls_client(&cert, &[b"h2", b"http/1.1"]);
    let mut sock = handshake(gw.addr, &mut conn).expect("handshake");
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    stream
        .write_all(b"GET /apiv0.1/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(PONG), "{answer}");

    // A client that speaks only HTTP/2 finds no protocol in common.
    let mut h2_only = tls_client(&cert, &[b"h2"]);
    assert!(handshake(gw.addr, &mut h2_only).is_err());
    assert_eq!(curl_ping(&gw, "127.0.0.1").0, 200);
}

#[test]
fn plain_http_on_the_https_port_gets_no_http_answer() {
    let mut gw = start_https(NO_INFLUX, "");
    for _ in 0..3 {
        let answer = try_request(gw.addr, "GET", PING, &[], None);
        assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
    }
    assert!(gw.is_alive());
    assert_eq!(curl_ping(&gw, "127.0.0.1"), (200, PONG.to_owned()));
}

#[test]
fn stalled_handshakes_are_closed_and_block_no_one() {
    let timeout = Duration::from_secs(2);
    let mut gw = start_https(NO_INFLUX, "header_timeout = \"2s\"");
    let opened = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(gw.addr).expect("connect"))
        .collect();

    let started = Instant::now();
    assert_eq!(curl_ping(&gw, "127.0.0.1"), (200, PONG.to_owned()));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "ping took {took:?} beside 20 stalled handshakes"
    );
    assert!(
        opened.elapsed() < timeout,
        "the stalled connections were still open during the ping"
    );

    for (i, stream) in stalled.iter_mut().enumerate() {
        assert!(
            closed_within(stream, timeout + Duration::from_secs(3), || {}),
            "stalled connection {i} still open after {:?}",
            opened.elapsed()
        );
    }
    assert!(
        opened.elapsed() >= timeout - Duration::from_millis(300),
        "stalled connections were closed after {:?}, before header_timeout",
        opened.elapsed()
    );
    assert!(gw.is_alive());
}

#[test]
fn a_trickled_handshake_gets_no_more_than_header_timeout() {
    let gw = start_https(NO_INFLUX, "header_timeout = \"1s\"");
    let mut stream = TcpStream::connect(gw.addr).expect("connect");
    // The header of a TLS handshake record announcing 16 KiB, then its body one byte
    // every 50 ms: each read brings progress, and only the deadline can stop it.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x40, 0x00])
        .expect("send a record header");
    let started = Instant::now();
    let mut writer = stream.try_clone().expect("clone the socket");
    let closed = closed_within(&mut stream, Duration::from_secs(4), || {
        let _ = writer.write_all(&[0x01]);
    });
    let took = started.elapsed();
    assert!(closed, "a trickled handshake was still open after {took:?}");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
}

#[test]
fn a_trickled_request_gets_no_more_than_its_timeouts() {
    let gw = start_https(NO_INFLUX, "header_timeout = \"1s\"\nidle_timeout = \"1s\"");
    let mut conn = tls_client(&gw.dir.join("cert.pem"), &[b"http/1.1"]);
    let mut sock = handshake(gw.addr, &mut conn).expect("handshake");
    // One whole request, encrypted, then sent a byte every 50 ms: about 100 bytes, so
    // five seconds for all of it, while the server waits at most a second for it.
    conn.writer()
        .write_all(b"GET /apiv0.1/ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("encrypt the request");
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).expect("take the records");
    }
    let mut writer = sock.try_clone().expect("clone the socket");
    let mut bytes = wire.into_iter();
    let started = Instant::now();
    let closed = closed_within(&mut sock, Duration::from_secs(4), || {
        if let Some(b) = bytes.next() {
            let _ = writer.write_all(&[b]);
        }
    });
    let took = started.elapsed();
    assert!(closed, "a trickled request was still open after {took:?}");
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    assert!(bytes.next().is_some(), "the whole request was sent in time");
}

#[test]
fn a_stalled_handshake_gives_its_slot_to_a_new_connection() {
    // A deadline long enough for curl's own handshake on a busy machine, and far beyond the
    // second the stalled one may take to give way.
    let gw = start_https(
        NO_INFLUX,
        "header_timeout = \"10s\"\nworkers = 1\nmax_connections = 1",
    );
    // The first connection takes the only slot (connections are accepted in order) and
    // stalls; the next one takes its slot, and it is closed long before the 10 s deadline.
    let mut holder = TcpStream::connect(gw.addr).expect("connect");
    assert_eq!(curl_ping(&gw, "127.0.0.1"), (200, PONG.to_owned()));
    assert!(
        closed_within(&mut holder, Duration::from_secs(1), || {}),
        "the stalled handshake kept its slot"
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once_when_none_can_give_way() {
    const TOKEN: &str = "tls-test-token-0123456789";
    let dir = TempDir::new("gateway-tls");
    let (cert, _) = self_signed(dir.path());
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(NO_INFLUX, "runs")
            .server(&tls_server(
                "header_timeout = \"2s\"\nworkers = 1\nmax_connections = 1",
            ))
            .rest(&format!("[auth]\ntokens = [\"{TOKEN}\"]\n"))
            .toml(),
    );
    // The only slot is held by a kept-alive connection whose request carried the token.
    let mut conn = tls_client(&cert, &[b"http/1.1"]);
    let sock = handshake(gw.addr, &mut conn).expect("handshake");
    let mut holder = std::io::BufReader::new(rustls::StreamOwned::new(conn, sock));
    let request = format!(
        "GET /apiv0.1/events/isrunning HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    holder
        .get_mut()
        .write_all(request.as_bytes())
        .expect("send the request");
    let answer = read_response(&mut holder, false).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.body);

    let mut refused = TcpStream::connect(gw.addr).expect("connect");
    assert!(
        closed_within(&mut refused, Duration::from_secs(1), || {}),
        "a connection over the cap was left waiting"
    );
    wait_until(Duration::from_secs(5), "the refusal is logged", || {
        gw.log().contains(" - - 503 0 ")
    });
    // The holder is still served.
    holder
        .get_mut()
        .write_all(request.as_bytes())
        .expect("send the request again");
    let again = read_response(&mut holder, false).expect("an answer");
    assert_eq!(again.status, 200, "{}", again.body);
}

/// Runs the binary with `consumer.toml` from `dir` and the extra `args`; it must exit.
fn run_in(dir: &TempDir, config: &str, args: &[&str]) -> Output {
    let file = dir.join("consumer.toml");
    std::fs::write(&file, config).expect("write consumer.toml");
    let file = file.to_string_lossy().into_owned();
    let mut all = vec!["--config", file.as_str()];
    all.extend_from_slice(args);
    Gateway::spawn_with(&all, None)
}

fn https_config(cert: &str, key: &str) -> String {
    ConsumerToml::new(NO_INFLUX, "runs")
        .server(&format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\""))
        .toml()
}

#[test]
fn a_bad_certificate_or_key_stops_the_start() {
    let dir = TempDir::new("tls-errors");
    let (cert, _) = self_signed(dir.path());
    let other = TempDir::new("tls-other");
    self_signed(other.path());
    std::fs::copy(other.join("key.pem"), dir.join("other-key.pem")).expect("copy the key");
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").expect("write");

    let cases = [
        (
            https_config("missing.pem", "key.pem"),
            format!(
                "server.tls_cert: {}: cannot read",
                dir.join("missing.pem").display()
            ),
        ),
        (
            https_config("garbage.pem", "key.pem"),
            format!(
                "server.tls_cert: {}: no certificate found in the PEM file",
                dir.join("garbage.pem").display()
            ),
        ),
        (
            https_config("cert.pem", "garbage.pem"),
            format!(
                "server.tls_key: {}: no private key found in the PEM file",
                dir.join("garbage.pem").display()
            ),
        ),
        (
            https_config("cert.pem", "other-key.pem"),
            format!(
                "server.tls_key: {}: the private key does not match the certificate in {}",
                dir.join("other-key.pem").display(),
                cert.display()
            ),
        ),
    ];
    for (config, expected) in &cases {
        for args in [&[][..], &["--check-config"][..]] {
            let out = run_in(&dir, config, args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            // The configuration file first: the keys are set there.
            let file = dir.join("consumer.toml");
            assert!(
                err.starts_with(&format!("metrics-consumer: {}: {expected}", file.display())),
                "{args:?}: {err:?} should say {expected:?}"
            );
        }
    }
    // The good pair passes the check.
    let out = run_in(
        &dir,
        &https_config("cert.pem", "key.pem"),
        &["--check-config"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
