//! Secrets: the InfluxDB password and token read from the files named in the configuration,
//! hiding every secret wherever the configuration is shown, the InfluxDB credentials that can
//! never authenticate (warnings), and the secret files other users can read.
//!
//! It reads the files it is told about, once, at start, and never prints, logs or returns a
//! secret in a message: the messages name the file and the key, never what the file holds.
//! The gateway's own tokens are `clients`'.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::error::{Origins, Problem};
use super::{Api, Config};

/// Shown instead of a secret wherever the configuration is printed.
pub const REDACTED: &str = "<redacted>";

/// Serializes a secret as [`REDACTED`] (an empty one as empty: it is worth seeing unset).
pub fn redact<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_empty() { "" } else { REDACTED })
}

/// Serializes a list of secrets as as many [`REDACTED`].
pub fn redact_list<S: Serializer>(value: &[String], s: S) -> Result<S::Ok, S::Error> {
    let shown: Vec<&str> = value.iter().map(|_| REDACTED).collect();
    shown.serialize(s)
}

/// The directory of `file`, `.` for a bare name: relative paths in the configuration are
/// relative to it, so a configuration and its secrets can move together.
pub fn base_of(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Reads a secret from a file named in the configuration, relative to `base`.
///
/// Errors: `cannot read <path>: <why>`, to follow the key.
pub fn read_secret_file(base: &Path, path: &str) -> Result<String, String> {
    let full = base.join(path);
    fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
}

/// Reads `influxdb.password_file` and `influxdb.token_file` into the password and the token,
/// unless a variable set those (`CONSUMER_INFLUXDB_PASSWORD` wins over the file's
/// `password_file`). An empty secret file is worth a warning (returned): it can never
/// authenticate.
///
/// Errors: a secret file that cannot be read, about its key.
pub fn resolve(
    config: &mut Config,
    file: &Path,
    origins: &Origins,
) -> Result<Vec<Problem>, Problem> {
    let base = base_of(file);
    let influx = &mut config.influxdb;
    let mut warnings = Vec::new();
    for (key, path, secret, set_by_env) in [
        (
            "influxdb.password_file",
            &influx.password_file,
            &mut influx.password,
            origins.overridden("influxdb.password"),
        ),
        (
            "influxdb.token_file",
            &influx.token_file,
            &mut influx.token,
            origins.overridden("influxdb.token"),
        ),
    ] {
        if path.is_empty() || set_by_env {
            continue;
        }
        let text = read_secret_file(base, path).map_err(|m| Problem::new(key, m))?;
        *secret = text.trim_end_matches(['\r', '\n']).to_string();
        if secret.trim().is_empty() {
            warnings.push(Problem::new(
                key,
                format!(
                    "{} is empty: InfluxDB with authentication refuses every write (401); put the secret alone on one line",
                    base.join(path.as_str()).display()
                ),
            ));
        }
    }
    Ok(warnings)
}

/// InfluxDB credentials that can never authenticate: v2 or v3 without a token, a v1 user
/// without a password, a v1 password without a user (never sent).
pub fn credential_warnings(c: &Config) -> Vec<Problem> {
    let i = &c.influxdb;
    let mut found = Vec::new();
    match i.api {
        // An empty token_file has a warning of its own.
        Api::V2 | Api::V3 if i.token.is_empty() && i.token_file.is_empty() => found.push(Problem::new(
            "influxdb.api",
            format!(
                "{:?} without a token (influxdb.token, influxdb.token_file or CONSUMER_INFLUXDB_TOKEN): InfluxDB 2.x and 3.x refuse every write (401) unless they run without authentication",
                i.api.to_string()
            ),
        )),
        Api::V1 if !i.username.is_empty() && i.password.is_empty() && i.password_file.is_empty() => found.push(Problem::new(
            "influxdb.username",
            format!(
                "{:?} without a password (influxdb.password, influxdb.password_file or CONSUMER_INFLUXDB_PASSWORD): InfluxDB with authentication refuses every write (401)",
                i.username
            ),
        )),
        Api::V1 if i.username.is_empty() && !i.password.is_empty() => found.push(Problem::new(
            "influxdb.password",
            "set without influxdb.username, so it is never sent: set the user too",
        )),
        _ => {}
    }
    found
}

/// Files holding secrets that other users can read: the configuration `file` when it has a
/// secret inline (`inline`), and every secret file `c` names (the TLS key too), relative to
/// the configuration file.
pub fn readable_by_others(c: &Config, file: &Path, inline: bool) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let base = base_of(file);
    let mut files = Vec::new();
    if inline {
        files.push(file.to_path_buf());
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
