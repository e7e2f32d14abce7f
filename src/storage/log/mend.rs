//! A failed write cut back off the segment being written: at once by the writer, or, when that
//! failed too, at the next append or write ([`Log::mend`]) and at the stop ([`Log::close`]);
//! meanwhile the log takes nothing, so that no record refused to its request is read back.

use super::*;

impl Log {
    /// Cuts the segment being written back to its whole records, `segment.bytes`, and syncs
    /// it: what a failed write left after them is gone.
    pub(super) fn cut_back(&self, open: &mut Active, segment: &Segment) -> io::Result<()> {
        open.size = segment.bytes;
        #[cfg(test)]
        if super::asked_to_fail(&self.fail_undos) {
            return Err(io::Error::other("a failure the test asked for"));
        }
        open.file
            .set_len(segment.bytes)
            .and_then(|()| open.file.sync_all())
    }

    /// Tries again to cut a failed write back from the segment being written, with the
    /// writer's turn; called with the lock, returns with it, `broken` cleared once it worked.
    /// A disk error that passes (a full disk freed, a device back) so stops refusing every
    /// request, without a restart.
    pub(super) fn mend<'a>(&'a self, mut inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        if inner.writing {
            return inner;
        }
        let Some(tail) = inner.segments.last().cloned() else {
            // The segment was let go since (delivered, on a full disk): its file and the failed
            // write's bytes in it are gone.
            inner.broken = false;
            inner.active = None;
            log::info!(
                "the segment holding the failed write is let go: the log takes records again"
            );
            return inner;
        };
        let Some(mut open) = inner.active.take() else {
            return inner;
        };
        inner.writing = true;
        drop(inner);
        let mended = self.cut_back(&mut open, &tail);
        let mut inner = self.lock();
        inner.active = Some(open);
        inner.writing = false;
        match mended {
            Ok(()) => {
                inner.broken = false;
                log::info!(
                    "the failed write is cut back from {}: the log takes records again",
                    tail.path.display()
                );
            }
            Err(e) => log::debug!("the failed write is still not cut back: {e}"),
        }
        self.wake_all();
        inner
    }

    /// The stop: a failed write not yet cut back is tried once more, so that the next start
    /// does not read back a record refused to its request. When that fails too, it says so: the
    /// next start may read those records back.
    pub fn close(&self) {
        let inner = self.lock();
        if !inner.broken {
            return;
        }
        let inner = self.mend(inner);
        if inner.broken {
            log::error!(
                "the failed write could still not be cut back from the log: the next start may read back records whose requests were refused (answered 503), and deliver them"
            );
        }
    }

    /// Fails every queued record with [`LogError::Broken`], writing nothing; returns with the
    /// lock and whom to wake once it is let go.
    pub(super) fn fail_queued<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> (MutexGuard<'a, Inner>, Wake) {
        let bytes = std::mem::take(&mut inner.pending);
        let starts = std::mem::take(&mut inner.pending_starts);
        let clients = std::mem::take(&mut inner.pending_clients);
        inner.pending_change = 0;
        let from = inner.done;
        let to = from + starts.len() as u64;
        inner.taken += 1;
        inner.taken_to = to;
        inner.undelivered = inner.undelivered.saturating_sub(bytes.len() as u64);
        inner.undelivered_records = inner
            .undelivered_records
            .saturating_sub(starts.len() as u64);
        inner.release(clients);
        self.settle(inner, from, to, Err(LogError::Broken))
    }
}
