//! Verdicts for CI: a register's `thresholds` and the configuration's `[[verdict.rule]]`s
//! judged at the commit against the result's rows and the baseline (the last run of the same
//! token and `test` tag that passed), with the real binary in front of a real `influxd`: the
//! commit's answer, the points written (a `load_testing_checks` point per check, the `verdict`
//! event), `GET /apiv0.1/runs/<uuid>`, and the baseline kept across a restart.

use serde_json::{Map, Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, RawResponse, request, wait_until};

const DB: &str = "runs";
const TOKEN_A: &str = "verdict-token-a-0123456789abcdef";
const TOKEN_B: &str = "verdict-token-b-0123456789abcdef";

fn config(influx: &Influxd, rules: &str) -> String {
    ConsumerToml::new(&influx.url, DB)
        .rest(&format!(
            "[[auth.token]]\nname = \"team-a\"\ntoken = \"{TOKEN_A}\"\n\n[[auth.token]]\nname = \"team-b\"\ntoken = \"{TOKEN_B}\"\n\n{rules}"
        ))
        .toml()
}

fn call(gw: &Gateway, token: &str, method: &str, path: &str, body: Option<&Value>) -> RawResponse {
    let auth = format!("Bearer {token}");
    let text = body.map(Value::to_string);
    request(
        gw.addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        text.as_deref(),
    )
}

fn register(gw: &Gateway, token: &str, body: Value) -> String {
    let answer = call(gw, token, "POST", "/apiv0.1/events/register", Some(&body));
    assert_eq!(answer.status, 200, "register {body}: {}", answer.body);
    answer.json()["uuid"].as_str().unwrap().to_string()
}

/// A Locust row as the plugin sends it, with this p95 and failure count of 200 requests.
fn row(name: &str, method: &str, p95: f64, failures: u32) -> Value {
    json!({
        "name": name, "method": method,
        "num_requests": 200, "num_failures": failures,
        "fail_ratio": f64::from(failures) / 200.0,
        "avg_response_time": 120.0, "min_response_time": 3.0, "max_response_time": 900.0,
        "median_response_time": 100.0,
        "response_time_percentile_0.5": 100.0, "response_time_percentile_0.75": 150.0,
        "response_time_percentile_0.9": 300.0, "response_time_percentile_0.95": p95,
        "response_time_percentile_0.99": 800.0, "response_time_percentile_0.999": 890.0,
        "total_rps": 20.0, "current_rps": 19.0
    })
}

fn commit(gw: &Gateway, token: &str, uuid: &str, rows: Vec<Value>) -> Value {
    let body = json!({"uuid": uuid, "measurement": {"fields": {"requestStats": {"stats": rows}}}});
    let answer = call(gw, token, "POST", "/apiv0.1/events/commit", Some(&body));
    assert_eq!(answer.status, 200, "commit: {}", answer.body);
    answer.json()
}

fn checks(verdict: &Value) -> Vec<(String, String, Value, Value, Value)> {
    verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["endpoint"].as_str().unwrap().to_string(),
                c["check"].as_str().unwrap().to_string(),
                c["value"].clone(),
                c["limit"].clone(),
                c["passed"].clone(),
            )
        })
        .collect()
}

fn series_of(influx: &Influxd, measurement: &str, uuid: &str) -> Vec<Map<String, Value>> {
    influx
        .series(DB, measurement)
        .into_iter()
        .filter(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid))
        .collect()
}

