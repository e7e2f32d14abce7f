//! Tokens: with tokens configured, nothing but ping works without one, and nothing reaches
//! InfluxDB or the job table. Each token is a client with a name and limits of its own: one
//! cannot take the job table or the request rate from the others, and guessing tokens is
//! slowed down per address.

use std::io::{BufReader, Write};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    ConsumerToml, Gateway, Influxd, connect_from, get, read_response, request, states, wait_until,
};

const TOKEN: &str = "test-token-0123456789abcdef";
const OTHER: &str = "file-token-abcdef0123456789";

/// A gateway with TOKEN in the configuration and `tokens_txt` as its token file.
fn start(tokens_txt: &str) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("auth");
    std::fs::write(dir.join("tokens.txt"), tokens_txt).unwrap();
    // Failed checks are limited per address (see below); here every one must be checked.
    let toml = format!(
        "[auth]\ntokens = [\"{TOKEN}\"]\ntoken_files = [\"tokens.txt\"]\nmax_failures = 1000\n"
    );
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs").rest(&toml).toml(),
    );
    (influx, gw)
}

/// `Basic base64(user:password)`, as coreutils' base64 makes it.
pub fn basic(user: &str, password: &str) -> String {
    // The same encoding curl -u and a URL's user:password@ produce.
    let out = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{user}:{password}").as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 (coreutils) runs");
    format!("Basic {}", String::from_utf8(out.stdout).unwrap())
}

#[test]
fn requests_without_a_valid_token_change_nothing() {
    let (influx, gw) = start(&format!("# lab tokens\n\n{OTHER}\n"));
    let body = json!({"host": "intruder"}).to_string();
    let bad_headers: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789".into())],
        vec![("Authorization", format!("Bearer {TOKEN}x"))],
        vec![("Authorization", TOKEN.into())],
        vec![("Authorization", basic(TOKEN, ""))],
        vec![("Authorization", "Basic !!!!".into())],
        vec![("X-Token", TOKEN.into())],
    ];
    for headers in &bad_headers {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (method, path, body) in [
            ("POST", "/apiv0.1/events/register", Some(body.as_str())),
            (
                "POST",
                "/apiv0.1/events/commit",
                Some("{\"uuid\": \"00000000-0000-0000-0000-000000000000\"}"),
            ),
            ("GET", "/apiv0.1/events/isrunning", None),
            ("GET", "/apiv0.1/states", None),
        ] {
            let answer = request(gw.addr, method, path, &h, body);
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {headers:?}: {}",
                answer.body
            );
            assert_eq!(answer.json()["code"], "unauthorized");
            let challenges: Vec<&str> = answer
                .headers
                .iter()
                .filter(|(k, _)| k == "www-authenticate")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(
                challenges,
                [
                    "Bearer realm=\"metrics-consumer\"",
                    "Basic realm=\"metrics-consumer\""
                ]
            );
        }
    }
    assert!(
        influx.measurements("runs").is_empty(),
        "nothing was written"
    );
    assert_eq!(
        get(gw.addr, "/apiv0.1/ping").status,
        200,
        "ping needs no token"
    );

    let states = states(gw.addr, TOKEN);
    assert_eq!(states["jobs"]["running"], 0, "no job was made");
    // Every request was refused; those without credentials (no Authorization header) guessed
    // nothing and are not counted as failures.
    let guesses = bad_headers
        .iter()
        .filter(|h| h.iter().any(|(k, _)| *k == "Authorization"))
        .count();
    assert_eq!(guesses, bad_headers.len() - 2);
    assert_eq!(states["counters"]["auth_failures"], guesses * 4);
    let log = gw.log();
    assert!(
        log.contains("refused POST /apiv0.1/events/register from 127.0.0.1: no token"),
        "{log}"
    );
    assert!(
        !log.contains(TOKEN) && !log.contains("wrong-token"),
        "tokens never reach the log"
    );
}

