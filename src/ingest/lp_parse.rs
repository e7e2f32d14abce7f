//! The strict line-protocol reader of the InfluxDB write APIs: a body and a precision in, each
//! line out as a checked point or as the refusal InfluxDB 1.x (1.6.7) would give it, with its line
//! number and byte range, and `Line::encode_ns` to write an accepted point again in nanoseconds.
//! It is pure: no I/O and no clock (a line without a timestamp takes the caller's `now_ns`).
//! docs/line-protocol.md lists what is accepted and refused.
//!
//! The rules are InfluxDB 1.6.7's, checked against the running `influxd`, and go beyond its
//! parser where the database refuses a point only when it stores it, because the gateway
//! acknowledges lines before InfluxDB sees them: a tag key `time` refuses the point, a field key
//! `time` is dropped (the point is refused if no other field is left), and one field given twice
//! with two types refuses the point with InfluxDB's `field type conflict: input field …` (it
//! stores the body's other points). Unsigned integers (`1u`) are refused as 1.6.7 refuses them (`invalid number`).
//! InfluxDB refuses more than this module knows, and the caller must decide about it: a field
//! whose type differs from what another line or the database holds (`field type conflict`), and
//! the per-database series and tag-value limits.
//!
//! What InfluxDB 1.x does with a body holding good and bad lines matters to the caller: `/write`
//! stores the good lines and answers 400 `{"error":"partial write: unable to parse '<line>':
//! <reason> dropped=0"}` (lines refused by the parser are not counted in `dropped`; points refused
//! when stored, such as a `time` tag, are), and when no line is good it answers 400 with every
//! refusal, one `unable to parse` per line, joined by `\n`.
//!
//! Two deliberate differences. 1.6.7 reads a field key that has a backslash right before its
//! `=` in two ways (its scanner takes the `=` as the key's end, its field reader as escaped),
//! and stores an odd key or fails with a 500: such a line is refused here
//! ([`Kind::AmbiguousKey`]). And a body that starts with a space is all fields to its line
//! splitter, so a quote opened there keeps a line break inside the line, and 1.6.7 stores a
//! name holding it; no line can carry such a name again (line protocol has no escape for a
//! line break), so the gateway, which writes every line again, refuses it
//! ([`Kind::LineBreakInName`]).

use std::borrow::Cow;
use std::ops::Range;

use super::line_protocol::split_lines;

mod encode;
mod error;
mod names;

use names::{holds_line_break, unescape, unescape_string};
mod precision;

/// Longest series key InfluxDB accepts, in bytes: the measurement and tags as written (escaped),
/// and, for each field, that plus 4 plus the field key as written.
pub const MAX_KEY_BYTES: usize = 65_535;
/// Earliest time InfluxDB 1.x stores, in nanoseconds since the Unix epoch (`i64::MIN + 2`).
pub const MIN_TIME_NS: i64 = i64::MIN + 2;
/// Latest time InfluxDB 1.x stores, in nanoseconds since the Unix epoch (`i64::MAX - 1`).
pub const MAX_TIME_NS: i64 = i64::MAX - 1;

pub use precision::Precision;

/// The value of one field as InfluxDB 1.x types it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A number without suffix (`1`, `-1.5`, `1e3`, `.5`); always finite.
    Float(f64),
    /// A number with the `i` suffix (`-7i`), within `i64`.
    Integer(i64),
    /// A double-quoted value, with `\"` and `\\` unescaped (any other backslash is kept).
    String(String),
    /// `t`, `T`, `true`, `True`, `TRUE` and `f`, `F`, `false`, `False`, `FALSE`.
    Boolean(bool),
}

impl FieldValue {
    fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Float(_) => "float",
            FieldValue::Integer(_) => "integer",
            FieldValue::String(_) => "string",
            FieldValue::Boolean(_) => "boolean",
        }
    }
}

