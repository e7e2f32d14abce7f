//! Locks that outlive a panic. A thread that panics while holding a lock (a handler's bug is
//! caught and answered 500) poisons it; the data behind every lock of the gateway stays
//! consistent between its statements, so the lock is taken as it is rather than failing every
//! later request. The one place that says so. Also the condition variable that costs nothing
//! to notify while nobody waits ([`Signal`]), and the [`Waiter`] a settling thread acts for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, LockResult, Mutex, MutexGuard, PoisonError, WaitTimeoutResult};
use std::time::Duration;

/// Takes `m`, poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    unpoisoned(m.lock())
}

/// What a lock or a wait on a condition variable returned, poisoned or not: the guard of a
/// wait ([`Signal`]'s or a [`Condvar`]'s) comes back through here, as [`lock`]'s does.
pub fn unpoisoned<G>(result: LockResult<G>) -> G {
    result.unwrap_or_else(PoisonError::into_inner)
}

/// A [`Condvar`] that makes no system call to notify when no thread waits on it. std's
/// condition variable wakes through a `futex` call at every notify, waiter or not; the
/// gateway notifies at the end of nearly every request (a run's change applied, a body's
/// bytes given back, a record settled), mostly with nobody waiting.
///
/// The waiters are counted while they hold the mutex, in the same critical section as the
/// check that made them wait, so a notifier that changes the state under that mutex and then
/// notifies either is seen by the waiter's check or sees the waiter counted. Use it as a
/// [`Condvar`]: the state a waiter waits for changes under the mutex it waits with.
#[derive(Debug, Default)]
pub struct Signal {
    condvar: Condvar,
    /// Threads inside one of the waits (counted from before it releases the mutex until after
    /// it took it again).
    waiting: AtomicUsize,
}

impl Signal {
    pub fn new() -> Self {
        Signal::default()
    }

    /// [`Condvar::wait`].
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let woken = self.condvar.wait(guard);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// [`Condvar::wait_timeout`].
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let woken = self.condvar.wait_timeout(guard, timeout);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// [`Condvar::wait_timeout_while`].
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let woken = self.condvar.wait_timeout_while(guard, timeout, condition);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// How many threads wait on it now: a test's sign that the thread it started sleeps.
    #[cfg(test)]
    pub fn waiters(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Wakes every waiter; nothing when none waits.
    pub fn notify_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.condvar.notify_all();
        }
    }

    /// Wakes one waiter; nothing when none waits.
    pub fn notify_one(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.condvar.notify_one();
        }
    }
}

/// A request waiting for an outcome that another thread settles, and that lets that thread
/// act for it at once: the log's writer tells a request whose record it has just written
/// (`settled`), the deliverer one whose record InfluxDB has just stored, and the request's
/// answer can go out from there, before the request's own thread is even awake. The waiting
/// thread calls [`Waiter::wait`], which returns once `settled` was called; `settled` is called
/// once at most, must not block (it runs on a thread that serves every request), and may come
/// before `wait`.
pub trait Waiter: Send + Sync {
    /// The outcome is known: `ok` when it is the one the request hoped for (its record on
    /// disk, or stored by InfluxDB).
    fn settled(&self, ok: bool);
    /// The outcome will not be told (the settling thread ended, or will not tell this
    /// outcome): nothing is done for the request, and [`Waiter::wait`] returns; the request
    /// learns the outcome itself.
    fn untold(&self);
    /// Blocks until [`Waiter::settled`] or [`Waiter::untold`] was called, or until `deadline`
    /// passed (`None`: no deadline).
    fn wait(&self, deadline: Option<std::time::Instant>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Two threads take turns 20 000 times, each waiting for its turn: a notify skipped while
    /// the other was about to wait would leave it waiting for the whole timeout.
    #[test]
    fn a_signal_skips_no_wakeup_and_counts_its_waiters_back_to_zero() {
        let shared = Arc::new((Mutex::new(0u64), Signal::new()));
        let turns = |parity: u64| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (turn, signal) = &*shared;
                for _ in 0..10_000 {
                    let mut t = lock(turn);
                    while *t % 2 != parity {
                        let (next, waited) = signal
                            .wait_timeout(t, Duration::from_secs(10))
                            .unwrap_or_else(PoisonError::into_inner);
                        assert!(!waited.timed_out(), "a wakeup was lost");
                        t = next;
                    }
                    *t += 1;
                    drop(t);
                    signal.notify_all();
                }
            })
        };
        let (even, odd) = (turns(0), turns(1));
        even.join().unwrap();
        odd.join().unwrap();
        assert_eq!(*lock(&shared.0), 20_000);
        assert_eq!(shared.1.waiting.load(Ordering::SeqCst), 0);
    }
}
