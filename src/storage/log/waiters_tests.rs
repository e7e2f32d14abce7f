//! Requests that leave their wait to a [`Waiter`] ([`Log::wait_with`]) and the writer of their
//! records ([`Log::write_for_waiters`]).

use super::tests::read_all;
use super::*;
use crate::storage::tests::Dir;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, ThreadId};
use std::time::Duration;
use uuid::Uuid;

fn open(dir: &Dir) -> (Log, Position, Opened) {
    let handle = DirHandle::open(dir.path()).unwrap();
    Log::open_sized(handle, 1 << 30, false, 1 << 20, &mut |_| {}).unwrap()
}

/// A waiter that notes how it was told: by which thread, the outcome, and whether its record's
/// bytes were in the log's files by then.
struct Noting {
    dir: PathBuf,
    line: String,
    told: Mutex<Vec<(ThreadId, bool, bool)>>,
    /// Let go untold ([`Waiter::untold`]).
    untold: AtomicBool,
    signal: Signal,
}

impl Noting {
    fn new(dir: &Dir, line: String) -> Arc<Noting> {
        Arc::new(Noting {
            dir: dir.path().to_path_buf(),
            line,
            told: Mutex::new(Vec::new()),
            untold: AtomicBool::new(false),
            signal: Signal::new(),
        })
    }

    fn told(&self) -> Vec<(ThreadId, bool, bool)> {
        crate::sync::lock(&self.told).clone()
    }
}

impl Waiter for Noting {
    fn settled(&self, ok: bool) {
        let on_disk = std::fs::read_dir(&self.dir).unwrap().any(|entry| {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
            bytes
                .windows(self.line.len())
                .any(|w| w == self.line.as_bytes())
        });
        crate::sync::lock(&self.told).push((thread::current().id(), ok, on_disk));
        self.signal.notify_all();
    }

    fn untold(&self) {
        let _told = crate::sync::lock(&self.told);
        self.untold.store(true, Ordering::SeqCst);
        self.signal.notify_all();
    }

    fn wait(&self, _deadline: Option<std::time::Instant>) {
        let mut told = crate::sync::lock(&self.told);
        while told.is_empty() && !self.untold.load(Ordering::SeqCst) {
            told = self.signal.wait(told).unwrap();
        }
    }
}

fn append(log: &Log, line: &str) -> u64 {
    let units = [Unit {
        run: Uuid::nil(),
        points: 1,
        lines: line,
    }];
    log.append(Kind::Request, 0, b"", &units, None).unwrap()
}

/// Requests of three threads leave their wait to waiters, beside three that wait as before: each
/// waiter is told once, that its record was written, on another thread than its request's and
/// with the record in the file by then; every request gets its own number, and the records
/// read back whole.
#[test]
fn each_waiter_is_told_once_its_record_is_written_and_on_another_thread() {
    let dir = Dir::new("log-waiters");
    let (log, mut at, _) = open(&dir);
    let told_elsewhere = AtomicUsize::new(0);
    let numbers = Mutex::new(Vec::new());
    thread::scope(|scope| {
        scope.spawn(|| log.write_for_waiters());
        let requests: Vec<_> = (0..6)
            .map(|t| {
                let (log, dir, numbers, told_elsewhere) = (&log, &dir, &numbers, &told_elsewhere);
                scope.spawn(move || {
                    for i in 0..150 {
                        let line = format!("m,t=t{t} v={i} {i}\n");
                        let ticket = append(log, &line);
                        let seq = if t % 2 == 0 {
                            let waiter = Noting::new(dir, line);
                            let seq = log.wait_with(ticket, waiter.clone()).unwrap();
                            let told = waiter.told();
                            // Told at most once; not told only when the record was written
                            // before the waiter could be left.
                            assert!(told.len() <= 1, "{told:?}");
                            if let Some((thread, ok, on_disk)) = told.first() {
                                assert!(*ok && *on_disk, "{told:?}");
                                assert_ne!(*thread, thread::current().id());
                                told_elsewhere.fetch_add(1, Ordering::SeqCst);
                            }
                            seq
                        } else {
                            log.wait(ticket).unwrap()
                        };
                        crate::sync::lock(numbers).push(seq);
                    }
                })
            })
            .collect();
        for request in requests {
            request.join().unwrap();
        }
        log.stop_writer();
    });
    let mut numbers = numbers.into_inner().unwrap();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=900).collect::<Vec<u64>>());
    assert!(
        told_elsewhere.load(Ordering::SeqCst) > 0,
        "no waiter was told"
    );
    assert_eq!(read_all(&log, &mut at).len(), 900);
}

/// A write that fails tells its waiter so, sends nothing, and the request gets the failure.
#[test]
fn a_failed_write_tells_its_waiter_and_the_request_gets_the_failure() {
    let dir = Dir::new("log-waiters-failed");
    let (log, _, _) = open(&dir);
    thread::scope(|scope| {
        scope.spawn(|| log.write_for_waiters());
        // The writer runs once it has said so under the lock.
        while crate::sync::lock(&log.inner).writer != Writer::On {
            thread::yield_now();
        }
        log.fail_next_writes(1);
        let line = "m v=1 1\n".to_string();
        let ticket = append(&log, &line);
        let waiter = Noting::new(&dir, line);
        let outcome = log.wait_with(ticket, waiter.clone());
        assert!(outcome.is_err(), "{outcome:?}");
        let told = waiter.told();
        assert_eq!(told.len(), 1);
        assert!(!told[0].1, "told that the write failed: {told:?}");
        log.stop_writer();
    });
}

