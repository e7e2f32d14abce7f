//! Oversized and stalled heads and bodies: heads past the size limits get 431 without costing
//! memory, a head or body that does not arrive gets 408 when `server.header_timeout` is up, and
//! stalled connections give their threads back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::wait_until;

use super::{
    Expected, HEADER_TIMEOUT, MAX_THREADS, MIB, PING, REGISTER, after_each, case, check_all,
    open_connections, ping_within_a_second, raw, read_until_closed, start,
};

#[test]
fn oversized_heads_are_431_and_cost_no_memory() {
    let (influx, mut gw) = start("", "");
    let rss_before = gw.rss_kib();
    let line = |n: usize| "a".repeat(n);
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let sixty: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_but_fits = format!("X-Big: {}\r\n", line(15 * 1024));
    let cases = vec![
        case(
            "a 1 MiB header line without a line end",
            format!("GET {PING} HTTP/1.1\r\nX-Big: {}", line(MIB)),
            431,
            "head_too_large",
        ),
        case(
            "10 000 headers",
            raw("GET", PING, &many_headers, b""),
            431,
            "head_too_large",
        ),
        case(
            "a 100 KiB header value",
            raw(
                "GET",
                PING,
                &format!("X-Big: {}\r\n", line(100 * 1024)),
                b"",
            ),
            431,
            "head_too_large",
        ),
        case(
            "a 1 MiB request line",
            format!("GET /{} HTTP/1.1\r\nConnection: close\r\n\r\n", line(MIB)),
            431,
            "head_too_large",
        ),
        case(
            "a 1 MiB method",
            format!("{} {PING} HTTP/1.1\r\n\r\n", "G".repeat(MIB)),
            431,
            "head_too_large",
        ),
        case(
            "a 100 KiB header name",
            raw("GET", PING, &format!("{}: v\r\n", line(100 * 1024)), b""),
            431,
            "head_too_large",
        ),
        case(
            "a 15 KiB header fits",
            raw("GET", PING, &big_but_fits, b""),
            200,
            "",
        ),
        case("63 headers fit", raw("GET", PING, &sixty, b""), 200, ""),
        case(
            "a head that never ends",
            format!("GET {PING} HTTP/1.1\r\nX-Slow: a"),
            408,
            "head_timeout",
        )
        .stalls(),
    ];
    check_all(gw.addr, &cases);
    let rss_after = gw.rss_kib();
    println!("RSS before {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "megabytes of refused head must not stay resident: {rss_before} -> {rss_after} KiB"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

/// A head sent one byte at a time gets 408 when header_timeout is up, counted from its first
/// byte: slow bytes do not extend the deadline.
#[test]
fn a_trickled_head_is_cut_off_at_the_deadline() {
    let (influx, mut gw) = start("", "");
    let mut stream = TcpStream::connect(gw.addr).expect("connect");
    let writer = stream.try_clone().expect("clone the socket");
    let started = Instant::now();
    // One byte every 100 ms from another thread, until the server stops taking them.
    let trickle = thread::spawn(move || {
        let mut writer = writer;
        let head = format!("GET {PING} HTTP/1.1\r\nX-Slow: {}", "a".repeat(1000));
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(4) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .expect("read timeout");
    let mut first = [0u8; 256];
    let n = stream
        .read(&mut first)
        .expect("an answer while the head trickles in");
    let took = started.elapsed();
    let mut answer = first[..n].to_vec();
    answer.extend(read_until_closed(&mut stream, Duration::from_secs(3)));
    trickle.join().expect("trickle thread");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("head_timeout"), "{text}");
    println!("a trickled head was answered after {took:?}");
    assert!(
        took >= HEADER_TIMEOUT.mul_f32(0.9) && took < HEADER_TIMEOUT + Duration::from_millis(900),
        "the head deadline counts from the first byte; the answer came after {took:?}"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

/// Stalled bodies hold a connection only until header_timeout: each gets 408 and its slot is
/// given back. The pool parks a thread it grew for up to 30 s in case more connections come,
/// so the OS thread count does not drop within the test; what must hold is that a second
/// wave runs on those same threads instead of adding 50 more.
#[test]
fn stalled_bodies_get_408_and_release_their_threads() {
    // 2 s rather than 1 s, so that all 50 are surely open and measured before the first 408.
    const STALL: Duration = Duration::from_secs(2);
    let (influx, mut gw) = start("header_timeout = \"2s\"\n", "");
    let threads_idle = gw.threads();
    let mut peaks = Vec::new();
    for wave in 0..2 {
        let head = raw(
            "POST",
            REGISTER,
            "Content-Length: 1000\r\n",
            br#"{"host":"stalled","#,
        );
        let mut stalled: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(gw.addr).expect("connect");
                s.write_all(&head)
                    .expect("send the head and a part of the body");
                s
            })
            .collect();
        let sent = Instant::now();
        // All 50 hold a connection (the states request is one more).
        wait_until(STALL / 2, "50 stalled connections", || {
            open_connections(gw.addr) > 50
        });
        let took = ping_within_a_second(gw.addr);
        let peak = gw.threads();
        println!("wave {wave}: 50 stalled bodies, {peak} threads, ping {took:?}");
        assert!(peak < MAX_THREADS, "{peak} threads");
        peaks.push(peak);
        for s in &mut stalled {
            let answer = read_until_closed(s, Duration::from_secs(4));
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with("HTTP/1.1 408 ") && text.contains("body_timeout"),
                "{text}"
            );
        }
        assert!(
            sent.elapsed() < STALL + Duration::from_secs(2),
            "every stalled body was answered when header_timeout was up"
        );
        // Closing our ends ends the server's lingering on them at once.
        drop(stalled);
        wait_until(Duration::from_secs(2), "the slots to be given back", || {
            open_connections(gw.addr) == 1
        });
    }
    println!(
        "threads: {threads_idle} idle, {} and {} with 50 stalled bodies, {} after",
        peaks[0],
        peaks[1],
        gw.threads()
    );
    assert!(
        peaks[1] <= peaks[0] + 2,
        "the second wave reuses the threads of the first: {peaks:?}"
    );
    after_each(&mut gw, &influx, &Expected::default());
}
