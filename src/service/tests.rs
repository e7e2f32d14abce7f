//! The use-cases in-process, over the in-memory sink and a real log in a temporary
//! directory: what each records, and that a refusal or a failure half-way leaves the job
//! table as it was.

use super::runs::CommitGuard;
use super::*;
use compact_str::CompactString;
use std::sync::Arc;

use crate::config::Acknowledge;
use crate::delivery::sink::testing::MemorySink;
use crate::ingest::line_protocol::FieldValue;
use crate::ingest::payload::{PayloadLimits, commit as parse_commit, register as parse_register};
use crate::state::jobs::{Job, State};
use crate::state::schema::{Known, Schema};
use crate::storage::dead_letters::DeadLetters;
use crate::storage::log::Log;
use crate::storage::tests::Dir;

pub(super) const LIMITS: PayloadLimits = PayloadLimits {
    max_string_bytes: 1 << 20,
    max_stats_rows: 1000,
};

/// A service over a fresh storage directory, its deliverer running on a thread of its own
/// (stopped when the fixture is dropped), acknowledging once InfluxDB has the points.
pub(crate) struct Fixture {
    pub service: Arc<Service>,
    pub sink: Arc<MemorySink>,
    deliverer: Option<std::thread::JoinHandle<()>>,
    pub dir: Dir,
}

/// The database the fixture's gateway writes its runs to.
const RUNS_DATABASE: &str = "runs";

impl Drop for Fixture {
    fn drop(&mut self) {
        self.service.delivery.stop();
        if let Some(t) = self.deliverer.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn fixture(name: &str, max_running: usize, spool_limit: u64) -> Fixture {
    fixture_with(name, max_running, spool_limit, Acknowledge::Influxdb)
}

pub(crate) fn fixture_with(
    name: &str,
    max_running: usize,
    spool_limit: u64,
    acknowledge: Acknowledge,
) -> Fixture {
    fixture_in(Dir::new(name), max_running, spool_limit, acknowledge)
}

/// [`fixture_with`] over the storage directory `dir`.
pub(crate) fn fixture_in(
    dir: Dir,
    max_running: usize,
    spool_limit: u64,
    acknowledge: Acknowledge,
) -> Fixture {
    fixture_shares(dir, max_running, spool_limit, acknowledge, &[])
}

/// [`fixture_in`] with tokens' shares of the log (`max_spool_bytes` by name).
pub(crate) fn fixture_shares(
    dir: Dir,
    max_running: usize,
    spool_limit: u64,
    acknowledge: Acknowledge,
    shares: &[(&str, u64)],
) -> Fixture {
    let sink = Arc::new(MemorySink::new());
    let results =
        crate::state::results::Results::open(&crate::storage::tests::root(&dir), 100, 1 << 30, 1)
            .unwrap();
    let snapshots = Snapshots::new(crate::storage::tests::root(&dir));
    let mut restore = snapshots.read().unwrap();
    let (log, position, _) = Log::open(
        crate::storage::tests::log_dir(dir.path()),
        spool_limit,
        false,
        &mut |c| restore.log_changes(c, &mut |r| results.restore(r)),
    )
    .unwrap();
    let loaded = snapshots
        .finish(restore, &dir.path().join("log"), 100)
        .unwrap();
    let write_limits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 5000,
        linger: Duration::ZERO,
    };
    let delivery = Delivery::new(
        log,
        Box::new(Arc::clone(&sink)),
        DeadLetters::open(&crate::storage::tests::root(&dir), 1 << 20).unwrap(),
        acknowledge,
        Duration::from_secs(5),
        write_limits,
    );
    let service = Arc::new(Service {
        jobs: Arc::new(loaded.jobs),
        snapshots,
        delivery,
        stats: Stats::default(),
        rules: Rules {
            max_age: Duration::from_secs(3600),
            progress_timeout: Duration::from_secs(600),
            bounds: Bounds {
                max_running,
                max_fields: crate::ingest::payload::MAX_FIELDS,
                max_run_bytes: 64 << 10,
                max_table_bytes: 128 << 20,
            },
            finished_retention: Duration::from_secs(3600),
            heartbeat_interval: Duration::from_secs(15),
            tag_token_name: false,
        },
        write_limits,
        schema: Schema::new(loaded.restored.schema),
        schema_stale: SchemaRefresh::default(),
        check_schema: true,
        series: crate::state::series::SeriesBudget::open(&crate::storage::tests::root(&dir))
            .unwrap(),
        write_schemas: Default::default(),
        own_target: crate::service::write::OwnTarget::of(&crate::config::Influxdb {
            database: RUNS_DATABASE.into(),
            ..Default::default()
        }),
        results: Arc::new(results),
        judging: Default::default(),
        spool_shares: shares.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
        clock: Clock::default(),
        dropped_beats: crate::storage::Repeats::new(crate::service::UPKEEP_TARGET),
    });
    let running = Arc::clone(&service);
    let deliverer = std::thread::spawn(move || running.delivery.run(position, &running.stats));
    Fixture {
        service,
        sink,
        deliverer: Some(deliverer),
        dir,
    }
}

/// Waits (10 s at most) until the sink has stored `n` lines; the lines.
pub(crate) fn stored(f: &Fixture, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = f.sink.stored();
        if stored.len() >= n {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines stored: {stored:?}",
            stored.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn register(f: &Fixture, body: &str) -> Result<Registered, Refused> {
    let record = parse_register(body.as_bytes(), LIMITS).unwrap();
    f.service.register(record, "10.0.0.9", None, 1_000)
}

fn commit_body(uuid: Uuid, note: &str) -> String {
    format!(
        r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"note":"{note}","requestStats":{{"stats":[{{"name":"/a","method":"GET","num_requests":3}}],"total_rps":1.5}}}}}}}}"#
    )
}

fn commit(f: &Fixture, uuid: Uuid) -> Result<Committed, Refused> {
    f.service.commit(
        parse_commit(commit_body(uuid, "").as_bytes(), LIMITS).unwrap(),
        None,
        2_000,
    )
}

fn state(f: &Fixture, uuid: Uuid) -> Option<State> {
    f.service
        .jobs
        .list(usize::MAX)
        .into_iter()
        .find(|j| j.run.uuid == uuid)
        .map(|j| j.state)
}

#[test]
fn register_records_the_start_and_keeps_the_run() {
    let f = fixture("service-register", 10, 1 << 20);
    let long = "t".repeat(25);
    let r = register(
        &f,
        &format!(r#"{{"tags":{{"mode":"single","{long}":"x"}},"measurement":{{"fields":{{"clients":5}}}}}}"#),
    )
    .unwrap();
    assert_eq!(r.outcome, Outcome::Delivered);
    let stored = f.sink.stored();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[0].starts_with("load_testing_events,event=started,host=10.0.0.9,"));
    assert!(stored[1].starts_with("load_testing,host=10.0.0.9,"));
    assert!(stored[1].contains("clients=5"));
    assert_eq!(state(&f, r.uuid), Some(State::Running));
    let job = &f.service.jobs.list(1)[0];
    assert_eq!(
        *job.fields,
        [(CompactString::from("clients"), FieldValue::Float(5.0))]
    );
    // A running run's names and values of up to 24 bytes are held inside their handles (10 000
    // running runs: 70 000 heap blocks fewer); a longer one has a block of its own.
    assert!(!job.fields[0].0.is_heap_allocated());
    assert!(!job.run.host.is_heap_allocated());
    let tag = |name: &str| job.run.tags.iter().find(|(k, _)| k == name).unwrap();
    assert!(!tag("mode").0.is_heap_allocated() && !tag("mode").1.is_heap_allocated());
    assert!(tag(&long).0.is_heap_allocated());
}

#[test]
fn with_acknowledge_disk_the_answer_does_not_wait_for_influxdb() {
    let f = fixture_with("service-disk", 10, 1 << 20, Acknowledge::Disk);
    // InfluxDB never answers; the register is answered all the same, as recorded.
    f.sink.set_ping_fails(true);
    f.sink.answer(std::iter::repeat_n(
        crate::delivery::sink::testing::Answer::Fail(
            crate::delivery::sink::SinkError::Unreachable("connection refused".into()),
        ),
        100,
    ));
    let r = register(&f, "{}").unwrap();
    assert_eq!(r.outcome, Outcome::Recorded);
    assert_eq!(state(&f, r.uuid), Some(State::Running));
}

#[test]
fn a_register_that_cannot_be_recorded_leaves_no_run_and_frees_its_slot() {
    // The log has no room for a record with points.
    let f = fixture("service-register-full", 1, 0);
    let err = register(&f, "{}").unwrap_err();
    assert!(
        matches!(&err, Refused::NotRecorded(why) if why.is_spool_full()),
        "{err:?}"
    );
    assert!(f.service.jobs.list(usize::MAX).is_empty());
    // The slot it reserved is free again: with max_running = 1 a new register fits, and
    // the snapshot is not held back by a change that never happened.
    assert!(f.service.jobs.reserve(1, None).is_ok());
    assert_eq!(f.service.jobs.snapshot().1, 1);
}

