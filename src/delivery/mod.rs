//! Delivery: where the points of a request go, and the replay thread that empties the spool.
//!
//! The promise (README, "Delivery guarantees"): when [`Delivery::deliver`] returns `Ok`, every point is either
//! stored by InfluxDB or fsync'd to the spool and will be delivered; when it returns `Err`,
//! nothing was recorded. InfluxDB's failures are sorted by [`Disposition`]: unreachable,
//! slow, busy or misconfigured → spool (and retry); refused data → dead letters (never retried
//! by itself, never dropped).
//!
//! Group commit: requests that reach the writer together share one InfluxDB write. Each
//! request queues its lines with a ticket and blocks; while fewer than [`MAX_IN_FLIGHT`]
//! batches are being written, a waiting request becomes the leader: it takes the queue (up to
//! [`BATCH_REQUESTS`] requests and [`BATCH_BYTES`] bytes; the rest stays for the next leader),
//! writes it as one body without holding the lock, settles every request of the batch, and
//! wakes them. There is no writer thread: the leader is one of the waiting requests, and it
//! goes on leading until its own request is settled. Each request still gets its own
//! [`Outcome`], so the meaning of a 200 is unchanged. When InfluxDB refuses a shared batch,
//! the batch is written again in halves, recursively, until the refused requests stand alone:
//! only those go to the dead letters, the others are delivered. (InfluxDB 1.x stores the good
//! points of a "partial write" before answering 400; writing them again stores nothing twice,
//! see below.) When a write fails for a reason that may pass, every request of the batch not yet
//! settled is spooled as a record of its own, as if it had been written alone, so a refusal
//! at replay still buries only that request's points. A leader that panics settles what it
//! had not settled yet as a storage failure (the client gets a 503 and may send again, which
//! stores nothing twice), so no request waits forever.
//!
//! While InfluxDB is known to be down, requests go straight to the spool instead of each
//! waiting for a timeout; the replay thread probes InfluxDB cheaply (`/ping`) with capped
//! exponential backoff, and once it answers, sends the spool oldest first. A record is removed
//! only after InfluxDB accepted it. Replayed points carry their original timestamps, and
//! InfluxDB stores a point with the same series and time only once, so a record sent twice
//! (after a crash between the write and the removal) does no harm.

pub mod influx;
pub mod sink;
pub mod spool;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::stats::Stats;
use sink::{Disposition, Sink, SinkError};
use spool::{Record, Spool, SpoolError};

/// First and longest wait between tries while InfluxDB is down.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Records sent together by the replay, and their size at most.
const REPLAY_BATCH: usize = 64;
const REPLAY_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Batches of requests written to InfluxDB at the same time, at most. One: while it is being
/// written the next batch gathers, so the busier the gateway, the larger and fewer the writes,
/// and InfluxDB's cost per point falls as the load rises. Measured with scripts/bench.sh's
/// load generator against influxd on 2 cores, 1 did half the writes of 2 and more cycles per
/// second at 8 clients (and as many at 32), with a lower p99; 4 and 8 did worse still. The
/// heartbeat tick, a write as large as the number of runs, does not take this slot (see
/// [`Delivery::deliver_alone`]), so requests never wait behind it.
const MAX_IN_FLIGHT: usize = 1;
/// Requests, and bytes of line protocol, in one coalesced write at most (a single larger
/// request still goes, alone). Bounded so that a split after a refusal stays short and one
/// write stays well inside InfluxDB's body limit (25 MB by default in 1.x).
const BATCH_REQUESTS: usize = 256;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Where a request's points went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Spooled,
    /// InfluxDB refused them; they wait in the dead letters with this message.
    DeadLettered(String),
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        *self == Outcome::Delivered
    }
}

