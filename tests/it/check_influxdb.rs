//! `--check-influxdb`: the gateway contacts InfluxDB and says whether its writes can work, with
//! InfluxDB's own reason when not (exit 3). InfluxDB 1.x is a real `influxd` with
//! authentication on; InfluxDB 2 and 3, which the suite cannot run, are a loopback stub
//! answering as their write endpoints do (v2 answers an empty body with 400 "writing requires
//! points" after it checked the token and the bucket).

use std::net::{SocketAddr, TcpListener};
use std::process::Output;

use crate::support::{ConsumerToml, Gateway, Influxd, stand_in};

/// Runs `--check-influxdb` against `influx_url` and `db`; its exit code and its output.
fn check_db(influx_url: &str, db: &str, influx_extra: &str) -> (i32, String) {
    let out: Output = Gateway::spawn_with(
        &["--check-influxdb"],
        Some(
            &ConsumerToml::new(influx_url, db)
                .influxdb(influx_extra)
                .toml(),
        ),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn check(influx_url: &str, influx_extra: &str) -> (i32, String) {
    check_db(influx_url, "runs", influx_extra)
}

/// influxd with authentication: an admin, `writer` (WRITE and READ on `runs`), `reader` (READ
/// only), and `runs`, whose default policy keeps points one hour and holds two runs.
fn influxd_with_users() -> Influxd {
    let influx = Influxd::start_with("auth-enabled = true");
    influx.exec_as(
        "",
        "",
        "CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES",
    );
    for q in [
        "CREATE DATABASE runs",
        "CREATE RETENTION POLICY onehour ON runs DURATION 1h REPLICATION 1 DEFAULT",
        "CREATE USER writer WITH PASSWORD 'writerpw'",
        "GRANT ALL ON runs TO writer",
        "CREATE USER reader WITH PASSWORD 'readerpw'",
        "GRANT READ ON runs TO reader",
    ] {
        influx.exec_as("admin", "adminpw", q);
    }
    influx
}

fn as_user(user: &str, password: &str, more: &str) -> String {
    format!("username = \"{user}\"\npassword = \"{password}\"\ncreate_database = false\n{more}")
}

#[test]
fn check_influxdb_proves_a_v1_user_may_write_and_names_each_reason_when_not() {
    let influx = influxd_with_users();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let lines = format!(
        "load_testing,uuid=a,host=h clients=1 {now_ms}\nload_testing,uuid=b,host=h clients=1 {now_ms}"
    );
    let write = crate::support::request(
        influx.addr(),
        "POST",
        "/write?db=runs&precision=ms&u=admin&p=adminpw",
        &[],
        Some(&lines),
    );
    assert_eq!(write.status, 204, "{}", write.body);

    let (code, out) = check(&influx.url, &as_user("writer", "writerpw", ""));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: InfluxDB answers"), "{out}");
    assert!(
        out.contains("ok: may write to the database \"runs\" (an empty write: nothing was stored)"),
        "{out}"
    );
    assert!(
        out.contains("ok: points are kept 1h (retention policy \"onehour\")"),
        "{out}"
    );
    assert!(
        out.contains("ok: the uuid tag holds about 2 values (one per run; load_testing 2)")
            && out.contains("max-values-per-tag, 100000"),
        "{out}"
    );
    // Nothing was left behind by the check.
    let count = influx.exec_as(
        "admin",
        "adminpw",
        "SELECT count(clients) FROM runs..load_testing",
    );
    assert_eq!(
        count["results"][0]["series"][0]["values"][0][1], 2,
        "{count}"
    );

    let (code, out) = check(&influx.url, &as_user("writer", "wrong", ""));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("FAILED: cannot write to the database \"runs\" as user \"writer\": influxdb answered 401: authorization failed -- the credentials are wrong"),
        "{out}"
    );

    let (code, out) = check(&influx.url, &as_user("reader", "readerpw", ""));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("influxdb answered 403: \"reader\" user is not authorized to write to database \"runs\" -- the credentials are valid but may not write there"),
        "{out}"
    );

    let (code, out) = check_db(&influx.url, "nope", &as_user("writer", "writerpw", ""));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("FAILED: cannot write to the database \"nope\" as user \"writer\": influxdb answered 404: database not found: \"nope\" -- it does not exist: create it, or fix its name"),
        "{out}"
    );

    // Nothing listens: the check says so, and the plain configuration check stays offline.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (code, out) = check(&format!("http://{closed}"), "");
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(
            "FAILED: InfluxDB does not answer /ping at influxdb.url: influxdb is unreachable:"
        ),
        "{out}"
    );
    let offline = Gateway::spawn_with(
        &["--check-config"],
        Some(&ConsumerToml::new(&format!("http://{closed}"), "runs").toml()),
    );
    assert!(offline.status.success());
    assert!(String::from_utf8_lossy(&offline.stdout).contains("InfluxDB was not contacted"));
}

/// A loopback InfluxDB 2 or 3 stand-in: `GET /ping` answers 204, every other request
/// `status` with `body`.
fn stub(status: u16, body: &'static str) -> SocketAddr {
    stand_in(move |_| {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    })
    .0
}

const V2: &str = "api = \"v2\"\norg = \"lab\"\nbucket = \"runs\"\ntoken = \"secret-token\"\n";
const V3: &str = "api = \"v3\"\ntoken = \"secret-token\"\n";

#[test]
fn check_influxdb_reads_the_v2_and_v3_write_answers() {
    let url = |addr: SocketAddr| format!("http://{addr}");
    // InfluxDB 2 checks the token and the bucket, then refuses the empty body.
    let good = stub(
        400,
        r#"{"code":"invalid","message":"writing requires points"}"#,
    );
    let (code, out) = check(&url(good), V2);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: may write to the bucket \"runs\" of org \"lab\" (an empty write, which InfluxDB checked and then refused as empty: \"writing requires points\"; nothing was stored)"),
        "{out}"
    );
    let unauthorized = stub(
        401,
        r#"{"code":"unauthorized","message":"unauthorized access"}"#,
    );
    let (code, out) = check(&url(unauthorized), V2);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("FAILED: cannot write to the bucket \"runs\" of org \"lab\" with the token: influxdb answered 401: unauthorized access -- the credentials are wrong"),
        "{out}"
    );
    assert!(!out.contains("secret-token"), "{out}");
    let missing = stub(
        404,
        r#"{"code":"not found","message":"bucket \"runs\" not found"}"#,
    );
    let (code, out) = check(&url(missing), V2);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("influxdb answered 404: bucket \"runs\" not found -- it does not exist"),
        "{out}"
    );

    let (code, out) = check(&url(stub(204, "")), V3);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: may write to the database \"runs\" (an empty write: nothing was stored)")
            && out.contains("note: InfluxDB 3 does not tell its retention over this API"),
        "{out}"
    );
    let (code, out) = check(
        &url(stub(
            401,
            r#"{"error":"the request was not authenticated"}"#,
        )),
        V3,
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(
            "influxdb answered 401: the request was not authenticated -- the credentials are wrong"
        ),
        "{out}"
    );
}