#[test]
fn a_commit_answers_its_verdict_and_writes_a_point_per_check_and_a_verdict_event() {
    let influx = Influxd::start();
    let gw = Gateway::start(&config(&influx, ""));
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"tags": {"test": "shop"}, "thresholds": {
            "Aggregated": ["fail_ratio < 1%"],
            "/checkout": ["p95 < 500ms", "rps > 10"]
        }}),
    );
    let answer = commit(
        &gw,
        TOKEN_A,
        &uuid,
        vec![
            row("/checkout", "GET", 612.0, 0),
            row("Aggregated", "", 300.0, 1),
        ],
    );
    let verdict = &answer["verdict"];
    assert_eq!(verdict["passed"], false, "{answer}");
    assert_eq!(verdict["baseline"], Value::Null);
    // In the order of the endpoints' names, then of the checks as written.
    assert_eq!(
        checks(verdict),
        [
            (
                "/checkout".into(),
                "p95 < 500ms".into(),
                json!(612.0),
                json!(500.0),
                json!(false)
            ),
            (
                "/checkout".into(),
                "rps > 10".into(),
                json!(20.0),
                json!(10.0),
                json!(true)
            ),
            (
                "Aggregated".into(),
                "fail_ratio < 1%".into(),
                json!(0.005),
                json!(0.01),
                json!(true)
            ),
        ]
    );
    assert_eq!(verdict["checks"][0]["method"], "GET");
    assert_eq!(verdict["checks"][2]["method"], Value::Null);
    assert_eq!(answer["report"], format!("/apiv0.1/runs/{uuid}/report"));
    let description = answer["data"]["description"].as_str().unwrap();
    assert!(
        description.contains("verdict: FAILED 1 of 3 checks: /checkout p95 < 500ms (612)"),
        "{description}"
    );

    // The points: one per check, and the event Grafana annotates.
    wait_until(
        std::time::Duration::from_secs(30),
        "the verdict's points in InfluxDB",
        || series_of(&influx, "load_testing_checks", &uuid).len() == 3,
    );
    let points = series_of(&influx, "load_testing_checks", &uuid);
    let failed: Vec<_> = points.iter().filter(|p| p["result"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{points:?}");
    assert_eq!(failed[0]["name"], "/checkout");
    assert_eq!(failed[0]["method"], "GET");
    assert_eq!(failed[0]["check"], "p95 < 500ms");
    assert_eq!(failed[0]["value"], 612.0);
    assert_eq!(failed[0]["limit"], 500.0);
    assert_eq!(failed[0]["test"], "shop");
    let events = series_of(&influx, "load_testing_events", &uuid);
    let verdict_event: Vec<_> = events.iter().filter(|e| e["event"] == "verdict").collect();
    assert_eq!(verdict_event.len(), 1, "{events:?}");
    assert!(
        verdict_event[0]["text"]
            .as_str()
            .unwrap()
            .contains("FAILED 1 of 3 checks"),
        "{verdict_event:?}"
    );
}

#[test]
fn a_malformed_check_is_refused_at_the_register_naming_it() {
    let influx = Influxd::start();
    let gw = Gateway::start(&config(&influx, ""));
    for (thresholds, key, says) in [
        (
            json!({"/checkout": ["p95 < 500 mss"]}),
            "thresholds./checkout[0]",
            "mss",
        ),
        (
            json!({"Aggregated": ["p96 < 1s"]}),
            "thresholds.Aggregated[0]",
            "unknown metric",
        ),
        (
            json!({"Aggregated": "fail_ratio < 1ms"}),
            "thresholds.Aggregated[0]",
            "is a ratio",
        ),
        (json!(["p95 < 1s"]), "thresholds", "must be an object"),
    ] {
        let answer = call(
            &gw,
            TOKEN_A,
            "POST",
            "/apiv0.1/events/register",
            Some(&json!({"thresholds": thresholds})),
        );
        assert_eq!(answer.status, 400, "{thresholds}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["code"], "invalid_check", "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("{key}: ")), "{error}");
        assert!(error.contains(says), "{error}");
    }
    // A misspelt key is named, as any key nothing reads.
    let answer = call(
        &gw,
        TOKEN_A,
        "POST",
        "/apiv0.1/events/register",
        Some(&json!({"threshold": {"Aggregated": ["p95 < 1s"]}})),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["did_you_mean"]["threshold"], "thresholds");
}

