//! Bounded, tolerant JSON reading: parses a request body into a `serde_json::Value` that holds
//! only what the gateway will look at, as a [`Rule`] describes it.
//!
//! A plain `serde_json::Value` costs far more memory than the text it came from: a 1 MiB body
//! of `{"a":1}` objects becomes about 90 MiB of maps. So nothing is built that no rule asks for:
//! unknown keys are skipped as they are read (or, under [`Rule::Skip`], their name kept with
//! `null` for a value, so an answer can name them), containers where a scalar is expected are kept
//! only as an empty container of the same kind (so an error can still say "not an object"),
//! and every object or array keeps at most a fixed number of entries. What is skipped is still
//! checked to be valid JSON, within serde_json's nesting limit of 128.
//!
//! Tolerant of what Python's `json.dumps` (and JSON5, and Jackson with its non-numeric numbers
//! allowed) writes beyond RFC 8259, because load-test statistics hold such values: the tokens
//! `NaN` and `Infinity` (either may carry a sign) and numbers too large for a 64-bit float
//! (`1e400`, an integer of 400 digits) are read as `null`, and a `\u` escape of half a UTF-16
//! surrogate pair (`"\udc80"`, which Python writes for text it could not decode) as U+FFFD.
//! [`tolerate`] does that in the same pass that checks the nesting depth, before serde_json
//! reads the text, and copies the text only when it finds something to rewrite; it counts what
//! it rewrote ([`Tolerated`]), so an answer can say so.
//!
//! Pure: bytes in, values out; no I/O.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

mod text;
mod unescape;
pub use text::{compact, member_array};
pub use unescape::unescape;

/// What to keep of a JSON value.
pub enum Rule<'a> {
    /// Scalars as they are; an object or array becomes an empty one.
    Scalar,
    /// An object or array: its first `keep` entries, each read by `inner`; `seen`, when given,
    /// counts every entry, kept or not.
    Entries {
        keep: usize,
        inner: &'a Rule<'a>,
        seen: Option<&'a Cell<usize>>,
    },
    /// An object: the listed keys by their rules; other keys by `other` (at most `keep_other`
    /// of them), or skipped when `other` is `None`.
    Keys {
        keys: &'a [(&'a str, Rule<'a>)],
        other: Option<&'a Rule<'a>>,
        keep_other: usize,
    },
    /// An array of rows, each handed to `take` as a [`Row`] as soon as it is read, then let
    /// go: the array itself is left empty, so reading a million members in a thousand rows
    /// holds one row at a time, and no row is built as a JSON map. The first `keep` entries
    /// are read, and of those past `keep`, the first that `rescue` accepts, after the others;
    /// an entry that is not an object is read and skipped (`take` never sees it). `seen`
    /// counts every entry. `take` is called with `None` as the array begins (an object may
    /// repeat its key: the last wins). Given an object, it is read and left empty.
    Rows {
        keep: usize,
        /// Members kept of each row (see [`Row`]).
        members: usize,
        seen: &'a Cell<usize>,
        /// A member kept with its object's entries (at most this many, each a scalar) where
        /// every other member's object is emptied: a row's histogram.
        nested: Option<(&'a str, usize)>,
        rescue: fn(&Row<'_>) -> bool,
        take: &'a dyn Fn(Option<Row<'_>>),
    },
    /// The value's JSON text, exactly as sent, as a `Value::String`.
    Raw,
    /// Checked and skipped like an unknown key, but its key kept, with `null`: for keys whose
    /// name alone matters (the answer names the keys it ignored).
    Skip,
}

/// One object read under [`Rule::Rows`]: its first members (as many as the rule keeps, a
/// repeated key counting each time), each value a scalar (an object or array becomes an empty
/// one, as under [`Rule::Scalar`]), sorted by key, the last of a repeated key winning: what
/// reading it as a JSON map would hold. Keys without escapes borrow the text.
#[derive(Debug, Default)]
pub struct Row<'t> {
    pub members: Vec<(Cow<'t, str>, Value)>,
}

impl Row<'_> {
    /// The value of `key`, if the row has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.members
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .and_then(|at| self.members.get(at))
            .map(|(_, value)| value)
    }

    /// Takes `key` out of the row, with its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self
            .members
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()?;
        Some(self.members.remove(at).1)
    }
}

