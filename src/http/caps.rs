//! Connection caps: the count of open connections, in total and per peer IP, and
//! `ConnGuard`, the slot that a connection holds for as long as it is open.
//!
//! Both caps are exact, because the counts change only under one lock. A slot must be
//! given back on every path out of a connection, which is why it is a guard that gives
//! itself back on drop. Nothing here touches a socket or waits on anything but that
//! lock (and, in `wait_drained`, its condition variable, until a deadline); what a
//! refused client is told is the accept loop's business.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::deadline::remaining;

/// Open-connection accounting: a global count and a count per peer IP, changed only
/// under one lock so that the caps are exact.
#[derive(Debug)]
pub(super) struct ConnTable {
    counts: Mutex<Counts>,
    drained: Condvar,
    /// Mirror of `Counts::total` that can be read without the lock.
    open: Arc<AtomicUsize>,
    max_total: usize,
    max_per_ip: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only IPs with at least one open connection have an entry, so the map never
    /// holds more entries than there are open connections.
    per_ip: HashMap<IpAddr, usize>,
}

/// One open-connection slot; dropping it gives the slot back.
#[derive(Debug)]
pub(super) struct ConnGuard {
    table: Arc<ConnTable>,
    ip: IpAddr,
}

impl ConnTable {
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> ConnTable {
        ConnTable {
            counts: Mutex::new(Counts::default()),
            drained: Condvar::new(),
            open: Arc::new(AtomicUsize::new(0)),
            max_total,
            max_per_ip,
        }
    }

    /// The number of open connections, which can be read without the lock.
    pub(super) fn open(&self) -> &Arc<AtomicUsize> {
        &self.open
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // No code that can panic runs under this lock, but a poisoned lock must not
        // take the whole server down either.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a connection from `ip`, or `None` if a cap is reached.
    pub(super) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        // An IPv4 client reaching a dual-stack IPv6 listener shows up as a mapped
        // address; count it under its IPv4 address like any other IPv4 client.
        let ip = ip.to_canonical();
        let mut counts = self.lock();
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= self.max_total || from_ip >= self.max_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        self.open.store(counts.total, Ordering::SeqCst);
        Some(ConnGuard {
            table: Arc::clone(self),
            ip,
        })
    }

    /// Waits until no connection is open or `deadline` passes; true if drained.
    pub(super) fn wait_drained(&self, deadline: Instant) -> bool {
        let mut counts = self.lock();
        while counts.total > 0 {
            let Some(left) = remaining(deadline) else {
                return false;
            };
            counts = match self.drained.wait_timeout(counts, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
        self.table.open.store(counts.total, Ordering::SeqCst);
        if counts.total == 0 {
            self.table.drained.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_table_counts_exactly() {
        let table = Arc::new(ConnTable::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let a1 = table.try_acquire(a).expect("first from a");
        let a2 = table.try_acquire(mapped).expect("second from a, mapped");
        assert!(table.try_acquire(a).is_none(), "per-ip cap");
        let b1 = table.try_acquire(b).expect("first from b");
        assert!(table.try_acquire(b).is_none(), "global cap");
        assert_eq!(table.open.load(Ordering::SeqCst), 3);
        drop(a1);
        assert!(
            table.try_acquire(b).is_some(),
            "released and dropped at once"
        );
        drop((a2, b1));
        assert_eq!(table.open.load(Ordering::SeqCst), 0);
        assert!(table.lock().per_ip.is_empty());
        assert!(table.wait_drained(Instant::now()));
    }
}
