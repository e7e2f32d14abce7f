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

use crate::support::{ConsumerToml, Gateway, Influxd, KeptAlive, connect_from, get, wait_until};

use super::{
    COMMIT, Expected, ISRUNNING, PING, REGISTER, after_each, bearer, get_authed,
    ping_within_a_second, start,
};

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
    let refused_line = format!("refused GET {ISRUNNING} from ");
    // The lines of the first second at least are written by now (the budget writes its first
    // 20 at once); the count of those left out follows within a second or two.
    wait_until(
        Duration::from_secs(10),
        "the refused checks left out told",
        || gw.log()[logged_before..].contains("refused token checks left out"),
    );
    let refused = lines_of(&gw.log()[logged_before..], &refused_line);
    println!("wrong tokens from 200 addresses: {refused} warning lines in {guessed_for:?}");
    // At most 20 a second (logtext::REFUSED_TOKEN_LINES).
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
    // One more wrong token, more than a second after the others, is logged; and the lines
    // after the flood count the pings' access-log lines left out: more than the 2 400
    // requests of the wrong tokens' part could leave out, so they are the flood's.
    guess(IpAddr::from([127, 0, 9, 1]), gw.addr, 1);
    wait_until(
        Duration::from_secs(10),
        "the guess logged and the flood's access-log lines left out told",
        || {
            let log = gw.log();
            let after = &log[logged_before..];
            after.contains(&refused_line) && told_left_out(after, "access-log lines") > 2400
        },
    );
    let log = gw.log();
    let pings = lines_of(&log[logged_before..], &format!(" GET {PING} 200 "));
    let grew = log.len() - logged_before;
    println!(
        "ping flood: {} pings sent in {flooded_for:?}, {pings} access-log lines, the log grew by {grew} bytes",
        sent.load(Ordering::SeqCst)
    );
    // At most 200 lines a second (logtext::ACCESS_LINES), in each second the flood
    // and its tail take.
    let seconds = flooded_for.as_secs() as usize + 2;
    assert!(
        pings <= 200 * seconds,
        "{pings} access-log lines in {flooded_for:?} ({grew} bytes)"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

/// The lines `log` says were left out of `what` ("access-log lines"), summed over the lines
/// that count them (`N what left out in …`).
fn told_left_out(log: &str, what: &str) -> u64 {
    let marker = format!(" {what} left out in the ");
    log.lines()
        .filter_map(|l| {
            let at = l.find(&marker)?;
            l[..at].rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The gateway's lines that say a run was registered or committed, in `log`.
fn run_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.ends_with(" registered") || l.contains(" committed; verdict: "))
        .count()
}

/// Registers and commits one run on `conn`; panics unless both answer 200.
fn cycle(conn: &mut KeptAlive) {
    let auth = bearer();
    let headers = [("Authorization", auth.as_str())];
    let registered = conn
        .post(REGISTER, &headers, r#"{"host": "lg-flood"}"#)
        .expect("register");
    assert_eq!(registered.status, 200, "{}", registered.body);
    let uuid = registered.json()["uuid"]
        .as_str()
        .expect("a uuid")
        .to_string();
    let body = format!(r#"{{"uuid": "{uuid}", "state": "stopped"}}"#);
    let committed = conn.post(COMMIT, &headers, &body).expect("commit");
    assert_eq!(committed.status, 200, "{}", committed.body);
}

/// Every run made a line as it was registered and another as it was committed, unbounded:
/// 8 000 cycles a second against a null InfluxDB wrote 16 000 lines a second, which under
/// journald's rate limit (10 000 lines in 30 s) pushes every later warning out of the journal
/// for the rest of the 30 s. Now those lines share a bound of 100 a second
/// (`logtext::RUN_LINES`), then a line says how many were left out; a few
/// runs are all logged.
#[test]
fn runs_at_any_rate_cannot_flood_the_log() {
    let (_influx, gw) = start("", "");
    let mut conn = KeptAlive::open(gw.addr).expect("connect");
    for _ in 0..10 {
        cycle(&mut conn);
    }
    wait_until(Duration::from_secs(5), "20 lines of runs", || {
        run_lines(&gw.log()) == 20
    });

    // Eight connections, register + commit as fast as they are answered, for 2 s and at
    // least 1 000 cycles (2 000 lines unbounded), whichever is later.
    let logged_before = gw.log().len();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..8 {
            let (done, addr) = (Arc::clone(&done), gw.addr);
            s.spawn(move || {
                let mut conn = KeptAlive::open(addr).expect("connect");
                while started.elapsed() < Duration::from_secs(60)
                    && (started.elapsed() < Duration::from_secs(2)
                        || done.load(Ordering::SeqCst) < 1000)
                {
                    cycle(&mut conn);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let flooded_for = started.elapsed();
    let cycles = done.load(Ordering::SeqCst);
    let lines = run_lines(&gw.log()[logged_before..]);
    println!("{cycles} cycles in {flooded_for:?}: {lines} lines of runs");
    // At most 100 a second, in each second the flood takes.
    let seconds = flooded_for.as_secs() as usize + 2;
    assert!(
        lines <= 100 * seconds,
        "{lines} lines of runs for {cycles} cycles in {flooded_for:?}"
    );
    assert!(cycles >= 1000, "the flood made {cycles} cycles");
    // Every line is written or counted: with no run after the flood, the lines left out in
    // its last second are told once that second is over (the heartbeat loop looks every
    // second), not only before a next line that may never come.
    let what = "lines of runs registered or committed";
    wait_until(
        Duration::from_secs(10),
        "every run line written or told",
        || {
            let log = gw.log();
            let after = &log[logged_before..];
            run_lines(after) as u64 + told_left_out(after, what) == 2 * cycles as u64
        },
    );
    // And a run after it is logged.
    cycle(&mut conn);
    wait_until(
        Duration::from_secs(5),
        "a run after the flood logged",
        || run_lines(&gw.log()[logged_before..]) == lines + 2,
    );
    ping_within_a_second(gw.addr);
}

/// A client whose every write InfluxDB refuses made one error line a write: the lines of
/// refused points share a bound of 20 a second (`logtext::REFUSED_POINTS_LINES`),
/// then a line says how many were left out; every refused point is dead-lettered and counted
/// all the same.
#[test]
fn points_influxdb_refuses_at_any_rate_cannot_flood_the_log() {
    let influx = Influxd::start();
    // Unchecked by the gateway, as causes it cannot see are (`max-values-per-tag`): InfluxDB
    // refuses a string where the first run wrote a number.
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    let dead_lettered = || {
        get(gw.addr, "/apiv0.1/states").json()["counters"]["points_dead_lettered"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut conn = KeptAlive::open(gw.addr).expect("connect");
    let mut register = |fields: &str| {
        let body = format!(r#"{{"host": "lg", "measurement": {{"fields": {fields}}}}}"#);
        let answer = conn.post(REGISTER, &[], &body).expect("register");
        assert_eq!(answer.status, 200, "{}", answer.body);
    };
    register(r#"{"clients": 5}"#);
    let started = Instant::now();
    for _ in 0..600 {
        register(r#"{"clients": "ten"}"#);
    }
    // Each refused register: its `started` event and its first heartbeat.
    wait_until(
        Duration::from_secs(60),
        "600 registers dead-lettered",
        || dead_lettered() >= 1200,
    );
    let took = started.elapsed();
    let refused = "influxdb refused ";
    let lines = lines_of(&gw.log(), refused);
    println!("600 refused registers dead-lettered in {took:?}: {lines} lines of refused points");
    let seconds = took.as_secs() as usize + 2;
    assert!(
        lines <= 20 * seconds,
        "{lines} lines of refused points in {took:?}"
    );
    // Every line is written or counted (one a refused register), the last second's too,
    // with no refusal after them.
    let what = "lines of points InfluxDB refused";
    wait_until(
        Duration::from_secs(10),
        "every refusal written or told",
        || {
            let log = gw.log();
            lines_of(&log, refused) as u64 + told_left_out(&log, what) == 600
        },
    );
    ping_within_a_second(gw.addr);
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

/// Requests without a token are told in a line each at info (a browser asks so before it
/// answers the Basic challenge; nothing counts them, nor answers them 429), and they had the
/// budget of the warnings of wrong tokens: 40 of them in a second, from anyone, left a wrong
/// token guessed in the same second unsaid (its address, and that the address is now
/// answered 429), but for a count.
#[test]
fn requests_without_a_token_do_not_crowd_out_the_warnings_of_wrong_tokens() {
    let (influx, mut gw) = start("", "");
    let request = format!("GET {ISRUNNING} HTTP/1.1\r\nHost: gw\r\n\r\n");
    let last = format!("GET {ISRUNNING} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    let mut c = connect_from(IpAddr::from([127, 0, 0, 3]), gw.addr);
    c.write_all(format!("{}{last}", request.repeat(39)).as_bytes())
        .expect("send");
    let mut answers = Vec::new();
    let _ = c.read_to_end(&mut answers);
    guess(IpAddr::from([127, 0, 0, 4]), gw.addr, 1);
    let wrong = format!("refused GET {ISRUNNING} from 127.0.0.4: wrong token");
    wait_until(Duration::from_secs(3), "the wrong token's warning", || {
        gw.log().contains(&wrong)
    });
    assert!(
        gw.log()
            .contains(&format!("refused GET {ISRUNNING} from 127.0.0.3: no token")),
        "{}",
        gw.log()
    );
    after_each(&mut gw, &influx, &Expected::default());
}
