//! The run routes' use-cases: `register`, `progress` and `commit`. Each checks what it can
//! before it writes, prepares its change of the job table, has its points and that change
//! written as one log record, and makes the change once the record is on disk.

use std::time::Instant;

use super::*;
use crate::config::Acknowledge;
use crate::logtext::RUN_LINES;

/// A commit that has begun; if the use-case leaves early (an error or a panic), the job goes
/// back to what it was, so a run is never stuck in `Committing`.
pub(super) struct CommitGuard {
    pub(super) jobs: Arc<Jobs>,
    pub(super) uuid: Uuid,
    /// The number of the finishing change, once prepared.
    pub(super) prepared: Option<u64>,
    pub(super) done: bool,
}

impl CommitGuard {
    /// The commit's record is on disk: the run is finished.
    fn finish(mut self, now_ms: i64) {
        self.done = true;
        self.jobs
            .end_commit(&self.uuid, self.prepared, true, now_ms);
    }
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        if !self.done {
            self.jobs
                .end_commit(&self.uuid, self.prepared, false, now_ms());
        }
    }
}

impl Service {
    /// [`Service::register_answering`] without an answer to arm.
    #[cfg(test)]
    pub fn register(
        &self,
        record: Record,
        default_host: &str,
        quota: Option<Quota<'_>>,
        now_ms: i64,
    ) -> Result<Registered, Refused> {
        self.register_answering(record, default_host, quota, now_ms, None)
    }

    /// Starts a run: records its `started` event and first heartbeat with the new job, and adds
    /// it to the table. `default_host` is the run's host when the record names none (the
    /// client's address). `quota` names the client (a token's name) and how many runs it may
    /// have running; with `auth.tag_runs_with_token_name`, that name becomes the run's
    /// `token_name` tag, whatever the client sent under that name. With
    /// `delivery.acknowledge = "disk"`, `answer_early` arms the answer to the register as it
    /// will be, for the thread that writes its record to send once the run is in the table
    /// (see `answered`).
    pub fn register_answering(
        &self,
        mut record: Record,
        default_host: &str,
        quota: Option<Quota<'_>>,
        now_ms: i64,
        answer_early: Option<ArmEarly<'_, Registered>>,
    ) -> Result<Registered, Refused> {
        if self.rules.tag_token_name
            && let Some(q) = quota
        {
            if record
                .fields
                .iter()
                .any(|(k, _)| k == points::TOKEN_NAME_TAG)
            {
                return Err(Refused::FieldIsTokenTag);
            }
            record.tags.retain(|(k, _)| k != points::TOKEN_NAME_TAG);
            record
                .tags
                .push((points::TOKEN_NAME_TAG.to_string(), q.owner.to_string()));
        }
        if let Some(at_ms) = record.started_at_ms {
            self.schema
                .check_age(at_ms, now_ms)
                .map_err(Refused::OlderThanRetention)?;
        }
        let mut slot = self
            .jobs
            .reserve(self.rules.bounds.max_running, quota)
            .map_err(|r| Refused::of_owner(Uuid::nil(), r, quota))?;
        let run = Run {
            uuid: Uuid::new_v4(),
            host: record.host.as_deref().unwrap_or(default_host).into(),
            tags: record
                .tags
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            started_ms: record.started_at_ms.unwrap_or(now_ms),
        };
        let tags = record.tags.iter().map(|(k, _)| k.as_str());
        self.check_schema(points::HEARTBEAT, &record.fields, tags.clone())?;
        self.check_tags(&[points::EVENTS], tags)?;
        let points = points::register(&run, &record, now_ms);
        // Checked above for the order of the answers; checked again and claimed here in one
        // step, so a request racing with another type of a new field is refused.
        let claim = self.claim(&points)?;
        let lines = encode_batch(&points);
        let uuid = run.uuid;
        let mut job = Job::running(run, record.fields, now_ms);
        job.seen_mono_ms = self.jobs.mono_ms(self.clock.now());
        job.owner = quota.map(|q| q.owner.into());
        job.thresholds = crate::state::jobs::thresholds(record.thresholds);
        job.sample(now_ms);
        let change = slot
            .prepare(&job, &self.rules.bounds)
            .map_err(|r| Refused::of_owner(uuid, r, quota))?;
        // The table grows: the next snapshot must still fit in the room kept for it, or a
        // full disk could never be freed.
        self.keep_room()?;
        let mut registered = Registered {
            uuid,
            outcome: Outcome::Recorded,
        };
        let answer = self.arm(Acknowledge::Disk, answer_early, &registered);
        let slot = slot.shared(Arc::clone(&self.jobs));
        let seq = self
            .record_applying(
                &change,
                &request_unit(points.len(), &lines),
                share_of(quota),
                Box::new(move |ok| {
                    if ok {
                        slot.fill(job);
                    }
                }),
                answer,
            )
            .map_err(Refused::NotRecorded)?;
        self.learned(claim, &points);
        if RUN_LINES.allows(log::Level::Info, Instant::now()) {
            log::info!("run {uuid} registered");
        }
        registered.outcome = Outcome::Delivered;
        let stored = self.arm(Acknowledge::Influxdb, answer_early, &registered);
        registered.outcome = self.delivery.outcome_with(seq, stored);
        Ok(registered)
    }