/// A token at its share of the log is refused as when the log is full (nothing recorded, no
/// run, a commit's run left running), while another token registers; a progress (no points)
/// still goes in.
#[test]
fn a_token_at_its_share_of_the_log_is_refused_and_another_is_not() {
    let f = fixture_with("service-share", 10, 1 << 20, Acknowledge::Disk);
    // InfluxDB never answers: what is recorded waits in the log.
    f.sink.set_ping_fails(true);
    f.sink.answer(std::iter::repeat_n(
        crate::delivery::sink::testing::Answer::Fail(
            crate::delivery::sink::SinkError::Unreachable("connection refused".into()),
        ),
        1000,
    ));
    let quota = |owner| Quota {
        owner,
        max_running: 10,
        max_bytes: 1 << 20,
        // Less than one register's record; its part of the headroom for records without
        // points (400 / 1 MiB of 16 MiB: 6 400 bytes) still takes a progress.
        max_spool_bytes: 400,
    };
    let a = Some(quota("team-a"));
    let parsed = || parse_register(b"{}", LIMITS).unwrap();
    // With nothing waiting, a first record goes in whatever the share.
    let uuid = f.service.register(parsed(), "h", a, 1_000).unwrap().uuid;
    let err = f.service.register(parsed(), "h", a, 1_000).unwrap_err();
    assert!(
        matches!(&err, Refused::NotRecorded(why) if why.is_share_full()),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_spool_bytes"), "{err}");
    assert_eq!(f.service.jobs.list(usize::MAX).len(), 1, "no run for it");
    let record = parse_register(br#"{"measurement": {"fields": {"users": 5}}}"#, LIMITS).unwrap();
    f.service.progress(uuid, record, a, 1_500).unwrap();
    let body = commit_body(uuid, "");
    let err = f
        .service
        .commit(parse_commit(body.as_bytes(), LIMITS).unwrap(), a, 2_000)
        .unwrap_err();
    assert!(
        matches!(&err, Refused::NotRecorded(why) if why.is_share_full()),
        "{err:?}"
    );
    assert_eq!(state(&f, uuid), Some(State::Running));
    // Another token is not held back by team-a's share.
    f.service
        .register(parsed(), "h", Some(quota("team-b")), 1_000)
        .unwrap();
    assert_eq!(f.service.jobs.list(usize::MAX).len(), 2);
}

#[test]
fn max_running_refuses_the_next_register() {
    let f = fixture("service-max-running", 2, 1 << 20);
    register(&f, "{}").unwrap();
    register(&f, "{}").unwrap();
    assert!(matches!(
        register(&f, "{}"),
        Err(Refused::TooManyRunning(2))
    ));
    assert_eq!(
        f.sink.stored().len(),
        4,
        "the refused register wrote nothing"
    );
}

#[test]
fn a_commit_that_cannot_be_recorded_leaves_the_run_running() {
    // Room for the register's record (delivered at once) and a commit with its result, not
    // for a commit with a note of 2 000 bytes.
    let f = fixture("service-commit-full", 10, 2500);
    let uuid = register(&f, "{}").unwrap().uuid;
    let big = parse_commit(commit_body(uuid, &"n".repeat(2000)).as_bytes(), LIMITS).unwrap();
    for attempt in 0..2 {
        let err = f.service.commit(big.clone(), None, 2_000).unwrap_err();
        assert!(
            matches!(&err, Refused::NotRecorded(why) if why.is_spool_full()),
            "attempt {attempt}: {err:?}"
        );
        assert_eq!(state(&f, uuid), Some(State::Running), "attempt {attempt}");
    }
    assert_eq!(f.sink.stored().len(), 2, "only the register's points");
    // A commit that fits goes through.
    commit(&f, uuid).unwrap();
    assert!(matches!(
        state(&f, uuid),
        Some(State::Finished { at_ms: 2_000 })
    ));
}

#[test]
fn a_commit_that_fails_on_disk_leaves_the_run_running_and_can_be_sent_again() {
    let f = fixture("service-commit-disk", 10, 1 << 20);
    let uuid = register(&f, "{}").unwrap().uuid;
    f.service.delivery.log().fail_next_writes(1);
    let err = commit(&f, uuid).unwrap_err();
    assert!(
        matches!(&err, Refused::NotRecorded(why) if !why.is_spool_full()),
        "{err:?}"
    );
    // The answer says what failed, never where the server keeps its files.
    let said = err.to_string();
    assert!(said.contains("cannot write its log on disk"), "{said}");
    assert!(!said.contains("/log/"), "{said}");
    assert_eq!(state(&f, uuid), Some(State::Running));
    let c = commit(&f, uuid).unwrap();
    assert_eq!((c.points, c.rows, c.rows_sent), (3, 1, 1));
    assert_eq!(c.outcome, Outcome::Delivered);
    assert!(matches!(
        state(&f, uuid),
        Some(State::Finished { at_ms: 2_000 })
    ));
}

#[test]
fn a_commit_left_half_way_puts_the_run_back() {
    let f = fixture("service-commit-panic", 10, 1 << 20);
    let uuid = register(&f, "{}").unwrap().uuid;
    let jobs = &f.service.jobs;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        jobs.begin_commit(&uuid, None).unwrap();
        let mut guard = CommitGuard {
            jobs: Arc::clone(jobs),
            uuid,
            prepared: None,
            done: false,
        };
        guard.prepared = jobs.prepare_finish(&uuid, 1_500).map(|c| c.seq);
        panic!("a commit fails half-way (on purpose, by the test)");
    }));
    assert!(panicked.is_err());
    assert_eq!(
        state(&f, uuid),
        Some(State::Running),
        "the guard put the run back"
    );
    assert_eq!(
        jobs.snapshot().1,
        2,
        "the abandoned change does not hold the snapshot back"
    );
    commit(&f, uuid).unwrap();
    assert!(matches!(state(&f, uuid), Some(State::Finished { .. })));
}

