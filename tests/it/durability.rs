//! Nothing acknowledged is lost: a 200 means every point of the request is stored by InfluxDB
//! or fsync'd to the spool (or, when InfluxDB refuses it, kept in the dead letters), through
//! InfluxDB outages, a gateway killed with SIGKILL, a refused point, a full spool and SIGTERM
//! under load, all against a real `influxd`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Gateway, Influxd, RawResponse, config, get, post_json, wait_until};

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
    let register = crate::support::try_request(
        addr,
        "POST",
        REGISTER,
        &[],
        Some(&json!({"startedAt": BASE + i, "hostname": "lg", "measurement": {"fields": {"clients": i}}}).to_string()),
    )
    .ok()?;
    assert_eq!(register.status, 200, "{}", register.body);
    let uuid = register.json()["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut delivered = vec![register.json()["delivered"].as_bool().unwrap()];
    if commit {
        let body = json!({"uuid": uuid, "startedAt": BASE + i + 1,
                          "measurement": {"fields": {"requestStats": stats_body()}}});
        let answer =
            crate::support::try_request(addr, "POST", COMMIT, &[], Some(&body.to_string())).ok()?;
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
    let gw = Gateway::start(&config(&influx.url, "runs", NO_TICKS));
    wait_until(Duration::from_secs(5), "the database", || {
        influx.measurements("runs").is_empty()
            && states(gw.addr)["influxdb"]["last_success"].is_string()
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
    let mut gw = Gateway::start(&config(&influx.url, "runs", NO_TICKS));
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

#[test]
fn restored_runs_keep_heartbeating() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(&config(
        &influx.url,
        "runs",
        "[jobs]\nheartbeat_interval = \"300ms\"\n",
    ));
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
    let err = Gateway::try_start_in(dir, &config(&influx.url, "runs", ""))
        .err()
        .expect("refuses to start");
    assert!(
        err.contains("jobs.json") && err.contains("move jobs.json and jobs.journal away"),
        "{err}"
    );
}

/// The records of a journal file, without the zeros that follow them.
fn records(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let end = text.find('\0').unwrap_or(text.len());
    assert!(
        text[end..].bytes().all(|b| b == 0),
        "only zeros follow the records"
    );
    text[..end].to_string()
}

/// Registers `n` runs, kills the gateway and hands back its directory with the journal of
/// those registers (the snapshot written at start has none of them).
fn journal_of_registers(influx: &Influxd, n: usize) -> (crate::support::TempDir, Vec<String>) {
    let mut gw = Gateway::start(&config(&influx.url, "runs", NO_TICKS));
    let uuids = (0..n)
        .map(|i| cycle(gw.addr, i as i64, false).unwrap().0)
        .collect();
    gw.kill();
    let journal = records(&gw.dir.join("data/jobs.journal"));
    assert_eq!(journal.lines().count(), n, "one record per register");
    (
        std::mem::replace(&mut gw.dir, crate::support::TempDir::new("unused")),
        uuids,
    )
}

#[test]
fn a_corrupt_journal_stops_the_start() {
    let influx = Influxd::start();
    let (dir, _) = journal_of_registers(&influx, 3);
    let path = dir.join("data/jobs.journal");
    let text = records(&path);
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, format!("{}\n{{\"seq\":\n{}\n", lines[0], lines[2])).unwrap();
    let err = Gateway::try_start_in(dir, &config(&influx.url, "runs", NO_TICKS))
        .err()
        .expect("refuses to start");
    assert!(
        err.contains("jobs.journal") && err.contains("line 2") && err.contains("move jobs.json"),
        "{err}"
    );
}

/// The last record cut short: it was being written when the process died, never answered, so
/// the start drops it and goes on.
#[test]
fn a_torn_last_journal_record_is_dropped_at_the_start() {
    let influx = Influxd::start();
    let (dir, uuids) = journal_of_registers(&influx, 3);
    let path = dir.join("data/jobs.journal");
    let text = records(&path);
    std::fs::write(&path, &text[..text.len() - 30]).unwrap();
    let gw = Gateway::start_in(dir, &config(&influx.url, "runs", NO_TICKS));
    assert!(gw.log().contains("cut short"), "{}", gw.log());
    let running = get(gw.addr, "/apiv0.1/events/isrunning").json();
    assert_eq!(running[&uuids[0]], true);
    assert_eq!(running[&uuids[1]], true);
    assert_eq!(running[&uuids[2]], Value::Null);
    assert_eq!(
        records(&gw.dir.join("data/jobs.journal")),
        "",
        "the start folds the journal into a fresh jobs.json"
    );
}

#[test]
fn a_job_table_that_cannot_be_written_refuses_the_register_and_the_server_goes_on() {
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("full-disk");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // Every write to /dev/full fails with ENOSPC: a full disk, on demand, for the journal and
    // for the temporary file a new jobs.json is written to.
    std::os::unix::fs::symlink("/dev/full", dir.join("data/jobs.journal")).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("data/jobs.tmp")).unwrap();
    let gw = Gateway::start_in(dir, &config(&influx.url, "runs", NO_TICKS));
    let answer = post_json(gw.addr, REGISTER, &json!({"host": "h"}));
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.json()["code"], "storage_error", "{}", answer.body);
    assert!(
        answer.body.contains("No space left") && answer.header("retry-after").is_some(),
        "{}",
        answer.body
    );
    assert_eq!(
        get(gw.addr, "/apiv0.1/events/isrunning").json(),
        json!({}),
        "a register that could not be saved is not in the table"
    );
    assert_eq!(
        post_json(gw.addr, REGISTER, &json!({"host": "h"})).status,
        503,
        "and so is the next one, while the disk stays full"
    );
    assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
    assert!(
        gw.log()
            .contains("registers are refused until the job table can be saved"),
        "{}",
        gw.log()
    );
}

/// A gateway with one dead letter: `clients` is a float in InfluxDB after the first register,
/// and the second sends it as a string, a field type conflict InfluxDB refuses. Returns the
/// gateway and the answer to that second register.
fn gateway_with_a_dead_letter(influx: &Influxd) -> (Gateway, RawResponse) {
    let gw = Gateway::start(&config(&influx.url, "runs", NO_TICKS));
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
        Some(2),
        "still a conflict: {}",
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
    assert_eq!(std::fs::read_dir(&dead).unwrap().count(), 0);
    let odd = influx.series("runs", "load_testing");
    assert_eq!(odd.len(), 1);
    assert_eq!(odd[0]["clients"], "many");
}

#[test]
fn a_full_spool_answers_503_and_loses_nothing_accepted() {
    let mut influx = Influxd::start();
    let gw = Gateway::start(&config(
        &influx.url,
        "runs",
        &format!("max_spool_bytes = 5000\n{NO_TICKS}"),
    ));
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

    influx.restart();
    wait_for_empty_spool(gw.addr);
    assert_eq!(influx.count("runs", "load_testing"), accepted);
    assert_eq!(
        post_json(gw.addr, REGISTER, &json!({})).status,
        200,
        "room again"
    );
}

#[test]
fn sigterm_under_load_exits_0_and_keeps_everything_acknowledged() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(&config(&influx.url, "runs", NO_TICKS));
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