/// Why nothing of a request was recorded.
#[derive(Debug)]
pub enum Failure {
    /// The spool could not take the points: full (`storage.max_spool_bytes`) or a disk error.
    Spool(SpoolError),
    /// InfluxDB refused the points and the dead letters could not be written.
    DeadLetter(std::io::Error),
    /// The write of the request's batch stopped half-way: the thread writing it panicked or
    /// could not be started.
    Interrupted(&'static str),
}

impl Failure {
    /// True when the spool is full: the disk works, InfluxDB must catch up first.
    pub fn is_spool_full(&self) -> bool {
        matches!(self, Failure::Spool(SpoolError::Full { .. }))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Spool(e) => e.fmt(f),
            Failure::DeadLetter(e) => {
                write!(f, "cannot store refused points in the dead letters: {e}")
            }
            Failure::Interrupted(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Failure {}

/// What [`Delivery::deliver`] answers.
type Settled = Result<Outcome, Failure>;

/// One request's points, waiting in the queue or in a batch being written.
struct Entry {
    ticket: u64,
    lines: String,
    points: usize,
}

/// The group-commit queue, under [`Delivery::queue`].
#[derive(Default)]
struct Queue {
    next_ticket: u64,
    waiting: VecDeque<Entry>,
    /// Batches being written now (never more than [`MAX_IN_FLIGHT`]).
    writing: usize,
    /// Results not yet taken by their request, by ticket.
    settled: HashMap<u64, Settled>,
    /// Tickets whose request is gone (its thread unwound from a panic while leading): their
    /// results are dropped instead of kept for nobody.
    abandoned: HashSet<u64>,
}

impl Queue {
    /// Takes the oldest waiting requests for one write: at least one, at most
    /// [`BATCH_REQUESTS`] and, beyond the first, [`BATCH_BYTES`].
    fn take_batch(&mut self) -> Vec<Entry> {
        let mut bytes = 0;
        let mut n = 0;
        for entry in self.waiting.iter().take(BATCH_REQUESTS) {
            bytes += entry.lines.len();
            if n > 0 && bytes > BATCH_BYTES {
                break;
            }
            n += 1;
        }
        self.waiting.drain(..n).collect()
    }

    fn settle(&mut self, ticket: u64, result: Settled) {
        if !self.abandoned.remove(&ticket) {
            self.settled.insert(ticket, result);
        }
    }

    /// Forgets a request whose thread is gone: its result, its place in the queue, or (while a
    /// batch holding it is being written) the result to come.
    fn abandon(&mut self, ticket: u64) {
        if self.settled.remove(&ticket).is_some() {
            return;
        }
        if let Some(i) = self.waiting.iter().position(|e| e.ticket == ticket) {
            self.waiting.remove(i);
            return;
        }
        self.abandoned.insert(ticket);
    }
}

/// A batch being written by its leader. Dropping it, after the write or while unwinding from
/// a panic, publishes every result, settles what has no result yet as a failure, and wakes
/// the waiting requests; so no request waits forever for a leader that is gone.
struct Leader<'a> {
    delivery: &'a Delivery,
    /// The leader's own ticket, which may or may not be in `batch`.
    own: u64,
    batch: Vec<Entry>,
    /// One per entry of `batch`, filled in as each is settled.
    results: Vec<Option<Settled>>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut q = self.delivery.lock_queue();
        q.writing -= 1;
        for (entry, result) in self.batch.iter().zip(&mut self.results) {
            let result = result.take().unwrap_or(Err(Failure::Interrupted(
                "the write of this request's batch stopped half-way (an internal error, see the log)",
            )));
            q.settle(entry.ticket, result);
        }
        if std::thread::panicking() {
            q.abandon(self.own);
        }
        drop(q);
        self.delivery.written.notify_all();
    }
}

/// What delivery has seen of InfluxDB, for the state page.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub last_success: Option<SystemTime>,
    /// When, and the error, as a sentence.
    pub last_error: Option<(SystemTime, String)>,
}

pub struct Delivery {
    sink: Box<dyn Sink>,
    spool: Spool,
    health: Mutex<Health>,
    /// InfluxDB failed recently: new points go straight to the spool.
    down: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    /// Requests waiting for a write (group commit), and the results of batches written.
    queue: Mutex<Queue>,
    /// Notified whenever a batch is settled.
    written: Condvar,
}

impl Delivery {
    pub fn new(sink: Box<dyn Sink>, spool: Spool) -> Delivery {
        // Points left from an earlier run go first through the replay; new ones may go direct.
        Delivery {
            sink,
            spool,
            health: Mutex::new(Health::default()),
            down: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
            queue: Mutex::new(Queue::default()),
            written: Condvar::new(),
        }
    }

