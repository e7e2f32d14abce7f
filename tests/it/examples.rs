//! The curl examples in `scripts/examples/`, as the README shows them: each script run
//! with bash against the real binary (with a token) and a real `influxd`, and what they
//! wrote read back from InfluxDB.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use serde_json::Value;

use crate::support::{ConsumerToml, Gateway, Influxd, wait_until};

const TOKEN: &str = "examples-token-0123456789abcdef";

/// Runs `scripts/examples/<script> ARGS` with bash, pointed at `gateway`, with `token`
/// (when given) in `METRICS_CONSUMER_TOKEN`.
fn run(gateway: &Gateway, token: Option<&str>, script: &str, args: &[&str]) -> Output {
    run_at(&format!("http://{}", gateway.addr), token, script, args)
}

/// `run` with `METRICS_CONSUMER_URL` set to `url`.
fn run_at(url: &str, token: Option<&str>, script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/examples")
        .join(script);
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .args(args)
        .env("METRICS_CONSUMER_URL", url)
        .env_remove("METRICS_CONSUMER_TOKEN")
        .stdin(Stdio::null());
    if let Some(token) = token {
        cmd.env("METRICS_CONSUMER_TOKEN", token);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", path.display()))
}

fn shown(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The script succeeded and printed one JSON answer; returns it.
fn answer(out: &Output) -> Value {
    assert!(out.status.success(), "{}", shown(out));
    json_of(out)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON answer ({e}): {}", shown(out)))
}

/// The script failed the way `curl --fail-with-body` does on an HTTP error (exit 22),
/// and printed the gateway's error answer; returns its code.
fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(22), "{}", shown(out));
    json_of(out)["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn with_uuid(
    rows: Vec<serde_json::Map<String, Value>>,
    uuid: &str,
) -> Vec<serde_json::Map<String, Value>> {
    rows.into_iter()
        .filter(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid))
        .collect()
}

#[test]
fn the_curl_examples_record_a_run() {
    let influx = Influxd::start();
    // Frequent heartbeats, so the one after progress.sh shows its fields.
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[auth]\ntokens = [\"{TOKEN}\"]\n[jobs]\nheartbeat_interval = \"200ms\"\n"
            ))
            .toml(),
    );
    let token = Some(TOKEN);

    let out = run(&gw, token, "register.sh", &[]);
    let registered = answer(&out);
    let uuid = registered["uuid"]
        .as_str()
        .expect("register answers a uuid");
    assert_eq!(registered["data"]["uuid"], uuid);
    assert_eq!(registered["delivered"], true, "{registered}");
    let hint = String::from_utf8_lossy(&out.stderr);
    assert!(hint.contains(&format!("export RUN={uuid}")), "{hint}");

    let progress = answer(&run(&gw, token, "progress.sh", &[uuid]));
    assert_eq!(progress["uuid"], uuid, "{progress}");
    wait_until(
        Duration::from_secs(10),
        "a heartbeat carries the fields progress.sh sent",
        || {
            with_uuid(influx.series("runs", "load_testing"), uuid)
                .iter()
                .any(|r| {
                    let field = |name: &str| r.get(name).and_then(Value::as_f64);
                    field("rps") == Some(41.5) && field("clients") == Some(50.0)
                })
        },
    );

    let running = answer(&run(&gw, token, "isrunning.sh", &[]));
    assert_eq!(running[uuid], true, "{running}");

    let committed = answer(&run(&gw, token, "commit.sh", &[uuid]));
    assert_eq!(committed["uuid"], uuid);
    assert_eq!(committed["delivered"], true, "{committed}");

    let running = answer(&run(&gw, token, "isrunning.sh", &[]));
    assert_eq!(running[uuid], false, "{running}");

    let states = answer(&run(&gw, token, "states.sh", &[]));
    assert_eq!(states["version"], env!("CARGO_PKG_VERSION"), "{states}");

    // Errors are printed as the gateway answered them, and the script fails.
    assert_eq!(
        refused(&run(&gw, token, "commit.sh", &[uuid])),
        "already_committed"
    );
    let late = run(&gw, token, "progress.sh", &[uuid]);
    assert_eq!(late.status.code(), Some(22), "{}", shown(&late));
    assert!(json_of(&late)["error"].is_string(), "{}", shown(&late));
    assert_eq!(
        refused(&run(&gw, None, "isrunning.sh", &[])),
        "unauthorized"
    );
    assert_eq!(
        refused(&run(
            &gw,
            Some("wrong-token-0123456789abcdef"),
            "states.sh",
            &[]
        )),
        "unauthorized"
    );
    for script in ["progress.sh", "commit.sh"] {
        let out = run(&gw, token, script, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage:"),
            "{}",
            shown(&out)
        );
    }

    // What the scripts sent is in InfluxDB.
    let events = with_uuid(influx.series("runs", "load_testing_events"), uuid);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|r| r.get("event").and_then(Value::as_str))
        .collect();
    assert_eq!(kinds, ["started", "finished"], "{events:?}");
    let result = with_uuid(influx.series("runs", "load_testing_result"), uuid);
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["total_rps"], 8.5);
    let rows = with_uuid(influx.series("runs", "load_testing_request_stats"), uuid);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "/items");
    assert_eq!(rows[0]["num_requests"], 120.0);
}

/// A URL with trailing slashes works for every script, and commit.sh records the file that
/// `locust --json-file` writes, passed as the README shows ("$(cat FILE)") or as @FILE.
#[test]
fn the_examples_take_a_trailing_slash_and_locust_json_files() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/locust-2.47-stats.json");
    let text = std::fs::read_to_string(&file).expect("the Locust file");
    for (url, stats) in [
        (format!("http://{}/", gw.addr), text.clone()),
        (
            format!("http://{}//", gw.addr),
            format!("@{}", file.display()),
        ),
    ] {
        let registered = answer(&run_at(&url, None, "register.sh", &[]));
        let uuid = registered["uuid"].as_str().expect("a uuid").to_string();
        answer(&run_at(&url, None, "progress.sh", &[&uuid]));
        assert_eq!(
            answer(&run_at(&url, None, "isrunning.sh", &[]))[&uuid],
            true
        );
        answer(&run_at(&url, None, "states.sh", &[]));
        let committed = answer(&run_at(&url, None, "commit.sh", &[&uuid, &stats]));
        assert!(
            committed["data"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("(2 endpoint rows)")),
            "{committed}"
        );
        let mut names: Vec<String> =
            with_uuid(influx.series("runs", "load_testing_request_stats"), &uuid)
                .iter()
                .map(|r| r["name"].as_str().unwrap_or_default().to_string())
                .collect();
        names.sort();
        assert_eq!(names, ["/items?x=1", "/orders"], "{url}");
    }
}