#[test]
fn bearer_and_basic_tokens_are_accepted() {
    let (influx, gw) = start(&format!("{OTHER}\n"));
    let body = json!({"host": "lg"}).to_string();
    for auth in [
        format!("Bearer {TOKEN}"),
        format!("Bearer {OTHER}"),
        basic("anyone", OTHER),
    ] {
        let answer = request(
            gw.addr,
            "POST",
            "/apiv0.1/events/register",
            &[("Authorization", &auth)],
            Some(&body),
        );
        assert_eq!(answer.status, 200, "{auth}: {}", answer.body);
    }
    // The forms real clients use: curl -u :TOKEN, and credentials in the URL as the customized
    // Locust sends them (--consumer-host http://locust:TOKEN@host:port).
    let register = format!("http://{}/apiv0.1/events/register", gw.addr);
    let in_url = format!("http://locust:{TOKEN}@{}/apiv0.1/events/register", gw.addr);
    for args in [
        vec!["-u", &format!(":{TOKEN}"), register.as_str()],
        vec![in_url.as_str()],
    ] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-d", &body])
            .args(&args)
            .output()
            .expect("curl is installed (scripts/test.sh installs it)");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "curl {args:?}");
    }
    assert_eq!(influx.count("runs", "load_testing"), 5);
    // The access log names who a request authenticated as: an unnamed token by where it is
    // listed, never by the token.
    assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
    wait_until(
        Duration::from_secs(5),
        "the access log has the ping",
        || gw.log().contains(" GET /apiv0.1/ping 200 "),
    );
    let log = gw.log();
    let lines = |route: &str| -> Vec<&str> {
        log.lines()
            .filter(|l| l.contains(&format!(" {route} ")))
            .collect()
    };
    let registers = lines("POST /apiv0.1/events/register 200");
    assert_eq!(registers.len(), 5, "{log}");
    let by = |name: &str| {
        registers
            .iter()
            .filter(|l| l.ends_with(&format!("ms client={name}")))
            .count()
    };
    assert_eq!(
        (by("token#67e95073ea7d"), by("token#5a6a3ec8f955")),
        (3, 2),
        "{registers:?}"
    );
    assert!(!log.contains(TOKEN) && !log.contains(OTHER));
    let pings = lines("GET /apiv0.1/ping 200");
    assert!(
        pings.iter().all(|l| !l.contains("client=")),
        "ping carries no token: {pings:?}"
    );
}

#[test]
fn a_public_address_without_tokens_refuses_to_start() {
    let out = Gateway::spawn_with(&[], Some("[server]\nlisten = \"0.0.0.0:0\"\n"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no tokens are configured") && err.contains("auth.tokens"),
        "{err}"
    );
}

const REGISTER: &str = "/apiv0.1/events/register";

/// A gateway with two named clients, team-a (TOKEN, its table's `a_keys` added) and team-b
/// (OTHER), and `rest` before their tables (keys of `[auth]` first, then other tables).
fn two_teams(rest: &str, a_keys: &str) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "{rest}[[auth.token]]\nname = \"team-a\"\ntoken = \"{TOKEN}\"\n{a_keys}\
             [[auth.token]]\nname = \"team-b\"\ntoken = \"{OTHER}\"\n"
            ))
            .toml(),
    );
    (influx, gw)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn post_as(gw: &Gateway, token: &str, path: &str, body: &Value) -> crate::support::RawResponse {
    request(
        gw.addr,
        "POST",
        path,
        &[("Authorization", &bearer(token))],
        Some(&body.to_string()),
    )
}

/// Case 2 of the fairness issue: with two tokens and `jobs.max_running = 2000`, one token
/// registering until refused took every slot for 24 h. Now each token has an equal share.
#[test]
fn one_token_registering_until_refused_leaves_the_other_able_to_register() {
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("fair-tokens");
    std::fs::write(
        dir.join("tokens.txt"),
        format!("team-a:{TOKEN}\nteam-b:{OTHER}\n"),
    )
    .unwrap();
    let gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs")
            .rest("[delivery]\nacknowledge = \"disk\"\n[auth]\ntoken_files = [\"tokens.txt\"]\n[jobs]\nmax_running = 2000\nheartbeat_interval = \"1h\"\n")
            .toml(),
    );
    let body = json!({"host": "greedy"});
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let r = post_as(&gw, TOKEN, REGISTER, &body);
                    if r.status == 429 {
                        assert_eq!(r.json()["code"], "too_many_running_for_token", "{}", r.body);
                        assert_eq!(r.header("retry-after"), Some("5"));
                        let error = r.json()["error"].as_str().unwrap().to_string();
                        assert!(
                            error.contains("\"team-a\" has 1000 runs running"),
                            "{error}"
                        );
                        break;
                    }
                    assert_eq!(r.status, 200, "{}", r.body);
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(
        accepted.into_inner(),
        1000,
        "team-a has half of jobs.max_running"
    );
    let b = post_as(&gw, OTHER, REGISTER, &json!({"host": "fair"}));
    assert_eq!(b.status, 200, "team-b can still register: {}", b.body);
}