/// One accepted point, its names unescaped: borrowed from the body where they hold no escape
/// (most names), copied where one was undone.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    pub measurement: Cow<'a, str>,
    /// Sorted by key (bytes of the unescaped key); keys are unique and values never empty.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// In the order of first appearance; a key given twice keeps its last value, and a field
    /// `time` is left out, as InfluxDB stores them. Never empty.
    pub fields: Vec<(Cow<'a, str>, FieldValue)>,
    /// Nanoseconds since the Unix epoch, within [`MIN_TIME_NS`]..=[`MAX_TIME_NS`].
    pub time_ns: i64,
}

pub use error::{Kind, LineError};

/// One line of a body that is neither blank nor a comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    /// 1-based number of the body's line (counting every `\n`, those inside string values too)
    /// where this line starts.
    pub number: usize,
    /// Byte range in the body of the line, leading whitespace and the line end excluded: the
    /// text InfluxDB quotes in `unable to parse '…'` (a `\r` before `\n` stays in it).
    pub range: Range<usize>,
    pub result: Result<Line<'a>, LineError>,
}

/// Every line of a body in order; blank lines and comments (`#` first) are left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed<'a> {
    pub entries: Vec<Entry<'a>>,
}

impl<'a> Parsed<'a> {
    /// The accepted points, in body order.
    #[cfg(test)]
    pub fn lines(&self) -> impl Iterator<Item = &Line<'a>> {
        self.entries.iter().filter_map(|e| e.result.as_ref().ok())
    }

    /// How many lines were refused.
    #[cfg(test)]
    pub fn refused(&self) -> usize {
        self.entries.iter().filter(|e| e.result.is_err()).count()
    }
}

/// Reads `body` as InfluxDB 1.6.7's `/write` does, with timestamps in `precision`; a line
/// without a timestamp gets `now_ns` (nanoseconds since the Unix epoch) cut down to a whole
/// number of `precision` units, as InfluxDB does with its own clock (not cut for `Auto`).
///
/// Lines are split as [`split_lines`] splits them (a `\n` in a quoted string value is part of
/// it). Leading spaces, tabs and NUL bytes of a line are skipped; `\r` is not whitespace, so a
/// `\r\n` body is refused as 1.6.7 refuses it, line by line (`bad timestamp`). One pass over each
/// line, plus one over its fields; no allocation but the output.
pub fn parse(body: &str, precision: Precision, now_ns: i64) -> Parsed<'_> {
    let mut entries = Vec::new();
    let base = body.as_ptr() as usize;
    let (mut counted_to, mut number) = (0usize, 1usize);
    let mut scratch = Scratch::new();
    for line in split_lines(body) {
        let start = line.as_ptr() as usize - base;
        let bytes = line.as_bytes();
        let skip = skip_whitespace(bytes, 0);
        if skip >= bytes.len() || bytes[skip] == b'#' {
            continue;
        }
        number += body.as_bytes()[counted_to..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted_to = start;
        let text = &line[skip..];
        entries.push(Entry {
            number,
            range: start + skip..start + line.len(),
            result: parse_line(text, precision, now_ns, &mut scratch),
        });
    }
    Parsed { entries }
}

/// Spaces, tabs and NUL bytes, which InfluxDB skips before each part of a line.
fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | 0) {
        i += 1;
    }
    i
}

/// Whether `b[i]` follows a backslash: the key part's escape rule (InfluxDB looks one byte back,
/// so in `\\,` the comma is escaped too).
fn after_backslash(b: &[u8], i: usize) -> bool {
    i > 0 && b[i - 1] == b'\\'
}

/// The byte ranges a line is cut into while it is read: kept from line to line of a body, so
/// that reading a line allocates only what its `Line` holds.
struct Scratch {
    /// Raw (escaped) key and value ranges of each tag, in line order.
    tags: Vec<Pair>,
    /// Where each field value starts (the `=` InfluxDB's scanner takes as a key's end).
    equals: Vec<usize>,
    /// Raw key and value range of each field.
    walked: Vec<Pair>,
}