    /// [`Service::progress_answering`] without an answer to arm.
    #[cfg(test)]
    pub fn progress(
        &self,
        uuid: Uuid,
        record: Record,
        caller: Option<Quota<'_>>,
        now_ms: i64,
    ) -> Result<(), Refused> {
        self.progress_answering(uuid, record, caller, now_ms, None)
    }

    /// Live progress: new field values for the following heartbeats. Writes no point itself.
    /// The change is prepared, recorded, and made once on disk; when the log cannot record it,
    /// the answer is an error and the run is as before (its fields, expiry clocks and state).
    ///
    /// `caller` is the client that sent it (`None` without tokens): a run registered with
    /// another token is unknown to it, and a run it revives takes one of its places.
    ///
    /// `answer_early` arms the answer for the thread that writes the record to send, once the
    /// change is made (see `answered`): a progress writes no point, so its answer is the same
    /// once on disk in either acknowledgement mode.
    pub fn progress_answering(
        &self,
        uuid: Uuid,
        record: Record,
        caller: Option<Quota<'_>>,
        now_ms: i64,
        answer_early: Option<ArmEarly<'_, ()>>,
    ) -> Result<(), Refused> {
        if !self.jobs.is_for(&uuid, caller.map(|q| q.owner)) {
            return Err(Refused::UnknownRun(uuid));
        }
        // Checked and claimed in one step, held until the change is on disk.
        let mut claimed = if self.check_schema {
            let mut claim = self.schema.claim();
            let fields = record.fields.iter().map(|(k, v)| (k.as_str(), v));
            claim
                .fields(points::HEARTBEAT, fields, std::iter::empty())
                .map_err(|conflict| self.heartbeat_refused(&uuid, conflict))?;
            Some(claim)
        } else {
            None
        };
        let fields = record.fields.clone();
        let mono_ms = self.jobs.mono_ms(self.clock.now());
        let (change, prepared) = self
            .jobs
            .prepare_progress(
                &uuid,
                record.fields,
                (now_ms, mono_ms),
                &self.rules.bounds,
                caller,
            )
            .map_err(|r| Refused::of_owner(uuid, r, caller))?;
        // An expired run comes back with the fields it had, which its next heartbeats carry
        // again: those the progress does not send are claimed too (a reading of InfluxDB's
        // schema may have let their types go while it did not beat). Asked of the prepared
        // change, which holds the run (no tick expires it meanwhile), not before: a run that
        // expired between the two would have come back unchecked.
        if let (Some(claim), Some(had)) = (claimed.as_mut(), prepared.revived_fields()) {
            let old = had
                .iter()
                .filter(|(k, _)| !fields.iter().any(|(n, _)| n == k))
                .map(|(k, v)| (k.as_str(), v));
            claim
                .fields(points::HEARTBEAT, old, std::iter::empty())
                .map_err(|conflict| self.heartbeat_refused(&uuid, conflict))?;
        }
        // Dropped on the way out (not recorded), `prepared` leaves the job as it was.
        self.keep_room()?;
        let answer = answer_early.and_then(|arm| arm(&()));
        let prepared = prepared.shared(Arc::clone(&self.jobs));
        self.record_applying(
            &change,
            &[],
            share_of(caller),
            Box::new(move |ok| {
                if ok {
                    prepared.applied();
                }
            }),
            answer,
        )
        .map_err(Refused::NotRecorded)?;
        match claimed {
            Some(claim) => claim.written(),
            None => self.schema.learn_fields(points::HEARTBEAT, &fields),
        }
        Ok(())
    }