/// What a JSON value is, for a message: `null`, `a boolean`, `a number`, `a string`, `an
/// array`, `an object`.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deepest nesting accepted anywhere, kept or skipped (serde_json's own limit for what it
/// builds, applied here to what it skips too, so the answer does not depend on the key).
pub const MAX_DEPTH: usize = 128;

/// What [`tolerate`] rewrote in a text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tolerated {
    /// Numbers a float cannot hold (`NaN`, `Infinity`, `-Infinity`, `+Infinity`, `-NaN`,
    /// `+NaN`, and numbers beyond ±1.8e308), now `null`.
    pub non_finite: usize,
    /// `\u` escapes of a lone UTF-16 surrogate, now `\ufffd` (U+FFFD).
    pub lone_surrogates: usize,
}

impl Tolerated {
    /// Both counts, added.
    pub fn add(self, other: Tolerated) -> Tolerated {
        Tolerated {
            non_finite: self.non_finite + other.non_finite,
            lone_surrogates: self.lone_surrogates + other.lone_surrogates,
        }
    }
}

/// A text ready for serde_json: the text as sent when nothing had to be rewritten.
#[derive(Debug)]
pub struct Text<'a> {
    pub bytes: Cow<'a, [u8]>,
    pub tolerated: Tolerated,
}

/// Parses `text` as one JSON value under `rule`, after [`tolerate`].
pub fn parse(text: &[u8], rule: &Rule<'_>) -> Result<(Value, Tolerated), serde_json::Error> {
    let text = tolerate(text)?;
    Ok((parse_exact(&text.bytes, rule)?, text.tolerated))
}

/// Parses text that [`tolerate`] has already rewritten as one JSON value under `rule`.
pub fn parse_exact(text: &[u8], rule: &Rule<'_>) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Prune(rule).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Rewrites what serde_json would refuse but a client may well send (see the module
/// documentation) and checks that brackets outside strings nest at most [`MAX_DEPTH`] deep, in
/// one pass. Anything else that is not JSON is left for serde_json to report where it is.
pub fn tolerate(text: &[u8]) -> Result<Text<'_>, serde_json::Error> {
    let mut edit = Edit {
        text,
        out: None,
        copied: 0,
    };
    let mut tolerated = Tolerated::default();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                i = skip_string(text, i + 1, &mut edit, &mut tolerated);
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(de::Error::custom(format!(
                        "nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'N' | b'I' | b'+' | b'-' | b'0'..=b'9' => {
                let end = token_end(text, i);
                let token = text.get(i..end).unwrap_or_default();
                if is_named_non_finite(token) || overflows(token) {
                    edit.replace(i, end, b"null");
                    tolerated.non_finite += 1;
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(Text {
        bytes: edit.finish(),
        tolerated,
    })
}

/// A copy of a text with some ranges replaced, made only once the first one is.
struct Edit<'a> {
    text: &'a [u8],
    out: Option<Vec<u8>>,
    /// `text[..copied]` is in `out` already.
    copied: usize,
}

impl<'a> Edit<'a> {
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        let text = self.text;
        // NaN becomes null: a third longer at most, so one reservation covers nearly all.
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(text.len() + text.len() / 8 + 16));
        out.extend_from_slice(text.get(self.copied..start).unwrap_or_default());
        out.extend_from_slice(with);
        self.copied = end;
    }

    fn finish(self) -> Cow<'a, [u8]> {
        match self.out {
            None => Cow::Borrowed(self.text),
            Some(mut out) => {
                out.extend_from_slice(self.text.get(self.copied..).unwrap_or_default());
                Cow::Owned(out)
            }
        }
    }
}

/// Walks a string from just after its opening quote; returns the index after its closing
/// quote (or the end of the text). Escapes of a lone surrogate are replaced by `\ufffd`,
/// which has the same length.
fn skip_string(text: &[u8], mut i: usize, edit: &mut Edit<'_>, tolerated: &mut Tolerated) -> usize {
    loop {
        let Some(at) = text.get(i..).and_then(quote_or_backslash) else {
            return text.len();
        };
        i += at;
        if text.get(i) == Some(&b'"') {
            return i + 1;
        }
        if text.get(i + 1) == Some(&b'u') {
            match hex4(text, i + 2) {
                Some(0xD800..=0xDBFF) => {
                    let low = text.get(i + 6..i + 8) == Some(b"\\u")
                        && matches!(hex4(text, i + 8), Some(0xDC00..=0xDFFF));
                    if low {
                        i += 12;
                        continue;
                    }
                    edit.replace(i, i + 6, b"\\ufffd");
                    tolerated.lone_surrogates += 1;
                }
                Some(0xDC00..=0xDFFF) => {
                    edit.replace(i, i + 6, b"\\ufffd");
                    tolerated.lone_surrogates += 1;
                }
                // An ordinary escape, or a malformed one that serde_json will report.
                _ => {}
            }
        }
        i += 2;
    }
}

