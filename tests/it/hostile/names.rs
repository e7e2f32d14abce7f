//! The rules for tag and field names and values, sent over HTTP: every refused name or value
//! gets a 400 naming its key, on register and on commit, and leaves InfluxDB and the job table
//! as they were; names and values at the limits, and names full of line-protocol specials, are
//! stored exactly; and no field can shadow the gateway's own tags.
//!
//! The refused cases are the table in tests/data/payload-rules.json, which the unit tests of the
//! payload parser read too: one list of rules, checked at both levels.

use std::net::SocketAddr;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::support::{Gateway, Influxd};

use super::{
    COMMIT, Case, DB, Expected, ISRUNNING, REGISTER, after_each, case, check_all, get_authed,
    only_row, post, post_raw, register, start,
};

/// tests/data/payload-rules.json: the limits its cases are written for, and the cases.
#[derive(Deserialize)]
struct PayloadRules {
    limits: Limits,
    cases: Vec<Rule>,
}

#[derive(Deserialize)]
struct Limits {
    max_string_bytes: usize,
}

/// A body the gateway must refuse, and its answer.
#[derive(Deserialize)]
struct Rule {
    name: String,
    body: Value,
    status: u16,
    code: String,
    /// The key the error names: the message starts with it.
    key: String,
    /// The `error` member of the JSON answer, exactly.
    message: String,
}

/// The table, read once; `'static` because a `Case` borrows its code.
fn payload_rules() -> &'static PayloadRules {
    static RULES: OnceLock<PayloadRules> = OnceLock::new();
    RULES.get_or_init(|| {
        serde_json::from_str(include_str!("../../data/payload-rules.json"))
            .expect("tests/data/payload-rules.json is valid")
    })
}

/// The gateway with the limits the table is written for.
fn start_for_the_rules() -> (Influxd, Gateway) {
    let limits = &payload_rules().limits;
    start(
        "",
        &format!("[limits]\nmax_string_bytes = {}\n", limits.max_string_bytes),
    )
}

/// Sends every case of the table to `path`, with `uuid` added to the body when given, and checks
/// each answer: the status and code (and the rest of `check`), and the exact message.
fn refuse_every_rule(addr: SocketAddr, path: &str, uuid: Option<&str>) {
    let rules = &payload_rules().cases;
    let cases: Vec<Case> = rules
        .iter()
        .map(|rule| {
            let mut body = rule.body.clone();
            if let Some(uuid) = uuid {
                body["uuid"] = json!(uuid);
            }
            case(
                format!("{path}: {}", rule.name),
                post_raw(path, body.to_string().as_bytes()),
                rule.status,
                &rule.code,
            )
        })
        .collect();
    let answers = check_all(addr, &cases);
    for (rule, answer) in rules.iter().zip(&answers) {
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(error, rule.message, "{path}: {}", rule.name);
        assert!(
            error.starts_with(&format!("{}: ", rule.key)),
            "{path}: {}: the error names {:?}: {error}",
            rule.name,
            rule.key
        );
    }
}

#[test]
fn every_name_and_value_rule_refuses_a_register_and_nothing_is_injected() {
    let (influx, mut gw) = start_for_the_rules();
    refuse_every_rule(gw.addr, REGISTER, None);
    after_each(&mut gw, &influx, &Expected::default());
}

/// Commits are checked by the same rules: the run exists, so only the payload can refuse.
#[test]
fn every_name_and_value_rule_refuses_a_commit_and_ends_nothing() {
    let (influx, mut gw) = start_for_the_rules();
    let run = register(gw.addr, &json!({"host": "rules"}));
    let mut expected = Expected::default();
    expected.register(&run, "rules", &[]);
    refuse_every_rule(gw.addr, COMMIT, Some(&run));
    assert_eq!(
        get_authed(gw.addr, ISRUNNING).json()[&run],
        true,
        "refused commits end nothing"
    );
    after_each(&mut gw, &influx, &expected);
}

/// Tags are t0, t1, …, fields f0, f1, …: a tag and a field of one name would shadow each other
/// in InfluxQL queries.
fn many(prefix: &str, n: usize, v: Value) -> Map<String, Value> {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), v.clone()))
        .collect()
}

#[test]
fn names_and_values_at_the_limits_are_stored_exactly() {
    let (influx, mut gw) = start("", "");
    let mut expected = Expected::default();
    let key128 = "k".repeat(128);
    let value256 = "v".repeat(256);
    let mut at_limits = many("t", 30, json!("v"));
    at_limits.insert(key128.clone(), json!(value256));
    let mut many_fields = many("f", 63, json!(1));
    many_fields.insert("f".repeat(128), json!(2.5));
    let limits_run = register(
        gw.addr,
        &json!({"host": "at-limits", "targetHost": "t", "tags": at_limits,
                "measurement": {"fields": many_fields}}),
    );
    let mut limit_tags: Vec<(String, String)> =
        (0..30).map(|i| (format!("t{i}"), "v".into())).collect();
    limit_tags.push((key128.clone(), value256.clone()));
    limit_tags.push(("targetHost".into(), "t".into()));
    let limit_refs: Vec<(&str, &str)> = limit_tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    expected.register(&limits_run, "at-limits", &limit_refs);
    let beat = only_row(&influx, "load_testing", &limits_run);
    assert_eq!(beat[&key128], value256.as_str());
    assert_eq!(beat[&"f".repeat(128)], 2.5);
    let short = |prefix: char| {
        beat.keys()
            .filter(|k| k.starts_with(prefix) && k.len() <= 3)
            .count()
    };
    assert_eq!(
        (short('t'), short('f')),
        (30, 63),
        "every tag and field is stored"
    );
    after_each(&mut gw, &influx, &expected);
}