/// The baseline: none at first (baseline checks skipped, never failed); then the last run of
/// the same token and test that passed, never a failed one, another token's or another test's;
/// and still so after a restart.
#[test]
fn the_baseline_is_the_last_passed_run_of_the_same_token_and_test_and_survives_a_restart() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(&config(&influx, ""));
    let checks_body = |test: &str| json!({"tags": {"test": test}, "thresholds": {"/checkout": ["p95 <= 1.2x baseline"]}});
    let run = |gw: &Gateway, token: &str, test: &str, p95: f64| {
        let uuid = register(gw, token, checks_body(test));
        let answer = commit(gw, token, &uuid, vec![row("/checkout", "GET", p95, 0)]);
        (uuid, answer["verdict"].clone())
    };
    let (first, v) = run(&gw, TOKEN_A, "shop", 400.0);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["baseline"], Value::Null);
    assert_eq!(v["checks"][0]["passed"], Value::Null, "skipped: {v}");
    assert!(
        v["checks"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no earlier run with test=shop passed"),
        "{v}"
    );
    // Another token's runs and another test's never take the first as their baseline.
    let (_, other_token) = run(&gw, TOKEN_B, "shop", 9000.0);
    assert_eq!(other_token["baseline"], Value::Null, "{other_token}");
    let (_, other_test) = run(&gw, TOKEN_A, "cart", 9000.0);
    assert_eq!(other_test["baseline"], Value::Null, "{other_test}");

    let (slower, v) = run(&gw, TOKEN_A, "shop", 500.0);
    assert_eq!(v["passed"], false, "{v}");
    assert_eq!(v["baseline"], first.as_str());
    assert_eq!(v["checks"][0]["limit"], 480.0);
    // The failed run is nobody's baseline: the next compares with the first.
    let (_, v) = run(&gw, TOKEN_A, "shop", 470.0);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["baseline"], first.as_str(), "not {slower}");
    let second_good = v.clone();

    // A run without checks passes, but is nobody's baseline.
    let unchecked = register(&gw, TOKEN_A, json!({"tags": {"test": "shop"}}));
    let answer = commit(
        &gw,
        TOKEN_A,
        &unchecked,
        vec![row("/checkout", "GET", 1.0, 0)],
    );
    // (It is still compared with its baseline: its report shows the change.)
    assert_eq!(answer["verdict"]["passed"], true);
    assert_eq!(answer["verdict"]["checks"], json!([]));
    let (_, v) = run(&gw, TOKEN_A, "shop", 480.0);
    assert_ne!(v["baseline"], unchecked.as_str(), "{v}");

    // A run without the identity tag has no baseline, and says why.
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"thresholds": {"/checkout": ["p95 < 2x baseline"]}}),
    );
    let answer = commit(&gw, TOKEN_A, &uuid, vec![row("/checkout", "GET", 1.0, 0)]);
    let reason = answer["verdict"]["checks"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no \"test\" tag"), "{reason}");

    gw.restart();
    let (_, v) = run(&gw, TOKEN_A, "shop", 100.0);
    assert_ne!(v["baseline"], Value::Null, "kept across the restart: {v}");
    assert_ne!(
        v["baseline"],
        first.as_str(),
        "the newest passed run: {second_good}"
    );
}

#[test]
fn missing_data_fails_the_check_and_a_histogram_gives_the_percentile() {
    let influx = Influxd::start();
    let gw = Gateway::start(&config(&influx, ""));
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"thresholds": {
            "/bare": ["p99 < 1s"],
            "/gone": ["avg < 1s"],
            "/serialized": ["p95 < 100", "rps > 1", "fail_ratio < 20%"]
        }}),
    );
    // Locust's StatsEntry.serialize(): totals, timestamps and the histogram of rounded times.
    let serialized = json!({
        "name": "/serialized", "method": "GET", "num_requests": 100, "num_failures": 10,
        "total_response_time": 2500.0, "start_time": 1000.0, "last_request_timestamp": 1010.0,
        "response_times": {"10": 90, "150": 10}
    });
    let answer = commit(
        &gw,
        TOKEN_A,
        &uuid,
        vec![
            json!({"name": "/bare", "method": "GET", "num_requests": 3}),
            serialized,
        ],
    );
    let v = &answer["verdict"];
    assert_eq!(v["passed"], false, "{v}");
    let by = |endpoint: &str, check: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["endpoint"] == endpoint && c["check"] == check)
            .unwrap_or_else(|| panic!("no {endpoint} {check} in {v}"))
            .clone()
    };
    let bare = by("/bare", "p99 < 1s");
    assert_eq!(bare["passed"], false);
    assert!(
        bare["reason"].as_str().unwrap().contains("carries no p99"),
        "{bare}"
    );
    let gone = by("/gone", "avg < 1s");
    assert_eq!(gone["passed"], false);
    assert!(
        gone["reason"].as_str().unwrap().contains("no row named"),
        "{gone}"
    );
    // 90 of 100 at 10 ms, 10 at 150 ms: Locust's p95 is 150.
    let p95 = by("/serialized", "p95 < 100");
    assert_eq!(
        (p95["value"].clone(), p95["passed"].clone()),
        (json!(150.0), json!(false))
    );
    assert_eq!(by("/serialized", "rps > 1")["value"], 10.0);
    assert_eq!(by("/serialized", "fail_ratio < 20%")["passed"], true);
}

