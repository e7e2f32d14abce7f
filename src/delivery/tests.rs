//! Every outcome of a write, in-process, through the in-memory sink and a real log in a
//! temporary directory: stored; refused alone, in a shared write, or as a run's heartbeat;
//! too large, or cut off while sending; unreachable, timed out, busy or misconfigured and
//! then back; a sink that panics; the acknowledgement modes; the health the state page
//! shows; the bound on the dead letters. Against a real `influxd` through the binary too
//! (`tests/it/delivery.rs`).

use super::*;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::delivery::sink::testing::{Answer, MemorySink};
use crate::ingest::line_protocol;
use crate::storage::dead_letters;
use crate::storage::log::{OwnedTarget, Position};
use crate::storage::tests::Dir;

struct Running {
    delivery: Arc<Delivery>,
    sink: Arc<MemorySink>,
    stats: Arc<Stats>,
    dir: Dir,
    position: Option<Position>,
    deliverer: Option<JoinHandle<()>>,
}

impl Running {
    /// The deliverer goes to work (records appended before wait for it, so they are
    /// written together).
    fn start(&mut self) {
        let (d, stats) = (Arc::clone(&self.delivery), Arc::clone(&self.stats));
        let at = self.position.take().unwrap();
        self.deliverer = Some(std::thread::spawn(move || d.run(at, &stats)));
    }

    /// Appends a request's record without waiting for its answer; its ticket.
    fn append(&self, lines: &str) -> u64 {
        let points = line_protocol::split_lines(lines).count() as u32;
        self.delivery
            .log
            .append(
                Kind::Request,
                0,
                b"",
                &[Unit {
                    run: Uuid::nil(),
                    points,
                    lines,
                }],
                None,
            )
            .unwrap()
    }

    /// A request's record, and the answer it gets.
    fn request(&self, lines: &str) -> Outcome {
        let seq = self.record_request(lines);
        self.delivery.outcome(seq)
    }

    /// A request's record of `lines`, on disk: its number.
    fn record_request(&self, lines: &str) -> u64 {
        let points = line_protocol::split_lines(lines).count() as u32;
        self.delivery
            .record(
                Kind::Request,
                &Change::default(),
                &[Unit {
                    run: Uuid::nil(),
                    points,
                    lines,
                }],
                None,
                &self.stats,
            )
            .unwrap()
    }

    /// A tick's record: one heartbeat unit per run.
    fn heartbeats(&self, beats: &[(Uuid, String)]) {
        let units: Vec<Unit<'_>> = beats
            .iter()
            .map(|(run, line)| Unit {
                run: *run,
                points: 1,
                lines: line,
            })
            .collect();
        self.delivery
            .record(
                Kind::Heartbeats,
                &Change::default(),
                &units,
                None,
                &self.stats,
            )
            .unwrap();
    }

