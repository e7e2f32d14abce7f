//! The routes of SPEC §3: what each one does, in plain functions over [`App`], the state the
//! whole service shares.
//!
//! A handler reads its JSON, asks `payload` to check it, uses the job table for a moment,
//! builds its points with `points`, and blocks on `delivery` until InfluxDB or the spool has
//! them; a change of the job table is then on disk (`journal`) before the answer. Errors
//! become HTTP answers in exactly one place, [`ApiError::response`]. Handlers never hold the
//! job-table lock while writing, and never log a request body.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::{Denied, Tokens};
use crate::code::Code;
use crate::config::Settings;
use crate::delivery::{Delivery, Failure, Outcome};
use crate::http::{Exchange, Handler, Request, Response};
use crate::ingest::line_protocol::{Point, encode_batch};
use crate::ingest::payload::{self, PayloadError, PayloadLimits};
use crate::ingest::points::{self, Run};
use crate::state::jobs::{Batch, Job, Jobs, Refusal};
use crate::state::journal::Journal;
use crate::stats::{self, Stats};

const PREFIX: &str = "/apiv0.1";

/// Everything the handlers and the ticker share.
pub struct App {
    pub settings: Settings,
    pub tokens: Tokens,
    pub jobs: Jobs,
    pub delivery: Delivery,
    pub stats: Stats,
    /// `storage.dir/jobs.json` and `jobs.journal`.
    pub journal: Journal,
    pub started: Instant,
    /// Open connections, kept by the HTTP server.
    pub connections: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Register,
    Commit,
    IsRunning,
    States,
    Ping,
    Progress,
    Metrics,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        Some(match path.strip_prefix(PREFIX)? {
            "/events/register" => Route::Register,
            "/events/commit" => Route::Commit,
            "/events/isrunning" => Route::IsRunning,
            "/states" => Route::States,
            "/ping" => Route::Ping,
            "/events/progress" => Route::Progress,
            "/metrics" => Route::Metrics,
            _ => return None,
        })
    }

    fn method(self) -> &'static str {
        match self {
            Route::Register | Route::Commit | Route::Progress => "POST",
            Route::IsRunning | Route::States | Route::Ping | Route::Metrics => "GET",
        }
    }

    /// Index into [`stats::ROUTES`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Why a request was not done. Mapped to a status and a JSON error in [`ApiError::response`].
#[derive(Debug)]
enum ApiError {
    Payload(PayloadError),
    Unauthorized(Denied),
    NoRoute,
    Method(&'static str),
    UnknownRun(Uuid),
    Committed { uuid: Uuid, at_ms: i64 },
    Committing(Uuid),
    TooManyRunning(usize),
    NotRecorded(Failure),
    NotSaved(String),
}

impl ApiError {
    fn response(&self) -> Response {
        let (code, message) = match self {
            ApiError::Payload(e) => (e.code, e.to_string()),
            ApiError::Unauthorized(denied) => (Code::Unauthorized, denied.message().to_string()),
            ApiError::NoRoute => (
                Code::NotFound,
                "no such route; the routes are under /apiv0.1/: events/register, events/progress, events/commit, events/isrunning, states, ping".to_string(),
            ),
            ApiError::Method(allow) => {
                return Response::error(Code::MethodNotAllowed, &format!("this route takes {allow}"))
                    .with_header("Allow", *allow);
            }
            ApiError::UnknownRun(uuid) => (
                Code::UnknownRun,
                format!("no run {uuid} is known here; register it first (finished runs are forgotten after jobs.finished_retention)"),
            ),
            ApiError::Committed { uuid, at_ms } => (
                Code::AlreadyCommitted,
                format!("run {uuid} was already committed at {}", rfc3339(*at_ms)),
            ),
            ApiError::Committing(uuid) => (
                Code::CommitInProgress,
                format!("a commit of run {uuid} is in progress; wait for its answer"),
            ),
            ApiError::TooManyRunning(max) => (
                Code::TooManyRunning,
                format!("{max} runs are running already (jobs.max_running); commit finished runs or raise the limit"),
            ),
            ApiError::NotRecorded(Failure::SpoolFull(why)) => {
                (Code::SpoolFull, format!("nothing was recorded: {why}"))
            }
            ApiError::NotRecorded(Failure::Disk(why)) => {
                (Code::StorageError, format!("nothing was recorded: {why}"))
            }
            ApiError::NotSaved(why) => (
                Code::StorageError,
                format!("the run could not be saved, so it was not registered: {why}"),
            ),
        };
        let response = Response::error(code, &message);
        match self {
            ApiError::Unauthorized(_) => response
                .with_header("WWW-Authenticate", "Bearer realm=\"metrics-consumer\"")
                .with_header("WWW-Authenticate", "Basic realm=\"metrics-consumer\""),
            _ => response,
        }
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        ApiError::Payload(e)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A commit that has begun; if the handler leaves early (an error or a panic), the job goes
/// back to what it was, so a run is never stuck in `Committing`.
struct CommitGuard<'a> {
    jobs: &'a Jobs,
    uuid: Uuid,
    done: bool,
}

impl CommitGuard<'_> {
    /// The number is the change's journal record.
    fn finish(mut self, now_ms: i64) -> u64 {
        self.done = true;
        self.jobs.end_commit(&self.uuid, true, now_ms)
    }
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.jobs.end_commit(&self.uuid, false, now_ms());
        }
    }
}