#[test]
fn the_configuration_s_rules_apply_by_tags_and_the_register_s_check_wins() {
    let influx = Influxd::start();
    let rules = "[[verdict.rule]]\ntags = { team = \"shop*\" }\nthresholds = { Aggregated = [\"p95 < 100ms\", \"fail_ratio < 1%\"] }\n\n[[verdict.rule]]\nthresholds = { Aggregated = [\"requests >= 1\"] }\n";
    let gw = Gateway::start(&config(&influx, rules));
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"tags": {"team": "shop-eu"}, "thresholds": {"Aggregated": ["p95 < 1s"]}}),
    );
    let answer = commit(&gw, TOKEN_A, &uuid, vec![row("Aggregated", "", 300.0, 10)]);
    let v = &answer["verdict"];
    let got: Vec<(String, String)> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("p95 < 1s".to_string(), "register".to_string()),
            ("fail_ratio < 1%".to_string(), "config".to_string()),
            ("requests >= 1".to_string(), "config".to_string()),
        ],
        "{v}"
    );
    assert_eq!(v["passed"], false, "fail_ratio 5% > 1%: {v}");
    // A run of another team gets the rule for every run alone.
    let uuid = register(&gw, TOKEN_A, json!({"tags": {"team": "cart"}}));
    let answer = commit(&gw, TOKEN_A, &uuid, vec![row("Aggregated", "", 300.0, 10)]);
    assert_eq!(checks(&answer["verdict"]).len(), 1, "{answer}");
    assert_eq!(answer["verdict"]["passed"], true);
}

#[test]
fn a_run_is_shown_to_its_own_token_with_its_progress_result_verdict_and_baseline() {
    let influx = Influxd::start();
    let gw = Gateway::start(&config(&influx, ""));
    let body = json!({"tags": {"test": "shop"}, "measurement": {"fields": {"user_count": 5}},
                      "thresholds": {"/checkout": ["p95 <= 1.5x baseline"]}});
    let first = register(&gw, TOKEN_A, body.clone());
    commit(
        &gw,
        TOKEN_A,
        &first,
        vec![row("/checkout", "GET", 400.0, 0)],
    );
    let uuid = register(&gw, TOKEN_A, body);
    for (users, rps) in [(10, 12.5), (20, 30.0)] {
        let answer = call(
            &gw,
            TOKEN_A,
            "POST",
            "/apiv0.1/events/progress",
            Some(
                &json!({"uuid": uuid, "measurement": {"fields": {"user_count": users, "current_rps": rps}}}),
            ),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let path = format!("/apiv0.1/runs/{uuid}");
    let running = call(&gw, TOKEN_A, "GET", &path, None);
    assert_eq!(running.status, 200, "{}", running.body);
    let running = running.json();
    assert_eq!(running["state"], "running");
    assert_eq!(running["result"], Value::Null);
    let users: Vec<Value> = running["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["users"].clone())
        .collect();
    assert_eq!(users, [json!(5.0), json!(10.0), json!(20.0)], "{running}");
    assert_eq!(running["progress"][2]["rps"], 30.0);

    commit(&gw, TOKEN_A, &uuid, vec![row("/checkout", "GET", 500.0, 0)]);
    let done = call(&gw, TOKEN_A, "GET", &path, None).json();
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["tags"]["test"], "shop");
    assert_eq!(done["result"]["rows"][0]["figures"]["p95"], 500.0);
    assert_eq!(done["verdict"]["passed"], true);
    assert_eq!(done["verdict"]["baseline"], first.as_str());
    assert_eq!(done["baseline"]["uuid"], first.as_str());
    assert_eq!(done["baseline"]["rows"][0]["figures"]["p95"], 400.0);
    assert_eq!(done["progress"].as_array().unwrap().len(), 3, "{done}");

    // Another token does not see it; a path that is not a uuid is a 400.
    let other = call(&gw, TOKEN_B, "GET", &path, None);
    assert_eq!(other.status, 404, "{}", other.body);
    let report = call(&gw, TOKEN_B, "GET", &format!("{path}/report"), None);
    assert_eq!(report.status, 404, "{}", report.body);
    let bad = call(&gw, TOKEN_A, "GET", "/apiv0.1/runs/not-a-uuid", None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["code"], "invalid_uuid");
    let unknown = call(
        &gw,
        TOKEN_A,
        "GET",
        "/apiv0.1/runs/00000000-0000-4000-8000-000000000000",
        None,
    );
    assert_eq!(unknown.status, 404);
    let no_token = request(gw.addr, "GET", &path, &[], None);
    assert_eq!(no_token.status, 401);
}

/// A register's checks are kept with the run: a restart between the register and the commit
/// (kill -9, so from the log alone) still judges the commit by them.
#[test]
fn a_run_s_checks_survive_a_restart_between_register_and_commit() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(&config(&influx, ""));
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"thresholds": {"/checkout": ["p95 < 500ms"], "Aggregated": "requests > 0"}}),
    );
    gw.kill();
    gw.restart();
    let answer = commit(&gw, TOKEN_A, &uuid, vec![row("/checkout", "GET", 612.0, 0)]);
    let got: Vec<String> = checks(&answer["verdict"])
        .into_iter()
        .map(|(endpoint, check, _, _, passed)| format!("{endpoint} {check} {passed}"))
        .collect();
    assert_eq!(
        got,
        [
            "/checkout p95 < 500ms false",
            "Aggregated requests > 0 true"
        ],
        "{answer}"
    );
}

