//! The results of committed runs, kept by the gateway itself so that a run's baseline is found
//! whatever InfluxDB it writes to (1, 2 or 3), without reading InfluxDB: one line of JSON per
//! run in the append-only segments of `storage.dir/results/` (`store.rs`; through `storage`'s
//! handle, no link followed), at most `verdict.max_results` of them, and an index of them in
//! memory.
//!
//! ```text
//! results/<number>.results   a header line, then one result a line:
//!                            {"format": "metrics-consumer-result", "version": 1, "uuid": …,
//!                             "owner", "identity", "passed", "ended_ms", "host", "tags",
//!                             "started_ms", "rows", "progress", "verdict"}
//! ```
//!
//! A commit saves its result before its record goes into the log ([`Results::save`]) and makes
//! it count once the record is on disk ([`Results::committed`]), or lets it go when the record
//! failed ([`Results::forget`]). A crash between the two leaves a line for a commit that was
//! never acknowledged: the start lets go the results of runs the job table does not show
//! finished ([`Results::keep_committed`]). So a baseline is always a run whose commit was acknowledged.
//!
//! **Durable through the log.** The line is appended without an fsync: the commit's record
//! carries the same result beside its job-table change, and that record is fsync'd with the
//! others of its group commit. Before a snapshot of the job table is written (after which the
//! log may let that record go), [`Results::sync`] fsyncs the segments written since the last
//! one. At the start, a result the log still holds that the segments lack (a power loss before
//! their fsync) is appended again from the log ([`Results::restore`]). So a commit costs no
//! fsync of its own, and no file is made or removed for one: a file per result made and
//! removed at each commit cost more than the rest of the commit. A result that goes (pruned, or
//! its commit not recorded) is overwritten in place by a mark naming its run
//! (`{"gone":"<uuid>"}`, then spaces): the next start lets go any earlier copy of it and does
//! not append it again from the log.
//!
//! Memory: the index holds each result's owner, identity, whether it passed and when it ended
//! (about 200 bytes each); rows and progress are read from the segment when asked for. A file
//! or a line that cannot be read at the start (damaged, or another program's) is named in a
//! warning and left alone: results are for verdicts and reports, the points themselves are in
//! the log.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::jobs::Sample;
use crate::storage::{DirHandle, Repeats, StorageError};
use crate::sync::lock;
use crate::verdict::{ResultRow, Verdict};
use index::{Index, Meta};
use store::{Place, Store};

mod index;
mod store;

/// The directory of results in `storage.dir`.
pub const RESULTS_DIR: &str = "results";
/// A result file's `format`.
pub const RESULT_FORMAT: &str = "metrics-consumer-result";
/// The version of the result files this program reads and writes.
pub const RESULT_VERSION: u32 = 1;

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

/// The part of a result's line the index reads.
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
    /// `storage.dir/results`, for messages.
    path: std::path::PathBuf,
    /// Locked before `store` when both are.
    index: Mutex<Index>,
    store: Mutex<Store>,
    /// At the start, until [`Results::keep_committed`]: the results whose last line found is
    /// one let go (`{"gone":…}`), so that [`Results::restore`] does not bring them back from
    /// the log.
    gone: Mutex<HashSet<Uuid>>,
    max: usize,
    max_bytes: u64,
    /// The clients the bounds are shared by (their count; 1 without tokens).
    owners: usize,
    /// Write errors, logged at most once a minute.
    pub errors: Repeats,
}

