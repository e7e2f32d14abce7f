//! Configuration: `consumer.toml`, environment overrides, and the checks that make a bad
//! configuration stop the start with a message naming where the mistake is: the file and the
//! key, the environment variable, or the command-line flag.
//!
//! Every key has a default, so an empty file (or none) is a valid configuration. Every key
//! also has an environment variable, `CONSUMER_<SECTION>_<KEY>` upper-cased, derived from
//! [`Config`] itself ([`env_keys`]); a flag wins over the environment, the environment over
//! the file, the file over the default. Secrets (the InfluxDB
//! password or token, the gateway's own tokens) may come from the file, from files named in it,
//! or from the environment; they are resolved here once, at start, and never printed: the
//! effective configuration shown by `--check-config` has them redacted.
//!
//! This module does no network I/O and starts nothing; it only reads the files it is told about.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::Client;

/// Shown instead of a secret wherever the configuration is printed.
const REDACTED: &str = "<redacted>";

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
    #[serde(serialize_with = "redact_list")]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamedToken {
    /// Shown in the access log and, with `auth.tag_runs_with_token_name`, as the `token_name`
    /// tag: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    #[serde(serialize_with = "redact")]
    pub token: String,
    /// A file holding the token (its first line), instead of `token`.
    pub token_file: String,
    /// Runs the client may have running at once; 0: an equal share of `jobs.max_running`.
    pub max_running: usize,
    /// Requests per second the client may make on average, with bursts of one second's worth;
    /// 0: no limit.
    pub requests_per_second: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Influxdb {
    pub url: String,
    pub api: Api,
    pub database: String,
    pub retention_policy: String,
    pub username: String,
    #[serde(serialize_with = "redact")]
    pub password: String,
    pub password_file: String,
    pub org: String,
    pub bucket: String,
    #[serde(serialize_with = "redact")]
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

/// `[delivery]`: when a request is answered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub acknowledge: crate::delivery::Acknowledge,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            acknowledge: crate::delivery::Acknowledge::Disk,
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

/// A duration written in the file as a string with a unit: "500ms", "15s", "5m", "24h".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

/// Parses "500ms", "15s", "5m", "24h" (also "1d"). A bare number is refused on purpose: "15"
/// could mean seconds or milliseconds, and guessing wrong is worse than asking.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration {text:?}: use a whole number with a unit, e.g. \"500ms\", \"15s\", \"5m\", \"24h\""
        )
    };
    if unit.is_empty() && !num.is_empty() {
        return Err(no_unit(num));
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(ms_per_unit).ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

/// The inverse of [`parse_duration`], choosing the largest unit that is exact.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// What to write instead of a number without a unit (`15` or `"15"`).
fn no_unit(number: impl fmt::Display) -> String {
    format!(
        "{number} has no unit: a duration is a string with one, e.g. \"{number}s\" for seconds or \"{number}ms\" for milliseconds (units: ms, s, m, h, d)"
    )
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Takes a string, and answers a bare number (`heartbeat_interval = 15`) with the
        /// string it should have been.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: a string with a unit, e.g. \"15s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(no_unit(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(no_unit(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "{v} is not a duration: write a whole number with a unit, e.g. \"1500ms\" or \"15s\""
                )))
            }
        }
        d.deserialize_any(Text)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

fn redact<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_empty() { "" } else { REDACTED })
}

fn redact_list<S: Serializer>(value: &[String], s: S) -> Result<S::Ok, S::Error> {
    let shown: Vec<&str> = value.iter().map(|_| REDACTED).collect();
    shown.serialize(s)
}

/// A configuration problem, naming where it comes from: the configuration file, an
/// environment variable or a command-line flag.
#[derive(Debug)]
pub struct ConfigError {
    /// The file's path, `CONSUMER_X (sets section.key)` or `--flag`.
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every environment variable of the configuration starts with this.
pub const ENV_PREFIX: &str = "CONSUMER_";

/// The one variable that adds to a key rather than replacing it: its tokens are accepted
/// beside those of `auth.tokens` and `auth.token_files`.
const ENV_TOKENS: &str = "CONSUMER_AUTH_TOKENS";

/// Where a setting came from; messages about it name that place.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, e.g. `--listen`.
    Flag(&'static str),
}

/// A key of the configuration as the environment names it.
#[derive(Debug, Clone)]
pub struct EnvKey {
    /// `CONSUMER_<SECTION>_<KEY>`, upper-cased.
    pub variable: String,
    /// `section.key`, as in messages.
    pub key: String,
    section: String,
    name: String,
    /// The built-in value; its type says how the variable's text is read.
    default: toml::Value,
}

/// Every key of the configuration with its variable, in the order of the file, derived from
/// [`Config`] itself (its defaults, serialized), so a new key has its variable without a list
/// to keep.
pub fn env_keys() -> Vec<EnvKey> {
    let defaults = Config::default();
    let (Ok(table), Ok(text)) = (toml::Table::try_from(&defaults), toml::to_string(&defaults))
    else {
        return Vec::new();
    };
    // The table is sorted by name; the text has the structs' order, the file's.
    let mut keys = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let Some((name, _)) = line.split_once(" = ") else {
            continue;
        };
        let Some(default) = table.get(&section).and_then(|t| t.get(name)) else {
            continue;
        };
        // A list of tables ([[auth.token]]) has no one-line form.
        if section == "auth" && name == "token" {
            continue;
        }
        keys.push(EnvKey {
            variable: format!("{ENV_PREFIX}{section}_{name}").to_uppercase(),
            key: format!("{section}.{name}"),
            section: section.clone(),
            name: name.to_string(),
            default: default.clone(),
        });
    }
    keys
}

/// Reads a variable's text as the file would hold the key's value: a whole number or
/// `true`/`false` as TOML writes them, a list as comma-separated items, a string as it is
/// (or quoted as in TOML).
fn env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    use toml::Value;
    let trimmed = raw.trim();
    match default {
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_string()))
                .collect(),
        )),
        Value::Integer(_) => match trimmed.parse::<Value>() {
            Ok(number @ Value::Integer(_)) => Ok(number),
            _ => Err(format!(
                "{raw:?} is not a whole number (written as in consumer.toml, e.g. {default})"
            )),
        },
        Value::Boolean(_) => match trimmed {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("{raw:?} is neither true nor false")),
        },
        _ if trimmed.starts_with(['"', '\'']) => match trimmed.parse::<Value>() {
            Ok(text @ Value::String(_)) => Ok(text),
            _ => Err(format!(
                "{raw:?} starts with a quote but is not a TOML string"
            )),
        },
        _ => Ok(Value::String(raw.to_string())),
    }
}

