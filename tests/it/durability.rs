//! Nothing acknowledged is lost: a 200 means every point of the request is fsync'd in the log
//! under `storage.dir`, from where it reaches InfluxDB (or, when InfluxDB refuses it, the dead
//! letters), through InfluxDB outages, a gateway killed with SIGKILL at random moments in both
//! acknowledgement modes, a refused point, a full log and SIGTERM under load; a write cut short
//! at the end of the log is dropped, a damaged record inside it stops the start; one gateway
//! per `storage.dir`; no link inside it is followed.
//! All against a real `influxd`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    ConsumerToml, Gateway, Influxd, KeptAlive, RawResponse, get, post_json, wait_until,
};

const REGISTER: &str = "/apiv0.1/events/register";
const COMMIT: &str = "/apiv0.1/events/commit";
/// Long enough that no tick writes a heartbeat during a test: every point is from a request.
const NO_TICKS: &str = "[jobs]\nheartbeat_interval = \"1h\"\n";
/// 2016-11-20T10:00:00Z: registers are dated from here, one second apart.
const BASE: i64 = 1_479_636_000;

fn stats_body() -> String {
    json!({"stats": [
        {"name": "/a", "method": "GET", "num_requests": 5, "avg_response_time": 1.5},
        {"name": "Aggregated", "num_requests": 5, "avg_response_time": 1.5}
    ], "total_rps": 2.5, "fail_ratio": 0})
    .to_string()
}

/// One register (2 points) and, when `commit`, its commit (result, 2 rows, finished: 4 points).
/// Returns the uuid and the answers' `delivered` values, or `None` once the gateway is gone.
fn cycle(addr: SocketAddr, i: i64, commit: bool) -> Option<(String, Vec<bool>)> {
    cycle_on(addr, None, i, commit)
}

/// [`cycle`], on `kept` when given (a kept-alive connection: in disk mode the thread that
/// writes the log's group sends the answers), else on a connection a request.
fn cycle_on(
    addr: SocketAddr,
    mut kept: Option<&mut KeptAlive>,
    i: i64,
    commit: bool,
) -> Option<(String, Vec<bool>)> {
    let mut post = |path: &str, body: String| match kept.as_deref_mut() {
        Some(kept) => kept.post(path, &[], &body).ok(),
        None => crate::support::try_request(addr, "POST", path, &[], Some(&body)).ok(),
    };
    let register = post(
        REGISTER,
        json!({"startedAt": BASE + i, "hostname": "lg", "measurement": {"fields": {"clients": i}}})
            .to_string(),
    )?;
    assert_eq!(register.status, 200, "{}", register.body);
    let uuid = register.json()["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut delivered = vec![register.json()["delivered"].as_bool().unwrap()];
    if commit {
        let body = json!({"uuid": uuid, "startedAt": BASE + i + 1,
                          "measurement": {"fields": {"requestStats": stats_body()}}});
        let answer = post(COMMIT, body.to_string())?;
        assert_eq!(answer.status, 200, "{}", answer.body);
        delivered.push(answer.json()["delivered"].as_bool().unwrap());
    }
    Some((uuid, delivered))
}

fn states(addr: SocketAddr) -> Value {
    get(addr, "/apiv0.1/states").json()
}

fn wait_for_empty_spool(addr: SocketAddr) {
    wait_until(Duration::from_secs(60), "the spool to empty", || {
        states(addr)["spool"]["records"] == 0
    });
}

#[test]
fn an_influxdb_outage_loses_nothing() {
    let mut influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    // The start's probe has answered (and the database was made).
    wait_until(Duration::from_secs(10), "the database", || {
        influx.measurements("runs").is_empty() && states(gw.addr)["influxdb"]["up"] == true
    });
    influx.stop();
    for i in 0..200 {
        let (_, delivered) = cycle(gw.addr, i, true).unwrap();
        assert_eq!(delivered, [false, false], "cycle {i} was spooled");
    }
    let s = states(gw.addr);
    assert_eq!(s["spool"]["records"], 400, "{s}");
    assert_eq!(s["counters"]["points_spooled"], 1200);
    assert_eq!(s["influxdb"]["up"], false);
    assert!(s["spool"]["oldest_age_seconds"].is_u64());

    influx.restart();
    wait_for_empty_spool(gw.addr);
    assert_eq!(influx.count("runs", "load_testing"), 200);
    assert_eq!(influx.count("runs", "load_testing_events"), 400);
    assert_eq!(influx.count("runs", "load_testing_result"), 200);
    assert_eq!(influx.count("runs", "load_testing_request_stats"), 400);
    // Replayed points keep their original times.
    let started: HashSet<i64> = influx
        .series("runs", "load_testing_events")
        .into_iter()
        .filter(|r| r["event"] == "started")
        .map(|r| r["time"].as_i64().unwrap())
        .collect();
    assert_eq!(started, (0..200).map(|i| (BASE + i) * 1000).collect());
    let s = states(gw.addr);
    assert_eq!(s["counters"]["points_replayed"], 1200, "{s}");
    assert_eq!(s["influxdb"]["up"], true);
    // New requests go straight to InfluxDB again.
    assert_eq!(cycle(gw.addr, 999, true).unwrap().1, [true, true]);
}

#[test]
fn a_gateway_killed_mid_way_loses_nothing_acknowledged() {
    let mut influx = Influxd::start();
    let mut gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    influx.stop();
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let addr = gw.addr;
    let client = {
        let acked = Arc::clone(&acked);
        thread::spawn(move || {
            for i in 0.. {
                // Every third run stays running, to come back after the restart.
                let commit = i % 3 != 0;
                match cycle(addr, i, commit) {
                    Some((uuid, _)) => acked.lock().unwrap().push((uuid, commit)),
                    None => return,
                }
            }
        })
    };
    wait_until(Duration::from_secs(30), "60 acknowledged cycles", || {
        acked.lock().unwrap().len() >= 60
    });
    gw.kill();
    client.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    influx.restart();
    gw.restart();
    wait_for_empty_spool(gw.addr);
    let registered = influx.uuids("runs", "load_testing_events", Some("started"));
    let finished = influx.uuids("runs", "load_testing_events", Some("finished"));
    let heartbeats = influx.uuids("runs", "load_testing", None);
    let running = get(gw.addr, "/apiv0.1/events/isrunning").json();
    for (uuid, committed) in &acked {
        assert!(
            registered.contains(uuid) && heartbeats.contains(uuid),
            "register of {uuid} was acknowledged"
        );
        if *committed {
            assert!(finished.contains(uuid), "commit of {uuid} was acknowledged");
            assert_eq!(running[uuid], false, "{uuid} is finished after the restart");
        } else {
            assert_eq!(running[uuid], true, "{uuid} is running after the restart");
        }
    }
    // A restored run can still be committed.
    let open = &acked.iter().find(|(_, c)| !c).unwrap().0;
    assert_eq!(
        post_json(gw.addr, COMMIT, &json!({"uuid": open})).status,
        200
    );
}

/// The random moments of a test's kills, in ms below a bound: drawn from a seed that is printed,
/// so that a failure can be run again with the same moments by setting `DURABILITY_SEED`
/// (docs/testing.md). The printed command runs the test by its name, which the test harness
/// gives the thread it runs on; `fallback` where the thread has none.
fn kill_moments(fallback: &str) -> impl FnMut(u64) -> u64 {
    let current = std::thread::current();
    let test = current
        .name()
        .filter(|name| name.starts_with("durability::"))
        .unwrap_or(fallback)
        .to_string();
    let mut seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        })
        | 1;
    eprintln!(
        "seed {seed}: DURABILITY_SEED={seed} cargo nextest run --test it {test} runs again with \
         the same kill moments"
    );
    move |below: u64| {
        // xorshift64: the same seed, the same moments.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below.max(1)
    }
}

