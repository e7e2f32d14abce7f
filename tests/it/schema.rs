//! Schema conflicts answered at the request, against a real `influxd`: a field whose type
//! changed, or a name used as a tag by one run and as a field by another, is refused with 400
//! naming the field and the type earlier runs used, instead of ending in the dead letters; the
//! gateway learns InfluxDB's schema at start, and takes up a schema changed under it (a
//! dropped measurement) within `influxdb.schema_refresh`.

use std::time::Duration;

use serde_json::json;

use crate::support::{ConsumerToml, Gateway, Influxd, post_json, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";

fn gateway(influx: &Influxd) -> Gateway {
    Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("schema_refresh = \"1s\"\n")
            .rest("[jobs]\nheartbeat_interval = \"1h\"\n")
            .toml(),
    )
}

#[test]
fn a_field_of_another_type_is_refused_at_the_request_not_dead_lettered() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let first = post_json(
        gw.addr,
        REGISTER,
        &json!({"tags": {"mode": "single"}, "measurement": {"fields": {"clients": 5}}}),
    );
    assert_eq!(first.json()["delivered"], true, "{}", first.body);
    let ten = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {"clients": "ten"}}}),
    );
    assert_eq!(ten.status, 400, "{}", ten.body);
    assert_eq!(ten.json()["code"], "field_type_conflict");
    assert_eq!(
        ten.json()["error"],
        "measurement.fields.clients: is a string, but earlier runs wrote it to load_testing as a float, and InfluxDB keeps one type per field: send a number, or give the field another name"
    );
    let field = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {"mode": "x"}}}),
    );
    assert_eq!(field.status, 400, "{}", field.body);
    assert_eq!(field.json()["code"], "tag_field_conflict");
    let states = crate::support::get(gw.addr, "/apiv0.1/states").json();
    assert_eq!(states["dead_letters"]["records"], 0, "{states}");
}

#[test]
fn a_new_gateway_learns_the_schema_from_influxdb_at_start() {
    let influx = Influxd::start();
    influx.create_database("runs");
    influx.write("runs", "load_testing,uuid=x,host=h clients=5 1000");
    let gw = gateway(&influx);
    wait_until(Duration::from_secs(10), "the schema read at start", || {
        post_json(
            gw.addr,
            REGISTER,
            &json!({"host": "probe", "measurement": {"fields": {"clients": "ten"}}}),
        )
        .status
            == 400
    });
}

/// A schema that changed under the gateway is taken up within `influxdb.schema_refresh`: here
/// the database is dropped (a new database has no types), and the type the gateway held requests
/// to is accepted again. (InfluxDB 1.6 keeps a field's type in its shard after `DROP
/// MEASUREMENT` while other measurements share the shard, and answers `SHOW FIELD KEYS` without
/// it: the gateway then takes the request and InfluxDB refuses it, into the dead letters, as
/// before this check existed.)
#[test]
fn a_schema_changed_under_the_gateway_is_taken_up_within_the_refresh_interval() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let first = post_json(
        gw.addr,
        REGISTER,
        &json!({"measurement": {"fields": {"clients": 5}}}),
    );
    assert_eq!(first.json()["delivered"], true, "{}", first.body);
    let ten = json!({"host": "ten", "measurement": {"fields": {"clients": "ten"}}});
    assert_eq!(post_json(gw.addr, REGISTER, &ten).status, 400);
    // Ended, so that no heartbeat of it will write `clients` again: while it ran, the
    // gateway would keep its type through any reading of InfluxDB's schema.
    let uuid = first.json()["uuid"].as_str().unwrap().to_string();
    let ended = post_json(
        gw.addr,
        "/apiv0.1/events/commit",
        &json!({"uuid": uuid, "state": "stopped"}),
    );
    assert_eq!(ended.status, 200, "{}", ended.body);
    influx.query("runs", "DROP DATABASE runs");
    // schema_refresh is 1 s here (1 min by default).
    wait_until(
        Duration::from_secs(5),
        "the new type accepted within the refresh interval",
        || post_json(gw.addr, REGISTER, &ten).status == 200,
    );
    // The gateway makes the database again and delivers the point.
    wait_until(Duration::from_secs(10), "the point in InfluxDB", || {
        influx
            .series("runs", "load_testing")
            .iter()
            .any(|r| r["clients"] == "ten")
    });
    let states = crate::support::get(gw.addr, "/apiv0.1/states").json();
    assert_eq!(states["dead_letters"]["records"], 0, "{states}");
}

