//! What a client with a token can make the gateway hold: a running job's heartbeat
//! (`limits.max_run_bytes`), the whole job table (`jobs.max_table_bytes`), and what a restart
//! with a full table costs. Memory is read from `/proc` of the real process.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, post_json};

const REGISTER: &str = "/apiv0.1/events/register";
const PROGRESS: &str = "/apiv0.1/events/progress";

/// A register body with `fields` string fields of `bytes` bytes each.
fn wide_register(fields: usize, bytes: usize) -> Value {
    let text = "x".repeat(bytes);
    let fields: serde_json::Map<String, Value> = (0..fields)
        .map(|i| (format!("f{i}"), Value::from(text.clone())))
        .collect();
    json!({"host": "h", "measurement": {"fields": fields}})
}

#[test]
fn three_hundred_one_mib_registers_are_refused_and_leave_the_gateway_small() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .server("max_body_bytes = 2097152")
            .toml(),
    );
    // 63 string fields of 16 300 bytes: about 1 MiB, each field within limits.max_string_bytes.
    let body = wide_register(63, 16_300);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..75 {
                    let r = post_json(gw.addr, REGISTER, &body);
                    assert_eq!(r.status, 413, "{}", r.body);
                    assert_eq!(r.json()["code"], "run_too_large");
                    let error = r.json()["error"].as_str().unwrap().to_string();
                    assert!(error.contains("limits.max_run_bytes (65536)"), "{error}");
                }
            });
        }
    });
    let rss_mib = gw.rss_kib() / 1024;
    assert!(
        rss_mib <= 256,
        "300 refused registers of 1 MiB left the gateway at {rss_mib} MiB resident"
    );
    // Nothing of them is kept: a small run registers.
    assert_eq!(
        post_json(gw.addr, REGISTER, &json!({"host": "h"})).status,
        200
    );
    let running = crate::support::get(gw.addr, "/apiv0.1/states").json()["jobs"]["running"].clone();
    assert_eq!(running, 1);
}

#[test]
fn progress_that_makes_a_run_too_large_is_refused_and_the_run_goes_on() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest("[limits]\nmax_run_bytes = 4096\n")
            .toml(),
    );
    let uuid = post_json(gw.addr, REGISTER, &wide_register(2, 1000)).json()["uuid"].clone();
    let big = json!({"uuid": uuid, "measurement": {"fields": {"note": "y".repeat(5000)}}});
    let r = post_json(gw.addr, PROGRESS, &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["code"], "run_too_large");
    let small = json!({"uuid": uuid, "measurement": {"fields": {"users": 5}}});
    assert_eq!(post_json(gw.addr, PROGRESS, &small).status, 200);
}

/// Registers wide runs until the table is full; returns how many fit.
fn fill_table(gw: &Gateway) -> usize {
    let body = wide_register(60, 1000);
    let mut registered = 0;
    loop {
        let r = post_json(gw.addr, REGISTER, &body);
        if r.status == 503 {
            assert_eq!(r.json()["code"], "job_table_full", "{}", r.body);
            assert_eq!(r.header("retry-after"), Some("30"));
            assert!(
                r.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("jobs.max_table_bytes"),
                "{}",
                r.body
            );
            return registered;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        registered += 1;
        assert!(registered < 10_000, "the table never filled");
    }
}

/// Restarts the gateway (killed first when `kill`), and returns how long it took to listen
/// and its peak resident memory in MiB.
fn restart(gw: &mut Gateway, kill: bool) -> (Duration, u64) {
    if kill {
        gw.kill();
    }
    let began = Instant::now();
    gw.restart();
    let took = began.elapsed();
    (took, gw.peak_rss_kib() / 1024)
}

#[test]
fn a_full_job_table_restarts_within_256_mib() {
    // InfluxDB is away (nothing listens on port 9): every point waits in the log, and the
    // gateway answers from the disk.
    let mut gw = Gateway::start(
        &ConsumerToml::new("http://127.0.0.1:9", "runs")
            .rest("[delivery]\nacknowledge = \"disk\"\n[jobs]\nheartbeat_interval = \"1h\"\nmax_table_bytes = 67108864\n")
            .toml(),
    );
    let registered = fill_table(&gw);
    assert!(
        registered > 200,
        "only {registered} runs of 60 KiB fit 64 MiB"
    );
    let steady_mib = gw.rss_kib() / 1024;

    // Killed: the table comes back from the log's changes.
    let (took, peak_mib) = restart(&mut gw, true);
    let running = crate::support::get(gw.addr, "/apiv0.1/states").json()["jobs"]["running"].clone();
    assert_eq!(running, registered, "{}", gw.log());
    // How long it takes is the benchmark's to tell; here it must come back at all, even on a
    // busy machine.
    assert!(took <= Duration::from_secs(60), "the restart took {took:?}");
    assert!(peak_mib <= 256, "the restart peaked at {peak_mib} MiB");
    assert!(
        peak_mib <= 2 * steady_mib + 16,
        "the restart peaked at {peak_mib} MiB; the table held {steady_mib} MiB"
    );
    // The table is as full as before.
    assert_eq!(
        post_json(gw.addr, REGISTER, &wide_register(60, 1000)).json()["code"],
        "job_table_full"
    );

    // Stopped: the table comes back from the snapshot written at the stop.
    let (took, peak_mib) = restart(&mut gw, false);
    let running = crate::support::get(gw.addr, "/apiv0.1/states").json()["jobs"]["running"].clone();
    assert_eq!(running, registered);
    assert!(took <= Duration::from_secs(60), "the restart took {took:?}");
    assert!(
        peak_mib <= 2 * steady_mib + 16,
        "the restart peaked at {peak_mib} MiB; the table held {steady_mib} MiB"
    );
    eprintln!(
        "{registered} runs of 60 KiB: {steady_mib} MiB resident; restarts peak at {peak_mib} MiB, the last took {took:?}"
    );
}