impl Scratch {
    /// Room for the lines most bodies hold (k6 writes up to 10 tags and one field), so that
    /// they are read without growing it.
    fn new() -> Scratch {
        Scratch {
            tags: Vec::with_capacity(TAGS_COMPARED),
            equals: Vec::with_capacity(4),
            walked: Vec::with_capacity(4),
        }
    }
}

fn parse_line<'a>(
    text: &'a str,
    precision: Precision,
    now_ns: i64,
    scratch: &mut Scratch,
) -> Result<Line<'a>, LineError> {
    let b = text.as_bytes();
    let key = scan_key(b, &mut scratch.tags)?;
    if key.end > MAX_KEY_BYTES {
        return Err(max_key(key.end));
    }
    let fields = scan_fields(b, key.end, &mut scratch.equals)?;
    walk_fields(b, &fields, &scratch.equals, key.end, &mut scratch.walked)?;
    let walked = &scratch.walked;
    let time_ns = scan_time(b, fields.end, precision, now_ns)?;

    // One search of the key, and one of the fields, for a backslash: most lines have none,
    // and their names and values are then borrowed as they are, without a search each.
    let key_text = |escaped: bool, range: Range<usize>, codes| match escaped {
        true => unescape(&text[range], codes),
        false => Cow::Borrowed(&text[range]),
    };
    let key_escaped = b[..key.end].contains(&b'\\');
    let measurement = key_text(key_escaped, 0..key.measurement_end, MEASUREMENT_CODES);
    let mut tags = Vec::with_capacity(scratch.tags.len());
    for (k, v) in &scratch.tags {
        let name = key_text(key_escaped, k.clone(), TAG_CODES);
        if name == "time" {
            return Err(LineError::new(
                Kind::TimeTag,
                format!(
                    "invalid tag key: input tag \"time\" on measurement \"{measurement}\" is invalid"
                ),
            ));
        }
        tags.push((name, key_text(key_escaped, v.clone(), TAG_CODES)));
    }
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let mut out: Vec<(Cow<'_, str>, FieldValue)> = Vec::with_capacity(walked.len());
    // Where each name is in `out`, for a line of many fields: searching `out` for each field
    // takes time quadratic in their number, and a line of 1 MiB holds 100 000 of them.
    let mut index: Option<std::collections::HashMap<Cow<'_, str>, usize>> =
        (walked.len() > FIELDS_SEARCHED).then(std::collections::HashMap::new);
    let fields_escaped = b[key.end..fields.end].contains(&b'\\');
    for (k, v) in walked {
        let name = key_text(fields_escaped, k.clone(), MEASUREMENT_CODES);
        let value = field_value(&text[v.clone()])?;
        if name == "time" {
            continue;
        }
        let at = match &index {
            Some(index) => index.get(&name).copied(),
            None => out.iter().position(|(n, _)| *n == name),
        };
        match at.and_then(|i| out.get_mut(i)) {
            Some((_, old)) if old.type_name() != value.type_name() => {
                return Err(LineError::new(
                    Kind::FieldTypeConflict,
                    format!(
                        "field type conflict: input field \"{name}\" on measurement \"{measurement}\" is type {}, already exists as type {}",
                        value.type_name(),
                        old.type_name()
                    ),
                ));
            }
            Some((_, old)) => *old = value,
            None => {
                if let Some(index) = &mut index {
                    index.insert(name.clone(), out.len());
                }
                out.push((name, value));
            }
        }
    }
    if out.is_empty() {
        return Err(LineError::new(
            Kind::TimeField,
            format!(
                "invalid field name: input field \"time\" on measurement \"{measurement}\" is invalid"
            ),
        ));
    }
    // A name holding a line break (a body starting with a space is all fields to InfluxDB's
    // line splitter, so a quote opened there keeps a `\n` in the line) cannot be written again
    // as one line: refused (see the module documentation).
    if memchr::memchr(b'\n', b).is_some() {
        let mut names = std::iter::once(&measurement)
            .chain(tags.iter().flat_map(|(k, v)| [k, v]))
            .chain(out.iter().map(|(k, _)| k));
        if names.any(|name| holds_line_break(name)) {
            return Err(LineError::new(
                Kind::LineBreakInName,
                "a name holds a line break, which no line can carry",
            ));
        }
    }
    Ok(Line {
        measurement,
        tags,
        fields: out,
        time_ns,
    })
}