/// `locust --json-file` writes the endpoint rows alone, with their histograms: a check of
/// `Aggregated` reads the row the gateway computes from them (commit.sh @stats.json).
#[test]
fn a_result_without_an_aggregated_row_gets_one_computed_from_its_rows() {
    let influx = Influxd::start();
    let gw = Gateway::start(&config(&influx, ""));
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"thresholds": {"Aggregated": ["requests >= 300", "fail_ratio < 2%", "p95 < 100ms", "avg < 50"]}}),
    );
    let file_rows = json!([
        {"name": "/a", "method": "GET", "num_requests": 100, "num_failures": 1,
         "total_response_time": 1000.0, "min_response_time": 2, "max_response_time": 150,
         "start_time": 1000.0, "last_request_timestamp": 1010.0,
         "response_times": {"10": 95, "150": 5}},
        {"name": "/b", "method": "POST", "num_requests": 200, "num_failures": 2,
         "total_response_time": 4000.0, "min_response_time": 5, "max_response_time": 40,
         "start_time": 1000.0, "last_request_timestamp": 1010.0,
         "response_times": {"20": 200}}
    ]);
    let body = json!({"uuid": uuid, "measurement": {"fields": {"requestStats": file_rows}}});
    let answer = call(&gw, TOKEN_A, "POST", "/apiv0.1/events/commit", Some(&body));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v = answer.json()["verdict"].clone();
    let got: Vec<(String, Value, Value)> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["value"].clone(),
                c["passed"].clone(),
            )
        })
        .collect();
    // 300 requests, 3 failures; (1000 + 4000) / 300 ms on average; of the 300 together 295
    // took 20 ms or less, so Locust's p95 of the merged histogram is 20.
    let avg = 5000.0 / 300.0;
    assert_eq!(
        got,
        [
            ("requests >= 300".to_string(), json!(300.0), json!(true)),
            ("fail_ratio < 2%".to_string(), json!(0.01), json!(true)),
            ("p95 < 100ms".to_string(), json!(20.0), json!(true)),
            ("avg < 50".to_string(), json!(avg), json!(true)),
        ],
        "{v}"
    );
}

