//! InfluxDB's write API through the gateway (v1 `/write`, v2 `/api/v2/write`, v3
//! `/api/v3/write_lp`, `/ping`, `/health`, `/query`), against a real `influxd` whose stored
//! points are read back: each API's status codes and error shapes, partial writes, the rights
//! of a token (databases, measurements), the series budget across a restart, field types
//! refused at the request, gzip'd bodies, lines without a timestamp.

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    ConsumerToml, Gateway, Influxd, RawResponse, request, send_raw, states, wait_until,
};

pub const TOKEN: &str = "k6-token-0123456789abcdef";
const OTHER: &str = "other-token-0123456789abcdef";

/// The gateway in front of `influx` with two tokens: `k6` may write `k6` and `jmeter_*`
/// (measurements `http_*` and `vus`, 4 series), `other` may write `other`.
pub fn gateway(influx: &Influxd) -> Gateway {
    Gateway::start(&config(influx, ""))
}

fn config(influx: &Influxd, extra: &str) -> String {
    ConsumerToml::new(&influx.url, "runs")
        .rest(&format!(
            "[auth]\n\
             [[auth.token]]\nname = \"k6\"\ntoken = \"{TOKEN}\"\ndatabases = [\"k6\", \"jmeter_*\"]\nmeasurements = [\"http_*\", \"vus\"]\nmax_series = 4\n{extra}\
             [[auth.token]]\nname = \"other\"\ntoken = \"{OTHER}\"\ndatabases = [\"other\"]\n"
        ))
        .toml()
}

/// `POST path` with `body` and `Authorization: Token TOKEN`.
pub fn write(gw: &Gateway, path: &str, body: &str) -> RawResponse {
    let auth = format!("Token {TOKEN}");
    request(
        gw.addr,
        "POST",
        path,
        &[("Authorization", &auth)],
        Some(body),
    )
}

/// The points of `measurement` in `db`, waiting until there are `n` of them.
fn points(
    influx: &Influxd,
    db: &str,
    measurement: &str,
    n: usize,
) -> Vec<serde_json::Map<String, Value>> {
    wait_until(Duration::from_secs(30), "the points in influxd", || {
        influx.series(db, measurement).len() >= n
    });
    influx.series(db, measurement)
}

#[test]
fn a_v1_write_is_answered_204_and_stored_as_sent() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = write(
        &gw,
        "/write?db=k6&precision=ms",
        "http_req_duration,method=GET,status=200 value=12.5,ok=true,n=3i,s=\"a b\" 1700000000123\nhttp_reqs,method=GET value=1\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        r.header("x-influxdb-version")
            .is_some_and(|v| v.contains("metrics-consumer")),
        "{:?}",
        r.headers
    );
    let rows = points(&influx, "k6", "http_req_duration", 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["time"], 1_700_000_000_123_i64, "milliseconds, as sent");
    assert_eq!(row["method"], "GET");
    assert_eq!(row["status"], "200");
    assert_eq!(row["value"], 12.5);
    assert_eq!(row["ok"], true);
    assert_eq!(row["n"], 3);
    assert_eq!(row["s"], "a b");
    // A line without a timestamp gets the time the gateway accepted it.
    let reqs = points(&influx, "k6", "http_reqs", 1);
    let stamped = reqs[0]["time"].as_i64().unwrap_or_default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now_ms - 60_000..=now_ms).contains(&stamped),
        "{stamped} vs {now_ms}"
    );
}

#[test]
fn a_v1_partial_write_stores_the_valid_lines_and_names_the_others() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = write(
        &gw,
        "/write?db=k6",
        "http_reqs value=1 1000000000\nhttp_reqs value= 2000000000\nhttp_reqs value=3 3000000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.starts_with(
            "partial write: unable to parse 'http_reqs value= 2000000000': missing field value"
        ),
        "{error}"
    );
    assert!(error.ends_with("dropped=0"), "{error}");
    let rows = points(&influx, "k6", "http_reqs", 2);
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Nothing valid: 400 without "partial write".
    let r = write(&gw, "/write?db=k6", "http_reqs\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unable to parse"),
        "{}",
        r.body
    );
}

