//! The command line and the configuration file, through the real binary.

use crate::support::{Gateway, get};

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
    assert!(
        gw.log()
            .contains(&format!("listening on http://{}", gw.addr))
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
