//! The server's lifecycle: `Server`, which binds the listener, checks the limits and
//! runs the accept loop on the pool of connection threads until shutdown, and
//! `ShutdownHandle`, which stops it from any thread and wakes the accept loop.
//!
//! It wires the other parts together and serves no connection itself. The number of
//! connection threads must never exceed `Limits::max_connections`, limits that could
//! never serve a request must be refused at `bind`, and shutdown must never wait longer
//! than the grace period given to `run`: connections still busy after it are left to
//! finish on their own, each bounded by its deadlines.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::accept::{Conn, accept_loop};
use super::budget::BodyBudget;
use super::caps::ConnTable;
use super::conn::ConnContext;
use super::pool::Pool;
use super::transport::serve_tcp;
use super::{Handler, Limits};

/// How long a connection thread beyond `Limits::workers` waits for work before exiting.
const SPARE_WORKER_IDLE: Duration = Duration::from_secs(30);

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
        let budget = BodyBudget::new(limits.max_body_bytes_in_flight);
        let ctx = Arc::new(ConnContext {
            limits,
            tls,
            handler,
            shutdown,
            conns: Arc::clone(&conns),
            budget,
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
    } else if limits.max_body_bytes_in_flight < limits.max_body_bytes {
        "max_body_bytes_in_flight must be at least max_body_bytes"
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
