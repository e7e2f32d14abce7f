//! The job table in-process: reservations and quotas, commit states, progress and revival,
//! the tick (heartbeats, expiry, forgetting), the bytes it holds, and what a snapshot covers.

use super::*;

/// Bounds no test job reaches.
pub(crate) const BOUNDS: Bounds = Bounds {
    max_running: 1 << 20,
    max_fields: 64,
    max_run_bytes: 1 << 20,
    max_table_bytes: 1 << 30,
};

/// Ages with no progress timeout.
fn ages(max_age_ms: i64, retention_ms: i64) -> Ages {
    Ages {
        max_age_ms,
        progress_timeout_ms: i64::MAX,
        retention_ms,
    }
}

pub(crate) fn job(n: u128, now_ms: i64) -> Job {
    job_with(n, now_ms, vec![], vec![])
}

pub(crate) fn job_with(
    n: u128,
    now_ms: i64,
    tags: Vec<(String, String)>,
    fields: Vec<(String, FieldValue)>,
) -> Job {
    let run = Run {
        uuid: Uuid::from_u128(n),
        host: "h".into(),
        tags: tags
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        started_ms: now_ms,
    };
    Job::running(run, fields, now_ms)
}

/// Ends a commit begun with `begin_commit`, as recorded at `at_ms`.
pub(crate) fn finish(jobs: &Jobs, id: &Uuid, at_ms: i64) {
    let change = jobs.prepare_finish(id, at_ms).unwrap();
    jobs.end_commit(id, Some(change.seq), true, at_ms);
}

/// The heartbeats of a tick (the runs), and the number of its lines.
fn beats(t: &Tick) -> (Vec<Uuid>, usize) {
    let beats = t.units.iter().filter(|u| u.beat).map(|u| u.run).collect();
    (beats, t.lines.lines().count())
}

