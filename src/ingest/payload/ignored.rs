//! The keys of a request that nothing reads: named in the answer (`ignored`), with the known
//! key each is probably a misspelling of (`did_you_mean`), so a run without its data does not
//! go unnoticed. Pure: names in, names out.

use super::*;

/// A key of the body that nothing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Its path, `measurment` or `measurement.field` (a key longer than 64 bytes cut, with
    /// `...`).
    pub key: String,
    /// The key it is probably a misspelling of (`measurement`, `measurement.fields`), when one
    /// is near; never for the keys known clients send on purpose ([`SENT_ON_PURPOSE`]).
    pub near: Option<&'static str>,
}

/// Unknown keys kept (their names only) and listed per object; more are skipped unnamed.
pub const IGNORED_LISTED: usize = 32;

/// Top-level keys the customized Locust sends on every request and the gateway ignores by
/// design: listed as ignored, never given a "did you mean".
pub const SENT_ON_PURPOSE: [&str; 2] = ["state", "user_count"];

/// The keys read at the top of a body.
pub(super) const TOP_KEYS: [&str; 7] = [
    "startedAt",
    "host",
    "hostname",
    "targetHost",
    "uuid",
    "tags",
    "measurement",
];

/// What a key near one of these means, at the top of a body: the keys read there, and
/// `fields`, which a client putting its fields at the top means as `measurement.fields`.
pub(super) const TOP_NEAR: [(&str, &str); 8] = [
    ("startedAt", "startedAt"),
    ("host", "host"),
    ("hostname", "hostname"),
    ("targetHost", "targetHost"),
    ("uuid", "uuid"),
    ("tags", "tags"),
    ("measurement", "measurement"),
    ("fields", "measurement.fields"),
];

/// The keys read in `measurement`, and what a key near each one means.
pub(super) const MEASUREMENT_KEYS: [&str; 2] = ["tags", "fields"];
pub(super) const MEASUREMENT_NEAR: [(&str, &str); 2] = [
    ("tags", "measurement.tags"),
    ("fields", "measurement.fields"),
];

/// The keys of `map` (the object at `path`, empty for the body) that are not in `read`, each
/// with the key it is probably a misspelling of (see [`near`]).
pub(super) fn ignored_in(
    map: &Map<String, Value>,
    path: &str,
    read: &[&str],
    near_to: &[(&str, &'static str)],
    out: &mut Vec<Ignored>,
) {
    for key in map.keys().filter(|k| !read.contains(&k.as_str())) {
        let on_purpose = path.is_empty() && SENT_ON_PURPOSE.contains(&key.as_str());
        out.push(Ignored {
            key: if path.is_empty() {
                cut(key)
            } else {
                at(path, key)
            },
            near: if on_purpose { None } else { near(key, near_to) },
        });
    }
}

/// The known key `key` is a likely misspelling of: case aside, at most two edits (a letter
/// added, left out, changed, or two swapped) and fewer than half the known key's letters.
pub(super) fn near(key: &str, known: &[(&str, &'static str)]) -> Option<&'static str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|(k, means)| {
            (
                strsim::damerau_levenshtein(&key, &k.to_lowercase()),
                k,
                means,
            )
        })
        .filter(|(d, k, _)| *d <= 2 && *d * 2 < k.len())
        .min_by_key(|(d, _, _)| *d)
        .map(|(_, _, means)| *means)
}
