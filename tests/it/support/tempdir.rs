//! Temporary directories for servers' data, logs and config files: unique per test, removed
//! when the test passes and kept for inspection when it fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh directory under the system temporary directory, removed on drop.
///
/// When it is dropped while the thread panics (a failing test), the directory is
/// kept and its path printed, so server logs and spool files can be inspected.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `metrics-consumer-<prefix>-<pid>-<counter>-<nanos>`. The process id
    /// and counter keep parallel tests and test binaries apart; the timestamp
    /// keeps a rerun from colliding with a directory kept by an earlier failure.
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "metrics-consumer-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        // create_dir rather than create_dir_all: an existing directory means a
        // name collision, which must not silently share state between tests.
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test failed: kept {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
