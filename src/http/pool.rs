//! A generic pool of threads: it starts threads as jobs arrive, up to a cap, keeps a
//! few of them while idle and lets the others exit after a spell without work. The
//! server runs each connection as one job on it.
//!
//! It knows nothing of sockets or HTTP; a job is whatever the closure given to
//! `Pool::new` takes, and only the name and stack size of its threads are chosen for
//! connection threads. It must never run more than `max` threads nor queue more than
//! `max` jobs (those it is told are gone give way), and a panicking job must never take its
//! thread down, or the count of live threads would leak.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::sync::Signal;

/// Stack size of connection threads. The handler parses JSON (serde_json recurses up
/// to 128 levels) and makes a blocking HTTPS call, and debug builds use much larger
/// frames than release builds: in a debug build, parsing JSON nested 127 deep in a
/// handler overflows 192 KiB and fits in 256 KiB (see the `deep_json` test).
/// 512 KiB leaves room for the HTTPS call on top, while a full pool of threads still
/// reserves a quarter of what default 2 MiB stacks would.
const WORKER_STACK_BYTES: usize = 512 * 1024;

/// A pool of threads that starts threads as jobs arrive, up to `max`, keeps up to
/// `keep` of them alive while idle, and lets the others exit after `spare_idle`
/// without work.
///
/// No thread is started before the first job: an idle thread costs a stack page, its
/// thread-local data and glibc's per-thread cache (arenas are shared, at most four:
/// `malloc::tune`), which a gateway that waits for its first client has no use for.
/// Starting a thread takes tens of microseconds, next to the milliseconds of a request.
///
/// Each job is a whole connection, so a thread is busy for as long as its
/// connection is open. The queue cannot grow without bound: the server submits only
/// connections that hold a slot, and there are at most `max` slots; the pool also
/// refuses jobs beyond `max` queued on its own account.
pub(super) struct Pool<J> {
    inner: Arc<PoolInner<J>>,
}

struct PoolInner<J> {
    state: Mutex<PoolState<J>>,
    wake: Signal,
    /// Threads that never exit for want of work, once started.
    keep: usize,
    max: usize,
    spare_idle: Duration,
    work: Box<dyn Fn(J) + Send + Sync>,
}

struct PoolState<J> {
    queue: VecDeque<J>,
    /// Threads waiting for a job.
    idle: usize,
    /// Threads alive (busy or idle).
    threads: usize,
    stopping: bool,
}

impl<J: Send + 'static> Pool<J> {
    pub(super) fn new(
        keep: usize,
        max: usize,
        spare_idle: Duration,
        work: impl Fn(J) + Send + Sync + 'static,
    ) -> Pool<J> {
        Pool {
            inner: Arc::new(PoolInner {
                state: Mutex::new(PoolState {
                    queue: VecDeque::new(),
                    idle: 0,
                    threads: 0,
                    stopping: false,
                }),
                wake: Signal::new(),
                keep: keep.min(max),
                max,
                spare_idle,
                work: Box::new(work),
            }),
        }
    }

    /// Runs `job` on a pool thread, or gives it back if the pool cannot take it. When the
    /// queue is full, the queued jobs `gone` says have nothing left to do are dropped first:
    /// a connection evicted before a thread took it gave its slot to the one submitted now,
    /// and a thread still starting would take it first, leaving no room for its successor.
    pub(super) fn submit(&self, job: J, gone: impl Fn(&J) -> bool) -> Result<(), J> {
        let mut state = self.inner.lock();
        if state.queue.len() >= self.inner.max {
            state.queue.retain(|queued| !gone(queued));
        }
        if state.stopping || state.queue.len() >= self.inner.max {
            return Err(job);
        }
        state.queue.push_back(job);
        if state.idle >= state.queue.len() {
            self.inner.wake.notify_one();
            return Ok(());
        }
        if state.threads >= self.inner.max {
            // Every thread is busy. A slot was free, so one of them is finishing its
            // connection right now and will take this job next.
            return Ok(());
        }
        state.threads += 1;
        drop(state);
        if let Err(e) = spawn_worker(&self.inner) {
            log::warn!("could not start a connection thread: {e}");
            let mut state = self.inner.lock();
            state.threads -= 1;
            // Give a job back unless an idle thread is there to take it. Jobs are
            // interchangeable for this purpose: each is one waiting connection.
            if state.queue.len() > state.idle
                && let Some(job) = state.queue.pop_back()
            {
                return Err(job);
            }
        }
        Ok(())
    }

    /// Lets idle threads exit; busy threads exit after their current job, once the
    /// queue is empty.
    pub(super) fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.wake.notify_all();
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.inner.lock().threads
    }
}

