//! Connection caps and fairness: the count of open connections, in total and per client
//! (an IPv4 address, or an IPv6 /64), `ConnGuard`, the slot a connection holds for as long as it
//! is open, `Activity`, what each connection is doing as its own thread reports it, and
//! eviction: when every slot is taken, the connection making the least progress is closed to
//! admit the new one.
//!
//! Who is closed (see `slot_rank`): first a connection closing anyway (after a refusal, or an
//! answer that closes it with everything read), then one still in its TLS handshake or reading its
//! request head, then one kept alive between requests, then one whose body has gone silent; within
//! each, one from the client holding the most connections, and among those the one waiting longest.
//! Never one whose request is being handled, and never one whose last request authenticated
//! (`Response::client`), for a client's share of connections (`max_protected`): beyond it, its
//! connections give way like anyone's, so that no client, with or without a token, can hold every
//! slot. A client that does not read its answers gives way whatever it sent. The same table closes
//! a body that has gone silent, or fallen behind its pace, when the budget of body bytes runs out
//! (`evict_stalled_body`).
//!
//! The caps are exact, because the counts change only under one lock; a slot is given back by a
//! guard on drop, on every path out of a connection. Nothing here waits on anything but that
//! lock (and, in `wait_drained`, its condition variable, until a deadline); closing an evicted
//! connection is one `shutdown` call on its socket, which wakes its thread at once, and nothing
//! here ever reads or writes a socket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use super::deadline::remaining;
use crate::sync::Signal;

/// A body silent for less than this, and behind its pace (`budget::Pace`) by less than this,
/// is never closed for the memory it holds: a client sending at any useful rate delivers
/// something more often, while a stalled body falls silent for good, and a trickled one falls
/// behind for good. (A TCP retransmission after loss takes 200 ms and more, so shorter would
/// catch those.) In milliseconds.
const STALLED_MS: u64 = 500;

/// Eviction attempts per admission: an attempt fails only when the chosen connection moved on
/// between the choice and the eviction, which is progress made, so a few are plenty.
const EVICTION_ATTEMPTS: usize = 4;

/// What a connection is doing, as its own thread reports it (see `Activity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Accepted: in its TLS handshake, waiting for its first request, or reading a request
    /// head. Since the accept, or the first byte of the head.
    Head,
    /// Kept alive between requests. Since the last response.
    Idle,
    /// Reading a request body, or waiting for memory to read it into. Since the last body
    /// bytes arrived (or the head ended).
    Body,
    /// Its request is being handled.
    Busy,
    /// Its answer is being written. Since the peer last took bytes of it (or the write began):
    /// a client that does not read its answers makes no progress here.
    Sending,
    /// Closing anyway, its answer written: a refusal, draining before the close (see
    /// `conn::linger`), or an answer that closes the connection with everything read.
    Closing,
    /// Its handled answer was written, with what the client sent behind it still to drain
    /// before the close. Since the answer was written. Ranked as `Sending`: closed early, the
    /// socket's reset could lose the answer unread.
    Draining,
    /// Closed by the table to admit another connection or free memory; it must stop.
    Evicted,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::Head,
        Phase::Idle,
        Phase::Body,
        Phase::Busy,
        Phase::Sending,
        Phase::Closing,
        Phase::Draining,
        Phase::Evicted,
    ];

    fn code(self) -> u64 {
        match self {
            Phase::Head => 1,
            Phase::Idle => 2,
            Phase::Body => 3,
            Phase::Busy => 4,
            Phase::Closing => 5,
            Phase::Evicted => 6,
            Phase::Sending => 7,
            Phase::Draining => 8,
        }
    }

    fn from_code(code: u64) -> Phase {
        Phase::ALL
            .into_iter()
            .find(|p| p.code() == code)
            .unwrap_or(Phase::Evicted)
    }

    /// Closing anyway, its answer written (and counted): an eviction is not counted as a
    /// close to admit another. It cuts no request or answer short; a `Draining` one's reset
    /// may still lose the answer the client had not read, which is why it is ranked as
    /// `Sending` and not first.
    fn is_closing(self) -> bool {
        matches!(self, Phase::Closing | Phase::Draining)
    }

    /// In words, for the debug log.
    fn describe(self) -> &'static str {
        match self {
            Phase::Head => "reading its head",
            Phase::Idle => "idle between requests",
            Phase::Body => "with its body silent",
            Phase::Busy => "busy",
            Phase::Sending => "with its answer unread",
            Phase::Closing => "closing",
            Phase::Draining => "draining after its answer",
            Phase::Evicted => "evicted",
        }
    }
}

