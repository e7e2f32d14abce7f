//! The budget of request-body bytes held in memory at once (`server.max_body_bytes_in_flight`):
//! `BodyBudget`, and `Hold`, the bytes one request holds, given back when it is dropped.
//!
//! A body is reserved whole, as its `Content-Length` says, before any of it is read into a buffer
//! (and only once the handler admitted its head); a chunked body, whose length is not known, as its
//! buffer grows, before each growth (`sequence::RecvBody::to_hold`); and what a compressed body
//! inflates to is taken as it grows (see `encoding::Allowance`); the bytes are held until the
//! request has been handled or refused, and given back before its answer is written. When the
//! budget runs out, a new body waits (`BODY_WAIT` at most) for others to give bytes back, and
//! closes a body that has gone silent or fallen behind its `Pace`
//! (`caps::ConnTable::evict_stalled_body`) to make them; bytes given back go first to the waiting
//! client (an address, an IPv6 /64) that holds least; one that gets none in time is answered 503.
//! Without it, 512 connections announcing 1 MiB bodies and stalling halfway made the gateway hold
//! 312 MiB; with the default 64 MiB, 53 MiB.
//!
//! Nothing here touches a socket; the only waits are on the budget's condition variable, each
//! bounded by a deadline and by `POLL`, so a waiter notices its own eviction promptly. The lock
//! is never held while the connection table's lock is taken.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::caps::Activity;
use super::deadline::remaining;
use crate::sync::Signal;

/// How long a body waits for memory before it is refused with 503.
pub(super) const BODY_WAIT: Duration = Duration::from_secs(1);

/// How far a body may fall behind its `Pace` before it is closed with 408: long enough for a
/// lost segment's retransmission (200 ms and more) at the start of a body; past it, the body
/// is not coming at the rate `header_timeout` asks for, and the memory it holds goes back.
pub(super) const BODY_GRACE: Duration = Duration::from_secs(1);

/// The pace a body must keep (Apache's `mod_reqtimeout` `MinRate`, scaled to the body): the
/// rate that brings all of it within `header_timeout`, its length divided by that time. A body
/// at that pace or faster is never behind; one trickled far below it, holding memory reserved
/// for all its length, is behind from its first second. Reading a body checks it after every
/// read (closing it with 408 once behind by more than `BODY_GRACE`), and a body behind by
/// `caps::STALLED_MS` is as stalled as a silent one when another body needs memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    started: Instant,
    length: u64,
    limit: Duration,
    /// A chunked body's, whose `length` is half the memory it holds, not its length.
    chunked: bool,
}

impl Pace {
    /// The pace of a body of `length` bytes whose first byte is awaited from `started`, to be
    /// read within `limit`.
    pub(super) fn new(started: Instant, length: u64, limit: Duration) -> Pace {
        Pace {
            started,
            length,
            limit,
            chunked: false,
        }
    }

    /// The pace of a chunked body holding `held` bytes of memory: that of a body half as long
    /// (see `conn::read_chunked`).
    pub(super) fn chunked(started: Instant, held: u64, limit: Duration) -> Pace {
        Pace {
            chunked: true,
            ..Pace::new(started, held / 2, limit)
        }
    }

