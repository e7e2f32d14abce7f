//! The rules for tag and field names and values, sent over HTTP: every refused name or value
//! gets a 400 naming its key, names at the limits and names full of escapes are stored exactly,
//! and nothing a client sends can inject a point or shadow the gateway's own tags.

use serde_json::{Map, Value, json};

use super::{
    COMMIT, Case, DB, Expected, ISRUNNING, REGISTER, after_each, case, check_all, get_authed,
    only_row, post, post_raw, register, start,
};

#[test]
fn every_name_and_value_rule_holds_over_http_and_nothing_is_injected() {
    let (influx, mut gw) = start("", "");
    let tags = |k: &str, v: Value| json!({"host": "lg", "tags": {k: v}});
    let mtags = |k: &str, v: Value| json!({"host": "lg", "measurement": {"tags": {k: v}}});
    let fields = |k: &str, v: Value| json!({"host": "lg", "measurement": {"fields": {k: v}}});
    // Tags are t0, t1, …, fields f0, f1, …: a tag and a field of one name would shadow
    // each other in InfluxQL queries.
    let many = |prefix: &str, n: usize, v: Value| -> Map<String, Value> {
        (0..n)
            .map(|i| (format!("{prefix}{i}"), v.clone()))
            .collect()
    };
    let mut refused: Vec<(String, Value, &str, String)> = vec![
        (
            "empty tag key".into(),
            tags("", json!("v")),
            "invalid_tag",
            "tags.".into(),
        ),
        (
            "empty field key".into(),
            fields("", json!(1)),
            "invalid_field",
            "measurement.fields.".into(),
        ),
        (
            "129-byte tag key".into(),
            tags(&"k".repeat(129), json!("v")),
            "invalid_tag",
            "tags.k".into(),
        ),
        (
            "129-byte field key".into(),
            fields(&"k".repeat(129), json!(1)),
            "invalid_field",
            "measurement.fields.k".into(),
        ),
        (
            "257-byte tag value".into(),
            tags("t", json!("v".repeat(257))),
            "invalid_tag",
            "tags.t".into(),
        ),
        (
            "257-byte host".into(),
            json!({"host": "h".repeat(257)}),
            "invalid_tag",
            "host".into(),
        ),
        (
            "257-byte targetHost".into(),
            json!({"host": "lg", "targetHost": "h".repeat(257)}),
            "invalid_tag",
            "targetHost".into(),
        ),
        (
            "tag key time".into(),
            tags("time", json!("v")),
            "invalid_tag",
            "tags.time".into(),
        ),
        (
            "field key time".into(),
            fields("time", json!(1)),
            "invalid_field",
            "measurement.fields.time".into(),
        ),
        (
            "tag key _x".into(),
            mtags("_x", json!("v")),
            "invalid_tag",
            "measurement.tags._x".into(),
        ),
        (
            "field key _x".into(),
            fields("_x", json!(1)),
            "invalid_field",
            "measurement.fields._x".into(),
        ),
        (
            "33 tags".into(),
            json!({"host": "lg", "tags": many("t", 33, json!("v"))}),
            "too_many_tags",
            "tags".into(),
        ),
        (
            "32 tags and targetHost".into(),
            json!({"host": "lg", "targetHost": "t", "tags": many("t", 32, json!("v"))}),
            "too_many_tags",
            "tags".into(),
        ),
        (
            "65 fields".into(),
            json!({"host": "lg", "measurement": {"fields": many("f", 65, json!(1))}}),
            "too_many_fields",
            "measurement.fields".into(),
        ),
        (
            "an object tag value".into(),
            tags("t", json!({"a": 1})),
            "invalid_tag",
            "tags.t".into(),
        ),
        (
            "an array tag value".into(),
            mtags("t", json!(["a"])),
            "invalid_tag",
            "measurement.tags.t".into(),
        ),
        (
            "an object field value".into(),
            fields("f", json!({"a": 1})),
            "invalid_field",
            "measurement.fields.f".into(),
        ),
        (
            "an array field value".into(),
            fields("f", json!([1])),
            "invalid_field",
            "measurement.fields.f".into(),
        ),
        (
            "an array host".into(),
            json!({"host": ["lg"]}),
            "invalid_tag",
            "host".into(),
        ),
        (
            "a tag value injecting a line".into(),
            tags("t", json!("a\nload_testing_result,uuid=x f=1")),
            "invalid_tag",
            "tags.t".into(),
        ),
        (
            "a field key injecting a line".into(),
            fields("f=1 123\nx", json!(1)),
            "invalid_field",
            "measurement.fields.f=1 123".into(),
        ),
        (
            "a host injecting a line".into(),
            json!({"host": "lg\nload_testing_events,event=started,host=x,uuid=y text=\"t\" 1"}),
            "invalid_tag",
            "host".into(),
        ),
        (
            "a hostname injecting a line".into(),
            json!({"hostname": "lg\r\nload_testing f=1"}),
            "invalid_tag",
            "hostname".into(),
        ),
        (
            "a startedAt with a line end".into(),
            json!({"host": "lg", "startedAt": "2016-11-20T10:00:00Z\nx"}),
            "invalid_time",
            "startedAt".into(),
        ),
    ];
    // Every forbidden character, in every place a name or a tag value comes from.
    for (label, c) in [
        ("tab", '\t'),
        ("CR", '\r'),
        ("LF", '\n'),
        ("DEL", '\u{7f}'),
        ("NUL", '\0'),
        ("ESC", '\u{1b}'),
        ("U+0085", '\u{85}'),
        ("U+009B", '\u{9b}'),
        ("backslash", '\\'),
    ] {
        let bad = format!("a{c}b");
        let code_for = |field: bool| {
            if field {
                "invalid_field"
            } else {
                "invalid_tag"
            }
        };
        for (place, body, field, key) in [
            (
                "tag key",
                tags(&bad, json!("v")),
                false,
                "tags.a".to_string(),
            ),
            ("tag value", tags("t", json!(bad)), false, "tags.t".into()),
            (
                "measurement tag key",
                mtags(&bad, json!("v")),
                false,
                "measurement.tags.a".into(),
            ),
            (
                "measurement tag value",
                mtags("t", json!(bad)),
                false,
                "measurement.tags.t".into(),
            ),
            (
                "field key",
                fields(&bad, json!(1)),
                true,
                "measurement.fields.a".into(),
            ),
            ("host", json!({"host": bad}), false, "host".into()),
            (
                "hostname",
                json!({"hostname": bad}),
                false,
                "hostname".into(),
            ),
            (
                "targetHost",
                json!({"host": "lg", "targetHost": bad}),
                false,
                "targetHost".into(),
            ),
        ] {
            refused.push((format!("{label} in a {place}"), body, code_for(field), key));
        }
    }
    let cases: Vec<Case> = refused
        .iter()
        .map(|(name, body, code, _)| {
            case(
                name.clone(),
                post_raw(REGISTER, body.to_string().as_bytes()),
                400,
                code,
            )
        })
        .collect();
    let answers = check_all(gw.addr, &cases);
    for ((name, _, _, key), answer) in refused.iter().zip(&answers) {
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.starts_with(key.as_str()),
            "{name}: the error names {key:?}: {error}"
        );
    }
    // Commits are checked by the same rules (the run exists, so only the payload can refuse).
    let run = register(gw.addr, &json!({"host": "rules"}));
    let mut expected = Expected::default();
    expected.register(&run, "rules", &[]);
    for (name, body, code, _) in refused.iter().take(12) {
        let mut body = body.clone();
        body["uuid"] = json!(run);
        let answer = post(gw.addr, COMMIT, &body);
        assert_eq!(
            (answer.status, answer.json()["code"].as_str()),
            (400, Some(*code)),
            "commit, {name}"
        );
    }
    assert_eq!(
        get_authed(gw.addr, ISRUNNING).json()[&run],
        true,
        "refused commits end nothing"
    );

    // At the limits, and escaping: accepted, and stored exactly as sent.
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