/// One connection's state in one word, so that its thread and eviction change it with one
/// compare-and-swap: the phase (bits 0-7), whether its last request authenticated (bit 8),
/// whether the request it is serving was pipelined (bit 9), and since when, in milliseconds
/// after the table's epoch (bits 16-63).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    phase: Phase,
    trusted: bool,
    /// The request now served was sent before the answer to the one before it was written: the
    /// client is not waiting for its answers (see `Activity::begin`).
    pipelined: bool,
    since_ms: u64,
}

impl State {
    fn pack(self) -> u64 {
        self.phase.code()
            | u64::from(self.trusted) << 8
            | u64::from(self.pipelined) << 9
            | self.since_ms << 16
    }

    fn unpack(word: u64) -> State {
        State {
            phase: Phase::from_code(word & 0xff),
            trusted: word >> 8 & 1 == 1,
            pipelined: word >> 9 & 1 == 1,
            since_ms: word >> 16,
        }
    }
}

/// What a connection is doing, written by its own thread and read by eviction; shared between
/// the connection and the table.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    state: AtomicU64,
    /// The client name this connection is protected under (its `trusted` bit), counted in the
    /// table's `protected`; changed only under the table's lock (see `ConnTable::idle`).
    protected_as: Mutex<Option<String>>,
    /// Bytes of the body budget this connection holds (see `budget`).
    held: AtomicU64,
    /// When the body being read is due to have the bytes it has (`budget::Pace`), in
    /// milliseconds after the epoch; `u64::MAX` before a body is read.
    due_ms: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            state: AtomicU64::new(0),
            protected_as: Mutex::new(None),
            held: AtomicU64::new(0),
            due_ms: AtomicU64::new(u64::MAX),
        };
        let state = State {
            phase: Phase::Head,
            trusted: false,
            pipelined: false,
            since_ms: activity.now_ms(),
        };
        activity.state.store(state.pack(), Ordering::SeqCst);
        activity
    }

    /// An activity no table knows about, which nothing ever evicts.
    #[cfg(test)]
    pub(super) fn detached() -> Activity {
        Activity::new(Instant::now())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX >> 16)
    }

    fn load(&self) -> State {
        State::unpack(self.state.load(Ordering::SeqCst))
    }

    /// Changes the state unless the connection was evicted; false when it was (its socket is
    /// shut down, and its thread must stop).
    fn update(&self, change: impl Fn(State) -> State) -> bool {
        self.state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                let state = State::unpack(word);
                (state.phase != Phase::Evicted).then(|| change(state).pack())
            })
            .is_ok()
    }

    /// A request begins (its head is read from now on); `pipelined` when it was sent before
    /// the answer to the one before it was written. False when the connection was evicted.
    pub(super) fn begin(&self, pipelined: bool) -> bool {
        let now = self.now_ms();
        self.update(|s| State {
            phase: Phase::Head,
            pipelined,
            since_ms: now,
            ..s
        })
    }

    /// Enters `phase` from now on; false when the connection was evicted.
    pub(super) fn enter(&self, phase: Phase) -> bool {
        let now = self.now_ms();
        self.update(|s| State {
            phase,
            since_ms: now,
            ..s
        })
    }

    /// Body bytes arrived (or the body began), and with what it has the body is due at `due`
    /// (`budget::Pace`): its silence starts again. False when evicted.
    pub(super) fn progressed(&self, due: Instant) -> bool {
        let due_ms = due.saturating_duration_since(self.epoch).as_millis();
        self.due_ms
            .store(u64::try_from(due_ms).unwrap_or(u64::MAX), Ordering::SeqCst);
        self.enter(Phase::Body)
    }

    /// A response was written and the connection is kept alive; `trusted` when it is protected
    /// from eviction until its next request ends (see `ConnTable::idle`, which decides).
    pub(super) fn idle(&self, trusted: bool) -> bool {
        let now = self.now_ms();
        self.update(|_| State {
            phase: Phase::Idle,
            trusted,
            pipelined: false,
            since_ms: now,
        })
    }

    pub(super) fn is_evicted(&self) -> bool {
        self.load().phase == Phase::Evicted
    }

    /// The client name it is protected under.
    fn protected_as(&self) -> MutexGuard<'_, Option<String>> {
        crate::sync::lock(&self.protected_as)
    }

    /// Bytes of the body budget held, kept by `budget::Hold`.
    pub(super) fn held(&self) -> &AtomicU64 {
        &self.held
    }

    /// The phase the connection is in, as the table would see it.
    #[cfg(test)]
    pub(super) fn phase_for_tests(&self) -> Phase {
        self.load().phase
    }

    /// Marks the connection evicted, as the table does.
    #[cfg(test)]
    pub(super) fn mark_evicted_for_tests(&self) {
        assert!(self.evict(self.load()));
    }

    /// Marks the connection evicted if its state is still `seen`.
    fn evict(&self, seen: State) -> bool {
        let evicted = State {
            phase: Phase::Evicted,
            ..seen
        };
        self.state
            .compare_exchange(
                seen.pack(),
                evicted.pack(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }
}

/// Open-connection accounting and eviction, under one lock.
#[derive(Debug)]
pub(super) struct ConnTable {
    inner: Mutex<Table>,
    drained: Signal,
    /// Mirror of the number of open slots that can be read without the lock.
    open: Arc<AtomicUsize>,
    max_total: usize,
    max_per_client: usize,
    epoch: Instant,
    /// Connections closed since the start to give their slot to a newcomer (every slot taken),
    /// but those closing anyway after their answer.
    closed_to_admit: AtomicU64,
    /// Connections closed since the start to free the memory their body held for a waiting one.
    closed_for_memory: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    /// One entry per open slot, in no particular order. A vector, not a map: there are at most
    /// `max_total`, every eviction looks at all of them anyway, and a map of its own would add
    /// kilobytes of code for nothing.
    conns: Vec<Entry>,
    /// Open connections per client (`client_of`). Only clients with at least one have an
    /// entry, so the map never holds more entries than there are open connections.
    per_client: HashMap<IpAddr, usize>,
    /// Protected connections (see `ConnTable::idle`) per client name (`Response::client`); only
    /// names with at least one.
    protected: HashMap<String, usize>,
    next_id: u64,
}

#[derive(Debug)]
struct Entry {
    /// The connection's number, in the order of acceptance.
    id: u64,
    client: IpAddr,
    activity: Arc<Activity>,
    /// The socket, to shut down when the connection is evicted. Weak, so that the socket is
    /// closed when its connection drops it, before the slot is given back.
    socket: Weak<TcpStream>,
}

/// Why a connection got no slot: which cap it met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its client holds `server.max_connections_per_ip` connections already.
    PerClient,
    /// Every slot is taken (`server.max_connections`) and none can give way.
    Full,
}

