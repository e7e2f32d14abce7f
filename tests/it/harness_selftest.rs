//! Tests of the shared test harness in `support`: the throwaway InfluxDB,
//! the child-process handle (driven here by a stand-in shell script, so these
//! tests hold whatever state the gateway itself is in), the raw HTTP client,
//! source-address binding, temporary directories, the config builder and headless Chromium
//! (screenshots, the DOM, and how it answers a Basic challenge with a URL's credentials).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::support::{
    ConsumerToml, Gateway, Influxd, TempDir, connect_from, parse_listening, request, send_raw,
    try_send_raw, urlencode, wait_until,
};

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn influxd_stores_points_keeps_them_across_restart_and_dies_on_drop() {
    let mut influxd = Influxd::start();
    assert!(
        influxd.url.starts_with("http://127.0.0.1:"),
        "url {}",
        influxd.url
    );
    assert_eq!(influxd.url, format!("http://{}", influxd.addr()));

    // A missing database reads as empty, so tests can poll before it exists.
    assert_eq!(influxd.count("selftest", "m"), 0);
    assert!(influxd.measurements("selftest").is_empty());

    influxd.create_database("selftest");
    assert_eq!(
        influxd.count("selftest", "m"),
        0,
        "missing measurement reads as empty"
    );

    // The write goes through the raw client, as the gateway's own requests would.
    let lines = "m,host=a value=1i,text=\"x\" 1700000000000\n\
                 m,host=b value=2i 1700000001000\n\
                 other v=1 1700000002000\n";
    let resp = request(
        influxd.addr(),
        "POST",
        "/write?db=selftest&precision=ms",
        &[],
        Some(lines),
    );
    assert_eq!(
        resp.status, 204,
        "write answered {}: {}",
        resp.status, resp.body
    );
    influxd.write("selftest", "m,host=c value=3i 1700000003000");

    assert_eq!(influxd.count("selftest", "m"), 3);
    let rows = influxd.series("selftest", "m");
    assert_eq!(
        rows[0]["time"],
        json!(1_700_000_000_000i64),
        "epoch=ms gives integer ms"
    );
    assert_eq!(rows[0]["host"], json!("a"));
    assert_eq!(rows[0]["value"], json!(1));
    assert_eq!(rows[0]["text"], json!("x"));
    assert!(
        !rows[1].contains_key("text"),
        "null columns are left out: {:?}",
        rows[1]
    );
    assert_eq!(rows[2]["host"], json!("c"));
    let mut measurements = influxd.measurements("selftest");
    measurements.sort();
    assert_eq!(measurements, ["m", "other"]);

    let first_pid = influxd.pid().expect("running");
    influxd.stop();
    assert!(influxd.pid().is_none());
    assert!(!pid_exists(first_pid), "stop reaps influxd");
    assert!(
        TcpStream::connect_timeout(&influxd.addr(), Duration::from_secs(1)).is_err(),
        "the HTTP port is closed while stopped"
    );

    let url = influxd.url.clone();
    influxd.restart();
    assert_eq!(influxd.url, url, "restart keeps the ports");
    assert!(influxd.is_running());
    assert_eq!(influxd.count("selftest", "m"), 3, "data survives a restart");
    assert_eq!(influxd.count("selftest", "other"), 1);

    let pid = influxd.pid().expect("running again");
    assert_ne!(pid, first_pid);
    let dir = influxd.dir.path().to_path_buf();
    assert!(dir.join("influxd.log").is_file());
    drop(influxd);
    assert!(!pid_exists(pid), "drop kills and reaps influxd");
    assert!(!dir.exists(), "drop removes the temp dir");
}

#[test]
fn two_influxd_instances_run_side_by_side() {
    let a = Influxd::start();
    let b = Influxd::start();
    assert_ne!(a.url, b.url);
    a.create_database("only_a");
    a.write("only_a", "m v=1 1700000000000");
    assert_eq!(a.count("only_a", "m"), 1);
    assert_eq!(b.count("only_a", "m"), 0, "instances share nothing");
}

#[test]
fn influxd_exec_panics_on_statement_errors() {
    let influxd = Influxd::start();
    // InfluxDB answers 200 with the error inside the JSON, which `query` leaves
    // to the caller and `exec` turns into a panic.
    let answer = influxd.query("missing", "SELECT * FROM m");
    assert!(answer["results"][0]["error"].is_string(), "{answer}");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        influxd.exec("missing", "SELECT * FROM m");
    }));
    let message = outcome.expect_err("exec must panic on a statement error");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("database not found"), "{message}");
}

