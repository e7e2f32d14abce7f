//! The results of committed runs, kept by the gateway itself so that a run's baseline is found
//! whatever InfluxDB it writes to (1, 2 or 3), without reading InfluxDB: one JSON file per run
//! under `storage.dir/results/` (through `storage`'s handle, no link followed), at most
//! `verdict.max_results` of them, and an index of them in memory.
//!
//! ```text
//! results/<uuid>.json   {"format": "metrics-consumer-result", "version": 1, "uuid": …,
//!                        "owner", "identity", "passed", "ended_ms", "host", "tags",
//!                        "started_ms", "rows", "progress", "verdict"}
//! ```
//!
//! A commit saves its result before its record goes into the log ([`Results::save`]) and makes
//! it count once the record is on disk ([`Results::committed`]), or lets it go when the record
//! failed ([`Results::forget`]). A crash between the two leaves a file for a commit that was
//! never acknowledged: the start removes the files of runs the job table does not show finished
//! ([`Results::keep_committed`]). So a baseline is always a run whose commit was acknowledged.
//!
//! **Durable through the log.** The file is written without an fsync: the commit's record
//! carries the same result beside its job-table change, and that record is fsync'd with the
//! others of its group commit. Before a snapshot of the job table is written (after which the
//! log may let that record go), [`Results::sync`] fsyncs every file written since the last one,
//! and the directory. At the start, a result the log still holds whose file is missing or does
//! not read back (a power loss before its fsync) is written again from the log
//! ([`Results::restore`]). So a commit costs no fsync of its own, nor one of the directory.
//!
//! Memory: the index holds each result's owner, identity, whether it passed and when it ended
//! (about 200 bytes each); rows and progress are read from the file when asked for. A file
//! that cannot be read at the start (damaged, or another program's) is named in a warning and
//! left alone: results are for verdicts and reports, the points themselves are in the log.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::jobs::Sample;
use crate::storage::{DirHandle, Repeats, StorageError};
use crate::sync::lock;
use crate::verdict::{ResultRow, Verdict};

/// The directory of results in `storage.dir`.
pub const RESULTS_DIR: &str = "results";
/// A result file's `format`.
pub const RESULT_FORMAT: &str = "metrics-consumer-result";
/// The version of the result files this program reads and writes.
pub const RESULT_VERSION: u32 = 1;
/// Bytes of a result file read at most: a result of `limits.max_stats_rows` rows is far less.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// A committed run's result: what its report shows and what a later run's baseline reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`RESULT_FORMAT`], first, so a reader knows what the file is.
    pub format: String,
    pub version: u32,
    pub uuid: Uuid,
    /// The name of the token that registered the run (none without tokens).
    pub owner: Option<String>,
    /// The values of the identity tags (`test=shop`), `None` when the run lacks one of them.
    pub identity: Option<String>,
    /// Its verdict passed and had checks: it may be a baseline.
    pub passed: bool,
    /// When the run was committed, in Unix milliseconds.
    pub ended_ms: i64,
    pub host: String,
    pub tags: Vec<(String, String)>,
    /// When the run started, in Unix milliseconds.
    pub started_ms: i64,
    pub rows: Vec<ResultRow>,
    /// Users and requests per second from the progress the gateway received, oldest first.
    pub progress: Vec<Sample>,
    pub verdict: Verdict,
}

/// What the index keeps of a result.
#[derive(Debug, Clone)]
struct Meta {
    owner: Option<String>,
    identity: Option<String>,
    passed: bool,
    ended_ms: i64,
    /// Its commit is on disk (a result saved for a commit under way is not yet).
    committed: bool,
    /// Bytes of its file.
    bytes: u64,
}

/// The part of a file the index reads at the start.
#[derive(Deserialize)]
struct MetaFile {
    format: String,
    version: u32,
    uuid: Uuid,
    owner: Option<String>,
    identity: Option<String>,
    passed: bool,
    ended_ms: i64,
}