#[test]
fn a_token_max_running_and_name_tag_hold_and_the_name_is_never_spoofed() {
    let (influx, gw) = two_teams(
        "[auth]\ntag_runs_with_token_name = true\n",
        "max_running = 2\n",
    );
    // A client's own token_name tag is replaced by its token's name.
    let spoof = json!({"host": "h", "measurement": {"tags": {"token_name": "team-b"}, "fields": {"users": 1}}});
    let first = post_as(&gw, TOKEN, REGISTER, &spoof);
    assert_eq!(first.status, 200, "{}", first.body);
    let uuid = first.json()["uuid"].as_str().unwrap().to_string();
    assert_eq!(post_as(&gw, TOKEN, REGISTER, &json!({})).status, 200);
    let third = post_as(&gw, TOKEN, REGISTER, &json!({}));
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.json()["code"], "too_many_running_for_token");
    // A commit frees a place; its tag cannot change the name either.
    let commit = json!({"uuid": uuid, "measurement": {"tags": {"token_name": "team-b"}, "fields": {"ok": true}}});
    assert_eq!(
        post_as(&gw, TOKEN, "/apiv0.1/events/commit", &commit).status,
        200
    );
    assert_eq!(post_as(&gw, TOKEN, REGISTER, &json!({})).status, 200);
    for measurement in ["load_testing", "load_testing_events", "load_testing_result"] {
        let rows: Vec<_> = influx
            .series("runs", measurement)
            .into_iter()
            .filter(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid.as_str()))
            .collect();
        assert!(!rows.is_empty(), "{measurement}");
        for row in rows {
            assert_eq!(
                row.get("token_name"),
                Some(&json!("team-a")),
                "{measurement}: {row:?}"
            );
        }
    }
    // A field cannot take the tag's name.
    let clash = post_as(
        &gw,
        OTHER,
        REGISTER,
        &json!({"measurement": {"fields": {"token_name": 1}}}),
    );
    assert_eq!(clash.status, 400, "{}", clash.body);
    assert!(
        clash.json()["error"]
            .as_str()
            .unwrap()
            .contains("measurement.fields.token_name")
    );
    assert!(!gw.log().contains(TOKEN), "tokens never reach the log");
}

#[test]
fn a_token_request_rate_is_its_own() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[[auth.token]]\nname = \"slow\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 2\n\
             [[auth.token]]\nname = \"free\"\ntoken = \"{OTHER}\"\n"
            ))
            .toml(),
    );
    let states = |token: &str| {
        request(
            gw.addr,
            "GET",
            "/apiv0.1/states",
            &[("Authorization", &bearer(token))],
            None,
        )
    };
    let answers: Vec<u16> = (0..4).map(|_| states(TOKEN).status).collect();
    assert_eq!(&answers[..2], [200, 200], "a burst of one second's worth");
    let limited = states(TOKEN);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["code"], "too_many_requests");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert!(
        limited.json()["error"]
            .as_str()
            .unwrap()
            .contains("\"slow\"")
    );
    for _ in 0..20 {
        assert_eq!(
            states(OTHER).status,
            200,
            "another token is not slowed down"
        );
    }
    // The bucket fills again (its arithmetic is the unit tests' of auth.rs, on their clock).
    wait_until(
        Duration::from_secs(5),
        "room again after Retry-After",
        || states(TOKEN).status == 200,
    );
}

