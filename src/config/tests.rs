//! The configuration's tests through its one entry point, `load`: files, variables and flags
//! in, settings or an error naming the key and what set it out.

use super::error::Source;
use super::*;
use std::ffi::OsString;
use std::fs;
use std::time::Duration;

/// Overrides with these environment variables only.
fn env(vars: &[(&str, &str)]) -> Overrides {
    Overrides {
        env: vars
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect(),
        ..Overrides::default()
    }
}

/// A fresh temporary directory (`tempfile`'s, removed when dropped), `name` in its name.
fn fresh_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mc-{name}-"))
        .tempdir()
        .expect("create the test directory")
}

/// Loads `text` as `consumer.toml` in a directory of its own, with `files` (name, content)
/// beside it.
fn load_in_dir(
    text: &str,
    files: &[(&str, &str)],
    overrides: Overrides,
) -> Result<Settings, ConfigError> {
    let temp = fresh_dir("config");
    let dir = temp.path();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
    let file = dir.join("consumer.toml");
    fs::write(&file, text).unwrap();
    load(&file, true, overrides)
}

/// The whole error, origin and message, of loading `text` with `overrides`.
fn load_error(text: &str, overrides: Overrides) -> String {
    load_in_dir(text, &[], overrides)
        .expect_err("the configuration should be refused")
        .to_string()
}

fn load_text(text: &str, overrides: Overrides) -> Result<Settings, String> {
    load_in_dir(text, &[], overrides).map_err(|e| e.to_string())
}

/// Loads `text` with `files` (name, content) beside it.
fn load_with_files(text: &str, files: &[(&str, &str)]) -> Result<Settings, String> {
    load_in_dir(text, files, Overrides::default()).map_err(|e| e.to_string())
}

const A: &str = "aaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccc";

