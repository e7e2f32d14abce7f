//! The two pages that say how the gateway is doing: `/apiv0.1/states` (JSON, for people and
//! scripts) and `/apiv0.1/metrics` (the Prometheus text format). Both read counters and
//! gauges; neither changes anything.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::App;
use crate::service::rfc3339;
use crate::stats::{self, Stats};

/// Jobs listed by the state page at most, newest first.
const LISTED: usize = 1000;

/// `GET /apiv0.1/states`.
pub fn states(app: &App) -> Value {
    let service = &app.service;
    let counts = service.jobs.counts();
    let delivery = &service.delivery;
    let refusals = delivery.refusals();
    let time = |t: SystemTime| {
        rfc3339(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    };
    let list: Vec<Value> = service
        .jobs
        .list(LISTED)
        .iter()
        .map(|j| {
            let mut entry = json!({
                "uuid": j.run.uuid,
                "host": j.run.host,
                "startedAt": rfc3339(j.run.started_ms),
                "state": j.state.as_str(),
                "heartbeats": j.heartbeats,
            });
            if let Some(r) = refusals.get(&j.run.uuid) {
                entry["heartbeats_refused"] = json!({
                    "count": r.count,
                    "last_error": r.error,
                    "at": time(r.at),
                });
            }
            entry
        })
        .collect();
    let health = delivery.health();
    let (waiting_records, waiting_bytes) = delivery.log().undelivered();
    let dead = delivery.dead_letters().usage();
    let s = &service.stats;
    let influxdb = &app.settings.config.influxdb;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "memory": {"resident_bytes": stats::resident_bytes()},
        "connections": app.connections.load(Ordering::Relaxed),
        "jobs": {
            "running": counts.running + counts.committing,
            "finished": counts.finished,
            "expired": counts.expired,
            "listed": list.len(),
            "list": list,
        },
        "influxdb": {
            "url": influxdb.url.trim_end_matches('/'),
            "api": influxdb.api.to_string(),
            "up": health.up,
            "last_success": health.last_success.map(time),
            "last_error": health.last_error.map(|(t, e)| json!({"at": time(t), "error": e})),
        },
        "spool": {
            "records": waiting_records,
            "bytes": waiting_bytes,
            "limit": app.settings.config.storage.max_spool_bytes,
            "oldest_age_seconds": delivery.oldest_waiting().map(|d| d.as_secs()),
            "segments": delivery.log().segments(),
        },
        "dead_letters": {
            "records": dead.records,
            "bytes": dead.bytes,
            "limit": dead.limit,
            "points_dropped": dead.dropped_points,
        },
        "counters": {
            "requests": s.requests_json(),
            "points_written": Stats::get(&s.points_written),
            "points_spooled": Stats::get(&s.points_spooled),
            "points_replayed": Stats::get(&s.points_replayed),
            "points_dead_lettered": Stats::get(&s.points_dead_lettered),
            "influxdb_writes": Stats::get(&s.influxdb_writes),
            "heartbeats_dropped": Stats::get(&s.heartbeats_dropped),
            "heartbeats_refused": Stats::get(&s.heartbeats_refused),
            "points_dropped": Stats::get(&s.points_dropped),
            "heartbeat_ticks": Stats::get(&s.heartbeat_ticks),
            "jobs_expired": Stats::get(&s.jobs_expired),
            "auth_failures": Stats::get(&s.auth_failures),
        },
    })
}

/// `GET /apiv0.1/metrics`: the counters and the live gauges for Prometheus.
pub fn metrics(app: &App) -> String {
    let service = &app.service;
    let counts = service.jobs.counts();
    let delivery = &service.delivery;
    let (waiting_records, waiting_bytes) = delivery.log().undelivered();
    let dead = delivery.dead_letters().usage();
    // Unknown counts as not up: a gateway that never reached InfluxDB must not look healthy.
    let up = if delivery.influx_up() == Some(true) {
        1.0
    } else {
        0.0
    };
    service.stats.prometheus(&[
        (
            "running_jobs",
            "Runs now running.",
            (counts.running + counts.committing) as f64,
        ),
        (
            "spool_records",
            "Records of the log not yet delivered to InfluxDB.",
            waiting_records as f64,
        ),
        (
            "spool_bytes",
            "Bytes of the log not yet delivered to InfluxDB.",
            waiting_bytes as f64,
        ),
        (
            "dead_letter_records",
            "Records InfluxDB refused, waiting for a person.",
            dead.records as f64,
        ),
        (
            "dead_letter_bytes",
            "Bytes of the dead letters.",
            dead.bytes as f64,
        ),
        (
            "influxdb_up",
            "1 once InfluxDB answered and the last write or probe worked; 0 before it ever answered, and while it fails.",
            up,
        ),
        (
            "open_connections",
            "Open client connections.",
            app.connections.load(Ordering::Relaxed) as f64,
        ),
        (
            "resident_memory_bytes",
            "Resident memory of the process.",
            stats::resident_bytes().unwrap_or(0) as f64,
        ),
        (
            "uptime_seconds",
            "Seconds since the start.",
            app.started.elapsed().as_secs_f64(),
        ),
    ])
}
