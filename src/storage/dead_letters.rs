//! The dead letters: points InfluxDB refused, kept under `storage.dir/dead-letter/` for a
//! person, each with InfluxDB's reason, and bounded by `storage.max_dead_letter_bytes`, each
//! client (a token's name) to its share of it.
//!
//! ```text
//! dead-letter/<record>-<unit>-<points>[-<client>].lp     the refused lines, exactly as they
//!                                                        were sent; for a write through
//!                                                        InfluxDB's API, after a first line
//!                                                        naming its target (a comment to
//!                                                        InfluxDB: `# metrics-consumer target {…}`)
//! dead-letter/<record>-<unit>-<points>[-<client>].error  when, and why: InfluxDB's status and
//!                                                        message
//! dead-letter/lock                 held by `replay-dead-letters` while it runs
//! ```
//!
//! A dead letter is named by the log record its lines came from and the unit's place in it, so
//! a refusal met again (the log delivered again after a restart) is kept once, and by the
//! client that wrote the record (none: a record without one; [`file_key`]: a token listed
//! without a name, `token#3f9c1a2b7d40`, is `token%233f9c1a2b7d40`), so that each client's
//! letters are counted from the directory alone.
//! Both files are written whole or not at all. Beyond the bound, or beyond its client's share,
//! a refusal is not kept: its points are counted as dropped, and the log says so at error
//! level, at most once a minute, so a stream of refusals can never fill the disk, nor one
//! client's refusals take the room of another's. `replay-dead-letters` may remove dead
//! letters while the gateway runs; the gateway counts the directory again when the bound is
//! near and when its counts are read (the state page, the metrics), at most every few
//! seconds, to notice the room made and to stop showing letters delivered.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::log::OwnedTarget;
use super::{DirHandle, StorageError, read_if_exists, write_atomic};

/// The dead letters' directory in `storage.dir`.
pub const DIR: &str = "dead-letter";
const RECORD_EXT: &str = "lp";
/// The first line of a dead letter whose points go to a target of their own, before its JSON.
const TARGET_LINE: &str = "# metrics-consumer target ";
const ERROR_EXT: &str = "error";
/// How often a dropped refusal is logged at most.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often the directory is counted again, at most, while the bound is reached.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// What became of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Written to the dead letters.
    Kept,
    /// The dead letters are full: counted as dropped.
    Dropped,
}

/// Counts of the dead letters, for the state page and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub records: u64,
    pub bytes: u64,
    /// `storage.max_dead_letter_bytes`.
    pub limit: u64,
}

struct State {
    records: u64,
    bytes: u64,
    /// Bytes of each client's letters (in `bytes` too), by its [`file_key`]; letters without a
    /// client are not in it.
    clients: HashMap<String, u64>,
    /// Letters being written (their records and bytes are in `records`, `bytes` and `clients`):
    /// a count of the directory does not see them yet.
    writing_records: u64,
    writing_bytes: u64,
    writing_clients: HashMap<String, u64>,
    last_drop_log: Option<Instant>,
    last_scan: Instant,
}

/// The dead letters of one `storage.dir`.
pub struct DeadLetters {
    /// The directory, opened at the start: letters are written relative to it.
    handle: DirHandle,
    limit: u64,
    /// Each client's share of `limit`, in bytes, by its [`file_key`]
    /// ([`DeadLetters::with_shares`]); a client not in it, and letters without a client, are
    /// held to `limit` alone.
    shares: HashMap<String, u64>,
    state: Mutex<State>,
}

/// Where refused lines came from: the log record's number, the unit's place in it (from 0), and
/// the first of the unit's lines they are (0 unless a unit too large for one write was cut into
/// parts). The same refusal met twice has the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub record: u64,
    pub unit: u32,
    pub line: u32,
}

/// Bytes of a client's name kept in a letter's file name, once made a [`file_key`]; past them,
/// the first of them and a digest of the whole name.
const MAX_FILE_KEY_BYTES: usize = 96;

/// The bytes of a client's name that [`file_key`] keeps as they are: letters, digits, `.`, `_`
/// and `-` (the rest are `%` and two hex digits).
const FILE_KEY_KEEPS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'_')
    .remove(b'-');

/// What a client's name is in a letter's file name: its letters, digits, `.`, `_` and `-` as
/// they are, every other byte as `%` and two hex digits (a token listed without a name:
/// `token#3f9c1a2b7d40`; any other name a client once had: `tokens.txt:3`); a
/// name longer than
/// [`MAX_FILE_KEY_BYTES`] so made is cut short and ends with `~` and the first 128 bits of the
/// SHA-256 of the whole name, so that a file name stays within what a file system takes. The
/// key is what the per-client counts and shares go by.
pub fn file_key(client: &str) -> String {
    let mut key = percent_encoding::utf8_percent_encode(client, FILE_KEY_KEEPS).to_string();
    if key.len() > MAX_FILE_KEY_BYTES {
        // A checksum two names cannot be made to share (a CRC-32 can: it is linear).
        let digest = ring::digest::digest(&ring::digest::SHA256, client.as_bytes());
        key.truncate(MAX_FILE_KEY_BYTES - 33);
        key.push('~');
        for b in &digest.as_ref()[..16] {
            key.push_str(&format!("{b:02x}"));
        }
    }
    key
}

