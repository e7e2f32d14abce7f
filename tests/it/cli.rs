//! The command line and the configuration file, through the real binary.

use std::ffi::OsStr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Gateway, TempDir, get, request};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let out = Gateway::spawn_with(&["--version"], None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("metrics-consumer {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Gateway::spawn_with(&["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--config",
        "--listen",
        "--log-level",
        "--check-config",
        "CONSUMER_AUTH_TOKENS",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
    let out = Gateway::spawn_with(&["--bogus"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bogus"), "{}", stderr(&out));
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let out = Gateway::spawn_with(
        &["--check-config"],
        Some(
            "[influxdb]\npassword = \"hunter2-secret\"\n[auth]\ntokens = [\"0123456789abcdef-token\"]\n",
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configuration is valid"));
    assert!(text.contains("heartbeat_interval = \"15s\""), "{text}");
    assert!(
        !text.contains("hunter2-secret") && !text.contains("0123456789abcdef-token"),
        "{text}"
    );
    assert!(text.contains("<redacted>"));
}

#[test]
fn a_bad_config_names_the_file_and_the_key() {
    for (config, expected) in [
        ("[server]\nworkers = 0\n", "server.workers"),
        (
            "[jobs]\nmax_age = \"forever\"\n",
            "invalid duration \"forever\"",
        ),
        ("[influxdb]\ncolour = \"blue\"\n", "unknown field `colour`"),
        ("[server\n", "consumer.toml"),
    ] {
        let out = Gateway::spawn_with(&["--check-config"], Some(config));
        assert_eq!(out.status.code(), Some(2), "{config}");
        let err = stderr(&out);
        assert!(
            err.contains("consumer.toml") && err.contains(expected),
            "{config}: {err}"
        );
    }
    let out = Gateway::spawn_with(&["--config", "/nonexistent/consumer.toml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/consumer.toml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn port_zero_is_logged_and_serves_without_influxdb() {
    // Nothing listens on port 9 (discard): the gateway still starts and answers ping.
    let gw = Gateway::start(
        "[server]\nlisten = \"127.0.0.1:0\"\n[influxdb]\nurl = \"http://127.0.0.1:9\"\n",
    );
    assert_ne!(gw.addr.port(), 0);
    assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
    let log = gw.log();
    assert!(log.contains(&format!("listening on http://{}", gw.addr)));
    // Warnings name the port bound, not the 0 asked for.
    assert!(
        log.contains(&format!("every client on {} may write", gw.addr)),
        "{log}"
    );
    // The start line says what waits: records for InfluxDB, dead letters; counted as
    // `name: n`, which reads right for one as for many.
    assert!(
        log.contains(
            "running jobs restored: 0, records waiting for InfluxDB: 0 (0 bytes), dead letters: 0"
        ),
        "{log}"
    );
}

#[test]
fn sigterm_stops_gracefully() {
    let mut gw = Gateway::start(
        "[server]\nlisten = \"127.0.0.1:0\"\n[influxdb]\nurl = \"http://127.0.0.1:9\"\n",
    );
    gw.terminate();
    let status = gw
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}: {}", gw.log());
}

/// Runs the binary with `args` and `env` in a fresh directory holding `config` (when given)
/// as `consumer.toml`; killed and failed after 30 s.
fn run_with_env(args: &[&str], config: Option<&str>, env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new("cli-env");
    if let Some(config) = config {
        std::fs::write(dir.join("consumer.toml"), config).unwrap();
    }
    let mut cmd = Gateway::command(dir.path());
    cmd.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the gateway binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("metrics-consumer {args:?} still ran after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn capital_v_prints_the_version_and_help_lists_every_variable() {
    let out = Gateway::spawn_with(&["-V"], None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("metrics-consumer {}", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8_lossy(&Gateway::spawn_with(&["--help"], None).stdout).into_owned();
    for variable in [
        "CONSUMER_SERVER_LISTEN",
        "CONSUMER_SERVER_MAX_BODY_BYTES",
        "CONSUMER_DELIVERY_ACKNOWLEDGE",
        "CONSUMER_INFLUXDB_URL",
        "CONSUMER_STORAGE_DIR",
        "CONSUMER_LOG_LEVEL",
    ] {
        assert!(help.contains(variable), "--help lists {variable}: {help}");
    }
}

#[test]
fn check_config_without_a_file_says_the_defaults_are_shown() {
    let out = Gateway::spawn_with(&["--check-config"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("# no configuration file consumer.toml was found")
            && text.contains("built-in defaults"),
        "{text}"
    );
    assert!(!text.contains("configuration is valid\n"), "{text}");
    // Named with --config, a missing file is an error, --check-config or not.
    let out = Gateway::spawn_with(&["--check-config", "--config", "absent.toml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("absent.toml: cannot read the configuration file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_flag_or_variable_is_blamed_on_it_not_on_the_file() {
    let file = Some("[log]\nlevel = \"info\"\n");
    let out = run_with_env(&["--check-config", "--log-level", "loud"], file, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("metrics-consumer: --log-level: \"loud\" is not one of"),
        "{}",
        stderr(&out)
    );
    for (variable, value, expected) in [
        (
            "CONSUMER_AUTH_TOKENS",
            "too-short",
            "metrics-consumer: CONSUMER_AUTH_TOKENS: token #1 is not usable",
        ),
        (
            "CONSUMER_LOG_LEVEL",
            "loud",
            "metrics-consumer: CONSUMER_LOG_LEVEL (sets log.level): \"loud\"",
        ),
        (
            "CONSUMER_SERVER_LISTN",
            "127.0.0.1:0",
            "metrics-consumer: CONSUMER_SERVER_LISTN: no such setting; did you mean CONSUMER_SERVER_LISTEN?",
        ),
        (
            "CONSUMER_JOBS_HEARTBEAT_INTERVAL",
            "15",
            "metrics-consumer: CONSUMER_JOBS_HEARTBEAT_INTERVAL (sets jobs.heartbeat_interval): 15 has no unit",
        ),
    ] {
        let out = run_with_env(&["--check-config"], file, &[(variable, value)]);
        assert_eq!(out.status.code(), Some(2), "{variable}");
        assert!(
            stderr(&out).starts_with(expected) && !stderr(&out).contains("consumer.toml"),
            "{variable}={value}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_duration_without_a_unit_in_the_file_says_what_to_write() {
    let out = Gateway::spawn_with(
        &["--check-config"],
        Some("[jobs]\nheartbeat_interval = 15\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("consumer.toml")
            && stderr(&out).contains("15 has no unit")
            && stderr(&out).contains("\"15s\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tls_errors_name_the_configuration_file() {
    let out = Gateway::spawn_with(
        &["--check-config"],
        Some("[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("metrics-consumer: consumer.toml: server.tls_cert: ./cert.pem"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn credentials_that_can_never_authenticate_are_warned_about() {
    let v2 = "[server]\nlisten = \"127.0.0.1:0\"\n[influxdb]\nurl = \"http://127.0.0.1:9\"\napi = \"v2\"\norg = \"lab\"\nbucket = \"runs\"\n";
    let out = Gateway::spawn_with(&["--check-config"], Some(v2));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: consumer.toml: influxdb.api: \"v2\" without a token"),
        "{}",
        stderr(&out)
    );
    let out = Gateway::spawn_with(
        &["--check-config"],
        Some("[influxdb]\nusername = \"loadtests\"\n"),
    );
    assert!(
        stderr(&out).contains("influxdb.username: \"loadtests\" without a password"),
        "{}",
        stderr(&out)
    );
    // And at start, in the log.
    let gw = Gateway::start(v2);
    assert!(
        gw.log().contains("[WARN]") && gw.log().contains("\"v2\" without a token"),
        "{}",
        gw.log()
    );
}

#[test]
fn the_environment_alone_configures_a_gateway() {
    let token = "env-token-0123456789abcdef";
    let mut gw = Gateway::start_in_with_env(
        TempDir::new("cli-env-only"),
        "",
        &[
            ("CONSUMER_SERVER_LISTEN", OsStr::new("127.0.0.1:0")),
            ("CONSUMER_INFLUXDB_URL", OsStr::new("http://127.0.0.1:9")),
            ("CONSUMER_AUTH_TOKENS", OsStr::new(token)),
            ("CONSUMER_JOBS_HEARTBEAT_INTERVAL", OsStr::new("1s")),
            ("CONSUMER_STORAGE_DIR", OsStr::new("./from-env")),
        ],
    );
    assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
    let path = "/apiv0.1/events/register";
    let body = r#"{"host": "lg-1", "measurement": {"fields": {"users": 1}}}"#;
    assert_eq!(request(gw.addr, "POST", path, &[], Some(body)).status, 401);
    let bearer = format!("Bearer {token}");
    let answer = request(
        gw.addr,
        "POST",
        path,
        &[("Authorization", &bearer)],
        Some(body),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        gw.dir.join("from-env/log").is_dir(),
        "storage.dir from the environment"
    );
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}
