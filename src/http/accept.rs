//! The accept loop: taking connections off the listener, giving each one a slot under
//! the connection caps (the table may close the connection making the least progress to free
//! one, see `caps`) and handing it to the pool, and refusing with a 503 the ones that get no
//! slot or that the pool cannot take.
//!
//! It runs on the one thread that called `Server::run`, so it must never block on a
//! client: it never reads from a connection, never does a TLS handshake, and writes
//! to a refused plain-HTTP connection once, without waiting. It stops as soon as
//! shutdown is asked for, and it must not spin while accepting keeps failing.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::code::Code;

use super::caps::{ConnGuard, ConnTable, Refused};
use super::conn::{ConnContext, report};
use super::pool::Pool;
use super::render::{Disposition, render};
use super::{Exchange, Response};

/// Pause after an accept error such as running out of file descriptors, so that the
/// accept loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An accepted connection that holds a slot. The socket is shared with the slot's entry in the
/// connection table (weakly), which shuts it down when it evicts the connection.
pub(super) struct Conn {
    pub(super) stream: Arc<TcpStream>,
    pub(super) peer: SocketAddr,
    pub(super) slot: ConnGuard,
}

pub(super) fn accept_loop(
    listener: &TcpListener,
    pool: &Pool<Conn>,
    conns: &Arc<ConnTable>,
    ctx: &ConnContext,
) {
    let mut failing = false;
    while !ctx.shutdown.is_stopping() {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                match e.kind() {
                    // The client gave up before we got to it; nothing to do.
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset => {}
                    _ if ctx.shutdown.is_stopping() => {}
                    // Most likely out of file descriptors. Warn once per episode and
                    // back off so that the loop does not spin while it lasts.
                    _ => {
                        if failing {
                            log::debug!("accept failed: {e}");
                        } else {
                            log::warn!("accept failed: {e}");
                            failing = true;
                        }
                        thread::sleep(ACCEPT_BACKOFF);
                    }
                }
                continue;
            }
        };
        if failing {
            log::debug!("accept works again");
            failing = false;
        }
        if ctx.shutdown.is_stopping() {
            // The wake-up connection from `shutdown`, or a client that arrived just
            // as the server stopped.
            break;
        }
        let accepted = Instant::now();
        let stream = Arc::new(stream);
        match conns.try_acquire(peer.ip(), Arc::downgrade(&stream)) {
            Ok(slot) => {
                // The pool runs a thread per slot, so it is full only with every slot taken.
                let conn = Conn { stream, peer, slot };
                let evicted = |queued: &Conn| queued.slot.activity().is_evicted();
                if let Err(conn) = pool.submit(conn, evicted) {
                    refuse(&conn.stream, peer, accepted, Refused::Full, ctx);
                }
            }
            Err(why) => refuse(&stream, peer, accepted, why, ctx),
        }
    }
}

/// Answers 503 on a connection that gets no slot, naming the cap it met, without ever
/// blocking: the socket is made non-blocking and written once (a fresh socket's send buffer
/// always has room for these few hundred bytes), and it is never read.
///
/// Over HTTPS the connection is closed without an answer: a 503 would need a TLS
/// handshake first, and the accept thread must never wait on a client. It is still
/// reported as a 503 (with no body bytes), so the refusal is logged and counted.
fn refuse(
    stream: &TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    why: Refused,
    ctx: &ConnContext,
) {
    let mut body_bytes = 0;
    // Counted as a refusal once written; over HTTPS, where nothing can be, once decided.
    let mut code = Some(Code::TooManyConnections);
    if ctx.tls.is_none() {
        let message = match why {
            Refused::PerClient => format!(
                "too many connections from this address: it has server.max_connections_per_ip ({}) open (an IPv6 client counts per /64); close connections you do not use, or retry later",
                ctx.conns.max_per_client()
            ),
            Refused::Full => format!(
                "every connection slot is taken (server.max_connections, {}) and none can give way; retry later",
                ctx.conns.max_total()
            ),
        };
        let response = Response::error(Code::TooManyConnections, &message);
        let rendered = render(
            &response,
            Disposition::Close,
            false,
            std::time::SystemTime::now(),
        );
        let written = match stream.set_nonblocking(true) {
            Ok(()) => { stream }.write(&rendered.bytes),
            Err(e) => Err(e),
        };
        // A fresh socket's send buffer takes these few hundred bytes whole, or none.
        match written {
            Ok(_) => body_bytes = rendered.body_bytes,
            Err(e) => {
                log::debug!("could not send 503 to a refused connection: {e}");
                code = None;
            }
        }
    }
    // Sending FIN right after the response lets the client read it before it
    // notices the close.
    let _ = stream.shutdown(Shutdown::Write);
    report(
        ctx.handler.as_ref(),
        &Exchange {
            peer,
            method: "-",
            path: "-",
            status: 503,
            bytes: body_bytes,
            duration: accepted.elapsed(),
            client: None,
            code,
        },
    );
}
