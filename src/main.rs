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
mod code;
mod config;
mod delivery;
mod http;
mod ingest;
mod malloc;
mod notify;
#[cfg(test)]
mod readme_tables;
mod service;
mod state;
mod stats;

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
use crate::service::{Rules, Service};
use crate::state::journal::JournalError;

const HELP: &str = "\
metrics-consumer: records load-test runs into InfluxDB over a small, secure HTTP API

USAGE:
    metrics-consumer [OPTIONS]                         run the service
    metrics-consumer replay-dead-letters [--config PATH]
                                                       send the dead letters to InfluxDB again,
                                                       after fixing what made InfluxDB refuse them

OPTIONS:
    --config PATH       configuration file (default: ./consumer.toml; all keys have defaults)
    --listen ADDR       listen address, e.g. 127.0.0.1:3000 (overrides server.listen)
    --log-level LEVEL   off, error, warn, info, debug or trace (overrides log.level)
    --check-config      check the configuration, print it with secrets redacted, and exit
    --version           print the version and exit
    -h, --help          print this help and exit

ENVIRONMENT:
    CONSUMER_INFLUXDB_PASSWORD   InfluxDB v1 password (overrides influxdb.password)
    CONSUMER_INFLUXDB_TOKEN      InfluxDB v2 token (overrides influxdb.token)
    CONSUMER_AUTH_TOKENS         extra client tokens, comma-separated

ROUTES:
";

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Args {
    replay_dead_letters: bool,
    config: Option<PathBuf>,
    listen: Option<String>,
    log_level: Option<String>,
    check_config: bool,
}

