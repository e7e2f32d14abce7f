//! What the table tells without changing: which runs are running, counts, one run or a list
//! as a client may see them, what a commit is judged by.

use uuid::Uuid;

use super::{Counts, Job, Jobs, Sample, State};
use crate::state::schema::{FieldType, Measurement};
use crate::verdict::Threshold;

impl Jobs {
    /// `true` for running jobs, `false` for the ones that ended within the retention: those
    /// `caller` may act on (every one without tokens).
    pub fn is_running(&self, caller: Option<&str>) -> Vec<(Uuid, bool)> {
        let t = self.lock();
        t.jobs
            .values()
            .filter(|j| j.is_for(caller))
            .map(|j| (j.run.uuid, j.state.is_active()))
            .collect()
    }

    /// The schema of the running runs' next heartbeats: their fields, by the type of their
    /// values (one run's type, in no given order, where two differ), and their tags: a progress changes
    /// the fields at once, but InfluxDB holds them only once a tick wrote them, so a reading
    /// of InfluxDB's schema must not forget them.
    pub fn heartbeat_schema(&self) -> Measurement {
        let t = self.lock();
        let mut m = Measurement::default();
        for job in t.jobs.values().filter(|j| j.state.is_active()) {
            for (name, value) in job.fields.iter() {
                if !m.fields.contains_key(name.as_str()) {
                    m.fields.insert(name.to_string(), FieldType::of(value));
                }
            }
            // The run's tags are every heartbeat's tags: InfluxDB 2 and 3, which the gateway
            // cannot ask, or a dropped database, would otherwise have them forgotten.
            for (name, _) in &job.run.tags {
                if !m.tags.contains(name.as_str()) {
                    m.tags.insert(name.to_string());
                }
            }
        }
        m
    }

    /// Bytes the table holds, by [`Job::weight`]: what `jobs.max_table_bytes` bounds.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many jobs of the whole table are in each state.
    pub fn counts(&self) -> Counts {
        self.counts_for(None)
    }

    /// How many jobs `caller` may see (see [`Job::is_for`]; every job for `None`) are in each
    /// state.
    pub fn counts_for(&self, caller: Option<&str>) -> Counts {
        let t = self.lock();
        let mut c = Counts::default();
        for job in t.jobs.values().filter(|j| j.is_for(caller)) {
            match job.state {
                State::Running => c.running += 1,
                State::Committing { .. } => c.committing += 1,
                State::Finished { .. } => c.finished += 1,
                State::Expired { .. } => c.expired += 1,
            }
        }
        c
    }

    /// The owners of active runs (running or being committed) that `listed` (the clients'
    /// names) does not hold, each with how many such runs, sorted by name: runs of a token no
    /// longer configured, which no token can see, commit or end.
    pub fn active_owners_not_in(&self, listed: &[&str]) -> Vec<(String, usize)> {
        let t = self.lock();
        let mut owners: std::collections::BTreeMap<&str, usize> = Default::default();
        for job in t.jobs.values().filter(|j| j.state.is_active()) {
            if let Some(owner) = job.owner.as_deref().filter(|o| !listed.contains(o)) {
                *owners.entry(owner).or_default() += 1;
            }
        }
        owners
            .into_iter()
            .map(|(o, n)| (o.to_string(), n))
            .collect()
    }

    /// Whether run `uuid` exists and `caller` may act on it (see [`Job::is_for`]).
    pub fn is_for(&self, uuid: &Uuid, caller: Option<&str>) -> bool {
        self.lock().jobs.get(uuid).is_some_and(|j| j.is_for(caller))
    }

    /// Whether run `uuid` is finished (`None`: the table does not hold it).
    pub fn is_finished(&self, uuid: &Uuid) -> Option<bool> {
        self.lock()
            .jobs
            .get(uuid)
            .map(|j| matches!(j.state, State::Finished { .. }))
    }

    /// Run `uuid` as `caller` may see it (its own runs with a token), a copy.
    pub fn get_for(&self, uuid: &Uuid, caller: Option<&str>) -> Option<Job> {
        self.lock()
            .jobs
            .get(uuid)
            .filter(|j| j.is_for(caller))
            .map(|j| Job::clone(j))
    }

    /// What a commit of run `uuid` is judged by and charts: the register's checks and the
    /// progress samples.
    pub fn judging(&self, uuid: &Uuid) -> (Vec<Threshold>, Vec<Sample>) {
        self.lock()
            .jobs
            .get(uuid)
            .map(|j| (Vec::clone(&j.thresholds), j.samples.clone()))
            .unwrap_or_default()
    }

    /// Whether `name` is one of the tags of run `uuid`.
    pub fn has_tag(&self, uuid: &Uuid, name: &str) -> bool {
        self.lock()
            .jobs
            .get(uuid)
            .is_some_and(|j| j.run.tags.iter().any(|(k, _)| k == name))
    }

    /// Up to `limit` jobs of the whole table, newest first.
    #[cfg(test)]
    pub fn list(&self, limit: usize) -> Vec<Job> {
        self.list_for(limit, None)
    }

    /// Up to `limit` of the jobs `caller` may see (see [`Job::is_for`]; every job for
    /// `None`), newest first: a token's view of the state page.
    /// Under the lock only the newest `limit` are picked (linear in the table's size) and
    /// cloned (their parts shared, not copied: see [`Job`]); they are sorted after.
    pub fn list_for(&self, limit: usize, caller: Option<&str>) -> Vec<Job> {
        let newest_first = |j: &Job| (std::cmp::Reverse(j.run.started_ms), j.run.uuid);
        let mut jobs: Vec<Job> = {
            let t = self.lock();
            let mut mine: Vec<&Job> = t
                .jobs
                .values()
                .map(|j| &**j)
                .filter(|j| j.is_for(caller))
                .collect();
            if limit < mine.len() {
                mine.select_nth_unstable_by_key(limit, |j| newest_first(j));
                mine.truncate(limit);
            }
            mine.into_iter().cloned().collect()
        };
        jobs.sort_by_key(newest_first);
        jobs
    }
}
