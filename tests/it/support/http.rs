//! A raw HTTP/1.1 client: well-formed requests, or any bytes at all for the hostile tests, and
//! the one response read back whatever its framing; a kept-alive connection, as k6, the client
//! libraries and Locust keep theirs; plus a client socket bound to a chosen loopback source
//! address.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Connect, read and write limit of the raw HTTP client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// In order of arrival, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Decoded from chunked encoding when needed; invalid UTF-8 is replaced.
    pub body: String,
}

impl RawResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with status and body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }
}

/// Connects (5 s timeouts), writes `bytes` as they are and reads one response.
/// A failed write is not final: a server may answer early (413, 431) and close
/// while the rest is still being sent, so the response is read anyway.
pub fn try_send_raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let written = stream.write_all(bytes).and_then(|()| stream.flush());
    let head_request = bytes.starts_with(b"HEAD ");
    match read_response(&mut BufReader::new(&stream), head_request) {
        Ok(resp) => Ok(resp),
        Err(read_err) => Err(match written {
            Err(write_err) => io::Error::new(
                write_err.kind(),
                format!("write failed ({write_err}), then no response ({read_err})"),
            ),
            Ok(()) => read_err,
        }),
    }
}

/// `try_send_raw` that panics, naming the address, when no response arrives.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    try_send_raw(addr, bytes).unwrap_or_else(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        panic!("no HTTP response from {addr} to {shown:?}: {e}")
    })
}

/// Most header fields of a response `read_response` takes.
const MAX_FIELDS: usize = 100;

/// Most bytes of a response head, and of one line of a chunked body's framing, so that a
/// misbehaving server cannot grow either without bound.
const MAX_LINE: u64 = 64 * 1024;

/// Reads one response from `reader`: its head, parsed by `httparse`, then a body framed
/// by Content-Length, chunked encoding or the end of the stream. Interim 1xx
/// responses are skipped. `head_request` means no body follows whatever the
/// headers say. Usable on a kept-alive connection for a second response.
pub fn read_response(reader: &mut impl BufRead, head_request: bool) -> io::Result<RawResponse> {
    loop {
        let mut resp = read_head(reader)?;
        let status = resp.status;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if head_request || status == 204 || status == 304 || status == 101 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let body = if let Some(length) = content_length(&resp, chunked)? {
            let mut body = Vec::new();
            reader.take(length).read_to_end(&mut body)?;
            if body.len() as u64 != length {
                return Err(bad(
                    io::ErrorKind::UnexpectedEof,
                    &format!("{} of {length} body bytes before the end", body.len()),
                ));
            }
            body
        } else if chunked {
            read_chunked(reader)?
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        };
        resp.body = String::from_utf8_lossy(&body).into_owned();
        return Ok(resp);
    }
}

/// The most body bytes a response's `Content-Length` may announce here: a server's answer is
/// at most a few MiB, and a larger number is taken for the mistake it would be.
const MAX_BODY: u64 = 1 << 30;

/// The body length a response's framing gives, checked as RFC 9112 (section 6.3) asks of a
/// client: `Content-Length` is digits alone, the same value if repeated, never beside
/// `Transfer-Encoding: chunked`; `None` without it.
fn content_length(resp: &RawResponse, chunked: bool) -> io::Result<Option<u64>> {
    let values: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(name, _)| name == "content-length")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    let Some(first) = values.first() else {
        return Ok(None);
    };
    let framing = |why: &str| bad(io::ErrorKind::InvalidData, &format!("{why}: {values:?}"));
    if chunked {
        return Err(framing("Content-Length beside Transfer-Encoding: chunked"));
    }
    if values.iter().any(|v| v != first) {
        return Err(framing("Content-Lengths that differ"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(framing("a Content-Length that is not digits"));
    }
    match first.parse::<u64>() {
        Ok(length) if length <= MAX_BODY => Ok(Some(length)),
        _ => Err(framing("a Content-Length past 1 GiB")),
    }
}

/// A response's head, line by line until `httparse` finds it whole; the body is left empty.
fn read_head(reader: &mut impl BufRead) -> io::Result<RawResponse> {
    let mut raw = Vec::new();
    loop {
        let room = MAX_LINE.saturating_sub(raw.len() as u64);
        if room == 0 {
            return Err(bad(io::ErrorKind::InvalidData, "response head too long"));
        }
        if reader.take(room).read_until(b'\n', &mut raw)? == 0 {
            let message = if raw.is_empty() {
                "connection closed before a response"
            } else {
                "connection closed inside the headers"
            };
            return Err(bad(io::ErrorKind::UnexpectedEof, message));
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut head = httparse::Response::new(&mut fields);
        // influxd's `X-Influxdb-Error` quotes a refused line as it came, a NUL byte too, which
        // httparse refuses in a field value: such a byte is read as `?`.
        let shown: Vec<u8> = raw
            .iter()
            .map(|&b| match b {
                b'\t' | b'\r' | b'\n' => b,
                0..0x20 | 0x7f => b'?',
                _ => b,
            })
            .collect();
        match head.parse(&shown) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(RawResponse {
                    status: head.code.unwrap_or_default(),
                    reason: head.reason.unwrap_or_default().to_string(),
                    headers: head
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value);
                            (h.name.to_ascii_lowercase(), value.trim().to_string())
                        })
                        .collect(),
                    body: String::new(),
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                let shown = String::from_utf8_lossy(&raw);
                return Err(bad(
                    io::ErrorKind::InvalidData,
                    &format!("bad response head ({e}): {shown:?}"),
                ));
            }
        }
    }
}