impl App {
    fn limits(&self) -> PayloadLimits {
        PayloadLimits {
            max_string_bytes: self.settings.config.limits.max_string_bytes,
            max_stats_rows: self.settings.config.limits.max_stats_rows,
        }
    }

    /// Records points: `Ok` means InfluxDB or the spool has them (or the dead letters, when
    /// InfluxDB refused them).
    fn record(&self, points: &[Point]) -> Result<Outcome, Failure> {
        self.delivery
            .deliver(encode_batch(points), points.len(), &self.stats)
    }

    /// Waits until the job-table change `seq` is on disk.
    fn persist(&self, seq: u64) -> Result<(), String> {
        self.journal.wait(&self.jobs, seq)
    }

    fn route(&self, req: &Request) -> Result<Reply, ApiError> {
        let route = Route::find(&req.path).ok_or(ApiError::NoRoute)?;
        if req.method != route.method() {
            return Err(ApiError::Method(route.method()));
        }
        if route != Route::Ping {
            self.tokens
                .check(req.header("authorization"))
                .map_err(|denied| {
                    Stats::add(&self.stats.auth_failures, 1);
                    log::warn!(
                        "refused {} {} from {}: {}",
                        req.method,
                        loggable(&req.path),
                        req.peer.ip(),
                        match denied {
                            Denied::Missing => "no token",
                            Denied::Malformed => "malformed Authorization header",
                            Denied::WrongToken => "wrong token",
                        }
                    );
                    ApiError::Unauthorized(denied)
                })?;
        }
        Ok(Reply::Json(match route {
            Route::Register => self.register(req)?,
            Route::Commit => self.commit(req)?,
            Route::IsRunning => self.is_running(),
            Route::States => self.states(),
            Route::Ping => json!({"res": "PONG!"}),
            Route::Progress => self.progress(req)?,
            Route::Metrics => return Ok(Reply::Text(self.metrics())),
        }))
    }

    /// `GET /apiv0.1/metrics`: the counters and the live gauges for Prometheus.
    fn metrics(&self) -> String {
        let counts = self.jobs.counts();
        let spool = self.delivery.spool().usage();
        let (dead_records, dead_bytes) = self.delivery.spool().dead_letters();
        let up = if self.delivery.influx_up() { 1.0 } else { 0.0 };
        self.stats.prometheus(&[
            (
                "running_jobs",
                "Runs now running.",
                (counts.running + counts.committing) as f64,
            ),
            (
                "spool_records",
                "Records waiting in the spool for InfluxDB.",
                spool.records as f64,
            ),
            (
                "spool_bytes",
                "Bytes waiting in the spool for InfluxDB.",
                spool.bytes as f64,
            ),
            (
                "dead_letter_records",
                "Records InfluxDB refused, waiting for a person.",
                dead_records as f64,
            ),
            (
                "dead_letter_bytes",
                "Bytes of the dead letters.",
                dead_bytes as f64,
            ),
            (
                "influxdb_up",
                "1 when the last write to InfluxDB succeeded, else 0.",
                up,
            ),
            (
                "open_connections",
                "Open client connections.",
                self.connections.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ),
            (
                "resident_memory_bytes",
                "Resident memory of the process.",
                stats::resident_bytes().unwrap_or(0) as f64,
            ),
            (
                "uptime_seconds",
                "Seconds since the start.",
                self.started.elapsed().as_secs_f64(),
            ),
        ])
    }

