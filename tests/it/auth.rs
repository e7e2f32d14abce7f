//! Tokens: with tokens configured, nothing but ping works without one, and nothing reaches
//! InfluxDB or the job table.

use std::time::Duration;

use serde_json::json;

use crate::support::{Gateway, Influxd, config, get, request, wait_until};

const TOKEN: &str = "test-token-0123456789abcdef";
const OTHER: &str = "file-token-abcdef0123456789";

/// A gateway with TOKEN in the configuration and `tokens_txt` as its token file.
fn start(tokens_txt: &str) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let dir = crate::support::TempDir::new("auth");
    std::fs::write(dir.join("tokens.txt"), tokens_txt).unwrap();
    let toml = format!("[auth]\ntokens = [\"{TOKEN}\"]\ntoken_files = [\"tokens.txt\"]\n");
    let gw = Gateway::start_in(dir, &config(&influx.url, "runs", &toml));
    (influx, gw)
}

fn basic(user: &str, password: &str) -> String {
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

    let auth = format!("Bearer {TOKEN}");
    let states = request(
        gw.addr,
        "GET",
        "/apiv0.1/states",
        &[("Authorization", &auth)],
        None,
    )
    .json();
    assert_eq!(states["jobs"]["running"], 0, "no job was made");
    assert_eq!(states["counters"]["auth_failures"], bad_headers.len() * 4);
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
    // The access log names who a request authenticated as; tokens have no names yet.
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
    assert!(
        registers.iter().all(|l| l.ends_with("ms client=token")),
        "{registers:?}"
    );
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