/// One open-connection slot; dropping it gives the slot back.
#[derive(Debug)]
pub(super) struct ConnGuard {
    table: Arc<ConnTable>,
    id: u64,
    activity: Arc<Activity>,
}

impl ConnGuard {
    /// What the connection is doing, for its thread to report.
    pub(super) fn activity(&self) -> &Activity {
        &self.activity
    }
}

/// The client a connection is counted under: an IPv4 address (a v4-mapped IPv6 address counts
/// as its IPv4 address), or the /64 of an IPv6 address, since one IPv6 client is typically given
/// a whole /64 and can pick any address in it.
pub(super) fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !0u128 << 64)),
        v4 => v4,
    }
}

/// A connection evicted under the lock, to be closed after it.
struct Evicted {
    socket: Weak<TcpStream>,
    state: State,
    client: IpAddr,
    now_ms: u64,
}

impl Evicted {
    /// Shuts the socket down, which wakes the connection's thread at once: its next read sees
    /// the end of the stream, and it stops and drops the socket. `admitted` is the client of
    /// the connection given its slot, or None when it was closed to free memory.
    fn close(self, admitted: Option<IpAddr>) {
        if let Some(socket) = self.socket.upgrade() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let (why, whom) = match admitted {
            Some(client) => ("to admit one from ", client.to_string()),
            None => ("to free memory for another body", String::new()),
        };
        log::debug!(
            "closed a connection from {} ({} for {} ms) {why}{whom}",
            self.client,
            self.state.phase.describe(),
            self.now_ms.saturating_sub(self.state.since_ms)
        );
    }
}

