//! Answers left to the deliverer in `"influxdb"` mode ([`Delivery::outcome_with`]): sent by the
//! deliverer once InfluxDB stored their records, dropped for the request's own thread to answer
//! when the record is refused, InfluxDB is down, the wait's bound passes or the deliverer ends.

use super::*;
use std::sync::atomic::AtomicUsize;
use std::thread::ThreadId;

/// A waiter that notes how it was told: on which thread, and what the sink had stored then.
#[derive(Default)]
struct Noting {
    settled: Mutex<Vec<(ThreadId, bool, Vec<String>)>>,
    untold: AtomicUsize,
    signal: Signal,
    sink: Option<Arc<MemorySink>>,
}

impl Noting {
    fn new(sink: &Arc<MemorySink>) -> Arc<Noting> {
        Arc::new(Noting {
            sink: Some(Arc::clone(sink)),
            ..Noting::default()
        })
    }

    fn settled(&self) -> Vec<(ThreadId, bool, Vec<String>)> {
        lock(&self.settled).clone()
    }

    fn untold(&self) -> usize {
        self.untold.load(Ordering::SeqCst)
    }
}

impl Waiter for Noting {
    fn settled(&self, ok: bool) {
        let stored = self.sink.as_ref().map(|s| s.stored()).unwrap_or_default();
        lock(&self.settled).push((std::thread::current().id(), ok, stored));
        self.signal.notify_all();
    }

    fn untold(&self) {
        let _settled = lock(&self.settled);
        self.untold.fetch_add(1, Ordering::SeqCst);
        self.signal.notify_all();
    }

    fn wait(&self, deadline: Option<Instant>) {
        let mut settled = lock(&self.settled);
        while settled.is_empty() && self.untold() == 0 {
            let left = match deadline {
                None => Duration::from_secs(60),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => return,
                },
            };
            settled = self.signal.wait_timeout(settled, left).unwrap().0;
        }
    }
}

impl Running {
    /// A request's record, its answer left to the deliverer through `answer`: the outcome.
    fn request_answered(&self, lines: &str, answer: &Arc<Noting>) -> Outcome {
        self.request_with(lines, Arc::clone(answer) as Arc<dyn Waiter>)
    }

    /// [`Running::request_answered`], for any waiter.
    fn request_with(&self, lines: &str, answer: Arc<dyn Waiter>) -> Outcome {
        let seq = self.record_request(lines);
        self.delivery.outcome_with(seq, Some(answer))
    }

    fn answers_left(&self) -> usize {
        lock(&self.delivery.settled).answers.len()
    }
}

/// Requests of many threads leave their answers to the deliverer, one of them refused by
/// InfluxDB: each stored one is told once, on the deliverer's thread, after InfluxDB stored its
/// line, and its request learns `Delivered`; the refused one is never told it was stored, and
/// its request learns why it was dead-lettered (its own thread answers).
#[test]
fn answers_go_from_the_deliverer_once_influxdb_stored_their_records() {
    let mut r = setup(
        "delivery-answers-stored",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    r.sink.refuse_lines_with("refused");
    let at = r.position.take().unwrap();
    let lines: Vec<String> = (0..24)
        .map(|i| match i {
            7 => format!("m,r=refused v={i} {i}\n"),
            _ => format!("m,r=a v={i} {i}\n"),
        })
        .collect();
    let answers: Vec<Arc<Noting>> = lines.iter().map(|_| Noting::new(&r.sink)).collect();
    let outcomes: Vec<(ThreadId, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .iter()
            .zip(&answers)
            .map(|(line, answer)| {
                let r = &r;
                scope.spawn(move || {
                    let outcome = r.request_answered(line, answer);
                    (std::thread::current().id(), outcome)
                })
            })
            .collect();
        // Every answer is left before the deliverer starts: none is settled before its
        // request could leave it.
        r.until("every answer left to the deliverer", |r| {
            r.answers_left() == 24
        });
        let (d, stats) = (Arc::clone(&r.delivery), Arc::clone(&r.stats));
        scope.spawn(move || d.run(at, &stats));
        let outcomes = handles.into_iter().map(|h| h.join().unwrap()).collect();
        r.delivery.stop();
        outcomes
    });
    for (i, ((line, answer), (thread, outcome))) in
        lines.iter().zip(&answers).zip(&outcomes).enumerate()
    {
        let settled = answer.settled();
        if i == 7 {
            assert!(
                matches!(outcome, Outcome::DeadLettered(why) if why.contains("influxdb answered 400")),
                "{outcome:?}"
            );
            assert!(
                settled.is_empty(),
                "a refused record's answer was sent: {settled:?}"
            );
            assert_eq!(answer.untold(), 1, "its request answers itself");
            continue;
        }
        assert_eq!(*outcome, Outcome::Delivered, "{line}");
        assert_eq!(settled.len(), 1, "{line}: told once: {settled:?}");
        let (told_on, ok, stored) = &settled[0];
        assert!(*ok);
        assert_ne!(told_on, thread, "told on the deliverer's thread");
        assert!(
            stored.iter().any(|s| s == line.trim_end()),
            "{line}: told before InfluxDB stored it"
        );
        assert_eq!(answer.untold(), 0);
    }
    assert_eq!(
        r.answers_left(),
        0,
        "no answer is kept once its request went on"
    );
}