/// The bytes [`quote_or_backslash`] looks at one by one before it searches: a search for each
/// of escapes a few bytes apart made a body of them (`\"ab\"ab…`) three times as slow to scan
/// as a byte-by-byte scan; with four, no shape measured was more than 7 % slower (64 MB, by
/// hand), and a Locust commit's escaped text a quarter quicker.
const NEAR: usize = 4;

/// The offset of the first `"` or `\` in `text`, which is where a scan of a JSON string from
/// inside it must stop (its end, or an escape); `None` when there is none. The next [`NEAR`]
/// bytes are looked at one by one (a text dense with escapes would otherwise cost a search
/// each); past them, a search (`memchr`) pays.
pub(crate) fn quote_or_backslash(text: &[u8]) -> Option<usize> {
    let near = text
        .iter()
        .take(NEAR)
        .position(|&b| b == b'"' || b == b'\\');
    near.or_else(|| memchr::memchr2(b'"', b'\\', text.get(NEAR..)?).map(|at| at + NEAR))
}

/// The index after the closing quote of the string whose text starts at `i` (just after its
/// opening quote), or the end of `text`: escapes are stepped over whole.
fn string_end(text: &[u8], mut i: usize) -> usize {
    while let Some(at) = text.get(i..).and_then(quote_or_backslash) {
        i += at;
        if text.get(i) == Some(&b'"') {
            return i + 1;
        }
        i += 2;
    }
    text.len()
}

/// The four hex digits at `at`, as a number.
fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Where a bare token (a number or a word) starting at `start` ends: at the next byte that
/// JSON uses between values.
fn token_end(text: &[u8], start: usize) -> usize {
    text.get(start..)
        .unwrap_or_default()
        .iter()
        .position(|b| {
            matches!(
                b,
                b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'[' | b']' | b'{' | b'}' | b'"'
            )
        })
        .map_or(text.len(), |n| start + n)
}

/// `NaN` or `Infinity`, bare or with a sign, exactly as Python, JSON5 and Jackson write them.
fn is_named_non_finite(token: &[u8]) -> bool {
    let unsigned = token
        .strip_prefix(b"-")
        .or_else(|| token.strip_prefix(b"+"));
    matches!(unsigned.unwrap_or(token), b"NaN" | b"Infinity")
}

/// Whether `token` is a JSON number too large for a 64-bit float. Most numbers are told apart
/// by their count of digits and exponent alone; only those that may reach 1e308 are parsed.
fn overflows(token: &[u8]) -> bool {
    let Some((int, frac, exp)) = number_parts(token) else {
        return false;
    };
    let significant_int = int.iter().position(|&b| b != b'0');
    // The power of ten of the first significant digit, roughly (saturating, so that absurd
    // exponents stay absurd rather than wrapping around).
    let lead: i64 = match significant_int {
        Some(at) => (int.len() - at) as i64 - 1,
        None => match frac.iter().position(|&b| b != b'0') {
            Some(at) => -(at as i64) - 1,
            None => return false, // every digit is 0
        },
    };
    if lead.saturating_add(exp) < 307 {
        return false;
    }
    std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_infinite)
}

