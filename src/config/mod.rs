//! The configuration: the typed settings (`consumer.toml`'s tables as structs, with their
//! defaults) and the one entry point, [`load`], which reads what was given into one raw form
//! ([`raw`]: file, environment, flags) and converts it once into checked [`Settings`]: secrets
//! read ([`secrets`]), clients made ([`clients`]), values checked ([`validate`]). Every error is
//! a [`ConfigError`] value carrying the key and what set it ([`error`]).
//!
//! Every key has a default, so an empty file (or none) is a valid configuration. Every key
//! also has an environment variable, `CONSUMER_<SECTION>_<KEY>` upper-cased, derived from
//! [`Config`] itself ([`env_keys`]); a flag wins over the environment, the environment over
//! the file, the file over the default. Secrets are resolved once, at start, and never printed:
//! the effective configuration shown by `--check-config` has them redacted.
//!
//! This module does no network I/O and starts nothing; it only reads the files it is told
//! about. It imports no other layer's types but `auth::Client`: the layers import it.

mod clients;
pub mod duration;
mod error;
mod raw;
mod secrets;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::Client;
pub use clients::dead_letter_shares;
pub use duration::{Dur, format_duration};
pub use error::ConfigError;
use error::{Origins, Problem};
pub use raw::{Overrides, env_keys};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub auth: Auth,
    pub influxdb: Influxdb,
    pub delivery: Delivery,
    pub jobs: Jobs,
    pub storage: Storage,
    pub limits: Limits,
    pub log: Log,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    pub workers: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Dur,
    pub idle_timeout: Dur,
    pub max_body_bytes: u64,
    /// Largest body once its `Content-Encoding` (gzip, deflate) is undone.
    pub max_inflated_bytes: u64,
    /// Bytes of request bodies held in memory at once, all connections together, counting
    /// what compressed bodies inflate to; beyond it a body waits up to a second, then 503.
    pub max_body_bytes_in_flight: u64,
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:3000".into(),
            workers: 16,
            max_connections: 512,
            max_connections_per_ip: 64,
            header_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(5),
            max_body_bytes: 1024 * 1024,
            max_inflated_bytes: 16 * 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    #[serde(serialize_with = "secrets::redact_list")]
    pub tokens: Vec<String>,
    /// Files of tokens, one per line, `TOKEN` or `NAME:TOKEN`.
    pub token_files: Vec<String>,
    pub allow_unauthenticated: bool,
    /// Every run's points carry the `token_name` tag: the name of the token that registered it.
    pub tag_runs_with_token_name: bool,
    /// Failed token checks one address (an IPv6 /64) may make in `failure_window` before its
    /// requests answer 429 `too_many_auth_failures`.
    pub max_failures: u32,
    pub failure_window: Dur,
    /// Tokens with a name and limits of their own: the `[[auth.token]]` tables.
    #[serde(rename = "token")]
    pub named: Vec<NamedToken>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            tokens: Vec::new(),
            token_files: Vec::new(),
            allow_unauthenticated: false,
            tag_runs_with_token_name: false,
            max_failures: 10,
            failure_window: Dur::secs(60),
            named: Vec::new(),
        }
    }
}

/// One `[[auth.token]]` table: a client's token with its name and limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamedToken {
    /// Shown in the access log and, with `auth.tag_runs_with_token_name`, as the `token_name`
    /// tag: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    #[serde(serialize_with = "secrets::redact")]
    pub token: String,
    /// A file holding the token (its first line), instead of `token`.
    pub token_file: String,
    /// Runs the client may have running at once; 0: an equal share of `jobs.max_running`.
    pub max_running: usize,
    /// Requests per second the client may make on average, with bursts of one second's worth;
    /// 0: no limit.
    pub requests_per_second: f64,
    /// The databases (buckets) the client may write through InfluxDB's write API: names or
    /// globs (`*`, `?`). None by default: the run routes need none.
    pub databases: Vec<String>,
    /// The measurements it may write there: globs; every one by default.
    pub measurements: Vec<String>,
    /// Distinct series it may make in each database it writes (the series budget).
    pub max_series: u64,
    /// Bytes of its records not yet delivered the log may hold (while InfluxDB is away); 0:
    /// an equal share of `storage.max_spool_bytes`. At most `storage.max_spool_bytes`.
    pub max_spool_bytes: u64,
}

