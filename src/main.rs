//! metrics-consumer: a small, secure HTTP gateway that records load-test runs into InfluxDB.
//!
//! This file is the command line and the wiring: it reads the configuration, starts logging,
//! binds the listener, starts the heartbeat thread, tells systemd it is ready (`notify`), and
//! serves until SIGTERM or SIGINT.
//! Everything else lives in one module per concern (see ARCHITECTURE.md).

#![deny(unsafe_code)]
// Code that runs in the service must not panic on a value it did not expect: it says why
// instead (tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod auth;
mod check_influxdb;
mod code;
mod config;
mod delivery;
#[cfg(test)]
mod doc_tables;
mod http;
mod ingest;
mod logtext;
mod malloc;
mod notify;
mod replay;
mod service;
mod state;
mod stats;
mod storage;
mod sync;
mod verdict;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::App;
use crate::config::{ConfigError, Overrides};
use crate::delivery::sink::Sink;
use crate::delivery::{Delivery, WriteLimits};
use crate::ingest::payload;
use crate::service::{Rules, SchemaRefresh, Service};
use crate::state::jobs::Bounds;
use crate::state::schema::Schema;
use crate::state::series::{SeriesBudget, SeriesError};
use crate::state::snapshots::{JournalError, Snapshots};
use crate::storage::dead_letters::{self, DeadLetters};
use crate::storage::log::{Log, OpenError};
use crate::storage::{DirHandle, DirLock, StorageError};

const HELP: &str = "\
metrics-consumer: records load-test runs into InfluxDB over a small, secure HTTP API

USAGE:
    metrics-consumer [OPTIONS]                         run the service
    metrics-consumer replay-dead-letters [--config PATH]
                                                       send the dead letters to InfluxDB again,
                                                       after fixing what made InfluxDB refuse them;
                                                       exit 0 when all were delivered, 1 when
                                                       InfluxDB refused some again, 3 when it
                                                       could not take writes (stopped there,
                                                       nothing changed), 4 when a letter could
                                                       not be read or removed, 2 for a bad
                                                       configuration

OPTIONS:
    --config PATH       configuration file (default: ./consumer.toml; all keys have defaults)
    --listen ADDR       listen address, e.g. 127.0.0.1:3000 (overrides server.listen)
    --log-level LEVEL   off, error, warn, info, debug or trace (overrides log.level)
    --check-config      check the configuration, print it with secrets redacted, and exit
                        (offline: InfluxDB is not contacted)
    --check-influxdb    check the configuration, then contact InfluxDB: does it answer, may
                        the credentials write to the database or bucket (an empty write,
                        nothing stored), its retention, the uuid tag's values (v1); exit 0
                        when writes can work, 3 with the reason when not, 2 for a bad
                        configuration
    --repair            start even though a record inside the log under storage.dir is
                        damaged: drop it (and say which) and keep the records around it
    -V, --version       print the version and exit
    -h, --help          print this help and exit

ENVIRONMENT:
    Every key of the configuration file has a variable CONSUMER_<SECTION>_<KEY>, e.g.
    CONSUMER_SERVER_LISTEN for [server] listen, with the value written as in the file
    (lists comma-separated). A flag wins over the environment, the environment over the
    file, the file over the default. CONSUMER_AUTH_TOKENS adds client tokens to those of
    the file. An empty variable counts as unset; an unknown CONSUMER_* variable is an error.
";

/// The last part of `--help`.
const HELP_ROUTES: &str = "ROUTES:";

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Args {
    replay_dead_letters: bool,
    config: Option<PathBuf>,
    listen: Option<String>,
    log_level: Option<String>,
    check_config: bool,
    check_influxdb: bool,
    repair: bool,
}

/// The exit status of anything that stops the program before or instead of its work: a bad
/// command line or configuration, a storage directory that cannot be used.
const EXIT_START_FAILED: u8 = 2;
/// The exit status when InfluxDB cannot take the gateway's writes: `--check-influxdb` found
/// so, or `replay-dead-letters` stopped on it (unreachable, 5xx, a timeout, credentials).
const EXIT_INFLUXDB_FAILED: u8 = 3;
/// `replay-dead-letters`: InfluxDB refused dead letters again (the others were delivered).
const EXIT_STILL_REFUSED: u8 = 1;
/// `replay-dead-letters`: a dead letter could not be read, or a delivered one removed, or a
/// refused one given its new reason (a matter of the files, not of InfluxDB).
const EXIT_DEAD_LETTER_FILES: u8 = 4;

