//! The job table: which runs are running, committing, finished or expired, and the ticker that
//! writes their heartbeats.
//!
//! The table is one `Mutex<HashMap<Uuid, Job>>`. The lock is held only to read or change the
//! table, never across I/O: handlers take what they need, write to InfluxDB without the lock,
//! and come back to record the outcome. That is why a register first reserves a slot (so
//! `jobs.max_running` holds under concurrency) and a commit first marks the job `Committing`
//! (so two commits of one run cannot both succeed).
//!
//! [`Jobs::save`] and [`Jobs::load`] turn the table into the bytes of `jobs.json` and back;
//! writing the file is the caller's business, so this module does no I/O.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::line_protocol::{self, FieldValue, Point};
use crate::points::{self, Event, Run};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Heartbeats are written.
    Running,
    /// A commit's points are being written; `expired` says what it was before.
    Committing { expired: bool },
    /// Committed at this time (Unix ms); kept for `jobs.finished_retention`.
    Finished { at_ms: i64 },
    /// No commit within `jobs.max_age`; heartbeats stopped. A late commit is still accepted:
    /// the result of a long test is worth more than the rule it broke.
    Expired { at_ms: i64 },
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Committing { .. } => "committing",
            State::Finished { .. } => "finished",
            State::Expired { .. } => "expired",
        }
    }

    /// Counts against `jobs.max_running`.
    fn is_active(self) -> bool {
        matches!(self, State::Running | State::Committing { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub run: Run,
    /// The fields every heartbeat repeats.
    pub fields: Vec<(String, FieldValue)>,
    /// When the gateway last heard of the run (Unix ms); `jobs.max_age` counts from here.
    pub last_seen_ms: i64,
    pub state: State,
    pub heartbeats: u64,
}

#[derive(Debug, Default)]
struct Table {
    jobs: HashMap<Uuid, Job>,
    /// Jobs in an active state, kept with every state change so a register needs no scan.
    active: usize,
    /// Registers between their slot reservation and their outcome.
    reserved: usize,
}

#[derive(Debug, Default)]
pub struct Jobs {
    table: Mutex<Table>,
}

/// A place for one more running job, held while register writes its points.
pub struct Slot<'a> {
    jobs: &'a Jobs,
    filled: bool,
}

impl Slot<'_> {
    pub fn fill(mut self, job: Job) {
        let mut t = self.jobs.lock();
        t.reserved -= 1;
        if job.state.is_active() {
            t.active += 1;
        }
        t.jobs.insert(job.run.uuid, job);
        self.filled = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.jobs.lock().reserved -= 1;
        }
    }
}

/// Why a commit cannot go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Finished {
        at_ms: i64,
    },
    InProgress,
    /// Progress would give the run more than this many fields.
    TooManyFields(usize),
    /// Progress names a field like one of the run's tags.
    IsTag,
}

/// What one tick writes.
#[derive(Debug, Default)]
pub struct Tick {
    pub points: Vec<Point>,
    /// Runs whose heartbeat is among `points`.
    pub beats: Vec<Uuid>,
    pub expired: usize,
    pub removed: usize,
}

