//! The verdict's pure parts: figures read from Locust's rows, percentiles from a histogram,
//! thresholds read and merged, results judged, and docs/verdicts.md checked against them.

use serde_json::json;

use super::*;
use crate::ingest::line_protocol::FieldValue;
use crate::ingest::payload::StatsRow;

/// A row's part of a result (`StatsRow::result_row`).
fn of(row: &StatsRow) -> ResultRow {
    row.result_row()
}

fn row(name: &str, method: &str, fields: &[(&str, f64)]) -> StatsRow {
    let mut tags = vec![("name".to_string(), name.to_string())];
    if !method.is_empty() {
        tags.push(("method".to_string(), method.to_string()));
    }
    StatsRow {
        tags,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), FieldValue::Float(*v)))
            .collect(),
        computed: Vec::new(),
    }
}

/// A row as the Locust plugin sends it (`stats_row`).
fn locust_row(name: &str, method: &str, p95: f64) -> ResultRow {
    of(&row(
        name,
        method,
        &[
            ("num_requests", 200.0),
            ("num_failures", 4.0),
            ("fail_ratio", 0.02),
            ("avg_response_time", 120.0),
            ("min_response_time", 3.0),
            ("max_response_time", 900.0),
            ("median_response_time", 100.0),
            ("response_time_percentile_0.5", 100.0),
            ("response_time_percentile_0.75", 150.0),
            ("response_time_percentile_0.9", 300.0),
            ("response_time_percentile_0.95", p95),
            ("response_time_percentile_0.99", 800.0),
            ("response_time_percentile_0.999", 890.0),
            ("total_rps", 20.0),
        ],
    ))
}

fn th(endpoint: &str, check: &str) -> Threshold {
    Threshold {
        endpoint: endpoint.into(),
        check: check::parse(check).unwrap(),
        source: Source::Register,
    }
}

#[test]
fn each_percentile_is_read_from_the_member_locust_names_it_by() {
    for ((_, q), member) in PERCENTILES.iter().zip(PERCENTILE_MEMBERS) {
        assert_eq!(member, format!("response_time_percentile_{q}"));
    }
}

#[test]
fn every_metric_is_read_from_the_plugin_s_row() {
    let r = locust_row("/checkout", "GET", 400.0);
    assert_eq!((r.name.as_str(), r.method.as_str()), ("/checkout", "GET"));
    let want = [
        (Metric::Requests, 200.0),
        (Metric::Failures, 4.0),
        (Metric::FailRatio, 0.02),
        (Metric::Avg, 120.0),
        (Metric::Min, 3.0),
        (Metric::Max, 900.0),
        (Metric::Median, 100.0),
        (Metric::P50, 100.0),
        (Metric::P75, 150.0),
        (Metric::P90, 300.0),
        (Metric::P95, 400.0),
        (Metric::P99, 800.0),
        (Metric::P999, 890.0),
        (Metric::Rps, 20.0),
    ];
    for (m, v) in want {
        assert_eq!(r.figures.get(m), Some(v), "{}", m.name());
    }
}

#[test]
fn what_locust_s_serialized_row_lacks_is_derived_from_what_it_has() {
    // StatsEntry.serialize(): totals, timestamps and the histogram, no averages or percentiles.
    let mut raw = row(
        "/x",
        "GET",
        &[
            ("num_requests", 10.0),
            ("num_failures", 1.0),
            ("total_response_time", 250.0),
            ("start_time", 1000.0),
            ("last_request_timestamp", 1005.0),
        ],
    );
    raw.computed = vec![("p50", 20.0), ("p95", 90.0)];
    let r = of(&raw);
    assert_eq!(r.figures.get(Metric::FailRatio), Some(0.1));
    assert_eq!(r.figures.get(Metric::Avg), Some(25.0));
    assert_eq!(r.figures.get(Metric::Rps), Some(2.0));
    assert_eq!(r.figures.get(Metric::P95), Some(90.0));
    assert_eq!(r.figures.get(Metric::Median), Some(20.0));
    assert_eq!(r.figures.get(Metric::P99), None);
    assert_eq!(r.figures.get(Metric::Min), None);
}

