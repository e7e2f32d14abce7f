//! The stream a connection is served over, and the choice between plain TCP and TLS:
//! the `Transport` trait with its implementations for `TcpStream` and `TlsStream`, and
//! `serve_tcp`, which prepares an accepted socket on its connection thread, completes
//! the TLS handshake when the server speaks HTTPS, and hands the stream to the
//! connection loop.
//!
//! It reads and writes no HTTP itself. It must never let a handshake outlast
//! `header_timeout` or miss shutdown, never log anything a client sent (a failed
//! handshake is described in the fixed words of `tls::describe_failure`), and never
//! give a connection's slot back before its socket is closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::accept::Conn;
use super::caps::Activity;
use super::conn::{ConnContext, serve_connection};
use super::deadline::{SHUTDOWN_POLL, is_retryable, remaining};
use super::tls::{self, TlsStream};

/// The stream a connection is served over: a `TcpStream`, or a `TlsStream` over one.
///
/// Reads and writes may fail with `WouldBlock` or `TimedOut` when the socket timeout
/// set before them expires, and a `TlsStream` also when one socket operation brought
/// no complete record; callers retry until their own deadline. `flush` may need
/// several calls for the same reason.
pub(super) trait Transport: Read + Write {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()>;
}

/// A shared socket: the connection table holds it too, to shut it down on eviction.
impl Transport for &TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

impl Transport for TlsStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }
    /// Closing the write side first tells the client, with `close_notify`, that the
    /// response ended there and was not cut off.
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.send_close_notify();
        }
        self.socket().shutdown(how)
    }
}

pub(super) fn serve_tcp(conn: Conn, ctx: &ConnContext) {
    let Conn { stream, peer, slot } = conn;
    // Accepted sockets are blocking on the platforms std supports today, but the
    // deadlines below rely on it, so say so explicitly.
    if let Err(e) = stream.set_nonblocking(false) {
        log::debug!("could not configure an accepted socket: {e}");
        return;
    }
    // Responses go out in one write, but a 100 Continue followed by the response
    // would otherwise wait on Nagle's algorithm.
    let _ = stream.set_nodelay(true);

    let activity = slot.activity();
    match &ctx.tls {
        None => {
            let mut socket: &TcpStream = &stream;
            serve_connection(&mut socket, peer, activity, ctx);
            drop(stream);
        }
        Some(config) => serve_tls(stream, peer, Arc::clone(config), activity, ctx),
    }
    // The socket is closed before its slot is given back (the table holds it only weakly),
    // so the open count never reads lower than the number of sockets actually open; except
    // after an eviction, whose slot went to the new connection at once, while this thread
    // was still on its way here.
    drop(slot);
}

/// Completes the TLS handshake, then serves HTTP over the encrypted stream. Runs on
/// the connection's own thread, so a slow or silent client delays no one else.
///
/// A failed handshake is not an HTTP exchange: no response can be sent, so nothing is
/// reported to `Handler::completed` (no access-log line, no status counted). It is
/// logged at debug level in fixed words; nothing the client sent is logged.
fn serve_tls(
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    activity: &Activity,
    ctx: &ConnContext,
) {
    let mut stream = match TlsStream::new(config, stream) {
        Ok(stream) => stream,
        Err(e) => {
            log::warn!("cannot start a TLS connection: {e}");
            return;
        }
    };
    match handshake(&mut stream, ctx) {
        Ok(true) => serve_connection(&mut stream, peer, activity, ctx),
        Ok(false) => {}
        // The table closed it to admit another, and said so.
        Err(_) if activity.is_evicted() => {}
        Err(e) => log::debug!(
            "TLS handshake with {peer} failed: {}",
            tls::describe_failure(&e)
        ),
    }
}