/// The edit distance of two names, to suggest the variable a typo meant.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What the environment sets.
#[derive(Debug, Default)]
struct FromEnv {
    /// Keys set by a variable: (key, variable, value).
    settings: Vec<(EnvKey, toml::Value)>,
    /// `CONSUMER_AUTH_TOKENS`, when set.
    tokens: Option<String>,
}

/// Reads every `CONSUMER_*` variable of `vars`; an unknown one, or a value that does not fit
/// its key, is an error naming the variable. An empty variable counts as unset.
fn read_env(vars: &[(OsString, OsString)]) -> Result<FromEnv, ConfigError> {
    let keys = env_keys();
    let mut vars: Vec<&(OsString, OsString)> = vars.iter().collect();
    vars.sort();
    let mut found = FromEnv::default();
    for (name, value) in vars {
        let name = name.to_string_lossy().into_owned();
        let refuse = |origin: String, message: String| ConfigError { origin, message };
        let Some(value) = value.to_str() else {
            return Err(refuse(name, "the value is not UTF-8".into()));
        };
        if value.is_empty() {
            continue;
        }
        if name == ENV_TOKENS {
            found.tokens = Some(value.to_string());
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.variable == name) else {
            let nearest = keys
                .iter()
                .map(|k| k.variable.as_str())
                .chain([ENV_TOKENS])
                .min_by_key(|known| distance(&name, known))
                .filter(|known| distance(&name, known) <= 3)
                .map(|known| format!("; did you mean {known}?"))
                .unwrap_or_default();
            return Err(refuse(
                name,
                format!(
                    "no such setting{nearest} Every key of the configuration file has a variable {ENV_PREFIX}<SECTION>_<KEY> (e.g. CONSUMER_SERVER_LISTEN for [server] listen); `metrics-consumer --help` lists them"
                ),
            ));
        };
        let origin = format!("{name} (sets {})", key.key);
        let parsed = env_value(&key.default, value).map_err(|m| refuse(origin.clone(), m))?;
        // The value alone, as the only key of a configuration: what the key's type refuses
        // (a duration without a unit, an unknown api) is this variable's fault.
        let mut section = toml::Table::new();
        section.insert(key.name.clone(), parsed.clone());
        let mut alone = toml::Table::new();
        alone.insert(key.section.clone(), toml::Value::Table(section));
        alone
            .try_into::<Config>()
            .map_err(|e| refuse(origin, e.message().to_string()))?;
        found.settings.push((key.clone(), parsed));
    }
    Ok(found)
}

/// Where the settings came from besides the file: the environment and the command line.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
    /// The environment's variables whose names start with [`ENV_PREFIX`].
    pub env: Vec<(OsString, OsString)>,
}

impl Overrides {
    /// Takes every `CONSUMER_*` variable of the process's environment.
    pub fn from_env() -> Overrides {
        Overrides {
            env: std::env::vars_os()
                .filter(|(name, _)| name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes()))
                .collect(),
            ..Overrides::default()
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
    pub warnings: Vec<String>,
    /// Keys set by a variable or a flag, and by which.
    origins: BTreeMap<String, Origin>,
}

impl Settings {
    /// Files holding secrets that other users can read: the configuration file when it has a
    /// secret inline, and every secret file it names (the TLS key too). Worth a warning at start, not a refusal
    /// (the operator may have reasons), so the caller logs these.
    pub fn readable_secrets(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let c = &self.config;
        let base = self.base();
        let mut files = Vec::new();
        if self.file_has_secrets {
            files.push(self.file.clone());
        }
        let named = [
            &c.influxdb.password_file,
            &c.influxdb.token_file,
            &c.server.tls_key,
        ]
        .into_iter()
        .chain(&c.auth.token_files);
        files.extend(named.filter(|p| !p.is_empty()).map(|p| base.join(p)));
        files
            .into_iter()
            .filter(|f| fs::metadata(f).is_ok_and(|m| m.permissions().mode() & 0o004 != 0))
            .collect()
    }

    /// The directory relative paths of files the gateway reads are found in: the
    /// configuration file's, whether or not that file exists.
    fn base(&self) -> &Path {
        base_of(&self.file)
    }

    /// The certificate and key files for HTTPS, when both are set. Relative paths are
    /// relative to the configuration file, as for secret files.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let s = &self.config.server;
        if s.tls_cert.is_empty() || s.tls_key.is_empty() {
            return None;
        }
        let base = self.base();
        Some((base.join(&s.tls_cert), base.join(&s.tls_key)))
    }

    /// An error about `key` (`"server.tls_key"`), blamed on what set it: the file, a
    /// variable or a flag. `message` starts with the key, as every message here does.
    pub fn error_about(&self, key: &str, message: String) -> ConfigError {
        blame(&self.origins, &self.file, key, message)
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
            text.push_str(&format!(
                "#   {}: max_running {}, {rate}\n",
                crate::logtext::escape(&c.name, 100),
                c.max_running
            ));
        }
        text
    }
}

