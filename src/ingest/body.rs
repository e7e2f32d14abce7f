//! What clients put around the JSON of a request body: the harmless wrappings are taken off,
//! the others refused with a message that says what was seen and what to send instead.
//!
//! The body is read as JSON whatever `Content-Type` says (so `curl -d` works, and a charset
//! parameter changes nothing), and its content coding has already been undone by the HTTP
//! layer. What is left, as clients in the field send it:
//!
//! - accepted: a UTF-8 byte order mark (.NET's `Encoding.UTF8` writes one; RFC 8259 §8.1 lets
//!   a parser ignore it), white space around the value (Go's `json.Encoder` ends with a
//!   newline), and a JSON string that holds the JSON object (Python's
//!   `requests.post(url, json=json.dumps(body))` encodes twice): its text is read instead.
//! - refused with `unsupported_charset`: UTF-16 or UTF-32, with a byte order mark or without one (told
//!   by the zero bytes of RFC 4627 §3), and bytes that are not UTF-8 at all (Latin-1,
//!   Windows-1252): RFC 8259 §8.1 asks for UTF-8, and guessing another charset could store
//!   the wrong characters.
//! - refused with `invalid_content_encoding`: gzip or zlib data without a `Content-Encoding`
//!   that says so, or compressed twice.
//! - refused with `invalid_json`, each with its own message: form data (`key=value&…`), a
//!   JSONP call (`callback({...})`), Python's `str()` of a dict (single quotes), and more than
//!   one JSON value (NDJSON), which [`more_than_one_value`] tells apart once serde_json has
//!   stopped at the second.
//!
//! Pure: bytes in, bytes out; the text is copied only for a double-encoded body.

use std::borrow::Cow;

use crate::code::Code;

/// A body refused before its JSON is read: the code, and a message saying what was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// The JSON text of a body: `body` without what is harmless around it.
pub fn unwrap(body: &[u8]) -> Result<Cow<'_, [u8]>, Refusal> {
    for (bom, name) in [
        (&b"\x00\x00\xfe\xff"[..], "UTF-32 (big-endian)"),
        (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
        (b"\xfe\xff", "UTF-16 (big-endian)"),
        (b"\xff\xfe", "UTF-16 (little-endian)"),
    ] {
        if body.starts_with(bom) {
            return Err(refuse(
                Code::UnsupportedCharset,
                format!("the body starts with a {name} byte order mark; send the JSON as UTF-8"),
            ));
        }
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if let Some(name) = compressed(body) {
        return Err(refuse(
            Code::InvalidContentEncoding,
            format!(
                "the body is {name} data, but no Content-Encoding says so (or it was compressed twice); send it with Content-Encoding: {}, compressed once",
                if name == "gzip" { "gzip" } else { "deflate" }
            ),
        ));
    }
    if let Some(name) = wide(body) {
        return Err(refuse(
            Code::UnsupportedCharset,
            format!(
                "the body looks like {name} (a zero byte beside each ASCII character); send the JSON as UTF-8"
            ),
        ));
    }
    if let Err(e) = std::str::from_utf8(body) {
        let at = e.valid_up_to();
        let byte = body.get(at).copied().unwrap_or_default();
        return Err(refuse(
            Code::UnsupportedCharset,
            format!(
                "the body is not UTF-8: byte 0x{byte:02x} at offset {at} does not belong there (Latin-1 or Windows-1252 text?); send the JSON as UTF-8"
            ),
        ));
    }
    let text = body.trim_ascii();
    match text.first() {
        Some(b'"') => Ok(double_encoded(text).map_or(Cow::Borrowed(body), Cow::Owned)),
        Some(b'{' | b'[') | None => {
            if text.starts_with(b"{")
                && text
                    .get(1..)
                    .is_some_and(|t| t.trim_ascii_start().starts_with(b"'"))
            {
                return Err(refuse(
                    Code::InvalidJson,
                    "the body uses single quotes, as Python's str() of a dict writes; send json.dumps(body), or requests' json=body",
                ));
            }
            Ok(Cow::Borrowed(body))
        }
        Some(_) => {
            if let Some(name) = jsonp(text) {
                return Err(refuse(
                    Code::InvalidJson,
                    format!(
                        "the body is a call of {name}(...) (JSONP); send the JSON object alone"
                    ),
                ));
            }
            if is_form(text) {
                return Err(refuse(
                    Code::InvalidJson,
                    "the body is form data (key=value), not JSON; send the JSON object itself, e.g. curl --data-binary @run.json",
                ));
            }
            Ok(Cow::Borrowed(body))
        }
    }
}

/// Whether serde_json stopped at `line`:`column` (1-based, columns in bytes) of `text` because
/// a second JSON value begins there: NDJSON, or objects written one after another.
pub fn more_than_one_value(text: &[u8], line: usize, column: usize) -> bool {
    // serde_json says line 0 for errors of its own making, which have no place in the text
    // (nesting too deep, and the like): those are never a second value.
    if line == 0 {
        return false;
    }
    let Some(start) = text
        .split(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .try_fold(0usize, |at, l| at.checked_add(l.len() + 1))
    else {
        return false;
    };
    let rest = text
        .get(start + column.saturating_sub(1)..)
        .unwrap_or_default();
    matches!(rest.trim_ascii_start().first(), Some(b'{' | b'['))
}

/// The name of the compression whose magic bytes start `body`: gzip (RFC 1952) or a zlib
/// header with one of the four usual levels (RFC 1950).
fn compressed(body: &[u8]) -> Option<&'static str> {
    match body {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0x78, 0x01 | 0x5e | 0x9c | 0xda, ..] => Some("zlib (deflate)"),
        _ => None,
    }
}