/// The results kept, and their index.
#[derive(Debug)]
pub struct Results {
    dir: DirHandle,
    index: Mutex<HashMap<Uuid, Meta>>,
    max: usize,
    max_bytes: u64,
    /// The clients the bounds are shared by (their count; 1 without tokens).
    owners: usize,
    /// Write errors, logged at most once a minute.
    pub errors: Repeats,
    /// Files written since the last [`Results::sync`], not yet fsync'd.
    unsynced: Mutex<Vec<Uuid>>,
}

fn file_name(uuid: &Uuid) -> String {
    format!("{}.json", uuid.hyphenated())
}

impl Results {
    /// Opens `storage.dir/results` (made when missing) and reads the index from its files.
    /// Leftover temporary files are removed.
    ///
    /// Errors: the directory cannot be made, opened or listed.
    /// `max` and `max_bytes` are `verdict.max_results` and `verdict.max_results_bytes`,
    /// shared equally by `owners` clients.
    pub fn open(
        root: &DirHandle,
        max: usize,
        max_bytes: u64,
        owners: usize,
    ) -> Result<Results, StorageError> {
        let path = root.join(RESULTS_DIR);
        let dir = root
            .subdir(RESULTS_DIR)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let mut index = HashMap::new();
        for entry in dir.list().map_err(|e| StorageError::io("list", &path, e))? {
            if entry.name.ends_with(".tmp") {
                let _ = dir.remove_if_exists(&entry.name);
                continue;
            }
            let Some(uuid) = entry
                .name
                .strip_suffix(".json")
                .and_then(|u| Uuid::parse_str(u).ok())
            else {
                continue;
            };
            match read_meta(&dir, &entry.name, entry.len, uuid) {
                Ok(meta) => {
                    index.insert(uuid, meta);
                }
                Err(why) => log::warn!(
                    "{}: {why}; it is left alone, and its run has no report nor counts as a baseline",
                    dir.join(&entry.name).display()
                ),
            }
        }
        let results = Results {
            dir,
            index: Mutex::new(index),
            max,
            max_bytes,
            owners,
            errors: Repeats::default(),
            unsynced: Mutex::new(Vec::new()),
        };
        results.prune(None);
        Ok(results)
    }