/// Kills the gateway (SIGKILL) at `kills` random moments while four clients run cycles
/// against it (two on kept-alive connections, two on a connection a request), restarting it
/// after each, in the given acknowledgement mode with InfluxDB up or down; then checks that
/// every request answered 200 has all its points in InfluxDB, and every acknowledged run its
/// state in the table.
fn killed_at_random_moments(acknowledge: &str, influx_up: bool, kills: usize) {
    let mut influx = Influxd::start();
    let mut gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(
                // Every acknowledged run is checked: none may be forgotten for jobs.max_finished.
                &format!(
                    "[delivery]\nacknowledge = \"{acknowledge}\"\n{NO_TICKS}max_finished = 100000\n"
                ),
            )
            .toml(),
    );
    if !influx_up {
        influx.stop();
    }
    let mut random_ms = kill_moments("durability::kill_9_at_random_moments");
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let mut next = 0i64;
    for round in 0..kills {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (acked, addr) = (Arc::clone(&acked), gw.addr);
                let base = next + c * 10_000;
                thread::spawn(move || {
                    let mut kept = match c % 2 {
                        0 => KeptAlive::open(addr).ok(),
                        _ => None,
                    };
                    for i in 0.. {
                        let commit = i % 3 != 0;
                        match cycle_on(addr, kept.as_mut(), base + i, commit) {
                            Some((uuid, _)) => acked.lock().unwrap().push((uuid, commit)),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        next += 100_000;
        thread::sleep(Duration::from_millis(50 + random_ms(400)));
        gw.kill();
        for c in clients {
            c.join().unwrap();
        }
        eprintln!(
            "round {round}: {} cycles acknowledged",
            acked.lock().unwrap().len()
        );
        gw.restart();
    }
    if !influx_up {
        influx.restart();
    }
    wait_for_empty_spool(gw.addr);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the load ran: {}", acked.len());
    let registered = influx.uuids("runs", "load_testing_events", Some("started"));
    let finished = influx.uuids("runs", "load_testing_events", Some("finished"));
    let heartbeats = influx.uuids("runs", "load_testing", None);
    let results = influx.uuids("runs", "load_testing_result", None);
    let running = get(gw.addr, "/apiv0.1/events/isrunning").json();
    for (uuid, committed) in &acked {
        assert!(
            registered.contains(uuid) && heartbeats.contains(uuid),
            "{acknowledge}, influxdb up {influx_up}: the register of {uuid} was acknowledged"
        );
        if *committed {
            assert!(
                finished.contains(uuid) && results.contains(uuid),
                "{acknowledge}, influxdb up {influx_up}: the commit of {uuid} was acknowledged"
            );
            assert_eq!(
                running[uuid], false,
                "{uuid} is finished after the restarts"
            );
        } else {
            assert_eq!(running[uuid], true, "{uuid} is running after the restarts");
        }
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_on_disk_with_influxdb_up() {
    killed_at_random_moments("disk", true, 3);
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_on_disk_with_influxdb_down() {
    killed_at_random_moments("disk", false, 3);
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_by_influxdb_when_up() {
    killed_at_random_moments("influxdb", true, 3);
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_by_influxdb_when_down() {
    killed_at_random_moments("influxdb", false, 3);
}

#[test]
fn restored_runs_keep_heartbeating() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest("[jobs]\nheartbeat_interval = \"300ms\"\n")
            .toml(),
    );
    let uuid = crate::support::register(
        gw.addr,
        &json!({"host": "h", "measurement": {"fields": {"clients": 1}}}),
    );
    let progress = post_json(
        gw.addr,
        "/apiv0.1/events/progress",
        &json!({"uuid": uuid, "measurement": {"fields": {"clients": 7}}}),
    );
    assert_eq!(progress.status, 200, "{}", progress.body);
    gw.kill();
    let before = influx.series("runs", "load_testing").len();
    gw.restart();
    assert_eq!(
        get(gw.addr, "/apiv0.1/events/isrunning").json()[&uuid],
        true
    );
    wait_until(
        Duration::from_secs(5),
        "heartbeats after the restart",
        || influx.series("runs", "load_testing").len() >= before + 2,
    );
    // The progress acknowledged before the kill is in them.
    let last = influx.series("runs", "load_testing").pop().unwrap();
    assert_eq!(last["clients"], 7.0, "{last:?}");
}

#[test]
fn a_corrupt_job_table_stops_the_start() {
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("corrupt");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/jobs.json"),
        "{\"version\": 1, \"jobs\": [tru",
    )
    .unwrap();
    let err = Gateway::try_start_in(dir, &ConsumerToml::new(&influx.url, "runs").toml())
        .err()
        .expect("refuses to start");
    assert!(
        err.contains("jobs.json") && err.contains("move it away to start with an empty job table"),
        "{err}"
    );
}

/// Registers runs 0..5 and commits runs 0 and 1, kills the gateway, and hands back its
/// directory (the log holds those requests: the snapshot written at start has none of them)
/// and the uuids.
fn log_of_five_runs(influx: &Influxd) -> (crate::support::TempDir, Vec<String>) {
    let mut gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    let uuids: Vec<String> = (0..5)
        .map(|i| cycle(gw.addr, i as i64, false).unwrap().0)
        .collect();
    for (i, uuid) in uuids.iter().take(2).enumerate() {
        let body = json!({"uuid": uuid, "startedAt": BASE + i as i64 + 1});
        assert_eq!(post_json(gw.addr, COMMIT, &body).status, 200);
    }
    gw.kill();
    (
        std::mem::replace(&mut gw.dir, crate::support::TempDir::new("unused")),
        uuids,
    )
}

/// The segment of a log with no more than one, and the offsets of its records.
fn segment_and_records(dir: &crate::support::TempDir) -> (std::path::PathBuf, Vec<(u64, u64)>) {
    let log = dir.join("data/log");
    let mut segments: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let segment = segments.pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    // The segment's header names the format and its version; the records follow it.
    assert_eq!(&bytes[..8], b"MCLOG\0\x04\0", "{}", segment.display());
    // The header of each record: its length (u32), checksum (u32) and number (u64).
    let mut records = Vec::new();
    let mut at = 8usize;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        records.push((seq, at as u64));
        at += 16 + len;
    }
    (segment, records)
}

/// A log segment of another version of the format, or another program's file, and a `jobs.json`
/// of another format, stop the start (exit 2) naming the file, what it holds and what this
/// program reads; nothing is guessed.
#[test]
fn files_of_another_format_or_version_stop_the_start_naming_them() {
    let influx = Influxd::start();
    let (dir, _) = log_of_five_runs(&influx);
    let (segment, _) = segment_and_records(&dir);
    let toml = ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml();
    std::fs::write(dir.join("consumer.toml"), &toml).unwrap();
    let start = || {
        let out = Gateway::command(dir.path())
            .args(["--config", "consumer.toml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "the start stops");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let original = std::fs::read(&segment).unwrap();
    let file = |p: &std::path::Path| p.strip_prefix(dir.path()).unwrap().display().to_string();
    for (header, says) in [
        (&b"MCLOG\0\x05\0"[..], "it is of version 5 of the format"),
        (b"RAFTLOG\x01", "it is not a file of metrics-consumer's log"),
    ] {
        let mut bytes = original.clone();
        bytes[..8].copy_from_slice(header);
        std::fs::write(&segment, &bytes).unwrap();
        let err = start();
        assert!(
            err.contains(&file(&segment))
                && err.contains(says)
                && err.contains("reads log segments of format \"MCLOG\" versions 1 to 4"),
            "{err}"
        );
    }
    std::fs::write(&segment, &original).unwrap();
    let jobs = dir.join("data/jobs.json");
    let table = std::fs::read_to_string(&jobs).unwrap();
    std::fs::write(
        &jobs,
        table.replacen("metrics-consumer-jobs", "another-program", 1),
    )
    .unwrap();
    let err = start();
    assert!(
        err.contains(&file(&jobs)) && err.contains(r#"it opens with "format": "another-program""#),
        "{err}"
    );
    std::fs::write(&jobs, table).unwrap();
    Gateway::start_in(dir, &toml);
}

/// Case 4 of the durable path: a byte set to NUL in the middle of an acknowledged record, with
/// whole records after it, stops the start, naming the file and the offset; `--repair` drops
/// that record knowingly and keeps the others.
#[test]
fn a_damaged_record_inside_the_log_stops_the_start_and_repair_keeps_the_others() {
    let influx = Influxd::start();
    let (dir, uuids) = log_of_five_runs(&influx);
    let (segment, records) = segment_and_records(&dir);
    assert_eq!(
        records.len(),
        7,
        "five registers and two commits: {records:?}"
    );
    let (_, third) = records[2];
    let (_, fourth) = records[3];
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[((third + fourth) / 2) as usize] = 0;
    std::fs::write(&segment, &bytes).unwrap();
    let toml = ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml();
    std::fs::write(dir.join("consumer.toml"), &toml).unwrap();
    let refused = Gateway::command(dir.path())
        .args(["--config", "consumer.toml"])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a damaged log stops the start"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    let file = segment
        .strip_prefix(dir.path())
        .unwrap()
        .display()
        .to_string();
    assert!(
        err.contains(&file)
            && err.contains(&format!("the record at byte {third} "))
            && err.contains("--repair"),
        "{err}"
    );
    let gw = Gateway::start_in_with_args(dir, &toml, &["--repair"]);
    assert!(gw.log().contains("--repair:"), "{}", gw.log());
    let running = get(gw.addr, "/apiv0.1/events/isrunning").json();
    assert_eq!(running[&uuids[0]], false, "committed");
    assert_eq!(running[&uuids[1]], false, "committed");
    assert_eq!(
        running[&uuids[2]],
        Value::Null,
        "its register was the damaged record"
    );
    assert_eq!(running[&uuids[3]], true);
    assert_eq!(running[&uuids[4]], true);
}

/// The last record cut short: it was being written when the process died, never answered, so
/// the start drops it and goes on.
#[test]
fn a_write_cut_short_at_the_end_of_the_log_is_dropped_at_the_start() {
    let influx = Influxd::start();
    let (dir, uuids) = log_of_five_runs(&influx);
    let (segment, records) = segment_and_records(&dir);
    let (_, last) = records[6];
    let mut bytes = std::fs::read(&segment).unwrap();
    // The second half of the last record never reached the disk.
    let cut = last as usize + 20;
    bytes[cut..].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml(),
    );
    assert!(gw.log().contains("cut short"), "{}", gw.log());
    let running = get(gw.addr, "/apiv0.1/events/isrunning").json();
    assert_eq!(running[&uuids[0]], false);
    assert_eq!(
        running[&uuids[1]], true,
        "its commit was the record cut short"
    );
    assert_eq!(running[&uuids[4]], true);
}

/// Case 6: no link inside storage.dir is followed. One left before the start stops it with a
/// clear error; one made while the gateway runs, where the stop writes its snapshot, is
/// replaced, and what it pointed at is left alone.
#[test]
fn links_inside_storage_dir_are_refused_or_replaced_never_followed() {
    let influx = Influxd::start();
    let target = crate::support::TempDir::new("link-target");
    let precious = target.join("precious");
    std::fs::write(&precious, "keep me").unwrap();

    let dir = crate::support::TempDir::new("links");
    std::fs::create_dir_all(dir.join("data/log")).unwrap();
    std::os::unix::fs::symlink(&precious, dir.join("data/log/00000000000000000001.log")).unwrap();
    let err = Gateway::try_start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml(),
    )
    .err()
    .expect("refuses to start");
    assert!(
        err.contains("00000000000000000001.log is a symbolic link") && err.contains("move it away"),
        "{err}"
    );

    let mut gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    std::os::unix::fs::symlink(&precious, gw.dir.join("data/jobs.json.tmp")).unwrap();
    assert_eq!(post_json(gw.addr, REGISTER, &json!({})).status, 200);
    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(15)).unwrap().success());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert!(
        std::fs::symlink_metadata(gw.dir.join("data/jobs.json"))
            .unwrap()
            .is_file()
    );
}

/// Case 5: one gateway per storage.dir. A second one in the same directory stops at once,
/// naming the first one's pid; `replay-dead-letters` may run beside the first.
#[test]
fn a_second_gateway_in_the_same_storage_dir_stops_at_once() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    let second = Gateway::command(gw.dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is in use by another metrics-consumer")
            && err.contains(&format!("(pid {})", gw.pid())),
        "{err}"
    );
    let replay = Gateway::command(gw.dir.path())
        .arg("replay-dead-letters")
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    // The first gateway was not disturbed.
    assert_eq!(post_json(gw.addr, REGISTER, &json!({})).status, 200);
}

/// Removing the lock file does not let a second gateway into the directory: the lock is held
/// on the directory itself, and the second one still names the first one's pid.
#[test]
fn a_removed_lock_file_does_not_let_a_second_gateway_in() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    std::fs::remove_file(gw.dir.join("data/lock")).unwrap();
    let mut second = Gateway::command(gw.dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            second.wait().unwrap();
            panic!("a second gateway started in the same storage.dir");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("is in use by another metrics-consumer")
            && err.contains(&format!("(pid {})", gw.pid())),
        "{err}"
    );
    assert_eq!(post_json(gw.addr, REGISTER, &json!({})).status, 200);
}

/// A gateway with one dead letter: `clients` is a float in InfluxDB after the first register,
/// and the second sends it as a string, a field type conflict InfluxDB refuses. Returns the
/// gateway and the answer to that second register.
fn gateway_with_a_dead_letter(influx: &Influxd) -> (Gateway, RawResponse) {
    // The gateway's own check of field types is off, so the conflict reaches InfluxDB.
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest(NO_TICKS)
            .toml(),
    );
    let first = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {"clients": 1}}}),
    );
    assert_eq!(first.json()["delivered"], true);
    let conflict = post_json(
        gw.addr,
        REGISTER,
        &json!({"host": "odd", "measurement": {"fields": {"clients": "many"}}}),
    );
    assert_eq!(conflict.status, 200, "{}", conflict.body);
    (gw, conflict)
}

