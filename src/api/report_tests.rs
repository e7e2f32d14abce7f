//! Tests of the report page: the banner of each kind of verdict, escaping of client text, the
//! baseline's figures and changes, missing figures, the chart and its absence, the bounds.

use serde_json::{Value, json};

use super::*;

/// A finished run that failed one check, with a baseline and three progress points.
fn failed_run() -> Value {
    json!({
        "uuid": "5f0c6a8e-1111-4222-8333-944455556666",
        "state": "finished",
        "host": "lg-1",
        "tags": {"test": "shop", "env": "staging"},
        "started_at": "2026-01-02T10:00:00Z",
        "ended_at": "2026-01-02T10:02:05Z",
        "progress": [
            {"time": "2026-01-02T10:00:10Z", "users": 5.0, "rps": 4.0},
            {"time": "2026-01-02T10:00:40Z", "users": 10.0, "rps": null},
            {"time": "2026-01-02T10:01:10Z", "users": 10.0, "rps": 12.5}
        ],
        "result": {"rows": [
            {"name": "/checkout", "method": "GET", "figures": {
                "requests": 120.0, "failures": 3.0, "fail_ratio": 0.025, "avg": 250.25,
                "p50": 200.0, "p95": 600.0, "p99": null, "max": 900.0, "rps": 12.0}},
            {"name": "/new", "method": "POST", "figures": {"requests": 5.0}},
            {"name": "Aggregated", "method": "", "figures": {
                "requests": 125.0, "failures": 3.0, "fail_ratio": 0.024, "avg": 240.0,
                "median": 190.0, "p95": 590.0, "p99": 880.0, "max": 900.0, "rps": 12.5}}
        ]},
        "verdict": {"passed": false, "baseline": "0a0b0c0d-1111-4222-8333-944455556666",
            "checks": [
                {"endpoint": "/checkout", "method": "GET", "check": "p95 < 500ms", "metric": "p95",
                 "source": "register", "value": 600.0, "limit": 500.0, "passed": false,
                 "reason": null},
                {"endpoint": "Aggregated", "method": null, "check": "fail_ratio<5%", "metric": "fail_ratio",
                 "source": "config", "value": 0.024, "limit": 0.05, "passed": true,
                 "reason": null},
                {"endpoint": "Aggregated", "method": null, "check": "avg < 1.2x baseline", "metric": "avg",
                 "source": "register", "value": null, "limit": null, "passed": null,
                 "reason": "no baseline figure"}
            ]},
        "baseline": {"uuid": "0a0b0c0d-1111-4222-8333-944455556666",
            "started_at": "2026-01-01T10:00:00Z",
            "rows": [
                {"name": "/checkout", "method": "GET", "figures": {
                    "requests": 100.0, "failures": 0.0, "fail_ratio": 0.0, "avg": 200.0,
                    "p50": 180.0, "p95": 500.0, "p99": 700.0, "max": 800.0, "rps": 10.0}},
                {"name": "Aggregated", "method": "", "figures": {"rps": 10.0}}
            ]}
    })
}

/// The text of the first row of section `id` (`verdict`, `endpoints`) from `marker` on.
fn row<'a>(html: &'a str, id: &str, marker: &str) -> &'a str {
    let section = html
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let start = html[section..]
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in section {id}"))
        + section;
    let end = html[start..].find("</tr>").expect("the row ends") + start;
    &html[start..end]
}

#[test]
fn the_banner_says_each_kind_of_verdict() {
    let mut passed = failed_run();
    passed["verdict"]["passed"] = json!(true);
    let mut running = failed_run();
    running["state"] = json!("running");
    running["verdict"] = Value::Null;
    let mut expired = running.clone();
    expired["state"] = json!("expired");
    let mut no_checks = failed_run();
    no_checks["verdict"]["checks"] = json!([]);
    no_checks["verdict"]["passed"] = json!(true);
    for (run, class, label, detail) in [
        (failed_run(), "failed", "FAILED", "1 of 3 checks failed"),
        (
            passed,
            "passed",
            "PASSED",
            "2 of 3 checks passed, 1 skipped",
        ),
        (running, "none", "NO VERDICT", "the run is running"),
        (expired, "none", "NO VERDICT", "expired without a commit"),
        (no_checks, "none", "NO CHECKS", "no check applies"),
    ] {
        let html = render(&run);
        let banner = format!("<div class=\"banner {class}\">{label}<span>");
        assert!(html.contains(&banner), "{banner} not in:\n{html}");
        assert!(html.contains(detail), "{detail:?} not in the page");
        assert!(html.contains(&format!("<title>{label} · run ")));
        // The verdict comes before the endpoints and the chart.
        let at = |s: &str| html.find(s).unwrap_or(usize::MAX);
        assert!(at("class=\"banner") < at("id=\"endpoints\""));
        assert!(at("id=\"endpoints\"") < at("id=\"chart\""));
    }
}

