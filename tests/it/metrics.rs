//! `GET /apiv0.1/metrics`: the Prometheus text format, behind the token, with counters that move.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::support::{ConsumerToml, Gateway, Influxd, request};

const TOKEN: &str = "metrics-token-0123456789";

/// Parses the text format strictly enough to catch what Prometheus would refuse: every sample
/// `name{labels} value` has a float value and belongs to a family declared with `# TYPE`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE for {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn metrics_need_the_token_parse_and_move() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!("[auth]\ntokens = [\"{TOKEN}\"]\n"))
            .toml(),
    );
    let auth = format!("Bearer {TOKEN}");
    let h = [("Authorization", auth.as_str())];
    assert_eq!(
        request(gw.addr, "GET", "/apiv0.1/metrics", &[], None).status,
        401
    );
    let wrong = [("Authorization", "Bearer wrong-token-0123456789")];
    assert_eq!(
        request(gw.addr, "GET", "/apiv0.1/metrics", &wrong, None).status,
        401
    );

    let before = request(gw.addr, "GET", "/apiv0.1/metrics", &h, None);
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = parse(&before.body);
    let body = json!({"host": "lg"}).to_string();
    assert_eq!(
        request(gw.addr, "POST", "/apiv0.1/events/register", &h, Some(&body)).status,
        200
    );
    let register_ok = "metrics_consumer_requests_total{route=\"register\",status=\"2xx\"}";
    let unauthorized = "metrics_consumer_refusals_total{code=\"unauthorized\"}";
    // A request is counted just after its answer is sent, so the count may trail by a moment
    // (the two 401s' too, read by their clients before that).
    let mut after = HashMap::new();
    crate::support::wait_until(
        std::time::Duration::from_secs(5),
        "the register and the 401s to be counted",
        || {
            after = parse(&request(gw.addr, "GET", "/apiv0.1/metrics", &h, None).body);
            after[register_ok] - before[register_ok] == 1.0 && after[unauthorized] == 2.0
        },
    );
    assert_eq!(
        after["metrics_consumer_points_written_total"]
            - before["metrics_consumer_points_written_total"],
        2.0
    );
    assert_eq!(after["metrics_consumer_running_jobs"], 1.0);
    assert_eq!(after["metrics_consumer_influxdb_up"], 1.0);
    // The wrong token, not the request without one.
    assert_eq!(after["metrics_consumer_auth_failures_total"], 1.0);
    // Both refused, by their code: every code is listed, the others at 0.
    assert_eq!(after[unauthorized], 2.0);
    assert_eq!(
        after["metrics_consumer_refusals_total{code=\"too_many_bodies\"}"],
        0.0
    );
    assert!(after["metrics_consumer_resident_memory_bytes"] > 0.0);
    // No body is held or waits between requests, and none was refused or closed for memory
    // (the stalled-bodies test sees them count).
    for series in [
        "metrics_consumer_request_body_bytes",
        "metrics_consumer_request_bodies_waiting",
        "metrics_consumer_request_bodies_closed_total",
        "metrics_consumer_connections_closed_to_admit_total",
    ] {
        assert_eq!(after.get(series), Some(&0.0), "{series}");
    }
    assert_eq!(
        after["metrics_consumer_request_duration_seconds_count{route=\"register\"}"],
        1.0
    );
    // Buckets are cumulative and end at the count.
    let buckets: Vec<f64> = after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("metrics_consumer_request_duration_seconds_bucket{route=\"metrics\"")
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 13);
    let count = after["metrics_consumer_request_duration_seconds_count{route=\"metrics\"}"];
    assert!(count >= 2.0);
    assert_eq!(
        after["metrics_consumer_request_duration_seconds_bucket{route=\"metrics\",le=\"+Inf\"}"],
        count
    );
}
