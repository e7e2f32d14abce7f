//! Request payloads: turns the JSON of `register` and `commit` into checked records, for both
//! client shapes in the field (docs/api.md, "Payload rules").
//!
//! The documented shape (docs/api.md) sends RFC 3339 `startedAt`, `host` and `measurement.tags`; the customized
//! Locust sends epoch seconds, top-level `hostname`, `targetHost` and `tags`, and `null` fields.
//! Both become one [`Record`]. Every payload rule is enforced here, and each violation is a
//! [`PayloadError`] naming the key, so the client can fix its request.
//!
//! This module is pure: no I/O, no clock (the caller passes "now"), no job table.

mod cost;
mod ignored;
mod request_stats;

pub use cost::*;
pub use ignored::*;
pub use request_stats::*;

use std::fmt;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::code::Code;
use crate::ingest::json::{Rule, Tolerated, kind};
use crate::ingest::line_protocol::{self, FieldValue};
use crate::logtext::prefix;

/// Client tags per point at most.
pub const MAX_TAGS: usize = 32;
/// Client fields per point at most.
pub const MAX_FIELDS: usize = 64;

/// What a request says about a run, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Milliseconds since the Unix epoch, when the client gave `startedAt`.
    pub started_at_ms: Option<i64>,
    /// `host`, else `hostname`.
    pub host: Option<String>,
    /// Client tags, sorted by key; `uuid` and `host` are never among them (the gateway's own win).
    pub tags: Vec<(String, String)>,
    /// Client fields in the order sent, without `null`s.
    pub fields: Vec<(String, FieldValue)>,
    /// What the JSON reader rewrote: numbers a float cannot hold (read as `null`) and lone
    /// surrogate escapes (read as U+FFFD), so the answer can say so.
    pub tolerated: Tolerated,
    /// Keys of the body the gateway read nothing from (at the top and in `measurement`),
    /// sorted by key, at most [`IGNORED_LISTED`] of each object, so the answer can name them.
    pub ignored: Vec<Ignored>,
    /// A register's checks (`thresholds`), judged at its commit; empty for the other routes.
    pub thresholds: Vec<crate::verdict::Threshold>,
}

/// A commit: the run it ends, and what it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub uuid: Uuid,
    pub record: Record,
    pub stats: Option<RequestStats>,
}

/// A request the gateway refuses, with the key it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadError {
    /// The key, as a path into the payload (`measurement.tags.mode`), or empty for the body.
    pub key: String,
    pub message: String,
    pub code: Code,
}

impl PayloadError {
    fn new(key: impl Into<String>, code: Code, message: impl Into<String>) -> PayloadError {
        PayloadError {
            key: key.into(),
            message: message.into(),
            code,
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Limits that come from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PayloadLimits {
    pub max_string_bytes: usize,
    pub max_stats_rows: usize,
}

/// Entries kept of any one object: far more than any limit below, far less than a body can hold.
const ENTRY_CAP: usize = 1000;
/// Names the gateway writes as tags on every point, or on stats rows and events; a field of
/// the same name would make InfluxQL's `WHERE uuid = ...` read the field, and the run would no
/// longer be found. Then the fields it writes itself on endpoint rows.
const RESERVED: [&str; 7] = [
    "uuid",
    "host",
    "event",
    "name",
    "method",
    "full_name",
    "full_method",
];

/// Reads a request body as JSON, whatever its Content-Type says (`curl -d` sends a form type),
/// once what clients put around it is taken off (see `body`), keeping only the keys the
/// payload rules read (see `json`: memory stays proportional to what is kept, not to the body).
fn read_body(
    body: &[u8],
    with_stats: bool,
    with_thresholds: bool,
) -> Result<(Map<String, Value>, Tolerated), PayloadError> {
    let body = crate::ingest::body::unwrap(body)
        .map_err(|refusal| PayloadError::new("", refusal.code, refusal.message))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::new(
            "",
            Code::EmptyBody,
            "request body is empty; send a JSON object, e.g. {\"host\": \"lg-1\"}",
        ));
    }
    let entries = Rule::Entries {
        keep: ENTRY_CAP,
        inner: &Rule::Scalar,
        seen: None,
    };
    let stats_key = [("requestStats", Rule::Raw)];
    let fields = Rule::Keys {
        keys: if with_stats { &stats_key } else { &[] },
        other: Some(&Rule::Scalar),
        keep_other: ENTRY_CAP,
    };
    let measurement_keys = [("tags", entries), ("fields", fields)];
    // Endpoints, each with its checks: a bound past the checks a run may have, so that the
    // count refused names the limit rather than passing unseen.
    let checks = Rule::Entries {
        keep: crate::verdict::MAX_CHECKS + 1,
        inner: &Rule::Scalar,
        seen: None,
    };
    let thresholds = Rule::Keys {
        keys: &[],
        other: Some(&checks),
        keep_other: crate::verdict::MAX_CHECKS + 1,
    };
    let measurement = Rule::Keys {
        keys: &measurement_keys,
        other: Some(&Rule::Skip),
        keep_other: IGNORED_LISTED,
    };
    let top_keys = [
        ("startedAt", Rule::Scalar),
        ("host", Rule::Scalar),
        ("hostname", Rule::Scalar),
        ("targetHost", Rule::Scalar),
        ("uuid", Rule::Scalar),
        (
            "tags",
            Rule::Entries {
                keep: ENTRY_CAP,
                inner: &Rule::Scalar,
                seen: None,
            },
        ),
        ("measurement", measurement),
        ("thresholds", thresholds),
    ];
    let keys = if with_thresholds {
        &top_keys[..]
    } else {
        &top_keys[..top_keys.len() - 1]
    };
    let top = Rule::Keys {
        keys,
        other: Some(&Rule::Skip),
        keep_other: IGNORED_LISTED,
    };
    match crate::ingest::json::parse(&body, &top) {
        Ok((Value::Object(map), tolerated)) => Ok((map, tolerated)),
        Ok((other, _)) => Err(PayloadError::new(
            "",
            Code::NotAnObject,
            format!("request body must be a JSON object, not {}", kind(&other)),
        )),
        Err(e) if crate::ingest::body::more_than_one_value(&body, e.line(), e.column()) => {
            Err(PayloadError::new(
                "",
                Code::InvalidJson,
                format!(
                    "request body holds more than one JSON value (a second begins at line {} column {}: NDJSON?); send one object per request",
                    e.line(),
                    e.column()
                ),
            ))
        }
        Err(e) => Err(PayloadError::new(
            "",
            Code::InvalidJson,
            format!("request body is not valid JSON ({e})"),
        )),
    }
}

/// The record of a `register`.
pub fn register(body: &[u8], limits: PayloadLimits) -> Result<Record, PayloadError> {
    let (body, tolerated) = read_body(body, false, true)?;
    let mut record = record(&body, tolerated, limits, |_| false, true)?;
    if let Some(value) = body.get("thresholds") {
        record.thresholds = crate::verdict::thresholds(value, crate::verdict::Source::Register)
            .map_err(|(key, message)| PayloadError::new(key, Code::InvalidCheck, message))?;
    }
    Ok(record)
}

/// The uuid and new fields of a `progress`.
pub fn progress(body: &[u8], limits: PayloadLimits) -> Result<(Uuid, Record), PayloadError> {
    let (body, tolerated) = read_body(body, false, false)?;
    Ok((
        uuid_of(&body)?,
        record(&body, tolerated, limits, |_| false, false)?,
    ))
}

/// The record of a `commit`, with its `uuid` and `requestStats`.
pub fn commit(body: &[u8], limits: PayloadLimits) -> Result<Commit, PayloadError> {
    let (body, tolerated) = read_body(body, true, false)?;
    let uuid = uuid_of(&body)?;
    let record = record(&body, tolerated, limits, |key| key == "requestStats", false)?;
    let stats = match measurement(&body)?
        .and_then(|m| m.get("fields"))
        .and_then(|f| f.get("requestStats"))
        .and_then(Value::as_str)
    {
        None => None,
        Some(raw) => request_stats(raw, limits)?,
    };
    Ok(Commit {
        uuid,
        record,
        stats,
    })
}

fn uuid_of(body: &Map<String, Value>) -> Result<Uuid, PayloadError> {
    match body.get("uuid") {
        None | Some(Value::Null) => Err(PayloadError::new(
            "uuid",
            Code::MissingUuid,
            "is missing; send the uuid that register answered",
        )),
        Some(Value::String(s)) => Uuid::parse_str(s.trim()).map_err(|_| {
            PayloadError::new(
                "uuid",
                Code::InvalidUuid,
                format!("{} is not a UUID", quote(s)),
            )
        }),
        Some(other) => Err(PayloadError::new(
            "uuid",
            Code::InvalidUuid,
            format!("must be a string, not {}", kind(other)),
        )),
    }
}

/// Client text shown in an error message: cut to 64 bytes (with `...`), so an error never
/// echoes a megabyte back.
const SHOWN_BYTES: usize = 64;

/// `path.key`, with a long key cut (see [`SHOWN_BYTES`]).
fn at(path: &str, key: &str) -> String {
    format!("{path}.{}", cut(key))
}

/// `key`, cut to [`SHOWN_BYTES`] (with `...`) when longer.
fn cut(key: &str) -> String {
    if key.len() <= SHOWN_BYTES {
        return key.to_string();
    }
    format!("{}...", prefix(key, SHOWN_BYTES))
}

/// The part both routes share; `skip_field` names fields that another step takes apart.
fn record(
    body: &Map<String, Value>,
    tolerated: Tolerated,
    limits: PayloadLimits,
    skip_field: impl Fn(&str) -> bool,
    register: bool,
) -> Result<Record, PayloadError> {
    let started_at_ms = match body.get("startedAt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(started_at(v)?),
    };

    let mut host = None;
    for key in ["host", "hostname"] {
        match body.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.is_empty() => continue,
            Some(Value::String(s)) => {
                line_protocol::check_tag_value(s).map_err(|e| invalid(key, Code::InvalidTag, e))?;
                host = Some(s.clone());
                break;
            }
            Some(other) => {
                return Err(PayloadError::new(
                    key,
                    Code::InvalidTag,
                    format!("must be a string, not {}", kind(other)),
                ));
            }
        }
    }

