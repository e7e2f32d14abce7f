//! The run report (`GET /apiv0.1/runs/<uuid>/report`) as a person sees it: the real gateway and
//! influxd, two committed runs of one test (`test=shop`) with thresholds, the second failing a
//! check against the first as its baseline, each page opened in headless Chromium with the
//! token in the URL (HTTP Basic), and the screenshot looked at: the banner's colour at the top,
//! the chart's two lines. The DOM Chromium built holds no script and nothing from elsewhere,
//! although the first run's endpoint name and tag held `<script>`, shown as text; the answer's
//! headers forbid scripts too.
//!
//! Each test writes its screenshots to target/report/ for a look; docs/report.png, which the
//! README shows, is the failed run's, copied from there.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::browser::{Screenshot, dump_dom, hex, screenshot};
use crate::support::{ConsumerToml, Gateway, Influxd, RawResponse, request};

const TOKEN: &str = "report-token-0123456789abcdef";
/// The banner's colours and the chart's lines, as src/api/report.rs paints them.
const GREEN: &str = "#1a7f37";
const RED: &str = "#cf222e";
const USERS: &str = "#0969da";
const RPS: &str = "#bc4c00";
/// Channel tolerance for "this colour" (antialiasing and colour conversion stay within it).
const TOLERANCE: u8 = 6;
/// The screenshot's size: the page's full width, enough height for the chart below three
/// endpoints and three checks.
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 960;
/// The pace of a run's progress reports (Locust's are 15 s apart; the gateway keeps their times).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// An endpoint name and a tag value as a hostile client may send them.
const EVIL_NAME: &str = "/search?q=<script>document.title='pwned'</script>";
const EVIL_TAG: &str = "<img src=x onerror=alert(1)><script>alert(2)</script>";

fn start() -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[[auth.token]]\nname = \"ci\"\ntoken = \"{TOKEN}\"\n"
            ))
            .toml(),
    );
    (influx, gw)
}

/// A request with the token as Bearer; `body` as JSON.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> RawResponse {
    let bearer = format!("Bearer {TOKEN}");
    let text = body.map(Value::to_string);
    request(
        addr,
        method,
        path,
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        text.as_deref(),
    )
}

/// A Locust endpoint row with the figures the checks read.
fn row(
    name: &str,
    method: Option<&str>,
    requests: u32,
    failures: u32,
    avg: f64,
    p95: f64,
) -> Value {
    let mut row = json!({
        "name": name, "method": method, "num_requests": requests, "num_failures": failures,
        "avg_response_time": avg, "median_response_time": avg * 0.8,
        "min_response_time": avg * 0.2, "max_response_time": p95 * 1.5,
        "total_rps": f64::from(requests) / 60.0,
    });
    for (q, factor) in [("0.5", 0.8), ("0.95", 1.0), ("0.99", 1.3)] {
        row[format!("response_time_percentile_{q}")] = json!(p95 * factor);
    }
    row
}

/// Registers a run of test "shop" with its thresholds, sends `users`/`rps` progress, commits
/// `rows`; returns the uuid and the commit's answer.
fn run_once(
    addr: SocketAddr,
    tags: Value,
    progress: &[(f64, f64)],
    rows: Value,
) -> (String, Value) {
    let register = call(
        addr,
        "POST",
        "/apiv0.1/events/register",
        Some(&json!({
            "host": "lg-1",
            "tags": tags,
            "thresholds": {
                "Aggregated": ["fail_ratio < 5%"],
                "/checkout": ["p95 < 500ms", "avg < 1.5x baseline"],
            },
        })),
    );
    assert_eq!(register.status, 200, "register: {}", register.body);
    let uuid = register.json()["uuid"].as_str().expect("uuid").to_string();
    for (i, (users, rps)) in progress.iter().enumerate() {
        // The gateway times each sample as it arrives: spaced like a load generator's reports
        // (faster), the chart has a time axis to draw them along.
        if i > 0 {
            thread::sleep(PROGRESS_EVERY);
        }
        let answer = call(
            addr,
            "POST",
            "/apiv0.1/events/progress",
            Some(
                &json!({"uuid": uuid, "measurement": {"fields": {"user_count": users, "current_rps": rps}}}),
            ),
        );
        assert_eq!(answer.status, 200, "progress: {}", answer.body);
    }
    let commit = call(
        addr,
        "POST",
        "/apiv0.1/events/commit",
        Some(&json!({"uuid": uuid, "measurement": {"fields": {"requestStats": {"stats": rows}}}})),
    );
    assert_eq!(commit.status, 200, "commit: {}", commit.body);
    (uuid, commit.json())
}

/// The report's URL with the token as the Basic password, as a person would type it.
fn report_url(addr: SocketAddr, uuid: &str) -> String {
    format!("http://ci:{TOKEN}@{addr}/apiv0.1/runs/{uuid}/report")
}

