//! The run routes' answers sent by the thread that writes their records (`answered`): each is
//! let go only once the job table shows its change, and never for a record that failed.

use super::tests::{Fixture, LIMITS, fixture_with};
use super::*;
use crate::config::Acknowledge;
use crate::ingest::line_protocol::FieldValue;
use crate::ingest::payload::{commit as parse_commit, register as parse_register};
use crate::state::jobs::State;
use crate::sync::{Signal, Waiter, lock};
use std::sync::Mutex;
use std::thread::{self, ThreadId};

/// When an answer was let go: the thread, whether the record was written, the run's state in
/// the table, and whether its result could be read.
type Told = (ThreadId, bool, Option<State>, bool);

/// An answer that notes, when it is let go, on which thread, whether the record was written,
/// and what the job table and the results showed of its run then (its fields too).
struct Noting {
    service: Arc<Service>,
    uuid: Uuid,
    told: Mutex<Option<Told>>,
    fields: Mutex<Vec<(String, FieldValue)>>,
    signal: Signal,
}

impl Noting {
    fn new(service: &Arc<Service>, uuid: Uuid) -> Arc<Noting> {
        Arc::new(Noting {
            service: Arc::clone(service),
            uuid,
            told: Mutex::new(None),
            fields: Mutex::new(Vec::new()),
            signal: Signal::new(),
        })
    }
}

