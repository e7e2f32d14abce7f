//! No link under `storage.dir` is followed while the gateway runs: `log/`, `dead-letter/` and
//! `storage.dir` itself, moved away and replaced by links to another directory, leave that
//! directory empty. The gateway goes on writing into the directories it opened at the start,
//! wherever they now are, acknowledging and delivering requests, dead-lettering refusals, and
//! says so once for each directory. Against a real `influxd`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::{ConsumerToml, Gateway, Influxd, TempDir, get, post_json, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";
const COMMIT: &str = "/apiv0.1/events/commit";
const SWAPPED: &str = "is no longer the directory the gateway opened at the start";

/// Every file under `dir`, however deep.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path().display().to_string());
        }
    }
    out
}

/// Moves `dir` to `moved` and puts a link to `target` (an empty directory) in its place.
fn swap_for_a_link(dir: &Path, moved: &Path, target: &Path) {
    std::fs::create_dir_all(target).unwrap();
    std::fs::rename(dir, moved).unwrap();
    std::os::unix::fs::symlink(target, dir).unwrap();
}

#[test]
fn directories_swapped_for_links_at_run_time_are_not_followed() {
    let influx = Influxd::start();
    // The gateway's own check of field types is off, so a conflict reaches InfluxDB and is
    // dead-lettered; no tick writes a heartbeat.
    let mut gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    let first = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {"clients": 1}}}),
    );
    assert_eq!(first.json()["delivered"], true, "{}", first.body);

    let elsewhere = TempDir::new("links-elsewhere");
    let data = gw.dir.join("data");
    swap_for_a_link(
        &data.join("log"),
        &data.join("log.moved"),
        &elsewhere.join("log"),
    );
    swap_for_a_link(
        &data.join("dead-letter"),
        &data.join("dead-letter.moved"),
        &elsewhere.join("dead-letter"),
    );
    let moved = gw.dir.join("data.moved");
    swap_for_a_link(&data, &moved, &elsewhere.join("data"));

    // Requests go on being acknowledged and delivered.
    let mut uuids = Vec::new();
    for i in 0..5 {
        let register = post_json(
            gw.addr,
            REGISTER,
            &json!({"hostname": format!("lg{i}"), "measurement": {"fields": {"clients": 2}}}),
        );
        assert_eq!(register.status, 200, "{}", register.body);
        assert_eq!(
            register.json()["delivered"],
            true,
            "after the swap: {}\n{}",
            register.body,
            gw.log()
        );
        let uuid = register.json()["data"]["uuid"]
            .as_str()
            .unwrap()
            .to_string();
        let commit = post_json(gw.addr, COMMIT, &json!({"uuid": uuid}));
        assert_eq!(commit.json()["delivered"], true, "{}", commit.body);
        uuids.push(uuid);
    }
    // A refusal is dead-lettered, into the dead-letter directory opened at the start.
    let conflict = post_json(
        gw.addr,
        REGISTER,
        &json!({"hostname": "odd", "measurement": {"fields": {"clients": "many"}}}),
    );
    assert_eq!(conflict.status, 200, "{}", conflict.body);
    assert_eq!(conflict.json()["delivered"], false, "{}", conflict.body);
    wait_until(Duration::from_secs(20), "the dead letter", || {
        get(gw.addr, "/apiv0.1/states").json()["dead_letters"]["records"] == 1
    });
    let stored = influx.uuids("runs", "load_testing_events", Some("finished"));
    for uuid in &uuids {
        assert!(stored.contains(uuid), "{uuid} is in InfluxDB: {stored:?}");
    }

    // The stop writes the snapshot and the delivered mark: also where they were opened.
    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(15)).unwrap().success());
    assert_eq!(
        files_under(elsewhere.path()),
        Vec::<String>::new(),
        "nothing was written through a link\n{}",
        gw.log()
    );
    let letters = files_under(&moved.join("dead-letter.moved"));
    assert!(
        letters.iter().any(|f| f.ends_with(".lp")),
        "the dead letter is in the directory opened at the start: {letters:?}"
    );
    let segments = files_under(&moved.join("log.moved"));
    assert!(segments.iter().any(|f| f.ends_with(".log")), "{segments:?}");
    let snapshot = std::fs::read_to_string(moved.join("jobs.json")).unwrap();
    assert!(snapshot.contains(&uuids[4]), "the stop's snapshot");

    // Said once for each directory, at error level.
    let log = gw.log();
    for dir in ["data/log ", "data/dead-letter ", "data "] {
        let said = log
            .lines()
            .filter(|l| l.contains(SWAPPED) && l.contains(dir))
            .collect::<Vec<_>>();
        assert_eq!(said.len(), 1, "{dir}: {said:#?}");
        assert!(said[0].contains("ERROR"), "{}", said[0]);
    }
}
