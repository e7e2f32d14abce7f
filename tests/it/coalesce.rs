//! Group commit against a real `influxd`: requests that reach the writer together share one
//! InfluxDB write, each still answers for its own points (its `delivered` says whether they are
//! in InfluxDB, exactly as when written alone), and a request whose points InfluxDB refuses in a
//! shared write is the only one dead-lettered.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ConsumerToml, Gateway, Influxd, RawResponse, get, post_json, wait_until};

const REGISTER: &str = "/apiv0.1/events/register";
const COMMIT: &str = "/apiv0.1/events/commit";
/// Long enough that no tick writes a heartbeat during a test: every write is from a request.
const NO_TICKS: &str = "[jobs]\nheartbeat_interval = \"1h\"\n";
/// 2016-11-20T10:00:00Z: registers are dated from here, one second apart.
const BASE: i64 = 1_479_636_000;
/// Clients sending at once.
const THREADS: usize = 32;

fn states(addr: SocketAddr) -> Value {
    get(addr, "/apiv0.1/states").json()
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> RawResponse {
    let answer = post_json(addr, path, body);
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    answer
}

/// A gateway whose database exists and has taken one write, so the requests of a test are
/// the only writes that follow.
fn ready_gateway(influx: &Influxd, extra: &str) -> Gateway {
    // The gateway's own check of field types is off: these tests need InfluxDB to refuse.
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .influxdb("check_schema = false\n")
            .rest(&format!("{NO_TICKS}{extra}"))
            .toml(),
    );
    let first = post(
        gw.addr,
        REGISTER,
        &json!({"host": "first", "measurement": {"fields": {"clients": 0}}}),
    );
    assert_eq!(first.json()["delivered"], true, "{}", first.body);
    gw
}