impl ConnTable {
    pub(super) fn new(max_total: usize, max_per_client: usize) -> ConnTable {
        ConnTable {
            inner: Mutex::new(Table::default()),
            drained: Signal::new(),
            open: Arc::new(AtomicUsize::new(0)),
            max_total,
            max_per_client,
            epoch: Instant::now(),
            closed_to_admit: AtomicU64::new(0),
            closed_for_memory: AtomicU64::new(0),
        }
    }

    /// Connections closed since the start: to admit a newcomer to a full table, and to free
    /// a stalled body's memory for a waiting one.
    pub(super) fn closed(&self) -> (u64, u64) {
        (
            self.closed_to_admit.load(Ordering::Relaxed),
            self.closed_for_memory.load(Ordering::Relaxed),
        )
    }

    /// The number of open connections, which can be read without the lock.
    pub(super) fn open(&self) -> &Arc<AtomicUsize> {
        &self.open
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        crate::sync::lock(&self.inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX >> 16)
    }

    /// The most open connections in all (`server.max_connections`).
    pub(super) fn max_total(&self) -> usize {
        self.max_total
    }

    /// The most open connections of one client (`server.max_connections_per_ip`).
    pub(super) fn max_per_client(&self) -> usize {
        self.max_per_client
    }

    /// The most connections protected at once for one client name: `max_per_client`, but never
    /// more than half of all slots (and at least one), so that no client, with or without a
    /// token, can hold every slot.
    pub(super) fn max_protected(&self) -> usize {
        self.max_per_client.min(self.max_total / 2).max(1)
    }

    /// A response was written on the connection doing `activity`, and the connection is kept
    /// alive: it goes idle, protected from eviction until its next request ends (see
    /// `slot_rank`) when `client`, the name of the client its request authenticated as, has
    /// fewer than `max_protected` connections protected (this one aside); like anyone's
    /// otherwise. False when the connection was evicted.
    pub(super) fn idle(&self, activity: &Activity, client: Option<&str>) -> bool {
        if activity.protected_as().as_deref() == client {
            return activity.idle(client.is_some());
        }
        let mut table = self.lock();
        let mut mine = activity.protected_as();
        // Evicted: its entry, and its protection, are gone already.
        if activity.is_evicted() {
            return false;
        }
        if let Some(old) = mine.take() {
            release_name(&mut table.protected, &old);
        }
        if let Some(name) = client {
            let count = table.protected.get(name).copied().unwrap_or(0);
            if count < self.max_protected() {
                table.protected.insert(name.to_owned(), count + 1);
                *mine = Some(name.to_owned());
            }
        }
        activity.idle(mine.is_some())
    }

    /// The connection doing `activity` will not be kept alive (it drains before its close):
    /// the place it took among its client's protected connections is free for another of them
    /// at once, not only when it is gone (up to `conn::LINGER_TIME` later).
    pub(super) fn unprotect(&self, activity: &Activity) {
        release_protection(&mut self.lock(), activity);
        activity.update(|s| State {
            trusted: false,
            ..s
        });
    }

    /// How many connections are protected under the client name `name`.
    #[cfg(test)]
    pub(super) fn protected_for_tests(&self, name: &str) -> usize {
        self.lock().protected.get(name).copied().unwrap_or(0)
    }

