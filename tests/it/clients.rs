//! InfluxDB's own client libraries from PyPI writing through the gateway's InfluxDB write API
//! into a real influxd: the v1 library (`influxdb`), the v2 one (`influxdb-client`), InfluxDB 3's
//! (`influxdb3-python`) and Locust 2.x with `locust-influxdb-listener`. Each test starts influxd
//! and the gateway with a token that may write `clients`, runs one case of a script under
//! scripts/e2e/ (`clients_v1.py`, `clients_v2.py`, `clients_v3.py`, `clients_locust.py`) with the
//! test virtualenv's Python, which reads the points back from influxd and exits 1 naming what
//! differs, then reads back here what was stored: counts, values, tags, times at their precision.
//! The virtualenv (target/e2e-venv, pinned in scripts/lib/python-venv.sh) is made by
//! scripts/test.sh; without it the tests fail saying so. They never mock a library.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::support::{ConsumerToml, Gateway, Influxd, run_to_completion, wait_until};

/// The token the libraries write with; it may write [`DB`] only.
const TOKEN: &str = "clients-token-0123456789abcdef";
const DB: &str = "clients";
/// A database the token may not write.
const FORBIDDEN: &str = "not_yours";
/// How long one script may run (Locust's run is 4 s; a busy machine starts Python slowly).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
const NANOS_PER_SECOND: i64 = 1_000_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtualenv's Python, with `module` importable; panics saying what installs it.
fn python(module: &str) -> PathBuf {
    let python = root().join("target/e2e-venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: scripts/test.sh installs it (the test virtualenv with the InfluxDB client \
         libraries pinned in scripts/lib/python-venv.sh)",
        python.display()
    );
    let import = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        import.status.success(),
        "the Python module {module} is not in the test virtualenv: scripts/test.sh installs it \
         (pinned in scripts/lib/python-venv.sh):\n{}",
        String::from_utf8_lossy(&import.stderr)
    );
    python
}

/// influxd and a gateway in front of it whose token may write [`DB`].
fn start() -> (Influxd, Gateway) {
    start_with("")
}

/// [`start`], with `delivery` (lines of a `[delivery]` table; empty: the tests' default).
fn start_with(delivery: &str) -> (Influxd, Gateway) {
    let influx = Influxd::start();
    let delivery = match delivery {
        "" => String::new(),
        lines => format!("[delivery]\n{lines}\n"),
    };
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "{delivery}[[auth.token]]\nname = \"clients\"\ntoken = \"{TOKEN}\"\ndatabases = [\"{DB}\"]\n"
            ))
            .toml(),
    );
    (influx, gw)
}