impl Waiter for Noting {
    fn settled(&self, ok: bool) {
        let job = self
            .service
            .jobs
            .list(usize::MAX)
            .into_iter()
            .find(|j| j.run.uuid == self.uuid);
        let state = job.as_ref().map(|j| j.state);
        *lock(&self.fields) = job
            .map(|j| {
                j.fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let result = self.service.results.get(&self.uuid, None).is_some();
        *lock(&self.told) = Some((thread::current().id(), ok, state, result));
        self.signal.notify_all();
    }

    fn untold(&self) {
        panic!("the writer runs throughout");
    }

    fn wait(&self, _deadline: Option<std::time::Instant>) {
        let mut told = lock(&self.told);
        while told.is_none() {
            told = self.signal.wait(told).unwrap();
        }
    }
}

/// Runs `body` beside the log's writer thread (the program's `log` thread), once it runs;
/// stops it after.
fn with_writer(f: &Fixture, body: impl FnOnce()) {
    let log = f.service.delivery.log();
    thread::scope(|scope| {
        scope.spawn(|| log.write_for_waiters());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !log.writer_runs() {
            assert!(std::time::Instant::now() < deadline, "the writer never ran");
            thread::yield_now();
        }
        body();
        log.stop_writer();
    });
}

/// Makes every other group write of `log` fail until `stop`: a failure is asked for once a
/// write went through since the last one was, so both kinds happen however slow the disk is
/// (a failure asked for on a clock would fail nearly every group on a slow one).
fn fail_every_other_write(log: &crate::storage::log::Log, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::SeqCst) {
        let before = log.last_written();
        while log.last_written() == before && !stop.load(Ordering::SeqCst) {
            thread::sleep(std::time::Duration::from_micros(200));
        }
        log.fail_next_writes(1);
    }
    log.fail_next_writes(0);
}

/// A register's and a commit's answers are let go by the log's writer thread, and only once
/// the table shows the run running (then finished, its result readable): a client that sends
/// the next request on another connection the moment it has the answer finds the run.
#[test]
fn a_run_route_s_answer_goes_once_the_table_shows_its_change() {
    let f = fixture_with("answered-runs", 10, 1 << 20, Acknowledge::Disk);
    let noted: Mutex<Vec<Arc<Noting>>> = Mutex::new(Vec::new());
    let arm_registered = |r: &Registered| {
        let noting = Noting::new(&f.service, r.uuid);
        lock(&noted).push(Arc::clone(&noting));
        Some(noting as Arc<dyn Waiter>)
    };
    let arm_committed = |c: &Committed| {
        let noting = Noting::new(&f.service, c.uuid);
        lock(&noted).push(Arc::clone(&noting));
        Some(noting as Arc<dyn Waiter>)
    };
    with_writer(&f, || {
        for _ in 0..20 {
            let record = parse_register(br#"{"measurement":{"fields":{"clients":5}}}"#, LIMITS);
            let registered = f
                .service
                .register_answering(
                    record.unwrap(),
                    "10.0.0.9",
                    None,
                    1_000,
                    Some(&arm_registered),
                )
                .unwrap();
            let body = format!(
                r#"{{"uuid":"{}","measurement":{{"fields":{{}}}}}}"#,
                registered.uuid
            );
            let commit = parse_commit(body.as_bytes(), LIMITS).unwrap();
            f.service
                .commit_answering(commit, None, 2_000, Some(&arm_committed))
                .unwrap();
        }
    });
    let noted = noted.into_inner().unwrap();
    assert_eq!(noted.len(), 40);
    for (i, noting) in noted.iter().enumerate() {
        let told = *lock(&noting.told);
        let (thread, ok, state, result) = told.expect("every answer was left to the writer");
        assert!(ok, "the record was written");
        assert_ne!(
            thread,
            thread::current().id(),
            "told by the thread that wrote the record"
        );
        if i % 2 == 0 {
            assert_eq!(
                state,
                Some(State::Running),
                "a registered run is in the table"
            );
        } else {
            assert!(
                matches!(state, Some(State::Finished { .. })),
                "a committed run is finished: {state:?}"
            );
            assert!(result, "its result is readable");
        }
    }
}

/// A register whose record fails lets no answer go, leaves no run in the table, and is refused.
#[test]
fn a_register_whose_record_fails_lets_no_answer_go_and_leaves_no_run() {
    let f = fixture_with("answered-failed", 10, 1 << 20, Acknowledge::Disk);
    let noted: Mutex<Option<Arc<Noting>>> = Mutex::new(None);
    let arm = |r: &Registered| {
        let noting = Noting::new(&f.service, r.uuid);
        *lock(&noted) = Some(Arc::clone(&noting));
        Some(noting as Arc<dyn Waiter>)
    };
    with_writer(&f, || {
        f.service.delivery.log().fail_next_writes(1);
        let record = parse_register(b"{}", LIMITS).unwrap();
        let refused = f
            .service
            .register_answering(record, "10.0.0.9", None, 1_000, Some(&arm));
        assert!(
            matches!(refused, Err(Refused::NotRecorded(_))),
            "{refused:?}"
        );
    });
    let noting = lock(&noted).clone().expect("armed");
    let told = *lock(&noting.told);
    let (_, ok, state, _) = told.expect("the answer was left to the writer");
    assert!(!ok, "told that the write failed");
    assert_eq!(state, None, "no run in the table when told");
    assert!(
        f.service.jobs.list(usize::MAX).is_empty(),
        "the place was given back"
    );
}

/// A change that panics on the writer's thread once its record is on disk is not made: the
/// request must not be answered as a success then, by the writer (it is not) nor by its own
/// thread, or a 200 goes out for a change the table does not show. Its thread panics as the
/// change did, and the handler's caller answers 500.
#[test]
fn a_change_that_panics_once_on_disk_is_not_answered_as_a_success() {
    let f = fixture_with("answered-panics", 10, 1 << 20, Acknowledge::Disk);
    let noting = Noting::new(&f.service, Uuid::nil());
    let mut recorded = None;
    with_writer(&f, || {
        recorded = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || {
                f.service.record_applying(
                    &crate::state::jobs::Change::default(),
                    &[],
                    None,
                    Box::new(|ok| {
                        if ok {
                            panic!("a change that cannot be made (on purpose, by the test)");
                        }
                    }),
                    Some(Arc::clone(&noting) as Arc<dyn Waiter>),
                )
            },
        )));
    });
    let told = *lock(&noting.told);
    let (_, ok, _, _) = told.expect("the answer was left to the writer");
    assert!(!ok, "no answer sent early");
    let recorded = recorded.expect("recorded");
    assert!(
        recorded.is_err(),
        "the change was not made, yet the request is told its record is: {recorded:?}"
    );
}

