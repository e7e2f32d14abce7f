//! The first start over a `storage.dir` written by version 0.1 (`tests/data/storage-0.1`, made
//! by the 0.1.0 binary): nothing that waited there is lost. Its spool is delivered to InfluxDB
//! from the log, its job table (a snapshot and a journal of changes after it) comes back
//! whole, its dead letter stays a dead letter, and the old files are gone.

use std::path::Path;

use serde_json::json;

use crate::support::{ConsumerToml, Gateway, Influxd, TempDir, get, post_json, wait_until};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/storage-0.1");
const A: &str = "475a2d5a-5370-4c0e-9176-d0d53503d187";
const B: &str = "78026c60-cedc-487c-8d4a-8f53ab24046c";
const C: &str = "5c2e5527-0dba-4e66-9e89-6d79515a8ddf";
const D: &str = "9d9df9b8-a510-4d3d-a3e1-13529bb5195f";

fn copy_data(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_data(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_storage_dir_of_version_0_1_is_taken_over_and_nothing_waiting_is_lost() {
    let influx = Influxd::start();
    let dir = TempDir::new("upgrade");
    copy_data(Path::new(FIXTURE), &dir.join("data"));
    // No tick during the test: the finished runs are remembered, whatever the date.
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs")
            .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    assert!(
        gw.log()
            .contains("moved 4 records (8 points) of the version 0.1 spool into the log"),
        "{}",
        gw.log()
    );

    // The job table: every change of the journal, applied over the empty snapshot.
    let running = get(gw.addr, "/apiv0.1/events/isrunning").json();
    assert_eq!(
        running,
        json!({A: false, B: true, C: true, D: false}),
        "{running}"
    );
    let states = get(gw.addr, "/apiv0.1/states").json();
    assert_eq!(states["dead_letters"]["records"], 1, "{states}");

    // The spool's points reach InfluxDB, with their own times.
    wait_until(
        std::time::Duration::from_secs(10),
        "the spool delivered",
        || {
            get(gw.addr, "/apiv0.1/states").json()["spool"]["records"] == 0
                && influx.count("runs", "load_testing_result") == 1
        },
    );
    let started = influx.uuids("runs", "load_testing_events", Some("started"));
    let finished = influx.uuids("runs", "load_testing_events", Some("finished"));
    assert!(started.contains(C) && started.contains(D), "{started:?}");
    assert!(finished.contains(A) && finished.contains(D), "{finished:?}");
    assert_eq!(influx.count("runs", "load_testing_request_stats"), 1);

    // The old files are gone; the log and a fresh snapshot are in their place.
    let data = gw.dir.join("data");
    assert!(!data.join("spool").exists());
    assert!(!data.join("jobs.journal").exists());
    assert!(data.join("log").is_dir());
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("jobs.json")).unwrap()).unwrap();
    assert_eq!(snapshot["jobs"].as_array().unwrap().len(), 4);

    // The run with progress kept its latest fields: its heartbeat after a commit is recorded.
    let commit = post_json(
        gw.addr,
        "/apiv0.1/events/commit",
        &json!({"uuid": C, "measurement": {"fields": {"requestStats": {"total_rps": 2.0}}}}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    let job = states["jobs"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["uuid"] == C)
        .unwrap()
        .clone();
    assert_eq!(job["host"], "lg-c");
}

#[test]
fn a_second_start_after_the_upgrade_finds_the_same_table() {
    let influx = Influxd::start();
    let dir = TempDir::new("upgrade-twice");
    copy_data(Path::new(FIXTURE), &dir.join("data"));
    let toml = ConsumerToml::new(&influx.url, "runs")
        .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
        .toml();
    let mut gw = Gateway::start_in(dir, &toml);
    let before = get(gw.addr, "/apiv0.1/events/isrunning").json();
    gw.kill();
    gw.restart();
    assert_eq!(get(gw.addr, "/apiv0.1/events/isrunning").json(), before);
    let log = gw.log();
    let second = log.rsplit("----- restart -----").next().unwrap();
    assert!(
        !second.contains("moved 4 records"),
        "nothing to move the second time: {second}"
    );
}
