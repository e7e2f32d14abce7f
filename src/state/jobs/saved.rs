//! The table as a snapshot (`jobs.json`) saves it, and back: the jobs taken under the lock
//! and encoded after it is let go, the wait for changes still prepared, and a table rebuilt
//! from what a start restored. The encoding itself is `state::journal`'s.

use super::*;

/// A job as a snapshot saves it ([`Job::saved`]): its run, fields and checks shared with the
/// table as they were when the snapshot was taken, and its scalars copied. The table replaces
/// those parts rather than changing them, so a change made while the snapshot is encoded is
/// not in it.
#[derive(Debug, Clone)]
pub struct SavedJob {
    /// The run: its uuid, host, tags and start (Unix ms).
    pub run: Arc<Run>,
    /// The fields every heartbeat repeats.
    pub fields: Arc<Vec<(CompactString, FieldValue)>>,
    /// The register's checks.
    pub thresholds: Arc<Vec<Threshold>>,
    /// The name of the token that registered the run (none without tokens).
    pub owner: Option<Arc<str>>,
    /// When the gateway last heard of the run (Unix ms).
    pub last_seen_ms: i64,
    /// Saved as running (or expired) while `Committing`: the commit is not answered yet.
    pub state: State,
    /// Heartbeats recorded.
    pub heartbeats: u64,
    /// The run has reported progress.
    pub progressed: bool,
}

impl Jobs {
    /// The whole table as the bytes of `jobs.json`, and the number up to which it includes
    /// every change: the latest one, or the one before the oldest change still prepared. A job
    /// in the middle of a commit is saved as it was before the commit: the commit has not been
    /// answered yet.
    #[cfg(test)]
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        self.snapshot_with(&Known::new())
    }

    /// Waits up to `timeout` until no change numbered `seq` or lower is prepared and not yet
    /// applied (or dropped), so that a snapshot holds every change up to `seq`; false when
    /// the time ran out first.
    pub fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let pending = |t: &mut Table| t.preparing.first().is_some_and(|&first| first <= seq);
        let t = self.lock();
        let (mut t, _) =
            crate::sync::unpoisoned(self.settled.wait_timeout_while(t, timeout, pending));
        !pending(&mut t)
    }

    /// [`Jobs::snapshot`], with what the gateway knows of InfluxDB's schema saved beside.
    /// The table is locked only to take the jobs ([`Job::saved`]: a few pointer copies each);
    /// the bytes are encoded after the lock is let go, so requests that change the table do not
    /// wait for them.
    pub fn snapshot_with(&self, schema: &Known) -> (Vec<u8>, u64) {
        self.snapshot_by(|covers, jobs| format::encode_snapshot(covers, jobs.iter(), schema))
    }

    /// The jobs as a snapshot saves them and the number up to which they hold every change
    /// (the latest one, or the one before the oldest change still prepared), taken together
    /// under the lock; `encode` makes them the snapshot once the lock is let go.
    pub(super) fn snapshot_by<T>(&self, encode: impl FnOnce(u64, &[SavedJob]) -> T) -> (T, u64) {
        let (covers, jobs) = {
            let t = self.lock();
            let covers = t.preparing.first().map_or(t.seq, |first| first - 1);
            let jobs: Vec<SavedJob> = t.jobs.values().map(|j| j.saved()).collect();
            (covers, jobs)
        };
        (encode(covers, &jobs), covers)
    }

    /// A table of `jobs` (restored from disk by `journal`), whose last change was journal
    /// record `seq`: counts what is running, orders what has ended, and forgets ended runs
    /// beyond `max_ended` (the oldest of the owner holding the most first).
    pub fn from_saved(jobs: HashMap<Uuid, Box<Job>>, seq: u64, max_ended: usize) -> Jobs {
        let mut table = Table::new(max_ended);
        table.jobs = jobs;
        table.seq = seq;
        let mut ended: Vec<(i64, Uuid)> = Vec::new();
        for (uuid, job) in &mut table.jobs {
            match job.state.ended_at() {
                Some(at_ms) => ended.push((at_ms, *uuid)),
                None => {
                    table.active += 1;
                    hold(&mut table.held, job.owner.as_deref());
                }
            }
            if matches!(job.state, State::Finished { .. }) {
                job.shed();
            }
            charge(
                &mut table.bytes,
                &mut table.held_bytes,
                job.owner.as_deref(),
                job.weight(),
            );
        }
        ended.sort_unstable();
        for (at_ms, uuid) in ended {
            table.count_ended(uuid, at_ms);
        }
        table.forget_over_cap();
        table.pending = Vec::new();
        // A restored run is as old as the wall clock says at the start (a clock that went back
        // makes it new): it was not heard from while the gateway was down. From here on its
        // age runs on the monotonic clock.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for job in table.jobs.values_mut() {
            job.seen_mono_ms = -(now_ms.saturating_sub(job.last_seen_ms).max(0));
        }
        Jobs {
            table: Mutex::new(table),
            settled: Signal::new(),
            origin: Instant::now(),
        }
    }
}