    fn register(&self, req: &Request) -> Result<Value, ApiError> {
        let record = payload::register(&req.body, self.limits())?;
        let max = self.settings.config.jobs.max_running;
        let slot = self
            .jobs
            .reserve(max)
            .ok_or(ApiError::TooManyRunning(max))?;
        let now = now_ms();
        let run = Run {
            uuid: Uuid::new_v4(),
            // Without a host the peer's address says at least where the run came from.
            host: record
                .host
                .clone()
                .unwrap_or_else(|| peer_host(req.peer.ip())),
            tags: record.tags.clone(),
            started_ms: record.started_at_ms.unwrap_or(now),
        };
        let outcome = self
            .record(&points::register(&run, &record, now))
            .map_err(ApiError::NotRecorded)?;
        let uuid = run.uuid;
        let seq = slot.fill(Job::running(run, record.fields, now));
        if let Err(e) = self.persist(seq) {
            log::error!("{e}");
            let seq = self.jobs.remove(&uuid);
            let _ = self.persist(seq);
            return Err(ApiError::NotSaved(e));
        }
        log::info!("run {uuid} registered");
        Ok(answer(
            json!({"uuid": uuid, "data": {"uuid": uuid}}),
            &outcome,
        ))
    }

    /// Live progress: new field values for the following heartbeats. Writes no point itself.
    fn progress(&self, req: &Request) -> Result<Value, ApiError> {
        let (uuid, record) = payload::progress(&req.body, self.limits())?;
        let seq = self
            .jobs
            .progress(&uuid, record.fields, now_ms(), payload::MAX_FIELDS)
            .map_err(|r| refused(uuid, r))?;
        if let Err(e) = self.persist(seq) {
            // The new values are in memory and go out with the next heartbeat; only a restart
            // before the next save would lose them, and the next progress brings them back.
            log::error!("{e}");
        }
        Ok(json!({"uuid": uuid, "data": {"description": format!("run {uuid} updated")}}))
    }

