//! The files the results are kept in: append-only segments, so that a commit appends one line
//! to a file already open rather than making (and a later prune removing) a file of its own.
//! What a result holds and which results are kept is `results`' business; this module only
//! places lines and gives them back.
//!
//! ```text
//! results/<number:020>.results   {"format":"metrics-consumer-results","version":1}\n
//!                                one result a line (JSON without a raw newline)\n …
//! ```
//!
//! Each start appends to a segment of its own (the next number), so a line cut short by a crash
//! is never written after: at the start it does not read back and is left out. A segment grows
//! to [`ROLL_BYTES`], then the next begins. A line let go ([`Store::release`]: pruned, or its
//! commit failed) is overwritten with spaces, in a segment of this start or an earlier one, and
//! stays in its file until the segment holds no line that counts; segments with less than half
//! their bytes still counting are written again into the current one ([`Store::sparse`]). Nothing here fsyncs on its own: [`Store::sync`] fsyncs what was written
//! since the last call and only then removes the segments emptied, so a line moved elsewhere is
//! durable before its old copy goes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::storage::DirHandle;

/// The first line of every segment.
pub const HEADER: &[u8] = b"{\"format\":\"metrics-consumer-results\",\"version\":1}\n";
/// Bytes of a segment after which the next line begins a new one.
pub const ROLL_BYTES: u64 = 8 << 20;
/// Bytes of a segment read at the start at most: more than [`ROLL_BYTES`] and the largest
/// result (`limits.max_stats_rows` rows) together.
const MAX_SEGMENT_BYTES: u64 = 256 << 20;
const SUFFIX: &str = ".results";

/// Where one line is: its segment, the offset of its first byte, and its length without the
/// newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    /// Bytes written: the header, then whole lines.
    bytes: u64,
    /// Bytes of the lines that count (newlines included).
    live: u64,
}

/// The segments of `storage.dir/results`.
#[derive(Debug)]
pub struct Store {
    dir: DirHandle,
    segments: BTreeMap<u64, Segment>,
    /// The segment this start appends to, once begun.
    current: Option<u64>,
    /// The number the next segment gets.
    next: u64,
    /// Segments written since the last [`Store::sync`].
    dirty: BTreeSet<u64>,
    /// A segment was made or removed since the last [`Store::sync`].
    dir_dirty: bool,
}

fn name(number: u64) -> String {
    format!("{number:020}{SUFFIX}")
}

