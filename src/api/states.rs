//! The two pages that say how the gateway is doing: `/apiv0.1/states` (JSON, for people and
//! scripts) and `/apiv0.1/metrics` (the Prometheus text format). Both read counters and
//! gauges; neither changes anything.
//!
//! A token sees only its own runs, as `isrunning` shows them: the job list, the counts of
//! running, finished and expired runs and each run's heartbeat refusals are those of the runs
//! its client may act on (`Job::is_for`). What belongs to no run is shared, in aggregate only:
//! the counts of every token's runs together (`jobs.all`), InfluxDB's health, the log and the
//! dead letters, the counters (the refusals by code among them: how often any client was
//! refused, and why, never whom), memory and connections. An InfluxDB error that may be its
//! refusal of a run's data (one seen while InfluxDB is up) is not shown to a token, as it may
//! quote another token's run. Without tokens every request is the one client, which sees all.
//! The Prometheus page holds aggregates alone, no run's uuid, host or error.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::App;
use crate::auth::Client;
use crate::service::rfc3339;
use crate::stats::{self, Stats};

/// Jobs listed by the state page at most, newest first.
const LISTED: usize = 1000;

/// What a token is told of InfluxDB's last error while InfluxDB is up: such an error is a
/// refusal of some run's data, or an outage that is over, and the text may quote another
/// token's run.
pub const WITHHELD_ERROR: &str = "not shown to a token while InfluxDB is up: it may be InfluxDB's refusal of another token's data (each run's own refusals are in its entry)";

/// `GET /apiv0.1/states`, as `client` (`None` without tokens) sees it. A token is also told
/// its own share of the log (`spool.share`: its undelivered bytes and its `max_spool_bytes`).
pub fn states(app: &App, client: Option<&Client>) -> Value {
    let caller = client.map(|c| c.name.as_str());
    let service = &app.service;
    let counts = service.jobs.counts_for(caller);
    let all = service.jobs.counts();
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
        .list_for(LISTED, caller)
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
    let http = app.http.now();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "memory": {"resident_bytes": stats::resident_bytes()},
        "connections": http.connections,
        "connections_closed_to_admit": http.connections_closed_to_admit,
        "bodies": {
            "bytes": http.body_bytes,
            "limit": http.body_limit_bytes,
            "waiting": http.bodies_waiting,
            "closed": http.bodies_closed,
        },
        "jobs": {
            "running": counts.running + counts.committing,
            "finished": counts.finished,
            "expired": counts.expired,
            "listed": list.len(),
            "list": list,
            "all": {
                "running": all.running + all.committing,
                "finished": all.finished,
                "expired": all.expired,
            },
        },
        "influxdb": {
            "url": influxdb.url.trim_end_matches('/'),
            "api": influxdb.api.to_string(),
            "up": health.up,
            "last_success": health.last_success.map(time),
            "last_error": health.last_error.map(|(t, e)| {
                let shown = if caller.is_some() && health.up == Some(true) {
                    WITHHELD_ERROR.to_string()
                } else {
                    e
                };
                json!({"at": time(t), "error": shown})
            }),
        },
        "spool": {
            "records": waiting_records,
            "bytes": waiting_bytes,
            "limit": app.settings.config.storage.max_spool_bytes,
            "oldest_age_seconds": delivery.oldest_waiting().map(|d| d.as_secs()),
            // A token is not shown where storage.dir is.
            "write_error": last_write_failure(delivery, service).map(|w| json!({
                "at": time(w.at),
                "error": if caller.is_some() { w.for_client } else { w.error },
            })),
            "segments": delivery.log().segments(),
            "share": client.map(|c| json!({
                "bytes": delivery.log().undelivered_of(&c.name),
                "limit": c.max_spool_bytes,
            })),
        },
        "dead_letters": {
            "records": dead.records,
            "bytes": dead.bytes,
            "limit": dead.limit,
            "points_dropped": Stats::get(&s.points_dropped),
        },
        "counters": s.counters_json(),
    })
}

/// `GET /apiv0.1/metrics`: the counters and the live gauges for Prometheus, of the whole
/// gateway (aggregates only, the same for every token).
pub fn metrics(app: &App) -> String {
    let service = &app.service;
    let counts = service.jobs.counts();
    let delivery = &service.delivery;
    let (waiting_records, waiting_bytes) = delivery.log().undelivered();
    let dead = delivery.dead_letters().usage();
    let http = app.http.now();
    // Unknown counts as not up: a gateway that never reached InfluxDB must not look healthy.
    let up = if delivery.influx_up() == Some(true) {
        1.0
    } else {
        0.0
    };
    let counters = [
        (
            "connections_closed_to_admit",
            "Connections closed to give their slot to a newcomer, every slot (server.max_connections) being taken.",
            http.connections_closed_to_admit,
        ),
        (
            "request_bodies_closed",
            "Bodies closed to make memory for a waiting one: silent, or sent slower than server.header_timeout asks for.",
            http.bodies_closed,
        ),
    ];
    service.stats.prometheus(&counters, &[
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
            http.connections as f64,
        ),
        (
            "request_body_bytes",
            "Bytes of request bodies held in memory (server.max_body_bytes_in_flight at most).",
            http.body_bytes as f64,
        ),
        (
            "request_bodies_waiting",
            "Requests waiting for memory for their bodies (each a second at most, then answered 503 too_many_bodies).",
            http.bodies_waiting as f64,
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

/// The latest of the log's failed write and the reserve's failed growth, each while none of
/// its kind has succeeded since: why requests are answered 503 `storage_error` (a full disk).
fn last_write_failure(
    delivery: &crate::delivery::Delivery,
    service: &crate::service::Service,
) -> Option<crate::storage::log::WriteFailure> {
    let log = delivery.log().write_failure();
    let reserve = service.snapshots.failure();
    match (log, reserve) {
        (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
        (a, b) => a.or(b),
    }
}