    /// Waits (60 s at most: a busy machine is slow to write a thousand dead letters)
    /// until `done` holds.
    fn until(&self, what: &str, done: impl Fn(&Running) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn delivered_all(&self) {
        self.until("every record delivered", |r| {
            r.delivery.log.undelivered().0 == 0
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.delivery.stop();
        if let Some(t) = self.deliverer.take() {
            let _ = t.join();
        }
    }
}

fn setup(name: &str, acknowledge: Acknowledge, limits: WriteLimits, dead_limit: u64) -> Running {
    setup_waiting(
        name,
        acknowledge,
        limits,
        dead_limit,
        Duration::from_secs(5),
    )
}

/// [`setup`] with requests in `"influxdb"` mode waiting `wait_at_most` for InfluxDB.
fn setup_waiting(
    name: &str,
    acknowledge: Acknowledge,
    limits: WriteLimits,
    dead_limit: u64,
    wait_at_most: Duration,
) -> Running {
    let sink = |memory: &Arc<MemorySink>| Box::new(Arc::clone(memory)) as Box<dyn Sink>;
    setup_over(name, acknowledge, limits, dead_limit, wait_at_most, sink)
}

/// [`setup_waiting`], delivering to the sink `sink` makes over the in-memory one.
fn setup_over(
    name: &str,
    acknowledge: Acknowledge,
    limits: WriteLimits,
    dead_limit: u64,
    wait_at_most: Duration,
    sink_over: impl FnOnce(&Arc<MemorySink>) -> Box<dyn Sink>,
) -> Running {
    let dir = Dir::new(name);
    let sink = Arc::new(MemorySink::new());
    let (log, position, _) = Log::open(
        crate::storage::tests::log_dir(dir.path()),
        1 << 30,
        false,
        &mut |_| {},
    )
    .unwrap();
    let delivery = Arc::new(Delivery::new(
        log,
        sink_over(&sink),
        DeadLetters::open(&crate::storage::tests::root(&dir), dead_limit).unwrap(),
        acknowledge,
        wait_at_most,
        limits,
    ));
    Running {
        delivery,
        sink,
        stats: Arc::new(Stats::default()),
        dir,
        position: Some(position),
        deliverer: None,
    }
}

/// Batches written at once: most tests here count writes made one by one.
const LIMITS: WriteLimits = WriteLimits {
    max_bytes: 1 << 20,
    max_lines: 5000,
    linger: Duration::ZERO,
};

fn started(name: &str) -> Running {
    let mut r = setup(name, Acknowledge::Influxdb, LIMITS, 1 << 20);
    r.start();
    r
}

#[test]
fn a_stored_request_is_answered_delivered() {
    let r = started("delivery-stored");
    assert_eq!(r.request("m,r=a v=1 1\nm,r=a v=2 2\n"), Outcome::Delivered);
    assert_eq!(r.sink.stored(), ["m,r=a v=1 1", "m,r=a v=2 2"]);
    assert_eq!(Stats::get(&r.stats.points_written), 2);
    assert_eq!(r.delivery.influx_up(), Some(true));
    r.delivered_all();
}

#[test]
fn refused_data_goes_to_the_dead_letters_and_the_request_learns_why() {
    for (name, answer, status) in [
        (
            "refused",
            SinkError::Refused {
                status: 400,
                message: "partial write: field type conflict".into(),
                lines: None,
            },
            400,
        ),
        (
            "too-large",
            SinkError::TooLarge {
                message: "request entity too large".into(),
            },
            413,
        ),
        (
            "unprocessable",
            SinkError::from_status(422, "schema conflict".into()),
            422,
        ),
    ] {
        let r = started(&format!("delivery-{name}"));
        r.sink.answer([Answer::Fail(answer)]);
        // A 413 refuses a line alone only when the line could be too large: over 1 KiB.
        let line = if status == 413 {
            format!("m,r=a v=\"{}\" 1\n", "x".repeat(1100))
        } else {
            "m,r=a v=1 1\n".to_string()
        };
        let outcome = r.request(&line);
        match &outcome {
            Outcome::DeadLettered(why) => {
                assert!(
                    why.contains(&format!("influxdb answered {status}")),
                    "{why}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
        let letters = dead_letters::list(r.dir.path()).unwrap();
        assert_eq!(letters.len(), 1, "{name}");
        assert_eq!(dead_letters::read(&letters[0].0).unwrap(), line);
        assert_eq!(
            r.delivery.influx_up(),
            Some(true),
            "{name}: a refusal is an answer"
        );
        // What follows is delivered: a refusal never blocks the log.
        assert_eq!(r.request("m,r=b v=1 1\n"), Outcome::Delivered, "{name}");
    }
}

/// A 413 to a single line of no more than 1 KiB cannot be about the line: the body limit of
/// InfluxDB (or of a proxy in front of it) is set below any write. The point is kept and
/// delivered once the limit is raised, never dead-lettered.
#[test]
fn a_413_to_a_small_line_keeps_it_for_when_the_body_limit_is_raised() {
    let r = started("delivery-413-small");
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    let too_large = || {
        Answer::Fail(SinkError::TooLarge {
            message: "request entity too large".into(),
        })
    };
    r.sink.answer([too_large(), too_large()]);
    assert_eq!(r.request("m,r=a v=1 1\n"), Outcome::Recorded);
    let error = r.delivery.health().last_error.unwrap().1;
    assert!(error.contains("a single line of 12 bytes"), "{error}");
    assert_eq!(r.delivery.influx_up(), Some(false));
    r.delivered_all();
    assert_eq!(r.sink.stored(), ["m,r=a v=1 1"]);
    assert!(dead_letters::list(r.dir.path()).unwrap().is_empty());
}

/// Once a 413 came to a line no body limit should refuse, a 413 to a longer line alone is not
/// taken as about that line either, until a write is stored again: both wait, and both are
/// delivered once the limit is raised.
#[test]
fn after_a_413_to_a_small_line_a_413_to_a_long_one_keeps_it_too() {
    let mut r = setup("delivery-413-long", Acknowledge::Disk, LIMITS, 1 << 20);
    r.sink.refuse_bodies_over(0);
    let long = format!("m,r=b v=\"{}\" 2\n", "x".repeat(1200));
    for lines in ["m,r=a v=1 1\n", long.as_str()] {
        let t = r.append(lines);
        r.delivery.log.wait(t).unwrap();
    }
    r.start();
    r.until("the long line written alone", |r| {
        r.sink.bodies().iter().any(|b| b == &long)
    });
    r.sink.refuse_bodies_over(usize::MAX);
    r.delivered_all();
    assert!(dead_letters::list(r.dir.path()).unwrap().is_empty());
    assert_eq!(r.sink.stored().len(), 2);
}

#[test]
fn a_failure_that_may_pass_keeps_the_points_and_delivers_them_once_influxdb_answers() {
    for (name, e) in [
        (
            "unreachable",
            SinkError::Unreachable("connection refused".into()),
        ),
        ("timeout", SinkError::TimedOut("timeout: global".into())),
        ("busy", SinkError::from_status(503, "busy".into())),
        ("throttled", SinkError::from_status(429, "slow down".into())),
        (
            "credentials",
            SinkError::from_status(401, "authorization failed".into()),
        ),
        (
            "database",
            SinkError::from_status(404, "database not found".into()),
        ),
    ] {
        let r = started(&format!("delivery-retry-{name}"));
        r.until("the start's probe", |r| {
            r.delivery.influx_up() == Some(true)
        });
        r.sink
            .answer([Answer::Fail(e.clone()), Answer::Fail(e.clone())]);
        // In "influxdb" mode the request waits for the first write, which fails: it is
        // answered as recorded, not delivered.
        assert_eq!(r.request("m,r=a v=1 1\n"), Outcome::Recorded, "{name}");
        assert_eq!(r.delivery.influx_up(), Some(false), "{name}");
        assert!(r.delivery.health().last_error.is_some());
        // Later requests do not wait while InfluxDB is down.
        let started = Instant::now();
        assert_eq!(r.request("m,r=b v=1 1\n"), Outcome::Recorded, "{name}");
        assert!(started.elapsed() < Duration::from_secs(1), "{name}");
        // The probe answers: both are delivered, in order, once each.
        r.delivered_all();
        assert_eq!(r.sink.stored(), ["m,r=a v=1 1", "m,r=b v=1 1"], "{name}");
        assert_eq!(r.delivery.influx_up(), Some(true), "{name}");
        assert_eq!(Stats::get(&r.stats.points_replayed), 2, "{name}");
        assert!(
            dead_letters::list(r.dir.path()).unwrap().is_empty(),
            "{name}"
        );
    }
}

/// `points_replayed` counts the points stored after a failed try, not those InfluxDB refused
/// once it answered.
#[test]
fn points_refused_after_a_failed_try_are_not_counted_as_replayed() {
    let r = started("delivery-replayed-refused");
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    r.sink.refuse_lines_with("r=bad");
    r.sink
        .answer([Answer::Fail(SinkError::from_status(503, "busy".into()))]);
    // The first write fails; then the good request is stored and the bad one refused.
    assert_eq!(
        r.request("m,r=good v=1 1\nm,r=good v=2 2\n"),
        Outcome::Recorded
    );
    assert_eq!(r.request("m,r=bad v=1 1\n"), Outcome::Recorded);
    r.delivered_all();
    assert!(!r.sink.stored().iter().any(|l| l.contains("r=bad")));
    assert_eq!(Stats::get(&r.stats.points_written), 2);
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 1);
    assert_eq!(Stats::get(&r.stats.points_replayed), 2);
}

/// A batch split to find a refused request, whose later part meets a failure that may pass
/// (a 503): what the earlier parts settled stays settled. The next try writes only what is
/// left, so no point is written or counted twice, and no refusal is dead-lettered or counted
/// twice.
#[test]
fn what_a_failed_try_settled_is_neither_written_nor_counted_again() {
    let busy = || Answer::Fail(SinkError::from_status(503, "busy".into()));
    for (name, records, answers) in [
        // The good request stored, then the refused one meets the 503.
        (
            "stored-first",
            ["m,r=good v=1 1\nm,r=good v=2 2\n", "m,r=bad v=1 1\n"],
            vec![Answer::AsUsual, Answer::AsUsual, busy()],
        ),
        // The refused request dead-lettered, then the good one meets the 503.
        (
            "refused-first",
            ["m,r=bad v=1 1\n", "m,r=good v=1 1\nm,r=good v=2 2\n"],
            vec![Answer::AsUsual, Answer::AsUsual, busy()],
        ),
    ] {
        let mut r = setup(
            &format!("delivery-carried-{name}"),
            Acknowledge::Disk,
            LIMITS,
            1 << 20,
        );
        r.sink.refuse_lines_with("r=bad");
        r.sink.answer(answers);
        let last = records.iter().map(|lines| r.append(lines)).max().unwrap();
        r.delivery.log.wait(last).unwrap();
        r.start();
        r.delivered_all();
        assert_eq!(Stats::get(&r.stats.points_written), 2, "{name}");
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 1, "{name}");
        assert_eq!(Stats::get(&r.stats.points_dropped), 0, "{name}");
        assert_eq!(dead_letters::list(r.dir.path()).unwrap().len(), 1, "{name}");
        // Written alone once each: the whole batch (refused), each request alone (one of
        // them 503), then only the one the 503 met.
        let bodies = r.sink.bodies();
        let alone = |lines: &str| bodies.iter().filter(|b| b.as_str() == lines).count();
        assert_eq!(bodies.len(), 4, "{name}: {bodies:?}");
        let (settled_first, met_the_503) = (records[0], records[1]);
        assert_eq!(alone(settled_first), 1, "{name}: {bodies:?}");
        assert_eq!(alone(met_the_503), 2, "{name}: {bodies:?}");
    }
}

/// In `"influxdb"` mode a request that reads its outcome after its record was settled (a late
/// reader, `a_refusal_is_told_to_its_request_however_many_records_were_settled_since`) learns
/// that it was dead-lettered, also when the refusal was found by a try that then met a 503:
/// `Carried::keep` must not drop the try's `dead`.
#[test]
fn a_refusal_found_before_a_failure_is_still_told_to_its_request() {
    let mut r = setup(
        "delivery-carried-refusal-told",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    r.sink.refuse_lines_with("r=bad");
    // The whole batch refused, the bad request alone refused (dead-lettered), then the good
    // one alone meets a 503; the next try writes only the good one.
    r.sink.answer([
        Answer::AsUsual,
        Answer::AsUsual,
        Answer::Fail(SinkError::from_status(503, "busy".into())),
    ]);
    let bad = r.append("m,r=bad v=1 1\n");
    let good = r.append("m,r=good v=1 1\nm,r=good v=2 2\n");
    r.delivery.log.wait(good).unwrap();
    r.start();
    r.delivered_all();
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 1);
    assert_eq!(r.delivery.outcome(good), Outcome::Delivered);
    assert!(
        matches!(r.delivery.outcome(bad), Outcome::DeadLettered(_)),
        "{:?}: its points are in the dead letters",
        r.delivery.outcome(bad)
    );
}

/// A unit cut in halves (its write too large), whose second half meets a 503: the next try
/// writes that half alone, and when it is refused it is dead-lettered under its own place in
/// the unit.
#[test]
fn a_unit_cut_before_a_failure_goes_again_from_where_it_was_cut() {
    let mut r = setup(
        "delivery-carried-halves",
        Acknowledge::Disk,
        LIMITS,
        1 << 20,
    );
    r.sink.refuse_lines_with("r=bad");
    r.sink.answer([
        Answer::Fail(SinkError::TooLarge {
            message: "request entity too large".into(),
        }),
        Answer::AsUsual,
        Answer::Fail(SinkError::from_status(503, "busy".into())),
    ]);
    let seq = r.append("m,r=a v=1 1\nm,r=b v=1 1\nm,r=bad v=1 1\nm,r=d v=1 1\n");
    r.delivery.log.wait(seq).unwrap();
    r.start();
    r.delivered_all();
    let bodies = r.sink.bodies();
    assert_eq!(
        bodies[..4],
        [
            "m,r=a v=1 1\nm,r=b v=1 1\nm,r=bad v=1 1\nm,r=d v=1 1\n",
            "m,r=a v=1 1\nm,r=b v=1 1\n",
            "m,r=bad v=1 1\nm,r=d v=1 1\n",
            "m,r=bad v=1 1\nm,r=d v=1 1\n",
        ],
        "{bodies:?}"
    );
    assert!(
        !bodies[4..].iter().any(|b| b.contains("r=a ")),
        "{bodies:?}"
    );
    // A piece alone refused is dead-lettered whole: the half that met the 503, under the
    // place of its first line in the unit.
    assert_eq!(Stats::get(&r.stats.points_written), 2);
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 2);
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    let name = letters[0]
        .0
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with("-0.2-2.lp"), "{name}");
    assert_eq!(
        dead_letters::read(&letters[0].0).unwrap(),
        "m,r=bad v=1 1\nm,r=d v=1 1\n"
    );
}

/// How far the log is delivered is saved once the deliverer has nothing left to deliver for a
/// moment, not only every few seconds while it delivers: a crash after a burst then a quiet
/// spell sends InfluxDB nothing again.
#[test]
fn the_delivered_mark_is_saved_when_delivery_goes_quiet() {
    let r = started("delivery-mark-quiet");
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    for n in 0..20 {
        assert_eq!(r.request(&format!("m v={n} {n}\n")), Outcome::Delivered);
    }
    let last = r.delivery.log().undelivered();
    assert_eq!(last.0, 0);
    let mark = || {
        std::fs::read(r.dir.path().join("log/delivered"))
            .ok()
            .and_then(|b| crate::storage::record::decode_delivered(&b).ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while mark() != Some(20) {
        assert!(Instant::now() < deadline, "the mark says {:?}", mark());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `points_replayed` counts what waited through InfluxDB's trouble: the points of records
/// written before it took writes again, once stored; not those written after.
#[test]
fn points_written_before_influxdb_came_back_are_replayed_and_later_ones_are_not() {
    let mut r = setup(
        "delivery-replayed-window",
        Acknowledge::Disk,
        LIMITS,
        1 << 20,
    );
    r.sink.set_down(true);
    let t = r.append("m,r=a v=1 1\n");
    r.delivery.log.wait(t).unwrap();
    r.start();
    r.until("the first write failed", |r| {
        r.delivery.influx_up() == Some(false)
    });
    for n in 0..10 {
        let t = r.append(&format!("m,r=b v={n} {n}\n"));
        r.delivery.log.wait(t).unwrap();
    }
    r.sink.set_down(false);
    r.delivered_all();
    assert_eq!(Stats::get(&r.stats.points_replayed), 11);
    for n in 0..5 {
        let t = r.append(&format!("m,r=c v={n} {n}\n"));
        r.delivery.log.wait(t).unwrap();
    }
    r.delivered_all();
    assert_eq!(Stats::get(&r.stats.points_written), 16);
    assert_eq!(Stats::get(&r.stats.points_replayed), 11);
}

#[test]
fn a_refusal_is_told_to_its_request_however_many_records_were_settled_since() {
    let r = setup(
        "delivery-late-reader",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    r.delivery
        .settle(5, vec![(5, "influxdb answered 400".into())]);
    r.delivery.settle(500_000, Vec::new());
    match r.delivery.outcome(5) {
        Outcome::DeadLettered(why) => assert!(why.contains("400"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.delivery.outcome(6), Outcome::Delivered);
}

#[test]
fn a_refused_request_in_a_shared_write_is_dead_lettered_alone() {
    let mut r = setup("delivery-shared", Acknowledge::Influxdb, LIMITS, 1 << 20);
    r.sink.refuse_lines_with("r=bad");
    for name in ["a", "b", "bad", "c", "d"] {
        r.append(&format!("m,r={name} v=1 1\nm,r={name} v=2 2\n"));
    }
    let last = r.append("m,r=e v=1 1\n");
    r.delivery.log.wait(last).unwrap();
    r.start();
    r.delivered_all();
    let bodies = r.sink.bodies();
    assert!(
        bodies[0].lines().count() == 11,
        "the six requests went as one write first: {bodies:?}"
    );
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        dead_letters::read(&letters[0].0).unwrap(),
        "m,r=bad v=1 1\nm,r=bad v=2 2\n"
    );
    let stored = r.sink.stored();
    for good in ["r=a", "r=b", "r=c", "r=d", "r=e"] {
        assert!(
            stored.iter().any(|l| l.contains(good)),
            "{good}: {stored:?}"
        );
    }
    assert!(!stored.iter().any(|l| l.contains("r=bad")));
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 2);
    // The request that was refused learns it; the others do not.
    assert!(matches!(r.delivery.outcome(3), Outcome::DeadLettered(_)));
    assert_eq!(r.delivery.outcome(2), Outcome::Delivered);
}

#[test]
fn a_refused_heartbeat_is_dead_lettered_once_per_run_and_reason_and_counted_after() {
    let r = started("delivery-heartbeats");
    r.sink.refuse_lines_with("clients=\"ten\"");
    let runs: Vec<Uuid> = (1..=5).map(Uuid::from_u128).collect();
    for tick in 1..=4 {
        let beats: Vec<(Uuid, String)> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let clients = if i == 4 {
                    "\"ten\"".to_string()
                } else {
                    "5".to_string()
                };
                (
                    *run,
                    format!("load_testing,uuid={run} clients={clients} {tick}\n"),
                )
            })
            .collect();
        r.heartbeats(&beats);
    }
    r.delivered_all();
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(
        letters.len(),
        1,
        "one dead letter for the run and its reason"
    );
    assert!(
        dead_letters::read(&letters[0].0)
            .unwrap()
            .contains(&runs[4].to_string())
    );
    assert_eq!(Stats::get(&r.stats.heartbeats_refused), 4);
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 1);
    let refusals = r.delivery.refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[&runs[4]].count, 4);
    // The four good runs' heartbeats are all stored, every tick (InfluxDB stores the good
    // lines of a partial write, and the same line again is the same point: counted once).
    let stored: std::collections::HashSet<String> = r.sink.stored().into_iter().collect();
    for run in &runs[..4] {
        let beats = stored
            .iter()
            .filter(|l| l.contains(&run.to_string()))
            .count();
        assert_eq!(beats, 4, "{run}");
    }
    // A new reason is dead-lettered again, once.
    r.sink.refuse_lines_with("clients=\"eleven\"");
    for tick in 5..=6 {
        r.heartbeats(&[(
            runs[4],
            format!("load_testing,uuid={} clients=\"eleven\" {tick}\n", runs[4]),
        )]);
    }
    r.delivered_all();
    assert_eq!(dead_letters::list(r.dir.path()).unwrap().len(), 2);
    assert_eq!(r.delivery.refusals()[&runs[4]].count, 6);
}

#[test]
fn writes_over_influxdbs_body_limit_are_split_and_never_block_what_follows() {
    let limits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 5000,
        ..LIMITS
    };
    let mut r = setup("delivery-too-large", Acknowledge::Influxdb, limits, 1 << 22);
    r.sink.refuse_bodies_over(10_000);
    // Thirty runs of 900-byte heartbeats: the tick's write is 27 kB, over the sink's limit;
    // one run's heartbeat alone (12 kB) is over it too.
    let big = "x".repeat(900);
    let beats: Vec<(Uuid, String)> = (1..=30)
        .map(|n| {
            let run = Uuid::from_u128(n);
            let note = if n == 7 {
                "y".repeat(12_000)
            } else {
                big.clone()
            };
            (run, format!("load_testing,uuid={run} note=\"{note}\" 1\n"))
        })
        .collect();
    r.start();
    r.heartbeats(&beats);
    assert_eq!(r.request("m,r=after v=1 1\n"), Outcome::Delivered);
    r.delivered_all();
    let stored = r.sink.stored();
    assert_eq!(stored.len(), 30, "29 heartbeats and the request after them");
    assert!(
        stored
            .iter()
            .all(|l| !l.contains(&Uuid::from_u128(7).to_string()))
    );
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(letters.len(), 1, "only the run too large on its own");
    assert!(letters[0].2.contains("413"), "{}", letters[0].2);
}

/// Writes through InfluxDB's API for targets of their own are written apart from the gateway's
/// own points and from each other's, each to its target, in log order; a refused one is
/// dead-lettered with its target, and read back with it for `replay-dead-letters`.
#[test]
fn writes_for_their_own_targets_go_each_to_its_target_and_refusals_keep_it() {
    use crate::storage::record::Target;
    let mut r = setup("delivery-targets", Acknowledge::Influxdb, LIMITS, 1 << 20);
    r.sink.refuse_lines_with("refuse-me");
    let k6 = Target {
        database: "k6",
        retention_policy: "",
    };
    let jmeter = Target {
        database: "jmeter",
        retention_policy: "week",
    };
    let write = |target: Target<'_>, lines: &str| {
        let unit = [Unit {
            run: Uuid::nil(),
            points: line_protocol::split_lines(lines).count() as u32,
            lines,
        }];
        r.delivery.log.append_write(target, &unit, None).unwrap()
    };
    let tickets = [
        write(k6, "http_reqs value=1 1700000000000000001\n"),
        write(k6, "http_reqs value=2 1700000000000000002\n"),
        r.append("m,r=own v=1 1\n"),
        write(jmeter, "jmeter,t=refuse-me v=1 1700000000000000003\n"),
        write(k6, "http_reqs value=3 1700000000000000004\n"),
    ];
    r.delivery.log.wait(tickets[4]).unwrap();
    r.start();
    r.delivered_all();
    let bodies = r.sink.bodies();
    let targets = r.sink.targets();
    let to = |i: usize| {
        targets
            .iter()
            .find(|(at, _)| *at == i)
            .map(|(_, t)| t.database.as_str())
    };
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    assert_eq!(to(0), Some("k6"));
    assert_eq!(
        bodies[0],
        "http_reqs value=1 1700000000000000001\nhttp_reqs value=2 1700000000000000002\n"
    );
    assert_eq!(to(1), None, "the gateway's own points: {}", bodies[1]);
    assert_eq!(to(2), Some("jmeter"));
    assert_eq!(targets[1].1.retention_policy, "week");
    assert_eq!(to(3), Some("k6"));
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    let (target, lines) = dead_letters::read_letter(&letters[0].0).unwrap();
    let target = target.expect("the letter names its target");
    assert_eq!(
        (target.database.as_str(), target.retention_policy.as_str()),
        ("jmeter", "week")
    );
    assert_eq!(lines, "jmeter,t=refuse-me v=1 1700000000000000003\n");
}

/// A body limit learned from a 413 does not hold for ever: once it has been kept its time, writes
/// of `influxdb.max_write_bytes` are tried again, so a limit raised since (or a proxy's passing
/// refusal) no longer keeps every write small.
#[test]
fn a_learned_body_limit_is_tried_again_once_kept_its_time() {
    let mut r = setup(
        "delivery-limit-again",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    r.sink.refuse_bodies_over(10_000);
    // Thirty requests of 950 bytes written to the log in one group: one batch of 28 kB.
    let requests = |r: &Running, tag: &str| {
        let tickets: Vec<u64> = (0..30)
            .map(|n| r.append(&format!("m,t={tag} n={n},note=\"{}\" 1\n", "x".repeat(900))))
            .collect();
        r.delivery.log.wait(tickets[29]).unwrap();
    };
    r.start();
    requests(&r, "a");
    r.delivered_all();
    let bodies = r.sink.bodies().len();
    assert!(
        bodies > 2,
        "refused whole, then written in parts of the limit learned"
    );
    // InfluxDB takes large bodies again; the limit learned is kept no longer.
    r.sink.refuse_bodies_over(usize::MAX);
    r.delivery.set_body_limit_kept(Duration::ZERO);
    requests(&r, "b");
    r.delivered_all();
    let later: Vec<String> = r.sink.bodies()[bodies..].to_vec();
    assert_eq!(later.len(), 1, "the 30 requests in one write again");
    assert!(later[0].len() > 20_000, "{} bytes", later[0].len());
    assert_eq!(r.sink.stored().len(), 60);
}

#[test]
fn a_connection_broken_while_sending_a_large_body_is_split_when_influxdb_answers_ping() {
    let r = started("delivery-reset");
    r.sink.reset_bodies_over(1 << 20);
    let line = |n: u32| format!("m,r=r{n} note=\"{}\" 1\n", "z".repeat(100_000));
    // One request of 2 MB: taken for a body limit, it is written in parts, and all of it
    // is stored; nothing is dead-lettered for a broken connection.
    let lines: String = (0..20).map(line).collect();
    assert_eq!(r.request(&lines), Outcome::Delivered);
    assert_eq!(r.sink.stored().len(), 20);
    assert!(r.sink.bodies().iter().skip(1).all(|b| b.len() <= 1 << 20));
    assert!(dead_letters::list(r.dir.path()).unwrap().is_empty());
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
}

#[test]
fn a_line_whose_connection_breaks_is_kept_and_tried_again_never_dead_lettered() {
    let r = started("delivery-reset-line");
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    r.sink.reset_bodies_over(1 << 20);
    let big = format!("m,r=big note=\"{}\" 1\n", "z".repeat(1_200_000));
    assert_eq!(r.request(&big), Outcome::Recorded);
    r.until("a few tries", |r| r.sink.bodies().len() >= 3);
    assert!(dead_letters::list(r.dir.path()).unwrap().is_empty());
    assert_eq!(r.delivery.log.undelivered().0, 1, "the record is kept");
    // The fault passes: the line is delivered.
    r.sink.reset_bodies_over(usize::MAX);
    r.delivered_all();
    assert_eq!(r.sink.stored().len(), 1);
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
}

/// 1 002 points (1.5 MB) of one commit while InfluxDB answers 500 to writes and `/ping`
/// answers: the commit waits in the log and is delivered whole once InfluxDB takes
/// writes again; a timeout does the same. Only a definite refusal dead-letters.
#[test]
fn a_large_commit_is_kept_through_a_5xx_and_a_timeout_and_delivered_later() {
    let r = started("delivery-large-5xx");
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    let members: String = (0..20).map(|m| format!(",m{m}=1{m}.5")).collect();
    let mut commit = format!(
        "load_testing_result,uuid=u requestStats=\"{}\" 1\n",
        "s".repeat(300)
    );
    for row in 0..1001 {
        commit.push_str(&format!(
            "load_testing_request_stats,uuid=u,name=/e{row} full_name=\"{}\"{members} 1\n",
            "n".repeat(1300)
        ));
    }
    assert!(commit.len() > 1_500_000, "{}", commit.len());
    r.sink.answer([
        Answer::Fail(SinkError::from_status(
            500,
            "engine: cache maximum memory size exceeded".into(),
        )),
        Answer::Fail(SinkError::TimedOut("timeout: global".into())),
        Answer::Fail(SinkError::from_status(503, "busy".into())),
    ]);
    assert_eq!(r.request(&commit), Outcome::Recorded);
    r.delivered_all();
    assert_eq!(r.sink.stored().len(), 1002);
    assert_eq!(r.sink.bodies().len(), 4, "three failures, then one write");
    assert!(dead_letters::list(r.dir.path()).unwrap().is_empty());
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
    assert_eq!(Stats::get(&r.stats.points_written), 1002);
}

/// InfluxDB 3 numbers the lines of a partial write as its parser splits them: a newline
/// inside a string value does not end a line. Run A's register holds one; run B's commit
/// is refused; A's points are stored and B's are dead-lettered.
#[test]
fn influxdb_3_line_numbers_count_lines_as_its_parser_does() {
    let mut r = setup(
        "delivery-v3-newlines",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    r.sink.name_refused_lines();
    r.sink.refuse_lines_with("conflict=");
    r.append("load_testing_events,uuid=a commit_msg=\"Fix login\n\nCloses #12\" 1\n");
    r.append("load_testing_events,uuid=b event=\"started\" 2\n");
    let last = r.append("load_testing_result,uuid=b conflict=\"text\" 3\n");
    r.delivery.log.wait(last).unwrap();
    r.start();
    r.delivered_all();
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        dead_letters::read(&letters[0].0).unwrap(),
        "load_testing_result,uuid=b conflict=\"text\" 3\n"
    );
    assert_eq!(r.sink.bodies().len(), 1, "no second write");
    assert_eq!(Stats::get(&r.stats.points_written), 2);
    // The records are numbered 1, 2, 3 as they were written.
    assert_eq!(r.delivery.outcome(1), Outcome::Delivered);
    assert_eq!(r.delivery.outcome(2), Outcome::Delivered);
    assert!(matches!(r.delivery.outcome(3), Outcome::DeadLettered(_)));
}

/// 1 000 runs whose heartbeats InfluxDB refuses: once known, they go in a write of their
/// own each tick (a probe, not split again), so a tick costs two writes, not thousands,
/// and a request recorded beside them is not held behind them.
#[test]
fn runs_known_to_be_refused_cost_one_write_a_tick_and_hold_nobody_back() {
    let r = setup(
        "delivery-refused-runs",
        Acknowledge::Disk,
        WriteLimits {
            max_bytes: 1 << 20,
            max_lines: 5000,
            ..LIMITS
        },
        1 << 26,
    );
    let mut r = r;
    r.start();
    r.sink.refuse_lines_with("clients=\"ten\"");
    let refused: Vec<Uuid> = (1..=1000).map(Uuid::from_u128).collect();
    let good: Vec<Uuid> = (1001..=1005).map(Uuid::from_u128).collect();
    let tick = |n: u32, clients: &str| -> Vec<(Uuid, String)> {
        refused
            .iter()
            .map(|run| {
                (
                    *run,
                    format!("load_testing,uuid={run} clients={clients} {n}\n"),
                )
            })
            .chain(
                good.iter()
                    .map(|run| (*run, format!("load_testing,uuid={run} clients=5 {n}\n"))),
            )
            .collect()
    };
    r.heartbeats(&tick(1, "\"ten\""));
    r.delivered_all();
    assert_eq!(r.delivery.refusals().len(), 1000);
    assert_eq!(dead_letters::list(r.dir.path()).unwrap().len(), 1000);
    let before = r.sink.bodies().len();
    for n in 2..=4 {
        r.heartbeats(&tick(n, "\"ten\""));
    }
    assert_eq!(
        r.request("load_testing_result,uuid=other v=1 5\n"),
        Outcome::Recorded
    );
    r.delivered_all();
    let writes = r.sink.bodies().len() - before;
    assert!(
        writes <= 8,
        "three ticks and a request took {writes} writes"
    );
    assert!(
        r.sink
            .stored()
            .iter()
            .any(|l| l.starts_with("load_testing_result,uuid=other"))
    );
    assert_eq!(
        dead_letters::list(r.dir.path()).unwrap().len(),
        1000,
        "no new dead letter for the same reason"
    );
    assert_eq!(Stats::get(&r.stats.heartbeats_refused), 4000);
    assert!(r.delivery.refusals().values().all(|x| x.count == 4));
    // InfluxDB takes them again (the conflict is gone): the probe sees it, and they are
    // known as refused no longer.
    r.sink.refuse_lines_with("no-such-text");
    r.heartbeats(&tick(5, "\"ten\""));
    r.delivered_all();
    assert!(r.delivery.refusals().is_empty());
    let stored = r.sink.stored();
    assert!(stored.iter().any(|l| l.contains("clients=\"ten\" 5")));
}

#[test]
fn a_sink_that_panics_does_not_stop_the_deliverer() {
    let r = started("delivery-panic");
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    r.sink.answer([Answer::Panic]);
    assert_eq!(r.request("m v=1 1\n"), Outcome::Recorded);
    r.delivered_all();
    assert_eq!(r.sink.stored(), ["m v=1 1"]);
}

#[test]
fn health_is_unknown_until_influxdb_answers_then_follows_it() {
    let mut r = setup("delivery-health", Acknowledge::Disk, LIMITS, 1 << 20);
    assert_eq!(r.delivery.influx_up(), None, "nothing was asked yet");
    r.sink.set_ping_fails(true);
    // InfluxDB is away for writes too, so the record cannot be delivered before it is
    // answered.
    r.sink.answer([Answer::Fail(SinkError::Unreachable(
        "connection refused".into(),
    ))]);
    r.start();
    r.until("the start's probe fails", |r| {
        r.delivery.influx_up() == Some(false)
    });
    assert_eq!(r.request("m v=1 1\n"), Outcome::Recorded);
    r.sink.set_ping_fails(false);
    r.until("the probe answers", |r| {
        r.delivery.influx_up() == Some(true)
    });
    r.delivered_all();
    assert_eq!(r.sink.stored(), ["m v=1 1"]);
}

#[test]
fn writes_respect_the_line_and_byte_limits() {
    let limits = WriteLimits {
        max_bytes: 60,
        max_lines: 3,
        ..LIMITS
    };
    let mut r = setup("delivery-limits", Acknowledge::Disk, limits, 1 << 20);
    for n in 0..10 {
        r.append(&format!("m,r=r{n} v={n} 1\n"));
    }
    let last = r.append("m,r=last v=1 1\n");
    r.delivery.log.wait(last).unwrap();
    r.start();
    r.delivered_all();
    let bodies = r.sink.bodies();
    assert!(
        bodies
            .iter()
            .all(|b| b.lines().count() <= 3 && b.len() <= 60),
        "{bodies:?}"
    );
    assert_eq!(r.sink.stored().len(), 11);
}

#[test]
fn beyond_the_dead_letter_bound_refusals_are_counted_as_dropped() {
    let mut r = setup(
        "delivery-dead-bound",
        Acknowledge::Influxdb,
        LIMITS,
        3 * 4096,
    );
    r.start();
    r.sink.refuse_lines_with("bad");
    assert!(matches!(
        r.request("m,t=bad v=1 1\n"),
        Outcome::DeadLettered(_)
    ));
    assert!(matches!(
        r.request("m,t=bad v=2 2\nm,t=bad v=3 3\n"),
        Outcome::DeadLettered(_)
    ));
    assert_eq!(dead_letters::list(r.dir.path()).unwrap().len(), 1);
    assert_eq!(Stats::get(&r.stats.points_dropped), 2);
    let usage = r.delivery.dead_letters().usage();
    assert_eq!(usage.records, 1);
}

/// A dead letter that cannot be written (a full disk, its directory gone) drops its points, and
/// the count of dropped points says so.
#[test]
fn a_dead_letter_that_cannot_be_written_is_counted_as_dropped() {
    let mut r = setup(
        "delivery-dead-unwritable",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    r.start();
    r.sink.refuse_lines_with("bad");
    std::fs::remove_dir(r.dir.path().join("dead-letter")).unwrap();
    r.request("m,t=bad v=1 1\nm,t=bad v=2 2\n");
    r.until("the refusal settled", |r| {
        r.delivery.log.undelivered().0 == 0
    });
    assert_eq!(Stats::get(&r.stats.points_dropped), 2);
    assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
    let usage = r.delivery.dead_letters().usage();
    assert_eq!(usage.records, 0);
}

#[test]
fn refused_lines_named_by_influxdb_3_are_dead_lettered_without_a_second_write() {
    // Three requests in one write; InfluxDB 3 refuses line 4 (the second line of the
    // second request) and stores the rest.
    let mut r = setup("delivery-v3-lines", Acknowledge::Influxdb, LIMITS, 1 << 20);
    r.sink.answer([Answer::Fail(SinkError::Refused {
        status: 400,
        message: "partial write of line protocol occurred: line 4: invalid column type".into(),
        lines: Some(vec![3]),
    })]);
    r.append("m,r=a v=1 1\nm,r=a v=2 2\n");
    r.append("m,r=b v=1 1\nm,r=b v=2 2\n");
    let last = r.append("m,r=c v=1 1\n");
    r.delivery.log.wait(last).unwrap();
    r.start();
    r.delivered_all();
    assert_eq!(
        r.sink.bodies().len(),
        1,
        "no second write: {:?}",
        r.sink.bodies()
    );
    let letters = dead_letters::list(r.dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        dead_letters::read(&letters[0].0).unwrap(),
        "m,r=b v=1 1\nm,r=b v=2 2\n"
    );
    assert_eq!(Stats::get(&r.stats.points_written), 3);
    assert!(matches!(r.delivery.outcome(2), Outcome::DeadLettered(_)));
    assert_eq!(r.delivery.outcome(3), Outcome::Delivered);
}

/// One write a [`Recorder`] saw: where to, the body, and its answer.
type Written = (Option<OwnedTarget>, String, Result<(), SinkError>);

/// A sink that notes every write (its target, body and answer) over a [`MemorySink`]; it
/// answers 503 to the writes whose number (from 0) `unavailable` names, and 404 to every
/// write for the database `missing`, as InfluxDB does for a database that does not exist.
struct Recorder {
    inner: Arc<MemorySink>,
    unavailable: Vec<usize>,
    missing: Option<String>,
    writes: Mutex<Vec<Written>>,
}

impl Recorder {
    fn answer(&self, target: Option<&OwnedTarget>, lines: &str) -> Result<(), SinkError> {
        let n = lock(&self.writes).len();
        let result = if self.unavailable.contains(&n) {
            Err(SinkError::Unavailable {
                status: 503,
                message: "busy".into(),
            })
        } else if target.is_some_and(|t| Some(&t.database) == self.missing.as_ref()) {
            Err(SinkError::Misconfigured {
                status: 404,
                message: "database not found".into(),
                by_influxdb: true,
            })
        } else {
            self.inner.write(lines)
        };
        lock(&self.writes).push((target.cloned(), lines.to_string(), result.clone()));
        result
    }
}

impl Sink for Recorder {
    fn write(&self, lines: &str) -> Result<(), SinkError> {
        self.answer(None, lines)
    }

    fn write_to(&self, target: &OwnedTarget, lines: &str) -> Result<(), SinkError> {
        self.answer(Some(target), lines)
    }

    fn ping(&self) -> Result<(), SinkError> {
        self.inner.ping()
    }
}

/// [`setup`] with a [`Recorder`] as the sink.
fn setup_recorded(
    name: &str,
    unavailable: Vec<usize>,
    missing: Option<&str>,
) -> (Running, Arc<Recorder>) {
    let r = setup(name, Acknowledge::Influxdb, LIMITS, 1 << 20);
    let recorder = Arc::new(Recorder {
        inner: Arc::clone(&r.sink),
        unavailable,
        missing: missing.map(str::to_string),
        writes: Mutex::new(Vec::new()),
    });
    (
        with_sink(r, name, Box::new(Arc::clone(&recorder)), LIMITS),
        recorder,
    )
}

/// `r` (not started) with a log and dead letters of its own, writing to `sink` in writes of
/// `limits`, in the acknowledgement mode `r` was set up with.
fn with_sink(mut r: Running, name: &str, sink: Box<dyn Sink>, limits: WriteLimits) -> Running {
    let dir = Dir::new(&format!("{name}-own-sink"));
    let (log, position, _) = Log::open(
        crate::storage::tests::log_dir(dir.path()),
        1 << 30,
        false,
        &mut |_| {},
    )
    .unwrap();
    r.delivery = Arc::new(Delivery::new(
        log,
        sink,
        DeadLetters::open(&crate::storage::tests::root(&dir), 1 << 20).unwrap(),
        r.delivery.acknowledge,
        Duration::from_secs(5),
        limits,
    ));
    r.position = Some(position);
    r.dir = dir;
    r
}

/// A sink over a [`MemorySink`] that counts the writes in flight at once: each waits (up to
/// 2 s) for a second to arrive before it is stored, so two writes that may overlap do. The
/// writes whose number (from 0) `unavailable` names are answered 503.
struct Overlap {
    inner: Arc<MemorySink>,
    unavailable: Vec<usize>,
    state: Mutex<(usize, usize, usize)>,
    changed: std::sync::Condvar,
}

impl Overlap {
    fn new(inner: Arc<MemorySink>, unavailable: Vec<usize>) -> Overlap {
        Overlap {
            inner,
            unavailable,
            state: Mutex::new((0, 0, 0)),
            changed: std::sync::Condvar::new(),
        }
    }

    /// The most writes in flight at once.
    fn most(&self) -> usize {
        lock(&self.state).1
    }
}

impl Sink for Overlap {
    fn write(&self, lines: &str) -> Result<(), SinkError> {
        let n = {
            let mut s = lock(&self.state);
            s.0 += 1;
            s.1 = s.1.max(s.0);
            s.2 += 1;
            self.changed.notify_all();
            let n = s.2 - 1;
            let _ = self
                .changed
                .wait_timeout_while(s, Duration::from_secs(2), |s| s.0 < 2);
            n
        };
        let result = if self.unavailable.contains(&n) {
            Err(SinkError::Unavailable {
                status: 503,
                message: "busy".into(),
            })
        } else {
            self.inner.write(lines)
        };
        lock(&self.state).0 -= 1;
        result
    }

    fn ping(&self) -> Result<(), SinkError> {
        self.inner.ping()
    }
}

/// Appends records of two lines each, `m,r=<record> v=<value> <time>`, and waits until they are
/// on disk.
fn two_line_records(r: &Running, records: &[(u32, u32, u32)]) {
    let mut last = 0;
    for &(rec, value, time) in records {
        last = r.append(&format!(
            "m,r={rec} v={value} {time}\nm,r={rec},second=1 v={value} {time}\n"
        ));
    }
    r.delivery.log.wait(last).unwrap();
}

#[test]
fn a_backlog_of_full_writes_goes_two_at_a_time_when_they_share_no_point() {
    let limits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 2,
        ..LIMITS
    };
    let r = setup("delivery-two-at-once", Acknowledge::Disk, limits, 1 << 20);
    let overlap = Arc::new(Overlap::new(Arc::clone(&r.sink), Vec::new()));
    let mut r = with_sink(
        r,
        "delivery-two-at-once",
        Box::new(Arc::clone(&overlap)),
        limits,
    );
    two_line_records(&r, &[(1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4)]);
    r.start();
    r.delivered_all();
    assert_eq!(overlap.most(), 2, "two writes in flight at once");
    let mut stored = r.sink.stored();
    stored.sort();
    assert_eq!(stored.len(), 8, "{stored:?}");
    stored.dedup();
    assert_eq!(stored.len(), 8, "each line once: {stored:?}");
}

/// A backlog of ticks' heartbeats is written one write at a time, though their points differ:
/// the heartbeats of runs InfluxDB refused are sorted out as each write is made, and two
/// writes at once would sort them before either knew what the other found.
#[test]
fn a_backlog_of_heartbeats_goes_one_write_at_a_time() {
    let limits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 2,
        ..LIMITS
    };
    let r = setup(
        "delivery-beats-one-at-once",
        Acknowledge::Disk,
        limits,
        1 << 20,
    );
    let overlap = Arc::new(Overlap::new(Arc::clone(&r.sink), Vec::new()));
    let mut r = with_sink(
        r,
        "delivery-beats-one-at-once",
        Box::new(Arc::clone(&overlap)),
        limits,
    );
    let runs = [Uuid::new_v4(), Uuid::new_v4()];
    for tick in 1..=4 {
        r.heartbeats(&[
            (runs[0], format!("beat,run=a v={tick} {tick}\n")),
            (runs[1], format!("beat,run=b v={tick} {tick}\n")),
        ]);
    }
    r.start();
    r.delivered_all();
    assert_eq!(overlap.most(), 1, "never two writes of heartbeats at once");
    assert_eq!(r.sink.stored().len(), 8);
}

#[test]
fn writes_that_share_a_point_go_one_after_the_other_and_the_last_one_wins() {
    let limits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 2,
        ..LIMITS
    };
    let r = setup("delivery-one-at-once", Acknowledge::Disk, limits, 1 << 20);
    let overlap = Arc::new(Overlap::new(Arc::clone(&r.sink), Vec::new()));
    let mut r = with_sink(
        r,
        "delivery-one-at-once",
        Box::new(Arc::clone(&overlap)),
        limits,
    );
    // The same two points (series and time) written again with new values.
    two_line_records(&r, &[(1, 1, 7), (1, 2, 7), (1, 3, 7)]);
    r.start();
    r.delivered_all();
    assert_eq!(overlap.most(), 1, "never two writes of one point at once");
    assert_eq!(
        r.sink.stored(),
        [
            "m,r=1 v=1 7",
            "m,r=1,second=1 v=1 7",
            "m,r=1 v=2 7",
            "m,r=1,second=1 v=2 7",
            "m,r=1 v=3 7",
            "m,r=1,second=1 v=3 7"
        ]
    );
}

