//! The deliverer against a real `influxd`: no record's fault reaches another. A write InfluxDB
//! cannot take (over its body limit) is split, never retried forever; one run's refused
//! heartbeat is dead-lettered once and counted after that, while the other runs' heartbeats
//! are stored every tick; the dead letters are bounded; and the health a new deployment shows
//! is not "up" before InfluxDB ever answered. Each case failed on the gateway before the log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, get, post_json, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";

fn states(gw: &Gateway) -> Value {
    get(gw.addr, "/apiv0.1/states").json()
}

fn dead_letter_files(gw: &Gateway) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(gw.dir.join("data/dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lp"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    files.sort();
    files
}

/// Case 1: a tick larger than what InfluxDB takes in one write. influxd takes 2 MB here (25 MB
/// by default, where thirty runs of 900 kB make such a tick); ten runs of 300 kB with writes of
/// up to 8 MiB allowed make the tick's write 3 MB. InfluxDB answers 413 and closes while the
/// body is being sent; the gateway splits the write until it fits (and writes smaller from
/// then on), so every heartbeat is stored and what follows is delivered. A run whose heartbeat
/// alone is over the limit is dead-lettered, never retried in a loop.
#[test]
fn a_write_influxdb_cannot_take_is_split_and_blocks_nothing() {
    let influx = Influxd::start_with("max-body-size = 2000000");
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .server("max_body_bytes = 8388608")
            .influxdb("max_write_bytes = 8388608")
            .rest("[jobs]\nheartbeat_interval = \"1s\"\n[limits]\nmax_string_bytes = 4000000\nmax_run_bytes = 4000000\n")
            .toml(),
    );
    let note = "n".repeat(300_000);
    let mut runs = Vec::new();
    for i in 0..10 {
        let answer = post_json(
            gw.addr,
            REGISTER,
            &json!({"host": format!("lg-{i}"), "measurement": {"fields": {"note": note, "clients": i}}}),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        runs.push(answer.json()["uuid"].as_str().unwrap().to_string());
    }
    // One run's heartbeat is over influxd's limit on its own.
    let huge = post_json(
        gw.addr,
        REGISTER,
        &json!({"host": "huge", "measurement": {"fields": {"note": "h".repeat(2_500_000)}}}),
    );
    assert_eq!(huge.status, 200, "{}", huge.body);
    assert!(
        huge.json()["dead_letter"]
            .as_str()
            .unwrap_or_default()
            .contains("413"),
        "{}",
        huge.body
    );
    wait_until(Duration::from_secs(30), "three ticks delivered", || {
        let s = states(&gw);
        s["counters"]["heartbeat_ticks"].as_u64().unwrap_or(0) >= 3
            && s["counters"]["heartbeats_refused"].as_u64().unwrap_or(0) >= 2
            && s["spool"]["records"] == 0
    });
    let after = post_json(gw.addr, REGISTER, &json!({"host": "after"}));
    assert_eq!(after.json()["delivered"], true, "{}", after.body);
    let beats = influx.query(
        "runs",
        "SELECT count(clients) FROM load_testing GROUP BY uuid",
    );
    let series = beats["results"][0]["series"].as_array().unwrap();
    for uuid in &runs {
        let count = series
            .iter()
            .find(|s| s["tags"]["uuid"] == uuid.as_str())
            .map(|s| s["values"][0][1].as_u64().unwrap())
            .unwrap_or(0);
        assert!(count >= 3, "run {uuid}: {count} heartbeats stored");
    }
    let s = states(&gw);
    assert_eq!(
        s["dead_letters"]["records"], 2,
        "the huge register and its heartbeat: {s}"
    );
    assert!(
        s["counters"]["heartbeats_refused"].as_u64().unwrap() >= 2,
        "{s}"
    );
    assert!(gw.log().contains("writes are now at most"), "{}", gw.log());
}

/// Case 2: four runs with a numeric field and one with a string in its place. The one run's
/// heartbeat is refused every tick; it is dead-lettered once (besides its register), counted
/// after that and shown in `states`, and the other runs' heartbeats are stored every tick. Its
/// dead letters hold only its own lines, so `replay-dead-letters` into a database that takes
/// them clears them.
#[test]
fn one_refused_run_reaches_no_other_run_and_is_dead_lettered_once() {
    let influx = Influxd::start();
    // The gateway's check of field types would refuse the odd register at the request
    // (tests/it/schema.rs); off here, InfluxDB refuses it, as it refuses heartbeats for causes
    // the gateway cannot see (`max-values-per-tag` reached on `uuid`).
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest("[jobs]\nheartbeat_interval = \"300ms\"\n")
            .toml(),
    );
    let mut good = Vec::new();
    for i in 0..4 {
        let body = json!({"host": format!("good-{i}"), "measurement": {"fields": {"clients": 5}}});
        good.push(crate::support::register(gw.addr, &body));
    }
    let odd = post_json(
        gw.addr,
        REGISTER,
        &json!({"host": "odd", "measurement": {"fields": {"clients": "ten"}}}),
    );
    assert!(odd.json()["dead_letter"].is_string(), "{}", odd.body);
    let odd = odd.json()["uuid"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "six ticks", || {
        states(&gw)["counters"]["heartbeats_refused"]
            .as_u64()
            .unwrap_or(0)
            >= 6
    });
    let s = states(&gw);
    assert_eq!(
        s["dead_letters"]["records"], 2,
        "the register and the first refused heartbeat, not one per tick: {s}"
    );
    assert_eq!(s["counters"]["points_dead_lettered"], 3, "{s}");
    let listed = s["jobs"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["uuid"] == odd.as_str())
        .unwrap()
        .clone();
    assert!(
        listed["heartbeats_refused"]["count"].as_u64().unwrap() >= 6,
        "{listed}"
    );
    assert!(
        listed["heartbeats_refused"]["last_error"]
            .as_str()
            .unwrap()
            .contains("conflict"),
        "{listed}"
    );
    for letter in dead_letter_files(&gw) {
        for line in letter.lines() {
            assert!(line.contains(&odd), "only the odd run's lines: {line}");
        }
    }
    let beats = influx.query(
        "runs",
        "SELECT count(clients) FROM load_testing GROUP BY uuid",
    );
    for uuid in &good {
        let count = beats["results"][0]["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["tags"]["uuid"] == uuid.as_str())
            .map_or(0, |s| s["values"][0][1].as_u64().unwrap());
        assert!(count >= 6, "run {uuid}: {count} heartbeats");
    }
    // Into a fresh database, the dead letters go through: each holds one kind of line.
    influx.query("runs", "DROP DATABASE runs");
    let replay = Gateway::command(gw.dir.path())
        .arg("replay-dead-letters")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&replay.stdout)
            .contains("2 dead letters delivered, 0 still refused"),
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
}

