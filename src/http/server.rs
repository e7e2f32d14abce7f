//! The server's lifecycle: `Server`, which binds the listener, checks the limits and
//! runs the accept loop on the pool of connection threads until shutdown (which
//! `shutdown::ShutdownHandle` asks for).
//!
//! It wires the other parts together and serves no connection itself. The number of
//! connection threads must never exceed `Limits::max_connections`, limits that could
//! never serve a request must be refused at `bind`, and shutdown must never wait longer
//! than the grace period given to `run`: connections still busy after it are left to
//! finish on their own, each bounded by its deadlines.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::accept::{Conn, accept_loop};
use super::budget::BodyBudget;
use super::caps::ConnTable;
use super::conn::ConnContext;
use super::pool::Pool;
use super::serve::serve_tcp;
use super::shutdown::ShutdownHandle;
use super::{Handler, Limits};

/// How long a connection thread beyond `Limits::workers` waits for work before exiting.
const SPARE_WORKER_IDLE: Duration = Duration::from_secs(30);

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    limits: Limits,
    tls: Option<Arc<ServerConfig>>,
    shutdown: ShutdownHandle,
    conns: Arc<ConnTable>,
    /// Request-body bytes held in memory at once, shared with the state page's gauges.
    budget: Arc<BodyBudget>,
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
        let shutdown = ShutdownHandle::new(local_addr);
        let conns = Arc::new(ConnTable::new(
            limits.max_connections,
            limits.max_connections_per_ip,
        ));
        let budget = Arc::new(BodyBudget::new(limits.max_body_bytes_in_flight));
        Ok(Server {
            listener,
            local_addr,
            limits,
            tls,
            shutdown,
            conns,
            budget,
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

    /// The connections and the body budget as they stand, readable at any time from anywhere
    /// (the state page's `connections` and `bodies`).
    pub fn gauges(&self) -> Gauges {
        Gauges {
            conns: Arc::clone(&self.conns),
            budget: Arc::clone(&self.budget),
        }
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
            budget,
            ..
        } = self;
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

/// What the state page and the Prometheus page show of the HTTP layer ([`Server::gauges`]).
#[derive(Clone)]
pub struct Gauges {
    conns: Arc<ConnTable>,
    budget: Arc<BodyBudget>,
}

/// The HTTP layer's figures at one moment ([`Gauges::now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugesNow {
    /// Connections holding a slot now (`Limits::max_connections` at most); refused
    /// connections never hold one.
    pub connections: usize,
    /// Connections closed since the start to give their slot to a newcomer, every slot
    /// being taken: the one making least progress (see `caps`).
    pub connections_closed_to_admit: u64,
    /// Bytes of request bodies held now (bodies being read, what they inflate to, what their
    /// handling holds).
    pub body_bytes: u64,
    /// `Limits::max_body_bytes_in_flight`, in bytes.
    pub body_limit_bytes: u64,
    /// Requests waiting now for bytes others hold (a second at most, then answered 503
    /// `too_many_bodies`).
    pub bodies_waiting: usize,
    /// Bodies closed since the start to free their memory for a waiting one: silent, or sent
    /// slower than `Limits::header_timeout` asks for.
    pub bodies_closed: u64,
}

impl Gauges {
    /// The figures now; each lock is held for its reading alone.
    pub fn now(&self) -> GaugesNow {
        let (body_bytes, bodies_waiting) = self.budget.held_and_waiting();
        let (connections_closed_to_admit, bodies_closed) = self.conns.closed();
        GaugesNow {
            connections: self.conns.open().load(Ordering::SeqCst),
            connections_closed_to_admit,
            body_bytes,
            body_limit_bytes: self.budget.limit(),
            bodies_waiting,
            bodies_closed,
        }
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
