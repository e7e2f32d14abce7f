//! Rebuilding the job table at start from its files, in the formats `state::jobs::format`
//! defines: the snapshot (`jobs.json`) read as it streams in, then the changes (journal
//! records) the log holds after it. No I/O: readers and bytes in, a table out.
//!
//! A commit's change is followed by its run's result under the same number
//! (`{"seq":N,"result":{...}}`, the line `state::results` keeps; segments of version 4 on): the
//! log is where a result is durable until a snapshot covers it, and the start hands such lines
//! to `Results::restore`. The snapshot names the number up to which it holds every change. At
//! start the table is the snapshot with every record after that number applied in the order of
//! the numbers — whatever order the records reached the log in, since each holds a whole
//! state. Anything that does not read back stops the start rather than leave out runs:
//! forgetting running jobs silently is worse than not starting.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io;

use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use uuid::Uuid;

use crate::state::jobs::format::{SNAPSHOT_FORMAT, SNAPSHOT_VERSION, Saved, SavedRecord};
use crate::state::jobs::{Job, Jobs};
use crate::state::schema::Known;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Snapshot,
    Log,
}

/// The table being rebuilt at start: the snapshot read first, then every change numbered after
/// it applied as it is read from the log, whatever order they come in.
/// A change holds its job's whole state (or its removal), so of each job only the change with
/// the highest number counts: one read after a higher one of the same job is left out, which
/// gives what applying them in the order of their numbers would. The start holds the table
/// and one change at a time, never the log's changes all together.
pub struct Restore {
    jobs: HashMap<Uuid, Box<Job>>,
    /// The snapshot holds every change up to this number.
    covered: u64,
    /// The highest change number seen.
    seq: u64,
    /// For each job changed after the snapshot, the number of the change applied.
    applied: HashMap<Uuid, u64>,
    restored: Restored,
    /// Changes read from the log so far (errors name the `index`th, 1-based).
    log_index: usize,
    /// The first change of the log that did not read back; [`Restore::finish`] reports it.
    error: Option<RestoreError>,
}

impl Restore {
    /// The number of the last change the snapshot read holds (0 without a snapshot): the log's
    /// changes up to it are in the snapshot already.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Starts from the snapshot, if there is one, read as it streams in: each job goes into
    /// the table as soon as it is read, so the file is never held beside the table.
    pub fn from_snapshot(snapshot: Option<impl io::Read>) -> Result<Restore, RestoreError> {
        let mut jobs = HashMap::new();
        let (covered, schema) = match snapshot {
            Some(reader) => read_snapshot(reader, &mut jobs)?,
            None => (0, Known::new()),
        };
        Ok(Restore {
            jobs,
            covered,
            seq: covered,
            applied: HashMap::new(),
            restored: Restored {
                schema,
                ..Restored::default()
            },
            log_index: 0,
            error: None,
        })
    }

    /// Applies the job-table changes of one log record (journal lines, each ending in '\n').
    /// The log's records are whole (each passed its checksum), so every change must read
    /// back; the first that does not is kept as the error, and nothing after it is applied.
    /// A run's result numbered after the snapshot goes to `result` (its JSON object's bytes).
    pub fn log_changes(&mut self, lines: &[u8], result: &mut dyn FnMut(&[u8])) {
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.log_index += 1;
            if self.error.is_some() {
                continue;
            }
            let index = self.log_index;
            let applied = serde_json::from_slice::<SavedRecord<'static>>(line)
                .map_err(|e| RestoreError::BadChange {
                    index,
                    why: e.to_string(),
                })
                .and_then(|mut record| match record.result.take() {
                    Some(raw) if record.put.is_none() && record.del.is_none() => {
                        // The snapshot's writing synced the results it covers.
                        if record.seq > self.covered {
                            result(raw.get().as_bytes());
                        }
                        Ok(())
                    }
                    Some(_) => Err(RestoreError::NotOneChangeInLog { index }),
                    None => self.apply(record, index),
                });
            if let Err(e) = applied {
                self.error = Some(e);
            }
        }
    }

    /// Applies the `at`th change of the log, unless the snapshot or a higher change of the
    /// same job holds it already.
    fn apply(&mut self, record: SavedRecord<'static>, at: usize) -> Result<(), RestoreError> {
        let uuid = match (&record.put, &record.del) {
            (Some(saved), None) => saved.uuid,
            (None, Some(uuid)) => *uuid,
            _ => return Err(RestoreError::NotOneChangeInLog { index: at }),
        };
        if record.seq <= self.covered {
            return Ok(());
        }
        self.seq = self.seq.max(record.seq);
        self.restored.replayed += 1;
        match self.applied.entry(uuid) {
            // A change found twice is the same change, applied once.
            Entry::Occupied(e) if *e.get() >= record.seq => return Ok(()),
            Entry::Occupied(mut e) => {
                e.insert(record.seq);
            }
            Entry::Vacant(e) => {
                e.insert(record.seq);
            }
        }
        match record.put {
            Some(saved) => {
                let job = saved
                    .into_job()
                    .map_err(|why| RestoreError::BadChangedJob {
                        index: at,
                        uuid,
                        why,
                    })?;
                self.jobs.insert(uuid, Box::new(job));
            }
            None => {
                self.jobs.remove(&uuid);
            }
        }
        Ok(())
    }

    /// Hands over the table, which remembers at most `max_ended` ended runs. Errors: the first
    /// change that did not read back.
    pub fn finish(mut self, max_ended: usize) -> Result<(Jobs, Restored), RestoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        Ok((
            Jobs::from_saved(self.jobs, self.seq, max_ended),
            self.restored,
        ))
    }
}