    /// Whether this is a chunked body's pace.
    pub(super) fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// When the body is due to have `received` bytes: `limit × received / length` after it
    /// started (the start itself for a body of no bytes).
    pub(super) fn due(&self, received: u64) -> Instant {
        let nanos = self.limit.as_nanos() * u128::from(received) / u128::from(self.length.max(1));
        self.started + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The body's length in bytes.
    pub(super) fn length(&self) -> u64 {
        self.length
    }

    /// How long since the body began.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The longest a waiter sleeps before it looks again (for bytes given back without a wake-up
/// reaching it, for its own eviction, and for a body that has fallen silent meanwhile).
const POLL: Duration = Duration::from_millis(50);

/// Waiters close stalled bodies at most this often, all together: each attempt scans the
/// connection table, and hundreds of waiters each scanning every few milliseconds would cost
/// more than the memory they wait for.
const EVICT_EVERY_MS: u64 = 10;

/// Bytes of request bodies held in memory at once, and the most that may be.
#[derive(Debug)]
pub(super) struct BodyBudget {
    limit: u64,
    used: Mutex<Used>,
    freed: Signal,
    epoch: Instant,
    /// When waiters may next try to close a stalled body, in milliseconds after `epoch`.
    next_eviction_ms: AtomicU64,
}

/// What the budget's lock guards: the bytes held, in all and by client, and who waits.
#[derive(Debug, Default)]
struct Used {
    total: u64,
    /// Requests holding bytes for their handling (`Hold::take_for_handling`).
    handling: usize,
    /// Requests waiting for bytes for their handling; bodies wait while there are any.
    handling_waiting: usize,
    /// The most held at once since the allocator was last trimmed.
    peak: u64,
    /// Bytes held by each client (`caps::client_of`: an IPv4 address, an IPv6 /64); only
    /// clients that hold some.
    by_client: HashMap<IpAddr, u64>,
    /// Requests waiting for bytes, by client; only clients with some waiting.
    waiting: HashMap<IpAddr, usize>,
}

impl Used {
    fn held_by(&self, client: IpAddr) -> u64 {
        self.by_client.get(&client).copied().unwrap_or(0)
    }

    /// Whether `client` may take `n` bytes of the `limit` now: they are free, and no client
    /// holding less than it waits for some. Freed bytes go to the client holding least, so
    /// that a client sitting on much of the budget, however many requests it has waiting,
    /// cannot take back each byte given up before another client gets any.
    fn may_take(&self, client: IpAddr, n: u64, limit: u64) -> bool {
        let mine = self.held_by(client);
        self.fits(n, limit)
            && self.handling_waiting == 0
            && self.waiting.keys().all(|w| self.held_by(*w) >= mine)
    }

    fn fits(&self, n: u64, limit: u64) -> bool {
        self.total
            .checked_add(n)
            .is_some_and(|total| total <= limit)
    }

    fn take(&mut self, client: IpAddr, n: u64) {
        self.total += n;
        self.peak = self.peak.max(self.total);
        *self.by_client.entry(client).or_insert(0) += n;
    }

    fn give(&mut self, client: IpAddr, n: u64) {
        self.total = self.total.saturating_sub(n);
        if let Some(held) = self.by_client.get_mut(&client) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.by_client.remove(&client);
            }
        }
    }
}

/// A request of `client` waiting for bytes, counted in `Used::waiting` until it is dropped.
struct Waiting<'a> {
    budget: &'a BodyBudget,
    client: IpAddr,
}

impl<'a> Waiting<'a> {
    fn new(budget: &'a BodyBudget, used: &mut Used, client: IpAddr) -> Waiting<'a> {
        *used.waiting.entry(client).or_insert(0) += 1;
        Waiting { budget, client }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.lock();
        if let Some(n) = used.waiting.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                used.waiting.remove(&self.client);
            }
        }
        drop(used);
        // Another waiter may be first in line now.
        self.budget.freed.notify_all();
    }
}

/// Why a request could not have the bytes it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shortage {
    /// Others hold the budget and gave too little back before the deadline: retry later.
    Busy,
    /// This request alone would hold more than the whole budget; `room` is what it may still
    /// take.
    Never { room: u64 },
    /// The connection was closed (to admit another, or to free memory) while it waited.
    Evicted,
}

/// A request that held this much is followed by a trim of the allocator (see `malloc::trim`),
/// and so is the moment nothing is held any more after this much was held at once: what such
/// requests freed in small blocks goes back to the system instead of staying resident. After
/// each request, not only at the end of a burst, because the next large request may run on
/// another arena: 32 commits of a million members each, handled one after the other, left both
/// arenas (two then) at their size and peaked at 444 MiB.
const TRIM_AFTER: u64 = 16 * 1024 * 1024;

