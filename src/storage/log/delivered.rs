//! The log's delivered side: what the deliverer reads, how far InfluxDB has taken the log (the
//! delivered mark), and trimming the segments whose records are all delivered and whose
//! job-table changes are all in a snapshot (the segment being written too, on a full disk).

use super::*;

impl Log {
    /// Waits up to `timeout` for a record after `seq` to be on disk, or for `stop` to say
    /// true once [`Log::wake`] woke it (the waiter's own reason to look up: a stop); true when
    /// there is a record.
    pub fn wait_for_more(&self, seq: u64, timeout: Duration, stop: impl Fn() -> bool) -> bool {
        let inner = self.lock();
        let (inner, _) = crate::sync::unpoisoned(self.written.wait_timeout_while(
            inner,
            timeout,
            |i| i.durable <= seq && !stop(),
        ));
        inner.durable > seq
    }

    /// Reads the records after `at`, oldest first, that are on disk: at most `max_bytes` of
    /// them (but at least one, whatever its size). Moves `at` past what it returns.
    /// An error met after some records were read returns those (`at` stays where the error is,
    /// so the next call meets it): records read are never dropped with the error.
    pub fn read(&self, at: &mut Position, max_bytes: u64) -> Result<Vec<Read>, LogError> {
        let mut out = Vec::new();
        match self.read_into(at, max_bytes, &mut out) {
            Err(_) if !out.is_empty() => Ok(out),
            Err(e) => Err(e),
            Ok(()) => Ok(out),
        }
    }

