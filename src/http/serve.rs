//! A connection's thread, from the accepted socket to the connection loop: `serve_tcp`
//! prepares the socket, completes the TLS handshake when the server speaks HTTPS, and
//! hands the stream to `conn::serve_connection`.
//!
//! It reads and writes no HTTP itself. It must never let a handshake outlast
//! `header_timeout` or miss shutdown, never log anything a client sent (a failed
//! handshake is described in the fixed words of `tls::describe_failure`), and never
//! give a connection's slot back before its socket is closed.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;

use super::accept::Conn;
use super::caps::Activity;
use super::conn::{ConnContext, serve_connection};
use super::deadline::{SHUTDOWN_POLL, is_retryable, remaining};
use super::tls::{self, TlsStream};
use super::transport::Transport;

/// Serves one accepted connection to its end, on the calling (pooled) thread.
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
            serve_connection(&mut socket, Some(&stream), peer, activity, ctx);
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
        Ok(true) => {
            serve_connection(&mut stream, None, peer, activity, ctx);
        }
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
