//! The server: the listener and its accept loop, the connection caps, the pool of
//! connection threads, the TLS handshake (on the connection thread, under its
//! deadline), and the loop that reads requests from one connection, hands them to the
//! handler and writes the responses.
//!
//! Every wait here is bounded by a deadline, every buffer by a constant or a checked
//! limit, and the number of threads by `Limits::max_connections`. The accept loop must
//! never block on a client and never read from a refused connection; a connection
//! thread must never die from a handler panic; and an open-connection slot must be
//! released on every path out of a connection, which is why slots are guards that
//! release themselves on drop.

use std::io::{self, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::code::Code;

use super::caps::{ConnGuard, ConnTable};
use super::conn::{ConnContext, report};
use super::pool::Pool;
use super::render::{Disposition, render};
use super::transport::serve_tcp;
use super::{Exchange, Handler, Limits, Response};

/// How long a connection thread beyond `Limits::workers` waits for work before exiting.
const SPARE_WORKER_IDLE: Duration = Duration::from_secs(30);

/// Pause after an accept error such as running out of file descriptors, so that the
/// accept loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long `ShutdownHandle::shutdown` waits to connect to the listener to wake it.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    limits: Limits,
    tls: Option<Arc<ServerConfig>>,
    shutdown: ShutdownHandle,
    conns: Arc<ConnTable>,
}

impl Server {
    /// Binds the listening socket. With `tls` every connection is HTTPS (see
    /// `tls::load`); without it, plain HTTP. Fails with `InvalidInput` for limits that
    /// could never serve a request (zero timeouts or zero connection caps).
    pub fn bind(
        addr: impl ToSocketAddrs,
        limits: Limits,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<Server> {
        check_limits(&limits)?;
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let shutdown = ShutdownHandle {
            inner: Arc::new(ShutdownState {
                stopping: AtomicBool::new(false),
                wake_addr: wake_addr(local_addr),
            }),
        };
        let conns = Arc::new(ConnTable::new(
            limits.max_connections,
            limits.max_connections_per_ip,
        ));
        Ok(Server {
            listener,
            local_addr,
            limits,
            tls,
            shutdown,
            conns,
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A cloneable handle that stops the server from another thread.
    pub fn handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The number of open connections, readable at any time from anywhere. It counts
    /// connections that hold a slot: refused connections never do.
    pub fn connections(&self) -> Arc<AtomicUsize> {
        Arc::clone(self.conns.open())
    }

    /// Accepts and serves until shutdown. Then it stops accepting, closes idle
    /// keep-alive connections, lets in-flight requests finish for at most `grace`,
    /// and returns. Connection threads still busy after `grace` are left to finish
    /// on their own (each is bounded by its deadlines); they hold no lock that the
    /// caller needs.
    pub fn run(self, handler: Arc<dyn Handler>, grace: Duration) -> io::Result<()> {
        let Server {
            listener,
            limits,
            tls,
            shutdown,
            conns,
            ..
        } = self;
        let ctx = Arc::new(ConnContext {
            limits,
            tls,
            handler,
            shutdown,
        });
        let keep = ctx.limits.workers.min(ctx.limits.max_connections);
        let pool = {
            let ctx = Arc::clone(&ctx);
            Pool::new(
                keep,
                ctx.limits.max_connections,
                SPARE_WORKER_IDLE,
                move |conn: Conn| serve_tcp(conn, &ctx),
            )
        };

        accept_loop(&listener, &pool, &conns, &ctx);

        // Closing the listener first makes new clients fail fast instead of waiting
        // in the backlog during the grace period.
        drop(listener);
        pool.stop();
        if !conns.wait_drained(Instant::now() + grace) {
            log::warn!(
                "{} connections still open after the shutdown grace period",
                conns.open().load(Ordering::SeqCst)
            );
        }
        Ok(())
    }
}

fn check_limits(limits: &Limits) -> io::Result<()> {
    let problem = if limits.header_timeout.is_zero() {
        "header_timeout must be more than zero"
    } else if limits.idle_timeout.is_zero() {
        "idle_timeout must be more than zero"
    } else if limits.max_connections == 0 {
        "max_connections must be at least 1"
    } else if limits.max_connections_per_ip == 0 {
        "max_connections_per_ip must be at least 1"
    } else {
        return Ok(());
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, problem))
}

/// The address `shutdown` connects to: the listening address, with a wildcard IP
/// replaced by loopback, because connecting to a wildcard address is not portable.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Stops a running server from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownState>,
}

#[derive(Debug)]
struct ShutdownState {
    stopping: AtomicBool,
    wake_addr: SocketAddr,
}

impl ShutdownHandle {
    /// Asks the server to stop and wakes its accept loop by connecting to it. It
    /// returns at once (or after at most a second, if the listener is unreachable);
    /// `Server::run` returns once the server has drained. Calling it again is
    /// harmless.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // The accept loop checks the flag after every accept, so one connection is
        // enough to wake it. If the connection fails, the listener is already gone
        // or the next real client will wake it instead.
        if let Err(e) = TcpStream::connect_timeout(&self.inner.wake_addr, WAKE_TIMEOUT) {
            log::debug!("could not wake the accept loop: {e}");
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }
}

/// An accepted connection that holds a slot.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) slot: ConnGuard,
}

fn accept_loop(
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
        match conns.try_acquire(peer.ip()) {
            Some(slot) => {
                if let Err(conn) = pool.submit(Conn { stream, peer, slot }) {
                    refuse(conn.stream, peer, accepted, ctx);
                }
            }
            None => refuse(stream, peer, accepted, ctx),
        }
    }
}

/// Answers 503 on a connection that gets no slot, without ever blocking: the socket
/// is made non-blocking and written once (a fresh socket's send buffer always has
/// room for these few hundred bytes), and it is never read.
///
/// Over HTTPS the connection is closed without an answer: a 503 would need a TLS
/// handshake first, and the accept thread must never wait on a client. It is still
/// reported as a 503 (with no body bytes), so the refusal is logged and counted.
fn refuse(stream: TcpStream, peer: SocketAddr, accepted: Instant, ctx: &ConnContext) {
    let mut body_bytes = 0;
    if ctx.tls.is_none() {
        let response = Response::error(
            Code::TooManyConnections,
            "too many connections; retry later",
        );
        let rendered = render(&response, Disposition::Close, false);
        if stream.set_nonblocking(true).is_ok()
            && let Err(e) = (&stream).write(&rendered.bytes)
        {
            log::debug!("could not send 503 to a refused connection: {e}");
        }
        body_bytes = rendered.body_bytes;
    }
    // Sending FIN right after the response lets the client read it before it
    // notices the close.
    let _ = stream.shutdown(Shutdown::Write);
    drop(stream);
    report(
        ctx.handler.as_ref(),
        &Exchange {
            peer,
            method: "-",
            path: "-",
            status: 503,
            bytes: body_bytes,
            duration: accepted.elapsed(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_address_replaces_wildcards() {
        let v4: SocketAddr = "0.0.0.0:8086".parse().expect("addr");
        let v6: SocketAddr = "[::]:8086".parse().expect("addr");
        let fixed: SocketAddr = "192.0.2.1:8086".parse().expect("addr");
        assert_eq!(wake_addr(v4), "127.0.0.1:8086".parse().expect("addr"));
        assert_eq!(wake_addr(v6), "[::1]:8086".parse().expect("addr"));
        assert_eq!(wake_addr(fixed), fixed);
    }
}
