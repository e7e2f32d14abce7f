//! Requests that leave their wait to a [`Waiter`], and the thread that writes their records.
//!
//! A request waiting in [`Log::wait`] sleeps until its group is written and is then woken,
//! only to answer and sleep again until its client's next request: two sleeps and two wakes a
//! request, which cost more of the gateway's CPU than anything else on a write (a third of it
//! for single-line writes). A request that can be answered from wherever its group is settled
//! registers a [`Waiter`] instead ([`Log::wait_with`]): whoever settles the group tells it,
//! at once, on its own thread (the waiter's answer goes out from there), and the request's
//! thread sleeps only once, until its client's next request. Such requests never write a
//! group themselves, so one thread does ([`Log::write_for_waiters`]), whenever records of
//! theirs are queued and no write is under way. A request in [`Log::wait`] may still write
//! a group holding waiters' records, and then tells them.

use super::*;

/// The writer of waiters' records: whether it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writer {
    /// None runs: [`Log::wait_with`] waits as [`Log::wait`] does.
    Off,
    On,
    /// Asked to end ([`Log::stop_writer`]); it ends once no waiter's record is queued.
    Stopping,
}

/// Turns the writer of waiters' records off when its loop ends, and lets every request that
/// left its wait to it go ([`Waiter::untold`]), so that each waits as [`Log::wait`] does, and
/// writes its group if no one else does.
pub(super) struct WriterOff<'a>(pub(super) &'a Log);

impl Drop for WriterOff<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.writer = Writer::Off;
        let left: Vec<_> = std::mem::take(&mut inner.waiters).into_values().collect();
        drop(inner);
        for waiter in left {
            waiter.untold();
        }
        self.0.wake_all();
    }
}

/// How long the writer sleeps between looks when nothing wakes it: a bound in case a wake
/// is ever missed, not a pace (every queued waiter's record wakes it).
const WRITER_LOOK: Duration = Duration::from_secs(1);

impl Log {
    /// [`Log::wait`], with the wait left to `waiter`: whoever settles the record's group calls
    /// [`Waiter::settled`] (`true`: written) on its own thread, and this thread blocks in
    /// [`Waiter::wait`]. Then the record's number, or why its write failed, as `wait` gives
    /// them. Without the writer of waiters' records ([`Log::write_for_waiters`]), or with the
    /// record already settled, `waiter` is never told and this is [`Log::wait`].
    pub fn wait_with(&self, ticket: u64, waiter: Arc<dyn Waiter>) -> Result<u64, LogError> {
        let mut inner = self.lock();
        if inner.done < ticket && inner.writer == Writer::On {
            inner.waiters.insert(ticket, Arc::clone(&waiter));
            let idle = !inner.writing;
            drop(inner);
            if idle {
                self.writer_signal.notify_one();
            }
            waiter.wait(None);
        } else {
            drop(inner);
        }
        self.wait(ticket)
    }

    /// Writes the groups that hold records of requests waiting through a [`Waiter`], as long as
    /// the log is open: run on a thread of its own. Returns after [`Log::stop_writer`], once
    /// no such record is queued.
    pub fn write_for_waiters(&self) {
        let mut inner = self.lock();
        if inner.writer != Writer::Off {
            return;
        }
        inner.writer = Writer::On;
        drop(inner);
        // However this ends (a panic in a trim too), requests stop leaving their wait to it, and
        // those that did are woken: their records are written by whoever waits next. (A panic
        // inside a group's write leaves the writer's turn taken, as it would a request's.)
        let _off = WriterOff(self);
        let mut inner = self.lock();
        loop {
            let queued = inner.waiters.range(inner.taken_to + 1..).next().is_some();
            if queued && !inner.writing {
                let (written, wake) = self.write_group(inner);
                self.group_written(written, wake);
                inner = self.lock();
                continue;
            }
            if inner.writer == Writer::Stopping && !queued {
                return;
            }
            inner = crate::sync::unpoisoned(self.writer_signal.wait_timeout(inner, WRITER_LOOK)).0;
        }
    }

    /// Whether the writer of waiters' records runs.
    #[cfg(test)]
    pub fn writer_runs(&self) -> bool {
        self.lock().writer == Writer::On
    }

    /// Asks the writer of waiters' records to end; from now on [`Log::wait_with`] waits as
    /// [`Log::wait`] does. Records already left to it are still written.
    pub fn stop_writer(&self) {
        let mut inner = self.lock();
        if inner.writer == Writer::On {
            inner.writer = Writer::Stopping;
        }
        drop(inner);
        self.writer_signal.notify_all();
    }
}
