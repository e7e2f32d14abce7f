//! The points the gateway keeps on disk under `storage.dir`: the spool of points waiting for
//! InfluxDB and the dead letters InfluxDB refused; and [`write_atomic`], which `journal` also
//! uses for the job table's snapshot (`jobs.json`; its journal is `journal`'s own).
//!
//! ```text
//! storage.dir/
//!   spool/00000000000000000042.lp        one record: line protocol, exactly as it would be sent
//!   dead-letter/00000000000000000007.lp  a record InfluxDB refused...
//!   dead-letter/00000000000000000007.error  ...and why (time, status, InfluxDB's message)
//!   jobs.json, jobs.journal              the job table (see `journal`)
//! ```
//!
//! Every file here is written the same way: to a temporary name, fsync'd, renamed into place, and
//! the directory fsync'd. A rename is atomic, so after a crash (kill -9, power loss) a record
//! is either whole or absent, never torn; a leftover temporary file is an unfinished write that
//! was never acknowledged, and is removed at start. Records are named by a sequence number, so
//! the oldest is the one with the smallest name.
//!
//! This module only stores and lists bytes; what goes where is decided by `delivery`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

const RECORD_EXT: &str = "lp";
const ERROR_EXT: &str = "error";
const TMP_EXT: &str = "tmp";

/// Writes `bytes` to `path` so that it is whole or absent after a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(TMP_EXT);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// `<seq>-<points>.<ext>`: the sequence number orders records, the point count keeps the
/// counters exact without parsing line protocol again.
fn record_name(seq: u64, points: u64, ext: &str) -> String {
    format!("{seq:020}-{points}.{ext}")
}

/// (sequence number, points) from a record's file name.
fn parse_name(path: &Path) -> Option<(u64, u64)> {
    let (seq, points) = path.file_stem()?.to_str()?.split_once('-')?;
    Some((seq.parse().ok()?, points.parse().ok()?))
}

/// A record waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub points: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub records: u64,
    pub bytes: u64,
    /// When the oldest waiting record was written.
    pub oldest: Option<SystemTime>,
}

