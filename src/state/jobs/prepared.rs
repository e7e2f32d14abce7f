//! Changes of the job table prepared by a request and made only once its record is on disk: a
//! register's place (`Slot`, given back if the register is not recorded) and a progress's new
//! values (`PreparedProgress`, dropped unmade if not recorded). No I/O.

use super::*;

/// The job table a prepared change holds on to: borrowed by the request that made it, or
/// shared when another thread is to make the change (the one that writes the record).
#[derive(Clone)]
pub(super) enum Held<'a> {
    Borrowed(&'a Jobs),
    Shared(Arc<Jobs>),
}

impl std::ops::Deref for Held<'_> {
    type Target = Jobs;
    fn deref(&self) -> &Jobs {
        match self {
            Held::Borrowed(jobs) => jobs,
            Held::Shared(jobs) => jobs,
        }
    }
}

/// A place for one more running job, held while register writes its points.
pub struct Slot<'a> {
    pub(super) jobs: Held<'a>,
    pub(super) filled: bool,
    /// The number of the prepared change, once there is one.
    pub(super) prepared: Option<u64>,
    /// The prepared job's [`Job::weight`], counted in the table's bytes.
    pub(super) bytes: usize,
    /// Whose register it is: its place is counted as theirs.
    pub(super) owner: Option<String>,
    /// Bytes of the table its owner may hold at most.
    pub(super) owner_max_bytes: usize,
}

impl Slot<'_> {
    /// The same place, held on to through `jobs` (the table it was taken from), so that
    /// another thread may fill it or give it back.
    pub fn shared(mut self, jobs: Arc<Jobs>) -> Slot<'static> {
        debug_assert!(
            std::ptr::eq(&*self.jobs, &*jobs),
            "the table it was taken from"
        );
        let shared = Slot {
            jobs: Held::Shared(jobs),
            filled: self.filled,
            prepared: self.prepared.take(),
            bytes: std::mem::take(&mut self.bytes),
            owner: self.owner.take(),
            owner_max_bytes: self.owner_max_bytes,
        };
        // This one now holds nothing: its drop gives nothing back.
        self.filled = true;
        shared
    }

    /// The journal record that adds `job`; the job joins the table with [`Slot::fill`] once
    /// the record is on disk. Its bytes count against the table's from now on.
    ///
    /// Errors: [`Refusal::RunTooLarge`] when the job's heartbeat is longer than
    /// `bounds.max_run_bytes`, [`Refusal::TableFull`] when the table would hold more than
    /// `bounds.max_table_bytes`.
    pub fn prepare(&mut self, job: &Job, bounds: &Bounds) -> Result<Change, Refusal> {
        bounds.check_run(job)?;
        let weight = job.weight();
        let mut t = self.jobs.lock();
        if let Some(seq) = self.prepared.take() {
            t.preparing.remove(&seq);
        }
        let t = &mut *t;
        let owner = self.owner.as_deref();
        uncharge(
            &mut t.bytes,
            &mut t.held_bytes,
            owner,
            std::mem::take(&mut self.bytes),
        );
        if t.bytes + weight > bounds.max_table_bytes {
            return Err(Refusal::TableFull {
                limit: bounds.max_table_bytes,
            });
        }
        if let Some(name) = owner
            && t.held_bytes.get(name).copied().unwrap_or(0) + weight > self.owner_max_bytes
        {
            return Err(Refusal::OwnerTableFull {
                limit: self.owner_max_bytes,
            });
        }
        charge(&mut t.bytes, &mut t.held_bytes, owner, weight);
        self.bytes = weight;
        let change = t.prepare(job);
        self.prepared = Some(change.seq);
        Ok(change)
    }

    /// Adds the job, whose record is on disk. Its owner is the slot's.
    pub fn fill(mut self, mut job: Job) {
        let mut t = self.jobs.lock();
        t.reserved -= 1;
        job.owner = self.owner.take().map(Arc::from);
        if job.state.is_active() {
            t.active += 1;
        } else {
            release(&mut t.held, job.owner.as_deref());
        }
        if let Some(seq) = self.prepared.take() {
            t.preparing.remove(&seq);
        }
        let t = &mut *t;
        let owner = job.owner.as_deref();
        uncharge(
            &mut t.bytes,
            &mut t.held_bytes,
            owner,
            std::mem::take(&mut self.bytes),
        );
        charge(&mut t.bytes, &mut t.held_bytes, owner, job.weight());
        t.jobs.insert(job.run.uuid, Box::new(job));
        self.filled = true;
    }
}

