//! Writing one group of the log (see the module above, "Writing"): the writer's turn without
//! the lock, its records numbered, written with one `write` and one `fdatasync` over the
//! segment's zeros, the group settled and its waiters woken; a failed write cut back and a new
//! segment begun; segments rolled once full, begun with their header, grown with written zeros.
//! Nothing here decides what a record holds or who may write it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::MutexGuard;

use super::*;

impl Log {
    /// Writes what is queued as one group; called with the lock, returns with it and with whom
    /// to wake once it is let go ([`Log::wake_settled`]). The write itself happens without the lock:
    /// others queue meanwhile for the next group.
    pub(super) fn write_group<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> (MutexGuard<'a, Inner>, Wake) {
        if inner.broken {
            // Queued before an earlier failed write could not be cut back: written now, they
            // would go over the failed bytes, and leave some of those readable after them.
            inner = self.mend(inner);
            if inner.broken {
                return self.fail_queued(inner);
            }
        }
        inner.writing = true;
        let spare = std::mem::take(&mut inner.spare);
        let mut bytes = std::mem::replace(&mut inner.pending, spare);
        let starts = std::mem::take(&mut inner.pending_starts);
        let clients = std::mem::take(&mut inner.pending_clients);
        let from = inner.done;
        let to = from + starts.len() as u64;
        inner.taken += 1;
        inner.taken_to = to;
        let first = inner.next_seq;
        let max_change = std::mem::take(&mut inner.pending_change);
        // Numbered now, in ticket order, so that only written records have numbers.
        for (i, start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
            record::stamp(&mut bytes[*start..end], first + i as u64);
        }
        let mut active = inner.active.take();
        let tail = inner.segments.last().cloned();
        // A segment that may be let go is closed now, to be deleted by the next trim; a trim
        // between two writes lets it go itself when the writer is idle (a full disk).
        let let_go = tail.as_ref().is_some_and(|tail| {
            tail.max_change <= inner.snapshot_covers && self.may_let_go(&inner, tail)
        });
        drop(inner);

        // A full segment is closed (its zero padding cut off) and a new one begun; with no
        // segment being written (none yet, the last one full, or let go once delivered) the
        // group begins one.
        let mut rolled = None;
        let mut result = Ok(());
        let mut closed = false;
        let segment = match (&mut active, tail) {
            (Some(open), Some(tail))
                if tail.bytes > FIRST_RECORD
                    && (tail.bytes + bytes.len() as u64 > self.segment_bytes || let_go) =>
            {
                match self.roll(&tail, open, first) {
                    Ok(new) => {
                        rolled = Some(new.clone());
                        new
                    }
                    Err(Rolled { error, closed: c }) => {
                        result = Err(error);
                        closed = c;
                        tail
                    }
                }
            }
            (Some(_), Some(tail)) => tail,
            _ => {
                active = None;
                match self.begin(first) {
                    Ok((new, file)) => {
                        active = Some(file);
                        rolled = Some(new.clone());
                        new
                    }
                    Err(e) => {
                        result = Err(e);
                        // Nothing to cut back: no segment was begun.
                        Segment {
                            first,
                            path: self.dir.join(&segment_name(first)),
                            last: first - 1,
                            bytes: FIRST_RECORD,
                            max_change: 0,
                            version: record::SEGMENT_VERSION,
                        }
                    }
                }
            }
        };
        if closed {
            // The segment was closed but the next one not begun: the next group begins it,
            // so that its name is never passed over (a file of that name left behind, its
            // removal failed or undone by a crash, would then stop the start: a segment
            // starting inside the one before it).
            active = None;
        }
        if result.is_ok()
            && let Some(open) = &mut active
        {
            result = append_at(open, &segment.path, segment.bytes, &bytes);
        }
        #[cfg(test)]
        if asked_to_fail(&self.fail_writes) {
            let kind = if self.fail_full.load(std::sync::atomic::Ordering::SeqCst) {
                io::ErrorKind::StorageFull
            } else {
                io::ErrorKind::Other
            };
            result = Err(LogError::io(
                "write",
                &segment.path,
                io::Error::new(kind, "a failure the test asked for"),
            ));
        }
        let mut broken = false;
        if result.is_err()
            && let Some(open) = &mut active
        {
            // Cut back whatever of the group reached the file, so that no record whose
            // request was refused is read back at the next start.
            if let Err(e) = self.cut_back(open, &segment) {
                log::error!(
                    "cannot cut the failed write back from {}: {e}; nothing is written to the log until it can be (tried again at each request)",
                    segment.path.display()
                );
                broken = true;
            }
        }

        let mut inner = self.lock();
        inner.writing = false;
        if let Some(new) = rolled {
            // A segment not written on and holding no record (one of an older version, found
            // at the start) was begun anew under its name: it is that one now, not another.
            if inner.segments.last().is_some_and(|s| s.first == new.first) {
                inner.segments.pop();
            }
            inner.segments.push(new);
            // A new segment: what was found full is judged again by its own writes.
            inner.disk_full &= result.is_err();
        }
        inner.active = active;
        let outcome = match result {
            Ok(()) => {
                let last = first + starts.len() as u64 - 1;
                inner.next_seq = last + 1;
                inner.durable = last;
                inner.write_failure = None;
                let now = inner.opened_at.elapsed().as_millis() as i64;
                let window = APPENDED_WINDOW.as_millis() as i64;
                if inner
                    .appended
                    .back()
                    .is_none_or(|(_, at)| now - at >= window)
                {
                    inner.appended.push_back((first, now));
                }
                if let Some(tail) = inner.segments.last_mut() {
                    tail.bytes += bytes.len() as u64;
                    tail.last = last;
                    tail.max_change = tail.max_change.max(max_change);
                }
                Ok(first)
            }
            Err(e) => {
                inner.write_failure = Some(WriteFailure {
                    at: std::time::SystemTime::now(),
                    since: Instant::now(),
                    error: e.to_string(),
                    for_client: e.for_client(),
                });
                inner.undelivered = inner.undelivered.saturating_sub(bytes.len() as u64);
                inner.undelivered_records = inner
                    .undelivered_records
                    .saturating_sub(starts.len() as u64);
                inner.release(clients);
                inner.broken |= broken;
                if e.is_disk_full() {
                    inner.disk_full = true;
                    inner.trim_wanted = true;
                }
                Err(e)
            }
        };
        if bytes.capacity() <= SPARE_BYTES {
            bytes.clear();
            inner.spare = bytes;
        }
        self.settle(inner, from, to, outcome)
    }