    /// How many results are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.index).len()
    }

    /// Writes `result` (whole or not at all, not fsync'd: see the module documentation) for a
    /// commit under way: it is not a baseline nor shown until [`Results::committed`]. Returns
    /// the file's bytes (one line of JSON), for the commit's record to carry.
    ///
    /// Errors: the file could not be written (a full disk); nothing is kept then.
    pub fn save(&self, result: &RunResult) -> io::Result<Vec<u8>> {
        let bytes = serde_json::to_vec(result).map_err(io::Error::other)?;
        self.dir.write_replace(&file_name(&result.uuid), &bytes)?;
        lock(&self.unsynced).push(result.uuid);
        lock(&self.index).insert(
            result.uuid,
            Meta {
                owner: result.owner.clone(),
                identity: result.identity.clone(),
                passed: result.passed,
                ended_ms: result.ended_ms,
                committed: false,
                bytes: bytes.len() as u64,
            },
        );
        Ok(bytes)
    }

    /// Fsyncs every result file written since the last call, then the directory: called before
    /// a snapshot of the job table lets the log forget the records that carry them. A file
    /// removed since (its commit failed, or it was pruned) needs nothing.
    ///
    /// Errors: an fsync failed; the files not yet synced are tried again at the next call.
    pub fn sync(&self) -> io::Result<()> {
        let uuids = std::mem::take(&mut *lock(&self.unsynced));
        if uuids.is_empty() {
            return Ok(());
        }
        let synced = uuids
            .iter()
            .try_for_each(|uuid| match self.dir.open_read(&file_name(uuid)) {
                Ok(file) => file.sync_all(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
            .and_then(|()| self.dir.sync());
        if let Err(e) = synced {
            lock(&self.unsynced).extend(uuids);
            return Err(e);
        }
        Ok(())
    }

    /// `storage.dir/results`.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Result files written and not yet fsync'd.
    #[cfg(test)]
    pub fn unsynced(&self) -> usize {
        lock(&self.unsynced).len()
    }

    /// At the start, a result the log holds (`bytes`, as [`Results::save`] made them): when
    /// its file did not read back or is missing (a power loss before [`Results::sync`]), it is
    /// written again, fsync'd. Its run's commit is in the same record, so
    /// [`Results::keep_committed`] keeps it.
    pub fn restore(&self, bytes: &[u8]) {
        let m = match serde_json::from_slice::<MetaFile>(bytes) {
            Ok(m) if m.format == RESULT_FORMAT && m.version == RESULT_VERSION => m,
            // The log's records passed their checksums: only another version's result.
            Ok(_) | Err(_) => return,
        };
        if lock(&self.index).contains_key(&m.uuid) {
            return;
        }
        if let Err(e) = self.dir.write_atomic(&file_name(&m.uuid), bytes) {
            self.errors.error(&format!(
                "cannot write the result of run {} again from the log into {}: {e}; its run has no report nor counts as a baseline",
                m.uuid,
                self.dir.join(&file_name(&m.uuid)).display()
            ));
            return;
        }
        log::warn!(
            "the result of run {} was missing or damaged in storage.dir/results (the machine stopped before it was synced): written again from the log",
            m.uuid
        );
        lock(&self.index).insert(
            m.uuid,
            Meta {
                owner: m.owner,
                identity: m.identity,
                passed: m.passed,
                ended_ms: m.ended_ms,
                committed: false,
                bytes: bytes.len() as u64,
            },
        );
    }

    /// The commit of `uuid` is on disk: its result counts (as a baseline, in reports). The
    /// oldest results beyond `verdict.max_results` go.
    pub fn committed(&self, uuid: &Uuid) {
        if let Some(meta) = lock(&self.index).get_mut(uuid) {
            meta.committed = true;
        }
        self.prune(Some(uuid));
    }

    /// The commit of `uuid` was not recorded: its result goes.
    pub fn forget(&self, uuid: &Uuid) {
        lock(&self.index).remove(uuid);
        if let Err(e) = self.dir.remove_if_exists(&file_name(uuid)) {
            self.errors.error(&format!(
                "cannot remove {}: {e}",
                self.dir.join(&file_name(uuid)).display()
            ));
        }
    }

    /// At the start: keeps the results of the runs `finished` says were committed, and
    /// removes those of runs the job table shows not finished (their commit was never
    /// acknowledged). A run the table no longer holds was finished and forgotten: kept.
    pub fn keep_committed(&self, finished: impl Fn(&Uuid) -> Option<bool>) {
        let uuids: Vec<Uuid> = lock(&self.index).keys().copied().collect();
        for uuid in uuids {
            match finished(&uuid) {
                Some(false) => {
                    log::info!(
                        "the result of run {uuid} is removed: its commit was never recorded (the gateway stopped while committing it)"
                    );
                    self.forget(&uuid);
                }
                Some(true) | None => {
                    if let Some(meta) = lock(&self.index).get_mut(&uuid) {
                        meta.committed = true;
                    }
                }
            }
        }
        // Results written again from the log count against the bounds too.
        self.prune(None);
    }

    /// The committed result of `uuid`, if `caller` may see it (its own runs with a token;
    /// every run without tokens), read from its file.
    pub fn get(&self, uuid: &Uuid, caller: Option<&str>) -> Option<RunResult> {
        {
            let index = lock(&self.index);
            let meta = index.get(uuid)?;
            if !meta.committed || !visible(meta.owner.as_deref(), caller) {
                return None;
            }
        }
        self.read(uuid)
    }

    /// The baseline of a run of `owner` with `identity`: the last committed run of the same
    /// owner and identity that passed, other than `except`.
    pub fn baseline(
        &self,
        owner: Option<&str>,
        identity: &str,
        except: &Uuid,
    ) -> Option<RunResult> {
        let uuid = {
            let index = lock(&self.index);
            index
                .iter()
                .filter(|(u, m)| {
                    *u != except
                        && m.committed
                        && m.passed
                        && m.owner.as_deref() == owner
                        && m.identity.as_deref() == Some(identity)
                })
                .max_by_key(|(_, m)| m.ended_ms)
                .map(|(u, _)| *u)?
        };
        self.read(&uuid)
    }

    fn read(&self, uuid: &Uuid) -> Option<RunResult> {
        let name = file_name(uuid);
        let bytes = match self.dir.read_if_exists(&name) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                self.errors.error(&format!(
                    "cannot read {}: {e}",
                    self.dir.join(&name).display()
                ));
                return None;
            }
        };
        match serde_json::from_slice::<RunResult>(&bytes) {
            Ok(r) if r.uuid == *uuid => Some(r),
            Ok(_) | Err(_) => {
                self.errors.error(&format!(
                    "{} is not a result of this version: left alone",
                    self.dir.join(&name).display()
                ));
                None
            }
        }
    }

    /// Removes the oldest committed results beyond the bounds: first those of `kept`'s owner
    /// beyond its share (`verdict.max_results` and `verdict.max_results_bytes` shared equally
    /// by the clients, so no token pushes out another's results), then anyone's beyond the
    /// bounds themselves. Of the results that may go, those that are no identity's baseline go
    /// first, oldest first, then baselines, oldest first; `kept` (the result just committed)
    /// never goes.
    fn prune(&self, kept: Option<&Uuid>) {
        let victims: Vec<Uuid> = {
            let mut index = lock(&self.index);
            // Within every bound, as after most commits: nothing to order (a sort of every
            // result at each commit cost more than the rest of the commit).
            let owner = kept.and_then(|u| index.get(u)).map(|m| m.owner.clone());
            let over_share = owner.as_ref().is_some_and(|owner| {
                let (count_share, bytes_share) = self.share();
                let (n, b) = index
                    .values()
                    .filter(|m| m.owner == *owner)
                    .fold((0usize, 0u64), |(n, b), m| (n + 1, b + m.bytes));
                n > count_share || b > bytes_share
            });
            if !over_share
                && index.len() <= self.max
                && index.values().map(|m| m.bytes).sum::<u64>() <= self.max_bytes
            {
                return;
            }
            let baselines = baselines(&index);
            // The order results go in, least first: not a baseline, then oldest.
            let mut order = Order::new(
                index
                    .iter()
                    .filter(|(u, m)| m.committed && Some(*u) != kept)
                    .map(|(u, m)| (baselines.contains(u), m.ended_ms, *u))
                    .collect(),
            );
            let mut victims = Vec::new();
            if let Some(owner) = owner.filter(|_| over_share) {
                let (count_share, bytes_share) = self.share();
                let (mut n, mut b) = index
                    .values()
                    .filter(|m| m.owner == owner)
                    .fold((0usize, 0u64), |(n, b), m| (n + 1, b + m.bytes));
                let mut i = 0;
                while let Some(u) = order.get(i) {
                    i += 1;
                    if n <= count_share && b <= bytes_share {
                        break;
                    }
                    if index.get(&u).is_some_and(|m| m.owner == owner)
                        && let Some(m) = index.remove(&u)
                    {
                        n -= 1;
                        b = b.saturating_sub(m.bytes);
                        victims.push(u);
                    }
                }
            }
            let mut count = index.len();
            let mut bytes: u64 = index.values().map(|m| m.bytes).sum();
            let mut i = 0;
            while let Some(u) = order.get(i) {
                i += 1;
                if count <= self.max && bytes <= self.max_bytes {
                    break;
                }
                if let Some(m) = index.remove(&u) {
                    count -= 1;
                    bytes = bytes.saturating_sub(m.bytes);
                    victims.push(u);
                }
            }
            victims
        };
        for uuid in victims {
            if let Err(e) = self.dir.remove_if_exists(&file_name(&uuid)) {
                self.errors.error(&format!(
                    "cannot remove {}: {e}",
                    self.dir.join(&file_name(&uuid)).display()
                ));
            }
        }
    }

    /// What one client may keep: an equal share of both bounds, at least one result.
    fn share(&self) -> (usize, u64) {
        let owners = self.owners.max(1);
        ((self.max / owners).max(1), self.max_bytes / owners as u64)
    }
}