/// A JSON number's integer digits, fraction digits and exponent (saturated to ±2^62), or
/// `None` when `token` is not a JSON number (RFC 8259 §6).
fn number_parts(token: &[u8]) -> Option<(&[u8], &[u8], i64)> {
    let rest = token.strip_prefix(b"-").unwrap_or(token);
    let digits = |t: &[u8]| t.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = digits(rest);
    if n == 0 || (n > 1 && rest.first() == Some(&b'0')) {
        return None;
    }
    let (int, mut rest) = rest.split_at(n);
    let mut frac: &[u8] = &[];
    if let Some(after) = rest.strip_prefix(b".") {
        let n = digits(after);
        if n == 0 {
            return None;
        }
        (frac, rest) = after.split_at(n);
    }
    let mut exp = 0i64;
    if let Some(after) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let (negative, after) = match after.first() {
            Some(b'-') => (true, after.get(1..).unwrap_or_default()),
            Some(b'+') => (false, after.get(1..).unwrap_or_default()),
            _ => (false, after),
        };
        let n = digits(after);
        if n == 0 {
            return None;
        }
        let value = after.iter().take(n).fold(0i64, |acc, &b| {
            acc.saturating_mul(10)
                .saturating_add(i64::from(b - b'0'))
                .min(1 << 62)
        });
        exp = if negative { -value } else { value };
        rest = after.get(n..).unwrap_or_default();
    }
    rest.is_empty().then_some((int, frac, exp))
}

#[derive(Clone, Copy)]
struct Prune<'a>(&'a Rule<'a>);

impl<'de> DeserializeSeed<'de> for Prune<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Rule::Raw => {
                let raw = <Box<RawValue> as serde::Deserialize>::deserialize(d)?;
                Ok(Value::String(raw.get().to_string()))
            }
            Rule::Skip => {
                <IgnoredAny as serde::Deserialize>::deserialize(d)?;
                Ok(Value::Null)
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Prune<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if let Rule::Rows {
            keep,
            members,
            seen,
            nested,
            rescue,
            take,
        } = *self.0
        {
            take(None);
            let mut rescue = Some(rescue);
            let mut n = 0;
            loop {
                if n < keep {
                    match seq.next_element_seed(ReadRow(members, nested))? {
                        Some(Some(row)) => take(Some(row)),
                        Some(None) => {}
                        None => break,
                    }
                } else if let Some(test) = rescue {
                    // Read whole, but only one at a time: memory stays that of one row.
                    match seq.next_element_seed(ReadRow(members, nested))? {
                        Some(Some(row)) if test(&row) => {
                            take(Some(row));
                            rescue = None;
                        }
                        Some(_) => {}
                        None => break,
                    }
                } else if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                n += 1;
            }
            seen.set(n);
            return Ok(Value::Array(Vec::new()));
        }
        let mut kept = Vec::new();
        let (keep, inner, seen) = match self.0 {
            Rule::Entries { keep, inner, seen } => (*keep, Some(*inner), *seen),
            _ => (0, None, None),
        };
        let mut n = 0;
        loop {
            match inner {
                Some(rule) if n < keep => match seq.next_element_seed(Prune(rule))? {
                    Some(v) => kept.push(v),
                    None => break,
                },
                _ => {
                    if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                }
            }
            n += 1;
        }
        if let Some(seen) = seen {
            seen.set(n);
        }
        Ok(Value::Array(kept))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        let mut n = 0;
        let mut others = 0;
        while let Some(key) = map.next_key::<String>()? {
            let rule = match self.0 {
                Rule::Entries { keep, inner, .. } if n < *keep => Some(*inner),
                Rule::Keys {
                    keys,
                    other,
                    keep_other,
                } => match keys.iter().find(|(k, _)| *k == key) {
                    Some((_, rule)) => Some(rule),
                    None if others < *keep_other => {
                        others += 1;
                        *other
                    }
                    None => None,
                },
                _ => None,
            };
            match rule {
                Some(rule) => {
                    let value = map.next_value_seed(Prune(rule))?;
                    kept.insert(key, value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            n += 1;
        }
        if let Rule::Entries {
            seen: Some(seen), ..
        }
        | Rule::Rows { seen, .. } = self.0
        {
            seen.set(n);
        }
        Ok(Value::Object(kept))
    }
}

/// Reads one entry of a [`Rule::Rows`] array: an object as a [`Row`] of at most this many
/// members (the nested member's object keeping at most its count of entries), anything else
/// read and skipped (`None`).
#[derive(Clone, Copy)]
struct ReadRow<'a>(usize, Option<(&'a str, usize)>);