#[test]
fn a_renamed_row_is_known_by_the_name_sent() {
    let mut raw = row("bad_name~1234abcd", "GET", &[("num_requests", 1.0)]);
    raw.fields
        .push(("full_name".into(), FieldValue::Str("bad\tname".into())));
    assert_eq!(of(&raw).name, "bad\tname");
    // A name longer than a check may name is kept as far as one may.
    let long = format!("/{}", "é".repeat(MAX_ENDPOINT_BYTES));
    let mut raw = row("x", "GET", &[("num_requests", 1.0)]);
    raw.fields
        .push(("full_name".into(), FieldValue::Str(long.clone())));
    let kept = of(&raw).name;
    assert!(
        kept.len() <= MAX_ENDPOINT_BYTES && long.starts_with(&kept),
        "{}",
        kept.len()
    );
}

#[test]
fn percentiles_are_computed_as_locust_computes_them() {
    // Locust's calculate_response_time_percentile({10: 1, 20: 1, ..., 100: 1}, 10, q): it
    // walks down from the slowest until no more than q of the requests are left.
    let h: Vec<(f64, u64)> = (1..=10).map(|i| (f64::from(i) * 10.0, 1)).collect();
    assert_eq!(percentile(&h, 0.5), Some(60.0));
    assert_eq!(percentile(&h, 0.8), Some(90.0));
    assert_eq!(percentile(&h, 0.9), Some(100.0));
    assert_eq!(percentile(&h, 0.95), Some(100.0));
    assert_eq!(percentile(&h, 0.0), Some(10.0));
    // As in Python, 100 * 0.99 is 98.99999999999999: Locust counts 98 requests below.
    assert_eq!(percentile(&[(5.0, 99), (1000.0, 1)], 0.98), Some(5.0));
    assert_eq!(percentile(&[(5.0, 99), (1000.0, 1)], 0.99), Some(1000.0));
    assert_eq!(percentile(&[(5.0, 99), (1000.0, 1)], 0.999), Some(1000.0));
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(percentile(&[(3.0, 0)], 0.5), None);
}

#[test]
fn a_verdict_passes_when_every_check_holds_and_fails_naming_the_one_that_does_not() {
    let rows = [
        locust_row("/checkout", "GET", 612.0),
        locust_row("Aggregated", "", 300.0),
    ];
    let v = judge(
        &[
            th("Aggregated", "fail_ratio < 5%"),
            th("/checkout", "p95 < 500ms"),
            th("/checkout", "rps >= 20"),
        ],
        &rows,
        Baseline::Missing("no baseline"),
    );
    assert!(!v.passed);
    let got: Vec<_> = v
        .checks
        .iter()
        .map(|c| (c.endpoint.as_str(), c.value, c.limit, c.passed))
        .collect();
    assert_eq!(
        got,
        [
            ("Aggregated", Some(0.02), Some(0.05), Some(true)),
            ("/checkout", Some(612.0), Some(500.0), Some(false)),
            ("/checkout", Some(20.0), Some(20.0), Some(true)),
        ]
    );
    assert_eq!(v.checks[1].method.as_deref(), Some("GET"));
    assert_eq!(v.checks[0].method, None);
    assert!(
        v.summary().contains("/checkout p95 < 500ms (612)"),
        "{}",
        v.summary()
    );
    let ok = judge(&[th("/checkout", "p95 < 1s")], &rows, Baseline::Missing(""));
    assert!(ok.passed);
    assert_eq!(ok.summary(), "passed (1 check)");
}