/// A stand-in for the gateway: prints its arguments and a `listening on` line,
/// then idles until SIGTERM. `probe` makes it exit at once (see `stand_in`).
const STAND_IN: &str = r#"#!/bin/sh
[ "$1" = probe ] && exit 0
echo "stand-in args: $*" >&2
echo "stand-in stdout line"
echo "2025-01-01T00:00:00Z INFO  listening on http://127.0.0.1:4321 (pid $$)" >&2
trap 'echo "stand-in got TERM" >&2; exit 0' TERM
while :; do sleep 0.05; done
"#;

const FAILING_STAND_IN: &str = r#"#!/bin/sh
[ "$1" = probe ] && exit 0
echo "error: bad config: listen is not an address" >&2
exit 2
"#;

/// Writes `script` as an executable file and runs it once with `probe`.
///
/// Exec of a freshly written file can fail with ETXTBSY ("text file busy")
/// while a child forked by another test thread still holds the write handle;
/// once one probe has run, no writer is left, so later spawns are safe.
fn stand_in(dir: &TempDir, name: &str, script: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the stand-in script can be executed",
        || {
            match std::process::Command::new(&path).arg("probe").status() {
                Ok(status) => status.success(),
                Err(e) if e.raw_os_error() == Some(26) => false, // ETXTBSY
                Err(e) => panic!("cannot run {}: {e}", path.display()),
            }
        },
    );
    path
}

#[test]
fn gateway_handle_follows_a_stand_in_through_term_restart_kill_and_drop() {
    let scripts = TempDir::new("stand-in");
    let program = stand_in(&scripts, "stand-in.sh", STAND_IN);

    let mut gw = Gateway::try_start_program(&program, TempDir::new("gateway"), "# test config\n")
        .unwrap_or_else(|log| panic!("stand-in did not start:\n{log}"));
    assert_eq!(gw.addr, "127.0.0.1:4321".parse::<SocketAddr>().unwrap());
    let config_path = gw.dir.join("consumer.toml");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        "# test config\n"
    );
    wait_until(
        Duration::from_secs(5),
        "both streams are in the log",
        || gw.log().contains("stand-in stdout line"),
    );
    assert!(
        gw.log().contains(&format!(
            "stand-in args: --config {}",
            config_path.display()
        )),
        "log: {}",
        gw.log()
    );

    assert!(gw.is_alive());
    assert!(gw.threads() >= 1);
    assert!(gw.rss_kib() > 0);
    assert!(gw.open_fds() >= 3);

    gw.terminate();
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "the TERM trap exits 0: {status}");
    assert!(!gw.is_alive());
    wait_until(
        Duration::from_secs(5),
        "the TERM trap's line is logged",
        || gw.log().contains("stand-in got TERM"),
    );

    let first_pid = gw.pid();
    gw.restart();
    assert_ne!(gw.pid(), first_pid);
    assert!(gw.is_alive());
    let log = gw.log();
    assert!(log.contains("----- restart -----"), "log: {log}");
    assert_eq!(log.matches("stand-in args:").count(), 2, "log: {log}");

    gw.kill();
    assert!(!gw.is_alive());
    assert!(gw.wait_exit(Duration::ZERO).is_some());

    // A restart of a running process stops it first.
    gw.restart();
    let running_pid = gw.pid();
    gw.restart();
    assert!(!pid_exists(running_pid), "restart stops the old process");

    let pid = gw.pid();
    let dir = gw.dir.path().to_path_buf();
    drop(gw);
    assert!(!pid_exists(pid), "drop kills and reaps the process");
    assert!(!dir.exists(), "drop removes the temp dir");
}

#[test]
fn gateway_try_start_returns_the_log_of_a_process_that_exits() {
    let scripts = TempDir::new("stand-in");
    let program = stand_in(&scripts, "failing.sh", FAILING_STAND_IN);
    let err = match Gateway::try_start_program(&program, TempDir::new("gateway"), "") {
        Ok(gw) => panic!("a failing stand-in started, listening on {}", gw.addr),
        Err(log) => log,
    };
    assert!(
        err.contains("bad config: listen is not an address"),
        "log: {err}"
    );
    assert!(err.contains("exited"), "log: {err}");
}

