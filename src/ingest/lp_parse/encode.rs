//! Line protocol written back: a read [`Line`] as one line InfluxDB 1.x reads as that very
//! point, its names escaped by tables of bytes and its time in nanoseconds.

use super::{FieldValue, Line, MEASUREMENT_CODES, TAG_CODES};
use crate::ingest::line_protocol::{Specials, escape_into, push_float, push_integer, specials};

/// [`MEASUREMENT_CODES`] as a table of bytes, for [`escape_into`].
const MEASUREMENT_SPECIALS: Specials = specials(MEASUREMENT_CODES);
/// [`TAG_CODES`] as a table of bytes.
const TAG_SPECIALS: Specials = specials(TAG_CODES);
/// What a string value escapes: `"` and `\`.
const STRING_SPECIALS: Specials = specials(b"\"\\");

impl Line<'_> {
    /// Appends the line (no line end) with every special character escaped and the time in
    /// nanoseconds, so that InfluxDB 1.x reads it back as this very point (send it with
    /// `precision=ns`, or none). Floats are written as plain decimals (`push_float`), integers with `i`,
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
            match v {
                FieldValue::Float(f) => push_float(out, *f),
                FieldValue::Integer(i) => {
                    push_integer(out, *i);
                    out.push('i');
                }
                FieldValue::Boolean(x) => out.push_str(if *x { "true" } else { "false" }),
                FieldValue::String(s) => {
                    out.push('"');
                    escape_into(out, s, &STRING_SPECIALS);
                    out.push('"');
                }
            }
        }
        out.push(' ');
        push_integer(out, self.time_ns);
    }
}