#[test]
fn a_token_writes_only_its_databases_and_measurements() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = write(&gw, "/write?db=other", "http_reqs value=1\n");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "database_not_allowed");
    assert_eq!(
        r.json()["error"],
        "this token may not write \"other\": it may write \"k6\", \"jmeter_*\""
    );
    let r = write(
        &gw,
        "/write?db=jmeter_team1",
        "http_reqs value=1\ncpu value=1\n",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "measurement_not_allowed");
    assert!(r.body.contains("\\\"cpu\\\""), "{}", r.body);
    // Without a token: 401; a wrong one: 401.
    let r = request(
        gw.addr,
        "POST",
        "/write?db=k6",
        &[],
        Some("http_reqs value=1\n"),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // The token as v1's query password, Basic, and Bearer.
    let r = request(
        gw.addr,
        "POST",
        &format!("/write?db=jmeter_team1&u=me&p={TOKEN}"),
        &[],
        Some("http_reqs value=2\n"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let basic = crate::auth::basic("me", TOKEN);
    let r = request(
        gw.addr,
        "POST",
        "/write?db=jmeter_team1",
        &[("Authorization", &basic)],
        Some("http_reqs value=3\n"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(points(&influx, "jmeter_team1", "http_reqs", 2).len(), 2);
    // The other token writes its own database and no other.
    let auth = format!("Bearer {OTHER}");
    let r = request(
        gw.addr,
        "POST",
        "/write?db=k6",
        &[("Authorization", &auth)],
        Some("cpu value=1\n"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!gw.log().contains(TOKEN), "the log shows a token");
}

#[test]
fn the_series_budget_refuses_new_series_naming_the_tag_and_survives_a_restart() {
    let influx = Influxd::start();
    let mut gw = gateway(&influx);
    let body: String = (0..6)
        .map(|vu| {
            format!(
                "http_reqs,vu={vu},method=GET value=1 {}\n",
                1_000_000_000 + vu
            )
        })
        .collect();
    let r = write(&gw, "/write?db=k6", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("max_series (4)"), "{error}");
    assert!(
        error.contains("the tag \"vu\" has the most distinct values among them (2)"),
        "{error}"
    );
    assert!(error.ends_with("dropped=2"), "{error}");
    assert_eq!(points(&influx, "k6", "http_reqs", 4).len(), 4);
    // Known series are still taken, new ones not, after a restart too.
    gw.restart();
    let r = write(
        &gw,
        "/write?db=k6",
        "http_reqs,vu=0,method=GET value=2 5000000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = write(
        &gw,
        "/write?db=k6",
        "http_reqs,vu=9,method=GET value=2 5000000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Another database of the same token has its own budget.
    let r = write(
        &gw,
        "/write?db=jmeter_x",
        "http_reqs,vu=9,method=GET value=2 5000000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn a_field_of_another_type_is_refused_at_the_request() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = write(&gw, "/write?db=k6", "http_reqs value=1 1000000000\n");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = write(
        &gw,
        "/write?db=k6",
        "http_reqs value=\"x\" 2000000000\nhttp_reqs value=2 3000000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "partial write: field type conflict: input field \"value\" on measurement \"http_reqs\" is type string, already exists as type float dropped=1"
    );
    // Within one write too.
    let r = write(
        &gw,
        "/write?db=k6",
        "http_reqs other=1i 4000000000\nhttp_reqs other=true 5000000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(points(&influx, "k6", "http_reqs", 3).len(), 3);
    let states = states(gw.addr, TOKEN);
    assert_eq!(states["dead_letters"]["records"], 0, "{states}");
}

#[test]
fn v2_writes_take_a_bucket_and_answer_in_v2_s_shape() {
    let influx = Influxd::start();
    influx.create_database("k6");
    influx.exec(
        "k6",
        "CREATE RETENTION POLICY week ON k6 DURATION 7d REPLICATION 1",
    );
    let gw = gateway(&influx);
    // Within the week the retention policy keeps.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = write(
        &gw,
        "/api/v2/write?org=lab&bucket=k6/week&precision=s",
        &format!("vus value=5 {now_s}\n"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let in_week = || {
        influx.query("k6", "SELECT value FROM \"week\".\"vus\"")["results"][0]["series"][0]
            ["values"]
            .clone()
    };
    wait_until(Duration::from_secs(30), "the point in k6.week", || {
        in_week().is_array()
    });
    assert_eq!(
        in_week(),
        serde_json::json!([[now_s as i64 * 1000, 5]]),
        "in the retention policy, in seconds"
    );
    let r = write(
        &gw,
        "/api/v2/write?org=lab&bucket=k6&precision=h",
        "vus value=5\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "invalid");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("precision"),
        "{}",
        r.body
    );
    let r = write(
        &gw,
        "/api/v2/write?org=lab&bucket=k6",
        "vus value=1 1\nvus value=x 2\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("partial write error (1 written): unable to parse 'vus value=x 2'"),
        "{}",
        r.body
    );
    let r = request(
        gw.addr,
        "POST",
        "/api/v2/write?bucket=k6",
        &[],
        Some("vus value=1\n"),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["code"], "unauthorized");
    assert!(r.json()["message"].is_string(), "{}", r.body);
    let health = request(gw.addr, "GET", "/health", &[], None);
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "pass");
}

#[test]
fn v3_writes_name_each_refused_line_and_take_all_or_nothing_when_asked() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = write(
        &gw,
        "/api/v3/write_lp?db=k6&precision=second&accept_partial=false",
        "vus value=1 1700000000\nvus value= 1700000001\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["data"][0]["line_number"], 2, "{}", r.body);
    assert_eq!(
        r.json()["data"][0]["original_line"],
        "vus value= 1700000001"
    );
    let r = write(
        &gw,
        "/api/v3/write_lp?db=k6&precision=second",
        "vus value=1 1700000000\nvus value= 1700000001\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .split(':')
            .next(),
        Some("partial write of line protocol occurred")
    );
    let rows = points(&influx, "k6", "vus", 1);
    assert_eq!(
        rows.len(),
        1,
        "the all-or-nothing write stored a line: {rows:?}"
    );
    assert_eq!(rows[0]["time"], 1_700_000_000_000_i64);
    let r = write(
        &gw,
        "/api/v3/write_lp?db=k6&precision=auto",
        "vus value=2 1700000002\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let rows = points(&influx, "k6", "vus", 2);
    assert_eq!(
        rows[1]["time"], 1_700_000_002_000_i64,
        "auto reads seconds: {rows:?}"
    );
}

#[test]
fn ping_and_query_answer_what_clients_ask_before_writing() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let ping = request(gw.addr, "GET", "/ping", &[], None);
    assert_eq!(ping.status, 204, "{}", ping.body);
    assert!(ping.header("x-influxdb-version").is_some());
    let head = request(gw.addr, "HEAD", "/ping", &[], None);
    assert_eq!(head.status, 204);
    let auth = format!("Token {TOKEN}");
    let q = |method: &str, q: &str| {
        request(
            gw.addr,
            method,
            &format!("/query?q={q}"),
            &[("Authorization", &auth)],
            None,
        )
    };
    let r = q("POST", "CREATE+DATABASE+%22jmeter_a%22");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["statement_id"], 0);
    let r = q("POST", "CREATE+DATABASE+nope");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = q("GET", "SHOW+DATABASES");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["results"][0]["series"][0]["values"],
        serde_json::json!([["k6"]])
    );
    let r = q("GET", "SELECT+*+FROM+vus");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "insert_only");
    // A retention asked for is refused, never silently not made.
    let r = q("POST", "CREATE+DATABASE+jmeter_b+WITH+DURATION+1d");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "insert_only");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("default retention policy"),
        "{}",
        r.body
    );
    // A ';' inside a quoted name does not end the statement: one statement, one result.
    let r = q(
        "POST",
        "CREATE+DATABASE+%22jmeter_%3Bx%22%3B+SHOW+DATABASES",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["results"].as_array().unwrap().len(),
        2,
        "{}",
        r.body
    );
    let r = request(gw.addr, "PUT", "/ping", &[], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn a_gzip_body_is_written_like_a_plain_one() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = post_gzip(&gw, "/write?db=k6", &gzip(&http_reqs(3)));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(points(&influx, "k6", "http_reqs", 3).len(), 3);
}

#[test]
fn a_first_write_is_checked_against_the_field_types_influxdb_holds() {
    let influx = Influxd::start();
    influx.create_database("k6");
    influx.write("k6", "http_reqs value=\"text\" 1000000000");
    let gw = gateway(&influx);
    // The very first write to the database waits for InfluxDB's word on it.
    let r = write(&gw, "/write?db=k6", "http_reqs value=1 2000000000\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "partial write: field type conflict: input field \"value\" on measurement \"http_reqs\" is type float, already exists as type string dropped=1"
    );
    assert!(
        gw.log()
            .contains("read InfluxDB's field types in database \"k6\""),
        "{}",
        gw.log()
    );
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
}

#[test]
fn a_point_older_than_its_retention_policy_keeps_is_refused_at_the_door_as_influxdb_refuses_it() {
    let influx = Influxd::start();
    influx.exec("", "CREATE DATABASE k6 WITH DURATION 1h NAME short");
    influx.exec(
        "",
        "CREATE RETENTION POLICY long ON k6 DURATION 3h REPLICATION 1",
    );
    influx.exec("", "CREATE DATABASE k6_direct WITH DURATION 1h NAME short");
    let gw = gateway(&influx);
    let hour = 3_600_000_000_000i64;
    let now = crate::line_protocol::now_ns();
    // Two hours old: past the default policy (1h), within `long` (3h).
    let body = format!(
        "http_reqs,at=old value=1 {}\nhttp_reqs,at=now value=2 {now}\n",
        now - 2 * hour
    );
    let direct = request(
        influx.addr(),
        "POST",
        "/write?db=k6_direct",
        &[],
        Some(&body),
    );
    let r = write(&gw, "/write?db=k6", &body);
    assert_eq!((r.status, direct.status), (400, 400), "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "partial write: points beyond retention policy dropped=1"
    );
    assert_eq!(r.json()["error"], direct.json()["error"]);
    let stored = points(&influx, "k6", "http_reqs", 1);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["at"], "now");
    // The policy named by `rp` keeps them.
    let r = write(&gw, "/write?db=k6&rp=long", &body);
    assert_eq!(r.status, 204, "{}", r.body);
    // v2 names the line in its own shape; v3 names it, and takes nothing when asked so.
    let auth = format!("Token {TOKEN}");
    let r = request(
        gw.addr,
        "POST",
        "/api/v2/write?bucket=k6&precision=ns",
        &[("Authorization", &auth)],
        Some(&body),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "invalid", "{}", r.body);
    let r = request(
        gw.addr,
        "POST",
        "/api/v3/write_lp?db=k6&precision=nanosecond&accept_partial=false",
        &[("Authorization", &auth)],
        Some(&body),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["data"][0]["line_number"], 1, "{}", r.body);
    assert_eq!(
        r.json()["data"][0]["error_message"],
        "points beyond retention policy"
    );
    // At the edge: InfluxDB keeps an older point in the shard group (an hour here) of a newer
    // point of the same write, and drops one before it; the gateway says and stores the same.
    let newer = now - hour + 60_000_000_000;
    let group = newer - newer.rem_euclid(hour);
    let mut edge = format!(
        "http_edge value=1,at=\"newer\" {newer}\nhttp_edge value=2,at=\"before\" {}\n",
        group - 1
    );
    if group + 1_000_000_000 < now - hour - 5_000_000_000 {
        edge.push_str(&format!(
            "http_edge value=3,at=\"same\" {}\n",
            group + 1_000_000_000
        ));
    }
    let direct = request(
        influx.addr(),
        "POST",
        "/write?db=k6_direct",
        &[],
        Some(&edge),
    );
    let r = write(&gw, "/write?db=k6", &edge);
    // In the last minute of an hour the shard group of `newer` begins after `now - hour`: no
    // point of the edge is past the policy, and both answer 204, with no body.
    let error = |r: &RawResponse| match r.status {
        204 => Value::Null,
        _ => r.json()["error"].clone(),
    };
    assert_eq!(
        (r.status, error(&r)),
        (direct.status, error(&direct)),
        "{edge}"
    );
    let kept = |db: &str| {
        let mut at: Vec<String> = influx
            .series(db, "http_edge")
            .iter()
            .filter_map(|p| p.get("at").and_then(Value::as_str).map(str::to_string))
            .collect();
        at.sort();
        at
    };
    wait_until(Duration::from_secs(30), "the log delivered", || {
        states(gw.addr, TOKEN)["spool"]["records"] == 0
    });
    assert_eq!(kept("k6"), kept("k6_direct"), "{edge}");
    assert!(kept("k6").contains(&"newer".to_string()));
    let stored = influx.query("k6", "SELECT count(value) FROM \"long\".\"http_reqs\"");
    assert_eq!(
        stored["results"][0]["series"][0]["values"][0][1], 2,
        "{stored}"
    );
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
}

#[test]
fn a_create_database_split_by_a_no_break_space_is_answered_not_a_panic() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    // U+00A0 is whitespace to the statement's reader, and two bytes long.
    let r = write(&gw, "/query?q=CREATE%C2%A0DATABASE+k6", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[test]
fn a_database_name_influxdb_refuses_is_refused_at_the_door_and_holds_no_other_back() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    // `jmeter_*` matches "jmeter_a/b", a name InfluxDB refuses to create ('/', '\').
    for db in ["jmeter_a%2Fb", "jmeter_a%5Cb"] {
        let r = write(
            &gw,
            &format!("/write?db={db}"),
            "http_reqs value=1 1000000000\n",
        );
        assert_eq!(r.status, 400, "{db}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap_or_default().contains('/'),
            "{}",
            r.body
        );
    }
    // A database of the token's that InfluxDB does not have yet is made, and the write stored.
    let r = write(
        &gw,
        "/write?db=jmeter_new",
        "http_reqs value=2 2000000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(points(&influx, "jmeter_new", "http_reqs", 1).len(), 1);
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
}

#[test]
fn a_retention_policy_influxdb_does_not_list_is_refused_at_the_door_until_it_is_made() {
    let influx = Influxd::start();
    influx.create_database("k6");
    let gw = gateway(&influx);
    let r = write(
        &gw,
        "/write?db=k6&rp=nope",
        "http_reqs value=1 1000000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "unknown_retention_policy", "{}", r.body);
    let message = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("\"nope\"") && message.contains("SHOW RETENTION POLICIES"),
        "{message}"
    );
    // v2 names it as a bucket "k6/nope", in its own shape.
    let r = request(
        gw.addr,
        "POST",
        "/api/v2/write?bucket=k6/nope&precision=ns",
        &[("Authorization", &format!("Token {TOKEN}"))],
        Some("http_reqs value=2 2000000000\n"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["reason"], "unknown_retention_policy", "{}", r.body);
    // A bucket InfluxDB cannot make is refused at the door too, and holds nothing back.
    let r = write(
        &gw,
        "/api/v2/write?bucket=k6/..%2Fx",
        "http_reqs value=2 2000000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = write(&gw, "/write?db=k6", "http_reqs value=4\n");
    assert_eq!(r.status, 204, "{}", r.body);
    // Once the operator makes it, a write there is taken (read again within seconds).
    influx.exec(
        "",
        "CREATE RETENTION POLICY nope ON k6 DURATION 2h REPLICATION 1",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = write(&gw, "/write?db=k6&rp=nope", "http_reqs value=3\n");
        if r.status == 204 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new policy still refused: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(Duration::from_secs(30), "the point stored", || {
        influx.query("k6", "SELECT count(value) FROM \"nope\".\"http_reqs\"")["results"][0]["series"]
            [0]["values"][0][1]
            == 1
    });
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
}

#[test]
fn a_v3_write_refused_whole_takes_nothing_from_the_series_budget() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    // Five new series against a budget of four, all or nothing: nothing is written…
    let body: String = (0..5)
        .map(|vu| format!("vus,vu={vu} value=1 {}\n", 1_000_000_000 + vu))
        .collect();
    let r = write(&gw, "/api/v3/write_lp?db=k6&accept_partial=false", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    // …so the budget is whole for four other series.
    let body: String = (10..14)
        .map(|vu| format!("vus,vu={vu} value=1 {}\n", 1_000_000_000 + vu))
        .collect();
    let r = write(&gw, "/write?db=k6", &body);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(points(&influx, "k6", "vus", 4).len(), 4);
}

#[test]
fn a_database_name_with_an_invisible_character_is_refused_at_the_door() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let r = write(&gw, "/write?db=jmeter_%E2%80%8Bx", "http_reqs value=1\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "missing_database");
    assert!(r.body.contains("U+200B"), "{}", r.body);
    // Letters of other scripts are names.
    let r = write(
        &gw,
        "/write?db=jmeter_%C3%A9t%C3%A9",
        "http_reqs value=1 1000000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(points(&influx, "jmeter_été", "http_reqs", 1).len(), 1);
}

/// `n` lines of `http_reqs`, a nanosecond apart from 1 s after the epoch.
fn http_reqs(n: i64) -> String {
    (0..n)
        .map(|i| format!("http_reqs,method=GET value={i} {}\n", 1_000_000_000 + i))
        .collect()
}

/// `text` gzip'd.
/// POSTs `gz` to `path` as a gzip'd body with the `k6` token, on a connection of its own.
fn post_gzip(gw: &Gateway, path: &str, gz: &[u8]) -> RawResponse {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {TOKEN}\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    raw.extend_from_slice(gz);
    send_raw(gw.addr, &raw)
}

fn gzip(text: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// `data` as chunks of `size` bytes, with the last chunk and the final empty line.
fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn a_chunked_gzip_body_as_telegraf_sends_it_is_stored() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let gz = gzip(&http_reqs(50));
    // What Telegraf's outputs.influxdb sends: gzip inside chunked, no Content-Length.
    let mut raw = format!(
        "POST /write?db=k6 HTTP/1.1\r\nHost: x\r\nUser-Agent: Telegraf/1.30.0\r\nAuthorization: Token {TOKEN}\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .into_bytes();
    raw.extend_from_slice(&chunked(&gz, 37));
    let r = send_raw(gw.addr, &raw);
    assert_eq!(r.status, 204, "{}", r.body);
    // And outputs.influxdb_v2's, into another measurement of the same database.
    let body: String = (0..5)
        .map(|i| format!("vus value={i} {}\n", 2_000_000_000 + i))
        .collect();
    let mut raw = format!(
        "POST /api/v2/write?org=o&bucket=k6 HTTP/1.1\r\nHost: x\r\nAuthorization: Token {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .into_bytes();
    raw.extend_from_slice(&chunked(body.as_bytes(), 4096));
    let r = send_raw(gw.addr, &raw);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(points(&influx, "k6", "http_reqs", 50).len(), 50);
    assert_eq!(points(&influx, "k6", "vus", 5).len(), 5);
}

#[test]
fn answers_the_http_layer_makes_on_influxdb_s_routes_are_in_their_api_s_shape() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let auth = format!("Token {TOKEN}");
    let too_large = |path: &str| {
        request(
            gw.addr,
            "POST",
            path,
            &[("Authorization", &auth), ("Content-Length", "99999999")],
            Some(""),
        )
    };
    let r = too_large("/write?db=k6");
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.header("x-influxdb-version").is_some(), "{:?}", r.headers);
    assert!(r.json()["error"].is_string(), "{}", r.body);
    let r = too_large("/api/v2/write?bucket=k6");
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.header("x-influxdb-version").is_some(), "{:?}", r.headers);
    assert_eq!(r.json()["code"], "request too large", "{}", r.body);
    assert!(r.json()["message"].is_string(), "{}", r.body);
    // Once only, and the run routes' answers as they were.
    let r = too_large("/apiv0.1/events/register");
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.header("x-influxdb-version").is_none(), "{:?}", r.headers);
    let r = request(gw.addr, "POST", "/write?db=k6", &[], Some("x"));
    assert_eq!(r.status, 401);
    let versions = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-influxdb-version"))
        .count();
    assert_eq!(versions, 1, "{:?}", r.headers);
}

/// The write API may not write the runs' measurements in the database the runs go to: their
/// field types are the run API's to claim. A token that wrote `load_testing users="many"` there
/// had a run's `users=5` answered 200 and then refused by InfluxDB, a dead letter of another
/// client's points (and could write into runs it does not own).
#[test]
fn the_runs_measurements_in_the_runs_database_are_the_run_apis_alone() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[auth]\n[[auth.token]]\nname = \"all\"\ntoken = \"{TOKEN}\"\ndatabases = [\"*\"]\n"
            ))
            .toml(),
    );
    let r = write(
        &gw,
        "/write?db=runs",
        "k6_custom v=1 1000000000\nload_testing,uuid=x users=\"many\" 2000000000\n",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "measurement_not_allowed", "{}", r.body);
    assert!(
        r.body.contains("holds the runs") && r.body.contains("line 2"),
        "{}",
        r.body
    );
    // Another measurement there, and the runs' measurement elsewhere, are written.
    let r = write(&gw, "/write?db=runs", "k6_custom v=1 1000000000\n");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = write(
        &gw,
        "/write?db=k6",
        "load_testing users=\"many\" 1000000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // The run's users=5 is taken, and stored.
    let auth = format!("Bearer {TOKEN}");
    let body = r#"{"hostname": "lg", "measurement": {"fields": {"users": 5}}, "state": "running"}"#;
    let r = request(
        gw.addr,
        "POST",
        "/apiv0.1/events/register",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let beats = points(&influx, "runs", "load_testing", 1);
    assert_eq!(beats[0]["users"], 5.0, "{beats:?}");
    assert_eq!(points(&influx, "runs", "k6_custom", 1).len(), 1);
    assert_eq!(points(&influx, "k6", "load_testing", 1).len(), 1);
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
}

/// The field types of points still waiting in the log are the gateway's word after a restart:
/// the write API's schemas are not in the snapshot, and a crash loses what the run API learned
/// since the last one. Before, a write of another type after the restart was answered 204, and
/// InfluxDB refused one of the two once back: a dead letter of acknowledged points.
#[test]
fn the_types_of_points_waiting_in_the_log_hold_after_a_crash() {
    let mut influx = Influxd::start();
    let mut gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[auth]\n[[auth.token]]\nname = \"all\"\ntoken = \"{TOKEN}\"\ndatabases = [\"*\"]\n"
            ))
            .toml(),
    );
    let r = write(&gw, "/write?db=k6", "http_reqs value=1 1000000000\n");
    assert_eq!(r.status, 204, "{}", r.body);
    points(&influx, "k6", "http_reqs", 1);
    // InfluxDB away: what comes now waits in the log.
    influx.stop();
    let r = write(&gw, "/write?db=k6", "vus value=5i 1000000000\n");
    assert_eq!(r.status, 204, "{}", r.body);
    let auth = format!("Bearer {TOKEN}");
    let register = |gw: &Gateway, users: &str| {
        request(
            gw.addr,
            "POST",
            "/apiv0.1/events/register",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(&format!(
                r#"{{"hostname": "lg", "measurement": {{"fields": {{"users": {users}}}}}, "state": "running"}}"#
            )),
        )
    };
    assert_eq!(register(&gw, "5").status, 200);
    gw.kill();
    gw.restart();
    let r = write(&gw, "/write?db=k6", "vus value=\"many\" 2000000000\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("field type conflict"), "{}", r.body);
    let r = register(&gw, "\"many\"");
    assert_eq!(r.status, 400, "{}", r.body);
    // What the log held reaches InfluxDB once it is back, and nothing is a dead letter.
    influx.restart();
    assert_eq!(points(&influx, "k6", "vus", 1)[0]["value"], 5);
    assert_eq!(points(&influx, "runs", "load_testing", 1)[0]["users"], 5.0);
    wait_until(Duration::from_secs(30), "the log delivered", || {
        states(gw.addr, TOKEN)["spool"]["records"] == 0
    });
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
}

/// A body starting with a space is all fields to InfluxDB 1.x's line splitter, so a quote
/// opened there keeps a line break inside the line: influxd stores a point whose name holds
/// it. No line can carry that name again, and the gateway writes every line again, so it
/// refuses the line at the request (with the other lines of the body stored), rather than
/// take it and see influxd refuse what it wrote: nothing goes to the dead letters.
#[test]
fn a_line_whose_name_holds_a_line_break_is_refused_at_the_request() {
    let influx = Influxd::start();
    let bad = " http_m=\" a\n=\"\" 1700000000123";
    influx.create_database("direct");
    let direct = request(
        influx.addr(),
        "POST",
        "/write?db=direct&precision=ms",
        &[],
        Some(bad),
    );
    assert_eq!(direct.status, 204, "influxd stores it: {}", direct.body);
    let gw = gateway(&influx);
    let body = format!("http_reqs value=1 1700000000000\n{bad}");
    let r = write(&gw, "/write?db=k6&precision=ms", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.starts_with("partial write: unable to parse"),
        "{error}"
    );
    assert!(error.contains("line break"), "{error}");
    assert_eq!(points(&influx, "k6", "http_reqs", 1).len(), 1);
    assert_eq!(states(gw.addr, TOKEN)["dead_letters"]["records"], 0);
    assert_eq!(influx.measurements("k6"), ["http_reqs"]);
}

/// The gateway writes at most 1 000 databases through the write API, all tokens together,
/// and a database takes its place with a token's first write there, even one refused whole
/// (here: no line of it parses; nothing is recorded, nothing reaches InfluxDB). One token
/// whose globs allow many names (`jmeter_*`) sending 1 000 bad requests to new names spent
/// every place, and another token's first write to the one database it may write was then
/// refused 403 `too_many_databases` until the gateway restarted. Each of the two tokens adds
/// at most half of the places now: past its half, the greedy one is refused 403 itself.
#[test]
fn one_token_cannot_spend_every_database_place_and_lock_another_out() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let mut answers = std::collections::BTreeMap::new();
    for i in 0..1_000 {
        let answer = write(&gw, &format!("/write?db=jmeter_{i}"), "not line protocol\n");
        let code = answer.json()["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if i < 500 {
            assert_eq!(answer.status, 400, "{}", answer.body);
        } else {
            assert_eq!(
                (answer.status, code.as_str()),
                (403, "too_many_databases"),
                "past its share: {}",
                answer.body
            );
        }
        *answers.entry(answer.status).or_insert(0) += 1;
    }
    assert_eq!(answers, [(400, 500), (403, 500)].into());
    let other = request(
        gw.addr,
        "POST",
        "/write?db=other",
        &[("Authorization", &format!("Token {OTHER}"))],
        Some("vus value=1\n"),
    );
    assert_eq!(
        other.status, 204,
        "another token's first write to its own database: {}",
        other.body
    );
}

