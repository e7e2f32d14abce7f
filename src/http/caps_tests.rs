//! Tests of `caps.rs`, kept beside it so that the module itself stays short.

use super::*;
use std::net::TcpListener;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn acquire(table: &Arc<ConnTable>, from: &str) -> Option<ConnGuard> {
    table.try_acquire(ip(from), Weak::new()).ok()
}

#[test]
fn conn_table_counts_exactly() {
    // No connection can be evicted: every one is busy.
    let table = Arc::new(ConnTable::new(3, 2));
    let busy = |guard: ConnGuard| {
        assert!(guard.activity().enter(Phase::Busy));
        guard
    };
    let a1 = busy(acquire(&table, "10.0.0.1").expect("first from a"));
    let a2 = busy(acquire(&table, "::ffff:10.0.0.1").expect("second from a, mapped"));
    assert_eq!(
        table.try_acquire(ip("10.0.0.1"), Weak::new()).err(),
        Some(Refused::PerClient),
        "per-client cap"
    );
    let b1 = busy(acquire(&table, "10.0.0.2").expect("first from b"));
    assert_eq!(
        table.try_acquire(ip("10.0.0.2"), Weak::new()).err(),
        Some(Refused::Full),
        "global cap"
    );
    assert_eq!(table.open.load(Ordering::SeqCst), 3);
    drop(a1);
    assert!(
        acquire(&table, "10.0.0.2").is_some(),
        "released and dropped at once"
    );
    drop((a2, b1));
    assert_eq!(table.open.load(Ordering::SeqCst), 0);
    assert!(table.lock().per_client.is_empty());
    assert!(table.wait_drained(Instant::now()));
}

#[test]
fn ipv6_clients_are_counted_per_64() {
    let table = Arc::new(ConnTable::new(100, 2));
    let _a = acquire(&table, "2001:db8:1:2::1").expect("first in the /64");
    let _b = acquire(&table, "2001:db8:1:2:ffff:ffff:ffff:ffff").expect("second in the /64");
    assert!(
        acquire(&table, "2001:db8:1:2:abcd::9").is_none(),
        "a third address of the same /64 shares its cap"
    );
    assert!(acquire(&table, "2001:db8:1:3::1").is_some(), "the next /64");
    assert_eq!(client_of(ip("2001:db8:1:2:abcd::9")), ip("2001:db8:1:2::"));
    assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
}

fn candidate(phase: Phase, trusted: bool, since_ms: u64, client_conns: usize) -> Candidate {
    Candidate {
        state: State {
            phase,
            trusted,
            pipelined: false,
            since_ms,
        },
        held: 0,
        due_ms: u64::MAX,
        client_conns,
    }
}

fn pipelined(mut c: Candidate) -> Candidate {
    c.state.pipelined = true;
    c
}