/// Commas, spaces, equals signs, quotes and line ends are line-protocol syntax: in names and
/// values they are escaped, so a client's text is stored as sent and never becomes a point.
#[test]
fn names_and_values_full_of_line_protocol_specials_are_stored_exactly() {
    let (influx, mut gw) = start("", "");
    let mut expected = Expected::default();
    let fake_line = "a\"\nload_testing_result,uuid=evil,host=evil f=1 1\n\\\" \\\u{0}\u{2028}é\\";
    let tricky = json!({
        "host": "lg, h=1 \"q\"",
        "startedAt": 1_479_636_000,
        "tags": {"a,b c=d": "x,y z=w\"q'", "uuid": "forged-uuid", "host": "forged-host",
                 "num": 1.5, "yes": true, "big": 18446744073709551617u128 as f64, "empty": "", "none": null},
        "measurement": {"tags": {"a,b c=d": "measurement wins"},
                        "fields": {"f=1 123": 1, "k\"q": 2, "s": fake_line, "e": ""}},
    });
    let tricky_run = register(gw.addr, &tricky);
    let big_text = json!(18446744073709551617u128 as f64).to_string();
    let tricky_tags = [
        ("a,b c=d", "measurement wins"),
        ("num", "1.5"),
        ("yes", "true"),
        ("big", big_text.as_str()),
    ];
    expected.register(&tricky_run, "lg, h=1 \"q\"", &tricky_tags);
    let beat = only_row(&influx, "load_testing", &tricky_run);
    assert_eq!(beat["host"], "lg, h=1 \"q\"");
    assert_eq!(beat["a,b c=d"], "measurement wins");
    assert_eq!(beat["f=1 123"], 1.0);
    assert_eq!(beat["k\"q"], 2.0);
    assert_eq!(
        beat["s"], fake_line,
        "a string field is stored exactly as sent"
    );
    assert_eq!(beat["e"], "");
    assert_eq!(beat["big"], big_text.as_str());
    assert!(!beat.contains_key("empty") && !beat.contains_key("none"));
    let started = only_row(&influx, "load_testing_events", &tricky_run);
    assert_eq!(started["time"], 1_479_636_000_000i64);
    after_each(&mut gw, &influx, &expected);
}

/// InfluxQL resolves a name that is a field anywhere in a measurement as that field, so a
/// single point with a field called like one of the gateway's tags (`uuid`, `host`, and
/// `name`/`method` on endpoint rows) makes `WHERE uuid = '…'` find nothing, for every run in
/// that measurement and shard, not just the sender's. Such fields must never be written.
#[test]
fn field_keys_cannot_shadow_the_gateways_tags() {
    let (influx, mut gw) = start("", "");
    let mut expected = Expected::default();
    let a = register(gw.addr, &json!({"host": "lg-a"}));
    expected.register(&a, "lg-a", &[]);

    // Refusing these fields (400 naming the key) or leaving them out are both fine.
    let shadow = post(
        gw.addr,
        REGISTER,
        &json!({"host": "lg-b", "measurement": {"fields": {"uuid": 1, "host": 2, "clients": 3}}}),
    );
    assert!(
        matches!(shadow.status, 200 | 400),
        "{}: {}",
        shadow.status,
        shadow.body
    );
    if shadow.status == 200 {
        let b = shadow.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&b, "lg-b", &[]);
    }

    // requestStats is data and never makes a commit fail: its members named like the tags
    // must simply not become fields.
    let commit = post(
        gw.addr,
        COMMIT,
        &json!({"uuid": a, "measurement": {"fields": {"requestStats": {
            "uuid": 1, "host": 2, "total_rps": 3,
            "stats": [{"name": 12, "method": 34, "uuid": 5, "host": 6, "num_requests": 7}]
        }}}}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    expected.commit(&a, "lg-a", true, &[vec![("method", "34"), ("name", "12")]]);

    let reserved = ["uuid", "host", "event", "name", "method"];
    for measurement in [
        "load_testing",
        "load_testing_result",
        "load_testing_request_stats",
        "load_testing_events",
    ] {
        let v = influx.query(DB, &format!("SHOW FIELD KEYS FROM \"{measurement}\""));
        let keys: Vec<String> = v["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[0].as_str().map(str::to_string))
            .collect();
        let clashing: Vec<&String> = keys
            .iter()
            .filter(|k| reserved.contains(&k.as_str()))
            .collect();
        assert!(
            clashing.is_empty(),
            "{measurement} has fields named like the gateway's tags: {clashing:?} (all fields: {keys:?})"
        );
    }
    for (measurement, want) in [
        ("load_testing", 1),
        ("load_testing_result", 1),
        ("load_testing_request_stats", 1),
    ] {
        let v = influx.query(
            DB,
            &format!(
                "SELECT * FROM \"{measurement}\" WHERE \"uuid\" = '{a}' AND \"host\" = 'lg-a'"
            ),
        );
        let found = v["results"][0]["series"][0]["values"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(
            found, want,
            "{measurement}: run {a} is found by its uuid and host: {v}"
        );
    }
    after_each(&mut gw, &influx, &expected);
}