/// The budget bytes one request holds; dropping it gives them back.
pub(super) struct Hold<'a> {
    budget: &'a BodyBudget,
    activity: &'a Activity,
    /// Who the bytes are held for (`caps::client_of`).
    client: IpAddr,
    /// Closes a body that has gone silent, elsewhere, to free its bytes; true when it did.
    evict: &'a dyn Fn() -> bool,
    bytes: u64,
    /// Whether some of `bytes` were taken for handling (counted in `Used::handling`).
    handling: bool,
}

impl BodyBudget {
    /// A budget of `limit` bytes, none of them held.
    pub(super) fn new(limit: u64) -> BodyBudget {
        BodyBudget {
            limit,
            used: Mutex::new(Used::default()),
            freed: Signal::new(),
            epoch: Instant::now(),
            next_eviction_ms: AtomicU64::new(0),
        }
    }

    /// Bytes held now, and the requests waiting for bytes (each a second at most, then
    /// answered 503 `too_many_bodies`): what the state page shows (`server::Gauges`). The lock
    /// is held for the reading alone.
    pub(super) fn held_and_waiting(&self) -> (u64, usize) {
        let used = self.lock();
        (
            used.total,
            used.waiting.values().sum::<usize>() + used.handling_waiting,
        )
    }

    /// The most bytes that may be held at once.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// An empty hold for the request of the connection doing `activity`, from `client`
    /// (`caps::client_of`); `evict` closes a stalled body elsewhere when bytes run short.
    pub(super) fn hold<'a>(
        &'a self,
        activity: &'a Activity,
        client: IpAddr,
        evict: &'a dyn Fn() -> bool,
    ) -> Hold<'a> {
        Hold {
            budget: self,
            activity,
            client,
            evict,
            bytes: 0,
            handling: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Used> {
        crate::sync::lock(&self.used)
    }

    fn give(&self, client: IpAddr, n: u64, handled: bool) {
        if n > 0 || handled {
            let mut used = self.lock();
            used.give(client, n);
            if handled {
                used.handling = used.handling.saturating_sub(1);
            }
            // A large request, or the end of a burst: nothing is held any more, after much was.
            let trim = n >= TRIM_AFTER || (used.total == 0 && used.peak >= TRIM_AFTER);
            if used.total == 0 {
                used.peak = 0;
            }
            drop(used);
            self.freed.notify_all();
            if trim {
                crate::malloc::trim();
            }
        }
    }

    /// Whether this waiter may try to close a stalled body now (see `EVICT_EVERY_MS`).
    fn may_evict(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_eviction_ms.load(Ordering::SeqCst);
        now >= next
            && self
                .next_eviction_ms
                .compare_exchange(
                    next,
                    now + EVICT_EVERY_MS,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
    }

    /// Bytes held now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.lock().total
    }
}

