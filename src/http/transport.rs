//! The stream a connection is served over: the `Transport` trait with its
//! implementations for `TcpStream` and `TlsStream`.
//!
//! It reads and writes no HTTP itself, and knows nothing of connections, deadlines or
//! the server: the connection loop and `deadline` are written against it, `serve` picks
//! the implementation.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use super::tls::TlsStream;

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

    /// One step of `flush`, for a caller that tells when the client takes bytes: hands the
    /// socket some of what the stream still holds of what was written. `Ok(true)` once the
    /// socket has all of it; `Ok(false)` when the socket took some in this step and more is
    /// held (the client is taking what the socket had: call again). Fails as `flush` does,
    /// with `WouldBlock` or `TimedOut` when the socket took nothing before its timeout. The default (a stream that
    /// holds nothing, like a `TcpStream`): `flush`, done in one step.
    fn flush_step(&mut self) -> io::Result<bool> {
        self.flush().map(|()| true)
    }
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
    fn flush_step(&mut self) -> io::Result<bool> {
        TlsStream::flush_step(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::deadline::{is_retryable, write_all_before};
    use crate::http::tls;
    use rustls::pki_types::pem::PemObject;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

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

    /// A flush step tells the socket taking records from the socket taking none: with the
    /// client reading nothing and the socket full, every step fails as a timeout (never "some
    /// moved", which would keep a stalled client's connection looking alive); once the client
    /// reads, steps move records until none is held, and every byte arrives.
    #[test]
    fn a_tls_flush_step_moves_records_only_when_the_client_takes_them() {
        let dir = tls::testing::Dir::new("server-steps");
        let (mut server, client_sock, client) = tls_pair(&dir);
        server
            .set_write_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(20);
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        // Until rustls' buffer is full and the socket took nothing of it in its timeout (a
        // refused write alone may only mean rustls' buffer is full).
        loop {
            assert!(Instant::now() < deadline, "the socket never filled");
            match server.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if is_retryable(&e) => match server.flush_step() {
                    Err(e) if is_retryable(&e) => break,
                    Ok(_) => {}
                    Err(e) => panic!("flush step: {e}"),
                },
                Err(e) => panic!("write: {e}"),
            }
        }
        for _ in 0..5 {
            match server.flush_step() {
                Err(e) if is_retryable(&e) => {}
                other => panic!("a step while the client reads nothing: {other:?}"),
            }
        }
        let reader = thread::spawn(move || {
            let mut stream = rustls::StreamOwned::new(client, client_sock);
            stream
                .sock
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut got = Vec::new();
            let result = stream.read_to_end(&mut got);
            (result.map(drop), got.len())
        });
        loop {
            assert!(Instant::now() < deadline, "the held records never went");
            match server.flush_step() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if is_retryable(&e) => {}
                Err(e) => panic!("flush step: {e}"),
            }
        }
        server.shutdown(Shutdown::Both).expect("close");
        let (result, got) = reader.join().expect("reader thread");
        assert!(result.is_ok(), "the client saw close_notify: {result:?}");
        assert_eq!(got, written, "every byte written arrived");
    }
}