/// Case 5: failed token checks were free. Past `auth.max_failures` an address is answered 429
/// without a check, the right token included, until it has waited; other addresses go on.
#[test]
fn failed_token_checks_are_limited_per_address() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[auth]\ntokens = [\"{TOKEN}\"]\nmax_failures = 5\nfailure_window = \"5s\"\n"
            ))
            .toml(),
    );
    let from = |ip: &str, token: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        let mut stream = connect_from(ip, gw.addr);
        write!(
            stream,
            "GET /apiv0.1/states HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        read_response(&mut BufReader::new(stream), false).unwrap()
    };
    // Requests without a token guess nothing (a browser asks so before it answers the 401's
    // Basic challenge with the token): never throttled for it.
    let bare = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        let mut stream = connect_from(ip, gw.addr);
        write!(
            stream,
            "GET /apiv0.1/states HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        read_response(&mut BufReader::new(stream), false).unwrap()
    };
    // (Twice max_failures, and few enough that the refused-check log lines of this second
    // keep room for the line the throttled address gets.)
    for _ in 0..10 {
        assert_eq!(bare("127.0.0.9").status, 401);
    }
    assert_eq!(from("127.0.0.9", TOKEN).status, 200, "no token is no guess");
    for _ in 0..5 {
        assert_eq!(from("127.0.0.7", "guess-0123456789abcdef").status, 401);
    }
    let throttled = from("127.0.0.7", "guess-0123456789abcdef");
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert_eq!(throttled.json()["code"], "too_many_auth_failures");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=1).contains(&retry),
        "one failure comes back a second: {retry}"
    );
    assert_eq!(from("127.0.0.7", TOKEN).status, 429, "not even checked");
    assert_eq!(
        from("127.0.0.8", TOKEN).status,
        200,
        "another address is not affected"
    );
    // Answered unchecked meanwhile, so asking does not prolong it; each 429 is counted.
    let throttled_polls = std::cell::Cell::new(0);
    wait_until(
        Duration::from_secs(5),
        "checked again after Retry-After",
        || {
            let status = from("127.0.0.7", TOKEN).status;
            if status == 429 {
                throttled_polls.set(throttled_polls.get() + 1);
            }
            status == 200
        },
    );
    let states = from("127.0.0.8", TOKEN).json();
    // The five guesses, the two 429s and the polls answered 429; not the ten requests
    // without a token.
    assert_eq!(
        states["counters"]["auth_failures"],
        7 + throttled_polls.get()
    );
    let log = gw.log();
    assert_eq!(
        log.matches("too many failed token checks from this address")
            .count(),
        1,
        "one line when the address is throttled, not one per attempt: {log}"
    );
}

/// A run belongs to the token that registered it: another token can neither report progress
/// on it, nor commit it, nor see it in isrunning.
#[test]
fn a_token_cannot_act_on_another_tokens_runs() {
    let (influx, gw) = two_teams("[auth]\ntag_runs_with_token_name = true\n", "");
    let a = post_as(&gw, TOKEN, REGISTER, &json!({"host": "a"})).json()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = json!({"uuid": a, "measurement": {"fields": {"verdict": "fake"}}});
    for path in ["/apiv0.1/events/progress", "/apiv0.1/events/commit"] {
        let r = post_as(&gw, OTHER, path, &forged);
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (404, Some("unknown_run")),
            "{path}: {}",
            r.body
        );
    }
    let listed = |token: &str| {
        request(
            gw.addr,
            "GET",
            "/apiv0.1/events/isrunning",
            &[("Authorization", &bearer(token))],
            None,
        )
        .json()
    };
    assert_eq!(
        listed(OTHER),
        json!({}),
        "team-b sees none of team-a's runs"
    );
    assert_eq!(listed(TOKEN)[&a], true);
    let own = post_as(&gw, TOKEN, "/apiv0.1/events/commit", &json!({"uuid": a}));
    assert_eq!(own.status, 200, "{}", own.body);
    let results = influx.series("runs", "load_testing_result");
    assert!(
        results.iter().all(|r| r.get("verdict").is_none()),
        "nothing of team-b's forged commit: {results:?}"
    );
}