/// The order in which `rank` closes `cands`, by their names; those it never closes left out.
fn order<R: Ord>(
    cands: &[(&'static str, Candidate)],
    rank: impl Fn(&Candidate) -> Option<R>,
) -> Vec<&'static str> {
    let mut left: Vec<(&'static str, Candidate)> = cands.to_vec();
    let mut out = Vec::new();
    while let Some((name, _)) = choose(left.iter().copied(), &rank) {
        out.push(name);
        left.retain(|(n, _)| *n != name);
    }
    out
}

#[test]
fn the_least_progress_goes_first_and_authenticated_busy_or_read_never() {
    use Phase::*;
    let cands = [
        ("busy", candidate(Busy, false, 0, 1)),
        ("trusted idle", candidate(Idle, true, 0, 1)),
        ("trusted in its next head", candidate(Head, true, 0, 1)),
        ("trusted body", candidate(Body, true, 0, 1)),
        ("silent body", candidate(Body, false, 10, 1)),
        ("idle, long", candidate(Idle, false, 20, 1)),
        ("idle, short", candidate(Idle, false, 900, 1)),
        ("head, young", candidate(Head, false, 800, 1)),
        ("head, old", candidate(Head, false, 100, 1)),
        ("trusted, closing", candidate(Closing, true, 950, 1)),
        ("already evicted", candidate(Evicted, false, 0, 1)),
        ("answer taken lately", candidate(Sending, false, 600, 1)),
        ("draining, lately", candidate(Draining, false, 700, 1)),
        (
            "trusted, draining unread",
            candidate(Draining, true, 200, 1),
        ),
        ("trusted, answer unread", candidate(Sending, true, 300, 1)),
        (
            "trusted, pipelined answer",
            pipelined(candidate(Sending, true, 990, 1)),
        ),
        (
            "trusted, pipelined head",
            pipelined(candidate(Head, true, 995, 1)),
        ),
    ];
    assert_eq!(
        order(&cands, |c| slot_rank(c, 1000)),
        [
            "trusted, closing",
            "head, old",
            "trusted, draining unread",
            "trusted, answer unread",
            "head, young",
            "trusted, pipelined answer",
            "trusted, pipelined head",
            "idle, long",
            "idle, short",
            "silent body",
        ]
    );
}

#[test]
fn within_a_phase_the_client_with_most_connections_goes_first() {
    use Phase::*;
    // A newcomer's head (its client's only connection) outlasts the heads of a client
    // holding many, however old theirs are; across phases, progress still decides.
    let cands = [
        ("newcomer's head", candidate(Head, false, 100, 1)),
        ("attacker's new head", candidate(Head, false, 990, 60)),
        ("attacker's old head", candidate(Head, false, 500, 60)),
        ("other attacker's head", candidate(Head, false, 10, 59)),
        ("attacker idle", candidate(Idle, false, 0, 60)),
    ];
    assert_eq!(
        order(&cands, |c| slot_rank(c, 1000)),
        [
            "attacker's old head",
            "attacker's new head",
            "other attacker's head",
            "newcomer's head",
            "attacker idle",
        ]
    );
}

#[test]
fn only_bodies_silent_long_enough_give_up_memory() {
    use Phase::*;
    let held = |mut c: Candidate, bytes| {
        c.held = bytes;
        c
    };
    let due = |mut c: Candidate, due_ms| {
        c.due_ms = due_ms;
        c
    };
    let cands = [
        (
            "trickled, behind for 3 s",
            due(held(candidate(Body, false, 9990, 1), 1 << 20), 7000),
        ),
        (
            "trickled, behind for 0.1 s",
            due(held(candidate(Body, false, 9990, 1), 1 << 20), 9900),
        ),
        (
            "ahead of its pace",
            due(held(candidate(Body, false, 9990, 1), 1 << 20), 12_000),
        ),
        ("silent 2 s", held(candidate(Body, false, 8000, 1), 1 << 20)),
        ("silent 5 s", held(candidate(Body, false, 5000, 1), 1 << 20)),
        (
            "just sent bytes",
            held(candidate(Body, false, 9900, 1), 1 << 20),
        ),
        (
            "silent, trusted",
            held(candidate(Body, true, 0, 1), 1 << 20),
        ),
        (
            "silent, holds nothing",
            held(candidate(Body, false, 0, 1), 0),
        ),
        ("handled", held(candidate(Busy, false, 0, 1), 1 << 20)),
        ("head", held(candidate(Head, false, 0, 1), 0)),
    ];
    assert_eq!(
        order(&cands, |c| memory_rank(c, 10_000)),
        [
            "silent 5 s",
            "trickled, behind for 3 s",
            "silent 2 s",
            "silent, trusted"
        ]
    );
}

/// A slot for a real loopback connection from `from`: the server's socket is kept in
/// `sockets` (the table holds it weakly), and the client's beside it.
fn slot_for_socket(
    table: &Arc<ConnTable>,
    listener: &TcpListener,
    sockets: &mut Vec<(TcpStream, Arc<TcpStream>)>,
    from: &str,
) -> Option<ConnGuard> {
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let server = Arc::new(server);
    let guard = table.try_acquire(ip(from), Arc::downgrade(&server)).ok();
    sockets.push((client, server));
    guard
}

#[test]
fn a_full_table_closes_the_least_progress_to_admit_a_newcomer() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let table = Arc::new(ConnTable::new(2, 10));
    let mut sockets = Vec::new();
    let slot = |from: &str, sockets: &mut Vec<_>| slot_for_socket(&table, &listener, sockets, from);
    let trusted = slot("10.0.0.1", &mut sockets).expect("a slot");
    assert!(trusted.activity().idle(true));
    let head = slot("10.0.0.2", &mut sockets).expect("a slot");
    assert_eq!(table.closed(), (0, 0));
    let newcomer = slot("10.0.0.3", &mut sockets).expect("the head gives its slot up");
    assert!(head.activity().is_evicted());
    assert_eq!(table.closed(), (1, 0), "counted as closed to admit another");
    assert!(
        !head.activity().enter(Phase::Busy),
        "an evicted connection stops"
    );
    assert_eq!(table.open.load(Ordering::SeqCst), 2);
    // Its socket is shut down: its thread's next read sees the end at once.
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut &*sockets[1].1, &mut byte).expect("read");
    assert_eq!(read, 0);
    drop(head);
    assert_eq!(
        table.open.load(Ordering::SeqCst),
        2,
        "its slot was given away already"
    );

    assert!(newcomer.activity().enter(Phase::Busy));
    assert!(
        slot("10.0.0.4", &mut sockets).is_none(),
        "trusted and busy connections stay"
    );
    assert_eq!(table.closed(), (1, 0), "a refusal closes nothing");
    drop((trusted, newcomer));
    assert!(table.wait_drained(Instant::now()));
}

