//! The gateway's own state: the job table (`jobs`), its formats on disk (`journal`), and what
//! the gateway knows of InfluxDB's schema (`schema`).
//!
//! `jobs` decides what a run is and may become (running, committing, finished, expired) and
//! does no I/O; `journal` owns the on-disk format of the table — its snapshot and its records
//! of changes — both writing and reading it.

pub mod jobs;
pub mod journal;
pub mod schema;
pub mod snapshots;