/// Fields of a line up to which a repeated name is found by searching those before it; beyond,
/// through an index.
const FIELDS_SEARCHED: usize = 32;

/// The raw (escaped) byte ranges of a key and its value in a line.
type Pair = (Range<usize>, Range<usize>);

/// Where the parts of the key (measurement and tags) are in a line; the tags' ranges are in
/// [`Scratch::tags`].
struct Key {
    measurement_end: usize,
    /// Index of the space after the key.
    end: usize,
}

fn missing_fields() -> LineError {
    LineError::new(Kind::MissingFields, "missing fields")
}

fn max_key(len: usize) -> LineError {
    LineError::new(
        Kind::MaxKeyLength,
        format!("max key length exceeded: {len} > {MAX_KEY_BYTES}"),
    )
}

/// Tags of a line up to which duplicate keys are found by comparing each pair; beyond, by
/// sorting the keys.
const TAGS_COMPARED: usize = 16;

/// Reads the key of line `b`; the ranges of its tags into `tags` (cleared first).
fn scan_key(b: &[u8], tags: &mut Vec<Pair>) -> Result<Key, LineError> {
    tags.clear();
    if b.first().is_none_or(|&c| c == b',') {
        return Err(LineError::new(
            Kind::MissingMeasurement,
            "missing measurement",
        ));
    }
    let mut i = 0;
    let has_tags = loop {
        i += 1;
        if i >= b.len() {
            return Err(missing_fields());
        }
        if after_backslash(b, i) {
            continue;
        }
        match b[i] {
            b',' => break true,
            b' ' => break false,
            _ => {}
        }
    };
    let mut key = Key {
        measurement_end: i,
        end: i,
    };
    if !has_tags {
        return Ok(key);
    }
    i += 1;
    loop {
        // The tag key: at least one byte, up to an unescaped '='.
        let key_start = i;
        if b.get(i).is_none_or(|c| matches!(c, b' ' | b',' | b'=')) {
            return Err(LineError::new(Kind::MissingTagKey, "missing tag key"));
        }
        loop {
            i += 1;
            if i >= b.len() || (matches!(b[i], b' ' | b',') && !after_backslash(b, i)) {
                return Err(LineError::new(Kind::MissingTagValue, "missing tag value"));
            }
            if b[i] == b'=' && !after_backslash(b, i) {
                break;
            }
        }
        let key_range = key_start..i;
        i += 1;
        // The tag value: at least one byte, up to an unescaped ',' or ' '.
        let value_start = i;
        if b.get(i).is_none_or(|c| matches!(c, b' ' | b',')) {
            return Err(LineError::new(Kind::MissingTagValue, "missing tag value"));
        }
        let more = loop {
            i += 1;
            if i >= b.len() {
                return Err(missing_fields());
            }
            if after_backslash(b, i) {
                continue;
            }
            match b[i] {
                b'=' => {
                    return Err(LineError::new(Kind::InvalidTagFormat, "invalid tag format"));
                }
                b',' => break true,
                b' ' => break false,
                _ => {}
            }
        };
        tags.push((key_range, value_start..i));
        if !more {
            key.end = i;
            // InfluxDB compares the keys as written, before it looks at the fields. Clients
            // write them sorted: keys in rising order have no two alike, one look each.
            let name = |t: &Pair| &b[t.0.clone()];
            let rising = tags.windows(2).all(|w| name(&w[0]) < name(&w[1]));
            let duplicate = if rising {
                false
            } else if tags.len() <= TAGS_COMPARED {
                tags.iter()
                    .enumerate()
                    .any(|(n, t)| tags[n + 1..].iter().any(|u| name(t) == name(u)))
            } else {
                let mut names: Vec<&[u8]> = tags.iter().map(|(k, _)| &b[k.clone()]).collect();
                names.sort_unstable();
                names.windows(2).any(|w| w[0] == w[1])
            };
            if duplicate {
                return Err(LineError::new(Kind::DuplicateTags, "duplicate tags"));
            }
            return Ok(key);
        }
        i += 1;
    }
}

