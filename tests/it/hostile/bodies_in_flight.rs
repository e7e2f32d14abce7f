//! Bodies in flight: many clients announcing large bodies and then stalling must not fill the
//! gateway's memory (`server.max_body_bytes_in_flight`), inflated bytes of compressed bodies
//! count against the same budget, and a normal client still gets its request through.

use std::collections::BTreeMap;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::support::{connect_from, read_response, wait_until};

use super::{
    Expected, MIB, REGISTER, STATES, TOKEN, after_each, after_each_with_threads, case, check,
    get_authed, open_connections, peak_rss_kib, post, raw, register, start,
};

/// 512 connections, 64 from each of 8 addresses (the per-address cap; 512 in all is
/// `server.max_connections`), each declaring a 1 MiB body, sending half of it and stalling:
/// without a budget they hold some 535 MiB. With the default budget of 64 MiB the gateway's
/// memory stays near it, the bodies beyond it get 503 `too_many_bodies` (or are closed to make
/// room, once silent), and a normal client still registers.
#[test]
fn stalled_bodies_from_eight_addresses_keep_memory_near_the_budget() {
    let (influx, mut gw) = start("header_timeout = \"10s\"\n", "");
    let rss_before = gw.rss_kib();
    let head = format!(
        "POST {REGISTER} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {MIB}\r\n\r\n"
    );
    let half = vec![b' '; MIB / 2];
    let senders: Vec<_> = (0..8u8)
        .map(|i| {
            let (head, half) = (head.clone(), half.clone());
            let addr = gw.addr;
            thread::spawn(move || {
                stall_bodies(IpAddr::from([127, 0, 0, 2 + i]), addr, 64, &head, &half)
            })
        })
        .collect();
    let mut conns: Vec<TcpStream> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender"))
        .collect();
    assert_eq!(conns.len(), 512);
    // Every body has had its chance: a second to get memory and be read, or to be refused.
    // 64 bodies of 1 MiB fit the budget of 64 MiB; each of the others is answered 503, or
    // closed to make room for one waiting, within a second of waiting. Read from the
    // clients' side: a request for the state page would take a stalled body's slot.
    let budget_bodies = 64;
    wait_until(
        Duration::from_secs(30),
        "every body beyond the budget to be answered or closed",
        || answered_or_closed(&conns) >= conns.len() - budget_bodies,
    );
    let peak = peak_rss_kib(&gw);
    println!(
        "512 stalled 1 MiB bodies: peak RSS {peak} KiB (before: {rss_before} KiB), now {} KiB",
        gw.rss_kib()
    );

    let started = Instant::now();
    let uuid = register(gw.addr, &json!({"host": "normal"}));
    println!(
        "a normal register while they stall: {:?}",
        started.elapsed()
    );
    let mut expected = Expected::default();
    expected.register(&uuid, "normal", &[]);

    // What the stalled connections got: 503 too_many_bodies, or closed to make room.
    // A body that got its memory late may also be closed with 408 `body_timeout`, behind
    // the pace `header_timeout` asks for.
    let (mut refused, mut timed_out) = (0, 0);
    for c in &mut conns {
        c.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 512];
        if let Ok(n) = c.read(&mut buf) {
            let answer = String::from_utf8_lossy(&buf[..n]);
            refused += usize::from(answer.contains("\"too_many_bodies\""));
            timed_out += usize::from(answer.contains("\"body_timeout\""));
        }
    }
    println!(
        "512 stalled 1 MiB bodies: {refused} refused with 503 too_many_bodies, {timed_out} closed with 408 body_timeout"
    );
    assert!(refused > 0, "no body was refused for want of memory");
    // The state page counts what the clients saw: every 503 too_many_bodies (with the other
    // refusals, by code), and the bodies closed to make room (some of the connections closed
    // without an answer; the others were closed to admit the normal register and this request).
    // A refusal is counted just after its client could read it: the count may trail a moment.
    let mut states = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(10),
        "the state page to count every 503 the clients read",
        || {
            states = get_authed(gw.addr, STATES).json();
            states["counters"]["refusals"]["too_many_bodies"].as_u64() >= Some(refused as u64)
        },
    );
    let bodies = states["bodies"].clone();
    println!("the state page's bodies: {bodies}");
    assert_eq!(
        states["counters"]["refusals"]["too_many_bodies"].as_u64(),
        Some(refused as u64),
        "{}",
        states["counters"]["refusals"]
    );
    assert_eq!(bodies["limit"].as_u64(), Some(64 * MIB as u64), "{bodies}");
    assert_eq!(bodies["waiting"].as_u64(), Some(0), "{bodies}");
    let closed = bodies["closed"].as_u64().expect("bodies.closed");
    assert!(
        closed > 0 && closed as usize <= 512 - refused,
        "{closed} closed to make room, {refused} refused: {bodies}"
    );
    // The Prometheus page says the same (no body waits: nothing closes one any more).
    let metrics = get_authed(gw.addr, "/apiv0.1/metrics").body;
    for (series, value) in [
        ("metrics_consumer_request_bodies_closed_total", closed),
        (
            "metrics_consumer_refusals_total{code=\"too_many_bodies\"}",
            refused as u64,
        ),
    ] {
        let line = format!("{series} {value}");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // Each body is held, refused, closed to make room or timed out: all 512 but those whose
    // slots the normal register and this request took (a held body's, closed by the
    // connection table).
    let held = bodies["bytes"].as_u64().expect("bodies.bytes") as usize / MIB;
    let accounted = held + refused + closed as usize + timed_out;
    assert!(
        (510..=512).contains(&accounted),
        "{held} held + {refused} refused + {closed} closed + {timed_out} timed out of 512: {bodies}"
    );
    assert!(
        peak < 64 * 1024 + 48 * 1024,
        "peak resident memory {peak} KiB with a budget of 64 MiB for bodies"
    );
    drop(conns);
    wait_until(
        Duration::from_secs(5),
        "the stalled bodies' memory to go back",
        || gw.rss_kib() < 64 * 1024,
    );
    // One thread per slot at most: they outlive their connections by 30 s.
    after_each_with_threads(&mut gw, &influx, &expected, 512 + 16);
}