#[test]
fn when_one_of_two_writes_at_once_fails_it_alone_goes_again_and_every_line_is_delivered() {
    let limits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 2,
        ..LIMITS
    };
    for failing in [0, 1] {
        let name = format!("delivery-two-one-fails-{failing}");
        let r = setup(&name, Acknowledge::Disk, limits, 1 << 20);
        let overlap = Arc::new(Overlap::new(Arc::clone(&r.sink), vec![failing]));
        let mut r = with_sink(r, &name, Box::new(Arc::clone(&overlap)), limits);
        two_line_records(&r, &[(1, 1, 1), (2, 2, 2)]);
        r.start();
        r.delivered_all();
        assert_eq!(overlap.most(), 2, "{failing}");
        let stored = r.sink.stored();
        for rec in 1..=2 {
            for line in [
                format!("m,r={rec} v={rec} {rec}"),
                format!("m,r={rec},second=1 v={rec} {rec}"),
            ] {
                assert!(
                    stored.contains(&line),
                    "{failing}: {line} not in {stored:?}"
                );
            }
        }
        assert!(
            dead_letters::list(r.dir.path()).unwrap().is_empty(),
            "{failing}: a 503 is never a refusal"
        );
        // The write that did not fail is not written again, nor counted twice (the failed
        // one never reached the sink).
        assert_eq!(Stats::get(&r.stats.points_written), 4, "{failing}");
        assert_eq!(r.sink.bodies().len(), 2, "{failing}: {:?}", r.sink.bodies());
    }
}