#[test]
fn the_banner_colours_are_the_ones_the_browser_test_looks_for() {
    let html = render(&failed_run());
    assert!(html.contains(".passed{background:#1a7f37}"));
    assert!(html.contains(".failed{background:#cf222e}"));
    assert!(html.contains(".none{background:#6e7781}"));
}

#[test]
fn the_checks_table_marks_failed_and_skipped_checks() {
    let html = render(&failed_run());
    let failed = row(&html, "verdict", "<tr class=\"fail\">");
    assert!(failed.contains("/checkout"));
    assert!(failed.contains("<code>p95 &lt; 500ms</code>"));
    assert!(failed.contains("<td>600.0 ms</td><td>500.0 ms</td>"));
    assert!(failed.contains("FAILED"));
    assert!(html.contains("<td>2.40%</td><td>5.00%</td><td><span class=\"pass\">passed</span>"));
    assert!(html.contains(
        "<td>—</td><td>—</td><td><span class=\"skip\">skipped</span> <span class=\"skip\">— no baseline figure</span>"
    ));
    assert!(html.contains("Baseline: run <code>0a0b0c0d-1111-4222-8333-944455556666</code>, started 2026-01-01T10:00:00Z."));
}

#[test]
fn client_text_is_rendered_inert() {
    let evil = "<script>alert(1)</script>";
    let mut run = failed_run();
    run["uuid"] = json!(evil);
    run["host"] = json!(evil);
    run["state"] = json!(evil);
    run["started_at"] = json!(evil);
    run["tags"] = json!({evil: evil, "q": "\"><img src=x onerror=alert(1)>", "n": 3});
    run["result"]["rows"][0]["name"] = json!(evil);
    run["result"]["rows"][0]["method"] = json!(evil);
    run["baseline"]["rows"][0]["name"] = json!(evil);
    run["baseline"]["rows"][0]["method"] = json!(evil);
    run["verdict"]["baseline"] = json!(evil);
    run["baseline"]["started_at"] = json!(evil);
    run["verdict"]["checks"][0]["endpoint"] = json!(evil);
    run["verdict"]["checks"][0]["method"] = json!(evil);
    run["verdict"]["checks"][0]["check"] = json!(evil);
    run["verdict"]["checks"][0]["source"] = json!(evil);
    run["verdict"]["checks"][2]["reason"] = json!(evil);
    let html = render(&run);
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "{html}");
    assert!(!lower.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("q=&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("<span class=\"tag\">n=3</span>"));
    // The row still found its baseline by the (escaped) name.
    assert!(
        row(
            &html,
            "endpoints",
            "<td class=\"name\"><span class=\"method\">&lt;script"
        )
        .contains("+20.0%")
    );
}

#[test]
fn escape_covers_markup_and_both_quotes() {
    assert_eq!(escape("a&b<c>d\"e'f ü"), "a&amp;b&lt;c&gt;d&quot;e&#39;f ü");
}