/// The field part of a line: its range (where each value starts, the `=` InfluxDB's scanner
/// takes as a key's end, is in [`Scratch::equals`]).
struct Fields {
    start: usize,
    end: usize,
}

/// Reads the field part of line `b` from `from`; where each value starts into `equals`
/// (cleared first).
fn scan_fields(b: &[u8], from: usize, equals: &mut Vec<usize>) -> Result<Fields, LineError> {
    equals.clear();
    let start = skip_whitespace(b, from);
    let mut i = start;
    let (mut quoted, mut commas) = (false, 0usize);
    let err = |kind, detail: &str| Err(LineError::new(kind, detail));
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            i += 2;
            continue;
        }
        if c == b'"' && equals.len() > commas {
            quoted = !quoted;
            i += 1;
            continue;
        }
        if c == b'=' && !quoted {
            equals.push(i);
            // "m =1" and "m a=1,=2" have no key; "m a\ =1" does.
            let before = |n: usize| i.checked_sub(n).map(|j| b[j]);
            if matches!(before(1), Some(b' ' | b',')) && before(2) != Some(b'\\') {
                return err(Kind::MissingFieldKey, "missing field key");
            }
            match b.get(i + 1) {
                None | Some(b',' | b' ') => {
                    return err(Kind::MissingFieldValue, "missing field value");
                }
                Some(b'0'..=b'9' | b'.' | b'-' | b'N' | b'n') => {
                    i = scan_number(b, i + 1)?;
                    continue;
                }
                Some(b'"') => {}
                Some(_) => {
                    i = scan_boolean(b, i + 1)?;
                    continue;
                }
            }
        }
        if c == b',' && !quoted {
            commas += 1;
        }
        if c == b' ' && !quoted {
            break;
        }
        i += 1;
    }
    if quoted {
        return err(Kind::UnbalancedQuotes, "unbalanced quotes");
    }
    if equals.is_empty() || commas + 1 != equals.len() {
        return err(Kind::InvalidFieldFormat, "invalid field format");
    }
    Ok(Fields { start, end: i })
}

fn invalid_number() -> LineError {
    LineError::new(Kind::InvalidNumber, "invalid number")
}

/// Checks a number starting at `start` the way InfluxDB's scanner does and returns its end.
fn scan_number(b: &[u8], start: usize) -> Result<usize, LineError> {
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
        if i == b.len() {
            return Err(invalid_number());
        }
    }
    let (mut int, mut unsigned, mut decimal, mut scientific) = (false, false, false, false);
    while i < b.len() && !matches!(b[i], b',' | b' ') {
        let c = b[i];
        if (c == b'i' || c == b'u') && i > start && !(int || unsigned) {
            int |= c == b'i';
            unsigned |= c == b'u';
            i += 1;
            continue;
        }
        if c == b'.' {
            if decimal {
                return Err(invalid_number());
            }
            decimal = true;
        }
        if i > start && (c == b'e' || c == b'E') {
            scientific = true;
            i += 1;
            continue;
        }
        if (c == b'+' || c == b'-') && matches!(b[i - 1], b'e' | b'E') {
            i += 1;
            continue;
        }
        if i + 2 < b.len() && (c == b'N' || c == b'n') {
            return Err(not_finite_or(&b[start..], invalid_number()));
        }
        if !(c.is_ascii_digit() || c == b'.') {
            return Err(not_finite_or(&b[start..], invalid_number()));
        }
        i += 1;
    }
    if (int || unsigned) && (decimal || scientific) {
        return Err(invalid_number());
    }
    let digits =
        i - start - usize::from(int) - usize::from(decimal) - usize::from(b[start] == b'-');
    if digits == 0 {
        return Err(invalid_number());
    }
    let text = std::str::from_utf8(&b[start..i]).unwrap_or("");
    if int {
        if b[i - 1] != b'i' {
            return Err(invalid_number());
        }
        parse_integer(&text[..text.len() - 1])?;
    } else if unsigned {
        return Err(LineError::new(Kind::Unsigned, "invalid number"));
    } else if scientific || text.len() >= 25 {
        parse_float(text)?;
    }
    Ok(i)
}