#[test]
fn refusals_name_the_run_and_change_nothing() {
    let f = fixture("service-refusals", 10, 1 << 20);
    let unknown = Uuid::from_u128(7);
    assert!(matches!(commit(&f, unknown), Err(Refused::UnknownRun(u)) if u == unknown));
    let uuid = register(&f, r#"{"tags":{"mode":"x"}}"#).unwrap().uuid;
    let record = parse_register(br#"{"measurement":{"fields":{"mode":1}}}"#, LIMITS);
    // The payload alone is fine; against the run's tags it is not.
    let err = f
        .service
        .progress(uuid, record.unwrap(), None, 1_500)
        .unwrap_err();
    assert!(matches!(err, Refused::FieldIsTag), "{err:?}");
    commit(&f, uuid).unwrap();
    let written = f.sink.stored().len();
    let err = commit(&f, uuid).unwrap_err();
    assert!(
        matches!(err, Refused::AlreadyCommitted { at_ms: 2_000, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("already committed"), "{err}");
    assert_eq!(f.sink.stored().len(), written, "a refusal writes nothing");
}

#[test]
fn a_tick_records_each_running_run_and_expires_the_silent_ones() {
    let f = fixture("service-tick", 10, 1 << 20);
    let t0 = Instant::now();
    f.service.clock.set(t0);
    let a = register(&f, r#"{"measurement":{"fields":{"clients":1}}}"#)
        .unwrap()
        .uuid;
    let b = register(&f, "{}").unwrap().uuid;
    commit(&f, b).unwrap();
    let before = f.sink.stored().len();
    f.service.clock.set(t0 + Duration::from_secs(60));
    f.service.tick(1_000 + 60_000);
    let beats: Vec<String> = stored(&f, before + 1)[before..].to_vec();
    assert_eq!(beats.len(), 1, "only the running run beats: {beats:?}");
    assert!(beats[0].contains(&a.to_string()) && beats[0].contains("elapsed=60"));
    f.service.clock.set(t0 + Duration::from_secs(3600));
    f.service.tick(1_000 + 3_600_000);
    assert!(matches!(state(&f, a), Some(State::Expired { .. })));
    let all = stored(&f, before + 2);
    assert!(all.last().unwrap().contains("event=expired"));
}

#[test]
fn a_restart_finds_every_acknowledged_change() {
    let temp = temp_copy("service-restart");
    let (a, b) = {
        let f = fixture("service-restart", 10, 1 << 20);
        let a = register(&f, r#"{"measurement":{"fields":{"clients":1}}}"#)
            .unwrap()
            .uuid;
        let b = register(&f, "{}").unwrap().uuid;
        let record = parse_register(br#"{"measurement":{"fields":{"clients":9}}}"#, LIMITS);
        f.service.progress(a, record.unwrap(), None, 1_500).unwrap();
        commit(&f, b).unwrap();
        // A copy of the directory as it is, no snapshot written since the start: as after
        // a kill -9.
        copy_dir(f.dir.path(), temp.path());
        (a, b)
    };
    let copy = temp.path();
    let snapshots = Snapshots::new(crate::storage::tests::root_at(copy));
    let mut restore = snapshots.read().unwrap();
    Log::open(
        crate::storage::tests::log_dir(copy),
        1 << 20,
        false,
        &mut |c| restore.log_changes(c, &mut |_| {}),
    )
    .unwrap();
    let loaded = snapshots.finish(restore, &copy.join("log"), 100).unwrap();
    let jobs = loaded.jobs.list(10);
    let find = |u: Uuid| jobs.iter().find(|j| j.run.uuid == u).unwrap().clone();
    assert_eq!(
        *find(a).fields,
        [(CompactString::from("clients"), FieldValue::Float(9.0))]
    );
    assert!(matches!(find(b).state, State::Finished { at_ms: 2_000 }));
}

/// A temporary directory (`tempfile`'s, removed when dropped) for a copy of a fixture's.
fn temp_copy(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mc-{name}-copy-"))
        .tempdir()
        .expect("create the directory of the copy")
}

/// The jobs a start would find in a copy of the fixture's directory as it is now.
fn restored(f: &Fixture, name: &str) -> Vec<Job> {
    let temp = temp_copy(name);
    let copy = temp.path();
    copy_dir(f.dir.path(), copy);
    let snapshots = Snapshots::new(crate::storage::tests::root_at(copy));
    let mut restore = snapshots.read().unwrap();
    Log::open(
        crate::storage::tests::log_dir(copy),
        1 << 20,
        false,
        &mut |c| restore.log_changes(c, &mut |_| {}),
    )
    .unwrap();
    let loaded = snapshots.finish(restore, &copy.join("log"), 100).unwrap();
    loaded.jobs.list(usize::MAX)
}

/// Waits (10 s at most) until the deliverer has taken the whole log.
fn delivered(f: &Fixture) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.service.delivery.log().undelivered().0 > 0 {
        assert!(Instant::now() < deadline, "the log delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn progress(f: &Fixture, uuid: Uuid, body: &str, now_ms: i64) -> Result<(), Refused> {
    let record = parse_register(body.as_bytes(), LIMITS).unwrap();
    f.service.progress(uuid, record, None, now_ms)
}

#[test]
fn a_progress_that_is_not_recorded_changes_neither_the_heartbeats_nor_what_a_restart_finds() {
    let f = fixture("service-progress-not-recorded", 10, 1 << 20);
    let t0 = Instant::now();
    f.service.clock.set(t0);
    let uuid = register(&f, r#"{"measurement":{"fields":{"step":1}}}"#)
        .unwrap()
        .uuid;
    progress(&f, uuid, r#"{"measurement":{"fields":{"step":1}}}"#, 1_500).unwrap();
    f.service.delivery.log().fail_next_writes(1);
    f.service.clock.set(t0 + Duration::from_secs(100));
    let err = progress(
        &f,
        uuid,
        r#"{"measurement":{"fields":{"step":2}}}"#,
        101_000,
    );
    assert!(matches!(err, Err(Refused::NotRecorded(_))), "{err:?}");
    let job = f.service.jobs.list(1)[0].clone();
    assert_eq!(
        *job.fields,
        [(CompactString::from("step"), FieldValue::Float(1.0))]
    );
    assert_eq!(
        job.last_seen_ms, 1_500,
        "the expiry clocks did not start again"
    );
    // The next heartbeat carries the old value.
    let before = f.sink.stored().len();
    f.service.tick(102_000);
    let beat = stored(&f, before + 1)[before].clone();
    assert!(
        beat.contains("step=1") && !beat.contains("step=2"),
        "{beat}"
    );
    // So does a start after a stop (which writes a snapshot).
    f.service.save_snapshot();
    let jobs = restored(&f, "progress-not-recorded");
    assert_eq!(
        *jobs[0].fields,
        [(CompactString::from("step"), FieldValue::Float(1.0))]
    );
    assert_eq!(jobs[0].last_seen_ms, 1_500);
    // And the run is not stuck: the next progress is recorded and taken.
    progress(
        &f,
        uuid,
        r#"{"measurement":{"fields":{"step":3}}}"#,
        103_000,
    )
    .unwrap();
    assert_eq!(
        *f.service.jobs.list(1)[0].fields,
        [(CompactString::from("step"), FieldValue::Float(3.0))]
    );
}

#[test]
fn a_progress_or_commit_of_an_expired_run_that_is_not_recorded_leaves_it_expired_as_it_was() {
    let f = fixture("service-revive-not-recorded", 10, 1 << 20);
    let t0 = Instant::now();
    f.service.clock.set(t0);
    let uuid = register(&f, "{}").unwrap().uuid;
    f.service.clock.set(t0 + Duration::from_secs(3600));
    f.service.tick(1_000 + 3_600_000);
    let expired = state(&f, uuid);
    assert!(
        matches!(expired, Some(State::Expired { .. })),
        "{expired:?}"
    );
    let places = f.service.jobs.counts();
    f.service.delivery.log().fail_next_writes(1);
    let err = progress(
        &f,
        uuid,
        r#"{"measurement":{"fields":{"step":2}}}"#,
        3_700_000,
    );
    assert!(matches!(err, Err(Refused::NotRecorded(_))), "{err:?}");
    assert_eq!(state(&f, uuid), expired);
    assert_eq!(f.service.jobs.counts(), places);
    f.service.delivery.log().fail_next_writes(1);
    assert!(matches!(commit(&f, uuid), Err(Refused::NotRecorded(_))));
    assert_eq!(state(&f, uuid), expired, "the same expiry time");
    f.service.save_snapshot();
    let jobs = restored(&f, "revive-not-recorded");
    assert_eq!(Some(jobs[0].state), expired);
    assert!(jobs[0].fields.is_empty());
}

#[test]
fn a_wall_clock_step_forward_expires_no_run_still_reporting_and_stamps_nothing_ahead() {
    // max_age is 1 h, progress_timeout 10 min (the fixture's).
    let f = fixture("service-wall-clock-step", 10, 1 << 20);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    f.service.clock.set(at(0));
    let uuid = register(&f, r#"{"measurement":{"fields":{"step":1}}}"#)
        .unwrap()
        .uuid;
    f.service.clock.set(at(1));
    progress(&f, uuid, r#"{"measurement":{"fields":{"step":2}}}"#, 2_000).unwrap();
    // The wall clock steps 11 minutes forward for 3 s: the run still reports.
    let before = f.sink.stored().len();
    f.service.clock.set(at(2));
    f.service.tick(2_000 + 11 * 60_000);
    f.service.clock.set(at(3));
    progress(
        &f,
        uuid,
        r#"{"measurement":{"fields":{"step":3}}}"#,
        3_000 + 11 * 60_000,
    )
    .unwrap();
    f.service.clock.set(at(4));
    f.service.tick(4_000);
    assert_eq!(state(&f, uuid), Some(State::Running));
    assert_eq!(stored(&f, before + 2).len(), before + 2, "two heartbeats");
    // Silent from then on, it expires by the monotonic clock, 10 min after it was last heard
    // from: stamped then, though the wall clock has stepped an hour ahead at that tick.
    f.service.clock.set(at(3 + 600));
    let wall = 4_000 + 600_000 + 3_600_000;
    f.service.tick(wall);
    let lines = stored(&f, before + 3);
    let event = lines.last().unwrap();
    assert!(event.contains("event=expired"), "{event}");
    let stamp: i64 = event.rsplit(' ').next().unwrap().parse().unwrap();
    let last_seen = 3_000 + 11 * 60_000;
    assert_eq!(stamp, (last_seen + 600_000).min(wall));
    assert!(stamp <= wall);
    assert!(matches!(state(&f, uuid), Some(State::Expired { at_ms }) if at_ms == stamp));
    // A wall clock behind: the stamp is never ahead of it.
    let other = register(&f, "{}").unwrap().uuid;
    f.service.clock.set(at(3 + 600 + 3600));
    f.service.tick(500);
    assert!(matches!(
        state(&f, other),
        Some(State::Expired { at_ms: 500 })
    ));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_field_of_another_type_is_refused_at_the_request_naming_the_type_used_before() {
    let f = fixture("service-schema", 10, 1 << 20);
    let a = register(
        &f,
        r#"{"tags":{"mode":"x"},"measurement":{"fields":{"clients":5}}}"#,
    )
    .unwrap()
    .uuid;
    let written = f.sink.stored().len();
    let err = register(&f, r#"{"measurement":{"fields":{"clients":"ten"}}}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "measurement.fields.clients: is a string, but earlier runs wrote it to load_testing as a float, and InfluxDB keeps one type per field: send a number, or give the field another name"
    );
    // A name used as a tag is refused as a field, and the other way round.
    let err = register(&f, r#"{"measurement":{"fields":{"mode":1}}}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("measurement.fields.mode: is a field here"),
        "{err}"
    );
    let err = register(&f, r#"{"tags":{"clients":"many"}}"#).unwrap_err();
    assert!(
        err.to_string().starts_with("tags.clients: is a tag here"),
        "{err}"
    );
    // Progress is held to the same types.
    let record = parse_register(br#"{"measurement":{"fields":{"clients":"ten"}}}"#, LIMITS);
    assert!(matches!(
        f.service.progress(a, record.unwrap(), None, 1_500),
        Err(Refused::SchemaConflict { .. })
    ));
    assert_eq!(
        f.sink.stored().len(),
        written,
        "nothing of a refused request is written"
    );
    // What InfluxDB says wins once the log is delivered: the measurement is gone (a reading
    // begun after the writes, as the schema thread's are).
    f.service.schema.reading_begins(|| true);
    f.service
        .schema
        .update_from_influxdb(Default::default(), true);
    register(&f, r#"{"measurement":{"fields":{"clients":"ten"}}}"#).unwrap();
}

#[test]
fn a_register_that_fails_on_disk_does_not_hold_its_new_field_type_against_others() {
    let f = fixture("service-schema-claim-failed", 10, 1 << 20);
    f.service.delivery.log().fail_next_writes(1);
    let err = register(&f, r#"{"measurement":{"fields":{"fresh":1.5}}}"#).unwrap_err();
    assert!(matches!(err, Refused::NotRecorded(_)), "{err:?}");
    // Nobody wrote a number to it: a string is taken, and held from then on.
    register(&f, r#"{"measurement":{"fields":{"fresh":"s"}}}"#).unwrap();
    assert!(matches!(
        register(&f, r#"{"measurement":{"fields":{"fresh":2}}}"#),
        Err(Refused::SchemaConflict { .. })
    ));
}

#[test]
fn a_stats_member_of_another_type_than_earlier_runs_wrote_is_left_out_not_its_row() {
    let f = fixture("service-stats-member-type", 10, 1 << 20);
    let commit_with = |member: &str| {
        let uuid = register(&f, "{}").unwrap().uuid;
        let stats = format!(
            r#"{{"stats":[{{"name":"/a","method":"GET","n":{member},"rps":2}}],"total":{member}}}"#
        );
        let body =
            serde_json::json!({"uuid": uuid, "measurement": {"fields": {"requestStats": stats}}});
        f.service
            .commit(
                parse_commit(body.to_string().as_bytes(), LIMITS).unwrap(),
                None,
                2_000,
            )
            .unwrap()
    };
    assert_eq!(commit_with("1").left_out, 0);
    let second = commit_with("true");
    assert_eq!(
        (second.left_out, second.rows),
        (2, 1),
        "the row stays, without n"
    );
    let stored = f.sink.stored();
    let last_row = stored
        .iter()
        .rev()
        .find(|l| l.starts_with("load_testing_request_stats"))
        .unwrap();
    assert!(
        last_row.contains(" rps=2 ") && !last_row.contains("n="),
        "{last_row}"
    );
}

#[test]
fn a_commit_field_named_like_a_tag_of_the_run_is_refused_and_the_run_goes_on() {
    let f = fixture("service-commit-field-is-tag", 10, 1 << 20);
    let uuid = register(&f, r#"{"tags":{"mode":"x"}}"#).unwrap().uuid;
    let body = format!(r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"mode":1}}}}}}"#);
    let err = f
        .service
        .commit(parse_commit(body.as_bytes(), LIMITS).unwrap(), None, 2_000)
        .unwrap_err();
    assert!(matches!(err, Refused::FieldIsTag), "{err}");
    assert!(err.to_string().starts_with("measurement.fields:"), "{err}");
    commit(&f, uuid).unwrap();
}

#[test]
fn where_influxdb_cannot_say_its_schema_what_was_learned_holds_until_the_next_refresh() {
    // The memory sink, like InfluxDB 2 and 3 here, cannot say what its schema is.
    let f = fixture("service-schema-forgotten", 10, 1 << 20);
    let run = register(&f, r#"{"measurement":{"fields":{"mode":1}}}"#)
        .unwrap()
        .uuid;
    assert!(matches!(
        register(&f, r#"{"measurement":{"fields":{"mode":"x"}}}"#),
        Err(Refused::SchemaConflict { .. })
    ));
    // Ended: no heartbeat of it will write `mode` again.
    commit(&f, run).unwrap();
    delivered(&f);
    // A bucket made anew would take the new type: the gateway lets go of what it learned.
    f.service.refresh_schema();
    register(&f, r#"{"measurement":{"fields":{"mode":"x"}}}"#).unwrap();
}

/// A progress changes a run's heartbeat fields at once, but they reach InfluxDB only with the
/// run's next tick: a reading of InfluxDB's schema in between (the log delivered) must not
/// forget their types, or another run could write another type to them and InfluxDB would
/// refuse the first run's heartbeats at every tick.
#[test]
fn a_schema_reading_keeps_the_types_of_the_running_runs_next_heartbeats() {
    // The memory sink, like InfluxDB 2 and 3 here, cannot say what its schema is.
    let f = fixture("service-schema-pending-beats", 10, 1 << 20);
    let first = register(&f, "{}").unwrap().uuid;
    progress(
        &f,
        first,
        r#"{"measurement":{"fields":{"users":5}}}"#,
        1_500,
    )
    .unwrap();
    delivered(&f);
    f.service.refresh_schema();
    let second = register(&f, "{}").unwrap().uuid;
    assert!(matches!(
        progress(
            &f,
            second,
            r#"{"measurement":{"fields":{"users":"many"}}}"#,
            1_600
        ),
        Err(Refused::SchemaConflict { .. })
    ));
    // Once the first run ended, nothing will write `users` as a number: the next reading
    // lets the type go.
    commit(&f, first).unwrap();
    delivered(&f);
    f.service.refresh_schema();
    progress(
        &f,
        second,
        r#"{"measurement":{"fields":{"users":"many"}}}"#,
        1_700,
    )
    .unwrap();
}

/// A run's tags are the tags of each of its heartbeats: like its fields, a reading of
/// InfluxDB's schema that cannot say them (InfluxDB 2 and 3, the memory sink here), or after a
/// dropped database, must not forget them while the run still beats, or another run could
/// send a field of that name (answered 200) beside the tag of the first run's next tick.
#[test]
fn a_schema_reading_keeps_the_tags_of_the_running_runs_next_heartbeats() {
    let f = fixture("service-schema-pending-tags", 10, 1 << 20);
    register(&f, r#"{"tags":{"mode":"x"}}"#).unwrap();
    delivered(&f);
    f.service.refresh_schema();
    let second = register(&f, r#"{"measurement":{"fields":{"mode":1}}}"#);
    assert!(second.is_err(), "a field named like a running run's tag");
}

/// An expired run stops beating, so a reading lets its heartbeat fields go; a progress that
/// revives it brings back its old fields with its next heartbeat: they must be checked then.
#[test]
fn a_progress_reviving_a_run_checks_the_fields_its_next_heartbeats_bring_back() {
    let f = fixture("service-schema-revived-beats", 10, 1 << 20);
    let t0 = Instant::now();
    f.service.clock.set(t0);
    let first = register(&f, "{}").unwrap().uuid;
    progress(
        &f,
        first,
        r#"{"measurement":{"fields":{"users":5}}}"#,
        1_500,
    )
    .unwrap();
    f.service.clock.set(t0 + Duration::from_secs(3600));
    f.service.tick(1_000 + 3_600_000);
    assert!(matches!(state(&f, first), Some(State::Expired { .. })));
    delivered(&f);
    f.service.refresh_schema();
    // Not running: nothing of it will write `users` as a number, as far as anyone knows.
    register(&f, r#"{"measurement":{"fields":{"users":"many"}}}"#).unwrap();
    // It comes back; its next heartbeat would carry users=5 beside the other run's string.
    let revived = progress(
        &f,
        first,
        r#"{"measurement":{"fields":{"step":2}}}"#,
        3_700_000,
    );
    assert!(
        matches!(revived, Err(Refused::SchemaConflict { .. })),
        "{revived:?}"
    );
}

/// Commits `fields` (a JSON object) as `uuid`'s end.
fn commit_fields(service: &Service, uuid: Uuid, fields: &str) -> Result<Committed, Refused> {
    let body = format!(r#"{{"uuid":"{uuid}","measurement":{{"fields":{fields}}}}}"#);
    service.commit(parse_commit(body.as_bytes(), LIMITS).unwrap(), None, 2_000)
}

/// Writes `body` (line protocol) to `database` through the write API, as a client that may
/// write every database and measurement; how many lines were refused.
fn write_lines(service: &Service, database: &str, body: &str) -> usize {
    write_to(service, database, "", body).unwrap().refused_count
}

/// Writes `body` (line protocol) to `database` and `retention_policy` through the write API,
/// as a client that may write every database and measurement.
fn write_to(
    service: &Service,
    database: &str,
    retention_policy: &str,
    body: &str,
) -> Result<super::write::Written, super::write::WriteRefused> {
    write_arming(service, database, retention_policy, body, None)
}

/// [`write_to`], with `answer_early` to arm an answer for the log's writer.
fn write_arming(
    service: &Service,
    database: &str,
    retention_policy: &str,
    body: &str,
    answer_early: Option<super::ArmEarly<'_, super::write::Written>>,
) -> Result<super::write::Written, super::write::WriteRefused> {
    let client = crate::auth::Client {
        name: "writer".into(),
        token: "t".into(),
        max_running: 10,
        max_table_bytes: 1 << 20,
        requests_per_second: 0.0,
        databases: vec!["*".into()],
        measurements: vec!["*".into()],
        max_series: 1000,
        max_spool_bytes: 1 << 20,
    };
    service.write(super::write::WriteRequest {
        client: &client,
        database,
        retention_policy,
        body: body.as_bytes(),
        precision: crate::ingest::lp_parse::Precision::Nanosecond,
        accept_partial: true,
        now_ns: 1_000_000_000,
        answer_early,
    })
}

/// A write's answer is armed for the thread that settles its record only where it cannot
/// change once settled: every line taken. With `delivery.acknowledge = "disk"` it is the answer
/// to a record on disk, for the log's writer; with `"influxdb"` the answer to a record InfluxDB
/// stored, for the deliverer. A write with a line refused is answered by its own thread.
#[test]
fn only_a_whole_write_arms_an_early_answer_for_its_outcome() {
    let cases = [
        (Acknowledge::Disk, "m v=1 1\n", Some(Outcome::Recorded)),
        (Acknowledge::Disk, "m v=1 1\nnot line protocol\n", None),
        (Acknowledge::Disk, "m v=\"a string now\" 2\n", None),
        (Acknowledge::Influxdb, "m v=1 1\n", Some(Outcome::Delivered)),
        (Acknowledge::Influxdb, "m v=1 1\nnot line protocol\n", None),
    ];
    for (acknowledge, body, armed) in cases {
        let f = fixture_with("write-early", 10, 1 << 20, acknowledge);
        // The first write tells the field's type, which the third case's write conflicts with.
        write_to(&f.service, "w", "", "m v=0 0\n").unwrap();
        let outcomes = std::sync::Mutex::new(Vec::new());
        let arm = |w: &super::write::Written| {
            crate::sync::lock(&outcomes).push(w.outcome.clone());
            None
        };
        let written = write_arming(&f.service, "w", "", body, Some(&arm)).unwrap();
        assert_eq!(
            outcomes.into_inner().unwrap(),
            armed.map(Some).into_iter().collect::<Vec<_>>(),
            "{acknowledge:?} {body:?}: {} refused",
            written.refused_count
        );
    }
}

/// A write whose new series cannot be kept in the series budget's file (a disk gone bad or
/// full) is refused, nothing of it recorded, and the failure is logged (once a minute at most).
#[test]
fn a_series_budget_that_cannot_be_written_refuses_the_write_and_is_told() {
    let f = fixture("service-series-fail", 10, 1 << 20);
    f.service.series.fail_next_writes(2);
    let refused = write_to(&f.service, "k6", "", "m,vu=1 v=1 1\n");
    let told = match refused {
        Err(e @ super::write::WriteRefused::Series(_)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    // The client is told why, not where storage.dir is.
    assert!(told.contains("series budget could not be kept"), "{told}");
    assert!(
        !told.contains(&f.dir.path().display().to_string()),
        "{told}"
    );
    assert_eq!(
        f.service.delivery.log().undelivered().0,
        0,
        "nothing recorded"
    );
    // Told at the first failure; the second, within the minute, is held back.
    assert!(write_to(&f.service, "k6", "", "m,vu=2 v=1 1\n").is_err());
    assert_eq!(f.service.series.errors.admit(Instant::now()), None);
    // The file takes writes again: so do the series.
    assert_eq!(write_lines(&f.service, "k6", "m,vu=3 v=1 1\n"), 0);
}

/// A commit recorded right after a reading of InfluxDB's schema found the log delivered is not
/// counted by that look, and InfluxDB may answer before the commit reaches it: the types the
/// commit taught are kept through that answer. Forgotten, a commit with another type of the
/// field was answered 200, and InfluxDB refused one of the two: an acknowledged point lost.
#[test]
fn a_commit_recorded_right_after_a_reading_found_the_log_delivered_keeps_its_types() {
    let f = fixture("service-schema-race-runs", 10, 1 << 20);
    f.sink.say_schema(Known::new());
    let first = register(&f, "{}").unwrap().uuid;
    let second = register(&f, "{}").unwrap().uuid;
    delivered(&f);
    let service = Arc::clone(&f.service);
    f.service.delivery.after_caught_up(move || {
        commit_fields(&service, first, r#"{"score":1}"#).unwrap();
    });
    f.service.refresh_schema();
    let other = commit_fields(&f.service, second, r#"{"score":"high"}"#);
    assert!(
        matches!(other, Err(Refused::SchemaConflict { .. })),
        "{other:?}"
    );
}

/// A tick recorded right after a reading found the log delivered carries the running runs'
/// fields, and InfluxDB may answer before it has them; a run that ends meanwhile is not running
/// when the answer is taken. The types its tick carried are kept all the same: forgotten,
/// another run could take another type of the field, and InfluxDB would refuse its heartbeats.
#[test]
fn a_tick_recorded_right_after_a_reading_found_the_log_delivered_keeps_the_types_it_carries() {
    let f = fixture("service-schema-race-tick", 10, 1 << 20);
    f.sink.say_schema(Known::new());
    let first = register(&f, "{}").unwrap().uuid;
    progress(
        &f,
        first,
        r#"{"measurement":{"fields":{"users":5}}}"#,
        1_500,
    )
    .unwrap();
    let second = register(&f, "{}").unwrap().uuid;
    delivered(&f);
    let service = Arc::clone(&f.service);
    f.service.delivery.after_caught_up(move || {
        // The first run's heartbeat carries users=5 for the first time; then it ends.
        service.tick(1_600);
        commit_fields(&service, first, "{}").unwrap();
    });
    f.service.refresh_schema();
    let other = progress(
        &f,
        second,
        r#"{"measurement":{"fields":{"users":"many"}}}"#,
        1_700,
    );
    assert!(
        matches!(other, Err(Refused::SchemaConflict { .. })),
        "{other:?}"
    );
}

/// A write API's database is read after the gateway's own measurements and the databases
/// before it, each over HTTP: a write recorded meanwhile, after the log was found delivered,
/// keeps its types through its database's reading, which InfluxDB answers before the write
/// reaches it.
#[test]
fn a_write_recorded_while_the_schemas_before_its_database_are_read_keeps_its_types() {
    write_recorded_after_the_look_keeps_its_types("service-schema-race-write", |s| {
        s.refresh_schema()
    });
}

/// As [`a_write_recorded_while_the_schemas_before_its_database_are_read_keeps_its_types`],
/// for the first reading of a database, which a first write there asks for.
#[test]
fn a_write_recorded_right_after_a_first_reading_found_the_log_delivered_keeps_its_types() {
    write_recorded_after_the_look_keeps_its_types("service-schema-race-first", |s| {
        s.refresh_first_reads()
    });
}

/// A write recorded right after `reading` looked at the log (found delivered) keeps its type
/// through the reading: another type of its field is refused after it.
fn write_recorded_after_the_look_keeps_its_types(name: &str, reading: fn(&Service)) {
    let f = fixture_with(name, 10, 1 << 20, Acknowledge::Disk);
    f.sink.say_schema(Known::new());
    assert_eq!(write_lines(&f.service, "w", "other y=1"), 0);
    delivered(&f);
    // From now on what is written waits in the log.
    f.sink.set_down(true);
    let service = Arc::clone(&f.service);
    f.service.delivery.after_caught_up(move || {
        assert_eq!(write_lines(&service, "w", "m x=1"), 0);
    });
    reading(&f.service);
    assert_eq!(
        write_lines(&f.service, "w", "m x=\"s\""),
        1,
        "a string where a float waits to be written"
    );
}

/// On a full disk the snapshot written from the room kept for it lets the delivered segment
/// being written go while registers keep coming: none lands in that segment, or takes that
/// room, meanwhile. One that did kept the segment (its change not in the snapshot) with the
/// room spent, and the disk stayed full for good.
#[test]
fn a_snapshot_from_the_room_kept_for_it_lets_the_segment_go_while_registers_keep_coming() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (_disk, f, data) = on_small_disk("service-full-disk");
    register_until_full(&f);
    let log = f.service.delivery.log();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.undelivered().1 > 0 {
        assert!(Instant::now() < deadline, "the log is not delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = data.join("log").join(crate::storage::log::segment_name(1));
    assert!(first.exists(), "{}", first.display());

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let registers: Vec<_> = (0..2)
        .map(|t| {
            let (stop, answered, service) = (
                Arc::clone(&stop),
                Arc::clone(&answered),
                Arc::clone(&f.service),
            );
            let body = wide_run(100_000 * (t + 1));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let record = parse_register(body.as_bytes(), LIMITS).unwrap();
                    if service.register(record, "10.0.0.9", None, 1_000).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The heartbeat thread's look, once a second there: here until a snapshot is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = f.service.try_save_snapshot() {
        assert!(Instant::now() < deadline, "no snapshot written: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::Relaxed) < 3 {
        assert!(
            Instant::now() < deadline,
            "registers are answered again once the segment is let go"
        );
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for t in registers {
        t.join().unwrap();
    }
    assert!(
        !first.exists(),
        "the delivered segment being written is let go by the snapshot"
    );
    // Not full for good: the next snapshot is written too.
    f.service.try_save_snapshot().unwrap();
}

/// The room kept for the snapshot is spent once (registers filled the disk), then the disk
/// fills again while InfluxDB is away with commits, which do not grow the table: the room was
/// kept again right after the segments were let go, so once InfluxDB is back the next snapshot
/// fits and the disk is freed again (before, the reserve stayed empty and the disk full).
#[test]
fn a_disk_filled_again_by_commits_after_the_room_was_spent_is_freed_again() {
    let (_disk, f, _data) = on_small_disk("service-refill");
    let runs = register_until_full(&f);
    let log = f.service.delivery.log();
    let wait_delivered = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while log.undelivered().1 > 0 {
            assert!(Instant::now() < deadline, "the log is not delivered");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_delivered();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = f.service.try_save_snapshot() {
        assert!(Instant::now() < deadline, "no snapshot written: {e}");
    }
    eprintln!(
        "reserve after the first snapshot: {}",
        f.service.snapshots.reserve()
    );
    // InfluxDB away: the runs commit until the disk is full again.
    f.sink.set_down(true);
    let big = "c".repeat(30_000);
    let mut committed = 0;
    let full = loop {
        let Some(uuid) = runs.get(committed) else {
            panic!("all {committed} runs committed, the disk is not full");
        };
        let c = parse_commit(commit_body(*uuid, &big).as_bytes(), LIMITS).unwrap();
        match f.service.commit(c, None, 2_000) {
            Ok(_) => committed += 1,
            Err(e) => break e,
        }
    };
    eprintln!(
        "{committed} commits, then {full:?}; reserve {}",
        f.service.snapshots.reserve()
    );
    // InfluxDB back.
    f.sink.set_down(false);
    wait_delivered();
    freed(&f, "the disk stays full for good: no snapshot fits");
}

/// As registers do above, progress and commits racing the snapshot written from the room kept
/// for it land in no segment it lets go.
#[test]
fn a_snapshot_from_the_room_kept_for_it_lets_the_segment_go_while_progress_and_commits_race() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (_disk, f, data) = on_small_disk("service-race");
    let runs = register_until_full(&f);
    let log = f.service.delivery.log();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.undelivered().1 > 0 {
        assert!(Instant::now() < deadline, "the log is not delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = data.join("log").join(crate::storage::log::segment_name(1));
    assert!(first.exists());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(runs);
    let mut threads = Vec::new();
    for t in 0..4usize {
        let (stop, answered, service, runs) = (
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&f.service),
            Arc::clone(&runs),
        );
        let reg = wide_run(100_000 * (t + 1));
        threads.push(std::thread::spawn(move || {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let ok = match t {
                    0 => {
                        let record = parse_register(reg.as_bytes(), LIMITS).unwrap();
                        service.register(record, "10.0.0.9", None, 1_000).is_ok()
                    }
                    1 | 2 => {
                        let record =
                            parse_register(br#"{"measurement":{"fields":{"step":2}}}"#, LIMITS)
                                .unwrap();
                        service
                            .progress(runs[i % runs.len()], record, None, 1_500)
                            .is_ok()
                    }
                    _ => {
                        let c = parse_commit(
                            commit_body(runs[(i * 7) % runs.len()], "x").as_bytes(),
                            LIMITS,
                        )
                        .unwrap();
                        service.commit(c, None, 2_000).is_ok()
                    }
                };
                i += 3;
                if ok {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    while let Err(e) = f.service.try_save_snapshot() {
        tries += 1;
        assert!(
            Instant::now() < deadline,
            "no snapshot written after {tries}: {e}"
        );
    }
    eprintln!("snapshot after {tries} failed tries");
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::Relaxed) < 10 {
        assert!(Instant::now() < deadline, "requests are answered again");
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        !first.exists(),
        "the delivered segment is let go by the snapshot"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = f.service.try_save_snapshot() {
        assert!(Instant::now() < deadline, "not full for good: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (10 s at most each) until a snapshot is written, then a register is answered: the
/// full disk freed. `what` says what a timeout means.
fn freed(f: &Fixture, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = f.service.try_save_snapshot() {
        assert!(Instant::now() < deadline, "{what}: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = register(f, &wide_run(900_000)) {
        assert!(
            Instant::now() < deadline,
            "registers refused for good: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Registers runs with large fields (every heartbeat carries them) until `n` are running.
fn big_runs(f: &Fixture, n: usize) -> Vec<Uuid> {
    (0..n)
        .map(|i| register(f, &wide_run(i)).unwrap().uuid)
        .collect()
}

/// A service whose storage directory (`data`, its path returned) is on an 8 MiB tmpfs of its
/// own, acknowledging once on disk.
fn on_small_disk(
    name: &str,
) -> (
    crate::storage::tests::SmallDisk,
    Fixture,
    std::path::PathBuf,
) {
    let disk = crate::storage::tests::SmallDisk::new(name, "8m");
    let data = disk.0.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let f = fixture_in(Dir::at(&data), 5000, 1 << 30, Acknowledge::Disk);
    (disk, f, data)
}

/// The register body of a wide run (8 fields of 400 characters), started `i` seconds after a
/// fixed time.
fn wide_run(i: usize) -> String {
    let note = "n".repeat(400);
    let fields: Vec<String> = (0..8).map(|k| format!(r#""note{k}":"{note}""#)).collect();
    format!(
        r#"{{"startedAt":{},"hostname":"lg","measurement":{{"fields":{{{}}}}}}}"#,
        1_479_636_000 + i,
        fields.join(",")
    )
}

/// Registers wide runs until the disk is full (the refusal checked to say so): their uuids.
fn register_until_full(f: &Fixture) -> Vec<Uuid> {
    let mut runs = Vec::new();
    let full = loop {
        match register(f, &wide_run(runs.len())) {
            Ok(r) => runs.push(r.uuid),
            Err(e) => break e,
        }
        assert!(runs.len() < 5000, "the disk should be full by now");
    };
    assert!(
        matches!(full, Refused::NotRecorded(ref e) if e.is_disk_full()),
        "{full:?}"
    );
    runs
}

/// Ticks (InfluxDB away) until one drops its heartbeats for want of room; returns the ticks
/// recorded and the next `now`.
fn tick_until_full(f: &Fixture, mut now: i64) -> (usize, i64) {
    let dropped = || {
        f.service
            .stats
            .heartbeats_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = dropped();
    let mut ticks = 0;
    while dropped() == before {
        now += 1_000;
        f.service.tick(now);
        ticks += 1;
        assert!(ticks < 100_000, "the disk should be full by now");
    }
    (ticks, now)
}

fn wait_delivered(f: &Fixture) {
    let log = f.service.delivery.log();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.undelivered().1 > 0 {
        assert!(
            Instant::now() < deadline,
            "the log is not delivered: {:?}",
            log.undelivered()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A disk filled by heartbeats (ticks, which neither grow the table nor pass keep_room) three
/// times over, InfluxDB away each time and back after: each time the snapshot from the room
/// kept for it frees it, and ticks are recorded again.
#[test]
fn a_disk_filled_three_times_by_ticks_is_freed_each_time() {
    let (_disk, f, _data) = on_small_disk("fulldisk-ticks");
    let _runs = big_runs(&f, 40);
    wait_delivered(&f);
    f.service.try_save_snapshot().unwrap();
    let mut now = 1_479_636_100_000;
    for round in 1..=3 {
        f.sink.set_down(true);
        let (ticks, at) = tick_until_full(&f, now);
        now = at;
        eprintln!(
            "round {round}: {ticks} ticks until full; reserve {}",
            f.service.snapshots.reserve()
        );
        assert!(
            ticks > 1,
            "round {round}: the disk was still full from before"
        );
        // The next tick's drop is not told again within the minute: held back, counted.
        let (_, at) = tick_until_full(&f, now);
        now = at;
        assert_eq!(f.service.dropped_beats.admit(Instant::now()), None);
        f.sink.set_down(false);
        wait_delivered(&f);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = f.service.try_save_snapshot() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the disk stays full for good: {e}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A tick recorded again ends the streak: the next drop is told at once.
        now += 1_000;
        f.service.tick(now);
        assert_eq!(f.service.dropped_beats.admit(Instant::now()), Some(0));
        f.service.dropped_beats.reset();
    }
}

/// `storage.dir/reserve` deleted by hand while running, then the disk filled by commits:
/// the snapshot cannot be written and the log says how much to free; once that is freed by
/// hand, the gateway frees itself (the snapshot is written, segments let go, registers taken).
#[test]
fn a_reserve_deleted_by_hand_then_a_full_disk_is_freed_once_room_is_made() {
    let (disk, f, data) = on_small_disk("fulldisk-noreserve");
    let mut runs = big_runs(&f, 400);
    wait_delivered(&f);
    f.service.try_save_snapshot().unwrap();
    let reserve = data.join(crate::storage::RESERVE_FILE);
    assert!(std::fs::metadata(&reserve).unwrap().len() > 0);
    std::fs::remove_file(&reserve).unwrap();
    // InfluxDB away: commits (which do not grow the table, so keep no room) fill the disk.
    f.sink.set_down(true);
    let big = "c".repeat(30_000);
    let mut committed = 0;
    let full = loop {
        if committed == runs.len() {
            runs.extend(big_runs(&f, 1));
        }
        let c = parse_commit(commit_body(runs[committed], &big).as_bytes(), LIMITS).unwrap();
        match f.service.commit(c, None, 2_000) {
            Ok(_) => committed += 1,
            Err(e) => break e,
        }
        assert!(committed < 5000, "the disk should be full by now");
    };
    eprintln!("{committed} commits, then {full:?}");
    f.sink.set_down(false);
    wait_delivered(&f);
    let err = f.service.try_save_snapshot().unwrap_err();
    eprintln!("snapshot: {err}");
    assert!(err.to_string().contains("free at least"), "{err}");
    // A person makes room: the disk grown by 4 MiB.
    let status = std::process::Command::new("mount")
        .args(["-o", "remount,size=12m"])
        .arg(disk.0.path())
        .status()
        .unwrap();
    assert!(status.success());
    freed(&f, "not freed once room was made");
    let first = data.join("log").join(crate::storage::log::segment_name(1));
    assert!(!first.exists(), "the delivered segment is let go");
}

/// Fills the disk with commits of `runs` (registering more when they run out), InfluxDB away.
fn commit_until_full(f: &Fixture, runs: &mut Vec<Uuid>) -> Refused {
    f.sink.set_down(true);
    let big = "c".repeat(30_000);
    loop {
        let uuid = match runs.pop() {
            Some(u) => u,
            None => match big_runs_try(f) {
                Some(u) => u,
                None => return Refused::NotRecorded(LogError::Broken),
            },
        };
        let c = parse_commit(commit_body(uuid, &big).as_bytes(), LIMITS).unwrap();
        if let Err(e) = f.service.commit(c, None, 2_000) {
            return e;
        }
    }
}

fn big_runs_try(f: &Fixture) -> Option<Uuid> {
    let body = format!(
        r#"{{"startedAt":{},"hostname":"lg","measurement":{{"fields":{{"a":1}}}}}}"#,
        1_479_637_000 + f.service.jobs.bytes()
    );
    register(f, &body).ok().map(|r| r.uuid)
}

/// The way out of a full disk with a stop and start at each step: stopped full (InfluxDB
/// away), started full and delivered, stopped right after the snapshot from the room kept for
/// it, started and filled again; each start frees the disk once InfluxDB has the log.
#[test]
fn a_full_disk_restarted_at_each_step_of_the_way_out_is_freed() {
    let disk = crate::storage::tests::SmallDisk::new("fulldisk-restarts", "8m");
    let data = disk.0.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut f = fixture_in(Dir::at(&data), 5000, 1 << 30, Acknowledge::Disk);
    let mut runs = big_runs(&f, 400);
    wait_delivered(&f);
    f.service.try_save_snapshot().unwrap();
    for round in 1..=3 {
        let full = commit_until_full(&f, &mut runs);
        eprintln!(
            "round {round}: {full:?}, reserve {}",
            f.service.snapshots.reserve()
        );
        // Stopped full, InfluxDB away.
        drop(f);
        f = fixture_in(Dir::at(&data), 5000, 1 << 30, Acknowledge::Disk);
        wait_delivered(&f);
        // Stopped again delivered, before any snapshot.
        drop(f);
        f = fixture_in(Dir::at(&data), 5000, 1 << 30, Acknowledge::Disk);
        wait_delivered(&f);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = f.service.try_save_snapshot() {
            assert!(
                Instant::now() < deadline,
                "round {round}: full for good after a restart: {e}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Stopped right after the way out.
        drop(f);
        f = fixture_in(Dir::at(&data), 5000, 1 << 30, Acknowledge::Disk);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match big_runs_try(&f) {
                Some(u) => {
                    runs.push(u);
                    break;
                }
                None => assert!(
                    Instant::now() < deadline,
                    "round {round}: registers refused"
                ),
            }
            let _ = f.service.try_save_snapshot();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Registers, progress, commits and ticks race the way out of a full 8 MiB disk while InfluxDB
/// flaps (away and back every few milliseconds), the heartbeat thread's look trying the
/// snapshot all along: no request sticks behind the held writes, the disk is freed once
/// InfluxDB stays, and a start finds every acknowledged register and commit.
#[test]
fn requests_and_ticks_racing_the_way_out_with_influxdb_flapping_never_stick_and_lose_nothing() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (_disk, f, data) = on_small_disk("fulldisk-flap");
    let runs = big_runs(&f, 300);
    wait_delivered(&f);
    f.service.try_save_snapshot().unwrap();
    let runs = Arc::new(Mutex::new(runs));
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    let registered = Arc::new(Mutex::new(Vec::new()));
    let committed = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..5usize {
        let (stop, slowest, service, runs, registered, committed, answered) = (
            Arc::clone(&stop),
            Arc::clone(&slowest),
            Arc::clone(&f.service),
            Arc::clone(&runs),
            Arc::clone(&registered),
            Arc::clone(&committed),
            Arc::clone(&answered),
        );
        threads.push(std::thread::spawn(move || {
            let big = "c".repeat(20_000);
            let note = "n".repeat(3000);
            let mut i = 0usize;
            let mut now = 1_479_636_100_000i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let began = Instant::now();
                let ok = match t {
                    0 => {
                        let body = format!(
                            r#"{{"startedAt":{},"hostname":"lg","measurement":{{"fields":{{"note":"{note}"}}}}}}"#,
                            1_479_700_000 + i
                        );
                        let record = parse_register(body.as_bytes(), LIMITS).unwrap();
                        match service.register(record, "10.0.0.9", None, 1_000) {
                            Ok(r) => {
                                registered.lock().unwrap().push(r.uuid);
                                runs.lock().unwrap().push(r.uuid);
                                true
                            }
                            Err(e) => {
                                if i % 200 == 1 {
                                    eprintln!("register: {e:?}");
                                }
                                false
                            }
                        }
                    }
                    1 => {
                        let uuid = runs.lock().unwrap().get(i * 7 % 50).copied();
                        let record = parse_register(
                            format!(r#"{{"measurement":{{"fields":{{"step":{i}}}}}}}"#).as_bytes(),
                            LIMITS,
                        )
                        .unwrap();
                        uuid.is_some_and(|u| service.progress(u, record, None, 1_500).is_ok())
                    }
                    2 => {
                        let uuid = runs.lock().unwrap().pop();
                        match uuid {
                            Some(u) => {
                                let c = parse_commit(commit_body(u, &big).as_bytes(), LIMITS)
                                    .unwrap();
                                match service.commit(c, None, 2_000) {
                                    Ok(_) => {
                                        committed.lock().unwrap().push(u);
                                        true
                                    }
                                    Err(e) => {
                                        if i % 200 == 1 {
                                            eprintln!("commit: {e:?}");
                                        }
                                        runs.lock().unwrap().insert(0, u);
                                        false
                                    }
                                }
                            }
                            None => false,
                        }
                    }
                    3 => {
                        now += 1_000;
                        service.tick(now);
                        std::thread::sleep(Duration::from_millis(50));
                        false
                    }
                    _ => {
                        // The heartbeat thread's look.
                        if service.delivery.log().needs_snapshot() {
                            service.save_snapshot();
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        false
                    }
                };
                slowest.fetch_max(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                if ok {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let end = Instant::now() + Duration::from_secs(8);
    let mut down = false;
    while Instant::now() < end {
        down = !down;
        f.sink.set_down(down);
        std::thread::sleep(Duration::from_millis(if down { 30 } else { 7 }));
    }
    f.sink.set_down(false);
    let before = answered.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered.load(Ordering::Relaxed) < before + 20 {
        assert!(
            Instant::now() < deadline,
            "requests are not answered again once InfluxDB stays"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stayed = deadline - Duration::from_secs(15);
    eprintln!(
        "answered again {:?} after InfluxDB stayed",
        stayed.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let slowest = slowest.load(Ordering::Relaxed);
    eprintln!(
        "slowest {slowest} ms; {} registers, {} commits acknowledged; reserve {}",
        registered.lock().unwrap().len(),
        committed.lock().unwrap().len(),
        f.service.snapshots.reserve()
    );
    // A deadline against a request stuck behind the held writes, not a measure of speed.
    assert!(slowest < 60_000, "a request or tick waited {slowest} ms");
    drop(f);
    let f = fixture_in(Dir::at(&data), 5000, 1 << 30, Acknowledge::Disk);
    for u in committed.lock().unwrap().iter() {
        let s = state(&f, *u);
        assert!(
            matches!(s, None | Some(State::Finished { .. })),
            "acknowledged commit of {u} lost: {s:?}"
        );
    }
    let committed = committed.lock().unwrap().clone();
    for u in registered.lock().unwrap().iter() {
        assert!(
            committed.contains(u) || state(&f, *u).is_some(),
            "acknowledged register of {u} lost"
        );
    }
}

/// A token's runs' heartbeats are charged to its share of the log: while InfluxDB is away, one
/// token's many large runs lose their own heartbeats at its share, and never fill the log for
/// another token, which still registers within its own.
#[test]
fn one_token_s_heartbeats_never_fill_the_log_for_another() {
    let f = fixture_shares(
        Dir::new("service-heartbeat-shares"),
        10,
        4 << 20,
        Acknowledge::Disk,
        &[("team-a", 2 << 20), ("team-b", 2 << 20)],
    );
    f.sink.set_ping_fails(true);
    f.sink.answer(std::iter::repeat_n(
        crate::delivery::sink::testing::Answer::Fail(
            crate::delivery::sink::SinkError::Unreachable("connection refused".into()),
        ),
        100_000,
    ));
    let quota = |owner| Quota {
        owner,
        max_running: 10,
        max_bytes: 1 << 20,
        max_spool_bytes: 2 << 20,
    };
    let body = format!(
        r#"{{"measurement": {{"fields": {{"big": "{}"}}}}}}"#,
        "x".repeat(60_000)
    );
    for _ in 0..3 {
        f.service
            .register(
                parse_register(body.as_bytes(), LIMITS).unwrap(),
                "h",
                Some(quota("team-a")),
                1_000,
            )
            .unwrap();
    }
    let dropped = || {
        f.service
            .stats
            .heartbeats_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut now = 1_000;
    let mut ticks = 0;
    while dropped() == 0 && ticks < 1000 {
        now += 1_000;
        f.service.tick(now);
        ticks += 1;
    }
    assert!(
        dropped() > 0,
        "team-a's heartbeats were never held to its share"
    );
    let log = f.service.delivery.log();
    assert!(
        log.undelivered_of("team-a") <= (2 << 20) + (8 << 20) + (64 << 10),
        "team-a holds {}",
        log.undelivered_of("team-a")
    );
    f.service
        .register(
            parse_register(body.as_bytes(), LIMITS).unwrap(),
            "h",
            Some(quota("team-b")),
            now,
        )
        .expect("team-b registers within its share");
}

/// The write API may not write the runs' measurements where the runs' points go: their types
/// are the run API's to claim, and a write there went unseen by it. Another measurement there,
/// and the runs' measurements in another database, are written.
#[test]
fn the_write_api_may_not_write_the_runs_measurements_where_the_runs_go() {
    let f = fixture("service-own-target", 10, 1 << 20);
    let refused = write_to(
        &f.service,
        RUNS_DATABASE,
        "autogen",
        "k6 v=1\nload_testing users=\"many\"",
    )
    .unwrap_err();
    let told = refused.to_string();
    assert!(
        matches!(
            refused,
            super::write::WriteRefused::RunMeasurement { line: 2, .. }
        ),
        "{told}"
    );
    assert!(
        told.contains("\"load_testing\"") && told.contains("nothing of this write was recorded"),
        "{told}"
    );
    assert_eq!(
        f.service.delivery.log().undelivered().0,
        0,
        "nothing recorded"
    );
    // A run's users=5 is then taken: no other type of it was acknowledged.
    let run = register(&f, r#"{"measurement":{"fields":{"users":5}}}"#);
    assert!(run.is_ok(), "{run:?}");
    assert_eq!(write_lines(&f.service, RUNS_DATABASE, "k6 v=1"), 0);
    assert_eq!(
        write_lines(&f.service, "w", "load_testing users=\"many\""),
        0
    );
}

/// A run whose host, tags and field names sit at compact_str's inline boundary
/// (24 and 25 bytes, multi-byte UTF-8 across byte 24), with escapes, through a progress that
/// adds a field, an expiry, a progress that revives it, and a commit whose tags replace and add
/// to the register's: the heartbeats carry them escaped, and the result keeps them as sent.
#[test]
fn names_at_the_inline_boundary_go_through_expiry_revival_and_a_commit_with_tags() {
    let f = fixture("service-inline-boundary", 10, 1 << 20);
    let t0 = Instant::now();
    f.service.clock.set(t0);
    let k24 = "k".repeat(24);
    let k25 = "q".repeat(25);
    let v25 = format!("{}é", "v".repeat(23));
    let host = format!("{}€", "h".repeat(22));
    let body = format!(
        r#"{{"hostname":"{host}","tags":{{"{k24}":"a b,c=d","{k25}":"{v25}"}},"measurement":{{"fields":{{"{k25}x":1}}}}}}"#
    );
    let uuid = register(&f, &body).unwrap().uuid;
    let job = f.service.jobs.list(1)[0].clone();
    assert_eq!(job.run.host, host.as_str());
    let z = "z".repeat(24);
    progress(
        &f,
        uuid,
        &format!(r#"{{"measurement":{{"fields":{{"{z}":"s"}}}}}}"#),
        1_500,
    )
    .unwrap();
    f.service.clock.set(t0 + Duration::from_secs(3600));
    f.service.tick(1_000 + 3_600_000);
    assert!(matches!(state(&f, uuid), Some(State::Expired { .. })));
    progress(
        &f,
        uuid,
        r#"{"measurement":{"fields":{"step":2}}}"#,
        3_700_000,
    )
    .unwrap();
    let job = f.service.jobs.list(1)[0].clone();
    let names: Vec<&str> = job.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, [format!("{k25}x").as_str(), z.as_str(), "step"]);
    let n = f.sink.stored().len();
    f.service.clock.set(t0 + Duration::from_secs(3601));
    f.service.tick(1_000 + 3_601_000);
    let beat = stored(&f, n + 1)
        .into_iter()
        .rev()
        .find(|l| l.starts_with("load_testing,") && l.contains("step=2"))
        .unwrap();
    assert!(
        beat.contains(&format!(
            ",host={host},{k24}=a\\ b\\,c\\=d,{k25}={v25},uuid={uuid} {k25}x=1,{z}=\"s\",step=2,"
        )),
        "{beat}"
    );
    // The commit replaces the 25-byte tag's value with a 24-byte one and adds one.
    let w24 = format!("{}é", "w".repeat(22));
    let body = format!(
        r#"{{"uuid":"{uuid}","tags":{{"{k25}":"{w24}","new":"{v25}"}},"measurement":{{"fields":{{"note":""}}}}}}"#
    );
    f.service
        .commit(
            parse_commit(body.as_bytes(), LIMITS).unwrap(),
            None,
            3_702_000,
        )
        .unwrap();
    let result = f.service.results.get(&uuid, None).unwrap();
    assert_eq!(result.host, host);
    let mut tags = result.tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        [
            (k24.clone(), "a b,c=d".to_string()),
            ("new".to_string(), v25.clone()),
            (k25.clone(), w24.clone()),
        ]
    );
}

/// A write's lines are cut into units by the deliverer's rule: a unit keeps to a write's byte
/// and line limits, and only a single line larger than a write goes alone over them. (The
/// units were once cut after a line went over, so that one could ask InfluxDB for more than
/// `influxdb.max_write_bytes`.)
#[test]
fn a_write_s_units_keep_to_a_write_s_limits() {
    let lines = ["a v=1 1\n", "b v=2 2\n", "c v=3 3\n", "d v=4444444444 4\n"];
    let mut text = String::new();
    let mut ends = Vec::new();
    for line in lines {
        text.push_str(line);
        ends.push(text.len());
    }
    let cut = |max_bytes, max_lines| {
        let limits = WriteLimits {
            max_bytes,
            max_lines,
            linger: Duration::ZERO,
        };
        super::write::cut_units(&text, &ends, &limits)
            .iter()
            .map(|u| (u.points, u.lines.to_string()))
            .collect::<Vec<_>>()
    };
    // 8-byte lines and a 17-byte one: 20 bytes hold two short lines, never the third's start.
    assert_eq!(
        cut(20, 100),
        [
            (2, "a v=1 1\nb v=2 2\n".to_string()),
            (1, "c v=3 3\n".to_string()),
            (1, "d v=4444444444 4\n".to_string()),
        ]
    );
    // A line larger than a write goes alone.
    assert_eq!(cut(10, 100).len(), 4);
    assert!(cut(10, 100).iter().all(|(points, _)| *points == 1));
    // The line limit.
    assert_eq!(
        cut(1 << 20, 3)
            .iter()
            .map(|(points, _)| *points)
            .collect::<Vec<_>>(),
        [3, 1]
    );
    // Everything in one unit when it fits; the units together are the text.
    assert_eq!(cut(1 << 20, 100), [(4, text.clone())]);
    assert_eq!(
        cut(9, 2)
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<String>(),
        text
    );
}

/// A first write to a database waits for InfluxDB's word on it from the moment the schema
/// reader is made, before its thread runs: a write handled first would otherwise be checked
/// without it (and take a line InfluxDB refuses for its field type).
#[test]
fn a_first_write_waits_for_the_schema_reader_before_its_thread_runs() {
    let f = fixture("service-schema-reader-made", 10, 1 << 20);
    let unread = |service: &Service| {
        matches!(
            service.write_schemas.retention_of("k6", "", "k6"),
            write::TargetRetention::Unread { .. }
        )
    };
    // The control: no reader, no wait.
    assert!(unread(&f.service));
    let started = std::time::Instant::now();
    f.service
        .write_schemas
        .wait_read("k6", "", Duration::from_secs(20));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no reader runs"
    );
    let sink: Arc<dyn crate::delivery::sink::Sink> = f.sink.clone();
    let reader = f.service.schema_reader(Duration::from_secs(60), sink);
    assert!(unread(&f.service));
    let started = std::time::Instant::now();
    f.service
        .write_schemas
        .wait_read("k6", "", Duration::from_millis(50));
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "waited for the reader"
    );
    drop(reader);
}
