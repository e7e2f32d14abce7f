//! One check of a run's result, as a person writes it: `<metric> <op> <value>`, such as
//! `p95 < 500ms`, `fail_ratio < 1%`, `rps > 100` or `p95 <= 1.2x baseline`. Pure: text in,
//! [`Check`] out.

use std::fmt;

/// Bytes of a check's text at most: far more than any check needs.
pub const MAX_CHECK_BYTES: usize = 200;

/// What a check reads of an endpoint row (docs/verdicts.md lists them with the row's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Avg,
    Min,
    Max,
    Median,
    P50,
    P75,
    P90,
    P95,
    P99,
    P999,
    Rps,
    FailRatio,
    Failures,
    Requests,
}

/// What a metric's number is, which decides the units its limit may be given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A response time in milliseconds: `ms` (the default) or `s`.
    Time,
    /// A share of the requests, from 0 to 1: a plain number, or `%`.
    Ratio,
    /// Requests per second: a plain number.
    Rate,
    /// A count of requests: a plain number.
    Count,
}

impl Metric {
    /// Every metric, in the order of [`Metric::index`].
    pub const ALL: [Metric; 14] = [
        Metric::Requests,
        Metric::Failures,
        Metric::FailRatio,
        Metric::Avg,
        Metric::Min,
        Metric::Max,
        Metric::Median,
        Metric::P50,
        Metric::P75,
        Metric::P90,
        Metric::P95,
        Metric::P99,
        Metric::P999,
        Metric::Rps,
    ];

    /// The metric's name in a check and in the result's `figures`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Avg => "avg",
            Metric::Min => "min",
            Metric::Max => "max",
            Metric::Median => "median",
            Metric::P50 => "p50",
            Metric::P75 => "p75",
            Metric::P90 => "p90",
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::P999 => "p99.9",
            Metric::Rps => "rps",
            Metric::FailRatio => "fail_ratio",
            Metric::Failures => "failures",
            Metric::Requests => "requests",
        }
    }

    /// The metric named `name`, if any.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The metric's place in [`Metric::ALL`] (and in a [`super::Figures`]).
    pub fn index(self) -> usize {
        Metric::ALL.iter().position(|m| *m == self).unwrap_or(0)
    }

    pub fn kind(self) -> Kind {
        match self {
            Metric::Rps => Kind::Rate,
            Metric::FailRatio => Kind::Ratio,
            Metric::Failures | Metric::Requests => Kind::Count,
            _ => Kind::Time,
        }
    }
}

/// `<`, `<=`, `>`, `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    /// Whether `value op limit` holds.
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
        }
    }
}

/// The right-hand side of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// A number in the metric's own unit: milliseconds, a ratio from 0 to 1, requests per
    /// second, or requests.
    Value(f64),
    /// This factor times the baseline run's figure of the same metric and endpoint.
    Baseline(f64),
}

/// One check, parsed; `text` is the check as written, trimmed.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub metric: Metric,
    pub op: Op,
    pub limit: Limit,
    pub text: String,
}

/// Why a check's text is not a check: a sentence saying what is wrong and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError(pub String);

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The metrics, as a list for messages.
fn metric_list() -> String {
    let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    names.sort_unstable();
    names.join(", ")
}