/// Records of several targets, of none and heartbeats, interleaved; lines refused among them;
/// 503s in the middle; bodies over 60 bytes answered 413. Every line is stored for its own
/// target only, in log order per target; each refused line is dead-lettered once, with its
/// target; each record's acknowledgement is right; nothing is left undelivered; a run whose
/// heartbeats InfluxDB refuses is probed apart, never in a targeted write.
#[test]
fn interleaved_targets_with_refusals_5xx_and_413_each_line_lands_once_in_its_own_target() {
    use crate::storage::record::Target;
    let (mut r, rec) = setup_recorded("targets-interleaved", vec![1, 4, 9, 15], None);
    r.sink.refuse_lines_with("refuse-me");
    // Bodies of several lines are too large, and the bad run's heartbeat alone (over 1 KiB);
    // other lines alone never are (a 413 to a line of no more than 1 KiB is not taken as
    // about that line).
    r.sink.refuse_bodies_over(66);
    let targets: [Option<(&str, &str)>; 4] = [
        None,
        Some(("k6", "")),
        Some(("jmeter", "week")),
        Some(("q\"uote\n#x", "rp")),
    ];
    let (good_run, bad_run) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // (seq, target index or None for a heartbeat tick, its lines)
    let mut records: Vec<(u64, Option<usize>, Vec<String>)> = Vec::new();
    for i in 0..80 {
        let pick = next() % 6;
        if pick == 5 {
            let beat = |run: Uuid, extra: &str| format!("hb,run={run}{extra} v={i} {i}\n");
            r.heartbeats(&[
                (good_run, beat(good_run, "")),
                // Refused by its size, as a line over 1 KiB can be: one reason each time.
                (
                    bad_run,
                    beat(bad_run, &format!(",x=refuse-me,pad={}", "p".repeat(1100))),
                ),
            ]);
            continue;
        }
        let t = (pick % 4) as usize;
        let n = 1 + next() % 3;
        let lines: Vec<String> = (0..n)
            .map(|j| {
                let bad = if next() % 9 == 0 { ",x=refuse-me" } else { "" };
                format!("m,rec={i},t={t},j={j}{bad} v={i} {i}\n")
            })
            .collect();
        let body: String = lines.concat();
        let unit = [Unit {
            run: Uuid::nil(),
            points: lines.len() as u32,
            lines: &body,
        }];
        let ticket = match targets[t] {
            None => r
                .delivery
                .log
                .append(Kind::Request, 0, b"", &unit, None)
                .unwrap(),
            Some((database, retention_policy)) => r
                .delivery
                .log
                .append_write(
                    Target {
                        database,
                        retention_policy,
                    },
                    &unit,
                    None,
                )
                .unwrap(),
        };
        let seq = r.delivery.log.wait(ticket).unwrap();
        records.push((seq, Some(t), lines));
    }
    r.start();
    r.delivered_all();
    let name = |t: usize| targets[t].map(|(d, _)| d.to_string());
    // What each target holds, in the order it was stored (InfluxDB 1.x keeps a partial
    // write's good lines).
    let mut stored: HashMap<Option<String>, Vec<String>> = HashMap::new();
    for (target, body, result) in lock(&rec.writes).iter() {
        let db = target.as_ref().map(|t| t.database.clone());
        if let Some(t) = target {
            let rp = targets
                .iter()
                .flatten()
                .find(|(d, _)| *d == t.database)
                .unwrap()
                .1;
            assert_eq!(t.retention_policy, rp);
            assert!(
                !body.contains("hb,"),
                "a heartbeat in a targeted write: {body}"
            );
        }
        let kept = match result {
            Ok(()) => true,
            Err(SinkError::Refused { .. }) => false,
            Err(_) => continue,
        };
        for line in body.lines() {
            if kept || !line.contains("refuse-me") {
                stored.entry(db.clone()).or_default().push(line.to_string());
            }
        }
    }
    let letters = dead_letters::list(r.dir.path()).unwrap();
    let mut lettered: Vec<(Option<String>, String)> = Vec::new();
    for (path, _, _) in &letters {
        let (target, lines) = dead_letters::read_letter(path).unwrap();
        for line in lines.lines() {
            lettered.push((
                target.as_ref().map(|t| t.database.clone()),
                line.to_string(),
            ));
        }
    }
    for (seq, t, lines) in &records {
        let t = t.unwrap();
        let refused = lines.iter().any(|l| l.contains("refuse-me"));
        for line in lines {
            let line = line.trim_end();
            for (db, held) in &stored {
                let here = held.iter().any(|h| h == line);
                if line.contains("refuse-me") {
                    assert!(!here, "a refused line stored: {line}");
                } else if *db == name(t) {
                    assert!(here, "record {seq}: {line} not stored in {db:?}");
                } else {
                    assert!(
                        !here,
                        "record {seq}: {line} stored in {db:?}, not {:?}",
                        name(t)
                    );
                }
            }
            if line.contains("refuse-me") {
                let found: Vec<_> = lettered.iter().filter(|(_, l)| l == line).collect();
                assert_eq!(found.len(), 1, "record {seq}: {line} lettered {found:?}");
                assert_eq!(found[0].0, name(t), "record {seq}: the letter's target");
            }
        }
        let outcome = r.delivery.outcome(*seq);
        match outcome {
            Outcome::DeadLettered(_) => assert!(refused, "record {seq}: {outcome:?}"),
            Outcome::Delivered => assert!(!refused, "record {seq}: {outcome:?}"),
            Outcome::Recorded => panic!("record {seq}: {outcome:?}"),
        }
    }
    // Log order per target: the first time each record's lines were stored.
    for (db, held) in &stored {
        let mut firsts: Vec<u64> = Vec::new();
        for line in held.iter().filter(|l| l.starts_with("m,")) {
            let rec: u64 = line["m,rec=".len()..]
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if !firsts.contains(&rec) {
                firsts.push(rec);
            }
        }
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{db:?}: {firsts:?}");
    }
    // The faults asked for did happen: a targeted body answered 413 and split, and 503s.
    let writes = lock(&rec.writes);
    assert!(
        writes
            .iter()
            .any(|(t, _, e)| t.is_some() && matches!(e, Err(SinkError::TooLarge { .. })))
    );
    assert!(
        writes
            .iter()
            .any(|(t, _, e)| t.is_some() && matches!(e, Err(SinkError::Refused { .. })))
    );
    assert_eq!(
        writes
            .iter()
            .filter(|(_, _, e)| matches!(e, Err(SinkError::Unavailable { .. })))
            .count(),
        4
    );
    drop(writes);
    // The good run's heartbeats are stored, the bad run's never; one letter for the bad run.
    let own = stored.get(&None).cloned().unwrap_or_default();
    assert!(
        own.iter()
            .any(|l| l.starts_with(&format!("hb,run={good_run}")))
    );
    assert!(
        !own.iter()
            .any(|l| l.starts_with(&format!("hb,run={bad_run}")))
    );
    assert_eq!(
        lettered
            .iter()
            .filter(|(_, l)| l.starts_with("hb,"))
            .count(),
        1,
        "{lettered:?}"
    );
}

