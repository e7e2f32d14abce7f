//! The shape of the requests sent to InfluxDB, checked against a stub where the real InfluxDB
//! 1.6 cannot serve the case (the v2 API), or cannot show what it received (credentials).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::support::{ConsumerToml, Gateway, Seen, post_json, stand_in};

/// A loopback listener that answers every request with `status` and reports what it got,
/// but for the probes (`GET /ping`).
fn stub(status: u16) -> (SocketAddr, mpsc::Receiver<Seen>) {
    stub_with(status, "")
}

/// Like `stub`, with `body` (JSON) in every answer but the probes', and InfluxDB's
/// `X-Influxdb-Version` header in each, as InfluxDB answers.
fn stub_with(status: u16, answer_body: &'static str) -> (SocketAddr, mpsc::Receiver<Seen>) {
    stub_answering(status, answer_body, true)
}

/// Like `stub_with`; `influxdb` false answers without InfluxDB's header, as a proxy in front of
/// it would.
fn stub_answering(
    status: u16,
    answer_body: &'static str,
    influxdb: bool,
) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let version = if influxdb {
        "X-Influxdb-Version: 1.6.7-stub\r\n"
    } else {
        ""
    };
    stand_in(move |_| {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{version}Content-Length: {}\r\n\r\n{answer_body}",
            answer_body.len()
        )
    })
}