/// Runs `case` of scripts/e2e/`script` (importing `module`) against the gateway; panics with
/// its output unless it exits 0. Returns its standard output.
fn run_case(script: &str, module: &str, case: &str, influx: &Influxd, gw: &Gateway) -> String {
    let mut cmd = Command::new(python(module));
    cmd.arg(root().join("scripts/e2e").join(script))
        .arg(case)
        .args(["--gateway", &format!("http://{}", gw.addr)])
        .args(["--token", TOKEN, "--database", DB])
        .args(["--forbidden-database", FORBIDDEN])
        .args(["--influxd", &influx.url]);
    let out = run_to_completion(cmd, SCRIPT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {case} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The rows of `q` on [`DB`] with times in nanoseconds, as maps from column to value (null
/// columns left out).
fn rows_ns(influx: &Influxd, q: &str) -> Vec<Map<String, Value>> {
    let answer = influx.query_ns(DB, q);
    let result = &answer["results"][0];
    // A database nothing was ever written to holds no rows.
    if result["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("database not found"))
    {
        return Vec::new();
    }
    assert!(result.get("error").is_none(), "{q}: {result}");
    let mut rows = Vec::new();
    for series in result["series"].as_array().into_iter().flatten() {
        let columns = series["columns"].as_array().expect("columns");
        for values in series["values"].as_array().into_iter().flatten() {
            let mut row = Map::new();
            for (column, value) in columns.iter().zip(values.as_array().expect("values")) {
                if !value.is_null() {
                    row.insert(
                        column.as_str().unwrap_or_default().to_string(),
                        value.clone(),
                    );
                }
            }
            rows.push(row);
        }
    }
    rows
}

fn time_ns(row: &Map<String, Value>) -> i64 {
    row["time"].as_i64().expect("an integer time")
}

fn tag<'a>(row: &'a Map<String, Value>, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("no tag {name}: {row:?}"))
}

/// The nanoseconds below the second of the instant the scripts write at (their `NANOS`:
/// 123 456 789) as each precision keeps them.
fn fraction_at(unit: &str) -> i64 {
    match unit {
        "s" => 0,
        "ms" => 123_000_000,
        "u" | "us" => 123_456_000,
        "n" | "ns" => 123_456_789,
        _ => panic!("unknown unit {unit}"),
    }
}

/// Every row of `measurement` carries the same instant at the precision its `precision` tag
/// names (one row per name of `units`), with the values the scripts write.
fn assert_precisions(influx: &Influxd, measurement: &str, units: &[&str]) {
    let rows = rows_ns(influx, &format!("SELECT * FROM \"{measurement}\""));
    let mut seen: Vec<&str> = rows
        .iter()
        .map(|r| tag(r, "precision"))
        .filter(|p| units.contains(p))
        .collect();
    seen.sort_unstable();
    let mut wanted = units.to_vec();
    wanted.sort_unstable();
    assert_eq!(seen, wanted, "{measurement}: {rows:?}");
    let seconds: Vec<i64> = rows
        .iter()
        .filter(|r| units.contains(&tag(r, "precision")))
        .map(|r| time_ns(r).div_euclid(NANOS_PER_SECOND))
        .collect();
    assert!(
        seconds.windows(2).all(|w| w[0] == w[1]),
        "{measurement}: one instant at every precision: {rows:?}"
    );
    for row in rows.iter().filter(|r| units.contains(&tag(r, "precision"))) {
        let unit = tag(row, "precision");
        assert_eq!(
            time_ns(row).rem_euclid(NANOS_PER_SECOND),
            fraction_at(unit),
            "{measurement}: the time written at precision {unit}: {row:?}"
        );
        assert_eq!(row["value"], 1.5, "{row:?}");
        assert_eq!(row["count"], 7, "{row:?}");
        assert_eq!(row["label"], format!("p {unit}"), "{row:?}");
    }
}

fn now_ns() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(since.as_nanos()).expect("nanoseconds fit an i64 until 2262")
}

/// Nothing of `measurement` is stored in [`DB`], and [`FORBIDDEN`] was never made in influxd.
fn refused_nowhere(influx: &Influxd, measurement: &str) {
    assert!(
        rows_ns(influx, &format!("SELECT * FROM \"{measurement}\"")).is_empty(),
        "{measurement}: a refused write was stored"
    );
    let databases = influx.query("", "SHOW DATABASES").to_string();
    assert!(
        !databases.contains(&format!("\"{FORBIDDEN}\"")),
        "the database the token may not write was created: {databases}"
    );
}

// ---------------------------------------------------------------------------------------------
// influxdb (v1)
// ---------------------------------------------------------------------------------------------

const V1: (&str, &str) = ("clients_v1.py", "influxdb");

fn run_v1(case: &str, influx: &Influxd, gw: &Gateway) -> String {
    run_case(V1.0, V1.1, case, influx, gw)
}

#[test]
fn v1_library_writes_dicts_at_each_time_precision() {
    let (influx, gw) = start();
    run_v1("precisions", &influx, &gw);
    assert_precisions(&influx, "v1_precision", &["s", "ms", "u", "n"]);
    let rows = rows_ns(
        &influx,
        "SELECT * FROM v1_precision WHERE \"precision\" = 'none'",
    );
    assert_eq!(rows.len(), 1, "the point without time_precision: {rows:?}");
    assert_eq!(time_ns(&rows[0]).rem_euclid(NANOS_PER_SECOND), 654_321_000);
    assert_eq!(rows[0]["ok"], false);
    assert_eq!(tag(&rows[0], "host"), "lg-1");
}

#[test]
fn v1_library_writes_to_a_retention_policy() {
    let (influx, gw) = start();
    run_v1("retention_policy", &influx, &gw);
    let rows = rows_ns(&influx, "SELECT * FROM \"week\".\"v1_rp\"");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        time_ns(&rows[0]).rem_euclid(NANOS_PER_SECOND),
        fraction_at("ms")
    );
    assert_eq!(rows[0]["value"], 3.0);
    assert!(rows_ns(&influx, "SELECT * FROM \"autogen\".\"v1_rp\"").is_empty());
}

