//! The log's start: finding its segments, checking every record (a torn tail is dropped, a
//! damaged record with whole records after it stops the start naming file and offset unless
//! `--repair` is given), the delivered mark, and the bytes each client holds in the records
//! not yet delivered (what its share bounds). Runs once, before anything is accepted.

use super::*;

impl Log {
    /// Opens (creating it) the log in `dir`, reads and checks every record, and returns what
    /// the start needs: the position of the first record not yet delivered, and what was found.
    /// Each record's job-table changes (journal lines) go to `changes` as the record is read,
    /// in the log's order, so the start never holds them all at once. With `repair`, damaged
    /// records are dropped instead of stopping the start.
    pub fn open(
        dir: DirHandle,
        limit: u64,
        repair: bool,
        changes: &mut dyn FnMut(&[u8]),
    ) -> Result<(Log, Position, Opened), OpenError> {
        Log::open_sized(dir, limit, repair, SEGMENT_BYTES, changes)
    }

    pub(super) fn open_sized(
        dir: DirHandle,
        limit: u64,
        repair: bool,
        segment_bytes: u64,
        changes: &mut dyn FnMut(&[u8]),
    ) -> Result<(Log, Position, Opened), OpenError> {
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        let entries = dir
            .list()
            .map_err(|e| StorageError::io("list", dir.path(), e))?;
        for entry in entries {
            if let Some(first) = entry
                .name
                .strip_suffix(".log")
                .and_then(|n| n.parse::<u64>().ok())
            {
                names.push((first, dir.join(&entry.name)));
            } else if entry.name.ends_with(".tmp") {
                // An unfinished write of the delivered mark or a repaired segment.
                let _ = dir.remove_if_exists(&entry.name);
            }
        }
        names.sort();
        let delivered = read_delivered(&dir)?;
        let mut opened = Opened::default();
        let mut segments = Vec::new();
        // Whether the last segment read names the version this program writes.
        let mut tail_current = true;
        // With no segment left (every one delivered, in a snapshot and let go), numbering goes on
        // after the delivered mark, which was saved before the last of them went.
        let mut next_seq = names.first().map_or(delivered + 1, |(first, _)| *first);
        let mut start = None;
        let mut undelivered_bytes = 0;
        let mut clients: HashMap<String, u64> = HashMap::new();
        let last_index = names.len().saturating_sub(1);
        for (i, (first, path)) in names.iter().enumerate() {
            if *first < next_seq {
                return Err(OpenError::Damaged {
                    path: path.clone(),
                    offset: 0,
                    after_seq: next_seq - 1,
                    why: format!(
                        "the segment starts at record {first}, but the one before it ends at {}",
                        next_seq - 1
                    ),
                });
            }
            if i > 0 && *first > next_seq {
                log::warn!(
                    "{}: records {next_seq} to {} are not in the log (a segment removed by hand, or records dropped by --repair)",
                    path.display(),
                    first - 1
                );
            }
            next_seq = *first;
            let scanned = scan(
                &dir,
                Scan {
                    file: *first,
                    first: next_seq,
                    is_last: i == last_index,
                    repair,
                    delivered,
                },
                &mut opened,
                &mut clients,
                changes,
            )?;
            for rec in &scanned.records {
                if rec.seq > delivered {
                    undelivered_bytes += rec.len;
                    opened.undelivered.0 += 1;
                    if start.is_none() {
                        start = Some(Position {
                            segment: *first,
                            offset: rec.offset,
                            next_seq: rec.seq,
                        });
                    }
                }
            }
            opened.records += scanned.records.len() as u64;
            let last = scanned.records.last().map_or(first - 1, |r| r.seq);
            tail_current = scanned.current;
            next_seq = last + 1;
            segments.push(Segment {
                first: *first,
                path: path.clone(),
                last,
                bytes: scanned.end,
                max_change: scanned.max_change,
                version: scanned.version,
            });
        }
        opened.undelivered.1 = undelivered_bytes;
        // When the records waiting were written, as well as a start can tell (a record does not
        // keep its time): each was written before its segment file was last written, so it
        // has waited at least since then. Never more than it has: an alert on the age does
        // not go off for a restart.
        let (opened_at, now) = (std::time::Instant::now(), std::time::SystemTime::now());
        let appended: VecDeque<(u64, i64)> = segments
            .iter()
            .filter(|s| s.last > delivered)
            .filter_map(|s| {
                let meta = dir
                    .open_read(&segment_name(s.first))
                    .ok()?
                    .metadata()
                    .ok()?;
                let written = meta.modified().ok()?;
                let age = now.duration_since(written).unwrap_or_default();
                Some((s.first.max(delivered + 1), -(age.as_millis() as i64)))
            })
            .collect();
        // The last segment is written on; when there is none, or it is full, or its header
        // names an older version (records of this version under it would be read as that
        // version by the program that wrote it), the first write begins one (so a start needs
        // no room on a full disk).
        let tail = segments
            .last()
            .filter(|s| s.bytes < segment_bytes && tail_current);
        let active = match tail {
            Some(tail) => {
                let file = dir
                    .open_rw(&segment_name(tail.first))
                    .map_err(|e| StorageError::io("open", &tail.path, e))?;
                let size = file
                    .metadata()
                    .map_err(|e| StorageError::io("look at", &tail.path, e))?
                    .len();
                Some(Active { file, size })
            }
            None => None,
        };
        let position = start.unwrap_or(match tail {
            Some(tail) => Position {
                segment: tail.first,
                offset: tail.bytes,
                next_seq,
            },
            None => Position {
                segment: next_seq,
                offset: FIRST_RECORD,
                next_seq,
            },
        });
        let log = Log {
            dir,
            limit,
            segment_bytes,
            inner: Mutex::new(Inner {
                next_ticket: 1,
                next_seq,
                pending: Vec::new(),
                spare: Vec::new(),
                pending_starts: Vec::new(),
                pending_clients: Vec::new(),
                pending_change: 0,
                writing: false,
                done: 0,
                taken: 0,
                taken_to: 0,
                groups: VecDeque::new(),
                waiters: BTreeMap::new(),
                writer: Writer::Off,
                durable: next_seq - 1,
                segments,
                active,
                undelivered: undelivered_bytes,
                undelivered_records: opened.undelivered.0,
                // A log opened at its bound refuses points until InfluxDB takes some.
                full: undelivered_bytes >= limit,
                clients,
                delivered: position.next_seq - 1,
                snapshot_covers: 0,
                changes_since_snapshot: opened.change_bytes,
                snapshot_bytes: 0,
                disk_full: false,
                let_go_blocked: false,
                mark_saved_at: None,
                appended,
                opened_at,
                write_failure: None,
                trim_wanted: false,
                broken: false,
            }),
            written: Signal::new(),
            writer_signal: Signal::new(),
            turns: [Signal::new(), Signal::new()],
            reading: Mutex::new(None),
            errors: crate::storage::Repeats::new(super::LOG_TARGET),
            mark: Mutex::new(delivered),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            fail_undos: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            fail_dir_syncs: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            fail_full: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((log, position, opened))
    }
}

/// How far the log is delivered, from its mark (0 when there is none yet). A mark of another
/// format or version stops the start.
pub(super) fn read_delivered(dir: &DirHandle) -> Result<u64, OpenError> {
    let path = dir.join(DELIVERED_FILE);
    match dir.read_if_exists(DELIVERED_FILE) {
        Ok(Some(bytes)) => {
            record::decode_delivered(&bytes).map_err(|why| OpenError::Format { path, why })
        }
        Ok(None) => Ok(0),
        Err(e) => Err(StorageError::io("read", &path, e).into()),
    }
}

/// A whole record found at start.
pub(super) struct Found {
    seq: u64,
    offset: u64,
    len: u64,
}

/// What one segment holds.
pub(super) struct Scanned {
    records: Vec<Found>,
    /// Bytes of whole records (where the next record goes).
    end: u64,
    max_change: u64,
    /// Its header names the version this program writes: records may be added to it.
    current: bool,
    /// The version its header names.
    version: u16,
}

/// Which segment [`scan`] reads, and how.
pub(super) struct Scan {
    /// The segment, by the number that names its file.
    pub file: u64,
    /// The number its first record must have at least.
    pub first: u64,
    /// It is the last segment: a damaged end is a write cut short by a crash.
    pub is_last: bool,
    /// `--repair`: damaged records are dropped rather than stopping the start.
    pub repair: bool,
    /// Records up to this number are delivered.
    pub delivered: u64,
}

/// Reads and checks one segment; see [`Log::open`]. The bytes of each record after
/// `how.delivered` that names a client are added to that client's in `clients`.
pub(super) fn scan(
    dir: &DirHandle,
    how: Scan,
    opened: &mut Opened,
    clients: &mut HashMap<String, u64>,
    changes: &mut dyn FnMut(&[u8]),
) -> Result<Scanned, OpenError> {
    let Scan {
        file,
        first,
        is_last,
        repair,
        delivered,
    } = how;
    let name = segment_name(file);
    let path = &dir.join(&name);
    let bytes = dir
        .read_if_exists(&name)
        .map_err(|e| StorageError::io("read", path, e))?
        .unwrap_or_default();
    let mut changed = false;
    let header = if is_last && bytes.iter().all(|&b| b == 0) {
        // The file was made, but its header never reached the disk: the process stopped
        // before anything was written to it, so it holds nothing; it gets its header now.
        changed = true;
        record::segment_header().to_vec()
    } else {
        record::check_segment_header(&bytes).map_err(|why| OpenError::Format {
            path: path.clone(),
            why,
        })?;
        bytes[..SEGMENT_HEADER_BYTES].to_vec()
    };
    let version = u16::from_le_bytes([header[6], header[7]]);
    let bytes = if bytes.len() < SEGMENT_HEADER_BYTES {
        header.clone()
    } else {
        bytes
    };
    let current = header[6..SEGMENT_HEADER_BYTES] == record::SEGMENT_VERSION.to_le_bytes();
    let mut records = Vec::new();
    let mut kept: Vec<u8> = header;
    let mut max_change = 0;
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut expected = first;
    loop {
        let problem = match record::frame(&bytes[pos..]) {
            Frame::Record { seq, len } if seq >= expected => {
                match record::decode(&bytes[pos + record::HEADER_BYTES..pos + len], version) {
                    Ok(payload) => {
                        if seq > delivered
                            && let Some(client) = payload.client
                        {
                            match clients.get_mut(client) {
                                Some(held) => *held += len as u64,
                                None => {
                                    clients.insert(client.to_string(), len as u64);
                                }
                            }
                        }
                        if !payload.changes.is_empty() {
                            opened.change_bytes += payload.changes.len() as u64;
                            changes(payload.changes);
                        }
                        max_change = max_change.max(payload.change_seq);
                        records.push(Found {
                            seq,
                            offset: kept.len() as u64,
                            len: len as u64,
                        });
                        kept.extend_from_slice(&bytes[pos..pos + len]);
                        expected = seq + 1;
                        pos += len;
                        continue;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Frame::Record { seq, .. } => {
                format!("it is record {seq}, after record {}", expected - 1)
            }
            Frame::End => {
                if bytes[pos..].iter().all(|&b| b == 0) {
                    break;
                }
                "zeros where a record was due, with data after them".to_string()
            }
            Frame::Short { needed } => format!("it needs {needed} bytes, and the file ends first"),
            Frame::Damaged(damage) => damage.to_string(),
        };
        // Anything whole after this point?
        let next = resync(&bytes, pos + 1, expected, version);
        if next.is_none() && is_last {
            // A write cut short by a crash: never acknowledged.
            opened.torn = Some((path.to_path_buf(), pos as u64, (bytes.len() - pos) as u64));
            changed = true;
            break;
        }
        if !repair {
            return Err(OpenError::Damaged {
                path: path.to_path_buf(),
                offset: pos as u64,
                after_seq: expected - 1,
                why: problem,
            });
        }
        let skip_to = next.map_or(bytes.len(), |(at, _)| at);
        opened
            .repaired
            .push((path.to_path_buf(), pos as u64, (skip_to - pos) as u64));
        changed = true;
        match next {
            Some((at, seq)) => {
                pos = at;
                expected = seq;
            }
            None => break,
        }
    }
    if changed {
        // Rewrite the segment with its whole records only (after a torn tail the file is cut
        // at the last whole record; with --repair, damaged records are left out).
        dir.write_atomic(&name, &kept)
            .map_err(|e| StorageError::io("rewrite", path, e))?;
    }
    Ok(Scanned {
        end: kept.len() as u64,
        records,
        max_change,
        current,
        version,
    })
}

/// The offset and number of the first whole record at or after `from` whose number is at
/// least `expected`, in a segment of `version`: what follows a damaged stretch.
pub(super) fn resync(
    bytes: &[u8],
    from: usize,
    expected: u64,
    version: u16,
) -> Option<(usize, u64)> {
    let mut at = from;
    while at + record::HEADER_BYTES <= bytes.len() {
        if (bytes[at] != 0 || bytes[at + 1..at + 4].iter().any(|&b| b != 0))
            && let Frame::Record { seq, len } = record::frame(&bytes[at..])
            && seq >= expected
            && record::decode(&bytes[at + record::HEADER_BYTES..at + len], version).is_ok()
        {
            return Some((at, seq));
        }
        at += 1;
    }
    None
}