/// Writes `shot` to target/report/`name` for a look.
fn keep(shot: &Screenshot, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/report");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(name);
    fs::write(&path, &shot.png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// The first and last rows of `shot` where a colour fills a banner's width (600 of the page's
/// 960 px), or `None`.
fn banner_rows(shot: &Screenshot, colour: &str) -> Option<(u32, u32)> {
    shot.rows_of(hex(colour), TOLERANCE, 600)
}

/// The answer to the report page: HTML that forbids scripts, and no credentials needed twice.
fn check_headers(gw: &Gateway, uuid: &str) {
    let page = call(
        gw.addr,
        "GET",
        &format!("/apiv0.1/runs/{uuid}/report"),
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page
        .header("content-security-policy")
        .expect("a Content-Security-Policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "nothing may allow a script: {csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page.body.starts_with("<!DOCTYPE html>"));
}

/// What Chromium built of the page: no script element, nothing fetched from elsewhere, the
/// hostile strings shown as text.
fn check_dom(dom: &str, label: &str) {
    let lower = dom.to_lowercase();
    assert!(!lower.contains("<script"), "a script element: {dom}");
    assert!(!lower.contains("<img"), "an img element: {dom}");
    for attr in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
    ] {
        assert!(!lower.contains(attr), "{attr} in the page: {dom}");
    }
    assert!(dom.contains("class=\"banner"), "{dom}");
    assert!(dom.contains(label), "{label} not in the page");
    assert!(
        !dom.contains("<title>pwned"),
        "the title was changed by a script"
    );
}

#[test]
fn the_report_shows_a_failed_run_red_and_a_passed_run_green_in_a_real_browser() {
    let (_influx, gw) = start();
    let steady = [
        (2.0, 1.5),
        (5.0, 4.0),
        (10.0, 8.5),
        (10.0, 9.5),
        (10.0, 9.0),
        (10.0, 9.8),
    ];

    // The first run of test "shop" passes (its baseline check skipped: none yet). A hostile
    // client's endpoint name and tag come with it.
    let (passed, answer) = run_once(
        gw.addr,
        json!({"test": "shop", "note": EVIL_TAG}),
        &steady,
        json!([
            row("/checkout", Some("GET"), 600, 2, 200.0, 320.0),
            row("/cart", Some("POST"), 200, 0, 90.0, 150.0),
            row(EVIL_NAME, Some("GET"), 30, 0, 40.0, 90.0),
            row("Aggregated", None, 830, 2, 165.0, 300.0),
        ]),
    );
    assert_eq!(answer["verdict"]["passed"], true, "{answer}");

    // The second fails p95 < 500ms on /checkout; it is judged against the first.
    let (failed, answer) = run_once(
        gw.addr,
        json!({"test": "shop"}),
        &[
            (2.0, 1.0),
            (6.0, 3.5),
            (12.0, 7.0),
            (12.0, 8.0),
            (12.0, 6.5),
            (12.0, 7.5),
        ],
        json!([
            row("/checkout", Some("GET"), 450, 9, 260.0, 640.0),
            row("/cart", Some("POST"), 210, 1, 85.0, 140.0),
            row("Aggregated", None, 660, 10, 205.0, 600.0),
        ]),
    );
    assert_eq!(answer["verdict"]["passed"], false, "{answer}");
    assert_eq!(answer["verdict"]["baseline"], passed, "{answer}");

    let json = call(gw.addr, "GET", &format!("/apiv0.1/runs/{failed}"), None).json();
    assert_eq!(json["baseline"]["uuid"], passed, "{json}");
    assert!(
        json["progress"].as_array().is_some_and(|p| p.len() >= 6),
        "{json}"
    );

    check_headers(&gw, &failed);

    // The failed run: a red banner across the top, no green one, both lines of the chart.
    let shot = screenshot(&report_url(gw.addr, &failed), WIDTH, HEIGHT);
    let kept = keep(&shot, "failed.png");
    let (top, bottom) =
        banner_rows(&shot, RED).unwrap_or_else(|| panic!("no red banner in {}", kept.display()));
    assert!(
        top < 200 && bottom - top >= 50,
        "the red banner spans rows {top}..={bottom} of {}",
        kept.display()
    );
    assert!(
        shot.count_close_in(shot.rows(0, 300), hex(RED), TOLERANCE) > 40_000,
        "{}",
        kept.display()
    );
    assert_eq!(banner_rows(&shot, GREEN), None, "{}", kept.display());
    for (colour, what) in [(USERS, "users"), (RPS, "rps")] {
        let below = shot.count_close_in(shot.rows(bottom + 1, HEIGHT), hex(colour), TOLERANCE);
        assert!(
            below > 500,
            "the {what} line ({colour}) has {below} pixels in {}",
            kept.display()
        );
    }
    check_dom(&dump_dom(&report_url(gw.addr, &failed)), "FAILED");

    // The passed run: green, no red banner.
    let shot = screenshot(&report_url(gw.addr, &passed), WIDTH, HEIGHT);
    let kept = keep(&shot, "passed.png");
    let (top, bottom) = banner_rows(&shot, GREEN)
        .unwrap_or_else(|| panic!("no green banner in {}", kept.display()));
    assert!(top < 200 && bottom - top >= 50, "{}", kept.display());
    assert_eq!(banner_rows(&shot, RED), None, "{}", kept.display());
    let dom = dump_dom(&report_url(gw.addr, &passed));
    check_dom(&dom, "PASSED");

    // A run still running has no verdict yet, and its chart already.
    let register = call(
        gw.addr,
        "POST",
        "/apiv0.1/events/register",
        Some(
            &json!({"host": "lg-1", "tags": {"test": "shop"}, "measurement": {"fields": {"user_count": 3}}}),
        ),
    );
    assert_eq!(register.status, 200, "{}", register.body);
    let running = register.json()["uuid"].as_str().expect("uuid").to_string();
    let page = call(
        gw.addr,
        "GET",
        &format!("/apiv0.1/runs/{running}/report"),
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<div class=\"banner none\">NO VERDICT<span>the run is running"),
        "{}",
        page.body
    );
    assert!(page.body.contains("No result yet"), "{}", page.body);
    assert!(
        page.body.contains("<polyline class=\"users\""),
        "{}",
        page.body
    );
    // The hostile strings are there, as text.
    assert!(
        dom.contains("/search?q=&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        dom.contains(
            "note=&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;"
        ),
        "{dom}"
    );
}
