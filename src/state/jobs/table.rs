//! The table behind the job table's lock: the jobs, the counts a register needs without a scan
//! (active jobs, registers under way, per owner), the bytes held (all and per owner), the ended
//! runs in the order they ended, and the journal records not yet handed out. Plain data and
//! its bookkeeping; no lock, no I/O.

use super::*;

#[derive(Debug)]
pub(super) struct Table {
    /// Boxed, so that the hash table's empty slots (a third of them, typically) cost 24 bytes
    /// each rather than a job's 144: 10 000 jobs sit in 16 384 slots, 0.6 MiB less.
    pub(super) jobs: HashMap<Uuid, Box<Job>>,
    /// Jobs in an active state, kept with every state change so a register needs no scan.
    pub(super) active: usize,
    /// Registers between their slot reservation and their outcome.
    pub(super) reserved: usize,
    /// Per owner (token name): its active jobs and its registers under way. Owners with none
    /// have no entry.
    pub(super) held: HashMap<String, usize>,
    /// [`Job::weight`] of every job in the table, and of every register prepared (held by its
    /// [`Slot`]).
    pub(super) bytes: usize,
    /// The same, per owner. Owners with none have no entry.
    pub(super) held_bytes: HashMap<String, usize>,
    /// Finished and expired runs as they ended, oldest first: (when, which). An entry whose job
    /// has since been revived, or ended again, no longer matches it and is skipped.
    pub(super) ended: VecDeque<(i64, Uuid)>,
    /// Jobs now finished or expired.
    pub(super) ended_count: usize,
    /// The same, per owner ([`owner_key`]; owners with none have no entry): past
    /// `jobs.max_finished` the owner holding the most loses its oldest first, so one token's
    /// many finished runs never push out another token's few (an expired run whose late commit
    /// is still to come).
    pub(super) ended_by: HashMap<String, Ended>,
    /// `jobs.max_finished`.
    pub(super) max_ended: usize,
    /// Journal records of changes not yet handed out (removals of forgotten runs); they go
    /// out with the next [`Change`].
    pub(super) pending: Vec<u8>,
    /// Sequence number of the last change.
    pub(super) seq: u64,
    /// Changes prepared but not yet made: a snapshot covers only the changes below them.
    pub(super) preparing: BTreeSet<u64>,
}

impl Table {
    pub(super) fn new(max_ended: usize) -> Table {
        Table {
            jobs: HashMap::new(),
            active: 0,
            reserved: 0,
            held: HashMap::new(),
            bytes: 0,
            held_bytes: HashMap::new(),
            ended: VecDeque::new(),
            ended_count: 0,
            ended_by: HashMap::new(),
            max_ended,
            pending: Vec::new(),
            seq: 0,
            preparing: BTreeSet::new(),
        }
    }

    /// Hands out the records made since the last change (ending with the latest), as one
    /// [`Change`] whose number is the latest.
    pub(super) fn take(&mut self) -> Change {
        // Every numbered change adds its record to `pending`, so its last record is the
        // latest change whenever it holds any.
        let bytes = std::mem::take(&mut self.pending);
        Change {
            seq: if bytes.is_empty() { 0 } else { self.seq },
            bytes,
        }
    }

    /// A journal record of `job` in the state it is about to take, numbered and marked
    /// prepared; its removals waiting (if any) go with it.
    pub(super) fn prepare(&mut self, job: &Job) -> Change {
        self.seq += 1;
        format::encode_record(&mut self.pending, self.seq, Some(job), &job.run.uuid);
        self.preparing.insert(self.seq);
        self.take()
    }

    /// Records the job's present state in the journal.
    pub(super) fn put(&mut self, uuid: &Uuid) {
        if let Some(job) = self.jobs.get(uuid) {
            self.seq += 1;
            format::encode_record(&mut self.pending, self.seq, Some(job), uuid);
        }
    }

    /// Records the job's removal in the journal.
    pub(super) fn del(&mut self, uuid: &Uuid) {
        self.seq += 1;
        format::encode_record(&mut self.pending, self.seq, None, uuid);
    }