/// `NaN`, `Inf`, `Infinity` with or without a sign, any case: refused with InfluxDB's own
/// detail (`fallback`'s), under the kind that says why.
fn not_finite_or(rest: &[u8], fallback: LineError) -> LineError {
    let end = rest
        .iter()
        .position(|c| matches!(c, b',' | b' '))
        .unwrap_or(rest.len());
    let word = rest[..end].strip_prefix(b"-").unwrap_or(&rest[..end]);
    let spelled = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
    if spelled("nan") || spelled("inf") || spelled("infinity") {
        LineError::new(Kind::NotFinite, fallback.detail)
    } else {
        fallback
    }
}

fn parse_integer(text: &str) -> Result<i64, LineError> {
    text.parse::<i64>().map_err(|_| {
        LineError::new(
            Kind::IntegerOutOfRange,
            format!(
                "unable to parse integer {text}: strconv.ParseInt: parsing \"{text}\": value out of range"
            ),
        )
    })
}

/// Go's `strconv.ParseFloat`: Rust reads the same decimal syntax (and rounds alike), but gives
/// infinity where Go refuses a value out of range.
fn parse_float(text: &str) -> Result<f64, LineError> {
    match text.parse::<f64>() {
        // Rust also reads `inf` and `NaN`, which InfluxDB's scanner never lets through.
        Ok(v)
            if v.is_finite()
                && !text
                    .bytes()
                    .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E') =>
        {
            Ok(v)
        }
        _ => Err(LineError::new(Kind::InvalidFloat, "invalid float")),
    }
}

fn scan_boolean(b: &[u8], start: usize) -> Result<usize, LineError> {
    let end = b[start..]
        .iter()
        .position(|c| matches!(c, b',' | b' '))
        .map_or(b.len(), |n| start + n);
    let word = &b[start..end];
    let ok = matches!(
        word,
        b"t" | b"T" | b"true" | b"True" | b"TRUE" | b"f" | b"F" | b"false" | b"False" | b"FALSE"
    );
    if ok {
        Ok(end)
    } else {
        Err(not_finite_or(
            word,
            LineError::new(Kind::InvalidBoolean, "invalid boolean"),
        ))
    }
}

/// The fields as InfluxDB's field reader cuts them (a key ends at the first `=` that does not
/// follow a backslash; a value at the first unquoted comma), checked against the scanner's cuts
/// and the key length (`equals`: [`scan_fields`]'s). The raw key and value range of each
/// field into `out` (cleared first).
fn walk_fields(
    b: &[u8],
    fields: &Fields,
    equals: &[usize],
    key_len: usize,
    out: &mut Vec<Pair>,
) -> Result<(), LineError> {
    out.clear();
    let mut i = fields.start;
    let end = fields.end;
    while i < end {
        let key_start = i;
        while i < end && !(b[i] == b'=' && (i == key_start || !after_backslash(b, i))) {
            i += 1;
        }
        if i + 2 > end {
            let key = String::from_utf8_lossy(&b[key_start..i.min(end)]);
            return Err(LineError::new(
                Kind::AmbiguousKey,
                format!("invalid value: field-key={key}"),
            ));
        }
        if equals.get(out.len()) != Some(&i) || i == key_start {
            return Err(LineError::new(
                Kind::AmbiguousKey,
                "field key read two ways: a backslash right before '='",
            ));
        }
        let size = key_len + 4 + (i - key_start);
        if size > MAX_KEY_BYTES {
            return Err(max_key(size));
        }
        let value_start = i + 1;
        let mut j = value_start;
        let mut quoted = false;
        while j < end {
            match b[j] {
                b'\\' if j + 1 < end && matches!(b[j + 1], b'"' | b'\\') => j += 1,
                b'"' => quoted = !quoted,
                b',' if !quoted => break,
                _ => {}
            }
            j += 1;
        }
        out.push((key_start..i, value_start..j.min(end)));
        i = j + 1;
    }
    if out.len() != equals.len() {
        return Err(LineError::new(
            Kind::AmbiguousKey,
            "field key read two ways: a backslash right before '='",
        ));
    }
    Ok(())
}