impl Store {
    /// Opens the segments in `dir`, handing each line of each (with its place) to `line`,
    /// oldest first; a line `line` does not take (returns false) is not counted. A file that is
    /// not a segment (another name, another header, too large, not a plain file, unreadable) is
    /// left alone with a warning naming it, and the next segment is numbered past it; a last
    /// line cut short is left out.
    ///
    /// Errors: the directory cannot be listed.
    pub fn open(dir: DirHandle, line: &mut dyn FnMut(Place, &[u8]) -> bool) -> io::Result<Store> {
        let mut numbers = Vec::new();
        // The highest number named like a segment, whatever it is: the next one is made past it.
        let mut last = 0u64;
        // Files of the layout before segments (`<uuid>.json`, a file per result): not read.
        let mut earlier = 0usize;
        for entry in dir.list()? {
            if entry.name.ends_with(".tmp") {
                // Left by the earlier layout's writes.
                let _ = dir.remove_if_exists(&entry.name);
                continue;
            }
            match entry.name.strip_suffix(SUFFIX).map(str::parse::<u64>) {
                Some(Ok(n)) if entry.name == name(n) && n < u64::MAX => {
                    last = last.max(n);
                    if entry.is_file && entry.len <= MAX_SEGMENT_BYTES {
                        numbers.push(n);
                    } else {
                        log::warn!(
                            "{}: named like a segment of results, but not a file of at most {MAX_SEGMENT_BYTES} bytes ({} bytes); left alone",
                            dir.join(&entry.name).display(),
                            entry.len
                        );
                    }
                }
                Some(_) => log::warn!(
                    "{}: not a segment of results this binary wrote ({} bytes); left alone",
                    dir.join(&entry.name).display(),
                    entry.len
                ),
                None if entry.name.ends_with(".json") => earlier += 1,
                None => {}
            }
        }
        if earlier > 0 {
            log::warn!(
                "{}: {earlier} files *.json of an earlier layout (a file per result) are not read: those runs have no report nor count as baselines; remove them once not needed",
                dir.path().display()
            );
        }
        numbers.sort_unstable();
        let mut segments = BTreeMap::new();
        for n in &numbers {
            // Read and write: a line let go later is blanked in place (`release`).
            let read = dir.open_existing_rw(&name(*n)).and_then(|file| {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut (&file).take(MAX_SEGMENT_BYTES), &mut bytes)?;
                Ok((file, bytes))
            });
            let (file, bytes) = match read {
                Ok(read) => read,
                Err(e) => {
                    log::warn!(
                        "{}: cannot be read ({e}); left alone, and the results in it have no report nor count as baselines",
                        dir.join(&name(*n)).display()
                    );
                    continue;
                }
            };
            if !bytes.starts_with(HEADER) {
                log::warn!(
                    "{}: it does not start as a segment of results of this version ({:?}); left alone",
                    dir.join(&name(*n)).display(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
                );
                continue;
            }
            let mut at = HEADER.len();
            let mut live = 0u64;
            while let Some(end) = memchr::memchr(b'\n', &bytes[at..]) {
                let place = Place {
                    segment: *n,
                    offset: at as u64,
                    len: end as u32,
                };
                let text = &bytes[at..at + end];
                // A line blanked when its result was let go.
                if !text.iter().all(|&b| b == b' ') && line(place, text) {
                    live += end as u64 + 1;
                }
                at += end + 1;
            }
            segments.insert(
                *n,
                Segment {
                    file: Arc::new(file),
                    bytes: at as u64,
                    live,
                },
            );
        }
        Ok(Store {
            dir,
            segments,
            current: None,
            next: last + 1,
            dirty: BTreeSet::new(),
            dir_dirty: false,
        })
    }

    /// Appends `line` (no raw newline) and its newline; where it went. Not fsync'd.
    ///
    /// Errors: the segment could not be made or written (a full disk); nothing counts then,
    /// and the next line goes where this one would have.
    pub fn append(&mut self, line: &[u8]) -> io::Result<Place> {
        debug_assert!(!line.contains(&b'\n'));
        let number = match self
            .current
            .and_then(|n| self.segments.get(&n).map(|s| (n, s)))
        {
            Some((n, s))
                if s.bytes == HEADER.len() as u64 || s.bytes + line.len() as u64 <= ROLL_BYTES =>
            {
                n
            }
            _ => self.begin()?,
        };
        let Some(segment) = self.segments.get_mut(&number) else {
            return Err(io::Error::other("the segment of results begun is not kept"));
        };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        segment.file.write_all_at(&bytes, segment.bytes)?;
        let place = Place {
            segment: number,
            offset: segment.bytes,
            len: line.len() as u32,
        };
        segment.bytes += bytes.len() as u64;
        segment.live += bytes.len() as u64;
        self.dirty.insert(number);
        Ok(place)
    }

    fn begin(&mut self) -> io::Result<u64> {
        let number = self.next;
        let next = number
            .checked_add(1)
            .ok_or_else(|| io::Error::other("no number is left for a segment of results"))?;
        let file = self.dir.create_new(&name(number))?;
        self.dir_dirty = true;
        if let Err(e) = file.write_all_at(HEADER, 0) {
            drop(file);
            let _ = self.dir.remove_if_exists(&name(number));
            return Err(e);
        }
        self.next = next;
        self.segments.insert(
            number,
            Segment {
                file: Arc::new(file),
                bytes: HEADER.len() as u64,
                live: 0,
            },
        );
        self.current = Some(number);
        self.dirty.insert(number);
        Ok(number)
    }

