//! Locust's `requestStats` taken apart: its text (cut to fit), its scalar members, and one
//! row per endpoint, read one row at a time so that a commit of a million members never holds
//! them as one JSON tree. Pure: bytes in, rows out.

use super::*;
use crate::verdict::{
    Figures, MAX_ENDPOINT_BYTES, Metric, PERCENTILE_MEMBERS, PERCENTILES, ResultRow,
};

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
    /// The percentiles of all rows' `response_times` together (see [`StatsRow::computed`]):
    /// what an `Aggregated` row the gateway computes has, where the client sent none (`locust
    /// --json-file` writes none). Empty when no row has a histogram.
    pub merged: Vec<(&'static str, f64)>,
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
    /// Percentiles computed from the row's `response_times` (Locust's histogram), by the name
    /// of their metric (`p95`, …; see `verdict::PERCENTILES`), in milliseconds: what a verdict
    /// reads where Locust reported no percentile. Empty without a histogram. Not written.
    pub computed: Vec<(&'static str, f64)>,
}

impl StatsRow {
    /// The row's part of a run's result, which a verdict judges: the name and method as sent
    /// (`full_name` where the tag had to be changed), the figures read from Locust's members,
    /// percentiles computed from the histogram (`computed`) where Locust reported none.
    pub fn result_row(&self) -> ResultRow {
        let row = self;
        let tag = |key: &str| {
            row.tags
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let text = |key: &str| {
            row.fields.iter().find_map(|(k, v)| match v {
                FieldValue::Str(s) if k == key => Some(s.as_str()),
                _ => None,
            })
        };
        let num = |key: &str| {
            row.fields.iter().find_map(|(k, v)| match v {
                FieldValue::Float(f) if k == key => Some(*f),
                _ => None,
            })
        };
        let name = text("full_name").or(tag("name")).unwrap_or_default();
        let method = text("full_method").or(tag("method")).unwrap_or_default();
        let mut f = Figures::default();
        let requests = num("num_requests");
        let failures = num("num_failures");
        f.set(Metric::Requests, requests);
        f.set(Metric::Failures, failures);
        f.set(
            Metric::FailRatio,
            num("fail_ratio").or(match (failures, requests) {
                (Some(x), Some(n)) if n > 0.0 => Some(x / n),
                (Some(_), Some(_)) => Some(0.0),
                _ => None,
            }),
        );
        f.set(
            Metric::Avg,
            num("avg_response_time").or(match (num("total_response_time"), requests) {
                (Some(t), Some(n)) if n > 0.0 => Some(t / n),
                _ => None,
            }),
        );
        f.set(Metric::Min, num("min_response_time"));
        f.set(Metric::Max, num("max_response_time"));
        let computed = |m: Metric| {
            row.computed
                .iter()
                .find(|(c, _)| *c == m.name())
                .map(|(_, v)| *v)
        };
        for ((m, _), member) in PERCENTILES.iter().zip(PERCENTILE_MEMBERS) {
            f.set(*m, num(member).or_else(|| computed(*m)));
        }
        if f.get(Metric::P50).is_none() {
            f.set(Metric::P50, num("median_response_time"));
        }
        f.set(
            Metric::Median,
            num("median_response_time").or(f.get(Metric::P50)),
        );
        let span = match (num("last_request_timestamp"), num("start_time")) {
            (Some(last), Some(start)) if last > start => Some(last - start),
            _ => None,
        };
        f.set(
            Metric::Rps,
            num("total_rps").or(match (requests, span) {
                (Some(n), Some(s)) => Some(n / s),
                _ => None,
            }),
        );
        ResultRow {
            name: prefix(name, MAX_ENDPOINT_BYTES).to_string(),
            method: prefix(method, MAX_ENDPOINT_BYTES).to_string(),
            figures: f,
        }
    }
}

/// Entries of a row's `response_times` read at most: Locust's buckets (1 ms to 100 ms, then
/// 10 ms to 1 s, then 100 ms) number about 700 for a minute and 6 000 for ten.
const HISTOGRAM_ENTRIES: usize = 10_000;

/// `requestStats`, from its JSON text as sent: an object, an array of rows (as `locust
/// --json-file` writes them, read as `{"stats": [...]}`), a string holding either, or `null`.
/// Its data is the load test's, so keys that cannot be field names are skipped rather than
/// refused, and a text too long to keep whole is cut rather than refused.
pub(super) fn request_stats(
    raw: &str,
    limits: PayloadLimits,
) -> Result<Option<RequestStats>, PayloadError> {
    use std::borrow::Cow;
    const AT: &str = "measurement.fields.requestStats";
    let bad = |message: String| PayloadError::new(AT, Code::InvalidStats, message);
    let mut tolerated = Tolerated::default();
    let text: Cow<str> = match raw.as_bytes().first() {
        Some(b'{' | b'[') => Cow::Borrowed(raw),
        Some(b'"') => {
            let inner = crate::ingest::json::unescape(raw).map_err(|e| bad(e.to_string()))?;
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
    // Each row becomes a `StatsRow` as soon as it is read, straight from its members: a
    // commit of a thousand rows of a thousand members never holds them all, nor any row as a
    // JSON map.
    let read_rows = std::cell::RefCell::new(Vec::new());
    // Every row's histogram added up, bucket by bucket (keyed by the float's bits): at most
    // HISTOGRAM_ENTRIES buckets, as one row's.
    let merged = std::cell::RefCell::new(std::collections::HashMap::<u64, u64>::new());
    let take_row = |row: Option<crate::ingest::json::Row<'_>>| match row {
        // A second `stats` member replaces the first, as in a JSON object read whole.
        None => {
            read_rows.borrow_mut().clear();
            merged.borrow_mut().clear();
        }
        Some(row) => {
            if let Some(Value::Object(buckets)) = row.get("response_times") {
                merge_histogram(&mut merged.borrow_mut(), buckets);
            }
            if let Some(row) = stats_row(row) {
                read_rows.borrow_mut().push(row);
            }
        }
    };
    let keys = [(
        "stats",
        Rule::Rows {
            keep: limits.max_stats_rows,
            members: ENTRY_CAP,
            seen: &rows_sent,
            nested: Some(("response_times", HISTOGRAM_ENTRIES)),
            rescue: |row| is_total(row.get("method"), row.get("name")),
            take: &take_row,
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
        scalars: scalar_members(stats),
        rows,
        rows_sent,
        renamed,
        repeated,
        cut,
        tolerated,
        not_stats: None,
        merged: {
            let histogram: Vec<(f64, u64)> = merged
                .take()
                .into_iter()
                .map(|(bits, n)| (f64::from_bits(bits), n))
                .collect();
            crate::verdict::PERCENTILES
                .iter()
                .filter_map(|(m, q)| Some((m.name(), crate::verdict::percentile(&histogram, *q)?)))
                .collect()
        },
    }))
}

/// A `requestStats` string that holds no stats (`why`): its text kept as sent (cut to
/// `limits.max_string_bytes` at a character boundary), with no rows and no members.
pub(super) fn kept_as_text(text: String, why: String, limits: PayloadLimits) -> RequestStats {
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
        merged: Vec::new(),
    }
}

/// Whether a row is Locust's total of all endpoints: named `Aggregated`, without a method.
pub(super) fn is_total_row(row: &Value) -> bool {
    is_total(row.get("method"), row.get("name"))
}

/// Whether a row with this `method` and `name` is Locust's total of all endpoints.
fn is_total(method: Option<&Value>, name: Option<&Value>) -> bool {
    let no_method = match method {
        None | Some(Value::Null) => true,
        Some(Value::String(m)) => m.is_empty(),
        Some(_) => false,
    };
    no_method && name.and_then(Value::as_str) == Some("Aggregated")
}

/// The compact `requestStats` text, cut to at most `max` bytes when it is longer: rows of
/// `stats` are left out from the end (the `Aggregated` row is kept while it fits), then
/// elements of `errors`, and the text says how many in `rows_left_out` and `errors_left_out`.
/// The result is valid JSON; `None` when even without its arrays it does not fit.
pub(super) fn fit(text: std::borrow::Cow<'_, str>, max: usize) -> (Option<String>, TextCut) {
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

/// Numeric and boolean members whose keys can be field names, at most [`MAX_FIELDS`], in the
/// members' (sorted) order. Takes the members, so the keys kept are moved, not copied (a key
/// borrowed from the text is copied only when it is kept).
pub(super) fn scalar_members<K: AsRef<str> + Into<String>>(
    members: impl IntoIterator<Item = (K, Value)>,
) -> Vec<(String, FieldValue)> {
    // Collected into a new vector, not in place: the members' vector may be far longer than
    // the fields kept, and a row's fields live as long as the commit. Room for as many as
    // may be kept, made at once.
    let members = members.into_iter();
    let mut fields = Vec::with_capacity(members.size_hint().0.min(MAX_FIELDS));
    let kept = members
        .filter(|(key, value)| {
            matches!(value, Value::Bool(_) | Value::Number(_))
                && line_protocol::check_name(key.as_ref()).is_ok()
                && !RESERVED.contains(&key.as_ref())
        })
        .filter_map(|(key, value)| match value {
            Value::Bool(b) => Some((key.into(), FieldValue::Bool(b))),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| (key.into(), FieldValue::Float(f))),
            _ => None,
        })
        .take(MAX_FIELDS);
    fields.extend(kept);
    // The room made was for every member; a row of few numbers among many other members
    // keeps only what it holds (its fields live as long as the commit).
    if fields.capacity() > fields.len() + 8 {
        fields.shrink_to_fit();
    }
    fields
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
pub(super) fn stats_row(mut row: crate::ingest::json::Row<'_>) -> Option<StatsRow> {
    let mut tags = Vec::with_capacity(2);
    // Taken out before the members are: `name` and `method` are reserved, never fields.
    let tag_values = ["method", "name"].map(|key| row.remove(key));
    let computed = match row.remove("response_times") {
        Some(Value::Object(buckets)) => histogram_percentiles(&buckets),
        _ => Vec::new(),
    };
    let mut fields = scalar_members(row.members);
    for (key, value) in ["method", "name"].into_iter().zip(tag_values) {
        let Some(text) = value.and_then(|v| tag_text(|| key.to_string(), &v).ok().flatten()) else {
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
    (!fields.is_empty()).then_some(StatsRow {
        tags,
        fields,
        computed,
    })
}

/// Adds a row's histogram (`{"<rounded ms>": <requests>}`) to `merged`, bucket by bucket,
/// keeping at most [`HISTOGRAM_ENTRIES`] buckets.
fn merge_histogram(merged: &mut std::collections::HashMap<u64, u64>, buckets: &Map<String, Value>) {
    for (ms, n) in buckets {
        let (Some(ms), Some(n)) = (
            ms.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
            n.as_u64(),
        ) else {
            continue;
        };
        let len = merged.len();
        match merged.get_mut(&ms.to_bits()) {
            Some(count) => *count = count.saturating_add(n),
            None if len < HISTOGRAM_ENTRIES => {
                merged.insert(ms.to_bits(), n);
            }
            None => {}
        }
    }
}

/// The percentiles of Locust's histogram of a row (`{"<rounded ms>": <requests>}`); entries
/// whose key is not a number of milliseconds, or whose count is not a whole number, are
/// left out.
fn histogram_percentiles(buckets: &Map<String, Value>) -> Vec<(&'static str, f64)> {
    let histogram: Vec<(f64, u64)> = buckets
        .iter()
        .filter_map(|(ms, n)| {
            let ms = ms.trim().parse::<f64>().ok().filter(|v| v.is_finite())?;
            Some((ms, n.as_u64()?))
        })
        .collect();
    crate::verdict::PERCENTILES
        .iter()
        .filter_map(|(m, q)| Some((m.name(), crate::verdict::percentile(&histogram, *q)?)))
        .collect()
}

/// The rows with no two sharing their `name` and `method` tags, so each is its own series:
/// a row that repeats an earlier one's (the same name twice, which Locust never sends, or a
/// name sent that equals another's safe form) gets `~2`, `~3`, … after its name tag, and its
/// name as sent in `full_name`. Also returns how many rows have a `name` tag other than the
/// name sent, and how many of those were repeats.
pub(super) fn distinct(rows: Vec<StatsRow>) -> (Vec<StatsRow>, usize, usize) {
    use std::collections::HashSet;
    let tag = |row: &StatsRow, key: &str| {
        row.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut seen: HashSet<(Option<String>, Option<String>)> = HashSet::with_capacity(rows.len());
    // The next suffix to try for each name and method: a thousand copies of one row take a
    // thousand tries, not half a million.
    let mut next: std::collections::HashMap<(Option<String>, Option<String>), usize> =
        std::collections::HashMap::new();
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
        let from = next.entry((name.clone(), method.clone())).or_insert(2);
        let mut n = *from;
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
        if let Some(from) = next.get_mut(&(name.clone(), method.clone())) {
            *from = n + 1;
        }
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

#[cfg(test)]
#[path = "request_stats_tests.rs"]
mod tests;
