//! Client text made safe for a log line: what a client sent (a path, a method) or what InfluxDB
//! quotes of it (a field name in an error message) may hold characters that forge or disguise
//! log lines. Control characters (a newline would start a forged line), the Unicode line and
//! paragraph separators (U+2028, U+2029: line breaks to many log viewers) and the bidirectional
//! controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C: they reorder what a reader
//! sees, "Trojan Source", CVE-2021-42574) all become `?`, and the text is cut. And lines that
//! clients cause, bounded: a [`LineBudget`] a kind, all of them here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::Level;

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

/// Access-log lines written in one second at most, all connections together: far more than
/// normal traffic (a load test reports a few times a second), far fewer than a client
/// pipelining pings asks for (90 000 in 2 s).
pub static ACCESS_LINES: LineBudget = LineBudget::new(200, "access-log lines");

/// Lines of refused token checks (a wrong or malformed token, a warning) written in one second
/// at most, all addresses together.
pub static REFUSED_TOKEN_LINES: LineBudget = LineBudget::new(20, "refused token checks");

/// Lines of requests refused for having no token (an info line: a browser asks so before it
/// answers the Basic challenge) written in one second at most, all addresses together: a
/// budget of their own, since anyone may send them (they are not counted towards
/// `auth.max_failures`), so they cannot crowd out the warnings of wrong tokens.
pub static MISSING_TOKEN_LINES: LineBudget = LineBudget::new(20, "requests without a token");

/// Lines a second, at most, that say a run was registered or committed (all tokens together):
/// every run of normal use (a load test registers and commits a few times a minute, a CI farm
/// a few a second), not a line a request under a flood of cycles (8 000 cycles a second, two
/// lines each, against a null InfluxDB).
pub static RUN_LINES: LineBudget = LineBudget::new(100, "lines of runs registered or committed");

/// Lines a second, at most, that tell of points InfluxDB refused (a line a refused piece):
/// a client whose every write InfluxDB refuses (a tag past `max-values-per-tag`, a type
/// another writer gave a field) must not make a line a request. Each piece is dead-lettered
/// and counted all the same (`points_dead_lettered`, `points_dropped`).
pub static REFUSED_POINTS_LINES: LineBudget =
    LineBudget::new(20, "lines of points InfluxDB refused");

/// Lines a second, at most, that tell of a dead letter the gateway could not write (its own
/// disk's fault, not a client's): a budget of their own, so refusals cannot crowd them out;
/// the points are counted as dropped (`points_dropped`) all the same.
pub static DEAD_LETTER_FAILURE_LINES: LineBudget =
    LineBudget::new(20, "lines of dead letters not written");

/// Every budget, for [`tell_left_out`].
const BUDGETS: [&LineBudget; 6] = [
    &ACCESS_LINES,
    &REFUSED_TOKEN_LINES,
    &MISSING_TOKEN_LINES,
    &RUN_LINES,
    &REFUSED_POINTS_LINES,
    &DEAD_LETTER_FAILURE_LINES,
];

/// Tells, for every budget, the lines left out in a second that is over by `now`. Called
/// about every second (the heartbeat loop's looks), so a flood that stopped is told of within
/// a second or two, and not only before the next line of its kind, which may never come.
pub fn tell_left_out(now: Instant) {
    for budget in BUDGETS {
        budget.tell_left_out(now);
    }
}

/// A bound on log lines of one kind that clients cause (a line a request, a run, a refused
/// token or refused points): `per_second` in each second at most; the others are counted, and
/// one line says how many were left out, once their second is over: before the next line of
/// the kind, or at the heartbeat loop's next look ([`tell_left_out`]), whichever is first. A
/// flood of requests cannot fill the disk, nor (under journald's rate limit, 10 000 lines in
/// 30 s a service by default: `RateLimitBurst=` in journald.conf(5)) push the gateway's own
/// warnings and errors out of the journal; traffic far below the bound keeps every line (a
/// budget is one for all clients: while one floods, the others' lines of the kind go too). The
/// counters of `states` and `metrics` count every request, run and point all the same.
///
/// A line the log level would not write anyway is neither written nor counted, and the line
/// that counts those left out is written at the level of the most severe of them: at
/// `log.level = "error"` the refused points left out are told (an error), at `"warn"` no
/// info line is said to be left out.
pub struct LineBudget {
    per_second: u32,
    /// What a line is, in the line that counts those left out.
    what: &'static str,
    window: Mutex<Option<Window>>,
}