#[test]
fn missing_data_fails_the_check_saying_why() {
    let bare = of(&row("/bare", "GET", &[("num_requests", 3.0)]));
    let v = judge(
        &[th("/bare", "p95 < 500ms"), th("/gone", "avg < 1s")],
        std::slice::from_ref(&bare),
        Baseline::Missing(""),
    );
    assert!(!v.passed);
    assert_eq!(v.checks[0].passed, Some(false));
    let why = v.checks[0].reason.as_deref().unwrap();
    assert!(
        why.contains("no p95") && why.contains("response_time_percentile_0.95"),
        "{why}"
    );
    assert_eq!(v.checks[1].passed, Some(false));
    assert!(
        v.checks[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("no row named \"/gone\"")
    );
    let none = judge(&[th(AGGREGATED, "rps > 1")], &[], Baseline::Missing(""));
    assert!(!none.passed);
    assert!(
        none.checks[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no endpoint rows")
    );
}

#[test]
fn a_check_of_a_name_applies_to_each_of_its_methods() {
    let rows = [
        locust_row("/item", "GET", 100.0),
        locust_row("/item", "POST", 900.0),
    ];
    let v = judge(&[th("/item", "p95 < 500")], &rows, Baseline::Missing(""));
    let got: Vec<_> = v
        .checks
        .iter()
        .map(|c| (c.method.as_deref(), c.passed))
        .collect();
    assert_eq!(
        got,
        [(Some("GET"), Some(true)), (Some("POST"), Some(false))]
    );
}

#[test]
fn baseline_checks_compare_with_the_baseline_or_are_skipped_without_one() {
    let base = [locust_row("/checkout", "GET", 400.0)];
    let uuid = Uuid::new_v4();
    let found = Baseline::Found { uuid, rows: &base };
    let checks = [th("/checkout", "p95 <= 1.2x baseline")];
    let slower = judge(&checks, &[locust_row("/checkout", "GET", 500.0)], found);
    assert_eq!(slower.baseline, Some(uuid));
    assert_eq!(slower.checks[0].limit, Some(480.0));
    assert_eq!(slower.checks[0].passed, Some(false));
    let same = judge(&checks, &[locust_row("/checkout", "GET", 470.0)], found);
    assert!(same.passed);

    let first = judge(
        &checks,
        &[locust_row("/checkout", "GET", 9999.0)],
        Baseline::Missing("no earlier run of test=shop passed"),
    );
    assert!(first.passed, "a missing baseline skips, never fails");
    assert_eq!(first.checks[0].passed, None);
    assert_eq!(first.checks[0].value, Some(9999.0));
    assert_eq!(
        first.checks[0].reason.as_deref(),
        Some("no earlier run of test=shop passed")
    );
    assert_eq!(first.summary(), "passed (1 check, 1 skipped)");

    // A new endpoint the baseline never had is skipped, not failed.
    let new = judge(
        &[th("/new", "avg < 2x baseline")],
        &[locust_row("/new", "GET", 1.0)],
        found,
    );
    assert_eq!(new.checks[0].passed, None);
    assert!(
        new.checks[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("has no avg")
    );
}

#[test]
fn the_register_s_check_wins_over_the_configuration_s_for_the_same_endpoint_and_metric() {
    let register = [th("Aggregated", "p95 < 900ms")];
    let config = [
        Threshold {
            source: Source::Config,
            ..th("Aggregated", "p95 < 500ms")
        },
        Threshold {
            source: Source::Config,
            ..th("Aggregated", "fail_ratio < 1%")
        },
        Threshold {
            source: Source::Config,
            ..th("/other", "p95 < 500ms")
        },
    ];
    let all = merge(&register, &config);
    let got: Vec<_> = all
        .iter()
        .map(|t| (t.endpoint.as_str(), t.check.text.as_str(), t.source))
        .collect();
    assert_eq!(
        got,
        [
            ("Aggregated", "p95 < 900ms", Source::Register),
            ("Aggregated", "fail_ratio < 1%", Source::Config),
            ("/other", "p95 < 500ms", Source::Config),
        ]
    );
}

#[test]
fn thresholds_are_read_from_the_register_or_refused_naming_the_check() {
    let t = thresholds(
        &json!({"Aggregated": ["fail_ratio < 1%", "p95<1s"], "/checkout": "p95 < 500ms"}),
        Source::Register,
    )
    .unwrap();
    assert_eq!(t.len(), 3);
    assert!(
        thresholds(&Value::Null, Source::Register)
            .unwrap()
            .is_empty()
    );
    for (body, key, says) in [
        (json!(["p95 < 1s"]), "thresholds", "must be an object"),
        (json!({"/a": 5}), "thresholds./a", "list of checks"),
        (json!({"/a": [5]}), "thresholds./a[0]", "as a string"),
        (
            json!({"/a": ["p95 < 1s", "p96 < 1s"]}),
            "thresholds./a[1]",
            "unknown metric",
        ),
        (json!({"": ["p95 < 1s"]}), "thresholds.", "1 to 1024 bytes"),
    ] {
        let (k, m) = thresholds(&body, Source::Register).unwrap_err();
        assert_eq!(k, key, "{body}");
        assert!(m.contains(says), "{body}: {m}");
    }
    let many: Vec<String> = (0..=MAX_CHECKS).map(|i| format!("rps > {i}")).collect();
    let (k, m) = thresholds(&json!({"Aggregated": many}), Source::Register).unwrap_err();
    assert_eq!(k, "thresholds");
    assert!(m.contains("more than 100"), "{m}");
}

#[test]
fn figures_travel_as_an_object_of_every_metric() {
    let r = locust_row("/a", "GET", 1.5);
    let text = serde_json::to_value(&r).unwrap();
    assert_eq!(text["figures"]["p95"], json!(1.5));
    assert_eq!(text["figures"]["p99.9"], json!(890.0));
    assert_eq!(text["figures"].as_object().unwrap().len(), 14);
    let back: ResultRow = serde_json::from_value(text).unwrap();
    assert_eq!(back, r);
    let sparse = of(&row("/b", "", &[("num_requests", 1.0)]));
    let text = serde_json::to_value(&sparse).unwrap();
    assert_eq!(text["figures"]["avg"], Value::Null);
}

#[test]
fn the_doc_lists_every_metric_and_the_limits() {
    let doc = include_str!("../../docs/verdicts.md");
    for m in Metric::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", m.name())),
            "docs/verdicts.md has no row for {}",
            m.name()
        );
    }
    for (what, value) in [
        ("checks of a register", MAX_CHECKS),
        (
            "checks of the configuration's rules, all together",
            MAX_CHECKS,
        ),
        (
            "bytes of one check (one line, no control characters)",
            check::MAX_CHECK_BYTES,
        ),
        (
            "bytes of an endpoint's name in `thresholds`",
            MAX_ENDPOINT_BYTES,
        ),
        (
            "outcomes of one verdict (a check is judged once per name and method)",
            MAX_OUTCOMES,
        ),
    ] {
        assert!(
            doc.contains(&format!("| {what} | {value} |")),
            "docs/verdicts.md does not give {what} as {value}"
        );
    }
    assert!(doc.contains(&format!("at most {}", crate::state::jobs::MAX_SAMPLES)));
}

#[test]
fn an_aggregated_row_is_computed_from_the_endpoint_rows_when_locust_sent_none() {
    let rows = [
        of(&row(
            "/a",
            "GET",
            &[
                ("num_requests", 100.0),
                ("num_failures", 1.0),
                ("avg_response_time", 10.0),
                ("min_response_time", 2.0),
                ("max_response_time", 50.0),
                ("total_rps", 5.0),
            ],
        )),
        of(&row(
            "/b",
            "POST",
            &[
                ("num_requests", 300.0),
                ("num_failures", 3.0),
                ("avg_response_time", 30.0),
                ("min_response_time", 1.0),
                ("max_response_time", 90.0),
                ("total_rps", 15.0),
            ],
        )),
    ];
    let total = ResultRow::aggregate(&rows, &[("p50", 20.0), ("p95", 80.0)]);
    assert!(total.is_aggregated());
    let f = |m| total.figures.get(m);
    assert_eq!(f(Metric::Requests), Some(400.0));
    assert_eq!(f(Metric::Failures), Some(4.0));
    assert_eq!(f(Metric::FailRatio), Some(0.01));
    assert_eq!(f(Metric::Avg), Some(25.0));
    assert_eq!(f(Metric::Min), Some(1.0));
    assert_eq!(f(Metric::Max), Some(90.0));
    assert_eq!(f(Metric::Rps), Some(20.0));
    assert_eq!(f(Metric::P95), Some(80.0));
    assert_eq!(f(Metric::Median), Some(20.0));
    assert_eq!(f(Metric::P99), None, "not in the merged histogram");
    // A figure one row lacks is not summed from the others.
    let partial = [
        rows[0].clone(),
        of(&row("/c", "GET", &[("num_failures", 1.0)])),
    ];
    let total = ResultRow::aggregate(&partial, &[]);
    assert_eq!(total.figures.get(Metric::Requests), None);
    assert_eq!(total.figures.get(Metric::Failures), Some(2.0));
}

#[test]
fn a_verdict_stays_bounded_whatever_the_rows() {
    let checks: Vec<Threshold> = (0..MAX_CHECKS)
        .map(|i| th("/same", &format!("p95 < {i}")))
        .collect();
    // A thousand copies of one row: judged once per name and method.
    let copies: Vec<ResultRow> = (0..1000)
        .map(|_| locust_row("/same", "GET", 50.0))
        .collect();
    let v = judge(&checks, &copies, Baseline::Missing(""));
    assert_eq!(v.checks.len(), MAX_CHECKS);
    // A thousand methods of one name: past MAX_OUTCOMES the verdict fails, saying why.
    let methods: Vec<ResultRow> = (0..1000)
        .map(|i| locust_row("/same", &format!("M{i}"), 1.0))
        .collect();
    let v = judge(&checks, &methods, Baseline::Missing(""));
    assert!(v.checks.len() <= MAX_OUTCOMES + 1, "{}", v.checks.len());
    assert!(!v.passed);
    let last = v.checks.last().unwrap();
    assert!(
        last.reason.as_deref().unwrap().contains("not judged"),
        "{last:?}"
    );
    // Its sentence names five failures at most.
    let failing: Vec<Threshold> = (0..50).map(|i| th(&format!("/e{i}"), "p95 < 1")).collect();
    let v = judge(&failing, &[], Baseline::Missing(""));
    let summary = v.summary();
    assert!(summary.starts_with("FAILED 50 of 50 checks: "), "{summary}");
    assert!(summary.ends_with("; and 45 more"), "{summary}");
    assert!(summary.len() < 1000, "{}", summary.len());
}

#[test]
fn a_row_named_aggregated_with_a_method_is_not_doubled() {
    assert!(locust_row(AGGREGATED, "GET", 1.0).is_aggregated());
    assert!(locust_row(AGGREGATED, "", 1.0).is_aggregated());
    assert!(!locust_row("/Aggregated", "", 1.0).is_aggregated());
}

#[test]
fn an_outcome_names_its_metric() {
    let v = judge(
        &[th("/a", "fail_ratio<1%")],
        &[locust_row("/a", "GET", 1.0)],
        Baseline::Missing(""),
    );
    assert_eq!(v.checks[0].metric, "fail_ratio");
    assert_eq!(
        serde_json::to_value(&v).unwrap()["checks"][0]["metric"],
        "fail_ratio"
    );
}

#[test]
fn huge_histogram_counts_do_not_overflow() {
    let h = [(1.0, u64::MAX), (2.0, 5)];
    assert_eq!(percentile(&h, 0.5), Some(1.0));
    assert_eq!(
        percentile(&[(1.0, u64::MAX), (2.0, u64::MAX)], 0.99),
        Some(2.0)
    );
}
