//! Line protocol written back: a read [`Line`] as one line InfluxDB 1.x reads as that very
//! point, its names escaped by tables of bytes and its time in nanoseconds.

use std::fmt::Write as _;

use super::{FieldValue, Line, MEASUREMENT_CODES, TAG_CODES};
use crate::ingest::line_protocol::{Specials, escape_into, push_integer, specials};

/// [`MEASUREMENT_CODES`] as a table of bytes, for [`escape_into`].
const MEASUREMENT_SPECIALS: Specials = specials(MEASUREMENT_CODES);
/// [`TAG_CODES`] as a table of bytes.
const TAG_SPECIALS: Specials = specials(TAG_CODES);
/// What a string value escapes: `"` and `\`.
const STRING_SPECIALS: Specials = specials(b"\"\\");

impl Line<'_> {
    /// Appends the line (no line end) with every special character escaped and the time in
    /// nanoseconds, so that InfluxDB 1.x reads it back as this very point (send it with
    /// `precision=ns`, or none). Floats are written as plain decimals (`{}`), integers with `i`,
    /// strings quoted with `"` and `\` escaped.
    ///
    /// The line must be one [`parse`](super::parse) gave, or hold what such lines hold: a measurement not
    /// starting with `#`, space, tab or NUL, a first field key not starting with tab or NUL, no
    /// name ending in a backslash or holding `\n` or `\r` without a backslash before it, and no
    /// field key with an odd run of backslashes right before `,`, space or `=`. A measurement or
    /// tag with such a run (which `parse` can give) reads back the same unless a string value of
    /// the line holds a newline: InfluxDB's line splitter then cuts the line where its key
    /// reader does not, whatever the spelling. Other lines are written as given.
    pub fn encode_ns(&self, out: &mut String) {
        escape_into(out, &self.measurement, &MEASUREMENT_SPECIALS);
        for (k, v) in &self.tags {
            out.push(',');
            escape_into(out, k, &TAG_SPECIALS);
            out.push('=');
            escape_into(out, v, &TAG_SPECIALS);
        }
        for (n, (k, v)) in self.fields.iter().enumerate() {
            out.push(if n == 0 { ' ' } else { ',' });
            escape_into(out, k, &MEASUREMENT_SPECIALS);
            out.push('=');
            // Writing to a String cannot fail.
            let _ = match v {
                // An integral value below 1e15 is printed as an integer: the same digits as
                // `{f}`, without the float algorithm (-0 keeps its sign through `{f}`).
                FieldValue::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 && *f != 0.0 => {
                    push_integer(out, *f as i64);
                    Ok(())
                }
                FieldValue::Float(f) => write!(out, "{f}"),
                FieldValue::Integer(i) => {
                    push_integer(out, *i);
                    out.push('i');
                    Ok(())
                }
                FieldValue::Boolean(x) => write!(out, "{x}"),
                FieldValue::String(s) => {
                    out.push('"');
                    escape_into(out, s, &STRING_SPECIALS);
                    out.push('"');
                    Ok(())
                }
            };
        }
        out.push(' ');
        push_integer(out, self.time_ns);
    }
}