/// A connection already closing after its answer (`Closing`: a refusal, or an answer closing
/// it with everything read; `Draining`: a handled answer draining what the client sent behind
/// it) gives its slot, and is not counted as closed to admit another: its answer was counted.
#[test]
fn a_connection_closing_anyway_gives_its_slot_uncounted() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut table = ConnTable::new(1, 10);
    // A clock older than an unread answer, so a draining one can give way with no wait.
    table.epoch = Instant::now()
        .checked_sub(std::time::Duration::from_millis(STALLED_MS + 10))
        .expect("a clock older than a second");
    let table = Arc::new(table);
    let mut sockets = Vec::new();
    for phase in [Phase::Closing, Phase::Draining] {
        let closing = slot_for_socket(&table, &listener, &mut sockets, "10.0.0.1").expect("a slot");
        let mut state = closing.activity().load();
        state.phase = phase;
        state.since_ms = 0;
        closing
            .activity()
            .state
            .store(state.pack(), Ordering::SeqCst);
        let newcomer = slot_for_socket(&table, &listener, &mut sockets, "10.0.0.2")
            .expect("the closing one gives way");
        assert!(closing.activity().is_evicted(), "{phase:?}");
        assert_eq!(table.closed(), (0, 0), "{phase:?}");
        drop((closing, newcomer));
    }
    // The control: one whose answer is being written counts.
    let sending = slot_for_socket(&table, &listener, &mut sockets, "10.0.0.1").expect("a slot");
    let mut state = sending.activity().load();
    state.phase = Phase::Sending;
    state.since_ms = 0;
    sending
        .activity()
        .state
        .store(state.pack(), Ordering::SeqCst);
    let newcomer = slot_for_socket(&table, &listener, &mut sockets, "10.0.0.2")
        .expect("the unread one gives way");
    assert!(sending.activity().is_evicted());
    assert_eq!(table.closed(), (1, 0));
    drop((sending, newcomer));
}