/// One second of a `LineBudget`.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    written: u32,
    left_out: u64,
    /// The most severe level of the lines left out (`Level::Error` is the most severe).
    worst: Level,
}

/// Lines left out in a window that is over: how many, over how long, the most severe level.
type LeftOut = (u64, Duration, Level);

impl Window {
    /// Whether the window's second is over at `now`.
    fn is_over(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= Duration::from_secs(1)
    }

    /// The lines it left out, to be told: once its second is over at `now`, and only when
    /// there are some.
    fn left_out_by(&self, now: Instant) -> Option<LeftOut> {
        (self.is_over(now) && self.left_out > 0).then(|| {
            (
                self.left_out,
                now.saturating_duration_since(self.started),
                self.worst,
            )
        })
    }
}

impl LineBudget {
    /// A budget of `per_second` lines a second; `what` names a line in the one that says how
    /// many were left out ("access-log lines").
    pub const fn new(per_second: u32, what: &'static str) -> LineBudget {
        LineBudget {
            per_second,
            what,
            window: Mutex::new(None),
        }
    }

    /// Whether one more line at `level` may be written at `now` (never one the log level
    /// leaves out); when lines were left out before it, a line saying how many is written
    /// first.
    pub fn allows(&self, level: Level, now: Instant) -> bool {
        if !log::log_enabled!(level) {
            return false;
        }
        let (allowed, left_out) = self.take(level, now);
        if let Some(told) = left_out {
            self.tell(told);
        }
        allowed
    }

    /// Tells the lines left out in a window that is over by `now`, if any; the next line
    /// begins a new window.
    fn tell_left_out(&self, now: Instant) {
        let told = {
            let mut guard = crate::sync::lock(&self.window);
            let told = guard.and_then(|w| w.left_out_by(now));
            if told.is_some() {
                *guard = None;
            }
            told
        };
        if let Some(told) = told {
            self.tell(told);
        }
    }

    /// Writes the line that counts the lines left out.
    fn tell(&self, (count, over, level): LeftOut) {
        log::log!(
            level,
            "{count} {} left out in the {:.1} s before this line (more than {} a second)",
            self.what,
            over.as_secs_f64(),
            self.per_second
        );
    }

    /// Whether one more line at `level` may be written at `now`, and, when a second has
    /// passed since the window began and lines were left out in it, how many, over how long
    /// and the most severe of them.
    fn take(&self, level: Level, now: Instant) -> (bool, Option<LeftOut>) {
        let mut guard = crate::sync::lock(&self.window);
        let fresh = Window {
            started: now,
            written: 0,
            left_out: 0,
            worst: Level::Trace,
        };
        let window = guard.get_or_insert(fresh);
        let left_out = window.left_out_by(now);
        if window.is_over(now) {
            *window = fresh;
        }
        let allowed = window.written < self.per_second;
        if allowed {
            window.written += 1;
        } else {
            window.left_out += 1;
            window.worst = window.worst.min(level);
        }
        (allowed, left_out)
    }
}

