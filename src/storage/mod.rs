//! The files under `storage.dir`: how every one of them is opened, written and locked.
//!
//! ```text
//! storage.dir/
//!   lock                       the pid of the one process using the directory (which holds a
//!                              flock on the directory itself, not on this file)
//!   log/<first seq>.log        the log: every accepted request, in order (see `log`)
//!   log/delivered              how far InfluxDB has taken the log
//!   jobs.json                  a snapshot of the job table
//!   reserve                    blocks allocated to keep room for the next snapshot on a full disk
//!   series                     the series budget: each client's distinct series per database
//!                              (`state::series`, written through the handle of storage.dir)
//!   results/<uuid>.json        the result of a committed run, for baselines and reports
//!                              (`state::results`)
//!   dead-letter/<seq>-<points>.lp, .error   what InfluxDB refused, and why
//!   dead-letter/lock           held by `replay-dead-letters` while it runs
//! ```
//!
//! Nothing here follows a symbolic link. `storage.dir`, `log/` and `dead-letter/` are opened
//! once at the start ([`DirHandle`]), and every file under them is opened, created, renamed,
//! removed and synced relative to those handles (`openat` and its kin, with `O_NOFOLLOW`), never
//! by path: a directory moved away and replaced by a link while the gateway runs is not
//! followed, and the gateway says so once. Temporary files are created with `O_EXCL` after
//! removing any leftover (removing a link removes the link), and [`check_tree`] refuses a start
//! where anything in the tree is not a plain file or directory. `storage.dir` itself may be a
//! link, set up by the operator. A file is written whole or not at all
//! ([`DirHandle::write_atomic`]: temporary name, fsync, rename, directory fsync). The functions
//! taking a path are for the start's checks ([`ensure_dir`], [`check_tree`]) and for
//! `replay-dead-letters`, a command that runs and ends.

