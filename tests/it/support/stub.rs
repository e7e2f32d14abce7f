//! A loopback stand-in for InfluxDB, for the answers a real `influxd` here cannot give on
//! demand (a 5xx, InfluxDB 2 and 3's APIs, a proxy's page) or the requests it cannot show
//! (credentials): it reads each request whole and answers what the test says.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;

/// One request as the stand-in saw it.
pub struct Seen {
    pub request_line: String,
    /// Names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Listens on loopback: `GET /ping` is answered 204, as InfluxDB answers the gateway's
/// probes; every other request `answer(&request)`, a whole HTTP response. Every request, the
/// probes too, goes to the receiver (dropping it is fine).
pub fn stand_in(
    answer: impl Fn(&Seen) -> String + Send + Sync + 'static,
) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    let (tx, rx) = mpsc::channel();
    let answer = std::sync::Arc::new(answer);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (tx, answer) = (tx.clone(), std::sync::Arc::clone(&answer));
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone the socket"));
                let mut conn = conn;
                while let Some(seen) = read_request(&mut reader) {
                    let reply = if seen.request_line.starts_with("GET /ping ") {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                    } else {
                        answer(&seen)
                    };
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    let _ = tx.send(seen);
                }
            });
        }
    });
    (addr, rx)
}

/// The next request on a connection, its body read by `Content-Length`; `None` once the
/// client closes or sends something else than HTTP.
fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        request_line: request_line.trim_end().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
