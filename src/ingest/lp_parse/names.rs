//! A name's and a string value's escapes undone as InfluxDB 1.x undoes them, and the one thing
//! a name may hold that no line can carry again (a line break). Pure: text in, text out.

use std::borrow::Cow;

/// Whether `name` holds a `\n` not escaped by an odd run of backslashes right before it (two
/// backslashes escape each other, for `split_lines` and InfluxDB's line splitter alike): written
/// again, it would end the line there (see [`super::Line::encode_ns`]). A `\r` ends no line.
pub(super) fn holds_line_break(name: &str) -> bool {
    let b = name.as_bytes();
    memchr::memchr_iter(b'\n', b)
        .any(|i| b[..i].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0)
}

/// Drops each backslash that comes right before one of `codes`; other backslashes stay. Text
/// without a backslash is itself, borrowed.
pub(super) fn unescape<'a>(raw: &'a str, codes: &[u8]) -> Cow<'a, str> {
    let b = raw.as_bytes();
    if !b.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut from = 0;
    for i in 0..b.len() {
        if b[i] == b'\\' && b.get(i + 1).is_some_and(|c| codes.contains(c)) {
            out.push_str(&raw[from..i]);
            from = i + 1;
        }
    }
    out.push_str(&raw[from..]);
    Cow::Owned(out)
}

/// A string value's content: `\\` is a backslash and `\"` a quote, read left to right; any
/// other backslash stays.
pub(super) fn unescape_string(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let (mut from, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'\\' && matches!(b.get(i + 1), Some(b'\\' | b'"')) {
            out.push_str(&raw[from..i]);
            from = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[from..]);
    out
}
