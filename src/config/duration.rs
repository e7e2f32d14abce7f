//! Durations as the configuration writes them: a whole number with a unit ("500ms", "15s",
//! "5m", "24h", "1d"), read into a [`Duration`] and written back with the largest exact unit.
//!
//! It owns the text form and its messages only; it never decides which durations a setting
//! accepts (that is `validate`'s) and knows nothing of the other settings, so any layer may use
//! it without importing the rest of the configuration.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in the file as a string with a unit: "500ms", "15s", "5m", "24h".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub(super) const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub(super) const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

/// Parses "500ms", "15s", "5m", "24h" (also "1d"). A bare number is refused on purpose: "15"
/// could mean seconds or milliseconds, and guessing wrong is worse than asking.
///
/// Errors: the message to show after the key, naming the text and the units accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration {text:?}: use a whole number with a unit, e.g. \"500ms\", \"15s\", \"5m\", \"24h\""
        )
    };
    if unit.is_empty() && !num.is_empty() {
        return Err(no_unit(num));
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(ms_per_unit).ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

/// The inverse of [`parse_duration`], choosing the largest unit that is exact.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// What to write instead of a number without a unit (`15` or `"15"`).
fn no_unit(number: impl fmt::Display) -> String {
    format!(
        "{number} has no unit: a duration is a string with one, e.g. \"{number}s\" for seconds or \"{number}ms\" for milliseconds (units: ms, s, m, h, d)"
    )
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Takes a string, and answers a bare number (`heartbeat_interval = 15`) with the
        /// string it should have been.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: a string with a unit, e.g. \"15s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(no_unit(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(no_unit(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "{v} is not a duration: write a whole number with a unit, e.g. \"1500ms\" or \"15s\""
                )))
            }
        }
        d.deserialize_any(Text)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, ms) in [
            ("500ms", 500),
            ("15s", 15_000),
            ("5m", 300_000),
            ("24h", 86_400_000),
            ("1d", 86_400_000),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in ["", "15", "s", "1.5s", "-1s", "99999999999999999999h", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