/// Rebuilds the table from a snapshot and the log's changes (`log_changes`, journal lines in
/// the log's order), as [`Restore`] does.
#[cfg(test)]
pub fn restore(
    snapshot: Option<impl io::Read>,
    log_changes: &[u8],
    max_ended: usize,
) -> Result<(Jobs, Restored), RestoreError> {
    let mut restore = Restore::from_snapshot(snapshot)?;
    restore.log_changes(log_changes, &mut |_| {});
    restore.finish(max_ended)
}

/// Why the job table could not be rebuilt from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// `jobs.json` is not a job table; serde_json's description of where.
    NotATable(String),
    /// `jobs.json` does not open with `"format": "metrics-consumer-jobs"`: what it opens with.
    Foreign(String),
    /// `jobs.json` is of a version of the format this program does not read.
    UnknownVersion(u32),
    /// A job of `jobs.json` breaks a rule a request would be held to (the file was edited).
    BadSavedJob { uuid: Uuid, why: String },
    /// The `index`th job-table change in the log (1-based) does not parse.
    BadChange { index: usize, why: String },
    /// A job in the `index`th change in the log breaks a rule a request would be held to.
    BadChangedJob {
        index: usize,
        uuid: Uuid,
        why: String,
    },
    /// The `index`th change in the log has neither or both of `put` and `del`.
    NotOneChangeInLog { index: usize },
}

impl RestoreError {
    /// Which file the error is in.
    pub fn place(&self) -> Place {
        match self {
            RestoreError::NotATable(_)
            | RestoreError::Foreign(_)
            | RestoreError::UnknownVersion(_)
            | RestoreError::BadSavedJob { .. } => Place::Snapshot,
            RestoreError::BadChange { .. }
            | RestoreError::BadChangedJob { .. }
            | RestoreError::NotOneChangeInLog { .. } => Place::Log,
        }
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NotATable(why) => write!(f, "not a job table ({why})"),
            RestoreError::Foreign(found) => write!(
                f,
                "not a job table of metrics-consumer: it opens with {found}, where {{\"format\": \"{SNAPSHOT_FORMAT}\", \"version\": {SNAPSHOT_VERSION}, ...}} was due"
            ),
            RestoreError::UnknownVersion(v) => write!(
                f,
                "it is of version {v} of the format {SNAPSHOT_FORMAT:?}, and this program reads version {SNAPSHOT_VERSION}; start the version of metrics-consumer that wrote it until InfluxDB has its log, or give this one a new storage.dir"
            ),
            RestoreError::BadSavedJob { uuid, why } => write!(f, "job {uuid}: {why}"),
            RestoreError::BadChange { index, why } => {
                write!(
                    f,
                    "job-table change {index} in the log does not parse ({why})"
                )
            }
            RestoreError::BadChangedJob { index, uuid, why } => {
                write!(f, "job-table change {index} in the log, job {uuid}: {why}")
            }
            RestoreError::NotOneChangeInLog { index } => write!(
                f,
                "job-table change {index} in the log must have exactly one of \"put\" and \"del\""
            ),
        }
    }
}

