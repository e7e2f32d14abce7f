//! What load-test tools really send on commit, recorded: the real binary and a real throwaway
//! `influxd`, every point read back by query. The statistics of a Python client with NaN and
//! infinities in them, endpoint rows whose names must be changed to be tags (each still its
//! own series, and the answer's count of rows is what InfluxDB holds), the file `locust
//! --json-file` writes, and a gzip'd commit of 5 000 endpoint rows within the default limits.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, get, post_json, register, send_raw};

const DB: &str = "runs";
const COMMIT: &str = "/apiv0.1/events/commit";

fn start() -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, DB).toml());
    (influx, gw)
}

/// Points of `measurement` of run `uuid`.
fn rows(influx: &Influxd, measurement: &str, uuid: &str) -> Vec<Map<String, Value>> {
    influx
        .series(DB, measurement)
        .into_iter()
        .filter(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid))
        .collect()
}

/// A commit of run `uuid` with `stats` as its requestStats.
fn commit_body(uuid: &str, stats: Value) -> Value {
    json!({"uuid": uuid, "measurement": {"fields": {"requestStats": stats}}})
}

/// "wrote N points (M endpoint rows)" of a commit's answer: M.
fn endpoint_rows_in(answer: &Value) -> usize {
    let description = answer["data"]["description"].as_str().unwrap_or_default();
    let at = description
        .find(" endpoint rows)")
        .unwrap_or_else(|| panic!("no row count in {description:?}"));
    let start = description[..at].rfind('(').expect("(") + 1;
    description[start..at].parse().expect("a count")
}

/// The issue's own example: Python's json.dumps wrote NaN and Infinity into Locust's stats.
/// The commit is recorded, the non-finite numbers are left out and counted, the rest stored.
#[test]
fn a_commit_with_nan_and_infinity_in_its_stats_is_recorded() {
    let (influx, gw) = start();
    let text = r#"{"stats":[{"name":"/x","method":"GET","num_requests":3,"avg_response_time":NaN}], "total_rps":Infinity,"fail_ratio":0.5}"#;
    for form in ["string", "object"] {
        let uuid = register(gw.addr, &json!({"host": form}));
        let stats = if form == "string" {
            serde_json::to_string(text).unwrap()
        } else {
            text.to_string()
        };
        let body = format!(
            r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"requestStats":{stats},"duration":-Infinity}}}}}}"#
        );
        let answer = send_raw(
            gw.addr,
            format!(
                "POST {COMMIT} HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(answer.status, 200, "{form}: {}", answer.body);
        let reply = answer.json();
        assert_eq!(reply["non_finite_numbers"], 3, "{form}: {reply}");
        let description = reply["data"]["description"].as_str().unwrap();
        assert!(
            description.contains("3 numbers that are not finite"),
            "{description}"
        );
        assert_eq!(endpoint_rows_in(&reply), 1);
        assert_eq!(
            get(gw.addr, "/apiv0.1/events/isrunning").json()[&uuid],
            false
        );

        let result = &rows(&influx, "load_testing_result", &uuid)[0];
        assert_eq!(result["fail_ratio"], 0.5);
        assert!(!result.contains_key("total_rps") && !result.contains_key("duration"));
        let kept: Value = serde_json::from_str(result["requestStats"].as_str().unwrap())
            .expect("the kept requestStats text is JSON");
        assert_eq!(kept["total_rps"], Value::Null);
        assert_eq!(kept["stats"][0]["avg_response_time"], Value::Null);
        let row = &rows(&influx, "load_testing_request_stats", &uuid)[0];
        assert_eq!(
            (row["name"].as_str(), row["num_requests"].as_f64()),
            (Some("/x"), Some(3.0))
        );
        assert!(!row.contains_key("avg_response_time"));
    }
}

