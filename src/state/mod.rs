//! The gateway's own state: the job table (`jobs`), its formats on disk (`journal`), what
//! the gateway knows of InfluxDB's schema (`schema`), and the series each client made in each
//! database it writes through InfluxDB's write API (`series`, with its file).
//!
//! `jobs` decides what a run is and may become (running, committing, finished, expired) and
//! does no I/O; `journal` owns the on-disk format of the table — its snapshot and its records
//! of changes — both writing and reading it.

pub mod jobs;
pub mod journal;
pub mod results;
pub mod schema;
pub mod series;
pub mod snapshots;