fn bad(kind: io::ErrorKind, message: &str) -> io::Error {
    io::Error::new(kind, message.to_string())
}

/// One line of a chunked body's framing, its line end included; None at EOF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(bad(io::ErrorKind::InvalidData, "line too long or cut off"));
    }
    Ok(Some(line))
}

/// A chunked body, decoded: each chunk's size line read by `httparse::parse_chunk_size`, the
/// trailer fields, if any, skipped up to the blank line.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| {
            bad(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunked body",
            )
        })?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => usize::try_from(size).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            bad(
                io::ErrorKind::InvalidData,
                &format!("bad chunk size {:?}", String::from_utf8_lossy(&line)),
            )
        })?;
        if size == 0 {
            while let Some(trailer) = read_line(reader)? {
                if trailer == b"\r\n" || trailer == b"\n" {
                    break;
                }
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if read_line(reader)?.is_none_or(|rest| rest != b"\r\n" && rest != b"\n") {
            return Err(bad(
                io::ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
    }
}

/// Sends a well-formed HTTP/1.1 request with `Host`, `Connection: close` and,
/// when there is a body, `Content-Length` (each unless `headers` has it).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> io::Result<RawResponse> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    if let Some(body) = body
        && !has("content-length")
        && !has("transfer-encoding")
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    try_send_raw(addr, req.as_bytes())
}

/// `try_request` that panics when no response arrives.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> RawResponse {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: no response: {e}"))
}

/// A register that must succeed (no token); returns the run's uuid.
pub fn register(addr: SocketAddr, body: &Value) -> String {
    let answer = post_json(addr, "/apiv0.1/events/register", body);
    assert_eq!(answer.status, 200, "register {body}: {}", answer.body);
    answer.json()["uuid"]
        .as_str()
        .expect("register answers a uuid")
        .to_string()
}

/// POSTs `value` as `application/json`.
pub fn post_json(addr: SocketAddr, path: &str, value: &Value) -> RawResponse {
    let body = serde_json::to_string(value).expect("a JSON value always serializes");
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&body),
    )
}

/// `GET /apiv0.1/states` with `token` as a Bearer token: the state page as JSON.
pub fn states(addr: SocketAddr, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    request(
        addr,
        "GET",
        "/apiv0.1/states",
        &[("Authorization", &auth)],
        None,
    )
    .json()
}

pub fn get(addr: SocketAddr, path: &str) -> RawResponse {
    request(addr, "GET", path, &[], None)
}

/// A TCP connection to `addr` from `src_ip` (any port), e.g. from 127.0.0.2 to
/// test per-client-IP limits: all of 127.0.0.0/8 reaches loopback on Linux.
/// 5 s connect, read and write timeouts.
pub fn connect_from(src_ip: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .expect("create a TCP socket");
    let local = SocketAddr::new(src_ip, 0);
    socket
        .bind(&local.into())
        .unwrap_or_else(|e| panic!("cannot bind a client socket to {local}: {e}"));
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect from {src_ip} to {addr}: {e}"));
    let stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set write timeout");
    stream
}

/// Every byte but RFC 3986's unreserved characters (letters, digits, `-`, `.`, `_`, `~`): the
/// set the gateway encodes InfluxDB's query values with.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters; good for both
/// query-string values and `application/x-www-form-urlencoded` bodies.
pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED_KEPT).to_string()
}

/// A kept-alive connection: requests written without `Connection: close`, answers read in
/// order (what a gateway in disk mode may answer from the thread that writes its log).
pub struct KeptAlive {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl KeptAlive {
    /// Connects to `addr`; reads wait 30 s at most.
    pub fn open(addr: SocketAddr) -> io::Result<KeptAlive> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(KeptAlive { stream, reader })
    }

    /// Reads wait `limit` at most from now on (`None`: forever).
    pub fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(limit)
    }

    /// Writes `bytes` as they are (one request, several, or part of one).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next answer.
    pub fn answer(&mut self) -> io::Result<RawResponse> {
        read_response(&mut self.reader, false)
    }

    /// `POST path` with `headers` and `body` (its `Content-Length` added), and its answer.
    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> io::Result<RawResponse> {
        let mut req = format!("POST {path} HTTP/1.1\r\nHost: gateway\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(req.as_bytes())?;
        self.answer()
    }
}