/// Registers and commits from several threads beside failing writes, heartbeat ticks and
/// snapshots, all answered by the writer: an answer let go (ok) always finds the change in the
/// table, a refused commit leaves its run running without a result, nothing hangs, and the
/// table's counts add up.
#[test]
fn beside_failing_writes_ticks_and_snapshots_every_answer_finds_its_change() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = fixture_with("answered-stress", 1000, 64 << 20, Acknowledge::Disk);
    let noted: Mutex<Vec<(bool, Arc<Noting>)>> = Mutex::new(Vec::new());
    // (uuid, commit answered ok)
    let outcomes: Mutex<Vec<(Uuid, Option<bool>)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    with_writer(&f, || {
        thread::scope(|scope| {
            let log = f.service.delivery.log();
            scope.spawn(|| fail_every_other_write(log, &stop));
            scope.spawn(|| {
                let mut now = 1_000;
                while !stop.load(Ordering::SeqCst) {
                    now += 1;
                    f.service.tick(now);
                    f.service.save_snapshot();
                    thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let arm_registered = |r: &Registered| {
                            let noting = Noting::new(&f.service, r.uuid);
                            lock(&noted).push((true, Arc::clone(&noting)));
                            Some(noting as Arc<dyn Waiter>)
                        };
                        let arm_committed = |c: &Committed| {
                            let noting = Noting::new(&f.service, c.uuid);
                            lock(&noted).push((false, Arc::clone(&noting)));
                            Some(noting as Arc<dyn Waiter>)
                        };
                        for _ in 0..20 {
                            let record = parse_register(
                                br#"{"measurement":{"fields":{"clients":5}}}"#,
                                LIMITS,
                            );
                            let Ok(registered) = f.service.register_answering(
                                record.unwrap(),
                                "10.0.0.9",
                                None,
                                1_000,
                                Some(&arm_registered),
                            ) else {
                                continue;
                            };
                            let body = format!(
                                r#"{{"uuid":"{}","measurement":{{"fields":{{}}}}}}"#,
                                registered.uuid
                            );
                            let commit = parse_commit(body.as_bytes(), LIMITS).unwrap();
                            let committed = f.service.commit_answering(
                                commit,
                                None,
                                2_000,
                                Some(&arm_committed),
                            );
                            match committed {
                                Ok(_) => lock(&outcomes).push((registered.uuid, Some(true))),
                                Err(Refused::NotRecorded(_)) => {
                                    lock(&outcomes).push((registered.uuid, Some(false)))
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    })
                })
                .collect();
            for client in clients {
                client.join().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
        });
    });
    let outcomes = outcomes.into_inner().unwrap();
    assert!(
        outcomes.iter().any(|(_, ok)| *ok == Some(true))
            && outcomes.iter().any(|(_, ok)| *ok == Some(false)),
        "both kinds of commit: {outcomes:?}"
    );
    for (uuid, ok) in &outcomes {
        let state = f
            .service
            .jobs
            .list(usize::MAX)
            .into_iter()
            .find(|j| j.run.uuid == *uuid)
            .map(|j| j.state);
        let result = f.service.results.get(uuid, None).is_some();
        match ok {
            Some(true) => {
                assert!(matches!(state, Some(State::Finished { .. })), "{state:?}");
                assert!(result, "a committed run's result counts");
            }
            _ => {
                assert_eq!(state, Some(State::Running), "a refused commit's run runs");
                assert!(!result, "a refused commit's result does not count");
            }
        }
    }
    let noted = noted.into_inner().unwrap();
    let told_ok = noted
        .iter()
        .filter(|(_, n)| matches!(*lock(&n.told), Some((_, true, _, _))))
        .count();
    assert!(told_ok > 0, "answers were let go by the writer");
    for (register, noting) in noted {
        let told = *lock(&noting.told);
        let Some((_, true, state, result)) = told else {
            continue;
        };
        if register {
            assert!(
                state.is_some(),
                "a registered run is in the table when answered"
            );
        } else {
            assert!(
                matches!(state, Some(State::Finished { .. })) && result,
                "a committed run is finished with its result when answered: {state:?} {result}"
            );
        }
    }
    let counts = f.service.jobs.counts();
    let refused = outcomes.iter().filter(|(_, ok)| *ok != Some(true)).count();
    assert_eq!(counts.running, refused, "{counts:?}");
    assert_eq!(counts.committing, 0, "{counts:?}");
    assert!(
        f.service.jobs.reserve(counts.running + 1, None).is_ok(),
        "no place is left reserved"
    );
}

/// A progress's answer is let go by the log's writer thread once the table shows the run's new
/// fields, in either acknowledgement mode (a progress writes no point: its answer is the same
/// once on disk); one whose record fails lets no answer go and leaves the fields as they were.
#[test]
fn a_progress_s_answer_goes_once_the_table_shows_its_fields() {
    for acknowledge in [Acknowledge::Disk, Acknowledge::Influxdb] {
        let f = fixture_with("answered-progress", 10, 1 << 20, acknowledge);
        let register = parse_register(br#"{"measurement":{"fields":{"users":1}}}"#, LIMITS);
        let uuid = f
            .service
            .register(register.unwrap(), "10.0.0.9", None, 1_000)
            .unwrap()
            .uuid;
        let noted: Mutex<Vec<Arc<Noting>>> = Mutex::new(Vec::new());
        let arm = |_: &()| {
            let noting = Noting::new(&f.service, uuid);
            lock(&noted).push(Arc::clone(&noting));
            Some(noting as Arc<dyn Waiter>)
        };
        with_writer(&f, || {
            for users in 2..12 {
                let body = format!(r#"{{"measurement":{{"fields":{{"users":{users}}}}}}}"#);
                let record = parse_register(body.as_bytes(), LIMITS).unwrap();
                f.service
                    .progress_answering(uuid, record, None, 1_500, Some(&arm))
                    .unwrap();
            }
            f.service.delivery.log().fail_next_writes(1);
            let body = r#"{"measurement":{"fields":{"users":99}}}"#;
            let record = parse_register(body.as_bytes(), LIMITS).unwrap();
            let refused = f
                .service
                .progress_answering(uuid, record, None, 1_500, Some(&arm));
            assert!(
                matches!(refused, Err(Refused::NotRecorded(_))),
                "{refused:?}"
            );
        });
        let noted = noted.into_inner().unwrap();
        assert_eq!(noted.len(), 11, "{acknowledge:?}");
        for (i, noting) in noted.iter().enumerate() {
            let (thread, ok, _, _) =
                lock(&noting.told).expect("every answer was left to the writer");
            let fields = lock(&noting.fields).clone();
            assert_ne!(thread, thread::current().id(), "told by the writer");
            let users = fields
                .iter()
                .find(|(k, _)| k == "users")
                .map(|(_, v)| v.clone());
            if i < 10 {
                assert!(ok, "{acknowledge:?}: written");
                assert_eq!(
                    users,
                    Some(FieldValue::Float(i as f64 + 2.0)),
                    "{acknowledge:?}: the table shows the progress when its answer goes"
                );
            } else {
                assert!(!ok, "{acknowledge:?}: told that the write failed");
            }
        }
        let job = f
            .service
            .jobs
            .list(usize::MAX)
            .into_iter()
            .find(|j| j.run.uuid == uuid);
        let users = job.and_then(|j| {
            j.fields
                .iter()
                .find(|(k, _)| k == "users")
                .map(|(_, v)| v.clone())
        });
        assert_eq!(
            users,
            Some(FieldValue::Float(11.0)),
            "{acknowledge:?}: the failed one left it"
        );
    }
}

/// Progresses of the same runs from several threads beside failing writes, a commit of some of
/// those runs, registers that take the places expired runs leave, heartbeat ticks that expire
/// runs (the clock jumps past `progress_timeout`) and snapshots, every answer sent by the
/// writer: an answer let go (ok) always finds its own value in the table, a progress that
/// returned Ok was let go, one not recorded was not, nothing hangs, and once all is done the
/// table's bytes are its jobs' weights and no place is left reserved (a revival's place given
/// back once, whether its record was written or not).
#[test]
fn progresses_beside_failing_writes_commits_expiry_and_snapshots_are_answered_with_their_values() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::time::{Duration, Instant};
    const MAX_RUNNING: usize = 6;
    let f = fixture_with(
        "answered-progress-stress",
        MAX_RUNNING,
        64 << 20,
        Acknowledge::Disk,
    );
    let t0 = Instant::now();
    f.service.clock.set(t0);
    let runs: Vec<Uuid> = (0..MAX_RUNNING)
        .map(|_| {
            let record = parse_register(br#"{"measurement":{"fields":{"users":1}}}"#, LIMITS);
            f.service
                .register(record.unwrap(), "10.0.0.9", None, 1_000)
                .unwrap()
                .uuid
        })
        .collect();
    let now_ms = AtomicI64::new(1_000);
    let stop = AtomicBool::new(false);
    // (field, value, what the call returned, the answer armed for it)
    type Tried = (String, f64, Result<(), String>, Option<Arc<Noting>>);
    let tried: Mutex<Vec<Tried>> = Mutex::new(Vec::new());
    let expired = std::sync::atomic::AtomicUsize::new(0);
    with_writer(&f, || {
        thread::scope(|scope| {
            let log = f.service.delivery.log();
            scope.spawn(|| fail_every_other_write(log, &stop));
            // Ticks and snapshots; now and then the clock jumps past `progress_timeout`, so
            // that runs expire and the next progress revives them.
            scope.spawn(|| {
                let mut mono = Duration::ZERO;
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let step = if n.is_multiple_of(5) {
                        expired.fetch_add(1, Ordering::SeqCst);
                        Duration::from_secs(700)
                    } else {
                        Duration::from_millis(1)
                    };
                    mono += step;
                    f.service.clock.set(t0 + mono);
                    let now = now_ms.fetch_add(step.as_millis() as i64, Ordering::SeqCst);
                    f.service.tick(now + step.as_millis() as i64);
                    f.service.save_snapshot();
                    thread::sleep(Duration::from_millis(1));
                }
            });
            // Registers that take the places expired runs leave.
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let record = parse_register(b"{}", LIMITS).unwrap();
                    let now = now_ms.load(Ordering::SeqCst);
                    let _ = f.service.register(record, "10.0.0.9", None, now);
                    thread::sleep(Duration::from_millis(3));
                }
            });
            // Commits of two of the runs, racing their progresses.
            scope.spawn(|| {
                for uuid in &runs[..2] {
                    thread::sleep(Duration::from_millis(60));
                    let body = format!(r#"{{"uuid":"{uuid}","measurement":{{"fields":{{}}}}}}"#);
                    let commit = parse_commit(body.as_bytes(), LIMITS).unwrap();
                    let now = now_ms.load(Ordering::SeqCst);
                    let _ = f.service.commit(commit, None, now);
                }
            });
            let clients: Vec<_> = (0..4)
                .map(|k| {
                    let (runs, tried, now_ms, f) = (&runs, &tried, &now_ms, &f);
                    scope.spawn(move || {
                        for i in 0..150 {
                            let uuid = runs[i % runs.len()];
                            let field = format!("c{k}");
                            let value = (i * 10 + k) as f64;
                            let armed: Mutex<Option<Arc<Noting>>> = Mutex::new(None);
                            let arm = |_: &()| {
                                let noting = Noting::new(&f.service, uuid);
                                *lock(&armed) = Some(Arc::clone(&noting));
                                Some(noting as Arc<dyn Waiter>)
                            };
                            let body =
                                format!(r#"{{"measurement":{{"fields":{{"{field}":{value}}}}}}}"#);
                            let record = parse_register(body.as_bytes(), LIMITS).unwrap();
                            let now = now_ms.load(Ordering::SeqCst);
                            let got = f
                                .service
                                .progress_answering(uuid, record, None, now, Some(&arm))
                                .map_err(|e| format!("{e:?}"));
                            let armed = lock(&armed).take();
                            lock(tried).push((field, value, got, armed));
                        }
                    })
                })
                .collect();
            for client in clients {
                client.join().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
        });
    });
    let tried = tried.into_inner().unwrap();
    let ok = tried.iter().filter(|t| t.2.is_ok()).count();
    let not_recorded = tried
        .iter()
        .filter(|t| matches!(&t.2, Err(e) if e.starts_with("NotRecorded")))
        .count();
    assert!(
        ok > 0 && not_recorded > 0,
        "{ok} recorded, {not_recorded} not, of {}",
        tried.len()
    );
    assert!(expired.load(Ordering::SeqCst) > 0, "the clock never jumped");
    let mut let_go = 0;
    for (field, value, got, armed) in &tried {
        let told = armed.as_ref().and_then(|n| *lock(&n.told));
        match got {
            Ok(()) => {
                // Untold when another request (a tick, a register, a commit) wrote the group
                // holding the record before the progress left its wait: then its own thread
                // answered, as without an armed answer.
                let Some((_, told_ok, _, _)) = told else {
                    continue;
                };
                let_go += 1;
                let fields = lock(&armed.as_ref().expect("armed").fields).clone();
                assert!(told_ok, "a recorded progress's answer was let go");
                assert!(
                    fields
                        .iter()
                        .any(|(k, v)| k == field && *v == FieldValue::Float(*value)),
                    "the table shows {field}={value} when its answer goes: {fields:?}"
                );
            }
            Err(_) => assert!(
                !matches!(told, Some((_, true, _, _))),
                "a refused progress's answer went: {got:?}"
            ),
        }
    }
    assert!(let_go > 0, "no progress's answer was let go by the writer");
    let (bytes, weights, reserved) = f.service.jobs.accounted();
    assert_eq!(bytes, weights, "the table's bytes are its jobs' weights");
    assert_eq!(reserved, 0, "no place is left reserved");
    let counts = f.service.jobs.counts();
    assert_eq!(counts.committing, 0, "{counts:?}");
    assert!(counts.running <= MAX_RUNNING, "{counts:?}");
}
