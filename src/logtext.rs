//! Client text made safe for a log line: what a client sent (a path, a method) or what InfluxDB
//! quotes of it (a field name in an error message) may hold characters that forge or disguise
//! log lines. Control characters (a newline would start a forged line), the Unicode line and
//! paragraph separators (U+2028, U+2029: line breaks to many log viewers) and the bidirectional
//! controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C: they reorder what a reader
//! sees, "Trojan Source", CVE-2021-42574) all become `?`, and the text is cut.

/// Whether `c` may not appear in a log line as it is.
fn unsafe_in_logs(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
        )
}

/// `text` with every character unsafe in a log line replaced by `?`, cut to `max` characters
/// (with `...` when cut).
pub fn escape(text: &str, max: usize) -> String {
    // Sized once (a character is 4 bytes at most): a log line escapes several texts a request.
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)) + 3);
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        out.push(if unsafe_in_logs(c) { '?' } else { c });
    }
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_client_sends_can_forge_or_disguise_a_log_line() {
        assert_eq!(escape("/a\nGET /b 200", 100), "/a?GET /b 200");
        assert_eq!(escape("a\u{2028}b\u{2029}c", 100), "a?b?c");
        assert_eq!(
            escape("field \u{202E}gnp.exe\u{202C} \u{2066}x\u{2069}", 100),
            "field ?gnp.exe? ?x?"
        );
        assert_eq!(escape("\u{200E}\u{200F}\u{061C}\t\r", 100), "?????");
        assert_eq!(escape("héllo wörld", 100), "héllo wörld");
        assert_eq!(escape(&"x".repeat(500), 200).len(), 203);
        assert_eq!(
            escape(&"x".repeat(200), 200),
            "x".repeat(200),
            "not cut at the bound"
        );
        assert_eq!(
            escape(&"é".repeat(201), 200),
            format!("{}...", "é".repeat(200))
        );
    }
}