/// A write for a target InfluxDB answers 404 (its database does not exist, and the gateway
/// may not or cannot create it) holds back every record behind it: the gateway's own points
/// and other targets' writes wait for ever behind one client's database.
#[test]
fn a_targeted_write_answered_404_does_not_hold_back_other_targets_and_own_points() {
    use crate::storage::record::Target;
    let (mut r, _rec) = setup_recorded("targets-404", vec![], Some("nope"));
    let unit = |lines: &'static str| {
        [Unit {
            run: Uuid::nil(),
            points: 1,
            lines,
        }]
    };
    let t = r
        .delivery
        .log
        .append_write(
            Target {
                database: "nope",
                retention_policy: "",
            },
            &unit("m v=1 1\n"),
            None,
        )
        .unwrap();
    r.delivery.log.wait(t).unwrap();
    let own = r.append("own v=2 2\n");
    r.delivery.log.wait(own).unwrap();
    let t = r
        .delivery
        .log
        .append_write(
            Target {
                database: "k6",
                retention_policy: "",
            },
            &unit("k6 v=3 3\n"),
            None,
        )
        .unwrap();
    r.delivery.log.wait(t).unwrap();
    r.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && r.sink.stored().len() < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        r.sink.stored(),
        ["own v=2 2", "k6 v=3 3"],
        "points behind a write to a missing database, 10 s on"
    );
}

