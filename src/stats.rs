//! Counters for the state page (SPEC §8): requests per route and status class, points written
//! and failed, and the process's resident memory.
//!
//! Counters are plain atomics, bumped on the request path without a lock; reading them is a
//! snapshot that may be a moment out of step between counters, which a state page can afford.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

/// The routes counted apart; everything else (404s, errors before routing) is `other`.
pub const ROUTES: [&str; 7] = [
    "register",
    "commit",
    "isrunning",
    "states",
    "ping",
    "progress",
    "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
pub struct Stats {
    requests: [[AtomicU64; 5]; 7],
    pub points_written: AtomicU64,
    pub points_spooled: AtomicU64,
    pub points_replayed: AtomicU64,
    pub points_dead_lettered: AtomicU64,
    pub heartbeats_dropped: AtomicU64,
    pub heartbeat_ticks: AtomicU64,
    pub jobs_expired: AtomicU64,
    pub auth_failures: AtomicU64,
}

impl Stats {
    /// Counts one answered request; `route` is an index into [`ROUTES`].
    pub fn request(&self, route: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[route.min(ROUTES.len() - 1)][class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `{"register": {"2xx": 3, ...}, ...}` with the zero counts left out.
    pub fn requests_json(&self) -> Value {
        let mut routes = Map::new();
        for (route, row) in ROUTES.iter().zip(&self.requests) {
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
        let s = Stats::default();
        s.request(0, 200);
        s.request(0, 201);
        s.request(1, 404);
        s.request(99, 503);
        s.request(4, 0);
        let j = s.requests_json();
        assert_eq!(j["register"]["2xx"], 2);
        assert_eq!(j["commit"]["4xx"], 1);
        assert_eq!(j["other"]["5xx"], 1);
        assert_eq!(j["ping"]["1xx"], 1);
        assert!(j["states"].as_object().unwrap().is_empty());
    }

    #[test]
    fn resident_memory_is_read() {
        let rss = resident_bytes().expect("/proc/self/status has VmRSS on Linux");
        assert!(rss > 100 * 1024, "{rss}");
    }
}