/// The results that may go, in the order they go: not a baseline before a baseline, then
/// oldest first. Ordered only as far as they are taken: as a rule one goes at a commit, and a
/// sort of them all at each commit would cost more than the commit.
struct Order {
    items: Vec<(bool, i64, Uuid)>,
    /// `items[..sorted]` are the least, in order.
    sorted: usize,
}

impl Order {
    fn new(items: Vec<(bool, i64, Uuid)>) -> Order {
        Order { items, sorted: 0 }
    }

    /// The `i`th result in the order (from 0), if there are that many.
    fn get(&mut self, i: usize) -> Option<Uuid> {
        if i >= self.items.len() {
            return None;
        }
        if i >= self.sorted {
            // The next least, at least twice as many as so far: the smallest `k` of the rest
            // are moved before the others, then sorted.
            let want = (i + 1).max(self.sorted * 2).max(4).min(self.items.len());
            let k = want - self.sorted;
            let rest = &mut self.items[self.sorted..];
            if k < rest.len() {
                rest.select_nth_unstable(k - 1);
            }
            rest[..k].sort_unstable();
            self.sorted = want;
        }
        Some(self.items[i].2)
    }
}

/// The newest passed result of each owner and identity: the baselines.
fn baselines(index: &HashMap<Uuid, Meta>) -> std::collections::HashSet<Uuid> {
    let mut newest: HashMap<(Option<&str>, &str), (i64, Uuid)> = HashMap::new();
    for (uuid, m) in index {
        if let (true, true, Some(identity)) = (m.committed, m.passed, m.identity.as_deref()) {
            let slot = newest
                .entry((m.owner.as_deref(), identity))
                .or_insert((m.ended_ms, *uuid));
            if m.ended_ms > slot.0 {
                *slot = (m.ended_ms, *uuid);
            }
        }
    }
    newest.values().map(|(_, u)| *u).collect()
}