/// Counts for the state page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub running: usize,
    pub committing: usize,
    pub finished: usize,
    pub expired: usize,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere must not take the table down with it: every change below leaves the
        // table consistent before anything can panic, so the data is still good.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves room for a new running job, or `None` when `max_running` are running already.
    pub fn reserve(&self, max_running: usize) -> Option<Slot<'_>> {
        let mut t = self.lock();
        if t.active + t.reserved >= max_running {
            return None;
        }
        t.reserved += 1;
        Some(Slot {
            jobs: self,
            filled: false,
        })
    }

    /// Marks a job `Committing` and hands back its run, or says why it can't be committed.
    pub fn begin_commit(&self, uuid: &Uuid) -> Result<Run, Refusal> {
        let mut t = self.lock();
        let Some(job) = t.jobs.get_mut(uuid) else {
            return Err(Refusal::Unknown);
        };
        let (state, was_active) = match job.state {
            State::Running => (State::Committing { expired: false }, true),
            State::Expired { .. } => (State::Committing { expired: true }, false),
            State::Committing { .. } => return Err(Refusal::InProgress),
            State::Finished { at_ms } => return Err(Refusal::Finished { at_ms }),
        };
        job.state = state;
        let run = job.run.clone();
        if !was_active {
            t.active += 1;
        }
        Ok(run)
    }

    /// Live progress: the fields replace those of the same name in the following heartbeats,
    /// and the expiry clock starts again. An expired run that reports progress is running again.
    pub fn progress(
        &self,
        uuid: &Uuid,
        fields: Vec<(String, FieldValue)>,
        now_ms: i64,
        max_fields: usize,
    ) -> Result<(), Refusal> {
        let mut t = self.lock();
        let job = t.jobs.get_mut(uuid).ok_or(Refusal::Unknown)?;
        match job.state {
            State::Finished { at_ms } => return Err(Refusal::Finished { at_ms }),
            State::Committing { .. } => return Err(Refusal::InProgress),
            State::Running | State::Expired { .. } => {}
        }
        if fields
            .iter()
            .any(|(k, _)| job.run.tags.iter().any(|(t, _)| t == k))
        {
            return Err(Refusal::IsTag);
        }
        let mut merged = job.fields.clone();
        for (k, v) in fields {
            match merged.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => merged.push((k, v)),
            }
        }
        if merged.len() > max_fields {
            return Err(Refusal::TooManyFields(max_fields));
        }
        job.fields = merged;
        job.last_seen_ms = now_ms;
        if matches!(job.state, State::Expired { .. }) {
            job.state = State::Running;
            t.active += 1;
        }
        Ok(())
    }

    /// Records a commit's outcome: finished when its points were recorded, else back as it was.
    pub fn end_commit(&self, uuid: &Uuid, recorded: bool, now_ms: i64) {
        let mut t = self.lock();
        let Some(job) = t.jobs.get_mut(uuid) else {
            return;
        };
        let State::Committing { expired } = job.state else {
            return;
        };
        job.state = match (recorded, expired) {
            (true, _) => State::Finished { at_ms: now_ms },
            (false, false) => State::Running,
            (false, true) => State::Expired { at_ms: now_ms },
        };
        if job.state != State::Running {
            t.active -= 1;
        }
    }

    /// Builds this tick's heartbeats and expiry events, and forgets jobs past their retention.
    /// Only CPU work happens under the lock; the caller writes the points afterwards.
    pub fn tick(&self, now_ms: i64, max_age_ms: i64, retention_ms: i64) -> Tick {
        let mut tick = Tick::default();
        let mut t = self.lock();
        let before = t.jobs.len();
        t.jobs.retain(|_, job| match job.state {
            State::Finished { at_ms } | State::Expired { at_ms } => now_ms - at_ms < retention_ms,
            _ => true,
        });
        tick.removed = before - t.jobs.len();
        for job in t.jobs.values_mut() {
            if job.state != State::Running {
                continue;
            }
            if now_ms - job.last_seen_ms >= max_age_ms {
                job.state = State::Expired { at_ms: now_ms };
                let text = format!(
                    "load test on {} expired: no commit within {} (run {})",
                    job.run.host,
                    crate::config::format_duration(std::time::Duration::from_millis(
                        max_age_ms as u64
                    )),
                    job.run.uuid
                );
                tick.points
                    .push(points::event(&job.run, Event::Expired, now_ms, text));
                tick.expired += 1;
                continue;
            }
            tick.points
                .push(points::heartbeat(&job.run, &job.fields, now_ms));
            tick.beats.push(job.run.uuid);
        }
        t.active -= tick.expired;
        tick
    }

    /// Counts the heartbeats that were written.
    pub fn count_beats(&self, uuids: &[Uuid]) {
        let mut t = self.lock();
        for uuid in uuids {
            if let Some(job) = t.jobs.get_mut(uuid) {
                job.heartbeats += 1;
            }
        }
    }

    /// `true` for running jobs, `false` for the ones that ended within the retention.
    pub fn is_running(&self) -> Vec<(Uuid, bool)> {
        let t = self.lock();
        t.jobs
            .values()
            .map(|j| (j.run.uuid, j.state.is_active()))
            .collect()
    }

    pub fn counts(&self) -> Counts {
        let t = self.lock();
        let mut c = Counts::default();
        for job in t.jobs.values() {
            match job.state {
                State::Running => c.running += 1,
                State::Committing { .. } => c.committing += 1,
                State::Finished { .. } => c.finished += 1,
                State::Expired { .. } => c.expired += 1,
            }
        }
        c
    }

    /// Takes out a job that could not be made durable.
    pub fn remove(&self, uuid: &Uuid) {
        let mut t = self.lock();
        if let Some(job) = t.jobs.remove(uuid)
            && job.state.is_active()
        {
            t.active -= 1;
        }
    }

    /// The table as the bytes of `jobs.json`. A job in the middle of a commit is saved as it
    /// was before the commit: the commit has not been answered yet.
    pub fn save(&self) -> Vec<u8> {
        let t = self.lock();
        let jobs: Vec<Saved> = t.jobs.values().map(Saved::from).collect();
        serde_json::to_vec(&SavedTable { version: 1, jobs }).unwrap_or_default()
    }

    /// Reads `jobs.json`. Anything that does not check out is an error, never an empty table:
    /// forgetting running jobs silently is worse than not starting.
    pub fn load(bytes: &[u8]) -> Result<Jobs, String> {
        let saved: SavedTable =
            serde_json::from_slice(bytes).map_err(|e| format!("not a job table ({e})"))?;
        if saved.version != 1 {
            return Err(format!(
                "version {} is not known to this program",
                saved.version
            ));
        }
        let mut table = Table::default();
        for s in saved.jobs {
            let uuid = s.uuid;
            let job = s.into_job().map_err(|e| format!("job {uuid}: {e}"))?;
            if job.state.is_active() {
                table.active += 1;
            }
            table.jobs.insert(uuid, job);
        }
        Ok(Jobs {
            table: Mutex::new(table),
        })
    }

    /// Up to `limit` jobs, newest first, for the state page.
    pub fn list(&self, limit: usize) -> Vec<Job> {
        let t = self.lock();
        let mut jobs: Vec<&Job> = t.jobs.values().collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.run.started_ms));
        jobs.into_iter().take(limit).cloned().collect()
    }
}

