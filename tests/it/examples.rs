//! The curl examples in `scripts/examples/`, as the README shows them: each script run
//! with bash against the real binary (with a token) and a real `influxd`, and what they
//! wrote read back from InfluxDB; and a CI job's use of them: checks sent by register.sh,
//! commit.sh's exit code on the verdict, with python3 or jq reading it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use serde_json::Value;

use crate::support::{ConsumerToml, Gateway, Influxd, TempDir, get, wait_until};

const TOKEN: &str = "examples-token-0123456789abcdef";

/// Runs `scripts/examples/<script> ARGS` with bash, pointed at `gateway`, with `token`
/// (when given) in `METRICS_CONSUMER_TOKEN`.
fn run(gateway: &Gateway, token: Option<&str>, script: &str, args: &[&str]) -> Output {
    run_at(&format!("http://{}", gateway.addr), token, script, args)
}

/// `run` with `METRICS_CONSUMER_URL` set to `url`.
fn run_at(url: &str, token: Option<&str>, script: &str, args: &[&str]) -> Output {
    run_with(url, token, script, args, &[])
}

/// `run_at` with the variables `env` set too (`METRICS_CONSUMER_THRESHOLDS`, `PATH`).
fn run_with(
    url: &str,
    token: Option<&str>,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/examples")
        .join(script);
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .args(args)
        .env("METRICS_CONSUMER_URL", url)
        .env_remove("METRICS_CONSUMER_TOKEN")
        .env_remove("METRICS_CONSUMER_THRESHOLDS")
        .envs(env.iter().copied())
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

/// Where `tool` is on this machine's PATH; the test fails saying what installs it when it is
/// not.
fn which(tool: &str, installs: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not found: {installs}"))
}

/// A directory to be the whole PATH of commit.sh: links to bash and the tools the script
/// needs, with jq or without (python3 never).
fn path_without_python(dir: &TempDir, with_jq: bool) -> String {
    let mut tools = vec![
        ("bash", "apt-get install bash"),
        ("curl", "apt-get install curl"),
        ("gzip", "apt-get install gzip"),
        ("cat", "apt-get install coreutils"),
    ];
    if with_jq {
        tools.push(("jq", "apt-get install jq"));
    }
    for (tool, installs) in tools {
        let link = dir.join(tool);
        if !link.exists() {
            std::os::unix::fs::symlink(which(tool, installs), &link)
                .unwrap_or_else(|e| panic!("cannot link {}: {e}", link.display()));
        }
    }
    if !with_jq {
        let _ = std::fs::remove_file(dir.join("jq"));
    }
    dir.path().display().to_string()
}

/// A CI job with the scripts: register.sh sends the run's checks (METRICS_CONSUMER_THRESHOLDS),
/// commit.sh prints the verdict and exits 0 when it passed and 1 when it failed, with the
/// failed check on stderr and the answer alone on stdout; python3 reads the verdict, or jq
/// without python3, and neither is exit 2 before anything is sent.
#[test]
fn commit_sh_exits_on_the_verdict() {
    let influx = Influxd::start();
    let gw = Gateway::start(&ConsumerToml::new(&influx.url, "runs").toml());
    let url = format!("http://{}", gw.addr);
    // commit.sh's example statistics: GET /items, 120 requests, 2 of them failed.
    let register = |thresholds: &str| {
        let out = run_with(
            &url,
            None,
            "register.sh",
            &[],
            &[("METRICS_CONSUMER_THRESHOLDS", thresholds)],
        );
        answer(&out)["uuid"]
            .as_str()
            .expect("register answers a uuid")
            .to_string()
    };
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).to_string();

    // Passed: exit 0, a line on stderr; the run's checks are those register.sh sent.
    let uuid = register(r#"{"/items": ["requests > 100"]}"#);
    let out = run_at(&url, None, "commit.sh", &[&uuid]);
    let committed = answer(&out);
    assert_eq!(committed["verdict"]["passed"], true, "{committed}");
    assert!(
        stderr(&out).contains(&format!("run {uuid} passed its checks: 1 of 1 passed")),
        "{}",
        shown(&out)
    );
    let run = get(gw.addr, &format!("/apiv0.1/runs/{uuid}"));
    assert_eq!(run.status, 200, "{}", run.body);
    let checks = &run.json()["verdict"]["checks"];
    assert_eq!(checks[0]["check"], "requests > 100", "{checks}");
    assert_eq!(checks[0]["source"], "register", "{checks}");

    // Failed: exit 1, the failed check on stderr, the answer alone on stdout.
    let uuid = register(r#"{"/items": ["requests < 100", "failures < 5"]}"#);
    let out = run_at(&url, None, "commit.sh", &[&uuid]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_eq!(json_of(&out)["verdict"]["passed"], false, "{}", shown(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!("run {uuid} FAILED its checks: 1 of 2 failed")),
        "{said}"
    );
    let failed: Vec<&str> = said.lines().filter(|l| l.contains("failed: ")).collect();
    assert_eq!(failed.len(), 1, "{said}");
    assert!(
        failed[0].contains("failed: GET /items: requests < 100: value 120, limit 100"),
        "{said}"
    );

    // The same with jq alone; and without either, nothing is sent: the run stays open.
    let tools = TempDir::new("examples-path");
    let uuid = register(r#"{"/items": ["requests < 100"]}"#);
    let bare = path_without_python(&tools, false);
    let out = run_with(&url, None, "commit.sh", &[&uuid], &[("PATH", &bare)]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        stderr(&out).contains("neither python3 nor jq found"),
        "{}",
        shown(&out)
    );
    assert_eq!(
        answer(&run_at(&url, None, "isrunning.sh", &[]))[&uuid],
        true
    );
    let with_jq = path_without_python(&tools, true);
    let out = run_with(&url, None, "commit.sh", &[&uuid], &[("PATH", &with_jq)]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let with_python = run_at(&url, None, "commit.sh", &[&uuid]);
    assert_eq!(
        refused(&with_python),
        "already_committed",
        "committed once, by the jq run"
    );
    assert!(
        stderr(&out).contains("failed: GET /items: requests < 100: value 120, limit 100"),
        "{}",
        shown(&out)
    );

    // register.sh with checks in METRICS_CONSUMER_THRESHOLDS, and `args` (a body).
    let register_with = |checks: &str, args: &[&str]| {
        run_with(
            &url,
            None,
            "register.sh",
            args,
            &[("METRICS_CONSUMER_THRESHOLDS", checks)],
        )
    };
    // A malformed check: register.sh fails with the gateway's answer naming it.
    let out = register_with(r#"{"Aggregated": ["p96 < 1"]}"#, &[]);
    assert_eq!(refused(&out), "invalid_check");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("p96"),
        "{}",
        shown(&out)
    );

    // Checks in the variable and in the body: one would silently replace the other, so
    // register.sh sends nothing and says why.
    let checks = r#"{"Aggregated": ["fail_ratio < 1%"]}"#;
    let out = register_with(
        checks,
        &[r#"{"host": "lg-1", "thresholds": {"Aggregated": ["p95 < 1s"]}}"#],
    );
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(out.stdout.is_empty(), "nothing sent: {}", shown(&out));
    assert!(
        stderr(&out).contains("has \"thresholds\" of its own"),
        "{}",
        shown(&out)
    );
    // The word elsewhere in the body (a tag's value) is no checks of its own.
    let out = register_with(
        checks,
        &[r#"{"host": "lg-1", "measurement": {"tags": {"mode": "thresholds"}}}"#],
    );
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
}