/// The next request the stub saw that is not a probe (`GET /ping`) or a reading of the schema
/// (`SHOW FIELD KEYS`, `SHOW TAG KEYS`) or of the retention (`SHOW RETENTION POLICIES`, v2's
/// `GET /api/v2/buckets`).
fn next_write(seen: &mpsc::Receiver<Seen>) -> Seen {
    loop {
        let request = seen
            .recv_timeout(Duration::from_secs(5))
            .expect("a write reached the stub");
        let probe = request.request_line.starts_with("GET /ping ")
            || request.request_line.starts_with("GET /api/v2/buckets?")
            || request.body.contains("q=SHOW%20");
        if !probe {
            return request;
        }
    }
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn v2_writes_to_the_bucket_with_a_token() {
    let (addr, seen) = stub(204);
    let gw = Gateway::start(
        &ConsumerToml::new(&format!("http://{addr}"), "unused")
            .influxdb("api = \"v2\"\norg = \"my org\"\nbucket = \"load&tests\"\ntoken = \"v2-secret-token\"\n")
            .toml(),
    );
    let answer = post_json(gw.addr, "/apiv0.1/events/register", &json!({"host": "lg"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let write = next_write(&seen);
    assert_eq!(
        write.request_line,
        "POST /api/v2/write?org=my%20org&bucket=load%26tests&precision=ms HTTP/1.1"
    );
    assert_eq!(
        header(&write, "authorization"),
        Some("Token v2-secret-token")
    );
    let lines: Vec<&str> = write.body.lines().collect();
    assert_eq!(lines.len(), 2, "{}", write.body);
    assert!(lines[0].starts_with("load_testing_events,event=started,host=lg,uuid="));
    assert!(lines[1].starts_with("load_testing,host=lg,uuid="));
    assert!(
        !gw.log().contains("v2-secret-token"),
        "the token is never logged"
    );
}

#[test]
fn v1_sends_basic_credentials_and_the_retention_policy() {
    let (addr, seen) = stub(204);
    let gw = Gateway::start(
        &ConsumerToml::new(&format!("http://{addr}"), "runs")
            .influxdb("username = \"writer\"\npassword = \"pa:ss\"\nretention_policy = \"week\"\ncreate_database = false\n")
            .toml(),
    );
    assert_eq!(
        post_json(gw.addr, "/apiv0.1/events/register", &json!({})).status,
        200
    );
    let write = next_write(&seen);
    assert_eq!(
        write.request_line,
        "POST /write?db=runs&precision=ms&rp=week HTTP/1.1"
    );
    // base64("writer:pa:ss")
    assert_eq!(
        header(&write, "authorization"),
        Some("Basic d3JpdGVyOnBhOnNz")
    );
    assert!(!gw.log().contains("pa:ss"));
}

#[test]
fn v1_creates_the_database_first() {
    let (addr, seen) = stub(200);
    let gw = Gateway::start(&ConsumerToml::new(&format!("http://{addr}"), "my db").toml());
    let create = next_write(&seen);
    assert_eq!(create.request_line, "POST /query HTTP/1.1");
    assert_eq!(create.body, "q=CREATE%20DATABASE%20%22my%20db%22");
    drop(gw);
}

#[test]
fn influxdb_failures_go_to_the_spool_and_refused_data_to_the_dead_letters() {
    // 5xx, 429 and auth failures keep the points in the spool to be written again; a 400 in
    // InfluxDB's words is data it refuses, which no retry can change: dead letters. A 400
    // without InfluxDB's JSON (a proxy's page) and a 200 with a body are not InfluxDB saying
    // anything of the data: kept.
    const REFUSED: &str = r#"{"error":"partial write: field type conflict"}"#;
    const PROXY_PAGE: &str = "<html><title>400 Bad Request</title></html>";
    const WEB_PAGE: &str = "<html>down for maintenance</html>";
    const PROXY_JSON: &str = r#"{"message":"Request header or cookie too large"}"#;
    for (status, body, influxdb, spooled, dead) in [
        (503, "", true, 1, 0),
        (429, "", true, 1, 0),
        (401, "", true, 1, 0),
        (404, "", true, 1, 0),
        (400, REFUSED, true, 0, 1),
        (400, PROXY_PAGE, true, 1, 0),
        (400, PROXY_JSON, false, 1, 0),
        (400, REFUSED, false, 1, 0),
        (200, WEB_PAGE, true, 1, 0),
    ] {
        let (addr, _seen) = stub_answering(status, body, influxdb);
        let gw = Gateway::start(
            &ConsumerToml::new(&format!("http://{addr}"), "runs")
                .influxdb("create_database = false\n")
                .toml(),
        );
        let answer = post_json(gw.addr, "/apiv0.1/events/register", &json!({}));
        assert_eq!(answer.status, 200, "influx {status}: {}", answer.body);
        assert_eq!(answer.json()["delivered"], false, "influx {status}");
        let dead_letter = answer.json()["dead_letter"].as_str().map(String::from);
        assert_eq!(
            dead_letter.is_some(),
            dead == 1,
            "influx {status}: {}",
            answer.body
        );
        if let Some(message) = dead_letter {
            assert!(
                message.contains(&format!("influxdb answered {status}")),
                "{message}"
            );
        }
        let states = crate::support::get(gw.addr, "/apiv0.1/states").json();
        assert_eq!(
            states["spool"]["records"], spooled,
            "influx {status}: {states}"
        );
        assert_eq!(
            states["dead_letters"]["records"], dead,
            "influx {status}: {states}"
        );
        assert_eq!(states["jobs"]["running"], 1, "the run goes on");
    }
}

#[test]
fn v3_writes_to_the_database_with_a_bearer_token_and_millisecond_precision() {
    let (addr, seen) = stub(204);
    let gw = Gateway::start(
        &ConsumerToml::new(&format!("http://{addr}"), "load tests")
            .influxdb("api = \"v3\"\ntoken = \"apiv3_secret-token\"\n")
            .toml(),
    );
    let answer = post_json(gw.addr, "/apiv0.1/events/register", &json!({"host": "lg"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ping = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(ping.request_line, "GET /ping HTTP/1.1");
    assert_eq!(
        header(&ping, "authorization"),
        Some("Bearer apiv3_secret-token"),
        "InfluxDB 3 may ask for the token on /ping too"
    );
    let write = next_write(&seen);
    // An explicit precision: InfluxDB 3 guesses it from the numbers' size otherwise.
    assert_eq!(
        write.request_line,
        "POST /api/v3/write_lp?db=load%20tests&precision=millisecond HTTP/1.1"
    );
    assert_eq!(
        header(&write, "authorization"),
        Some("Bearer apiv3_secret-token")
    );
    assert_eq!(write.body.lines().count(), 2, "{}", write.body);
    assert!(
        !gw.log().contains("apiv3_secret-token"),
        "the token is never logged"
    );
}

/// InfluxDB 3's answers as its documentation gives them: a partial write (400 naming the refused
/// line), 413 and 422 are refusals; 401 is a configuration to fix.
#[test]
fn influxdb_3_answers_are_read_as_documented() {
    const PARTIAL: &str = r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"load_testing,host=lg x=1","line_number":2,"error_message":"invalid column type for column 'clients', expected iox::column_type::field::float, got iox::column_type::field::string"}]}"#;
    for (status, body, expect) in [
        // Ok: the dead letter's reason; Err: kept, and what the log says to fix.
        (
            400,
            PARTIAL,
            Ok("line 2: invalid column type for column 'clients'"),
        ),
        // A 413 to lines this small is about a body limit set too low, not the lines.
        (
            413,
            r#"{"error":"Request body too large"}"#,
            Err("raise that body limit"),
        ),
        (
            422,
            r#"{"error":"write rejected"}"#,
            Ok("influxdb answered 422"),
        ),
        (
            401,
            r#"{"error":"unauthorized access"}"#,
            Err("credentials, database or bucket"),
        ),
    ] {
        let (addr, _seen) = stub_with(status, body);
        let gw = Gateway::start(
            &ConsumerToml::new(&format!("http://{addr}"), "runs")
                .influxdb("api = \"v3\"\ntoken = \"apiv3_secret-token\"\n")
                .toml(),
        );
        let answer = post_json(gw.addr, "/apiv0.1/events/register", &json!({"host": "lg"}));
        assert_eq!(answer.status, 200, "{status}: {}", answer.body);
        match expect {
            Ok(words) => {
                let why = answer.json()["dead_letter"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(why.contains(words), "{status}: {why}");
            }
            Err(fix) => {
                assert_eq!(
                    answer.json()["delivered"],
                    false,
                    "{status}: {}",
                    answer.body
                );
                assert!(answer.json().get("dead_letter").is_none(), "{status}");
                // The deliverer says so once the write failed, which may be just after the
                // answer.
                crate::support::wait_until(
                    std::time::Duration::from_secs(10),
                    "the log names what to fix",
                    || gw.log().contains(fix),
                );
            }
        }
    }
}

#[test]
fn v2_s_bucket_retention_refuses_old_points_of_the_write_api_at_the_door() {
    const BUCKETS: &str = r#"{"buckets":[{"name":"k6/short","retentionRules":[{"type":"expire","everySeconds":3600}]}]}"#;
    let (addr, seen) = stub_with(200, BUCKETS);
    let token = "k6-token-0123456789abcdef";
    let gw = Gateway::start(
        &ConsumerToml::new(&format!("http://{addr}"), "unused")
            .influxdb(
                "api = \"v2\"\norg = \"lab\"\nbucket = \"runs\"\ntoken = \"v2-secret-token\"\n",
            )
            .rest(&format!(
                "[[auth.token]]\nname = \"k6\"\ntoken = \"{token}\"\ndatabases = [\"k6\"]\n"
            ))
            .toml(),
    );
    let now = crate::line_protocol::now_ns();
    let body = format!(
        "vus value=1 {}\nvus value=2 {now}\n",
        now - 2 * 3_600_000_000_000
    );
    let auth = format!("Token {token}");
    let r = crate::support::request(
        gw.addr,
        "POST",
        "/write?db=k6&rp=short",
        &[("Authorization", &auth)],
        Some(&body),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "partial write: points beyond retention policy dropped=1"
    );
    // The bucket the write goes to was asked of, and only the kept line written to it.
    let mut asked = false;
    let write = loop {
        let request = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("the stub saw the write");
        asked |= request
            .request_line
            .starts_with("GET /api/v2/buckets?org=lab&name=k6%2Fshort ");
        if request.request_line.starts_with("POST /api/v2/write?") {
            break request;
        }
    };
    assert!(asked, "the bucket's retention was not read");
    assert!(
        write.request_line.contains("bucket=k6%2Fshort"),
        "{}",
        write.request_line
    );
    assert_eq!(write.body.trim(), format!("vus value=2 {now}"));
}

#[test]
fn the_write_api_s_field_types_are_read_from_influxdb_2_and_3_through_their_1x_query_endpoint() {
    const FIELD_KEYS: &str = r#"{"results":[{"statement_id":0,"series":[{"name":"http_reqs","columns":["fieldKey","fieldType"],"values":[["value","string"]]}]}]}"#;
    let token = "k6-token-0123456789abcdef";
    for (api, settings, auth) in [
        (
            "v2",
            "api = \"v2\"\norg = \"lab\"\nbucket = \"runs\"\ntoken = \"v2-secret-token\"\n",
            "Token v2-secret-token",
        ),
        (
            "v3",
            "api = \"v3\"\ntoken = \"apiv3_secret-token\"\n",
            "Bearer apiv3_secret-token",
        ),
    ] {
        let (addr, seen) = stub_with(200, FIELD_KEYS);
        let gw = Gateway::start(
            &ConsumerToml::new(&format!("http://{addr}"), "runs")
                .influxdb(settings)
                .rest(&format!(
                    "[[auth.token]]\nname = \"k6\"\ntoken = \"{token}\"\ndatabases = [\"k6\"]\n"
                ))
                .toml(),
        );
        // The first write to k6 waits for its field types: InfluxDB holds `value` as a string.
        let r = crate::support::request(
            gw.addr,
            "POST",
            "/write?db=k6",
            &[("Authorization", &format!("Token {token}"))],
            Some("http_reqs value=1 1000000000\n"),
        );
        assert_eq!(r.status, 400, "{api}: {}", r.body);
        assert_eq!(
            r.json()["error"],
            "partial write: field type conflict: input field \"value\" on measurement \"http_reqs\" is type float, already exists as type string dropped=1",
            "{api}"
        );
        let asked = std::iter::from_fn(|| seen.recv_timeout(Duration::from_secs(5)).ok())
            .find(|r| r.request_line.starts_with("POST /query ") && r.body.contains("db=k6&"))
            .unwrap_or_else(|| panic!("{api}: the field types of k6 were not asked for"));
        assert_eq!(asked.body, "db=k6&q=SHOW%20FIELD%20KEYS", "{api}");
        assert_eq!(header(&asked, "authorization"), Some(auth), "{api}");
    }
}
