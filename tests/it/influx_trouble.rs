//! What the operator hears of InfluxDB trouble, against a real `influxd`: the first failure of
//! a streak is a warning with InfluxDB's reason (down, or a 500 for a wrong retention policy),
//! never repeated more than once a minute; the log says once, and only once it is delivered,
//! that InfluxDB takes writes again (with nothing to deliver, that it answers again). A user who may not create databases writes as soon as an
//! admin made the database, without a restart; the health fields agree with each other.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, get, post_json, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";

fn states(gw: &Gateway) -> Value {
    get(gw.addr, "/apiv0.1/states").json()
}

/// The gateway's log lines at `level` (`WARN`, `ERROR`, `INFO`) that contain `text`.
fn lines(gw: &Gateway, level: &str, text: &str) -> usize {
    gw.log()
        .lines()
        .filter(|l| l.contains(&format!("[{level}]")) && l.contains(text))
        .count()
}

/// InfluxDB away at the start and back while nothing waits: its `/ping` answering is told as
/// that, not as "takes writes again", which no write has shown yet.
#[test]
fn influxdb_back_while_nothing_waits_is_told_as_answering_not_as_taking_writes() {
    let mut influx = Influxd::start();
    influx.create_database("runs");
    influx.stop();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("create_database = false")
            .toml(),
    );
    wait_until(Duration::from_secs(10), "the start's probe fails", || {
        states(&gw)["influxdb"]["up"] == false
    });
    influx.restart();
    wait_until(Duration::from_secs(40), "the return told", || {
        lines(&gw, "INFO", "influxdb answers again") == 1
    });
    assert_eq!(
        lines(&gw, "INFO", "influxdb takes writes"),
        0,
        "{}",
        gw.log()
    );
    // Nor did the failure say that points waited, when none did.
    assert_eq!(lines(&gw, "WARN", "nothing waits to be written yet"), 1);
    assert_eq!(lines(&gw, "WARN", "points wait in the log"), 0);
    assert_eq!(states(&gw)["influxdb"]["up"], true);
}

#[test]
fn influxdb_down_is_a_warning_at_once_and_its_return_one_line_once_delivered() {
    let mut influx = Influxd::start();
    influx.create_database("runs");
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("create_database = false")
            .toml(),
    );
    wait_until(Duration::from_secs(10), "the start's probe", || {
        states(&gw)["influxdb"]["up"] == true
    });
    influx.stop();
    for host in ["a", "b", "c"] {
        let answer = post_json(gw.addr, REGISTER, &json!({"host": host}));
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["delivered"], false, "{}", answer.body);
    }
    wait_until(Duration::from_secs(10), "a warning with the reason", || {
        lines(&gw, "WARN", "points wait in the log") == 1
    });
    let s = states(&gw);
    assert_eq!(s["influxdb"]["up"], false, "{s}");
    assert!(
        lines(&gw, "WARN", "connection refused") >= 1
            || lines(&gw, "WARN", "Connection refused") >= 1,
        "{}",
        gw.log()
    );
    assert_eq!(lines(&gw, "INFO", "takes writes again"), 0, "{}", gw.log());
    assert_eq!(lines(&gw, "INFO", "answers again"), 0, "{}", gw.log());
    influx.restart();
    wait_until(Duration::from_secs(40), "the log delivered", || {
        states(&gw)["spool"]["records"] == 0
    });
    wait_until(Duration::from_secs(5), "one line saying so", || {
        lines(&gw, "INFO", "influxdb takes writes again") == 1
    });
    assert_eq!(
        lines(&gw, "WARN", "points wait in the log"),
        1,
        "{}",
        gw.log()
    );
    assert_eq!(
        influx
            .uuids("runs", "load_testing_events", Some("started"))
            .len(),
        3
    );
    let s = states(&gw);
    assert_eq!(s["influxdb"]["up"], true, "{s}");
}

