//! What was given, read into one raw form: the configuration file, then the `CONSUMER_*`
//! environment variables, then the command-line flags, each winning over the ones before, with
//! the source of every key a variable or a flag set ([`Raw`]). Also the variables themselves:
//! one per key, `CONSUMER_<SECTION>_<KEY>`, derived from [`Config`]'s defaults ([`env_keys`]).
//!
//! It reads the configuration file and nothing else: secret files, token files and the checks
//! of what the values mean are the typed settings' (`mod.rs`, `secrets`, `clients`,
//! `validate`). A mistake here is one of form (TOML, a type, an unknown key or variable).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::Config;
use super::error::{ConfigError, Origins, Source};

/// Every environment variable of the configuration starts with this.
pub const ENV_PREFIX: &str = "CONSUMER_";

/// The one variable that adds to a key rather than replacing it: its tokens are accepted
/// beside those of `auth.tokens` and `auth.token_files`.
pub const ENV_TOKENS: &str = "CONSUMER_AUTH_TOKENS";

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
/// [`Config`] itself (its defaults as a TOML table, which keeps the structs' order), so a new
/// key has its variable without a list to keep. `[[auth.token]]` and `[[verdict.rule]]` have
/// none: a list of tables has no one-line form.
pub fn env_keys() -> Vec<EnvKey> {
    let Ok(defaults) = toml::Table::try_from(Config::default()) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (section, table) in &defaults {
        let Some(table) = table.as_table() else {
            continue;
        };
        for (name, default) in table {
            if (section == "auth" && name == "token") || (section == "verdict" && name == "rule") {
                continue;
            }
            keys.push(EnvKey {
                variable: format!("{ENV_PREFIX}{section}_{name}").to_uppercase(),
                key: format!("{section}.{name}"),
                section: section.clone(),
                name: name.clone(),
                default: default.clone(),
            });
        }
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

/// What the environment sets.
#[derive(Debug, Default)]
struct FromEnv {
    /// Keys set by a variable, with their values.
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
        let refuse = |key: Option<&str>, problem: String| ConfigError {
            source: Source::Env(name.clone()),
            key: key.map(str::to_string),
            problem,
        };
        let Some(value) = value.to_str() else {
            return Err(refuse(None, "the value is not UTF-8".into()));
        };
        if value.is_empty() {
            continue;
        }
        if name == ENV_TOKENS {
            found.tokens = Some(value.to_string());
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.variable == name) else {
            let distance = |known: &str| strsim::levenshtein(&name, known);
            let nearest = keys
                .iter()
                .map(|k| k.variable.as_str())
                .chain([ENV_TOKENS])
                .min_by_key(|known| distance(known))
                .filter(|known| distance(known) <= 3)
                .map(|known| format!("; did you mean {known}?"))
                .unwrap_or_default();
            return Err(refuse(
                None,
                format!(
                    "no such setting{nearest} Every key of the configuration file has a variable {ENV_PREFIX}<SECTION>_<KEY> (e.g. CONSUMER_SERVER_LISTEN for [server] listen); `metrics-consumer --help` lists them"
                ),
            ));
        };
        let parsed = env_value(&key.default, value).map_err(|m| refuse(Some(&key.key), m))?;
        // The value alone, as the only key of a configuration: what the key's type refuses
        // (a duration without a unit, an unknown api) is this variable's fault.
        let mut section = toml::Table::new();
        section.insert(key.name.clone(), parsed.clone());
        let mut alone = toml::Table::new();
        alone.insert(key.section.clone(), toml::Value::Table(section));
        alone
            .try_into::<Config>()
            .map_err(|e| refuse(Some(&key.key), e.message().to_string()))?;
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

/// Everything given, in one form: the values of file, environment and flags merged (not yet
/// checked beyond their types), and what set each.
#[derive(Debug)]
pub struct Raw {
    /// The configuration file's path, as given.
    pub file: PathBuf,
    /// Whether `file` exists; without it, every key not set otherwise has its default.
    pub file_found: bool,
    /// The file itself holds a password or token (not only names of files that do).
    pub file_has_secrets: bool,
    pub config: Config,
    /// `CONSUMER_AUTH_TOKENS`, comma-separated, when set.
    pub env_tokens: Option<String>,
    /// The variables that set something, in name order.
    pub from_env: Vec<String>,
    /// Keys set by a variable or a flag, and by which.
    pub origins: Origins,
}

impl Raw {
    /// Reads `file`, then `overrides`. A missing file is an error only when `required` (the
    /// user named it with `--config`); the default `./consumer.toml` may be absent.
    ///
    /// Errors: the file cannot be read or is not a configuration (TOML, an unknown key, a
    /// value of the wrong type), blamed on the file; a variable that is unknown or whose
    /// value does not fit its key, blamed on the variable.
    pub fn read(file: &Path, required: bool, overrides: Overrides) -> Result<Raw, ConfigError> {
        let in_file = |problem: String| ConfigError::in_file(file, problem);
        let (text, file_found) = match fs::read_to_string(file) {
            Ok(text) => (text, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                (String::new(), false)
            }
            Err(e) => return Err(in_file(format!("cannot read the configuration file: {e}"))),
        };
        // The file alone first, so that its mistakes are blamed on it.
        let from_file: Config = toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
        let file_has_secrets = !from_file.auth.tokens.is_empty()
            || from_file.auth.named.iter().any(|t| !t.token.is_empty())
            || !from_file.influxdb.password.is_empty()
            || !from_file.influxdb.token.is_empty();

        let env = read_env(&overrides.env)?;
        let mut origins = Origins::default();
        let mut config = if env.settings.is_empty() {
            from_file
        } else {
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
            for (key, value) in &env.settings {
                let section = table
                    .entry(key.section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(section) = section.as_table_mut() {
                    section.insert(key.name.clone(), value.clone());
                }
                origins
                    .0
                    .insert(key.key.clone(), Source::Env(key.variable.clone()));
            }
            table.try_into::<Config>().map_err(|e| ConfigError {
                source: Source::Environment,
                key: None,
                problem: e.message().to_string(),
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
            origins
                .0
                .insert("server.listen".into(), Source::Flag("--listen"));
        }
        if let Some(level) = overrides.log_level {
            config.log.level = level;
            origins
                .0
                .insert("log.level".into(), Source::Flag("--log-level"));
        }
        Ok(Raw {
            file: file.to_path_buf(),
            file_found,
            file_has_secrets,
            config,
            env_tokens: env.tokens,
            from_env,
            origins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_tokens_have_no_variable() {
        assert!(env_keys().iter().all(|k| k.key != "auth.token"));
        assert!(
            env_keys()
                .iter()
                .any(|k| k.key == "auth.tag_runs_with_token_name")
        );
    }

    /// The variables come in the order of the file: sections, then keys, as `Config` has them.
    #[test]
    fn variables_keep_the_order_of_the_file() {
        let keys: Vec<String> = env_keys().into_iter().map(|k| k.key).collect();
        assert_eq!(keys[0], "server.listen");
        assert_eq!(keys[1], "server.workers");
        let at = |key: &str| keys.iter().position(|k| k == key).unwrap();
        assert!(at("server.tls_key") < at("auth.tokens"));
        assert!(at("influxdb.url") < at("influxdb.api"));
        assert!(at("log.level") < at("verdict.identity"));
        assert_eq!(
            keys.last().map(String::as_str),
            Some("verdict.max_results_bytes")
        );
    }
}