/// What [`restore`] found besides the table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Changes applied over the snapshot.
    pub replayed: usize,
    /// What the snapshot said of InfluxDB's schema.
    pub schema: Known,
}

/// Reads `jobs.json` (`{"format":"metrics-consumer-jobs","version":1,"journal_seq":N,
/// "jobs":[...],"schema":{...}}`, the format first) into
/// `jobs`; returns the last journal record it includes (0 in files from before the journal)
/// and what it says of InfluxDB's schema. Members it does not know
/// are skipped.
fn read_snapshot(
    reader: impl io::Read,
    jobs: &mut HashMap<Uuid, Box<Job>>,
) -> Result<(u64, Known), RestoreError> {
    let mut bad = None;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let read = TableSeed {
        jobs,
        bad: &mut bad,
    }
    .deserialize(&mut de)
    .and_then(|read| de.end().map(|()| read));
    read.map_err(|e| bad.unwrap_or_else(|| RestoreError::NotATable(e.to_string())))
}

/// Reads the table object, its jobs straight into the map.
struct TableSeed<'a> {
    jobs: &'a mut HashMap<Uuid, Box<Job>>,
    /// Set when the reading stops for a reason better said than serde's message.
    bad: &'a mut Option<RestoreError>,
}

impl<'de> DeserializeSeed<'de> for TableSeed<'_> {
    type Value = (u64, Known);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(u64, Known), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableSeed<'_> {
    type Value = (u64, Known);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a job table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(u64, Known), A::Error> {
        let (mut version, mut jobs_seen) = (None, false);
        let (mut seq, mut schema) = (0, Known::new());
        // The format names the file before anything else is read of it.
        let format = match map.next_key::<String>()? {
            Some(key) if key == "format" => map.next_value::<serde_json::Value>()?,
            Some(key) => {
                *self.bad = Some(RestoreError::Foreign(format!("the member {key:?}")));
                return Err(A::Error::custom("not a job table"));
            }
            None => {
                *self.bad = Some(RestoreError::Foreign("an empty object".into()));
                return Err(A::Error::custom("not a job table"));
            }
        };
        if format != SNAPSHOT_FORMAT {
            *self.bad = Some(RestoreError::Foreign(format!("\"format\": {format}")));
            return Err(A::Error::custom("not a job table"));
        }
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => {
                    let v: u32 = map.next_value()?;
                    if v != SNAPSHOT_VERSION {
                        *self.bad = Some(RestoreError::UnknownVersion(v));
                        return Err(A::Error::custom("unknown version"));
                    }
                    version = Some(v);
                }
                "journal_seq" => seq = map.next_value()?,
                "jobs" => {
                    map.next_value_seed(JobsSeed {
                        jobs: &mut *self.jobs,
                        bad: &mut *self.bad,
                    })?;
                    jobs_seen = true;
                }
                "schema" => schema = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if version.is_none() {
            return Err(A::Error::missing_field("version"));
        }
        if !jobs_seen {
            return Err(A::Error::missing_field("jobs"));
        }
        Ok((seq, schema))
    }
}

/// Reads the array of saved jobs, checking each and putting it into the map as it comes.
struct JobsSeed<'a> {
    jobs: &'a mut HashMap<Uuid, Box<Job>>,
    bad: &'a mut Option<RestoreError>,
}