pub(crate) type Row = (Uuid, &'static str, Vec<(CompactString, FieldValue)>);

/// The table as (uuid, state, fields) rows, sorted, to compare two tables.
pub(crate) fn rows(jobs: &Jobs) -> Vec<Row> {
    let mut rows: Vec<_> = jobs
        .list(usize::MAX)
        .into_iter()
        .map(|j| (j.run.uuid, j.state.as_str(), Vec::clone(&j.fields)))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn max_running_counts_reservations() {
    let jobs = Jobs::new(1000);
    let a = jobs.reserve(2, None).unwrap();
    let b = jobs.reserve(2, None).unwrap();
    assert!(
        jobs.reserve(2, None).is_err(),
        "two reserved slots fill max_running = 2"
    );
    drop(b);
    a.fill(job(1, 0));
    assert!(
        jobs.reserve(2, None).is_ok(),
        "a dropped slot is free again"
    );
    jobs.reserve(2, None).unwrap().fill(job(2, 0));
    assert!(jobs.reserve(2, None).is_err());
    jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
    finish(&jobs, &Uuid::from_u128(1), 5);
    assert!(
        jobs.reserve(2, None).is_ok(),
        "a finished job frees its slot"
    );
}

#[test]
fn commit_states() {
    let jobs = Jobs::new(1000);
    let id = Uuid::from_u128(1);
    jobs.reserve(10, None).unwrap().fill(job(1, 0));
    assert_eq!(
        jobs.begin_commit(&Uuid::from_u128(9), None),
        Err(Refusal::Unknown)
    );
    jobs.begin_commit(&id, None).unwrap();
    assert_eq!(jobs.begin_commit(&id, None), Err(Refusal::InProgress));
    jobs.end_commit(&id, None, false, 1);
    assert_eq!(
        jobs.is_running(None),
        vec![(id, true)],
        "a failed commit leaves the job running"
    );
    jobs.begin_commit(&id, None).unwrap();
    finish(&jobs, &id, 7);
    assert_eq!(
        jobs.begin_commit(&id, None),
        Err(Refusal::Finished { at_ms: 7 })
    );
    assert_eq!(jobs.is_running(None), vec![(id, false)]);
}

#[test]
fn progress_updates_fields_and_revives_expired_runs() {
    let jobs = Jobs::new(1000);
    let id = Uuid::from_u128(1);
    let j = job_with(
        1,
        0,
        vec![("mode".into(), "single".into())],
        vec![
            ("clients".into(), FieldValue::Float(1.0)),
            ("rps".into(), FieldValue::Float(0.0)),
        ],
    );
    jobs.reserve(10, None).unwrap().fill(j);
    let update = vec![
        ("clients".into(), FieldValue::Float(5.0)),
        ("new".into(), FieldValue::Bool(true)),
    ];
    jobs.progress(&id, update, 50, &BOUNDS, None).unwrap();
    let fields = Vec::clone(&jobs.list(1)[0].fields);
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
        jobs.progress(
            &id,
            vec![("mode".into(), FieldValue::Float(1.0))],
            60,
            &BOUNDS,
            None
        ),
        Err(Refusal::IsTag)
    );
    assert_eq!(
        jobs.progress(
            &id,
            vec![("x".into(), FieldValue::Float(1.0))],
            60,
            &Bounds {
                max_fields: 3,
                ..BOUNDS
            },
            None
        ),
        Err(Refusal::TooManyFields(3))
    );
    assert_eq!(
        jobs.progress(&Uuid::from_u128(9), vec![], 60, &BOUNDS, None),
        Err(Refusal::Unknown)
    );
    let t = jobs.tick((2000, 2000), &ages(1000, 10_000));
    assert_eq!(t.expired, 1);
    jobs.progress(&id, vec![], 2100, &BOUNDS, None).unwrap();
    assert_eq!(jobs.counts().running, 1, "progress revives an expired run");
    assert!(jobs.reserve(1, None).is_err());
    jobs.begin_commit(&id, None).unwrap();
    finish(&jobs, &id, 2200);
    assert_eq!(
        jobs.progress(&id, vec![], 2300, &BOUNDS, None),
        Err(Refusal::Finished { at_ms: 2200 })
    );
}

#[test]
fn tick_beats_expires_and_forgets() {
    let jobs = Jobs::new(1000);
    jobs.reserve(10, None).unwrap().fill(job(1, 0));
    jobs.reserve(10, None).unwrap().fill(job(2, 500));
    let t = jobs.tick((1000, 1000), &ages(1000, 300));
    let (beaten, lines) = beats(&t);
    assert_eq!(
        (t.expired, beaten.len(), lines, t.units.len()),
        (1, 1, 2, 2)
    );
    assert_eq!(beaten, vec![Uuid::from_u128(2)]);
    assert!(t.lines.contains("event=expired"));
    assert!(
        !t.change.bytes.is_empty(),
        "the expiry is a change of the table"
    );
    jobs.count_beats(&beaten);
    assert_eq!(
        jobs.counts(),
        Counts {
            running: 1,
            expired: 1,
            ..Counts::default()
        }
    );
    // The expired run can still be committed.
    jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
    finish(&jobs, &Uuid::from_u128(1), 1100);
    let t = jobs.tick((1200, 1200), &ages(10_000, 300));
    assert_eq!((t.expired, t.removed, beats(&t).0.len()), (0, 0, 1));
    let t = jobs.tick((1400, 1400), &ages(10_000, 300));
    assert_eq!(
        t.removed, 1,
        "finished at 1100, gone after 300 ms of retention"
    );
    assert_eq!(jobs.list(10)[0].heartbeats, 1);
    assert!(jobs.reserve(1, None).is_err(), "one job is still running");
}

#[test]
fn ended_runs_beyond_max_finished_are_forgotten_oldest_first() {
    let jobs = Jobs::new(2);
    for n in 1..=5 {
        jobs.reserve(10, None).unwrap().fill(job(n, n as i64));
        jobs.begin_commit(&Uuid::from_u128(n), None).unwrap();
        finish(&jobs, &Uuid::from_u128(n), 100 + n as i64);
    }
    let kept: Vec<Uuid> = rows(&jobs).iter().map(|r| r.0).collect();
    assert_eq!(kept, [Uuid::from_u128(4), Uuid::from_u128(5)]);
    assert_eq!(
        jobs.begin_commit(&Uuid::from_u128(1), None),
        Err(Refusal::Unknown)
    );
    let finished = &jobs.list(1)[0];
    assert!(
        finished.fields.is_empty() && finished.run.tags.is_empty(),
        "a finished run keeps only what the state page shows"
    );
    // A revived run is no longer ended; its old entry is skipped, not used to forget it.
    jobs.reserve(10, None).unwrap().fill(job(6, 6));
    jobs.tick((10_000, 10_000), &ages(1000, 1_000_000));
    assert_eq!(jobs.counts().expired, 1);
    assert_eq!(
        jobs.counts().finished,
        1,
        "the expired run pushed out a finished one"
    );
    jobs.progress(&Uuid::from_u128(6), vec![], 10_001, &BOUNDS, None)
        .unwrap();
    jobs.reserve(10, None).unwrap().fill(job(7, 7));
    jobs.begin_commit(&Uuid::from_u128(7), None).unwrap();
    finish(&jobs, &Uuid::from_u128(7), 10_002);
    assert_eq!(
        jobs.counts(),
        Counts {
            running: 1,
            finished: 2,
            ..Counts::default()
        }
    );
    // The revived run left the per-owner counts of ended runs, as it left the count.
    assert_eq!(ended_counted(&jobs), 2);
    // The cap holds across a restart too.
    let (snapshot, _) = jobs.snapshot();
    let (small, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 1).unwrap();
    assert_eq!(small.counts().finished, 1);
    assert_eq!(small.counts().running, 1);
}

/// The ended runs the per-owner counts hold, all owners together.
fn ended_counted(jobs: &Jobs) -> usize {
    jobs.lock().ended_by.values().map(|e| e.count).sum()
}

#[test]
fn past_max_finished_the_owner_holding_the_most_ended_runs_loses_its_oldest() {
    let jobs = Jobs::new(3);
    let quota = |owner| Quota {
        owner,
        max_running: 100,
        max_bytes: usize::MAX,
        max_spool_bytes: 0,
    };
    let ended = |n: u128, owner, at_ms: i64| {
        jobs.reserve(10, Some(quota(owner)))
            .unwrap()
            .fill(job(n, 0));
        jobs.begin_commit(&Uuid::from_u128(n), None).unwrap();
        finish(&jobs, &Uuid::from_u128(n), at_ms);
    };
    // Team-b's run ends first, then team-a's many: team-a's own oldest go, team-b's stays.
    ended(1, "team-b", 10);
    for n in 2..=6 {
        ended(n, "team-a", 10 + n as i64);
    }
    let kept: Vec<Uuid> = rows(&jobs).iter().map(|r| r.0).collect();
    assert_eq!(
        kept,
        [Uuid::from_u128(1), Uuid::from_u128(5), Uuid::from_u128(6)]
    );
    assert_eq!(jobs.lock().ended_by["team-b"].count, 1);
    assert_eq!(jobs.lock().ended_by["team-a"].count, 2);
    // Owners holding as many: the one whose run ended first loses it (team-b's own run
    // pushes out its older one).
    ended(7, "team-b", 20);
    let kept: Vec<Uuid> = rows(&jobs).iter().map(|r| r.0).collect();
    assert_eq!(
        kept,
        [Uuid::from_u128(5), Uuid::from_u128(6), Uuid::from_u128(7)]
    );
    // Runs of no owner count as one more owner.
    for n in 8..=9 {
        jobs.reserve(10, None).unwrap().fill(job(n, 0));
        jobs.begin_commit(&Uuid::from_u128(n), None).unwrap();
        finish(&jobs, &Uuid::from_u128(n), 30 + n as i64);
    }
    assert_eq!(jobs.counts().finished, 3);
    assert_eq!(ended_counted(&jobs), 3);
    // A restart counts them again and keeps the rule.
    let big = Jobs::new(10);
    for (n, owner) in [(1, "team-b"), (2, "team-a"), (3, "team-a"), (4, "team-a")] {
        big.reserve(10, Some(quota(owner))).unwrap().fill(job(n, 0));
        big.begin_commit(&Uuid::from_u128(n), None).unwrap();
        finish(&big, &Uuid::from_u128(n), n as i64);
    }
    let (snapshot, _) = big.snapshot();
    let (small, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 2).unwrap();
    let kept: Vec<Uuid> = rows(&small).iter().map(|r| r.0).collect();
    assert_eq!(kept, [Uuid::from_u128(1), Uuid::from_u128(4)]);
    assert_eq!(small.lock().ended_by["team-a"].count, 1);
}

#[test]
fn forgotten_runs_give_back_the_tables_room() {
    let jobs = Jobs::new(100_000);
    for n in 1..=20_000 {
        jobs.reserve(100_000, None).unwrap().fill(job(n, 0));
        jobs.begin_commit(&Uuid::from_u128(n), None).unwrap();
        finish(&jobs, &Uuid::from_u128(n), 0);
    }
    // Then the load goes on at a small rate: one run at a time.
    jobs.reserve(100_000, None).unwrap().fill(job(20_001, 0));
    let t = jobs.tick((1000, 1000), &ages(i64::MAX, 500));
    assert_eq!(t.removed, 20_000);
    let t = jobs.lock();
    assert_eq!(t.jobs.len(), 1);
    assert!(
        t.jobs.capacity() <= 4 * t.jobs.len() + 1024,
        "the map keeps room for {} jobs once 20 000 are forgotten",
        t.jobs.capacity()
    );
    assert!(
        t.ended.capacity() <= 4 * t.ended.len() + 1024,
        "the queue of ended runs keeps room for {}",
        t.ended.capacity()
    );
}

#[test]
fn entries_of_revived_runs_do_not_pile_up() {
    let jobs = Jobs::new(10);
    let id = Uuid::from_u128(1);
    jobs.reserve(10, None).unwrap().fill(job(1, 0));
    // A run of the same owner that stays finished keeps the owner's queue of ended runs.
    jobs.reserve(10, None).unwrap().fill(job(2, 0));
    jobs.begin_commit(&Uuid::from_u128(2), None).unwrap();
    finish(&jobs, &Uuid::from_u128(2), 1);
    // Expired by a tick, revived by progress, again and again: each round leaves an entry
    // in `ended` (and in its owner's queue) that no longer matches the job.
    for round in 1..=5000 {
        let t = jobs.tick((round * 10, round * 10), &ages(5, i64::MAX));
        assert_eq!(t.expired, 1);
        jobs.progress(&id, vec![], round * 10, &BOUNDS, None)
            .unwrap();
    }
    let t = jobs.lock();
    assert!(
        t.ended.len() <= 2 * t.ended_count + 1024,
        "{}",
        t.ended.len()
    );
    let queued: usize = t.ended_by.values().map(|e| e.queue.len()).sum();
    assert!(queued <= 2 * t.ended_count + 64, "{queued}");
    assert_eq!(t.ended_count, 1);
    assert_eq!(t.ended_by[""].count, 1);
    assert_eq!(t.active, 1);
}

#[test]
fn a_tick_has_one_line_per_running_job_and_says_where_each_ends() {
    let jobs = Jobs::new(10);
    for n in 0..2500 {
        jobs.reserve(10_000, None).unwrap().fill(job(n, 0));
    }
    let t = jobs.tick((1000, 1000), &ages(10_000, 10_000));
    let (mut beaten, lines) = beats(&t);
    assert_eq!(lines, 2500);
    beaten.sort();
    beaten.dedup();
    assert_eq!(beaten.len(), 2500, "every running job once");
    let mut start = 0;
    for unit in &t.units {
        let line = &t.lines[start..unit.end];
        assert!(
            line.ends_with('\n') && line.contains(&unit.run.to_string()),
            "{line}"
        );
        start = unit.end;
    }
    assert_eq!(start, t.lines.len());
    let empty = Jobs::new(10).tick((0, 0), &ages(1, 1));
    assert!(empty.units.is_empty() && empty.lines.is_empty());
}

#[test]
fn a_snapshot_covers_only_the_changes_before_one_still_prepared() {
    let jobs = Jobs::new(10);
    jobs.reserve(10, None).unwrap().fill(job(1, 0));
    jobs.reserve(10, None).unwrap().fill(job(2, 0));
    // A register prepared (its record not yet on disk): the run is not in the table yet.
    let mut slot = jobs.reserve(10, None).unwrap();
    let three = job(3, 0);
    let prepared = slot.prepare(&three, &BOUNDS).unwrap();
    assert!(!prepared.bytes.is_empty());
    // A commit prepared too, then a change made at once after both.
    jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
    let finishing = jobs.prepare_finish(&Uuid::from_u128(1), 50).unwrap();
    let progress = jobs
        .progress(
            &Uuid::from_u128(2),
            vec![("x".into(), FieldValue::Float(1.0))],
            60,
            &BOUNDS,
            None,
        )
        .unwrap();
    assert!(progress.seq > finishing.seq && finishing.seq > prepared.seq);
    let (bytes, covers) = jobs.snapshot();
    assert_eq!(covers, prepared.seq - 1, "below the oldest prepared change");
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        !text.contains(&three.run.uuid.to_string()),
        "not in the table yet"
    );
    // Restored with the prepared changes after it (their records made it to disk), in any
    // order: the table has all three changes.
    let log: Vec<u8> = [
        finishing.bytes.as_slice(),
        progress.bytes.as_slice(),
        prepared.bytes.as_slice(),
    ]
    .concat();
    let (restored, _) = crate::state::journal::restore(Some(text.as_bytes()), &log, 10).unwrap();
    assert_eq!(restored.counts().running, 2);
    assert_eq!(restored.counts().finished, 1);
    slot.fill(three);
    jobs.end_commit(&Uuid::from_u128(1), Some(finishing.seq), true, 50);
    assert_eq!(jobs.snapshot().1, progress.seq, "nothing prepared any more");
}

