//! Each token's share of the log while InfluxDB is away (`[[auth.token]] max_spool_bytes`): a
//! token writing hard through the write API fills its own share and is answered 503
//! `spool_share_full`, in each API's shape, while another token's writes and registers go on;
//! once InfluxDB is back its records drain and it writes again. A crash while it is at its
//! share keeps it there (the counts are rebuilt from the log), and every acknowledged point
//! reaches InfluxDB.

use std::time::Duration;

use serde_json::Value;

use crate::support::{ConsumerToml, Gateway, Influxd, RawResponse, request, states, wait_until};

const A: &str = "team-a-token-0123456789abcdef";
const B: &str = "team-b-token-0123456789abcdef";
/// Each token's share, in bytes: a few dozen writes of [`lines`].
const SHARE: u64 = 20_000;

/// Two tokens that may write `k6`, each with a share of [`SHARE`] bytes of a 1 MiB log.
fn config(influx: &Influxd) -> String {
    config_with(influx, "")
}

/// [`config`] with `extra` keys in team A's table.
fn config_with(influx: &Influxd, extra: &str) -> String {
    ConsumerToml::new(&influx.url, "runs")
        .rest(&format!(
            "max_spool_bytes = 1048576\n\
             [jobs]\nheartbeat_interval = \"1h\"\n\
             [auth]\n\
             [[auth.token]]\nname = \"team-a\"\ntoken = \"{A}\"\ndatabases = [\"k6\"]\nmax_spool_bytes = {SHARE}\n{extra}\
             [[auth.token]]\nname = \"team-b\"\ntoken = \"{B}\"\ndatabases = [\"k6\"]\nmax_spool_bytes = {SHARE}\n"
        ))
        .toml()
}

/// Ten lines of `who`'s points, numbered from `first` (one second apart).
fn lines(who: &str, first: u64) -> String {
    (first..first + 10)
        .map(|n| {
            format!(
                "http_reqs,who={who},url=/checkout value={n}i {}\n",
                1_700_000_000 + n
            )
        })
        .collect()
}

/// A v1 write of `body` with `token`.
fn write_v1(gw: &Gateway, token: &str, body: &str) -> RawResponse {
    let auth = format!("Token {token}");
    request(
        gw.addr,
        "POST",
        "/write?db=k6&precision=s",
        &[("Authorization", &auth)],
        Some(body),
    )
}

/// Waits until InfluxDB answers the gateway, then stops it.
fn take_influxdb_away(gw: &Gateway, influx: &mut Influxd) {
    wait_until(Duration::from_secs(20), "influxdb up", || {
        states(gw.addr, B)["influxdb"]["up"] == true
    });
    influx.stop();
}

/// Team A writes until its share is full; the points acknowledged (each write's ten lines),
/// and the refusal.
fn fill_the_share_of_a(gw: &Gateway) -> (u64, RawResponse) {
    let mut written = 0;
    loop {
        let answer = write_v1(gw, A, &lines("a", written));
        if answer.status != 204 {
            return (written, answer);
        }
        written += 10;
        assert!(written < 2_000, "team-a's share should be full by now");
    }
}

/// The refusal of a write past the token's share: 503 with Retry-After, naming the share and
/// its key.
fn assert_share_full(r: &RawResponse) {
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["code"], "spool_share_full", "{}", r.body);
    let message = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("team-a")
            && message.contains(&SHARE.to_string())
            && message.contains("[[auth.token]] max_spool_bytes"),
        "{message}"
    );
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
}

/// The values of `who`'s points in InfluxDB, waiting until there are `n`.
fn values_of(influx: &Influxd, who: &str, n: u64) -> Vec<u64> {
    let mut values = Vec::new();
    wait_until(Duration::from_secs(60), "the points in influxd", || {
        values = influx
            .series("k6", "http_reqs")
            .into_iter()
            .filter(|r| r.get("who").and_then(Value::as_str) == Some(who))
            .filter_map(|r| r.get("value").and_then(Value::as_u64))
            .collect();
        values.len() as u64 >= n
    });
    values.sort_unstable();
    values
}