#[test]
fn figures_sit_beside_the_baseline_and_the_change() {
    let html = render(&failed_run());
    let checkout = row(
        &html,
        "endpoints",
        "<span class=\"method\">GET</span>/checkout",
    );
    for expected in [
        // requests: more is neither better nor worse.
        "<span>120</span><span class=\"base\">100</span><span class=\"chg same\">+20.0%</span>",
        // failures from 0: no percentage.
        "<span>3</span><span class=\"base\">0</span><span class=\"chg same\">—</span>",
        "<span>2.50%</span><span class=\"base\">0.00%</span><span class=\"chg same\">—</span>",
        "<span>250.2</span><span class=\"base\">200.0</span><span class=\"chg worse\">+25.1%</span>",
        "<span>600.0</span><span class=\"base\">500.0</span><span class=\"chg worse\">+20.0%</span>",
        // p99 missing in this run.
        "<span>—</span><span class=\"base\">700.0</span><span class=\"chg same\">—</span>",
        // rps: higher is better.
        "<span>12.0</span><span class=\"base\">10.0</span><span class=\"chg better\">+20.0%</span>",
    ] {
        assert!(checkout.contains(expected), "{expected} not in {checkout}");
    }
    // A row the baseline lacks: its figures alone, and a word why.
    let new = row(&html, "endpoints", "<span class=\"method\">POST</span>/new");
    assert!(new.contains("/new<span class=\"base\">not in the baseline</span></td>"));
    assert!(
        new.contains("<td class=\"fig\"><span>5</span></td><td class=\"fig\"><span>—</span></td>")
    );
    // The Aggregated row (method ""), matched by name and empty method; p50 from the median.
    let total = row(&html, "endpoints", "<tr class=\"total\">");
    assert!(total.contains("<td class=\"name\">Aggregated</td>"));
    assert!(total.contains("<span>190.0</span>"));
    assert!(total.contains(
        "<span>12.5</span><span class=\"base\">10.0</span><span class=\"chg better\">+25.0%</span>"
    ));
}

#[test]
fn without_a_baseline_only_the_figures_show() {
    let mut run = failed_run();
    run["baseline"] = Value::Null;
    run["verdict"]["baseline"] = Value::Null;
    let html = render(&run);
    assert!(!html.contains("class=\"base\">"));
    assert!(html.contains("No baseline: no earlier run to compare with."));
    assert!(html.contains("<td class=\"fig\"><span>600.0</span></td>"));
}

#[test]
fn a_run_without_result_or_progress_says_so() {
    let run = json!({"uuid": "u", "state": "running", "host": "h", "tags": {},
        "started_at": "2026-01-02T10:00:00Z", "ended_at": null, "progress": [],
        "result": null, "verdict": null, "baseline": null});
    let html = render(&run);
    assert!(html.contains("No result yet"));
    assert!(html.contains("No progress received."));
    assert!(!html.contains("<svg"));
    assert!(html.contains("ended —"));
    // Nothing at all: still a page.
    let html = render(&Value::Null);
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    assert!(html.contains("NO VERDICT"));
}

#[test]
fn the_chart_draws_a_polyline_per_series() {
    let html = render(&failed_run());
    assert_eq!(html.matches("<polyline").count(), 2, "{html}");
    // Users at 10, 40 and 70 s; rps skips its null. Users top 10 (step 2.5), rps top 16 (4).
    let plot_w = CHART_W - LEFT - RIGHT;
    let x = |t: f64| LEFT + t / 70.0 * plot_w;
    let users = format!(
        "<polyline class=\"users\" points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"",
        x(10.0),
        TOP + (CHART_H - TOP - BOTTOM) / 2.0,
        x(40.0),
        TOP,
        x(70.0),
        TOP,
    );
    assert!(html.contains(&users), "{users} not in {html}");
    assert!(html.contains("<polyline class=\"rps\" points=\""));
    assert!(html.contains(&format!("stroke:{USERS_COLOUR}")));
    assert!(html.contains(&format!("stroke:{RPS_COLOUR}")));
    assert!(html.contains("seconds since the start"));
    assert!(
        html.contains("users (left axis)") && html.contains("requests per second (right axis)")
    );
    for label in [">0<", ">2.5<", ">10<", ">16<", ">60<"] {
        assert!(html.contains(label), "axis label {label} missing");
    }
}