#[test]
fn gateway_command_clears_consumer_variables() {
    let dir = TempDir::new("command");
    let cmd = Gateway::command(dir.path());
    let removed: Vec<String> = cmd
        .get_envs()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for name in [
        "CONSUMER_INFLUXDB_PASSWORD",
        "CONSUMER_INFLUXDB_TOKEN",
        "CONSUMER_AUTH_TOKENS",
    ] {
        assert!(
            removed.iter().any(|r| r == name),
            "{name} not removed: {removed:?}"
        );
    }
    assert_eq!(cmd.get_current_dir(), Some(dir.path()));
}

#[test]
fn parse_listening_accepts_the_usual_forms() {
    let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
    assert_eq!(
        parse_listening("INFO listening on http://127.0.0.1:3000"),
        addr("127.0.0.1:3000")
    );
    assert_eq!(
        parse_listening("a\nINFO listening on http://127.0.0.1:3000/ (4 workers)\n"),
        addr("127.0.0.1:3000")
    );
    assert_eq!(
        parse_listening("listening on https://[::1]:8443."),
        addr("[::1]:8443")
    );
    assert_eq!(parse_listening("listening on http://localhost:3000"), None);
    assert_eq!(parse_listening("starting"), None);
}

/// Serves canned responses, one connection each, chosen by request path; `/echo`
/// answers with the request it received (head and Content-Length body).
fn canned_server(connections: usize) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        for _ in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |n| n.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            let answer = match path.as_str() {
                "/length" => {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Mixed-Case: Yes\r\n\r\nhello"
                        .to_string()
                }
                "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                               4;ext=1\r\nwiki\r\n6\r\npedia!\r\n0\r\nTrailer: x\r\n\r\n"
                    .to_string(),
                "/continue" => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\
                                Content-Length: 2\r\n\r\nok"
                    .to_string(),
                "/until-close" => "HTTP/1.1 200 OK\r\n\r\nall of it".to_string(),
                "/head" => "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_string(),
                "/echo" => {
                    let echoed = format!("{head}\r\n{}", String::from_utf8_lossy(&body));
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{echoed}",
                        echoed.len()
                    )
                }
                _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
            };
            let mut stream = stream;
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (addr, handle)
}

#[test]
fn raw_client_reads_every_body_framing() {
    let (addr, server) = canned_server(7);

    let resp = request(addr, "GET", "/length", &[], None);
    assert_eq!(
        (resp.status, resp.reason.as_str(), resp.body.as_str()),
        (200, "OK", "hello")
    );
    assert_eq!(resp.header("x-mixed-case"), Some("Yes"));
    assert_eq!(resp.header("X-MIXED-CASE"), Some("Yes"));
    assert!(
        resp.headers.iter().any(|(n, _)| n == "x-mixed-case"),
        "names are lowercased"
    );

    assert_eq!(
        request(addr, "GET", "/chunked", &[], None).body,
        "wikipedia!"
    );

    let resp = request(addr, "POST", "/continue", &[], Some("{}"));
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (201, "ok"),
        "1xx responses are skipped"
    );

    assert_eq!(
        request(addr, "GET", "/until-close", &[], None).body,
        "all of it"
    );

    let resp = send_raw(addr, b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, ""),
        "HEAD has no body"
    );

    let resp = request(
        addr,
        "PUT",
        "/echo",
        &[
            ("Authorization", "Bearer t"),
            ("Content-Type", "text/plain"),
        ],
        Some("body"),
    );
    let echoed = resp.body;
    assert!(echoed.starts_with("PUT /echo HTTP/1.1\r\n"), "{echoed}");
    assert!(
        echoed.contains(&format!("\r\nHost: {addr}\r\n")),
        "{echoed}"
    );
    assert!(
        echoed.contains("\r\nAuthorization: Bearer t\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("\r\nConnection: close\r\n"), "{echoed}");
    assert!(echoed.contains("\r\nContent-Length: 4\r\n"), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\nbody"), "{echoed}");

    let resp = crate::support::post_json(addr, "/echo", &json!({"a": 1}));
    assert!(
        resp.body.contains("Content-Type: application/json"),
        "{}",
        resp.body
    );
    assert!(resp.body.ends_with(r#"{"a":1}"#), "{}", resp.body);

    server.join().unwrap();
}

#[test]
fn raw_client_reports_a_closed_connection_as_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0; 64];
        let _ = stream.read(&mut buf);
        // Dropped without an answer.
    });
    let err = try_send_raw(addr, b"GARBAGE\r\n\r\n").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    server.join().unwrap();
}

