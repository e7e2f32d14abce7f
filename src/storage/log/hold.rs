//! The writer's turn kept by someone other than a writer: a snapshot written on a full disk from
//! the room kept for it holds the log's writes, so that neither that room nor the segment the
//! snapshot is to let go takes a record meanwhile.

use super::*;

/// The writer's turn, kept until dropped: records queued meanwhile wait, and are written after.
/// See [`Log::hold_writes`].
pub struct WriteHold<'a> {
    log: &'a Log,
}

impl Log {
    /// Waits for the writer's turn and keeps it until the hold is dropped.
    ///
    /// On a full disk the snapshot that lets delivered segments go is written from the room
    /// kept for it (`storage.dir/reserve`), and may let the segment being written go too. A
    /// record written meanwhile could take that room, or land in that segment with a change the
    /// snapshot does not hold, which keeps the segment: the room would be spent for nothing
    /// and the disk stay full. The holder must not wait for a record to be written.
    pub fn hold_writes(&self) -> WriteHold<'_> {
        let mut inner = self.lock();
        while inner.writing {
            inner = crate::sync::unpoisoned(self.written.wait(inner));
        }
        inner.writing = true;
        WriteHold { log: self }
    }
}

impl WriteHold<'_> {
    /// The number of the last job-table change written to the log (0: none): a snapshot must
    /// hold every change up to it to let the segment being written go.
    pub fn last_change(&self) -> u64 {
        let inner = self.log.lock();
        inner
            .segments
            .iter()
            .map(|s| s.max_change)
            .max()
            .unwrap_or(0)
    }

    /// Whether a snapshot holding every change up to `covers` would let a segment go now.
    pub fn would_let_go(&self, covers: u64) -> bool {
        let inner = self.log.lock();
        !self.log.to_let_go(&inner, covers, true).0.is_empty()
    }

    /// [`Log::snapshot_written`], by the holder: the segment being written may be let go.
    pub fn snapshot_written(&self, covers: u64, bytes: u64) {
        self.log.note_snapshot(covers, bytes);
        self.log.trim_as(true);
    }
}

impl Drop for WriteHold<'_> {
    fn drop(&mut self) {
        let _inner = {
            let mut inner = self.log.lock();
            inner.writing = false;
            inner
        };
        // Records queued meanwhile are written now.
        self.log.wake_all();
    }
}