/// Whether run `n` of a snapshot's `jobs.json` is saved with field `name` a float.
fn saves_float(snapshot: &[u8], n: u128, name: &str) -> bool {
    let (restored, _) = crate::state::journal::restore(Some(snapshot), b"", 10).unwrap();
    restored
        .get_for(&Uuid::from_u128(n), None)
        .is_some_and(|j| {
            j.fields
                .iter()
                .any(|(k, v)| k == name && matches!(v, FieldValue::Float(_)))
        })
}

#[test]
fn a_snapshot_is_encoded_after_the_lock_is_let_go_and_holds_the_table_as_taken() {
    let jobs = Jobs::new(10);
    // A large run (60 KiB of fields) and a run being committed (saved as it was before).
    let fields: Vec<(String, FieldValue)> = (0..50)
        .map(|i| (format!("f{i}"), FieldValue::Str("x".repeat(1200))))
        .collect();
    let big = Uuid::from_u128(1);
    jobs.reserve(10, None)
        .unwrap()
        .fill(job_with(1, 0, vec![], fields));
    jobs.reserve(10, None).unwrap().fill(job(2, 0));
    jobs.begin_commit(&Uuid::from_u128(2), None).unwrap();
    let taken = jobs.snapshot();
    let during = jobs.snapshot_by(|covers, saved| {
        // The table is free while the snapshot is encoded (a lock held across the encoding
        // fails here, on this thread, rather than waiting) ...
        assert!(
            jobs.table.try_lock().is_ok(),
            "the table is locked while its snapshot is encoded"
        );
        // ... so another thread changes it meanwhile, without waiting for the encoding: the
        // large run's fields replaced, the commit ended, a run registered.
        std::thread::scope(|s| {
            s.spawn(|| {
                let f0 = vec![("f0".into(), FieldValue::Float(1.0))];
                jobs.progress(&big, f0, 10, &BOUNDS, None).unwrap();
                finish(&jobs, &Uuid::from_u128(2), 20);
                let mut slot = jobs.reserve(10, None).unwrap();
                slot.prepare(&job(3, 30), &BOUNDS).unwrap();
                slot.fill(job(3, 30));
            })
            .join()
            .unwrap();
        });
        super::format::encode_snapshot(covers, saved.iter(), &Known::new())
    });
    assert!(
        during == taken,
        "the table as it was taken, and the changes it covers"
    );
    assert!(!saves_float(&during.0, 1, "f0"));
    let after = jobs.snapshot();
    assert!(saves_float(&after.0, 1, "f0"), "the change made meanwhile");
    assert!(after.1 > taken.1 && jobs.counts().finished == 1 && jobs.counts().running == 2);
}

