//! Slowloris from a second loopback address: idle and trickling connections are capped per
//! address and time out, and other clients are served all along.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{connect_from, wait_until};

use super::{
    Expected, MAX_THREADS, PING, after_each, open_connections, ping_within_a_second,
    read_until_closed, start,
};

/// 600 connections from 127.0.0.2, half idle and half trickling a head one byte every
/// 500 ms from two threads: at most max_connections_per_ip (64) of them hold a slot and a
/// thread at any time, the rest get 503 at once, 127.0.0.1 is served within a second all
/// along, and when header_timeout and idle_timeout are up every slot is given back.
#[test]
fn slowloris_from_one_address_does_not_starve_another() {
    const PER_IP: u64 = 64;
    let (influx, mut gw) = start("header_timeout = \"3s\"\nidle_timeout = \"3s\"\n", "");
    let other = IpAddr::from([127, 0, 0, 2]);
    let head = format!("GET {PING} HTTP/1.1\r\nX-Slow: {}", "a".repeat(100));
    // Odd connections trickle. Their first byte goes out on connect, so the server sees a
    // head begin (and its deadline start) however long the 600 connects take.
    let mut idle = Vec::new();
    let mut halves = vec![Vec::new(), Vec::new()];
    for n in 0..600usize {
        let mut c = connect_from(other, gw.addr);
        if n % 2 == 0 {
            idle.push((n, c));
        } else {
            let _ = c.write_all(&head.as_bytes()[..1]);
            halves[n / 2 % 2].push((n, c));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers: Vec<_> = halves
        .into_iter()
        .map(|mut conns| {
            let stop = Arc::clone(&stop);
            let head = head.clone();
            thread::spawn(move || {
                let mut at = 1;
                while !stop.load(Ordering::SeqCst) && at < head.len() {
                    thread::sleep(Duration::from_millis(500));
                    for (_, c) in &mut conns {
                        // Refused connections are closed: their writes fail, which is fine.
                        let _ = c.write_all(&head.as_bytes()[at..=at]);
                    }
                    at += 1;
                }
                conns
            })
        })
        .collect();

    let started = Instant::now();
    let (mut slowest, mut max_threads, mut max_rss, mut max_open) = (Duration::ZERO, 0, 0, 0);
    while started.elapsed() < Duration::from_millis(2500) {
        slowest = slowest.max(ping_within_a_second(gw.addr));
        max_threads = max_threads.max(gw.threads());
        max_rss = max_rss.max(gw.rss_kib());
        // Minus the states request itself and the ping just before it, which may still be
        // closing: what is left is 127.0.0.2's.
        max_open = max_open.max(open_connections(gw.addr).saturating_sub(2));
        thread::sleep(Duration::from_millis(100));
    }
    println!(
        "slowloris: slowest ping {slowest:?}, at most {max_open} connections held, {max_threads} threads, {max_rss} KiB"
    );
    assert!(max_threads < MAX_THREADS, "{max_threads} threads");
    assert!(
        max_open <= PER_IP,
        "{max_open} connections held at once; max_connections_per_ip is {PER_IP}"
    );

    // Every connection was refused at once (503), or held until its deadline: a trickled
    // head gets 408, an idle connection is closed without a word.
    let (mut refused, mut timed_out, mut closed) = (0, 0, 0);
    let mut outcomes = Vec::new();
    for (n, mut c) in idle {
        outcomes.push((n, false, read_until_closed(&mut c, Duration::from_secs(5))));
    }
    stop.store(true, Ordering::SeqCst);
    for t in tricklers {
        for (n, mut c) in t.join().expect("trickler") {
            outcomes.push((n, true, read_until_closed(&mut c, Duration::from_secs(5))));
        }
    }
    for (n, trickled, answer) in &outcomes {
        let text = String::from_utf8_lossy(answer);
        if text.starts_with("HTTP/1.1 503 ") {
            refused += 1;
        } else if *trickled && text.starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        } else if !*trickled && answer.is_empty() {
            closed += 1;
        } else {
            panic!("connection {n} (trickled: {trickled}) got {text:?}");
        }
    }
    println!("slowloris: {refused} refused at once, {timed_out} got 408, {closed} idle closed");
    assert!(
        timed_out > 0 && closed > 0 && refused >= 600 - 2 * PER_IP,
        "most connections beyond the per-IP cap are refused at once"
    );
    wait_until(
        Duration::from_secs(2),
        "every slot to be given back",
        || open_connections(gw.addr) == 1,
    );
    println!("slowloris: {} threads afterwards", gw.threads());
    after_each(&mut gw, &influx, &Expected::default());
}
