//! Hostile commit data: `requestStats` that is not an object, hostile endpoint names and rows
//! far past `limits.max_stats_rows`, refused or made safe.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::support::{Gateway, Influxd};

use super::{
    COMMIT, Expected, ISRUNNING, MIB, after_each, get_authed, only_row, post, register, rows_of,
    start,
};

/// InfluxDB and a gateway that take a 3 MiB commit: bodies and strings as large as the one with
/// 100 000 stats rows.
fn start_for_commits() -> (Influxd, Gateway) {
    start(
        &format!("max_body_bytes = {}\n", 3 * MIB),
        &format!("[limits]\nmax_string_bytes = {}\n", 3 * MIB),
    )
}

/// Registers a run for `host`, which `expected` then holds.
fn new_run(addr: SocketAddr, expected: &mut Expected, host: &str) -> String {
    let uuid = register(addr, &json!({"host": host}));
    expected.register(&uuid, host, &[]);
    uuid
}

/// A commit of run `uuid` with `stats` as its `requestStats`.
fn stats_of(uuid: &str, stats: Value) -> Value {
    json!({"uuid": uuid, "measurement": {"fields": {"requestStats": stats}}})
}

#[test]
fn request_stats_that_is_not_an_object_is_refused_and_the_run_goes_on() {
    let (influx, mut gw) = start_for_commits();
    let mut expected = Expected::default();
    // Refused: requestStats that is neither an object, an array nor a string (the client's own
    // mistake, not the load test's data). The run goes on.
    let garbage_run = new_run(gw.addr, &mut expected, "garbage");
    for (name, stats) in [("a number", json!(5)), ("a boolean", json!(true))] {
        let answer = post(gw.addr, COMMIT, &stats_of(&garbage_run, stats));
        assert_eq!(
            (answer.status, answer.json()["code"].as_str()),
            (400, Some("invalid_stats")),
            "requestStats as {name}: {}",
            answer.body
        );
    }
    // A string is the load test's data: whatever it holds, the commit is recorded, the text
    // kept as sent, without endpoint rows.
    let deep_text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    for (name, text) in [
        (
            "nested garbage",
            "{\"stats\": [[[[[[{\"name\": \"/x\"".to_string(),
        ),
        ("arrays nested 100 000 deep", deep_text),
        ("objects nested 100 000 deep", deep_object),
        ("a string", "\"just text\"".to_string()),
        ("a number", "5".to_string()),
        ("text", "not json at all".to_string()),
    ] {
        let host = format!("text-{}", name.replace(' ', "-"));
        let uuid = new_run(gw.addr, &mut expected, &host);
        let answer = post(gw.addr, COMMIT, &stats_of(&uuid, json!(text)));
        assert_eq!(
            answer.status, 200,
            "requestStats holding {name}: {}",
            answer.body
        );
        let description = answer.json()["data"]["description"].to_string();
        assert!(
            description.contains("requestStats is not stats"),
            "{name}: {description}"
        );
        expected.commit(&uuid, &host, true, &[]);
        let result = only_row(&influx, "load_testing_result", &uuid);
        assert_eq!(
            result["requestStats"],
            text.as_str(),
            "{name}: kept as sent"
        );
    }
    assert_eq!(get_authed(gw.addr, ISRUNNING).json()[&garbage_run], true);
    // stats that is not an array: the commit is recorded, without endpoint rows.
    let answer = post(
        gw.addr,
        COMMIT,
        &stats_of(&garbage_run, json!({"stats": "oops", "total_rps": 1})),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    expected.commit(&garbage_run, "garbage", true, &[]);
    for stats in [json!({"a": 1}), json!(5), json!(null)] {
        let host = format!("stats-{}", stats.to_string().len());
        let uuid = new_run(gw.addr, &mut expected, &host);
        let answer = post(gw.addr, COMMIT, &stats_of(&uuid, json!({"stats": stats})));
        assert_eq!(answer.status, 200, "stats {stats}: {}", answer.body);
        expected.commit(&uuid, &host, true, &[]);
    }
    after_each(&mut gw, &influx, &expected);
}

#[test]
fn a_hostile_endpoint_name_is_made_safe_and_kept_whole_in_full_name() {
    let (influx, mut gw) = start_for_commits();
    let mut expected = Expected::default();
    // A hostile endpoint name: made safe for the tag, kept exactly in full_name.
    let names_run = new_run(gw.addr, &mut expected, "names");
    let long_name = format!(
        "/x?q=1,2 y=\"z\"\n\\evil\r\nload_testing_result,uuid=forged f=1 1\t{}é{}",
        "\u{85}",
        "n".repeat(10 * 1024)
    );
    // Made safe, cut to leave room for "~" and the CRC-32 of the name as sent.
    let safe = |text: &str| -> String {
        let replaced: String = text
            .chars()
            .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
            .collect();
        let mut end = replaced.len().min(256 - 9);
        while !replaced.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}~{:08x}",
            &replaced[..end],
            crc32fast::hash(text.as_bytes())
        )
    };
    let safe_name = safe(&long_name);
    let safe_method = safe("GE\nT");
    let stats = json!({
        "stats": [
            {"name": long_name, "method": "GE\nT", "num_requests": 5, "_bad": 1, "time": 2,
             "a\nb": 3, "s": "text", "nested": {"x": 1}, "list": [1]},
            5, "x", null, [], {"name": "/nothing-to-record"}
        ],
        "total_rps": 1.5, "_x": 1, "time": 2, "a b": 3, "bad\tkey": 4,
    });
    let answer = post(gw.addr, COMMIT, &stats_of(&names_run, stats.clone()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    expected.commit(
        &names_run,
        "names",
        true,
        &[vec![
            ("method", safe_method.as_str()),
            ("name", safe_name.as_str()),
        ]],
    );
    let row = only_row(&influx, "load_testing_request_stats", &names_run);
    assert_eq!(row["name"], safe_name.as_str(), "the name tag is made safe");
    assert_eq!(
        row["full_name"],
        long_name.as_str(),
        "full_name holds the exact text"
    );
    assert_eq!(row["method"], safe_method.as_str());
    assert_eq!(
        row["full_method"], "GE\nT",
        "full_method holds the exact method"
    );
    assert_eq!(row["num_requests"], 5.0);
    let mut columns: Vec<&str> = row.keys().map(String::as_str).collect();
    columns.sort();
    assert_eq!(
        columns,
        [
            "full_method",
            "full_name",
            "host",
            "method",
            "name",
            "num_requests",
            "time",
            "uuid"
        ],
        "members that cannot be fields are skipped"
    );
    let result = only_row(&influx, "load_testing_result", &names_run);
    let text: Value = serde_json::from_str(result["requestStats"].as_str().unwrap()).unwrap();
    assert_eq!(text, stats, "requestStats keeps the whole original");
    assert_eq!(
        (result["total_rps"].as_f64(), result["a b"].as_f64()),
        (Some(1.5), Some(3.0))
    );
    assert!(!result.contains_key("_x") && !result.contains_key("bad\tkey"));
    after_each(&mut gw, &influx, &expected);
}

#[test]
fn stats_rows_past_max_stats_rows_are_not_written() {
    let (influx, mut gw) = start_for_commits();
    let mut expected = Expected::default();
    // 100 000 rows in one commit of about 2.3 MB: only limits.max_stats_rows (1000) become
    // points; the answer says so; the whole text is kept in requestStats.
    let rows_run = new_run(gw.addr, &mut expected, "rows");
    let rows: Vec<Value> = (0..100_000)
        .map(|i| json!({"name": format!("{i}"), "n": 1}))
        .collect();
    let body = stats_of(&rows_run, json!({"stats": rows}));
    let size = body.to_string().len();
    let answer = post(gw.addr, COMMIT, &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let description = answer.json()["data"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description.contains("1000 of 100000 stats rows"),
        "{description}"
    );
    let written = rows_of(&influx, "load_testing_request_stats", &rows_run).len();
    println!(
        "100 000 stats rows in {size} bytes: {written} written; RSS {} KiB",
        gw.rss_kib()
    );
    assert_eq!(
        written, 1000,
        "rows beyond limits.max_stats_rows are not written"
    );
    let names: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let row_tags: Vec<Vec<(&str, &str)>> =
        names.iter().map(|n| vec![("name", n.as_str())]).collect();
    expected.commit(&rows_run, "rows", true, &row_tags);
    after_each(&mut gw, &influx, &expected);
}
