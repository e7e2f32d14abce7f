//! The refused lines of a write API request, as its answer names them: counted, the first
//! [`MAX_LINES_NAMED`] named with their text and message, each cut so that an answer stays
//! small whatever the lines' length. Pure: no I/O.

use super::{LineRefusal, MAX_LINES_NAMED, RefusedLine, Written};
use crate::delivery::Outcome;

/// `text` cut to at most `max` characters, owned for an answer.
pub(super) fn cut(text: &str, max: usize) -> String {
    crate::logtext::prefix_chars(text, max).to_string()
}

/// The characters of a refused line an answer quotes at most (InfluxDB 3's `original_line`,
/// and the line inside a parse error's message).
pub(super) const QUOTED_CHARS: usize = 200;

/// The characters of a refused line's message an answer gives at most: a message may quote a
/// name of the line (a field's, in a type conflict), which may be far longer than its reason.
const MESSAGE_CHARS: usize = 512;

/// The refused lines of a write, as they are found.
#[derive(Default)]
pub(super) struct Refusals {
    named: Vec<RefusedLine>,
    /// Every line refused, named or not.
    pub(super) count: usize,
    unparsed: usize,
}

impl Refusals {
    /// Counts a refused line; the first [`MAX_LINES_NAMED`] are named, with their text cut to
    /// [`QUOTED_CHARS`] and `message` made from that cut text, then cut to [`MESSAGE_CHARS`]:
    /// a small gzip'd body of long lines is not answered many times its size (InfluxDB's
    /// parse errors quote their line, a type conflict its field's name), and the lines not
    /// named cost no message.
    pub(super) fn add(
        &mut self,
        number: usize,
        text: &str,
        why: LineRefusal,
        message: impl FnOnce(&str) -> String,
    ) {
        self.count += 1;
        self.unparsed += usize::from(why == LineRefusal::Parse);
        if self.named.len() < MAX_LINES_NAMED {
            let text = cut(text, QUOTED_CHARS);
            let message = cut(&message(&text), MESSAGE_CHARS);
            self.named.push(RefusedLine {
                number,
                text,
                why,
                message,
            });
        }
    }

    /// What became of the write: `points` recorded, what the series budget said, the
    /// outcome; the named lines in the body's order.
    pub(super) fn into_written(
        mut self,
        points: usize,
        budget: Option<String>,
        outcome: Option<Outcome>,
    ) -> Written {
        self.named.sort_by_key(|r| r.number);
        Written {
            points,
            refused: self.named,
            refused_count: self.count,
            unparsed: self.unparsed,
            budget,
            outcome,
        }
    }
}
