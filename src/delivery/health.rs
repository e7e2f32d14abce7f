//! What delivery tells of InfluxDB: the health the state page shows (`up` follows writes; a
//! probe that answers while writes fail does not make InfluxDB up) and the log's account of a
//! streak of failures (the first at once, a reminder a minute, an error at half the log, one
//! line once the log is delivered again); the wait with `/ping` probes after a failure that
//! may pass. It never decides what is refused or kept.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::sink::{Disposition, SinkError};
use super::{BACKOFF_MAX, DOWN, Delivery, UNKNOWN, UP, lock};
use crate::storage::log::OwnedTarget;

/// How often, at most, the log says again that InfluxDB still fails.
const REMINDER_EVERY: Duration = Duration::from_secs(60);

/// What delivery has seen of InfluxDB, for the state page. The fields say one thing: `up` is
/// whether InfluxDB takes writes (a refusal of bad data is an answer, so it counts as up);
/// a probe that answers while writes fail (InfluxDB answers `/ping` but the database is
/// missing) does not make it up. While `up` is false, `last_error` is newer than
/// `last_success`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `None` until InfluxDB answered a write or the start's probe; then whether the last
    /// write (or, before any write, that probe) worked.
    pub up: Option<bool>,
    /// When InfluxDB last stored a write.
    pub last_success: Option<SystemTime>,
    /// When, and the error, as a sentence.
    pub last_error: Option<(SystemTime, String)>,
}

/// A streak of failed writes and probes, for the log's account of it: the first failure is
/// told at once, then a reminder at most every [`REMINDER_EVERY`], an error once the log is
/// half full, and one line once the log is delivered again.
#[derive(Default)]
pub(super) struct Streak {
    /// When the streak's first failure came; `None` while InfluxDB takes the log.
    since: Option<Instant>,
    /// When it was last told.
    told: Option<Instant>,
    /// Whether the log passing half of `storage.max_spool_bytes` was told in this streak.
    half_full_told: bool,
    /// Whether the failure last told needs a person (credentials, database or bucket).
    misconfigured_told: bool,
}

impl Delivery {
    /// Notes the outcome of a write to `target` (`None`: `[influxdb]`'s database) in the
    /// health: stored, refused (InfluxDB is up, it only did not like the data, or a client's
    /// own database is missing or closed to the gateway: [`SinkError::disposition_for`]) or
    /// failed.
    pub(super) fn record_write(
        &self,
        target: Option<&OwnedTarget>,
        result: &Result<(), SinkError>,
    ) {
        let mut health = lock(&self.health);
        match result {
            Ok(()) => {
                health.last_success = Some(SystemTime::now());
                self.up.store(UP, Ordering::Relaxed);
                self.body_limit_broken.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                health.last_error = Some((SystemTime::now(), e.to_string()));
                let up = if self.disposition_of(e, target) == Disposition::Reject {
                    UP
                } else {
                    DOWN
                };
                self.up.store(up, Ordering::Relaxed);
            }
        }
    }

    /// Notes a probe's outcome: a failure is an error and InfluxDB is down; an answer makes it
    /// up only before anything else was known (at start), since `/ping` answering says nothing
    /// of whether writes are taken.
    pub(super) fn record_probe(&self, result: &Result<(), SinkError>) {
        let mut health = lock(&self.health);
        match result {
            Ok(()) => {
                let _ = self
                    .up
                    .compare_exchange(UNKNOWN, UP, Ordering::Relaxed, Ordering::Relaxed);
            }
            Err(e) => {
                health.last_error = Some((SystemTime::now(), e.to_string()));
                self.up.store(DOWN, Ordering::Relaxed);
            }
        }
    }