#[test]
fn tokens_have_names_and_an_equal_share_of_max_running_and_of_the_spool() {
    let text = format!(
        "[jobs]\nmax_running = 2000\n[storage]\nmax_spool_bytes = 4000\n[auth]\ntokens = [\"{A}\"]\ntoken_files = [\"tokens\"]\n\
         [[auth.token]]\nname = \"ci\"\ntoken_file = \"ci.token\"\nmax_running = 50\nrequests_per_second = 5.5\nmax_spool_bytes = 1600\n"
    );
    let s = load_with_files(
        &text,
        &[
            ("tokens", &format!("# team tokens\nteam-a:{B}\n\n{C}\n")),
            ("ci.token", &format!("{}\n", "d".repeat(20))),
        ],
    )
    .unwrap();
    let shown: Vec<(&str, usize, f64)> = s
        .clients
        .iter()
        .map(|c| (c.name.as_str(), c.max_running, c.requests_per_second))
        .collect();
    assert_eq!(
        shown,
        [
            ("token#42492da06234", 500, 0.0),
            ("team-a", 500, 0.0),
            ("token#2bc3a47fe2de", 500, 0.0),
            ("ci", 50, 5.5),
        ]
    );
    assert_eq!(s.clients[1].token, B);
    assert_eq!(s.clients[3].token, "d".repeat(20));
    let spool: Vec<u64> = s.clients.iter().map(|c| c.max_spool_bytes).collect();
    assert_eq!(
        spool,
        [800, 800, 800, 1600],
        "its own, or an equal part of what those leave"
    );
    // The dead letters are shared out as the log is (the default bound, 256 MiB).
    let letters = super::dead_letter_shares(&s.clients, &s.config);
    let part = |name: &str| letters[name];
    let dead = 256u64 << 20;
    assert_eq!(
        [
            part("token#42492da06234"),
            part("team-a"),
            part("token#2bc3a47fe2de"),
            part("ci")
        ],
        [dead / 5, dead / 5, dead / 5, dead * 2 / 5]
    );
    let listed = s.redacted_toml();
    assert!(
        listed.contains("#   team-a: max_running 500, max_spool_bytes 800, no request rate limit"),
        "{listed}"
    );
    assert!(
        listed.contains("#   ci: max_running 50, max_spool_bytes 1600, 5.5 requests per second"),
        "{listed}"
    );
    for token in [A, B, C] {
        assert!(!listed.contains(token), "{listed}");
    }
    // One token alone has all of jobs.max_running.
    let one = load_text(
        &format!("[jobs]\nmax_running = 2000\n[auth]\ntokens = [\"{A}\"]\n"),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(one.clients[0].max_running, 2000);
    assert_eq!(
        one.clients[0].max_spool_bytes,
        1 << 30,
        "and all of the spool"
    );
    assert_eq!(
        super::dead_letter_shares(&one.clients, &one.config)["token#42492da06234"],
        256 << 20,
        "and all of the dead letters"
    );
    // A share never holds less than one small letter (two blocks of 4 KiB).
    let many = load_text(
        &format!(
            "[storage]\nmax_dead_letter_bytes = 10000\n[auth]\ntokens = [\"{A}\", \"{B}\", \"{C}\"]\n"
        ),
        Overrides::default(),
    )
    .unwrap();
    assert!(
        super::dead_letter_shares(&many.clients, &many.config)
            .values()
            .all(|&share| share == 8192)
    );
}

/// A run belongs to its token's name: a token listed without one keeps it wherever the token
/// moves in its list (a rotation removes the token before it), and two tokens never share one.
#[test]
fn a_token_listed_without_a_name_keeps_its_name_wherever_it_moves() {
    let names = |list: &str| -> Vec<String> {
        let s =
            load_with_files("[auth]\ntoken_files = [\"tokens\"]\n", &[("tokens", list)]).unwrap();
        s.clients.into_iter().map(|c| c.name).collect()
    };
    let before = names(&format!("{A}\n{C}\n"));
    // Python: hashlib.sha256(b"a" * 20).hexdigest()[:12]
    assert_eq!(before[0], "token#42492da06234");
    assert_ne!(before[0], before[1]);
    assert_eq!(
        names(&format!("{C}\n")),
        [before[1].clone()],
        "the first one removed"
    );
    assert_eq!(
        names(&format!("# moved\n{C}\n\n{A}\n")),
        [before[1].clone(), before[0].clone()]
    );
    let twice = load_with_files(
        "[auth]\ntoken_files = [\"tokens\"]\n",
        &[("tokens", &format!("{A}\n{A}\n"))],
    )
    .unwrap_err();
    assert!(twice.contains("are the same token"), "{twice}");
}

/// The same token file, written another way in the configuration, is the same place: its
/// tokens keep their names, and with them their runs.
#[test]
fn a_token_file_written_another_way_keeps_its_tokens_names() {
    let name = |path: &str| {
        load_with_files(
            &format!("[auth]\ntoken_files = [\"{path}\"]\n"),
            &[("tokens", &format!("{A}\n"))],
        )
        .unwrap()
        .clients[0]
            .name
            .clone()
    };
    assert_eq!(name("./tokens"), name("tokens"));
}

#[test]
fn token_names_and_tables_that_cannot_work_are_refused() {
    for (text, files, expected) in [
        (
            format!("[auth]\ntokens = [\"{A}\"]\n[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\n"),
            vec![],
            "\"token#42492da06234\" and \"x\" are the same token",
        ),
        (
            format!(
                "[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\n[[auth.token]]\nname = \"x\"\ntoken = \"{B}\"\n"
            ),
            vec![],
            "two tokens are named \"x\"",
        ),
        (
            format!("[[auth.token]]\nname = \"team a\"\ntoken = \"{A}\"\n"),
            vec![],
            "auth.token[1].name: \"team a\" is not usable",
        ),
        (
            format!("[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\ntoken_file = \"f\"\n"),
            vec![],
            "auth.token[1] (x): set one of token and token_file",
        ),
        (
            "[[auth.token]]\nname = \"x\"\ntoken = \"short\"\n".to_string(),
            vec![],
            "auth.token[1] (x): the token is not usable",
        ),
        (
            format!("[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\nrequests_per_second = -1\n"),
            vec![],
            "requests_per_second (x): must be 0 (no limit) or more",
        ),
        (
            "[auth]\ntoken_files = [\"t\"]\n".to_string(),
            vec![("t", format!("bad name!:{A}\n"))],
            "line 1: the name is not usable",
        ),
        (
            "[auth]\nmax_failures = 0\n".to_string(),
            vec![],
            "auth.max_failures: must be at least 1",
        ),
        (
            format!("[[auth.token]]\ntoken = \"{A}\"\n"),
            vec![],
            "auth.token[1]: every [[auth.token]] needs a name",
        ),
        (
            format!(
                "[storage]\nmax_spool_bytes = 1000\n[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\nmax_spool_bytes = 1001\n"
            ),
            vec![],
            "auth.token[1].max_spool_bytes (x): 1001 is more than storage.max_spool_bytes (1000)",
        ),
    ] {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
        let err = load_with_files(&text, &files).expect_err(&text);
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
}

fn check_err(text: &str, expected: &str) {
    let err = load_text(text, Overrides::default()).expect_err("config should be refused");
    assert!(
        err.contains(expected),
        "error {err:?} should contain {expected:?}"
    );
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let s = load_text("", Overrides::default()).unwrap();
    assert_eq!(s.listen, "127.0.0.1:3000".parse().unwrap());
    assert_eq!(s.config.server.workers, 16);
    assert_eq!(s.config.jobs.heartbeat_interval.0, Duration::from_secs(15));
    assert_eq!(s.config.influxdb.api, Api::V1);
    assert_eq!(s.level, log::LevelFilter::Info);
}

#[test]
fn the_shipped_file_loads_and_lists_every_key() {
    let shipped = include_str!("../../consumer.toml");
    let s = load_text(shipped, Overrides::default()).unwrap();
    assert_eq!(s.listen, "127.0.0.1:3000".parse().unwrap());
    // Every key of the default configuration appears in the shipped file.
    let defaults: toml::Table =
        toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
    let shipped: toml::Table = toml::from_str(shipped).unwrap();
    for (table, keys) in &defaults {
        let keys = keys.as_table().unwrap();
        for key in keys.keys() {
            if table == "auth" && key == "token" {
                // [[auth.token]] tables are shown commented out: there are none by default.
                assert!(include_str!("../../consumer.toml").contains("# [[auth.token]]"));
                continue;
            }
            if table == "verdict" && key == "rule" {
                // So are [[verdict.rule]] tables; the one shown reads as a rule.
                let text = include_str!("../../consumer.toml");
                let at = text
                    .find("# [[verdict.rule]]")
                    .expect("consumer.toml shows a rule");
                let rule: String = text[at..]
                    .lines()
                    .map(|l| l.trim_start_matches('#').trim_start())
                    .filter(|l| !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n");
                let table: toml::Table = toml::from_str(&rule).unwrap();
                assert!(
                    table["verdict"]["rule"]
                        .as_array()
                        .is_some_and(|r| r.len() == 1)
                );
                let loaded = load_text(&rule, Overrides::default()).unwrap();
                assert_eq!(loaded.config.verdict.rules.len(), 1);
                continue;
            }
            assert!(
                shipped.get(table).and_then(|t| t.get(key)).is_some(),
                "consumer.toml lacks [{table}] {key}"
            );
        }
    }
}

#[test]
fn errors_name_the_key() {
    check_err("[server]\nlisten = \"nowhere\"\n", "server.listen");
    check_err("[server]\nworkers = 0\n", "server.workers");
    check_err(
        "[server]\nheader_timeout = \"10\"\n",
        "10 has no unit: a duration is a string with one, e.g. \"10s\"",
    );
    check_err("[server]\nbogus = 1\n", "unknown field `bogus`");
    check_err("[influxdb]\napi = \"v4\"\n", "unknown variant `v4`");
    check_err(
        "[influxdb]\napi = \"v3\"\ndatabase = \"\"\n",
        "influxdb.database: must be set for api = \"v3\"",
    );
    check_err(
        "[influxdb]\nurl = \"http://u:p@h:8086\"\n",
        "influxdb.url: must not contain credentials",
    );
    check_err(
        "[influxdb]\napi = \"v2\"\n",
        "influxdb.org, influxdb.bucket",
    );
    check_err("[log]\nlevel = \"loud\"\n", "log.level");
    check_err(
        "[jobs]\nheartbeat_interval = \"10ms\"\n",
        "jobs.heartbeat_interval",
    );
    check_err(
        "[delivery]\nlinger = \"2s\"\n",
        "delivery.linger: must be at most \"1s\"",
    );
    check_err(
        "[server]\ntls_cert = \"a.pem\"\n",
        "server.tls_cert: set without server.tls_key",
    );
    check_err(
        "[influxdb]\npassword_file = \"missing\"\n",
        "influxdb.password_file: cannot read",
    );
    check_err("[auth]\ntokens = [\"short\"]\n", "token #1 is not usable");
    check_err(
        "[server]\nmax_body_bytes = 2000000\nmax_inflated_bytes = 1000000\n",
        "server.max_inflated_bytes: must be between server.max_body_bytes (2000000)",
    );
    check_err(
        "[server]\nmax_body_bytes_in_flight = 16777216\n",
        "server.max_body_bytes_in_flight: 16777216 is less than server.max_body_bytes + server.max_inflated_bytes (17825792)",
    );
    check_err(
        "[server]\nmax_body_bytes = 41943040\nmax_inflated_bytes = 41943040\n",
        "server.max_body_bytes_in_flight: 67108864 is less than",
    );
}

#[test]
fn environment_overrides_the_file_and_is_redacted() {
    let overrides = env(&[
        ("CONSUMER_INFLUXDB_PASSWORD", "from-env"),
        (
            "CONSUMER_AUTH_TOKENS",
            "0123456789abcdef0123, fedcba9876543210fedc",
        ),
    ]);
    let s = load_text("[influxdb]\npassword = \"from-file\"\n", overrides).unwrap();
    assert_eq!(s.config.influxdb.password, "from-env");
    assert_eq!(s.clients.len(), 2);
    assert_eq!(
        s.from_env,
        ["CONSUMER_AUTH_TOKENS", "CONSUMER_INFLUXDB_PASSWORD"]
    );
    let shown = s.redacted_toml();
    assert!(!shown.contains("from-env") && !shown.contains("0123456789abcdef0123"));
    assert!(shown.contains(secrets::REDACTED));
}

/// The variable of every key in the shipped file, set to the file's own value, loads and
/// gives that value: no key lacks a variable, and every type reads from text.
#[test]
fn every_key_of_the_shipped_file_has_a_variable() {
    let shipped: toml::Table = toml::from_str(include_str!("../../consumer.toml")).unwrap();
    let keys = env_keys();
    let mut seen = 0;
    for (section, table) in &shipped {
        for (name, value) in table.as_table().unwrap() {
            let variable = format!("CONSUMER_{}_{}", section, name).to_uppercase();
            assert!(
                keys.iter().any(|k| k.variable == variable),
                "[{section}] {name} has no variable {variable}"
            );
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if text.is_empty() {
                continue; // an empty variable counts as unset
            }
            let s = load_text("", env(&[(&variable, &text)]))
                .unwrap_or_else(|e| panic!("{variable}={text}: {e}"));
            let effective: toml::Table = toml::from_str(&s.redacted_toml()).unwrap();
            assert_eq!(
                effective[section.as_str()][name.as_str()],
                *value,
                "{variable}={text}"
            );
            assert_eq!(s.from_env, std::slice::from_ref(&variable));
            seen += 1;
        }
    }
    assert!(seen > 25, "only {seen} keys tried");
}

#[test]
fn variables_read_values_as_the_file_does() {
    let s = load_text(
        "",
        env(&[
            ("CONSUMER_SERVER_MAX_BODY_BYTES", "2_000_000"),
            ("CONSUMER_SERVER_MAX_INFLATED_BYTES", "16777216"),
            ("CONSUMER_INFLUXDB_CREATE_DATABASE", "false"),
            ("CONSUMER_DELIVERY_ACKNOWLEDGE", "influxdb"),
            ("CONSUMER_DELIVERY_LINGER", "5ms"),
            ("CONSUMER_JOBS_HEARTBEAT_INTERVAL", "\"2s\""),
            ("CONSUMER_AUTH_TOKEN_FILES", ""),
            ("CONSUMER_INFLUXDB_URL", "http://influxdb:8086"),
            ("CONSUMER_INFLUXDB_API", "v2"),
            ("CONSUMER_INFLUXDB_ORG", "lab"),
            ("CONSUMER_INFLUXDB_BUCKET", "runs"),
            ("CONSUMER_INFLUXDB_TOKEN", "secret-token"),
        ]),
    )
    .unwrap();
    let c = &s.config;
    assert_eq!(c.server.max_body_bytes, 2_000_000);
    assert!(!c.influxdb.create_database);
    assert_eq!(c.delivery.acknowledge, Acknowledge::Influxdb);
    assert_eq!(c.delivery.linger.0, Duration::from_millis(5));
    assert_eq!(c.jobs.heartbeat_interval.0, Duration::from_secs(2));
    assert_eq!(c.influxdb.url, "http://influxdb:8086");
    assert_eq!(c.influxdb.token, "secret-token");
    // The one warning: a linger does nothing with InfluxDB acknowledgements, and the variable
    // that set it is named.
    let warnings: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("CONSUMER_DELIVERY_LINGER") && warnings[0].contains("is ignored"),
        "{warnings:?}"
    );
    assert!(
        !s.from_env
            .contains(&"CONSUMER_AUTH_TOKEN_FILES".to_string())
    );

    let temp = fresh_dir("env-lists");
    let dir = temp.path();
    fs::write(dir.join("a"), "0123456789abcdef-a\n").unwrap();
    fs::write(dir.join("b"), "0123456789abcdef-b\n").unwrap();
    let file = dir.join("consumer.toml");
    let s = load(&file, false, env(&[("CONSUMER_AUTH_TOKEN_FILES", "a, b")])).unwrap();
    assert!(!s.file_found);
    assert_eq!(s.config.auth.token_files, ["a", "b"]);
    assert_eq!(
        s.clients
            .iter()
            .map(|c| c.token.as_str())
            .collect::<Vec<_>>(),
        ["0123456789abcdef-a", "0123456789abcdef-b"]
    );
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = "[server]\nlisten = \"127.0.0.1:1001\"\nworkers = 3\n[log]\nlevel = \"warn\"\n";
    let mut overrides = env(&[
        ("CONSUMER_SERVER_LISTEN", "127.0.0.1:1002"),
        ("CONSUMER_LOG_LEVEL", "debug"),
    ]);
    overrides.listen = Some("127.0.0.1:1003".into());
    let s = load_text(file, overrides).unwrap();
    assert_eq!(s.listen, "127.0.0.1:1003".parse().unwrap(), "the flag wins");
    assert_eq!(s.level, log::LevelFilter::Debug, "the environment wins");
    assert_eq!(s.config.server.workers, 3, "the file wins");
    assert_eq!(s.config.server.max_connections, 512, "the default");
    // A file's secret file loses to the variable, which is not read then.
    let s = load_text(
        "[influxdb]\npassword_file = \"missing\"\n",
        env(&[("CONSUMER_INFLUXDB_PASSWORD", "pw")]),
    )
    .unwrap();
    assert_eq!(s.config.influxdb.password, "pw");
}

#[test]
fn errors_name_the_variable_or_the_flag() {
    let tokens = env(&[("CONSUMER_AUTH_TOKENS", "0123456789abcdef0123,short")]);
    let err = load_error("", tokens);
    assert!(
        err.starts_with("CONSUMER_AUTH_TOKENS: token #2 is not usable"),
        "{err}"
    );
    let err = load_error("", env(&[("CONSUMER_LOG_LEVEL", "loud")]));
    assert!(
        err.starts_with("CONSUMER_LOG_LEVEL (sets log.level): \"loud\" is not one of"),
        "{err}"
    );
    let flag = Overrides {
        log_level: Some("loud".into()),
        ..Overrides::default()
    };
    let err = load_error("[log]\nlevel = \"info\"\n", flag);
    assert!(err.starts_with("--log-level: \"loud\""), "{err}");
    let err = load_error("", env(&[("CONSUMER_SERVER_LISTN", "x")]));
    assert!(
        err.starts_with(
            "CONSUMER_SERVER_LISTN: no such setting; did you mean CONSUMER_SERVER_LISTEN?"
        ),
        "{err}"
    );
    let err = load_error("", env(&[("CONSUMER_COLOUR", "blue")]));
    assert!(err.starts_with("CONSUMER_COLOUR: no such setting"), "{err}");
    for (variable, value, expected) in [
        (
            "CONSUMER_SERVER_WORKERS",
            "lots",
            "\"lots\" is not a whole number",
        ),
        ("CONSUMER_SERVER_WORKERS", "1.5", "is not a whole number"),
        (
            "CONSUMER_AUTH_ALLOW_UNAUTHENTICATED",
            "yes",
            "neither true nor false",
        ),
        ("CONSUMER_JOBS_MAX_AGE", "15", "15 has no unit"),
        ("CONSUMER_INFLUXDB_API", "v4", "unknown variant `v4`"),
        ("CONSUMER_SERVER_WORKERS", "0", "must be at least 1"),
        (
            "CONSUMER_SERVER_LISTEN",
            "0.0.0.0:3000",
            "no tokens are configured",
        ),
        ("CONSUMER_INFLUXDB_URL", "\"unclosed", "not a TOML string"),
    ] {
        let err = load_error("", env(&[(variable, value)]));
        assert!(
            err.starts_with(variable) && err.contains(expected),
            "{variable}={value}: {err}"
        );
    }
    // The file's own mistakes are still the file's.
    let err = load_error(
        "[server]\nworkers = 0\n",
        env(&[("CONSUMER_LOG_LEVEL", "info")]),
    );
    assert!(err.contains("consumer.toml: server.workers"), "{err}");
}

#[test]
fn a_duration_without_a_unit_says_which_to_write() {
    check_err("[jobs]\nheartbeat_interval = 15\n", "15 has no unit");
    check_err(
        "[jobs]\nheartbeat_interval = \"15\"\n",
        "\"15s\" for seconds",
    );
    check_err("[jobs]\nmax_age = 1.5\n", "e.g. \"1500ms\"");
}

#[test]
fn credentials_that_can_never_work_are_warned_about() {
    let warned = |text: &str| -> Vec<String> {
        let warnings = load_text(text, Overrides::default()).unwrap().warnings;
        warnings.iter().map(ToString::to_string).collect()
    };
    let v2 = "[influxdb]\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\n";
    assert!(warned(v2)[0].contains("influxdb.api: \"v2\" without a token"));
    let with_token = format!("{v2}token = \"t\"\n");
    assert!(warned(&with_token).is_empty());
    let v3 = "[influxdb]\napi = \"v3\"\n";
    assert!(warned(v3)[0].contains("influxdb.api: \"v3\" without a token"));
    assert!(warned("[influxdb]\nusername = \"u\"\n")[0].contains("without a password"));
    assert!(warned("[influxdb]\npassword = \"p\"\n")[0].contains("never sent"));
    assert!(warned("").is_empty());

    let temp = fresh_dir("empty-secrets");
    let dir = temp.path();
    fs::write(dir.join("secret"), "\n").unwrap();
    fs::write(dir.join("tokens"), "# none yet\n").unwrap();
    let file = dir.join("consumer.toml");
    fs::write(
        &file,
        "[auth]\ntoken_files = [\"tokens\"]\n[influxdb]\nusername = \"u\"\npassword_file = \"secret\"\n",
    )
    .unwrap();
    let warnings: Vec<String> = load(&file, true, Overrides::default())
        .unwrap()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("influxdb.password_file:") && warnings[0].contains("is empty"));
    assert!(warnings[1].contains("auth.token_files:") && warnings[1].contains("holds no token"));
}

#[test]
fn no_tokens_on_a_public_address_is_refused() {
    check_err(
        "[server]\nlisten = \"0.0.0.0:3000\"\n",
        "is not a loopback address and no tokens are configured",
    );
    let open = "[server]\nlisten = \"0.0.0.0:3000\"\n[auth]\nallow_unauthenticated = true\n";
    assert!(load_text(open, Overrides::default()).is_ok());
    let with_token =
        "[server]\nlisten = \"[::]:3000\"\n[auth]\ntokens = [\"0123456789abcdef0123\"]\n";
    assert!(load_text(with_token, Overrides::default()).is_ok());
    assert!(load_text("[server]\nlisten = \"[::1]:3000\"\n", Overrides::default()).is_ok());
}

#[test]
fn secrets_readable_by_others_are_found() {
    use std::os::unix::fs::PermissionsExt;
    let temp = fresh_dir("secrets");
    let dir = temp.path();
    let file = dir.join("consumer.toml");
    fs::write(
        &file,
        "[influxdb]\npassword = \"pw\"\ntoken_file = \"tok\"\n",
    )
    .unwrap();
    fs::write(dir.join("tok"), "t\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(dir.join("tok"), fs::Permissions::from_mode(0o600)).unwrap();
    let s = load(&file, true, Overrides::default()).unwrap();
    assert_eq!(s.readable_secrets(), vec![file.clone()]);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(dir.join("tok"), fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(s.readable_secrets(), vec![dir.join("tok")]);
}

#[test]
fn tls_paths_are_relative_to_the_config_file() {
    use std::os::unix::fs::PermissionsExt;
    let temp = fresh_dir("tls-paths");
    let dir = temp.path();
    let file = dir.join("consumer.toml");
    fs::write(
        &file,
        "[server]\ntls_cert = \"certs/cert.pem\"\ntls_key = \"/etc/key.pem\"\n",
    )
    .unwrap();
    let s = load(&file, true, Overrides::default()).unwrap();
    assert_eq!(
        s.tls_files(),
        Some((dir.join("certs/cert.pem"), PathBuf::from("/etc/key.pem")))
    );
    assert!(
        load_text("", Overrides::default())
            .unwrap()
            .tls_files()
            .is_none()
    );

    // The key is a secret: readable by others, it is worth a warning.
    fs::write(
        &file,
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    )
    .unwrap();
    fs::write(dir.join("key.pem"), "k").unwrap();
    fs::set_permissions(dir.join("key.pem"), fs::Permissions::from_mode(0o644)).unwrap();
    let s = load(&file, true, Overrides::default()).unwrap();
    assert_eq!(s.readable_secrets(), vec![dir.join("key.pem")]);
}

/// An error is a value: its source, its key and its problem are fields, read by the command
/// line without parsing the message.
#[test]
fn errors_are_values_with_the_key_and_what_set_it() {
    let err = load_in_dir("[server]\nworkers = 0\n", &[], Overrides::default()).unwrap_err();
    assert!(
        matches!(&err.source, Source::File(path) if path.ends_with("consumer.toml")),
        "{err:?}"
    );
    assert_eq!(err.key.as_deref(), Some("server.workers"));
    assert_eq!(err.problem, "must be at least 1");

    let err = load_in_dir("", &[], env(&[("CONSUMER_LOG_LEVEL", "loud")])).unwrap_err();
    assert_eq!(err.source, Source::Env("CONSUMER_LOG_LEVEL".into()));
    assert_eq!(err.key.as_deref(), Some("log.level"));

    let flag = Overrides {
        listen: Some("nowhere".into()),
        ..Overrides::default()
    };
    let err = load_in_dir("", &[], flag).unwrap_err();
    assert_eq!(err.source, Source::Flag("--listen"));
    assert_eq!(err.key.as_deref(), Some("server.listen"));
    assert_eq!(
        err.to_string(),
        "--listen: \"nowhere\" is not an address with a port, e.g. \"127.0.0.1:3000\" or \"[::]:3000\""
    );

    // A problem found after loading (the TLS pair) is blamed on what set its key.
    let s = load_in_dir(
        "[server]\ntls_cert = \"cert.pem\"\n",
        &[],
        env(&[("CONSUMER_SERVER_TLS_KEY", "key.pem")]),
    )
    .unwrap();
    let err = s.error_about("server.tls_key", "key.pem: no private key".into());
    assert_eq!(
        err.to_string(),
        "CONSUMER_SERVER_TLS_KEY (sets server.tls_key): key.pem: no private key"
    );
    let err = s.error_about("server.tls_cert", "cert.pem: no certificate".into());
    assert!(
        err.to_string()
            .ends_with("consumer.toml: server.tls_cert: cert.pem: no certificate"),
        "{err}"
    );
}

/// `[[auth.token]]` named "x" with token A and `extra` keys.
fn named_token(extra: &str) -> String {
    format!("[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\n{extra}")
}

#[test]
fn write_api_rights_that_cannot_work_are_refused_naming_the_key() {
    let long = "a".repeat(256);
    for (extra, expected) in [
        (
            "databases = [\"k6\", \"\"]\n".to_string(),
            "auth.token[1].databases (x): holds an empty glob, which matches no name: remove it",
        ),
        (
            format!("databases = [\"{long}\"]\n"),
            "auth.token[1].databases (x): \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" is longer than 255 bytes",
        ),
        (
            "databases = [\"k6\\tx\"]\n".to_string(),
            "auth.token[1].databases (x): \"k6?x\" holds a control character",
        ),
        (
            "databases = [\"k6/autogen\"]\n".to_string(),
            "auth.token[1].databases (x): \"k6/autogen\" holds '/' or '\\', which InfluxDB refuses in a database's name",
        ),
        (
            "databases = [\"..\"]\n".to_string(),
            "auth.token[1].databases (x): \"..\" is not a name InfluxDB takes for a database",
        ),
        (
            "databases = [\"k6\"]\nmeasurements = []\n".to_string(),
            "auth.token[1].measurements (x): is empty, so no line could be written: use [\"*\"]",
        ),
        (
            "measurements = [\"http_*\", \"a\\u0000\"]\n".to_string(),
            "auth.token[1].measurements (x): \"a?\" holds a control character",
        ),
        (
            format!("measurements = [\"{long}\"]\n"),
            "auth.token[1].measurements (x): \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" is longer than 255 bytes",
        ),
        (
            "max_series = 0\n".to_string(),
            "auth.token[1].max_series (x): 0 is out of range: from 1 to 10000000",
        ),
        (
            "max_series = 10000001\n".to_string(),
            "auth.token[1].max_series (x): 10000001 is out of range",
        ),
    ] {
        let text = named_token(&extra);
        let err = load_text(&text, Overrides::default()).expect_err(&text);
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
    // The edges that are taken: a glob of 255 bytes, a space, 10 000 000 series, a glob of
    // every database.
    let edge = format!(
        "databases = [\"{}\", \"my db\", \"*\"]\nmeasurements = [\"a b\"]\nmax_series = 10000000\n",
        "a".repeat(255)
    );
    let s = load_text(&named_token(&edge), Overrides::default()).unwrap();
    assert_eq!(s.clients[0].max_series, 10_000_000);
    assert_eq!(s.clients[0].databases.len(), 3);
}

#[test]
fn tokens_get_no_databases_every_measurement_and_the_default_max_series_unless_a_table_says() {
    let text = format!(
        "[auth]\ntokens = [\"{B}\"]\n{}[[auth.token]]\nname = \"k6\"\ntoken = \"{C}\"\n\
         databases = [\"k6\", \"jmeter_*\"]\nmeasurements = [\"http_*\"]\nmax_series = 500\n",
        named_token("")
    );
    let s = load_text(&text, env(&[("CONSUMER_AUTH_TOKENS", &"e".repeat(20))])).unwrap();
    let rights: Vec<(&str, Vec<String>, Vec<String>, u64)> = s
        .clients
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.databases.clone(),
                c.measurements.clone(),
                c.max_series,
            )
        })
        .collect();
    let all = vec!["*".to_string()];
    assert_eq!(
        rights,
        [
            (
                "token#efbe42620ff9",
                vec![],
                all.clone(),
                DEFAULT_MAX_SERIES
            ),
            (
                "token#58a791e28b5f",
                vec![],
                all.clone(),
                DEFAULT_MAX_SERIES
            ),
            ("x", vec![], all.clone(), DEFAULT_MAX_SERIES),
            (
                "k6",
                vec!["k6".to_string(), "jmeter_*".to_string()],
                vec!["http_*".to_string()],
                500
            ),
        ]
    );
    assert_eq!(DEFAULT_MAX_SERIES, 100_000);
    let listed = s.redacted_toml();
    assert!(
        listed.contains(
            "#   k6: max_running 2500, max_spool_bytes 268435456, no request rate limit; databases [\"k6\", \"jmeter_*\"], measurements [\"http_*\"], max_series 500\n"
        ),
        "{listed}"
    );
    assert!(
        listed.contains(
            "#   x: max_running 2500, max_spool_bytes 268435456, no request rate limit; no databases (the InfluxDB write API needs an [[auth.token]] with databases)\n"
        ),
        "{listed}"
    );
    for token in [A, B, C] {
        assert!(!listed.contains(token), "{listed}");
    }
}

#[test]
fn verdict_rules_are_checked_at_start() {
    let err = |text: &str| {
        load_text(text, Overrides::default())
            .unwrap_err()
            .to_string()
    };
    let e = err("[[verdict.rule]]\nthresholds = { Aggregated = [\"p96 < 1s\"] }\n");
    assert!(
        e.contains("verdict.rule") && e.contains("unknown metric"),
        "{e}"
    );
    let e = err(
        "[[verdict.rule]]\ntags = { env = \"\" }\nthresholds = { Aggregated = [\"p95 < 1s\"] }\n",
    );
    assert!(e.contains("tags.env is empty"), "{e}");
    let many: Vec<String> = (0..101).map(|i| format!("\"rps > {i}\"")).collect();
    let e = err(&format!(
        "[[verdict.rule]]\nthresholds = {{ Aggregated = [{}] }}\n",
        many.join(", ")
    ));
    assert!(e.contains("101 checks together"), "{e}");
    let e = err("[verdict]\nmax_results = 0\n");
    assert!(e.contains("verdict.max_results"), "{e}");
}

#[test]
fn shares_of_the_log_must_fit_it() {
    let text = format!(
        "[storage]\nmax_spool_bytes = 1000\n[auth]\ntokens = [\"{A}\"]\n\
         [[auth.token]]\nname = \"x\"\ntoken = \"{B}\"\nmax_spool_bytes = 700\n\
         [[auth.token]]\nname = \"y\"\ntoken = \"{C}\"\nmax_spool_bytes = 400\n"
    );
    let e = load_text(&text, Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("add up to 1100"), "{e}");
    let fits = text.replace("max_spool_bytes = 400", "max_spool_bytes = 200");
    let s = load_text(&fits, Overrides::default()).unwrap();
    let spool: Vec<u64> = s.clients.iter().map(|c| c.max_spool_bytes).collect();
    assert_eq!(spool, [100, 700, 200]);
}

#[test]
fn a_linger_set_for_influxdb_acknowledgements_is_told_to_be_ignored() {
    let warned = |text: &str| -> Vec<String> {
        load_text(text, Overrides::default())
            .unwrap()
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let w = warned("[delivery]\nacknowledge = \"influxdb\"\nlinger = \"50ms\"\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("delivery.linger") && w[0].contains("is ignored"),
        "{w:?}"
    );
    // The default linger, or a linger with disk acknowledgements, is no news.
    assert!(warned("[delivery]\nacknowledge = \"influxdb\"\n").is_empty());
    assert!(warned("[delivery]\nlinger = \"50ms\"\n").is_empty());
}
