//! Fairness between clients when the connection slots run out: slowloris from nine loopback
//! addresses at once, each within `server.max_connections_per_ip` but together more than
//! `server.max_connections`, over HTTP and over HTTPS. New clients must still get in, and a
//! kept-alive client whose requests carry the token must never be starved.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::support::{
    ConsumerToml, Gateway, Influxd, RawResponse, TempDir, read_response, wait_until,
};
use crate::tls::{self_signed, tls_client};

use super::{Expected, ISRUNNING, PING, STATES, TOKEN, after_each_with_threads, start};

/// The attack of the issue: 9 addresses × 70 connections, one byte every 2 s.
const ADDRESSES: u8 = 9;
const PER_ADDRESS: usize = 70;
const TRICKLE_EVERY: Duration = Duration::from_secs(2);
/// Fresh-connection pings while the attack holds, and how many must be answered within 1 s.
const PINGS: usize = 30;
const MUST_ANSWER: usize = 27;

/// Connections that trickle `bytes` one at a time from 127.0.0.2 onwards, `per_address` from
/// each address; a connection the server closes (or answers) is replaced at once, as a
/// determined attacker would.
struct Attack {
    stop: Arc<AtomicBool>,
    /// Connections made so far, replacements included.
    opened: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Attack {
    fn start(
        target: SocketAddr,
        addresses: u8,
        per_address: usize,
        bytes: &'static [u8],
    ) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let threads = (0..addresses)
            .map(|i| {
                let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
                let from = IpAddr::from([127, 0, 0, 2 + i]);
                thread::spawn(move || {
                    trickle_from(from, target, per_address, bytes, &stop, &opened)
                })
            })
            .collect();
        Attack {
            stop,
            opened,
            threads,
        }
    }

    /// Waits until every connection was opened once, at most 10 s.
    fn wait_established(&self, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.opened.load(Ordering::SeqCst) < want {
            assert!(Instant::now() < deadline, "the attack could not connect");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every thread and closes every connection.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("attack thread");
        }
    }
}

