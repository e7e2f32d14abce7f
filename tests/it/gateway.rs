//! End-to-end tests of the routes: the real binary, a real throwaway `influxd`, and every point
//! read back with a query.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, get, post_json, register, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";
const COMMIT: &str = "/apiv0.1/events/commit";
const ISRUNNING: &str = "/apiv0.1/events/isrunning";
const PROGRESS: &str = "/apiv0.1/events/progress";

fn start(extra: &str) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").rest(extra).toml());
    (influx, gw)
}

/// Rows of `measurement` for one run, oldest first.
fn rows(influx: &Influxd, measurement: &str, uuid: &str) -> Vec<serde_json::Map<String, Value>> {
    influx
        .series("runs", measurement)
        .into_iter()
        .filter(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid))
        .collect()
}

/// The stats of a Locust run as the customized client sends them: a JSON string.
fn locust_stats() -> Value {
    json!({
        "stats": [
            {"name": "/api/items?page=1,2 x=y", "method": "GET", "num_requests": 120, "num_failures": 2,
             "avg_response_time": 12.5, "median_response_time": 11, "current_rps": 8.5,
             "response_times": {"11": 60, "12": 60}},
            {"name": "/login", "method": "POST", "num_requests": 10, "num_failures": 0,
             "avg_response_time": 30, "median_response_time": 29, "current_rps": 1},
            {"name": "Aggregated", "method": null, "num_requests": 130, "num_failures": 2,
             "avg_response_time": 13.8, "median_response_time": 11, "current_rps": 9.5}
        ],
        "errors": [{"method": "GET", "name": "/api/items", "error": "HTTPError('500')", "occurrences": 2}],
        "total_rps": 9.5,
        "fail_ratio": 0.0153,
        "user_count": 10
    })
}

#[test]
fn customized_locust_payloads_round_trip() {
    let (influx, gw) = start("");
    let register = post_json(
        gw.addr,
        REGISTER,
        &json!({"startedAt": 1479636000, "hostname": "lg-1", "targetHost": "http://10.10.10.1",
                "tags": {"mode": "single", "hostname": "http://10.10.10.1"},
                "measurement": {"fields": {"clients": 10, "hatchRate": 0.5, "requests": null}},
                "state": "hatching"}),
    );
    assert_eq!(register.status, 200, "{}", register.body);
    let answer = register.json();
    let uuid = answer["data"]["uuid"]
        .as_str()
        .expect("data.uuid")
        .to_string();
    assert_eq!(answer["uuid"], uuid);
    assert_eq!(answer["delivered"], true);

    let started = rows(&influx, "load_testing_events", &uuid);
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0]["time"], 1_479_636_000_000i64,
        "the event is at the client's startedAt"
    );
    assert_eq!(started[0]["event"], "started");
    assert_eq!(started[0]["host"], "lg-1");
    assert!(started[0]["text"].as_str().unwrap().contains("lg-1"));

    let beats = rows(&influx, "load_testing", &uuid);
    assert_eq!(beats.len(), 1, "register writes the first heartbeat");
    let beat = &beats[0];
    assert_eq!(beat["clients"], 10.0);
    assert_eq!(beat["hatchRate"], 0.5);
    assert!(beat.get("requests").is_none(), "null fields are omitted");
    assert!(
        beat["elapsed"].as_f64().unwrap() > 1e8,
        "elapsed counts from 2016"
    );
    assert_eq!(beat["mode"], "single");
    assert_eq!(beat["hostname"], "http://10.10.10.1");
    assert_eq!(beat["targetHost"], "http://10.10.10.1");
    assert_eq!(beat["host"], "lg-1");

    assert_eq!(get(gw.addr, ISRUNNING).json()[&uuid], true);

    let commit = post_json(
        gw.addr,
        COMMIT,
        &json!({"uuid": uuid, "startedAt": 1479639600, "hostname": "lg-1",
                "measurement": {"fields": {"requestStats": locust_stats().to_string(), "requests": 130}},
                "state": "stopped"}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    assert_eq!(commit.json()["uuid"], uuid);
    assert!(
        commit.json()["data"]["description"]
            .as_str()
            .unwrap()
            .contains("3 endpoint rows")
    );

    let result = rows(&influx, "load_testing_result", &uuid);
    assert_eq!(result.len(), 1);
    let r = &result[0];
    assert_eq!(r["time"], 1_479_639_600_000i64);
    assert_eq!(r["total_rps"], 9.5);
    assert_eq!(r["fail_ratio"], 0.0153);
    assert_eq!(r["user_count"], 10.0);
    assert_eq!(r["requests"], 130.0);
    assert_eq!(r["mode"], "single");
    let text: Value = serde_json::from_str(r["requestStats"].as_str().unwrap()).unwrap();
    assert_eq!(text, locust_stats(), "requestStats keeps the whole JSON");

    let mut endpoints = rows(&influx, "load_testing_request_stats", &uuid);
    endpoints.sort_by_key(|row| row["name"].as_str().unwrap_or("").to_string());
    assert_eq!(endpoints.len(), 3);
    let names: Vec<&str> = endpoints
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/api/items?page=1,2 x=y", "/login", "Aggregated"]);
    assert_eq!(endpoints[0]["method"], "GET");
    assert_eq!(endpoints[0]["num_requests"], 120.0);
    assert_eq!(endpoints[0]["median_response_time"], 11.0);
    assert!(endpoints[2].get("method").is_none());
    assert_eq!(endpoints[2]["num_failures"], 2.0);
    assert_eq!(endpoints[1]["time"], 1_479_639_600_000i64);

    let events = rows(&influx, "load_testing_events", &uuid);
    assert_eq!(events.len(), 2);
    assert!(events.iter().any(|e| e["event"] == "finished"));

    assert_eq!(
        get(gw.addr, ISRUNNING).json()[&uuid],
        false,
        "committed runs answer false"
    );
    let again = post_json(gw.addr, COMMIT, &json!({"uuid": uuid}));
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["code"], "already_committed");
}