/// `<record>-<unit>-<points>[-<client>].<ext>` (`<unit>.<line>` for a part of a unit): the
/// key orders them and keeps each refusal once, the point count keeps the counters exact
/// without parsing line protocol again, the client (its [`file_key`]) counts each client's
/// letters from the directory.
fn name(key: Key, points: u64, client: Option<&str>, ext: &str) -> String {
    let unit = match key.line {
        0 => format!("{:020}-{}-{points}", key.record, key.unit),
        line => format!("{:020}-{}.{line}-{points}", key.record, key.unit),
    };
    match client {
        Some(client) => format!("{unit}-{client}.{ext}"),
        None => format!("{unit}.{ext}"),
    }
}

/// (key, points, client) from a dead letter's file name,
/// `<record>-<unit>[.<line>]-<points>[-<client>].<ext>`.
fn parse_name(path: &Path) -> Option<(Key, u64, Option<&str>)> {
    let stem = path.file_stem()?.to_str()?;
    let mut parts = stem.splitn(4, '-');
    let record = parts.next()?.parse().ok()?;
    let second = parts.next()?;
    let points = parts.next()?.parse().ok()?;
    let client = parts.next();
    if client.is_some_and(|c| !is_client_name(c)) {
        return None;
    }
    let (unit, line) = second.split_once('.').unwrap_or((second, "0"));
    Some((
        Key {
            record,
            unit: unit.parse().ok()?,
            line: line.parse().ok()?,
        },
        points,
        client,
    ))
}

/// Whether `name` can be a client's [`file_key`]: 1 to [`MAX_FILE_KEY_BYTES`] letters,
/// digits, `.`, `_`, `-`, `%` or `~`.
fn is_client_name(name: &str) -> bool {
    (1..=MAX_FILE_KEY_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%' | b'~'))
}

/// What a file of `len` bytes takes on disk, about: whole blocks of 4 KiB (a small file takes one
/// block, and an inode). What the bound counts, so that many small refusals cannot fill the
/// disk within it.
fn on_disk(len: u64) -> u64 {
    len.div_ceil(4096).max(1) * 4096
}

/// What a count of the directory found: letters, their bytes on disk, and those of each client.
#[derive(Default)]
struct Counted {
    records: u64,
    bytes: u64,
    clients: HashMap<String, u64>,
}

/// What the dead letters in `dir` take ([`Counted`]), listed through its handle. At the
/// start (`at_start`), what a letter's write cut short is removed: unfinished files (`.tmp`)
/// and a reason without its lines (the reason is written first). A crash left them; the letter
/// was never kept, so its refusal is met again when the log is delivered again, and nothing
/// would list them while the bound counted them for ever. Later counts leave both:
/// `replay-dead-letters` may be writing beside the gateway.
fn count(dir: &DirHandle, at_start: bool) -> io::Result<Counted> {
    let mut counted = Counted::default();
    let entries = dir.list()?;
    let letters: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|e| e.name.strip_suffix(".lp"))
        .collect();
    for entry in &entries {
        let path = Path::new(&entry.name);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let reason_alone = ext == ERROR_EXT
            && path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .is_some_and(|stem| !letters.contains(stem));
        if ext == "tmp" || (at_start && reason_alone) {
            if at_start {
                let _ = dir.remove_if_exists(&entry.name);
            }
            continue;
        }
        let Some((_, _, client)) = parse_name(path).filter(|_| entry.is_file) else {
            continue;
        };
        counted.records += u64::from(ext == RECORD_EXT);
        counted.bytes += on_disk(entry.len);
        if let Some(client) = client {
            *counted.clients.entry(client.to_string()).or_default() += on_disk(entry.len);
        }
    }
    Ok(counted)
}

impl DeadLetters {
    /// Opens (creating it) `dead-letter` in `storage_dir` (the handle of `storage.dir` opened
    /// at the start) and counts what it holds.
    pub fn open(storage_dir: &DirHandle, limit: u64) -> Result<DeadLetters, StorageError> {
        let path = storage_dir.join(DIR);
        let handle = storage_dir
            .subdir(DIR)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let counted = count(&handle, true).map_err(|e| StorageError::io("list", &path, e))?;
        Ok(DeadLetters {
            handle,
            limit,
            shares: HashMap::new(),
            state: Mutex::new(State {
                records: counted.records,
                bytes: counted.bytes,
                clients: counted.clients,
                writing_records: 0,
                writing_bytes: 0,
                writing_clients: HashMap::new(),
                last_drop_log: None,
                last_scan: Instant::now(),
            }),
        })
    }