/// Case 3: the dead letters are bounded by `storage.max_dead_letter_bytes`; beyond it refusals
/// are counted as dropped and the log says so once, not once per refusal.
#[test]
fn the_dead_letters_are_bounded_and_what_finds_no_room_is_counted() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest("max_dead_letter_bytes = 40000\n[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    crate::support::register(gw.addr, &json!({"measurement": {"fields": {"clients": 1}}}));
    for i in 0..20 {
        let answer = post_json(
            gw.addr,
            REGISTER,
            &json!({"host": format!("odd-{i}"), "measurement": {"fields": {"clients": "many"}}}),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.json()["dead_letter"].is_string(), "{}", answer.body);
    }
    let s = states(&gw);
    let bytes = s["dead_letters"]["bytes"].as_u64().unwrap();
    assert!(bytes <= 40000, "{s}");
    // The bound holds for what the files take on disk, their reasons included.
    let on_disk: u64 = std::fs::read_dir(gw.dir.join("data/dead-letter"))
        .unwrap()
        .map(|e| {
            use std::os::unix::fs::MetadataExt;
            e.unwrap().metadata().unwrap().blocks() * 512
        })
        .sum();
    assert!(on_disk <= 40000, "{on_disk} bytes on disk");
    assert!(s["dead_letters"]["records"].as_u64().unwrap() < 20, "{s}");
    // Every refusal is either kept (its points the lines of its letter) or dropped: the points
    // dropped are the 20 refusals' points less those the letters hold.
    let letters: Vec<usize> = std::fs::read_dir(gw.dir.join("data/dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lp"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .collect();
    assert_eq!(letters.len() as u64, s["dead_letters"]["records"], "{s}");
    let per_refusal = *letters.first().expect("some refusals kept as letters");
    assert!(letters.iter().all(|&n| n == per_refusal), "{letters:?}");
    let dropped = 20 * per_refusal - letters.iter().sum::<usize>();
    assert!(dropped > 0, "{s}");
    assert_eq!(s["counters"]["points_dropped"], dropped, "{s}");
    assert_eq!(s["dead_letters"]["points_dropped"], dropped, "{s}");
    assert_eq!(gw.log().matches("the dead letters are full").count(), 1);
    let metrics = get(gw.addr, "/apiv0.1/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("metrics_consumer_points_dropped_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Case 7: a gateway that has never reached InfluxDB does not look healthy: `influxdb.up` is
/// not true, and the metric is 0.
#[test]
fn a_gateway_that_never_reached_influxdb_is_not_up() {
    let gw = Gateway::start(&ConsumerToml::new("http://127.0.0.1:9", "runs").toml());
    wait_until(Duration::from_secs(5), "the start's probe", || {
        states(&gw)["influxdb"]["up"] == false
    });
    let metrics = get(gw.addr, "/apiv0.1/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "metrics_consumer_influxdb_up 0"),
        "{metrics}"
    );
    let s = states(&gw);
    assert!(s["influxdb"]["last_success"].is_null(), "{s}");
    assert!(s["influxdb"]["last_error"]["error"].is_string(), "{s}");
}

/// The acknowledgement modes against a real `influxd`: "disk" answers once the record is on
/// disk (points reach InfluxDB right after); "influxdb" answers once InfluxDB has them.
#[test]
fn each_mode_answers_when_it_says() {
    let influx = Influxd::start();
    for (mode, delivered) in [("disk", None), ("influxdb", Some(true))] {
        let gw = Gateway::start(
            &ConsumerToml::new(&influx.url, "runs")
                .rest(&format!("[delivery]\nacknowledge = \"{mode}\"\n"))
                .toml(),
        );
        let answer = post_json(gw.addr, REGISTER, &json!({"host": mode}));
        assert_eq!(answer.status, 200, "{}", answer.body);
        if let Some(delivered) = delivered {
            assert_eq!(
                answer.json()["delivered"],
                delivered,
                "{mode}: {}",
                answer.body
            );
            assert_eq!(
                influx
                    .series("runs", "load_testing_events")
                    .iter()
                    .filter(|r| r["host"] == mode)
                    .count(),
                1,
                "{mode}: readable right after the answer"
            );
        }
        wait_until(Duration::from_secs(5), "the register's points", || {
            influx
                .series("runs", "load_testing_events")
                .iter()
                .any(|r| r["host"] == mode)
        });
    }
}

/// InfluxDB's error messages quote the names clients chose; line and paragraph separators and
/// bidirectional controls in them reach no log line as they are.
#[test]
fn names_influxdb_quotes_in_its_errors_cannot_disguise_a_log_line() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    let name = "x\u{202E}gnp.exe\u{2028}y";
    crate::support::register(gw.addr, &json!({"measurement": {"fields": {name: 1}}}));
    let refused = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {name: "one"}}}),
    );
    let why = refused.json()["dead_letter"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("x?gnp.exe?y"), "{}", refused.body);
    // The deliverer logs the refusal just before the request is answered; the line is read
    // from the gateway's stderr a moment later.
    wait_until(Duration::from_secs(10), "the refusal logged", || {
        gw.log().contains("x?gnp.exe?y")
    });
    let log = gw.log();
    for c in ['\u{202E}', '\u{2028}'] {
        assert!(!log.contains(c), "{c:?} reached the log");
    }
}