#[test]
fn readme_payloads_round_trip() {
    let (influx, gw) = start("");
    let register = post_json(
        gw.addr,
        REGISTER,
        &json!({"startedAt": "2016-11-20T10:00:00Z", "host": "lg-2",
                "measurement": {"fields": {"clients": 10, "hatchRate": 0.5, "requests": 0},
                                "tags": {"targetHost": "http://10.10.10.1", "mode": "single"}}}),
    );
    assert_eq!(register.status, 200, "{}", register.body);
    let uuid = register.json()["uuid"].as_str().unwrap().to_string();
    let beat = &rows(&influx, "load_testing", &uuid)[0];
    assert_eq!(beat["host"], "lg-2");
    assert_eq!(beat["requests"], 0.0);
    assert_eq!(beat["targetHost"], "http://10.10.10.1");
    assert_eq!(
        rows(&influx, "load_testing_events", &uuid)[0]["time"],
        1_479_636_000_000i64
    );

    // A commit without requestStats still ends the run and writes its finished event.
    let commit = post_json(gw.addr, COMMIT, &json!({"uuid": uuid}));
    assert_eq!(commit.status, 200, "{}", commit.body);
    assert!(rows(&influx, "load_testing_result", &uuid).is_empty());
    let events = rows(&influx, "load_testing_events", &uuid);
    assert_eq!(
        events.iter().filter(|e| e["event"] == "finished").count(),
        1
    );
}

// The rules for the fields of a body (names, values, limits) are the table in
// tests/data/payload-rules.json, sent through the binary by tests/it/hostile/names.rs.

/// Nothing of a refused request reached InfluxDB or the job table.
fn assert_nothing_recorded(influx: &Influxd, gw: &Gateway) {
    let measurements = influx.query("runs", "SHOW MEASUREMENTS");
    assert!(
        measurements["results"][0]["series"].is_null(),
        "refused requests wrote nothing: {measurements}"
    );
    assert!(
        get(gw.addr, ISRUNNING)
            .json()
            .as_object()
            .unwrap()
            .is_empty(),
        "and made no job"
    );
}