#[test]
fn tick_writes_each_running_job_once_with_its_fields() {
    let jobs = Jobs::new(10);
    jobs.reserve(10, None).unwrap().fill(job_with(
        1,
        0,
        vec![],
        vec![("clients".into(), FieldValue::Float(4.0))],
    ));
    jobs.reserve(10, None).unwrap().fill(job(2, 0));
    jobs.progress(
        &Uuid::from_u128(1),
        vec![("clients".into(), FieldValue::Float(8.0))],
        500,
        &BOUNDS,
        None,
    )
    .unwrap();
    let t = jobs.tick((1500, 1500), &ages(10_000, 10_000));
    let one = Uuid::from_u128(1);
    let two = Uuid::from_u128(2);
    let mut lines: Vec<&str> = t.lines.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("load_testing,host=h,uuid={one} clients=8,elapsed=1.5 1500"),
            format!("load_testing,host=h,uuid={two} elapsed=1.5 1500"),
        ]
    );
    assert_eq!(t.change.seq, 0, "heartbeats alone change nothing on disk");
}

/// The table's count of bytes is the weight of its jobs (with no register under way).
fn assert_bytes_add_up(jobs: &Jobs) {
    let t = jobs.lock();
    let sum: usize = t.jobs.values().map(|j| j.weight()).sum();
    assert_eq!(t.bytes, sum);
}