impl<'de> DeserializeSeed<'de> for ReadRow<'_> {
    type Value = Option<Row<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReadRow<'_> {
    type Value = Option<Row<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Value)> = Vec::with_capacity(16);
        let mut n = 0;
        while let Some(key) = map.next_key_seed(Key)? {
            if n < self.0 {
                let value = match self.1 {
                    Some((nested, keep)) if key == nested => {
                        map.next_value_seed(Prune(&Rule::Entries {
                            keep,
                            inner: &Rule::Scalar,
                            seen: None,
                        }))?
                    }
                    _ => map.next_value_seed(Prune(&Rule::Scalar))?,
                };
                members.push((key, value));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            n += 1;
        }
        // Sorted, the last of a repeated key winning, as a map would hold them: the sort is
        // stable, and of two equal keys the later value moves into the one kept.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        Ok(Some(Row { members }))
    }
}

/// An object's key, borrowed from the text when it holds no escape.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_the_rules_ask_for_is_kept() {
        let seen = Cell::new(0);
        let tags = Rule::Entries {
            keep: 2,
            inner: &Rule::Scalar,
            seen: Some(&seen),
        };
        let keys = [("tags", tags), ("raw", Rule::Raw), ("s", Rule::Scalar)];
        let top = Rule::Keys {
            keys: &keys,
            other: None,
            keep_other: 0,
        };
        let (v, _) = parse(
            br#"{"tags": {"a": 1, "b": {"x": [1, 2]}, "c": 3}, "raw": {"k" : [1, 2]},
                 "s": [1, 2], "ignored": {"deep": [[[1]]]}}"#,
            &top,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"tags": {"a": 1, "b": {}}, "raw": "{\"k\" : [1, 2]}", "s": []})
        );
        assert_eq!(seen.get(), 3);
    }

    #[test]
    fn skipped_parts_must_still_be_json() {
        let top = Rule::Keys {
            keys: &[],
            other: None,
            keep_other: 0,
        };
        assert!(parse(br#"{"x": [1, }"#, &top).is_err());
        assert!(parse(br#"{"x": 1} trailing"#, &top).is_err());
        assert!(parse("[".repeat(100_000).as_bytes(), &top).is_err());
        let deep = format!("{{\"skipped\": {}{}}}", "[".repeat(129), "]".repeat(129));
        assert!(
            parse(deep.as_bytes(), &top)
                .unwrap_err()
                .to_string()
                .contains("deeper than 128")
        );
        let fine = format!(
            "{{\"skipped\": {}{}, \"s\": \"[[[[\"}}",
            "[".repeat(127),
            "]".repeat(127)
        );
        assert!(parse(fine.as_bytes(), &top).is_ok());
    }

    /// Every spelling of a number a float cannot hold, wherever it stands, is read as `null`
    /// and counted; the same characters inside strings, and numbers that fit, are untouched.
    #[test]
    fn non_finite_numbers_are_read_as_null() {
        let all = Rule::Entries {
            keep: 100,
            inner: &Rule::Entries {
                keep: 100,
                inner: &Rule::Scalar,
                seen: None,
            },
            seen: None,
        };
        for (text, expected, count) in [
            ("[NaN]", json!([null]), 1),
            (
                "[Infinity, -Infinity, +Infinity]",
                json!([null, null, null]),
                3,
            ),
            ("[-NaN,+NaN]", json!([null, null]), 2),
            (
                "{\"a\":NaN,\"b\":[Infinity]}",
                json!({"a": null, "b": [null]}),
                2,
            ),
            (
                "[1e400, -1e400, 1E+309, 2e308]",
                json!([null, null, null, null]),
                4,
            ),
            ("[1.8e308, 0.00018e312]", json!([null, null]), 2),
            (
                &format!("[1{}, -1{}.5]", "0".repeat(400), "0".repeat(310)),
                json!([null, null]),
                2,
            ),
            ("[1e99999999999999999999999]", json!([null]), 1),
            // Numbers that fit stay numbers.
            (
                "[1.7e308, -1.7e308, 1e-400, 0e999999, 0.000001e310]",
                json!([1.7e308, -1.7e308, 0.0, 0.0, 1e304]),
                0,
            ),
            (&format!("[{}]", "9".repeat(300)), json!([1e300]), 0),
            // Inside strings nothing changes.
            (
                "[\"NaN\", \"Infinity\", \"1e400\"]",
                json!(["NaN", "Infinity", "1e400"]),
                0,
            ),
            ("[\"\\\"NaN\"]", json!(["\"NaN"]), 0),
        ] {
            let (value, tolerated) =
                parse(text.as_bytes(), &all).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(value, expected, "{text}");
            assert_eq!(tolerated.non_finite, count, "{text}");
        }
        // Near-misses are still not JSON, and are still refused.
        for text in [
            "[nan]",
            "[inf]",
            "[INF]",
            "[NaNa]",
            "[Infinityy]",
            "[+1]",
            "[-]",
            "[01]",
            "[1.]",
            "[1e]",
            "{NaN: 1}",
        ] {
            assert!(parse(text.as_bytes(), &all).is_err(), "{text}");
        }
        // Raw text is taken from the rewritten text, so it is JSON again.
        let raw = Rule::Keys {
            keys: &[("s", Rule::Raw)],
            other: None,
            keep_other: 0,
        };
        let (value, tolerated) = parse(br#"{"s": {"avg": NaN, "rps": Infinity}}"#, &raw).unwrap();
        assert_eq!(value, json!({"s": "{\"avg\": null, \"rps\": null}"}));
        assert_eq!(tolerated.non_finite, 2);
    }

    /// Text without anything to rewrite is not copied.
    #[test]
    fn plain_json_is_borrowed() {
        let text = br#"{"a": [1, 2.5e10, "NaN \ud83d\ude00"], "b": -0}"#;
        let t = tolerate(text).unwrap();
        assert!(matches!(t.bytes, Cow::Borrowed(_)));
        assert_eq!(t.tolerated, Tolerated::default());
    }

    #[test]
    fn lone_surrogate_escapes_become_the_replacement_character() {
        for (text, expected, count) in [
            (r#"["\udc80"]"#, "\u{fffd}", 1),
            (r#"["a\ud800b"]"#, "a\u{fffd}b", 1),
            (r#"["\ud800\ud800"]"#, "\u{fffd}\u{fffd}", 2),
            (r#"["\udc00\ud800"]"#, "\u{fffd}\u{fffd}", 2),
            (r#"["\ud800\n"]"#, "\u{fffd}\n", 1),
            (r#"["\ud83d\ude00"]"#, "\u{1f600}", 0),
            (r#"["\uD83D\uDE00 \uDFFF"]"#, "\u{1f600} \u{fffd}", 1),
            (r#"["\\udc80"]"#, "\\udc80", 0),
        ] {
            let (value, tolerated) = parse(
                text.as_bytes(),
                &Rule::Entries {
                    keep: 1,
                    inner: &Rule::Scalar,
                    seen: None,
                },
            )
            .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(value, json!([expected]), "{text}");
            assert_eq!(tolerated.lone_surrogates, count, "{text}");
        }
    }

    proptest::proptest! {
        /// Pretty JSON made compact is the compact serialization of the same value, whatever
        /// the strings hold (quotes, backslashes, white space, any Unicode).
        #[test]
        fn compact_undoes_pretty_printing(
            entries in proptest::collection::vec((".*", ".*", -1e6f64..1e6), 0..8)
        ) {
            let value: Value = entries
                .into_iter()
                .map(|(k, text, n)| (k, serde_json::json!([text, n, {" ": [text.clone()]}])))
                .collect::<serde_json::Map<String, Value>>()
                .into();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            proptest::prop_assert_eq!(compact(&pretty), serde_json::to_string(&value).unwrap());
        }
    }

    /// The quick way of undoing a string's escapes gives serde_json's text, or its error.
    #[test]
    fn unescape_is_serde_jsons() {
        for raw in [
            r#""""#,
            r#""plain""#,
            r#""{\"a\":1,\"b\":\"x\\y\"}""#,
            r#""\/\b\f\n\r\t\u00e9\u00E9\uD83D\uDE00 \u0000 é""#,
            r#""\ud83d\ude00\ud83d""#,
            r#""\udc80""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""a\""#,
            r#""a"b""#,
            "\"tab\there\"",
            r#""unterminated"#,
            r#""\"#,
            r#"""#,
            "5",
        ] {
            let serde: Result<String, String> =
                serde_json::from_str(raw).map_err(|e: serde_json::Error| e.to_string());
            assert_eq!(unescape(raw).map_err(|e| e.to_string()), serde, "{raw}");
        }
    }

    proptest::proptest! {
        /// Whatever a string holds, its JSON text is undone to it.
        #[test]
        fn unescape_undoes_serialization(text in ".*") {
            let raw = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(unescape(&raw).unwrap(), text);
        }
    }

    #[test]
    fn member_arrays_are_found_with_their_elements() {
        let text =
            r#"{"a":"\"stats\":[9]","x":{"stats":[8]},"stats":[{"n":"],["},[1,2],3],"z":[]}"#;
        let span = member_array(text, "stats").unwrap();
        let elements: Vec<&str> = span.elements.iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(elements, [r#"{"n":"],["}"#, "[1,2]", "3"]);
        assert_eq!(&text[span.open..=span.close], r#"[{"n":"],["},[1,2],3]"#);
        assert_eq!(member_array(text, "z").unwrap().elements, []);
        assert_eq!(member_array(text, "x"), None, "an object, not an array");
        assert_eq!(member_array(text, "nope"), None);
        // Escapes inside strings, a backslash before a quote among them.
        let text = r#"{"k\\":"\\","stats":["a\\\"],[",2],"t":1}"#;
        let span = member_array(text, "stats").unwrap();
        let elements: Vec<&str> = span.elements.iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(elements, [r#""a\\\"],[""#, "2"]);
        assert_eq!(member_array(r#"{"stats":["unended"#, "stats"), None);
    }

    /// The string scans as they were before they searched for quotes and backslashes (one
    /// byte at a time): what [`skip_string`] and [`compact`] must still give.
    fn skip_string_bytewise(
        text: &[u8],
        mut i: usize,
        edit: &mut Edit<'_>,
        tolerated: &mut Tolerated,
    ) -> usize {
        while let Some(&b) = text.get(i) {
            match b {
                b'"' => return i + 1,
                b'\\' if text.get(i + 1) == Some(&b'u') => {
                    match hex4(text, i + 2) {
                        Some(0xD800..=0xDBFF) => {
                            let low = text.get(i + 6..i + 8) == Some(b"\\u")
                                && matches!(hex4(text, i + 8), Some(0xDC00..=0xDFFF));
                            if low {
                                i += 12;
                                continue;
                            }
                            edit.replace(i, i + 6, b"\\ufffd");
                            tolerated.lone_surrogates += 1;
                        }
                        Some(0xDC00..=0xDFFF) => {
                            edit.replace(i, i + 6, b"\\ufffd");
                            tolerated.lone_surrogates += 1;
                        }
                        _ => {}
                    }
                    i += 2;
                }
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        i
    }

    fn compact_bytewise(text: &str) -> String {
        let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
        for c in text.chars() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
            } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
                continue;
            } else if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
        out
    }

    proptest::proptest! {
        /// On any text of quotes, backslashes, surrogate escapes and white space (valid JSON or
        /// not, strings ended or not), the scans give what the byte-by-byte ones gave.
        #[test]
        fn string_scans_match_the_bytewise_ones(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "\"", "\\", "\\\"", "\\\\", "\\ud83d", "\\ude00", "\\udc80", "\\u00e9",
                    "\\u12", "u", "ab", "abcdefghij", " ", "\n", "é", ":", "{", "}",
                ]),
                0..40,
            ),
            start in 0usize..4,
        ) {
            let text = pieces.concat();
            proptest::prop_assert_eq!(compact(&text).into_owned(), compact_bytewise(&text));
            let bytes = text.as_bytes();
            let start = start.min(bytes.len());
            let (mut t1, mut t2) = (Tolerated::default(), Tolerated::default());
            let mut e1 = Edit { text: bytes, out: None, copied: 0 };
            let mut e2 = Edit { text: bytes, out: None, copied: 0 };
            let end = skip_string(bytes, start, &mut e1, &mut t1);
            let end_bytewise = skip_string_bytewise(bytes, start, &mut e2, &mut t2);
            // Both stop at the end of the text, the old one sometimes a byte past it.
            proptest::prop_assert_eq!(end, end_bytewise.min(bytes.len()));
            proptest::prop_assert_eq!(t1, t2);
            proptest::prop_assert_eq!(e1.finish(), e2.finish());
        }
    }

    #[test]
    fn compact_keeps_strings_whole() {
        assert_eq!(
            compact("{ \"a b\" : [1, 2.50],\n\t\"c\\\" d\": \" x \\\\\" }"),
            "{\"a b\":[1,2.50],\"c\\\" d\":\" x \\\\\"}"
        );
    }
}