    /// Takes a slot for a connection from `ip` whose socket is `socket`. Refused when its
    /// client holds `max_per_client` slots already, or when every slot is taken and none can be
    /// given up (see `slot_rank`). When every slot is taken and one can, that connection is
    /// closed and its slot is this one's.
    pub(super) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        socket: Weak<TcpStream>,
    ) -> Result<ConnGuard, Refused> {
        let client = client_of(ip);
        let mut evicted = None;
        let guard = {
            let mut table = self.lock();
            let from_client = table.per_client.get(&client).copied().unwrap_or(0);
            if from_client >= self.max_per_client {
                return Err(Refused::PerClient);
            }
            if table.conns.len() >= self.max_total {
                evicted = Some(self.evict_one(&mut table, slot_rank).ok_or(Refused::Full)?);
            }
            let id = table.next_id;
            table.next_id += 1;
            let activity = Arc::new(Activity::new(self.epoch));
            let entry = Entry {
                id,
                client,
                activity: Arc::clone(&activity),
                socket,
            };
            table.conns.push(entry);
            *table.per_client.entry(client).or_insert(0) += 1;
            self.open.store(table.conns.len(), Ordering::SeqCst);
            ConnGuard {
                table: Arc::clone(self),
                id,
                activity,
            }
        };
        if let Some(evicted) = evicted {
            // One closing anyway, its answer written, is not counted (its answer was).
            if !evicted.state.phase.is_closing() {
                self.closed_to_admit.fetch_add(1, Ordering::Relaxed);
            }
            evicted.close(Some(client));
        }
        Ok(guard)
    }

    /// Closes the body that has been stalled longest (silent, or behind its pace, for at least
    /// `STALLED_MS`) among those holding body bytes, one of a connection whose last request
    /// authenticated only when there is no other; true when one was closed. Its memory is given
    /// back as soon as its thread sees the close.
    pub(super) fn evict_stalled_body(&self) -> bool {
        match self.evict_one(&mut self.lock(), memory_rank) {
            Some(evicted) => {
                evicted.close(None);
                self.closed_for_memory.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Chooses the connection `rank` puts first, marks it evicted and takes it out of the
    /// table (its slot is free from here on); None when `rank` accepts none.
    fn evict_one(&self, table: &mut Table, rank: Rank) -> Option<Evicted> {
        let now_ms = self.now_ms();
        for _ in 0..EVICTION_ATTEMPTS {
            let candidates = table.conns.iter().map(|entry| {
                let state = entry.activity.load();
                let candidate = Candidate {
                    state,
                    held: entry.activity.held.load(Ordering::SeqCst),
                    due_ms: entry.activity.due_ms.load(Ordering::SeqCst),
                    client_conns: table.per_client.get(&entry.client).copied().unwrap_or(0),
                };
                (entry.id, candidate)
            });
            let (id, candidate) = choose(candidates, |c| rank(c, now_ms))?;
            let at = table.conns.iter().position(|entry| entry.id == id)?;
            if !table.conns.get(at)?.activity.evict(candidate.state) {
                // It moved on between the choice and now: choose again.
                continue;
            }
            let entry = table.conns.swap_remove(at);
            release(table, &entry);
            self.open.store(table.conns.len(), Ordering::SeqCst);
            return Some(Evicted {
                socket: entry.socket,
                state: candidate.state,
                client: entry.client,
                now_ms,
            });
        }
        None
    }

    /// Waits until no connection is open or `deadline` passes; true if drained.
    pub(super) fn wait_drained(&self, deadline: Instant) -> bool {
        let mut table = self.lock();
        while !table.conns.is_empty() {
            let Some(left) = remaining(deadline) else {
                return false;
            };
            table = match self.drained.wait_timeout(table, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// Takes what `entry` counts out of the table's counts: its client's connections, and its
/// protection.
fn release(table: &mut Table, entry: &Entry) {
    if let Some(n) = table.per_client.get_mut(&entry.client) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            table.per_client.remove(&entry.client);
        }
    }
    release_protection(table, &entry.activity);
}

/// Gives back the place the connection doing `activity` took among its client's protected
/// connections, if it took one (once: the place is forgotten).
fn release_protection(table: &mut Table, activity: &Activity) {
    if let Some(name) = activity.protected_as().take() {
        release_name(&mut table.protected, &name);
    }
}

fn release_name(protected: &mut HashMap<String, usize>, name: &str) {
    if let Some(n) = protected.get_mut(name) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            protected.remove(name);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        // An evicted connection's slot was given to another already.
        if let Some(at) = table.conns.iter().position(|entry| entry.id == self.id) {
            let entry = table.conns.swap_remove(at);
            release(&mut table, &entry);
        }
        self.table.open.store(table.conns.len(), Ordering::SeqCst);
        if table.conns.is_empty() {
            self.table.drained.notify_all();
        }
    }
}

/// What the choice of a connection to close sees of one.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    state: State,
    /// Body budget bytes it holds.
    held: u64,
    /// When its body is due to have what it has (see `Activity::due_ms`).
    due_ms: u64,
    /// Open connections of its client, itself included.
    client_conns: usize,
}

/// The connection `rank` puts first (the least rank), of those it accepts; of equal ranks, the
/// least key (connections are numbered in the order they were accepted, so the oldest).
fn choose<K: Ord, R: Ord>(
    candidates: impl Iterator<Item = (K, Candidate)>,
    rank: impl Fn(&Candidate) -> Option<R>,
) -> Option<(K, Candidate)> {
    candidates
        .filter_map(|(key, c)| rank(&c).map(|r| (r, key, c)))
        .min_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)))
        .map(|(_, key, c)| (key, c))
}