#[derive(Serialize, Deserialize)]
struct SavedTable {
    version: u32,
    jobs: Vec<Saved>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    uuid: Uuid,
    host: String,
    tags: Vec<(String, String)>,
    started_ms: i64,
    fields: Vec<(String, SavedField)>,
    last_seen_ms: i64,
    state: SavedState,
    heartbeats: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedField {
    Float(f64),
    Bool(bool),
    Str(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedState {
    Running,
    Finished { at_ms: i64 },
    Expired { at_ms: i64 },
}

impl From<&Job> for Saved {
    fn from(job: &Job) -> Saved {
        let state = match job.state {
            State::Running | State::Committing { expired: false } => SavedState::Running,
            State::Committing { expired: true } => SavedState::Expired {
                at_ms: job.last_seen_ms,
            },
            State::Finished { at_ms } => SavedState::Finished { at_ms },
            State::Expired { at_ms } => SavedState::Expired { at_ms },
        };
        Saved {
            uuid: job.run.uuid,
            host: job.run.host.clone(),
            tags: job.run.tags.clone(),
            started_ms: job.run.started_ms,
            fields: job
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        FieldValue::Float(f) => SavedField::Float(*f),
                        FieldValue::Bool(b) => SavedField::Bool(*b),
                        FieldValue::Str(s) => SavedField::Str(s.clone()),
                    };
                    (k.clone(), v)
                })
                .collect(),
            last_seen_ms: job.last_seen_ms,
            state,
            heartbeats: job.heartbeats,
        }
    }
}