/// Runs `f(k)` on `THREADS` threads that start together, and returns their results in order.
fn together<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let f = Arc::new(f);
    let threads: Vec<_> = (0..THREADS)
        .map(|k| {
            let (barrier, f) = (Arc::clone(&barrier), Arc::clone(&f));
            thread::spawn(move || {
                barrier.wait();
                f(k)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn influxdb_writes(addr: SocketAddr) -> u64 {
    states(addr)["counters"]["influxdb_writes"]
        .as_u64()
        .expect("counters.influxdb_writes")
}

#[test]
fn concurrent_requests_share_writes_and_every_point_is_stored() {
    const CYCLES: usize = 4;
    let influx = Influxd::start();
    let gw = ready_gateway(&influx, "");
    let writes_before = influxdb_writes(gw.addr);
    let addr = gw.addr;
    let runs: Vec<String> = together(move |k| {
        let mut uuids = Vec::new();
        for c in 0..CYCLES {
            let i = (k * CYCLES + c) as i64;
            let register = post(
                addr,
                REGISTER,
                &json!({"startedAt": BASE + i, "hostname": format!("lg-{k}"),
                        "measurement": {"fields": {"clients": i}}}),
            );
            assert_eq!(register.json()["delivered"], true, "{}", register.body);
            let uuid = register.json()["uuid"].as_str().unwrap().to_string();
            let stats = json!({"stats": [
                {"name": "/a", "method": "GET", "num_requests": i, "avg_response_time": 1.5},
                {"name": "Aggregated", "num_requests": i, "avg_response_time": 1.5}
            ], "total_rps": 2.5, "fail_ratio": 0});
            let commit = post(
                addr,
                COMMIT,
                &json!({"uuid": uuid, "startedAt": BASE + i + 1,
                        "measurement": {"fields": {"requestStats": stats.to_string()}}}),
            );
            assert_eq!(commit.json()["delivered"], true, "{}", commit.body);
            uuids.push(uuid);
        }
        uuids
    })
    .into_iter()
    .flatten()
    .collect();

    let n = THREADS * CYCLES;
    let requests = 2 * n as u64;
    let s = states(gw.addr);
    let writes = influxdb_writes(gw.addr) - writes_before;
    assert!(
        writes < requests,
        "{requests} requests made {writes} InfluxDB writes: none were shared\n{s}"
    );
    // 2 points per register (the first request's included), 4 per commit; every one recorded
    // in the log and delivered.
    assert_eq!(s["counters"]["points_written"], 2 + 6 * n, "{s}");
    assert_eq!(s["counters"]["points_spooled"], 2 + 6 * n, "{s}");
    assert_eq!(s["dead_letters"]["records"], 0, "{s}");

    // Every point is in InfluxDB.
    let all: HashSet<String> = runs.into_iter().collect();
    assert_eq!(all.len(), n);
    let started = influx.uuids("runs", "load_testing_events", Some("started"));
    let finished = influx.uuids("runs", "load_testing_events", Some("finished"));
    assert!(all.is_subset(&started), "every register's event is stored");
    assert_eq!(finished, all, "every commit's event is stored");
    assert!(all.is_subset(&influx.uuids("runs", "load_testing", None)));
    assert_eq!(influx.uuids("runs", "load_testing_result", None), all);
    assert_eq!(influx.count("runs", "load_testing"), n + 1);
    assert_eq!(influx.count("runs", "load_testing_result"), n);
    assert_eq!(influx.count("runs", "load_testing_request_stats"), 2 * n);
    let clients: HashSet<i64> = influx
        .series("runs", "load_testing")
        .into_iter()
        .filter(|r| r["host"] != "first")
        .map(|r| r["clients"].as_f64().unwrap() as i64)
        .collect();
    assert_eq!(clients, (0..n as i64).collect());
}

#[test]
fn a_refused_request_in_a_shared_write_is_the_only_dead_letter() {
    /// The request in each round whose points InfluxDB refuses.
    const ODD: usize = 13;
    /// Rounds at most until the refused request shared a write with others at least once
    /// (the first two requests of a round may each be written alone).
    const ROUNDS: usize = 8;
    let influx = Influxd::start();
    // Debug level: the gateway logs when it splits a refused shared write.
    let gw = ready_gateway(&influx, "[log]\nlevel = \"debug\"\n");
    let splits = |gw: &Gateway| gw.log().matches("influxdb refused a write of").count();
    let mut rounds = 0;
    let mut good = HashSet::new();
    while rounds < ROUNDS && splits(&gw) == 0 {
        let (addr, round) = (gw.addr, rounds);
        let answers = together(move |k| {
            // `clients` is a float in InfluxDB since the first request; a string conflicts.
            let (host, clients) = if k == ODD {
                (format!("odd-{round}"), json!("many"))
            } else {
                (format!("good-{round}-{k}"), json!(k))
            };
            let body = json!({"host": host, "measurement": {"fields": {"clients": clients}}});
            (host, post(addr, REGISTER, &body).json())
        });
        for (k, (host, answer)) in answers.into_iter().enumerate() {
            if k == ODD {
                assert_eq!(answer["delivered"], false, "{answer}");
                let why = answer["dead_letter"].as_str().unwrap_or_default();
                assert!(why.contains("conflict"), "{answer}");
            } else {
                assert_eq!(answer["delivered"], true, "{answer}");
                assert!(answer.get("dead_letter").is_none(), "{answer}");
                good.insert(host);
            }
        }
        rounds += 1;
    }
    assert!(
        splits(&gw) > 0,
        "in {rounds} rounds of {THREADS} requests sent together, the refused one never shared a write\n{}",
        gw.log()
    );

    // Only the refused requests are dead letters, one record each, with nothing of the others.
    let s = states(gw.addr);
    assert_eq!(s["dead_letters"]["records"], rounds, "{s}");
    assert_eq!(s["counters"]["points_dead_lettered"], 2 * rounds, "{s}");
    assert_eq!(
        s["counters"]["points_spooled"].as_u64().unwrap(),
        s["counters"]["points_written"].as_u64().unwrap() + 2 * rounds as u64,
        "every point went through the log: {s}"
    );
    let dead = gw.dir.join("data/dead-letter");
    let records: Vec<String> = std::fs::read_dir(&dead)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().unwrap() == "lp")
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut buried = HashSet::new();
    for lines in &records {
        // Both points of one refused register, and nothing else.
        let hosts: HashSet<&str> = lines
            .lines()
            .filter_map(|l| l.split(',').find_map(|tag| tag.strip_prefix("host=")))
            .map(|h| h.split(' ').next().unwrap())
            .collect();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        assert_eq!(hosts.len(), 1, "{lines}");
        buried.insert(hosts.into_iter().next().unwrap().to_string());
        assert!(lines.contains("clients=\"many\""), "{lines}");
    }
    assert_eq!(buried, (0..rounds).map(|r| format!("odd-{r}")).collect());

    // Every good request is stored; the refused value is not.
    wait_until(Duration::from_secs(5), "the points to be readable", || {
        influx.count("runs", "load_testing") == 1 + good.len()
    });
    let rows = influx.series("runs", "load_testing");
    let hosts: HashSet<String> = rows
        .iter()
        .filter_map(|r| r["host"].as_str().map(String::from))
        .filter(|h| h != "first")
        .collect();
    assert_eq!(hosts, good);
    assert!(rows.iter().all(|r| r["clients"].is_number()));
    let started: HashSet<String> = influx
        .series("runs", "load_testing_events")
        .into_iter()
        .filter_map(|r| r["host"].as_str().map(String::from))
        .collect();
    assert!(good.is_subset(&started));
}