#[test]
fn connect_from_uses_the_given_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let _client = connect_from(src, addr);
    let (_server_side, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), src);
}

#[test]
fn urlencode_keeps_only_rfc_3986_unreserved_characters() {
    let unreserved = "azAZ09-._~";
    assert_eq!(urlencode(unreserved), unreserved);
    assert_eq!(
        urlencode("a b&c=d/e?f+g%h#i\"j'k\u{e9}"),
        "a%20b%26c%3Dd%2Fe%3Ff%2Bg%25h%23i%22j%27k%C3%A9"
    );
}

#[test]
fn temp_dirs_are_unique_and_removed_on_drop() {
    let a = TempDir::new("selftest");
    let b = TempDir::new("selftest");
    assert_ne!(a.path(), b.path());
    assert!(a.path().is_dir() && a.path().starts_with(std::env::temp_dir()));
    std::fs::write(a.join("file"), "x").unwrap();
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists());
}

#[test]
fn the_config_builder_produces_the_documented_tables() {
    let text = ConsumerToml::new("http://127.0.0.1:1234", "db \"quoted\"")
        .rest("max_spool_bytes = 4096\n[jobs]\nmax_running = 2")
        .toml();
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(
        table["influxdb"]["url"].as_str(),
        Some("http://127.0.0.1:1234")
    );
    assert_eq!(
        table["influxdb"]["database"].as_str(),
        Some("db \"quoted\"")
    );
    assert_eq!(table["storage"]["dir"].as_str(), Some("./data"));
    assert_eq!(
        table["storage"]["max_spool_bytes"].as_integer(),
        Some(4096),
        "leading lines of rest belong to [storage]"
    );
    assert_eq!(table["jobs"]["max_running"].as_integer(), Some(2));

    let text = ConsumerToml::new("http://127.0.0.1:1234", "db")
        .server("workers = 2\nmax_connections = 8")
        .influxdb("username = \"u\"")
        .rest("[limits]\nmax_stats_rows = 5\n")
        .toml();
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(table["server"]["workers"].as_integer(), Some(2));
    assert_eq!(table["server"]["max_connections"].as_integer(), Some(8));
    assert_eq!(table["influxdb"]["username"].as_str(), Some("u"));
    assert_eq!(table["limits"]["max_stats_rows"].as_integer(), Some(5));
    assert_eq!(table["delivery"]["acknowledge"].as_str(), Some("influxdb"));
    let own_mode = ConsumerToml::new("http://127.0.0.1:1234", "db")
        .rest("[delivery]\nacknowledge = \"disk\"\n")
        .toml();
    let table: toml::Table =
        toml::from_str(&own_mode).unwrap_or_else(|e| panic!("{e}\n{own_mode}"));
    assert_eq!(table["delivery"]["acknowledge"].as_str(), Some("disk"));
}

