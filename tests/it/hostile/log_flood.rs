//! The log under a flood: no client, with or without a token, can make the gateway write
//! more than a bounded number of lines a second (which would fill the disk, and under
//! journald's rate limit push the gateway's own warnings and errors out of the journal); a
//! line says how many were left out, and normal traffic keeps every line.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{connect_from, wait_until};

use super::{Expected, ISRUNNING, PING, after_each, get_authed, start};

/// Access-log lines of `what` (" GET /apiv0.1/ping 200 " and the like) in `log`.
fn lines_of(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// Issue 4: pipelined pings from one address grew the access log by 33 MiB in 5 s, and failed
/// token checks wrote one warning each (65 000 lines in 4 s from many addresses). Now the
/// access log and the refused-token warnings each write a bounded number of lines a second,
/// and then one line saying how many were left out; 50 requests in a row are all logged.
#[test]
fn a_flood_cannot_flood_the_log() {
    let (influx, mut gw) = start("", "");
    // Normal traffic: every line.
    for _ in 0..50 {
        assert_eq!(get_authed(gw.addr, ISRUNNING).status, 200);
    }
    let normal = format!(" GET {ISRUNNING} 200 ");
    wait_until(Duration::from_secs(5), "50 access-log lines", || {
        lines_of(&gw.log(), &normal) == 50
    });

    // Wrong tokens from 200 addresses, 12 requests each: 10 refused checks apiece, then 429.
    let logged_before = gw.log().len();
    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..4u8 {
            let addr = gw.addr;
            s.spawn(move || {
                for i in 0..50u8 {
                    guess(IpAddr::from([127, 0, 1 + t, 1 + i]), addr, 12);
                }
            });
        }
    });
    let guessed_for = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let refused_line = format!("refused GET {ISRUNNING} from ");
    let refused = lines_of(&gw.log()[logged_before..], &refused_line);
    println!("wrong tokens from 200 addresses: {refused} warning lines in {guessed_for:?}");
    // At most 20 a second (api::REFUSED_LINES_PER_SECOND).
    assert!(
        refused <= 20 * (guessed_for.as_secs() as usize + 2),
        "{refused} lines of refused token checks in {guessed_for:?}"
    );

    // Pipelined pings without a token from 127.0.0.2, four connections, for 2 s.
    let logged_before = gw.log().len();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, addr) = (Arc::clone(&stop), Arc::clone(&sent), gw.addr);
            thread::spawn(move || {
                let mut writer = connect_from(IpAddr::from([127, 0, 0, 2]), addr);
                let mut reader = writer.try_clone().expect("clone");
                let drain = thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
                });
                let batch = format!("GET {PING} HTTP/1.1\r\nHost: gw\r\n\r\n").repeat(100);
                while !stop.load(Ordering::SeqCst) && writer.write_all(batch.as_bytes()).is_ok() {
                    sent.fetch_add(100, Ordering::SeqCst);
                }
                let _ = writer.shutdown(std::net::Shutdown::Both);
                drain.join().expect("drain");
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for f in flooders {
        f.join().expect("flooder");
    }
    let flooded_for = started.elapsed();
    // One more wrong token, more than a second after the others: its line comes after one
    // that counts those left out.
    guess(IpAddr::from([127, 0, 9, 1]), gw.addr, 1);
    thread::sleep(Duration::from_millis(300));
    let log = gw.log();
    let pings = lines_of(&log[logged_before..], &format!(" GET {PING} 200 "));
    let grew = log.len() - logged_before;
    println!(
        "ping flood: {} pings sent in {flooded_for:?}, {pings} access-log lines, the log grew by {grew} bytes",
        sent.load(Ordering::SeqCst)
    );
    // At most 200 lines a second (api::ACCESS_LINES_PER_SECOND), in each second the flood
    // and its tail take.
    let seconds = flooded_for.as_secs() as usize + 2;
    assert!(
        pings <= 200 * seconds,
        "{pings} access-log lines in {flooded_for:?} ({grew} bytes)"
    );
    for what in ["access-log lines left out", "refused token checks left out"] {
        assert!(log.contains(what), "a line says how many {what}");
    }
    assert!(
        log[logged_before..].contains(&refused_line),
        "the refused check after the flood is logged"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

/// `n` requests with a wrong token from `from`, pipelined on one connection; the answers are
/// read to the end.
fn guess(from: IpAddr, to: std::net::SocketAddr, n: usize) {
    let request = format!(
        "GET {ISRUNNING} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong-token-0123456789\r\n\r\n"
    );
    let last = format!(
        "GET {ISRUNNING} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong-token-0123456789\r\nConnection: close\r\n\r\n"
    );
    let mut c: TcpStream = connect_from(from, to);
    c.write_all(format!("{}{last}", request.repeat(n - 1)).as_bytes())
        .expect("send");
    let mut answers = Vec::new();
    let _ = c.read_to_end(&mut answers);
}
