//! What handling a request body costs in memory, charged to the body budget before it is
//! read: a scan of bytes, not a parse.

/// What [`handling_cost`] charges per member of a body, in bytes.
pub const COST_PER_MEMBER: u64 = 24;

/// Bytes that reading `body` and making its points and line protocol hold at once, at most
/// (the body budget charges them before the request is handled): about [`COST_PER_MEMBER`]
/// bytes per member the gateway will read (one row's tree at a time, the row members kept,
/// their points and lines), and the body's length again for the `requestStats` text taken out
/// of it. Measured: a commit of 1 000 rows × 1 000 numeric members (12.8 MB) took 34 MiB above
/// its body. A scan of bytes, not a parse: it runs before anything else, on any body.
///
/// Members are the `:` right after a key (a string), outside strings and inside the two strings
/// the gateway reads as JSON: a `requestStats` sent as a string, and a whole body sent as one
/// string (double-encoded). Colons in any other string, or where no key comes before them (the
/// reader stops there with a 400), cost nothing, so a body cannot be made to look costly (and
/// take the budget from others) by text the gateway does not read.
pub fn handling_cost(body: &[u8]) -> u64 {
    let members = members_read(body);
    members
        .saturating_mul(COST_PER_MEMBER)
        .saturating_add(body.len() as u64)
}

/// The `:` of `body` the gateway reads as members (see [`handling_cost`]).
pub(super) fn members_read(body: &[u8]) -> u64 {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"') {
        // A whole body sent as one string: the gateway reads the JSON inside it, whose keys
        // end in an escaped quote.
        return body.windows(2).filter(|w| w == b"\":").count() as u64;
    }
    let mut members = 0u64;
    // Whether the last string closed is the key `requestStats` (the string after it is read
    // as JSON), and whether a `:` now would follow a string.
    let (mut last_key_stats, mut after_string) = (false, false);
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let (end, inner) = string_at(body, i + 1, last_key_stats);
                members += inner;
                last_key_stats = body.get(i + 1..end) == Some(b"requestStats".as_slice());
                after_string = true;
                i = end + 1;
                continue;
            }
            // A member's `:` follows its key, a string: a `:` anywhere else is not JSON the
            // reader reads past (it stops there with a 400), so it costs nothing.
            b':' if after_string => {
                members += 1;
                after_string = false;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => {
                last_key_stats = false;
                after_string = false;
            }
        }
        i += 1;
    }
    members
}

/// The string of `body` from `start` (just after its opening quote): where it ends (its
/// closing quote, or the end of the body) and, when it is read as JSON (`counting`), the
/// members in it: each `:` after an escaped quote and nothing but whitespace. Only quotes and
/// backslashes are looked for (`memchr`), not each byte: most of a commit is such a string.
fn string_at(body: &[u8], start: usize, counting: bool) -> (usize, u64) {
    let mut members = 0;
    let mut i = start;
    loop {
        let found = body
            .get(i..)
            .and_then(crate::ingest::json::quote_or_backslash);
        let Some(at) = found else {
            return (body.len(), members);
        };
        let at = i + at;
        if body.get(at) == Some(&b'"') {
            return (at, members);
        }
        // A backslash: the byte after it is taken as it is; an escaped quote ends a key of
        // the JSON inside, and its `:` may follow.
        if counting && body.get(at + 1) == Some(&b'"') {
            let after = body.get(at + 2..).unwrap_or_default();
            let next = after
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
            if next == Some(&b':') {
                members += 1;
            }
        }
        i = at + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The scan as it was, byte by byte: what [`members_read`] must count.
    fn members_read_bytewise(body: &[u8]) -> u64 {
        let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"') {
            return body.windows(2).filter(|w| w == b"\":").count() as u64;
        }
        let (mut members, mut in_string, mut escaped) = (0u64, false, false);
        let (mut string_start, mut last_key_stats, mut counting) = (0usize, false, false);
        let (mut after_string, mut inner_after_quote) = (false, false);
        for (i, &b) in body.iter().enumerate() {
            if in_string {
                match b {
                    _ if escaped => {
                        escaped = false;
                        inner_after_quote = b == b'"';
                    }
                    b'\\' => escaped = true,
                    b'"' => {
                        in_string = false;
                        after_string = true;
                        last_key_stats = &body[string_start..i] == b"requestStats";
                    }
                    b':' if counting && inner_after_quote => {
                        members += 1;
                        inner_after_quote = false;
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => inner_after_quote = false,
                }
                continue;
            }
            match b {
                b'"' => {
                    in_string = true;
                    string_start = i + 1;
                    counting = last_key_stats;
                    last_key_stats = false;
                }
                b':' if after_string => {
                    members += 1;
                    after_string = false;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => {
                    last_key_stats = false;
                    after_string = false;
                }
            }
        }
        members
    }

    /// Pieces a body is made of: JSON's punctuation, escapes, the key whose string is read.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "\"",
            "\\",
            "\\\"",
            ":",
            " ",
            "\t",
            "\n",
            "{",
            "}",
            "[",
            ",",
            "a",
            "1",
            "\"requestStats\"",
            "requestStats",
            "\\\\",
            "\u{feff}",
            "\\\":",
        ])
    }

    proptest! {
        /// Whatever the body, the scan that looks only for quotes and backslashes counts what
        /// the byte-by-byte scan counted.
        #[test]
        fn the_scan_counts_what_a_scan_of_every_byte_counts(
            pieces in prop::collection::vec(piece(), 0..60)
        ) {
            let body = pieces.concat();
            prop_assert_eq!(members_read(body.as_bytes()), members_read_bytewise(body.as_bytes()));
        }
    }

    /// Pieces of the JSON text inside a `requestStats` string: escaped quotes, whitespace and
    /// colons in every order, escaped backslashes, a quote that ends the string early.
    fn inner_piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "\\\"", " ", "\t", ":", "a", ",", "{", "\\\\", "\\n", "\"", "\\\":",
        ])
    }

    proptest! {
        /// Inside a `requestStats` string (or another key's), the two scans count alike.
        #[test]
        fn inside_a_string_read_as_json_the_scans_count_alike(
            before in prop::collection::vec(piece(), 0..8),
            stats in any::<bool>(),
            inner in prop::collection::vec(inner_piece(), 0..40),
            after in prop::collection::vec(piece(), 0..8),
        ) {
            let key = if stats { r#""requestStats" : ""# } else { r#""k":""# };
            let body = format!("{{{}{key}{}\"{}", before.concat(), inner.concat(), after.concat());
            prop_assert_eq!(members_read(body.as_bytes()), members_read_bytewise(body.as_bytes()));
        }
    }

    /// A Locust commit as the bench sends it: both scans agree, and count its members.
    #[test]
    fn a_locust_commit_counts_alike() {
        let row = r#"{\"name\":\"/x\",\"method\":\"GET\",\"num_requests\":1200}"#;
        let body = format!(
            r#"{{"uuid": "u", "measurement": {{"fields": {{"requestStats": "{{\"stats\":[{row},{row}],\"total_rps\" : 1.5}}"}}}}, "state": "stopped"}}"#
        );
        assert_eq!(members_read(body.as_bytes()), 4 + 1 + 2 * 3 + 1 + 1);
        assert_eq!(
            members_read(body.as_bytes()),
            members_read_bytewise(body.as_bytes())
        );
    }
}