#[test]
fn a_refused_point_goes_to_the_dead_letters_and_the_next_write_succeeds() {
    let influx = Influxd::start();
    let (gw, conflict) = gateway_with_a_dead_letter(&influx);
    assert_eq!(conflict.json()["delivered"], false);
    let why = conflict.json()["dead_letter"].as_str().unwrap().to_string();
    assert!(why.contains("conflict"), "{why}");
    let next = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {"clients": 2}}}),
    );
    assert_eq!(next.json()["delivered"], true, "{}", next.body);
    let s = states(gw.addr);
    assert_eq!(s["dead_letters"]["records"], 1);
    assert_eq!(
        s["jobs"]["running"], 3,
        "the run with the refused point goes on"
    );

    // The dead letter is readable line protocol next to InfluxDB's message.
    let dead = gw.dir.join("data/dead-letter");
    let mut files: Vec<_> = std::fs::read_dir(&dead)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let lines = std::fs::read_to_string(
        files
            .iter()
            .find(|p| p.extension().unwrap() == "lp")
            .unwrap(),
    )
    .unwrap();
    assert!(
        lines.contains("clients=\"many\"") && lines.contains("host=odd"),
        "{lines}"
    );
    let error = std::fs::read_to_string(
        files
            .iter()
            .find(|p| p.extension().unwrap() == "error")
            .unwrap(),
    )
    .unwrap();
    assert!(error.contains("conflict"), "{error}");
}