/// The directory of `file`, `.` for a bare name.
fn base_of(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A message about `key` as a [`ConfigError`] of what set the key. For a variable or a flag
/// the key moves into the origin: `CONSUMER_LOG_LEVEL (sets log.level): "loud" is not…`.
fn blame(
    origins: &BTreeMap<String, Origin>,
    file: &Path,
    key: &str,
    message: String,
) -> ConfigError {
    let detail = |message: String| match message.strip_prefix(&format!("{key}: ")) {
        Some(rest) => rest.to_string(),
        None => message,
    };
    match origins.get(key) {
        None => ConfigError {
            origin: file.display().to_string(),
            message,
        },
        Some(Origin::Env(variable)) => ConfigError {
            origin: format!("{variable} (sets {key})"),
            message: detail(message),
        },
        Some(Origin::Flag(flag)) => ConfigError {
            origin: (*flag).to_string(),
            message: detail(message),
        },
    }
}

/// Loads the configuration: built-in defaults, then `file`, then the environment, then the
/// command-line flags, each winning over the ones before. A missing file is an error only
/// when `required` (the user named it with `--config`); the default `./consumer.toml` may be
/// absent, and then every key not set otherwise has its default.
pub fn load(file: &Path, required: bool, overrides: Overrides) -> Result<Settings, ConfigError> {
    let in_file = |message: String| ConfigError {
        origin: file.display().to_string(),
        message,
    };
    let (text, file_found) = match fs::read_to_string(file) {
        Ok(text) => (text, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => (String::new(), false),
        Err(e) => return Err(in_file(format!("cannot read the configuration file: {e}"))),
    };
    // The file alone first, so that its mistakes are blamed on it.
    let from_file: Config = toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
    let file_has_secrets = !from_file.auth.tokens.is_empty()
        || from_file.auth.named.iter().any(|t| !t.token.is_empty())
        || !from_file.influxdb.password.is_empty()
        || !from_file.influxdb.token.is_empty();

    let env = read_env(&overrides.env)?;
    let mut origins = BTreeMap::new();
    let mut config = if env.settings.is_empty() {
        from_file
    } else {
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
        for (key, value) in &env.settings {
            let section = table
                .entry(key.section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(section) = section.as_table_mut() {
                section.insert(key.name.clone(), value.clone());
            }
            origins.insert(key.key.clone(), Origin::Env(key.variable.clone()));
        }
        table.try_into::<Config>().map_err(|e| ConfigError {
            origin: "the environment".into(),
            message: e.message().to_string(),
        })?
    };
    let mut from_env: Vec<String> = env
        .settings
        .iter()
        .map(|(key, _)| key.variable.clone())
        .collect();
    from_env.extend(env.tokens.as_ref().map(|_| ENV_TOKENS.to_string()));
    from_env.sort();

    if let Some(listen) = overrides.listen {
        config.server.listen = listen;
        origins.insert("server.listen".into(), Origin::Flag("--listen"));
    }
    if let Some(level) = overrides.log_level {
        config.log.level = level;
        origins.insert("log.level".into(), Origin::Flag("--log-level"));
    }
    let about = |key: &str, message: String| blame(&origins, file, key, message);

    let base = base_of(file);
    let mut warnings = Vec::new();
    resolve_secrets(&mut config, file, &origins, &mut warnings)
        .map_err(|(key, message)| about(key, message))?;

    let (clients, empty_files) =
        read_clients(&config, base, env.tokens.as_deref()).map_err(|(key, message)| match key {
            ENV_TOKENS => ConfigError {
                origin: ENV_TOKENS.into(),
                message,
            },
            key => about(key, message),
        })?;
    for path in empty_files {
        {
            warnings.push(about(
                "auth.token_files",
                format!(
                    "auth.token_files: {} holds no token (one per line, TOKEN or NAME:TOKEN; make one with `openssl rand -hex 32`)",
                    base.join(&path).display()
                ),
            ));
        }
    }

    let (listen, level) = validate(&config).map_err(|message| {
        let key = key_of(&message).unwrap_or_default();
        about(&key, message)
    })?;
    if clients.is_empty() && !listen.ip().is_loopback() && !config.auth.allow_unauthenticated {
        return Err(about(
            "server.listen",
            format!(
                "server.listen: {listen} is not a loopback address and no tokens are configured, so anyone who can reach the port could write; add a token to auth.tokens, auth.token_files or {ENV_TOKENS} (make one with `openssl rand -hex 32`), or set auth.allow_unauthenticated = true if the network is trusted"
            ),
        ));
    }
    warnings.extend(
        credential_warnings(&config)
            .into_iter()
            .map(|(key, message)| about(key, message)),
    );
    Ok(Settings {
        file: file.to_path_buf(),
        file_found,
        config,
        listen,
        level,
        clients,
        file_has_secrets,
        from_env,
        warnings: warnings.into_iter().map(|w| w.to_string()).collect(),
        origins,
    })
}

/// A mistake about a key: (key, message).
type KeyError = (&'static str, String);

/// Every client token, in the order `auth.tokens`, `auth.token_files`, `CONSUMER_AUTH_TOKENS`
/// (`env_tokens`, comma-separated), `[[auth.token]]`, each with its name and limits. A token
/// without a name is named after where it is: `auth.tokens[2]`, `tokens.txt:3` (file and
/// line), `CONSUMER_AUTH_TOKENS[1]`. A client without its own `max_running` gets an equal share
/// of `jobs.max_running`, so no token can take every slot from the others.
///
/// Also returns the token files that hold no token (worth a warning).
///
/// Errors, as (key, message): a token that is not usable, a name that is not, two clients
/// with one name, one token under two names, a `[[auth.token]]` with neither or both of
/// `token` and `token_file`.
fn read_clients(
    config: &Config,
    base: &Path,
    env_tokens: Option<&str>,
) -> Result<(Vec<Client>, Vec<String>), KeyError> {
    let auth = &config.auth;
    let mut clients: Vec<Client> = Vec::new();
    let mut empty_files = Vec::new();
    let unnamed = |name: String, token: &str| Client {
        name,
        token: token.to_string(),
        max_running: 0,
        max_table_bytes: 0,
        requests_per_second: 0.0,
    };
    for (i, token) in auth.tokens.iter().enumerate() {
        let name = format!("auth.tokens[{}]", i + 1);
        check_token(token)
            .map_err(|m| ("auth.tokens", format!("auth.tokens: token #{}{m}", i + 1)))?;
        clients.push(unnamed(name, token));
    }
    for path in &auth.token_files {
        let before = clients.len();
        let full = base.join(path);
        let text = read_secret_file(base, path)
            .map_err(|m| ("auth.token_files", format!("auth.token_files: {m}")))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("auth.token_files: {} line {}", full.display(), i + 1);
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => {
                    check_name(name)
                        .map_err(|m| ("auth.token_files", format!("{}: the name{m}", at())))?;
                    (name.to_string(), token)
                }
                // Named after where it is: a name that can be a tag value (token_name).
                None => (
                    format!(
                        "{}:{}",
                        crate::ingest::line_protocol::sanitize_tag_value(path, 200),
                        i + 1
                    ),
                    line,
                ),
            };
            check_token(token)
                .map_err(|m| ("auth.token_files", format!("{}: the token{m}", at())))?;
            clients.push(unnamed(name, token));
        }
        if clients.len() == before {
            empty_files.push(path.clone());
        }
    }
    if let Some(list) = env_tokens {
        let listed = list.split(',').map(str::trim).filter(|t| !t.is_empty());
        for (i, token) in listed.enumerate() {
            check_token(token).map_err(|m| (ENV_TOKENS, format!("token #{}{m}", i + 1)))?;
            clients.push(unnamed(format!("{ENV_TOKENS}[{}]", i + 1), token));
        }
    }
    for (i, t) in auth.named.iter().enumerate() {
        let at = format!("auth.token[{}]", i + 1);
        if t.name.is_empty() {
            return Err((
                "auth.token",
                format!("{at}: every [[auth.token]] needs a name (name = \"team-a\")"),
            ));
        }
        check_name(&t.name).map_err(|m| ("auth.token", format!("{at}.name: {:?}{m}", t.name)))?;
        let token = match (t.token.is_empty(), t.token_file.is_empty()) {
            (false, true) => t.token.clone(),
            (true, false) => read_secret_file(base, &t.token_file)
                .map_err(|m| ("auth.token", format!("{at}.token_file ({}): {m}", t.name)))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            _ => {
                return Err((
                    "auth.token",
                    format!("{at} ({}): set one of token and token_file", t.name),
                ));
            }
        };
        check_token(&token)
            .map_err(|m| ("auth.token", format!("{at} ({}): the token{m}", t.name)))?;
        if !(t.requests_per_second.is_finite() && t.requests_per_second >= 0.0) {
            return Err((
                "auth.token",
                format!(
                    "{at}.requests_per_second ({}): must be 0 (no limit) or more",
                    t.name
                ),
            ));
        }
        clients.push(Client {
            name: t.name.clone(),
            token,
            max_running: t.max_running,
            max_table_bytes: 0,
            requests_per_second: t.requests_per_second,
        });
    }
    for (i, c) in clients.iter().enumerate() {
        if let Some(other) = clients[..i].iter().find(|o| o.name == c.name) {
            return Err((
                "auth.token",
                format!(
                    "auth: two tokens are named {:?}; give each its own name",
                    other.name
                ),
            ));
        }
        if let Some(other) = clients[..i].iter().find(|o| o.token == c.token) {
            return Err((
                "auth.token",
                format!(
                    "auth: {:?} and {:?} are the same token; give each client its own",
                    other.name, c.name
                ),
            ));
        }
    }
    let max = config.jobs.max_running;
    let share = if clients.len() > 1 {
        (max / clients.len()).max(1)
    } else {
        max
    };
    let table = config.jobs.max_table_bytes;
    for c in &mut clients {
        if c.max_running == 0 {
            c.max_running = share;
        }
        // The table's bytes are shared as its places are; one run of the largest size always
        // fits.
        let part = (table as u128 * c.max_running.min(max) as u128 / max.max(1) as u128) as usize;
        c.max_table_bytes = part.max(2 * config.limits.max_run_bytes).min(table);
    }
    Ok((clients, empty_files))
}

/// A client's name: 1 to 64 letters, digits, `.`, `_` or `-` (it may become a tag value, and
/// is shown in logs). The error follows the name in the message.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(
            " is not usable: a name is 1 to 64 letters, digits, '.', '_' or '-'".to_string(),
        );
    }
    Ok(())
}

