//! Taking over a `storage.dir` written by version 0.1, at the first start, so that nothing that
//! waited there is lost.
//!
//! Version 0.1 kept points waiting for InfluxDB as one file per request in `spool/`, and the job
//! table's changes in `jobs.journal`. Each spool file becomes a record of the log (kind
//! "imported", in the order of its number) and, once they are all on disk, the files and the
//! folder are removed; a stop half-way imports the rest (and perhaps some again) at the next
//! start, which InfluxDB absorbs, as every point has its timestamp. `jobs.journal` is read by
//! `state::journal` and removed once a snapshot holds it. Dead letters kept the same format.

use std::fs;
use std::io;
use std::path::Path;

use uuid::Uuid;

use super::log::{Log, LogError};
use super::record::{Kind, Unit};
use super::{read_if_exists, sync_dir};

/// Bytes imported before waiting for them to be on disk, so the queue stays small.
const IMPORT_STEP_BYTES: usize = 16 << 20;

/// Moves the 0.1 spool of `storage_dir` into the log; returns the records and points moved.
pub fn import_spool(storage_dir: &Path, log: &Log) -> Result<(usize, u64), LogError> {
    let dir = storage_dir.join("spool");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_error("list", &dir, e)),
    };
    let mut files: Vec<(u64, u64, std::path::PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_error("list", &dir, e))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parsed = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split_once('-'))
            .and_then(|(n, p)| Some((n.parse::<u64>().ok()?, p.parse::<u64>().ok()?)));
        match (ext, parsed) {
            ("lp", Some((n, points))) => files.push((n, points, path)),
            // An unfinished write of 0.1: never acknowledged.
            ("tmp", _) => {}
            _ => log::warn!(
                "{}: not a spool record of version 0.1; left where it is",
                path.display()
            ),
        }
    }
    files.sort();
    let (mut records, mut points_moved) = (0, 0);
    let mut queued = 0usize;
    let mut last = None;
    for (_, points, path) in &files {
        let bytes = read_if_exists(path)
            .map_err(|e| io_error("read", path, e))?
            .unwrap_or_default();
        let mut lines = String::from_utf8_lossy(&bytes).into_owned();
        if !lines.is_empty() && !lines.ends_with('\n') {
            lines.push('\n');
        }
        let unit = Unit {
            run: Uuid::nil(),
            points: *points as u32,
            lines: &lines,
        };
        last = Some(log.append(Kind::Imported, 0, b"", &[unit])?);
        queued += lines.len();
        records += 1;
        points_moved += points;
        if queued >= IMPORT_STEP_BYTES
            && let Some(ticket) = last.take()
        {
            log.wait(ticket)?;
            queued = 0;
        }
    }
    if let Some(ticket) = last {
        log.wait(ticket)?;
    }
    for (_, _, path) in &files {
        fs::remove_file(path).map_err(|e| io_error("remove", path, e))?;
    }
    // Leftover temporary files of 0.1 go too; the folder goes once it is empty.
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    if fs::remove_dir(&dir).is_ok() {
        let _ = sync_dir(storage_dir);
    }
    Ok((records, points_moved))
}

fn io_error(doing: &'static str, path: &Path, e: io::Error) -> LogError {
    LogError::Io {
        doing,
        path: path.to_path_buf(),
        error: std::sync::Arc::new(e),
    }
}