impl Results {
    /// Opens `storage.dir/results` (made when missing) and reads the index from its segments
    /// (a line that does not read back as a result is left out, named in a warning).
    ///
    /// Errors: the directory cannot be made, opened or listed, or a segment cannot be read.
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
        let mut index = Index::default();
        // A result found twice (appended again from the log, or moved by a compaction cut
        // short): the later line counts.
        let mut twice = Vec::new();
        // A line let go is marked with its result's uuid: an earlier copy of that result (one
        // a compaction cut short left behind) does not count either.
        let mut gone = HashSet::new();
        let store = Store::open(dir, &mut |place, line| match read_meta(line) {
            Ok(meta) => {
                gone.remove(&meta.uuid);
                if let Some(old) = index.insert(meta.uuid, meta.at(place)) {
                    twice.push(old.place);
                }
                true
            }
            Err(_) if let Some(uuid) = read_gone(line) => {
                if let Some(old) = index.remove(&uuid) {
                    twice.push(old.place);
                }
                gone.insert(uuid);
                false
            }
            Err(why) => {
                log::warn!(
                    "{}: the line at byte {}: {why}; left out, and that run has no report nor counts as a baseline",
                    path.display(),
                    place.offset
                );
                false
            }
        })
        .map_err(|e| StorageError::io("read", &path, e))?;
        let results = Results {
            path,
            index: Mutex::new(index),
            store: Mutex::new(store),
            gone: Mutex::new(gone),
            max,
            max_bytes,
            owners,
            errors: Repeats::new(module_path!()),
        };
        {
            let mut store = lock(&results.store);
            for place in &twice {
                store.release(place, None);
            }
        }
        results.prune(None);
        Ok(results)
    }

    /// How many results are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.index).len()
    }

    /// Appends `result` (not fsync'd: see the module documentation) for a commit under way: it
    /// is not a baseline nor shown until [`Results::committed`]. Returns its line (JSON without
    /// a raw newline), for the commit's record to carry.
    ///
    /// Errors: it could not be written (a full disk); nothing is kept then.
    pub fn save(&self, result: &RunResult) -> io::Result<Vec<u8>> {
        // Room at once for what a result's line usually takes (each row's fourteen figures
        // about 400 bytes), where serde_json's buffer would grow from 128 bytes.
        let mut bytes =
            Vec::with_capacity(1024 + 512 * result.rows.len() + 64 * result.progress.len());
        serde_json::to_writer(&mut bytes, result).map_err(io::Error::other)?;
        let mut index = lock(&self.index);
        let place = lock(&self.store).append(&bytes)?;
        let meta = Meta {
            owner: result.owner.clone(),
            identity: result.identity.clone(),
            passed: result.passed,
            ended_ms: result.ended_ms,
            committed: false,
            place,
        };
        if let Some(old) = index.insert(result.uuid, meta) {
            lock(&self.store).release(&old.place, Some(&gone_mark(&result.uuid)));
        }
        Ok(bytes)
    }

    /// Makes durable what was appended since the last call: first the segments less than half
    /// of which still counts are written again into the current one, then every segment written
    /// is fsync'd, and only then are the emptied ones removed (`store.rs`). Called before a
    /// snapshot of the job table lets the log forget the records that carry the results.
    ///
    /// Errors: an fsync failed (tried again at the next call), or a segment could not be
    /// removed.
    pub fn sync(&self) -> io::Result<()> {
        let mut index = lock(&self.index);
        let mut store = lock(&self.store);
        let mut moved = std::collections::HashSet::new();
        // Moving lines needs room: on a full disk (where the snapshot this sync comes before
        // is what frees the log's segments) it waits, and what was written is fsync'd still.
        'compact: while let Some(sparse) = store.sparse().filter(|n| moved.insert(*n)) {
            for (uuid, old) in index.in_segment(sparse) {
                let Some(file) = store.file(&old) else {
                    continue;
                };
                let appended = store::read_at(&file, &old).and_then(|line| store.append(&line));
                match appended {
                    Ok(place) => {
                        store.release(&old, None);
                        index.relocate(&uuid, place);
                    }
                    Err(e) => {
                        self.errors.error(&format!(
                            "cannot write again the results of a sparse segment in {}: {e}; tried again at the next snapshot",
                            self.path.display()
                        ));
                        break 'compact;
                    }
                }
            }
        }
        drop(index);
        store.sync()
    }

    /// `storage.dir/results`.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// At the start, a result the log holds (`bytes`, as [`Results::save`] made them): when
    /// the segments lack it (a power loss before [`Results::sync`]), it is appended again (and
    /// synced by the start's snapshot). Its run's commit is in the same record, so
    /// [`Results::keep_committed`] keeps it.
    pub fn restore(&self, bytes: &[u8]) {
        let Ok(meta) = read_meta(bytes) else {
            // The log's records passed their checksums: only another version's result.
            return;
        };
        let uuid = meta.uuid;
        let mut index = lock(&self.index);
        // Let go before the restart (pruned, or its commit found never recorded): the log's
        // record does not undo that.
        if index.contains_key(&uuid) || lock(&self.gone).contains(&uuid) {
            return;
        }
        let place = match lock(&self.store).append(bytes) {
            Ok(place) => place,
            Err(e) => {
                self.errors.error(&format!(
                    "cannot append the result of run {uuid} again from the log to {}: {e}; its run has no report nor counts as a baseline",
                    self.path.display()
                ));
                return;
            }
        };
        log::warn!(
            "the result of run {uuid} was missing from storage.dir/results (the machine stopped before it was synced): appended again from the log"
        );
        index.insert(uuid, meta.at(place));
    }

    /// The commit of `uuid` is on disk: its result counts (as a baseline, in reports). The
    /// oldest results beyond `verdict.max_results` go.
    #[cfg(test)]
    pub fn committed(&self, uuid: &Uuid) {
        self.mark_committed(uuid);
        self.prune_after(uuid);
    }

    /// The commit of `uuid` is on disk: its result counts (as a baseline, in reports) from now
    /// on. Takes the index's lock alone, no I/O.
    pub fn mark_committed(&self, uuid: &Uuid) {
        lock(&self.index).set_committed(uuid);
    }

    /// After [`Results::mark_committed`]: the oldest results beyond `verdict.max_results` (or
    /// the share of `uuid`'s owner) go, their lines blanked in their files.
    pub fn prune_after(&self, uuid: &Uuid) {
        self.prune(Some(uuid));
    }

    /// The commit of `uuid` was not recorded: its result goes.
    pub fn forget(&self, uuid: &Uuid) {
        let mut index = lock(&self.index);
        if let Some(meta) = index.remove(uuid) {
            let mut store = lock(&self.store);
            store.release(&meta.place, Some(&gone_mark(uuid)));
            // Durable now: a power loss must not bring back the line of a commit never
            // recorded once its run has left the job table (then nothing at the start tells).
            if let Err(e) = store.sync_segment(&meta.place) {
                self.errors.error(&format!(
                    "cannot sync {} after letting go of the result of run {uuid}: {e}",
                    self.path.display()
                ));
            }
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
                    lock(&self.index).set_committed(&uuid);
                }
            }
        }
        // The log's results are all restored by now.
        lock(&self.gone).clear();
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
        let (file, place) = {
            let index = lock(&self.index);
            let place = index.get(uuid)?.place;
            (lock(&self.store).file(&place)?, place)
        };
        let bytes = match store::read_at(&file, &place) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.errors.error(&format!(
                    "cannot read the result of run {uuid} in {}: {e}",
                    self.path.display()
                ));
                return None;
            }
        };
        match serde_json::from_slice::<RunResult>(&bytes) {
            Ok(r) if r.uuid == *uuid => Some(r),
            // Blanked by a prune or a forget between the look in the index and the read.
            Err(_) if bytes.iter().all(|&b| b == b' ') || read_gone(&bytes).is_some() => None,
            Ok(_) | Err(_) => {
                self.errors.error(&format!(
                    "the result of run {uuid} in {} does not read back as a result of this version",
                    self.path.display()
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
    /// never goes. A bound passed is pruned down to [`low`] of it, so that pruning (a pass over
    /// every result) is paid once in many commits, not at each one once the bounds are
    /// reached.
    fn prune(&self, kept: Option<&Uuid>) {
        let victims: Vec<(Uuid, Place)> = {
            let mut index = lock(&self.index);
            // The clients over their share: the owner of `kept`; at the start (no `kept`: the
            // results read back, and those written again from the log) every client.
            let (count_share, bytes_share) = self.share();
            let over_share = |(n, b): (usize, u64)| n > count_share || b > bytes_share;
            let over: Vec<Option<String>> = match kept {
                Some(kept) => index
                    .get(kept)
                    .map(|m| m.owner.as_deref())
                    .filter(|owner| over_share(index.usage_of(*owner)))
                    .map(|owner| owner.map(str::to_owned))
                    .into_iter()
                    .collect(),
                None => index
                    .usage()
                    .filter(|(_, usage)| over_share(*usage))
                    .map(|(owner, _)| owner.map(str::to_owned))
                    .collect(),
            };
            // Within every bound, as after most commits: nothing to order (a sort of every
            // result at each commit cost more than the rest of the commit).
            if over.is_empty() && index.len() <= self.max && index.bytes() <= self.max_bytes {
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
            for owner in over {
                let (mut n, mut b) = index.usage_of(owner.as_deref());
                let mut i = 0;
                while let Some(u) = order.get(i) {
                    i += 1;
                    if n <= low(count_share) && b <= low(bytes_share) {
                        break;
                    }
                    if index.get(&u).is_some_and(|m| m.owner == owner)
                        && let Some(m) = index.remove(&u)
                    {
                        n -= 1;
                        b = b.saturating_sub(m.bytes());
                        victims.push((u, m.place));
                    }
                }
            }
            let mut count = index.len();
            let mut bytes = index.bytes();
            let mut i = 0;
            while let Some(u) = order.get(i) {
                i += 1;
                if count <= low(self.max) && bytes <= low(self.max_bytes) {
                    break;
                }
                if let Some(m) = index.remove(&u) {
                    count -= 1;
                    bytes = bytes.saturating_sub(m.bytes());
                    victims.push((u, m.place));
                }
            }
            victims
        };
        let mut store = lock(&self.store);
        for (uuid, place) in &victims {
            store.release(place, Some(&gone_mark(uuid)));
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

/// What a bound passed is pruned down to: 95 % of it (the whole of a bound under 20).
fn low<T>(bound: T) -> T
where
    T: Copy + std::ops::Sub<Output = T> + std::ops::Div<Output = T> + From<u8>,
{
    bound - bound / T::from(20)
}

/// The newest passed result of each owner and identity: the baselines.
fn baselines(index: &Index) -> std::collections::HashSet<Uuid> {
    let mut newest: HashMap<(Option<&str>, &str), (i64, Uuid)> = HashMap::new();
    for (uuid, m) in index.iter() {
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

/// What a result's line let go begins with (the rest is spaces): `{"gone":"<uuid>"}`, so that
/// the next start lets go an earlier copy of it too, and does not restore it from the log.
fn gone_mark(uuid: &Uuid) -> Vec<u8> {
    format!("{{\"gone\":\"{uuid}\"}}").into_bytes()
}

/// The uuid of a line let go ([`gone_mark`]), if `line` is one.
fn read_gone(line: &[u8]) -> Option<Uuid> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Gone {
        gone: Uuid,
    }
    serde_json::from_slice::<Gone>(line).ok().map(|g| g.gone)
}

/// Reads the index's part of a result's line, checking its format.
fn read_meta(line: &[u8]) -> Result<MetaFile, String> {
    let m: MetaFile = serde_json::from_slice(line)
        .map_err(|e| format!("not a result of metrics-consumer ({e})"))?;
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
    Ok(m)
}

impl MetaFile {
    /// What the index keeps of the result whose line is at `place`.
    fn at(self, place: Place) -> Meta {
        Meta {
            owner: self.owner,
            identity: self.identity,
            passed: self.passed,
            ended_ms: self.ended_ms,
            committed: false,
            place,
        }
    }
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
        drop(results);

        let again = Results::open(&root(&dir), 100, 1 << 30, 1).unwrap();
        assert_eq!(again.len(), 2);
        // The table shows `lost` still running: its commit was never recorded.
        again.keep_committed(|u| (*u == lost.uuid).then_some(false));
        assert_eq!(again.len(), 1);
        assert!(again.get(&lost.uuid, Some("a")).is_none());
        assert!(again.get(&never.uuid, Some("a")).is_none());
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
        // What went is blanked in its segment: a restart reads back the same three.
        drop(results);
        let again = Results::open(&root(&dir), 30, 1 << 30, 1).unwrap();
        assert_eq!(again.len(), 3);
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
    fn a_file_that_is_not_a_segment_of_results_and_a_line_that_is_not_a_result_are_left_alone() {
        let dir = Dir::new("results-foreign");
        let at = dir.path().join("results");
        std::fs::create_dir_all(&at).unwrap();
        let foreign = at.join("00000000000000000001.results");
        std::fs::write(&foreign, b"{\"format\":\"x\"}\n").unwrap();
        std::fs::write(at.join("notes.txt"), b"hello").unwrap();
        let kept = result(None, Some("test=a"), true, 5);
        let mut segment = store::HEADER.to_vec();
        segment.extend_from_slice(b"{\"format\":\"x\"}\n");
        segment.extend_from_slice(&serde_json::to_vec(&kept).unwrap());
        segment.extend_from_slice(b"\n{\"format\":\"metrics-consumer-result\",\"ver");
        std::fs::write(at.join("00000000000000000002.results"), &segment).unwrap();
        let results = Results::open(&root(&dir), 10, 1 << 30, 1).unwrap();
        results.keep_committed(|_| None);
        assert_eq!(results.len(), 1, "the whole line that is a result");
        assert_eq!(results.get(&kept.uuid, None).unwrap(), kept);
        assert_eq!(std::fs::read(&foreign).unwrap(), b"{\"format\":\"x\"}\n");
        // This start appends to a segment of its own, after the line cut short.
        let next = result(None, Some("test=a"), true, 6);
        commit(&results, &next);
        assert!(at.join("00000000000000000003.results").exists());
        drop(results);
        let again = Results::open(&root(&dir), 10, 1 << 30, 1).unwrap();
        again.keep_committed(|_| None);
        assert_eq!(again.get(&next.uuid, None).unwrap(), next);
        assert_eq!(again.get(&kept.uuid, None).unwrap(), kept);
    }

    /// A commit appends a line to an open segment: no file is made or removed for it. What is
    /// pruned stays on disk until its segment is mostly dead; then [`Results::sync`] moves
    /// what counts into the current segment and removes the old one, and every result still
    /// reads back, then and after a restart.
    #[test]
    fn results_go_into_few_files_and_sparse_segments_are_written_again_at_a_sync() {
        let dir = Dir::new("results-segments");
        let at = dir.path().join("results");
        let files = || std::fs::read_dir(&at).unwrap().count();
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        let mut all = Vec::new();
        for t in 0..200 {
            let r = result(None, Some(&format!("test={}", t % 3)), t % 2 == 0, t);
            commit(&results, &r);
            all.push(r);
        }
        assert_eq!(files(), 1, "one segment for them all");
        assert_eq!(results.len(), 20);
        // Roll to a new segment as a restart does, then sync: the first is mostly dead.
        drop(results);
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        results.keep_committed(|_| None);
        let (on_disk, live) = lock(&results.store).bytes();
        assert!(live * 2 < on_disk, "{live} of {on_disk} bytes count");
        results.sync().unwrap();
        let (on_disk, live) = lock(&results.store).bytes();
        assert_eq!(
            on_disk - live,
            store::HEADER.len() as u64,
            "only the header is not a result"
        );
        assert_eq!(files(), 1, "the old segment is gone");
        let kept: Vec<&RunResult> = all
            .iter()
            .filter(|r| results.get(&r.uuid, None).is_some())
            .collect();
        assert_eq!(kept.len(), 20);
        for r in &kept {
            assert_eq!(results.get(&r.uuid, None).as_ref(), Some(*r));
        }
        drop(results);
        let again = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        again.keep_committed(|_| None);
        for r in &kept {
            assert_eq!(again.get(&r.uuid, None).as_ref(), Some(*r));
        }
        assert_eq!(
            again
                .baseline(None, "test=0", &Uuid::nil())
                .unwrap()
                .ended_ms,
            198
        );
    }

    /// A bound passed is pruned down to 95 % of it, oldest first: the commits after it prune
    /// nothing until the bound is passed again.
    #[test]
    fn a_bound_passed_is_pruned_down_to_95_percent_of_it() {
        let dir = Dir::new("results-low");
        let results = Results::open(&root(&dir), 100, 1 << 30, 1).unwrap();
        let mut all = Vec::new();
        for t in 0..100 {
            let r = result(None, Some("test=a"), false, t);
            commit(&results, &r);
            all.push(r.uuid);
        }
        assert_eq!(results.len(), 100, "within the bound: nothing goes");
        let r = result(None, Some("test=a"), false, 100);
        commit(&results, &r);
        all.push(r.uuid);
        assert_eq!(results.len(), 95);
        assert!(results.get(&all[5], None).is_none() && results.get(&all[6], None).is_some());
        for t in 101..106 {
            let r = result(None, Some("test=a"), false, t);
            commit(&results, &r);
        }
        assert_eq!(
            results.len(),
            100,
            "nothing pruned until the bound is passed again"
        );
        assert!(results.get(&all[6], None).is_some());
        assert_eq!(low(3usize), 3, "a bound under 20 is kept whole");
        assert_eq!(low(256u64 << 20), (256u64 << 20) - (256u64 << 20) / 20);
    }

    /// A result the log carries is appended again at the start when the segments lack it, and
    /// not when they hold it.
    #[test]
    fn a_result_the_segments_lack_is_restored_from_the_log_once() {
        let dir = Dir::new("results-restore");
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        let kept = result(Some("a"), Some("test=a"), true, 1);
        let lost = result(Some("a"), Some("test=a"), true, 2);
        let kept_line = results.save(&kept).unwrap();
        let lost_line = serde_json::to_vec(&lost).unwrap();
        results.restore(&kept_line);
        results.restore(&lost_line);
        results.restore(&lost_line);
        results.restore(b"{\"format\":\"another\",\"version\":9}");
        results.keep_committed(|_| Some(true));
        assert_eq!(results.len(), 2);
        assert_eq!(results.get(&lost.uuid, Some("a")).unwrap(), lost);
        assert_eq!(results.get(&kept.uuid, Some("a")).unwrap(), kept);
        let (on_disk, live) = lock(&results.store).bytes();
        assert_eq!(
            on_disk - live,
            store::HEADER.len() as u64,
            "nothing appended twice"
        );
    }

    /// A result let go while it is the only line of its segment that counts (a commit not
    /// recorded, as the first of a start) is blanked too: a restart after the run left the
    /// table does not read it back as a committed run's.
    #[test]
    fn a_result_let_go_as_the_last_line_of_its_segment_does_not_come_back() {
        let dir = Dir::new("results-last-line");
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        let never = result(None, Some("test=a"), true, 1);
        results.save(&never).unwrap();
        results.forget(&never.uuid);
        drop(results);
        let again = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        // The run expired and left the table since.
        again.keep_committed(|_| None);
        assert_eq!(again.len(), 0);
        assert!(again.baseline(None, "test=a", &Uuid::nil()).is_none());
    }

    /// A result let go in a segment of an earlier start (the start's own removal of a commit
    /// never recorded, a prune) is blanked there too: the segment is opened for writing, not
    /// only for reading, so the line does not come back at the restart after.
    #[test]
    fn a_result_let_go_in_a_segment_of_an_earlier_start_does_not_come_back() {
        let dir = Dir::new("results-earlier-segment");
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        let never = result(None, Some("test=a"), true, 1);
        results.save(&never).unwrap();
        drop(results);
        // The gateway stopped while committing: the table shows the run not finished.
        let again = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        again.keep_committed(|_| Some(false));
        assert_eq!(again.len(), 0);
        drop(again);
        // Later the run left the table: nothing tells any more.
        let last = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        last.keep_committed(|_| None);
        assert_eq!(
            last.len(),
            0,
            "the result of a commit never recorded came back"
        );
    }

    /// Results a restart reads back (from the segments, or again from the log after they were
    /// pruned) are pruned to each client's share first: one client's do not push out
    /// another's at the start either.
    #[test]
    fn at_the_start_one_client_s_results_never_push_out_another_s() {
        let dir = Dir::new("results-start-share");
        let results = Results::open(&root(&dir), 4, 1 << 30, 2).unwrap();
        let mut lines = Vec::new();
        let mut theirs = Vec::new();
        for t in 1..3 {
            let r = result(Some("b"), Some(&format!("test=b{t}")), false, t);
            lines.push(results.save(&r).unwrap());
            results.committed(&r.uuid);
            theirs.push(r.uuid);
        }
        for t in 10..16 {
            let r = result(Some("a"), Some(&format!("test=a{t}")), false, t);
            lines.push(results.save(&r).unwrap());
            results.committed(&r.uuid);
        }
        assert_eq!(results.len(), 4, "b's 2 and a's 2");
        drop(results);
        // No snapshot since: the log still carries every result of these commits.
        let again = Results::open(&root(&dir), 4, 1 << 30, 2).unwrap();
        for line in &lines {
            again.restore(line);
        }
        again.keep_committed(|_| Some(true));
        assert!(again.len() <= 4);
        for u in &theirs {
            assert!(again.get(u, Some("b")).is_some(), "b's result {u} stays");
        }
    }

    /// A directory, a link or a file of a name past every number, named like a segment, is
    /// left alone: the start goes on and results are still kept.
    #[test]
    fn what_is_named_like_a_segment_but_is_not_a_file_is_left_alone() {
        let dir = Dir::new("results-hostile");
        let at = dir.path().join("results");
        std::fs::create_dir_all(at.join("00000000000000000003.results")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", at.join("00000000000000000002.results")).unwrap();
        let mut segment = store::HEADER.to_vec();
        segment.extend_from_slice(b"\n");
        std::fs::write(at.join(format!("{}.results", u64::MAX)), &segment).unwrap();
        let results = Results::open(&root(&dir), 10, 1 << 30, 1).unwrap();
        results.keep_committed(|_| None);
        let r = result(None, Some("test=a"), true, 5);
        commit(&results, &r);
        assert_eq!(results.get(&r.uuid, None).unwrap(), r);
        results.sync().unwrap();
        drop(results);
        let again = Results::open(&root(&dir), 10, 1 << 30, 1).unwrap();
        again.keep_committed(|_| None);
        assert_eq!(again.get(&r.uuid, None).unwrap(), r);
        assert!(at.join("00000000000000000003.results").is_dir());
    }

    /// On a full disk a sync still fsyncs what was written (the snapshot that frees the log's
    /// segments waits on it); moving the lines of a sparse segment waits for room.
    #[test]
    fn a_sync_on_a_full_disk_fsyncs_without_moving_lines() {
        let disk = crate::storage::tests::SmallDisk::new("results-full", "4m");
        let results = Results::open(&root(&disk.0), 20, 1 << 30, 1).unwrap();
        let mut all = Vec::new();
        for t in 0..200 {
            let r = result(None, Some(&format!("test={}", t % 3)), false, t);
            commit(&results, &r);
            all.push(r);
        }
        drop(results);
        let results = Results::open(&root(&disk.0), 20, 1 << 30, 1).unwrap();
        results.keep_committed(|_| None);
        let late = result(None, Some("test=z"), false, 1000);
        commit(&results, &late);
        assert!(lock(&results.store).sparse().is_some());
        crate::storage::tests::fill(disk.0.path());
        results.sync().unwrap();
        for r in all.iter().chain([&late]) {
            if let Some(got) = results.get(&r.uuid, None) {
                assert_eq!(&got, r);
            }
        }
        assert_eq!(results.get(&late.uuid, None).unwrap(), late);
    }

    /// A result pruned before a restart is not brought back from the log (whose record still
    /// carries it): the start does not undo the prune, and the report of the run committed
    /// last (kept then, over baselines) stays.
    #[test]
    fn a_result_pruned_before_a_restart_is_not_restored_from_the_log() {
        let dir = Dir::new("results-pruned-restore");
        let results = Results::open(&root(&dir), 2, 1 << 30, 1).unwrap();
        let mut lines = Vec::new();
        let old = result(None, Some("test=x"), true, 1);
        let base = result(None, Some("test=y"), true, 2);
        let report = result(None, Some("test=z"), false, 3);
        for r in [&old, &base, &report] {
            lines.push(results.save(r).unwrap());
            results.committed(&r.uuid);
        }
        assert!(results.get(&old.uuid, None).is_none(), "pruned");
        assert!(results.get(&report.uuid, None).is_some());
        drop(results);
        // No snapshot since: the log still carries every result of these commits.
        let again = Results::open(&root(&dir), 2, 1 << 30, 1).unwrap();
        for line in &lines {
            again.restore(line);
        }
        again.keep_committed(|_| Some(true));
        assert!(
            again.get(&old.uuid, None).is_none(),
            "a result pruned came back"
        );
        assert_eq!(again.get(&report.uuid, None).unwrap(), report);
        assert_eq!(again.get(&base.uuid, None).unwrap(), base);
    }

    /// A compaction cut short after its copies were written (a crash before the old segment
    /// was removed) leaves two copies of each line; a result pruned after the restart is let
    /// go in both: a later start does not read the old copy back.
    #[test]
    fn a_result_pruned_after_a_compaction_cut_short_does_not_come_back_from_the_old_copy() {
        let dir = Dir::new("results-moved-pruned");
        let at = dir.path().join("results");
        let first = at.join("00000000000000000001.results");
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        let mut old = Vec::new();
        for t in 0..100 {
            let r = result(None, None, false, t);
            commit(&results, &r);
            old.push(r.uuid);
        }
        drop(results);
        let copy = std::fs::read(&first).unwrap();
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        results.keep_committed(|_| None);
        results.sync().unwrap();
        assert!(!first.exists(), "compacted");
        drop(results);
        // The crash came before the old segment was removed.
        std::fs::write(&first, &copy).unwrap();
        let results = Results::open(&root(&dir), 20, 1 << 30, 1).unwrap();
        results.keep_committed(|_| None);
        for t in 1000..1020 {
            commit(&results, &result(None, None, false, t));
        }
        assert!(old.iter().all(|u| results.get(u, None).is_none()));
        drop(results);
        // verdict.max_results raised: nothing pruned comes back within it.
        let again = Results::open(&root(&dir), 100, 1 << 30, 1).unwrap();
        again.keep_committed(|_| None);
        let back = old.iter().filter(|u| again.get(u, None).is_some()).count();
        assert_eq!(back, 0, "results pruned came back from the old copy");
    }
}
