//! Counters for the state page (`/apiv0.1/states`) and the Prometheus metrics: requests per route and
//! status class, request durations, points written, spooled and dead-lettered, writes sent to
//! InfluxDB, and the process's resident memory.
//!
//! Counters are plain atomics, bumped on the request path without a lock; reading them is a
//! snapshot that may be a moment out of step between counters, which a state page can afford.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use crate::code::Code;

/// Where requests that match no route (404s, errors before routing) are counted.
const OTHER: &str = "other";
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A request-duration histogram for one route; buckets count cumulatively at render time.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Stats {
    /// The routes counted apart (from the route table), then [`OTHER`].
    routes: Vec<&'static str>,
    requests: Vec<[AtomicU64; 5]>,
    durations: Vec<Histogram>,
    pub points_written: AtomicU64,
    pub points_spooled: AtomicU64,
    pub points_replayed: AtomicU64,
    pub points_dead_lettered: AtomicU64,
    /// Write requests sent to InfluxDB; requests that share a write (group commit) count once.
    pub influxdb_writes: AtomicU64,
    pub heartbeats_dropped: AtomicU64,
    /// Heartbeats InfluxDB refused (each run's first refusal for a reason is dead-lettered).
    pub heartbeats_refused: AtomicU64,
    /// Refused points that found no room in the dead letters (`storage.max_dead_letter_bytes`).
    pub points_dropped: AtomicU64,
    pub heartbeat_ticks: AtomicU64,
    pub jobs_expired: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Answers refusing a request, by their error code.
    refusals: Refusals,
}

/// One counter per [`Code::ALL`], in its order (`code as usize`).
struct Refusals([AtomicU64; Code::ALL.len()]);