/// influxd answers a write to a retention policy that does not exist with 500: an error with
/// InfluxDB's words (only a person can fix it), and the gateway's own points wait (they never
/// go to the dead letters; a client's write to a missing policy of its own does).
#[test]
fn a_wrong_retention_policy_is_an_error_with_influxdbs_reason() {
    let influx = Influxd::start();
    influx.create_database("runs");
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("retention_policy = \"no_such_policy\"\ncreate_database = false")
            .toml(),
    );
    let answer = post_json(gw.addr, REGISTER, &json!({"host": "rp"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.json()["dead_letter"].is_null(), "{}", answer.body);
    wait_until(
        Duration::from_secs(10),
        "a warning naming the policy",
        || lines(&gw, "ERROR", "retention policy not found") == 1,
    );
    let s = states(&gw);
    assert_eq!(s["influxdb"]["up"], false, "{s}");
    assert_eq!(s["dead_letters"]["records"], 0, "{s}");
    assert!(
        s["influxdb"]["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("retention policy not found"),
        "{s}"
    );
    assert!(s["influxdb"]["last_success"].is_null(), "{s}");
}

/// The README's least-privilege set-up with the database missing: `CREATE DATABASE` is refused
/// (it takes an admin), the writes wait, and once an admin creates the database and grants
/// WRITE, the waiting points are delivered without a restart.
#[test]
fn a_user_who_may_not_create_the_database_writes_once_an_admin_made_it() {
    let influx = Influxd::start_with("auth-enabled = true");
    influx.exec_as(
        "",
        "",
        "CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES",
    );
    influx.exec_as(
        "admin",
        "adminpw",
        "CREATE USER loadtests WITH PASSWORD 'ltpw'",
    );
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("username = \"loadtests\"\npassword = \"ltpw\"")
            .toml(),
    );
    let answer = post_json(gw.addr, REGISTER, &json!({"host": "lp"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until(
        Duration::from_secs(10),
        "the refusal to create is told",
        || lines(&gw, "WARN", "may not create database") >= 1,
    );
    wait_until(
        Duration::from_secs(10),
        "the write's own failure is told",
        || lines(&gw, "ERROR", "points wait in the log") == 1,
    );
    let s = states(&gw);
    assert_eq!(s["influxdb"]["up"], false, "{s}");
    assert!(s["influxdb"]["last_success"].is_null(), "{s}");
    influx.exec_as("admin", "adminpw", "CREATE DATABASE runs");
    influx.exec_as("admin", "adminpw", "GRANT WRITE ON runs TO loadtests");
    wait_until(
        Duration::from_secs(40),
        "the waiting points delivered",
        || states(&gw)["spool"]["records"] == 0,
    );
    let s = states(&gw);
    assert_eq!(s["influxdb"]["up"], true, "{s}");
    assert!(s["influxdb"]["last_success"].is_string(), "{s}");
    let stored = influx.exec_as(
        "admin",
        "adminpw",
        "SELECT count(\"text\") FROM runs.autogen.load_testing_events",
    );
    assert_eq!(
        stored["results"][0]["series"][0]["values"][0][1], 1,
        "{stored}"
    );
    assert_eq!(
        lines(&gw, "INFO", "influxdb takes writes again"),
        1,
        "{}",
        gw.log()
    );
}

/// Health says one thing: with the database missing (and not to be created by the gateway),
/// InfluxDB answers `/ping` but takes no write, so it is not up, and nothing is called a
/// success; once the database exists, it is up and the last success is newer than the last
/// error.
#[test]
fn health_fields_agree_while_the_database_is_missing() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("create_database = false")
            .toml(),
    );
    let answer = post_json(gw.addr, REGISTER, &json!({"host": "h"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until(Duration::from_secs(10), "the write's failure", || {
        states(&gw)["influxdb"]["up"] == false
    });
    let s = states(&gw);
    assert!(s["influxdb"]["last_success"].is_null(), "{s}");
    assert!(
        s["influxdb"]["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("database not found"),
        "{s}"
    );
    influx.create_database("runs");
    wait_until(Duration::from_secs(30), "delivered once it exists", || {
        states(&gw)["spool"]["records"] == 0
    });
    let s = states(&gw);
    assert_eq!(s["influxdb"]["up"], true, "{s}");
    let success = s["influxdb"]["last_success"].as_str().unwrap().to_string();
    let error = s["influxdb"]["last_error"]["at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(success > error, "{s}");
}

/// A user with WRITE alone (a least-privilege set-up) may not read the schema or the retention
/// policy: the checks that need them cannot be made, and the log says so once, with what to
/// grant; the writes go on.
#[test]
fn a_user_who_may_not_read_the_schema_is_told_what_to_grant_once() {
    let influx = Influxd::start_with("auth-enabled = true");
    influx.exec_as(
        "",
        "",
        "CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES",
    );
    influx.exec_as("admin", "adminpw", "CREATE DATABASE runs");
    influx.exec_as("admin", "adminpw", "CREATE USER writer WITH PASSWORD 'wpw'");
    influx.exec_as("admin", "adminpw", "GRANT WRITE ON runs TO writer");
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("username = \"writer\"\npassword = \"wpw\"\ncreate_database = false\nschema_refresh = \"1s\"")
            .rest("[log]\nlevel = \"debug\"\n")
            .toml(),
    );
    wait_until(Duration::from_secs(10), "the warning", || {
        lines(&gw, "WARN", "does not let the gateway read") >= 1
    });
    let answer = post_json(gw.addr, REGISTER, &json!({"host": "w"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["delivered"], true, "{}", answer.body);
    // Refreshed every second, told once.
    // Read again every second (the later failures at debug level): told once.
    wait_until(Duration::from_secs(15), "a few more readings", || {
        gw.log().matches("cannot read InfluxDB's").count() >= 4
    });
    assert_eq!(
        lines(&gw, "WARN", "does not let the gateway read"),
        1,
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("grant the user READ"), "{}", gw.log());
}

/// A gateway started while InfluxDB is down, before it ever made its database: once InfluxDB
/// answers, the database is made and the log delivered at once. The creation that found
/// InfluxDB unreachable at the start held the next one back for a minute, while every write
/// got 404 and the log said nothing of it.
#[test]
fn a_database_never_made_because_influxdb_was_down_is_made_once_it_answers() {
    let mut influx = Influxd::start();
    influx.stop();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let answer = post_json(gw.addr, REGISTER, &json!({"hostname": "lg"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let uuid = answer.json()["data"]["uuid"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "InfluxDB told down", || {
        lines(&gw, "WARN", "influxdb is unreachable") >= 1
    });
    influx.restart();
    wait_until(
        Duration::from_secs(20),
        "the register in InfluxDB, its database made",
        || {
            influx
                .uuids("runs", "load_testing_events", Some("started"))
                .contains(&uuid)
        },
    );
    wait_until(Duration::from_secs(10), "the return told", || {
        lines(&gw, "INFO", "influxdb takes writes again") == 1
    });
}

/// A streak of failures whose cause changes is told again at once when only a person can fix
/// the new cause: InfluxDB down, then back without the database (which the gateway may not
/// make) is an error naming the missing database, not a warning about InfluxDB being down a
/// minute later.
#[test]
fn a_failure_that_turns_into_a_missing_database_is_told_at_once() {
    let mut influx = Influxd::start();
    influx.stop();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("create_database = false")
            .toml(),
    );
    let answer = post_json(gw.addr, REGISTER, &json!({"hostname": "lg"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until(Duration::from_secs(10), "InfluxDB told down", || {
        lines(&gw, "WARN", "influxdb is unreachable") >= 1
    });
    influx.restart();
    wait_until(
        Duration::from_secs(20),
        "the missing database told as an error",
        || lines(&gw, "ERROR", "database not found") >= 1,
    );
    assert_eq!(
        lines(&gw, "WARN", "influxdb is unreachable"),
        1,
        "the earlier cause is not repeated:\n{}",
        gw.log()
    );
}
