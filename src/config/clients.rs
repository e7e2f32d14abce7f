//! The gateway's clients: every accepted token with its name and limits, from `auth.tokens`,
//! `auth.token_files`, `CONSUMER_AUTH_TOKENS` and the `[[auth.token]]` tables; the checks of a
//! token and of a name; each client's share of `jobs.max_running`, `jobs.max_table_bytes` and
//! `storage.max_spool_bytes`.
//!
//! It reads the token files it is told about and nothing else, and never puts a token in a
//! message: a token is named after its client or where it was found.

use std::collections::HashMap;
use std::path::Path;

use super::Config;
use super::error::{ConfigError, Origins, Problem, Source};
use super::raw::ENV_TOKENS;
use super::secrets::{base_of, read_secret_file};
use crate::auth::Client;

/// Every client token, in the order `auth.tokens`, `auth.token_files`, `CONSUMER_AUTH_TOKENS`
/// (`env_tokens`, comma-separated), `[[auth.token]]`, each with its name and limits. A token
/// without a name is named after what it is ([`unnamed_name`]: `token#3f9c1a2b7d40`). A
/// client without its own `max_running` gets an equal share
/// of `jobs.max_running`, so no token can take every slot from the others; likewise without its
/// own `max_spool_bytes`, of `storage.max_spool_bytes`. Token files are relative to the
/// configuration `file`.
///
/// Only a `[[auth.token]]` table gives a client `databases` (and so the right to write through
/// InfluxDB's write API): the tokens of `auth.tokens`, token files and `CONSUMER_AUTH_TOKENS`
/// have none, every measurement and the default `max_series`.
///
/// Also returns a warning for each token file that holds no token.
///
/// Errors, blamed on what set the key: a token that is not usable, a name that is not, two
/// clients with one name, one token under two names, a `[[auth.token]]` with neither or both
/// of `token` and `token_file`, a token file that cannot be read, a glob of `databases` or
/// `measurements` no name can match, `measurements = []`, a `max_series` of 0 or above
/// [`MAX_SERIES_LIMIT`], a `max_spool_bytes` above `storage.max_spool_bytes`.
pub fn read(
    config: &Config,
    file: &Path,
    origins: &Origins,
    env_tokens: Option<&str>,
) -> Result<(Vec<Client>, Vec<ConfigError>), ConfigError> {
    let base = base_of(file);
    let blame = |problem: Problem| origins.blame(file, problem);
    let auth = &config.auth;
    let mut clients: Vec<Client> = Vec::new();
    let mut warnings = Vec::new();
    let unnamed = |name: String, token: &str| Client {
        name,
        token: token.to_string(),
        max_running: 0,
        max_table_bytes: 0,
        requests_per_second: 0.0,
        databases: Vec::new(),
        measurements: vec!["*".into()],
        max_series: crate::config::DEFAULT_MAX_SERIES,
        max_spool_bytes: 0,
    };
    for (i, token) in auth.tokens.iter().enumerate() {
        let name = unnamed_name(token);
        check_token(token)
            .map_err(|m| blame(Problem::new("auth.tokens", format!("token #{}{m}", i + 1))))?;
        clients.push(unnamed(name, token));
    }
    const FILES: &str = "auth.token_files";
    for path in &auth.token_files {
        let before = clients.len();
        let full = base.join(path);
        let text = read_secret_file(base, path).map_err(|m| blame(Problem::new(FILES, m)))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{} line {}", full.display(), i + 1);
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => {
                    check_name(name).map_err(|m| {
                        blame(Problem::new(FILES, format!("{}: the name{m}", at())))
                    })?;
                    (name.to_string(), token)
                }
                None => (unnamed_name(line), line),
            };
            check_token(token)
                .map_err(|m| blame(Problem::new(FILES, format!("{}: the token{m}", at()))))?;
            clients.push(unnamed(name, token));
        }
        if clients.len() == before {
            warnings.push(blame(Problem::new(
                FILES,
                format!(
                    "{} holds no token (one per line, TOKEN or NAME:TOKEN; make one with `openssl rand -hex 32`)",
                    full.display()
                ),
            )));
        }
    }
    if let Some(list) = env_tokens {
        let listed = list.split(',').map(str::trim).filter(|t| !t.is_empty());
        for (i, token) in listed.enumerate() {
            check_token(token).map_err(|m| ConfigError {
                source: Source::Env(ENV_TOKENS.into()),
                key: None,
                problem: format!("token #{}{m}", i + 1),
            })?;
            clients.push(unnamed(unnamed_name(token), token));
        }
    }
    const TABLE: &str = "auth.token";
    for (i, t) in auth.named.iter().enumerate() {
        let at = format!("auth.token[{}]", i + 1);
        let refuse = |shown: String, text: String| blame(Problem::at(TABLE, shown, text));
        if t.name.is_empty() {
            return Err(refuse(
                at,
                "every [[auth.token]] needs a name (name = \"team-a\")".into(),
            ));
        }
        check_name(&t.name)
            .map_err(|m| refuse(format!("{at}.name"), format!("{:?}{m}", t.name)))?;
        let token = match (t.token.is_empty(), t.token_file.is_empty()) {
            (false, true) => t.token.clone(),
            (true, false) => read_secret_file(base, &t.token_file)
                .map_err(|m| refuse(format!("{at}.token_file ({})", t.name), m))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            _ => {
                return Err(refuse(
                    format!("{at} ({})", t.name),
                    "set one of token and token_file".into(),
                ));
            }
        };
        check_token(&token)
            .map_err(|m| refuse(format!("{at} ({})", t.name), format!("the token{m}")))?;
        if !(t.requests_per_second.is_finite() && t.requests_per_second >= 0.0) {
            return Err(refuse(
                format!("{at}.requests_per_second ({})", t.name),
                "must be 0 (no limit) or more".into(),
            ));
        }
        check_globs(&t.databases, true).map_err(|m| {
            refuse(
                format!("{at}.databases ({})", t.name),
                format!("{m} (list names or globs: databases = [\"k6\", \"jmeter_*\"])"),
            )
        })?;
        if t.measurements.is_empty() {
            return Err(refuse(
                format!("{at}.measurements ({})", t.name),
                "is empty, so no line could be written: use [\"*\"] (every measurement, the default) or remove the key".into(),
            ));
        }
        check_globs(&t.measurements, false).map_err(|m| {
            refuse(
                format!("{at}.measurements ({})", t.name),
                format!("{m} (list names or globs: measurements = [\"http_*\", \"vus\"])"),
            )
        })?;
        if !(1..=MAX_SERIES_LIMIT).contains(&t.max_series) {
            return Err(refuse(
                format!("{at}.max_series ({})", t.name),
                format!(
                    "{} is out of range: from 1 to {MAX_SERIES_LIMIT} distinct series in each database (default {})",
                    t.max_series,
                    crate::config::DEFAULT_MAX_SERIES
                ),
            ));
        }
        if t.max_spool_bytes > config.storage.max_spool_bytes {
            return Err(refuse(
                format!("{at}.max_spool_bytes ({})", t.name),
                format!(
                    "{} is more than storage.max_spool_bytes ({}), which bounds the log for every token together: lower it, or leave it out for an equal share",
                    t.max_spool_bytes, config.storage.max_spool_bytes
                ),
            ));
        }
        clients.push(Client {
            name: t.name.clone(),
            token,
            max_running: t.max_running,
            max_table_bytes: 0,
            requests_per_second: t.requests_per_second,
            databases: t.databases.clone(),
            measurements: t.measurements.clone(),
            max_series: t.max_series,
            max_spool_bytes: t.max_spool_bytes,
        });
    }
    for (i, c) in clients.iter().enumerate() {
        let refuse = |text: String| blame(Problem::at(TABLE, "auth", text));
        // The token first: one token listed twice in one place gets one name twice.
        if let Some(other) = clients[..i].iter().find(|o| o.token == c.token) {
            return Err(refuse(format!(
                "{:?} and {:?} are the same token; give each client its own",
                other.name, c.name
            )));
        }
        if let Some(other) = clients[..i].iter().find(|o| o.name == c.name) {
            return Err(refuse(format!(
                "two tokens are named {:?}; give each its own name",
                other.name
            )));
        }
    }
    // The shares must add up to the log's bound at most: each client is held to its share
    // alone, so shares beyond the bound would let one token fill the log for the others.
    let explicit: u64 = clients.iter().map(|c| c.max_spool_bytes).sum();
    let without = clients.iter().filter(|c| c.max_spool_bytes == 0).count() as u64;
    let spool = config.storage.max_spool_bytes;
    if explicit > spool || (without > 0 && spool - explicit < without) {
        return Err(blame(Problem::at(
            TABLE,
            "auth",
            format!(
                "the [[auth.token]] max_spool_bytes add up to {explicit}, leaving {} of storage.max_spool_bytes ({spool}) for {without} tokens without one: each token is held to its share alone, so together they must fit the log; lower them, or raise storage.max_spool_bytes",
                spool.saturating_sub(explicit)
            ),
        )));
    }
    share(&mut clients, config);
    Ok((clients, warnings))
}

