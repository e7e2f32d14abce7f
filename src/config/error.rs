//! A configuration error as a value: what is wrong, the key it is about, and the source that
//! set it (the configuration file, an environment variable, a command-line flag); and the one
//! place such an error becomes the message the command line prints.
//!
//! It never decides what is wrong, and never looks at the text of a message to find the key or
//! the source: those are fields, set where the mistake is found.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a value came from; a message about it names that place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration file (or, for a key it does not set, the built-in default).
    File(PathBuf),
    /// An environment variable, by name (`CONSUMER_LOG_LEVEL`).
    Env(String),
    /// A command-line flag (`--listen`).
    Flag(&'static str),
    /// The environment's variables together (each fitted alone, but not with the others).
    Environment,
}

/// A configuration problem, naming the key and what set it.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// What set the value.
    pub source: Source,
    /// The key as the message names it (`server.listen`, `auth.token[2].name`); `None` when
    /// the problem is with the source as a whole (an unreadable file, a TOML syntax error, an
    /// unknown variable, one of `CONSUMER_AUTH_TOKENS`'s tokens).
    pub key: Option<String>,
    /// What is wrong and what to do, without the key or the source.
    pub problem: String,
}

impl ConfigError {
    /// A problem with the file (or the default) as a whole.
    pub(super) fn in_file(file: &Path, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            source: Source::File(file.to_path_buf()),
            key: None,
            problem: problem.into(),
        }
    }
}

/// Renders the messages of `metrics-consumer: …` and of warnings:
/// `consumer.toml: server.workers: must be at least 1`,
/// `CONSUMER_LOG_LEVEL (sets log.level): "loud" is not one of …`, `--listen: …`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = &self.problem;
        match (&self.source, &self.key) {
            (Source::File(path), Some(key)) => write!(f, "{}: {key}: {problem}", path.display()),
            (Source::File(path), None) => write!(f, "{}: {problem}", path.display()),
            (Source::Env(variable), Some(key)) => write!(f, "{variable} (sets {key}): {problem}"),
            (Source::Env(variable), None) => write!(f, "{variable}: {problem}"),
            // A flag sets one key, which its name says.
            (Source::Flag(flag), _) => write!(f, "{flag}: {problem}"),
            (Source::Environment, _) => write!(f, "the environment: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A problem with a setting, found before it is known what set it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The key whose source is blamed (`auth.token_files`).
    pub setting: &'static str,
    /// The key as the message names it, when more precise than `setting`
    /// (`auth.token[2].name`, `influxdb.org, influxdb.bucket`).
    pub shown: Option<String>,
    /// What is wrong, without the key.
    pub text: String,
}

impl Problem {
    /// A problem with `setting`, named as it is.
    pub fn new(setting: &'static str, text: impl Into<String>) -> Problem {
        Problem {
            setting,
            shown: None,
            text: text.into(),
        }
    }

    /// A problem with `setting`, named more precisely as `shown`.
    pub fn at(setting: &'static str, shown: impl Into<String>, text: impl Into<String>) -> Problem {
        Problem {
            setting,
            shown: Some(shown.into()),
            text: text.into(),
        }
    }
}

/// Which source set each key a variable or a flag set; every other key is the file's.
#[derive(Debug, Clone, Default)]
pub struct Origins(pub(super) BTreeMap<String, Source>);

impl Origins {
    /// Whether a variable or a flag set `key`.
    pub fn overridden(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// `problem` as an error of what set its key: the file, a variable or a flag.
    pub fn blame(&self, file: &Path, problem: Problem) -> ConfigError {
        let Problem {
            setting,
            shown,
            text,
        } = problem;
        ConfigError {
            source: self
                .0
                .get(setting)
                .cloned()
                .unwrap_or_else(|| Source::File(file.to_path_buf())),
            key: Some(shown.unwrap_or_else(|| setting.to_string())),
            problem: text,
        }
    }
}