/// Whether a result of `owner` is shown to `caller`: a run registered with a token belongs to
/// that token's client alone; one registered without tokens is shown only while there are none
/// (results outlive the job table, and a token added later must not read runs it never made).
fn visible(owner: Option<&str>, caller: Option<&str>) -> bool {
    owner == caller
}

/// Reads the index's part of a result file, checking its format.
fn read_meta(dir: &DirHandle, name: &str, len: u64, uuid: Uuid) -> Result<Meta, String> {
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "{len} bytes, more than a result holds ({MAX_FILE_BYTES})"
        ));
    }
    let bytes = dir
        .read_if_exists(name)
        .map_err(|e| format!("cannot read it: {e}"))?
        .ok_or("removed while the start read it")?;
    let m: MetaFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not a result file of metrics-consumer ({e})"))?;
    if m.format != RESULT_FORMAT {
        return Err(format!(
            "its format is {:?}, not {RESULT_FORMAT:?}",
            m.format
        ));
    }
    if m.version != RESULT_VERSION {
        return Err(format!(
            "version {} of the result format; this binary reads version {RESULT_VERSION}",
            m.version
        ));
    }
    if m.uuid != uuid {
        return Err(format!("it holds the result of run {}", m.uuid));
    }
    Ok(Meta {
        owner: m.owner,
        identity: m.identity,
        passed: m.passed,
        ended_ms: m.ended_ms,
        committed: false,
        bytes: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{Dir, root};

    fn result(
        owner: Option<&str>,
        identity: Option<&str>,
        passed: bool,
        ended_ms: i64,
    ) -> RunResult {
        RunResult {
            format: RESULT_FORMAT.into(),
            version: RESULT_VERSION,
            uuid: Uuid::new_v4(),
            owner: owner.map(Into::into),
            identity: identity.map(Into::into),
            passed,
            ended_ms,
            host: "lg-1".into(),
            tags: vec![("test".into(), "shop".into())],
            started_ms: ended_ms - 1000,
            rows: Vec::new(),
            progress: vec![Sample {
                ms: ended_ms - 500,
                users: Some(3.0),
                rps: None,
            }],
            verdict: Verdict {
                passed,
                baseline: None,
                checks: Vec::new(),
            },
        }
    }

    fn commit(results: &Results, r: &RunResult) {
        results.save(r).unwrap();
        results.committed(&r.uuid);
    }

    #[test]
    fn the_baseline_is_the_last_committed_run_that_passed_with_the_same_owner_and_identity() {
        let dir = Dir::new("results-baseline");
        let results = Results::open(&root(&dir), 100, 1 << 30, 1).unwrap();
        let old = result(Some("a"), Some("test=shop"), true, 1000);
        let newer = result(Some("a"), Some("test=shop"), true, 2000);
        let failed = result(Some("a"), Some("test=shop"), false, 3000);
        let other_owner = result(Some("b"), Some("test=shop"), true, 4000);
        let other_test = result(Some("a"), Some("test=cart"), true, 5000);
        for r in [&old, &newer, &failed, &other_owner, &other_test] {
            commit(&results, r);
        }
        let under_way = result(Some("a"), Some("test=shop"), true, 6000);
        results.save(&under_way).unwrap();
        let me = Uuid::new_v4();
        let b = results.baseline(Some("a"), "test=shop", &me).unwrap();
        assert_eq!(
            b, newer,
            "not the failed one, nor one under way, nor another owner's"
        );
        assert_eq!(
            results.baseline(Some("b"), "test=shop", &me).unwrap().uuid,
            other_owner.uuid
        );
        assert!(results.baseline(None, "test=shop", &me).is_none());
        assert!(results.baseline(Some("a"), "test=none", &me).is_none());
        assert!(
            results
                .baseline(Some("a"), "test=shop", &newer.uuid)
                .unwrap()
                .uuid
                == old.uuid
        );
    }

    #[test]
    fn a_result_is_shown_to_its_owner_once_committed_and_survives_a_restart() {
        let dir = Dir::new("results-restart");
        let results = Results::open(&root(&dir), 100, 1 << 30, 1).unwrap();
        let mine = result(Some("a"), Some("test=shop"), true, 1000);
        results.save(&mine).unwrap();
        assert!(results.get(&mine.uuid, Some("a")).is_none(), "under way");
        results.committed(&mine.uuid);
        assert_eq!(results.get(&mine.uuid, Some("a")).unwrap(), mine);
        assert!(
            results.get(&mine.uuid, Some("b")).is_none(),
            "another token's"
        );
        assert!(
            results.get(&mine.uuid, None).is_none(),
            "a token's, without one"
        );
        let lost = result(Some("a"), Some("test=shop"), true, 2000);
        results.save(&lost).unwrap();
        let never = result(Some("a"), Some("test=shop"), true, 3000);
        results.save(&never).unwrap();
        results.forget(&never.uuid);
        assert!(!dir.0.join("results").join(file_name(&never.uuid)).exists());
        drop(results);

        let again = Results::open(&root(&dir), 100, 1 << 30, 1).unwrap();
        assert_eq!(again.len(), 2);
        // The table shows `lost` still running: its commit was never recorded.
        again.keep_committed(|u| (*u == lost.uuid).then_some(false));
        assert_eq!(again.len(), 1);
        assert!(!dir.0.join("results").join(file_name(&lost.uuid)).exists());
        assert_eq!(again.get(&mine.uuid, Some("a")).unwrap(), mine);
        assert_eq!(
            again
                .baseline(Some("a"), "test=shop", &Uuid::nil())
                .unwrap()
                .uuid,
            mine.uuid
        );
    }

    #[test]
    fn the_oldest_go_beyond_the_bound_and_a_baseline_last() {
        let dir = Dir::new("results-bound");
        let results = Results::open(&root(&dir), 3, 1 << 30, 1).unwrap();
        let base = result(None, Some("test=a"), true, 1);
        commit(&results, &base);
        let mut later = Vec::new();
        for t in 2..8 {
            let r = result(None, Some("test=a"), false, t);
            commit(&results, &r);
            later.push(r.uuid);
        }
        assert_eq!(results.len(), 3);
        assert!(
            results.get(&base.uuid, None).is_some(),
            "the baseline stays"
        );
        assert!(results.get(&later[5], None).is_some());
        assert!(results.get(&later[0], None).is_none());
        let files = std::fs::read_dir(dir.0.join("results")).unwrap().count();
        assert_eq!(files, 3);
    }

    #[test]
    fn the_run_just_committed_stays_when_baselines_fill_the_bound() {
        let dir = Dir::new("results-kept");
        let results = Results::open(&root(&dir), 3, 1 << 30, 1).unwrap();
        let mut baselines = Vec::new();
        for t in 1..4 {
            let r = result(None, Some(&format!("test={t}")), true, t);
            commit(&results, &r);
            baselines.push(r.uuid);
        }
        let failed = result(None, Some("test=new"), false, 10);
        commit(&results, &failed);
        assert!(
            results.get(&failed.uuid, None).is_some(),
            "the new run's report stays"
        );
        assert!(
            results.get(&baselines[0], None).is_none(),
            "the oldest baseline went"
        );
        assert!(results.get(&baselines[2], None).is_some());
    }

    #[test]
    fn one_client_s_results_never_push_out_another_s() {
        let dir = Dir::new("results-share");
        // Two clients: 4 results each.
        let results = Results::open(&root(&dir), 8, 1 << 30, 2).unwrap();
        let theirs = result(Some("b"), Some("test=victim"), true, 1);
        commit(&results, &theirs);
        let their_report = result(Some("b"), Some("test=victim"), false, 2);
        commit(&results, &their_report);
        for t in 10..60 {
            commit(
                &results,
                &result(Some("a"), Some(&format!("test={t}")), t % 2 == 0, t),
            );
        }
        assert_eq!(results.len(), 6, "b's 2 and a's share of 4");
        assert!(results.get(&their_report.uuid, Some("b")).is_some());
        assert_eq!(
            results
                .baseline(Some("b"), "test=victim", &Uuid::nil())
                .unwrap()
                .uuid,
            theirs.uuid
        );
    }

    #[test]
    fn the_oldest_go_beyond_the_bytes_kept() {
        let dir = Dir::new("results-bytes");
        let one = serde_json::to_vec(&result(None, None, false, 1))
            .unwrap()
            .len() as u64;
        let results = Results::open(&root(&dir), 100, one * 5 / 2, 1).unwrap();
        let mut all = Vec::new();
        for t in 1..6 {
            let r = result(None, None, false, t);
            commit(&results, &r);
            all.push(r.uuid);
        }
        assert_eq!(results.len(), 2);
        assert!(results.get(&all[4], None).is_some() && results.get(&all[3], None).is_some());
        assert!(results.get(&all[2], None).is_none());
    }

    #[test]
    fn a_file_that_is_not_a_result_is_left_alone_with_a_warning() {
        let dir = Dir::new("results-foreign");
        let uuid = Uuid::new_v4();
        std::fs::create_dir_all(dir.0.join("results")).unwrap();
        std::fs::write(
            dir.0.join("results").join(file_name(&uuid)),
            b"{\"format\":\"x\"}",
        )
        .unwrap();
        std::fs::write(dir.0.join("results").join("notes.txt"), b"hello").unwrap();
        let results = Results::open(&root(&dir), 10, 1 << 30, 1).unwrap();
        assert_eq!(results.len(), 0);
        assert!(dir.0.join("results").join(file_name(&uuid)).exists());
    }
}
