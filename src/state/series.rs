//! The series budget: per client name and database (a *book*), the distinct series (InfluxDB's
//! series key: a measurement and its sorted tag set) the client's writes made, bounded by the
//! token's `max_series`, and kept in `storage.dir/series` so that a restart keeps the count.
//! It decides which lines of a write may pass and records the new series durably before the
//! write is acknowledged; it never parses line protocol, decides an HTTP status or forgets a
//! series (a book only grows, up to its `max_series`).
//!
//! The file, through `storage`'s handle of `storage.dir` (no link followed):
//!
//! ```text
//! header   8 bytes          "MCSER\0" and a u16 little-endian version, 1 (`SERIES_VERSION`)
//! entry    16 bytes each    book hash (u64 LE), series hash (u64 LE): one series of one book
//! ```
//!
//! A book's hash is FNV-1a 64 over `u32 LE length, client name, u32 LE length, database`
//! ([`book_hash`]), never 0 (0 becomes 1); a series' hash is [`series_hash`]. The file is read
//! whole at open. A missing file is made empty (the header is written with the first entries,
//! so a start on a full disk needs no room for it); an empty file, or one holding part of the
//! header, is a budget with nothing in it. A partial entry at its end (a write cut short by a crash, never acknowledged)
//! is left out and cut off; an entry of zeros (a block the filesystem showed after a crash but
//! that was never written) is skipped, no book having the hash 0. A file that does not start
//! with the header, or names a version this binary does not read, stops the start naming the
//! file. The file holds no names, only hashes: renaming a client starts its books afresh.
//!
//! Memory: each known series is a `u64` in its book's `HashSet`, about 10 to 21 bytes (the
//! 8-byte slot and its control byte, at a load between 44 % and 88 %), plus 16 bytes on disk.
//! Two series whose hashes collide (one in 2^64 for two given series) are one series to the
//! budget: the second passes as known. That only ever lets a series through, never refuses one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::storage::DirHandle;
use crate::sync::{Signal, lock};

/// The budget's file name in `storage.dir`.
pub const SERIES_FILE: &str = "series";
/// The first bytes of the file: its format's name.
pub const SERIES_MAGIC: [u8; 6] = *b"MCSER\0";
/// The version of the file's format this program reads and writes.
pub const SERIES_VERSION: u16 = 1;
/// Bytes of the header: entries start at this offset.
pub const HEADER_BYTES: u64 = 8;
/// Bytes of one entry.
pub const ENTRY_BYTES: u64 = 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The file's first bytes: [`SERIES_MAGIC`] and [`SERIES_VERSION`].
fn header() -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..6].copy_from_slice(&SERIES_MAGIC);
    header[6..].copy_from_slice(&SERIES_VERSION.to_le_bytes());
    header
}

/// FNV-1a 64, continued from `hash` over `bytes`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// FNV-1a 64 continued over `s`'s length (u32 little-endian; a longer text counts its length
/// modulo 2^32, which no line of a write reaches) and then its bytes: the length makes the
/// canonical form read back one way only, whatever bytes the names hold.
fn fnv1a_str(hash: u64, s: &str) -> u64 {
    fnv1a(fnv1a(hash, &(s.len() as u32).to_le_bytes()), s.as_bytes())
}

/// A series' identity: FNV-1a 64 over the canonical byte form of its series key, which is
/// `len(measurement), measurement`, then for each tag in the order of its key's bytes,
/// `len(key), key, len(value), value`, each length a u32 little-endian and each name its
/// unescaped UTF-8 bytes (as `lp_parse::Line` holds them). `tags` may come in any order; a tag
/// set as InfluxDB forms it has unique keys and no empty value (the caller's to ensure). Stable
/// across versions and restarts: the file holds these values.
pub fn series_hash<T: AsRef<str> + Ord>(measurement: &str, tags: &[(T, T)]) -> u64 {
    let mut hash = fnv1a_str(FNV_OFFSET, measurement);
    let mut tag = |(k, v): &(T, T)| {
        hash = fnv1a_str(fnv1a_str(hash, k.as_ref()), v.as_ref());
    };
    if tags.is_sorted_by(|a, b| a.0 <= b.0) {
        tags.iter().for_each(&mut tag);
    } else {
        let mut sorted: Vec<&(T, T)> = tags.iter().collect();
        sorted.sort();
        sorted.into_iter().for_each(tag);
    }
    hash
}