#[test]
fn replay_dead_letters_delivers_them_once_the_cause_is_fixed() {
    let influx = Influxd::start();
    let (gw, conflict) = gateway_with_a_dead_letter(&influx);
    assert_eq!(conflict.json()["delivered"], false, "{}", conflict.body);
    let dead = gw.dir.join("data/dead-letter");

    // After fixing the cause, `replay-dead-letters` delivers them and empties the folder.
    let refused = Gateway::command(gw.dir.path())
        .arg("replay-dead-letters")
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "still a conflict, refused again: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // InfluxDB 1.x keeps a field's type until its shard goes; here the database starts over
    // (the command creates it again, as the service does).
    influx.query("runs", "DROP DATABASE runs");
    let replayed = Gateway::command(gw.dir.path())
        .arg("replay-dead-letters")
        .output()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("1 dead letters delivered"));
    let left: Vec<_> = std::fs::read_dir(&dead)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let odd = influx.series("runs", "load_testing");
    assert_eq!(odd.len(), 1);
    assert_eq!(odd[0]["clients"], "many");
}

#[test]
fn a_full_spool_answers_503_and_loses_nothing_accepted() {
    let mut influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!("max_spool_bytes = 5000\n{NO_TICKS}"))
            .toml(),
    );
    influx.stop();
    let mut accepted = 0;
    let full = loop {
        let answer = post_json(
            gw.addr,
            REGISTER,
            &json!({"host": "h", "measurement": {"fields": {"clients": 1}}}),
        );
        if answer.status != 200 {
            break answer;
        }
        accepted += 1;
        assert!(accepted < 100, "the spool should be full by now");
    };
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["code"], "spool_full");
    assert!(
        full.json()["error"]
            .as_str()
            .unwrap()
            .contains("storage.max_spool_bytes")
    );
    assert!(full.header("retry-after").is_some());
    let s = states(gw.addr);
    assert_eq!(
        s["jobs"]["running"], accepted,
        "a refused register leaves no job: {s}"
    );
    assert!(s["spool"]["bytes"].as_u64().unwrap() <= 5000);
    // Every write is refused: a load balancer reading /health must not be told otherwise.
    let health = get(gw.addr, "/health");
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["status"], "fail", "{}", health.body);
    assert!(
        health.body.contains("storage.max_spool_bytes"),
        "{}",
        health.body
    );

    influx.restart();
    wait_for_empty_spool(gw.addr);
    assert_eq!(influx.count("runs", "load_testing"), accepted);
    let health = get(gw.addr, "/health");
    assert_eq!(health.json()["status"], "pass", "{}", health.body);
    assert_eq!(
        post_json(gw.addr, REGISTER, &json!({})).status,
        200,
        "room again"
    );
}

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped. Only root may mount: the test
/// fails saying so otherwise.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        assert!(
            mounted.is_ok_and(|s| s.success()),
            "this test fills a small tmpfs under storage.dir: run it as root (with `mount`)"
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A gateway whose `storage.dir` is a tmpfs of `size`, writing to `influx` (up at start, then
/// stopped: the log fills the disk), heartbeating every `heartbeat`; and the wide fields (8 of
/// 400 characters) that fill it fast.
fn gateway_on_small_disk(
    influx: &mut Influxd,
    name: &str,
    size: &str,
    heartbeat: &str,
) -> (Gateway, SmallDisk, serde_json::Map<String, Value>) {
    let dir = crate::support::TempDir::new(name);
    let disk = SmallDisk::mount(&dir.join("data"), size);
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!("[delivery]\nacknowledge = \"disk\"\n[jobs]\nheartbeat_interval = \"{heartbeat}\"\nmax_running = 5000\nmax_table_bytes = 268435456\n"))
            .toml(),
    );
    // The start's probe answered (and the database was made).
    wait_until(Duration::from_secs(10), "the database", || {
        states(gw.addr)["influxdb"]["up"] == true
    });
    influx.stop();
    let wide = (0..8)
        .map(|f| (format!("note{f}"), json!("n".repeat(400))))
        .collect();
    (gw, disk, wide)
}