/// Gives each client without a `max_running` of its own an equal share of `jobs.max_running`
/// (all of it to a client alone), each client the part of `jobs.max_table_bytes` its
/// places are of the table's, and each client without a `max_spool_bytes` of its own an equal
/// part of what the others' leave of `storage.max_spool_bytes` (all of it to a client alone).
fn share(clients: &mut [Client], config: &Config) {
    // What the tokens with a share of their own leave, in equal parts to the others.
    let spool = config.storage.max_spool_bytes;
    let explicit: u64 = clients.iter().map(|c| c.max_spool_bytes).sum();
    let without = clients
        .iter()
        .filter(|c| c.max_spool_bytes == 0)
        .count()
        .max(1) as u64;
    let spool_share = (spool.saturating_sub(explicit) / without).max(1);
    for c in clients.iter_mut() {
        if c.max_spool_bytes == 0 {
            c.max_spool_bytes = spool_share;
        }
    }
    let max = config.jobs.max_running;
    let share = if clients.len() > 1 {
        (max / clients.len()).max(1)
    } else {
        max
    };
    let table = config.jobs.max_table_bytes;
    for c in clients {
        if c.max_running == 0 {
            c.max_running = share;
        }
        // The table's bytes are shared as its places are; one run of the largest size always
        // fits.
        let part = (table as u128 * c.max_running.min(max) as u128 / max.max(1) as u128) as usize;
        c.max_table_bytes = part.max(2 * config.limits.max_run_bytes).min(table);
    }
}