fn text(n: usize) -> FieldValue {
    FieldValue::Str("x".repeat(n))
}

#[test]
fn a_run_whose_heartbeat_is_over_max_run_bytes_is_refused_and_holds_nothing() {
    let jobs = Jobs::new(10);
    let bounds = Bounds {
        max_run_bytes: 4096,
        ..BOUNDS
    };
    let big = job_with(1, 0, vec![], vec![("note".into(), text(5000))]);
    let mut slot = jobs.reserve(10, None).unwrap();
    match slot.prepare(&big, &bounds) {
        Err(Refusal::RunTooLarge { bytes, limit: 4096 }) => assert!(bytes > 5000),
        other => panic!("{other:?}"),
    }
    drop(slot);
    assert_eq!(jobs.lock().bytes, 0);
    assert_eq!(jobs.lock().reserved, 0);

    // A small run fits; progress that makes it too large is refused and changes nothing.
    let small = job_with(2, 0, vec![], vec![("note".into(), text(10))]);
    let mut slot = jobs.reserve(10, None).unwrap();
    slot.prepare(&small, &bounds).unwrap();
    slot.fill(small);
    let id = Uuid::from_u128(2);
    assert!(matches!(
        jobs.progress(&id, vec![("note".into(), text(5000))], 5, &bounds, None),
        Err(Refusal::RunTooLarge { limit: 4096, .. })
    ));
    assert_eq!(
        rows(&jobs)[0].2,
        vec![(CompactString::from("note"), text(10))]
    );
    assert_bytes_add_up(&jobs);
    jobs.progress(&id, vec![("note".into(), text(3000))], 5, &bounds, None)
        .unwrap();
    assert_bytes_add_up(&jobs);
}