#[test]
fn a_body_that_is_not_one_json_object_is_a_400_and_writes_nothing() {
    let (influx, gw) = start("");
    for (raw, code) in [
        ("", "empty_body"),
        ("[]", "not_an_object"),
        ("{\"a\":", "invalid_json"),
        ("{\"a\": nan}", "invalid_json"),
        ("{\"host\": 1e400} {}", "invalid_json"),
    ] {
        let answer = crate::support::request(
            gw.addr,
            "POST",
            REGISTER,
            &[("Content-Type", "application/json")],
            Some(raw),
        );
        assert_eq!(answer.status, 400, "{raw}");
        assert_eq!(answer.json()["code"], code, "{raw}");
    }
    assert_nothing_recorded(&influx, &gw);
}

#[test]
fn a_commit_without_a_known_run_or_with_unreadable_stats_is_refused_and_writes_nothing() {
    let (influx, gw) = start("");
    let commits: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "missing_uuid"),
        (json!({"uuid": "not-a-uuid"}), 400, "invalid_uuid"),
        (json!({"uuid": uuid_nil()}), 404, "unknown_run"),
        (
            json!({"uuid": uuid_nil(), "measurement": {"fields": {"requestStats": 5}}}),
            400,
            "invalid_stats",
        ),
    ];
    for (body, status, code) in commits {
        let answer = post_json(gw.addr, COMMIT, &body);
        assert_eq!(
            (answer.status, answer.json()["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }
    assert_nothing_recorded(&influx, &gw);
}

fn uuid_nil() -> &'static str {
    "00000000-0000-0000-0000-000000000000"
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let missing = get(gw.addr, "/apiv0.1/nothing");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "not_found");
    let wrong = get(gw.addr, REGISTER);
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("POST"));
    let wrong = post_json(gw.addr, "/apiv0.1/ping", &json!({}));
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET"));
    let ping = get(gw.addr, "/apiv0.1/ping");
    assert_eq!((ping.status, ping.json()), (200, json!({"res": "PONG!"})));
}

#[test]
fn heartbeats_are_written_every_interval() {
    let (influx, gw) = start("[jobs]\nheartbeat_interval = \"1s\"\n");
    let a = register(
        gw.addr,
        &json!({"host": "a", "measurement": {"fields": {"clients": 3}}}),
    );
    let b = register(gw.addr, &json!({"host": "b"}));
    wait_until(
        Duration::from_secs(8),
        "three heartbeats of each run",
        || {
            rows(&influx, "load_testing", &a).len() >= 3
                && rows(&influx, "load_testing", &b).len() >= 3
        },
    );
    let beats = rows(&influx, "load_testing", &a);
    assert!(
        beats.iter().all(|r| r["clients"] == 3.0),
        "heartbeats repeat the register fields"
    );
    let elapsed: Vec<f64> = beats
        .iter()
        .map(|r| r["elapsed"].as_f64().unwrap())
        .collect();
    assert!(
        elapsed.windows(2).all(|w| w[1] > w[0]),
        "elapsed grows: {elapsed:?}"
    );
    // A tick's heartbeats are counted just after InfluxDB stored them.
    wait_until(
        Duration::from_secs(5),
        "states to count two heartbeats",
        || {
            let states = get(gw.addr, "/apiv0.1/states").json();
            states["jobs"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["uuid"] == a.as_str() && j["heartbeats"].as_u64().unwrap() >= 2)
        },
    );

    // After commit the run's heartbeats stop. A tick built just before the commit may still
    // land, so counting starts once the other run has had a heartbeat after the commit.
    assert_eq!(post_json(gw.addr, COMMIT, &json!({"uuid": a})).status, 200);
    let b_at_commit = rows(&influx, "load_testing", &b).len();
    wait_until(
        Duration::from_secs(5),
        "a heartbeat after the commit",
        || rows(&influx, "load_testing", &b).len() > b_at_commit,
    );
    let after = rows(&influx, "load_testing", &a).len();
    let b_before = rows(&influx, "load_testing", &b).len();
    wait_until(
        Duration::from_secs(5),
        "two more heartbeats of the other run",
        || rows(&influx, "load_testing", &b).len() >= b_before + 2,
    );
    assert_eq!(rows(&influx, "load_testing", &a).len(), after);
}

