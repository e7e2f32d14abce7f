//! The gateway's own state: the job table (`jobs`) and its journal on disk (`journal`).
//!
//! `jobs` decides what a run is and may become (running, committing, finished, expired) and
//! does no I/O; `journal` owns the on-disk format of the table — its snapshot and its records
//! of changes — both writing and reading it.

pub mod jobs;
pub mod journal;