/// Without the writer (none started, or one asked to end), a request waits as [`Log::wait`]
/// does and its waiter is never told; the writer asked to end returns.
#[test]
fn without_the_writer_a_request_waits_as_before_and_its_waiter_is_never_told() {
    let dir = Dir::new("log-waiters-none");
    let (log, _, _) = open(&dir);
    let line = "m v=1 1\n".to_string();
    let waiter = Noting::new(&dir, line.clone());
    let seq = log.wait_with(append(&log, &line), waiter.clone()).unwrap();
    assert_eq!(seq, 1);
    assert!(waiter.told().is_empty());
    thread::scope(|scope| {
        let writer = scope.spawn(|| log.write_for_waiters());
        while crate::sync::lock(&log.inner).writer != Writer::On {
            thread::yield_now();
        }
        log.stop_writer();
        writer.join().unwrap();
    });
    let waiter = Noting::new(&dir, "m v=2 2\n".into());
    let seq = log
        .wait_with(append(&log, "m v=2 2\n"), waiter.clone())
        .unwrap();
    assert_eq!(seq, 2);
    assert!(waiter.told().is_empty());
}

/// Requests leaving their wait to waiters beside requests waiting as before, while writes fail
/// now and then (some of them cut back only later, which breaks the log and fails what was
/// queued behind; some finding the disk full, which trims): a waiter is told once at most,
/// `ok` exactly when its request gets a number, never after its request returned, and one
/// that was told was told before its request returned; every request returns.
#[test]
fn beside_failing_writes_a_waiter_is_told_once_and_only_ok_for_a_record_written() {
    let dir = Dir::new("log-waiters-failing");
    let (log, _, _) = open(&dir);
    let returned = AtomicUsize::new(0);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| log.write_for_waiters());
        while crate::sync::lock(&log.inner).writer != Writer::On {
            thread::yield_now();
        }
        // A failure is asked for only once a write went through since the last one, and the
        // next only once it failed a request: both kinds of outcome happen however slow the
        // disk is (a failure every few ms would fail every group on a disk whose fdatasync
        // takes longer).
        let failer = scope.spawn(|| {
            let mut i = 0u64;
            let until = |count: &AtomicUsize, past: usize| {
                while count.load(Ordering::SeqCst) <= past && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_micros(200));
                }
            };
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                until(&ok, ok.load(Ordering::SeqCst));
                log.fail_full.store(i.is_multiple_of(3), Ordering::SeqCst);
                log.fail_next_undos(usize::from(i.is_multiple_of(4)));
                let failed_before = failed.load(Ordering::SeqCst);
                log.fail_next_writes(1);
                until(&failed, failed_before);
            }
        });
        let requests: Vec<_> = (0..6)
            .map(|t| {
                let (log, dir, returned, ok, failed) = (&log, &dir, &returned, &ok, &failed);
                scope.spawn(move || {
                    for i in 0..200 {
                        let line = format!("m,t=t{t} v={i} {i}\n");
                        let units = [Unit {
                            run: Uuid::nil(),
                            points: 1,
                            lines: &line,
                        }];
                        // A broken log refuses the record until it is mended: tried again.
                        let ticket = loop {
                            match log.append(Kind::Request, 0, b"", &units, None) {
                                Ok(ticket) => break ticket,
                                Err(_) => thread::sleep(Duration::from_micros(200)),
                            }
                        };
                        if t % 3 == 0 {
                            match log.wait(ticket) {
                                Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                                Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                            };
                            continue;
                        }
                        let waiter = Noting::new(dir, line);
                        let outcome = log.wait_with(ticket, waiter.clone());
                        let told = waiter.told();
                        assert!(told.len() <= 1, "told twice: {told:?}");
                        if let Some((_, told_ok, on_disk)) = told.first() {
                            assert_eq!(*told_ok, outcome.is_ok(), "{told:?} {outcome:?}");
                            assert!(!told_ok || *on_disk, "told ok before on disk");
                        }
                        match outcome {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                        };
                        // Told nothing more once the request went on.
                        thread::yield_now();
                        assert_eq!(waiter.told().len(), told.len(), "told after it returned");
                    }
                    returned.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for request in requests {
            request.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        failer.join().unwrap();
        log.fail_next_writes(0);
        log.fail_next_undos(0);
        log.stop_writer();
    });
    assert_eq!(returned.load(Ordering::SeqCst), 6);
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(ok > 0 && failed > 0, "{ok} written, {failed} failed");
}

/// A writer that ends while a request waits on it (as a panic would end it) lets the request go
/// untold: the request writes its group itself and gets its number, and no waiter is told.
#[test]
fn a_writer_that_ends_lets_its_waiters_go_and_they_write_their_own_group() {
    let dir = Dir::new("log-waiters-ended");
    let (log, _, _) = open(&dir);
    // The writer counted as running, as it is between its start and its end.
    crate::sync::lock(&log.inner).writer = Writer::On;
    let line = "m v=1 1\n".to_string();
    let waiter = Noting::new(&dir, line.clone());
    thread::scope(|scope| {
        let request = scope.spawn(|| log.wait_with(append(&log, &line), waiter.clone()));
        while crate::sync::lock(&log.inner).waiters.is_empty() {
            thread::yield_now();
        }
        drop(waiters::WriterOff(&log));
        assert_eq!(request.join().unwrap().unwrap(), 1);
    });
    assert!(waiter.told().is_empty(), "{:?}", waiter.told());
    assert!(waiter.untold.load(Ordering::SeqCst));
    assert!(!log.writer_runs());
}