#[test]
fn the_table_holds_max_table_bytes_at_most_and_frees_what_runs_let_go() {
    let jobs = Jobs::new(10);
    let one = job_with(1, 0, vec![], vec![("note".into(), text(3000))]);
    let bounds = Bounds {
        max_table_bytes: one.weight() * 2 + 100,
        ..BOUNDS
    };
    let register = |n: u128| {
        let job = job_with(n, 0, vec![], vec![("note".into(), text(3000))]);
        let mut slot = jobs.reserve(10, None).unwrap();
        let prepared = slot.prepare(&job, &bounds).map(|_| ());
        if prepared.is_ok() {
            slot.fill(job);
        }
        prepared
    };
    register(1).unwrap();
    // A register under way holds its bytes: a second one finds the room taken.
    let mut held = jobs.reserve(10, None).unwrap();
    held.prepare(
        &job_with(2, 0, vec![], vec![("note".into(), text(3000))]),
        &bounds,
    )
    .unwrap();
    assert_eq!(
        register(3),
        Err(Refusal::TableFull {
            limit: bounds.max_table_bytes
        })
    );
    drop(held);
    register(2).unwrap();
    assert_eq!(
        register(3).unwrap_err(),
        Refusal::TableFull {
            limit: bounds.max_table_bytes
        }
    );
    assert_bytes_add_up(&jobs);

    // Progress that grows a run past the budget is refused; progress that shrinks it is not.
    let id = Uuid::from_u128(1);
    assert_eq!(
        jobs.progress(&id, vec![("more".into(), text(500))], 5, &bounds, None),
        Err(Refusal::TableFull {
            limit: bounds.max_table_bytes
        })
    );
    jobs.progress(&id, vec![("note".into(), text(10))], 5, &bounds, None)
        .unwrap();
    assert_bytes_add_up(&jobs);

    // A finished run keeps only what the state page shows; a forgotten one, nothing.
    jobs.begin_commit(&Uuid::from_u128(2), None).unwrap();
    finish(&jobs, &Uuid::from_u128(2), 10);
    assert_bytes_add_up(&jobs);
    register(3).unwrap();
    // A restored table counts its bytes too.
    let (snapshot, _) = jobs.snapshot();
    let (restored, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 10).unwrap();
    assert_bytes_add_up(&restored);
    assert_eq!(restored.lock().bytes, jobs.lock().bytes);
    jobs.tick((100, 100), &ages(1, 1000));
    assert_bytes_add_up(&jobs);
    jobs.tick((1100, 1100), &ages(1, 1000));
    assert_eq!(jobs.lock().bytes, 0, "every run forgotten");
}

#[test]
fn a_run_that_reported_progress_expires_after_progress_timeout_without_it() {
    let jobs = Jobs::new(10);
    let ages = Ages {
        max_age_ms: 100_000,
        progress_timeout_ms: 1000,
        retention_ms: 100_000,
    };
    jobs.reserve(10, None).unwrap().fill(job(1, 0));
    jobs.reserve(10, None).unwrap().fill(job(2, 0));
    let reporting = Uuid::from_u128(1);
    jobs.progress(
        &reporting,
        vec![("users".into(), FieldValue::Float(3.0))],
        500,
        &BOUNDS,
        None,
    )
    .unwrap();
    assert_eq!(
        jobs.tick((1499, 1499), &ages).expired,
        0,
        "heard from 999 ms ago"
    );
    let t = jobs.tick((1500, 1500), &ages);
    assert_eq!(t.expired, 1);
    assert!(
        t.lines.contains("expired: no progress within 1s"),
        "{}",
        t.lines
    );
    assert_eq!(
        jobs.counts().running,
        1,
        "the run that never reported waits for max_age"
    );
    assert_eq!(
        rows(&jobs).iter().find(|r| r.0 == reporting).unwrap().1,
        "expired"
    );
    // What the table remembers of it survives a restart.
    let (snapshot, _) = jobs.snapshot();
    let (restored, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 10).unwrap();
    jobs.progress(&Uuid::from_u128(2), vec![], 1600, &BOUNDS, None)
        .unwrap();
    assert!(restored.lock().jobs[&reporting].progressed);
    let t = jobs.tick((100_000, 100_000), &ages);
    assert!(
        t.lines.contains("expired: no progress within 1s"),
        "{}",
        t.lines
    );
}