/// A sink over a [`MemorySink`] whose writes wait until the test opens the gate.
struct Gated {
    inner: Arc<MemorySink>,
    open: Mutex<bool>,
    opened: Signal,
}

impl Sink for Arc<Gated> {
    fn write(&self, lines: &str) -> Result<(), SinkError> {
        let mut open = lock(&self.open);
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        self.inner.write(lines)
    }

    fn ping(&self) -> Result<(), SinkError> {
        self.inner.ping()
    }
}

/// A write that fails in a way that may pass (InfluxDB busy): the answer left to the deliverer
/// is dropped at once (its request answers `Recorded` itself), not after the wait's bound of
/// 60 s; while InfluxDB is down nothing is left to it. Both points are delivered later.
#[test]
fn answers_are_dropped_at_once_when_influxdb_is_down() {
    let mut gate = None;
    let mut r = setup_over(
        "delivery-answers-down",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
        Duration::from_secs(60),
        |memory| {
            let gated = Arc::new(Gated {
                inner: Arc::clone(memory),
                open: Mutex::new(false),
                opened: Signal::new(),
            });
            gate = Some(Arc::clone(&gated));
            Box::new(gated)
        },
    );
    let gate = gate.expect("made");
    r.start();
    r.until("the start's probe", |r| {
        r.delivery.influx_up() == Some(true)
    });
    // Busy, and not answering `/ping` until the test says: down until then.
    r.sink
        .answer([Answer::Fail(SinkError::from_status(503, "busy".into()))]);
    r.sink.set_ping_fails(true);
    let answer = Noting::new(&r.sink);
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| r.request_answered("m,r=a v=1 1\n", &answer));
        r.until("the answer is left to the deliverer", |r| {
            r.answers_left() == 1
        });
        let began = Instant::now();
        *lock(&gate.open) = true;
        gate.opened.notify_all();
        assert_eq!(waiting.join().unwrap(), Outcome::Recorded);
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{:?}",
            began.elapsed()
        );
    });
    assert!(answer.settled().is_empty());
    assert_eq!(answer.untold(), 1);
    assert_eq!(r.delivery.influx_up(), Some(false));
    let later = Noting::new(&r.sink);
    assert_eq!(
        r.request_answered("m,r=b v=1 1\n", &later),
        Outcome::Recorded
    );
    assert_eq!(
        later.untold() + later.settled().len(),
        0,
        "never left to it"
    );
    assert_eq!(r.answers_left(), 0);
    r.sink.set_ping_fails(false);
    r.delivered_all();
    assert_eq!(r.sink.stored(), ["m,r=a v=1 1", "m,r=b v=1 1"]);
}

/// With no deliverer at work, an answer left to it is dropped once the wait's bound passes,
/// and its request answers `Recorded`; a deliverer that ends (asked to stop) drops those left
/// to it at once, not after the bound of 60 s.
#[test]
fn answers_are_dropped_when_the_wait_ends_or_the_deliverer_does() {
    let r = setup_waiting(
        "delivery-answers-bound",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
        Duration::from_millis(300),
    );
    let answer = Noting::new(&r.sink);
    assert_eq!(
        r.request_answered("m,r=a v=1 1\n", &answer),
        Outcome::Recorded
    );
    assert!(answer.settled().is_empty());
    assert_eq!(answer.untold(), 1);
    assert_eq!(r.answers_left(), 0);

    let mut r = setup_waiting(
        "delivery-answers-end",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
        Duration::from_secs(60),
    );
    let answer = Noting::new(&r.sink);
    let at = r.position.take().unwrap();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| r.request_answered("m,r=a v=1 1\n", &answer));
        r.until("the answer is left to the deliverer", |r| {
            r.answers_left() == 1
        });
        let began = Instant::now();
        // Asked to stop before it starts: it ends at once.
        r.delivery.stop();
        let (d, stats) = (Arc::clone(&r.delivery), Arc::clone(&r.stats));
        std::thread::spawn(move || d.run(at, &stats))
            .join()
            .unwrap();
        assert_eq!(waiting.join().unwrap(), Outcome::Recorded);
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{:?}",
            began.elapsed()
        );
    });
    assert!(answer.settled().is_empty());
    assert_eq!(answer.untold(), 1);
    assert_eq!(r.answers_left(), 0);
}