    pub(super) fn is_ended_at(&self, uuid: &Uuid, at_ms: i64) -> bool {
        ended_at(&self.jobs, uuid, at_ms)
    }

    /// A job has just become finished or expired; forgets ended runs beyond the cap
    /// ([`Table::forget_over_cap`]); how many.
    pub(super) fn ended(&mut self, uuid: Uuid, at_ms: i64) -> usize {
        self.count_ended(uuid, at_ms);
        let forgotten = self.forget_over_cap();
        self.tidy_ended();
        forgotten
    }

    /// Counts the job `uuid`, ended at `at_ms`, among the ended runs, and its owner's.
    pub(super) fn count_ended(&mut self, uuid: Uuid, at_ms: i64) {
        // In order of time: a run put back to the time it had expired at (a late commit that
        // was not recorded) is not the newest.
        insert_in_time(&mut self.ended, at_ms, uuid);
        self.ended_count += 1;
        let owner = owner_key(self.jobs.get(&uuid).and_then(|j| j.owner.as_deref()));
        let ended = self.ended_by.entry(owner.to_string()).or_default();
        insert_in_time(&mut ended.queue, at_ms, uuid);
        ended.count += 1;
    }

    /// Forgets ended runs while more than `jobs.max_finished` are kept: each time the oldest of
    /// the owner holding the most (of those holding as many, the one whose run ended first),
    /// unless it is being revived (then none, this time: its progress may yet fail); how many.
    pub(super) fn forget_over_cap(&mut self) -> usize {
        let mut forgotten = 0;
        while self.ended_count > self.max_ended {
            let Some(most) = self.ended_by.values().map(|e| e.count).max() else {
                break;
            };
            // Of the owners holding the most, the one whose oldest ended run ended first.
            let mut victim: Option<(i64, Uuid, &str)> = None;
            for (owner, Ended { count, queue }) in &mut self.ended_by {
                if *count != most {
                    continue;
                }
                while let Some(&(at, uuid)) = queue.front()
                    && !ended_at(&self.jobs, &uuid, at)
                {
                    queue.pop_front();
                }
                if let Some(&(at, uuid)) = queue.front()
                    && victim.is_none_or(|(a, u, _)| (at, uuid) < (a, u))
                {
                    victim = Some((at, uuid, owner));
                }
            }
            let Some((at, uuid, owner)) = victim else {
                break;
            };
            if self.jobs.get(&uuid).is_some_and(|j| j.busy) {
                break;
            }
            let owner = owner.to_string();
            if let Some(ended) = self.ended_by.get_mut(&owner) {
                ended.queue.pop_front();
            }
            if self.forget(&uuid, at) {
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Whether the oldest ended run is being revived by a progress not yet recorded: it is not
    /// forgotten under it (its progress may yet fail, and it would then be expired still).
    pub(super) fn front_is_busy(&self) -> bool {
        self.ended
            .front()
            .and_then(|(_, uuid)| self.jobs.get(uuid))
            .is_some_and(|j| j.busy)
    }

    /// A finished or expired job is active again (a late commit began, or progress revived it).
    pub(super) fn revived(&mut self, owner: Option<&str>) {
        self.ended_count -= 1;
        self.one_less_ended(owner);
        self.active += 1;
        hold(&mut self.held, owner);
    }

    /// One ended run less for `owner`; an owner left with none is forgotten, with what its
    /// queue still held (entries of runs no longer ended).
    fn one_less_ended(&mut self, owner: Option<&str>) {
        let owner = owner_key(owner);
        if let Some(ended) = self.ended_by.get_mut(owner) {
            ended.count -= 1;
            if ended.count == 0 {
                self.ended_by.remove(owner);
            }
        }
    }

    /// Removes a job that ended at `at_ms`, if it still did.
    pub(super) fn forget(&mut self, uuid: &Uuid, at_ms: i64) -> bool {
        if !self.is_ended_at(uuid, at_ms) {
            return false;
        }
        if let Some(job) = self.jobs.remove(uuid) {
            uncharge(
                &mut self.bytes,
                &mut self.held_bytes,
                job.owner.as_deref(),
                job.weight(),
            );
            self.one_less_ended(job.owner.as_deref());
        }
        self.ended_count -= 1;
        self.del(uuid);
        true
    }

    /// Gives back the room of jobs forgotten since the table was last larger: a map keeps the
    /// capacity of the most jobs it ever held (about 210 bytes per job, mapped apart from the
    /// allocator's arenas once above 128 KiB, so giving it back lowers the resident memory),
    /// and the queue of ended runs likewise. Called by the tick once it has forgotten runs; the
    /// slack of 1 024 entries keeps a table of steady size from being rebuilt every tick.
    pub(super) fn shrink(&mut self) {
        if self.jobs.capacity() > 4 * self.jobs.len() + 1024 {
            self.jobs.shrink_to(2 * self.jobs.len());
        }
        if self.ended.capacity() > 4 * self.ended.len() + 1024 {
            self.ended.shrink_to(2 * self.ended.len());
        }
    }

    /// Drops entries of `ended` that match no job any more, once they are the majority.
    pub(super) fn tidy_ended(&mut self) {
        let jobs = &self.jobs;
        if self.ended.len() > 2 * self.ended_count + 1024 {
            self.ended.retain(|(at, uuid)| ended_at(jobs, uuid, *at));
        }
        for Ended { count, queue } in self.ended_by.values_mut() {
            if queue.len() > 2 * *count + 64 {
                queue.retain(|(at, uuid)| ended_at(jobs, uuid, *at));
            }
        }
    }
}

/// One owner's ended runs: how many, and their entries oldest first, where the one to forget
/// is found without a walk over the other owners' (entries of runs revived or forgotten since
/// are skipped, and let go once they are the majority).
#[derive(Debug, Default)]
pub(super) struct Ended {
    pub(super) count: usize,
    pub(super) queue: VecDeque<(i64, Uuid)>,
}

/// Puts (`at_ms`, `uuid`) into `queue`, kept in order of time, after those of the same time.
fn insert_in_time(queue: &mut VecDeque<(i64, Uuid)>, at_ms: i64, uuid: Uuid) {
    let at = queue.partition_point(|&(at, _)| at <= at_ms);
    queue.insert(at, (at_ms, uuid));
}

/// Whether the job `uuid` of `jobs` ended at `at_ms` (and was not revived, or ended again, since).
fn ended_at(jobs: &HashMap<Uuid, Box<Job>>, uuid: &Uuid, at_ms: i64) -> bool {
    jobs.get(uuid)
        .and_then(|j| j.state.ended_at())
        .is_some_and(|at| at == at_ms)
}

/// The key of `owner` in the per-owner counts of ended runs: its name, or `""` for runs of no
/// owner (no token's name is empty).
pub(super) fn owner_key(owner: Option<&str>) -> &str {
    owner.unwrap_or_default()
}

/// One more active job or register under way for `owner`.
pub(super) fn hold(held: &mut HashMap<String, usize>, owner: Option<&str>) {
    if let Some(owner) = owner {
        *held.entry(owner.to_string()).or_default() += 1;
    }
}

/// One less.
pub(super) fn release(held: &mut HashMap<String, usize>, owner: Option<&str>) {
    if let Some(owner) = owner
        && let Some(n) = held.get_mut(owner)
    {
        *n -= 1;
        if *n == 0 {
            held.remove(owner);
        }
    }
}

/// Counts `n` more bytes held, in all and by `owner`.
pub(super) fn charge(
    all: &mut usize,
    by: &mut HashMap<String, usize>,
    owner: Option<&str>,
    n: usize,
) {
    *all += n;
    if let Some(owner) = owner {
        *by.entry(owner.to_string()).or_default() += n;
    }
}

/// Counts `n` bytes less.
pub(super) fn uncharge(
    all: &mut usize,
    by: &mut HashMap<String, usize>,
    owner: Option<&str>,
    n: usize,
) {
    *all -= n;
    if let Some(owner) = owner
        && let Some(held) = by.get_mut(owner)
    {
        *held -= n;
        if *held == 0 {
            by.remove(owner);
        }
    }
}