impl Drop for Slot<'_> {
    /// Gives back what the slot held; whoever waits for its prepared change ([`Jobs::wait_applied`]) is woken (after [`Slot::fill`] too).
    fn drop(&mut self) {
        let mut guard = self.jobs.lock();
        let t = &mut *guard;
        if !self.filled {
            t.reserved -= 1;
            release(&mut t.held, self.owner.as_deref());
        }
        if let Some(seq) = self.prepared.take() {
            t.preparing.remove(&seq);
        }
        uncharge(
            &mut t.bytes,
            &mut t.held_bytes,
            self.owner.as_deref(),
            std::mem::take(&mut self.bytes),
        );
        drop(guard);
        self.jobs.settled.notify_all();
    }
}

/// A progress whose change is prepared and not yet on disk; see [`Jobs::prepare_progress`].
/// Dropped without [`PreparedProgress::applied`], it leaves the table as it was.
pub struct PreparedProgress<'a> {
    pub(super) jobs: Held<'a>,
    pub(super) uuid: Uuid,
    pub(super) owner: Option<Arc<str>>,
    /// The number of the prepared change.
    pub(super) seq: u64,
    /// The job as the change makes it; taken when applied.
    pub(super) job: Option<Job>,
    /// [`Job::weight`] before the change.
    pub(super) old: usize,
    /// Bytes held meanwhile beyond `old` (what the change adds).
    pub(super) extra: usize,
    /// The run was expired and runs again: it holds a place meanwhile.
    pub(super) revived: bool,
}

impl PreparedProgress<'_> {
    /// The same prepared change, holding on to `jobs` (the table it was prepared in) rather
    /// than borrowing it: to be made or given up by another thread (the one that writes its
    /// record).
    pub fn shared(mut self, jobs: Arc<Jobs>) -> PreparedProgress<'static> {
        debug_assert!(
            std::ptr::eq(&*self.jobs, &*jobs),
            "the table it was prepared in"
        );
        let shared = PreparedProgress {
            jobs: Held::Shared(jobs),
            uuid: self.uuid,
            owner: self.owner.take(),
            seq: self.seq,
            job: self.job.take(),
            old: self.old,
            extra: self.extra,
            revived: self.revived,
        };
        // This one now holds nothing: its drop gives nothing back.
        self.seq = 0;
        shared
    }

    /// The change is on disk: the job takes it.
    pub fn applied(mut self) {
        let changed = self.job.take();
        let jobs = self.jobs.clone();
        let mut guard = jobs.lock();
        let t = &mut *guard;
        self.settle(t);
        if let (Some(mut changed), Some(job)) = (changed, t.jobs.get_mut(&self.uuid)) {
            // Heartbeats counted meanwhile.
            changed.heartbeats = job.heartbeats;
            let new = changed.weight();
            **job = changed;
            let owner = self.owner.as_deref();
            uncharge(&mut t.bytes, &mut t.held_bytes, owner, self.old);
            charge(&mut t.bytes, &mut t.held_bytes, owner, new);
            if self.revived {
                t.revived(owner);
            }
        }
        drop(guard);
        self.jobs.settled.notify_all();
    }

    /// When the progress brings an expired run back: every field its next heartbeats carry
    /// (those it had, with the progress's); `None` for a run that was running.
    pub fn revived_fields(&self) -> Option<&[(CompactString, FieldValue)]> {
        if !self.revived {
            return None;
        }
        self.job.as_ref().map(|job| job.fields.as_slice())
    }

    /// Gives back what the preparation held, and the job's turn; once.
    pub(super) fn settle(&mut self, t: &mut Table) {
        if self.seq == 0 {
            return;
        }
        t.preparing.remove(&self.seq);
        self.seq = 0;
        let owner = self.owner.as_deref();
        if self.revived {
            t.reserved -= 1;
            release(&mut t.held, owner);
        }
        uncharge(&mut t.bytes, &mut t.held_bytes, owner, self.extra);
        if let Some(job) = t.jobs.get_mut(&self.uuid) {
            job.busy = false;
        }
    }
}

impl Drop for PreparedProgress<'_> {
    fn drop(&mut self) {
        if self.seq == 0 {
            return;
        }
        let jobs = self.jobs.clone();
        let mut t = jobs.lock();
        self.settle(&mut t);
        drop(t);
        jobs.settled.notify_all();
    }
}