impl<'de> DeserializeSeed<'de> for JobsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for JobsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of jobs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(saved) = seq.next_element::<Saved<'static>>()? {
            let uuid = saved.uuid;
            match saved.into_job() {
                Ok(job) => {
                    self.jobs.insert(uuid, Box::new(job));
                }
                Err(why) => {
                    *self.bad = Some(RestoreError::BadSavedJob { uuid, why });
                    return Err(A::Error::custom("a job breaks the rules"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::line_protocol::FieldValue;
    use crate::state::jobs::format::{encode_record, encode_result};
    use crate::state::jobs::tests::{BOUNDS, finish, job, job_with, rows};
    use crate::state::snapshots::{SNAPSHOT_FILE, Snapshots};
    use crate::storage::RESERVE_SLACK;
    use crate::storage::tests::Dir;
    use compact_str::CompactString;

    /// Registers `job`, as the service does; the change for the log.
    fn register(jobs: &Jobs, job: Job) -> Vec<u8> {
        let mut slot = jobs.reserve(usize::MAX, None).unwrap();
        let change = slot.prepare(&job, &BOUNDS).unwrap();
        slot.fill(job);
        change.bytes
    }

    #[test]
    fn snapshots_are_written_and_read_back_with_the_log() {
        let dir = Dir::new("snapshots");
        let snapshots = Snapshots::new(crate::storage::tests::root(&dir));
        // The log holds three runs.
        let mut log = Vec::new();
        for n in 1..=3 {
            encode_record(
                &mut log,
                n,
                Some(&job(n as u128, 0)),
                &Uuid::from_u128(n.into()),
            );
        }
        let loaded = snapshots.load(&log, &dir.path().join("log"), 100).unwrap();
        assert_eq!(loaded.jobs.counts().running, 3);
        assert_eq!(loaded.restored.replayed, 3);
        let (covers, bytes) = snapshots
            .write(&loaded.jobs, &Known::new(), None, &|| Ok(()))
            .unwrap();
        assert_eq!(covers, 3);
        assert!(bytes > 0);
        let written = std::fs::read_to_string(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert!(
            written.starts_with(r#"{"format":"metrics-consumer-jobs","version":1,"#),
            "the format first: {written}"
        );
        // The snapshot alone has everything; the log's changes are skipped as already in it.
        let again = snapshots.load(&log, &dir.path().join("log"), 100).unwrap();
        assert_eq!(again.jobs.counts().running, 3);
        assert_eq!(again.restored.replayed, 0);
        // A change in the log that does not parse names the log.
        let err = snapshots
            .load(b"{\"seq\":9,\"put\":\n", &dir.path().join("log"), 100)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/log:") && err.contains("change 1 in the log"),
            "{err}"
        );
    }

    /// A commit's result line goes to the start's results when it is numbered after the
    /// snapshot (the snapshot's writing synced those before), beside the table's changes, which
    /// it leaves as they are; a line that is both a change and a result is damage.
    #[test]
    fn a_result_line_after_the_snapshot_is_handed_on_and_changes_nothing_in_the_table() {
        let dir = Dir::new("journal-results");
        let snapshots = Snapshots::new(crate::storage::tests::root(&dir));
        let mut log = Vec::new();
        encode_record(&mut log, 1, Some(&job(1, 0)), &Uuid::from_u128(1));
        encode_result(&mut log, 1, br#"{"run":1}"#);
        let loaded = snapshots.load(&log, &dir.path().join("log"), 100).unwrap();
        snapshots
            .write(&loaded.jobs, &Known::new(), None, &|| Ok(()))
            .unwrap();
        encode_record(&mut log, 2, Some(&job(2, 0)), &Uuid::from_u128(2));
        encode_result(&mut log, 2, br#"{"run":2}"#);
        let mut restore = snapshots.read().unwrap();
        let mut handed = Vec::new();
        restore.log_changes(&log, &mut |r| handed.push(r.to_vec()));
        assert_eq!(
            handed,
            [br#"{"run":2}"#.to_vec()],
            "only after the snapshot"
        );
        let loaded = snapshots
            .finish(restore, &dir.path().join("log"), 100)
            .unwrap();
        assert_eq!(loaded.jobs.counts().running, 2);
        assert_eq!(loaded.restored.replayed, 1);
        let both = br#"{"seq":3,"del":"00000000-0000-0000-0000-000000000001","result":{}}
"#;
        let err = snapshots
            .load(both, &dir.path().join("log"), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("change 1 in the log"), "{err}");
    }

    #[test]
    fn the_table_survives_a_snapshot() {
        let jobs = Jobs::new(1000);
        let a = job_with(
            1,
            100,
            vec![("mode".into(), "single".into())],
            vec![
                ("clients".into(), FieldValue::Float(10.0)),
                ("ok".into(), FieldValue::Bool(true)),
                ("note".into(), FieldValue::Str("a \"quoted\"\nline".into())),
            ],
        );
        jobs.reserve(10, None).unwrap().fill(a);
        jobs.reserve(10, None).unwrap().fill(job(2, 200));
        jobs.reserve(10, None).unwrap().fill(job(3, 300));
        jobs.begin_commit(&Uuid::from_u128(2), None).unwrap();
        finish(&jobs, &Uuid::from_u128(2), 250);
        jobs.begin_commit(&Uuid::from_u128(3), None).unwrap();
        let loaded = restore(Some(&jobs.snapshot().0[..]), b"", 1000).unwrap().0;
        let mut before = jobs.is_running(None);
        let mut after = loaded.is_running(None);
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
            [(CompactString::from("mode"), CompactString::from("single"))]
        );
        // Read back without room to spare, as a registered run's tags are.
        assert_eq!(restored.run.tags.capacity(), 1);
        // Short names and values read back inside their handles, with no heap block each.
        let (k, v) = &restored.run.tags[0];
        assert!(!k.is_heap_allocated() && !v.is_heap_allocated());
        assert!(!restored.run.host.is_heap_allocated());
        assert!(restored.fields.iter().all(|(k, _)| !k.is_heap_allocated()));
        assert!(
            loaded.reserve(2, None).is_err(),
            "the two running jobs count against max_running"
        );
        assert!(loaded.reserve(3, None).is_ok());
    }

    #[test]
    fn a_bad_table_is_an_error_not_an_empty_table() {
        let load = |bytes: &[u8]| match restore(Some(bytes), b"", 10) {
            Ok(_) => Ok(()),
            Err(e) if e.place() == Place::Snapshot => Err(e.to_string()),
            Err(e) => panic!("{e:?}"),
        };
        assert!(load(b"").is_err());
        let other_version =
            load(b"{\"format\": \"metrics-consumer-jobs\", \"version\": 2, \"jobs\": []}")
                .unwrap_err();
        assert!(
            other_version.contains("version 2 of the format")
                && other_version.contains("this program reads version 1"),
            "{other_version}"
        );
        // Another format, or none: another program's file.
        for foreign in [
            &br#"{"format": "raft-engine", "version": 1, "jobs": []}"#[..],
            br#"{"version": 1, "jobs": []}"#,
        ] {
            let err = load(foreign).unwrap_err();
            assert!(
                err.contains("not a job table of metrics-consumer")
                    && err.contains(r#"{"format": "metrics-consumer-jobs", "version": 1"#),
                "{err}"
            );
        }
        let bad_tag = br#"{"format":"metrics-consumer-jobs","version":1,"jobs":[{"uuid":"00000000-0000-0000-0000-000000000001","host":"h","tags":[["a\nb","v"]],"started_ms":0,"fields":[],"last_seen_ms":0,"state":"running","heartbeats":0}]}"#;
        let err = load(bad_tag).unwrap_err();
        assert!(
            err.contains("00000000-0000-0000-0000-000000000001")
                && err.contains("control character"),
            "{err}"
        );
        assert!(load(br#"{"format":"metrics-consumer-jobs","version":1,"jobs":[]}"#).is_ok());
    }

    #[test]
    fn changes_applied_over_an_old_snapshot_give_the_table_whatever_their_order() {
        let jobs = Jobs::new(1000);
        jobs.reserve(10, None).unwrap().fill(job(1, 0));
        let (old, _) = jobs.snapshot();
        // Each change as the log would hold it: one record's worth of lines each.
        let mut changes: Vec<Vec<u8>> =
            vec![register(&jobs, job(2, 10)), register(&jobs, job(3, 20))];
        changes.push(
            jobs.progress(
                &Uuid::from_u128(2),
                vec![("rps".into(), FieldValue::Float(3.5))],
                30,
                &BOUNDS,
                None,
            )
            .unwrap()
            .bytes,
        );
        jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
        let finishing = jobs.prepare_finish(&Uuid::from_u128(1), 40).unwrap();
        jobs.end_commit(&Uuid::from_u128(1), Some(finishing.seq), true, 40);
        changes.push(finishing.bytes);
        let in_order = changes.concat();
        assert_eq!(
            rows(&restore(Some(&old[..]), &in_order, 1000).unwrap().0),
            rows(&jobs)
        );
        // Records reach the log in the order their requests wrote them, not the order of the
        // changes: the numbers put them right.
        let reversed: Vec<u8> = changes.iter().rev().flatten().copied().collect();
        assert_eq!(
            rows(&restore(Some(&old[..]), &reversed, 1000).unwrap().0),
            rows(&jobs)
        );
        assert_eq!(
            rows(&restore(None::<&[u8]>, &in_order, 1000).unwrap().0)
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)],
            "without a snapshot, the changes alone have what they recorded"
        );
        // A snapshot taken later already has every change; replaying them changes nothing.
        let (new, seq) = jobs.snapshot();
        assert_eq!(
            seq, 4,
            "four changes after the first register, filled without one"
        );
        let (again, restored) = restore(Some(&new[..]), &in_order, 1000).unwrap();
        assert_eq!(rows(&again), rows(&jobs));
        assert_eq!(restored.replayed, 0);
    }

    #[test]
    fn a_change_in_the_log_with_neither_or_both_of_put_and_del_is_an_error() {
        let both = br#"{"seq":1,"del":"00000000-0000-0000-0000-000000000001"}
{"seq":2}
{"seq":3,"del":"00000000-0000-0000-0000-000000000001"}
"#;
        assert!(matches!(
            restore(None::<&[u8]>, both, 10),
            Err(e @ RestoreError::NotOneChangeInLog { index: 2 })
                if e.to_string().contains("exactly one") && e.place() == Place::Log
        ));
    }

    #[test]
    fn the_room_for_the_next_snapshot_grows_with_the_table_and_refuses_on_a_full_disk() {
        let disk = crate::storage::tests::SmallDisk::new("journal-room", "8m");
        let snapshots = Snapshots::new(crate::storage::tests::root(&disk.0));
        let jobs = Jobs::new(10);
        let (_, bytes) = snapshots
            .write(&jobs, &Known::new(), None, &|| Ok(()))
            .unwrap();
        let kept = snapshots.reserve();
        assert!(kept >= bytes + RESERVE_SLACK, "{kept}");
        // The table grows past what the reserve holds: it grows first.
        snapshots.keep_room(kept).unwrap();
        assert!(snapshots.reserve() >= kept + bytes + RESERVE_SLACK);
        let grown = snapshots.reserve();
        crate::storage::tests::fill(disk.0.path());
        snapshots.keep_room(grown - bytes - RESERVE_SLACK).unwrap();
        let err = snapshots.keep_room(grown * 2).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        assert!(err.to_string().contains("reserve"), "{err}");
        assert_eq!(snapshots.reserve(), grown, "what it held is kept");
    }

    #[test]
    fn a_jobs_json_of_another_format_stops_the_start_naming_the_file() {
        let dir = Dir::new("snapshots-foreign");
        let path = dir.path().join(SNAPSHOT_FILE);
        std::fs::write(
            &path,
            br#"{"format":"something-else","version":1,"jobs":[]}"#,
        )
        .unwrap();
        let snapshots = Snapshots::new(crate::storage::tests::root(&dir));
        let err = match snapshots.read() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a foreign jobs.json was read"),
        };
        assert!(
            err.contains(&path.display().to_string())
                && err.contains(r#"it opens with "format": "something-else""#),
            "{err}"
        );
    }
}

/// Names and values at compact_str's inline boundary (23, 24, 25 bytes, multi-byte
/// UTF-8 straddling 24), escapes in tag values, a progress renaming and adding fields, through
/// a snapshot and through the log's replay: the same rows, host, tags, weight and heartbeat
/// bytes as the table that wrote them, and the heartbeat line as InfluxDB's escapes say.
#[cfg(test)]
mod inline_boundary_tests {
    use super::*;
    use crate::ingest::line_protocol::FieldValue;
    use crate::ingest::points::Run;
    use crate::state::jobs::Ages;
    use crate::state::jobs::tests::BOUNDS;

    fn names() -> Vec<String> {
        let mut v: Vec<String> = [22, 23, 24, 25, 26]
            .iter()
            .map(|&n| "k".repeat(n))
            .collect();
        // 'é' is 2 bytes: 23 + 2 = 25 straddles 24; 22 + 2 = 24 ends on it.
        v.push(format!("{}é", "a".repeat(23)));
        v.push(format!("{}é", "b".repeat(22)));
        // '€' is 3 bytes: 22 + 3 = 25, 21 + 3 = 24.
        v.push(format!("{}€", "c".repeat(22)));
        v.push(format!("{}€x", "d".repeat(21)));
        v
    }

    fn lines(jobs: &Jobs) -> Vec<String> {
        let ages = Ages {
            max_age_ms: i64::MAX,
            progress_timeout_ms: i64::MAX,
            retention_ms: i64::MAX,
        };
        let t = jobs.tick((5_000, 5_000), &ages);
        let mut l: Vec<String> = t.lines.lines().map(str::to_string).collect();
        l.sort();
        l
    }

    /// A run as the table holds it: uuid, host, tags, fields, weight.
    type View = (
        Uuid,
        String,
        Vec<(String, String)>,
        Vec<(String, FieldValue)>,
        usize,
    );

    fn view(jobs: &Jobs) -> Vec<View> {
        let mut v: Vec<_> = jobs
            .list(usize::MAX)
            .into_iter()
            .map(|j| {
                (
                    j.run.uuid,
                    j.run.host.to_string(),
                    j.run
                        .tags
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    j.fields
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    j.weight(),
                )
            })
            .collect();
        v.sort_by_key(|r| r.0);
        v
    }

    #[test]
    fn names_at_the_inline_boundary_and_escapes_survive_a_restart_byte_for_byte() {
        let jobs = Jobs::new(1000);
        let mut log = Vec::new();
        let ns = names();
        for (i, name) in ns.iter().enumerate() {
            let n = i as u128 + 1;
            let tags = vec![
                (name.clone(), format!("{name} v,=x")),
                ("e".to_string(), format!("a b,c=d{}", "é".repeat(12))),
            ];
            let run = Run {
                uuid: Uuid::from_u128(n),
                host: format!("{}-{name}", "h".repeat(i)).as_str().into(),
                tags: tags
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
                started_ms: 1_000,
            };
            // Same length as the tag's name, not the same name (a field named like a tag is
            // refused).
            let field = format!("F{}", &name[1..]);
            let fields = vec![
                (field.clone(), FieldValue::Float(1.0)),
                (String::new() + "f", FieldValue::Str(name.clone())),
            ];
            let job = Job::running(run, fields, 1_000);
            let mut slot = jobs.reserve(usize::MAX, None).unwrap();
            let change = slot.prepare(&job, &BOUNDS).unwrap();
            slot.fill(job);
            log.extend_from_slice(&change.bytes);
            // A progress that changes a field's type and adds names of 25 and 24 bytes.
            let change = jobs
                .progress(
                    &Uuid::from_u128(n),
                    vec![
                        (field.clone(), FieldValue::Bool(true)),
                        ("z".repeat(25), FieldValue::Float(2.5)),
                        ("y".repeat(24), FieldValue::Str(String::new())),
                    ],
                    2_000,
                    &BOUNDS,
                    None,
                )
                .unwrap();
            log.extend_from_slice(&change.bytes);
        }
        let before = (view(&jobs), lines(&jobs));
        // The heartbeat line of run 1, as InfluxDB's line protocol escapes it.
        let one = Uuid::from_u128(1);
        let k = "k".repeat(22);
        let k1 = &k[1..];
        let y = "y".repeat(24);
        let z = "z".repeat(25);
        let e = "é".repeat(12);
        let expected = format!(
            "load_testing,e=a\\ b\\,c\\=d{e},host=-{k},{k}={k}\\ v\\,\\=x,uuid={one} F{k1}=true,f=\"{k}\",{z}=2.5,{y}=\"\",elapsed=4 5000"
        );
        assert!(
            before.1.contains(&expected),
            "expected {expected}\n in {:#?}",
            before.1
        );
        // Through the log alone.
        let replayed = restore(None::<&[u8]>, &log, 1000).unwrap().0;
        assert_eq!(view(&replayed), before.0, "log replay");
        assert_eq!(lines(&replayed), before.1, "log replay: heartbeat bytes");
        // Through a snapshot alone.
        let snap = jobs.snapshot().0;
        let loaded = restore(Some(&snap[..]), b"", 1000).unwrap().0;
        assert_eq!(view(&loaded), before.0, "snapshot");
        assert_eq!(lines(&loaded), before.1, "snapshot: heartbeat bytes");
    }
}