#[test]
fn a_silent_body_gives_up_its_memory() {
    // The table's clock started longer ago than a body may be silent, so that a body last
    // heard of at its start (below) is stalled now, with no wait for the real clock.
    let mut table = ConnTable::new(10, 10);
    let silent = std::time::Duration::from_millis(STALLED_MS + 10);
    table.epoch = Instant::now()
        .checked_sub(silent)
        .expect("a clock older than a second");
    let table = Arc::new(table);
    let guard = acquire(&table, "10.0.0.1").expect("a slot");
    assert!(guard.activity().enter(Phase::Body));
    guard.activity().held().store(1 << 20, Ordering::SeqCst);
    assert!(!table.evict_stalled_body(), "not silent long enough yet");
    // Pretend the last bytes came long ago.
    let state = State {
        phase: Phase::Body,
        trusted: false,
        pipelined: false,
        since_ms: 0,
    };
    guard.activity().state.store(state.pack(), Ordering::SeqCst);
    assert_eq!(table.closed(), (0, 0));
    assert!(table.evict_stalled_body());
    assert!(guard.activity().is_evicted());
    assert_eq!(table.open.load(Ordering::SeqCst), 0);
    assert_eq!(table.closed(), (0, 1), "counted as closed for memory");
    assert!(!table.evict_stalled_body(), "nothing left to close");
    assert_eq!(table.closed(), (0, 1));
}

#[test]
fn a_client_has_at_most_its_share_of_connections_protected() {
    let table = Arc::new(ConnTable::new(4, 64));
    assert_eq!(table.max_protected(), 2, "half of 4 slots");
    assert_eq!(ConnTable::new(512, 64).max_protected(), 64);
    assert_eq!(ConnTable::new(1, 64).max_protected(), 1);
    let trusted = |guard: &ConnGuard| guard.activity().load().trusted;
    let a: Vec<ConnGuard> = (0..3)
        .map(|_| acquire(&table, "10.0.0.1").expect("a slot"))
        .collect();
    for guard in &a {
        assert!(table.idle(guard.activity(), Some("a")));
    }
    assert_eq!(
        a.iter().map(trusted).collect::<Vec<_>>(),
        [true, true, false]
    );
    let b = acquire(&table, "10.0.0.2").expect("a slot");
    assert!(table.idle(b.activity(), Some("b")));
    assert!(trusted(&b), "another client has a share of its own");
    // The unprotected one of a gives way to a newcomer; the protected ones do not.
    assert!(acquire(&table, "10.0.0.3").is_some());
    assert!(a[2].activity().is_evicted());
    let mut a = a;
    drop(a.remove(2));
    // A request without a token ends a connection's protection, and frees its place.
    assert!(table.idle(a[0].activity(), None));
    assert!(!trusted(&a[0]));
    let c = acquire(&table, "10.0.0.4").expect("a slot");
    assert!(table.idle(c.activity(), Some("a")));
    assert!(trusted(&c), "a's second place was free again");
    assert!(table.idle(a[0].activity(), Some("a")));
    assert!(!trusted(&a[0]), "a has two protected already");
    // One that drains before its close gives its place back at once, and once.
    table.unprotect(c.activity());
    table.unprotect(c.activity());
    assert!(!trusted(&c), "no longer protected");
    assert_eq!(table.lock().protected.get("a"), Some(&1), "a[1] alone");
    assert!(table.idle(a[0].activity(), Some("a")));
    assert!(trusted(&a[0]), "c's place is free while it drains");
    drop(c);
    assert_eq!(
        table.lock().protected.get("a"),
        Some(&2),
        "not given back twice"
    );
    // A closed connection gives its place back.
    let d = acquire(&table, "10.0.0.5").expect("a slot");
    assert!(table.idle(d.activity(), Some("a")));
    assert!(!trusted(&d), "a has two protected already");
    drop(a.remove(1));
    assert!(table.idle(d.activity(), Some("a")));
    assert!(trusted(&d));
    drop(d);
    drop((a, b));
    assert!(table.lock().protected.is_empty());
}

#[test]
fn states_pack_and_unpack() {
    for phase in Phase::ALL {
        for (trusted, pipelined) in [(false, false), (true, false), (false, true), (true, true)] {
            for since_ms in [0, 1, 123_456_789, u64::MAX >> 16] {
                let state = State {
                    phase,
                    trusted,
                    pipelined,
                    since_ms,
                };
                assert_eq!(State::unpack(state.pack()), state);
            }
        }
    }
}