/// Each client's share of `storage.max_dead_letter_bytes`, by its name: the part of it that
/// its `max_spool_bytes` is of `storage.max_spool_bytes` (all of it to a client alone), so that
/// a client whose writes InfluxDB refuses at delivery keeps its letters within the room its log
/// share gives it, and never takes another's. At least the room of one small letter (its lines
/// and its reason, a block of 4 KiB each on disk).
pub fn dead_letter_shares(clients: &[Client], config: &Config) -> HashMap<String, u64> {
    let limit = config.storage.max_dead_letter_bytes;
    let spool = config.storage.max_spool_bytes.max(1);
    clients
        .iter()
        .map(|c| {
            let part =
                (limit as u128 * c.max_spool_bytes.min(spool) as u128 / spool as u128) as u64;
            (c.name.clone(), part.max(2 * 4096).min(limit))
        })
        .collect()
}

/// The most a token's `max_series` may be: ten times InfluxDB 1.x's own default bound on a
/// whole database (`max-series-per-database`, 1 000 000); the budget holds 10 to 21 bytes in
/// memory and 16 on disk per series.
pub const MAX_SERIES_LIMIT: u64 = 10_000_000;

/// The longest glob of `databases` or `measurements`, in bytes.
const MAX_GLOB_BYTES: usize = 255;

/// The globs of a token's `databases` (`database`) or `measurements`: each 1 to 255 bytes,
/// without control characters or whitespace other than a space (InfluxDB 1.x takes only
/// printable names); a database glob also without `/` or `\` and other than `.` and `..`,
/// which InfluxDB refuses in a database's name. The error says which glob and why.
fn check_globs(globs: &[String], database: bool) -> Result<(), String> {
    for glob in globs {
        let shown = || format!("{:?}", crate::logtext::escape(glob, 40));
        if glob.is_empty() {
            return Err("holds an empty glob, which matches no name: remove it".into());
        }
        if glob.len() > MAX_GLOB_BYTES {
            return Err(format!(
                "{} is longer than {MAX_GLOB_BYTES} bytes: shorten it, or match it with *",
                shown()
            ));
        }
        if glob
            .chars()
            .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
        {
            return Err(format!(
                "{} holds a control character or a space other than ' ', which no name can: remove it",
                shown()
            ));
        }
        if database && glob.contains(['/', '\\']) {
            return Err(format!(
                "{} holds '/' or '\\', which InfluxDB refuses in a database's name (a v2 bucket \"db/rp\" names database db and its retention policy rp: list db)",
                shown()
            ));
        }
        if database && (glob == "." || glob == "..") {
            return Err(format!(
                "{} is not a name InfluxDB takes for a database",
                shown()
            ));
        }
    }
    Ok(())
}

/// The name of a token listed without one: `token#` and the first [`FINGERPRINT_HEX`] hex
/// digits of the token's SHA-256 (`sha256sum` of the token finds it). A run, a result and a
/// share belong to a client's name, so the name must stay with its token: named after its
/// place in its list (as it was), a token removed from the front of a file handed its runs to
/// the token listed after it; named after its file too, a path written another way
/// (`./tokens`) would rename it. The digest's first 48 bits tell nothing usable of a random
/// token (`openssl rand -hex 32` makes 256 bits), but can confirm guesses of a token a person
/// chose (docs/security.md says so). Two tokens whose digests begin alike would get one name,
/// and are refused as two clients of one name.
fn unnamed_name(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest
        .as_ref()
        .iter()
        .take(FINGERPRINT_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("token#{hex}")
}

/// The hex digits of a token's SHA-256 in the name of a token listed without one.
const FINGERPRINT_HEX: usize = 12;

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