/// `states` listed every token's runs to any token (uuid, host and InfluxDB's refusal of a
/// run's heartbeat), while `isrunning` and commits kept them apart. Now a token's states and
/// metrics hold its own runs, and others' only as counts.
#[test]
fn a_token_states_and_metrics_hold_only_its_own_runs() {
    let influx = Influxd::start();
    // The gateway's type check would refuse team-b's string at the request; off here, InfluxDB
    // refuses its heartbeats, and the refusal text is team-b's alone.
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest(&format!(
            "[jobs]\nheartbeat_interval = \"300ms\"\n[[auth.token]]\nname = \"team-a\"\ntoken = \"{TOKEN}\"\n\
             [[auth.token]]\nname = \"team-b\"\ntoken = \"{OTHER}\"\n"
        ))
            .toml(),
    );
    let a = post_as(
        &gw,
        TOKEN,
        REGISTER,
        &json!({"host": "host-of-team-a", "measurement": {"fields": {"clients": 5}}}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = a.json()["uuid"].as_str().unwrap().to_string();
    let b = post_as(
        &gw,
        OTHER,
        REGISTER,
        &json!({"host": "host-of-team-b", "measurement": {"fields": {"clients": "ten"}}}),
    );
    assert_eq!(b.status, 200, "{}", b.body);
    let b = b.json()["uuid"].as_str().unwrap().to_string();
    let page = |token: &str, path: &str| {
        let r = request(
            gw.addr,
            "GET",
            path,
            &[("Authorization", &bearer(token))],
            None,
        );
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    };
    let entry_of = |states: &Value, uuid: &str| {
        states["jobs"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["uuid"] == uuid)
            .cloned()
    };
    let mut refusal = String::new();
    wait_until(
        Duration::from_secs(30),
        "team-b's heartbeat refused",
        || {
            let states: Value = serde_json::from_str(&page(OTHER, "/apiv0.1/states")).unwrap();
            match entry_of(&states, &b).and_then(|e| {
                e["heartbeats_refused"]["last_error"]
                    .as_str()
                    .map(String::from)
            }) {
                Some(text) => {
                    refusal = text;
                    true
                }
                None => false,
            }
        },
    );
    assert!(refusal.contains("conflict"), "{refusal}");

    let a_states = page(TOKEN, "/apiv0.1/states");
    let a_metrics = page(TOKEN, "/apiv0.1/metrics");
    for (what, text) in [("states", &a_states), ("metrics", &a_metrics)] {
        for secret in [b.as_str(), "host-of-team-b", refusal.as_str()] {
            assert!(
                !text.contains(secret),
                "team-a's {what} shows team-b's {secret:?}: {text}"
            );
        }
    }
    let a_states: Value = serde_json::from_str(&a_states).unwrap();
    let own = entry_of(&a_states, &a).expect("team-a sees its own run");
    assert_eq!(own["host"], "host-of-team-a");
    assert_eq!(a_states["jobs"]["listed"], 1, "{a_states}");
    assert_eq!(
        a_states["jobs"]["running"], 1,
        "its own running run: {a_states}"
    );
    assert_eq!(
        a_states["jobs"]["all"]["running"], 2,
        "every token's, as a count: {a_states}"
    );

    let b_states: Value = serde_json::from_str(&page(OTHER, "/apiv0.1/states")).unwrap();
    assert!(entry_of(&b_states, &a).is_none(), "{b_states}");
    assert_eq!(entry_of(&b_states, &b).unwrap()["host"], "host-of-team-b");
}

/// The table's bytes are shared as its places are: one token filling its share leaves the
/// other able to register.
#[test]
fn one_token_filling_its_share_of_the_table_leaves_the_other_able_to_register() {
    let (_influx, gw) = two_teams(
        "[delivery]\nacknowledge = \"disk\"\n[jobs]\nheartbeat_interval = \"1h\"\nmax_table_bytes = 2097152\n",
        "",
    );
    let wide: serde_json::Map<String, Value> = (0..30)
        .map(|i| (format!("f{i}"), Value::from("x".repeat(1000))))
        .collect();
    let body = json!({"host": "wide", "measurement": {"fields": wide}});
    let mut registered = 0;
    loop {
        let r = post_as(&gw, TOKEN, REGISTER, &body);
        if r.status != 200 {
            assert_eq!(
                (r.status, r.json()["code"].as_str()),
                (429, Some("token_table_full")),
                "{}",
                r.body
            );
            assert!(r.json()["error"].as_str().unwrap().contains("\"team-a\""));
            break;
        }
        registered += 1;
        assert!(registered < 100, "team-a never reached its share");
    }
    assert!(registered > 5, "{registered}");
    let b = post_as(&gw, OTHER, REGISTER, &body);
    assert_eq!(b.status, 200, "team-b still registers: {}", b.body);
}

/// Ended runs are remembered in one list for every client (`jobs.max_finished`, the oldest
/// forgotten first), where the running ones are shared out by client. A run that expired
/// (no progress within `jobs.progress_timeout`) may still be committed while it is
/// remembered (without team-a's runs below, the late commit is answered 200); here team-b's
/// run expires, team-a registers and commits `max_finished` runs of its own, and team-b's late
/// commit is then refused 404 `unknown_run`: its results are lost because of another client's
/// runs.
#[test]
fn another_tokens_finished_runs_do_not_push_out_a_tokens_expired_run() {
    let (_influx, gw) = two_teams(
        "[jobs]\nheartbeat_interval = \"1s\"\nprogress_timeout = \"2s\"\nmax_finished = 10\n",
        "",
    );
    let victim = post_as(&gw, OTHER, REGISTER, &json!({"host": "b"}));
    assert_eq!(victim.status, 200, "{}", victim.body);
    let uuid = victim.json()["uuid"].as_str().unwrap().to_string();
    let progress = json!({"uuid": uuid, "measurement": {"fields": {"clients": 5}}});
    let answer = post_as(&gw, OTHER, "/apiv0.1/events/progress", &progress);
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until(Duration::from_secs(20), "team-b's run expired", || {
        let shown = request(
            gw.addr,
            "GET",
            "/apiv0.1/events/isrunning",
            &[("Authorization", &bearer(OTHER))],
            None,
        );
        shown.json()[&uuid] == false
    });
    for i in 0..10 {
        let r = post_as(&gw, TOKEN, REGISTER, &json!({"host": format!("a-{i}")}));
        assert_eq!(r.status, 200, "{}", r.body);
        let run = r.json()["uuid"].as_str().unwrap().to_string();
        let c = post_as(
            &gw,
            TOKEN,
            "/apiv0.1/events/commit",
            &json!({"uuid": run, "measurement": {"fields": {"duration": 1}}}),
        );
        assert_eq!(c.status, 200, "{}", c.body);
    }
    let late = post_as(
        &gw,
        OTHER,
        "/apiv0.1/events/commit",
        &json!({"uuid": uuid, "measurement": {"fields": {"duration": 60}}}),
    );
    assert_eq!(
        late.status, 200,
        "team-b's late commit of its expired run, after team-a's runs: {}",
        late.body
    );
}

#[test]
fn rotating_an_unnamed_token_out_of_a_token_file_does_not_give_its_runs_to_the_next_token() {
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("auth");
    let old = "team-a-old-0123456789abcdef";
    let team_b = "team-b-0123456789abcdef";
    let new = "team-a-new-0123456789abcdef";
    // The rotation docs/security.md gives: add the new token next to the old one, restart,
    // move the clients, remove the old one, restart.
    std::fs::write(dir.join("tokens"), format!("{old}\n{team_b}\n")).unwrap();
    let mut gw = Gateway::start_in(
        dir,
        &ConsumerToml::new(&influx.url, "runs")
            .rest("[auth]\ntoken_files = [\"tokens\"]\n")
            .toml(),
    );
    let call = |gw: &Gateway, token: &str, method: &str, path: &str, body: Option<&str>| {
        let auth = format!("Bearer {token}");
        request(gw.addr, method, path, &[("Authorization", &auth)], body)
    };
    let answer = call(
        &gw,
        old,
        "POST",
        "/apiv0.1/events/register",
        Some(r#"{"host": "team-a-host"}"#),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let uuid = answer.json()["uuid"].as_str().unwrap().to_string();
    let run = format!("/apiv0.1/runs/{uuid}");
    assert_eq!(call(&gw, team_b, "GET", &run, None).status, 404);
    std::fs::write(gw.dir.join("tokens"), format!("{old}\n{team_b}\n{new}\n")).unwrap();
    gw.restart();
    std::fs::write(gw.dir.join("tokens"), format!("{team_b}\n{new}\n")).unwrap();
    gw.restart();
    let seen = call(&gw, team_b, "GET", &run, None);
    assert_eq!(
        seen.status, 404,
        "team B's token sees team A's run after A's token was rotated: {}",
        seen.body
    );
    let states = states(gw.addr, team_b);
    assert_eq!(states["jobs"]["listed"], 0, "{}", states["jobs"]);
    // The run no token can see or commit now is told of at the start that left its token
    // out, and only then.
    let told = "running runs restored whose token is no longer listed: 1 (token#";
    assert_eq!(gw.log().matches(told).count(), 1, "{}", gw.log());
}
