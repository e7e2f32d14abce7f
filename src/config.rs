//! Configuration: `consumer.toml`, environment overrides, and the checks that make a bad
//! configuration stop the start with a message naming the file and the key.
//!
//! Every key has a default, so an empty file is a valid configuration. Secrets (the InfluxDB
//! password or token, the gateway's own tokens) may come from the file, from files named in it,
//! or from the environment; they are resolved here once, at start, and never printed: the
//! effective configuration shown by `--check-config` has them redacted.
//!
//! This module does no network I/O and starts nothing; it only reads the files it is told about.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    #[serde(serialize_with = "redact_list")]
    pub tokens: Vec<String>,
    pub token_files: Vec<String>,
    pub allow_unauthenticated: bool,
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

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
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

/// A configuration problem, always naming where it is.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where the settings came from besides the file: the environment and the command line.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub log_level: Option<String>,
    /// `CONSUMER_INFLUXDB_PASSWORD`
    pub influxdb_password: Option<String>,
    /// `CONSUMER_INFLUXDB_TOKEN`
    pub influxdb_token: Option<String>,
    /// `CONSUMER_AUTH_TOKENS`, comma-separated
    pub auth_tokens: Option<String>,
}

impl Overrides {
    /// Reads the three documented environment variables.
    pub fn from_env() -> Overrides {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Overrides {
            influxdb_password: var("CONSUMER_INFLUXDB_PASSWORD"),
            influxdb_token: var("CONSUMER_INFLUXDB_TOKEN"),
            auth_tokens: var("CONSUMER_AUTH_TOKENS"),
            ..Overrides::default()
        }
    }
}

/// The checked configuration plus the values derived from it at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    pub config: Config,
    pub listen: SocketAddr,
    pub level: log::LevelFilter,
    /// Every accepted token, from `auth.tokens`, `auth.token_files` and `CONSUMER_AUTH_TOKENS`.
    pub tokens: Vec<String>,
    /// The file itself holds a password or token (not only names of files that do).
    pub file_has_secrets: bool,
}

impl Settings {
    /// Files holding secrets that other users can read: the configuration file when it has a
    /// secret inline, and every secret file it names (the TLS key too). Worth a warning at start, not a refusal
    /// (the operator may have reasons), so the caller logs these.
    pub fn readable_secrets(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let c = &self.config;
        let base = self.file.parent().unwrap_or(Path::new("."));
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

    /// The certificate and key files for HTTPS, when both are set. Relative paths are
    /// relative to the configuration file, as for secret files.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let s = &self.config.server;
        if s.tls_cert.is_empty() || s.tls_key.is_empty() {
            return None;
        }
        let base = self.file.parent().unwrap_or(Path::new("."));
        Some((base.join(&s.tls_cert), base.join(&s.tls_key)))
    }

    /// The effective configuration as TOML with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.config.clone();
        shown.auth.tokens = self.tokens.clone();
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot show configuration: {e}\n"))
    }
}