/// The dead letters are one store for every client (`storage.max_dead_letter_bytes`), where
/// the log and the job table are shared out by client: one token's writes that InfluxDB
/// refuses at delivery fill it, and another token's refused points, acknowledged 204 as its
/// own, are then dropped (counted) rather than kept for a replay. Here the greedy token writes,
/// while InfluxDB is away, lines under a retention policy its database lacks (nothing can
/// refuse them at the door then: InfluxDB was not asked); a second token does the same with
/// one line. Once InfluxDB is back, the second token's line is nowhere: not in InfluxDB, not a
/// dead letter. A client's greed reaches another client's data.
#[test]
fn one_tokens_refused_writes_do_not_crowd_another_tokens_out_of_the_dead_letters() {
    const GREEDY: &str = "greedy-token-0123456789abcdef";
    const VICTIM: &str = "victim-token-0123456789abcdef";
    let mut influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "max_dead_letter_bytes = 40000\n[jobs]\nheartbeat_interval = \"1h\"\n\
                 [auth]\n\
                 [[auth.token]]\nname = \"greedy\"\ntoken = \"{GREEDY}\"\ndatabases = [\"greedy\"]\n\
                 [[auth.token]]\nname = \"victim\"\ntoken = \"{VICTIM}\"\ndatabases = [\"victim\"]\n"
            ))
            .toml(),
    );
    wait_until(Duration::from_secs(10), "the start's probe", || {
        crate::support::states(gw.addr, VICTIM)["influxdb"]["up"] == true
    });
    influx.stop();
    let write = |token: &str, path: &str, body: &str| {
        crate::support::request(
            gw.addr,
            "POST",
            path,
            &[("Authorization", &format!("Token {token}"))],
            Some(body),
        )
    };
    let lines: String = (0..200)
        .map(|i| format!("junk,t=greedy v={i} {}\n", 1_700_000_000_000_000_000i64 + i))
        .collect();
    for _ in 0..5 {
        let answer = write(GREEDY, "/write?db=greedy&rp=nope", &lines);
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
    let answer = write(
        VICTIM,
        "/write?db=victim&rp=typo",
        "victim_line value=42 1700000000000000000\n",
    );
    assert_eq!(answer.status, 204, "{}", answer.body);

    influx.restart();
    wait_until(Duration::from_secs(60), "the log delivered", || {
        crate::support::states(gw.addr, VICTIM)["spool"]["records"] == 0
    });
    let kept = dead_letter_files(&gw)
        .iter()
        .any(|letter| letter.contains("victim_line"));
    let s = crate::support::states(gw.addr, VICTIM);
    assert!(
        kept,
        "the victim token's acknowledged line, refused by InfluxDB, was dropped because the \
         greedy token's refusals filled the dead letters: {}",
        s["dead_letters"]
    );
}