    /// Holds each client (a token's name) to its share of the bound, in bytes: its letters
    /// beyond it are dropped, whatever room the others leave, so that one client's refusals
    /// never take the room of another's. Letters of a client not named, and of records without
    /// a client, are held to the bound alone.
    pub fn with_shares(mut self, shares: HashMap<String, u64>) -> DeadLetters {
        self.shares = shares
            .into_iter()
            .map(|(client, share)| (file_key(&client), share))
            .collect();
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Keeps `lines` (`points` points) that InfluxDB refused, with the reason; or, beyond the
    /// bound or beyond `client`'s share of it ([`DeadLetters::with_shares`]), counts them as
    /// dropped. A refusal whose `key` is kept already is not kept again (and is answered
    /// `Kept`). An error means the disk failed.
    /// `client_name`: the client that wrote the record (a token's name), `None` for none.
    /// `target`: where the points go when not to `[influxdb]`'s database (a write through
    /// InfluxDB's API, timestamps in nanoseconds), kept in the letter's first line.
    pub fn store(
        &self,
        key: Key,
        client_name: Option<&str>,
        target: Option<&OwnedTarget>,
        lines: &str,
        points: u64,
        why: &str,
    ) -> io::Result<Kept> {
        let with_target;
        let lines = match target {
            None => lines,
            Some(t) => {
                let named = serde_json::json!({
                    "database": t.database,
                    "retention_policy": t.retention_policy,
                    "precision": "ns",
                });
                with_target = format!("{TARGET_LINE}{named}\n{lines}");
                &with_target
            }
        };
        let client_key = client_name.map(file_key);
        let client = client_key.as_deref();
        // The lines are written last: when they are there, the letter is whole. A letter kept
        // before letters named their client has the name without it.
        if self.handle.exists(&name(key, points, client, RECORD_EXT))
            || (client.is_some() && self.handle.exists(&name(key, points, None, RECORD_EXT)))
        {
            return Ok(Kept::Kept);
        }
        let error = error_text(why);
        let len = on_disk(lines.len() as u64) + on_disk(error.len() as u64);
        let share = client.and_then(|c| self.shares.get(c).copied());
        {
            let mut s = self.lock();
            if !s.has_room(len, client, share, self.limit) {
                // `replay-dead-letters` may have made room.
                self.recount(&mut s);
            }
            if !s.has_room(len, client, share, self.limit) {
                if s.last_drop_log
                    .is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY)
                {
                    s.last_drop_log = Some(Instant::now());
                    let full = match (client, client_name, share) {
                        (Some(client), Some(name), Some(share)) if s.bytes + len <= self.limit => {
                            format!(
                                "the dead letters of client {name} are full ({} bytes, its share of storage.max_dead_letter_bytes = {share}; {} bytes for every client)",
                                s.clients.get(client).copied().unwrap_or(0),
                                s.bytes,
                            )
                        }
                        _ => format!(
                            "the dead letters are full ({} bytes, storage.max_dead_letter_bytes = {})",
                            s.bytes, self.limit
                        ),
                    };
                    log::error!(
                        "{full}: {points} refused points were dropped (counters.points_dropped counts them all); empty them with `metrics-consumer replay-dead-letters`, or raise the limit. The latest refusal: {why}"
                    );
                }
                return Ok(Kept::Dropped);
            }
            s.reserve(len, client);
        }
        let reason = name(key, points, client, ERROR_EXT);
        let written = self
            .handle
            .write_atomic(&reason, error.as_bytes())
            .and_then(|()| {
                self.handle
                    .write_atomic(&name(key, points, client, RECORD_EXT), lines.as_bytes())
                    // No reason is left without its letter (a start removes one a crash left).
                    .inspect_err(|_| {
                        let _ = self.handle.remove_if_exists(&reason);
                    })
            });
        let mut s = self.lock();
        s.settle(len, client, written.is_ok());
        drop(s);
        written.map(|()| Kept::Kept)
    }

    /// Counts the directory again, unless it was counted within [`RESCAN_EVERY`]:
    /// `replay-dead-letters` may have removed letters while the gateway runs.
    fn recount(&self, s: &mut State) {
        if s.last_scan.elapsed() < RESCAN_EVERY {
            return;
        }
        if let Ok(counted) = count(&self.handle, false) {
            s.records = counted.records + s.writing_records;
            s.bytes = counted.bytes + s.writing_bytes;
            s.clients = counted.clients;
            for (client, bytes) in &s.writing_clients {
                *s.clients.entry(client.clone()).or_default() += bytes;
            }
        }
        s.last_scan = Instant::now();
    }