/// Loads `file`. A missing file is an error only when `required` (the user named it with
/// `--config`); the default `./consumer.toml` may be absent, and then every default applies.
pub fn load(file: &Path, required: bool, overrides: Overrides) -> Result<Settings, ConfigError> {
    let err = |message: String| ConfigError {
        file: file.to_path_buf(),
        message,
    };
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
        Err(e) => return Err(err(format!("cannot read the configuration file: {e}"))),
    };
    let mut config: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let file_has_secrets = !config.auth.tokens.is_empty()
        || !config.influxdb.password.is_empty()
        || !config.influxdb.token.is_empty();

    if let Some(listen) = overrides.listen.clone() {
        config.server.listen = listen;
    }
    if let Some(level) = overrides.log_level.clone() {
        config.log.level = level;
    }
    let base = file.parent().unwrap_or(Path::new("."));
    resolve_secrets(&mut config, base, &overrides).map_err(err)?;
    let mut tokens = config.auth.tokens.clone();
    for path in &config.auth.token_files {
        let text =
            read_secret_file(base, path).map_err(|m| err(format!("auth.token_files: {m}")))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if let Some(list) = &overrides.auth_tokens {
        tokens.extend(
            list.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from),
        );
    }
    for (i, t) in tokens.iter().enumerate() {
        if t.len() < 16 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err(format!(
                "auth: token #{} is not usable: a token must be at least 16 characters with no spaces or control characters (make one with `openssl rand -hex 32`)",
                i + 1
            )));
        }
    }

    let (listen, level) = validate(&config).map_err(err)?;
    if tokens.is_empty() && !listen.ip().is_loopback() && !config.auth.allow_unauthenticated {
        return Err(err(format!(
            "auth: no tokens are configured and server.listen ({listen}) is not a loopback address, so anyone who can reach the port could write; add a token to auth.tokens (make one with `openssl rand -hex 32`), or set auth.allow_unauthenticated = true if the network is trusted"
        )));
    }
    Ok(Settings {
        file: file.to_path_buf(),
        config,
        listen,
        level,
        tokens,
        file_has_secrets,
    })
}

/// Reads a secret from a file named in the configuration; relative paths are relative to the
/// configuration file, so a config and its secrets can move together.
fn read_secret_file(base: &Path, path: &str) -> Result<String, String> {
    let full = base.join(path);
    fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
}

fn resolve_secrets(config: &mut Config, base: &Path, overrides: &Overrides) -> Result<(), String> {
    let influx = &mut config.influxdb;
    if !influx.password_file.is_empty() {
        influx.password = read_secret_file(base, &influx.password_file)
            .map_err(|m| format!("influxdb.password_file: {m}"))?
            .trim_end_matches(['\r', '\n'])
            .to_string();
    }
    if !influx.token_file.is_empty() {
        influx.token = read_secret_file(base, &influx.token_file)
            .map_err(|m| format!("influxdb.token_file: {m}"))?
            .trim_end_matches(['\r', '\n'])
            .to_string();
    }
    if let Some(p) = &overrides.influxdb_password {
        influx.password = p.clone();
    }
    if let Some(t) = &overrides.influxdb_token {
        influx.token = t.clone();
    }
    Ok(())
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
    if s.tls_cert.is_empty() != s.tls_key.is_empty() {
        return Err(
            "server.tls_cert, server.tls_key: set both (PEM files) for HTTPS, or neither".into(),
        );
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
            "influxdb.url: must not contain credentials; use influxdb.username and influxdb.password (v1) or influxdb.token (v2)".into(),
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

    fn load_text(text: &str, overrides: Overrides) -> Result<Settings, String> {
        let dir =
            std::env::temp_dir().join(format!("mc-config-{}-{}", std::process::id(), text.len()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("consumer.toml");
        fs::write(&file, text).unwrap();
        let result = load(&file, true, overrides).map_err(|e| e.message);
        fs::remove_dir_all(&dir).ok();
        result
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
            "invalid duration \"10\"",
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
            "server.tls_cert, server.tls_key",
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
    }

    #[test]
    fn environment_overrides_the_file_and_is_redacted() {
        let overrides = Overrides {
            influxdb_password: Some("from-env".into()),
            auth_tokens: Some("0123456789abcdef0123, fedcba9876543210fedc".into()),
            ..Overrides::default()
        };
        let s = load_text("[influxdb]\npassword = \"from-file\"\n", overrides).unwrap();
        assert_eq!(s.config.influxdb.password, "from-env");
        assert_eq!(s.tokens.len(), 2);
        let shown = s.redacted_toml();
        assert!(!shown.contains("from-env") && !shown.contains("0123456789abcdef0123"));
        assert!(shown.contains(REDACTED));
    }

    #[test]
    fn no_tokens_on_a_public_address_is_refused() {
        check_err(
            "[server]\nlisten = \"0.0.0.0:3000\"\n",
            "auth: no tokens are configured",
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