/// How many of `conns` (non-blocking) have an answer to read, or were closed.
fn answered_or_closed(conns: &[TcpStream]) -> usize {
    let mut byte = [0u8; 1];
    conns
        .iter()
        .filter(|c| match c.peek(&mut byte) {
            Ok(_) => true,
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        })
        .count()
}

/// `n` connections from `from`, each sent `head` and as much of `half` as the server takes
/// within 3 s in all (bodies waiting for memory are not read); returned open.
fn stall_bodies(from: IpAddr, to: SocketAddr, n: usize, head: &str, half: &[u8]) -> Vec<TcpStream> {
    let mut conns: Vec<(TcpStream, usize)> = (0..n)
        .map(|_| {
            let mut c = connect_from(from, to);
            c.write_all(head.as_bytes()).expect("send the head");
            c.set_nonblocking(true).expect("nonblocking");
            (c, 0)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && conns.iter().any(|(_, sent)| *sent < half.len()) {
        for (c, sent) in &mut conns {
            while *sent < half.len() {
                match c.write(&half[*sent..]) {
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // Refused and closed: nothing more to send.
                    Err(_) => *sent = half.len(),
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    conns.into_iter().map(|(c, _)| c).collect()
}

/// With a budget just large enough for one compressed request (1 MiB body + 16 MiB inflated),
/// a 1 MiB body still arriving (16 KiB every 100 ms: never silent, and ahead of the pace that
/// brings 1 MiB within `header_timeout`, so never closed for memory) leaves too little for a
/// gzip body that inflates to 16 MiB: it waits its second and gets 503 `too_many_bodies` with
/// Retry-After. Once that body is gone, the same request is read (and refused as JSON, being
/// zeros).
#[test]
fn inflated_bytes_count_against_the_body_budget() {
    let budget = MIB + 16 * MIB;
    // The held body must outlast the other's wait for memory (a second).
    let (influx, mut gw) = start(
        &format!("max_body_bytes_in_flight = {budget}\nheader_timeout = \"10s\"\n"),
        "",
    );
    let mut holder = TcpStream::connect(gw.addr).expect("connect");
    holder
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server reserves a body before it asks for it with 100 Continue.
    let held = format!(
        "POST {REGISTER} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\nContent-Length: {MIB}\r\n\r\n"
    );
    holder.write_all(held.as_bytes()).expect("send");
    let mut continued = [0u8; 25];
    holder.read_exact(&mut continued).expect("100 Continue");
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (mut holder, stop) = (holder.try_clone().expect("clone"), Arc::clone(&stop));
        thread::spawn(move || {
            // 1 MiB in 6.4 s: the body is still arriving when the other has waited its second.
            let chunk = [b' '; 16 * 1024];
            while !stop.load(Ordering::SeqCst) && holder.write_all(&chunk).is_ok() {
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&vec![0u8; 16 * MIB]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    let request = raw(
        "POST",
        REGISTER,
        &format!(
            "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
            bomb.len()
        ),
        &bomb,
    );
    let refused = case(
        "a 16 MiB inflation beside a body in flight",
        request.clone(),
        503,
        "too_many_bodies",
    );
    let answer = check(gw.addr, &refused);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(
        answer.json()["error"]
            .as_str()
            .expect("a message")
            .contains("server.max_body_bytes_in_flight"),
        "{}",
        answer.body
    );

    stop.store(true, Ordering::SeqCst);
    trickle.join().expect("trickle");
    drop(holder);
    wait_until(
        Duration::from_secs(5),
        "the held body to be given back",
        || open_connections(gw.addr) == 1,
    );
    let alone = case("the same inflation alone", request, 400, "invalid_json");
    check(gw.addr, &alone);
    after_each(&mut gw, &influx, &Expected::default());
}

/// The attack of issue 1: `n` connections from `from`, each sending `head` (a 1 MiB body
/// announced) and then one body byte every 300 ms, never silent for the 500 ms after which a
/// body may be closed for its memory; a connection the server closes is replaced at once, as a
/// determined attacker would. Stopped (and every connection closed) by `stop`; its thread
/// returns how many answers the connections got, by status.
fn trickle_bodies(
    from: IpAddr,
    to: SocketAddr,
    n: usize,
    head: String,
    stop: Arc<AtomicBool>,
) -> Trickle {
    let rounds = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&rounds);
    let thread = thread::spawn(move || {
        let mut answers = BTreeMap::new();
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        let mut next_byte = Instant::now();
        let mut scratch = [0u8; 1024];
        while !stop.load(Ordering::SeqCst) {
            let trickle = Instant::now() >= next_byte;
            if trickle {
                next_byte += Duration::from_millis(300);
            }
            for slot in &mut conns {
                if let Some(c) = slot {
                    let gone = match c.read(&mut scratch) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                        Ok(got) if got > 0 => {
                            // An answer began: the rest of it is read whole, blocking (within
                            // the connection's read timeout), and counted by its status.
                            let _ = c.set_nonblocking(false);
                            let mut answer = BufReader::new((&scratch[..got]).chain(&*c));
                            if let Ok(answer) = read_response(&mut answer, false) {
                                *answers.entry(answer.status).or_insert(0) += 1;
                            }
                            true
                        }
                        _ => true,
                    };
                    if gone || (trickle && c.write_all(b" ").is_err()) {
                        *slot = None;
                    }
                }
                if slot.is_none() {
                    let mut c = connect_from(from, to);
                    if c.write_all(head.as_bytes()).is_ok() && c.set_nonblocking(true).is_ok() {
                        *slot = Some(c);
                    }
                }
            }
            if trickle {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            thread::sleep(Duration::from_millis(20));
        }
        answers
    });
    Trickle { thread, rounds }
}

/// A trickle under way ([`trickle_bodies`]).
struct Trickle {
    thread: thread::JoinHandle<BTreeMap<u16, usize>>,
    /// Rounds in which every connection was sent its byte (one each 300 ms) or replaced.
    rounds: Arc<AtomicUsize>,
}

impl Trickle {
    /// Waits (30 s at most) until `rounds` more rounds of bytes than now are sent: the attack's
    /// own pace, counted as it goes, where a sleep would guess how soon its thread runs.
    fn wait_rounds(&self, rounds: usize) {
        let until = self.rounds.load(Ordering::SeqCst) + rounds;
        wait_until(Duration::from_secs(30), "the trickle's rounds", || {
            self.rounds.load(Ordering::SeqCst) >= until
        });
    }

    fn join(self) -> BTreeMap<u16, usize> {
        self.thread.join().expect("attack")
    }
}

/// 20 small registers with the token from 127.0.0.1, one after another, while `attack` runs
/// from other addresses; returns how many were answered 200, and the others' answers.
fn registers_beside(gw: &crate::support::Gateway, expected: &mut Expected) -> (usize, Vec<String>) {
    let (mut ok, mut refused) = (0, Vec::new());
    for i in 0..20 {
        let host = format!("beside-{i}");
        let answer = post(gw.addr, REGISTER, &json!({ "host": host }));
        if answer.status == 200 {
            ok += 1;
            let uuid = answer.json()["uuid"].as_str().expect("a uuid").to_string();
            expected.register(&uuid, &host, &[]);
        } else {
            refused.push(format!("{} {}", answer.status, answer.body));
        }
    }
    (ok, refused)
}

/// Issue 1: 64 connections from one address, without a token, each announcing a 1 MiB
/// register and trickling it a byte every 300 ms, held the whole body budget (15 of 20
/// registers from another address got 503 `too_many_bodies`). The token is checked from the
/// head now, before any body is reserved or read: they get 401 and are closed, and every
/// register beside them goes through.
#[test]
fn trickled_bodies_without_a_token_take_no_budget() {
    let (influx, mut gw) = start("header_timeout = \"10s\"\n", "");
    let head = format!("POST {REGISTER} HTTP/1.1\r\nHost: gw\r\nContent-Length: {MIB}\r\n\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let attack = trickle_bodies(
        IpAddr::from([127, 0, 0, 2]),
        gw.addr,
        64,
        head,
        stop.clone(),
    );
    // Its connections opened and trickling (refused from their heads, and opened again).
    attack.wait_rounds(3);
    let mut expected = Expected::default();
    let (ok, refused) = registers_beside(&gw, &mut expected);
    stop.store(true, Ordering::SeqCst);
    let answers = attack.join();
    println!("without a token: {ok} of 20 registers beside the trickle; it got {answers:?}");
    assert_eq!(ok, 20, "registers refused beside the trickle: {refused:?}");
    // 503: the replacements of connections still closing, past the cap per address.
    assert!(
        answers.keys().all(|s| [401, 429, 503].contains(s)) && answers.contains_key(&401),
        "the trickle without a token is refused from its head: {answers:?}"
    );
    after_each(&mut gw, &influx, &expected);
}

/// Issue 1 with the token, from three addresses: the trickle is authenticated, so its bodies
/// are reserved; but a body must keep the pace `header_timeout` asks of its length, and one
/// that falls behind is closed when another body needs its memory, or with 408 `body_timeout`
/// a second after it began; and memory given back goes first to the client holding least, not
/// to the trickle's next body waiting for it. So the trickle cannot hold the budget either (with
/// the pace alone, 11 of 20 registers beside it got 503; before, 20 of 20 did with three
/// addresses, 9 with one).
#[test]
fn an_authenticated_trickle_cannot_hold_the_budget() {
    let (influx, mut gw) = start("header_timeout = \"10s\"\n", "");
    let head = format!(
        "POST {REGISTER} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {MIB}\r\n\r\n"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let attacks: Vec<_> = (0..3u8)
        .map(|i| {
            let from = IpAddr::from([127, 0, 0, 2 + i]);
            trickle_bodies(from, gw.addr, 64, head.clone(), stop.clone())
        })
        .collect();
    // The bodies under way, a second of bytes into them (three rounds and the first).
    for attack in &attacks {
        attack.wait_rounds(4);
    }
    let mut expected = Expected::default();
    let started = Instant::now();
    let (ok, refused) = registers_beside(&gw, &mut expected);
    let took = started.elapsed();
    // One round more: long enough for the first bodies to be a second behind.
    for attack in &attacks {
        attack.wait_rounds(1);
    }
    stop.store(true, Ordering::SeqCst);
    let answers: Vec<_> = attacks.into_iter().map(Trickle::join).collect();
    println!(
        "with the token: {ok} of 20 registers beside the trickle in {took:?}; it got {answers:?}"
    );
    assert_eq!(ok, 20, "registers refused beside the trickle: {refused:?}");
    assert!(
        answers.iter().any(|a| a.get(&408).is_some_and(|n| *n > 0)),
        "trickled bodies fall behind and get 408: {answers:?}"
    );
    // The trickle's connections close (some lingering a second after their 408).
    wait_until(
        Duration::from_secs(5),
        "the trickle's sockets to close",
        || gw.open_fds() < 64,
    );
    // A thread per connection the pool served stays 30 s: the trickle's 192, the registers
    // beside, and the reconnections of slots whose 408 came while the old connection's thread
    // was still closing it (more of them the busier the machine: 232 threads were seen).
    after_each_with_threads(&mut gw, &influx, &expected, 4 * 64 + 32);
}