/// A token: at least 16 characters, no spaces or control characters. The error follows the
/// token's description in the message.
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < 16 || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(" is not usable: a token must be at least 16 characters with no spaces or control characters (make one with `openssl rand -hex 32`)".to_string());
    }
    Ok(())
}

/// InfluxDB credentials that can never authenticate, as (key, message): v2 or v3 without a token,
/// a v1 user without a password, a v1 password without a user (never sent).
fn credential_warnings(c: &Config) -> Vec<(&'static str, String)> {
    let i = &c.influxdb;
    let mut found = Vec::new();
    match i.api {
        // An empty token_file has a warning of its own.
        Api::V2 | Api::V3 if i.token.is_empty() && i.token_file.is_empty() => found.push((
            "influxdb.api",
            format!(
                "influxdb.api: {:?} without a token (influxdb.token, influxdb.token_file or CONSUMER_INFLUXDB_TOKEN): InfluxDB 2.x and 3.x refuse every write (401) unless they run without authentication",
                i.api.to_string()
            ),
        )),
        Api::V1 if !i.username.is_empty() && i.password.is_empty() && i.password_file.is_empty() => found.push((
            "influxdb.username",
            format!(
                "influxdb.username: {:?} without a password (influxdb.password, influxdb.password_file or CONSUMER_INFLUXDB_PASSWORD): InfluxDB with authentication refuses every write (401)",
                i.username
            ),
        )),
        Api::V1 if i.username.is_empty() && !i.password.is_empty() => found.push((
            "influxdb.password",
            "influxdb.password: set without influxdb.username, so it is never sent: set the user too".to_string(),
        )),
        _ => {}
    }
    found
}

/// Reads a secret from a file named in the configuration; relative paths are relative to the
/// configuration file, so a config and its secrets can move together.
fn read_secret_file(base: &Path, path: &str) -> Result<String, String> {
    let full = base.join(path);
    fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
}

/// Reads `influxdb.password_file` and `influxdb.token_file` into the password and the token,
/// unless a variable set those (`CONSUMER_INFLUXDB_PASSWORD` wins over the file's
/// `password_file`). An empty secret file is worth a warning: it can never authenticate.
fn resolve_secrets(
    config: &mut Config,
    file: &Path,
    origins: &BTreeMap<String, Origin>,
    warnings: &mut Vec<ConfigError>,
) -> Result<(), (&'static str, String)> {
    let base = base_of(file);
    let influx = &mut config.influxdb;
    for (key, path, secret, set_by_env) in [
        (
            "influxdb.password_file",
            &influx.password_file,
            &mut influx.password,
            origins.contains_key("influxdb.password"),
        ),
        (
            "influxdb.token_file",
            &influx.token_file,
            &mut influx.token,
            origins.contains_key("influxdb.token"),
        ),
    ] {
        if path.is_empty() || set_by_env {
            continue;
        }
        let text = read_secret_file(base, path).map_err(|m| (key, format!("{key}: {m}")))?;
        *secret = text.trim_end_matches(['\r', '\n']).to_string();
        if secret.trim().is_empty() {
            warnings.push(blame(
                origins,
                file,
                key,
                format!(
                    "{key}: {} is empty: InfluxDB with authentication refuses every write (401); put the secret alone on one line",
                    base.join(path.as_str()).display()
                ),
            ));
        }
    }
    Ok(())
}

/// The key a message of [`validate`] is about: the `section.key` it starts with (the first,
/// when it names several).
fn key_of(message: &str) -> Option<String> {
    let named = message.split([':', ',']).next()?;
    env_keys()
        .into_iter()
        .map(|k| k.key)
        .find(|key| key == named)
}