    /// The counts, for the state page and the metrics; the directory counted again first
    /// when it holds letters and was not counted within [`RESCAN_EVERY`], so that letters a
    /// `replay-dead-letters` delivered stop being shown within seconds.
    pub fn usage(&self) -> Usage {
        let mut s = self.lock();
        if s.records > 0 {
            self.recount(&mut s);
        }
        Usage {
            records: s.records,
            bytes: s.bytes,
            limit: self.limit,
        }
    }
}

impl State {
    /// Whether a letter of `len` bytes for `client` fits the bound (`limit`) and the client's
    /// `share` of it (`None`: no share of its own).
    fn has_room(&self, len: u64, client: Option<&str>, share: Option<u64>, limit: u64) -> bool {
        let held = |c: &str| self.clients.get(c).copied().unwrap_or(0);
        self.bytes + len <= limit
            && client
                .zip(share)
                .is_none_or(|(client, share)| held(client) + len <= share)
    }

    /// Counts a letter of `len` bytes for `client` before it is written, so concurrent
    /// refusals cannot overshoot the bound or a share together.
    fn reserve(&mut self, len: u64, client: Option<&str>) {
        self.bytes += len;
        self.records += 1;
        self.writing_bytes += len;
        self.writing_records += 1;
        if let Some(client) = client {
            *self.clients.entry(client.to_string()).or_default() += len;
            *self.writing_clients.entry(client.to_string()).or_default() += len;
        }
    }

    /// The letter [`State::reserve`] counted is written, or failed (and is counted no more).
    /// The directory may have been counted again meanwhile, without it: saturating, so a
    /// count can never wrap below zero.
    fn settle(&mut self, len: u64, client: Option<&str>, written: bool) {
        self.writing_bytes = self.writing_bytes.saturating_sub(len);
        self.writing_records = self.writing_records.saturating_sub(1);
        if let Some(client) = client {
            forget(&mut self.writing_clients, client, len);
        }
        if !written {
            self.bytes = self.bytes.saturating_sub(len);
            self.records = self.records.saturating_sub(1);
            if let Some(client) = client {
                forget(&mut self.clients, client, len);
            }
        }
    }
}

/// Takes `len` bytes off `client`'s count in `counts`, forgetting a client left with none.
fn forget(counts: &mut HashMap<String, u64>, client: &str, len: u64) {
    if let Some(bytes) = counts.get_mut(client) {
        *bytes = bytes.saturating_sub(len);
        if *bytes == 0 {
            counts.remove(client);
        }
    }
}

fn error_text(why: &str) -> String {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("{at} {why}\n")
}

/// The dead letters of a storage directory, oldest first: (record, points, reason).
pub fn list(storage_dir: &Path) -> io::Result<Vec<(PathBuf, u64, String)>> {
    let dir = storage_dir.join("dead-letter");
    let mut found: Vec<(Key, u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(RECORD_EXT)
            && let Some((n, points, _)) = parse_name(&path)
        {
            found.push((n, points, path));
        }
    }
    found.sort_unstable();
    Ok(found
        .into_iter()
        .map(|(_, points, path)| {
            let why = read_if_exists(&path.with_extension(ERROR_EXT))
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
                .unwrap_or_default();
            (path, points, why)
        })
        .collect())
}

/// Reads a dead letter's lines (without the line naming its target), without following a link.
#[cfg(test)]
pub fn read(path: &Path) -> io::Result<String> {
    Ok(read_letter(path)?.1)
}

/// Reads a dead letter: its target, when its points go to one of their own, and its lines.
pub fn read_letter(path: &Path) -> io::Result<(Option<OwnedTarget>, String)> {
    let bytes = read_if_exists(path)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let text =
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let Some(rest) = text.strip_prefix(TARGET_LINE) else {
        return Ok((None, text));
    };
    let (named, lines) = rest.split_once('\n').unwrap_or((rest, ""));
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "its target line does not read");
    let named: serde_json::Value = serde_json::from_str(named).map_err(|_| bad())?;
    let text_of = |key: &str| named[key].as_str().map(str::to_string).ok_or_else(bad);
    let target = OwnedTarget {
        database: text_of("database")?,
        retention_policy: text_of("retention_policy")?,
    };
    Ok((Some(target), lines.to_string()))
}

/// Removes a dead letter and its reason. The reason goes first: when it cannot be removed,
/// the letter stays whole (and an error says so), and no reason is ever left without its letter,
/// where nothing would list it and the bound would count it for ever.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path.with_extension(ERROR_EXT)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::remove_file(path)
}