/// Reads one check: `<metric> <op> <value>`, spaces around the operator optional.
///
/// Errors: an empty or over-long text ([`MAX_CHECK_BYTES`]), an unknown metric or operator, a
/// value that is not a finite number at least 0, a unit the metric does not take (`ms` and `s`
/// for response times, `%` for `fail_ratio`), or a baseline factor that is not above 0.
pub fn parse(text: &str) -> Result<Check, CheckError> {
    let err = |m: String| Err(CheckError(m));
    let text = text.trim();
    if text.is_empty() {
        return err("is empty; write a check such as \"p95 < 500ms\"".into());
    }
    if text.len() > MAX_CHECK_BYTES {
        return err(format!(
            "is {} bytes; a check is at most {MAX_CHECK_BYTES}",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return err(
            "holds a control character (a line break, a tab); write the check on one line".into(),
        );
    }
    let metric_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(metric_end);
    let Some(metric) = Metric::from_name(name) else {
        return err(if name.is_empty() {
            format!(
                "does not begin with a metric; write \"<metric> <op> <value>\", the metric one of {}",
                metric_list()
            )
        } else {
            format!(
                "has the unknown metric {name:?}; the metrics are {}",
                metric_list()
            )
        });
    };
    let rest = rest.trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("<=") {
        (Op::Le, r)
    } else if let Some(r) = rest.strip_prefix(">=") {
        (Op::Ge, r)
    } else if let Some(r) = rest.strip_prefix('<') {
        (Op::Lt, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (Op::Gt, r)
    } else {
        return err(format!(
            "has no operator after {name:?}; write one of <, <=, >, >= (e.g. \"{name} < 500\")"
        ));
    };
    let value = rest.trim();
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(value.len());
    // An exponent's `e` must not swallow a unit beginning with it: there is none ("ms", "s",
    // "%", "x"), so a number ends where those begin.
    let (number, unit) = value.split_at(number_end);
    let Ok(n) = number.parse::<f64>() else {
        return err(if value.is_empty() {
            format!("has no value after {:?}", op.as_str())
        } else {
            format!("has the value {value:?}, which does not begin with a number")
        });
    };
    if !n.is_finite() || n < 0.0 {
        return err(format!(
            "has the value {number}; a limit is a finite number, at least 0"
        ));
    }
    let unit = unit.trim();
    let limit = match unit.strip_suffix("baseline").map(str::trim_end) {
        Some(factor) => {
            if factor != "x" {
                return err(format!(
                    "has {value:?}; a limit from the baseline is written \"<factor>x baseline\" (e.g. \"1.2x baseline\")"
                ));
            }
            if n == 0.0 {
                return err("has a baseline factor of 0; give a factor above 0".into());
            }
            Limit::Baseline(n)
        }
        None => Limit::Value(scale(metric, n, unit)?),
    };
    let limit_value = match limit {
        Limit::Value(v) | Limit::Baseline(v) => v,
    };
    if !limit_value.is_finite() {
        return err(format!(
            "has the value {value:?}, which is beyond any figure a run can have"
        ));
    }
    if let (Limit::Value(v), Kind::Ratio) = (limit, metric.kind())
        && v > 1.0
    {
        return err(format!(
            "gives {name} as {value:?}, more than all of the requests: a ratio is from 0 to 1, or in % (\"{number}%\" for {number} percent)"
        ));
    }
    Ok(Check {
        metric,
        op,
        limit,
        text: text.to_string(),
    })
}

/// `n` in `unit` as the metric's own unit.
fn scale(metric: Metric, n: f64, unit: &str) -> Result<f64, CheckError> {
    let name = metric.name();
    let refuse = |takes: &str| {
        Err(CheckError(format!(
            "gives {name} in {unit:?}; {name} {takes}"
        )))
    };
    match (metric.kind(), unit) {
        (_, "") => Ok(n),
        (Kind::Time, "ms") => Ok(n),
        (Kind::Time, "s") => Ok(n * 1000.0),
        (Kind::Time, _) => refuse("is a response time: give it in ms (the default) or s"),
        (Kind::Ratio, "%") => Ok(n / 100.0),
        (Kind::Ratio, _) => refuse("is a ratio: give it from 0 to 1, or in % (e.g. \"1%\")"),
        (Kind::Rate, _) => refuse("is requests per second: give a plain number"),
        (Kind::Count, _) => refuse("is a count of requests: give a plain number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> (Metric, Op, Limit) {
        let c = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        (c.metric, c.op, c.limit)
    }

    #[test]
    fn the_issue_s_examples_read_as_meant() {
        assert_eq!(
            value("p95 < 500ms"),
            (Metric::P95, Op::Lt, Limit::Value(500.0))
        );
        assert_eq!(
            value("fail_ratio < 1%"),
            (Metric::FailRatio, Op::Lt, Limit::Value(0.01))
        );
        assert_eq!(
            value("rps > 100"),
            (Metric::Rps, Op::Gt, Limit::Value(100.0))
        );
        assert_eq!(
            value("p95 <= 1.2x baseline"),
            (Metric::P95, Op::Le, Limit::Baseline(1.2))
        );
    }

    #[test]
    fn every_metric_operator_and_unit_is_read() {
        for m in Metric::ALL {
            let unit = match m.kind() {
                Kind::Time => "s",
                Kind::Ratio => "%",
                _ => "",
            };
            for op in [Op::Lt, Op::Le, Op::Gt, Op::Ge] {
                let text = format!("{} {} 2{unit}", m.name(), op.as_str());
                let c = parse(&text).unwrap();
                assert_eq!((c.metric, c.op), (m, op), "{text}");
                let want = match m.kind() {
                    Kind::Time => 2000.0,
                    Kind::Ratio => 0.02,
                    _ => 2.0,
                };
                assert_eq!(c.limit, Limit::Value(want), "{text}");
            }
        }
        assert_eq!(value("avg<250").2, Limit::Value(250.0));
        assert_eq!(value("p99.9>=1.5 s").2, Limit::Value(1500.0));
        assert_eq!(value("fail_ratio <= 0.05").2, Limit::Value(0.05));
        assert_eq!(value("max < 2 x baseline").2, Limit::Baseline(2.0));
        assert_eq!(value("  requests >= 1e3  ").2, Limit::Value(1000.0));
    }

    #[test]
    fn malformed_checks_say_what_is_wrong() {
        for (text, says) in [
            ("", "is empty"),
            ("p96 < 500ms", "unknown metric \"p96\""),
            ("< 500", "does not begin with a metric"),
            ("p95 = 500", "no operator"),
            ("p95 =< 500", "no operator"),
            ("p95 <", "no value"),
            ("p95 < fast", "does not begin with a number"),
            ("p95 < -1", "at least 0"),
            ("p95 < 500 mss", "in \"mss\""),
            ("p95 < 5%", "response time"),
            ("fail_ratio < 1ms", "is a ratio"),
            ("rps > 10%", "requests per second"),
            ("requests > 10s", "count of requests"),
            ("p95 < 1.2 baseline", "<factor>x baseline"),
            ("p95 < 0x baseline", "factor of 0"),
            ("p95 < inf", "does not begin with a number"),
            ("p95 < 5\nms", "control character"),
            ("fail_ratio < 5", "more than all of the requests"),
            ("fail_ratio < 150%", "more than all of the requests"),
            ("p95 < 1e308s", "beyond any figure"),
        ] {
            let e = parse(text).expect_err(text).0;
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let long = format!("p95 < {}", "1".repeat(MAX_CHECK_BYTES));
        assert!(parse(&long).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn operators_hold_as_written() {
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && !Op::Le.holds(2.1, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
        assert!(Op::Ge.holds(2.0, 2.0) && !Op::Ge.holds(1.9, 2.0));
    }
}
