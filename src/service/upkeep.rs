//! The service's upkeep, beside the use-cases: the heartbeat tick (a record per batch of the
//! running runs' heartbeats, expiries on the monotonic clock), the schema thread (InfluxDB's
//! schema and retention read again, and what the operator is told when it may not be), and
//! the snapshots of the job table. Never holds the job-table lock across I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Refused, Service, now_ms};

/// The log target of the upkeep's lines, also of those that may repeat (dropped heartbeats).
pub const LOG_TARGET: &str = module_path!();

use crate::delivery::sink::{Sink, SinkError};
use crate::ingest::points;
use crate::state::jobs::{Ages, Change, Tick};
use crate::state::schema::{Measurement, Schema};
use crate::state::snapshots::JournalError;
use crate::stats::Stats;
use crate::storage::log::{LogError, OwnedTarget, Share};
use crate::storage::record::{Kind, Unit};

/// How often, between ticks, the heartbeat thread looks whether the log needs a snapshot.
const SNAPSHOT_LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a snapshot written from the room kept for it on a full disk waits, the log's writes
/// held, for the changes already in the log to be applied to the table.
const APPLIED_WAIT: Duration = Duration::from_millis(500);

impl Service {
    /// One heartbeat tick: expire what is too old, forget what is past its retention, and record
    /// every running job's heartbeat; then save a snapshot of the table when the log asks for
    /// one.
    pub fn tick(&self, now_ms: i64) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let tick = self.jobs.tick(
            (now_ms, self.jobs.mono_ms(self.clock.now())),
            &Ages {
                max_age_ms: ms(self.rules.max_age),
                progress_timeout_ms: ms(self.rules.progress_timeout),
                retention_ms: ms(self.rules.finished_retention),
            },
        );
        Stats::add(&self.stats.heartbeat_ticks, 1);
        Stats::add(&self.stats.jobs_expired, tick.expired);
        if tick.expired > 0 {
            log::info!(
                "{} runs expired: no commit within jobs.max_age, or no progress within jobs.progress_timeout",
                tick.expired
            );
        }
        self.record_tick(&tick);
        let large = tick.lines.len() >= crate::malloc::TRIM_AFTER_HEARTBEAT_BYTES;
        drop(tick);
        if self.delivery.log().needs_snapshot() {
            self.save_snapshot();
        }
        // A tick of thousands of runs (and the snapshot of their table it may ask for) leaves
        // its small blocks (each run's line and unit, the lists growing to hold them) free in
        // the allocator's arenas, which keep them: given back to the system after each such
        // tick, as after a burst of large bodies (10 000 running runs: about 2 MiB less
        // resident between ticks; a trim takes about 0.1 ms, 2 ms at most).
        if large {
            crate::malloc::trim();
        }
    }

    /// Records a tick's lines as records of the size of the deliverer's writes, each holding
    /// the lines of one token's runs, charged to that token's share of the log (so one token's
    /// many or large runs never fill the log for the others: past its share its heartbeats are
    /// dropped, counted and logged, as on a full log); the first record also carries the tick's
    /// changes of the table. Counts the heartbeats recorded.
    fn record_tick(&self, tick: &Tick) {
        let mut start = 0;
        // Each owner's units, in the order of their first line; runs without an owner first.
        let mut groups: Vec<(
            Option<&str>,
            Vec<Unit<'_>>,
            Vec<&crate::state::jobs::TickLine>,
        )> = Vec::new();
        for line in &tick.units {
            let unit = Unit {
                run: line.run,
                points: 1,
                lines: &tick.lines[start..line.end],
            };
            start = line.end;
            let owner = line.owner.as_deref();
            match groups.iter_mut().find(|(o, _, _)| *o == owner) {
                Some((_, units, lines)) => {
                    units.push(unit);
                    lines.push(line);
                }
                None => groups.push((owner, vec![unit], vec![line])),
            }
        }
        groups.sort_by_key(|(owner, _, _)| owner.is_some());
        let mut chunks: Vec<(Option<&str>, &[Unit<'_>], &[&crate::state::jobs::TickLine])> =
            Vec::new();
        for (owner, units, lines) in &groups {
            let (mut rest, mut rest_lines) = (&units[..], &lines[..]);
            while !rest.is_empty() {
                let n = self
                    .write_limits
                    .first_write(rest.iter().map(|u| (u.lines.len(), u.points as usize)));
                let (chunk, after) = rest.split_at(n);
                let (chunk_lines, after_lines) = rest_lines.split_at(n);
                chunks.push((*owner, chunk, chunk_lines));
                rest = after;
                rest_lines = after_lines;
            }
        }
        if chunks.is_empty() && !tick.change.bytes.is_empty() {
            chunks.push((None, &[], &[]));
        }
        let empty = Change::default();
        for (i, (owner, chunk, lines)) in chunks.iter().enumerate() {
            let change = if i == 0 { &tick.change } else { &empty };
            let beats: Vec<Uuid> = lines.iter().filter(|l| l.beat).map(|l| l.run).collect();
            let share = owner.and_then(|name| {
                self.spool_shares.get(name).map(|limit| Share {
                    client: name,
                    limit: *limit,
                })
            });
            match self
                .delivery
                .record(Kind::Heartbeats, change, chunk, share, &self.stats)
            {
                Ok(_) => {
                    self.jobs.count_beats(&beats);
                    self.dropped_beats.reset();
                }
                Err(why) => {
                    // The table made the tick's changes (expiries, removals): they go out with
                    // the next change instead.
                    if i == 0 {
                        self.jobs.unrecorded(tick.change.clone());
                    }
                    // Heartbeats were promised to nobody; losing some is logged, not fatal.
                    Stats::add(&self.stats.heartbeats_dropped, beats.len());
                    self.dropped_beats.log(
                        log::Level::Warn,
                        &format_args!(
                            "{} heartbeats dropped: {why} (counters.heartbeats_dropped counts them all)",
                            beats.len()
                        ),
                    );
                }
            }
        }
    }

    /// The schema reader ([`Service::schema_loop`]), to run on a thread of its own, with
    /// `influx` telling the retention policy. From this call on, before the thread is even
    /// scheduled, a first write to a database waits for InfluxDB's word on it: the reader is
    /// said to run here, not once its thread runs (a first write handled in between took a
    /// line InfluxDB would refuse for its field type).
    pub fn schema_reader(
        self: &Arc<Self>,
        every: Duration,
        influx: Arc<dyn Sink>,
    ) -> impl FnOnce() + Send + 'static {
        self.write_schemas.reader_runs();
        let service = Arc::clone(self);
        move || service.schema_loop(every, &*influx)
    }

    /// Reads InfluxDB's schema at once, then every `every`, and soon after a request was
    /// refused for a conflict (at most once a second), until the process ends.
    /// `influx` tells the retention policy, read with the schema.
    fn schema_loop(self: Arc<Self>, every: Duration, influx: &dyn Sink) {
        self.refresh_schema();
        self.refresh_retention(influx);
        let mut last = Instant::now();
        let mut refusals = self.delivery.refusals_seen();
        loop {
            let asked = self.schema_stale.wait(every.min(Duration::from_secs(1)));
            // First writes wait for their targets: those are read at once, and alone.
            if self.schema_stale.take_first_reads() {
                self.refresh_first_reads();
            }
            // InfluxDB refusing a write (a dead letter) may mean its schema changed too.
            let refused = self.delivery.refusals_seen() != refusals;
            if !(asked || refused || last.elapsed() >= every) {
                continue;
            }
            if last.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_secs(1).saturating_sub(last.elapsed()));
            }
            refusals = self.delivery.refusals_seen();
            last = Instant::now();
            self.refresh_schema();
            self.refresh_retention(influx);
        }
    }

    /// Reads how long InfluxDB keeps points (v1: the retention policy; v2: the bucket's rule,
    /// where the token may read it), so that a run stamped older is refused at the request.
    /// When InfluxDB cannot be asked (it is down, the user may not read it), what was known
    /// holds.
    pub fn refresh_retention(&self, influx: &dyn Sink) {
        match influx.retention() {
            Ok(retention) => self.schema.set_retention(retention),
            Err(e) => self.unreadable("its retention policy", &e),
        }
    }

    /// A reading of InfluxDB's schema or retention failed. When InfluxDB refused it to the
    /// user (a user with WRITE alone, as a least-privilege set-up makes), the checks that need
    /// it cannot be made, and the operator hears so once, with what to grant; other failures
    /// (InfluxDB down) are delivery's to tell.
    fn unreadable(&self, what: &str, e: &SinkError) {
        let refused = matches!(
            e,
            SinkError::Misconfigured {
                status: 401 | 403,
                ..
            }
        ) || e.to_string().contains("not authorized");
        if refused
            && !self
                .schema_stale
                .unreadable_told
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            log::warn!(
                "influxdb does not let the gateway read {what} ({e}): field type conflicts and runs older than the retention policy are not answered 400 at the request, and InfluxDB refuses them later (dead letters); grant the user READ on the database as well as WRITE"
            );
        } else {
            log::debug!("cannot read InfluxDB's {what}: {e}");
        }
    }

    /// Reads InfluxDB's schema once, where its API allows; when nothing waited to be delivered
    /// as the reading began it replaces what the gateway knew. Where it does not (v2, v3), what
    /// the gateway learned from its own writes is let go when nothing waited to be delivered:
    /// InfluxDB may have dropped it since (a bucket or table made anew), and the gateway cannot
    /// ask, so a type it learned holds until the next `influxdb.schema_refresh`, and is learned
    /// again from the next write that uses it. Then it reads each write API database's field
    /// types, each reading asking anew whether the log is delivered as it begins.
    pub fn refresh_schema(&self) {
        // The running runs' heartbeat fields and tags reach InfluxDB only with their next
        // tick, which learns nothing: kept are those of the runs running once the reading
        // began, looked at before the log is (a tick recorded after the log was found
        // delivered carries them, and its run may end before InfluxDB answers), and those of
        // the runs running when the answer is taken.
        let mut beating = Measurement::default();
        // Asked once the reading began, never before: see `Schema::reading_begins`.
        let caught_up = self.schema.reading_begins(|| {
            beating = self.jobs.heartbeat_schema();
            self.delivery.caught_up()
        });
        let pending = move || {
            let now = self.jobs.heartbeat_schema();
            [now, beating].map(|m| (points::HEARTBEAT.to_string(), m))
        };
        match self.delivery.read_schema() {
            Ok(Some(seen)) => {
                self.schema.update_keeping(seen, caught_up, pending());
                self.schema_stale
                    .unreadable_told
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(None) => self
                .schema
                .update_keeping(Default::default(), caught_up, pending()),
            Err(e) => self.unreadable("its schema", &e),
        }
        self.refresh_write_schemas();
    }

    /// Reads the field types InfluxDB holds in each database written through the write API,
    /// as [`Service::refresh_schema`] reads the gateway's own, and how long it keeps the
    /// points of each target written; the first reading of a database is told (INFO), for it
    /// is from then on that its lines are checked against InfluxDB's word.
    fn refresh_write_schemas(&self) {
        let schemas = &self.write_schemas;
        for (database, schema) in schemas.all() {
            self.refresh_field_types(&database, &schema);
        }
        self.refresh_retentions(&schemas.targets(false));
    }

    /// Reads InfluxDB's word on the targets never read (their databases' field types, their
    /// retention), for the first writes waiting for it, and wakes them.
    pub(super) fn refresh_first_reads(&self) {
        let schemas = &self.write_schemas;
        let unread = schemas.targets(true);
        if unread.is_empty() {
            return;
        }
        let databases: std::collections::BTreeSet<&str> =
            unread.iter().map(|t| t.database.as_str()).collect();
        // A database read once is read again only with everything (paced): a write naming
        // a missing policy again and again must not have the whole database read each time.
        for (database, schema) in schemas.all() {
            if databases.contains(database.as_str()) && !schema.read_once() {
                self.refresh_field_types(&database, &schema);
            }
        }
        self.refresh_retentions(&unread);
    }

    /// Reads the field types InfluxDB holds in `database`, into its `schema`: they replace what
    /// it knew when nothing waited to be delivered as this reading began, else are added to it.
    /// Whether the log is delivered is asked here, once this database's reading began, not
    /// once for all of them: the readings of the databases before it take time (each over
    /// HTTP), and a write recorded meanwhile must be counted or kept (see
    /// [`Schema::reading_begins`]).
    fn refresh_field_types(&self, database: &str, schema: &Schema) {
        let caught_up = schema.reading_begins(|| self.delivery.caught_up());
        match self.delivery.read_field_types_of(database) {
            Ok(Some(seen)) => {
                let first = !schema.read_once();
                let measurements = seen.len();
                schema.update_from_influxdb(seen, caught_up);
                if first {
                    log::info!(
                        "read InfluxDB's field types in database {:?} ({measurements} measurements): writes there are checked against them",
                        crate::logtext::escape(database, 255)
                    );
                }
            }
            Ok(None) => {}
            Err(e) => self.unreadable(&format!("the field types of {database:?}"), &e),
        }
    }

    /// Reads how long InfluxDB keeps the points of each of `targets`, then wakes the writers
    /// waiting for it (asked is enough: a target InfluxDB could not tell of is not waited for
    /// again).
    fn refresh_retentions(&self, targets: &[OwnedTarget]) {
        for target in targets {
            let said = match self.delivery.read_retention_of(target) {
                Ok(retention) => Some(retention),
                Err(e) => {
                    self.unreadable(&format!("the retention of {:?}", target.database), &e);
                    None
                }
            };
            self.write_schemas.set_retention(target, said);
        }
        self.write_schemas.reading_ended();
    }

    /// Grows the room kept for the next snapshot to what the table now holds (with the
    /// changes prepared); refuses, as not recorded, when the disk has no room for it.
    pub(super) fn keep_room(&self) -> Result<(), Refused> {
        self.snapshots
            .keep_room(self.jobs.bytes() as u64)
            .map_err(|e| match e {
                JournalError::Io { doing, path, error } => {
                    Refused::NotRecorded(LogError::Io { doing, path, error })
                }
                JournalError::Damaged { .. } => Refused::NotRecorded(LogError::Broken),
            })
    }

    /// Writes a snapshot of the job table, so the log can let go of delivered segments. A
    /// failure is logged at once, then at most once a minute while it repeats (a full disk
    /// fails every tick until InfluxDB has the log).
    pub fn save_snapshot(&self) {
        match self.try_save_snapshot() {
            Ok(()) => self.snapshots.errors.reset(),
            Err(e) => self.snapshots.errors.error(&e),
        }
    }

    /// Writes a snapshot; an error says why it could not be written (one that found the disk
    /// full tells the log, which may then let its segment being written go once delivered).
    ///
    /// On a full disk, a snapshot that lets delivered segments go is written from the room
    /// kept for it, with the log's writes held meanwhile ([`Log::hold_writes`]) and every
    /// change the log holds applied to the table first: a record written meanwhile could
    /// take that room, or put a change the snapshot lacks into the segment it is to let go,
    /// and the room would be spent for nothing. When the changes are not applied in time, the
    /// room is kept, and the snapshot tried again at the next look (a second later). Once the
    /// segments are let go, the room is kept again, writes still held.
    ///
    /// [`Log::hold_writes`]: crate::storage::log::Log::hold_writes
    pub fn try_save_snapshot(&self) -> Result<(), JournalError> {
        let log = self.delivery.log();
        // The results the log's records carry are synced before a snapshot lets them go.
        let results = || {
            self.results
                .sync()
                .map_err(|e| JournalError::io("sync the results in", self.results.path(), e))
        };
        let error = match self
            .snapshots
            .write(&self.jobs, &self.schema.known(), None, &results)
        {
            Ok((covers, bytes)) => {
                log.snapshot_written(covers, bytes);
                return Ok(());
            }
            Err(e) if e.is_disk_full() => e,
            Err(e) => return Err(e),
        };
        log.disk_is_full();
        if !log.snapshot_frees_segments() {
            return Err(error);
        }
        let hold = log.hold_writes();
        self.jobs.wait_applied(hold.last_change(), APPLIED_WAIT);
        let lets_go = |covers| hold.would_let_go(covers);
        let (covers, bytes) =
            self.snapshots
                .write(&self.jobs, &self.schema.known(), Some(&lets_go), &results)?;
        hold.snapshot_written(covers, bytes);
        // The room just spent is kept again from what the segments let go left, before any
        // record may take it: else a disk filled again (by commits or ticks, which do not grow
        // the table) would find no room for the snapshot that frees it.
        if let Err(e) = self.snapshots.keep_room(self.jobs.bytes() as u64) {
            log::warn!(
                "{e}: the disk is still nearly full after the log let its delivered segments go; free space under storage.dir"
            );
        }
        Ok(())
    }

    /// Runs [`Service::tick`] every `jobs.heartbeat_interval` until the process ends.
    /// Between ticks it looks every second whether the log needs a snapshot to let delivered
    /// segments go (on a full disk that is the way out, and it must not wait for a tick that
    /// may be an hour away), and tells the log lines left out by a budget in a second that is
    /// over (`logtext::tell_left_out`).
    pub fn heartbeat_loop(self: Arc<Self>) {
        let interval = self.rules.heartbeat_interval;
        let mut next = Instant::now() + interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            if wait > SNAPSHOT_LOOK_EVERY {
                std::thread::sleep(SNAPSHOT_LOOK_EVERY);
                crate::logtext::tell_left_out(Instant::now());
                if self.delivery.log().needs_snapshot() {
                    self.save_snapshot();
                }
                continue;
            }
            std::thread::sleep(wait);
            next += interval;
            // A slow disk must not make ticks pile up: skip the ones already missed.
            let now = Instant::now();
            while next <= now {
                next += interval;
            }
            crate::logtext::tell_left_out(now);
            self.tick(now_ms());
        }
    }
}
