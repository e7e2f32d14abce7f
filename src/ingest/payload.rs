//! Request payloads: turns the JSON of `register` and `commit` into checked records, for both
//! client shapes in the field (docs/api.md, "Payload rules").
//!
//! The documented shape (docs/api.md) sends RFC 3339 `startedAt`, `host` and `measurement.tags`; the customized
//! Locust sends epoch seconds, top-level `hostname`, `targetHost` and `tags`, and `null` fields.
//! Both become one [`Record`]. Every payload rule is enforced here, and each violation is a
//! [`PayloadError`] naming the key, so the client can fix its request.
//!
//! This module is pure: no I/O, no clock (the caller passes "now"), no job table.

use std::fmt;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::code::Code;
use crate::ingest::json::{Rule, Tolerated};
use crate::ingest::line_protocol::{self, FieldValue};

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
}

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
const TOP_KEYS: [&str; 7] = [
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
const TOP_NEAR: [(&str, &str); 8] = [
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
const MEASUREMENT_KEYS: [&str; 2] = ["tags", "fields"];
const MEASUREMENT_NEAR: [(&str, &str); 2] = [
    ("tags", "measurement.tags"),
    ("fields", "measurement.fields"),
];

/// The keys of `map` (the object at `path`, empty for the body) that are not in `read`, each
/// with the key it is probably a misspelling of (see [`near`]).
fn ignored_in(
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
fn near(key: &str, known: &[(&str, &'static str)]) -> Option<&'static str> {
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

/// A commit: the run it ends, and what it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub uuid: Uuid,
    pub record: Record,
    pub stats: Option<RequestStats>,
}

/// Locust's `requestStats`, taken apart for the points of the commit (docs/points.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestStats {
    /// The compact JSON text, written as the string field `requestStats`: whole when it fits
    /// `limits.max_string_bytes`, else cut to fit (see [`TextCut`]); `None` when even that
    /// does not fit.
    pub text: Option<String>,
    /// Numeric and boolean top-level members (`total_rps`, `fail_ratio`, ...).
    pub scalars: Vec<(String, FieldValue)>,
    /// Per-endpoint rows, one point each: the first `limits.max_stats_rows`, and Locust's
    /// `Aggregated` row wherever it was sent. No two have the same `name` and `method` tags.
    pub rows: Vec<StatsRow>,
    /// How many rows the client sent (more than `rows.len()` when the limit cut them).
    pub rows_sent: usize,
    /// Rows whose `name` tag is not the name sent: made safe for a tag, or told apart from an
    /// earlier row with the same name and method. Each has the name sent in `full_name`.
    pub renamed: usize,
    /// Of those, rows that repeated the name and method of an earlier row (`~2`, `~3`, …).
    pub repeated: usize,
    /// How the text was cut to fit `limits.max_string_bytes`.
    pub cut: TextCut,
    /// What the JSON reader rewrote inside a `requestStats` sent as a string.
    pub tolerated: Tolerated,
    /// Why a `requestStats` string could not be read as stats (it is not JSON, or holds no
    /// object or array): its text is then kept as it is, with no rows.
    pub not_stats: Option<String>,
}

/// What was left out of the `requestStats` text to make it fit `limits.max_string_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextCut {
    /// The compact text's length as sent, in bytes.
    pub sent_bytes: usize,
    /// Elements left out of `stats` (the text says so in its member `rows_left_out`).
    pub rows: usize,
    /// Elements left out of `errors` (the text says so in its member `errors_left_out`).
    pub errors: usize,
}

/// One element of `requestStats.stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    /// `name` and `method`, made safe for a tag.
    pub tags: Vec<(String, String)>,
    /// Numeric and boolean members, plus `full_name` when the name had to be changed.
    pub fields: Vec<(String, FieldValue)>,
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
    ];
    let top = Rule::Keys {
        keys: &top_keys,
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
    let (body, tolerated) = read_body(body, false)?;
    record(&body, tolerated, limits, |_| false)
}

/// The uuid and new fields of a `progress`.
pub fn progress(body: &[u8], limits: PayloadLimits) -> Result<(Uuid, Record), PayloadError> {
    let (body, tolerated) = read_body(body, false)?;
    Ok((
        uuid_of(&body)?,
        record(&body, tolerated, limits, |_| false)?,
    ))
}

/// The record of a `commit`, with its `uuid` and `requestStats`.
pub fn commit(body: &[u8], limits: PayloadLimits) -> Result<Commit, PayloadError> {
    let (body, tolerated) = read_body(body, true)?;
    let uuid = uuid_of(&body)?;
    let record = record(&body, tolerated, limits, |key| key == "requestStats")?;
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

/// The longest start of `text` of at most `max` bytes that ends at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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
    let measurement = measurement(body)?;
    for (path, source) in [
        ("tags", body.get("tags")),
        ("measurement.tags", measurement.and_then(|m| m.get("tags"))),
    ] {
        for (key, value) in object(path, source)? {
            let at = at(path, key);
            line_protocol::check_name(key).map_err(|e| invalid(&at, Code::InvalidTag, e))?;
            let Some(text) = tag_text(&at, value)? else {
                continue;
            };
            line_protocol::check_tag_value(&text).map_err(|e| invalid(&at, Code::InvalidTag, e))?;
            if key != "uuid" && key != "host" {
                put(&mut tags, key, text);
            }
        }
    }
    if let Some(target) = body.get("targetHost")
        && let Some(text) = tag_text("targetHost", target)?
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
        let at = at("measurement.fields", key);
        line_protocol::check_name(key).map_err(|e| invalid(&at, Code::InvalidField, e))?;
        if key == "uuid" || key == "host" {
            return Err(PayloadError::new(
                at,
                Code::InvalidField,
                "is a tag the gateway writes on every point; give the field another name",
            ));
        }
        if tags.iter().any(|(k, _)| k == key) {
            return Err(PayloadError::new(
                at,
                Code::InvalidField,
                "is also a tag of this request; a name can be a tag or a field, not both",
            ));
        }
        let value = match value {
            Value::Null => continue,
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Number(n) => FieldValue::Float(finite(&at, n)?),
            Value::String(s) if s.len() > limits.max_string_bytes => {
                return Err(PayloadError::new(
                    at,
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
                    at,
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
    ignored_in(body, "", &TOP_KEYS, &TOP_NEAR, &mut ignored);
    if let Some(m) = measurement {
        ignored_in(
            m,
            "measurement",
            &MEASUREMENT_KEYS,
            &MEASUREMENT_NEAR,
            &mut ignored,
        );
    }
    Ok(Record {
        started_at_ms,
        host,
        tags,
        fields,
        tolerated,
        ignored,
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
fn tag_text(at: &str, value: &Value) -> Result<Option<String>, PayloadError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(PayloadError::new(
            at,
            Code::InvalidTag,
            format!(
                "tag values must be strings, numbers or booleans, not {}",
                kind(other)
            ),
        )),
    }
}

fn finite(at: &str, n: &serde_json::Number) -> Result<f64, PayloadError> {
    match n.as_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => Err(PayloadError::new(
            at,
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

/// `requestStats`, from its JSON text as sent: an object, an array of rows (as `locust
/// --json-file` writes them, read as `{"stats": [...]}`), a string holding either, or `null`.
/// Its data is the load test's, so keys that cannot be field names are skipped rather than
/// refused, and a text too long to keep whole is cut rather than refused.
fn request_stats(raw: &str, limits: PayloadLimits) -> Result<Option<RequestStats>, PayloadError> {
    use std::borrow::Cow;
    const AT: &str = "measurement.fields.requestStats";
    let bad = |message: String| PayloadError::new(AT, Code::InvalidStats, message);
    let mut tolerated = Tolerated::default();
    let text: Cow<str> = match raw.as_bytes().first() {
        Some(b'{' | b'[') => Cow::Borrowed(raw),
        Some(b'"') => {
            let inner: String = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
            if inner.trim().is_empty() {
                return Ok(None);
            }
            // The string's text was never read as JSON: make it JSON the gateway can keep.
            let t = match crate::ingest::json::tolerate(inner.as_bytes()) {
                Ok(t) => t,
                Err(e) => return Ok(Some(kept_as_text(inner, format!("{e}"), limits))),
            };
            tolerated = t.tolerated;
            match t.bytes {
                Cow::Borrowed(_) => Cow::Owned(inner),
                Cow::Owned(bytes) => Cow::Owned(
                    String::from_utf8(bytes).map_err(|_| bad("the string is not UTF-8".into()))?,
                ),
            }
        }
        Some(b'n') => return Ok(None),
        first => {
            let kind = match first {
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            };
            return Err(bad(format!(
                "must be an object, an array of rows or a string holding JSON, not {kind}"
            )));
        }
    };
    // An array is the list of rows alone.
    let text: Cow<str> = if text.trim_start().starts_with('[') {
        Cow::Owned(format!("{{\"stats\":{text}}}"))
    } else {
        text
    };
    let rows_sent = std::cell::Cell::new(0);
    // Each row becomes a `StatsRow` as soon as it is read: a commit of a thousand rows of a
    // thousand members never holds the tree of all of them (about 140 bytes a member).
    let read_rows = std::cell::RefCell::new(Vec::new());
    let take_row = |row: Option<Value>| match row {
        // A second `stats` member replaces the first, as in a JSON object read whole.
        None => read_rows.borrow_mut().clear(),
        Some(row) => {
            if let Some(row) = row.as_object().and_then(stats_row) {
                read_rows.borrow_mut().push(row);
            }
        }
    };
    let row = Rule::Entries {
        keep: ENTRY_CAP,
        inner: &Rule::Scalar,
        seen: None,
    };
    let keys = [(
        "stats",
        Rule::Rescue {
            keep: limits.max_stats_rows,
            inner: &row,
            seen: Some(&rows_sent),
            rescue: is_total_row,
            take: Some(&take_row),
        },
    )];
    let rule = Rule::Keys {
        keys: &keys,
        other: Some(&Rule::Scalar),
        keep_other: ENTRY_CAP,
    };
    let from_string = raw.starts_with('"');
    let stats = match crate::ingest::json::parse_exact(text.as_bytes(), &rule) {
        Ok(Value::Object(m)) => m,
        // What a string holds is the load test's data: kept, not refused.
        Ok(other) if from_string => {
            let why = format!(
                "it holds {}, not an object or an array of rows",
                kind(&other)
            );
            return Ok(Some(kept_as_text(text.into_owned(), why, limits)));
        }
        Err(e) if from_string => {
            return Ok(Some(kept_as_text(text.into_owned(), e.to_string(), limits)));
        }
        Ok(other) => {
            return Err(bad(format!(
                "must hold a JSON object or an array of rows, not {}",
                kind(&other)
            )));
        }
        Err(e) => return Err(bad(format!("not valid JSON ({e})"))),
    };
    let (text, cut) = fit(crate::ingest::json::compact(&text), limits.max_string_bytes);
    let (rows, rows_sent) = match stats.get("stats") {
        Some(Value::Array(_)) => (read_rows.take(), rows_sent.get()),
        _ => (Vec::new(), 0),
    };
    let (rows, renamed, repeated) = distinct(rows);
    Ok(Some(RequestStats {
        text,
        scalars: scalar_members(&stats),
        rows,
        rows_sent,
        renamed,
        repeated,
        cut,
        tolerated,
        not_stats: None,
    }))
}

/// A `requestStats` string that holds no stats (`why`): its text kept as sent (cut to
/// `limits.max_string_bytes` at a character boundary), with no rows and no members.
fn kept_as_text(text: String, why: String, limits: PayloadLimits) -> RequestStats {
    let sent_bytes = text.len();
    let mut text = text;
    text.truncate(prefix(&text, limits.max_string_bytes).len());
    RequestStats {
        text: (!text.is_empty()).then_some(text),
        scalars: Vec::new(),
        rows: Vec::new(),
        rows_sent: 0,
        renamed: 0,
        repeated: 0,
        cut: TextCut {
            sent_bytes,
            ..TextCut::default()
        },
        tolerated: Tolerated::default(),
        not_stats: Some(why),
    }
}

/// Whether a row is Locust's total of all endpoints: named `Aggregated`, without a method.
fn is_total_row(row: &Value) -> bool {
    let no_method = match row.get("method") {
        None | Some(Value::Null) => true,
        Some(Value::String(m)) => m.is_empty(),
        Some(_) => false,
    };
    no_method && row.get("name").and_then(Value::as_str) == Some("Aggregated")
}

/// The compact `requestStats` text, cut to at most `max` bytes when it is longer: rows of
/// `stats` are left out from the end (the `Aggregated` row is kept while it fits), then
/// elements of `errors`, and the text says how many in `rows_left_out` and `errors_left_out`.
/// The result is valid JSON; `None` when even without its arrays it does not fit.
fn fit(text: std::borrow::Cow<'_, str>, max: usize) -> (Option<String>, TextCut) {
    let mut cut = TextCut {
        sent_bytes: text.len(),
        ..TextCut::default()
    };
    if text.len() <= max {
        return (Some(text.into_owned()), cut);
    }
    let mut text = text;
    for (key, marker) in [("stats", "rows_left_out"), ("errors", "errors_left_out")] {
        if text.len() <= max {
            break;
        }
        let Some(span) = crate::ingest::json::member_array(&text, key) else {
            continue;
        };
        let elements = span.elements.len();
        // The marker's count is at most the number of elements, so this is room enough.
        let marker_len = format!(",\"{marker}\":{elements}").len();
        let fixed = text.len() - (span.close - span.open - 1) + marker_len;
        let budget = max.saturating_sub(fixed);
        let len = |&(a, b): &(usize, usize)| b - a + 1; // with its comma
        let total = (key == "stats")
            .then(|| {
                span.elements.iter().rposition(|&(a, b)| {
                    serde_json::from_str::<Value>(text.get(a..b).unwrap_or_default())
                        .is_ok_and(|row| is_total_row(&row))
                })
            })
            .flatten()
            .filter(|&i| span.elements.get(i).is_some_and(|e| len(e) <= budget));
        let mut used = total.and_then(|i| span.elements.get(i)).map_or(0, len);
        let mut kept = Vec::new();
        for (i, element) in span.elements.iter().enumerate() {
            if Some(i) == total {
                kept.push(*element);
            } else if used + len(element) <= budget {
                used += len(element);
                kept.push(*element);
            }
        }
        let left_out = elements - kept.len();
        let mut shorter = String::with_capacity(max.min(text.len()));
        shorter.push_str(text.get(..=span.open).unwrap_or_default());
        for (n, &(a, b)) in kept.iter().enumerate() {
            if n > 0 {
                shorter.push(',');
            }
            shorter.push_str(text.get(a..b).unwrap_or_default());
        }
        // The text is a compact object: it ends with its closing brace.
        shorter.push_str(text.get(span.close..text.len() - 1).unwrap_or_default());
        shorter.push_str(&format!(",\"{marker}\":{left_out}}}"));
        if key == "stats" {
            cut.rows = left_out;
        } else {
            cut.errors = left_out;
        }
        text = std::borrow::Cow::Owned(shorter);
    }
    ((text.len() <= max).then(|| text.into_owned()), cut)
}

/// Numeric and boolean members whose keys can be field names, at most [`MAX_FIELDS`].
fn scalar_members(map: &Map<String, Value>) -> Vec<(String, FieldValue)> {
    map.iter()
        .filter(|(key, _)| {
            line_protocol::check_name(key).is_ok() && !RESERVED.contains(&key.as_str())
        })
        .filter_map(|(key, value)| match value {
            Value::Bool(b) => Some((key.clone(), FieldValue::Bool(*b))),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| (key.clone(), FieldValue::Float(f))),
            _ => None,
        })
        .take(MAX_FIELDS)
        .collect()
}

/// The tag value of a row's `name` or `method` that breaks the tag rules: made safe (control
/// characters and backslashes become `_`), cut so that it fits with its suffix, and followed by
/// `~` and the CRC-32 (ISO-HDLC, as gzip and zlib compute it) of the text as sent, in 8 hex
/// digits (Python: `"%08x" % zlib.crc32(text.encode())`). So two names made safe alike still
/// name two series, and a name names the same series in every commit.
pub fn safe_tag(text: &str) -> String {
    const SUFFIX: usize = 9; // "~" and 8 hex digits
    let mut safe =
        line_protocol::sanitize_tag_value(text, line_protocol::MAX_TAG_VALUE_BYTES - SUFFIX);
    safe.push_str(&format!("~{:08x}", crc32fast::hash(text.as_bytes())));
    safe
}

/// One endpoint row. `name` and `method` are data, never a reason to refuse: a value that
/// breaks the tag rules is made safe ([`safe_tag`]), and the exact text goes into the field
/// `full_name` (or `full_method`).
fn stats_row(row: &Map<String, Value>) -> Option<StatsRow> {
    let mut tags = Vec::new();
    let mut fields = scalar_members(row);
    for key in ["method", "name"] {
        let Some(text) = row.get(key).and_then(|v| tag_text(key, v).ok().flatten()) else {
            continue;
        };
        if line_protocol::check_tag_value(&text).is_ok() {
            tags.push((key.to_string(), text));
            continue;
        }
        let safe = safe_tag(&text);
        fields.push((format!("full_{key}"), FieldValue::Str(text)));
        tags.push((key.to_string(), safe));
    }
    // A point needs a field; a row with nothing to record is left to the requestStats text.
    (!fields.is_empty()).then_some(StatsRow { tags, fields })
}

/// The rows with no two sharing their `name` and `method` tags, so each is its own series:
/// a row that repeats an earlier one's (the same name twice, which Locust never sends, or a
/// name sent that equals another's safe form) gets `~2`, `~3`, … after its name tag, and its
/// name as sent in `full_name`. Also returns how many rows have a `name` tag other than the
/// name sent, and how many of those were repeats.
fn distinct(rows: Vec<StatsRow>) -> (Vec<StatsRow>, usize, usize) {
    use std::collections::HashSet;
    let tag = |row: &StatsRow, key: &str| {
        row.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut seen: HashSet<(Option<String>, Option<String>)> = HashSet::with_capacity(rows.len());
    let mut out = Vec::with_capacity(rows.len());
    let (mut renamed, mut repeated) = (0, 0);
    for mut row in rows {
        let method = tag(&row, "method");
        let name = tag(&row, "name");
        let has_full_name = row.fields.iter().any(|(k, _)| k == "full_name");
        let has_full_method = row.fields.iter().any(|(k, _)| k == "full_method");
        if seen.insert((name.clone(), method.clone())) {
            renamed += usize::from(has_full_name || has_full_method);
            out.push(row);
            continue;
        }
        repeated += 1;
        renamed += 1;
        let base = name.clone().unwrap_or_default();
        let mut n = 2usize;
        let unique = loop {
            let suffix = format!("~{n}");
            let mut candidate = line_protocol::sanitize_tag_value(
                &base,
                line_protocol::MAX_TAG_VALUE_BYTES - suffix.len(),
            );
            candidate.push_str(&suffix);
            if seen.insert((Some(candidate.clone()), method.clone())) {
                break candidate;
            }
            n += 1;
        };
        // Without a full_name, the name tag was the name as sent (unless there was none).
        if !has_full_name && name.is_some() {
            row.fields
                .push(("full_name".to_string(), FieldValue::Str(base)));
        }
        row.tags.retain(|(k, _)| k != "name");
        row.tags.push(("name".to_string(), unique));
        row.tags.sort();
        out.push(row);
    }
    (out, renamed, repeated)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Quotes client text for an error message, cut (see [`SHOWN_BYTES`]).
fn quote(s: &str) -> String {
    if s.len() <= SHOWN_BYTES {
        return format!("{s:?}");
    }
    format!("{:?}...", prefix(s, SHOWN_BYTES))
}

/// What [`handling_cost`] charges per member of a body, in bytes.
pub const COST_PER_MEMBER: u64 = 24;

/// Bytes that reading `body` and making its points and line protocol hold at once, at most
/// (the body budget charges them before the request is handled): about [`COST_PER_MEMBER`]
/// bytes per member the gateway will read (one row's tree at a time, the row members kept,
/// their points and lines), and the body's length again for the `requestStats` text taken out
/// of it. Measured: a commit of 1 000 rows × 1 000 numeric members (12.8 MB) took 34 MiB above
/// its body. A scan of bytes, not a parse: it runs before anything else, on any body.
///
/// Members are the `:` outside strings, and those inside the two strings the gateway reads as
/// JSON: a `requestStats` sent as a string, and a whole body sent as one string
/// (double-encoded). Colons in any other string cost nothing to read, so a body cannot be made
/// to look costly (and take the budget from others) by text it does not read.
pub fn handling_cost(body: &[u8]) -> u64 {
    let members = members_read(body);
    members
        .saturating_mul(COST_PER_MEMBER)
        .saturating_add(body.len() as u64)
}

/// The `:` of `body` the gateway reads as members (see [`handling_cost`]).
fn members_read(body: &[u8]) -> u64 {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"') {
        // A whole body sent as one string: the gateway reads the JSON inside it.
        return body.iter().filter(|&&b| b == b':').count() as u64;
    }
    let (mut members, mut in_string, mut escaped) = (0u64, false, false);
    // The last string closed, and whether a string being read is the value of `requestStats`.
    let (mut string_start, mut last_key_stats, mut counting) = (0usize, false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    last_key_stats = &body[string_start..i] == b"requestStats";
                }
                b':' if counting => members += 1,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
                // A string right after `"requestStats":` is read as JSON.
                counting = last_key_stats;
                last_key_stats = false;
            }
            b':' => members += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => last_key_stats = false,
        }
    }
    members
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
        let bom = "\u{feff} \"{\\\"a\\\":1}\"";
        assert_eq!(members_read(bom.as_bytes()), 1);
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