fn main() -> ExitCode {
    malloc::tune();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::InfluxdbCheck) => ExitCode::from(EXIT_INFLUXDB_FAILED),
        Err(error) => {
            eprintln!("metrics-consumer: {error}");
            ExitCode::from(error.exit_status())
        }
    }
}

/// Why the program stopped before or instead of serving. Each names the key, the file or the
/// address it is about.
#[derive(Debug)]
enum StartError {
    /// A bad command line.
    Usage(String),
    Config(ConfigError),
    Listen {
        addr: SocketAddr,
        error: io::Error,
    },
    Storage(StorageError),
    Log(OpenError),
    Journal(JournalError),
    Series(SeriesError),
    Thread {
        name: &'static str,
        error: io::Error,
    },
    Signals(io::Error),
    Serve(io::Error),
    /// `replay-dead-letters`: the dead letters could not be listed.
    DeadLetter {
        path: PathBuf,
        doing: &'static str,
        error: io::Error,
    },
    /// `replay-dead-letters`: `storage.dir` has no dead letters directory (`relative`: the
    /// storage.dir configured is relative to the working directory).
    NoDeadLetters {
        dir: PathBuf,
        relative: bool,
    },
    /// `replay-dead-letters`: another one holds the dead letters' lock (its pid when known).
    ReplayRunning {
        dir: PathBuf,
        pid: Option<u32>,
    },
    /// `replay-dead-letters`: not every dead letter was delivered and removed.
    Replay(replay::Unfinished),
    /// `--check-influxdb`: InfluxDB cannot take the writes (the reason is printed).
    InfluxdbCheck,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Usage(message) => f.write_str(message),
            StartError::Config(e) => e.fmt(f),
            StartError::Listen { addr, error } => {
                write!(f, "cannot listen on {addr} (server.listen): {error}")
            }
            StartError::Storage(e) => write!(f, "storage.dir: {e}"),
            StartError::Log(e) => write!(f, "storage.dir: {e}"),
            StartError::Journal(e) => e.fmt(f),
            StartError::Series(e) => e.fmt(f),
            StartError::Thread { name, error } => {
                write!(f, "cannot start the {name} thread: {error}")
            }
            StartError::Signals(e) => write!(f, "cannot watch signals: {e}"),
            StartError::Serve(e) => write!(f, "server stopped: {e}"),
            StartError::DeadLetter { path, doing, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
            StartError::InfluxdbCheck => {
                f.write_str("InfluxDB cannot take the gateway's writes; see the reason above")
            }
            StartError::NoDeadLetters { dir, relative } => {
                write!(
                    f,
                    "no dead letters directory at {}: nothing was sent",
                    dir.display()
                )?;
                if *relative {
                    let cwd = std::env::current_dir().unwrap_or_default();
                    write!(
                        f,
                        "; storage.dir is relative to the working directory ({}): run replay-dead-letters in the directory the service runs in (systemd: cd /var/lib/metrics-consumer), or give storage.dir as an absolute path",
                        cwd.display()
                    )?;
                } else {
                    f.write_str("; is storage.dir the service's?")?;
                }
                Ok(())
            }
            StartError::ReplayRunning { dir, pid } => {
                f.write_str("another replay-dead-letters")?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                write!(
                    f,
                    " is sending the dead letters in {}: nothing was sent; wait for it to end, then run replay-dead-letters again if letters are left",
                    dir.display()
                )
            }
            StartError::Replay(unfinished) => unfinished.fmt(f),
        }
    }
}