impl Hold<'_> {
    /// Bytes this request holds.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The budget's limit.
    pub(super) fn limit(&self) -> u64 {
        self.budget.limit
    }

    /// Takes `n` more bytes, waiting until `deadline` for others to give some back, and closing
    /// stalled bodies to make them; bytes given back go first to the waiting client that holds
    /// least (see `Used::may_take`). Never waits when the request alone would hold more than
    /// the whole budget.
    pub(super) fn take(&mut self, n: u64, deadline: Instant) -> Result<(), Shortage> {
        let total = self.bytes.saturating_add(n);
        let (budget, client) = (self.budget, self.client);
        if total > budget.limit {
            return Err(Shortage::Never {
                room: budget.limit.saturating_sub(self.bytes),
            });
        }
        // Counted among the waiters from the first miss until this returns.
        let mut waiting = None;
        loop {
            {
                let mut used = budget.lock();
                if used.may_take(client, n, budget.limit) {
                    used.take(client, n);
                    drop(used);
                    self.bytes = total;
                    self.activity.held().store(total, Ordering::SeqCst);
                    return Ok(());
                }
                if waiting.is_none() {
                    waiting = Some(Waiting::new(budget, &mut used, client));
                }
            }
            if self.activity.is_evicted() {
                return Err(Shortage::Evicted);
            }
            let Some(left) = remaining(deadline) else {
                return Err(Shortage::Busy);
            };
            // Not under the budget's lock: this takes the connection table's.
            if budget.may_evict() {
                (self.evict)();
            }
            let used = budget.lock();
            if used.may_take(client, n, budget.limit) {
                continue;
            }
            // Woken when bytes are given back; an evicted body gives its bytes back as soon as
            // its thread sees the close, moments after.
            let _ = crate::sync::unpoisoned(budget.freed.wait_timeout(used, left.min(POLL)));
        }
    }

    /// Takes what handling the request will cost beyond what it holds (`cost` bytes: parsing
    /// its body, the points and text made of it), so that requests whose bodies are small but
    /// whose handling is not queue for memory rather than all being handled at once. A cost
    /// larger than the whole budget takes all of it: such a request waits until the bytes
    /// others hold are given back. While it waits, no new body takes bytes; and when no other
    /// request holds bytes for its handling, it goes on with what is free, so that requests
    /// holding their bodies while they wait cannot keep each other waiting. `Busy` when it got
    /// none of that by `deadline`.
    pub(super) fn take_for_handling(
        &mut self,
        cost: u64,
        deadline: Instant,
    ) -> Result<(), Shortage> {
        let (budget, client) = (self.budget, self.client);
        let n = cost.min(budget.limit.saturating_sub(self.bytes));
        let mut waiting = false;
        let mut used = budget.lock();
        let outcome = loop {
            let n = if used.fits(n, budget.limit) {
                Some(n)
            } else if used.handling == 0 {
                Some(budget.limit.saturating_sub(used.total).min(n))
            } else {
                None
            };
            if let Some(n) = n {
                used.take(client, n);
                used.handling += 1;
                self.handling = true;
                self.bytes += n;
                self.activity.held().store(self.bytes, Ordering::SeqCst);
                break Ok(());
            }
            if !waiting {
                waiting = true;
                used.handling_waiting += 1;
            }
            let Some(left) = remaining(deadline) else {
                break Err(Shortage::Busy);
            };
            used = crate::sync::unpoisoned(budget.freed.wait_timeout(used, left.min(POLL))).0;
        };
        if waiting {
            used.handling_waiting -= 1;
            drop(used);
            // Bodies waited while this did.
            budget.freed.notify_all();
        }
        outcome
    }

    /// Gives back `n` bytes no longer held (at most what is held).
    pub(super) fn give(&mut self, n: u64) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.activity.held().store(self.bytes, Ordering::SeqCst);
        self.budget.give(self.client, n, false);
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let n = self.bytes;
        self.bytes = 0;
        self.activity.held().store(0, Ordering::SeqCst);
        self.budget
            .give(self.client, n, std::mem::take(&mut self.handling));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::caps::Phase;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    fn never_evict() -> bool {
        false
    }

    fn ip() -> IpAddr {
        IpAddr::from([10, 0, 0, 1])
    }

    /// Waits (5 s at most) until `n` requests wait for bytes: the sign that a thread a test
    /// started is waiting, rather than a sleep long enough for it on an idle machine.
    #[track_caller]
    fn until_waiting(budget: &BodyBudget, n: usize) {
        crate::http::tests::wait_until(&format!("{n} requests waiting for bytes"), || {
            let used = budget.lock();
            used.waiting.values().sum::<usize>() + used.handling_waiting >= n
        });
    }

    #[test]
    fn bytes_given_back_go_first_to_the_client_holding_least() {
        let budget = BodyBudget::new(100);
        let (big, small) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let (a, b, c) = (
            Activity::detached(),
            Activity::detached(),
            Activity::detached(),
        );
        let mut held = budget.hold(&a, big, &never_evict);
        held.take(100, Instant::now()).expect("all of it");
        thread::scope(|s| {
            // The client holding everything waits for more, first; then one holding nothing.
            let greedy = s.spawn(|| {
                let mut hold = budget.hold(&b, big, &never_evict);
                // Long enough that both waiters are counted before it gives up, on a busy machine.
                let got = hold.take(10, Instant::now() + Duration::from_secs(3));
                (got, Instant::now())
            });
            until_waiting(&budget, 1);
            let (answer, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
            let (to_test, from_test) = (answer.0, release.1);
            let (budget, c) = (&budget, &c);
            let modest = s.spawn(move || {
                let mut hold = budget.hold(c, small, &never_evict);
                let got = hold.take(10, Instant::now() + Duration::from_secs(2));
                let _ = to_test.send((got, Instant::now()));
                // Held until the other has given up.
                let _ = from_test.recv();
            });
            until_waiting(budget, 2);
            held.give(10);
            let (got, modest_at) = answer.1.recv().expect("modest");
            assert_eq!(
                got,
                Ok(()),
                "the client holding least gets the bytes given back"
            );
            let (got, greedy_at) = greedy.join().expect("greedy");
            assert_eq!(
                got,
                Err(Shortage::Busy),
                "and the client holding most waits on"
            );
            assert!(greedy_at > modest_at);
            let _ = release.0.send(());
            modest.join().expect("modest");
        });
    }

    /// What the state page shows follows the budget: bytes held (for bodies and for
    /// handling) and requests waiting.
    #[test]
    fn bytes_held_and_requests_waiting_are_read_as_they_are() {
        let budget = BodyBudget::new(100);
        let (a, b) = (Activity::detached(), Activity::detached());
        let mut held = budget.hold(&a, ip(), &never_evict);
        held.take(70, Instant::now()).expect("70 of 100");
        assert_eq!(budget.held_and_waiting(), (70, 0));
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut hold = budget.hold(&b, IpAddr::from([10, 0, 0, 2]), &never_evict);
                hold.take(50, Instant::now() + Duration::from_millis(300))
            });
            until_waiting(&budget, 1);
            assert_eq!(budget.held_and_waiting(), (70, 1));
            assert_eq!(waiter.join().expect("waiter"), Err(Shortage::Busy));
        });
        assert_eq!(budget.held_and_waiting(), (70, 0));
        let mut handling = budget.hold(&b, ip(), &never_evict);
        handling
            .take_for_handling(30, Instant::now())
            .expect("the 30 left");
        assert_eq!(
            budget.held_and_waiting(),
            (100, 0),
            "handling's bytes count"
        );
        drop((held, handling));
        assert_eq!(budget.held_and_waiting(), (0, 0));
    }

    #[test]
    fn a_body_is_due_in_proportion_to_its_length() {
        let started = Instant::now();
        let pace = Pace::new(started, 1000, Duration::from_secs(10));
        assert_eq!(pace.due(0), started);
        assert_eq!(pace.due(100), started + Duration::from_secs(1));
        assert_eq!(pace.due(1000), started + Duration::from_secs(10));
        let empty = Pace::new(started, 0, Duration::from_secs(10));
        assert_eq!(empty.due(0), started);
    }

    #[test]
    fn holds_are_counted_exactly_and_given_back_on_drop() {
        let budget = BodyBudget::new(100);
        let (a, b) = (Activity::detached(), Activity::detached());
        let soon = Instant::now() + Duration::from_millis(100);
        let mut first = budget.hold(&a, ip(), &never_evict);
        first.take(60, soon).expect("60 of 100");
        assert_eq!((budget.used(), a.held().load(Ordering::SeqCst)), (60, 60));
        let mut second = budget.hold(&b, ip(), &never_evict);
        second.take(40, soon).expect("the other 40");
        assert_eq!(
            second.take(1, Instant::now()),
            Err(Shortage::Busy),
            "nothing left, and no time to wait"
        );
        first.give(20);
        assert_eq!((budget.used(), first.bytes()), (80, 40));
        second.take(20, soon).expect("what was given back");
        drop(first);
        assert_eq!(budget.used(), 60);
        assert_eq!(a.held().load(Ordering::SeqCst), 0);
        second.give(1000);
        assert_eq!((budget.used(), second.bytes()), (0, 0), "no more than held");
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_request_that_alone_would_pass_the_budget_never_waits() {
        let budget = BodyBudget::new(100);
        let activity = Activity::detached();
        let mut hold = budget.hold(&activity, ip(), &never_evict);
        hold.take(30, Instant::now()).expect("30");
        let started = Instant::now();
        let far = started + Duration::from_secs(10);
        assert_eq!(hold.take(71, far), Err(Shortage::Never { room: 70 }));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(budget.used(), 30);
    }

    #[test]
    fn a_waiter_gets_bytes_given_back_before_its_deadline_and_else_busy() {
        let budget = BodyBudget::new(100);
        let (a, b) = (Activity::detached(), Activity::detached());
        let mut holder = budget.hold(&a, ip(), &never_evict);
        holder.take(100, Instant::now()).expect("all of it");
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut hold = budget.hold(&b, ip(), &never_evict);
                let started = Instant::now();
                let got = hold.take(50, started + Duration::from_secs(2));
                (got, started.elapsed())
            });
            until_waiting(&budget, 1);
            drop(holder);
            let (got, waited) = waiter.join().expect("waiter");
            assert_eq!(got, Ok(()), "the bytes given back, after {waited:?}");
        });
        // Held by nobody now; a hold that nobody gives back makes the next one wait it out.
        let mut holder = budget.hold(&a, ip(), &never_evict);
        holder.take(100, Instant::now()).expect("all of it");
        let mut late = budget.hold(&b, ip(), &never_evict);
        let started = Instant::now();
        assert_eq!(
            late.take(1, started + Duration::from_millis(300)),
            Err(Shortage::Busy)
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_millis(800));
    }

    #[test]
    fn a_waiter_closes_a_stalled_body_and_stops_when_it_is_closed_itself() {
        let budget = BodyBudget::new(100);
        let (a, b) = (Activity::detached(), Activity::detached());
        let stalled = std::sync::Mutex::new(Some(budget.hold(&a, ip(), &never_evict)));
        stalled
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .take(100, Instant::now())
            .expect("all of it");
        // Closing the stalled body gives its bytes back, as its thread would on seeing the close.
        let evictions = AtomicUsize::new(0);
        let evict = || {
            evictions.fetch_add(1, Ordering::SeqCst);
            stalled.lock().unwrap().take().is_some()
        };
        let mut hold = budget.hold(&b, ip(), &evict);
        hold.take(10, Instant::now() + Duration::from_secs(2))
            .expect("the stalled body's bytes");
        assert_eq!(evictions.load(Ordering::SeqCst), 1);
        assert_eq!(budget.used(), 10);

        // A waiter evicted while it waits stops at once.
        let c = Activity::detached();
        let mut all = budget.hold(&c, ip(), &never_evict);
        all.take(90, Instant::now()).expect("the rest");
        let d = Activity::detached();
        assert!(d.enter(Phase::Body));
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut hold = budget.hold(&d, ip(), &never_evict);
                let started = Instant::now();
                (
                    hold.take(10, started + Duration::from_secs(5)),
                    started.elapsed(),
                )
            });
            until_waiting(&budget, 1);
            d.mark_evicted_for_tests();
            let (got, waited) = waiter.join().expect("waiter");
            assert_eq!(got, Err(Shortage::Evicted));
            assert!(waited < Duration::from_secs(1), "{waited:?}");
        });
    }
}