#[test]
fn a_series_without_values_draws_no_line_and_a_lone_point_is_marked() {
    let mut run = failed_run();
    run["progress"] = json!([{"time": "2026-01-02T10:00:10Z", "users": null, "rps": 3.0}]);
    let html = render(&run);
    assert_eq!(html.matches("<polyline").count(), 1);
    assert!(html.contains("<polyline class=\"rps\""));
    assert!(html.contains("<circle"));
    run["progress"] = json!([{"time": "not a time", "users": 1.0, "rps": 3.0}]);
    assert!(render(&run).contains("No progress received."));
    run["progress"] = json!([{"time": "2026-01-02T10:00:10Z", "users": null, "rps": null}]);
    assert!(render(&run).contains("carries no users nor rps"));
}

#[test]
fn the_page_is_self_contained() {
    let html = render(&failed_run());
    let lower = html.to_lowercase();
    for forbidden in [
        "<script",
        "http://",
        "https://",
        "@import",
        "url(",
        "<link rel=\"stylesheet",
    ] {
        assert!(!lower.contains(forbidden), "{forbidden} in the page");
    }
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
}

#[test]
fn the_page_is_bounded() {
    let mut run = failed_run();
    let rows: Vec<Value> = (0..5000)
        .map(|i| json!({"name": format!("/e{i}"), "method": "GET", "figures": {"avg": 1.0}}))
        .collect();
    run["result"]["rows"] = json!(rows.clone());
    run["baseline"]["rows"] = json!(rows);
    let html = render(&run);
    assert!(html.contains("and 4000 more endpoints"));
    assert!(!html.contains("/e1000<"));
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
}

#[test]
fn numbers_are_written_for_people() {
    for (v, unit, expected) in [
        (Some(3.0), Unit::Count, "3"),
        (Some(2.5), Unit::Count, "2.5"),
        (Some(0.0123), Unit::Ratio, "1.23%"),
        (Some(1.0), Unit::Ratio, "100.00%"),
        (Some(612.04), Unit::Ms, "612.0"),
        (Some(0.06), Unit::Ms, "0.1"),
        (Some(12.49), Unit::PerSecond, "12.5"),
        (None, Unit::Ms, "—"),
    ] {
        assert_eq!(figure_text(v, unit), expected, "{v:?} {unit:?}");
    }
    assert_eq!(with_unit(Some(500.0), Unit::Ms), "500.0 ms");
    assert_eq!(with_unit(Some(3.0), Unit::PerSecond), "3.0/s");
    assert_eq!(with_unit(None, Unit::PerSecond), "—");
    assert_eq!(metric_unit("fail_ratio"), Unit::Ratio);
    assert_eq!(metric_unit("p99.9"), Unit::Ms);
    assert_eq!(metric_unit("rps"), Unit::PerSecond);
    assert_eq!(metric_unit("requests"), Unit::Count);
    assert_eq!(duration_text(45.4), "45 s");
    assert_eq!(duration_text(125.0), "2 min 05 s");
    assert_eq!(duration_text(3725.0), "1 h 02 min 05 s");
}

#[test]
fn changes_are_coloured_by_which_way_is_better() {
    assert_eq!(change(120.0, 100.0), Some(20.0));
    assert_eq!(change(0.0, 0.0), Some(0.0));
    assert_eq!(change(1.0, 0.0), None);
    for (pct, better, text, class) in [
        (20.0, Better::Lower, "+20.0%", "worse"),
        (-20.0, Better::Lower, "−20.0%", "better"),
        (20.0, Better::Higher, "+20.0%", "better"),
        (-20.0, Better::Higher, "−20.0%", "worse"),
        (20.0, Better::Neither, "+20.0%", "same"),
        (0.01, Better::Lower, "±0.0%", "same"),
    ] {
        assert_eq!(change_text(pct, better), (text.to_string(), class));
    }
}

#[test]
fn axis_steps_are_round() {
    assert_eq!(
        nice_step(2.525, &[1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]),
        3.0
    );
    assert_eq!(nice_step(0.0, &[1.0, 2.0, 5.0, 10.0]), 1.0);
    assert_eq!(nice_step(7.0, &[1.0, 2.0, 5.0, 10.0]), 10.0);
    assert_eq!(nice_step(30.0, &[1.0, 2.0, 5.0, 10.0]), 50.0);
    assert_eq!(tick_text(12.0), "12");
    assert_eq!(tick_text(0.375), "0.38");
    assert_eq!(tick_text(1.5), "1.5");
}