/// Checks what the types cannot; every message starts with the key it is about.
fn validate(c: &Config) -> Result<(SocketAddr, log::LevelFilter), String> {
    let listen: SocketAddr = c.server.listen.parse().map_err(|_| {
        format!(
            "server.listen: {:?} is not an address with a port, e.g. \"127.0.0.1:3000\" or \"[::]:3000\"",
            c.server.listen
        )
    })?;
    let s = &c.server;
    if s.workers == 0 {
        return Err("server.workers: must be at least 1".into());
    }
    if s.max_connections < s.workers {
        return Err(format!(
            "server.max_connections: {} is less than server.workers ({}); raise it or lower workers",
            s.max_connections, s.workers
        ));
    }
    if s.max_connections > 100_000 {
        return Err("server.max_connections: at most 100000 (each connection has a thread)".into());
    }
    if s.max_connections_per_ip == 0 {
        return Err("server.max_connections_per_ip: must be at least 1".into());
    }
    for (key, d) in [
        ("server.header_timeout", s.header_timeout),
        ("server.idle_timeout", s.idle_timeout),
        ("influxdb.timeout", c.influxdb.timeout),
        ("jobs.max_age", c.jobs.max_age),
        ("jobs.progress_timeout", c.jobs.progress_timeout),
    ] {
        if d.0.is_zero() {
            return Err(format!("{key}: must be longer than 0"));
        }
    }
    if c.jobs.heartbeat_interval.0 < Duration::from_millis(100) {
        return Err("jobs.heartbeat_interval: must be at least \"100ms\"".into());
    }
    if s.max_body_bytes == 0 || s.max_body_bytes > 64 * 1024 * 1024 {
        return Err("server.max_body_bytes: must be between 1 and 67108864 (64 MiB)".into());
    }
    if s.max_inflated_bytes < s.max_body_bytes || s.max_inflated_bytes > 256 * 1024 * 1024 {
        return Err(format!(
            "server.max_inflated_bytes: must be between server.max_body_bytes ({}) and 268435456 (256 MiB)",
            s.max_body_bytes
        ));
    }
    // One request with a compressed body holds its body and what it inflates to at once; less
    // than that could never serve it, whatever else is in flight.
    let one_request = s.max_body_bytes + s.max_inflated_bytes;
    if s.max_body_bytes_in_flight < one_request {
        return Err(format!(
            "server.max_body_bytes_in_flight: {} is less than server.max_body_bytes + server.max_inflated_bytes ({one_request}), what one compressed request may hold; raise it",
            s.max_body_bytes_in_flight
        ));
    }
    if s.tls_cert.is_empty() != s.tls_key.is_empty() {
        let (set, unset) = if s.tls_key.is_empty() {
            ("server.tls_cert", "server.tls_key")
        } else {
            ("server.tls_key", "server.tls_cert")
        };
        return Err(format!(
            "{set}: set without {unset}: set both (PEM files) for HTTPS, or neither"
        ));
    }
    let i = &c.influxdb;
    if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
        return Err(format!(
            "influxdb.url: {:?} must start with http:// or https://",
            i.url
        ));
    }
    let authority = i
        .url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    if authority.contains('@') {
        return Err(
            "influxdb.url: must not contain credentials; use influxdb.username and influxdb.password (v1) or influxdb.token (v2, v3)".into(),
        );
    }
    if authority.is_empty() {
        return Err(format!("influxdb.url: {:?} has no host", i.url));
    }
    match i.api {
        Api::V1 | Api::V3 if i.database.is_empty() => {
            return Err(format!(
                "influxdb.database: must be set for api = \"{}\"",
                i.api
            ));
        }
        Api::V2 if i.org.is_empty() || i.bucket.is_empty() => {
            return Err("influxdb.org, influxdb.bucket: both must be set for api = \"v2\"".into());
        }
        _ => {}
    }
    if i.max_write_bytes < 1024 || i.max_write_bytes > 64 << 20 {
        return Err(
            "influxdb.max_write_bytes: must be between 1024 and 67108864 (64 MiB); InfluxDB 1.x takes 25 MB at most, 3.x 10 MiB".into(),
        );
    }
    if i.schema_refresh.0 < Duration::from_secs(1) {
        return Err("influxdb.schema_refresh: must be at least \"1s\"".into());
    }
    if i.max_write_lines == 0 {
        return Err("influxdb.max_write_lines: must be at least 1".into());
    }
    if c.jobs.max_running == 0 {
        return Err("jobs.max_running: must be at least 1".into());
    }
    if c.storage.dir.is_empty() {
        return Err("storage.dir: must name a directory".into());
    }

    if c.limits.max_stats_rows == 0 {
        return Err("limits.max_stats_rows: must be at least 1".into());
    }
    if c.auth.max_failures == 0 {
        return Err("auth.max_failures: must be at least 1".into());
    }
    if c.auth.failure_window.0.is_zero() {
        return Err("auth.failure_window: must be longer than 0".into());
    }
    if c.limits.max_run_bytes < 1024 {
        return Err("limits.max_run_bytes: must be at least 1024".into());
    }
    if c.jobs.max_table_bytes < c.limits.max_run_bytes {
        return Err(format!(
            "jobs.max_table_bytes: must be at least limits.max_run_bytes ({})",
            c.limits.max_run_bytes
        ));
    }

    let level = c.log.level.parse::<log::LevelFilter>().map_err(|_| {
        format!(
            "log.level: {:?} is not one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
            c.log.level
        )
    })?;
    Ok((listen, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overrides with these environment variables only.
    fn env(vars: &[(&str, &str)]) -> Overrides {
        Overrides {
            env: vars
                .iter()
                .map(|(name, value)| (OsString::from(name), OsString::from(value)))
                .collect(),
            ..Overrides::default()
        }
    }

    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Loads `text` as `consumer.toml` in a directory of its own, with `files` (name, content)
    /// beside it.
    fn load_in_dir(
        text: &str,
        files: &[(&str, &str)],
        overrides: Overrides,
    ) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "mc-config-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
        let file = dir.join("consumer.toml");
        fs::write(&file, text).unwrap();
        let result = load(&file, true, overrides);
        fs::remove_dir_all(&dir).ok();
        result
    }

    /// The whole error, origin and message, of loading `text` with `overrides`.
    fn load_error(text: &str, overrides: Overrides) -> String {
        load_in_dir(text, &[], overrides)
            .expect_err("the configuration should be refused")
            .to_string()
    }

    fn load_text(text: &str, overrides: Overrides) -> Result<Settings, String> {
        load_in_dir(text, &[], overrides).map_err(|e| e.message)
    }

    /// Loads `text` with `files` (name, content) beside it.
    fn load_with_files(text: &str, files: &[(&str, &str)]) -> Result<Settings, String> {
        load_in_dir(text, files, Overrides::default()).map_err(|e| e.message)
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccc";

    #[test]
    fn tokens_have_names_and_an_equal_share_of_max_running() {
        let text = format!(
            "[jobs]\nmax_running = 2000\n[auth]\ntokens = [\"{A}\"]\ntoken_files = [\"tokens\"]\n\
             [[auth.token]]\nname = \"ci\"\ntoken_file = \"ci.token\"\nmax_running = 50\nrequests_per_second = 5.5\n"
        );
        let s = load_with_files(
            &text,
            &[
                ("tokens", &format!("# team tokens\nteam-a:{B}\n\n{C}\n")),
                ("ci.token", &format!("{}\n", "d".repeat(20))),
            ],
        )
        .unwrap();
        let shown: Vec<(&str, usize, f64)> = s
            .clients
            .iter()
            .map(|c| (c.name.as_str(), c.max_running, c.requests_per_second))
            .collect();
        assert_eq!(
            shown,
            [
                ("auth.tokens[1]", 500, 0.0),
                ("team-a", 500, 0.0),
                ("tokens:4", 500, 0.0),
                ("ci", 50, 5.5),
            ]
        );
        assert_eq!(s.clients[1].token, B);
        assert_eq!(s.clients[3].token, "d".repeat(20));
        let listed = s.redacted_toml();
        assert!(
            listed.contains("#   team-a: max_running 500, no request rate limit"),
            "{listed}"
        );
        assert!(
            listed.contains("#   ci: max_running 50, 5.5 requests per second"),
            "{listed}"
        );
        for token in [A, B, C] {
            assert!(!listed.contains(token), "{listed}");
        }
        // One token alone has all of jobs.max_running.
        let one = load_text(
            &format!("[jobs]\nmax_running = 2000\n[auth]\ntokens = [\"{A}\"]\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(one.clients[0].max_running, 2000);
    }

    #[test]
    fn token_names_and_tables_that_cannot_work_are_refused() {
        for (text, files, expected) in [
            (
                format!(
                    "[auth]\ntokens = [\"{A}\"]\n[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\n"
                ),
                vec![],
                "\"auth.tokens[1]\" and \"x\" are the same token",
            ),
            (
                format!(
                    "[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\n[[auth.token]]\nname = \"x\"\ntoken = \"{B}\"\n"
                ),
                vec![],
                "two tokens are named \"x\"",
            ),
            (
                format!("[[auth.token]]\nname = \"team a\"\ntoken = \"{A}\"\n"),
                vec![],
                "auth.token[1].name: \"team a\" is not usable",
            ),
            (
                format!("[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\ntoken_file = \"f\"\n"),
                vec![],
                "auth.token[1] (x): set one of token and token_file",
            ),
            (
                "[[auth.token]]\nname = \"x\"\ntoken = \"short\"\n".to_string(),
                vec![],
                "auth.token[1] (x): the token is not usable",
            ),
            (
                format!(
                    "[[auth.token]]\nname = \"x\"\ntoken = \"{A}\"\nrequests_per_second = -1\n"
                ),
                vec![],
                "requests_per_second (x): must be 0 (no limit) or more",
            ),
            (
                "[auth]\ntoken_files = [\"t\"]\n".to_string(),
                vec![("t", format!("bad name!:{A}\n"))],
                "line 1: the name is not usable",
            ),
            (
                "[auth]\nmax_failures = 0\n".to_string(),
                vec![],
                "auth.max_failures: must be at least 1",
            ),
            (
                format!("[[auth.token]]\ntoken = \"{A}\"\n"),
                vec![],
                "auth.token[1]: every [[auth.token]] needs a name",
            ),
        ] {
            let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
            let err = load_with_files(&text, &files).expect_err(&text);
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn named_tokens_have_no_variable() {
        assert!(env_keys().iter().all(|k| k.key != "auth.token"));
        assert!(
            env_keys()
                .iter()
                .any(|k| k.key == "auth.tag_runs_with_token_name")
        );
    }

    fn check_err(text: &str, expected: &str) {
        let err = load_text(text, Overrides::default()).expect_err("config should be refused");
        assert!(
            err.contains(expected),
            "error {err:?} should contain {expected:?}"
        );
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let s = load_text("", Overrides::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(s.config.server.workers, 16);
        assert_eq!(s.config.jobs.heartbeat_interval.0, Duration::from_secs(15));
        assert_eq!(s.config.influxdb.api, Api::V1);
        assert_eq!(s.level, log::LevelFilter::Info);
    }

    #[test]
    fn the_shipped_file_loads_and_lists_every_key() {
        let shipped = include_str!("../consumer.toml");
        let s = load_text(shipped, Overrides::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:3000".parse().unwrap());
        // Every key of the default configuration appears in the shipped file.
        let defaults: toml::Table =
            toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        let shipped: toml::Table = toml::from_str(shipped).unwrap();
        for (table, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            for key in keys.keys() {
                if table == "auth" && key == "token" {
                    // [[auth.token]] tables are shown commented out: there are none by default.
                    assert!(include_str!("../consumer.toml").contains("# [[auth.token]]"));
                    continue;
                }
                assert!(
                    shipped.get(table).and_then(|t| t.get(key)).is_some(),
                    "consumer.toml lacks [{table}] {key}"
                );
            }
        }
    }

    #[test]
    fn errors_name_the_key() {
        check_err("[server]\nlisten = \"nowhere\"\n", "server.listen");
        check_err("[server]\nworkers = 0\n", "server.workers");
        check_err(
            "[server]\nheader_timeout = \"10\"\n",
            "10 has no unit: a duration is a string with one, e.g. \"10s\"",
        );
        check_err("[server]\nbogus = 1\n", "unknown field `bogus`");
        check_err("[influxdb]\napi = \"v4\"\n", "unknown variant `v4`");
        check_err(
            "[influxdb]\napi = \"v3\"\ndatabase = \"\"\n",
            "influxdb.database: must be set for api = \"v3\"",
        );
        check_err(
            "[influxdb]\nurl = \"http://u:p@h:8086\"\n",
            "influxdb.url: must not contain credentials",
        );
        check_err(
            "[influxdb]\napi = \"v2\"\n",
            "influxdb.org, influxdb.bucket",
        );
        check_err("[log]\nlevel = \"loud\"\n", "log.level");
        check_err(
            "[jobs]\nheartbeat_interval = \"10ms\"\n",
            "jobs.heartbeat_interval",
        );
        check_err(
            "[server]\ntls_cert = \"a.pem\"\n",
            "server.tls_cert: set without server.tls_key",
        );
        check_err(
            "[influxdb]\npassword_file = \"missing\"\n",
            "influxdb.password_file: cannot read",
        );
        check_err("[auth]\ntokens = [\"short\"]\n", "token #1 is not usable");
        check_err(
            "[server]\nmax_body_bytes = 2000000\nmax_inflated_bytes = 1000000\n",
            "server.max_inflated_bytes: must be between server.max_body_bytes (2000000)",
        );
        check_err(
            "[server]\nmax_body_bytes_in_flight = 16777216\n",
            "server.max_body_bytes_in_flight: 16777216 is less than server.max_body_bytes + server.max_inflated_bytes (17825792)",
        );
        check_err(
            "[server]\nmax_body_bytes = 41943040\nmax_inflated_bytes = 41943040\n",
            "server.max_body_bytes_in_flight: 67108864 is less than",
        );
    }

    #[test]
    fn environment_overrides_the_file_and_is_redacted() {
        let overrides = env(&[
            ("CONSUMER_INFLUXDB_PASSWORD", "from-env"),
            (
                "CONSUMER_AUTH_TOKENS",
                "0123456789abcdef0123, fedcba9876543210fedc",
            ),
        ]);
        let s = load_text("[influxdb]\npassword = \"from-file\"\n", overrides).unwrap();
        assert_eq!(s.config.influxdb.password, "from-env");
        assert_eq!(s.clients.len(), 2);
        assert_eq!(
            s.from_env,
            ["CONSUMER_AUTH_TOKENS", "CONSUMER_INFLUXDB_PASSWORD"]
        );
        let shown = s.redacted_toml();
        assert!(!shown.contains("from-env") && !shown.contains("0123456789abcdef0123"));
        assert!(shown.contains(REDACTED));
    }

    /// The variable of every key in the shipped file, set to the file's own value, loads and
    /// gives that value: no key lacks a variable, and every type reads from text.
    #[test]
    fn every_key_of_the_shipped_file_has_a_variable() {
        let shipped: toml::Table = toml::from_str(include_str!("../consumer.toml")).unwrap();
        let keys = env_keys();
        let mut seen = 0;
        for (section, table) in &shipped {
            for (name, value) in table.as_table().unwrap() {
                let variable = format!("CONSUMER_{}_{}", section, name).to_uppercase();
                assert!(
                    keys.iter().any(|k| k.variable == variable),
                    "[{section}] {name} has no variable {variable}"
                );
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                if text.is_empty() {
                    continue; // an empty variable counts as unset
                }
                let s = load_text("", env(&[(&variable, &text)]))
                    .unwrap_or_else(|e| panic!("{variable}={text}: {e}"));
                let effective: toml::Table = toml::from_str(&s.redacted_toml()).unwrap();
                assert_eq!(
                    effective[section.as_str()][name.as_str()],
                    *value,
                    "{variable}={text}"
                );
                assert_eq!(s.from_env, std::slice::from_ref(&variable));
                seen += 1;
            }
        }
        assert!(seen > 25, "only {seen} keys tried");
    }

    #[test]
    fn variables_read_values_as_the_file_does() {
        let s = load_text(
            "",
            env(&[
                ("CONSUMER_SERVER_MAX_BODY_BYTES", "2_000_000"),
                ("CONSUMER_SERVER_MAX_INFLATED_BYTES", "16777216"),
                ("CONSUMER_INFLUXDB_CREATE_DATABASE", "false"),
                ("CONSUMER_DELIVERY_ACKNOWLEDGE", "influxdb"),
                ("CONSUMER_JOBS_HEARTBEAT_INTERVAL", "\"2s\""),
                ("CONSUMER_AUTH_TOKEN_FILES", ""),
                ("CONSUMER_INFLUXDB_URL", "http://influxdb:8086"),
                ("CONSUMER_INFLUXDB_API", "v2"),
                ("CONSUMER_INFLUXDB_ORG", "lab"),
                ("CONSUMER_INFLUXDB_BUCKET", "runs"),
                ("CONSUMER_INFLUXDB_TOKEN", "secret-token"),
            ]),
        )
        .unwrap();
        let c = &s.config;
        assert_eq!(c.server.max_body_bytes, 2_000_000);
        assert!(!c.influxdb.create_database);
        assert_eq!(
            c.delivery.acknowledge,
            crate::delivery::Acknowledge::Influxdb
        );
        assert_eq!(c.jobs.heartbeat_interval.0, Duration::from_secs(2));
        assert_eq!(c.influxdb.url, "http://influxdb:8086");
        assert_eq!(c.influxdb.token, "secret-token");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(
            !s.from_env
                .contains(&"CONSUMER_AUTH_TOKEN_FILES".to_string())
        );

        let dir = std::env::temp_dir().join(format!("mc-env-lists-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a"), "0123456789abcdef-a\n").unwrap();
        fs::write(dir.join("b"), "0123456789abcdef-b\n").unwrap();
        let file = dir.join("consumer.toml");
        let s = load(&file, false, env(&[("CONSUMER_AUTH_TOKEN_FILES", "a, b")])).unwrap();
        assert!(!s.file_found);
        assert_eq!(s.config.auth.token_files, ["a", "b"]);
        assert_eq!(
            s.clients
                .iter()
                .map(|c| c.token.as_str())
                .collect::<Vec<_>>(),
            ["0123456789abcdef-a", "0123456789abcdef-b"]
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn flag_beats_environment_beats_file_beats_default() {
        let file = "[server]\nlisten = \"127.0.0.1:1001\"\nworkers = 3\n[log]\nlevel = \"warn\"\n";
        let mut overrides = env(&[
            ("CONSUMER_SERVER_LISTEN", "127.0.0.1:1002"),
            ("CONSUMER_LOG_LEVEL", "debug"),
        ]);
        overrides.listen = Some("127.0.0.1:1003".into());
        let s = load_text(file, overrides).unwrap();
        assert_eq!(s.listen, "127.0.0.1:1003".parse().unwrap(), "the flag wins");
        assert_eq!(s.level, log::LevelFilter::Debug, "the environment wins");
        assert_eq!(s.config.server.workers, 3, "the file wins");
        assert_eq!(s.config.server.max_connections, 512, "the default");
        // A file's secret file loses to the variable, which is not read then.
        let s = load_text(
            "[influxdb]\npassword_file = \"missing\"\n",
            env(&[("CONSUMER_INFLUXDB_PASSWORD", "pw")]),
        )
        .unwrap();
        assert_eq!(s.config.influxdb.password, "pw");
    }

    #[test]
    fn errors_name_the_variable_or_the_flag() {
        let tokens = env(&[("CONSUMER_AUTH_TOKENS", "0123456789abcdef0123,short")]);
        let err = load_error("", tokens);
        assert!(
            err.starts_with("CONSUMER_AUTH_TOKENS: token #2 is not usable"),
            "{err}"
        );
        let err = load_error("", env(&[("CONSUMER_LOG_LEVEL", "loud")]));
        assert!(
            err.starts_with("CONSUMER_LOG_LEVEL (sets log.level): \"loud\" is not one of"),
            "{err}"
        );
        let flag = Overrides {
            log_level: Some("loud".into()),
            ..Overrides::default()
        };
        let err = load_error("[log]\nlevel = \"info\"\n", flag);
        assert!(err.starts_with("--log-level: \"loud\""), "{err}");
        let err = load_error("", env(&[("CONSUMER_SERVER_LISTN", "x")]));
        assert!(
            err.starts_with(
                "CONSUMER_SERVER_LISTN: no such setting; did you mean CONSUMER_SERVER_LISTEN?"
            ),
            "{err}"
        );
        let err = load_error("", env(&[("CONSUMER_COLOUR", "blue")]));
        assert!(err.starts_with("CONSUMER_COLOUR: no such setting"), "{err}");
        for (variable, value, expected) in [
            (
                "CONSUMER_SERVER_WORKERS",
                "lots",
                "\"lots\" is not a whole number",
            ),
            ("CONSUMER_SERVER_WORKERS", "1.5", "is not a whole number"),
            (
                "CONSUMER_AUTH_ALLOW_UNAUTHENTICATED",
                "yes",
                "neither true nor false",
            ),
            ("CONSUMER_JOBS_MAX_AGE", "15", "15 has no unit"),
            ("CONSUMER_INFLUXDB_API", "v4", "unknown variant `v4`"),
            ("CONSUMER_SERVER_WORKERS", "0", "must be at least 1"),
            (
                "CONSUMER_SERVER_LISTEN",
                "0.0.0.0:3000",
                "no tokens are configured",
            ),
            ("CONSUMER_INFLUXDB_URL", "\"unclosed", "not a TOML string"),
        ] {
            let err = load_error("", env(&[(variable, value)]));
            assert!(
                err.starts_with(variable) && err.contains(expected),
                "{variable}={value}: {err}"
            );
        }
        // The file's own mistakes are still the file's.
        let err = load_error(
            "[server]\nworkers = 0\n",
            env(&[("CONSUMER_LOG_LEVEL", "info")]),
        );
        assert!(err.contains("consumer.toml: server.workers"), "{err}");
    }

    #[test]
    fn a_duration_without_a_unit_says_which_to_write() {
        check_err("[jobs]\nheartbeat_interval = 15\n", "15 has no unit");
        check_err(
            "[jobs]\nheartbeat_interval = \"15\"\n",
            "\"15s\" for seconds",
        );
        check_err("[jobs]\nmax_age = 1.5\n", "e.g. \"1500ms\"");
    }

    #[test]
    fn credentials_that_can_never_work_are_warned_about() {
        let warned = |text: &str| load_text(text, Overrides::default()).unwrap().warnings;
        let v2 = "[influxdb]\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\n";
        assert!(warned(v2)[0].contains("influxdb.api: \"v2\" without a token"));
        let with_token = format!("{v2}token = \"t\"\n");
        assert!(warned(&with_token).is_empty());
        let v3 = "[influxdb]\napi = \"v3\"\n";
        assert!(warned(v3)[0].contains("influxdb.api: \"v3\" without a token"));
        assert!(warned("[influxdb]\nusername = \"u\"\n")[0].contains("without a password"));
        assert!(warned("[influxdb]\npassword = \"p\"\n")[0].contains("never sent"));
        assert!(warned("").is_empty());

        let dir = std::env::temp_dir().join(format!("mc-empty-secrets-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("secret"), "\n").unwrap();
        fs::write(dir.join("tokens"), "# none yet\n").unwrap();
        let file = dir.join("consumer.toml");
        fs::write(
            &file,
            "[auth]\ntoken_files = [\"tokens\"]\n[influxdb]\nusername = \"u\"\npassword_file = \"secret\"\n",
        )
        .unwrap();
        let warnings = load(&file, true, Overrides::default()).unwrap().warnings;
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("influxdb.password_file:") && warnings[0].contains("is empty")
        );
        assert!(
            warnings[1].contains("auth.token_files:") && warnings[1].contains("holds no token")
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn no_tokens_on_a_public_address_is_refused() {
        check_err(
            "[server]\nlisten = \"0.0.0.0:3000\"\n",
            "is not a loopback address and no tokens are configured",
        );
        let open = "[server]\nlisten = \"0.0.0.0:3000\"\n[auth]\nallow_unauthenticated = true\n";
        assert!(load_text(open, Overrides::default()).is_ok());
        let with_token =
            "[server]\nlisten = \"[::]:3000\"\n[auth]\ntokens = [\"0123456789abcdef0123\"]\n";
        assert!(load_text(with_token, Overrides::default()).is_ok());
        assert!(load_text("[server]\nlisten = \"[::1]:3000\"\n", Overrides::default()).is_ok());
    }

    #[test]
    fn secrets_readable_by_others_are_found() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mc-secrets-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("consumer.toml");
        fs::write(
            &file,
            "[influxdb]\npassword = \"pw\"\ntoken_file = \"tok\"\n",
        )
        .unwrap();
        fs::write(dir.join("tok"), "t\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.join("tok"), fs::Permissions::from_mode(0o600)).unwrap();
        let s = load(&file, true, Overrides::default()).unwrap();
        assert_eq!(s.readable_secrets(), vec![file.clone()]);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(dir.join("tok"), fs::Permissions::from_mode(0o604)).unwrap();
        assert_eq!(s.readable_secrets(), vec![dir.join("tok")]);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn tls_paths_are_relative_to_the_config_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mc-tls-paths-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("consumer.toml");
        fs::write(
            &file,
            "[server]\ntls_cert = \"certs/cert.pem\"\ntls_key = \"/etc/key.pem\"\n",
        )
        .unwrap();
        let s = load(&file, true, Overrides::default()).unwrap();
        assert_eq!(
            s.tls_files(),
            Some((dir.join("certs/cert.pem"), PathBuf::from("/etc/key.pem")))
        );
        assert!(
            load_text("", Overrides::default())
                .unwrap()
                .tls_files()
                .is_none()
        );

        // The key is a secret: readable by others, it is worth a warning.
        fs::write(
            &file,
            "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        )
        .unwrap();
        fs::write(dir.join("key.pem"), "k").unwrap();
        fs::set_permissions(dir.join("key.pem"), fs::Permissions::from_mode(0o644)).unwrap();
        let s = load(&file, true, Overrides::default()).unwrap();
        assert_eq!(s.readable_secrets(), vec![dir.join("key.pem")]);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn durations_round_trip() {
        for (text, ms) in [
            ("500ms", 500),
            ("15s", 15_000),
            ("5m", 300_000),
            ("24h", 86_400_000),
            ("1d", 86_400_000),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in ["", "15", "s", "1.5s", "-1s", "99999999999999999999h", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