/// Distinct series one token may make in one database by default: far more than a load test's
/// points need (a k6 run with its default tags makes hundreds), far fewer than blow up
/// InfluxDB's index (its own bound, `max-series-per-database`, is 1 000 000).
pub const DEFAULT_MAX_SERIES: u64 = 100_000;

impl Default for NamedToken {
    fn default() -> Self {
        NamedToken {
            name: String::new(),
            token: String::new(),
            token_file: String::new(),
            max_running: 0,
            requests_per_second: 0.0,
            databases: Vec::new(),
            measurements: vec!["*".into()],
            max_series: DEFAULT_MAX_SERIES,
            max_spool_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Influxdb {
    pub url: String,
    pub api: Api,
    pub database: String,
    pub retention_policy: String,
    pub username: String,
    #[serde(serialize_with = "secrets::redact")]
    pub password: String,
    pub password_file: String,
    pub org: String,
    pub bucket: String,
    #[serde(serialize_with = "secrets::redact")]
    pub token: String,
    pub token_file: String,
    pub timeout: Dur,
    pub create_database: bool,
    /// Bytes of line protocol in one write at most.
    pub max_write_bytes: usize,
    /// Points in one write at most.
    pub max_write_lines: usize,
    /// Refuse at the request a field type or tag InfluxDB would refuse.
    pub check_schema: bool,
    /// How often InfluxDB's schema is read again (v1): the types the gateway holds requests to.
    pub schema_refresh: Dur,
}

impl Default for Influxdb {
    fn default() -> Self {
        Influxdb {
            url: "http://127.0.0.1:8086".into(),
            api: Api::V1,
            database: "telegraf".into(),
            retention_policy: String::new(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            org: String::new(),
            bucket: String::new(),
            token: String::new(),
            token_file: String::new(),
            timeout: Dur::secs(5),
            create_database: true,
            // Well under InfluxDB's own limits (1.x: 25 MB; 3.x: 10 MiB), and InfluxDB's advice
            // of about 5 000 lines a write.
            max_write_bytes: 4 << 20,
            max_write_lines: 5000,
            check_schema: true,
            schema_refresh: Dur::secs(60),
        }
    }
}

/// When a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Acknowledge {
    /// Once its record is on disk.
    Disk,
    /// Once InfluxDB stored its points or refused them (or, while InfluxDB does not answer, once
    /// its record is on disk).
    Influxdb,
}

/// `[delivery]`: when a request is answered, and how long a batch waits to fill.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub acknowledge: Acknowledge,
    /// With `acknowledge = "disk"`: how long the deliverer lets records it found wait for more
    /// before it writes them, when they fill no write (`influxdb.max_write_bytes`,
    /// `influxdb.max_write_lines`); 0 writes at once. Fewer, larger writes cost InfluxDB far
    /// less than one write per request. Kafka's producer calls this `linger.ms`. Ignored with
    /// `"influxdb"`, whose clients wait for the write.
    pub linger: Dur,
}

/// `delivery.linger`'s default, in milliseconds.
pub const DEFAULT_LINGER_MS: u64 = 20;

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            acknowledge: Acknowledge::Disk,
            linger: Dur::millis(DEFAULT_LINGER_MS),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Api {
    /// InfluxDB 1.x: `/write?db=&rp=`.
    #[serde(rename = "v1")]
    V1,
    /// InfluxDB 2.x (and 3.x's compatibility endpoint): `/api/v2/write?org=&bucket=`.
    #[serde(rename = "v2")]
    V2,
    /// InfluxDB 3.x's own endpoint: `/api/v3/write_lp?db=`.
    #[serde(rename = "v3")]
    V3,
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
            Api::V3 => "v3",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    pub heartbeat_interval: Dur,
    pub max_running: usize,
    pub max_age: Dur,
    /// A run that has reported progress, and then none for this long, expires.
    pub progress_timeout: Dur,
    pub finished_retention: Dur,
    pub max_finished: usize,
    /// Bytes all jobs together may keep in memory (their heartbeats, tags and fields).
    pub max_table_bytes: usize,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            heartbeat_interval: Dur::secs(15),
            max_running: 10_000,
            max_age: Dur::secs(24 * 3600),
            progress_timeout: Dur::secs(600),
            finished_retention: Dur::secs(3600),
            max_finished: 1000,
            max_table_bytes: 128 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub dir: String,
    /// Bytes of the log not yet delivered to InfluxDB, at most.
    pub max_spool_bytes: u64,
    /// Bytes of dead letters kept at most; refusals beyond are counted as dropped.
    pub max_dead_letter_bytes: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            dir: "./data".into(),
            max_spool_bytes: 1 << 30,
            max_dead_letter_bytes: 256 << 20,
        }
    }
}

