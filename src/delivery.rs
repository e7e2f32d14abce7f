//! Delivery: where the points of a request go, and the replay thread that empties the spool.
//!
//! The promise (SPEC §7): when [`Delivery::deliver`] returns `Ok`, every point is either
//! stored by InfluxDB or fsync'd to the spool and will be delivered; when it returns `Err`,
//! nothing was recorded. InfluxDB's failures are sorted by [`Disposition`]: unreachable,
//! slow, busy or misconfigured → spool (and retry); refused data → dead letters (never retried
//! by itself, never dropped).
//!
//! While InfluxDB is known to be down, requests go straight to the spool instead of each
//! waiting for a timeout; the replay thread probes InfluxDB cheaply (`/ping`) with capped
//! exponential backoff, and once it answers, sends the spool oldest first. A record is removed
//! only after InfluxDB accepted it. Replayed points carry their original timestamps, and
//! InfluxDB stores a point with the same series and time only once, so a record sent twice
//! (after a crash between the write and the removal) does no harm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::influx::{Disposition, Influx, WriteError};
use crate::stats::Stats;
use crate::storage::{Record, Spool, SpoolError};

/// First and longest wait between tries while InfluxDB is down.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Records sent together by the replay, and their size at most.
const REPLAY_BATCH: usize = 64;
const REPLAY_BATCH_BYTES: u64 = 4 * 1024 * 1024;

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

/// Nothing was recorded.
#[derive(Debug)]
pub enum Failure {
    SpoolFull(String),
    Disk(String),
}

pub struct Delivery {
    influx: Influx,
    spool: Spool,
    /// InfluxDB failed recently: new points go straight to the spool.
    down: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<bool>,
}

impl Delivery {
    pub fn new(influx: Influx, spool: Spool) -> Delivery {
        // Points left from an earlier run go first through the replay; new ones may go direct.
        Delivery {
            influx,
            spool,
            down: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
        }
    }

    pub fn influx(&self) -> &Influx {
        &self.influx
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn influx_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Records `lines` (`points` points): stored by InfluxDB, spooled, or dead-lettered.
    pub fn deliver(&self, lines: &str, points: usize, stats: &Stats) -> Result<Outcome, Failure> {
        if self.influx_up() {
            match self.influx.write(lines) {
                Ok(()) => {
                    Stats::add(&stats.points_written, points);
                    return Ok(Outcome::Delivered);
                }
                Err(e) if e.disposition() == Disposition::Reject => {
                    let message = e.to_string();
                    log::error!(
                        "influxdb refused {points} points; they go to the dead letters: {message}"
                    );
                    self.spool
                        .dead_letter(lines.as_bytes(), points as u64, &message)
                        .map_err(|io| {
                            Failure::Disk(format!(
                                "cannot store refused points in the dead letters: {io}"
                            ))
                        })?;
                    Stats::add(&stats.points_dead_lettered, points);
                    return Ok(Outcome::DeadLettered(message));
                }
                Err(e) => self.mark_down(&e),
            }
        }
        match self.spool.append(lines.as_bytes(), points as u64) {
            Ok(_) => {
                Stats::add(&stats.points_spooled, points);
                self.notify();
                Ok(Outcome::Spooled)
            }
            Err(e @ SpoolError::Full { .. }) => Err(Failure::SpoolFull(e.to_string())),
            Err(e @ SpoolError::Io(_)) => Err(Failure::Disk(e.to_string())),
        }
    }

    fn mark_down(&self, e: &WriteError) {
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
            if !self.influx_up() && !self.influx.ping() {
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
    fn replay(&self, mut batch: Vec<Record>, stats: &Stats) -> Result<(), WriteError> {
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
        match self.influx.write(&joined) {
            Ok(()) => {
                for record in &batch {
                    self.forget(record, stats);
                }
                Ok(())
            }
            Err(e) if e.disposition() == Disposition::Reject && batch.len() > 1 => {
                for (record, text) in batch.iter().zip(&texts) {
                    match self.influx.write(text) {
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

    fn bury(&self, record: &Record, e: &WriteError, stats: &Stats) {
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