/// Names that break the tag rules, names that are made safe alike, names longer than a tag and
/// equal in their first 256 bytes, and a name sent twice: each row is its own point.
#[test]
fn every_endpoint_row_is_its_own_series() {
    let (influx, gw) = start();
    let uuid = register(gw.addr, &json!({"host": "rows"}));
    let long = |n: usize| format!("/catalog/search?q={}&page={n}", "shoes ".repeat(50));
    let stats = json!({"stats": [
        {"name": "/a\\b", "method": "GET", "num_requests": 1},
        {"name": "/a_b", "method": "GET", "num_requests": 2},
        {"name": long(1), "method": "GET", "num_requests": 3},
        {"name": long(2), "method": "GET", "num_requests": 4},
        {"name": long(3), "method": "GET", "num_requests": 5},
        {"name": "/twice", "method": "GET", "num_requests": 6},
        {"name": "/twice", "method": "GET", "num_requests": 7},
        {"name": "Aggregated", "method": "", "num_requests": 28},
    ]});
    let answer = post_json(gw.addr, COMMIT, &commit_body(&uuid, stats));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let reply = answer.json();
    let stored = rows(&influx, "load_testing_request_stats", &uuid);
    assert_eq!(stored.len(), 8, "{stored:?}");
    assert_eq!(endpoint_rows_in(&reply), stored.len(), "{reply}");
    let description = reply["data"]["description"].as_str().unwrap();
    assert!(
        description.contains("1 rows repeated the name and method"),
        "{description}"
    );
    assert!(
        description.contains("4 endpoint names were made safe"),
        "{description}"
    );
    let by_requests = |n: f64| {
        stored
            .iter()
            .find(|r| r["num_requests"].as_f64() == Some(n))
            .unwrap_or_else(|| panic!("no row with {n} requests: {stored:?}"))
    };
    let crc = |t: &str| format!("{:08x}", crc32fast::hash(t.as_bytes()));
    assert_eq!(by_requests(1.0)["name"], format!("/a_b~{}", crc("/a\\b")));
    assert_eq!(by_requests(1.0)["full_name"], "/a\\b");
    assert_eq!(by_requests(2.0)["name"], "/a_b");
    for (n, requests) in [(1, 3.0), (2, 4.0), (3, 5.0)] {
        let row = by_requests(requests);
        assert_eq!(row["full_name"], long(n).as_str());
        assert!(
            row["name"]
                .as_str()
                .unwrap()
                .ends_with(&format!("~{}", crc(&long(n))))
        );
    }
    assert_eq!(by_requests(6.0)["name"], "/twice");
    assert_eq!(by_requests(7.0)["name"], "/twice~2");
    assert_eq!(by_requests(7.0)["full_name"], "/twice");
    assert_eq!(by_requests(28.0)["name"], "Aggregated");
}

/// `locust --json-file locust-stats` writes an array of rows; sent as requestStats, as the
/// README's `commit.sh "$RUN" "$(cat locust-stats.json)"` does, it is recorded. The file is
/// what Locust 2.47 wrote.
#[test]
fn the_file_locust_json_file_writes_is_recorded() {
    let (influx, gw) = start();
    let file = include_str!("../data/locust-2.47-stats.json");
    let rows_sent: Value = serde_json::from_str(file).unwrap();
    for form in ["array", "string"] {
        let uuid = register(gw.addr, &json!({"host": form}));
        let stats = if form == "string" {
            Value::String(file.to_string())
        } else {
            rows_sent.clone()
        };
        let answer = post_json(gw.addr, COMMIT, &commit_body(&uuid, stats));
        assert_eq!(answer.status, 200, "{form}: {}", answer.body);
        assert_eq!(endpoint_rows_in(&answer.json()), 2);
        let mut names: Vec<String> = rows(&influx, "load_testing_request_stats", &uuid)
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["/items?x=1", "/orders"], "{form}");
        let result = &rows(&influx, "load_testing_result", &uuid)[0];
        let kept: Value = serde_json::from_str(result["requestStats"].as_str().unwrap()).unwrap();
        assert_eq!(kept, json!({"stats": rows_sent}), "{form}");
    }
}