/// `[verdict]`: how a committed run is judged (docs/verdicts.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verdict {
    /// The run tags that say which test a run is: its baseline is the last run that passed with
    /// the same values of them, registered with the same token.
    pub identity: Vec<String>,
    /// Results of committed runs kept under `storage.dir/results` (for baselines, the
    /// `/apiv0.1/runs` routes and their reports), at most; the oldest go first, a baseline last.
    pub max_results: usize,
    /// Bytes those results take on disk at most; the oldest go first, a baseline last.
    pub max_results_bytes: u64,
    /// Checks for every run whose tags match: the `[[verdict.rule]]` tables.
    #[serde(rename = "rule")]
    pub rules: Vec<VerdictRule>,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            identity: vec!["test".into()],
            max_results: 1000,
            max_results_bytes: 256 << 20,
            rules: Vec::new(),
        }
    }
}

/// One `[[verdict.rule]]` table: checks for the runs whose tags match `tags`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictRule {
    /// Tag names with the values (globs: `*`, `?`) a run's tags must all match; none: every run.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Endpoint names (a row's name, or `Aggregated`), each with its checks, as a register's
    /// `thresholds`.
    pub thresholds: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_string_bytes: usize,
    pub max_stats_rows: usize,
    /// Bytes of a running job's heartbeat line (measurement, tags and fields) at most.
    pub max_run_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string_bytes: 1024 * 1024,
            max_stats_rows: 1000,
            max_run_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// The checked configuration plus the values derived from it at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    /// Whether `file` exists; without it, every key not set otherwise has its default.
    pub file_found: bool,
    pub config: Config,
    pub listen: SocketAddr,
    pub level: log::LevelFilter,
    /// Every accepted token with its client's name and limits, from `auth.tokens`,
    /// `auth.token_files`, `CONSUMER_AUTH_TOKENS` and `[[auth.token]]`, in that order.
    pub clients: Vec<Client>,
    /// The file itself holds a password or token (not only names of files that do).
    pub file_has_secrets: bool,
    /// The variables that set something, in name order.
    pub from_env: Vec<String>,
    /// Settings that are valid but cannot work (credentials InfluxDB will refuse, secret
    /// files without a secret), each naming where it comes from; shown by `--check-config`
    /// and logged at start.
    pub warnings: Vec<ConfigError>,
    /// Keys set by a variable or a flag, and by which.
    origins: Origins,
}

/// Loads the configuration: built-in defaults, then `file`, then the environment, then the
/// command-line flags, each winning over the ones before. A missing file is an error only
/// when `required` (the user named it with `--config`); the default `./consumer.toml` may be
/// absent, and then every key not set otherwise has its default.
///
/// Errors: the first mistake found, naming its key (when it has one) and what set it.
pub fn load(file: &Path, required: bool, overrides: Overrides) -> Result<Settings, ConfigError> {
    Settings::from_raw(raw::Raw::read(file, required, overrides)?)
}