    /// Publishes the outcome of the tickets `(from, to]`; returns with the lock and whom to
    /// wake ([`Log::wake_settled`], once the lock is let go).
    pub(super) fn settle<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        from: u64,
        to: u64,
        outcome: Result<u64, LogError>,
    ) -> (MutexGuard<'a, Inner>, Wake) {
        inner.done = inner.done.max(to);
        let outcome_ok = outcome.is_ok();
        match &outcome {
            Err(e) => self.errors.error(e),
            Ok(_) => self.errors.reset(),
        }
        inner.groups.push_back(Group {
            from,
            to,
            outcome,
            unread: to - from,
        });
        let later = inner.waiters.split_off(&(to + 1));
        let waiters = std::mem::replace(&mut inner.waiters, later);
        let wake = Wake {
            group: inner.taken,
            next: !inner.pending.is_empty(),
            waiters: waiters.into_values().collect(),
            written: outcome_ok,
            writer: !inner.waiters.is_empty(),
        };
        (inner, wake)
    }

    /// After [`Log::write_group`]: lets the lock go, wakes whom the group wakes, and trims
    /// when the write asked for it (a full disk).
    pub(super) fn group_written(&self, mut inner: MutexGuard<'_, Inner>, wake: Wake) {
        let trim = std::mem::take(&mut inner.trim_wanted);
        drop(inner);
        self.wake_settled(wake);
        if trim {
            self.trim();
        }
    }

    /// Wakes whom a settled group wakes: the deliverer and a holder waiting for the writer's
    /// turn, the group's requests, and, when records were queued behind it, one of the next
    /// group's, which writes it (the rest wait for it). Called without the lock: a waiter
    /// checks its state and counts itself under the lock before it sleeps, so a wake after the
    /// lock is let go is never lost; at worst it wakes a later group for nothing.
    pub(super) fn wake_settled(&self, wake: Wake) {
        self.written.notify_all();
        self.turns[turn(wake.group)].notify_all();
        if wake.next {
            self.turns[turn(wake.group + 1)].notify_one();
        }
        if wake.writer {
            self.writer_signal.notify_one();
        }
        for waiter in wake.waiters {
            waiter.settled(wake.written);
        }
    }

    /// Wakes every waiter: the writer's turn is free again, or the log mended, after
    /// something other than a group of records (a hold, a trim, a cut-back) had it.
    pub(super) fn wake_all(&self) {
        self.written.notify_all();
        self.writer_signal.notify_all();
        for signal in &self.turns {
            signal.notify_all();
        }
    }

    /// Closes the segment being written and starts the next one at record `first`.
    pub(super) fn roll(
        &self,
        closed: &Segment,
        active: &mut Active,
        first: u64,
    ) -> Result<Segment, Rolled> {
        active
            .file
            .set_len(closed.bytes)
            .and_then(|()| active.file.sync_all())
            .map_err(|e| Rolled {
                error: LogError::io("close", &closed.path, e),
                closed: false,
            })?;
        let (segment, file) = self.begin(first).map_err(|error| Rolled {
            error,
            closed: true,
        })?;
        *active = file;
        Ok(segment)
    }

    /// Begins the segment of record `first`: its file with the header, fsync'd, and the
    /// directory fsync'd.
    pub(super) fn begin(&self, first: u64) -> Result<(Segment, Active), LogError> {
        let name = segment_name(first);
        let path = self.dir.join(&name);
        // A file of that name made anew is another file than one the reader kept open.
        let mut reading = crate::sync::lock(&self.reading);
        if reading.as_ref().is_some_and(|(kept, _)| *kept == first) {
            *reading = None;
        }
        drop(reading);
        let file = new_segment(&self.dir, &name).map_err(|e| {
            // A header that did not fit leaves no file behind.
            let _ = self.dir.remove_if_exists(&name);
            LogError::io("create", &path, e)
        })?;
        #[cfg(test)]
        let synced = match asked_to_fail(&self.fail_dir_syncs) {
            true => Err(io::Error::other("a failure the test asked for")),
            false => self.dir.sync(),
        };
        #[cfg(not(test))]
        let synced = self.dir.sync();
        if let Err(e) = synced {
            // The new name may not be durable: the file goes, so that no segment file is left
            // that the log does not list; the next group begins it anew and syncs the
            // directory again.
            drop(file);
            let _ = self.dir.remove_if_exists(&name);
            return Err(LogError::io("sync", self.dir.path(), e));
        }
        let segment = Segment {
            first,
            path,
            last: first - 1,
            bytes: FIRST_RECORD,
            max_change: 0,
            version: record::SEGMENT_VERSION,
        };
        Ok((
            segment,
            Active {
                file,
                size: FIRST_RECORD,
            },
        ))
    }
}