#[test]
fn an_owner_holds_its_max_running_at_most_and_ended_runs_free_their_places() {
    let jobs = Jobs::new(10);
    let a = Quota {
        owner: "team-a",
        max_running: 2,
        max_bytes: usize::MAX,
        max_spool_bytes: 0,
    };
    let register = |n: u128, quota: Option<Quota<'_>>| {
        let slot = jobs.reserve(100, quota)?;
        slot.fill(job(n, 0));
        Ok::<(), Refusal>(())
    };
    register(1, Some(a)).unwrap();
    // A register under way holds its place.
    let held = jobs.reserve(100, Some(a)).unwrap();
    assert_eq!(
        register(3, Some(a)).unwrap_err(),
        Refusal::OwnerFull { limit: 2 }
    );
    drop(held);
    register(2, Some(a)).unwrap();
    assert!(register(3, Some(a)).is_err());
    register(
        4,
        Some(Quota {
            owner: "team-b",
            max_running: 2,
            max_bytes: usize::MAX,
            max_spool_bytes: 0,
        }),
    )
    .unwrap();
    register(5, None).unwrap();
    assert_eq!(
        jobs.reserve(4, None).err(),
        Some(Refusal::TooManyRunning { limit: 4 })
    );
    // A commit and an expiry each free a place; a revived run takes one again.
    jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
    finish(&jobs, &Uuid::from_u128(1), 10);
    assert_eq!(jobs.lock().held["team-a"], 1);
    jobs.tick((10_000, 10_000), &ages(1000, 1_000_000));
    assert!(
        !jobs.lock().held.contains_key("team-a"),
        "{:?}",
        jobs.lock().held
    );
    jobs.progress(&Uuid::from_u128(2), vec![], 10_001, &BOUNDS, None)
        .unwrap();
    assert_eq!(jobs.lock().held["team-a"], 1);
    // The owner is saved with the job: a restarted table counts the same.
    let (snapshot, _) = jobs.snapshot();
    let (restored, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 10).unwrap();
    assert_eq!(restored.lock().held, jobs.lock().held);
    assert_eq!(
        restored
            .list(10)
            .iter()
            .find(|j| j.run.uuid == Uuid::from_u128(2))
            .unwrap()
            .owner
            .as_deref(),
        Some("team-a")
    );
}

#[test]
fn a_run_registered_with_a_token_is_its_clients_alone() {
    let jobs = Jobs::new(10);
    let a = Quota {
        owner: "team-a",
        max_running: 10,
        max_bytes: usize::MAX,
        max_spool_bytes: 0,
    };
    let b = Quota {
        owner: "team-b",
        ..a
    };
    jobs.reserve(10, Some(a)).unwrap().fill(job(1, 0));
    let id = Uuid::from_u128(1);
    assert_eq!(
        jobs.progress(&id, vec![], 5, &BOUNDS, Some(b)),
        Err(Refusal::Unknown)
    );
    assert_eq!(
        jobs.begin_commit(&id, Some("team-b")).err(),
        Some(Refusal::Unknown)
    );
    assert!(jobs.is_running(Some("team-b")).is_empty());
    assert_eq!(jobs.is_running(Some("team-a")), vec![(id, true)]);
    jobs.progress(&id, vec![], 5, &BOUNDS, Some(a)).unwrap();
    jobs.begin_commit(&id, Some("team-a")).unwrap();
}