    fn commit(&self, req: &Request) -> Result<Value, ApiError> {
        let commit = payload::commit(&req.body, self.limits())?;
        let uuid = commit.uuid;
        let mut run = self
            .jobs
            .begin_commit(&uuid)
            .map_err(|r| refused(uuid, r))?;
        let guard = CommitGuard {
            jobs: &self.jobs,
            uuid,
            done: false,
        };
        // The run's tags are the register's and the commit's; the commit's win.
        for (k, v) in &commit.record.tags {
            match run.tags.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => run.tags.push((k.clone(), v.clone())),
            }
        }
        let now = now_ms();
        let points = points::commit(&run, &commit.record, commit.stats.as_ref(), now);
        let outcome = self.record(&points).map_err(ApiError::NotRecorded)?;
        let seq = guard.finish(now);
        // The points are recorded, so the commit stands even if the table cannot be saved; a
        // restart would then show the run as running again, which a second commit settles.
        if let Err(e) = self.persist(seq) {
            log::error!("{e}");
        }
        log::info!("run {uuid} committed");
        let rows = commit.stats.as_ref().map_or(0, |s| s.rows.len());
        let mut description = format!(
            "run {uuid} finished; wrote {} points ({rows} endpoint rows)",
            points.len()
        );
        if let Some(s) = commit.stats.as_ref().filter(|s| s.rows_sent > s.rows.len()) {
            description.push_str(&format!(
                "; {} of {} stats rows were written (limits.max_stats_rows), the rest only in requestStats",
                s.rows.len(),
                s.rows_sent
            ));
        }
        Ok(answer(
            json!({"uuid": uuid, "data": {"description": description}}),
            &outcome,
        ))
    }

    fn is_running(&self) -> Value {
        let map: Map<String, Value> = self
            .jobs
            .is_running()
            .into_iter()
            .map(|(uuid, running)| (uuid.to_string(), Value::Bool(running)))
            .collect();
        Value::Object(map)
    }

    fn states(&self) -> Value {
        const LISTED: usize = 1000;
        let counts = self.jobs.counts();
        let list: Vec<Value> = self
            .jobs
            .list(LISTED)
            .iter()
            .map(|j| {
                json!({
                    "uuid": j.run.uuid,
                    "host": j.run.host,
                    "startedAt": rfc3339(j.run.started_ms),
                    "state": j.state.as_str(),
                    "heartbeats": j.heartbeats,
                })
            })
            .collect();
        let influx = self.delivery.influx();
        let health = influx.health();
        let spool = self.delivery.spool().usage();
        let (dead_records, dead_bytes) = self.delivery.spool().dead_letters();
        let time = |t: SystemTime| {
            rfc3339(
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            )
        };
        let s = &self.stats;
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "memory": {"resident_bytes": stats::resident_bytes()},
            "connections": self.connections.load(std::sync::atomic::Ordering::Relaxed),
            "jobs": {
                "running": counts.running + counts.committing,
                "finished": counts.finished,
                "expired": counts.expired,
                "listed": list.len(),
                "list": list,
            },
            "influxdb": {
                "url": influx.url(),
                "api": influx.api().to_string(),
                "up": self.delivery.influx_up(),
                "last_success": health.last_success.map(time),
                "last_error": health.last_error.map(|(t, e)| json!({"at": time(t), "error": e})),
            },
            "spool": {
                "records": spool.records,
                "bytes": spool.bytes,
                "oldest_age_seconds": spool.oldest.map(|t| t.elapsed().map(|d| d.as_secs()).unwrap_or(0)),
            },
            "dead_letters": {"records": dead_records, "bytes": dead_bytes},
            "counters": {
                "requests": s.requests_json(),
                "points_written": Stats::get(&s.points_written),
                "points_spooled": Stats::get(&s.points_spooled),
                "points_replayed": Stats::get(&s.points_replayed),
                "points_dead_lettered": Stats::get(&s.points_dead_lettered),
                "influxdb_writes": Stats::get(&s.influxdb_writes),
                "heartbeats_dropped": Stats::get(&s.heartbeats_dropped),
                "heartbeat_ticks": Stats::get(&s.heartbeat_ticks),
                "jobs_expired": Stats::get(&s.jobs_expired),
                "auth_failures": Stats::get(&s.auth_failures),
            },
        })
    }

    /// One heartbeat tick: expire what is too old, forget what is past its retention, and write
    /// every running job's heartbeat as one batch.
    pub fn tick(&self) {
        let jobs = &self.settings.config.jobs;
        let tick = self.jobs.tick(
            now_ms(),
            jobs.max_age.0.as_millis() as i64,
            jobs.finished_retention.0.as_millis() as i64,
        );
        Stats::add(&self.stats.heartbeat_ticks, 1);
        Stats::add(&self.stats.jobs_expired, tick.expired);
        if tick.expired > 0 {
            log::info!(
                "{} runs expired without a commit (jobs.max_age)",
                tick.expired
            );
        }
        let mut batches = tick.batches.into_iter();
        if let Some(first) = batches.next() {
            self.write_beats(first, batches);
        }
        if let Err(e) = self.persist(tick.seq) {
            log::error!("{e}");
        }
    }

    /// Writes a tick's batches at the same time (see `jobs::TICK_BATCHES`): the first on this
    /// thread, the others on threads of their own that end with the tick.
    fn write_beats(&self, first: Batch, others: impl Iterator<Item = Batch>) {
        std::thread::scope(|scope| {
            let others: Vec<_> = others
                .map(
                    |Batch {
                         lines,
                         points,
                         beats,
                     }| {
                        let handle = std::thread::Builder::new()
                            .name("heartbeat-write".into())
                            .spawn_scoped(scope, move || {
                                self.delivery.deliver_alone(lines, points, &self.stats)
                            });
                        (beats, handle)
                    },
                )
                .collect();
            let result = self
                .delivery
                .deliver_alone(first.lines, first.points, &self.stats);
            self.beats_written(&first.beats, result);
            for (beats, handle) in others {
                let result = match handle {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|_| Err(Failure::Disk("their write panicked".into()))),
                    Err(e) => Err(Failure::Disk(format!(
                        "cannot start a thread to write them: {e}"
                    ))),
                };
                self.beats_written(&beats, result);
            }
        });
    }

    /// Counts the heartbeats of a batch once written, or says they were dropped.
    fn beats_written(&self, beats: &[Uuid], result: Result<Outcome, Failure>) {
        match result {
            Ok(_) => self.jobs.count_beats(beats),
            Err(Failure::SpoolFull(why) | Failure::Disk(why)) => {
                // Heartbeats were promised to nobody; losing some is logged, not fatal.
                Stats::add(&self.stats.heartbeats_dropped, beats.len());
                log::warn!("{} heartbeats dropped: {why}", beats.len());
            }
        }
    }

    /// Runs [`App::tick`] every `jobs.heartbeat_interval` until the process ends.
    pub fn heartbeat_loop(self: Arc<Self>) {
        let interval: Duration = self.settings.config.jobs.heartbeat_interval.0;
        let mut next = Instant::now() + interval;
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += interval;
            // A slow InfluxDB must not make ticks pile up: skip the ones already missed.
            let now = Instant::now();
            while next <= now {
                next += interval;
            }
            self.tick();
        }
    }
}

