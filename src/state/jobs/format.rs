//! The job table's formats: its snapshot (`jobs.json`, written whole by `snapshots`) and its
//! changes (journal records, one line of JSON each, which travel in the log with the points
//! of the request that made them), as the table writes them and as a start reads them back
//! into jobs (`state::journal` rebuilds the table from them). No I/O: bytes in, bytes out.
//!
//! A record is the job's whole saved state (`{"seq":N,"put":{...}}`) or its removal
//! (`{"seq":N,"del":"uuid"}`), numbered in the order the table changed. A commit's change is
//! followed by its run's result under the same number (`{"seq":N,"result":{...}}`).

use std::borrow::Cow;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Job, SavedJob, State};
use crate::ingest::line_protocol::{self, FieldValue};
use crate::ingest::points::Run;
use crate::state::schema::Known;

/// The value of the `format` member that opens every `jobs.json`.
pub const SNAPSHOT_FORMAT: &str = "metrics-consumer-jobs";
/// The version of `jobs.json`'s format this program writes and reads. A reader that meets
/// another stops; a later format is a new version, read by the programs that know it.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Where a change comes from.
/// The bytes of `jobs.json`: every job of `jobs`, and the number up to which they hold every
/// change. A job in the middle of a commit is saved as it was before the commit: the commit has
/// not been answered yet.
pub fn encode_snapshot<'a>(
    covers: u64,
    jobs: impl Iterator<Item = &'a SavedJob>,
    schema: &Known,
) -> Vec<u8> {
    let jobs: Vec<Saved> = jobs.map(Saved::of).collect();
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_vec(&SnapshotView {
        format: SNAPSHOT_FORMAT,
        version: SNAPSHOT_VERSION,
        journal_seq: covers,
        jobs,
        schema,
    })
    .unwrap_or_default()
}

/// Appends one journal record and its newline to `out`: `{"seq":N,"put":{job}}` (the job's
/// whole saved state) or, when `job` is `None`, `{"seq":N,"del":"uuid"}`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, job: Option<&Job>, uuid: &Uuid) {
    let saved = job.map(Job::saved);
    let record = SavedRecord {
        seq,
        put: saved.as_ref().map(Saved::of),
        del: if job.is_none() { Some(*uuid) } else { None },
        result: None,
    };
    // Room at once for a run's usual record (its tags, fields and samples), where an empty
    // buffer grew eight times on the way.
    out.reserve(RECORD_BYTES);
    // Serializing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &record);
    out.push(b'\n');
}

/// The bytes [`encode_record`] makes room for at once: a register's record of a Locust run is
/// about 600.
const RECORD_BYTES: usize = 1024;

/// Appends the result of the run whose commit is change `seq` and its newline to `out`:
/// `{"seq":N,"result":…}`, `result` being one JSON object without a raw newline (as
/// `serde_json::to_vec` writes it).
pub fn encode_result(out: &mut Vec<u8>, seq: u64, result: &[u8]) {
    debug_assert!(!result.contains(&b'\n'));
    out.reserve(result.len() + 48);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result);
    out.extend_from_slice(b"}\n");
}

#[derive(Serialize)]
struct SnapshotView<'a> {
    /// First, so a reader knows what the file is before anything else.
    format: &'static str,
    version: u32,
    journal_seq: u64,
    jobs: Vec<Saved<'a>>,
    schema: &'a Known,
}

/// One change of the job table in the log: a job's whole saved state, or its removal.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::state) struct SavedRecord<'a> {
    pub(in crate::state) seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(in crate::state) put: Option<Saved<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(in crate::state) del: Option<Uuid>,
    /// A run's result (see the module documentation): read back whole, handed on as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(in crate::state) result: Option<Box<serde_json::value::RawValue>>,
}

