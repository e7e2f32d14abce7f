//! Schema conflicts answered at the request, against a real `influxd`: a field whose type
//! changed, or a name used as a tag by one run and as a field by another, is refused with 400
//! naming the field and the type earlier runs used, instead of ending in the dead letters; the
//! gateway learns InfluxDB's schema at start, and takes up a schema changed under it (a
//! dropped measurement) within `influxdb.schema_refresh`.

use std::time::Duration;

use serde_json::json;

use crate::support::{Gateway, Influxd, config_with, post_json, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";

fn gateway(influx: &Influxd) -> Gateway {
    Gateway::start(&config_with(
        &influx.url,
        "runs",
        "",
        "schema_refresh = \"1s\"\n",
        "[jobs]\nheartbeat_interval = \"1h\"\n",
    ))
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