#[test]
fn the_answer_to_a_small_body_of_long_refused_lines_stays_small() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    // 100 lines of 160 000 bytes each, none with a field: 16 MB inflated, 16 KB sent.
    let line = format!("http_{}", "\u{1}".repeat(160_000));
    let text = vec![line; 100].join("\n");
    let gz = gzip(&text);
    assert!(gz.len() < 64 * 1024, "{} bytes", gz.len());
    for path in [
        "/api/v3/write_lp?db=k6",
        "/write?db=k6",
        "/api/v2/write?bucket=k6",
    ] {
        let r = post_gzip(&gw, path, &gz);
        assert_eq!(r.status, 400, "{path}");
        assert!(
            r.body.len() < 1024 * 1024,
            "{path}: a {}-byte body answered with {} bytes",
            gz.len(),
            r.body.len()
        );
    }
}

#[test]
fn the_answer_to_lines_whose_field_conflicts_stays_small_however_long_its_name() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let field = "f".repeat(60_000);
    let first = write(&gw, "/write?db=k6", &format!("http_m {field}=1i"));
    assert_eq!(first.status, 204, "{}", first.body);
    // 100 lines that write the field as a string: 6 MB inflated, a few KB sent.
    let text = vec![format!("http_m {field}=\"x\""); 100].join("\n");
    let gz = gzip(&text);
    let r = post_gzip(&gw, "/api/v3/write_lp?db=k6", &gz);
    assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(300)]);
    assert!(
        r.body.contains("type"),
        "{}",
        &r.body[..r.body.len().min(300)]
    );
    assert!(
        r.body.len() < 256 * 1024,
        "a {}-byte body answered with {} bytes",
        gz.len(),
        r.body.len()
    );
}