#[test]
fn runs_without_commit_expire() {
    let (influx, gw) = start("[jobs]\nheartbeat_interval = \"500ms\"\nmax_age = \"1s\"\n");
    let uuid = register(gw.addr, &json!({"host": "x"}));
    wait_until(Duration::from_secs(5), "an expired event", || {
        rows(&influx, "load_testing_events", &uuid)
            .iter()
            .any(|e| e["event"] == "expired")
    });
    assert_eq!(get(gw.addr, ISRUNNING).json()[&uuid], false);
    let beats = rows(&influx, "load_testing", &uuid).len();
    // Two more ticks of the heartbeat thread, delivered: any heartbeat of the run would be in.
    let ticks = |s: &serde_json::Value| s["counters"]["heartbeat_ticks"].as_u64().unwrap_or(0);
    let then = ticks(&get(gw.addr, "/apiv0.1/states").json());
    wait_until(Duration::from_secs(10), "two more ticks, delivered", || {
        let s = get(gw.addr, "/apiv0.1/states").json();
        ticks(&s) >= then + 2 && s["spool"]["records"] == 0
    });
    assert_eq!(
        rows(&influx, "load_testing", &uuid).len(),
        beats,
        "no heartbeats after expiry"
    );
    assert_eq!(
        get(gw.addr, "/apiv0.1/states").json()["counters"]["jobs_expired"],
        1
    );
    // A late commit still records the result.
    let commit = post_json(
        gw.addr,
        COMMIT,
        &json!({"uuid": uuid, "measurement": {"fields": {"ok": true}}}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    assert_eq!(rows(&influx, "load_testing_result", &uuid)[0]["ok"], true);
}

#[test]
fn a_run_that_stops_reporting_progress_expires_after_progress_timeout() {
    let (influx, gw) = start("[jobs]\nheartbeat_interval = \"200ms\"\nprogress_timeout = \"1s\"\n");
    let silent = register(gw.addr, &json!({"host": "x"}));
    let reporting = register(gw.addr, &json!({"host": "y"}));
    let progress = json!({"uuid": reporting, "measurement": {"fields": {"users": 4}}});
    assert_eq!(post_json(gw.addr, PROGRESS, &progress).status, 200);
    wait_until(Duration::from_secs(5), "an expired event", || {
        rows(&influx, "load_testing_events", &reporting)
            .iter()
            .any(|e| e["event"] == "expired")
    });
    let event = rows(&influx, "load_testing_events", &reporting)
        .into_iter()
        .find(|e| e["event"] == "expired")
        .unwrap();
    let text = event["text"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("no progress within 1s"), "{event:?}");
    let running = get(gw.addr, ISRUNNING).json();
    assert_eq!(running[&reporting], false);
    assert_eq!(
        running[&silent], true,
        "a run that never reported progress waits for jobs.max_age"
    );
}

#[test]
fn max_running_is_enforced() {
    let (_influx, gw) = start("[jobs]\nmax_running = 2\n");
    let first = post_json(gw.addr, REGISTER, &json!({}));
    assert_eq!(post_json(gw.addr, REGISTER, &json!({})).status, 200);
    let third = post_json(gw.addr, REGISTER, &json!({}));
    assert_eq!(third.status, 503);
    assert_eq!(third.json()["code"], "too_many_running");
    assert!(
        third.json()["error"]
            .as_str()
            .unwrap()
            .contains("jobs.max_running")
    );
    assert_eq!(
        post_json(gw.addr, COMMIT, &json!({"uuid": first.json()["uuid"]})).status,
        200
    );
    assert_eq!(
        post_json(gw.addr, REGISTER, &json!({})).status,
        200,
        "a commit frees a slot"
    );
}

#[test]
fn a_register_without_host_uses_the_peer_address() {
    let (influx, gw) = start("");
    let uuid = register(gw.addr, &json!({}));
    assert_eq!(rows(&influx, "load_testing", &uuid)[0]["host"], "127.0.0.1");
}

#[test]
fn states_reports_jobs_counters_and_memory() {
    let (_influx, gw) = start("");
    let uuid = post_json(gw.addr, REGISTER, &json!({"host": "h"})).json()["uuid"].clone();
    get(gw.addr, "/apiv0.1/nope");
    // A request is counted just after its answer is sent, so the counts may trail a moment.
    let mut s = Value::Null;
    wait_until(Duration::from_secs(5), "both requests counted", || {
        s = get(gw.addr, "/apiv0.1/states").json();
        s["counters"]["requests"]["other"]["4xx"] == 1
            && s["counters"]["requests"]["register"]["2xx"] == 1
    });
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["memory"]["resident_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["jobs"]["running"], 1);
    assert_eq!(s["jobs"]["list"][0]["uuid"], uuid);
    assert_eq!(s["jobs"]["list"][0]["host"], "h");
    assert_eq!(s["counters"]["requests"]["register"]["2xx"], 1);
    assert_eq!(s["counters"]["requests"]["other"]["4xx"], 1);
    assert_eq!(s["counters"]["points_written"], 2);
    assert_eq!(s["spool"]["records"], 0);
    assert_eq!(s["dead_letters"]["records"], 0);
    assert_eq!(s["influxdb"]["up"], true);
    assert!(s["influxdb"]["last_success"].is_string());
    assert!(!s["influxdb"]["url"].as_str().unwrap().contains('@'));
}

#[test]
fn progress_updates_the_following_heartbeats() {
    let (influx, gw) = start("[jobs]\nheartbeat_interval = \"300ms\"\n");
    let uuid = register(
        gw.addr,
        &json!({"host": "lg", "tags": {"mode": "x"}, "measurement": {"fields": {"user_count": 1, "rps": 0}}}),
    );
    let progress = post_json(
        gw.addr,
        "/apiv0.1/events/progress",
        &json!({"uuid": uuid, "measurement": {"fields": {"user_count": 5, "rps": 12.5, "num_requests": 40}}}),
    );
    assert_eq!(progress.status, 200, "{}", progress.body);
    assert_eq!(progress.json()["uuid"], uuid.as_str());
    wait_until(
        Duration::from_secs(5),
        "a heartbeat with the new values",
        || {
            rows(&influx, "load_testing", &uuid)
                .iter()
                .any(|r| r["user_count"] == 5.0 && r["rps"] == 12.5 && r["num_requests"] == 40.0)
        },
    );
    for (body, status, code) in [
        (
            json!({"uuid": uuid_nil(), "measurement": {"fields": {"x": 1}}}),
            404,
            "unknown_run",
        ),
        (
            json!({"measurement": {"fields": {"x": 1}}}),
            400,
            "missing_uuid",
        ),
        (
            json!({"uuid": uuid, "measurement": {"fields": {"x": [1]}}}),
            400,
            "invalid_field",
        ),
        (
            json!({"uuid": uuid, "measurement": {"fields": {"mode": 1}}}),
            400,
            "invalid_field",
        ),
    ] {
        let answer = post_json(gw.addr, "/apiv0.1/events/progress", &body);
        assert_eq!(
            (answer.status, answer.json()["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }
    assert_eq!(
        post_json(gw.addr, COMMIT, &json!({"uuid": uuid})).status,
        200
    );
    let late = post_json(
        gw.addr,
        "/apiv0.1/events/progress",
        &json!({"uuid": uuid, "measurement": {"fields": {"x": 1}}}),
    );
    assert_eq!(late.status, 409);
    let s = get(gw.addr, "/apiv0.1/states").json();
    assert_eq!(s["counters"]["requests"]["progress"]["2xx"], 1);
}

/// A tick of more than 1 000 runs goes out as several writes at once; every run still gets
/// exactly one heartbeat per tick, and every one is counted.
#[test]
fn a_large_tick_writes_every_runs_heartbeat_once() {
    const RUNS: u128 = 2500;
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("large-tick");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // A job table as the gateway saves it, so the runs need no 2 500 registers.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let jobs: Vec<Value> = (1..=RUNS)
        .map(|n| {
            json!({"uuid": uuid::Uuid::from_u128(n), "host": "lg", "tags": [["mode", "big"]],
                   "started_ms": now, "fields": [["clients", {"float": n as f64}]],
                   "last_seen_ms": now, "state": "running", "heartbeats": 0})
        })
        .collect();
    std::fs::write(
        dir.join("data/jobs.json"),
        json!({"format": "metrics-consumer-jobs", "version": 1, "jobs": jobs}).to_string(),
    )
    .unwrap();
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs")
            .rest("[jobs]\nheartbeat_interval = \"1s\"\n")
            .toml(),
    );
    // A tick is counted as it starts, and ticks run one after the other: with three counted,
    // the first two are written whole.
    wait_until(Duration::from_secs(20), "three ticks counted", || {
        get(gw.addr, "/apiv0.1/states").json()["counters"]["heartbeat_ticks"]
            .as_u64()
            .unwrap()
            >= 3
    });
    // Stop the ticks, then count what reached InfluxDB.
    drop(gw);
    let beats = influx.series("runs", "load_testing");
    let mut per_run = std::collections::HashMap::<String, usize>::new();
    for row in &beats {
        assert_eq!(row["mode"], "big", "{row:?}");
        *per_run
            .entry(row["uuid"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_run.len(), RUNS as usize, "every run has heartbeats");
    let ticks = *per_run.values().min().unwrap();
    assert!(ticks >= 2, "at least the two whole ticks");
    assert!(
        per_run.values().all(|&n| n == ticks || n == ticks + 1),
        "one heartbeat per run per tick (a tick under way at the stop may have landed in part)"
    );
}

/// A misspelled key (`measurment`) answered 200 with a run without fields and no word about
/// it. The answer names every key nothing read, with the key it is near, on register, progress
/// and commit; what the customized Locust sends on purpose gets no suggestion.
#[test]
fn a_misspelled_key_is_named_in_the_answer_with_the_near_one() {
    let (_influx, gw) = start("");
    let r = post_json(
        gw.addr,
        "/apiv0.1/events/register",
        &json!({"host": "lg", "measurment": {"fields": {"users": 5}}, "state": "hatching"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(
        answer["ignored"],
        json!(["measurment", "state"]),
        "{answer}"
    );
    assert_eq!(
        answer["did_you_mean"],
        json!({"measurment": "measurement"}),
        "{answer}"
    );
    let description = answer["data"]["description"].as_str().unwrap();
    assert!(
        description
            .contains(r#"ignored keys: "measurment" (did you mean "measurement"?), "state""#),
        "{description}"
    );
    let uuid = answer["uuid"].as_str().unwrap().to_string();
    let progress = post_json(
        gw.addr,
        "/apiv0.1/events/progress",
        &json!({"uuid": uuid, "measurement": {"field": {"users": 7}}}),
    );
    assert_eq!(progress.status, 200, "{}", progress.body);
    assert_eq!(
        progress.json()["did_you_mean"],
        json!({"measurement.field": "measurement.fields"})
    );
    let commit = post_json(
        gw.addr,
        "/apiv0.1/events/commit",
        &json!({"uuid": uuid, "user_count": 10, "measurement": {"fields": {"duration": 60}}}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    assert_eq!(
        commit.json()["ignored"],
        json!(["user_count"]),
        "{}",
        commit.body
    );
    assert!(
        commit.json().get("did_you_mean").is_none(),
        "{}",
        commit.body
    );
    let clean = post_json(gw.addr, "/apiv0.1/events/register", &json!({"host": "lg"}));
    assert!(clean.json().get("ignored").is_none(), "{}", clean.body);
}

/// `GET /apiv0.1/runs/<uuid>` of a running run, and after a restart (snapshot and
/// log), shows host and tags at compact_str's inline boundary (24, 25 bytes, multi-byte UTF-8
/// across byte 24) and with escapes exactly as registered.
#[test]
fn a_running_runs_page_shows_names_at_the_inline_boundary_as_sent_across_a_restart() {
    let (_influx, mut gw) = start("");
    let k24 = "k".repeat(24);
    let k25 = "q".repeat(25);
    let v25 = format!("{}é", "v".repeat(23));
    let host = format!("{}€", "h".repeat(22));
    let uuid = register(
        gw.addr,
        &json!({"hostname": host, "tags": {k24.clone(): "a b,c=d", k25.clone(): v25}, "measurement": {"fields": {"clients": 1}}}),
    );
    let expected = json!({k24.clone(): "a b,c=d", k25.clone(): v25});
    let shows_as_sent = |addr| {
        let page = get(addr, &format!("/apiv0.1/runs/{uuid}"));
        assert_eq!(page.status, 200, "{}", page.body);
        let json = page.json();
        assert_eq!(json["host"], Value::from(host.as_str()), "{}", page.body);
        assert_eq!(json["tags"], expected, "{}", page.body);
    };
    shows_as_sent(gw.addr);
    gw.restart();
    shows_as_sent(gw.addr);
}