    /// Tells the log of a failure that keeps points waiting: the first of a streak at once
    /// (as an error when only a person can fix it), and at once too when the cause turns from
    /// one that passes into one only a person can fix, or back; then at most every [`REMINDER_EVERY`]
    /// with what waits and since when; an error once the undelivered log passes half of
    /// `storage.max_spool_bytes`.
    pub(super) fn tell_failure(&self, e: &SinkError) {
        let mut streak = lock(&self.streak);
        let now = Instant::now();
        let (records, bytes) = self.log.undelivered();
        let misconfigured = e.disposition() == Disposition::RetryMisconfigured;
        let level = if misconfigured {
            log::Level::Error
        } else {
            log::Level::Warn
        };
        let advice = if let SinkError::Misconfigured { status: 413, .. } = e {
            "raise that body limit (InfluxDB's max-body-size, or the proxy's)"
        } else if misconfigured {
            "fix the [influxdb] credentials, database or bucket"
        } else {
            "they are delivered once it takes writes again"
        };
        match streak.since {
            // A probe's failure (at the start, or while nothing waited) comes before any point
            // waits: it says so, rather than that none wait.
            None if records == 0 => {
                streak.since = Some(now);
                streak.told = Some(now);
                streak.misconfigured_told = misconfigured;
                let advice = if misconfigured {
                    advice
                } else {
                    "points will wait in the log until it takes writes again"
                };
                log::log!(level, "{e}: nothing waits to be written yet; {advice}");
            }
            None => {
                streak.since = Some(now);
                streak.told = Some(now);
                streak.misconfigured_told = misconfigured;
                log::log!(
                    level,
                    "{e}: points wait in the log ({records} records, {bytes} bytes); {advice}"
                );
            }
            // The cause changed between one that passes and one only a person can fix (InfluxDB
            // back, but without the database): told at once, not a minute later.
            Some(since) if misconfigured != streak.misconfigured_told => {
                streak.told = Some(now);
                streak.misconfigured_told = misconfigured;
                log::log!(
                    level,
                    "influxdb has not taken writes for {}s, now because {e}: {records} records ({bytes} bytes) wait in the log; {advice}",
                    (now - since).as_secs()
                );
            }
            Some(since) if streak.told.is_none_or(|t| now - t >= REMINDER_EVERY) => {
                streak.told = Some(now);
                log::log!(
                    level,
                    "influxdb has not taken writes for {}s: {records} records ({bytes} bytes) wait in the log; {advice}; the last error: {e}",
                    (now - since).as_secs()
                );
            }
            Some(_) => log::debug!("influxdb still fails: {e}"),
        }
        let limit = self.log.limit();
        if !streak.half_full_told && bytes > limit / 2 {
            streak.half_full_told = true;
            log::error!(
                "the log holds {bytes} bytes not yet delivered, over half of storage.max_spool_bytes ({limit}): when it is full, requests get 503 until influxdb takes writes again"
            );
        }
    }

    /// Tells the log, once, that InfluxDB took the whole log again after a streak of failures.
    pub(super) fn tell_delivered(&self) {
        self.end_streak(|secs| {
            log::info!(
                "influxdb takes writes again: the log is delivered, {secs}s after the first failure"
            )
        });
    }

    /// Tells the log, once, that InfluxDB answers `/ping` again after a streak of failures,
    /// while nothing waits to be written: whether it takes writes is not known yet, and the
    /// next write tells (an error then, when it does not).
    pub(super) fn tell_answering(&self) {
        self.end_streak(|secs| {
            log::info!(
                "influxdb answers again, {secs}s after the first failure; nothing waits to be written"
            )
        });
    }

    /// Ends a streak of failures: `tell` is given the seconds since its first failure, when
    /// there was one.
    fn end_streak(&self, tell: impl FnOnce(u64)) {
        let mut streak = lock(&self.streak);
        if let Some(since) = streak.since.take() {
            *streak = Streak::default();
            tell(since.elapsed().as_secs());
        }
    }

    /// Makes InfluxDB ready for writes (v1: `CREATE DATABASE`, which the sink tells of when it
    /// fails, and which holds nothing back) and probes whether it answers; run once at start by
    /// the deliverer.
    pub(super) fn prepare(&self) {
        let _ = self.sink.prepare();
        let result = self.sink.ping();
        if let Err(e) = &result {
            self.tell_failure(e);
        }
        self.record_probe(&result);
    }

    /// After a failure that may pass: says so, then waits (probing with `/ping`) until
    /// InfluxDB answers again.
    pub(super) fn wait_for_influxdb(&self, e: &SinkError, backoff: &mut Duration) {
        self.tell_failure(e);
        {
            // Under the lock the waiters check it with, so that none checks it just before
            // and sleeps through the notify.
            let _settled = crate::sync::lock(&self.settled);
            self.up.store(DOWN, Ordering::Relaxed);
        }
        // Requests waiting in "influxdb" mode are answered now: their points are recorded.
        self.drop_answers();
        self.wake_every_waiter();
        while !self.is_stopping() {
            self.pause(*backoff);
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
            let result = self.sink.ping();
            self.record_probe(&result);
            match result {
                Ok(()) => {
                    log::debug!("influxdb answers /ping; trying the write again");
                    return;
                }
                Err(e) => self.tell_failure(&e),
            }
        }
    }
}