#[test]
fn progress_that_revives_a_run_takes_a_place_as_a_register_does() {
    let jobs = Jobs::new(10);
    let a = Quota {
        owner: "team-a",
        max_running: 1,
        max_bytes: usize::MAX,
        max_spool_bytes: 0,
    };
    let bounds = Bounds {
        max_running: 2,
        ..BOUNDS
    };
    jobs.reserve(2, Some(a)).unwrap().fill(job(1, 0));
    jobs.tick((10_000, 10_000), &ages(1000, 1_000_000));
    jobs.reserve(2, Some(a)).unwrap().fill(job(2, 10_000));
    let expired = Uuid::from_u128(1);
    assert_eq!(
        jobs.progress(&expired, vec![], 10_001, &bounds, Some(a)),
        Err(Refusal::OwnerFull { limit: 1 }),
        "team-a has its one place"
    );
    let roomy = Quota {
        max_running: 5,
        ..a
    };
    jobs.reserve(2, None).unwrap().fill(job(3, 10_000));
    assert_eq!(
        jobs.progress(&expired, vec![], 10_001, &bounds, Some(roomy)),
        Err(Refusal::TooManyRunning { limit: 2 }),
        "the table is full"
    );
    assert_eq!(jobs.counts().expired, 1, "refused: still expired");
}

#[test]
fn an_owner_holds_its_share_of_the_tables_bytes_at_most() {
    let jobs = Jobs::new(10);
    let one = job_with(1, 0, vec![], vec![("note".into(), text(3000))]);
    let a = Quota {
        owner: "team-a",
        max_running: 100,
        max_bytes: one.weight() * 2,
        max_spool_bytes: 0,
    };
    let register = |n: u128, q: Quota<'_>| {
        let job = job_with(n, 0, vec![], vec![("note".into(), text(3000))]);
        let mut slot = jobs.reserve(100, Some(q))?;
        slot.prepare(&job, &BOUNDS)?;
        slot.fill(job);
        Ok::<(), Refusal>(())
    };
    register(1, a).unwrap();
    register(2, a).unwrap();
    assert_eq!(
        register(3, a),
        Err(Refusal::OwnerTableFull {
            limit: one.weight() * 2
        })
    );
    register(
        4,
        Quota {
            owner: "team-b",
            ..a
        },
    )
    .unwrap();
    // Progress that grows a run past the share is refused too.
    assert_eq!(
        jobs.progress(
            &Uuid::from_u128(1),
            vec![("more".into(), text(100))],
            5,
            &BOUNDS,
            Some(a)
        ),
        Err(Refusal::OwnerTableFull {
            limit: one.weight() * 2
        })
    );
    assert_bytes_add_up(&jobs);
    let t = jobs.lock();
    assert_eq!(t.held_bytes["team-a"], 2 * one.weight());
}

/// `list_for` picks under the lock with `select_nth` and sorts after: for every limit (0, below,
/// equal to and above the table's size) it gives what sorting the whole table newest first and
/// taking `limit` gives; runs started at the same time come in the order of their uuid.
#[test]
fn list_for_gives_the_newest_for_every_limit_ties_by_uuid() {
    let jobs = Jobs::new(100);
    // Starts with many ties: 7 runs at 10, 5 at 20, 3 at 30.
    let starts: Vec<(u128, i64)> = (1..=15u128)
        .map(|n| (n * 7919 % 101, [10, 20, 30][(n % 3) as usize]))
        .collect();
    for &(n, at) in &starts {
        jobs.reserve(100, None).unwrap().fill(job(n, at));
    }
    let mut expected: Vec<(i64, Uuid)> = starts
        .iter()
        .map(|&(n, at)| (at, Uuid::from_u128(n)))
        .collect();
    expected.sort_by_key(|&(at, uuid)| (std::cmp::Reverse(at), uuid));
    for limit in [0, 1, 6, 7, 14, 15, 16, usize::MAX] {
        let got: Vec<(i64, Uuid)> = jobs
            .list_for(limit, None)
            .iter()
            .map(|j| (j.run.started_ms, j.run.uuid))
            .collect();
        let want: Vec<(i64, Uuid)> = expected.iter().take(limit).copied().collect();
        assert_eq!(got, want, "limit {limit}");
    }
}

/// Runs without checks share one empty list; a run with checks has its own, and a job shed
/// of its run keeps none.
#[test]
fn runs_without_checks_share_one_empty_list_of_them() {
    let a = thresholds(Vec::new());
    let b = thresholds(Vec::new());
    assert!(Arc::ptr_eq(&a, &b));
    let check = crate::verdict::Threshold {
        endpoint: "Aggregated".into(),
        check: crate::verdict::check::parse("p95 < 500ms").unwrap(),
        source: crate::verdict::Source::Register,
    };
    let own = thresholds(vec![check.clone()]);
    assert!(!Arc::ptr_eq(&own, &a));
    assert_eq!(*own, vec![check]);
    let job = job(1, 0);
    assert!(Arc::ptr_eq(&job.thresholds, &a));
}