#[derive(Debug)]
pub enum SpoolError {
    /// Storing would take the spool past `storage.max_spool_bytes`.
    Full {
        bytes: u64,
        limit: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full { bytes, limit } => write!(
                f,
                "the spool holds {bytes} bytes and is full (storage.max_spool_bytes = {limit}); InfluxDB must catch up first"
            ),
            SpoolError::Io(e) => write!(f, "cannot write to the spool: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    bytes: u64,
    points: u64,
    since: SystemTime,
}

/// The spool and the dead letters. Counting is kept in memory; the files are the truth, read
/// once at start.
pub struct Spool {
    spool_dir: PathBuf,
    dead_dir: PathBuf,
    limit: u64,
    state: Mutex<SpoolState>,
}

struct SpoolState {
    next_seq: u64,
    /// Waiting records by sequence number: (bytes, when written). Kept in memory so finding
    /// the oldest never lists the directory.
    waiting: BTreeMap<u64, Waiting>,
    /// Bytes of the waiting records plus those being written right now.
    bytes: u64,
    dead_records: u64,
    dead_bytes: u64,
}

impl Spool {
    /// Opens (creating) `dir/spool` and `dir/dead-letter`, removes unfinished writes, and counts
    /// what waits.
    pub fn open(dir: &Path, limit: u64) -> io::Result<Spool> {
        let spool_dir = dir.join("spool");
        let dead_dir = dir.join("dead-letter");
        fs::create_dir_all(&spool_dir)?;
        fs::create_dir_all(&dead_dir)?;
        let mut state = SpoolState {
            next_seq: 1,
            waiting: BTreeMap::new(),
            bytes: 0,
            dead_records: 0,
            dead_bytes: 0,
        };
        for (folder, is_spool) in [(&spool_dir, true), (&dead_dir, false)] {
            for entry in fs::read_dir(folder)? {
                let path = entry?.path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if ext == TMP_EXT {
                    fs::remove_file(&path)?;
                    continue;
                }
                let Some((seq, points)) = parse_name(&path) else {
                    continue;
                };
                state.next_seq = state.next_seq.max(seq + 1);
                if ext != RECORD_EXT {
                    continue;
                }
                let meta = fs::metadata(&path)?;
                let len = meta.len();
                if is_spool {
                    let since = meta.modified().unwrap_or_else(|_| SystemTime::now());
                    state.waiting.insert(
                        seq,
                        Waiting {
                            bytes: len,
                            points,
                            since,
                        },
                    );
                    state.bytes += len;
                } else {
                    state.dead_records += 1;
                    state.dead_bytes += len;
                }
            }
        }
        Ok(Spool {
            spool_dir,
            dead_dir,
            limit,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a record durably; when this returns `Ok`, it survives a crash.
    pub fn append(&self, lines: &[u8], points: u64) -> Result<u64, SpoolError> {
        let len = lines.len() as u64;
        let seq = {
            let mut s = self.lock();
            if s.bytes + len > self.limit {
                return Err(SpoolError::Full {
                    bytes: s.bytes,
                    limit: self.limit,
                });
            }
            // Counted before the write so concurrent appends cannot overshoot the limit together.
            s.bytes += len;
            s.next_seq += 1;
            s.next_seq - 1
        };
        let path = self.spool_dir.join(record_name(seq, points, RECORD_EXT));
        if let Err(e) = write_atomic(&path, lines) {
            self.lock().bytes -= len;
            let _ = fs::remove_file(path.with_extension(TMP_EXT));
            return Err(SpoolError::Io(e));
        }
        // Listed only once whole, so the replay never sends a record still being written.
        let since = SystemTime::now();
        self.lock().waiting.insert(
            seq,
            Waiting {
                bytes: len,
                points,
                since,
            },
        );
        Ok(seq)
    }

    /// Waiting records, oldest first, at most `limit` of them.
    pub fn oldest(&self, limit: usize) -> Vec<Record> {
        let s = self.lock();
        s.waiting
            .iter()
            .take(limit)
            .map(|(&seq, w)| Record {
                seq,
                path: self.spool_dir.join(record_name(seq, w.points, RECORD_EXT)),
                bytes: w.bytes,
                points: w.points,
            })
            .collect()
    }

    /// Forgets a record InfluxDB has accepted (or that is gone from the disk already).
    pub fn remove(&self, record: &Record) -> io::Result<()> {
        match fs::remove_file(&record.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut s = self.lock();
        s.waiting.remove(&record.seq);
        s.bytes = s.bytes.saturating_sub(record.bytes);
        Ok(())
    }

    /// Moves a spooled record to the dead letters with the reason.
    pub fn bury(&self, record: &Record, why: &str) -> io::Result<()> {
        let target = self
            .dead_dir
            .join(record_name(record.seq, record.points, RECORD_EXT));
        write_atomic(
            &target.with_extension(ERROR_EXT),
            error_text(why).as_bytes(),
        )?;
        fs::rename(&record.path, &target)?;
        File::open(&self.dead_dir)?.sync_all()?;
        let mut s = self.lock();
        s.waiting.remove(&record.seq);
        s.bytes = s.bytes.saturating_sub(record.bytes);
        s.dead_records += 1;
        s.dead_bytes += record.bytes;
        Ok(())
    }

    /// Stores lines InfluxDB refused straight into the dead letters, with the reason.
    pub fn dead_letter(&self, lines: &[u8], points: u64, why: &str) -> io::Result<u64> {
        let seq = {
            let mut s = self.lock();
            s.next_seq += 1;
            s.next_seq - 1
        };
        let target = self.dead_dir.join(record_name(seq, points, RECORD_EXT));
        write_atomic(
            &target.with_extension(ERROR_EXT),
            error_text(why).as_bytes(),
        )?;
        write_atomic(&target, lines)?;
        let mut s = self.lock();
        s.dead_records += 1;
        s.dead_bytes += lines.len() as u64;
        Ok(seq)
    }

    pub fn usage(&self) -> Usage {
        let s = self.lock();
        Usage {
            records: s.waiting.len() as u64,
            bytes: s.waiting.values().map(|w| w.bytes).sum(),
            oldest: s.waiting.values().next().map(|w| w.since),
        }
    }

    /// Dead letters: (records, bytes).
    pub fn dead_letters(&self) -> (u64, u64) {
        let s = self.lock();
        (s.dead_records, s.dead_bytes)
    }
}

fn error_text(why: &str) -> String {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("{at} {why}\n")
}

/// The dead letters of a storage directory, oldest first: (record, reason).
pub fn list_dead_letters(dir: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    let dead_dir = dir.join("dead-letter");
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dead_dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(RECORD_EXT) {
            if let Some((seq, _)) = parse_name(&path) {
                found.push((seq, path));
            }
        }
    }
    found.sort_unstable();
    Ok(found
        .into_iter()
        .map(|(_, path)| {
            let why = fs::read_to_string(path.with_extension(ERROR_EXT)).unwrap_or_default();
            (path, why.trim_end().to_string())
        })
        .collect())
}

/// Removes a dead letter and its reason.
pub fn remove_dead_letter(path: &Path) -> io::Result<()> {
    let _ = fs::remove_file(path.with_extension(ERROR_EXT));
    fs::remove_file(path)
}

/// Replaces a dead letter's reason after another failed try.
pub fn update_dead_letter(path: &Path, why: &str) -> io::Result<()> {
    write_atomic(&path.with_extension(ERROR_EXT), error_text(why).as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A directory of its own for a unit test, removed when dropped.
    pub(crate) struct Dir(pub(crate) PathBuf);
    impl Dir {
        pub(crate) fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("mc-unit-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn records_come_back_oldest_first_and_survive_reopening() {
        let dir = Dir::new("order");
        let spool = Spool::open(&dir.0, 1000).unwrap();
        for i in 0..12 {
            spool.append(format!("m v={i} 1").as_bytes(), 1).unwrap();
        }
        let first = spool.oldest(3);
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        spool.remove(&first[0]).unwrap();
        assert_eq!(spool.usage().records, 11);
        drop(spool);
        // An unfinished write from a crash is not a record.
        fs::write(
            dir.0.join("spool").join(record_name(99, 1, TMP_EXT)),
            "m v=1",
        )
        .unwrap();
        let spool = Spool::open(&dir.0, 1000).unwrap();
        let usage = spool.usage();
        assert_eq!(usage.records, 11);
        assert_eq!(usage.bytes, 9 * 7 + 2 * 8);
        assert!(usage.oldest.is_some());
        assert_eq!(spool.oldest(1)[0].seq, 2);
        assert_eq!(
            spool.append(b"x", 1).unwrap(),
            13,
            "sequence numbers continue after a restart"
        );
        assert!(
            !dir.0
                .join("spool")
                .join(record_name(99, 1, TMP_EXT))
                .exists()
        );
    }

    #[test]
    fn a_full_spool_refuses_and_stores_nothing() {
        let dir = Dir::new("full");
        let spool = Spool::open(&dir.0, 10).unwrap();
        spool.append(b"123456", 1).unwrap();
        assert!(matches!(
            spool.append(b"12345", 1),
            Err(SpoolError::Full {
                bytes: 6,
                limit: 10
            })
        ));
        assert_eq!(spool.usage().records, 1);
        assert_eq!(spool.oldest(10).len(), 1);
        spool.append(b"1234", 1).unwrap();
    }

    #[test]
    fn dead_letters_keep_the_lines_and_the_reason() {
        let dir = Dir::new("dead");
        let spool = Spool::open(&dir.0, 1000).unwrap();
        spool.append(b"m v=1 1", 1).unwrap();
        let record = spool.oldest(1).remove(0);
        spool
            .bury(&record, "influxdb answered 400: field type conflict")
            .unwrap();
        spool
            .dead_letter(b"m v=\"x\" 2", 1, "influxdb answered 400: bad")
            .unwrap();
        assert_eq!(spool.usage().records, 0);
        assert_eq!(spool.dead_letters(), (2, 16));
        let listed = list_dead_letters(&dir.0).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(fs::read_to_string(&listed[0].0).unwrap(), "m v=1 1");
        assert!(
            listed[0]
                .1
                .ends_with("influxdb answered 400: field type conflict"),
            "{}",
            listed[0].1
        );
        remove_dead_letter(&listed[0].0).unwrap();
        assert_eq!(list_dead_letters(&dir.0).unwrap().len(), 1);
        assert_eq!(Spool::open(&dir.0, 1000).unwrap().dead_letters(), (1, 9));
    }

    #[test]
    fn write_atomic_replaces_whole_files() {
        let dir = Dir::new("atomic");
        let path = dir.0.join("jobs.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        assert!(!path.with_extension(TMP_EXT).exists());
    }
}
