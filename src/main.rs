//! metrics-consumer: a small, secure HTTP gateway that records load-test runs into InfluxDB.
//!
//! This file is the command line and the wiring: it reads the configuration, starts logging,
//! binds the listener, starts the heartbeat thread, tells systemd it is ready (`notify`), and
//! serves until SIGTERM or SIGINT.
//! Everything else lives in one module per concern (see ARCHITECTURE.md).

mod api;
mod auth;
mod code;
mod config;
mod delivery;
mod http;
mod ingest;
mod notify;
#[cfg(test)]
mod readme_tables;
mod state;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::App;
use crate::config::Overrides;

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

Routes: POST /apiv0.1/events/register, POST /apiv0.1/events/progress, POST /apiv0.1/events/commit,
        GET /apiv0.1/events/isrunning, GET /apiv0.1/states, GET /apiv0.1/metrics,
        GET /apiv0.1/ping
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
    tune_malloc();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("metrics-consumer: {message}");
            ExitCode::from(2)
        }
    }
}

/// Two tunables of glibc's allocator, for a long-running server with a thread per connection:
///
/// - glibc gives each thread that allocates its own arena, up to eight per core, and an arena
///   keeps what it once held, so resident memory grows with the number of threads that ever
///   served a request (measured: 12 MiB after 10 000 register+commit cycles at concurrency 8,
///   against 8 MiB with two arenas). The requests are short and mostly wait on I/O, so two
///   arenas cost no measurable throughput.
/// - Blocks from 128 KiB up (job-table snapshots, heartbeat batches, large bodies) are mapped
///   and given back to the system when freed. glibc raises that threshold each time such a
///   block is freed, after which the same blocks come from the arenas and stay resident; a
///   fixed threshold keeps them going back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // From glibc's <malloc.h>.
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt only sets tunables of the C allocator; it is called first thing in
    // main, before any other thread exists. A value it refuses leaves the default in place.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(None);
    }
    if args.contains("--version") {
        println!("metrics-consumer {}", env!("CARGO_PKG_VERSION"));
        return Ok(None);
    }
    let bad = |e: pico_args::Error| format!("{e} (see --help)");
    let replay_dead_letters = match args.subcommand().map_err(bad)?.as_deref() {
        None => false,
        Some("replay-dead-letters") => true,
        Some(other) => return Err(format!("unknown command {other:?} (see --help)")),
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
        return Err(format!("unexpected argument {:?} (see --help)", rest[0]));
    }
    Ok(Some(parsed))
}

fn run() -> Result<(), String> {
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
    let settings = config::load(&file, required, overrides).map_err(|e| e.to_string())?;
    // The certificate and key are part of the configuration: a bad pair stops the start
    // (and fails --check-config) before anything listens.
    let tls = match settings.tls_files() {
        Some((cert, key)) => Some(http::tls::load(&cert, &key)?),
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
    let server = http::Server::bind(settings.listen, limits, tls)
        .map_err(|e| format!("cannot listen on {} (server.listen): {e}", settings.listen))?;
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
    let spool = delivery::spool::Spool::open(&dir, c.storage.max_spool_bytes).map_err(|e| {
        format!(
            "storage.dir: cannot open the spool in {}: {e}",
            dir.display()
        )
    })?;
    let (journal, jobs, restored) = state::journal::Journal::open(&dir, c.jobs.max_finished)?;
    if restored.torn_tail {
        log::warn!(
            "the last record of jobs.journal was cut short by the previous stop; it was never acknowledged and is left out"
        );
    }
    let counts = jobs.counts();
    let usage = spool.usage();
    let app = Arc::new(App {
        tokens: auth::Tokens::new(&settings.tokens),
        delivery: delivery::Delivery::new(delivery::influx::Influx::new(&c.influxdb), spool),
        jobs,
        journal,
        stats: stats::Stats::default(),
        started: Instant::now(),
        connections: server.connections(),
        settings,
    });
    log::info!(
        "metrics-consumer {} writing to {} (api {}); {} running jobs restored, {} spooled records waiting",
        env!("CARGO_PKG_VERSION"),
        app.delivery.influx().url(),
        app.delivery.influx().api(),
        counts.running,
        usage.records
    );
    log::info!("listening on {scheme}://{}", server.local_addr());

    // InfluxDB may not be up yet; the database is created as soon as it answers.
    let starter = Arc::clone(&app);
    std::thread::Builder::new()
        .name("create-database".into())
        .spawn(move || {
            let _ = starter.delivery.influx().ensure_database();
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let ticker = Arc::clone(&app);
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || ticker.heartbeat_loop())
        .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
    let replayer = Arc::clone(&app);
    std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || replayer.delivery.replay_loop(&replayer.stats))
        .map_err(|e| format!("cannot start the replay thread: {e}"))?;
    watch_signals(server.handle())?;
    // Only now, with every thread running and SIGTERM handled, may systemd count the
    // service as started; connections that arrived since the bind wait in the backlog.
    notify::ready();

    let handler: Arc<App> = Arc::clone(&app);
    server
        .run(handler, SHUTDOWN_GRACE)
        .map_err(|e| format!("server stopped: {e}"))?;
    // Requests in flight have finished; what they changed is saved before the process ends.
    app.journal.compact(&app.jobs)?;
    let usage = app.delivery.spool().usage();
    log::info!(
        "stopped; {} spooled records wait for InfluxDB",
        usage.records
    );
    Ok(())
}

/// `metrics-consumer replay-dead-letters`: sends each dead letter to InfluxDB again, oldest
/// first; a delivered one is removed, a refused one stays with the new reason.
fn replay_dead_letters(settings: &config::Settings) -> Result<(), String> {
    let dir = PathBuf::from(&settings.config.storage.dir);
    let letters = delivery::spool::list_dead_letters(&dir).map_err(|e| {
        format!(
            "cannot read the dead letters in {}: {e}",
            dir.join("dead-letter").display()
        )
    })?;
    let influx = delivery::influx::Influx::new(&settings.config.influxdb);
    let (mut delivered, mut failed) = (0, 0);
    for (path, _) in &letters {
        let lines = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match influx.write(&lines) {
            Ok(()) => {
                delivery::spool::remove_dead_letter(path)
                    .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
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
        return Err(format!(
            "{failed} dead letters were not delivered; see the messages above"
        ));
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
fn watch_signals(handle: http::ShutdownHandle) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::info!("signal {signal}: stopping");
                notify::stopping();
                handle.shutdown();
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    Ok(())
}