/// The hash of the book of `client` writing to `database`: FNV-1a 64 over
/// `len(client), client, len(database), database` (u32 little-endian lengths); never 0, which
/// marks an entry of zeros in the file.
pub fn book_hash(client: &str, database: &str) -> u64 {
    match fnv1a_str(fnv1a_str(FNV_OFFSET, client), database) {
        0 => 1,
        h => h,
    }
}

/// Why the budget's file cannot be used, naming it.
#[derive(Debug)]
pub enum SeriesError {
    /// The file could not be opened, read, written or synced (`doing` says which).
    Io {
        doing: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The file does not start with the budget's header: another program's file.
    Foreign { path: PathBuf },
    /// The file is the budget's, of a version this binary does not read.
    UnknownVersion { path: PathBuf, found: u16 },
}

impl SeriesError {
    /// What a client is told: why, without the file's path under `storage.dir`.
    pub fn for_client(&self) -> String {
        match self {
            SeriesError::Io { doing, error, .. } => format!("cannot {doing} its file: {error}"),
            other => other.to_string(),
        }
    }

    fn io(doing: &'static str, path: &Path, error: io::Error) -> SeriesError {
        SeriesError::Io {
            doing,
            path: path.to_path_buf(),
            error,
        }
    }
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeriesError::Io { doing, path, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
            SeriesError::Foreign { path } => write!(
                f,
                "{} is not the gateway's series budget (it does not start with MCSER): move it away; the gateway makes a new one",
                path.display()
            ),
            SeriesError::UnknownVersion { path, found } => write!(
                f,
                "{} is a series budget of version {found}, and this binary reads version {SERIES_VERSION}: run the binary that wrote it, or move the file away to start every budget afresh",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SeriesError {}

/// What [`SeriesBudget::admit`] decided for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// For each line (the index of `series`), whether its series passed.
    pub passed: Vec<bool>,
    /// New series the write took from the budget (each counted once, however many lines have
    /// it).
    pub taken: u64,
}

impl Admitted {
    /// Lines refused for want of room in the budget.
    pub fn refused(&self) -> usize {
        self.passed.iter().filter(|p| !**p).count()
    }
}

/// One client's series in one database.
#[derive(Debug, Default)]
struct Book {
    /// On disk.
    known: HashSet<u64>,
    /// Taken by an admit whose entries are being written: each with the admit's number. They
    /// count against the room; another admit with one of them waits for the outcome.
    pending: HashMap<u64, u64>,
}

#[derive(Debug, Default)]
struct Books {
    books: HashMap<u64, Book>,
    /// The number of the next admit that takes series.
    next_admit: u64,
}

/// The file and where its next entry goes. Held across the write and its `fdatasync`: one
/// writer at a time, and only admits with new series write.
#[derive(Debug)]
struct Writer {
    file: File,
    /// The end of the last entry on disk: a failed write is cut back to it, and the next write
    /// goes there.
    end: u64,
}

/// The series budgets of every client and database, shared by every connection thread.
///
/// The books are behind one mutex, held while an admit decides (no I/O); new series are then
/// written by the admit itself with the writer's turn (a second mutex, never taken with the
/// first), and become known once on disk. Meanwhile they are *pending*: they count against the
/// room, and another admit meeting one waits for the outcome, so a series passes only once it
/// is on disk, and two writes with the same new series take it once.
#[derive(Debug)]
pub struct SeriesBudget {
    books: Mutex<Books>,
    /// Notified whenever pending series become known or are let go.
    settled: Signal,
    writer: Mutex<Writer>,
    /// The file's path, for messages.
    path: PathBuf,
    /// Failed writes of the file, as they are logged: at once, then once a minute.
    pub errors: crate::storage::Repeats,
    /// Tests make the next writes fail, as a disk gone bad would.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicUsize,
}

impl SeriesBudget {
    /// Opens `storage.dir/series` through the handle of `storage.dir` (making it empty when
    /// missing; never following a link), reads every entry, and cuts off a torn tail. Errors: the file cannot be made, read or cut (`Io`), it is not the budget's
    /// (`Foreign`) or of another version (`UnknownVersion`), each naming the file.
    pub fn open(dir: &DirHandle) -> Result<SeriesBudget, SeriesError> {
        use std::io::Read;
        let path = dir.join(SERIES_FILE);
        let existed = dir.exists(SERIES_FILE);
        // Made empty when missing: the header goes with the first entries, so a start on a
        // full disk needs no room here.
        let mut file = dir
            .open_rw(SERIES_FILE)
            .map_err(|e| SeriesError::io("open", &path, e))?;
        if !existed {
            dir.sync()
                .map_err(|e| SeriesError::io("sync the directory of", &path, e))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| SeriesError::io("read", &path, e))?;
        let header = header();
        let mut books = Books::default();
        let end = if header.starts_with(&bytes) && bytes.len() < header.len() {
            // Empty, or a first write cut short in its header: nothing was acknowledged.
            0
        } else {
            if bytes.len() < header.len() || bytes[..6] != SERIES_MAGIC {
                return Err(SeriesError::Foreign { path });
            }
            let found = u16::from_le_bytes([bytes[6], bytes[7]]);
            if found != SERIES_VERSION {
                return Err(SeriesError::UnknownVersion { path, found });
            }
            let entries = &bytes[header.len()..];
            let whole = entries.len() - entries.len() % ENTRY_BYTES as usize;
            for entry in entries[..whole].chunks_exact(ENTRY_BYTES as usize) {
                let (book, series) = entry.split_at(8);
                let book = u64::from_le_bytes(book.try_into().unwrap_or_default());
                let series = u64::from_le_bytes(series.try_into().unwrap_or_default());
                if book == 0 {
                    continue;
                }
                books.books.entry(book).or_default().known.insert(series);
            }
            HEADER_BYTES + whole as u64
        };
        if end < bytes.len() as u64 {
            // A torn tail: an entry cut short by a crash, never acknowledged.
            file.set_len(end)
                .and_then(|()| file.sync_all())
                .map_err(|e| SeriesError::io("cut the torn end of", &path, e))?;
        }
        Ok(SeriesBudget {
            books: Mutex::new(books),
            settled: Signal::new(),
            writer: Mutex::new(Writer { file, end }),
            path,
            errors: crate::storage::Repeats::new(module_path!()),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Admits the series of one write by `client` to `database`: `series[i]` is line i's
    /// [`series_hash`]. Known series always pass; a new one passes while the book holds fewer
    /// than `max` series (those being written by other admits counted), and is written and
    /// `fdatasync`'d to the file before this returns. A series another admit is writing waits
    /// for that write's outcome. Errors: the new series could not be written or synced (a full
    /// disk: [`SeriesError::is_disk_full`]); then none of this write's new series is taken
    /// (the book is as before) and the caller refuses the write.
    pub fn admit(
        &self,
        client: &str,
        database: &str,
        max: u64,
        series: &[u64],
    ) -> Result<Admitted, SeriesError> {
        self.admit_with(client, database, max, series, false)
    }

    /// [`SeriesBudget::admit`] of a write taken whole or not at all (InfluxDB 3's
    /// `accept_partial=false`): when a line would be refused, no new series is taken (the
    /// answer still says which lines would be refused).
    pub fn admit_whole(
        &self,
        client: &str,
        database: &str,
        max: u64,
        series: &[u64],
    ) -> Result<Admitted, SeriesError> {
        self.admit_with(client, database, max, series, true)
    }

    fn admit_with(
        &self,
        client: &str,
        database: &str,
        max: u64,
        series: &[u64],
        whole: bool,
    ) -> Result<Admitted, SeriesError> {
        let book = book_hash(client, database);
        let mut passed = vec![false; series.len()];
        let mut taken: Vec<u64> = Vec::new();
        let mut books = lock(&self.books);
        let me = loop {
            let me = books.next_admit;
            let b = books.books.entry(book).or_default();
            // A series another admit is writing: wait for its outcome, then decide afresh.
            if series
                .iter()
                .any(|s| !b.known.contains(s) && b.pending.contains_key(s))
            {
                books = crate::sync::unpoisoned(self.settled.wait(books));
                continue;
            }
            let mut held = (b.known.len() + b.pending.len()) as u64;
            for (i, s) in series.iter().enumerate() {
                if b.known.contains(s) || b.pending.contains_key(s) {
                    // Known, or taken by this admit for an earlier line.
                    passed[i] = true;
                } else if held < max {
                    b.pending.insert(*s, me);
                    taken.push(*s);
                    held += 1;
                    passed[i] = true;
                }
            }
            if whole && passed.contains(&false) {
                for s in taken.drain(..) {
                    b.pending.remove(&s);
                }
            }
            break me;
        };
        if taken.is_empty() {
            return Ok(Admitted { passed, taken: 0 });
        }
        books.next_admit += 1;
        drop(books);
        // Settles the pending series however this ends (a panic included): known once on disk,
        // else let go; and wakes whoever waits on them.
        let mut settle = Settle {
            budget: self,
            book,
            me,
            taken: &taken,
            durable: false,
        };
        self.write(book, &taken)?;
        settle.durable = true;
        drop(settle);
        Ok(Admitted {
            passed,
            taken: taken.len() as u64,
        })
    }

    /// Series known (on disk) for `client` writing to `database`.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view of a book
    pub fn count(&self, client: &str, database: &str) -> u64 {
        lock(&self.books)
            .books
            .get(&book_hash(client, database))
            .map_or(0, |b| b.known.len() as u64)
    }

    /// Appends the entries of `series` in `book` and syncs them; a failed write is cut back off
    /// the file (when that fails too, the whole entries written stay, and count after a
    /// restart: a budget spent, never one exceeded).
    fn write(&self, book: u64, series: &[u64]) -> Result<(), SeriesError> {
        let mut bytes =
            Vec::with_capacity(HEADER_BYTES as usize + series.len() * ENTRY_BYTES as usize);
        let mut writer = lock(&self.writer);
        let at = writer.end;
        if at == 0 {
            bytes.extend_from_slice(&header());
        }
        for s in series {
            bytes.extend_from_slice(&book.to_le_bytes());
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        let written = writer
            .file
            .write_all_at(&bytes, at)
            .and_then(|()| writer.file.sync_data());
        #[cfg(test)]
        let written = written.and_then(|()| self.failure_asked());
        match written {
            Ok(()) => {
                writer.end = at + bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = writer
                    .file
                    .set_len(at)
                    .and_then(|()| writer.file.sync_data());
                Err(SeriesError::io("write", &self.path, e))
            }
        }
    }

    /// An error when a test asked for the next write to fail.
    #[cfg(test)]
    fn failure_asked(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        match self
            .fail_writes
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(io::Error::other("a failure the test asked for")),
            Err(_) => Ok(()),
        }
    }

    /// Makes the next `n` writes fail, as a disk gone bad would.
    #[cfg(test)]
    pub fn fail_next_writes(&self, n: usize) {
        self.fail_writes
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An admit's pending series, settled when dropped.
struct Settle<'a> {
    budget: &'a SeriesBudget,
    book: u64,
    me: u64,
    taken: &'a [u64],
    /// Set once the entries are on disk.
    durable: bool,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let mut books = lock(&self.budget.books);
        if let Some(b) = books.books.get_mut(&self.book) {
            for s in self.taken {
                if b.pending.get(s) == Some(&self.me) {
                    b.pending.remove(s);
                    if self.durable {
                        b.known.insert(*s);
                    }
                }
            }
        }
        drop(books);
        self.budget.settled.notify_all();
    }
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