    /// The refusal of a progress whose heartbeat fields conflict with the schema: a field
    /// named like one of the run's own tags is the run's refusal, as without a schema.
    fn heartbeat_refused(&self, uuid: &Uuid, conflict: Conflict) -> Refused {
        match conflict {
            Conflict::TagAndField { ref name, .. } if self.jobs.has_tag(uuid, name) => {
                Refused::FieldIsTag
            }
            conflict => self.schema_refused(conflict),
        }
    }

    /// [`Service::commit_answering`] without an answer to arm.
    #[cfg(test)]
    pub fn commit(
        &self,
        commit: Commit,
        caller: Option<Quota<'_>>,
        now_ms: i64,
    ) -> Result<Committed, Refused> {
        self.commit_answering(commit, caller, now_ms, None)
    }

    /// Ends a run with its result: records the result, per-endpoint and `finished` points with
    /// the run's end, and marks the run finished. If the record cannot be written, the run is
    /// as it was.
    ///
    /// `caller` is the client that sent it (`None` without tokens): a run registered with
    /// another token is unknown to it; the commit's record counts against its share of the log.
    /// With `delivery.acknowledge = "disk"`, `answer_early` arms the answer to the commit as it
    /// will be, for the thread that writes its record to send once the run is finished in the
    /// table and its result counts (see `answered`).
    pub fn commit_answering(
        &self,
        mut commit: Commit,
        caller: Option<Quota<'_>>,
        now_ms: i64,
        answer_early: Option<ArmEarly<'_, Committed>>,
    ) -> Result<Committed, Refused> {
        let share = share_of(caller);
        let caller = caller.map(|q| q.owner);
        let uuid = commit.uuid;
        // The commit's points are stamped with its startedAt.
        if let Some(at_ms) = commit.record.started_at_ms {
            self.schema
                .check_age(at_ms, now_ms)
                .map_err(Refused::OlderThanRetention)?;
        }
        let mut run = self
            .jobs
            .begin_commit(&uuid, caller)
            .map_err(|r| Refused::of(uuid, r))?;
        let mut guard = CommitGuard {
            jobs: Arc::clone(&self.jobs),
            uuid,
            prepared: None,
            done: false,
        };
        // The run's tags are the register's and the commit's; the commit's win, except the
        // tag the gateway sets.
        for (k, v) in &commit.record.tags {
            if self.rules.tag_token_name && k == points::TOKEN_NAME_TAG {
                continue;
            }
            match run.tags.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.as_str().into(),
                None => run.tags.push((k.as_str().into(), v.as_str().into())),
            }
        }
        // A field named like one of the run's tags would be left off the result: refused, as
        // in a progress.
        if let Some((name, _)) = commit
            .record
            .fields
            .iter()
            .find(|(k, _)| run.tags.iter().any(|(t, _)| t == k))
        {
            return Err(
                if name == points::TOKEN_NAME_TAG && self.rules.tag_token_name {
                    Refused::FieldIsTokenTag
                } else {
                    Refused::FieldIsTag
                },
            );
        }
        let tags = run.tags.iter().map(|(k, _)| k.as_str());
        self.check_schema(points::RESULT, &commit.record.fields, tags.clone())?;
        self.check_tags(&[points::REQUEST_STATS, points::EVENTS], tags)?;
        let mut claim = self.schema.claim();
        let left_out = match commit.stats.as_mut() {
            Some(stats) if self.check_schema => self.leave_out_conflicts(stats, &mut claim),
            _ => 0,
        };
        let rows_sent = commit.stats.as_ref().map_or(0, |s| s.rows_sent);
        let (thresholds, samples) = self.jobs.judging(&uuid);
        let result = self.judge(judging::Judged {
            run: &run,
            owner: caller,
            now_ms,
            stats: commit.stats.as_ref(),
            thresholds: &thresholds,
            samples,
        });
        // The stats move into the points: a commit of many rows holds its members once.
        let mut points = points::commit(&run, &commit.record, commit.stats.take(), now_ms);
        let time = commit.record.started_at_ms.unwrap_or(now_ms);
        points.extend(points::verdict(&run, &result.verdict, time));
        let claim = match self.check_schema {
            true => {
                claim
                    .points(&points)
                    .map_err(|conflict| self.schema_refused(conflict))?;
                Some(claim)
            }
            false => None,
        };
        let lines = encode_batch(&points);
        let mut change = self
            .jobs
            .prepare_finish(&uuid, now_ms)
            .ok_or(Refused::CommitInProgress(uuid))?;
        guard.prepared = Some(change.seq);
        // Kept before the record is written, made to count once it is on disk: a baseline is
        // always a run whose commit was acknowledged (see `state::results`).
        let not_kept = match self.results.save(&result) {
            Ok(bytes) => {
                // The record carries the result: it is durable with the record, and the file
                // is synced before a snapshot lets the record go (see `state::results`).
                crate::state::jobs::format::encode_result(&mut change.bytes, change.seq, &bytes);
                None
            }
            Err(e) => {
                self.results.errors.error(&format!(
                    "cannot keep the result of run {uuid} in storage.dir/results: {e}; its commit is recorded, without a report, and it is no later run's baseline"
                ));
                Some(e.to_string())
            }
        };
        // The rows InfluxDB holds: a row left with nothing to record is not a point.
        let rows = points
            .iter()
            .filter(|p| p.measurement() == points::REQUEST_STATS)
            .count();
        let mut committed = Committed {
            uuid,
            points: points.len(),
            rows,
            rows_sent,
            left_out,
            outcome: Outcome::Recorded,
            verdict: result.verdict,
            not_kept,
        };
        let answer = self.arm(Acknowledge::Disk, answer_early, &committed);
        // Made once the record is on disk, given up if it is not: the run finished (or put
        // back as it was), its result counted or let go.
        let kept = committed.not_kept.is_none();
        let results = Arc::clone(&self.results);
        let apply = move |ok: bool| {
            if ok {
                guard.finish(now_ms);
                if kept {
                    results.mark_committed(&uuid);
                }
            } else if kept {
                results.forget(&uuid);
            }
        };
        let seq = self
            .record_applying(
                &change,
                &request_unit(points.len(), &lines),
                share,
                Box::new(apply),
                answer,
            )
            .map_err(Refused::NotRecorded)?;
        if kept {
            // The bound on results is kept here, not where the answer goes: it may write.
            self.results.prune_after(&uuid);
        }
        self.learned(claim, &points);
        if RUN_LINES.allows(log::Level::Info, Instant::now()) {
            log::info!(
                "run {uuid} committed; verdict: {}",
                crate::logtext::escape(&committed.verdict.summary(), 300)
            );
        }
        committed.outcome = Outcome::Delivered;
        let stored = self.arm(Acknowledge::Influxdb, answer_early, &committed);
        committed.outcome = self.delivery.outcome_with(seq, stored);
        Ok(committed)
    }
}
