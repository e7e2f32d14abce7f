//! Runs older than InfluxDB keeps, refused at the request, against a real `influxd`: a database
//! whose default retention policy keeps one hour; a register or a commit whose `startedAt` is
//! two hours old is answered 400 naming the field and the policy (InfluxDB would drop its
//! points), and one half an hour old is answered 200 and stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::support::{ConsumerToml, Gateway, Influxd, post_json, register, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";
const COMMIT: &str = "/apiv0.1/events/commit";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An influxd whose database `runs` keeps points one hour (policy `onehour`, the default), and
/// a gateway in front of it.
fn one_hour() -> (Influxd, Gateway) {
    let influx = Influxd::start();
    influx.create_database("runs");
    influx.exec(
        "",
        "CREATE RETENTION POLICY onehour ON runs DURATION 1h REPLICATION 1 DEFAULT",
    );
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("schema_refresh = \"1s\"\n")
            .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    (influx, gw)
}

#[test]
fn a_run_started_before_the_retention_policy_keeps_is_refused_at_register_and_commit() {
    let (influx, gw) = one_hour();
    let two_hours_ago = now_secs() - 2 * 3600;
    let old = json!({"startedAt": two_hours_ago, "hostname": "old", "measurement": {"fields": {"clients": 1}}});
    // The policy is read at start, beside the schema.
    wait_until(Duration::from_secs(20), "the retention policy read", || {
        post_json(gw.addr, REGISTER, &old).status == 400
    });
    let refused = post_json(gw.addr, REGISTER, &old);
    assert_eq!(
        refused.json()["code"],
        "older_than_retention",
        "{}",
        refused.body
    );
    let message = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("startedAt ")
            && message.contains("is older than the retention policy \"onehour\" keeps (1h): InfluxDB would drop these points"),
        "{message}"
    );

    // Half an hour ago is within the policy: recorded and stored.
    let recent = now_secs() - 1800;
    let uuid = register(
        gw.addr,
        &json!({"startedAt": recent, "hostname": "recent", "measurement": {"fields": {"clients": 1}}}),
    );
    // A commit stamped two hours ago is refused too; the run stays running, and a commit
    // stamped half an hour ago ends it and is stored.
    let late = post_json(
        gw.addr,
        COMMIT,
        &json!({"uuid": uuid, "startedAt": two_hours_ago, "measurement": {"fields": {"rps": 2}}}),
    );
    assert_eq!(late.status, 400, "{}", late.body);
    assert_eq!(late.json()["code"], "older_than_retention");
    let ok = post_json(
        gw.addr,
        COMMIT,
        &json!({"uuid": uuid, "startedAt": recent, "measurement": {"fields": {"rps": 2}}}),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    wait_until(Duration::from_secs(30), "the result stored", || {
        influx.count("runs", "load_testing_result") == 1
    });
    let hosts = influx.query(
        "runs",
        "SHOW TAG VALUES FROM load_testing_events WITH KEY = \"host\"",
    );
    assert!(!hosts.to_string().contains("\"old\""), "{hosts}");
}