/// UTF-16 or UTF-32 without a byte order mark: JSON text starts with an ASCII character, so
/// its first four bytes show where the zero bytes are (RFC 4627 §3).
fn wide(body: &[u8]) -> Option<&'static str> {
    match body {
        [0, 0, 0, a, ..] if *a != 0 => Some("UTF-32 (big-endian)"),
        [a, 0, 0, 0, ..] if *a != 0 => Some("UTF-32 (little-endian)"),
        [0, a, ..] if *a != 0 => Some("UTF-16 (big-endian)"),
        [a, 0, ..] if *a != 0 => Some("UTF-16 (little-endian)"),
        _ => None,
    }
}

/// The text of a JSON string body that holds a JSON object or array; `None` for any other
/// string, which is then refused as "not an object" like any scalar.
fn double_encoded(text: &[u8]) -> Option<Vec<u8>> {
    // A lone surrogate escape in the outer string would stop serde_json; the inner text is
    // read by the tolerant reader, so it is enough to get that far.
    let outer = crate::ingest::json::tolerate(text).ok()?;
    let inner: String = serde_json::from_slice(&outer.bytes).ok()?;
    let first = inner.trim_start().as_bytes().first().copied();
    matches!(first, Some(b'{' | b'[')).then(|| inner.into_bytes())
}

/// `name(` at the start: a JavaScript identifier (with dots, as in `jQuery123.cb`) and a
/// parenthesis.
fn jsonp(text: &[u8]) -> Option<String> {
    let n = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
        .count();
    let name = text.get(..n)?;
    let rest = text.get(n..)?.trim_ascii_start();
    (n > 0 && n <= 64 && rest.starts_with(b"(")).then(|| String::from_utf8_lossy(name).into_owned())
}