impl Settings {
    /// Converts what was given into checked settings: secret files read, clients made, every
    /// value checked; each mistake blamed on what set its key.
    fn from_raw(raw: raw::Raw) -> Result<Settings, ConfigError> {
        let raw::Raw {
            file,
            file_found,
            file_has_secrets,
            mut config,
            env_tokens,
            from_env,
            origins,
        } = raw;
        let blame = |problem: Problem| origins.blame(&file, problem);
        let mut warnings: Vec<ConfigError> = secrets::resolve(&mut config, &file, &origins)
            .map_err(blame)?
            .into_iter()
            .map(blame)
            .collect();
        let (clients, empty_files) =
            clients::read(&config, &file, &origins, env_tokens.as_deref())?;
        warnings.extend(empty_files);
        let (listen, level) = validate::validate(&config).map_err(blame)?;
        validate::open_to_anyone(&config, listen, !clients.is_empty()).map_err(blame)?;
        warnings.extend(secrets::credential_warnings(&config).into_iter().map(blame));
        warnings.extend(validate::ignored(&config).into_iter().map(blame));
        Ok(Settings {
            file,
            file_found,
            config,
            listen,
            level,
            clients,
            file_has_secrets,
            from_env,
            warnings,
            origins,
        })
    }

    /// Files holding secrets that other users can read: the configuration file when it has a
    /// secret inline, and every secret file it names (the TLS key too). Worth a warning at
    /// start, not a refusal (the operator may have reasons), so the caller logs these.
    pub fn readable_secrets(&self) -> Vec<PathBuf> {
        secrets::readable_by_others(&self.config, &self.file, self.file_has_secrets)
    }

    /// The certificate and key files for HTTPS, when both are set. Relative paths are
    /// relative to the configuration file, as for secret files.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let s = &self.config.server;
        if s.tls_cert.is_empty() || s.tls_key.is_empty() {
            return None;
        }
        let base = secrets::base_of(&self.file);
        Some((base.join(&s.tls_cert), base.join(&s.tls_key)))
    }

    /// A problem found after loading (a certificate that does not load) with `key`
    /// (`"server.tls_key"`), blamed on what set the key: the file, a variable or a flag.
    /// `problem` says what is wrong, without the key.
    pub fn error_about(&self, key: &'static str, problem: String) -> ConfigError {
        self.origins.blame(&self.file, Problem::new(key, problem))
    }

    /// The effective configuration as TOML with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let shown = toml::to_string(&self.config)
            .unwrap_or_else(|e| format!("# cannot show configuration: {e}\n"));
        if self.clients.is_empty() {
            return shown;
        }
        let mut text =
            format!("{shown}\n# Clients, one per token (the tokens themselves are never shown):\n");
        for c in &self.clients {
            let rate = if c.requests_per_second > 0.0 {
                format!("{} requests per second", c.requests_per_second)
            } else {
                "no request rate limit".to_string()
            };
            let databases = if c.databases.is_empty() {
                "no databases (the InfluxDB write API needs an [[auth.token]] with databases)"
                    .to_string()
            } else {
                format!(
                    "databases {}, measurements {}, max_series {}",
                    globs(&c.databases),
                    globs(&c.measurements),
                    c.max_series
                )
            };
            text.push_str(&format!(
                "#   {}: max_running {}, max_spool_bytes {}, {rate}; {databases}\n",
                crate::logtext::escape(&c.name, 100),
                c.max_running,
                c.max_spool_bytes
            ));
        }
        text
    }
}

/// Globs as `--check-config` lists them: `["k6", "jmeter_*"]`, each made safe for a line.
fn globs(list: &[String]) -> String {
    let shown: Vec<String> = list
        .iter()
        .map(|g| format!("{:?}", crate::logtext::escape(g, 100)))
        .collect();
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests;