/// A job as it is saved: one format, written from the table without copying (borrowed) and
/// read back owned.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::state) struct Saved<'a> {
    pub(in crate::state) uuid: Uuid,
    host: Cow<'a, str>,
    tags: Cow<'a, [(CompactString, CompactString)]>,
    started_ms: i64,
    fields: Vec<(Cow<'a, str>, SavedField<'a>)>,
    last_seen_ms: i64,
    state: SavedState,
    heartbeats: u64,
    /// Older files have neither.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    progressed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<Cow<'a, str>>,
    /// The register's checks, each as its endpoint and text; older files have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    thresholds: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedField<'a> {
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedState {
    Running,
    Finished { at_ms: i64 },
    Expired { at_ms: i64 },
}

impl<'a> Saved<'a> {
    fn of(job: &'a SavedJob) -> Saved<'a> {
        let state = match job.state {
            State::Running | State::Committing { expired: None } => SavedState::Running,
            State::Committing {
                expired: Some(at_ms),
            } => SavedState::Expired { at_ms },
            State::Finished { at_ms } => SavedState::Finished { at_ms },
            State::Expired { at_ms } => SavedState::Expired { at_ms },
        };
        Saved {
            uuid: job.run.uuid,
            host: Cow::Borrowed(&job.run.host),
            tags: Cow::Borrowed(&job.run.tags),
            started_ms: job.run.started_ms,
            fields: job
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        FieldValue::Float(f) => SavedField::Float(*f),
                        FieldValue::Bool(b) => SavedField::Bool(*b),
                        FieldValue::Str(s) => SavedField::Str(Cow::Borrowed(s)),
                    };
                    (Cow::Borrowed(k.as_str()), v)
                })
                .collect(),
            last_seen_ms: job.last_seen_ms,
            state,
            heartbeats: job.heartbeats,
            progressed: job.progressed,
            owner: job.owner.as_deref().map(Cow::Borrowed),
            thresholds: job
                .thresholds
                .iter()
                .map(|t| {
                    (
                        Cow::Borrowed(t.endpoint.as_str()),
                        Cow::Borrowed(t.check.text.as_str()),
                    )
                })
                .collect(),
        }
    }
}

impl Saved<'_> {
    /// Checks names and values as a request's would be: the file may have been edited by hand.
    pub(in crate::state) fn into_job(self) -> Result<Job, String> {
        line_protocol::check_tag_value(&self.host).map_err(|e| format!("host: {e}"))?;
        for (k, v) in self.tags.iter() {
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
                SavedField::Str(s) => FieldValue::Str(s.into_owned()),
            };
            fields.push((k.into_owned(), v));
        }
        let mut tags = self.tags.into_owned();
        // Read with room to spare (a list grows as it is read): kept at its length, as a
        // registered run's tags are (10 000 runs read back: a megabyte less).
        tags.shrink_to_fit();
        let run = Run {
            uuid: self.uuid,
            host: self.host.as_ref().into(),
            tags,
            started_ms: self.started_ms,
        };
        let mut job = Job::running(run, fields, self.last_seen_ms);
        job.state = match self.state {
            SavedState::Running => State::Running,
            SavedState::Finished { at_ms } => State::Finished { at_ms },
            SavedState::Expired { at_ms } => State::Expired { at_ms },
        };
        job.heartbeats = self.heartbeats;
        job.progressed = self.progressed;
        if let Some(owner) = &self.owner {
            line_protocol::check_tag_value(owner).map_err(|e| format!("owner: {e}"))?;
        }
        job.owner = self.owner.as_deref().map(Arc::from);
        let mut thresholds = Vec::with_capacity(self.thresholds.len());
        for (endpoint, text) in self.thresholds {
            let check = crate::verdict::check::parse(&text)
                .map_err(|e| format!("check {text:?} of {endpoint:?}: {e}"))?;
            thresholds.push(crate::verdict::Threshold {
                endpoint: endpoint.into_owned(),
                check,
                source: crate::verdict::Source::Register,
            });
        }
        job.thresholds = super::thresholds(thresholds);
        Ok(job)
    }
}