/// A client's own database that InfluxDB says is missing refuses that client's points: it says
/// nothing of InfluxDB, which stays up for everyone (and the refusal's text, about one
/// client's data, stays off other clients' state page, which shows the last error only while
/// InfluxDB is down).
#[test]
fn a_clients_missing_database_leaves_influxdb_up() {
    use crate::storage::record::Target;
    let (mut r, recorder) = setup_recorded("targets-404-health", vec![], Some("nope"));
    let own = r.append("own v=1 1\n");
    r.delivery.log.wait(own).unwrap();
    r.start();
    r.until("the gateway's own point is stored", |r| {
        r.sink.stored().len() == 1
    });
    assert_eq!(r.delivery.influx_up(), Some(true));
    // A probe from now on fails: InfluxDB taken for down would stay so.
    r.sink.set_ping_fails(true);
    let t = r
        .delivery
        .log
        .append_write(
            Target {
                database: "nope",
                retention_policy: "",
            },
            &[Unit {
                run: Uuid::nil(),
                points: 1,
                lines: "m v=2 2\n",
            }],
            None,
        )
        .unwrap();
    r.delivery.log.wait(t).unwrap();
    r.until("the write to the missing database is answered", |_| {
        lock(&recorder.writes).len() == 2
    });
    assert_eq!(r.delivery.influx_up(), Some(true));
    r.delivered_all();
    assert_eq!(r.delivery.influx_up(), Some(true));
}

