//! Reading InfluxDB's answers to the gateway's queries: the schema (`SHOW FIELD KEYS`, `SHOW
//! TAG KEYS`), the retention (v1 `SHOW RETENTION POLICIES`, v2 a bucket's rules) and counts.
//! Pure functions of the answer's text: a malformed answer reads as nothing said.

use crate::state::schema::{FieldType, Known, Retention, TargetPolicy};

/// A schema answer may list many fields (every member of Locust's endpoint rows).
pub(super) const MAX_SCHEMA_BYTES: u64 = 4 << 20;

/// An InfluxQL identifier in double quotes (InfluxQL: `"` and `\` escaped).
pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The fields (with their types) of each measurement in an answer to `SHOW FIELD KEYS`
/// (`fields`), or its tags in an answer to `SHOW TAG KEYS`. InfluxDB 1.x keeps a field's type per
/// shard, so a field may be listed with several types: the first one listed is kept.
pub(super) fn parse_schema(text: &str, fields: bool) -> Known {
    let mut known = Known::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return known;
    };
    let results = v["results"].as_array().cloned().unwrap_or_default();
    for result in &results {
        for series in result["series"].as_array().into_iter().flatten() {
            let Some(name) = series["name"].as_str() else {
                continue;
            };
            let m = known.entry(name.to_string()).or_default();
            for row in series["values"].as_array().into_iter().flatten() {
                let key = row.get(0).and_then(|k| k.as_str());
                match (fields, key) {
                    (true, Some(key)) => {
                        if let Some(kind) = row
                            .get(1)
                            .and_then(|t| t.as_str())
                            .and_then(FieldType::from_influx)
                        {
                            m.fields.entry(key.to_string()).or_insert(kind);
                        }
                    }
                    (false, Some(key)) => {
                        m.tags.insert(key.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    known
}

/// The retention of `wanted` (or of the default policy when empty) in an answer to
/// `SHOW RETENTION POLICIES` (columns `name`, `duration`, …, `default`); `None` when it keeps
/// points for ever (`0s`) or is not listed.
pub(super) fn parse_retention_policies(text: &str, wanted: &str) -> Option<Retention> {
    match parse_target_policy(text, wanted) {
        TargetPolicy::Keeps(retention) => retention,
        TargetPolicy::Missing => None,
    }
}

/// What a `SHOW RETENTION POLICIES` answer says of the policy `wanted` (empty: the default
/// one): its retention, or [`TargetPolicy::Missing`] when the answer lists the database's
/// policies and `wanted` is not among them. An answer that cannot be read says nothing:
/// kept for ever, as far as the gateway knows.
pub(super) fn parse_target_policy(text: &str, wanted: &str) -> TargetPolicy {
    let Some((names, rows)) = policy_rows(text) else {
        return TargetPolicy::Keeps(None);
    };
    let row = rows.iter().find(|row| {
        if wanted.is_empty() {
            row.default
        } else {
            row.name == wanted
        }
    });
    match row {
        Some(row) => {
            TargetPolicy::Keeps(row.keeps_ms.filter(|&ms| ms > 0).map(|keeps_ms| Retention {
                policy: row.name.clone(),
                keeps_ms,
                shard_group_ms: row.shard_group_ms,
            }))
        }
        None if !wanted.is_empty() && names > 0 => TargetPolicy::Missing,
        None => TargetPolicy::Keeps(None),
    }
}

/// A retention policy as `SHOW RETENTION POLICIES` lists it.
struct PolicyRow {
    name: String,
    /// Milliseconds; 0 for ever; `None` when the answer's duration could not be read.
    keeps_ms: Option<i64>,
    /// The shard group duration, in milliseconds; 0 when not told.
    shard_group_ms: i64,
    default: bool,
}

/// The rows of a `SHOW RETENTION POLICIES` answer (those it could read), with how many rows
/// it lists in all; `None` when it is not such an answer.
fn policy_rows(text: &str) -> Option<(usize, Vec<PolicyRow>)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let series = v["results"].get(0)?["series"].get(0)?;
    let columns: Vec<&str> = series["columns"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let at = |name: &str| columns.iter().position(|c| *c == name);
    let (name_at, duration_at, default_at) = (at("name")?, at("duration")?, at("default")?);
    let shard_group_at = at("shardGroupDuration");
    let values = series["values"].as_array()?;
    let rows = values
        .iter()
        .filter_map(|row| {
            Some(PolicyRow {
                name: row.get(name_at)?.as_str()?.to_string(),
                keeps_ms: row
                    .get(duration_at)
                    .and_then(|d| d.as_str())
                    .and_then(go_duration_ms),
                default: row.get(default_at).and_then(|d| d.as_bool()) == Some(true),
                shard_group_ms: shard_group_at
                    .and_then(|at| row.get(at))
                    .and_then(|d| d.as_str())
                    .and_then(go_duration_ms)
                    .unwrap_or(0),
            })
        })
        .collect();
    Some((values.len(), rows))
}

/// A Go duration as InfluxDB 1.x lists it (`168h0m0s`, `1h0m0s`, `30m0s`, `0s`), in
/// milliseconds.
pub(super) fn go_duration_ms(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1000,
            _ => return None,
        };
        total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    number.is_empty().then_some(total)
}

/// The bucket's retention in an answer to `GET /api/v2/buckets` (`retentionRules` of type
/// `expire`, `everySeconds`); `None` when it keeps points for ever (0 or no rule).
pub(super) fn parse_bucket_retention(text: &str, bucket: &str) -> Option<Retention> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let found = v["buckets"]
        .as_array()?
        .iter()
        .find(|b| b["name"].as_str() == Some(bucket))?;
    let rule = found["retentionRules"]
        .as_array()?
        .iter()
        .filter(|r| r["type"].as_str().is_none_or(|t| t == "expire"))
        .find(|r| r["everySeconds"].as_i64().is_some())?;
    let seconds = rule["everySeconds"].as_i64()?;
    (seconds > 0).then(|| Retention {
        policy: format!("bucket {bucket}"),
        keeps_ms: seconds.saturating_mul(1000),
        shard_group_ms: rule["shardGroupDurationSeconds"]
            .as_i64()
            .unwrap_or(0)
            .saturating_mul(1000),
    })
}

/// The count of each series (by its name) of an InfluxQL answer with one `count` column.
pub(super) fn parse_counts(text: &str) -> Vec<(String, u64)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let series = v["results"]
        .get(0)
        .and_then(|r| r["series"].as_array().cloned())
        .unwrap_or_default();
    series
        .iter()
        .filter_map(|s| {
            let name = s["name"].as_str()?.to_string();
            let count = s["values"].get(0)?.get(0)?.as_u64()?;
            Some((name, count))
        })
        .collect()
}