impl Default for Refusals {
    fn default() -> Refusals {
        Refusals(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Stats {
    /// Counters for requests to each of `routes` (by their index there) and to no route.
    pub fn new(routes: &[&'static str]) -> Stats {
        let mut names = routes.to_vec();
        names.push(OTHER);
        Stats {
            requests: names.iter().map(|_| Default::default()).collect(),
            durations: names.iter().map(|_| Histogram::default()).collect(),
            routes: names,
            ..Stats::default()
        }
    }

    /// Counts one answer refusing a request with `code` (the HTTP layer's and the API's alike,
    /// a connection refused at the accept too).
    pub fn refusal(&self, code: Code) {
        if let Some(n) = self.refusals.0.get(code as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many answers refused a request with `code` since the start.
    pub fn refusals_of(&self, code: Code) -> u64 {
        self.refusals
            .0
            .get(code as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// `{"too_many_bodies": 3, ...}`: the refusals by code, in the table's order, the codes
    /// never answered left out.
    pub fn refusals_json(&self) -> Value {
        let mut codes = Map::new();
        for code in Code::ALL {
            let n = self.refusals_of(*code);
            if n > 0 {
                codes.insert(code.as_str().into(), json!(n));
            }
        }
        Value::Object(codes)
    }

    /// Counts one answered request; `route` is an index into the routes given to
    /// [`Stats::new`], and any index past them counts as `other`.
    pub fn request(&self, route: usize, status: u16, duration: std::time::Duration) {
        let Some(last) = self.routes.len().checked_sub(1) else {
            return;
        };
        let route = route.min(last);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[route][class].fetch_add(1, Ordering::Relaxed);
        let h = &self.durations[route];
        let secs = duration.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text format (version 0.0.4), followed by `counters`
    /// and `gauges` (name, help, value) that the caller reads from elsewhere (a counter's name
    /// without its `_total`, which is added).
    pub fn prometheus(
        &self,
        counters: &[(&str, &str, u64)],
        gauges: &[(&str, &str, f64)],
    ) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP metrics_consumer_requests_total Requests answered, by route and status class.\n");
        out.push_str("# TYPE metrics_consumer_requests_total counter\n");
        for (route, row) in self.routes.iter().zip(&self.requests) {
            for (class, n) in CLASSES.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "metrics_consumer_requests_total{{route=\"{route}\",status=\"{class}\"}} {}",
                    get(n)
                );
            }
        }
        out.push_str("# HELP metrics_consumer_request_duration_seconds Time from accepting a request to its answer.\n");
        out.push_str("# TYPE metrics_consumer_request_duration_seconds histogram\n");
        for (route, h) in self.routes.iter().zip(&self.durations) {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += get(n);
                let _ = writeln!(
                    out,
                    "metrics_consumer_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = get(&h.count);
            let _ = writeln!(
                out,
                "metrics_consumer_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "metrics_consumer_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                get(&h.sum_micros) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "metrics_consumer_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        out.push_str("# HELP metrics_consumer_refusals_total Answers refusing a request, by error code (docs/errors.md; the code gives the status).\n");
        out.push_str("# TYPE metrics_consumer_refusals_total counter\n");
        for code in Code::ALL {
            let _ = writeln!(
                out,
                "metrics_consumer_refusals_total{{code=\"{}\"}} {}",
                code.as_str(),
                self.refusals_of(*code)
            );
        }
        for (name, help, c) in self.counters() {
            let _ = writeln!(out, "# HELP metrics_consumer_{name}_total {help}");
            let _ = writeln!(out, "# TYPE metrics_consumer_{name}_total counter");
            let _ = writeln!(out, "metrics_consumer_{name}_total {}", get(c));
        }
        for (name, help, n) in counters {
            let _ = writeln!(out, "# HELP metrics_consumer_{name}_total {help}");
            let _ = writeln!(out, "# TYPE metrics_consumer_{name}_total counter");
            let _ = writeln!(out, "metrics_consumer_{name}_total {n}");
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP metrics_consumer_{name} {help}");
            let _ = writeln!(out, "# TYPE metrics_consumer_{name} gauge");
            let _ = writeln!(out, "metrics_consumer_{name} {value}");
        }
        out
    }

    /// Every counter but the requests', once: its name (the state page's key; Prometheus adds
    /// `metrics_consumer_` before it and `_total` after), what it counts, and the counter.
    pub fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 11] {
        [
            (
                "points_written",
                "Points InfluxDB stored.",
                &self.points_written,
            ),
            (
                "points_spooled",
                "Points recorded in the log under storage.dir (every accepted point).",
                &self.points_spooled,
            ),
            (
                "points_replayed",
                "Points InfluxDB stored after a write of them had failed.",
                &self.points_replayed,
            ),
            (
                "points_dead_lettered",
                "Points InfluxDB refused, kept in the dead letters.",
                &self.points_dead_lettered,
            ),
            (
                "influxdb_writes",
                "Write requests sent to InfluxDB (requests that share a write count once).",
                &self.influxdb_writes,
            ),
            (
                "heartbeats_dropped",
                "Heartbeats not recorded (the log was full or the disk failed).",
                &self.heartbeats_dropped,
            ),
            (
                "heartbeats_refused",
                "Heartbeats InfluxDB refused.",
                &self.heartbeats_refused,
            ),
            (
                "points_dropped",
                "Refused points that found no room in the dead letters.",
                &self.points_dropped,
            ),
            (
                "heartbeat_ticks",
                "Ticks of the heartbeat thread.",
                &self.heartbeat_ticks,
            ),
            (
                "jobs_expired",
                "Runs that expired without a commit.",
                &self.jobs_expired,
            ),
            (
                "auth_failures",
                "Requests refused for a wrong or malformed token, or from an address whose failed token checks are spent (429).",
                &self.auth_failures,
            ),
        ]
    }

    /// The state page's `counters`: the requests per route and status class, and every other
    /// counter by its name.
    pub fn counters_json(&self) -> Value {
        let mut all = Map::new();
        all.insert("requests".into(), self.requests_json());
        all.insert("refusals".into(), self.refusals_json());
        for (name, _, c) in self.counters() {
            all.insert(name.into(), json!(Stats::get(c)));
        }
        Value::Object(all)
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `{"register": {"2xx": 3, ...}, ...}` with the zero counts left out.
    pub fn requests_json(&self) -> Value {
        let mut routes = Map::new();
        for (route, row) in self.routes.iter().zip(&self.requests) {
            let mut classes = Map::new();
            for (class, n) in CLASSES.iter().zip(row) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    classes.insert((*class).into(), json!(n));
                }
            }
            routes.insert((*route).into(), Value::Object(classes));
        }
        Value::Object(routes)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Resident memory in bytes, from `/proc/self/status` (`VmRSS`), or `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_class() {
        let s = Stats::new(&["register", "commit", "isrunning", "states", "ping"]);
        let ms = std::time::Duration::from_millis;
        s.request(0, 200, ms(3));
        s.request(0, 201, ms(30));
        s.request(1, 404, ms(1));
        s.request(99, 503, ms(10_000));
        s.request(4, 0, ms(0));
        let j = s.requests_json();
        assert_eq!(j["register"]["2xx"], 2);
        assert_eq!(j["commit"]["4xx"], 1);
        assert_eq!(j["other"]["5xx"], 1);
        assert_eq!(j["ping"]["1xx"], 1);
        assert!(j["states"].as_object().unwrap().is_empty());
        s.refusal(Code::TooManyBodies);
        s.refusal(Code::TooManyBodies);
        s.refusal(Code::Unauthorized);
        assert_eq!(
            s.refusals_json(),
            json!({"too_many_bodies": 2, "unauthorized": 1}),
            "the codes answered, and no other"
        );
        assert_eq!(s.counters_json()["refusals"]["too_many_bodies"], 2);
        let bare = Stats::default();
        bare.refusal(Code::NotFound);
        assert_eq!(
            bare.refusals_of(Code::NotFound),
            1,
            "counted without routes too"
        );
        let text = s.prometheus(
            &[("request_bodies_closed", "Bodies closed.", 3)],
            &[("running_jobs", "Runs now running.", 2.0)],
        );
        for line in [
            "metrics_consumer_requests_total{route=\"register\",status=\"2xx\"} 2",
            "metrics_consumer_request_duration_seconds_bucket{route=\"register\",le=\"0.005\"} 1",
            "metrics_consumer_request_duration_seconds_bucket{route=\"register\",le=\"0.05\"} 2",
            "metrics_consumer_request_duration_seconds_bucket{route=\"other\",le=\"5\"} 0",
            "metrics_consumer_request_duration_seconds_bucket{route=\"other\",le=\"+Inf\"} 1",
            "metrics_consumer_request_duration_seconds_sum{route=\"register\"} 0.033",
            "metrics_consumer_running_jobs 2",
            "# TYPE metrics_consumer_request_bodies_closed_total counter",
            "metrics_consumer_request_bodies_closed_total 3",
            "metrics_consumer_refusals_total{code=\"too_many_bodies\"} 2",
            "metrics_consumer_refusals_total{code=\"unauthorized\"} 1",
            "metrics_consumer_refusals_total{code=\"not_found\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn resident_memory_is_read() {
        let rss = resident_bytes().expect("/proc/self/status has VmRSS on Linux");
        assert!(rss > 100 * 1024, "{rss}");
    }
}