/// A write API target where the gateway's own points go, answered 404, is the gateway's own
/// database missing: its points wait, as the gateway's own do, and InfluxDB is down; they are
/// not refused as a client's database would be.
#[test]
fn the_gateways_own_database_missing_keeps_a_clients_points_there() {
    use crate::storage::record::Target;
    let (mut r, recorder) = setup_recorded("targets-own-404", vec![], Some("runs"));
    r.delivery.set_own_target(|t| t.database == "runs");
    let t = r
        .delivery
        .log
        .append_write(
            Target {
                database: "runs",
                retention_policy: "",
            },
            &[Unit {
                run: Uuid::nil(),
                points: 1,
                lines: "m v=1 1\n",
            }],
            None,
        )
        .unwrap();
    r.delivery.log.wait(t).unwrap();
    r.start();
    r.until("the write answered", |_| !lock(&recorder.writes).is_empty());
    r.until("InfluxDB taken for down", |r| {
        r.delivery.influx_up() == Some(false)
    });
    assert!(dead_letters::list(r.dir.path()).unwrap().is_empty());
    assert_eq!(r.delivery.log().undelivered().0, 1, "the point waits");
}

/// In disk mode, records that fill no write wait `delivery.linger` for more: a record found
/// alone goes in one write with those that came while it waited.
#[test]
fn in_disk_mode_records_that_fill_no_write_wait_for_more_and_go_in_one_write() {
    let limits = WriteLimits {
        linger: Duration::from_secs(3),
        ..LIMITS
    };
    let mut r = setup("delivery-linger", Acknowledge::Disk, limits, 1 << 20);
    r.start();
    let first = r.append("m,r=a v=1 1\n");
    r.delivery.log.wait(first).unwrap();
    // The deliverer found it: without the linger it would write it now, alone.
    r.until("the deliverer finds the first record", |r| {
        r.delivery.oldest_waiting().is_some()
    });
    let last = [r.append("m,r=b v=2 2\n"), r.append("m,r=c v=3 3\n")][1];
    r.delivery.log.wait(last).unwrap();
    r.delivered_all();
    assert_eq!(
        r.sink.bodies(),
        ["m,r=a v=1 1\nm,r=b v=2 2\nm,r=c v=3 3\n"],
        "one write"
    );
}

/// Records that fill a write do not wait: a linger longer than the test's deadline would
/// make this fail.
#[test]
fn records_that_fill_a_write_go_at_once_whatever_the_linger() {
    let limits = WriteLimits {
        max_lines: 2,
        linger: Duration::from_secs(3600),
        ..LIMITS
    };
    let mut r = setup("delivery-linger-full", Acknowledge::Disk, limits, 1 << 20);
    let last = [r.append("m,r=a v=1 1\n"), r.append("m,r=b v=2 2\n")][1];
    r.delivery.log.wait(last).unwrap();
    r.start();
    r.delivered_all();
    assert_eq!(r.sink.bodies(), ["m,r=a v=1 1\nm,r=b v=2 2\n"]);
}