/// Registers wide runs (`wide`: their fields) until the gateway refuses one: the uuids
/// acknowledged, and the refusal.
fn register_until_full(
    gw: &Gateway,
    wide: &serde_json::Map<String, Value>,
) -> (Vec<String>, crate::support::RawResponse) {
    let mut acked = Vec::new();
    loop {
        let answer = post_json(
            gw.addr,
            REGISTER,
            &json!({"startedAt": BASE + acked.len() as i64, "hostname": "lg", "measurement": {"fields": wide}}),
        );
        if answer.status != 200 {
            return (acked, answer);
        }
        acked.push(answer.json()["data"]["uuid"].as_str().unwrap().to_string());
        assert!(acked.len() < 5000, "the disk should be full by now");
    }
}

/// storage.dir on a 36 MiB disk filled by the log while InfluxDB is away (600 running runs
/// with 8 fields of 400 characters, then commits until the disk is full): once InfluxDB has
/// the log, the snapshot that lets its delivered segments go is written from the room kept for
/// it, and registers are answered again without anyone freeing space; a stop and a start on
/// that disk work too.
#[test]
fn a_disk_filled_while_influxdb_was_away_frees_itself_once_the_log_is_delivered() {
    let mut influx = Influxd::start();
    let (mut gw, disk, wide) = gateway_on_small_disk(&mut influx, "small-disk", "36m", "2s");
    for i in 0..600 {
        let answer = post_json(
            gw.addr,
            REGISTER,
            &json!({"startedAt": BASE + i, "hostname": "lg", "measurement": {"fields": wide}}),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let rows: Vec<Value> = (0..300)
        .map(|r| json!({"name": format!("/page/{r}"), "method": "GET", "num_requests": 5, "avg_response_time": 1.5}))
        .collect();
    let stats = json!({"stats": rows, "total_rps": 2.5, "fail_ratio": 0}).to_string();
    let mut acked = 0;
    let full = loop {
        let register = post_json(
            gw.addr,
            REGISTER,
            &json!({"startedAt": BASE + 1000 + acked, "hostname": "lg"}),
        );
        if register.status != 200 {
            break register;
        }
        let uuid = register.json()["data"]["uuid"]
            .as_str()
            .unwrap()
            .to_string();
        let commit = json!({"uuid": uuid, "startedAt": BASE + 1001 + acked,
                            "measurement": {"fields": {"requestStats": stats}}});
        let answer = post_json(gw.addr, COMMIT, &commit);
        if answer.status != 200 {
            break answer;
        }
        acked += 1;
        assert!(acked < 5000, "the disk should be full by now");
    };
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["code"], "storage_error", "{}", full.body);

    influx.restart();
    wait_until(Duration::from_secs(180), "the log delivered", || {
        states(gw.addr)["spool"]["records"] == 0
    });
    wait_until(
        Duration::from_secs(60),
        "a register answered without anyone freeing space",
        || post_json(gw.addr, REGISTER, &json!({})).status == 200,
    );
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    gw.restart();
    assert_eq!(post_json(gw.addr, REGISTER, &json!({})).status, 200);
    let s = states(gw.addr);
    assert!(s["jobs"]["running"].as_u64().unwrap() >= 602, "{s}");
    assert_eq!(
        influx
            .uuids("runs", "load_testing_events", Some("finished"))
            .len(),
        acked as usize
    );
    gw.kill();
    drop(disk);
}

/// storage.dir on a 12 MiB disk filled while InfluxDB is away by the registers of wide runs
/// (8 fields of 400 characters), the log still in its first segment, the one being written:
/// a stop on the full disk exits cleanly and the next start comes up on it;
/// once InfluxDB has the log, that segment is let go for a new one, the room kept for the
/// snapshot was grown with the table, and registers are answered again without anyone freeing
/// space; the error of the snapshot that cannot be written is not logged every second.
#[test]
fn a_full_disk_whose_only_segment_is_still_being_written_frees_itself_once_the_log_is_delivered() {
    let mut influx = Influxd::start();
    // No tick comes while the test runs: the way out must not wait for one (the issue's own
    // setting), and no heartbeats fill the disk again.
    let (mut gw, disk, wide) = gateway_on_small_disk(&mut influx, "one-segment-disk", "12m", "1h");
    let (acked, full) = register_until_full(&gw, &wide);
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["code"], "storage_error", "{}", full.body);
    // The state page says why requests are refused, until a write succeeds.
    let shown = states(gw.addr);
    assert!(
        shown["spool"]["write_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "{shown}"
    );

    // A stop on the full disk, and a start on it, InfluxDB still away.
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    gw.restart();

    influx.restart();
    wait_until(Duration::from_secs(180), "the log delivered", || {
        states(gw.addr)["spool"]["records"] == 0
    });
    wait_until(
        Duration::from_secs(60),
        "a register answered without anyone freeing space",
        || post_json(gw.addr, REGISTER, &json!({})).status == 200,
    );
    let shown = states(gw.addr);
    assert!(shown["spool"]["write_error"].is_null(), "{shown}");
    let log = gw.log();
    let since_start = &log[log.rfind("----- restart -----").unwrap()..];
    let snapshot_errors: Vec<&str> = since_start
        .lines()
        .filter(|l| l.contains("jobs.json") && l.contains("No space left"))
        .collect();
    // Under the log target of the part that failed, as its other lines are.
    for line in &snapshot_errors {
        assert!(
            line.contains("[ERROR] metrics_consumer::state::snapshots:"),
            "{line}"
        );
    }
    let repeated = snapshot_errors.len();
    assert!(
        repeated <= 3,
        "the snapshot's error is not repeated every second ({repeated} lines):\n{since_start}"
    );
    // Logged before the register was answered; read from the gateway's stderr a little later.
    wait_until(
        Duration::from_secs(10),
        "the segment being written is let go, not written on",
        || {
            let log = gw.log();
            log[log.rfind("----- restart -----").unwrap()..]
                .contains("is delivered and in a snapshot: let go")
        },
    );
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    // A start on a full disk gets out the same way.
    gw.restart();
    wait_until(
        Duration::from_secs(120),
        "a register answered after the start",
        || post_json(gw.addr, REGISTER, &json!({})).status == 200,
    );
    let s = states(gw.addr);
    assert!(
        s["jobs"]["running"].as_u64().unwrap() >= acked.len() as u64 + 2,
        "{s}"
    );
    let started = influx.uuids("runs", "load_testing_events", Some("started"));
    for uuid in &acked {
        assert!(
            started.contains(uuid),
            "acknowledged register of {uuid} is in InfluxDB"
        );
    }
    gw.kill();
    drop(disk);
}

/// `GET /health` is what InfluxDB's clients and load balancers ask before they write, and the
/// gateway answers it for InfluxDB ("`pass` while the gateway takes writes", says its
/// handler). On a full disk every write is refused 503 `storage_error`, yet /health answered
/// 200 `{"status": "pass", "message": "ready for queries and writes"}`: it must say `fail`
/// (503, as InfluxDB 2 does when it is not ready) until the log can be written again.
#[test]
fn health_does_not_pass_while_a_full_disk_refuses_every_write() {
    let mut influx = Influxd::start();
    let (gw, disk, wide) = gateway_on_small_disk(&mut influx, "health-full-disk", "12m", "1h");
    // Bound again after `disk`, so that a failure stops the gateway before it unmounts the disk.
    let mut gw = gw;
    let (_, full) = register_until_full(&gw, &wide);
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["code"], "storage_error", "{}", full.body);
    let health = get(gw.addr, "/health");
    assert_ne!(
        (health.status, health.json()["status"].clone()),
        (200, json!("pass")),
        "/health passes while writes are refused for a full disk: {}",
        health.body
    );
    gw.kill();
    drop(disk);
}