#[test]
fn a_partial_write_is_one_dead_letter_counted_whole_and_its_reason_says_partial() {
    let influx = Influxd::start();
    // The gateway's own check of field types is off, so the conflict reaches InfluxDB.
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest(&format!(
                "[auth]\n[[auth.token]]\nname = \"other\"\ntoken = \"{OTHER}\"\ndatabases = [\"other\"]\n"
            ))
            .toml(),
    );
    let auth = format!("Token {OTHER}");
    let send = |body: &str| {
        request(
            gw.addr,
            "POST",
            "/write?db=other",
            &[("Authorization", &auth)],
            Some(body),
        )
    };
    assert_eq!(send("warm v=1 1000000000").status, 204);
    // `x f` is a string in InfluxDB; the request below sends it as a number.
    influx.write("other", "x f=\"s\" 1000");
    let counters = || states(gw.addr, OTHER)["counters"].clone();
    let before = counters();
    let answer = send(
        "a v=1 2000000000\n\
         b v=2 2000000000\n\
         x f=3 2000000000\n\
         c v=4 2000000000\n",
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    wait_until(Duration::from_secs(30), "the dead letter", || {
        states(gw.addr, OTHER)["dead_letters"]["records"] == 1
    });
    // InfluxDB stored the three good lines of its partial write (dropped=1).
    for m in ["a", "b", "c"] {
        assert_eq!(influx.series("other", m).len(), 1, "{m}");
    }
    // InfluxDB 1.x's `dropped=N` counts one shard group's refusals only, so it is no count of
    // what it stored: the request's points are one dead letter and counted as such, and the
    // letter's reason, InfluxDB's answer, says it was a partial write.
    let after = counters();
    let delta = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
    assert_eq!(
        (delta("points_written"), delta("points_dead_lettered")),
        (0, 4),
        "a partial write's points are counted with its dead letter: {after}"
    );
    let letters: Vec<std::path::PathBuf> = std::fs::read_dir(gw.dir.join("data/dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "error"))
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = std::fs::read_to_string(&letters[0]).unwrap();
    assert!(reason.contains("partial write"), "{reason}");
}

#[test]
fn the_answer_to_lines_past_the_series_budget_stays_small_however_long_their_tag() {
    let influx = Influxd::start();
    let gw = gateway(&influx);
    let tag = "t".repeat(60_000);
    // Eight series, past the token's max_series (4): a few hundred bytes sent.
    let text = (0..8)
        .map(|i| format!("http_m,{tag}=v{i} v=1i"))
        .collect::<Vec<_>>()
        .join("\n");
    let gz = gzip(&text);
    let r = post_gzip(&gw, "/write?db=k6", &gz);
    assert!(
        r.body.contains("max_series"),
        "{} {}",
        r.status,
        &r.body[..r.body.len().min(300)]
    );
    assert!(
        r.body.len() < 16 * 1024,
        "a {}-byte body answered with {} bytes",
        gz.len(),
        r.body.len()
    );
}