/// In `"influxdb"` mode requests wait for the write: the linger is not applied.
#[test]
fn in_influxdb_mode_a_request_does_not_wait_the_linger() {
    let limits = WriteLimits {
        linger: Duration::from_secs(3600),
        ..LIMITS
    };
    let mut r = setup(
        "delivery-linger-influxdb",
        Acknowledge::Influxdb,
        limits,
        1 << 20,
    );
    r.start();
    assert_eq!(r.request("m,r=a v=1 1\n"), Outcome::Delivered);
    assert_eq!(r.sink.stored(), ["m,r=a v=1 1"]);
}

/// Requests waiting in `"influxdb"` mode are spread over signals by record number: each is
/// woken by the batch that settles its record, whether batches are small or span more
/// records than there are signals, and two waiting on one signal are both woken. A wake
/// missed would leave a request waiting its whole 30 s.
#[test]
fn each_waiting_request_is_woken_by_the_batch_that_settles_its_record() {
    let r = setup_waiting(
        "delivery-settle-signals",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
        Duration::from_secs(30),
    );
    let answered: Vec<AtomicBool> = (0..=200).map(|_| AtomicBool::new(false)).collect();
    std::thread::scope(|scope| {
        for seq in 1..=200u64 {
            let (delivery, answered) = (&r.delivery, &answered);
            scope.spawn(move || {
                assert_eq!(delivery.outcome(seq), Outcome::Delivered, "record {seq}");
                answered[seq as usize].store(true, Ordering::SeqCst);
            });
        }
        for upto in [3u64, 5, 70, 71, 200] {
            r.delivery.settle(upto, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            while !(1..=upto).all(|seq| answered[seq as usize].load(Ordering::SeqCst)) {
                assert!(
                    Instant::now() < deadline,
                    "a request of a record up to {upto} still waits"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            // Nothing woke beyond the batch.
            assert!(
                (upto + 1..=200).all(|seq| !answered[seq as usize].load(Ordering::SeqCst)),
                "a request past {upto} was answered"
            );
        }
    });
}

/// A sink that takes `took` over each write, as InfluxDB does.
struct Slow {
    inner: Arc<MemorySink>,
    took: Duration,
}

impl Sink for Slow {
    fn write(&self, lines: &str) -> Result<(), SinkError> {
        std::thread::sleep(self.took);
        self.inner.write(lines)
    }

    fn ping(&self) -> Result<(), SinkError> {
        self.inner.ping()
    }
}

/// A steady trickle (a record every millisecond or so) keeps the queue from ever emptying
/// while each write takes 10 ms: the linger must still gather each batch, not only the first
/// of the trickle. Each batch's first record waited the linger since the deliverer found
/// it, and a batch's first record was found after the last one's linger ended (else it
/// would have gone with it), so there are at most (time / linger) + 1 writes.
#[test]
fn a_trickle_that_never_lets_the_queue_empty_still_lingers_each_batch() {
    let linger = Duration::from_millis(100);
    let limits = WriteLimits { linger, ..LIMITS };
    let r = setup(
        "delivery-linger-trickle",
        Acknowledge::Disk,
        limits,
        1 << 20,
    );
    let sink = Slow {
        inner: Arc::clone(&r.sink),
        took: Duration::from_millis(10),
    };
    let mut r = with_sink(r, "delivery-linger-trickle", Box::new(sink), limits);
    r.start();
    let began = Instant::now();
    // Four clients, each waiting for its record to be on disk, as requests do.
    let clients: Vec<JoinHandle<u32>> = (0..4)
        .map(|client| {
            let d = Arc::clone(&r.delivery);
            std::thread::spawn(move || {
                let mut n = 0u32;
                while began.elapsed() < Duration::from_millis(1500) {
                    n += 1;
                    let lines = format!("m,r={client} v={n} {n}\n");
                    let unit = Unit {
                        run: Uuid::nil(),
                        points: 1,
                        lines: &lines,
                    };
                    let ticket = d.log.append(Kind::Request, 0, b"", &[unit], None).unwrap();
                    d.log.wait(ticket).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                n
            })
        })
        .collect();
    let n: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    r.delivered_all();
    let took = began.elapsed();
    let writes = r.sink.bodies().len();
    let most = (took.as_millis() / linger.as_millis()) as usize + 1;
    assert_eq!(r.sink.stored().len(), n as usize, "every point once");
    assert!(
        writes <= most,
        "{writes} writes of {n} records in {took:?}: at most {most} with a {linger:?} linger"
    );
}

/// A stop while the deliverer lingers (1 s, the most) returns within a fraction of it; the
/// record waits in the log for the next start.
#[test]
fn a_stop_during_the_linger_returns_promptly() {
    let limits = WriteLimits {
        linger: Duration::from_secs(1),
        ..LIMITS
    };
    let mut r = setup("delivery-linger-stop", Acknowledge::Disk, limits, 1 << 20);
    r.start();
    let first = r.append("m,r=a v=1 1\n");
    r.delivery.log.wait(first).unwrap();
    r.until("the deliverer finds the record", |r| {
        r.delivery.oldest_waiting().is_some()
    });
    let asked = Instant::now();
    r.delivery.stop();
    r.deliverer.take().unwrap().join().unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(800),
        "the deliverer took {:?} to stop",
        asked.elapsed()
    );
    assert!(r.sink.bodies().is_empty(), "{:?}", r.sink.bodies());
    assert_eq!(r.delivery.log.undelivered().0, 1, "it waits in the log");
}

/// Records that came while others lingered waited with them: when they cannot go in the same
/// write (another target's), they go right after, without a linger of their own.
#[test]
fn records_that_came_during_a_linger_do_not_wait_a_second_one() {
    use crate::storage::record::Target;
    let linger = Duration::from_secs(1);
    let limits = WriteLimits { linger, ..LIMITS };
    let mut r = setup("delivery-linger-once", Acknowledge::Disk, limits, 1 << 20);
    r.start();
    let unit = [Unit {
        run: Uuid::nil(),
        points: 1,
        lines: "http_reqs value=1 1700000000000000001\n",
    }];
    let k6 = Target {
        database: "k6",
        retention_policy: "",
    };
    let first = r.delivery.log.append_write(k6, &unit, None).unwrap();
    r.delivery.log.wait(first).unwrap();
    r.until("the deliverer finds the first record", |r| {
        r.delivery.oldest_waiting().is_some()
    });
    let appended = Instant::now();
    let own = r.append("m,r=own v=1 1\n");
    r.delivery.log.wait(own).unwrap();
    r.delivered_all();
    assert_eq!(r.sink.bodies().len(), 2, "one write to each target");
    assert!(
        appended.elapsed() < linger + linger / 2,
        "the record that came during the linger waited {:?}: a linger of its own after it",
        appended.elapsed()
    );
}

mod answers;

/// A record of several units, some of them empty (no lines, no points), one of them refused:
/// split until the refused unit stands alone, its dead letter holds exactly its lines, and
/// every other unit's lines are stored as sent, nothing of a neighbour's (a record's units are
/// read back as ranges of one text). Both ways InfluxDB refuses: a partial write
/// that does not say which lines (1.x), and one that names them (3).
#[test]
fn a_refused_unit_among_empty_ones_is_dead_lettered_with_exactly_its_lines() {
    for (name, named) in [
        ("delivery-units-empty", false),
        ("delivery-units-named", true),
    ] {
        let mut r = setup(name, Acknowledge::Influxdb, LIMITS, 1 << 20);
        r.sink.refuse_lines_with("r=bad");
        if named {
            r.sink.name_refused_lines();
        }
        let parts = [
            "m,r=a v=1 1\nm,r=a v=2 2\n",
            "",
            "m,r=bad v=1 1\nm,r=bad v=2 2\nm,r=bad v=3 3\n",
            "",
            "",
            "m,r=c s=\"x\\ny\" 4\n",
            "m,r=d v=1 5\nm,r=d v=2 6\nm,r=d v=3 7\nm,r=d v=4 8\n",
            "",
        ];
        let units: Vec<Unit<'_>> = parts
            .iter()
            .enumerate()
            .map(|(i, lines)| Unit {
                run: Uuid::from_u128(i as u128 + 1),
                points: line_protocol::split_lines(lines).count() as u32,
                lines,
            })
            .collect();
        let first = r.append("m,r=before v=1 1\n");
        let ticket = r
            .delivery
            .log
            .append(Kind::Request, 0, b"", &units, None)
            .unwrap();
        let last = r.append("m,r=after v=1 1\n");
        r.delivery.log.wait(first).unwrap();
        r.delivery.log.wait(ticket).unwrap();
        r.delivery.log.wait(last).unwrap();
        r.start();
        r.delivered_all();
        let letters = dead_letters::list(r.dir.path()).unwrap();
        assert_eq!(letters.len(), 1, "{name}: {letters:?}");
        assert_eq!(
            dead_letters::read(&letters[0].0).unwrap(),
            parts[2],
            "{name}"
        );
        let mut stored = r.sink.stored();
        stored.sort();
        stored.dedup();
        let mut expected: Vec<String> = parts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .flat_map(|(_, l)| line_protocol::split_lines(l).map(str::to_string))
            .chain([
                "m,r=before v=1 1".to_string(),
                "m,r=after v=1 1".to_string(),
            ])
            .collect();
        expected.sort();
        assert_eq!(stored, expected, "{name}");
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 3, "{name}");
    }
}