    let mut tags: Vec<(String, String)> = Vec::new();
    // A client's own `uuid` or `host` tag, never written: the gateway's win. Named in the
    // answer with the keys nothing reads, so the value sent is not taken as stored.
    let mut overridden = Vec::new();
    let measurement = measurement(body)?;
    for (path, source) in [
        ("tags", body.get("tags")),
        ("measurement.tags", measurement.and_then(|m| m.get("tags"))),
    ] {
        for (key, value) in object(path, source)? {
            // Written out only for an answer that names it.
            let at = || at(path, key);
            line_protocol::check_name(key).map_err(|e| invalid(&at(), Code::InvalidTag, e))?;
            let Some(text) = tag_text(at, value)? else {
                continue;
            };
            line_protocol::check_tag_value(&text)
                .map_err(|e| invalid(&at(), Code::InvalidTag, e))?;
            if key != "uuid" && key != "host" {
                put(&mut tags, key, text);
            } else {
                overridden.push(Ignored {
                    key: at(),
                    near: None,
                });
            }
        }
    }
    if let Some(target) = body.get("targetHost")
        && let Some(text) = tag_text(|| "targetHost".into(), target)?
    {
        line_protocol::check_tag_value(&text)
            .map_err(|e| invalid("targetHost", Code::InvalidTag, e))?;
        if !tags.iter().any(|(k, _)| k == "targetHost") {
            tags.push(("targetHost".into(), text));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(PayloadError::new(
            "tags",
            Code::TooManyTags,
            format!("{} tags; the limit is {MAX_TAGS}", tags.len()),
        ));
    }
    tags.sort();

    let mut fields = Vec::new();
    for (key, value) in object(
        "measurement.fields",
        measurement.and_then(|m| m.get("fields")),
    )? {
        if skip_field(key) {
            continue;
        }
        let at = || at("measurement.fields", key);
        line_protocol::check_name(key).map_err(|e| invalid(&at(), Code::InvalidField, e))?;
        if key == "uuid" || key == "host" {
            return Err(PayloadError::new(
                at(),
                Code::InvalidField,
                "is a tag the gateway writes on every point; give the field another name",
            ));
        }
        if tags.iter().any(|(k, _)| k == key) {
            return Err(PayloadError::new(
                at(),
                Code::InvalidField,
                "is also a tag of this request; a name can be a tag or a field, not both",
            ));
        }
        let value = match value {
            Value::Null => continue,
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Number(n) => FieldValue::Float(finite(at, n)?),
            Value::String(s) if s.len() > limits.max_string_bytes => {
                return Err(PayloadError::new(
                    at(),
                    Code::StringTooLong,
                    format!(
                        "is {} bytes; the limit is {} (limits.max_string_bytes)",
                        s.len(),
                        limits.max_string_bytes
                    ),
                ));
            }
            Value::String(s) => FieldValue::Str(s.clone()),
            other => {
                return Err(PayloadError::new(
                    at(),
                    Code::InvalidField,
                    format!(
                        "must be a number, boolean, string or null, not {}",
                        kind(other)
                    ),
                ));
            }
        };
        fields.push((key.clone(), value));
    }
    if fields.len() > MAX_FIELDS {
        return Err(PayloadError::new(
            "measurement.fields",
            Code::TooManyFields,
            format!("{} fields; the limit is {MAX_FIELDS}", fields.len()),
        ));
    }
    let mut ignored = Vec::new();
    // A register also reads `thresholds`.
    let extra: &[&str] = if register { &["thresholds"] } else { &[] };
    let keys: Vec<&str> = TOP_KEYS.iter().chain(extra).copied().collect();
    let near: Vec<(&str, &str)> = TOP_NEAR
        .iter()
        .copied()
        .chain(extra.iter().map(|k| (*k, *k)))
        .collect();
    ignored_in(body, "", &keys, &near, &mut ignored);
    if let Some(m) = measurement {
        ignored_in(
            m,
            "measurement",
            &MEASUREMENT_KEYS,
            &MEASUREMENT_NEAR,
            &mut ignored,
        );
    }
    ignored.extend(overridden);
    Ok(Record {
        started_at_ms,
        host,
        tags,
        fields,
        tolerated,
        ignored,
        thresholds: Vec::new(),
    })
}

/// Sets a tag, replacing an earlier value of the same key.
fn put(tags: &mut Vec<(String, String)>, key: &str, value: String) {
    match tags.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => tags.push((key.to_string(), value)),
    }
}