impl StartError {
    /// The program's exit status for it.
    fn exit_status(&self) -> u8 {
        match self {
            StartError::InfluxdbCheck | StartError::Replay(replay::Unfinished::Influxdb { .. }) => {
                EXIT_INFLUXDB_FAILED
            }
            StartError::Replay(replay::Unfinished::Files { .. }) => EXIT_DEAD_LETTER_FILES,
            StartError::Replay(replay::Unfinished::StillRefused(_)) => EXIT_STILL_REFUSED,
            _ => EXIT_START_FAILED,
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<StorageError> for StartError {
    fn from(e: StorageError) -> Self {
        StartError::Storage(e)
    }
}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        StartError::Log(e)
    }
}

impl From<SeriesError> for StartError {
    fn from(e: SeriesError) -> Self {
        StartError::Series(e)
    }
}

impl From<JournalError> for StartError {
    fn from(e: JournalError) -> Self {
        StartError::Journal(e)
    }
}

/// The configuration's variables for `--help`, a line per section, from `config::env_keys`.
fn env_listing() -> String {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for key in config::env_keys() {
        let section = key.key.split('.').next().unwrap_or_default().to_string();
        match lines.last_mut() {
            Some((last, names)) if *last == section => names.push(key.variable),
            _ => lines.push((section, vec![key.variable])),
        }
    }
    let mut text = String::new();
    for (section, names) in lines {
        text.push_str(&format!("    [{section}]\n"));
        let mut line = String::from("       ");
        for name in names {
            if line.len() + name.len() > 96 {
                text.push_str(line.trim_end());
                text.push('\n');
                line = String::from("       ");
            }
            line.push(' ');
            line.push_str(&name);
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Warns at start of restored running runs whose token is no longer listed (`clients`; none
/// without tokens, where every client may act on every run): no token can see, commit or end
/// them, and they would otherwise expire without a word.
fn warn_of_runs_without_their_token(jobs: &state::jobs::Jobs, clients: &[auth::Client]) {
    if clients.is_empty() {
        return;
    }
    let listed: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
    let unlisted = jobs.active_owners_not_in(&listed);
    if unlisted.is_empty() {
        return;
    }
    let runs: usize = unlisted.iter().map(|(_, n)| n).sum();
    let names: Vec<String> = unlisted
        .iter()
        .take(10)
        .map(|(name, n)| format!("{} ({n})", logtext::escape(name, 64)))
        .collect();
    log::warn!(
        "running runs restored whose token is no longer listed: {runs} ({}{}); no token can see or commit them, they expire after jobs.max_age or jobs.progress_timeout (their heartbeats written until then); list the token again, under the same name, to commit them",
        names.join(", "),
        if unlisted.len() > 10 { ", …" } else { "" }
    );
}

/// Starts a named thread running `work`.
fn spawn(name: &'static str, work: impl FnOnce() + Send + 'static) -> Result<(), StartError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(|error| StartError::Thread { name, error })
}

fn parse_args() -> Result<Option<Args>, StartError> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{HELP}{}\n{HELP_ROUTES}", env_listing());
        println!("        {}", api::listing("\n        "));
        return Ok(None);
    }
    if args.contains(["-V", "--version"]) {
        println!("metrics-consumer {}", env!("CARGO_PKG_VERSION"));
        return Ok(None);
    }
    let bad = |e: pico_args::Error| StartError::Usage(format!("{e} (see --help)"));
    let replay_dead_letters = match args.subcommand().map_err(bad)?.as_deref() {
        None => false,
        Some("replay-dead-letters") => true,
        Some(other) => {
            return Err(StartError::Usage(format!(
                "unknown command {other:?} (see --help)"
            )));
        }
    };
    let parsed = Args {
        replay_dead_letters,
        config: args.opt_value_from_str("--config").map_err(bad)?,
        listen: args.opt_value_from_str("--listen").map_err(bad)?,
        log_level: args.opt_value_from_str("--log-level").map_err(bad)?,
        check_config: args.contains("--check-config"),
        check_influxdb: args.contains("--check-influxdb"),
        repair: args.contains("--repair"),
    };
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(StartError::Usage(format!(
            "unexpected argument {:?} (see --help)",
            rest[0]
        )));
    }
    Ok(Some(parsed))
}

fn run() -> Result<(), StartError> {
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let overrides = Overrides {
        listen: args.listen,
        log_level: args.log_level,
        ..Overrides::from_env()
    };
    let required = args.config.is_some();
    let file = args
        .config
        .unwrap_or_else(|| PathBuf::from("consumer.toml"));
    let settings = config::load(&file, required, overrides)?;
    // The certificate and key are part of the configuration: a bad pair stops the start
    // (and fails --check-config) before anything listens.
    let tls = match settings.tls_files() {
        Some((cert, key)) => Some(http::tls::load(&cert, &key).map_err(|e| {
            let problem = format!("{}: {}", e.path.display(), e.problem);
            StartError::Config(settings.error_about(e.file.key(), problem))
        })?),
        None => None,
    };
    if args.check_config {
        if settings.file_found {
            println!("# {}: configuration is valid", settings.file.display());
        } else {
            println!(
                "# no configuration file {} was found: the configuration is valid, and shown with the built-in defaults",
                settings.file.display()
            );
        }
        if !settings.from_env.is_empty() {
            println!("# set by the environment: {}", settings.from_env.join(", "));
        }
        for warning in &settings.warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", settings.redacted_toml());
        println!("# InfluxDB was not contacted: --check-influxdb checks that it takes writes");
        return Ok(());
    }
    if args.check_influxdb {
        for warning in &settings.warnings {
            eprintln!("warning: {warning}");
        }
        return check_influxdb::run(&settings.config.influxdb);
    }
    init_logging(settings.level);
    if args.replay_dead_letters {
        return replay_dead_letters(&settings);
    }

    let c = &settings.config;
    let limits = http::Limits {
        header_timeout: c.server.header_timeout.0,
        idle_timeout: c.server.idle_timeout.0,
        max_body_bytes: c.server.max_body_bytes,
        max_inflated_bytes: c.server.max_inflated_bytes,
        max_body_bytes_in_flight: c.server.max_body_bytes_in_flight,
        workers: c.server.workers,
        max_connections: c.server.max_connections,
        max_connections_per_ip: c.server.max_connections_per_ip,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server =
        http::Server::bind(settings.listen, limits, tls).map_err(|error| StartError::Listen {
            addr: settings.listen,
            error,
        })?;
    for file in settings.readable_secrets() {
        log::warn!(
            "{} holds secrets and other users can read it; run `chmod o-rwx {}`",
            file.display(),
            file.display()
        );
    }
    if settings.clients.is_empty() {
        log::warn!(
            "no auth tokens are configured: every client on {} may write",
            server.local_addr()
        );
    }
    for warning in &settings.warnings {
        log::warn!("{warning}");
    }
    if !settings.file_found {
        log::info!(
            "no configuration file {}: built-in defaults{}",
            settings.file.display(),
            if settings.from_env.is_empty() {
                String::new()
            } else {
                format!(" and {}", settings.from_env.join(", "))
            }
        );
    }
    // Reading storage.dir back may outlast systemd's start timeout: ask for more while it reads.
    let starting = notify::starting();
    let dir = PathBuf::from(&c.storage.dir);
    storage::ensure_dir(&dir)?;
    storage::check_tree(&dir)?;
    // storage.dir and its directories are opened once, here: every file under them is opened
    // relative to these handles from now on, so a directory swapped for a link is not followed.
    let root = DirHandle::open_root(&dir).map_err(|e| StorageError::io("open", &dir, e))?;
    // Held until the process ends: one gateway per storage.dir.
    let _lock = DirLock::take(&root, "lock")?;
    let log_dir = dir.join("log");
    let log_handle = root
        .subdir("log")
        .map_err(|e| StorageError::io("open", &log_dir, e))?;
    // Each token's refusals within its share: one cannot take another's room.
    let dead = DeadLetters::open(&root, c.storage.max_dead_letter_bytes)?
        .with_shares(config::dead_letter_shares(&settings.clients, c));
    let series = SeriesBudget::open(&root)?;
    let results = state::results::Results::open(
        &root,
        c.verdict.max_results,
        c.verdict.max_results_bytes,
        settings.clients.len(),
    )?;
    // The job table: the snapshot first, then the log's changes applied as each record is read.
    let snapshots = Snapshots::new(root);
    let mut restore = snapshots.read()?;
    let (log, position, opened) = Log::open(
        log_handle,
        c.storage.max_spool_bytes,
        args.repair,
        &mut |changes| restore.log_changes(changes, &mut |result| results.restore(result)),
    )?;
    // The snapshot read holds the log's changes up to its number: delivered segments it covers
    // may go without a new one, which a full disk may have no room for.
    log.snapshot_read(restore.covered());
    if let Some((path, offset, bytes)) = &opened.torn {
        log::warn!(
            "{}: the last {bytes} bytes (from byte {offset}) are not a whole record and are left out: a write cut short by the previous stop, which was never acknowledged (or, after a power loss or a disk error, damage to the last record)",
            path.display()
        );
    }
    for (path, offset, bytes) in &opened.repaired {
        log::warn!(
            "--repair: {}: dropped {bytes} damaged bytes at byte {offset}; what they held is lost",
            path.display()
        );
    }
    let loaded = snapshots.finish(restore, &log_dir, c.jobs.max_finished)?;
    let jobs = loaded.jobs;
    let counts = jobs.counts();
    warn_of_runs_without_their_token(&jobs, &settings.clients);
    let dead_usage = dead.usage();
    let write_limits = WriteLimits {
        max_bytes: c.influxdb.max_write_bytes,
        max_lines: c.influxdb.max_write_lines,
        linger: c.delivery.linger.0,
    };
    // One InfluxDB client: the deliverer writes through it, the schema thread reads the
    // retention policy through it.
    let influx = Arc::new(delivery::influx::Influx::new(&c.influxdb));
    let sink: Box<dyn Sink> = Box::new(Arc::clone(&influx));
    let delivery = Delivery::new(
        log,
        sink,
        dead,
        c.delivery.acknowledge,
        c.influxdb.timeout.0,
        write_limits,
    );
    let service = Arc::new(Service {
        jobs: Arc::new(jobs),
        snapshots,
        delivery,
        stats: stats::Stats::new(&api::route_names()),
        rules: Rules {
            max_age: c.jobs.max_age.0,
            progress_timeout: c.jobs.progress_timeout.0,
            bounds: Bounds {
                max_running: c.jobs.max_running,
                max_fields: payload::MAX_FIELDS,
                max_run_bytes: c.limits.max_run_bytes,
                max_table_bytes: c.jobs.max_table_bytes,
            },
            finished_retention: c.jobs.finished_retention.0,
            heartbeat_interval: c.jobs.heartbeat_interval.0,
            tag_token_name: c.auth.tag_runs_with_token_name,
        },
        write_limits,
        schema: Schema::new(loaded.restored.schema),
        schema_stale: SchemaRefresh::default(),
        check_schema: c.influxdb.check_schema,
        series,
        // Each token that may write databases adds at most an equal share of them.
        write_schemas: service::write::Schemas::shared_by(
            settings
                .clients
                .iter()
                .filter(|c| !c.databases.is_empty())
                .count(),
        ),
        own_target: service::write::OwnTarget::of(&c.influxdb),
        results: Arc::new(results),
        judging: service::Judging::from_config(&c.verdict),
        spool_shares: settings
            .clients
            .iter()
            .map(|c| (c.name.clone(), c.max_spool_bytes))
            .collect(),
        clock: service::Clock::default(),
        dropped_beats: storage::Repeats::new(crate::service::UPKEEP_TARGET),
    });
    // InfluxDB's 404 or 403 for a write API target where the runs' points go is about the
    // gateway's own configuration: those points wait, as the runs' do.
    let own = service.own_target.clone();
    service
        .delivery
        .set_own_target(move |t| own.holds_the_runs(&t.database, &t.retention_policy));
    // A result saved for a commit the log never recorded (the gateway stopped between the
    // two) is no run's result.
    service
        .results
        .keep_committed(|uuid| service.jobs.is_finished(uuid));
    // The types of the points waiting are the gateway's word until InfluxDB has them.
    let learned_from = Instant::now();
    let learned = service.learn_undelivered(position);
    if learned > 0 {
        log::info!(
            "read the field types of the {learned} records waiting for InfluxDB in {} ms",
            learned_from.elapsed().as_millis()
        );
    }
    // A fresh snapshot holds everything read back: the log can let go of what is delivered.
    if let Err(e) = service.try_save_snapshot() {
        service.snapshots.errors.error(&e);
    }
    log::info!(
        "metrics-consumer {} writing to {} (api {}, acknowledge {}); running jobs restored: {}, records waiting for InfluxDB: {} ({} bytes), dead letters: {}",
        env!("CARGO_PKG_VERSION"),
        c.influxdb.url.trim_end_matches('/'),
        c.influxdb.api,
        match c.delivery.acknowledge {
            config::Acknowledge::Disk => "disk",
            config::Acknowledge::Influxdb => "influxdb",
        },
        counts.running,
        opened.undelivered.0,
        opened.undelivered.1,
        dead_usage.records
    );
    log::info!("listening on {scheme}://{}", server.local_addr());
    let schema_every = c.influxdb.schema_refresh.0;
    let app = Arc::new(App {
        tokens: auth::Tokens::new(&settings.clients),
        failed_checks: auth::FailedChecks::new(c.auth.max_failures, c.auth.failure_window.0),
        request_rate: auth::RequestRate::new(&settings.clients),
        service: Arc::clone(&service),
        started: Instant::now(),
        http: server.gauges(),
        settings,
    });

    // The deliverer first makes InfluxDB ready (v1: CREATE DATABASE) and asks whether it is
    // up; InfluxDB may not answer yet, and then it tries again with a backoff.
    let deliverer = Arc::clone(&service);
    spawn("deliver", move || {
        deliverer.delivery.run(position, &deliverer.stats)
    })?;
    // Writes the records of the requests whose answer the log's writer sends (see
    // `storage::log::waiters`).
    let writer = Arc::clone(&service);
    spawn("log", move || writer.delivery.log().write_for_waiters())?;
    let ticker = Arc::clone(&service);
    spawn("heartbeat", move || ticker.heartbeat_loop())?;
    spawn("schema", service.schema_reader(schema_every, influx))?;
    watch_signals(server.handle())?;
    // Only now, with every thread running and SIGTERM handled, may systemd count the
    // service as started; connections that arrived since the bind wait in the backlog.
    drop(starting);
    notify::ready();

    let handler: Arc<App> = Arc::clone(&app);
    server
        .run(handler, SHUTDOWN_GRACE)
        .map_err(StartError::Serve)?;
    // Requests in flight have finished. The deliverer ends its write; what it has not delivered
    // waits in the log for the next start. A snapshot holds the heartbeat counts too.
    service.delivery.log().stop_writer();
    service.delivery.stop();
    // How far the log is delivered is saved even when the snapshot cannot be: the next start
    // then sends less again, and the old snapshot with the log is still a whole table.
    // On a full disk neither may fit: the log still holds every change the old snapshot does
    // not, so the next start rebuilds the whole table, and frees the disk as this one would
    // have once InfluxDB has the log. That is a clean stop, not a failure.
    let snapshot = service.try_save_snapshot();
    service.delivery.log().close();
    service.delivery.log().save_delivered();
    match snapshot {
        Err(e) if e.is_disk_full() => log::warn!(
            "{e}; the disk is full: the log keeps every change, and the next start rebuilds the job table from it"
        ),
        other => other?,
    }
    log::info!(
        "stopped; {} bytes of the log wait for InfluxDB",
        service.delivery.log().undelivered_bytes()
    );
    Ok(())
}

/// `metrics-consumer replay-dead-letters`: sends each dead letter to InfluxDB again, oldest
/// first (`replay`), prints what came of them and ends with the exit status that tells it.
/// It may run beside the service: it takes the dead letters' own lock, not the storage
/// directory's.
fn replay_dead_letters(settings: &config::Settings) -> Result<(), StartError> {
    let dir = PathBuf::from(&settings.config.storage.dir);
    let dead_dir = dir.join(dead_letters::DIR);
    // Never made here: a replay run from another working directory than the service's (a
    // relative storage.dir) would find an empty one and say every letter was delivered.
    if !dead_dir.exists() {
        return Err(StartError::NoDeadLetters {
            dir: dead_dir,
            relative: dir.is_relative(),
        });
    }
    let handle = DirHandle::open(&dead_dir).map_err(|e| StorageError::io("open", &dead_dir, e))?;
    // Only another replay takes this lock (the service takes storage.dir's).
    let _lock = DirLock::take(&handle, "lock").map_err(|e| match e {
        StorageError::InUse { dir, pid } => StartError::ReplayRunning { dir, pid },
        e => StartError::Storage(e),
    })?;
    let letters = dead_letters::list(&dir).map_err(|error| StartError::DeadLetter {
        path: dead_dir.clone(),
        doing: "read the dead letters in",
        error,
    })?;
    let letters: Vec<PathBuf> = letters.into_iter().map(|(path, _, _)| path).collect();
    let influx = delivery::influx::Influx::new(&settings.config.influxdb);
    let replayed = replay::send(&letters, &influx);
    println!("{replayed}");
    replayed.outcome().map_err(StartError::Replay)
}

fn init_logging(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Error)
        .set_thread_level(log::LevelFilter::Off)
        // rustls logs protocol details, at trace level whole client hellos and at warn
        // level messages any client can provoke, so its log is left out: the server
        // logs failed handshakes itself, in fixed words.
        .add_filter_ignore_str("rustls")
        .build();
    // Only fails when a logger is set already, which cannot happen here.
    let stderr = WholeLines {
        line: Vec::new(),
        out: std::io::stderr(),
    };
    let _ = simplelog::WriteLogger::init(level, config, stderr);
}

/// The log's writer. simplelog writes a record in many small pieces (some 30 for an
/// access-log line), and stderr is unbuffered: the pieces are gathered here and written with
/// one `write` as soon as the record's line ends, so no line waits in memory once it is
/// whole, and the records of concurrent threads never interleave in the journal. Cheaper than
/// `std::io::LineWriter`, which looks for a line end in every piece.
struct WholeLines<W> {
    /// The record being written, up to its line's end.
    line: Vec<u8>,
    /// Where whole lines go (stderr).
    out: W,
}

impl<W: std::io::Write> std::io::Write for WholeLines<W> {
    fn write(&mut self, piece: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(piece);
        if self.line.ends_with(b"\n") {
            self.flush()?;
        }
        Ok(piece.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let written = self.out.write_all(&self.line);
        self.line.clear();
        // A rare long line (a long error) does not keep its room.
        if self.line.capacity() > 64 * 1024 {
            self.line = Vec::new();
        }
        written
    }
}

/// SIGTERM and SIGINT stop the server gracefully.
fn watch_signals(handle: http::ShutdownHandle) -> Result<(), StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(StartError::Signals)?;
    spawn("signals", move || {
        if let Some(signal) = signals.forever().next() {
            log::info!("signal {signal}: stopping");
            notify::stopping();
            handle.shutdown();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Each `write` call it gets, apart.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl io::Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A log record, written by simplelog in many pieces, reaches stderr as one write of its
    /// whole text, as soon as it is whole; a message with a line break in it stays one write.
    #[test]
    fn each_log_record_is_one_write_of_its_whole_lines() {
        use log::Log;
        let writes = Writes::default();
        let config = simplelog::ConfigBuilder::new()
            .set_time_level(log::LevelFilter::Off)
            .set_target_level(log::LevelFilter::Error)
            .set_thread_level(log::LevelFilter::Off)
            .build();
        let lines = WholeLines {
            line: Vec::new(),
            out: writes.clone(),
        };
        let logger = simplelog::WriteLogger::new(log::LevelFilter::Info, config, lines);
        let record = |message: fmt::Arguments<'_>, target: &'static str| {
            logger.log(
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target(target)
                    .args(message)
                    .build(),
            )
        };
        record(format_args!("run {} registered", 7), "metrics_consumer");
        let written = || -> Vec<String> {
            let writes = writes.0.lock().unwrap();
            writes
                .iter()
                .map(|w| String::from_utf8_lossy(w).into())
                .collect()
        };
        assert_eq!(written(), ["[INFO] metrics_consumer: run 7 registered\n"]);
        record(
            format_args!("{} {}ms", "127.0.0.1 POST /x 200", 1.5),
            "access",
        );
        record(format_args!("two\nlines"), "metrics_consumer");
        assert_eq!(
            written(),
            [
                "[INFO] metrics_consumer: run 7 registered\n",
                "[INFO] access: 127.0.0.1 POST /x 200 1.5ms\n",
                "[INFO] metrics_consumer: two\nlines\n",
            ]
        );
    }
}