fn main() -> ExitCode {
    malloc::tune();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("metrics-consumer: {error}");
            ExitCode::from(2)
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
    /// `server.tls_cert` or `server.tls_key` cannot be used (the message names key and file).
    Tls(String),
    Listen {
        addr: SocketAddr,
        error: io::Error,
    },
    Spool {
        dir: PathBuf,
        error: io::Error,
    },
    Journal(JournalError),
    Thread {
        name: &'static str,
        error: io::Error,
    },
    Signals(io::Error),
    Serve(io::Error),
    /// `replay-dead-letters`: a dead letter could not be read or removed.
    DeadLetter {
        path: PathBuf,
        doing: &'static str,
        error: io::Error,
    },
    /// `replay-dead-letters`: this many were refused again.
    StillRefused(usize),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Usage(message) | StartError::Tls(message) => f.write_str(message),
            StartError::Config(e) => e.fmt(f),
            StartError::Listen { addr, error } => {
                write!(f, "cannot listen on {addr} (server.listen): {error}")
            }
            StartError::Spool { dir, error } => write!(
                f,
                "storage.dir: cannot open the spool in {}: {error}",
                dir.display()
            ),
            StartError::Journal(e) => e.fmt(f),
            StartError::Thread { name, error } => {
                write!(f, "cannot start the {name} thread: {error}")
            }
            StartError::Signals(e) => write!(f, "cannot watch signals: {e}"),
            StartError::Serve(e) => write!(f, "server stopped: {e}"),
            StartError::DeadLetter { path, doing, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
            StartError::StillRefused(n) => write!(
                f,
                "{n} dead letters were not delivered; see the messages above"
            ),
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<JournalError> for StartError {
    fn from(e: JournalError) -> Self {
        StartError::Journal(e)
    }
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
        println!("{HELP}        {}", api::listing("\n        "));
        return Ok(None);
    }
    if args.contains("--version") {
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
        Some((cert, key)) => Some(http::tls::load(&cert, &key).map_err(StartError::Tls)?),
        None => None,
    };
    if args.check_config {
        println!("# {}: configuration is valid", settings.file.display());
        print!("{}", settings.redacted_toml());
        return Ok(());
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
    if settings.tokens.is_empty() {
        log::warn!(
            "no auth tokens are configured: every client on {} may write",
            settings.listen
        );
    }
    let dir = PathBuf::from(&c.storage.dir);
    let spool = delivery::spool::Spool::open(&dir, c.storage.max_spool_bytes).map_err(|error| {
        StartError::Spool {
            dir: dir.clone(),
            error,
        }
    })?;
    let (journal, jobs, restored) = state::journal::Journal::open(&dir, c.jobs.max_finished)?;
    if restored.torn_tail {
        log::warn!(
            "the last record of jobs.journal was cut short by the previous stop; it was never acknowledged and is left out"
        );
    }
    let counts = jobs.counts();
    let usage = spool.usage();
    let sink: Box<dyn Sink> = Box::new(delivery::influx::Influx::new(&c.influxdb));
    let service = Arc::new(Service {
        jobs,
        journal,
        delivery: delivery::Delivery::new(sink, spool),
        stats: stats::Stats::new(&api::route_names()),
        rules: Rules {
            max_running: c.jobs.max_running,
            max_age: c.jobs.max_age.0,
            finished_retention: c.jobs.finished_retention.0,
            heartbeat_interval: c.jobs.heartbeat_interval.0,
        },
    });
    log::info!(
        "metrics-consumer {} writing to {} (api {}); {} running jobs restored, {} spooled records waiting",
        env!("CARGO_PKG_VERSION"),
        c.influxdb.url.trim_end_matches('/'),
        c.influxdb.api,
        counts.running,
        usage.records
    );
    log::info!("listening on {scheme}://{}", server.local_addr());
    let app = Arc::new(App {
        tokens: auth::Tokens::new(&settings.tokens),
        service: Arc::clone(&service),
        started: Instant::now(),
        connections: server.connections(),
        settings,
    });

    // InfluxDB may not be up yet; the database is created as soon as it answers.
    let starter = Arc::clone(&service);
    spawn("create-database", move || starter.delivery.prepare())?;
    let ticker = Arc::clone(&service);
    spawn("heartbeat", move || ticker.heartbeat_loop())?;
    let replayer = Arc::clone(&service);
    spawn("replay", move || {
        replayer.delivery.replay_loop(&replayer.stats)
    })?;
    watch_signals(server.handle())?;
    // Only now, with every thread running and SIGTERM handled, may systemd count the
    // service as started; connections that arrived since the bind wait in the backlog.
    notify::ready();

    let handler: Arc<App> = Arc::clone(&app);
    server
        .run(handler, SHUTDOWN_GRACE)
        .map_err(StartError::Serve)?;
    // Requests in flight have finished; what they changed is saved before the process ends.
    service.journal.compact(&service.jobs)?;
    let usage = service.delivery.spool().usage();
    log::info!(
        "stopped; {} spooled records wait for InfluxDB",
        usage.records
    );
    Ok(())
}

/// `metrics-consumer replay-dead-letters`: sends each dead letter to InfluxDB again, oldest
/// first; a delivered one is removed, a refused one stays with the new reason.
fn replay_dead_letters(settings: &config::Settings) -> Result<(), StartError> {
    let dir = PathBuf::from(&settings.config.storage.dir);
    let letters =
        delivery::spool::list_dead_letters(&dir).map_err(|error| StartError::DeadLetter {
            path: dir.join("dead-letter"),
            doing: "read the dead letters in",
            error,
        })?;
    let influx = delivery::influx::Influx::new(&settings.config.influxdb);
    let (mut delivered, mut failed) = (0, 0);
    for (path, _) in &letters {
        let lines = std::fs::read_to_string(path).map_err(|error| StartError::DeadLetter {
            path: path.clone(),
            doing: "read",
            error,
        })?;
        match influx.write(&lines) {
            Ok(()) => {
                delivery::spool::remove_dead_letter(path).map_err(|error| {
                    StartError::DeadLetter {
                        path: path.clone(),
                        doing: "remove",
                        error,
                    }
                })?;
                delivered += 1;
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                let _ = delivery::spool::update_dead_letter(path, &e.to_string());
                failed += 1;
            }
        }
    }
    println!("{delivered} dead letters delivered, {failed} still refused");
    if failed > 0 {
        return Err(StartError::StillRefused(failed));
    }
    Ok(())
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
    // simplelog writes a record in many small pieces, and stderr is unbuffered: without the
    // LineWriter that is some 30 system calls per access-log line. Whole lines also keep the
    // records of concurrent threads from interleaving in the journal.
    let stderr = std::io::LineWriter::new(std::io::stderr());
    // Only fails when a logger is set already, which cannot happen here.
    let _ = simplelog::WriteLogger::init(level, config, stderr);
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