fn measurement(body: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, PayloadError> {
    match body.get("measurement") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(PayloadError::new(
            "measurement",
            Code::InvalidMeasurement,
            format!(
                "must be an object with \"fields\" and \"tags\", not {}",
                kind(other)
            ),
        )),
    }
}

/// An optional object member: absent or `null` is empty, anything but an object is refused.
fn object<'a>(
    path: &str,
    value: Option<&'a Value>,
) -> Result<impl Iterator<Item = (&'a String, &'a Value)>, PayloadError> {
    match value {
        None | Some(Value::Null) => Ok(None.into_iter().flatten()),
        Some(Value::Object(m)) => Ok(Some(m.iter()).into_iter().flatten()),
        Some(other) => Err(PayloadError::new(
            path,
            Code::InvalidObject,
            format!("must be an object, not {}", kind(other)),
        )),
    }
}

/// A tag value as text: strings as they are, numbers and booleans as their JSON text; `null`
/// and the empty string mean "no tag" (InfluxDB cannot store an empty tag value).
fn tag_text(at: impl Fn() -> String, value: &Value) -> Result<Option<String>, PayloadError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(PayloadError::new(
            at(),
            Code::InvalidTag,
            format!(
                "tag values must be strings, numbers or booleans, not {}",
                kind(other)
            ),
        )),
    }
}

fn finite(at: impl Fn() -> String, n: &serde_json::Number) -> Result<f64, PayloadError> {
    match n.as_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => Err(PayloadError::new(
            at(),
            Code::InvalidField,
            "is not a finite number",
        )),
    }
}

fn invalid(at: &str, code: Code, e: line_protocol::Invalid) -> PayloadError {
    PayloadError::new(at, code, e.to_string())
}

/// Earliest and latest instants InfluxDB can store (nanoseconds in an i64), in milliseconds.
const MIN_TIME_MS: i64 = -9_223_372_036_854;
const MAX_TIME_MS: i64 = 9_223_372_036_854;

/// `startedAt`: a number is Unix seconds (milliseconds above 1e11, as `Date.now()` sends), a
/// string is RFC 3339 (without an offset: UTC) or an HTTP-date.
pub fn started_at(value: &Value) -> Result<i64, PayloadError> {
    let bad = |what: String| PayloadError::new("startedAt", Code::InvalidTime, what);
    let ms = match value {
        Value::Number(n) => {
            let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| bad("is not a finite number".into()))?;
            let ms = if f.abs() > 1e11 { f } else { f * 1000.0 };
            if !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
                return Err(bad(format!("{n} is outside the times InfluxDB can store (1677 to 2262)")));
            }
            ms.round() as i64
        }
        Value::String(s) => parse_time_text(s.trim()).ok_or_else(|| {
            bad(format!(
                "{} is not a time; send Unix seconds, RFC 3339 (\"2016-11-20T10:00:00Z\") or an HTTP-date",
                quote(s)
            ))
        })?,
        other => {
            return Err(bad(format!(
                "must be a number (Unix seconds) or a string (RFC 3339), not {}",
                kind(other)
            )));
        }
    };
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        let sent = match value {
            Value::String(s) => quote(s),
            other => other.to_string(),
        };
        return Err(bad(format!(
            "{sent} is outside the times InfluxDB can store (1677 to 2262)"
        )));
    }
    Ok(ms)
}

