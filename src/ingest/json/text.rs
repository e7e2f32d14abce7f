//! The text of JSON already read, taken apart without a parse: white space outside strings
//! taken out ([`compact`]), and where a top-level member's array and each of its elements sit
//! ([`member_array`]), so a text too long to keep can be cut at an element.

use std::borrow::Cow;

use super::string_end;

/// Removes the white space outside strings from valid JSON text: its compact form, with keys
/// and numbers exactly as sent. Quotes, backslashes and white space are ASCII, and in UTF-8 an
/// ASCII byte is always that character, so the text is scanned as bytes and copied in runs.
/// Text that is compact already (as most clients send it) is not copied.
pub fn compact(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                i = string_end(bytes, i + 1);
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                if out.capacity() == 0 {
                    out.reserve(text.len());
                }
                out.push_str(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[start..]);
    Cow::Owned(out)
}

/// Where the array that is the value of a top-level member sits in the compact text of an
/// object (see [`member_array`]): byte offsets of its brackets and of each element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpan {
    /// The offset of `[`.
    pub open: usize,
    /// The offset of the matching `]`.
    pub close: usize,
    /// Each element's start and end (exclusive).
    pub elements: Vec<(usize, usize)>,
}

/// The array that is the value of the top-level member `key` (spelled without escapes) of the
/// compact JSON text of an object, as [`compact`] writes it; `None` when there is none.
pub fn member_array(text: &str, key: &str) -> Option<ArraySpan> {
    let b = text.as_bytes();
    let wanted = format!("\"{key}\":[");
    let mut depth = 0usize;
    let mut i = 0;
    let open = loop {
        match *b.get(i)? {
            b'"' => {
                let is_key = depth == 1 && i > 0 && matches!(b.get(i - 1), Some(b'{' | b','));
                if is_key && b[i..].starts_with(wanted.as_bytes()) {
                    break i + wanted.len() - 1;
                }
                i = string_end(b, i + 1);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    };
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    let mut i = open + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i = string_end(b, i + 1);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b',' if depth == 0 => {
                elements.push((start, i));
                start = i + 1;
            }
            b']' => {
                if i > start {
                    elements.push((start, i));
                }
                return Some(ArraySpan {
                    open,
                    close: i,
                    elements,
                });
            }
            _ => {}
        }
        i += 1;
    }
    None
}