/// One endpoint row as the Locust plugin sends it (scripts/locust_consumer.py, `stats_row`).
fn plugin_row(name: &str, method: &str, i: usize) -> Value {
    let mut row = json!({
        "name": name, "method": method, "num_requests": 100 + i, "num_failures": i % 7,
        "num_none_requests": 0, "fail_ratio": (i % 7) as f64 / (100 + i) as f64,
        "min_response_time": 1.25 + i as f64 / 1000.0, "max_response_time": 900.5 + i as f64,
        "avg_response_time": 35.123456789 + i as f64 / 7.0, "median_response_time": 31,
        "current_rps": 0.4, "current_fail_per_sec": 0.0, "total_rps": 1.66 + i as f64 / 1e4,
        "total_fail_per_sec": 0.01, "avg_content_length": 5120.75,
    });
    for p in [
        "0.5", "0.66", "0.75", "0.8", "0.9", "0.95", "0.98", "0.99", "0.999", "0.9999", "1.0",
    ] {
        row[format!("response_time_percentile_{p}")] = json!(30 + i % 900);
    }
    row
}

/// A run with 5 000 endpoints makes a commit of some 4 MB: too large for the default 1 MiB
/// body limit plain, recorded gzip'd (as the plugin sends it), with the first
/// `limits.max_stats_rows` rows and the Aggregated row as points, and the requestStats text
/// cut to `limits.max_string_bytes`.
#[test]
fn a_gzipped_commit_of_5000_endpoint_rows_is_recorded() {
    let (influx, gw) = start();
    let uuid = register(gw.addr, &json!({"host": "large"}));
    let mut rows_sent: Vec<Value> = (0..5000)
        .map(|i| {
            plugin_row(
                &format!("/api/v2/catalog/products/{i}?fields=id,name,price&locale=de-DE"),
                "GET",
                i,
            )
        })
        .collect();
    rows_sent.push(plugin_row("Aggregated", "", 5000));
    let body = commit_body(
        &uuid,
        json!({"stats": rows_sent, "errors": [], "total_rps": 8300.5, "fail_ratio": 0.01}),
    )
    .to_string();
    assert!(body.len() > 3 << 20, "{} bytes", body.len());

    let plain = send_raw(gw.addr, &post(&[], body.as_bytes()));
    assert_eq!(
        plain.status, 413,
        "the plain body is over max_body_bytes: {}",
        plain.body
    );

    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gzipped = gz.finish().unwrap();
    assert!(gzipped.len() < 1 << 20, "{} bytes gzip'd", gzipped.len());
    let answer = send_raw(gw.addr, &post(&[("Content-Encoding", "gzip")], &gzipped));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let reply = answer.json();
    let stored = rows(&influx, "load_testing_request_stats", &uuid);
    assert_eq!(
        stored.len(),
        1001,
        "1000 rows (limits.max_stats_rows) and Aggregated"
    );
    assert_eq!(endpoint_rows_in(&reply), 1001, "{reply}");
    let total = stored
        .iter()
        .find(|r| r["name"] == "Aggregated")
        .expect("the Aggregated row");
    assert_eq!(total["num_requests"], 5100.0);
    let description = reply["data"]["description"].as_str().unwrap();
    assert!(
        description.contains("1001 of 5001 stats rows were written"),
        "{description}"
    );
    assert!(
        description.contains("were left out of it (rows_left_out"),
        "{description}"
    );
    let result = &rows(&influx, "load_testing_result", &uuid)[0];
    let text = result["requestStats"].as_str().unwrap();
    assert!(text.len() <= 1 << 20, "{}", text.len());
    let kept: Value = serde_json::from_str(text).unwrap();
    let kept_rows = kept["stats"].as_array().unwrap();
    assert_eq!(kept_rows.last().unwrap()["name"], "Aggregated");
    assert_eq!(kept["rows_left_out"], 5001 - kept_rows.len());
    assert_eq!(result["total_rps"], 8300.5);
}

/// A commit POST with `headers` and `body` as is.
fn post(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {COMMIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}