/// In disk mode nothing is left to the deliverer: the outcome is known at once.
#[test]
fn in_disk_mode_no_answer_is_left_to_the_deliverer() {
    let r = setup("delivery-answers-disk", Acknowledge::Disk, LIMITS, 1 << 20);
    let answer = Noting::new(&r.sink);
    assert_eq!(
        r.request_answered("m,r=a v=1 1\n", &answer),
        Outcome::Recorded
    );
    assert_eq!(answer.untold() + answer.settled().len(), 0);
    assert_eq!(r.answers_left(), 0);
}

/// A waiter whose first wait ends as if its bound passed just as the deliverer takes it, before
/// the deliverer tells it: its `settled` holds the deliverer until the request's thread has
/// looked for the answer again and found it taken.
#[derive(Default)]
struct Racing {
    state: Mutex<RacingState>,
    signal: Signal,
}

#[derive(Default)]
struct RacingState {
    taken: bool,
    looked_again: bool,
    told: Vec<bool>,
    untold: usize,
    waits: usize,
}

impl Waiter for Racing {
    fn settled(&self, ok: bool) {
        let mut state = lock(&self.state);
        state.taken = true;
        self.signal.notify_all();
        let until = Instant::now() + Duration::from_secs(10);
        while !state.looked_again {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self.signal.wait_timeout(state, left).unwrap().0;
        }
        state.told.push(ok);
        self.signal.notify_all();
    }

    fn untold(&self) {
        lock(&self.state).untold += 1;
        self.signal.notify_all();
    }

    fn wait(&self, _deadline: Option<Instant>) {
        let mut state = lock(&self.state);
        state.waits += 1;
        if state.waits == 1 {
            while !state.taken && state.untold == 0 {
                state = self.signal.wait(state).unwrap();
            }
            return;
        }
        state.looked_again = true;
        self.signal.notify_all();
        while state.told.is_empty() && state.untold == 0 {
            state = self.signal.wait(state).unwrap();
        }
    }
}

/// The wait's bound passes just as the deliverer takes the answer, before it tells it: the
/// request's thread, finding it taken, waits for the deliverer to tell it rather than answer
/// itself, and learns `Delivered`, the answer the deliverer sent; it is told once, never
/// dropped, and the deliverer keeps nothing of it.
#[test]
fn an_answer_taken_as_the_bound_passes_is_told_once_and_the_outcome_matches_it() {
    let mut r = setup(
        "delivery-answers-race",
        Acknowledge::Influxdb,
        LIMITS,
        1 << 20,
    );
    let at = r.position.take().unwrap();
    let answer = Arc::new(Racing::default());
    let outcome = std::thread::scope(|scope| {
        let waiting = {
            let (r, answer) = (&r, Arc::clone(&answer));
            scope.spawn(move || r.request_with("m,r=a v=1 1\n", answer))
        };
        r.until("the answer is left to the deliverer", |r| {
            r.answers_left() == 1
        });
        let (d, stats) = (Arc::clone(&r.delivery), Arc::clone(&r.stats));
        scope.spawn(move || d.run(at, &stats));
        let outcome = waiting.join().unwrap();
        r.delivery.stop();
        outcome
    });
    assert_eq!(outcome, Outcome::Delivered);
    let state = lock(&answer.state);
    assert!(
        state.looked_again,
        "the request looked again before it was told"
    );
    assert_eq!(state.told, [true]);
    assert_eq!(state.untold, 0);
    assert_eq!(state.waits, 2);
    drop(state);
    assert_eq!(r.answers_left(), 0);
    assert_eq!(r.sink.stored(), ["m,r=a v=1 1"]);
}
