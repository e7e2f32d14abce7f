//! Temporary directories for servers' data, logs and config files: unique per test, removed
//! when the test passes and kept for inspection when it fails (`tempfile` makes and removes
//! them; this adds the keeping).

use std::path::{Path, PathBuf};
use std::thread;

/// A fresh directory under the system temporary directory, removed on drop.
///
/// When it is dropped while the thread panics (a failing test), the directory is
/// kept and its path printed, so server logs and spool files can be inspected.
#[derive(Debug)]
pub struct TempDir(Option<tempfile::TempDir>);

impl TempDir {
    /// Creates `metrics-consumer-<prefix>-<random>` (`tempfile` picks a name nobody has, so
    /// parallel tests and a directory kept by an earlier failure never collide).
    pub fn new(prefix: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("metrics-consumer-{prefix}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        TempDir(Some(dir))
    }

    pub fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map(tempfile::TempDir::path)
            .expect("the directory lives until drop")
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path().join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && thread::panicking()
        {
            let kept = dir.keep();
            eprintln!("test failed: kept {} for inspection", kept.display());
        }
    }
}