/// Drives the handshake to completion within `header_timeout`, counted from when the
/// connection thread takes the connection. It goes one socket operation at a time and
/// checks the deadline between them, so that a client trickling its hello byte by byte
/// gets no more time than one that sends nothing. False when the server began to stop
/// before the handshake was done.
fn handshake(stream: &mut TlsStream, ctx: &ConnContext) -> io::Result<bool> {
    let deadline = Instant::now() + ctx.limits.header_timeout;
    loop {
        if ctx.shutdown.is_stopping() {
            return Ok(false);
        }
        let Some(left) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        // Waiting in short slices lets a stalled handshake notice shutdown promptly. A
        // step may read or write, so both directions get the same bound.
        let slice = Some(left.min(SHUTDOWN_POLL));
        stream.set_read_timeout(slice)?;
        stream.set_write_timeout(slice)?;
        match stream.handshake_step() {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) if is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::deadline::write_all_before;
    use rustls::pki_types::pem::PemObject;
    use std::net::TcpListener;
    use std::thread;

    /// A TLS connection over loopback: the server's `TlsStream` with the handshake done,
    /// and the client's socket and rustls connection.
    fn tls_pair(dir: &tls::testing::Dir) -> (TlsStream, TcpStream, rustls::ClientConnection) {
        let (cert, key) = dir.self_signed("server");
        let config = tls::load(&cert, &key).expect("load the pair");
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).expect("read cert");
        roots.add(der).expect("trust the certificate");
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client_sock =
            TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_sock, _) = listener.accept().expect("accept");
        let mut server = TlsStream::new(config, server_sock).expect("server connection");
        // Both sides step in turns on this thread; short timeouts stand for "nothing yet".
        let tick = Some(Duration::from_millis(20));
        server.set_read_timeout(tick).expect("timeout");
        client_sock.set_read_timeout(tick).expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut server_done = false;
        while !server_done || client.is_handshaking() {
            assert!(Instant::now() < deadline, "the handshake did not finish");
            if !server_done {
                match server.handshake_step() {
                    Ok(done) => server_done = done,
                    Err(e) if is_retryable(&e) => {}
                    Err(e) => panic!("server handshake: {e}"),
                }
            }
            match client.complete_io(&mut client_sock) {
                Ok(_) => {}
                Err(e) if is_retryable(&e) => {}
                Err(e) => panic!("client handshake: {e}"),
            }
        }
        (server, client_sock, client)
    }

    #[test]
    fn tls_responses_larger_than_the_tls_buffer_arrive_whole() {
        let dir = tls::testing::Dir::new("server-large");
        let (mut server, client_sock, client) = tls_pair(&dir);
        // Four times rustls's 64 KiB buffer, so writing has to wait for room.
        let body: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        let reader = thread::spawn(move || {
            let mut stream = rustls::StreamOwned::new(client, client_sock);
            stream
                .sock
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let result = stream.read_to_end(&mut got);
            (result.map(drop), got)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        write_all_before(&mut server, &body, deadline).expect("the whole response is written");
        server.shutdown(Shutdown::Both).expect("close");
        let (result, got) = reader.join().expect("reader thread");
        assert!(result.is_ok(), "the client saw close_notify: {result:?}");
        assert!(got == body, "{} bytes arrived of {}", got.len(), body.len());
    }

    #[test]
    fn a_tls_client_that_does_not_read_meets_the_write_deadline() {
        let dir = tls::testing::Dir::new("server-stalled");
        let (mut server, _client_sock, _client) = tls_pair(&dir);
        // Far more than loopback socket buffers hold, and the client never reads.
        let body = vec![b'x'; 64 * 1024 * 1024];
        let started = Instant::now();
        let limit = Duration::from_millis(500);
        let result = write_all_before(&mut server, &body, started + limit);
        let took = started.elapsed();
        assert!(
            result.is_err(),
            "64 MiB went to a client that reads nothing"
        );
        assert!(
            took < limit + Duration::from_millis(500),
            "the write took {took:?} with a deadline of {limit:?}"
        );
    }
}
