//! Bounded JSON reading: parses a request body into a `serde_json::Value` that holds only what
//! the gateway will look at, as a [`Rule`] describes it.
//!
//! A plain `serde_json::Value` costs far more memory than the text it came from: a 1 MiB body
//! of `{"a":1}` objects becomes about 90 MiB of maps. So nothing is built that no rule asks for:
//! unknown keys are skipped as they are read, containers where a scalar is expected are kept
//! only as an empty container of the same kind (so an error can still say "not an object"),
//! and every object or array keeps at most a fixed number of entries. What is skipped is still
//! checked to be valid JSON, within serde_json's nesting limit of 128.
//!
//! Pure: bytes in, values out; no I/O.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

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
    /// The value's JSON text, exactly as sent, as a `Value::String`.
    Raw,
}

/// Deepest nesting accepted anywhere, kept or skipped (serde_json's own limit for what it
/// builds, applied here to what it skips too, so the answer does not depend on the key).
pub const MAX_DEPTH: usize = 128;

/// Parses `text` as one JSON value under `rule`.
pub fn parse(text: &[u8], rule: &Rule<'_>) -> Result<Value, serde_json::Error> {
    if too_deep(text) {
        return Err(de::Error::custom(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Prune(rule).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Whether brackets outside strings nest deeper than [`MAX_DEPTH`]; one pass, no allocation.
fn too_deep(text: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Removes the white space outside strings from valid JSON text: its compact form, with keys
/// and numbers exactly as sent. Quotes, backslashes and white space are ASCII, and in UTF-8 an
/// ASCII byte is always that character, so the text is scanned as bytes and copied in runs.
pub fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push_str(&text[start..i]);
            start = i + 1;
        } else if b == b'"' {
            in_string = true;
        }
    }
    out.push_str(&text[start..]);
    out
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
        let mut kept = Vec::new();
        let (keep, inner, seen) = match self.0 {
            Rule::Entries { keep, inner, seen } => (*keep, Some(*inner), *seen),
            _ => (0, None, None),
        };
        let mut n = 0;
        loop {
            match inner.filter(|_| n < keep) {
                Some(rule) => match seq.next_element_seed(Prune(rule))? {
                    Some(v) => kept.push(v),
                    None => break,
                },
                None => {
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
        } = self.0
        {
            seen.set(n);
        }
        Ok(Value::Object(kept))
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
        let v = parse(
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
        // A number out of range is an error where it is kept; skipped, it is never converted.
        let kept = Rule::Keys {
            keys: &[("x", Rule::Scalar)],
            other: None,
            keep_other: 0,
        };
        assert!(parse(br#"{"x": 1e400}"#, &kept).is_err());
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

    #[test]
    fn compact_keeps_strings_whole() {
        assert_eq!(
            compact("{ \"a b\" : [1, 2.50],\n\t\"c\\\" d\": \" x \\\\\" }"),
            "{\"a b\":[1,2.50],\"c\\\" d\":\" x \\\\\"}"
        );
    }
}