    fn read_into(
        &self,
        at: &mut Position,
        max_bytes: u64,
        out: &mut Vec<Read>,
    ) -> Result<(), LogError> {
        let mut taken = 0u64;
        loop {
            let (segment, durable, next_segment) = {
                let inner = self.lock();
                let done = inner.durable;
                let found = inner.segments.iter().position(|s| s.first == at.segment);
                // A segment read to its end may be trimmed before the reader moves on: the
                // next record is then the first of a later segment.
                let found = found.or_else(|| {
                    let next = inner.segments.iter().position(|s| s.first == at.next_seq)?;
                    at.segment = at.next_seq;
                    at.offset = FIRST_RECORD;
                    Some(next)
                });
                if found.is_none() && at.next_seq > done {
                    // The reader's segment was let go once read and delivered, and the next
                    // one is not begun yet: nothing more to read.
                    return Ok(());
                }
                let Some(i) = found else {
                    // The reader's segment is gone and no segment starts at its next record:
                    // only a bug or a hand could do that.
                    return Err(LogError::io(
                        "read",
                        &self.dir.join(&segment_name(at.segment)),
                        io::ErrorKind::NotFound.into(),
                    ));
                };
                let segment = inner.segments[i].clone();
                let next = inner.segments.get(i + 1).map(|s| s.first);
                (segment, done, next)
            };
            if at.offset >= segment.bytes || at.next_seq > durable {
                match next_segment {
                    Some(next) if at.offset >= segment.bytes && at.next_seq <= durable => {
                        at.segment = next;
                        at.offset = FIRST_RECORD;
                        continue;
                    }
                    _ => return Ok(()),
                }
            }
            let file = self.reading_file(&segment)?;
            let end = segment.bytes;
            let want = (end - at.offset).min(max_bytes.saturating_sub(taken).max(1 << 16));
            let mut buf = vec![0; want as usize];
            file.read_exact_at(&mut buf, at.offset)
                .map_err(|e| LogError::io("read", &segment.path, e))?;
            let mut pos = 0usize;
            while pos < buf.len() {
                match record::frame(&buf[pos..]) {
                    Frame::Record { seq, len } => {
                        if seq > durable {
                            return Ok(());
                        }
                        let payload = record::decode(
                            &buf[pos + record::HEADER_BYTES..pos + len],
                            segment.version,
                        )
                        .map_err(|e| {
                            LogError::io(
                                "decode a record of",
                                &segment.path,
                                io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                            )
                        })?;
                        let mut text = String::with_capacity(
                            payload.units.iter().map(|u| u.lines.len()).sum(),
                        );
                        let units = payload
                            .units
                            .iter()
                            .map(|u| {
                                let start = text.len();
                                text.push_str(u.lines);
                                OwnedUnit {
                                    run: u.run,
                                    points: u.points,
                                    lines: start..text.len(),
                                }
                            })
                            .collect();
                        out.push(Read {
                            seq,
                            kind: payload.kind,
                            client: payload.client.map(str::to_string),
                            bytes: len as u64,
                            target: payload.target.map(|t| OwnedTarget {
                                database: t.database.to_string(),
                                retention_policy: t.retention_policy.to_string(),
                            }),
                            units,
                            text,
                        });
                        pos += len;
                        at.offset += len as u64;
                        at.next_seq = seq + 1;
                        taken += len as u64;
                        if taken >= max_bytes {
                            return Ok(());
                        }
                    }
                    Frame::Short { needed } => {
                        if pos == 0 {
                            // A record larger than the buffer: read it whole.
                            let mut big = vec![0; needed];
                            file.read_exact_at(&mut big, at.offset)
                                .map_err(|e| LogError::io("read", &segment.path, e))?;
                            buf = big;
                            continue;
                        }
                        break;
                    }
                    Frame::End | Frame::Damaged(_) => {
                        // What the log wrote and fsync'd does not read back: the disk lost it.
                        return Err(LogError::io(
                            "read",
                            &segment.path,
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("the record at byte {} is damaged", at.offset),
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Records up to `seq` are delivered: `records`, the ones read since the last call, leave
    /// the undelivered count, and their bytes go back to the share of the client of each.
    /// Segments that are delivered and in a snapshot are deleted.
    pub fn delivered(&self, seq: u64, records: &[Read]) {
        let bytes: u64 = records.iter().map(|r| r.bytes).sum();
        let mut per_client: HashMap<&str, u64> = HashMap::new();
        for r in records {
            if let Some(client) = &r.client {
                *per_client.entry(client).or_insert(0) += r.bytes;
            }
        }
        let mut inner = self.lock();
        if seq <= inner.delivered {
            return;
        }
        inner.delivered = seq;
        inner.undelivered = inner.undelivered.saturating_sub(bytes);
        inner.full = false;
        inner.undelivered_records = inner
            .undelivered_records
            .saturating_sub(records.len() as u64);
        inner.release(per_client);
        // The windows whose records are all delivered: those the next window begins at or
        // before the oldest record waiting.
        while inner
            .appended
            .get(1)
            .is_some_and(|(first, _)| *first <= seq + 1)
        {
            inner.appended.pop_front();
        }
        if seq >= inner.durable {
            inner.appended.clear();
        }
        let save = inner
            .mark_saved_at
            .is_none_or(|at| at.elapsed() >= MARK_SAVE_EVERY);
        if save {
            inner.mark_saved_at = Some(std::time::Instant::now());
        }
        drop(inner);
        if save {
            // Not told when it fails: the stop and the letting go of segments write it too, and
            // say so; a crash meanwhile only sends InfluxDB again what it has.
            if let Err(e) = self.write_mark(seq) {
                log::debug!("cannot save how far the log is delivered: {e}");
            }
        }
        self.trim();
    }

    /// The last snapshot of the job table holds every change up to `covers` and takes `bytes`.
    pub fn snapshot_written(&self, covers: u64, bytes: u64) {
        self.note_snapshot(covers, bytes);
        self.trim();
    }

    /// The snapshot the start read holds every change up to `covers`: delivered segments it
    /// holds may go without a new one (which a full disk may have no room for).
    pub fn snapshot_read(&self, covers: u64) {
        {
            let mut inner = self.lock();
            inner.snapshot_covers = inner.snapshot_covers.max(covers);
        }
        self.trim();
    }

    /// Notes that the last snapshot holds every change up to `covers` and takes `bytes`.
    pub(super) fn note_snapshot(&self, covers: u64, bytes: u64) {
        let mut inner = self.lock();
        inner.snapshot_covers = inner.snapshot_covers.max(covers);
        inner.snapshot_bytes = bytes;
        inner.changes_since_snapshot = 0;
    }

    /// Whether a new snapshot would let delivered segments go, or the changes since the last
    /// one have outgrown it (at least 1 MiB of them, and half the snapshot: the room kept for
    /// the next snapshot on a full disk is sized from the last one, so the table may not grow
    /// far between two).
    pub fn needs_snapshot(&self) -> bool {
        let grown = {
            let inner = self.lock();
            inner.changes_since_snapshot >= (1 << 20).max(inner.snapshot_bytes / 2)
        };
        grown || self.snapshot_frees_segments()
    }

    /// Whether a new snapshot would let delivered segments go: some closed segment is delivered
    /// and holds job-table changes the last snapshot does not; or the segment being written is
    /// delivered and may be let go ([`Log::may_let_go`]).
    pub fn snapshot_frees_segments(&self) -> bool {
        let inner = self.lock();
        let n = inner.segments.len().saturating_sub(1);
        inner.segments[..n]
            .iter()
            .any(|s| s.last <= inner.delivered && s.max_change > inner.snapshot_covers)
            || inner.let_go_blocked
            || inner.segments.last().is_some_and(|tail| {
                tail.max_change > inner.snapshot_covers && self.may_let_go(&inner, tail)
            })
    }

    /// Whether the segment being written, `tail`, may be let go for a new one once a snapshot
    /// covers its changes: it holds records, every one delivered, and either the disk was found
    /// full since it was begun or it holds a quarter of [`SEGMENT_BYTES`]. Without this, a
    /// disk filled while InfluxDB was away by a log still in its first segment would stay full:
    /// only closed segments could go, and the segment closes only once it is full.
    pub(super) fn may_let_go(&self, inner: &Inner, tail: &Segment) -> bool {
        tail.last >= tail.first
            && tail.last <= inner.delivered
            && (inner.disk_full || tail.bytes >= self.segment_bytes / 4)
    }

    /// A write of the job table's snapshot found the disk full: the segment being written is
    /// let go once delivered, as when the log's own write found it full.
    pub fn disk_is_full(&self) {
        self.lock().disk_full = true;
        self.trim();
    }

    /// Deletes the segments that are delivered and in a snapshot, after saving how far the log
    /// is delivered; the one being written too when it [may be let go](Log::may_let_go): then
    /// between two writes (the writer's turn taken), its file closed and deleted first, so its
    /// room is free before the next write begins a new segment. A crash between the two leaves
    /// no segment, and the next start numbers on after the delivered mark.
    pub(super) fn trim(&self) {
        self.trim_as(false);
    }

    /// The segments a snapshot holding every change up to `covers` lets go now: the oldest
    /// closed ones that are delivered and whose changes it holds, and, when that is every
    /// closed one, the segment being written if it [may be let go](Log::may_let_go) and the
    /// writer's turn is free (`holder`: the caller holds it).
    pub(super) fn to_let_go(
        &self,
        inner: &Inner,
        covers: u64,
        holder: bool,
    ) -> (Vec<Segment>, bool) {
        let n = inner.segments.len().saturating_sub(1);
        let mut gone: Vec<Segment> = inner.segments[..n]
            .iter()
            .take_while(|s| s.last <= inner.delivered && s.max_change <= covers)
            .cloned()
            .collect();
        let mut tail_too = false;
        if gone.len() == n
            && (holder || !inner.writing)
            && let Some(tail) = inner.segments.last()
            && tail.max_change <= covers
            && self.may_let_go(inner, tail)
        {
            gone.push(tail.clone());
            tail_too = true;
        }
        (gone, tail_too)
    }

    /// The file of `segment`, opened once for the reads of it in a row.
    fn reading_file(&self, segment: &Segment) -> Result<Arc<File>, LogError> {
        let mut reading = crate::sync::lock(&self.reading);
        if let Some((first, file)) = &*reading
            && *first == segment.first
        {
            return Ok(Arc::clone(file));
        }
        *reading = None;
        let file = self
            .dir
            .open_read(&segment_name(segment.first))
            .map(Arc::new)
            .map_err(|e| LogError::io("open", &segment.path, e))?;
        *reading = Some((segment.first, Arc::clone(&file)));
        Ok(file)
    }

    /// [`Log::trim`]; `holder`: called by the holder of the writer's turn ([`Log::hold_writes`]),
    /// which keeps it.
    pub(super) fn trim_as(&self, holder: bool) {
        let (gone, delivered, active) = {
            let mut inner = self.lock();
            let (gone, active) = self.to_let_go(&inner, inner.snapshot_covers, holder);
            if active {
                inner.writing = true;
            }
            (gone, inner.delivered, active)
        };
        if gone.is_empty() {
            return;
        }
        let mut removed = 0;
        // The mark first: a start never looks for records in a deleted segment.
        let marked = self.write_delivered(delivered);
        if marked {
            // The reader's file is closed first, or the room of a deleted segment would stay
            // taken until the next read.
            let mut reading = crate::sync::lock(&self.reading);
            if reading
                .as_ref()
                .is_some_and(|(first, _)| gone.iter().any(|g| g.first == *first))
            {
                *reading = None;
            }
            drop(reading);
            for segment in &gone {
                if let Err(e) = self.dir.remove_if_exists(&segment_name(segment.first)) {
                    log::warn!("cannot delete {}: {e}", segment.path.display());
                    break;
                }
                removed += 1;
            }
            let _ = self.dir.sync();
        }
        let mut inner = self.lock();
        let gone = &gone[..removed];
        inner
            .segments
            .retain(|s| !gone.iter().any(|g| g.first == s.first));
        inner.let_go_blocked = active && !marked;
        if active {
            if inner.segments.is_empty() {
                // Closed here, so the room it took is free: the next write begins a segment.
                inner.active = None;
                inner.disk_full = false;
                log::info!(
                    "the log's segment {} is delivered and in a snapshot: let go, the next write begins a new one",
                    gone.last()
                        .map_or_else(Default::default, |s| s.path.display().to_string())
                );
            }
            if !holder {
                inner.writing = false;
                // A request may be waiting for the writer's turn.
                self.wake_all();
            }
        }
    }

    /// Saves how far the log is delivered, so a restart does not send it again (a restart
    /// that does is harmless: InfluxDB keeps one point per series and time).
    pub fn save_delivered(&self) {
        let delivered = self.lock().delivered;
        self.write_delivered(delivered);
    }

    /// Writes the delivered mark; false (and a warning) when it could not be.
    pub(super) fn write_delivered(&self, delivered: u64) -> bool {
        match self.write_mark(delivered) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "cannot write {}: {e}",
                    self.dir.join(DELIVERED_FILE).display()
                );
                false
            }
        }
    }

    /// Saves the delivered mark when it is behind what is delivered: the deliverer calls it
    /// once nothing was left to deliver for a while, so that the last deliveries before a
    /// quiet spell are saved too ([`Log::delivered`] saves at most every few seconds, as it
    /// goes). Not told when it fails, as there.
    pub fn save_delivered_if_behind(&self) {
        let delivered = self.lock().delivered;
        if *crate::sync::lock(&self.mark) >= delivered {
            return;
        }
        if let Err(e) = self.write_mark(delivered) {
            log::debug!("cannot save how far the log is delivered: {e}");
        }
    }

    /// Writes the delivered mark `delivered`, unless one as far or further is written: the
    /// writers take turns, so a mark never goes back.
    fn write_mark(&self, delivered: u64) -> std::io::Result<()> {
        let mut mark = crate::sync::lock(&self.mark);
        if delivered <= *mark {
            return Ok(());
        }
        self.dir
            .write_atomic(DELIVERED_FILE, &record::encode_delivered(delivered))?;
        *mark = delivered;
        Ok(())
    }

    /// Records, bytes and segments in the log, for the state page.
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}