pub mod dead_letters;
pub mod log;
pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Opens an existing file for reading without following a link at its name.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates `path` anew: an old file or link of that name is removed first, and the new file is
/// created exclusively (`O_EXCL`), so nothing is written through a link an attacker left there.
pub fn create_new(path: &Path) -> io::Result<File> {
    remove_if_exists(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path` so that it is whole or absent after a crash: to `<path>.tmp`
/// (created exclusively), fsync'd, renamed over `path`, and the directory fsync'd.
/// A temporary file that fails half-written is removed, so a full disk is not kept full by it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = create_new(&tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        drop(file);
        let _ = remove_if_exists(&tmp);
        return Err(e);
    }
    drop(file);
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The file that keeps room on the disk for the next snapshot of the job table.
pub const RESERVE_FILE: &str = "reserve";

/// Writes the snapshot `bytes` to `name` in `dir` with [`DirHandle::write_atomic`], even on a
/// full disk: the file [`RESERVE_FILE`] beside it holds allocated blocks, at least the size of the
/// next snapshot ([`keep_reserve`] grows it as the table grows), and is emptied when the disk
/// has no room left for the write, which is then tried again. The snapshot is what lets the log
/// delete delivered segments, so a disk filled by the log while InfluxDB was away is freed
/// without a person, once InfluxDB has the log. After a snapshot written without it, the
/// reserve grows back to `bytes` and a half, plus 1 MiB (for the table growing until the next
/// snapshot, and the delivered mark): from room the disk has, never its last bytes. Only a
/// snapshot that lets segments go may take the reserve (`use_reserve`): one taken while
/// InfluxDB is away would leave none for the one that frees the disk.
///
/// Returns the reserve's size in bytes after the write (0 when it was used).
pub fn write_reserved(
    dir: &DirHandle,
    name: &str,
    bytes: &[u8],
    use_reserve: bool,
) -> io::Result<u64> {
    match dir.write_atomic(name, bytes) {
        Ok(()) => {
            let target = reserve_for(bytes.len() as u64);
            match grow_reserve(dir, target) {
                Ok(len) => Ok(len),
                Err(e) => {
                    ::log::warn!(
                        "cannot keep {target} bytes in {} for the next snapshot: {e}",
                        dir.join(RESERVE_FILE).display()
                    );
                    Ok(reserve_len(dir))
                }
            }
        }
        Err(e) if use_reserve && is_disk_full(&e) => {
            let released = dir
                .open_rw(RESERVE_FILE)
                .and_then(|file| {
                    let had = file.metadata()?.len();
                    file.set_len(0)?;
                    file.sync_all()?;
                    Ok(had)
                })
                .unwrap_or(0);
            if released == 0 {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; the room kept for it ({RESERVE_FILE}) is used up: free at least {} bytes under {}",
                        bytes.len(),
                        dir.path().display()
                    ),
                ));
            }
            ::log::warn!(
                "the disk under {} is full: {released} bytes kept for this snapshot are used for it",
                dir.path().display()
            );
            dir.write_atomic(name, bytes).map(|()| 0)
        }
        Err(e) => Err(e),
    }
}

/// Room kept beyond the next snapshot itself: the delivered mark's temporary file and the
/// blocks a filesystem rounds each file up to.
pub const RESERVE_SLACK: u64 = 64 << 10;

/// What the reserve is grown to for a snapshot of `snapshot` bytes: one and a half times it,
/// plus 1 MiB, so that it is not grown again at every register.
fn reserve_for(snapshot: u64) -> u64 {
    snapshot + snapshot / 2 + (1 << 20)
}

/// Makes sure the reserve holds at least `needed` bytes (the next snapshot's size, estimated by
/// the caller, plus [`RESERVE_SLACK`]), given that it holds `has`: grows it to
/// [`reserve_for`] `needed` when the disk has the room, else to `needed` exactly. Returns its
/// size; an error (the disk is full) means the next snapshot might not fit, and what would make
/// the table grow must be refused.
pub fn keep_reserve(dir: &DirHandle, has: u64, needed: u64) -> io::Result<u64> {
    if has >= needed {
        return Ok(has);
    }
    grow_reserve(dir, reserve_for(needed)).or_else(|_| grow_reserve(dir, needed))
}

/// The reserve's size in bytes (0 when it is missing or cannot be looked at).
pub fn reserve_len(dir: &DirHandle) -> u64 {
    dir.open_read(RESERVE_FILE)
        .and_then(|f| f.metadata())
        .map_or(0, |m| m.len())
}

/// True when `e` says the disk (or the user's quota on it) has no room left.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// Grows the reserve to `target` bytes allocated on the disk (a hole would take no room), and
/// returns its size. One that cannot grow all the way is cut back to what it was: it never
/// takes the disk's last bytes.
///
/// Errors: the file cannot be opened, looked at or grown; [`is_disk_full`] when the disk (or
/// the user's quota) has no room for `target` bytes.
fn grow_reserve(dir: &DirHandle, target: u64) -> io::Result<u64> {
    let file = dir.open_rw(RESERVE_FILE)?;
    grow_allocated(&file, target, allocate)
}

/// Allocates bytes `at..at + len` of `file` with `fallocate` (mode 0: real blocks, not a hole;
/// the size grows with them) without writing them.
fn allocate(file: &File, at: u64, len: u64) -> io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), at, len).map_err(Into::into)
}

/// [`grow_reserve`] on an open `file`, allocating with `allocate` (`fallocate`: a few metadata
/// changes, however large the growth). Where the filesystem cannot allocate that way
/// (`EOPNOTSUPP`, `ENOSYS`) the bytes are written as zeros instead. Then `file` is synced.
fn grow_allocated(
    file: &File,
    target: u64,
    allocate: impl Fn(&File, u64, u64) -> io::Result<()>,
) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let had = file.metadata()?.len();
    if had >= target {
        if had > 2 * target {
            file.set_len(target)?;
            return Ok(target);
        }
        return Ok(had);
    }
    let grown = (|| {
        match allocate(file, had, target - had) {
            Err(e) if cannot_allocate(&e) => {
                let mut at = had;
                while at < target {
                    let n = (target - at).min(ZEROS.len() as u64);
                    file.write_all_at(&ZEROS[..n as usize], at)?;
                    at += n;
                }
            }
            other => other?,
        }
        file.sync_all()
    })();
    if let Err(e) = grown {
        let _ = file.set_len(had).and_then(|()| file.sync_all());
        return Err(e);
    }
    Ok(target)
}

/// True when `e` says the filesystem cannot allocate a file's blocks without writing them.
fn cannot_allocate(e: &io::Error) -> bool {
    let unsupported = [rustix::io::Errno::OPNOTSUPP, rustix::io::Errno::NOSYS];
    e.raw_os_error()
        .is_some_and(|code| unsupported.iter().any(|u| u.raw_os_error() == code))
}

/// A line that may repeat (the same failure every tick) logged at once the first time, then at
/// most once a minute, saying how many times it was held back in between, under the log target
/// of the part that failed ([`Repeats::new`]).
#[derive(Debug)]
pub struct Repeats {
    /// When a line was last let through, and how many were held back since.
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    /// The log target the lines go under: the module of the part they are about.
    target: &'static str,
}

impl Repeats {
    /// Lines logged under `target` (the caller's `module_path!()`), as its own lines are.
    pub fn new(target: &'static str) -> Repeats {
        Repeats {
            last: std::sync::Mutex::new(None),
            target,
        }
    }

    /// How long a line is held back after the last one let through.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Whether a line may be logged at `now`: `Some(n)` with the number of lines held back
    /// since the last one, or `None` (the line is counted and held back).
    pub fn admit(&self, now: std::time::Instant) -> Option<u64> {
        let mut last = crate::sync::lock(&self.last);
        match *last {
            Some((at, ref mut held)) if now.saturating_duration_since(at) < Self::EVERY => {
                *held += 1;
                None
            }
            Some((_, held)) => {
                *last = Some((now, 0));
                Some(held)
            }
            None => {
                *last = Some((now, 0));
                Some(0)
            }
        }
    }

    /// Logs `line` at error level when [`Repeats::admit`] lets it through now, with the count
    /// of the lines held back.
    pub fn error(&self, line: &dyn std::fmt::Display) {
        self.log(::log::Level::Error, line);
    }

    /// Logs `line` at `level` when [`Repeats::admit`] lets it through now, with the count of
    /// the lines held back.
    pub fn log(&self, level: ::log::Level, line: &dyn std::fmt::Display) {
        match self.admit(std::time::Instant::now()) {
            Some(0) => ::log::log!(target: self.target, level, "{line}"),
            Some(held) => ::log::log!(
                target: self.target,
                level,
                "{line} (and {held} more times since the last time logged; this line is logged at most once every {} s)",
                Self::EVERY.as_secs()
            ),
            None => {}
        }
    }

    /// Forgets the repeats: the next line is logged at once (the failure was over).
    pub fn reset(&self) {
        *crate::sync::lock(&self.last) = None;
    }
}

/// Makes the entries of `dir` (new, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a whole file without following a link; `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    read_opened(open_read(path))
}

/// The whole of a file just opened; `None` when the opening found no such file.
fn read_opened(opened: io::Result<File>) -> io::Result<Option<Vec<u8>>> {
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Removes a file (a link itself, never what it points to); a file already gone is no error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A directory under `storage.dir` (or `storage.dir` itself) opened once at start
/// (`O_DIRECTORY`, and `O_NOFOLLOW` below `storage.dir`): files in it are opened, created,
/// renamed, removed and synced relative to this handle (`openat`, `renameat`, `unlinkat`, all
/// with `O_NOFOLLOW`), never by path, so a directory moved away and replaced by a link while the
/// gateway runs is not followed: the files go on into the directory opened at the start,
/// wherever it now is, and the gateway says so once, at error level.
#[derive(Debug)]
pub struct DirHandle {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
    /// `storage.dir` itself may be a link set up by the operator: its place is checked through
    /// it.
    follows: bool,
    warned: std::sync::atomic::AtomicBool,
}

/// An entry of a directory listed through its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// A plain file (not a link, directory or anything else).
    pub is_file: bool,
    /// Its length in bytes (0 for what is not a plain file).
    pub len: u64,
}

fn no_entry(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOENT
}

impl DirHandle {
    /// Opens `path`, which must be a directory and not a link.
    pub fn open(path: &Path) -> io::Result<DirHandle> {
        DirHandle::open_with(path, false)
    }

    /// Opens `storage.dir` itself, which must be a directory, and may be a link the operator
    /// set up (what is under it may not).
    pub fn open_root(path: &Path) -> io::Result<DirHandle> {
        DirHandle::open_with(path, true)
    }

    fn open_with(path: &Path, follows: bool) -> io::Result<DirHandle> {
        use rustix::fs::{Mode, OFlags};
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !follows {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(DirHandle {
            fd,
            path: path.to_path_buf(),
            follows,
            warned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Opens the directory `name` in this one, making it first when missing; a link or a file
    /// of that name is refused (`ELOOP`, `ENOTDIR`).
    pub fn subdir(&self, name: &str) -> io::Result<DirHandle> {
        use rustix::fs::{Mode, OFlags};
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => rustix::fs::fsync(&self.fd)?,
            Err(e) if e == rustix::io::Errno::EXIST => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirHandle {
            fd,
            path: self.path.join(name),
            follows: false,
            warned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The path the directory was opened at: for messages only, never to open anything.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name`'s path in the directory, for messages only.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether `name` exists in the directory (a link counts, and is not followed).
    pub fn exists(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    fn open_at(&self, name: &str, flags: rustix::fs::OFlags) -> io::Result<File> {
        use rustix::fs::{Mode, OFlags};
        self.check_in_place();
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Opens the existing file `name` for reading.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open_at(name, rustix::fs::OFlags::RDONLY)
    }

    /// Opens the file `name`, which must exist, for reading and writing, without truncating it.
    pub fn open_existing_rw(&self, name: &str) -> io::Result<File> {
        self.open_at(name, rustix::fs::OFlags::RDWR)
    }

    /// Opens (creating it when missing) the file `name` for reading and writing, without
    /// truncating it.
    pub fn open_rw(&self, name: &str) -> io::Result<File> {
        use rustix::fs::OFlags;
        self.open_at(name, OFlags::RDWR | OFlags::CREATE)
    }

    /// Creates `name` anew: an old file or link of that name is removed first, and the new one
    /// is created exclusively (`O_EXCL`), so nothing is written through a link left there.
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        use rustix::fs::OFlags;
        self.remove_if_exists(name)?;
        self.open_at(name, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL)
    }

    /// Reads the whole file `name`; `None` when it does not exist.
    pub fn read_if_exists(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        read_opened(self.open_read(name))
    }

    /// Removes the file `name` (a link itself, never what it points to); one already gone is no
    /// error.
    pub fn remove_if_exists(&self, name: &str) -> io::Result<()> {
        self.check_in_place();
        match rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty()) {
            Err(e) if !no_entry(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Makes the directory's entries (new, renamed or removed files) durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(Into::into)
    }

    /// The directory's entries (without `.` and `..`), in no order.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        self.check_in_place();
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let stat = rustix::fs::statat(
                &self.fd,
                name.as_str(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
            let (is_file, len) = match stat {
                Ok(st) => {
                    let is_file = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
                    (is_file, if is_file { st.st_size as u64 } else { 0 })
                }
                // Removed between the listing and the look.
                Err(e) if no_entry(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            out.push(Entry { name, is_file, len });
        }
        Ok(out)
    }

    /// Writes `bytes` to `name` whole or not at all: to `<name>.tmp` (a leftover removed first,
    /// then created with `O_EXCL`), fsync'd, renamed over `name`, and the directory fsync'd.
    /// A temporary file that fails half-written is removed, so a full disk is not kept full by
    /// it.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{name}.tmp");
        let mut file = self.create_new(&tmp)?;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| {
                rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(Into::into)
            });
        drop(file);
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), rustix::fs::AtFlags::empty());
            return Err(e);
        }
        self.sync()
    }

    /// Says once, at error level, when the directory at its path is no longer the one opened at
    /// the start (moved away, or replaced by a link).
    fn check_in_place(&self) {
        use std::os::unix::fs::MetadataExt;
        if self.warned.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Ok(held) = rustix::fs::fstat(&self.fd) else {
            return;
        };
        let now = if self.follows {
            fs::metadata(&self.path)
        } else {
            fs::symlink_metadata(&self.path)
        };
        let same = now.is_ok_and(|m| m.dev() == held.st_dev && m.ino() == held.st_ino);
        if !same && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            ::log::error!(
                "{} is no longer the directory the gateway opened at the start (moved away, or replaced by a link): nothing is written through what is there now, files go on into the directory opened at the start, wherever it was moved; put it back before the next start",
                self.path.display()
            );
        }
    }
}

/// Why `storage.dir` cannot be used.
#[derive(Debug)]
pub enum StorageError {
    /// Another process holds the lock.
    InUse { dir: PathBuf, pid: Option<u32> },
    /// Something in the tree is not a plain file or directory.
    NotRegular { path: PathBuf, what: &'static str },
    /// A file or directory could not be made, opened or read.
    Io {
        doing: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl StorageError {
    pub fn io(doing: &'static str, path: &Path, error: io::Error) -> StorageError {
        StorageError::Io {
            doing,
            path: path.to_path_buf(),
            error,
        }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::InUse { dir, pid } => {
                write!(
                    f,
                    "storage.dir {} is in use by another metrics-consumer",
                    dir.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str(
                    "; stop it, or give this one a storage.dir of its own: two gateways in one directory would overwrite each other's job table",
                )
            }
            StorageError::NotRegular { path, what } => write!(
                f,
                "{} is {what}, not a plain file or directory; the gateway follows no links inside storage.dir: move it away",
                path.display()
            ),
            StorageError::Io { doing, path, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for StorageError {}

/// An exclusive lock on a directory, held while this value lives (the kernel lets it go when
/// the process ends, however it ends).
///
/// The lock is a `flock` on the directory itself, opened with `O_DIRECTORY`: a directory cannot
/// be removed while it holds files, so nobody can take the lock away from a running process by
/// deleting a file. The file `name` beside it only carries the holder's pid, for the message a
/// second process gives; when it is gone, that pid is looked up in `/proc/locks`.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Locks the directory of `dir` without waiting (through a new open of the same directory,
    /// `openat(dir, ".")`: the one opened at the start, wherever it is now), and writes this
    /// process's pid into its file `name`. When another process holds it, the error names that
    /// process's pid when it can be found.
    pub fn take(dir: &DirHandle, name: &str) -> Result<DirLock, StorageError> {
        use rustix::fs::{Mode, OFlags};
        let handle = rustix::fs::openat(
            &dir.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| StorageError::io("open", dir.path(), e.into()))?;
        match handle.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = dir
                    .read_if_exists(name)
                    .ok()
                    .flatten()
                    .and_then(|text| String::from_utf8_lossy(&text).trim().parse().ok())
                    .or_else(|| flock_holder(&handle));
                return Err(StorageError::InUse {
                    dir: dir.path().to_path_buf(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(StorageError::io("lock", dir.path(), e));
            }
        }
        // The pid is for the message above, read by the next process that tries; it is not
        // what holds the lock, so a failure to write it is no reason to stop.
        if let Ok(mut file) = dir.open_rw(name) {
            let _ = file.set_len(0);
            let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        }
        Ok(DirLock { _dir: handle })
    }
}

/// The pid of the process holding a `flock` on `file`, from `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF`, major and minor in hex).
fn flock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        // A lock someone waits for is listed with "->" before its kind.
        if words.get(1) == Some(&"FLOCK") && words.get(5) == Some(&id.as_str()) {
            words.get(4)?.parse().ok()
        } else {
            None
        }
    })
}

/// Makes `dir` (and its parents) when missing; refuses one that is a link or not a directory.
pub fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => Err(StorageError::NotRegular {
            path: dir.to_path_buf(),
            what: describe(&meta.file_type()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Only the gateway's user reads what clients sent (the umask may take more away).
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(dir)
                .map_err(|e| StorageError::io("create", dir, e))
        }
        Err(e) => Err(StorageError::io("look at", dir, e)),
    }
}

/// Checks that every entry of `dir`, and of its subdirectories, is a plain file or directory.
/// `storage.dir` itself may be a link; nothing inside it may.
pub fn check_tree(dir: &Path) -> Result<(), StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| StorageError::io("look at", &path, e))?;
        if kind.is_dir() {
            check_tree(&path)?;
        } else if !kind.is_file() {
            return Err(StorageError::NotRegular {
                path,
                what: describe(&kind),
            });
        }
    }
    Ok(())
}

fn describe(kind: &fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_file() {
        "a file"
    } else {
        "not a directory"
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A test's directory: a temporary one of its own (`tempfile`'s, removed when dropped),
    /// or one it is given, which outlives it (a directory on a test's own tmpfs, read again by
    /// the next start of a restart).
    pub struct Dir {
        path: PathBuf,
        _temp: Option<tempfile::TempDir>,
    }

    impl Dir {
        /// A fresh temporary directory, `name` in its name to tell whose it is.
        pub fn new(name: &str) -> Dir {
            let temp = tempfile::Builder::new()
                .prefix(&format!("mc-storage-{name}-"))
                .tempdir()
                .expect("create the test directory");
            Dir {
                path: temp.path().to_path_buf(),
                _temp: Some(temp),
            }
        }

        /// The directory at `path`, left in place when dropped.
        pub fn at(path: &Path) -> Dir {
            Dir {
                path: path.to_path_buf(),
                _temp: None,
            }
        }

        pub fn path(&self) -> &Path {
            &self.path
        }
    }

    /// The handle of `dir` as a start opens `storage.dir`.
    pub fn root(dir: &Dir) -> DirHandle {
        DirHandle::open_root(dir.path()).unwrap()
    }

    /// The handle of `path` as a start opens `storage.dir`.
    pub fn root_at(path: &Path) -> DirHandle {
        DirHandle::open_root(path).unwrap()
    }

    /// The handle of `path/log`, made when missing, as a start opens the log's directory.
    pub fn log_dir(path: &Path) -> DirHandle {
        root_at(path).subdir("log").unwrap()
    }

    #[test]
    fn write_atomic_replaces_whole_files_and_never_writes_through_a_link() {
        let dir = Dir::new("atomic");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "precious").unwrap();
        let file = dir.path().join("jobs.json");
        // An attacker's link at the temporary name, and at the name itself.
        symlink(&target, dir.path().join("jobs.tmp")).unwrap();
        write_atomic(&file, b"one").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"one");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        fs::remove_file(&file).unwrap();
        symlink(&target, &file).unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(
            fs::symlink_metadata(&file).unwrap().is_file(),
            "the link itself was replaced"
        );
        // Reading does not follow a link either.
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        assert!(read_if_exists(&link).is_err());
        assert_eq!(read_if_exists(&dir.path().join("nothing")).unwrap(), None);
    }

    #[test]
    fn the_tree_may_hold_only_plain_files_and_directories() {
        let dir = Dir::new("tree");
        fs::create_dir_all(dir.path().join("log")).unwrap();
        fs::write(dir.path().join("log/1.log"), "").unwrap();
        check_tree(dir.path()).unwrap();
        symlink("/etc/passwd", dir.path().join("log/2.log")).unwrap();
        let err = check_tree(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("log/2.log is a symbolic link") && err.contains("move it away"),
            "{err}"
        );
        let file_dir = dir.path().join("file");
        fs::write(&file_dir, "").unwrap();
        assert!(ensure_dir(&file_dir).is_err());
        ensure_dir(&dir.path().join("a/b")).unwrap();
    }

    /// A tmpfs of `size` (`mount -o size=`) at a fresh directory, unmounted when dropped. Only
    /// root may mount: the test fails saying so otherwise.
    pub struct SmallDisk(pub Dir);

    impl SmallDisk {
        pub fn new(name: &str, size: &str) -> SmallDisk {
            let dir = Dir::new(name);
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status();
            assert!(
                mounted.is_ok_and(|s| s.success()),
                "this test mounts a small tmpfs to fill the disk: run it as root (with `mount`)"
            );
            SmallDisk(dir)
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    /// Fills the disk under `dir` to its last byte.
    pub fn fill(dir: &Path) {
        let mut filler = create_new(&dir.join("filler")).unwrap();
        let chunk = vec![1u8; 4096];
        while filler.write_all(&chunk).is_ok() {}
        while filler.write_all(&chunk[..1]).is_ok() {}
    }

    #[test]
    fn a_snapshot_is_written_on_a_full_disk_from_the_room_kept_for_it() {
        let disk = SmallDisk::new("reserve", "5m");
        let root = root(&disk.0);
        let path = disk.0.path().join("jobs.json");
        let snapshot = vec![b'x'; 1 << 20];
        write_reserved(&root, "jobs.json", &snapshot, true).unwrap();
        let reserve = disk.0.path().join(RESERVE_FILE);
        assert_eq!(
            fs::metadata(&reserve).unwrap().len(),
            (1 << 20) + (1 << 19) + (1 << 20)
        );
        fill(disk.0.path());
        let bigger = vec![b'y'; (1 << 20) + 100_000];
        assert!(
            root.write_atomic("jobs.json", &bigger).is_err(),
            "the disk is full"
        );
        assert!(
            !disk.0.path().join("jobs.json.tmp").exists(),
            "a half-written temporary file is removed"
        );
        assert!(
            write_reserved(&root, "jobs.json", &bigger, false).is_err(),
            "a snapshot that frees nothing leaves the reserve alone"
        );
        write_reserved(&root, "jobs.json", &bigger, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), bigger);
        assert_eq!(fs::metadata(&reserve).unwrap().len(), 0, "used");
        // With room again, the next snapshot keeps room for the one after.
        fs::remove_file(disk.0.path().join("filler")).unwrap();
        write_reserved(&root, "jobs.json", &snapshot, false).unwrap();
        assert!(fs::metadata(&reserve).unwrap().len() > 1 << 20);
    }

    #[test]
    fn the_reserve_grows_ahead_of_the_table_or_says_the_disk_is_full() {
        let disk = SmallDisk::new("keep-reserve", "4m");
        let root = root(&disk.0);
        let reserve = disk.0.path().join(RESERVE_FILE);
        assert_eq!(keep_reserve(&root, 0, 1 << 20).unwrap(), (5 << 19) as u64);
        assert_eq!(fs::metadata(&reserve).unwrap().len(), 5 << 19, "allocated");
        assert_eq!(
            keep_reserve(&root, 5 << 19, 2 << 20).unwrap(),
            5 << 19,
            "large enough"
        );
        fill(disk.0.path());
        let err = keep_reserve(&root, 5 << 19, 3 << 20).unwrap_err();
        assert!(is_disk_full(&err), "{err}");
        assert_eq!(
            fs::metadata(&reserve).unwrap().len(),
            5 << 19,
            "a growth that did not fit is cut back"
        );
        assert_eq!(reserve_len(&root), 5 << 19);
    }

    /// Bytes the calling thread has handed to `write` and its kin so far (`wchar` of
    /// `/proc/thread-self/io`).
    fn written_by_this_thread() -> u64 {
        let io = fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_reserve_is_allocated_on_the_disk_without_writing_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = Dir::new("reserve-allocated");
        let root = root(&dir);
        let reserve = dir.path().join(RESERVE_FILE);
        let before = written_by_this_thread();
        let len = keep_reserve(&root, 0, 8 << 20).unwrap();
        let written = written_by_this_thread() - before;
        assert_eq!(len, reserve_for(8 << 20));
        let meta = fs::metadata(&reserve).unwrap();
        assert_eq!(meta.len(), len);
        assert!(
            meta.blocks() * 512 >= len,
            "{} bytes of blocks for {len} bytes: a hole keeps no room",
            meta.blocks() * 512
        );
        // Grown again, from what it holds.
        let grown = keep_reserve(&root, len, 16 << 20).unwrap();
        let meta = fs::metadata(&reserve).unwrap();
        assert!(meta.len() == grown && meta.blocks() * 512 >= grown);
        let probe = create_new(&dir.path().join("probe")).unwrap();
        match allocate(&probe, 0, 4096) {
            Ok(()) => assert!(
                written < 1 << 20,
                "{written} bytes written to grow the reserve by {len}"
            ),
            Err(e) if cannot_allocate(&e) => {
                eprintln!(
                    "{}: no fallocate here ({e}), zeros written",
                    dir.path().display()
                );
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_filesystem_that_cannot_allocate_gets_zeros_written() {
        use std::os::unix::fs::MetadataExt;
        let dir = Dir::new("reserve-zeros");
        let file = root(&dir).open_rw(RESERVE_FILE).unwrap();
        for errno in [rustix::io::Errno::OPNOTSUPP, rustix::io::Errno::NOSYS] {
            file.set_len(0).unwrap();
            let unsupported = |_: &File, _: u64, _: u64| Err(io::Error::from(errno));
            assert_eq!(
                grow_allocated(&file, 200_000, unsupported).unwrap(),
                200_000
            );
            let meta = file.metadata().unwrap();
            assert!(meta.len() == 200_000 && meta.blocks() * 512 >= 200_000);
            let bytes = fs::read(dir.path().join(RESERVE_FILE)).unwrap();
            assert!(bytes.iter().all(|&b| b == 0), "zeros");
        }
        // Any other failure is the growth's: it is cut back, and a full disk says so.
        let full = |f: &File, at: u64, len: u64| {
            f.set_len(at + len / 2)?;
            Err(io::Error::from(rustix::io::Errno::NOSPC))
        };
        let err = grow_allocated(&file, 400_000, full).unwrap_err();
        assert!(is_disk_full(&err), "{err}");
        assert_eq!(file.metadata().unwrap().len(), 200_000, "cut back");
        let failing = |_: &File, _: u64, _: u64| Err(io::Error::from(rustix::io::Errno::IO));
        assert!(
            grow_allocated(&file, 400_000, failing).is_err(),
            "no zeros written"
        );
        assert_eq!(file.metadata().unwrap().len(), 200_000);
    }

    #[test]
    fn a_repeated_line_is_logged_at_once_then_once_a_minute_with_its_count() {
        let repeats = Repeats::new(module_path!());
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        assert_eq!(repeats.admit(at(0)), Some(0), "the first at once");
        for s in 1..60 {
            assert_eq!(repeats.admit(at(s)), None, "held back at {s} s");
        }
        assert_eq!(
            repeats.admit(at(60)),
            Some(59),
            "a minute later, with the count"
        );
        assert_eq!(repeats.admit(at(61)), None);
        repeats.reset();
        assert_eq!(
            repeats.admit(at(62)),
            Some(0),
            "a new failure after a success"
        );
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = Dir::new("lock");
        let held = DirLock::take(&root(&dir), "lock").unwrap();
        let err = DirLock::take(&root(&dir), "lock").unwrap_err();
        assert!(
            matches!(err, StorageError::InUse { pid: Some(p), .. } if p == std::process::id()),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("is in use by another metrics-consumer (pid ")
        );
        drop(held);
        DirLock::take(&root(&dir), "lock").unwrap();
    }

    #[test]
    fn removing_the_lock_file_does_not_let_a_second_holder_in() {
        let dir = Dir::new("lock-removed");
        let _held = DirLock::take(&root(&dir), "lock").unwrap();
        fs::remove_file(dir.path().join("lock")).unwrap();
        let err = DirLock::take(&root(&dir), "lock").unwrap_err();
        assert!(
            matches!(err, StorageError::InUse { pid: Some(p), .. } if p == std::process::id()),
            "the holder is found in /proc/locks: {err}"
        );
    }
}