fn parse_time_text(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let to_ms = |t: time::OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return to_ms(t);
    }
    // RFC 3339 without an offset is read as UTC, with 'T' or a space between date and time.
    let local = format_description!(
        version = 2,
        "[year]-[month]-[day][first [T] [t] [ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    if let Ok(t) = time::PrimitiveDateTime::parse(s, local) {
        return to_ms(t.assume_utc());
    }
    let t = httpdate::parse_http_date(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// Quotes client text for an error message, cut (see [`SHOWN_BYTES`]).
fn quote(s: &str) -> String {
    if s.len() <= SHOWN_BYTES {
        return format!("{s:?}");
    }
    format!("{:?}...", prefix(s, SHOWN_BYTES))
}

#[cfg(test)]
mod tests {

    #[test]
    fn handling_cost_follows_the_members_not_only_the_bytes() {
        // 1 000 numeric members in 12 kB cost far more than 12 kB of one string.
        let members: Vec<String> = (0..1000).map(|i| format!(r#""m{i}":{i}"#)).collect();
        let numeric = format!("{{{}}}", members.join(","));
        let text = format!(r#"{{"f":"{}"}}"#, "x".repeat(numeric.len()));
        assert!(handling_cost(numeric.as_bytes()) >= 1000 * COST_PER_MEMBER);
        assert!(handling_cost(text.as_bytes()) < 2 * text.len() as u64);
    }

    /// Colons in text the gateway does not read cost nothing: an ignored key's value of 400 kB
    /// of colons once took the whole body budget from every other client.
    #[test]
    fn colons_in_strings_the_gateway_does_not_read_cost_nothing() {
        let junk = format!(
            r#"{{"measurement":{{"fields":{{"a":1}}}},"zz":"{}"}}"#,
            ":".repeat(400_000)
        );
        assert_eq!(members_read(junk.as_bytes()), 4);
        // A requestStats sent as a string is read as JSON, so its members count.
        let stats = r#"{"uuid":"u","measurement":{"fields":{"requestStats":"{\"stats\":[{\"a\":1,\"b\":2}]}"}}}"#;
        assert_eq!(members_read(stats.as_bytes()), 4 + 3);
        let spaced = r#"{"requestStats" :  "{\"a\":1}"}"#;
        assert_eq!(members_read(spaced.as_bytes()), 1 + 1);
        // A whole body sent as one string (double-encoded) is read as JSON too.
        let double = r#""{\"measurement\":{\"fields\":{\"a\":1}}}""#;
        assert_eq!(members_read(double.as_bytes()), 3);
        // An escaped quote does not end a string.
        let escaped = r#"{"k":"a\":b"}"#;
        assert_eq!(members_read(escaped.as_bytes()), 1);
        // An escaped backslash does not escape the quote after it.
        let backslash = r#"{"k":"a\\","l":2}"#;
        assert_eq!(members_read(backslash.as_bytes()), 2);
        // A string that never ends holds no member, whatever follows.
        let open = r#"{"a":1,"k":"x:y,\"m\":3"#;
        assert_eq!(members_read(open.as_bytes()), 2);
        let bom = "\u{feff} \"{\\\"a\\\":1}\"";
        assert_eq!(members_read(bom.as_bytes()), 1);
        // Colons the reader never gets to (not after a key) cost nothing either: a body of
        // colons is refused at its first byte, and a requestStats text of colons is no JSON.
        assert_eq!(members_read(":".repeat(100_000).as_bytes()), 0);
        let stats_colons = format!(r#"{{"requestStats":"{}"}}"#, ":".repeat(100_000));
        assert_eq!(members_read(stats_colons.as_bytes()), 1);
    }
    use super::*;
    use serde_json::json;

    const LIMITS: PayloadLimits = PayloadLimits {
        max_string_bytes: 1000,
        max_stats_rows: 3,
    };

    fn obj(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn readme_shape() {
        let r = register(
            &obj(json!({"startedAt": "2016-11-20T10:00:00Z", "host": "lg-1",
                "measurement": {"fields": {"clients": 10, "hatchRate": 0.5, "requests": 0},
                                "tags": {"targetHost": "http://10.10.10.1", "mode": "single"}}})),
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.started_at_ms, Some(1_479_636_000_000));
        assert_eq!(r.host.as_deref(), Some("lg-1"));
        assert_eq!(
            r.tags,
            vec![
                ("mode".into(), "single".into()),
                ("targetHost".into(), "http://10.10.10.1".into())
            ]
        );
        assert_eq!(
            r.fields,
            vec![
                ("clients".into(), FieldValue::Float(10.0)),
                ("hatchRate".into(), FieldValue::Float(0.5)),
                ("requests".into(), FieldValue::Float(0.0)),
            ]
        );
    }

    #[test]
    fn locust_shape() {
        let r = register(
            &obj(json!({"startedAt": 1479636000, "hostname": "lg-1", "targetHost": "http://10.10.10.1",
                "tags": {"mode": "single", "hostname": "http://10.10.10.1"},
                "measurement": {"fields": {"clients": 10, "hatchRate": 0.5, "requests": null}},
                "state": "hatching"})),
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.started_at_ms, Some(1_479_636_000_000));
        assert_eq!(r.host.as_deref(), Some("lg-1"));
        assert_eq!(
            r.tags,
            vec![
                ("hostname".into(), "http://10.10.10.1".into()),
                ("mode".into(), "single".into()),
                ("targetHost".into(), "http://10.10.10.1".into()),
            ]
        );
        assert_eq!(r.fields.len(), 2, "null fields are omitted");
    }

    #[test]
    fn tag_sources_merge_and_the_gateway_tags_win() {
        let r = register(
            &obj(json!({"targetHost": "a", "tags": {"x": "top", "n": 5, "b": true, "gone": null, "empty": "", "uuid": "u"},
                "measurement": {"tags": {"x": "inner", "targetHost": "t", "host": "h"}}})),
            LIMITS,
        )
        .unwrap();
        assert_eq!(
            r.tags,
            vec![
                ("b".into(), "true".into()),
                ("n".into(), "5".into()),
                ("targetHost".into(), "t".into()),
                ("x".into(), "inner".into()),
            ]
        );
    }

    #[test]
    fn started_at_forms() {
        let cases = [
            (json!(1479636000), 1_479_636_000_000),
            (json!(1479636000.25), 1_479_636_000_250),
            (json!(1479636000123u64), 1_479_636_000_123),
            (json!("2016-11-20T10:00:00Z"), 1_479_636_000_000),
            (json!("2016-11-20T11:00:00+01:00"), 1_479_636_000_000),
            (json!("2016-11-20T10:00:00.5"), 1_479_636_000_500),
            (json!("2016-11-20 10:00:00"), 1_479_636_000_000),
            (json!("Sun, 20 Nov 2016 10:00:00 GMT"), 1_479_636_000_000),
        ];
        for (value, ms) in cases {
            assert_eq!(started_at(&value), Ok(ms), "{value}");
        }
        for bad in [
            json!("yesterday"),
            json!(true),
            json!([1]),
            json!(1e300),
            json!(""),
        ] {
            let err = started_at(&bad).expect_err(&bad.to_string());
            assert_eq!(err.key, "startedAt");
        }
    }

    /// The rules that refuse a body with 400, one case each: a table shared with the integration
    /// tests (tests/it/hostile/names.rs), which send the same cases through the real binary.
    const RULES: &str = include_str!("../../tests/data/payload-rules.json");

    #[test]
    fn every_rule_names_its_key() {
        let rules: Value = serde_json::from_str(RULES).expect("payload-rules.json is JSON");
        assert_eq!(
            rules["limits"]["max_string_bytes"], LIMITS.max_string_bytes,
            "payload-rules.json is written for these limits"
        );
        let cases = rules["cases"]
            .as_array()
            .expect("payload-rules.json has cases");
        assert!(cases.len() > 100, "{} cases", cases.len());
        for case in cases {
            let name = case["name"].as_str().expect("every case has a name");
            let mut with_uuid = case["body"].clone();
            with_uuid["uuid"] = json!(Uuid::nil());
            // Commit reads its body by the same rules, so every case is refused on both routes.
            let refusals = [
                ("register", register(&obj(case["body"].clone()), LIMITS)),
                (
                    "commit",
                    commit(&obj(with_uuid), LIMITS).map(|_| Record::default()),
                ),
            ];
            for (route, outcome) in refusals {
                let err = outcome.expect_err(&format!("{route}: {name} should be refused"));
                assert_eq!(err.to_string(), case["message"], "{route}: {name}");
                assert_eq!(err.key, case["key"], "{route}: {name}");
                assert_eq!(err.code.as_str(), case["code"], "{route}: {name}");
                assert_eq!(err.code.status(), case["status"], "{route}: {name}");
            }
        }
    }

    /// A misspelled key (`measurment`, `measurement.field`) answered 200 with a run without
    /// fields, saying nothing. Every key nothing reads is named now, with the near one.
    #[test]
    fn every_ignored_key_is_named_with_the_key_it_is_near() {
        let rules: Value = serde_json::from_str(RULES).expect("payload-rules.json is JSON");
        let cases = rules["ignored"]
            .as_array()
            .expect("payload-rules.json has ignored");
        for case in cases {
            let name = case["name"].as_str().expect("every case has a name");
            let expected: Vec<(String, Option<String>)> =
                serde_json::from_value(case["ignored"].clone())
                    .expect("ignored is a list of [key, suggestion]");
            let mut with_uuid = case["body"].clone();
            with_uuid["uuid"] = json!(Uuid::nil());
            let records = [
                ("register", register(&obj(case["body"].clone()), LIMITS)),
                ("commit", commit(&obj(with_uuid), LIMITS).map(|c| c.record)),
            ];
            for (route, record) in records {
                let record = record.unwrap_or_else(|e| panic!("{route}: {name}: {e}"));
                let got: Vec<(String, Option<String>)> = record
                    .ignored
                    .iter()
                    .map(|i| (i.key.clone(), i.near.map(String::from)))
                    .collect();
                assert_eq!(got, expected, "{route}: {name}");
            }
        }
    }

    #[test]
    fn ignored_keys_are_listed_up_to_a_bound_and_cut() {
        let mut body = Map::new();
        for i in 0..100 {
            body.insert(format!("k{i}"), json!(i));
        }
        body.insert("x".repeat(200), json!(1));
        let record = register(&obj(Value::Object(body)), LIMITS).unwrap();
        assert_eq!(record.ignored.len(), IGNORED_LISTED);
        let long = register(&obj(json!({"y".repeat(200): 1})), LIMITS).unwrap();
        assert_eq!(long.ignored[0].key, format!("{}...", "y".repeat(64)));
    }

    /// A client's `uuid` or `host` tag is never written (the gateway's own win): the answer
    /// names it with the ignored keys instead of dropping it in silence.
    #[test]
    fn a_clients_own_uuid_or_host_tag_is_named_as_ignored() {
        let record = register(
            &obj(json!({
                "tags": {"uuid": "mine", "host": "h", "mode": "m"},
                "measurement": {"tags": {"uuid": "again"}}
            })),
            LIMITS,
        )
        .unwrap();
        assert_eq!(record.tags, [("mode".to_string(), "m".to_string())]);
        let ignored: Vec<_> = record.ignored.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(ignored, ["tags.host", "tags.uuid", "measurement.tags.uuid"]);
        assert!(record.ignored.iter().all(|i| i.near.is_none()));
    }

    #[test]
    fn bodies_that_are_not_objects() {
        for (body, code) in [
            (&b""[..], "empty_body"),
            (b"  \n", "empty_body"),
            (b"[1]", "not_an_object"),
            (b"{\"a\":", "invalid_json"),
            (b"\xff\xfe", "unsupported_charset"),
            (b"{\"host\": \"\xff\"}", "unsupported_charset"),
            (b"{}\n{}\n", "invalid_json"),
            (b"{'host': 1}", "invalid_json"),
        ] {
            assert_eq!(
                register(body, LIMITS).unwrap_err().code.as_str(),
                code,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            register(deep.as_bytes(), LIMITS).unwrap_err().code,
            Code::InvalidJson
        );
    }

    #[test]
    fn stats_members_named_like_the_gateways_tags_are_skipped() {
        let body = json!({"uuid": Uuid::nil(), "measurement": {"fields": {"requestStats": {
            "uuid": 1, "host": 2, "total_rps": 3,
            "stats": [{"name": 12, "method": 34, "uuid": 5, "host": 6, "event": 7, "num_requests": 8}]}}}});
        let s = commit(&obj(body), LIMITS).unwrap().stats.unwrap();
        assert_eq!(
            s.scalars,
            vec![("total_rps".into(), FieldValue::Float(3.0))]
        );
        assert_eq!(
            s.rows[0].tags,
            vec![("method".into(), "34".into()), ("name".into(), "12".into())]
        );
        assert_eq!(
            s.rows[0].fields,
            vec![("num_requests".into(), FieldValue::Float(8.0))]
        );
    }

    #[test]
    fn memory_follows_what_is_kept_not_the_body() {
        // 100 000 tiny objects under an unknown key and in stats rows past the limit: nothing of
        // them is kept, so the result is small whatever the body's shape.
        let noise: Vec<Value> = (0..100_000).map(|_| json!({"a": 1})).collect();
        let r = register(&obj(json!({"noise": noise, "host": "h"})), LIMITS).unwrap();
        assert_eq!(r.host.as_deref(), Some("h"));
        let rows: Vec<Value> = (0..100_000)
            .map(|i| json!({"name": format!("/{i}"), "num_requests": 1}))
            .collect();
        let c = commit(
            &obj(json!({"uuid": Uuid::nil(), "measurement": {"fields": {"requestStats": {"stats": rows}}}})),
            PayloadLimits { max_string_bytes: 10 << 20, max_stats_rows: 3 },
        )
        .unwrap();
        let s = c.stats.unwrap();
        assert_eq!((s.rows.len(), s.rows_sent), (3, 100_000));
    }

    /// A commit of many wide rows is read row by row: what reading it holds stays within what
    /// the body budget charges for it (`handling_cost`). Read into one tree first, 1 000 rows
    /// × 300 members held 12 times the body's length, four times the charge.
    #[test]
    fn wide_request_stats_are_read_within_their_handling_cost() {
        let members: String = (0..300).map(|m| format!(r#","m{m}":{}"#, m * 13)).collect();
        let rows: Vec<String> = (0..1000)
            .map(|r| format!(r#"{{"name":"/endpoint/{r}","method":"GET"{members}}}"#))
            .collect();
        let body = format!(
            r#"{{"uuid":"{}","measurement":{{"fields":{{"requestStats":{{"stats":[{}],"total_rps":1.5}}}}}}}}"#,
            Uuid::nil(),
            rows.join(",")
        );
        let limits = PayloadLimits {
            max_string_bytes: 1 << 20,
            max_stats_rows: 1000,
        };
        let (commit, peak) =
            crate::malloc::counted::peak_during(|| commit(body.as_bytes(), limits));
        let stats = commit.unwrap().stats.unwrap();
        assert_eq!((stats.rows.len(), stats.rows_sent), (1000, 1000));
        let charged = handling_cost(body.as_bytes()) as usize;
        assert!(
            peak <= charged,
            "reading a {} byte commit held {peak} bytes at its peak, more than the {charged} charged",
            body.len()
        );
    }

    /// Rows are taken as they are read; a `stats` member sent twice is still read as a JSON
    /// object is, the last one winning, whether it holds rows or none.
    #[test]
    fn a_repeated_stats_member_is_the_last_one() {
        let commit_of = |stats: &str| {
            let body = format!(
                r#"{{"uuid":"{}","measurement":{{"fields":{{"requestStats":{{{stats}}}}}}}}}"#,
                Uuid::nil()
            );
            commit(body.as_bytes(), LIMITS).unwrap().stats.unwrap()
        };
        let s = commit_of(r#""stats":[{"name":"/a","n":1}],"stats":[{"name":"/b","n":2}]"#);
        assert_eq!((s.rows.len(), s.rows_sent), (1, 1));
        assert!(s.rows[0].tags.contains(&("name".into(), "/b".into())));
        let s = commit_of(r#""stats":[{"name":"/a","n":1}],"stats":[]"#);
        assert_eq!((s.rows.len(), s.rows_sent), (0, 0));
    }

    #[test]
    fn commit_needs_a_uuid() {
        let err = commit(&obj(json!({})), LIMITS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "uuid: is missing; send the uuid that register answered"
        );
        let err = commit(&obj(json!({"uuid": "nope"})), LIMITS).unwrap_err();
        assert_eq!(err.to_string(), "uuid: \"nope\" is not a UUID");
        let err = commit(&obj(json!({"uuid": 7})), LIMITS).unwrap_err();
        assert_eq!(err.to_string(), "uuid: must be a string, not a number");
    }

    #[test]
    fn request_stats_as_object_or_string() {
        let stats = json!({"total_rps": 12.5, "fail_ratio": 0, "ok": true, "errors": [], "label": "x",
        "stats": [
            {"name": "/a?x=1", "method": "GET", "num_requests": 10, "avg_response_time": 1.5, "response_times": {"1": 2}},
            {"name": "Aggregated", "method": null, "num_requests": 10},
            {"name": "bad\\name\n", "method": "POST", "num_requests": 1},
            {"name": "cut", "num_requests": 1}
        ]});
        for form in [stats.clone(), Value::String(stats.to_string())] {
            let uuid = Uuid::new_v4();
            let c = commit(
                &obj(json!({"uuid": uuid.to_string(), "measurement": {"fields": {"requestStats": form, "users": 3}}})),
                LIMITS,
            )
            .unwrap();
            assert_eq!(c.uuid, uuid);
            assert_eq!(
                c.record.fields,
                vec![("users".into(), FieldValue::Float(3.0))]
            );
            let s = c.stats.unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(s.text.as_deref().unwrap()).unwrap(),
                stats
            );
            assert_eq!(
                s.scalars,
                vec![
                    ("fail_ratio".into(), FieldValue::Float(0.0)),
                    ("ok".into(), FieldValue::Bool(true)),
                    ("total_rps".into(), FieldValue::Float(12.5)),
                ]
            );
            assert_eq!(s.rows_sent, 4);
            assert_eq!(s.rows.len(), 3, "limits.max_stats_rows cuts the rows");
            assert_eq!(
                s.rows[0].tags,
                vec![
                    ("method".into(), "GET".into()),
                    ("name".into(), "/a?x=1".into())
                ]
            );
            assert_eq!(
                s.rows[0].fields,
                vec![
                    ("avg_response_time".into(), FieldValue::Float(1.5)),
                    ("num_requests".into(), FieldValue::Float(10.0)),
                ]
            );
            assert_eq!(s.rows[1].tags, vec![("name".into(), "Aggregated".into())]);
            assert_eq!(
                s.rows[2].tags,
                vec![
                    ("method".into(), "POST".into()),
                    // Python: "%08x" % zlib.crc32("bad\\name\n".encode())
                    ("name".into(), "bad_name_~91a0ca16".into())
                ]
            );
            assert!(
                s.rows[2]
                    .fields
                    .contains(&("full_name".into(), FieldValue::Str("bad\\name\n".into())))
            );
        }
    }

    #[test]
    fn request_stats_that_cannot_be_read() {
        let uuid = Uuid::new_v4().to_string();
        for (stats, expected) in [
            (
                json!(5),
                "measurement.fields.requestStats: must be an object, an array of rows or a string holding JSON, not a number",
            ),
            (
                json!(true),
                "measurement.fields.requestStats: must be an object, an array of rows or a string holding JSON, not a boolean",
            ),
        ] {
            let err = commit(
                &obj(json!({"uuid": uuid, "measurement": {"fields": {"requestStats": stats}}})),
                LIMITS,
            )
            .unwrap_err();
            assert!(err.to_string().starts_with(expected), "{err}");
        }
        // A string is data: kept as sent, whatever it holds; an empty one is nothing to keep.
        for (text, why) in [
            ("{not json", "key must be a string"),
            (
                "\"just text\"",
                "it holds a string, not an object or an array of rows",
            ),
        ] {
            let c = commit(
                &obj(json!({"uuid": uuid, "measurement": {"fields": {"requestStats": text}}})),
                LIMITS,
            )
            .unwrap();
            let s = c.stats.unwrap();
            assert_eq!(s.text.as_deref(), Some(text));
            assert!(s.rows.is_empty());
            assert!(
                s.not_stats.as_deref().unwrap().contains(why),
                "{:?}",
                s.not_stats
            );
        }
        let c = commit(
            &obj(json!({"uuid": uuid, "measurement": {"fields": {"requestStats": " "}}})),
            LIMITS,
        )
        .unwrap();
        assert!(c.stats.is_none());
    }

    fn stats_of(stats: &str, limits: PayloadLimits) -> RequestStats {
        let body = format!(
            r#"{{"uuid": "{}", "measurement": {{"fields": {{"requestStats": {stats}}}}}}}"#,
            Uuid::nil()
        );
        commit(body.as_bytes(), limits)
            .unwrap_or_else(|e| panic!("{stats}: {e}"))
            .stats
            .expect("requestStats")
    }

    /// NaN, the infinities and numbers beyond a float, wherever a Python client can put them,
    /// are read as null: left out of the points, counted, and null in the kept text.
    #[test]
    fn non_finite_numbers_are_left_out_everywhere_and_counted() {
        let body = br#"{"uuid": "00000000-0000-0000-0000-000000000000", "startedAt": NaN,
            "host": "lg", "tags": {"t": Infinity, "k": "v"}, "state": [NaN, {"x": -Infinity}],
            "measurement": {"tags": {"m": 1e400}, "fields": {"users": 3, "avg": NaN, "big": -1e400,
              "requestStats": {"stats": [{"name": "/x", "method": "GET", "num_requests": 3,
                 "avg_response_time": NaN}], "total_rps": Infinity, "fail_ratio": 0.5}}}}"#;
        let c = commit(body, LIMITS).unwrap();
        assert_eq!(
            c.record.started_at_ms, None,
            "startedAt NaN is like null: now"
        );
        assert_eq!(c.record.tags, vec![("k".into(), "v".into())]);
        assert_eq!(
            c.record.fields,
            vec![("users".into(), FieldValue::Float(3.0))]
        );
        assert_eq!(c.record.tolerated.non_finite, 9);
        let s = c.stats.unwrap();
        assert_eq!(
            s.scalars,
            vec![("fail_ratio".into(), FieldValue::Float(0.5))]
        );
        assert_eq!(
            s.rows[0].fields,
            vec![("num_requests".into(), FieldValue::Float(3.0))]
        );
        let text: Value = serde_json::from_str(s.text.as_deref().unwrap()).unwrap();
        assert_eq!(text["total_rps"], Value::Null);
        assert_eq!(text["stats"][0]["avg_response_time"], Value::Null);

        // The issue's own example, requestStats as Locust sends it: a string.
        let stats = r#"{"stats":[{"name":"/x","method":"GET","num_requests":3,"avg_response_time":NaN}], "total_rps":Infinity,"fail_ratio":0.5}"#;
        let s = stats_of(&Value::String(stats.into()).to_string(), LIMITS);
        assert_eq!(s.tolerated.non_finite, 2);
        assert_eq!(
            s.scalars,
            vec![("fail_ratio".into(), FieldValue::Float(0.5))]
        );
        assert_eq!(s.rows.len(), 1);
        assert_eq!(
            s.text.as_deref(),
            Some(
                r#"{"stats":[{"name":"/x","method":"GET","num_requests":3,"avg_response_time":null}],"total_rps":null,"fail_ratio":0.5}"#
            )
        );
        // A progress the same.
        let (_, r) = progress(
            br#"{"uuid": "00000000-0000-0000-0000-000000000000", "measurement": {"fields": {"rps": -Infinity, "n": 1}}}"#,
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.fields, vec![("n".into(), FieldValue::Float(1.0))]);
        assert_eq!(r.tolerated.non_finite, 1);
    }

    #[test]
    fn lone_surrogates_become_the_replacement_character() {
        let r = register(
            br#"{"host": "lg\udc80", "measurement": {"fields": {"s": "\ud800x"}}}"#,
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.host.as_deref(), Some("lg\u{fffd}"));
        assert_eq!(
            r.fields,
            vec![("s".into(), FieldValue::Str("\u{fffd}x".into()))]
        );
        assert_eq!(r.tolerated.lone_surrogates, 2);
        let s = stats_of(
            &json!(r#"{"stats": [{"name": "/\udc80", "num_requests": 1}]}"#).to_string(),
            LIMITS,
        );
        assert_eq!(s.rows[0].tags, vec![("name".into(), "/\u{fffd}".into())]);
        assert!(s.text.unwrap().contains(r"\ufffd"));
    }

    /// `locust --json-file` writes an array of rows; as requestStats it means {"stats": rows},
    /// in either form. The file here is what Locust 2.47 wrote.
    #[test]
    fn an_array_of_rows_is_the_stats() {
        let file = include_str!("../../tests/data/locust-2.47-stats.json");
        let rows: Value = serde_json::from_str(file).unwrap();
        for form in [file.to_string(), Value::String(file.into()).to_string()] {
            let s = stats_of(&form, LIMITS);
            assert_eq!(s.rows_sent, 2);
            let names: Vec<&str> = s
                .rows
                .iter()
                .map(|r| r.tags.iter().find(|(k, _)| k == "name").unwrap().1.as_str())
                .collect();
            assert_eq!(names, ["/items?x=1", "/orders"]);
            assert!(
                s.rows[0]
                    .fields
                    .contains(&("num_requests".into(), FieldValue::Float(9.0)))
            );
            let kept: Value = serde_json::from_str(s.text.as_deref().unwrap()).unwrap();
            assert_eq!(kept, json!({"stats": rows}));
        }
    }

    #[test]
    fn a_member_named_like_a_field_the_gateway_writes_is_left_out_and_a_method_is_kept_whole() {
        let stats = json!({"stats": [
            {"name": "/k", "method": "GE\\T", "num_requests": 1, "full_name": 6, "full_method": 7}
        ]})
        .to_string();
        let s = stats_of(&stats, LIMITS);
        let fields = &s.rows[0].fields;
        assert!(
            !fields
                .iter()
                .any(|(k, v)| k == "full_name" || *v == FieldValue::Float(7.0))
        );
        assert!(fields.contains(&("full_method".into(), FieldValue::Str("GE\\T".into()))));
        let method = s.rows[0].tags.iter().find(|(k, _)| k == "method").unwrap();
        assert_eq!(method.1, safe_tag("GE\\T"));
    }

    #[test]
    fn a_body_nested_too_deep_says_so() {
        let deep = format!(
            "{{\"x\": {}1{}, \"host\": \"h\"}}",
            "[".repeat(129),
            "]".repeat(129)
        );
        let err = register(deep.as_bytes(), LIMITS).unwrap_err();
        assert_eq!(err.code, Code::InvalidJson);
        assert!(
            err.to_string().contains("nested deeper than 128 levels"),
            "{err}"
        );
    }

    #[test]
    fn the_aggregated_row_is_kept_past_max_stats_rows() {
        let rows: Vec<Value> = (0..10)
            .map(|i| json!({"name": format!("/{i}"), "method": "GET", "num_requests": i}))
            .chain([json!({"name": "Aggregated", "method": "", "num_requests": 45})])
            .collect();
        let s = stats_of(&json!({"stats": rows}).to_string(), LIMITS);
        assert_eq!(s.rows_sent, 11);
        let names: Vec<String> = name_tags(&s).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["/0", "/1", "/2", "Aggregated"]);
        // An endpoint that happens to be called Aggregated has a method: it is not the total.
        let rows = json!([{"name": "/a", "num_requests": 1}, {"name": "/b", "num_requests": 1},
            {"name": "/c", "num_requests": 1}, {"name": "Aggregated", "method": "GET", "num_requests": 1}]);
        assert_eq!(stats_of(&rows.to_string(), LIMITS).rows.len(), 3);
    }

    fn name_tags(s: &RequestStats) -> Vec<(String, String)> {
        s.rows
            .iter()
            .map(|r| {
                let get = |k: &str| {
                    r.tags
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                (get("name"), get("method"))
            })
            .collect()
    }

    /// Every endpoint row is its own series: a name that had to be changed carries the CRC-32
    /// of the name sent, and a repeated name and method gets ~2, ~3, ...
    #[test]
    fn every_endpoint_row_is_its_own_series() {
        let limits = PayloadLimits {
            max_string_bytes: 1 << 20,
            max_stats_rows: 1000,
        };
        let long = |tail: &str| format!("/search?q={}{tail}", "x".repeat(260));
        let rows = json!([
            {"name": "/a\\b", "method": "GET", "num_requests": 1},
            {"name": "/a_b", "method": "GET", "num_requests": 2},
            {"name": long("1"), "method": "GET", "num_requests": 3},
            {"name": long("2"), "method": "GET", "num_requests": 4},
            {"name": long("3"), "method": "GET", "num_requests": 5},
            {"name": "/same", "method": "GET", "num_requests": 6},
            {"name": "/same", "method": "GET", "num_requests": 7},
            {"name": "/same", "method": "POST", "num_requests": 8},
            {"name": "/same~2", "method": "GET", "num_requests": 9},
            {"name": "/same", "method": "GET", "num_requests": 10},
        ]);
        let s = stats_of(&rows.to_string(), limits);
        let crc = |t: &str| format!("{:08x}", crc32fast::hash(t.as_bytes()));
        let cut = |t: &str| format!("{}~{}", &t[..247], crc(t));
        let tags = name_tags(&s);
        let expected: Vec<(String, String)> = [
            (format!("/a_b~{}", crc("/a\\b")), "GET"),
            ("/a_b".into(), "GET"),
            (cut(&long("1")), "GET"),
            (cut(&long("2")), "GET"),
            (cut(&long("3")), "GET"),
            ("/same".into(), "GET"),
            ("/same~2".into(), "GET"),
            ("/same".into(), "POST"),
            ("/same~2~2".into(), "GET"),
            ("/same~3".into(), "GET"),
        ]
        .into_iter()
        .map(|(n, m)| (n, m.to_string()))
        .collect();
        assert_eq!(tags, expected);
        let distinct: std::collections::HashSet<_> = tags.iter().collect();
        assert_eq!(distinct.len(), 10, "no two rows share a series");
        assert!(tags.iter().all(|(n, _)| n.len() <= 256));
        assert_eq!((s.renamed, s.repeated), (7, 3));
        let full_name = |i: usize| {
            s.rows[i]
                .fields
                .iter()
                .find(|(k, _)| k == "full_name")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(full_name(0), Some(FieldValue::Str("/a\\b".into())));
        assert_eq!(full_name(1), None);
        assert_eq!(full_name(3), Some(FieldValue::Str(long("2"))));
        assert_eq!(full_name(6), Some(FieldValue::Str("/same".into())));
        assert_eq!(full_name(8), Some(FieldValue::Str("/same~2".into())));
        // The same name gives the same tag in every commit.
        assert_eq!(name_tags(&stats_of(&rows.to_string(), limits)), tags);
    }

    /// A requestStats text longer than limits.max_string_bytes never fails the commit: it is
    /// cut to fit, keeping the Aggregated row, and says what it left out.
    #[test]
    fn a_text_too_long_is_cut_to_fit() {
        let limits = PayloadLimits {
            max_string_bytes: 2000,
            max_stats_rows: 5,
        };
        let rows: Vec<Value> = (0..100)
            .map(|i| json!({"name": format!("/endpoint/{i}"), "method": "GET", "num_requests": i}))
            .chain([json!({"name": "Aggregated", "method": "", "num_requests": 4950})])
            .collect();
        let errors: Vec<Value> = (0..10)
            .map(|i| json!({"error": format!("boom {i}"), "occurrences": 1}))
            .collect();
        let stats = json!({"stats": rows, "errors": errors, "total_rps": 1.5});
        let s = stats_of(&stats.to_string(), limits);
        let text = s.text.as_deref().unwrap();
        assert!(text.len() <= 2000, "{}", text.len());
        let kept: Value = serde_json::from_str(text).unwrap();
        let kept_rows = kept["stats"].as_array().unwrap();
        assert_eq!(kept_rows.last().unwrap()["name"], "Aggregated");
        assert_eq!(kept_rows[0]["name"], "/endpoint/0");
        assert_eq!(kept["rows_left_out"], 101 - kept_rows.len());
        assert_eq!(kept["errors"], json!(errors), "the rows made room enough");
        assert_eq!(kept["total_rps"], 1.5);
        assert_eq!((s.cut.rows, s.cut.errors), (101 - kept_rows.len(), 0));
        assert_eq!(
            s.rows.len(),
            6,
            "the points are as before: 5 rows and Aggregated"
        );
        // Errors are cut next, when the rows alone do not make room.
        let errors: Vec<Value> = (0..500)
            .map(|i| json!({"error": format!("boom {i}"), "occurrences": 1}))
            .collect();
        let s = stats_of(&json!({"stats": [], "errors": errors}).to_string(), limits);
        let kept: Value = serde_json::from_str(s.text.as_deref().unwrap()).unwrap();
        assert_eq!(
            kept["errors_left_out"],
            500 - kept["errors"].as_array().unwrap().len()
        );
        assert!(s.cut.errors > 0);
        // When nothing can be cut enough, the text is not kept, and the commit still stands.
        let s = stats_of(
            &json!({"label": "x".repeat(3000), "total_rps": 2}).to_string(),
            limits,
        );
        assert_eq!(s.text, None);
        assert_eq!(
            s.scalars,
            vec![("total_rps".into(), FieldValue::Float(2.0))]
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let err = commit(&obj(json!({"uuid": "x".repeat(10_000)})), LIMITS).unwrap_err();
        assert!(err.message.len() < 100, "{}", err.message);
    }
}