/// Writes `bytes` at `offset` of the active segment, over its zeros (growing them first when
/// needed), and fsyncs them.
pub(super) fn append_at(
    active: &mut Active,
    path: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<(), LogError> {
    let end = offset + bytes.len() as u64;
    if end > active.size {
        zero_fill(active, end.max(active.size + ZERO_FILL_BYTES))
            .map_err(|e| LogError::io("grow", path, e))?;
    }
    active
        .file
        .write_all_at(bytes, offset)
        .and_then(|()| active.file.sync_data())
        .map_err(|e| LogError::io("write", path, e))
}

/// Grows the file with written zeros (not a hole, which the filesystem would still have to
/// allocate on the first write) to `size` bytes, and fsyncs it.
pub(super) fn zero_fill(active: &mut Active, size: u64) -> io::Result<()> {
    static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = active.size;
    while at < size {
        let n = (size - at).min(CHUNK.len() as u64);
        active.file.write_all_at(&CHUNK[..n as usize], at)?;
        at += n;
    }
    active.file.sync_all()?;
    active.size = size;
    Ok(())
}

/// Creates the segment file `name` in `dir` with its header, fsync'd (the caller syncs `dir`).
pub(super) fn new_segment(dir: &DirHandle, name: &str) -> io::Result<File> {
    let file = dir.create_new(name)?;
    file.write_all_at(&record::segment_header(), 0)?;
    file.sync_all()?;
    Ok(file)
}