#[test]
fn a_token_at_its_share_of_the_log_is_refused_and_the_others_write_on() {
    let mut influx = Influxd::start();
    let gw = Gateway::start(&config(&influx));
    take_influxdb_away(&gw, &mut influx);

    let (written, refused) = fill_the_share_of_a(&gw);
    assert!(written >= 100, "{written} points before the share was full");
    assert_share_full(&refused);
    let spool = states(gw.addr, B)["spool"]["bytes"].as_u64().unwrap();
    assert!(spool <= SHARE + 2_000, "{spool} bytes in the log");
    // Each token sees its own share of the log: team A's full, team B's empty.
    let a = &states(gw.addr, A)["spool"]["share"];
    assert_eq!(a["limit"], SHARE, "{a}");
    let held = a["bytes"].as_u64().unwrap();
    assert!(held > SHARE / 2 && held <= spool, "{a}, {spool} in the log");
    assert_eq!(states(gw.addr, B)["spool"]["share"]["bytes"], 0);

    // The other token writes on, through the write API and the run routes.
    let b = write_v1(&gw, B, &lines("b", 0));
    assert_eq!(b.status, 204, "{}", b.body);
    let auth = format!("Bearer {B}");
    let register = request(
        gw.addr,
        "POST",
        "/apiv0.1/events/register",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(r#"{"host": "lg-1", "measurement": {"fields": {"clients": 1}}}"#),
    );
    assert_eq!(register.status, 200, "{}", register.body);

    // Team A, on the other APIs, in their own shapes.
    let v2 = request(
        gw.addr,
        "POST",
        "/api/v2/write?bucket=k6&precision=s",
        &[("Authorization", &format!("Token {A}"))],
        Some(&lines("a", 5_000)),
    );
    assert_eq!(v2.status, 503, "{}", v2.body);
    assert_eq!(v2.json()["reason"], "spool_share_full", "{}", v2.body);
    assert!(v2.json()["message"].as_str().is_some(), "{}", v2.body);
    assert!(v2.header("retry-after").is_some());
    let v3 = request(
        gw.addr,
        "POST",
        "/api/v3/write_lp?db=k6&precision=second",
        &[("Authorization", &format!("Bearer {A}"))],
        Some(&lines("a", 6_000)),
    );
    assert_eq!(v3.status, 503, "{}", v3.body);
    assert_eq!(v3.json()["code"], "spool_share_full", "{}", v3.body);

    // InfluxDB back: team A's records drain, and it writes again.
    influx.restart();
    wait_until(Duration::from_secs(60), "the log to drain", || {
        states(gw.addr, B)["spool"]["records"] == 0
    });
    let again = write_v1(&gw, A, &lines("a", written));
    assert_eq!(again.status, 204, "{}", again.body);
    let values = values_of(&influx, "a", written + 10);
    assert_eq!(values, (0..written + 10).collect::<Vec<_>>());
    assert_eq!(values_of(&influx, "b", 10).len(), 10);
}

#[test]
fn a_token_at_its_share_is_still_refused_after_a_crash_and_nothing_acknowledged_is_lost() {
    let mut influx = Influxd::start();
    let mut gw = Gateway::start(&config(&influx));
    take_influxdb_away(&gw, &mut influx);
    let (written, refused) = fill_the_share_of_a(&gw);
    assert_share_full(&refused);

    gw.kill();
    gw.restart();
    // The counts are rebuilt from the log: still at its share.
    assert_share_full(&write_v1(&gw, A, &lines("a", written)));
    let b = write_v1(&gw, B, &lines("b", 0));
    assert_eq!(b.status, 204, "{}", b.body);

    influx.restart();
    let values = values_of(&influx, "a", written);
    assert_eq!(
        values,
        (0..written).collect::<Vec<_>>(),
        "every acknowledged point, once"
    );
    wait_until(Duration::from_secs(60), "the log to drain", || {
        states(gw.addr, B)["spool"]["records"] == 0
    });
    let again = write_v1(&gw, A, &lines("a", written));
    assert_eq!(again.status, 204, "{}", again.body);
}

#[test]
fn writes_refused_for_a_full_share_take_nothing_from_the_series_budget() {
    let mut influx = Influxd::start();
    let gw = Gateway::start(&config_with(&influx, "max_series = 3\n"));
    take_influxdb_away(&gw, &mut influx);
    let (written, refused) = fill_the_share_of_a(&gw);
    assert_share_full(&refused);
    // Writes of new series while the share is full: refused, and no series taken.
    for n in 0..20 {
        let body: String = (0..10)
            .map(|i| format!("http_reqs,who=a,url=/new-{n}-{i} value={i}i 1700000000\n"))
            .collect();
        assert_share_full(&write_v1(&gw, A, &body));
    }
    influx.restart();
    wait_until(Duration::from_secs(60), "the log to drain", || {
        states(gw.addr, B)["spool"]["records"] == 0
    });
    // The budget holds the one series written before, and takes two more.
    let body = "http_reqs,who=a,url=/later-1 value=1i 1700000000\n\
                http_reqs,who=a,url=/later-2 value=2i 1700000000\n";
    let r = write_v1(&gw, A, body);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = write_v1(
        &gw,
        A,
        "http_reqs,who=a,url=/one-too-many value=1i 1700000000\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("max-series"), "{}", r.body);
    assert!(written > 0);
}