/// `text` with every character unsafe in a log line replaced by `?`, cut to `max` characters
/// (with `...` when cut).
pub fn escape(text: &str, max: usize) -> String {
    // Sized once (`?` is never longer than what it replaces): a log line escapes several texts
    // a request.
    let kept = prefix_chars(text, max);
    let mut out = String::with_capacity(kept.len() + 3);
    out.extend(
        kept.chars()
            .map(|c| if unsafe_in_logs(c) { '?' } else { c }),
    );
    if kept.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// The longest start of `text` of at most `max` bytes that ends on a character boundary: where
/// client text is kept or shown only in part (a key in an error message, an endpoint's name in a
/// result or a tag, the `requestStats` text cut to fit a string field). The one cut by bytes in
/// the crate; [`prefix_chars`] is the one by characters.
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The start of `text` of at most `max` characters: where a limit is told in characters (a log
/// line's text, a refused line an answer quotes).
pub fn prefix_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cut never splits a character: it ends before one that would not fit whole.
    #[test]
    fn a_prefix_ends_on_a_character_boundary() {
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(prefix("abc", 2), "ab");
        assert_eq!(prefix("aé", 2), "a"); // é is two bytes: 1..3
        assert_eq!(prefix("aé", 3), "aé");
        assert_eq!(prefix("€", 2), ""); // three bytes
        assert_eq!(prefix("", 0), "");
    }

    /// A cut by characters counts a character of several bytes once.
    #[test]
    fn a_prefix_of_characters_counts_characters_not_bytes() {
        assert_eq!(prefix_chars("héllo", 2), "hé");
        assert_eq!(prefix_chars("日本語", 2), "日本");
        assert_eq!(prefix_chars("abc", 3), "abc");
        assert_eq!(prefix_chars("abc", 0), "");
        assert_eq!(prefix_chars("", 5), "");
    }

    #[test]
    fn a_line_budget_writes_its_lines_a_second_and_counts_the_others() {
        let budget = LineBudget::new(3, "test lines");
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let info = Level::Info;
        let taken: Vec<bool> = (0..5).map(|i| budget.take(info, at(i * 10)).0).collect();
        assert_eq!(taken, [true, true, true, false, false]);
        // A second later: a fresh window, and the two left out are told.
        let (allowed, told) = budget.take(info, at(1000));
        assert!(allowed);
        assert_eq!(told, Some((2, Duration::from_secs(1), info)));
        assert_eq!(budget.take(info, at(1100)), (true, None), "told once");
        // Nothing left out: nothing to tell.
        assert_eq!(budget.take(info, at(2500)), (true, None));
    }

    /// The lines left out were told only before the next line of their kind, which may never
    /// come: a flood that stopped left its count untold. The heartbeat loop's looks tell it
    /// once its second is over, and only once.
    #[test]
    fn lines_left_out_are_told_once_their_second_is_over_without_another_line() {
        let budget = LineBudget::new(1, "test lines");
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(budget.take(Level::Info, at(0)).0);
        assert!(!budget.take(Level::Info, at(10)).0);
        let window = |b: &LineBudget| b.window.lock().unwrap().map(|w| w.left_out);
        budget.tell_left_out(at(500));
        assert_eq!(window(&budget), Some(1), "not yet: the second is not over");
        budget.tell_left_out(at(1000));
        assert_eq!(window(&budget), None, "told, and the window begins again");
        assert_eq!(
            budget.take(Level::Info, at(1100)),
            (true, None),
            "told once"
        );
        // Nothing left out: nothing told, the window kept.
        budget.tell_left_out(at(2500));
        assert_eq!(window(&budget), Some(0));
    }

    /// The line that counts the lines left out was a warning whatever they were: at
    /// `log.level = "error"` the errors of refused points were cut to 20 a second and the
    /// count of the others never written.
    #[test]
    fn the_lines_left_out_are_told_at_the_level_of_the_most_severe() {
        let budget = LineBudget::new(1, "test lines");
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(budget.take(Level::Info, at(0)).0);
        assert!(!budget.take(Level::Info, at(10)).0);
        assert!(!budget.take(Level::Error, at(20)).0);
        assert!(!budget.take(Level::Warn, at(30)).0);
        let (_, told) = budget.take(Level::Info, at(1000));
        assert_eq!(told, Some((3, Duration::from_secs(1), Level::Error)));
    }

    /// A line the log level leaves out is not counted as one the budget left out: at
    /// `log.level = "warn"` a flood of runs wrote warnings counting info lines that would
    /// never have been written.
    #[test]
    fn a_line_the_log_level_leaves_out_is_not_counted() {
        // No logger in unit tests: every level is off.
        let budget = LineBudget::new(1, "test lines");
        assert!(!log::log_enabled!(Level::Error));
        assert!(!budget.allows(Level::Error, Instant::now()));
        assert!(
            budget.window.lock().unwrap().is_none(),
            "nothing counted while the level is off"
        );
    }

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