/// A value cut by [`walk_fields`], typed by its first and last byte as InfluxDB stores it.
fn field_value(v: &str) -> Result<FieldValue, LineError> {
    let b = v.as_bytes();
    match b.first() {
        None => Err(LineError::new(
            Kind::MissingFieldValue,
            "missing field value",
        )),
        // InfluxDB drops the first and the last byte, whatever the last is (`"x"y` is `x"`);
        // where the last is part of a multi-byte character it would store a broken one: such
        // a line is refused as unbalanced, never cut inside the character.
        Some(b'"') if b.len() >= 2 => match v.get(1..v.len() - 1) {
            Some(inner) => Ok(FieldValue::String(unescape_string(inner))),
            None => Err(LineError::new(Kind::UnbalancedQuotes, "unbalanced quotes")),
        },
        Some(b'0'..=b'9' | b'-' | b'.' | b'n' | b'N' | b'i' | b'I' | b'u') => {
            if let Some(int) = v.strip_suffix('i') {
                parse_integer(int).map(FieldValue::Integer)
            } else if v.ends_with('u') {
                Err(LineError::new(Kind::Unsigned, "invalid number"))
            } else {
                parse_float(v).map(FieldValue::Float)
            }
        }
        _ => match v {
            "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Boolean(true)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Boolean(false)),
            _ => Err(LineError::new(Kind::InvalidBoolean, "invalid boolean")),
        },
    }
}

fn scan_time(b: &[u8], from: usize, precision: Precision, now_ns: i64) -> Result<i64, LineError> {
    let start = skip_whitespace(b, from);
    let mut i = start;
    while i < b.len() && !matches!(b[i], b'\n' | b' ') {
        if !(b[i].is_ascii_digit() || (i == start && b[i] == b'-')) {
            return Err(LineError::new(Kind::BadTimestamp, "bad timestamp"));
        }
        i += 1;
    }
    if i == start {
        let unit = match precision {
            Precision::Auto => 1,
            p => p.multiplier(0),
        };
        return Ok(now_ns - now_ns.rem_euclid(unit));
    }
    let text = std::str::from_utf8(&b[start..i]).unwrap_or("");
    let ts: i64 = text.parse().map_err(|_| {
        let (kind, why) = if text == "-" {
            (Kind::BadTimestamp, "invalid syntax")
        } else {
            (Kind::TimeOutOfRange, "value out of range")
        };
        LineError::new(kind, format!("strconv.ParseInt: parsing \"{text}\": {why}"))
    })?;
    let ns = ts
        .checked_mul(precision.multiplier(ts))
        .filter(|ns| (MIN_TIME_NS..=MAX_TIME_NS).contains(ns))
        .ok_or_else(|| {
            LineError::new(
                Kind::TimeOutOfRange,
                format!("time outside range {MIN_TIME_NS} - {MAX_TIME_NS}"),
            )
        })?;
    if b[i..].iter().any(|&c| c != b' ') {
        return Err(LineError::new(Kind::TrailingText, "point is invalid"));
    }
    Ok(ns)
}

/// What a backslash escapes in measurements and field keys (InfluxDB's `escape.Unescape`)…
const MEASUREMENT_CODES: &[u8] = b", =\"";
/// …and in tag keys and values (it leaves `\"` alone there).
const TAG_CODES: &[u8] = b", =";

#[cfg(test)]
#[path = "lp_parse_tests.rs"]
mod tests;