    /// The file of `place`'s segment, to read it with [`read_at`] without holding the store.
    pub fn file(&self, place: &Place) -> Option<Arc<File>> {
        self.segments
            .get(&place.segment)
            .map(|s| Arc::clone(&s.file))
    }

    /// The line at `place` no longer counts. Its segment goes at the next [`Store::sync`]
    /// once no line of it counts (unless it is the one appended to). With `blank` the line is
    /// also overwritten (not fsync'd) with `blank` then spaces (spaces alone when `blank` is
    /// longer than the line), so that the next start does not read it back: for a result
    /// pruned or forgotten, not for one moved or found twice, whose other copy may not be
    /// durable yet.
    pub fn release(&mut self, place: &Place, blank: Option<&[u8]>) {
        if let Some(s) = self.segments.get_mut(&place.segment) {
            s.live = s.live.saturating_sub(u64::from(place.len) + 1);
            // Blanked even when no line of the segment counts any more: the segment goes only
            // at the next sync, or never while it is the one appended to.
            if let Some(mark) = blank {
                let mut bytes = vec![b' '; place.len as usize];
                if mark.len() <= bytes.len() && !mark.contains(&b'\n') {
                    bytes[..mark.len()].copy_from_slice(mark);
                }
                // A failure leaves the line to be read back at the next start, where the
                // bounds and the job table decide again.
                if s.file.write_all_at(&bytes, place.offset).is_ok() {
                    self.dirty.insert(place.segment);
                }
            }
        }
    }

    /// Fsyncs the segment of `place` alone (a line blanked that must not come back).
    ///
    /// Errors: the fsync failed.
    pub fn sync_segment(&self, place: &Place) -> io::Result<()> {
        match self.segments.get(&place.segment) {
            Some(s) => s.file.sync_all(),
            None => Ok(()),
        }
    }

    /// A segment (not the one appended to) of which less than half the lines' bytes count: its
    /// lines that count are better appended again, and the segment let go.
    pub fn sparse(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|(n, s)| {
                Some(**n) != self.current
                    && s.live > 0
                    && s.live * 2 < s.bytes - HEADER.len() as u64
            })
            .map(|(n, _)| *n)
    }

    /// Fsyncs the segments written since the last call, then removes the segments no line of
    /// which counts (not the one appended to), then fsyncs the directory if a segment was made
    /// or removed.
    ///
    /// Errors: an fsync failed (tried again at the next call); a segment that cannot be
    /// removed is named in the error and kept.
    pub fn sync(&mut self) -> io::Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        for &n in &dirty {
            if let Some(s) = self.segments.get(&n)
                && let Err(e) = s.file.sync_all()
            {
                // This one and those not tried yet are tried again at the next call.
                self.dirty.extend(dirty.range(n..));
                return Err(e);
            }
        }
        let empty: Vec<u64> = self
            .segments
            .iter()
            .filter(|(n, s)| Some(**n) != self.current && s.live == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in empty {
            self.dir
                .remove_if_exists(&name(n))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot remove {}: {e}", name(n))))?;
            self.segments.remove(&n);
            self.dir_dirty = true;
        }
        if std::mem::take(&mut self.dir_dirty)
            && let Err(e) = self.dir.sync()
        {
            self.dir_dirty = true;
            return Err(e);
        }
        Ok(())
    }

    /// Bytes of the segments on disk, and of the lines among them that count.
    #[cfg(test)]
    pub fn bytes(&self) -> (u64, u64) {
        self.segments
            .values()
            .fold((0, 0), |(b, l), s| (b + s.bytes, l + s.live))
    }
}

/// Reads the line at `place` from its segment's `file`.
pub fn read_at(file: &File, place: &Place) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; place.len as usize];
    file.read_exact_at(&mut buf, place.offset)?;
    Ok(buf)
}
