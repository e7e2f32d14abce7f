//! A check that taking `requestStats` apart gives the same rows, scalars, text and counts for a
//! set of tricky bodies as it did when the expected outcomes were written
//! (tests/data/request-stats-outcomes.txt): repeated keys, repeated `stats`, rows that are not
//! objects, the entry and row caps, the `Aggregated` row past the cap, non-finite numbers, lone
//! surrogates, names made safe, text cut to fit, a byte order mark, double-encoded bodies, and
//! each form `requestStats` comes in. After a change meant to change them, run it with
//! `REQUEST_STATS_OUTCOMES_PRINT=1` and `--no-capture`: it prints the outcomes, one a line, for
//! that file (the test harness's own lines around them left out).

use super::*;

/// The tricky `requestStats` bodies: each as the body's `requestStats` member, sent as JSON
/// (an object, an array, a string holding JSON, or something else).
fn cases() -> Vec<String> {
    let row = |name: &str, method: &str, n: u32| {
        format!(
            r#"{{"name":"{name}","method":"{method}","num_requests":{n},"avg_response_time":1.5,"current_rps":20.5,"total_content_length":912000,"response_times":{{"1":2}}}}"#
        )
    };
    let locust = format!(
        r#"{{"stats":[{},{},{}],"errors":[{{"error":"boom","occurrences":2}}],"total_rps":61.5,"fail_ratio":0.0025,"user_count":10}}"#,
        row("/a", "GET", 1),
        row("/b", "POST", 2),
        row("Aggregated", "", 3)
    );
    let as_string = |text: &str| serde_json::to_string(text).unwrap();
    let wide: String = (0..70).map(|i| format!(r#""f{i:02}":{i},"#)).collect();
    let over_cap: String = (0..1003).map(|i| format!(r#""k{i:04}":{i},"#)).collect();
    let deep = format!("{}{}", "[".repeat(130), "]".repeat(130));
    vec![
        as_string(&locust),
        locust.clone(),
        format!("[{},{}]", row("/a", "GET", 1), row("/b", "GET", 2)),
        as_string(&format!("[{},{}]", row("/a", "GET", 1), row("Aggregated", "", 9))),
        as_string(&format!("  {{ \"stats\" : [ {} ] ,\n \"total_rps\" : 2 }}  ", row("/p", "GET", 4))),
        r#"{"stats":[{"name":"/a","x":1,"x":2,"method":"GET","x":3}]}"#.into(),
        r#"{"stats":[{"name":"a","n":1}],"stats":[{"name":"b","n":2}],"z":1}"#.into(),
        r#"{"stats":[{"name":"a","n":1}],"stats":5,"total_rps":1}"#.into(),
        r#"{"stats":[{"name":"a","n":1}],"stats":{"name":"c","n":3}}"#.into(),
        r#"{"stats":{"a":1},"total_rps":2,"stats_x":true}"#.into(),
        as_string(r#"{"stats":[{"name":"/n","avg":NaN,"max":Infinity,"min":-Infinity,"big":1e400,"ok":2}],"total_rps":NaN,"x":+Infinity}"#),
        r#"{"stats":[{"name":"/n","avg":NaN,"big":-1e400,"ok":2}],"total_rps":Infinity}"#.into(),
        as_string(r#"{"stats":[{"name":"/s\udc80","method":"\ud800GET","v":1}]}"#),
        r#"{"stats":[{"name":"/s\udc80x","v":1}]}"#.into(),
        as_string(r#"{"stats":[{"name":"line\nbreak","method":"G\\ET","v":1},{"name":"tab\there","v":2},{"name":"a b,c=d","v":3}]}"#),
        format!("[{},{},{},{}]", row("/d", "GET", 1), row("/d", "GET", 2), row("/d", "POST", 3), row("/d~2", "GET", 4)),
        format!("[{},{},{},{},{}]", row("/1", "GET", 1), row("/2", "GET", 2), row("/3", "GET", 3), row("Aggregated", "", 4), row("Aggregated", "", 5)),
        format!("[{},{},{},{}]", row("/1", "GET", 1), row("/2", "GET", 2), row("/3", "GET", 3), row("Aggregated", "GET", 4)),
        r#"{"stats":[1,"x",[1,2],null,true,{"name":"a","v":1},{},{"name":"only"}]}"#.into(),
        r#"{"stats":[{"name":"a","response_times":{"1":2},"v":[1],"n":true,"s":"text","z":null}]}"#.into(),
        r#"{"stats":[{"name":"a","uuid":1,"host":2,"event":3,"full_name":4,"full_method":5,"time":6,"_x":7,"":8,"a\nb":9,"ok":10}]}"#.into(),
        r#"{"stats":[{"name":5,"method":true,"v":1},{"name":1.5e3,"method":null,"v":2},{"name":"","method":"","v":3},{"name":"Aggregated","method":null,"v":4}]}"#.into(),
        r#"{"stats":[{"name":{"x":1},"method":[1],"v":1}]}"#.into(),
        format!(r#"{{"stats":[{{"name":"wide",{wide}"zz":1}}]}}"#),
        format!(r#"{{"stats":[{{"name":"cap",{over_cap}"k0000":-1}}],{over_cap}"total":1}}"#),
        as_string("hello, not json"),
        as_string("5"),
        as_string("\"just a string\""),
        as_string("  "),
        as_string("{\"stats\":["),
        as_string(&deep),
        deep.clone(),
        "5".into(),
        "true".into(),
        "null".into(),
        "\"\"".into(),
        r#"{"stats":[{"n\u0061me":"/esc","v\"q":1,"v":2}],"t\u006ftal":3}"#.into(),
        r#"{"stats":[{"name":"/u","é":1,"Z":2,"a":3,"ä":4,"A":5}]}"#.into(),
        format!(r#"{{"stats":[{},{},{}],"errors":[{{"e":"{}"}},{{"e":"y"}},{{"e":"z"}}],"total_rps":1}}"#,
            row("/1", "GET", 1), row("/2", "GET", 2), row("Aggregated", "", 3), "x".repeat(60)),
        as_string(&format!(r#"{{"stats":[{}],"errors":[{{"e":"{}"}}]}}"#, row("/1", "GET", 1), "é".repeat(200))),
        r#"{"errors":[],"user_count":3,"uuid":4,"name":5,"flag":false}"#.into(),
        "[]".into(),
        "{}".into(),
        as_string("[]"),
        r#"{"stats":[]}"#.into(),
        r#"{"stats":[{"name":"Aggregated","v":1},{"name":"Aggregated","method":"","v":2}]}"#.into(),
    ]
}

/// Each case's commit, read with generous limits and with tight ones, as its debug text.
fn outcomes() -> Vec<String> {
    let uuid = "00000000-0000-0000-0000-000000000001";
    let generous = PayloadLimits {
        max_string_bytes: 1 << 20,
        max_stats_rows: 1000,
    };
    let tight = PayloadLimits {
        max_string_bytes: 420,
        max_stats_rows: 3,
    };
    let mut out = Vec::new();
    for stats in cases() {
        let body = format!(
            r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"requestStats":{stats},"users":3}}}}}}"#
        );
        let mut bodies = vec![body.clone().into_bytes()];
        // With a byte order mark, and double-encoded.
        bodies.push([b"\xef\xbb\xbf".as_slice(), body.as_bytes()].concat());
        bodies.push(serde_json::to_vec(&body).unwrap());
        for body in bodies {
            for limits in [generous, tight] {
                let got = commit(&body, limits).map(|c| (c.stats, c.record.tolerated));
                out.push(format!("{got:?}"));
            }
        }
    }
    out
}

/// One outcome as a line of the file: its debug text, or for a long one its length and
/// CRC-32, so the file stays small.
fn line(outcome: &str) -> String {
    if outcome.len() <= 3000 {
        outcome.to_string()
    } else {
        format!(
            "len {} crc32 {:08x}",
            outcome.len(),
            crc32fast::hash(outcome.as_bytes())
        )
    }
}

#[test]
fn request_stats_outcomes_are_unchanged() {
    let got: Vec<String> = outcomes().iter().map(|o| line(o)).collect();
    if std::env::var_os("REQUEST_STATS_OUTCOMES_PRINT").is_some() {
        println!("{}", got.join("\n"));
    }
    let expected: Vec<&str> = include_str!("../../../tests/data/request-stats-outcomes.txt")
        .lines()
        .collect();
    assert_eq!(got.len(), expected.len(), "the number of outcomes");
    for (n, (got, expected)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            got,
            expected,
            "outcome {n} (case {}, body form and limits {})",
            n / 6,
            n % 6
        );
    }
}

/// A row's fields live as long as the commit: the room `scalar_members` makes for them must
/// follow what it keeps, not how many members were sent. A row of one number and 63 strings
/// (about 8 body bytes a member) kept 64 slots of `(String, FieldValue)` (56 bytes each) for
/// one field: a commit of 1 000 such rows held 3.5 MiB of empty room for 0.5 MB of body, where
/// growing from empty held 4 slots a row.
#[test]
fn scalar_members_room_follows_the_fields_kept_not_the_members_sent() {
    let mut members: Vec<(String, Value)> = vec![("n".to_string(), Value::from(1))];
    members.extend((0..63).map(|i| (format!("s{i:02}"), Value::from(""))));
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let fields = scalar_members(members);
    assert_eq!(fields.len(), 1);
    assert!(
        fields.capacity() <= 4,
        "one field kept in room for {}",
        fields.capacity()
    );
    // All kept: room for exactly them, as the change meant.
    let members: Vec<(String, Value)> =
        (0..10).map(|i| (format!("f{i}"), Value::from(i))).collect();
    let fields = scalar_members(members);
    assert_eq!((fields.len(), fields.capacity()), (10, 10));
}