impl Saved {
    /// Checks names and values as a request's would be: the file may have been edited by hand.
    fn into_job(self) -> Result<Job, String> {
        line_protocol::check_tag_value(&self.host).map_err(|e| format!("host: {e}"))?;
        for (k, v) in &self.tags {
            line_protocol::check_name(k).map_err(|e| format!("tag {k:?}: {e}"))?;
            line_protocol::check_tag_value(v).map_err(|e| format!("tag {k:?}: {e}"))?;
        }
        let mut fields = Vec::with_capacity(self.fields.len());
        for (k, v) in self.fields {
            line_protocol::check_name(&k).map_err(|e| format!("field {k:?}: {e}"))?;
            let v = match v {
                SavedField::Float(f) if f.is_finite() => FieldValue::Float(f),
                SavedField::Float(_) => return Err(format!("field {k:?}: is not a finite number")),
                SavedField::Bool(b) => FieldValue::Bool(b),
                SavedField::Str(s) => FieldValue::Str(s),
            };
            fields.push((k, v));
        }
        Ok(Job {
            run: Run {
                uuid: self.uuid,
                host: self.host,
                tags: self.tags,
                started_ms: self.started_ms,
            },
            fields,
            last_seen_ms: self.last_seen_ms,
            state: match self.state {
                SavedState::Running => State::Running,
                SavedState::Finished { at_ms } => State::Finished { at_ms },
                SavedState::Expired { at_ms } => State::Expired { at_ms },
            },
            heartbeats: self.heartbeats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u128, now_ms: i64) -> Job {
        Job {
            run: Run {
                uuid: Uuid::from_u128(n),
                host: "h".into(),
                tags: vec![],
                started_ms: now_ms,
            },
            fields: vec![],
            last_seen_ms: now_ms,
            state: State::Running,
            heartbeats: 0,
        }
    }

    #[test]
    fn max_running_counts_reservations() {
        let jobs = Jobs::default();
        let a = jobs.reserve(2).unwrap();
        let b = jobs.reserve(2).unwrap();
        assert!(
            jobs.reserve(2).is_none(),
            "two reserved slots fill max_running = 2"
        );
        drop(b);
        a.fill(job(1, 0));
        assert!(jobs.reserve(2).is_some(), "a dropped slot is free again");
        jobs.reserve(2).unwrap().fill(job(2, 0));
        assert!(jobs.reserve(2).is_none());
        jobs.begin_commit(&Uuid::from_u128(1)).unwrap();
        jobs.end_commit(&Uuid::from_u128(1), true, 5);
        assert!(jobs.reserve(2).is_some(), "a finished job frees its slot");
    }

    #[test]
    fn commit_states() {
        let jobs = Jobs::default();
        let id = Uuid::from_u128(1);
        jobs.reserve(10).unwrap().fill(job(1, 0));
        assert_eq!(
            jobs.begin_commit(&Uuid::from_u128(9)),
            Err(Refusal::Unknown)
        );
        jobs.begin_commit(&id).unwrap();
        assert_eq!(jobs.begin_commit(&id), Err(Refusal::InProgress));
        jobs.end_commit(&id, false, 1);
        assert_eq!(
            jobs.is_running(),
            vec![(id, true)],
            "a failed commit leaves the job running"
        );
        jobs.begin_commit(&id).unwrap();
        jobs.end_commit(&id, true, 7);
        assert_eq!(jobs.begin_commit(&id), Err(Refusal::Finished { at_ms: 7 }));
        assert_eq!(jobs.is_running(), vec![(id, false)]);
    }

    #[test]
    fn the_table_survives_save_and_load() {
        let jobs = Jobs::default();
        let mut a = job(1, 100);
        a.fields = vec![
            ("clients".into(), FieldValue::Float(10.0)),
            ("ok".into(), FieldValue::Bool(true)),
            ("note".into(), FieldValue::Str("a \"quoted\"\nline".into())),
        ];
        a.run.tags = vec![("mode".into(), "single".into())];
        jobs.reserve(10).unwrap().fill(a);
        jobs.reserve(10).unwrap().fill(job(2, 200));
        jobs.reserve(10).unwrap().fill(job(3, 300));
        jobs.begin_commit(&Uuid::from_u128(2)).unwrap();
        jobs.end_commit(&Uuid::from_u128(2), true, 250);
        jobs.begin_commit(&Uuid::from_u128(3)).unwrap();
        let loaded = Jobs::load(&jobs.save()).unwrap();
        let mut before = jobs.is_running();
        let mut after = loaded.is_running();
        before.sort();
        after.sort();
        // The commit in progress is saved as running: it was not answered yet.
        assert_eq!(
            after,
            [
                (Uuid::from_u128(1), true),
                (Uuid::from_u128(2), false),
                (Uuid::from_u128(3), true)
            ]
        );
        assert_eq!(before.len(), after.len());
        let restored = loaded
            .list(10)
            .into_iter()
            .find(|j| j.run.uuid == Uuid::from_u128(1))
            .unwrap();
        assert_eq!(
            restored.fields,
            jobs.list(10)
                .into_iter()
                .find(|j| j.run.uuid == Uuid::from_u128(1))
                .unwrap()
                .fields
        );
        assert_eq!(
            restored.run.tags,
            [("mode".to_string(), "single".to_string())]
        );
        assert!(
            loaded.reserve(2).is_none(),
            "the two running jobs count against max_running"
        );
        assert!(loaded.reserve(3).is_some());
    }

    #[test]
    fn a_bad_table_is_an_error_not_an_empty_table() {
        assert!(Jobs::load(b"").is_err());
        assert!(
            Jobs::load(b"{\"version\": 2, \"jobs\": []}")
                .unwrap_err()
                .contains("version 2")
        );
        let bad_tag = br#"{"version":1,"jobs":[{"uuid":"00000000-0000-0000-0000-000000000001","host":"h","tags":[["a\nb","v"]],"started_ms":0,"fields":[],"last_seen_ms":0,"state":"running","heartbeats":0}]}"#;
        let err = Jobs::load(bad_tag).unwrap_err();
        assert!(
            err.contains("00000000-0000-0000-0000-000000000001")
                && err.contains("control character"),
            "{err}"
        );
        assert!(Jobs::load(br#"{"version":1,"jobs":[]}"#).is_ok());
    }

    #[test]
    fn progress_updates_fields_and_revives_expired_runs() {
        let jobs = Jobs::default();
        let id = Uuid::from_u128(1);
        let mut j = job(1, 0);
        j.run.tags = vec![("mode".into(), "single".into())];
        j.fields = vec![
            ("clients".into(), FieldValue::Float(1.0)),
            ("rps".into(), FieldValue::Float(0.0)),
        ];
        jobs.reserve(10).unwrap().fill(j);
        let update = vec![
            ("clients".into(), FieldValue::Float(5.0)),
            ("new".into(), FieldValue::Bool(true)),
        ];
        jobs.progress(&id, update, 50, 64).unwrap();
        let fields = jobs.list(1)[0].fields.clone();
        assert_eq!(
            fields,
            vec![
                ("clients".into(), FieldValue::Float(5.0)),
                ("rps".into(), FieldValue::Float(0.0)),
                ("new".into(), FieldValue::Bool(true))
            ]
        );
        assert_eq!(jobs.list(1)[0].last_seen_ms, 50);
        assert_eq!(
            jobs.progress(&id, vec![("mode".into(), FieldValue::Float(1.0))], 60, 64),
            Err(Refusal::IsTag)
        );
        assert_eq!(
            jobs.progress(&id, vec![("x".into(), FieldValue::Float(1.0))], 60, 3),
            Err(Refusal::TooManyFields(3))
        );
        assert_eq!(
            jobs.progress(&Uuid::from_u128(9), vec![], 60, 64),
            Err(Refusal::Unknown)
        );
        let t = jobs.tick(2000, 1000, 10_000);
        assert_eq!(t.expired, 1);
        jobs.progress(&id, vec![], 2100, 64).unwrap();
        assert_eq!(jobs.counts().running, 1, "progress revives an expired run");
        assert!(jobs.reserve(1).is_none());
        jobs.begin_commit(&id).unwrap();
        jobs.end_commit(&id, true, 2200);
        assert_eq!(
            jobs.progress(&id, vec![], 2300, 64),
            Err(Refusal::Finished { at_ms: 2200 })
        );
    }

    #[test]
    fn tick_beats_expires_and_forgets() {
        let jobs = Jobs::default();
        jobs.reserve(10).unwrap().fill(job(1, 0));
        jobs.reserve(10).unwrap().fill(job(2, 500));
        let t = jobs.tick(1000, 1000, 300);
        assert_eq!((t.expired, t.beats.len(), t.points.len()), (1, 1, 2));
        assert_eq!(t.beats, vec![Uuid::from_u128(2)]);
        jobs.count_beats(&t.beats);
        assert_eq!(
            jobs.counts(),
            Counts {
                running: 1,
                expired: 1,
                ..Counts::default()
            }
        );
        // The expired run can still be committed.
        jobs.begin_commit(&Uuid::from_u128(1)).unwrap();
        jobs.end_commit(&Uuid::from_u128(1), true, 1100);
        let t = jobs.tick(1200, 10_000, 300);
        assert_eq!((t.expired, t.removed, t.beats.len()), (0, 0, 1));
        let t = jobs.tick(1400, 10_000, 300);
        assert_eq!(
            t.removed, 1,
            "finished at 1100, gone after 300 ms of retention"
        );
        assert_eq!(jobs.list(10)[0].heartbeats, 1);
        assert!(jobs.reserve(1).is_none(), "one job is still running");
    }
}