    /// The last success and the last error of a write or a probe.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record_health(&self, result: &Result<(), SinkError>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => health.last_success = Some(SystemTime::now()),
            Err(e) => health.last_error = Some((SystemTime::now(), e.to_string())),
        }
    }

    /// Makes InfluxDB ready for writes (v1: `CREATE DATABASE`); run once at start, on a
    /// thread of its own, since InfluxDB may not answer yet.
    pub fn prepare(&self) {
        let result = self.sink.prepare();
        self.record_health(&result);
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn influx_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Records `lines` (`points` points): stored by InfluxDB, spooled, or dead-lettered.
    /// Blocks until this request's points are settled; requests that arrive together share one
    /// InfluxDB write (see the module documentation).
    pub fn deliver(&self, lines: String, points: usize, stats: &Stats) -> Result<Outcome, Failure> {
        if !self.influx_up() {
            return self.spool_one(&lines, points, stats);
        }
        let mut q = self.lock_queue();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push_back(Entry {
            ticket,
            lines,
            points,
        });
        loop {
            if let Some(result) = q.settled.remove(&ticket) {
                return result;
            }
            if q.writing < MAX_IN_FLIGHT && !q.waiting.is_empty() {
                let batch = q.take_batch();
                q.writing += 1;
                drop(q);
                let mut leader = Leader {
                    delivery: self,
                    own: ticket,
                    results: batch.iter().map(|_| None).collect(),
                    batch,
                };
                self.write_batch(&leader.batch, &mut leader.results, stats);
                drop(leader);
                q = self.lock_queue();
            } else {
                q = self.written.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Records the heartbeat tick's points in a write of their own, beside the requests'
    /// queue: a tick of many runs is one large write, and requests must not wait behind it.
    /// Outcomes as [`Delivery::deliver`].
    pub fn deliver_alone(&self, lines: String, points: usize, stats: &Stats) -> Settled {
        if !self.influx_up() {
            return self.spool_one(&lines, points, stats);
        }
        let entry = Entry {
            ticket: u64::MAX,
            lines,
            points,
        };
        let mut result = [None];
        self.write_batch(std::slice::from_ref(&entry), &mut result, stats);
        result[0].take().unwrap_or(Err(Failure::Interrupted(
            "the heartbeat write stopped half-way (an internal error, see the log)",
        )))
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `entries` as one InfluxDB write and puts each one's result in `results`. A
    /// refused batch of several is written again in two halves, recursively, so that only the
    /// refused requests go to the dead letters; a failure that may pass spools every entry
    /// not settled yet, each as a record of its own.
    fn write_batch(&self, entries: &[Entry], results: &mut [Option<Settled>], stats: &Stats) {
        if !self.influx_up() {
            // Down since the batch was queued, or since the other half failed.
            for (entry, result) in entries.iter().zip(results) {
                *result = Some(self.spool_one(&entry.lines, entry.points, stats));
            }
            return;
        }
        let body = if let [entry] = entries {
            Cow::Borrowed(entry.lines.as_str())
        } else {
            Cow::Owned(join(entries))
        };
        match self.write(&body, stats) {
            Ok(()) => {
                for (entry, result) in entries.iter().zip(results) {
                    Stats::add(&stats.points_written, entry.points);
                    *result = Some(Ok(Outcome::Delivered));
                }
            }
            Err(e) if e.disposition() == Disposition::Reject && entries.len() > 1 => {
                log::debug!(
                    "influxdb refused a batch of {} requests; writing it in halves to find the refused points: {e}",
                    entries.len()
                );
                let half = entries.len() / 2;
                let (first, second) = entries.split_at(half);
                let (first_results, second_results) = results.split_at_mut(half);
                self.write_batch(first, first_results, stats);
                self.write_batch(second, second_results, stats);
            }
            Err(e) if e.disposition() == Disposition::Reject => {
                results[0] = Some(self.dead_letter(&entries[0], &e, stats));
            }
            Err(e) => {
                self.mark_down(&e);
                for (entry, result) in entries.iter().zip(results) {
                    *result = Some(self.spool_one(&entry.lines, entry.points, stats));
                }
            }
        }
    }

    /// One InfluxDB write, counted.
    fn write(&self, lines: &str, stats: &Stats) -> Result<(), SinkError> {
        Stats::add(&stats.influxdb_writes, 1);
        let result = self.sink.write(lines);
        self.record_health(&result);
        result
    }

    /// One request's points that InfluxDB refused, alone, go to the dead letters.
    fn dead_letter(&self, entry: &Entry, e: &SinkError, stats: &Stats) -> Settled {
        let message = e.to_string();
        let points = entry.points;
        log::error!("influxdb refused {points} points; they go to the dead letters: {message}");
        self.spool
            .dead_letter(entry.lines.as_bytes(), points as u64, &message)
            .map_err(Failure::DeadLetter)?;
        Stats::add(&stats.points_dead_lettered, points);
        Ok(Outcome::DeadLettered(message))
    }

    /// One request's points go to the spool as one record.
    fn spool_one(&self, lines: &str, points: usize, stats: &Stats) -> Settled {
        match self.spool.append(lines.as_bytes(), points as u64) {
            Ok(_) => {
                Stats::add(&stats.points_spooled, points);
                self.notify();
                Ok(Outcome::Spooled)
            }
            Err(e) => Err(Failure::Spool(e)),
        }
    }

    fn mark_down(&self, e: &SinkError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            if e.disposition() == Disposition::RetryMisconfigured {
                log::error!(
                    "{e}: points are spooled until the [influxdb] credentials, database or bucket are fixed"
                );
            } else {
                log::warn!("{e}: points are spooled until it answers again");
            }
        }
    }

    /// Probes InfluxDB; true when it answers.
    fn ping(&self) -> bool {
        let result = self.sink.ping();
        self.record_health(&result);
        result.is_ok()
    }

    fn notify(&self) {
        *self.wake_lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Waits until something is spooled or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let guard = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (mut woken, _) = self
            .wake
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|e| e.into_inner());
        *woken = false;
    }

    /// The replay thread: runs until the process ends.
    pub fn replay_loop(&self, stats: &Stats) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let batch = self.spool.oldest(REPLAY_BATCH);
            if batch.is_empty() {
                self.wait(Duration::from_secs(1));
                continue;
            }
            if !self.influx_up() && !self.ping() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            match self.replay(batch, stats) {
                Ok(()) => {
                    if self.down.swap(false, Ordering::Relaxed) {
                        log::info!("influxdb answers again; sending the spool");
                    }
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    self.mark_down(&e);
                    if e.disposition() == Disposition::RetryMisconfigured {
                        // Nothing arrives until a person fixes the configuration: say so each time.
                        log::error!(
                            "{e}: spooled points wait; fix [influxdb] in the configuration"
                        );
                    } else {
                        log::debug!("replay paused for {backoff:?}: {e}");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Sends records together; when InfluxDB refuses the batch, sends them one by one so only
    /// the refused record goes to the dead letters.
    fn replay(&self, mut batch: Vec<Record>, stats: &Stats) -> Result<(), SinkError> {
        let mut size = 0;
        let fits = batch
            .iter()
            .take_while(|r| {
                size += r.bytes;
                size <= REPLAY_BATCH_BYTES
            })
            .count();
        // A single record larger than the batch limit still has to go.
        batch.truncate(fits.max(1));
        let mut texts = Vec::with_capacity(batch.len());
        for record in &batch {
            match std::fs::read_to_string(&record.path) {
                Ok(text) => texts.push(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log::error!(
                        "spool record {} was removed by hand; forgetting it",
                        record.path.display()
                    );
                    let _ = self.spool.remove(record);
                    return Ok(());
                }
                Err(e) => {
                    // Unreadable (a disk fault): keep it for a person to look at.
                    log::error!(
                        "cannot read spool record {}: {e}; moving it to the dead letters",
                        record.path.display()
                    );
                    let _ = self
                        .spool
                        .bury(record, &format!("unreadable in the spool: {e}"));
                    return Ok(());
                }
            }
        }
        let joined: String = texts
            .iter()
            .map(|t| t.trim_end_matches('\n'))
            .collect::<Vec<_>>()
            .join("\n");
        match self.write(&joined, stats) {
            Ok(()) => {
                for record in &batch {
                    self.forget(record, stats);
                }
                Ok(())
            }
            Err(e) if e.disposition() == Disposition::Reject && batch.len() > 1 => {
                for (record, text) in batch.iter().zip(&texts) {
                    match self.write(text, stats) {
                        Ok(()) => self.forget(record, stats),
                        Err(e) if e.disposition() == Disposition::Reject => {
                            self.bury(record, &e, stats)
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(e) if e.disposition() == Disposition::Reject => {
                self.bury(&batch[0], &e, stats);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn forget(&self, record: &Record, stats: &Stats) {
        Stats::add(&stats.points_written, record.points as usize);
        Stats::add(&stats.points_replayed, record.points as usize);
        if let Err(e) = self.spool.remove(record) {
            // It will be sent again after a restart, which InfluxDB absorbs; say so once here.
            log::warn!(
                "cannot remove delivered spool record {}: {e}",
                record.path.display()
            );
        }
    }

    fn bury(&self, record: &Record, e: &SinkError, stats: &Stats) {
        log::error!("influxdb refused spooled points; they go to the dead letters: {e}");
        Stats::add(&stats.points_dead_lettered, record.points as usize);
        if let Err(io) = self.spool.bury(record, &e.to_string()) {
            log::error!(
                "cannot move spool record {} to the dead letters: {io}",
                record.path.display()
            );
        }
    }
}

/// The lines of several requests as one body. Each request's lines end with '\n'
/// (`encode_batch`); one that does not gets it, so lines of two requests never run together.
fn join(entries: &[Entry]) -> String {
    let mut body = String::with_capacity(entries.iter().map(|e| e.lines.len() + 1).sum());
    for entry in entries {
        body.push_str(&entry.lines);
        if !entry.lines.is_empty() && !entry.lines.ends_with('\n') {
            body.push('\n');
        }
    }
    body
}

#[cfg(test)]
mod tests {
    //! Every outcome of a write, in-process, through the in-memory sink: stored, refused alone
    //! or in a shared write, too large, unreachable, timed out, busy and misconfigured; the
    //! replay after an outage; and the group-commit paths a real InfluxDB cannot be made to
    //! take on demand (a passing failure in the middle of a split, a leader that panics).
    //! Sharing and splitting against a real `influxd` are tested through the binary too
    //! (`tests/it/coalesce.rs`).

    use super::*;
    use std::sync::Arc;

    use crate::delivery::sink::testing::{Answer, MemorySink};
    use crate::delivery::spool::tests::Dir;

    fn delivery(sink: &Arc<MemorySink>, dir: &Dir, spool_limit: u64) -> Delivery {
        Delivery::new(
            Box::new(Arc::clone(sink)),
            Spool::open(&dir.0, spool_limit).unwrap(),
        )
    }

    fn refused() -> Answer {
        Answer::Fail(SinkError::Refused {
            status: 400,
            message: "stub answer 400".into(),
            lines: None,
        })
    }

    fn unavailable() -> Answer {
        Answer::Fail(SinkError::Unavailable {
            status: 503,
            message: "stub answer 503".into(),
        })
    }

    fn entry(ticket: u64, name: &str) -> Entry {
        Entry {
            ticket,
            lines: format!("m,r={name} v=1 {ticket}\nm,r={name} v=2 {ticket}\n"),
            points: 2,
        }
    }

    #[test]
    fn a_passing_failure_in_a_split_spools_each_unsettled_request_alone() {
        // The batch of four is refused; its first half is stored; the second half meets a
        // 503: InfluxDB is down, and c and d go to the spool, one record each. The spool has
        // room for c only, so d fails alone.
        let sink = Arc::new(MemorySink::new());
        sink.answer([refused(), Answer::Store, unavailable()]);
        let dir = Dir::new("split-503");
        let entries: Vec<Entry> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, n)| entry(i as u64, n))
            .collect();
        let d = delivery(&sink, &dir, entries[2].lines.len() as u64);
        let stats = Stats::default();
        let mut results: Vec<Option<Settled>> = entries.iter().map(|_| None).collect();
        d.write_batch(&entries, &mut results, &stats);

        let bodies = sink.bodies();
        assert_eq!(bodies.len(), 3, "{bodies:?}");
        assert_eq!(bodies[0], join(&entries));
        assert_eq!(bodies[1], join(&entries[..2]));
        assert_eq!(bodies[2], join(&entries[2..]));
        let results: Vec<Settled> = results.into_iter().map(Option::unwrap).collect();
        assert!(matches!(results[0], Ok(Outcome::Delivered)), "{results:?}");
        assert!(matches!(results[1], Ok(Outcome::Delivered)), "{results:?}");
        assert!(matches!(results[2], Ok(Outcome::Spooled)), "{results:?}");
        assert!(
            matches!(&results[3], Err(f) if f.is_spool_full()),
            "{results:?}"
        );
        assert!(!d.influx_up());
        let records = d.spool().oldest(10);
        assert_eq!(records.len(), 1);
        assert_eq!(
            std::fs::read_to_string(&records[0].path).unwrap(),
            entries[2].lines
        );
        assert_eq!(Stats::get(&stats.points_written), 4);
        assert_eq!(Stats::get(&stats.points_spooled), 2);
        assert_eq!(Stats::get(&stats.influxdb_writes), 3);
        assert_eq!(d.spool().dead_letters(), (0, 0));
    }

    #[test]
    fn the_heartbeat_write_does_not_wait_for_the_request_slot() {
        let sink = Arc::new(MemorySink::new());
        sink.answer([Answer::Store, refused()]);
        let dir = Dir::new("alone");
        let d = delivery(&sink, &dir, 1 << 20);
        // A batch of requests holds the write slot and, in this test, never lets it go.
        d.lock_queue().writing = MAX_IN_FLIGHT;
        let stats = Stats::default();
        let outcome = d.deliver_alone("m v=1 1\n".into(), 1, &stats).unwrap();
        assert_eq!(outcome, Outcome::Delivered);
        assert_eq!(Stats::get(&stats.points_written), 1);
        // Refused heartbeats go to the dead letters like a request's points.
        let outcome = d.deliver_alone("m v=2 2\n".into(), 1, &stats).unwrap();
        assert!(matches!(outcome, Outcome::DeadLettered(_)), "{outcome:?}");
        assert_eq!(sink.bodies(), ["m v=1 1\n", "m v=2 2\n"]);
        assert_eq!(
            d.lock_queue().writing,
            MAX_IN_FLIGHT,
            "the slot was never taken"
        );
    }

    #[test]
    fn a_leader_that_panics_settles_its_batch_and_wakes_the_waiters() {
        let sink = Arc::new(MemorySink::new());
        let dir = Dir::new("panic");
        let d = Arc::new(delivery(&sink, &dir, 1 << 20));
        // Every write slot is taken, so the two requests below queue and wait.
        d.lock_queue().writing = MAX_IN_FLIGHT;
        let followers: Vec<_> = (0..2)
            .map(|i| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || d.deliver(format!("m v={i} 1\n"), 1, &Stats::default()))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while d.lock_queue().waiting.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the followers queue");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A leader whose own request is the third of its batch settles the first, then
        // panics half-way.
        let own = {
            let mut q = d.lock_queue();
            let own = q.next_ticket;
            q.next_ticket += 1;
            q.waiting.push_back(entry(own, "own"));
            own
        };
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let batch = d.lock_queue().take_batch();
            assert_eq!(batch.len(), 3);
            let mut leader = Leader {
                delivery: &d,
                own,
                results: batch.iter().map(|_| None).collect(),
                batch,
            };
            leader.results[0] = Some(Ok(Outcome::Delivered));
            panic!("a leader panics half-way (on purpose, by the test)");
        }));
        assert!(panicked.is_err());
        let mut results: Vec<Settled> = followers.into_iter().map(|t| t.join().unwrap()).collect();
        results.sort_by_key(|r| r.is_err());
        assert!(matches!(results[0], Ok(Outcome::Delivered)), "{results:?}");
        match &results[1] {
            Err(Failure::Interrupted(why)) => assert!(why.contains("stopped half-way"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The slot is free again, and the gone leader's result is not kept for nobody.
        let q = d.lock_queue();
        assert_eq!(q.writing, MAX_IN_FLIGHT - 1);
        assert!(q.settled.is_empty() && q.abandoned.is_empty() && q.waiting.is_empty());
        assert!(sink.bodies().is_empty());
    }

    #[test]
    fn a_batch_is_bounded_but_never_empty() {
        let mut q = Queue::default();
        let big = "x".repeat(BATCH_BYTES / 2 + 1);
        for ticket in 0..3 {
            q.waiting.push_back(Entry {
                ticket,
                lines: big.clone(),
                points: 1,
            });
        }
        assert_eq!(q.take_batch().len(), 1, "two would pass BATCH_BYTES");
        q.waiting[0].lines = "x".repeat(BATCH_BYTES * 2);
        assert_eq!(
            q.take_batch().len(),
            1,
            "a request larger than a batch still goes"
        );
        q.waiting.pop_front();
        for ticket in 0..BATCH_REQUESTS as u64 + 5 {
            q.waiting.push_back(entry(ticket, "n"));
        }
        assert_eq!(q.take_batch().len(), BATCH_REQUESTS);
        assert_eq!(q.take_batch().len(), 5);
        assert!(q.take_batch().is_empty());
    }

    #[test]
    fn joined_lines_never_run_together() {
        let entries = [
            Entry {
                ticket: 0,
                lines: "a v=1 1\n".into(),
                points: 1,
            },
            Entry {
                ticket: 1,
                lines: String::new(),
                points: 0,
            },
            Entry {
                ticket: 2,
                lines: "b v=1 1".into(),
                points: 1,
            },
            Entry {
                ticket: 3,
                lines: "c v=1 1\n".into(),
                points: 1,
            },
        ];
        assert_eq!(join(&entries), "a v=1 1\nb v=1 1\nc v=1 1\n");
    }

    fn fail(e: SinkError) -> Answer {
        Answer::Fail(e)
    }

    #[test]
    fn every_outcome_of_a_write_reaches_its_request() {
        let status = |status: u16| (status, format!("stub answer {status}"));
        // (what InfluxDB answers, what the request learns, records spooled, dead letters,
        // InfluxDB counted as up afterwards)
        let cases: Vec<(Answer, &str, u64, u64, bool)> = vec![
            (Answer::Store, "delivered", 0, 0, true),
            (refused(), "dead letter: influxdb answered 400", 0, 1, true),
            (
                fail(SinkError::TooLarge {
                    message: "request entity too large".into(),
                }),
                "dead letter: influxdb answered 413",
                0,
                1,
                true,
            ),
            (
                fail(SinkError::Unreachable("connection refused".into())),
                "spooled",
                1,
                0,
                false,
            ),
            (
                fail(SinkError::TimedOut("timeout: global".into())),
                "spooled",
                1,
                0,
                false,
            ),
            (unavailable(), "spooled", 1, 0, false),
            (
                fail(SinkError::from_status(429, status(429).1)),
                "spooled",
                1,
                0,
                false,
            ),
            (
                fail(SinkError::from_status(401, status(401).1)),
                "spooled",
                1,
                0,
                false,
            ),
            (
                fail(SinkError::from_status(404, status(404).1)),
                "spooled",
                1,
                0,
                false,
            ),
        ];
        for (i, (answer, expected, spooled, dead, up)) in cases.into_iter().enumerate() {
            let sink = Arc::new(MemorySink::new());
            sink.answer([answer.clone()]);
            let dir = Dir::new(&format!("outcome-{i}"));
            let d = delivery(&sink, &dir, 1 << 20);
            let stats = Stats::default();
            let outcome = d
                .deliver("m,r=a v=1 1\nm,r=a v=2 2\n".into(), 2, &stats)
                .unwrap();
            let seen = match &outcome {
                Outcome::Delivered => "delivered".to_string(),
                Outcome::Spooled => "spooled".to_string(),
                Outcome::DeadLettered(why) => format!("dead letter: {why}"),
            };
            assert!(seen.starts_with(expected), "{answer:?}: {seen}");
            assert_eq!(d.spool().usage().records, spooled, "{answer:?}");
            assert_eq!(d.spool().dead_letters().0, dead, "{answer:?}");
            assert_eq!(d.influx_up(), up, "{answer:?}");
            let health = d.health();
            assert_eq!(
                health.last_error.is_some(),
                !matches!(answer, Answer::Store)
            );
            assert_eq!(
                health.last_success.is_some(),
                matches!(answer, Answer::Store)
            );
        }
    }

    #[test]
    fn a_refused_request_in_a_shared_write_is_dead_lettered_alone() {
        let sink = Arc::new(MemorySink::new());
        sink.refuse_lines_with("r=bad");
        let dir = Dir::new("shared-refusal");
        let d = delivery(&sink, &dir, 1 << 20);
        let entries: Vec<Entry> = ["a", "bad", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, n)| entry(i as u64, n))
            .collect();
        let stats = Stats::default();
        let mut results: Vec<Option<Settled>> = entries.iter().map(|_| None).collect();
        d.write_batch(&entries, &mut results, &stats);
        for (entry, result) in entries.iter().zip(&results) {
            let outcome = result.as_ref().unwrap().as_ref().unwrap();
            if entry.lines.contains("r=bad") {
                assert!(matches!(outcome, Outcome::DeadLettered(_)), "{outcome:?}");
            } else {
                assert_eq!(*outcome, Outcome::Delivered);
            }
        }
        // The dead letter holds the refused request's points and nothing else.
        let letters = spool::list_dead_letters(&dir.0).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            std::fs::read_to_string(&letters[0].0).unwrap(),
            entries[1].lines
        );
        assert_eq!(Stats::get(&stats.points_dead_lettered), 2);
        assert_eq!(Stats::get(&stats.points_written), 8);
        assert!(
            d.influx_up(),
            "a refusal says nothing about InfluxDB's health"
        );
        let stored = sink.stored();
        for good in ["r=a", "r=c", "r=d", "r=e"] {
            assert!(
                stored.iter().any(|l| l.contains(good)),
                "{good}: {stored:?}"
            );
        }
        assert!(!stored.iter().any(|l| l.contains("r=bad")));
    }

    #[test]
    fn the_spool_is_sent_once_influxdb_answers_and_a_refused_record_is_buried() {
        let sink = Arc::new(MemorySink::new());
        sink.answer([fail(SinkError::Unreachable("connection refused".into()))]);
        let dir = Dir::new("replay");
        let d = delivery(&sink, &dir, 1 << 20);
        let stats = Stats::default();
        for (i, name) in ["a", "b", "bad", "c"].iter().enumerate() {
            let e = entry(i as u64, name);
            assert_eq!(d.deliver(e.lines, 2, &stats).unwrap(), Outcome::Spooled);
        }
        assert!(!d.influx_up());
        assert_eq!(d.spool().usage().records, 4);
        // Down: only the first request tried InfluxDB, the others went straight to the spool.
        assert_eq!(sink.bodies().len(), 1);

        sink.set_ping_fails(true);
        assert!(!d.ping(), "the replay waits while the probe fails");
        sink.set_ping_fails(false);
        assert!(d.ping());
        sink.refuse_lines_with("r=bad");
        d.replay(d.spool().oldest(REPLAY_BATCH), &stats).unwrap();
        assert_eq!(d.spool().usage().records, 0, "every record left the spool");
        assert_eq!(d.spool().dead_letters().0, 1, "the refused one is buried");
        assert_eq!(Stats::get(&stats.points_replayed), 6);
        assert_eq!(Stats::get(&stats.points_dead_lettered), 2);
        let stored = sink.stored();
        for good in ["r=a", "r=b", "r=c"] {
            assert!(
                stored.iter().any(|l| l.contains(good)),
                "{good}: {stored:?}"
            );
        }
    }
}