/// Replaces a dead letter's reason after another failed try.
pub fn update(path: &Path, why: &str) -> io::Result<()> {
    write_atomic(&path.with_extension(ERROR_EXT), error_text(why).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{Dir, root};

    fn key(record: u64) -> Key {
        Key {
            record,
            unit: 0,
            line: 0,
        }
    }

    #[test]
    fn dead_letters_keep_the_lines_and_the_reason_and_read_back() {
        let dir = Dir::new("dead-letters");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        let why = "influxdb answered 400: field type conflict";
        assert_eq!(
            dead.store(key(1), None, None, "m v=1 1\n", 1, why).unwrap(),
            Kept::Kept
        );
        assert_eq!(
            dead.store(key(2), None, None, "m v=\"x\" 2\n", 1, "bad")
                .unwrap(),
            Kept::Kept
        );
        // Each letter is two files of one 4 KiB block each, as the disk counts them.
        assert_eq!((dead.usage().records, dead.usage().bytes), (2, 4 * 4096));
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(read(&listed[0].0).unwrap(), "m v=1 1\n");
        assert_eq!(listed[0].1, 1);
        assert!(listed[0].2.ends_with(why), "{}", listed[0].2);
        remove(&listed[0].0).unwrap();
        let again = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        assert_eq!((again.usage().records, again.usage().bytes), (1, 2 * 4096));
        again
            .store(key(3), None, None, "m v=3 3\n", 1, "x")
            .unwrap();
        let names: Vec<_> = list(dir.path()).unwrap().into_iter().map(|l| l.0).collect();
        assert!(
            names[1]
                .to_string_lossy()
                .contains("00000000000000000003-0-1.lp"),
            "named by the record and the unit: {names:?}"
        );
    }

    #[test]
    fn a_reason_a_crash_left_without_its_lines_is_removed_at_the_start() {
        let dir = Dir::new("dead-letters-reason-alone");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        dead.store(key(1), None, None, "m v=1 1\n", 1, "kept")
            .unwrap();
        drop(dead);
        // The reason of a letter whose lines were never written (the write cut short).
        let letters = dir.path().join(DIR);
        let alone = letters.join("00000000000000000002-0-1.error");
        fs::write(&alone, "2026-12-06T00:00:00Z influxdb answered 400\n").unwrap();
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        assert!(
            !alone.exists(),
            "a start removes a reason without its lines"
        );
        assert_eq!((dead.usage().records, dead.usage().bytes), (1, 2 * 4096));
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        assert!(letters.join("00000000000000000001-0-1.error").exists());
    }

    #[test]
    fn letters_of_tokens_named_after_where_they_are_are_listed_counted_and_kept() {
        // Names with bytes a file name cannot keep as they are: tokens listed without a name
        // (`config::clients`: `token#…`), and the forms such names had before (`[1]`, `:3`).
        let dir = Dir::new("dead-letters-place-names");
        let clients = [
            "auth.tokens[1]",
            "METRICS_CONSUMER_TOKENS#3f9c1a2b7d40",
            "tokens.txt:3",
            "secrets/tokens.txt#42492da06234",
        ];
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        for (i, client) in clients.iter().enumerate() {
            let kept = dead.store(key(i as u64 + 1), Some(client), None, "m v=1 1\n", 1, "bad");
            assert!(
                matches!(kept, Ok(Kept::Kept)),
                "a refusal of {client} is kept: {kept:?}"
            );
        }
        // replay-dead-letters lists every letter, and a restart counts them in the bound.
        assert_eq!(list(dir.path()).unwrap().len(), clients.len());
        let again = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        assert_eq!(again.usage().records, clients.len() as u64);
        // And such a token is held to its share as any other: its one letter fills it.
        let shared = DeadLetters::open(&root(&dir), 1 << 20)
            .unwrap()
            .with_shares(HashMap::from([(
                "tokens.txt:3".to_string(),
                2 * 4096 + 100,
            )]));
        assert_eq!(
            shared
                .store(key(9), Some("tokens.txt:3"), None, "m v=1 1\n", 1, "bad")
                .unwrap(),
            Kept::Dropped
        );
        assert_eq!(
            shared
                .store(key(9), Some("auth.tokens[1]"), None, "m v=1 1\n", 1, "bad")
                .unwrap(),
            Kept::Kept
        );
    }

    #[test]
    fn a_letters_name_carries_its_client_and_reads_back() {
        let part = Key {
            record: 12,
            unit: 3,
            line: 40,
        };
        for client in ["a", "ci-runner.eu-west_1", &"x".repeat(64)] {
            let named = name(part, 5, Some(client), RECORD_EXT);
            assert_eq!(
                parse_name(Path::new(&named)),
                Some((part, 5, Some(client))),
                "{named}"
            );
        }
        // Letters without a client, and those written before letters named theirs.
        assert_eq!(
            name(key(1), 2, None, RECORD_EXT),
            "00000000000000000001-0-2.lp"
        );
        assert_eq!(
            parse_name(Path::new("00000000000000000001-0-2.lp")),
            Some((key(1), 2, None))
        );
        // What no client's name can be is no letter's.
        for stranger in [
            "1-0-2-.lp",
            "1-0-2-a b.lp",
            "1-0-2-é.lp",
            &format!("1-0-2-{}.lp", "x".repeat(MAX_FILE_KEY_BYTES + 1)),
        ] {
            assert_eq!(parse_name(Path::new(stranger)), None, "{stranger}");
        }
    }

    #[test]
    fn a_tokens_name_becomes_a_file_name_of_its_own() {
        assert_eq!(file_key("ci-runner.eu_1"), "ci-runner.eu_1");
        // A token listed without a name (`config::clients`), and the names such tokens had
        // before: their letters are still read.
        assert_eq!(file_key("token#3f9c1a2b7d40"), "token%233f9c1a2b7d40");
        assert_eq!(file_key("auth.tokens[1]"), "auth.tokens%5B1%5D");
        assert_eq!(file_key("tokens.txt:3"), "tokens.txt%3A3");
        assert_eq!(file_key("secrets/tokens.txt:4"), "secrets%2Ftokens.txt%3A4");
        assert_eq!(file_key("é"), "%C3%A9");
        // A long one (a token file deep in a tree) is cut, and told from another by its checksum.
        let deep = |n: u32| format!("/etc/metrics-consumer/{}/tokens.txt:{n}", "d/".repeat(40));
        let (a, b) = (file_key(&deep(1)), file_key(&deep(2)));
        assert_eq!(a.len(), MAX_FILE_KEY_BYTES);
        assert_ne!(a, b);
        for key in [a, b, file_key("secrets/tokens.txt:4")] {
            assert!(is_client_name(&key), "{key}");
        }
    }

    #[test]
    fn two_tokens_with_long_names_never_share_a_file_key() {
        // Two token files deep in a tree, each's first token named after where it is; their
        // names differ past the cut, and their CRC-32 is the same.
        let a = "secrets/performance-engineering/load-tests/eu-west-1/checkout-service/tokens-l98cu.txt:1";
        let b = "secrets/performance-engineering/load-tests/eu-west-1/checkout-service/tokens-pvdba.txt:1";
        assert_eq!(crc32fast::hash(a.as_bytes()), crc32fast::hash(b.as_bytes()));
        assert_ne!(file_key(a), file_key(b), "two tokens, one key");
        // Else one's refusals fill the other's share of the dead letters.
        let dir = Dir::new("dead-letters-long-names");
        let share = 2 * 4096 + 100;
        let dead = DeadLetters::open(&root(&dir), 1 << 20)
            .unwrap()
            .with_shares(HashMap::from([
                (a.to_string(), share),
                (b.to_string(), share),
            ]));
        assert_eq!(
            dead.store(key(1), Some(a), None, "m v=1 1\n", 1, "bad")
                .unwrap(),
            Kept::Kept
        );
        assert_eq!(
            dead.store(key(2), Some(b), None, "m v=1 1\n", 1, "bad")
                .unwrap(),
            Kept::Kept,
            "{b}'s first refusal is kept within its own share"
        );
    }

    #[test]
    fn one_clients_refusals_never_take_the_room_of_another() {
        let dir = Dir::new("dead-letters-shares");
        // Each small letter takes two blocks: room for two of each client's, and many in all.
        let shares = || {
            HashMap::from([
                ("greedy".to_string(), 4 * 4096 + 100),
                ("other".to_string(), 4 * 4096 + 100),
            ])
        };
        let dead = DeadLetters::open(&root(&dir), 1 << 20)
            .unwrap()
            .with_shares(shares());
        for record in 1..=2 {
            assert_eq!(
                dead.store(key(record), Some("greedy"), None, "m v=1 1\n", 1, "x")
                    .unwrap(),
                Kept::Kept
            );
        }
        // The greedy client's share is full: its next refusal is dropped, the others' kept.
        assert_eq!(
            dead.store(key(3), Some("greedy"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Dropped
        );
        assert_eq!(
            dead.store(key(4), Some("other"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Kept
        );
        // A record without a client, and a client without a share, have the bound alone.
        assert_eq!(
            dead.store(key(5), None, None, "m v=1 1\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(
            dead.store(key(6), Some("unnamed"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Kept
        );
        let usage = dead.usage();
        assert_eq!(usage.records, 5);
        // Met again (the log delivered again), a kept refusal is kept once, and costs nothing;
        // so is one kept before letters named their client.
        std::fs::rename(
            dir.path().join(DIR).join("00000000000000000005-0-1.lp"),
            dir.path().join(DIR).join("00000000000000000011-0-1.lp"),
        )
        .unwrap();
        assert_eq!(
            dead.store(key(11), Some("other"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Kept
        );
        assert!(
            !dir.path()
                .join(DIR)
                .join("00000000000000000011-0-1-other.lp")
                .exists()
        );
        assert_eq!(
            dead.store(key(1), Some("greedy"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Kept
        );
        assert_eq!(dead.usage().records, 5);
        // After a restart each client's letters are counted from their names again.
        let again = DeadLetters::open(&root(&dir), 1 << 20)
            .unwrap()
            .with_shares(shares());
        assert_eq!(
            again
                .store(key(7), Some("greedy"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Dropped
        );
        assert_eq!(
            again
                .store(key(8), Some("other"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Kept
        );
        assert_eq!(
            again
                .store(key(9), Some("other"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Dropped
        );
        let letters = list(dir.path()).unwrap();
        assert_eq!(letters.len(), 6);
        assert!(
            letters
                .iter()
                .any(|(path, _, _)| path.ends_with("00000000000000000004-0-1-other.lp"))
        );
        // A letter replayed away gives its client's room back, read from the directory again
        // while the gateway runs (as when the bound is near), or at the next start.
        for (path, _, _) in letters
            .iter()
            .filter(|(p, _, _)| p.to_string_lossy().contains("-greedy."))
        {
            remove(path).unwrap();
        }
        again.lock().last_scan -= RESCAN_EVERY;
        assert_eq!(
            again
                .store(key(10), Some("greedy"), None, "m v=1 1\n", 1, "x")
                .unwrap(),
            Kept::Kept
        );
        assert_eq!(again.lock().clients.get("greedy"), Some(&(2 * 4096)));
    }

    #[test]
    fn beyond_the_bound_refusals_are_counted_as_dropped_not_written() {
        let dir = Dir::new("dead-letters-bound");
        // Room for three letters of two blocks each, and a bit.
        let dead = DeadLetters::open(&root(&dir), 6 * 4096 + 100).unwrap();
        assert_eq!(
            dead.store(key(4), None, None, "m v=1 1\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(
            dead.store(key(5), None, None, "m v=2 2\n", 1, "x").unwrap(),
            Kept::Kept
        );
        let big = "m v=3 3\n".repeat(1000);
        assert_eq!(
            dead.store(key(6), None, None, &big, 1000, "x").unwrap(),
            Kept::Dropped
        );
        assert_eq!(
            dead.store(key(7), None, None, "m v=3 3\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(
            dead.store(key(8), None, None, "m v=4 4\n", 1, "x").unwrap(),
            Kept::Dropped
        );
        let usage = dead.usage();
        assert_eq!((usage.records, usage.bytes), (3, 6 * 4096));
        assert_eq!(list(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn a_refusal_met_again_after_a_restart_is_kept_once() {
        let dir = Dir::new("dead-letters-once");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        let (a, b) = (
            Key {
                record: 7,
                unit: 0,
                line: 0,
            },
            Key {
                record: 7,
                unit: 2,
                line: 0,
            },
        );
        // A part of a unit cut at its lines has a key of its own.
        let part = Key {
            record: 7,
            unit: 2,
            line: 40,
        };
        assert_eq!(
            parse_name(Path::new(&name(part, 3, None, "lp"))),
            Some((part, 3, None))
        );
        assert_eq!(
            dead.store(a, None, None, "m v=1 1\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(
            dead.store(b, None, None, "m v=2 2\n", 1, "x").unwrap(),
            Kept::Kept
        );
        // The log is delivered again from record 7 after a restart.
        let again = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        assert_eq!(
            again.store(a, None, None, "m v=1 1\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(
            again.store(b, None, None, "m v=2 2\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        assert_eq!((again.usage().records, again.usage().bytes), (2, 4 * 4096));
        // A file of another name is neither listed nor counted.
        fs::write(
            dir.path().join("dead-letter/00000000000000000003-2.lp"),
            "m v=0 0\n",
        )
        .unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        let counted = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        assert_eq!(counted.usage().records, 2);
    }

    #[test]
    fn a_dead_letter_directory_swapped_for_a_link_is_not_followed() {
        let dir = Dir::new("dead-letters-swapped");
        let elsewhere = Dir::new("dead-letters-elsewhere");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        let moved = dir.path().join("moved");
        fs::rename(dir.path().join("dead-letter"), &moved).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("dead-letter")).unwrap();
        let key = Key {
            record: 3,
            unit: 1,
            line: 0,
        };
        assert_eq!(
            dead.store(key, None, None, "m v=1 1\n", 1, "x").unwrap(),
            Kept::Kept
        );
        assert_eq!(
            fs::read_dir(elsewhere.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
        assert_eq!(
            fs::read_to_string(moved.join("00000000000000000003-1-1.lp")).unwrap(),
            "m v=1 1\n",
            "into the directory opened at the start"
        );
    }

    /// Targets with hostile names (quotes, newlines, '#', a NUL, U+2028, backslashes), lines
    /// that themselves begin with the target line, and letters of no target, side by side:
    /// each reads back as it was stored.
    #[test]
    fn hostile_target_names_and_mixed_letters_read_back_exactly() {
        let dir = Dir::new("targets-letters");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        let spoof = "# metrics-consumer target {\"database\":\"evil\",\"retention_policy\":\"\"}\n";
        let cases: Vec<(Option<OwnedTarget>, String)> = vec![
            (None, "m v=1 1\n".into()),
            (
                Some(OwnedTarget {
                    database: "q\"uote\n# metrics-consumer target {}\\".into(),
                    retention_policy: "r\r\n\u{2028}\0p".into(),
                }),
                format!("{spoof}m v=2 2\n"),
            ),
            (
                Some(OwnedTarget {
                    database: "#".into(),
                    retention_policy: String::new(),
                }),
                "m v=3 3".into(),
            ),
            (
                Some(OwnedTarget {
                    database: String::new(),
                    retention_policy: String::new(),
                }),
                String::new(),
            ),
            (None, "m v=5 5\nm v=6 6\n".into()),
        ];
        for (i, (target, lines)) in cases.iter().enumerate() {
            assert_eq!(
                dead.store(key(i as u64 + 1), None, target.as_ref(), lines, 1, "x")
                    .unwrap(),
                Kept::Kept
            );
        }
        let letters = list(dir.path()).unwrap();
        assert_eq!(letters.len(), cases.len());
        for ((path, _, _), (target, lines)) in letters.iter().zip(&cases) {
            let (read_target, read_lines) = read_letter(path).unwrap();
            assert_eq!(&read_target, target, "{}", path.display());
            assert_eq!(&read_lines, lines, "{}", path.display());
        }
    }

    /// A count of the directory taken while a letter is being written (a state page read
    /// meanwhile) keeps that letter counted: it was dropped from the counts, which then went
    /// below zero when its write failed (a panic with overflow checks, else 2^64 - 1 letters
    /// shown), and stayed one short when it succeeded, letting refusals pass the bound.
    #[test]
    fn a_count_taken_while_a_letter_is_written_keeps_it() {
        let dir = Dir::new("dead-letters-recount-writing");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        let len = 2 * 4096;
        for written in [false, true] {
            dead.lock().reserve(len, None);
            dead.lock().last_scan -= RESCAN_EVERY;
            let usage = dead.usage();
            assert_eq!(
                (usage.records, usage.bytes),
                (1, len),
                "counted while written"
            );
            if written {
                dead.store(key(7), None, None, "m v=1 1\n", 1, "bad")
                    .unwrap();
                // The letter stored above stands in for the one being written.
                let mut s = dead.lock();
                s.records -= 1;
                s.bytes -= len;
            }
            dead.lock().settle(len, None, written);
            dead.lock().last_scan -= RESCAN_EVERY;
            let counted = {
                let s = dead.lock();
                (s.records, s.bytes)
            };
            let usage = dead.usage();
            assert_eq!(counted, (usage.records, usage.bytes), "{written}");
            assert_eq!(usage.records, u64::from(written), "{written}");
        }
    }

    /// Letters a `replay-dead-letters` removed beside the running gateway stop being counted
    /// once the directory is counted again, at most every few seconds; a `.tmp` being written
    /// meanwhile is left alone.
    #[test]
    fn letters_removed_beside_the_gateway_stop_being_counted() {
        let dir = Dir::new("dead-letters-recount");
        let dead = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        for record in 1..=3 {
            dead.store(key(record), None, None, "m v=1 1\n", 1, "bad")
                .unwrap();
        }
        assert_eq!(dead.usage().records, 3);
        let letters = list(dir.path()).unwrap();
        remove(&letters[0].0).unwrap();
        let writing = dir.path().join("dead-letter/00000000000000000002-0-1.tmp");
        fs::write(&writing, "being written").unwrap();
        // Counted within RESCAN_EVERY: the count stands.
        assert_eq!(dead.usage().records, 3);
        dead.lock().last_scan -= RESCAN_EVERY;
        assert_eq!(
            (dead.usage().records, dead.usage().bytes),
            (2, 4 * 4096),
            "counted again"
        );
        assert!(writing.exists(), "a .tmp is removed only at the start");
        drop(dead);
        let _reopened = DeadLetters::open(&root(&dir), 1 << 20).unwrap();
        assert!(!writing.exists(), "the start removes what a crash left");
    }
}