/// How `choose` orders connections, least first: a rank function's key for one.
type Key = (u8, u64, u64);

/// A rank function: the key of a connection at a time (milliseconds after the table's epoch),
/// or `None` for one that must not be closed.
type Rank = fn(&Candidate, u64) -> Option<Key>;

/// Which connection gives up its slot to a new one, least first; `None` for one that never does.
/// The least progress goes first: a connection closing anyway (`Closing`), token or not; one still
/// in its handshake or head (legitimate clients send a head in one packet, so a head that takes
/// long is a slowloris), or whose answer the client has not taken a byte of for `STALLED_MS` (being
/// written; or, draining before the close, `Draining`, for `STALLED_MS` since it was written, for
/// nothing tells whether the client reads it then), or that serves requests pipelined before their
/// answers were written (a client that does not read its answers, token or not: the kernel takes
/// answers for a few megabytes before a write blocks); one idle between requests; a body that has
/// gone silent longest. Within each, the client holding the most connections goes first, so a
/// client with one connection is closed last however many others come and go; then the one waiting
/// longest. A connection whose last request authenticated, whose request is being handled, or whose
/// answer is being taken by a client that waits for it, is never closed.
fn slot_rank(c: &Candidate, now_ms: u64) -> Option<Key> {
    let unread = now_ms.saturating_sub(c.state.since_ms) >= STALLED_MS || c.state.pipelined;
    let tier = match c.state.phase {
        Phase::Closing => 0,
        Phase::Sending | Phase::Draining if unread => 1,
        Phase::Sending | Phase::Draining => return None,
        Phase::Head if c.state.pipelined => 1,
        _ if c.state.trusted => return None,
        Phase::Head => 1,
        Phase::Idle => 2,
        Phase::Body => 3,
        Phase::Busy | Phase::Evicted => return None,
    };
    Some((tier, most_first(c.client_conns), c.state.since_ms))
}

/// Which body gives up its memory to a new one: only a body that holds some and has been
/// silent, or behind its pace, for `STALLED_MS` at least (a trickle is never silent, but falls
/// behind); one of a connection whose last request authenticated only after all others (a
/// token must not buy the right to sit on memory others need, as it buys a slot); then the one
/// stalled longest, then the one of the client holding the most connections.
fn memory_rank(c: &Candidate, now_ms: u64) -> Option<Key> {
    let stalled_since = c.state.since_ms.min(c.due_ms);
    let stalled = now_ms.saturating_sub(stalled_since);
    (c.state.phase == Phase::Body && c.held > 0 && stalled >= STALLED_MS).then_some((
        u8::from(c.state.trusted),
        stalled_since,
        most_first(c.client_conns),
    ))
}

/// A key part that puts more connections first.
fn most_first(client_conns: usize) -> u64 {
    u64::MAX - u64::try_from(client_conns).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "caps_tests.rs"]
mod tests;