/// `key=value` at the start, as `application/x-www-form-urlencoded` has it.
fn is_form(text: &[u8]) -> bool {
    let n = text
        .iter()
        .take_while(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'%' | b'[' | b']')
        })
        .count();
    n > 0 && text.get(n) == Some(&b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(if big_endian { b"\xfe\xff" } else { b"\xff\xfe" });
        }
        for unit in text.encode_utf16() {
            let bytes = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn harmless_wrappings_are_taken_off() {
        let object = br#"{"host":"lg-1"}"#;
        for (name, body, expected) in [
            ("plain", object.to_vec(), &object[..]),
            (
                "a UTF-8 byte order mark",
                [&b"\xef\xbb\xbf"[..], object].concat(),
                object,
            ),
            (
                "white space around",
                [&b" \r\n"[..], object, b"\n"].concat(),
                &b" \r\n{\"host\":\"lg-1\"}\n"[..],
            ),
            (
                "double-encoded",
                br#""{\"host\":\"lg-1\"}""#.to_vec(),
                object,
            ),
            (
                "double-encoded with space",
                b" \"  {\\\"host\\\":\\\"lg-1\\\"}\"\n".to_vec(),
                &b"  {\"host\":\"lg-1\"}"[..],
            ),
        ] {
            assert_eq!(
                unwrap(&body)
                    .unwrap_or_else(|e| panic!("{name}: {e:?}"))
                    .as_ref(),
                expected,
                "{name}"
            );
        }
        // Anything else is left for the JSON reader, which says what is wrong with it.
        for body in [
            &b"null"[..],
            b"\"text\"",
            b"[1]",
            b"{}{}",
            b"42",
            b"",
            b"{\"a\": NaN}",
        ] {
            assert_eq!(unwrap(body).unwrap().as_ref(), body);
        }
    }

    #[test]
    fn other_wrappings_are_refused_saying_what_was_seen() {
        let object = r#"{"host":"lg-1"}"#;
        let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
            (
                "UTF-16 LE with BOM",
                utf16(object, false, true),
                Code::UnsupportedCharset,
                "UTF-16 (little-endian) byte order mark",
            ),
            (
                "UTF-16 BE with BOM",
                utf16(object, true, true),
                Code::UnsupportedCharset,
                "UTF-16 (big-endian) byte order mark",
            ),
            (
                "UTF-16 LE",
                utf16(object, false, false),
                Code::UnsupportedCharset,
                "looks like UTF-16 (little-endian)",
            ),
            (
                "UTF-16 BE",
                utf16(object, true, false),
                Code::UnsupportedCharset,
                "looks like UTF-16 (big-endian)",
            ),
            (
                "UTF-32 LE with BOM",
                b"\xff\xfe\x00\x00{\x00\x00\x00".to_vec(),
                Code::UnsupportedCharset,
                "UTF-32 (little-endian) byte order mark",
            ),
            (
                "UTF-32 BE",
                b"\x00\x00\x00{\x00\x00\x00}".to_vec(),
                Code::UnsupportedCharset,
                "looks like UTF-32 (big-endian)",
            ),
            (
                "Latin-1",
                b"{\"host\":\"caf\xe9\"}".to_vec(),
                Code::UnsupportedCharset,
                "byte 0xe9 at offset 12",
            ),
            (
                "gzip without Content-Encoding",
                b"\x1f\x8b\x08\x00rest".to_vec(),
                Code::InvalidContentEncoding,
                "the body is gzip data",
            ),
            (
                "zlib without Content-Encoding",
                b"\x78\x9c\x01\x02".to_vec(),
                Code::InvalidContentEncoding,
                "zlib (deflate) data",
            ),
            (
                "form data",
                b"host=lg-1&mode=x".to_vec(),
                Code::InvalidJson,
                "form data",
            ),
            (
                "URL-encoded JSON in a form",
                b"json=%7B%22host%22%3A1%7D".to_vec(),
                Code::InvalidJson,
                "form data",
            ),
            (
                "JSONP",
                format!("callback({object});").into_bytes(),
                Code::InvalidJson,
                "a call of callback(...) (JSONP)",
            ),
            (
                "JSONP of jQuery",
                format!("jQuery1_2.cb ({object})").into_bytes(),
                Code::InvalidJson,
                "jQuery1_2.cb(...)",
            ),
            (
                "Python's str() of a dict",
                b"{'host': 'lg-1'}".to_vec(),
                Code::InvalidJson,
                "single quotes",
            ),
        ];
        for (name, body, code, seen) in cases {
            let err = unwrap(&body).expect_err(name);
            assert_eq!(err.code, code, "{name}: {}", err.message);
            assert!(err.message.contains(seen), "{name}: {}", err.message);
        }
    }

    #[test]
    fn a_second_value_is_told_apart_from_other_trailing_text() {
        assert!(more_than_one_value(b"{}{}", 1, 3));
        assert!(more_than_one_value(b"{\"a\":1}\n{\"a\":2}\n", 2, 1));
        assert!(more_than_one_value(b"{}\n\n  [1]", 3, 3));
        assert!(!more_than_one_value(b"{} x", 1, 4));
        assert!(!more_than_one_value(b"{}", 9, 9));
        assert!(
            !more_than_one_value(b"{\"x\":[[1]]}", 0, 0),
            "line 0: an error of serde_json's own making, at no place in the text"
        );
    }
}