#[test]
fn v1_library_writes_in_batches() {
    let (influx, gw) = start();
    run_v1("batches", &influx, &gw);
    let rows = rows_ns(&influx, "SELECT * FROM v1_batch");
    let mut seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..250).collect::<Vec<_>>());
    let times: Vec<i64> = rows.iter().map(time_ns).collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 1_000_000),
        "one millisecond apart"
    );
}

#[test]
fn v1_library_points_without_time_get_the_gateways_time() {
    let (influx, gw) = start();
    let before = now_ns();
    run_v1("no_time", &influx, &gw);
    let after = now_ns();
    let rows = rows_ns(&influx, "SELECT * FROM v1_now");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert!(
            (before..=after).contains(&time_ns(row)),
            "stamped {row:?}, not within [{before}, {after}]"
        );
    }
}

#[test]
fn v1_library_pings_creates_and_lists_its_database() {
    let (influx, gw) = start();
    run_v1("databases", &influx, &gw);
    let rows = rows_ns(&influx, "SELECT * FROM v1_created");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["value"], 1);
    assert_eq!(time_ns(&rows[0]).rem_euclid(NANOS_PER_SECOND), 0);
}

#[test]
fn v1_library_raises_its_client_error_with_the_gateways_message_on_401_and_403() {
    let (influx, gw) = start();
    run_v1("errors", &influx, &gw);
    refused_nowhere(&influx, "v1_refused");
}

// ---------------------------------------------------------------------------------------------
// influxdb-client (v2)
// ---------------------------------------------------------------------------------------------

const V2: (&str, &str) = ("clients_v2.py", "influxdb_client");

fn run_v2(case: &str, influx: &Influxd, gw: &Gateway) -> String {
    run_case(V2.0, V2.1, case, influx, gw)
}

#[test]
fn v2_library_writes_synchronously_at_each_write_precision() {
    let (influx, gw) = start();
    run_v2("precisions", &influx, &gw);
    assert_precisions(&influx, "v2_precision", &["s", "ms", "us", "ns"]);
}

#[test]
fn v2_library_writes_to_bucket_database_slash_retention_policy() {
    let (influx, gw) = start();
    run_v2("bucket_rp", &influx, &gw);
    let rows = rows_ns(&influx, "SELECT * FROM \"week\".\"v2_rp\"");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(time_ns(&rows[0]).rem_euclid(NANOS_PER_SECOND), 0);
    assert!(rows_ns(&influx, "SELECT * FROM \"autogen\".\"v2_rp\"").is_empty());
}

#[test]
fn v2_library_batching_writer_stores_every_record_by_its_close() {
    let (influx, gw) = start();
    run_v2("batching", &influx, &gw);
    let rows = rows_ns(&influx, "SELECT * FROM v2_batch");
    let mut seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..120).collect::<Vec<_>>());
}

/// Both libraries' batching writers against a gateway answering once the records are on disk
/// (its default): they keep their connections, so the thread that writes the log's group sends
/// their answers; every point reaches influxd, once.
#[test]
fn the_libraries_batching_writers_store_every_point_answered_at_the_disk() {
    let (influx, gw) = start_with("acknowledge = \"disk\"");
    run_v1("batches", &influx, &gw);
    run_v2("batching", &influx, &gw);
    let seqs = |measurement: &str| {
        let rows = rows_ns(&influx, &format!("SELECT * FROM {measurement}"));
        let mut seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        seqs.sort_unstable();
        seqs
    };
    wait_until(Duration::from_secs(30), "every point delivered", || {
        seqs("v1_batch").len() >= 250 && seqs("v2_batch").len() >= 120
    });
    assert_eq!(seqs("v1_batch"), (0..250).collect::<Vec<_>>());
    assert_eq!(seqs("v2_batch"), (0..120).collect::<Vec<_>>());
}

