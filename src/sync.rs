//! Locks that outlive a panic. A thread that panics while holding a lock (a handler's bug is
//! caught and answered 500) poisons it; the data behind every lock of the gateway stays
//! consistent between its statements, so the lock is taken as it is rather than failing every
//! later request. The one place that says so.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Takes `m`, poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
