//! The checks the types cannot make: each value's range, the values that must go together, a
//! public address without tokens. Each problem is a [`Problem`] naming its key; what set the
//! key is the caller's to find.
//!
//! It reads nothing and changes nothing: a pure function of the configuration.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::Problem;
use super::raw::ENV_TOKENS;
use super::{Api, Config};

/// `delivery.linger` at most: records already wait on disk, so a longer wait only delays what
/// dashboards show, and writes as large as InfluxDB takes are reached well within it.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

/// Checks what the types cannot: each value's range, and the values that go together. Returns
/// the address to listen on and the log level, the two values read from text here.
///
/// Errors: the first problem found, about its key.
pub fn validate(c: &Config) -> Result<(SocketAddr, log::LevelFilter), Problem> {
    let listen: SocketAddr = c.server.listen.parse().map_err(|_| {
        Problem::new(
            "server.listen",
            format!(
                "{:?} is not an address with a port, e.g. \"127.0.0.1:3000\" or \"[::]:3000\"",
                c.server.listen
            ),
        )
    })?;
    let s = &c.server;
    if s.workers == 0 {
        return Err(Problem::new("server.workers", "must be at least 1"));
    }
    if s.max_connections < s.workers {
        return Err(Problem::new(
            "server.max_connections",
            format!(
                "{} is less than server.workers ({}); raise it or lower workers",
                s.max_connections, s.workers
            ),
        ));
    }
    if s.max_connections > 100_000 {
        return Err(Problem::new(
            "server.max_connections",
            "at most 100000 (each connection has a thread)",
        ));
    }
    if s.max_connections_per_ip == 0 {
        return Err(Problem::new(
            "server.max_connections_per_ip",
            "must be at least 1",
        ));
    }
    for (key, d) in [
        ("server.header_timeout", s.header_timeout),
        ("server.idle_timeout", s.idle_timeout),
        ("influxdb.timeout", c.influxdb.timeout),
        ("jobs.max_age", c.jobs.max_age),
        ("jobs.progress_timeout", c.jobs.progress_timeout),
    ] {
        if d.0.is_zero() {
            return Err(Problem::new(key, "must be longer than 0"));
        }
    }
    if c.jobs.heartbeat_interval.0 < Duration::from_millis(100) {
        return Err(Problem::new(
            "jobs.heartbeat_interval",
            "must be at least \"100ms\"",
        ));
    }
    if s.max_body_bytes == 0 || s.max_body_bytes > 64 * 1024 * 1024 {
        return Err(Problem::new(
            "server.max_body_bytes",
            "must be between 1 and 67108864 (64 MiB)",
        ));
    }
    if s.max_inflated_bytes < s.max_body_bytes || s.max_inflated_bytes > 256 * 1024 * 1024 {
        return Err(Problem::new(
            "server.max_inflated_bytes",
            format!(
                "must be between server.max_body_bytes ({}) and 268435456 (256 MiB)",
                s.max_body_bytes
            ),
        ));
    }
    // One request with a compressed body holds its body and what it inflates to at once; less
    // than that could never serve it, whatever else is in flight.
    let one_request = s.max_body_bytes + s.max_inflated_bytes;
    if s.max_body_bytes_in_flight < one_request {
        return Err(Problem::new(
            "server.max_body_bytes_in_flight",
            format!(
                "{} is less than server.max_body_bytes + server.max_inflated_bytes ({one_request}), what one compressed request may hold; raise it",
                s.max_body_bytes_in_flight
            ),
        ));
    }
    if s.tls_cert.is_empty() != s.tls_key.is_empty() {
        let (set, unset) = if s.tls_key.is_empty() {
            ("server.tls_cert", "server.tls_key")
        } else {
            ("server.tls_key", "server.tls_cert")
        };
        return Err(Problem::new(
            set,
            format!("set without {unset}: set both (PEM files) for HTTPS, or neither"),
        ));
    }
    let i = &c.influxdb;
    if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
        return Err(Problem::new(
            "influxdb.url",
            format!("{:?} must start with http:// or https://", i.url),
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
        return Err(Problem::new(
            "influxdb.url",
            "must not contain credentials; use influxdb.username and influxdb.password (v1) or influxdb.token (v2, v3)",
        ));
    }
    if authority.is_empty() {
        return Err(Problem::new(
            "influxdb.url",
            format!("{:?} has no host", i.url),
        ));
    }
    match i.api {
        Api::V1 | Api::V3 if i.database.is_empty() => {
            return Err(Problem::new(
                "influxdb.database",
                format!("must be set for api = \"{}\"", i.api),
            ));
        }
        Api::V2 if i.org.is_empty() || i.bucket.is_empty() => {
            let missing = if i.org.is_empty() {
                "influxdb.org"
            } else {
                "influxdb.bucket"
            };
            return Err(Problem::at(
                missing,
                "influxdb.org, influxdb.bucket",
                "both must be set for api = \"v2\"",
            ));
        }
        _ => {}
    }
    if i.max_write_bytes < 1024 || i.max_write_bytes > 64 << 20 {
        return Err(Problem::new(
            "influxdb.max_write_bytes",
            "must be between 1024 and 67108864 (64 MiB); InfluxDB 1.x takes 25 MB at most, 3.x 10 MiB",
        ));
    }
    if i.schema_refresh.0 < Duration::from_secs(1) {
        return Err(Problem::new(
            "influxdb.schema_refresh",
            "must be at least \"1s\"",
        ));
    }
    if i.max_write_lines == 0 {
        return Err(Problem::new(
            "influxdb.max_write_lines",
            "must be at least 1",
        ));
    }
    if c.delivery.linger.0 > MAX_LINGER {
        return Err(Problem::new(
            "delivery.linger",
            format!(
                "must be at most \"{}\"; records already wait on disk, and a longer wait only delays what dashboards show",
                super::duration::format_duration(MAX_LINGER)
            ),
        ));
    }
    if c.jobs.max_running == 0 {
        return Err(Problem::new("jobs.max_running", "must be at least 1"));
    }
    if c.storage.dir.is_empty() {
        return Err(Problem::new("storage.dir", "must name a directory"));
    }

    if c.limits.max_stats_rows == 0 {
        return Err(Problem::new("limits.max_stats_rows", "must be at least 1"));
    }
    if c.auth.max_failures == 0 {
        return Err(Problem::new("auth.max_failures", "must be at least 1"));
    }
    if c.auth.failure_window.0.is_zero() {
        return Err(Problem::new("auth.failure_window", "must be longer than 0"));
    }
    if c.limits.max_run_bytes < 1024 {
        return Err(Problem::new(
            "limits.max_run_bytes",
            "must be at least 1024",
        ));
    }
    if c.jobs.max_table_bytes < c.limits.max_run_bytes {
        return Err(Problem::new(
            "jobs.max_table_bytes",
            format!(
                "must be at least limits.max_run_bytes ({})",
                c.limits.max_run_bytes
            ),
        ));
    }
    verdict(&c.verdict)?;

    let level = c.log.level.parse::<log::LevelFilter>().map_err(|_| {
        Problem::new(
            "log.level",
            format!(
                "{:?} is not one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
                c.log.level
            ),
        )
    })?;
    Ok((listen, level))
}

/// Refuses a public `listen` address when no client has a token, unless
/// `auth.allow_unauthenticated` says the network is trusted: anyone who can reach the port
/// could write.
pub fn open_to_anyone(c: &Config, listen: SocketAddr, has_clients: bool) -> Result<(), Problem> {
    if has_clients || listen.ip().is_loopback() || c.auth.allow_unauthenticated {
        return Ok(());
    }
    Err(Problem::new(
        "server.listen",
        format!(
            "{listen} is not a loopback address and no tokens are configured, so anyone who can reach the port could write; add a token to auth.tokens, auth.token_files or {ENV_TOKENS} (make one with `openssl rand -hex 32`), or set auth.allow_unauthenticated = true if the network is trusted"
        ),
    ))
}

/// Settings that are valid but do nothing with the others given, each a warning: the operator
/// who set them expects an effect.
pub fn ignored(c: &Config) -> Vec<Problem> {
    let mut ignored = Vec::new();
    let default_linger = Duration::from_millis(super::DEFAULT_LINGER_MS);
    if c.delivery.acknowledge == super::Acknowledge::Influxdb
        && c.delivery.linger.0 != default_linger
    {
        ignored.push(Problem::new(
            "delivery.linger",
            "is ignored with delivery.acknowledge = \"influxdb\": there every request waits for its own write, so no batch waits to fill",
        ));
    }
    ignored
}

/// `[verdict]`: identity tags that can be tags, a bound on the results kept, and rules whose
/// checks read (the same rules as a register's `thresholds`).
fn verdict(v: &super::Verdict) -> Result<(), Problem> {
    for name in &v.identity {
        crate::ingest::line_protocol::check_name(name)
            .map_err(|e| Problem::new("verdict.identity", format!("{name:?}: {e}")))?;
    }
    if !(1..=1_000_000).contains(&v.max_results) {
        return Err(Problem::new(
            "verdict.max_results",
            "must be from 1 to 1000000",
        ));
    }
    if v.max_results_bytes < 1 << 20 {
        return Err(Problem::new(
            "verdict.max_results_bytes",
            "must be at least 1048576 (1 MiB): a result of many endpoints takes hundreds of KiB",
        ));
    }
    let total: usize = v
        .rules
        .iter()
        .flat_map(|r| r.thresholds.values())
        .map(Vec::len)
        .sum();
    if total > crate::verdict::MAX_CHECKS {
        return Err(Problem::new(
            "verdict.rule",
            format!(
                "the rules hold {total} checks together; at most {} (a register may add as many)",
                crate::verdict::MAX_CHECKS
            ),
        ));
    }
    for (i, rule) in v.rules.iter().enumerate() {
        for (name, glob) in &rule.tags {
            crate::ingest::line_protocol::check_name(name).map_err(|e| {
                Problem::new(
                    "verdict.rule",
                    format!("rule {} tags: {name:?}: {e}", i + 1),
                )
            })?;
            if glob.is_empty() {
                return Err(Problem::new(
                    "verdict.rule",
                    format!(
                        "rule {} tags.{name} is empty; give the value (or a glob such as \"*\") the run's tag must have",
                        i + 1
                    ),
                ));
            }
        }
        if rule.thresholds.is_empty() {
            return Err(Problem::new(
                "verdict.rule",
                format!(
                    "rule {} has no thresholds; give e.g. thresholds = {{ Aggregated = [\"p95 < 500ms\"] }}",
                    i + 1
                ),
            ));
        }
        let json = serde_json::to_value(&rule.thresholds).unwrap_or_default();
        crate::verdict::thresholds(&json, crate::verdict::Source::Config).map_err(
            |(key, message)| {
                Problem::new("verdict.rule", format!("rule {} {key}: {message}", i + 1))
            },
        )?;
    }
    Ok(())
}
