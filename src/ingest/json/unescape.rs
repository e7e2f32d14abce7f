//! A JSON string's escapes undone quickly, for the `requestStats` text a client sends as a
//! string: plain runs copied whole, serde_json's own reading kept for anything unusual, so the
//! text and the errors are serde_json's. Pure: text in, text out.

use super::hex4;

/// The text of a JSON string, given as its JSON text with the quotes (as [`Rule::Raw`] keeps
/// it): its escapes undone. Plain runs are copied whole between escapes, so a text of many
/// escaped quotes (a JSON object sent as a string) costs little more than copying it; anything
/// the quick way does not expect (a lone surrogate, a control character, a malformed escape)
/// is left to serde_json, for the same answer and the same error.
pub fn unescape(raw: &str) -> Result<String, serde_json::Error> {
    match unescape_quick(raw) {
        Some(text) => Ok(text),
        None => serde_json::from_str(raw),
    }
}

fn unescape_quick(raw: &str) -> Option<String> {
    let mut rest = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(rest.len());
    // Escapes, quotes and control characters are ASCII: a byte search finds them.
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'\\' || b == b'"' || b < 0x20)
    {
        let (run, escape) = rest.split_at(at);
        out.push_str(run);
        let mut bytes = escape.bytes();
        if bytes.next() != Some(b'\\') {
            return None; // a quote or a control character: not one string
        }
        let (c, len) = match bytes.next()? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let high = hex4(escape.as_bytes(), 2)?;
                match high {
                    0xD800..=0xDBFF => {
                        let low = hex4(escape.as_bytes(), 8)
                            .filter(|_| escape.get(6..8) == Some("\\u"))
                            .filter(|low| (0xDC00..=0xDFFF).contains(low))?;
                        let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(c)?, 12)
                    }
                    _ => (char::from_u32(high)?, 6),
                }
            }
            _ => return None,
        };
        out.push(c);
        rest = escape.get(len..)?;
    }
    out.push_str(rest);
    Some(out)
}