/// Runs `a` and `b` at the same moment on two threads; their answers, in that order.
fn at_once(
    gw: &Gateway,
    path: &'static str,
    a: serde_json::Value,
    b: serde_json::Value,
) -> [crate::support::RawResponse; 2] {
    let barrier = std::sync::Barrier::new(2);
    let addr = gw.addr;
    std::thread::scope(|s| {
        let send = |body: serde_json::Value| {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                post_json(addr, path, &body)
            })
        };
        let (a, b) = (send(a), send(b));
        [
            a.join().expect("the request thread"),
            b.join().expect("the request thread"),
        ]
    })
}

/// Waits until the log is delivered; then nothing may be in the dead letters.
fn delivered_and_nothing_dead_lettered(gw: &Gateway) {
    wait_until(Duration::from_secs(30), "the log delivered", || {
        crate::support::get(gw.addr, "/apiv0.1/states").json()["spool"]["records"] == 0
    });
    let states = crate::support::get(gw.addr, "/apiv0.1/states").json();
    assert_eq!(states["dead_letters"]["records"], 0, "{states}");
}

#[test]
fn two_registers_racing_with_two_types_of_a_new_field_one_is_refused_none_dead_lettered() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    const PAIRS: usize = 40;
    for i in 0..PAIRS {
        let field = format!("new_{i}");
        let [a, b] = at_once(
            &gw,
            REGISTER,
            json!({"measurement": {"fields": {&field: 1.5}}}),
            json!({"measurement": {"fields": {&field: "s"}}}),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "pair {i}: {} / {}", a.body, b.body);
        let refused = if a.status == 400 { &a } else { &b };
        assert_eq!(
            refused.json()["code"],
            "field_type_conflict",
            "{}",
            refused.body
        );
        let error = refused.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.starts_with(&format!("measurement.fields.{field}: is ")),
            "pair {i}: {error}"
        );
    }
    delivered_and_nothing_dead_lettered(&gw);
    // Every accepted heartbeat is in InfluxDB.
    assert_eq!(influx.count("runs", "load_testing"), PAIRS);
}

#[test]
fn two_commits_racing_with_two_types_of_a_new_stats_member_keep_both_rows() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    const PAIRS: usize = 30;
    let commit = |uuid: &str, member: &str, value: serde_json::Value| {
        json!({"uuid": uuid, "measurement": {"fields": {"requestStats": {
            "stats": [{"name": "/a", "method": "GET", "num_requests": 3, member: value}]
        }}}})
    };
    for i in 0..PAIRS {
        let member = format!("member_{i}");
        let (x, y) = (
            crate::support::register(gw.addr, &json!({})),
            crate::support::register(gw.addr, &json!({})),
        );
        let [a, b] = at_once(
            &gw,
            "/apiv0.1/events/commit",
            commit(&x, &member, json!(2)),
            commit(&y, &member, json!(true)),
        );
        assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.body, b.body);
        let left_out = [&a, &b]
            .iter()
            .filter(|r| {
                r.json()["data"]["description"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("1 requestStats members were left out")
            })
            .count();
        assert_eq!(left_out, 1, "pair {i}: {} / {}", a.body, b.body);
    }
    delivered_and_nothing_dead_lettered(&gw);
    assert_eq!(
        influx.count("runs", "load_testing_request_stats"),
        2 * PAIRS,
        "no endpoint row lost"
    );
}