impl<J> PoolInner<J> {
    fn lock(&self) -> MutexGuard<'_, PoolState<J>> {
        crate::sync::lock(&self.state)
    }
}

fn spawn_worker<J: Send + 'static>(inner: &Arc<PoolInner<J>>) -> io::Result<()> {
    let inner = Arc::clone(inner);
    thread::Builder::new()
        .name("http-conn".to_owned())
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || worker_loop(&inner))
        .map(drop)
}

fn worker_loop<J>(inner: &PoolInner<J>) {
    let mut state = inner.lock();
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            // The connection code catches handler panics itself; this is the last
            // line of defence so that no bug anywhere in it can kill the thread and
            // leak the pool's count of live threads.
            if catch_unwind(AssertUnwindSafe(|| (inner.work)(job))).is_err() {
                log::warn!("a connection thread recovered from a panic");
            }
            state = inner.lock();
            continue;
        }
        if state.stopping {
            state.threads -= 1;
            return;
        }
        state.idle += 1;
        let (guard, wait) = match inner.wake.wait_timeout(state, inner.spare_idle) {
            Ok(woken) => woken,
            Err(poisoned) => poisoned.into_inner(),
        };
        state = guard;
        state.idle -= 1;
        if wait.timed_out() && state.queue.is_empty() && state.threads > inner.keep {
            state.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use crate::http::tests::wait_until;

    #[test]
    fn pool_starts_threads_on_demand_up_to_its_cap_and_keeps_some() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let running = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let pool = {
            let (running, done) = (Arc::clone(&running), Arc::clone(&done));
            Pool::new(1, 3, Duration::from_millis(50), move |_: u32| {
                running.fetch_add(1, Ordering::SeqCst);
                // Each job holds its thread until the test releases it.
                let _ = crate::sync::lock(&release_rx).recv_timeout(Duration::from_secs(5));
                done.fetch_add(1, Ordering::SeqCst);
            })
        };
        assert_eq!(pool.threads(), 0, "no thread before the first job");
        for job in 0..3 {
            assert!(pool.submit(job, |_| false).is_ok());
        }
        wait_until("three running jobs", || running.load(Ordering::SeqCst) == 3);
        assert_eq!(pool.threads(), 3);
        // A fourth job waits for a thread instead of starting a fourth one.
        assert!(pool.submit(3, |_| false).is_ok());
        assert_eq!(pool.threads(), 3);
        for _ in 0..4 {
            release_tx.send(()).expect("release");
        }
        wait_until("all jobs done", || done.load(Ordering::SeqCst) == 4);
        wait_until("spare threads to exit", || pool.threads() == 1);
        // The kept thread outlives many idle periods and takes the next job.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(pool.threads(), 1);
        assert!(pool.submit(4, |_| false).is_ok());
        release_tx.send(()).expect("release");
        wait_until("the fifth job done", || done.load(Ordering::SeqCst) == 5);
        assert_eq!(pool.threads(), 1);
        pool.stop();
        wait_until("the kept thread to exit", || pool.threads() == 0);
        assert!(
            pool.submit(5, |_| false).is_err(),
            "a stopped pool takes no jobs"
        );
    }

    #[test]
    fn pool_queue_is_bounded() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let pool = Pool::new(0, 1, Duration::from_secs(1), move |_: u32| {
            let _ = crate::sync::lock(&release_rx).recv_timeout(Duration::from_secs(5));
        });
        assert!(pool.submit(0, |_| false).is_ok());
        wait_until("the job to start", || pool.inner.lock().queue.is_empty());
        assert!(pool.submit(1, |_| false).is_ok(), "one job may wait");
        assert_eq!(pool.submit(2, |_| false), Err(2), "the queue is full");
        // A queued job that has nothing left to do gives its place.
        assert!(
            pool.submit(3, |&queued| queued == 1).is_ok(),
            "job 1 was gone"
        );
        assert_eq!(pool.submit(4, |&queued| queued == 1), Err(4), "job 3 waits");
        release_tx.send(()).expect("release");
        release_tx.send(()).expect("release");
        pool.stop();
    }

    #[test]
    fn pool_threads_survive_panicking_jobs() {
        let ran = Arc::new(AtomicUsize::new(0));
        let pool = {
            let ran = Arc::clone(&ran);
            Pool::new(1, 1, Duration::from_secs(1), move |panic: bool| {
                ran.fetch_add(1, Ordering::SeqCst);
                assert!(!panic, "job panic requested by the test");
            })
        };
        for (i, panic) in [true, true, false].into_iter().enumerate() {
            assert!(pool.submit(panic, |_| false).is_ok());
            wait_until("the job to run", || ran.load(Ordering::SeqCst) == i + 1);
            assert_eq!(pool.threads(), 1);
        }
        pool.stop();
    }
}