/// One address's connections: opened, trickled, replaced when closed, until `stop`.
fn trickle_from(
    from: IpAddr,
    target: SocketAddr,
    n: usize,
    bytes: &[u8],
    stop: &AtomicBool,
    opened: &AtomicUsize,
) {
    // Each connection with how many bytes it has sent.
    let mut conns: Vec<Option<(TcpStream, usize)>> = (0..n).map(|_| None).collect();
    let mut next_byte = Instant::now() + TRICKLE_EVERY;
    let mut scratch = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        let trickle = Instant::now() >= next_byte;
        if trickle {
            next_byte += TRICKLE_EVERY;
        }
        for slot in &mut conns {
            if let Some((stream, sent)) = slot {
                // Closed, reset or answered (503, 408): replace it.
                let gone = !matches!(stream.read(&mut scratch), Err(e) if e.kind() == ErrorKind::WouldBlock);
                let refused = trickle
                    && *sent < bytes.len()
                    && stream
                        .write(&bytes[*sent..=*sent])
                        .map(|n| *sent += n)
                        .is_err();
                if gone || refused {
                    *slot = None;
                }
            }
            if slot.is_none()
                && let Some(mut stream) = connect_quietly(from, target)
            {
                // The first byte at once: the server sees a head begin.
                if stream.write_all(&bytes[..1]).is_ok() && stream.set_nonblocking(true).is_ok() {
                    *slot = Some((stream, 1));
                    opened.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A connection from `from`, or None when it cannot be made within a second (a full backlog).
fn connect_quietly(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
    socket.bind(&SocketAddr::new(from, 0).into()).ok()?;
    socket
        .connect_timeout(&to.into(), Duration::from_secs(1))
        .ok()?;
    Some(socket.into())
}

/// A request head that never ends, 200-odd bytes: 400 s at one byte every 2 s.
const SLOW_HEAD: &[u8] = b"GET /apiv0.1/ping HTTP/1.1\r\nHost: gw\r\nX-Slow: \
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A TLS handshake record header announcing 16 KiB, then its body: a ClientHello that never
/// ends.
const SLOW_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
];

/// What a client under test saw of one request.
struct Answered {
    status: Option<u16>,
    took: Duration,
}

impl Answered {
    fn within_a_second(&self) -> bool {
        self.status == Some(200) && self.took < Duration::from_secs(1)
    }
}

/// How the tests speak to the gateway: plain HTTP or HTTPS with the test's certificate.
trait Speak {
    /// Sends `request` on a fresh connection from 127.0.0.1 and reads the answer, 2 s at most.
    fn fresh(&self, addr: SocketAddr, request: &str) -> Option<RawResponse>;

    /// A ping on a fresh connection.
    fn fresh_ping(&self, addr: SocketAddr) -> Answered {
        let started = Instant::now();
        let request = format!("GET {PING} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let status = self.fresh(addr, &request).map(|r| r.status);
        Answered {
            status,
            took: started.elapsed(),
        }
    }

    /// Open connections as the gateway counts them (`states`), less the one asking.
    fn open_slots(&self, addr: SocketAddr) -> u64 {
        let request = format!(
            "GET {STATES} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        let answer = self.fresh(addr, &request).expect("an answer to states");
        let open = answer.json()["connections"].as_u64();
        open.expect("states.connections").saturating_sub(1)
    }
}

struct Plain;

impl Speak for Plain {
    fn fresh(&self, addr: SocketAddr, request: &str) -> Option<RawResponse> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        read_response(&mut BufReader::new(stream), false).ok()
    }
}

struct Tls {
    cert: std::path::PathBuf,
}

impl Speak for Tls {
    fn fresh(&self, addr: SocketAddr, request: &str) -> Option<RawResponse> {
        let mut stream = tls_connect(addr, &self.cert)?;
        stream.write_all(request.as_bytes()).ok()?;
        read_response(&mut BufReader::new(stream), false).ok()
    }
}

type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An HTTPS connection from 127.0.0.1 with the handshake done, 2 s timeouts.
fn tls_connect(addr: SocketAddr, cert: &std::path::Path) -> Option<TlsConn> {
    let mut conn = tls_client(cert, &[b"http/1.1"]);
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).ok()?;
    }
    Some(rustls::StreamOwned::new(conn, sock))
}

/// A kept-alive client whose requests carry the token: one request now, and one more each
/// time `ask` is called, on the same connection.
struct KeptAlive<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> KeptAlive<S> {
    fn new(stream: S) -> KeptAlive<S> {
        let mut client = KeptAlive {
            reader: BufReader::new(stream),
        };
        let first = client.ask();
        assert!(
            first.within_a_second(),
            "the first request: {:?}",
            first.status
        );
        client
    }

    fn ask(&mut self) -> Answered {
        let started = Instant::now();
        let request = format!(
            "GET {ISRUNNING} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        let status = self
            .reader
            .get_mut()
            .write_all(request.as_bytes())
            .ok()
            .and_then(|()| read_response(&mut self.reader, false).ok())
            .filter(|r: &RawResponse| r.header("connection") != Some("close"))
            .map(|r| r.status);
        Answered {
            status,
            took: started.elapsed(),
        }
    }
}

/// The attack from nine addresses on `addr`, `PINGS` fresh pings 100 ms apart and a request of
/// `kept` after each; returns the pings answered within a second, and the requests of `kept`
/// that were not (panicking when the gateway is not full while the attack holds).
fn under_attack<S: Read + Write>(
    gw: &Gateway,
    speak: &dyn Speak,
    kept: &mut KeptAlive<S>,
    trickle: &'static [u8],
) -> (usize, Vec<String>) {
    let attack = Attack::start(gw.addr, ADDRESSES, PER_ADDRESS, trickle);
    attack.wait_established(usize::from(ADDRESSES) * PER_ADDRESS);
    // Every slot is taken: one thread per connection (512), however many were admitted.
    let full = Instant::now() + Duration::from_secs(10);
    while gw.threads() < 512 {
        assert!(
            Instant::now() < full,
            "the attack did not fill the gateway: {} threads",
            gw.threads()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (mut answered, mut starved) = (0, Vec::new());
    for i in 0..PINGS {
        let ping = speak.fresh_ping(gw.addr);
        if ping.within_a_second() {
            answered += 1;
        }
        let again = kept.ask();
        if !again.within_a_second() {
            starved.push(format!(
                "request {i}: {:?} after {:?}",
                again.status, again.took
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    attack.stop();
    (answered, starved)
}

#[test]
fn slowloris_from_nine_addresses_leaves_room_for_new_clients() {
    let (influx, mut gw) = start("header_timeout = \"10s\"\n", "");
    let stream = TcpStream::connect(gw.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut kept = KeptAlive::new(stream);
    let (answered, starved) = under_attack(&gw, &Plain, &mut kept, SLOW_HEAD);
    println!(
        "slowloris from {ADDRESSES} addresses: {answered} of {PINGS} fresh pings answered within 1 s"
    );
    assert!(
        answered >= MUST_ANSWER,
        "{answered} of {PINGS} fresh pings answered within 1 s; at least {MUST_ANSWER} must be"
    );
    assert!(
        starved.is_empty(),
        "the kept-alive client with the token was starved: {starved:?}"
    );
    drop(kept);
    after_attack(&mut gw, &Plain);
    assert!(
        influx.measurements(super::DB).is_empty(),
        "nothing was written"
    );
}

#[test]
fn tls_handshake_trickle_from_nine_addresses_leaves_room_for_new_clients() {
    let influx = Influxd::start();
    let dir = TempDir::new("fair-tls");
    let (cert, _) = self_signed(dir.path());
    let rest = format!("[auth]\ntokens = [\"{TOKEN}\"]\n[jobs]\nheartbeat_interval = \"1h\"\n");
    let mut gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, super::DB)
            .server("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nheader_timeout = \"10s\"\n")
            .rest(&rest)
            .toml(),
    );
    let speak = Tls { cert };
    let stream = tls_connect(gw.addr, &speak.cert).expect("a TLS connection");
    let mut kept = KeptAlive::new(stream);
    let (answered, starved) = under_attack(&gw, &speak, &mut kept, SLOW_HELLO);
    println!(
        "TLS handshake trickle from {ADDRESSES} addresses: {answered} of {PINGS} fresh pings answered within 1 s"
    );
    assert!(
        answered >= MUST_ANSWER,
        "{answered} of {PINGS} fresh pings over HTTPS answered within 1 s; at least {MUST_ANSWER} must be"
    );
    assert!(
        starved.is_empty(),
        "the kept-alive client with the token was starved: {starved:?}"
    );
    drop(kept);
    after_attack(&mut gw, &speak);
    assert!(
        influx.measurements(super::DB).is_empty(),
        "nothing was written"
    );
}

/// After an attack: the gateway is alive and answers at once, every slot the attack held is
/// given back, and threads and memory are bounded: one thread per slot at most (idle ones
/// outlive their connections by 30 s), and a few MiB for all the connections.
fn after_attack(gw: &mut Gateway, speak: &dyn Speak) {
    assert!(gw.is_alive(), "the gateway died; its log:\n{}", gw.log());
    let ping = speak.fresh_ping(gw.addr);
    assert!(
        ping.within_a_second(),
        "ping after the attack: {:?} in {:?}",
        ping.status,
        ping.took
    );
    wait_until(
        Duration::from_secs(5),
        "the attack's slots to be given back",
        || speak.open_slots(gw.addr) == 0,
    );
    let (threads, rss) = (gw.threads(), gw.rss_kib());
    println!(
        "after the attack: {threads} threads, RSS {rss} KiB, peak {} KiB",
        gw.peak_rss_kib()
    );
    assert!(threads <= 512 + 16, "{threads} threads for 512 slots");
    assert!(rss < 64 * 1024, "resident memory {rss} KiB");
}

/// Fresh pings from 127.0.0.1, 100 ms apart: how many of `n` were answered 200 within a second.
fn fresh_pings(addr: SocketAddr, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            let ping = Plain.fresh_ping(addr);
            thread::sleep(Duration::from_millis(100));
            ping.within_a_second()
        })
        .count()
}

/// A connection from `from` whose receive buffer is as small as the kernel allows, so that
/// the server's answers pile up unread after a few kilobytes.
fn connect_unread(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(1).expect("SO_RCVBUF");
    socket.bind(&SocketAddr::new(from, 0).into()).expect("bind");
    socket
        .connect_timeout(&to.into(), Duration::from_secs(2))
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_nonblocking(true).expect("nonblocking");
    stream
}

/// Issue 2: clients that pipeline pings and never read the answers. With
/// `server.max_connections = 16`, 16 such connections from two addresses kept every slot
/// (a new client got 503 for some 10 s): a connection blocked writing its answer was "busy"
/// and never closed. Now one that has had no byte of its answer taken for a while makes no
/// progress, and gives its slot up to a new client.
#[test]
fn clients_that_never_read_their_answers_give_their_slots_up() {
    let (influx, mut gw) = start(
        "max_connections = 16\nheader_timeout = \"10s\"\nidle_timeout = \"10s\"\n",
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Connections whose pings the server stopped taking (each counted once).
    let blocked = Arc::new(AtomicUsize::new(0));
    let pipelined = format!("GET {PING} HTTP/1.1\r\nHost: gw\r\n\r\n").repeat(64);
    let attackers: Vec<_> = (0..2u8)
        .map(|i| {
            let (stop, pipelined, addr) = (Arc::clone(&stop), pipelined.clone(), gw.addr);
            let blocked = Arc::clone(&blocked);
            thread::spawn(move || {
                let from = IpAddr::from([127, 0, 0, 2 + i]);
                let mut conns: Vec<Option<(TcpStream, bool)>> = (0..8).map(|_| None).collect();
                while !stop.load(Ordering::SeqCst) {
                    for slot in &mut conns {
                        let fresh = slot.is_none();
                        let (c, counted) =
                            slot.get_or_insert_with(|| (connect_unread(from, addr), false));
                        // Pipeline pings for as long as the server takes them; never read.
                        let closed = loop {
                            match c.write(pipelined.as_bytes()) {
                                Ok(_) if fresh => break false,
                                Ok(_) => {}
                                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                    if !*counted {
                                        *counted = true;
                                        blocked.fetch_add(1, Ordering::SeqCst);
                                    }
                                    break false;
                                }
                                Err(_) => break true,
                            }
                        };
                        if closed {
                            *slot = None;
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    // The answers pile up, and the connections' answer writes block: as many connections as
    // there are slots have had their pings refused by a full socket.
    wait_until(Duration::from_secs(10), "16 connections blocked", || {
        blocked.load(Ordering::SeqCst) >= 16
    });
    let answered = fresh_pings(gw.addr, 10);
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.join().expect("attacker");
    }
    println!(
        "16 clients that never read, max_connections = 16: {answered} of 10 fresh pings answered within 1 s"
    );
    assert!(
        answered >= 9,
        "{answered} of 10 fresh pings answered within 1 s"
    );
    // The operator sees it: connections were closed to admit the pings (the attackers' are
    // closed now, so this request takes a free slot).
    let states = super::get_authed(gw.addr, STATES).json();
    let closed = states["connections_closed_to_admit"].as_u64();
    println!("connections closed to admit another: {closed:?}");
    assert!(closed.is_some_and(|n| n >= 1), "{closed:?}");
    after_each_with_threads(&mut gw, &influx, &Expected::default(), 64);
}

/// Connections from `from` that each ask `isrunning` with `token` once, then again every 4 s
/// (within `idle_timeout`), reading every answer (counted in `answered`), until `stop`; returns
/// the statuses.
fn kept_alive_token_holder(
    from: IpAddr,
    to: SocketAddr,
    n: usize,
    token: &'static str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> JoinHandle<Vec<u16>> {
    thread::spawn(move || {
        let request = format!(
            "GET {ISRUNNING} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let mut conns: Vec<BufReader<TcpStream>> = (0..n)
            .map(|_| BufReader::new(crate::support::connect_from(from, to)))
            .collect();
        let mut statuses = Vec::new();
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                next += Duration::from_secs(4);
                for c in &mut conns {
                    let status = c
                        .get_mut()
                        .write_all(request.as_bytes())
                        .ok()
                        .and_then(|()| read_response(c, false).ok())
                        .map_or(0, |r| r.status);
                    statuses.push(status);
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        statuses
    })
}

/// Issue 3: one token holder on every slot. 4 addresses × 8 connections (`max_connections =
/// 32`, `max_connections_per_ip = 8`), each asking `isrunning` with the token and then again
/// every 4 s: every connection was protected, and 10 of 10 fresh pings got 503. Now a client
/// (by token name) has at most `max_connections_per_ip` connections protected (and never more
/// than half the slots); the others give way like anyone's.
#[test]
fn one_token_cannot_hold_every_slot() {
    let (influx, mut gw) = start(
        "max_connections = 32\nmax_connections_per_ip = 8\nheader_timeout = \"10s\"\nidle_timeout = \"10s\"\n",
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let holders: Vec<_> = (0..4u8)
        .map(|i| {
            let from = IpAddr::from([127, 0, 0, 2 + i]);
            let (stop, asked) = (Arc::clone(&stop), Arc::clone(&asked));
            kept_alive_token_holder(from, gw.addr, 8, TOKEN, stop, asked)
        })
        .collect();
    // Every connection's first request answered: each is kept alive, authenticated.
    wait_until(Duration::from_secs(5), "32 first answers", || {
        asked.load(Ordering::SeqCst) >= 32
    });
    let answered = fresh_pings(gw.addr, 10);
    stop.store(true, Ordering::SeqCst);
    let statuses: Vec<u16> = holders
        .into_iter()
        .flat_map(|h| h.join().expect("holder"))
        .collect();
    println!("one token on 32 of 32 slots: {answered} of 10 fresh pings answered within 1 s");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 32,
        "the token holder's first requests: {statuses:?}"
    );
    assert_eq!(
        answered, 10,
        "{answered} of 10 fresh pings answered within 1 s"
    );
    after_each_with_threads(&mut gw, &influx, &Expected::default(), 64);
}

/// Issue 3, the answer 429: a request refused for its client's `requests_per_second` does not
/// keep its connection protected. With `max_connections = 8` (so a client has at most 4
/// connections protected), a steady client holds 4 protected connections and a greedy one,
/// allowed one request a second, asks on 4 at once: one is answered, three get 429 and are
/// no longer protected, so a fresh ping still gets a slot.
#[test]
fn an_answer_429_does_not_keep_a_connection_protected() {
    const STEADY: &str = "steady-token-0123456789abcdef";
    const GREEDY: &str = "greedy-token-0123456789abcdef";
    let influx = Influxd::start();
    let rest = format!(
        "[auth]\ntokens = [\"{TOKEN}\"]\n[[auth.token]]\nname = \"steady\"\ntoken = \"{STEADY}\"\n\
         [[auth.token]]\nname = \"greedy\"\ntoken = \"{GREEDY}\"\nrequests_per_second = 1\n\
         [jobs]\nheartbeat_interval = \"1h\"\n"
    );
    let mut gw = Gateway::start(
        &ConsumerToml::new(&influx.url, super::DB)
            .server("max_connections = 8\nworkers = 8\nheader_timeout = \"10s\"\nidle_timeout = \"10s\"\n")
            .rest(&rest)
            .toml(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let holder = |from: [u8; 4], token| {
        let (stop, asked) = (Arc::clone(&stop), Arc::clone(&asked));
        kept_alive_token_holder(from.into(), gw.addr, 4, token, stop, asked)
    };
    let (steady, greedy) = (
        holder([127, 0, 0, 2], STEADY),
        holder([127, 0, 0, 3], GREEDY),
    );
    // Every connection's first request answered (200, or 429 for three of the greedy's).
    wait_until(Duration::from_secs(5), "8 first answers", || {
        asked.load(Ordering::SeqCst) >= 8
    });
    let answered = fresh_pings(gw.addr, 3);
    stop.store(true, Ordering::SeqCst);
    let (steady, greedy) = (
        steady.join().expect("steady"),
        greedy.join().expect("greedy"),
    );
    println!(
        "4 protected, 1 + 3 × 429: {answered} of 3 fresh pings answered; {steady:?} {greedy:?}"
    );
    assert_eq!(steady, [200; 4]);
    assert_eq!(
        greedy.iter().filter(|s| **s == 429).count(),
        3,
        "{greedy:?}"
    );
    assert_eq!(
        answered, 3,
        "{answered} of 3 fresh pings answered within 1 s"
    );
    after_each_with_threads(&mut gw, &influx, &Expected::default(), 64);
}