/// What a client's rows and tags can do to a verdict stays bounded and never blocks the
/// commit: a thousand copies of one row under a hundred checks, and run tags named like the
/// fields of the verdict's points (`value`, `limit`, `result`).
#[test]
fn hostile_rows_and_tags_neither_blow_up_the_verdict_nor_block_the_commit() {
    let influx = Influxd::start();
    let gw = Gateway::start(&config(&influx, ""));
    let name = format!("/{}", "n".repeat(500));
    let checks: Vec<String> = (0..100).map(|i| format!("p95 < {i}")).collect();
    let uuid = register(
        &gw,
        TOKEN_A,
        json!({"tags": {"value": "v", "limit": "l", "result": "r", "test": "hostile"},
               "thresholds": {name.clone(): checks}}),
    );
    let rows: Vec<Value> = (0..1000)
        .map(|_| json!({"name": name, "method": "GET", "num_requests": 10, "response_time_percentile_0.95": 50}))
        .collect();
    let body = json!({"uuid": uuid, "measurement": {"fields": {"requestStats": {"stats": rows}}}});
    let answer = call(&gw, TOKEN_A, "POST", "/apiv0.1/events/commit", Some(&body));
    assert_eq!(
        answer.status,
        200,
        "{}",
        &answer.body[..answer.body.len().min(500)]
    );
    assert!(answer.body.len() < 200_000, "{} bytes", answer.body.len());
    let v = answer.json()["verdict"].clone();
    assert_eq!(v["checks"].as_array().unwrap().len(), 100);
    let description = answer.json()["data"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    // p95 50 fails the checks p95 < 0 to p95 < 50: five named, the rest counted.
    assert!(
        description.contains("FAILED 51 of 100 checks"),
        "{description}"
    );
    assert!(description.ends_with("; and 46 more"), "{description}");
    // Its points reach InfluxDB: one per check, and the event.
    wait_until(
        std::time::Duration::from_secs(30),
        "the verdict's points in InfluxDB",
        || series_of(&influx, "load_testing_checks", &uuid).len() == 100,
    );
    let view = call(&gw, TOKEN_A, "GET", &format!("/apiv0.1/runs/{uuid}"), None);
    assert_eq!(view.status, 200);
    assert!(view.body.len() < 2_000_000, "{} bytes", view.body.len());
}

/// A result appended and acknowledged but lost before it was synced (a power loss: here the
/// results' segments cut back to their headers after a kill -9) comes back from the log at
/// the next start: the report still reads, and the next run still compares with it.
#[test]
fn a_result_lost_before_it_was_synced_comes_back_from_the_log() {
    let influx = Influxd::start();
    let mut gw = Gateway::start(&config(&influx, ""));
    let checked =
        json!({"tags": {"test": "shop"}, "thresholds": {"/checkout": ["p95 <= 1.2x baseline"]}});
    let first = register(&gw, TOKEN_A, checked.clone());
    let answer = commit(
        &gw,
        TOKEN_A,
        &first,
        vec![row("/checkout", "GET", 400.0, 0)],
    );
    assert_eq!(answer["verdict"]["passed"], true, "{answer}");
    gw.kill();
    let results = gw.dir.join("data/results");
    let mut cut = 0;
    for entry in std::fs::read_dir(&results).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let header = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert!(bytes.len() > header, "{} holds the result", path.display());
        std::fs::write(&path, &bytes[..header]).unwrap();
        cut += 1;
    }
    assert_eq!(cut, 1, "one segment of results");
    // A result file of the layout before segments is not read, and the start says so.
    std::fs::write(
        results.join("00000000-0000-4000-8000-000000000001.json"),
        b"{}",
    )
    .unwrap();
    gw.restart();
    assert!(
        gw.log()
            .contains("1 files *.json of an earlier layout (a file per result) are not read"),
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains(&format!(
            "the result of run {first} was missing from storage.dir/results"
        )),
        "{}",
        gw.log()
    );
    let view = call(&gw, TOKEN_A, "GET", &format!("/apiv0.1/runs/{first}"), None);
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view["verdict"]["passed"], true, "{view}");
    assert_eq!(view["result"]["rows"][0]["figures"]["p95"], 400.0, "{view}");
    let second = register(&gw, TOKEN_A, checked);
    let answer = commit(
        &gw,
        TOKEN_A,
        &second,
        vec![row("/checkout", "GET", 500.0, 0)],
    );
    assert_eq!(answer["verdict"]["baseline"], first.as_str(), "{answer}");
    assert_eq!(
        answer["verdict"]["passed"], false,
        "500 > 1.2 × 400: {answer}"
    );
}