/// A page server for the browser's self-tests: answers every request on its own thread with
/// `PAGE`, or, when `challenge` is given, 401 until the request carries `Authorization` (the
/// 401 with the `WWW-Authenticate` headers `challenge` names). Records each request's path and
/// Authorization header. Stops (and joins) when dropped.
struct PageServer {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Each request's path and Authorization header, in order.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Two blocks of known colours and size, and a mark to find in the DOM.
const PAGE: &str = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>\
    body{margin:0;background:#fff}#a{height:200px;background:#cf222e}#b{height:100px;background:#0969da}\
    </style></head><body><div id=\"a\"></div><div id=\"b\"></div><p id=\"mark\">seen by the browser</p></body></html>";

impl PageServer {
    fn start(challenge: Option<&'static [&'static str]>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                let seen = seen2.clone();
                // A thread a connection: a browser may open one it sends nothing on.
                thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push_str(&line),
                        }
                    }
                    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                    let auth = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_string())
                    });
                    seen.lock().unwrap().push((path, auth.clone()));
                    let answer = match challenge {
                        Some(schemes) if auth.is_none() => {
                            let headers: String = schemes
                                .iter()
                                .map(|s| format!("WWW-Authenticate: {s}\r\n"))
                                .collect();
                            format!(
                                "HTTP/1.1 401 Unauthorized\r\n{headers}Content-Type: text/plain\r\n\
                                 Content-Length: 8\r\nConnection: close\r\n\r\nno token"
                            )
                        }
                        _ => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                            PAGE.len()
                        ),
                    };
                    let mut stream = stream;
                    let _ = stream.write_all(answer.as_bytes());
                });
            }
        });
        PageServer {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests of `path` so far, as their Authorization headers.
    fn auth_of(&self, path: &str) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn chromium_screenshots_decode_to_the_colours_the_page_painted() {
    use crate::support::browser::{dump_dom, hex, screenshot};
    let server = PageServer::start(None);
    let url = format!("http://{}/page", server.addr);
    let shot = screenshot(&url, 400, 500);
    assert_eq!((shot.width, shot.height), (400, 500));
    assert!(shot.png.starts_with(b"\x89PNG"));
    let (red, blue) = (hex("#cf222e"), hex("#0969da"));
    // Full rows of each block, where the page put them, and nowhere else.
    assert_eq!(shot.rows_of(red, 4, 400), Some((0, 199)));
    assert_eq!(shot.rows_of(blue, 4, 400), Some((200, 299)));
    assert_eq!(shot.count_close(red, 4), 400 * 200);
    assert_eq!(shot.count_close_in(shot.rows(0, 100), blue, 4), 0);
    assert_eq!(shot.pixel(10, 450), [255, 255, 255]);
    let dom = dump_dom(&url);
    assert!(
        dom.contains("<p id=\"mark\">seen by the browser</p>"),
        "{dom}"
    );
}

/// How a person's browser authenticates to the gateway: a URL's `user:TOKEN@` is sent by
/// Chromium for a top-level page only in answer to a 401 that offers Basic (beside Bearer, as
/// the gateway's 401 does), never up front and never without the challenge.
#[test]
fn chromium_sends_url_credentials_only_in_answer_to_a_basic_challenge() {
    use crate::support::browser::dump_dom;
    let challenged = PageServer::start(Some(&[
        "Bearer realm=\"metrics-consumer\"",
        "Basic realm=\"metrics-consumer\"",
    ]));
    let dom = dump_dom(&format!("http://:s3cret@{}/page", challenged.addr));
    assert!(dom.contains("seen by the browser"), "{dom}");
    assert_eq!(
        challenged.auth_of("/page"),
        vec![None, Some(crate::auth::basic("", "s3cret"))]
    );

    let silent = PageServer::start(Some(&[]));
    let dom = dump_dom(&format!("http://:s3cret@{}/page", silent.addr));
    assert!(
        dom.contains("no token") && !dom.contains("seen by the browser"),
        "{dom}"
    );
    assert_eq!(silent.auth_of("/page"), vec![None]);
}

/// The tests' reader of answers refuses a framing a client may not guess at (RFC 9112, section
/// 6.3), so that a gateway sending one fails the test that reads it; and reads a control byte
/// in a field value, which httparse refuses (influxd quotes a refused line's NUL in
/// `X-Influxdb-Error`), as `?`.
#[test]
fn the_answer_reader_refuses_ambiguous_framing_and_reads_a_control_byte_as_a_question_mark() {
    for head in [
        "Content-Length: +2",
        "Content-Length: 2\r\nContent-Length: 3",
        "Content-Length: 2\r\nTransfer-Encoding: chunked",
        "Content-Length: 99999999999999",
    ] {
        let input = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\nhi");
        let read = crate::support::read_response(&mut input.as_bytes(), false);
        assert_eq!(
            read.map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidData),
            "{head:?}"
        );
    }
    let input =
        "HTTP/1.1 400 Bad Request\r\nX-Influxdb-Error: line\0 1\r\nContent-Length: 2\r\n\r\nno";
    let read = crate::support::read_response(&mut input.as_bytes(), false).expect("read");
    assert_eq!((read.status, read.body.as_str()), (400, "no"));
    assert_eq!(read.header("x-influxdb-error"), Some("line? 1"));
}