#[test]
fn sigterm_under_load_exits_0_and_keeps_everything_acknowledged() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(NO_TICKS).toml());
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, addr) = (Arc::clone(&acked), gw.addr);
            thread::spawn(move || {
                for i in 0.. {
                    match cycle(addr, c * 100_000 + i, true) {
                        Some((uuid, _)) => acked.lock().unwrap().push((uuid, true)),
                        None => return,
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "some load", || {
        acked.lock().unwrap().len() >= 20
    });
    gw.terminate();
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    for c in clients {
        c.join().unwrap();
    }
    // Whatever was spooled is delivered by the next start.
    gw.restart();
    wait_for_empty_spool(gw.addr);
    let finished = influx.uuids("runs", "load_testing_events", Some("finished"));
    for (uuid, _) in acked.lock().unwrap().iter() {
        assert!(
            finished.contains(uuid),
            "acknowledged commit of {uuid} is in InfluxDB"
        );
    }
}

/// The room kept for the snapshot is spent once (registers filled the disk while InfluxDB was
/// away; once it is back the segment is let go), then, before any register could grow that room
/// back, InfluxDB goes away again and the runs' commits fill the disk again. Once InfluxDB is
/// back and has the log, the disk frees itself as the first time.
#[test]
fn a_disk_filled_again_by_commits_after_the_room_was_spent_frees_itself_again() {
    let mut influx = Influxd::start();
    let (mut gw, disk, wide) = gateway_on_small_disk(&mut influx, "refill-disk", "12m", "1h");
    let (acked, full) = register_until_full(&gw, &wide);
    assert_eq!(full.status, 503, "{}", full.body);
    influx.restart();
    wait_until(Duration::from_secs(180), "the log delivered", || {
        states(gw.addr)["spool"]["records"] == 0
    });
    wait_until(Duration::from_secs(30), "the segment let go", || {
        gw.log().contains("is delivered and in a snapshot: let go")
    });
    // InfluxDB away again; the runs commit until the disk is full.
    influx.stop();
    let note = "c".repeat(30_000);
    let mut committed = 0;
    let full = loop {
        let Some(uuid) = acked.get(committed) else {
            panic!("all {committed} runs committed, the disk is not full");
        };
        let answer = post_json(
            gw.addr,
            COMMIT,
            &json!({"uuid": uuid, "measurement": {"fields": {"note": note}}}),
        );
        if answer.status != 200 {
            break answer;
        }
        committed += 1;
    };
    assert_eq!(full.status, 503, "{}", full.body);
    eprintln!("{committed} commits before the disk was full again");
    influx.restart();
    wait_until(Duration::from_secs(180), "the log delivered", || {
        states(gw.addr)["spool"]["records"] == 0
    });
    wait_until(
        Duration::from_secs(60),
        "a register answered without anyone freeing space",
        || post_json(gw.addr, REGISTER, &json!({})).status == 200,
    );
    gw.kill();
    drop(disk);
}

/// A disk filled while InfluxDB was away; InfluxDB back; the gateway killed (SIGKILL) at random
/// moments while it frees the disk (the snapshot from the room kept for it, the segment let go):
/// it still frees itself, and every acknowledged register is in InfluxDB.
#[test]
fn kill_9_while_a_full_disk_frees_itself_loses_nothing_and_frees_it() {
    let mut influx = Influxd::start();
    let (mut gw, disk, wide) = gateway_on_small_disk(&mut influx, "kill-full-disk", "12m", "1h");
    let (mut acked, full) = register_until_full(&gw, &wide);
    assert_eq!(full.status, 503, "{}", full.body);
    let mut random_ms = kill_moments("durability::kill_9_while_a_full_disk");
    influx.restart();
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(random_ms(700)));
        // Registers meanwhile: some may land in the freed room.
        let answer = post_json(
            gw.addr,
            REGISTER,
            &json!({"startedAt": BASE + 9000 + acked.len() as i64, "hostname": "lg", "measurement": {"fields": wide}}),
        );
        if answer.status == 200 {
            acked.push(answer.json()["data"]["uuid"].as_str().unwrap().to_string());
        }
        gw.kill();
        gw.restart();
    }
    wait_until(Duration::from_secs(180), "the log delivered", || {
        states(gw.addr)["spool"]["records"] == 0
    });
    wait_until(
        Duration::from_secs(60),
        "a register answered without anyone freeing space",
        || post_json(gw.addr, REGISTER, &json!({})).status == 200,
    );
    let started = influx.uuids("runs", "load_testing_events", Some("started"));
    for uuid in &acked {
        assert!(
            started.contains(uuid),
            "acknowledged register of {uuid} is in InfluxDB"
        );
    }
    let s = states(gw.addr);
    assert!(
        s["jobs"]["running"].as_u64().unwrap() > acked.len() as u64,
        "{s}"
    );
    gw.kill();
    drop(disk);
}