#[test]
fn v2_library_records_without_time_get_the_gateways_time() {
    let (influx, gw) = start();
    let before = now_ns();
    run_v2("no_time", &influx, &gw);
    let after = now_ns();
    let rows = rows_ns(&influx, "SELECT * FROM v2_now");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert!((before..=after).contains(&time_ns(row)), "{row:?}");
    }
}

#[test]
fn v2_library_ping_version_and_health_pass() {
    let (influx, gw) = start();
    let out = run_v2("health", &influx, &gw);
    assert!(out.contains("ok: health"), "{out}");
}

#[test]
fn v2_library_raises_api_exception_with_the_gateways_message_on_401_and_403() {
    let (influx, gw) = start();
    run_v2("errors", &influx, &gw);
    refused_nowhere(&influx, "v2_refused");
}

// ---------------------------------------------------------------------------------------------
// influxdb3-python
// ---------------------------------------------------------------------------------------------

const V3: (&str, &str) = ("clients_v3.py", "influxdb_client_3");

fn run_v3(case: &str, influx: &Influxd, gw: &Gateway) -> String {
    run_case(V3.0, V3.1, case, influx, gw)
}

#[test]
fn v3_library_writes_through_api_v2_write_by_default() {
    let (influx, gw) = start();
    run_v3("write_v2_endpoint", &influx, &gw);
    assert_precisions(&influx, "v3_via_v2", &["s", "ms", "us", "ns"]);
    let stamped = rows_ns(
        &influx,
        "SELECT * FROM v3_via_v2 WHERE \"precision\" = 'none'",
    );
    assert_eq!(stamped.len(), 1, "{stamped:?}");
}

#[test]
fn v3_library_writes_through_api_v3_write_lp() {
    let (influx, gw) = start();
    run_v3("write_lp", &influx, &gw);
    assert_precisions(&influx, "v3_write_lp", &["s", "ms", "us", "ns"]);
}

#[test]
fn v3_library_field_type_conflict_raises_its_partial_write_error() {
    let (influx, gw) = start();
    run_v3("refused", &influx, &gw);
    let rows = rows_ns(&influx, "SELECT * FROM v3_conflict");
    let cases: Vec<&str> = rows.iter().map(|r| tag(r, "case")).collect();
    assert_eq!(
        cases,
        ["first", "partial"],
        "the valid lines only: {rows:?}"
    );
    assert!(rows.iter().all(|r| r["value"].is_f64()), "{rows:?}");
}

#[test]
fn v3_library_raises_influxdb_error_with_the_gateways_message_on_401_and_403() {
    let (influx, gw) = start();
    run_v3("errors", &influx, &gw);
    refused_nowhere(&influx, "v3_refused");
}

// ---------------------------------------------------------------------------------------------
// locust-influxdb-listener on Locust 2.x
// ---------------------------------------------------------------------------------------------

#[test]
fn locust_influxdb_listener_records_a_locust_run_through_the_gateway() {
    let (influx, gw) = start();
    let out = run_case(
        "clients_locust.py",
        "locust, locust_influxdb_listener",
        "run",
        &influx,
        &gw,
    );
    let requests = rows_ns(&influx, "SELECT * FROM locust_requests");
    assert!(!requests.is_empty(), "{out}");
    assert!(
        requests
            .iter()
            .all(|r| tag(r, "name") == "/ping" && tag(r, "suite") == "clients"),
        "{requests:?}"
    );
    let events: Vec<String> = rows_ns(&influx, "SELECT * FROM locust_events")
        .iter()
        .map(|r| r["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        events.iter().any(|e| e == "test_started") && events.iter().any(|e| e == "quitting"),
        "{events:?}"
    );
}