/// Why the job table would not let a commit or progress go ahead.
fn refused(uuid: Uuid, r: Refusal) -> ApiError {
    match r {
        Refusal::Unknown => ApiError::UnknownRun(uuid),
        Refusal::Finished { at_ms } => ApiError::Committed { uuid, at_ms },
        Refusal::InProgress => ApiError::Committing(uuid),
        Refusal::TooManyFields(max) => ApiError::Payload(PayloadError {
            key: "measurement.fields".into(),
            message: format!("the run would have more than {max} fields"),
            code: Code::TooManyFields,
        }),
        Refusal::IsTag => ApiError::Payload(PayloadError {
            key: "measurement.fields".into(),
            message: "a field is named like one of the run's tags; a name can be a tag or a field, not both".into(),
            code: Code::InvalidField,
        }),
    }
}

/// A successful answer: `body` plus where the points went (SPEC §7).
fn answer(mut body: Value, outcome: &Outcome) -> Value {
    body["delivered"] = Value::Bool(outcome.delivered());
    if let Outcome::DeadLettered(why) = outcome {
        body["dead_letter"] = Value::String(why.clone());
    }
    body
}

fn peer_host(ip: IpAddr) -> String {
    ip.to_string()
}

/// Keeps client text out of the log's structure: control characters become '?', and it is cut.
fn loggable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A successful answer's body.
enum Reply {
    Json(Value),
    /// The Prometheus text format.
    Text(String),
}

impl Handler for App {
    fn handle(&self, req: &Request) -> Response {
        match self.route(req) {
            Ok(Reply::Json(body)) => Response::json(200, &body),
            Ok(Reply::Text(text)) => Response {
                status: 200,
                headers: vec![(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8".into(),
                )],
                body: text.into_bytes(),
            },
            Err(e) => e.response(),
        }
    }

    fn completed(&self, ex: &Exchange<'_>) {
        let route = Route::find(ex.path).map_or(stats::ROUTES.len() - 1, Route::index);
        self.stats.request(route, ex.status, ex.duration);
        log::info!(
            target: "access",
            "{} {} {} {} {} {:.1}ms",
            ex.peer.ip(),
            loggable(ex.method),
            loggable(ex.path),
            ex.status,
            ex.bytes,
            ex.duration.as_secs_f64() * 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_with_or_without_a_trailing_slash() {
        assert_eq!(
            Route::find("/apiv0.1/events/register"),
            Some(Route::Register)
        );
        assert_eq!(Route::find("/apiv0.1/events/commit/"), Some(Route::Commit));
        assert_eq!(Route::find("/apiv0.1/ping"), Some(Route::Ping));
        assert_eq!(Route::find("/apiv0.1/"), None);
        assert_eq!(Route::find("/"), None);
        assert_eq!(Route::find("/apiv0.1/states/x"), None);
        for (route, name) in [
            (Route::Register, "register"),
            (Route::Ping, "ping"),
            (Route::States, "states"),
        ] {
            assert_eq!(stats::ROUTES[route.index()], name);
        }
    }

    #[test]
    fn log_text_cannot_forge_lines() {
        assert_eq!(loggable("/a\nGET /b 200"), "/a?GET /b 200");
        assert_eq!(loggable(&"x".repeat(500)).len(), 200);
    }
}
