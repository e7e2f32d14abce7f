//! Judging a run: the checks of its register and of the configuration applied to the figures
//! of its endpoint rows, some against the baseline (the last run of the same identity that
//! passed). Pure: no I/O, no clock; `state::results` keeps the results a baseline is read from,
//! and `service::commit` calls [`judge`].
//!
//! The figures of a row are read from Locust's own members (docs/verdicts.md has the table):
//! `avg_response_time`, `response_time_percentile_0.95`, `total_rps`, `fail_ratio`, … A
//! percentile Locust did not report is computed from the row's `response_times` (Locust's
//! histogram of rounded response times), as Locust computes it, when the row carries one.

pub mod check;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::logtext::prefix;

pub use check::{Check, Limit, Metric};

/// Checks a register may give at most; the configuration's rules may add as many again, so a
/// register never crowds out a lab's floor.
pub const MAX_CHECKS: usize = 100;
/// Outcomes of one verdict at most (a check of a name is judged once per row of that name):
/// past it the verdict fails, saying so, rather than grow with a client's rows.
pub const MAX_OUTCOMES: usize = 1000;
/// Failed checks a verdict's sentence names at most; the others are counted.
const SUMMARY_NAMED: usize = 5;
/// Bytes of an endpoint's name in a check at most (Locust names endpoints by URL).
pub const MAX_ENDPOINT_BYTES: usize = 1024;
/// The name of Locust's row of all endpoints together.
pub const AGGREGATED: &str = "Aggregated";

/// The percentiles a row's histogram gives: each metric with its quantile.
pub const PERCENTILES: [(Metric, f64); 6] = [
    (Metric::P50, 0.5),
    (Metric::P75, 0.75),
    (Metric::P90, 0.9),
    (Metric::P95, 0.95),
    (Metric::P99, 0.99),
    (Metric::P999, 0.999),
];

/// Locust's stats-row member of each of [`PERCENTILES`] (`response_time_percentile_<q>`),
/// spelled out so that reading a row makes no string.
pub const PERCENTILE_MEMBERS: [&str; 6] = [
    "response_time_percentile_0.5",
    "response_time_percentile_0.75",
    "response_time_percentile_0.9",
    "response_time_percentile_0.95",
    "response_time_percentile_0.99",
    "response_time_percentile_0.999",
];

/// Where a check came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The register's `thresholds`.
    Register,
    /// A `[[verdict.rule]]` of the configuration whose tags the run matched.
    Config,
}

/// A check of one endpoint: the row named `endpoint` (`Aggregated`: all together).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub endpoint: String,
    pub check: Check,
    pub source: Source,
}

/// Reads a register's `thresholds`: an object of endpoint names, each with a list of checks
/// (or one check as a string), e.g. `{"Aggregated": ["fail_ratio < 1%"], "/checkout": ["p95 <
/// 500ms"]}`. `null` is none.
///
/// Errors: the key under `thresholds` (`thresholds./checkout[0]`) and what is wrong with it:
/// not an object, not a list of strings, a malformed check ([`check::parse`]), an endpoint
/// name over [`MAX_ENDPOINT_BYTES`], more than [`MAX_CHECKS`] checks.
pub fn thresholds(value: &Value, source: Source) -> Result<Vec<Threshold>, (String, String)> {
    let map = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => map,
        other => {
            return Err((
                "thresholds".into(),
                format!(
                    "must be an object of endpoint names, each with a list of checks (e.g. {{\"Aggregated\": [\"p95 < 500ms\"]}}), not {}",
                    crate::ingest::json::kind(other)
                ),
            ));
        }
    };
    if map.len() > MAX_CHECKS {
        return Err((
            "thresholds".into(),
            format!(
                "names more than {MAX_CHECKS} endpoints; a run has at most {MAX_CHECKS} checks"
            ),
        ));
    }
    let mut out = Vec::new();
    for (endpoint, checks) in map {
        let at = format!("thresholds.{}", shown(endpoint));
        if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err((
                at,
                format!(
                    "an endpoint's name is 1 to {MAX_ENDPOINT_BYTES} bytes: a row's name as Locust reports it, or \"{AGGREGATED}\""
                ),
            ));
        }
        let list: Vec<&Value> = match checks {
            Value::Array(items) => items.iter().collect(),
            Value::String(_) => vec![checks],
            Value::Null => continue,
            other => {
                return Err((
                    at,
                    format!(
                        "must be a list of checks such as [\"p95 < 500ms\"], not {}",
                        crate::ingest::json::kind(other)
                    ),
                ));
            }
        };
        for (i, item) in list.into_iter().enumerate() {
            let at = format!("{at}[{i}]");
            let Value::String(text) = item else {
                return Err((
                    at,
                    format!(
                        "must be a check as a string such as \"p95 < 500ms\", not {}",
                        crate::ingest::json::kind(item)
                    ),
                ));
            };
            let check =
                check::parse(text).map_err(|e| (at.clone(), format!("{:?} {e}", shown(text))))?;
            out.push(Threshold {
                endpoint: endpoint.clone(),
                check,
                source,
            });
            if out.len() > MAX_CHECKS {
                return Err((
                    "thresholds".into(),
                    format!("holds more than {MAX_CHECKS} checks; keep the ones a run must pass"),
                ));
            }
        }
    }
    Ok(out)
}

/// The checks a run is judged by: the register's, then the configuration's whose endpoint and
/// metric the register has no check for (the register's check wins). At most
/// `2 × MAX_CHECKS`: a register gives at most `MAX_CHECKS`, and the configuration's rules hold
/// at most as many together (`config::validate`).
pub fn merge(register: &[Threshold], config: &[Threshold]) -> Vec<Threshold> {
    let mut all = register.to_vec();
    for t in config {
        let overridden = register
            .iter()
            .any(|r| r.endpoint == t.endpoint && r.check.metric == t.check.metric);
        if !overridden {
            all.push(t.clone());
        }
    }
    all
}

/// A row's figures by metric ([`Metric::index`]): milliseconds for response times, a ratio from
/// 0 to 1 for `fail_ratio`, requests per second, counts; `None` where the row gives nothing.
/// Serialized as an object of every metric's name, `null` for what is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures(pub [Option<f64>; 14]);

impl Figures {
    /// The figure of `metric`, if the result has it.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.0.get(metric.index()).copied().flatten()
    }

    /// Sets the figure of `metric`; a value that is not finite is no figure.
    pub fn set(&mut self, metric: Metric, value: Option<f64>) {
        if let Some(slot) = self.0.get_mut(metric.index()) {
            *slot = value.filter(|v| v.is_finite());
        }
    }
}

impl Serialize for Figures {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(Metric::ALL.len()))?;
        for m in Metric::ALL {
            map.serialize_entry(m.name(), &self.get(m))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Figures {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Figures, D::Error> {
        let map = Map::<String, Value>::deserialize(d)?;
        let mut f = Figures::default();
        for m in Metric::ALL {
            f.set(m, map.get(m.name()).and_then(Value::as_f64));
        }
        Ok(f)
    }
}

/// One endpoint row of a result: its name and method as the client sent them, each cut to
/// [`MAX_ENDPOINT_BYTES`] (`method` is empty for Locust's `Aggregated` row), and its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub name: String,
    pub method: String,
    pub figures: Figures,
}

impl ResultRow {
    /// Locust's `Aggregated` row computed from the endpoint rows, for a result that has none
    /// (`locust --json-file` writes none): requests and failures summed, the failure ratio and
    /// the mean response time from those sums, the least minimum and the greatest maximum,
    /// requests per second summed, and the percentiles of all rows' histograms together
    /// (`merged`). A figure some row lacks is missing from the sum, so not given.
    pub fn aggregate(rows: &[ResultRow], merged: &[(&'static str, f64)]) -> ResultRow {
        let all =
            |m: Metric| -> Option<Vec<f64>> { rows.iter().map(|r| r.figures.get(m)).collect() };
        let sum = |m: Metric| all(m).map(|v| v.iter().sum::<f64>());
        let mut f = Figures::default();
        let requests = sum(Metric::Requests);
        let failures = sum(Metric::Failures);
        f.set(Metric::Requests, requests);
        f.set(Metric::Failures, failures);
        f.set(
            Metric::FailRatio,
            match (failures, requests) {
                (Some(x), Some(n)) if n > 0.0 => Some(x / n),
                (Some(_), Some(_)) => Some(0.0),
                _ => None,
            },
        );
        let weighted = rows
            .iter()
            .map(|r| Some(r.figures.get(Metric::Avg)? * r.figures.get(Metric::Requests)?))
            .collect::<Option<Vec<f64>>>();
        f.set(
            Metric::Avg,
            match (weighted, requests) {
                (Some(w), Some(n)) if n > 0.0 => Some(w.iter().sum::<f64>() / n),
                _ => None,
            },
        );
        f.set(
            Metric::Min,
            all(Metric::Min).and_then(|v| v.into_iter().reduce(f64::min)),
        );
        f.set(
            Metric::Max,
            all(Metric::Max).and_then(|v| v.into_iter().reduce(f64::max)),
        );
        f.set(Metric::Rps, sum(Metric::Rps));
        for (m, _) in PERCENTILES {
            f.set(
                m,
                merged.iter().find(|(n, _)| *n == m.name()).map(|(_, v)| *v),
            );
        }
        f.set(Metric::Median, f.get(Metric::P50));
        ResultRow {
            name: AGGREGATED.to_string(),
            method: String::new(),
            figures: f,
        }
    }

    /// Whether this row is named `Aggregated`: Locust's row of all endpoints together (a
    /// row of that name with a method is taken as one too, so no second one is computed).
    pub fn is_aggregated(&self) -> bool {
        self.name == AGGREGATED
    }
}

/// A client's text as an answer repeats it: its first 100 bytes, and `…` when there was more.
fn shown(text: &str) -> String {
    let kept = prefix(text, 100);
    if kept.len() < text.len() {
        format!("{kept}…")
    } else {
        kept.to_string()
    }
}

/// The keys of a Locust row a metric is read from, for a message about a missing figure.
fn read_from(metric: Metric) -> &'static str {
    match metric {
        Metric::Requests => "num_requests",
        Metric::Failures => "num_failures",
        Metric::FailRatio => "fail_ratio, or num_failures and num_requests",
        Metric::Avg => "avg_response_time",
        Metric::Min => "min_response_time",
        Metric::Max => "max_response_time",
        Metric::Median => "median_response_time",
        Metric::P50 => "response_time_percentile_0.5 or response_times",
        Metric::P75 => "response_time_percentile_0.75 or response_times",
        Metric::P90 => "response_time_percentile_0.9 or response_times",
        Metric::P95 => "response_time_percentile_0.95 or response_times",
        Metric::P99 => "response_time_percentile_0.99 or response_times",
        Metric::P999 => "response_time_percentile_0.999 or response_times",
        Metric::Rps => "total_rps",
    }
}

/// The response time below which `quantile` of the requests fell, from Locust's histogram
/// (`response_times`: rounded milliseconds → requests), as Locust computes it
/// (`calculate_response_time_percentile`: walking down from the slowest bucket). `None` for an
/// empty histogram.
pub fn percentile(histogram: &[(f64, u64)], quantile: f64) -> Option<f64> {
    // Counted in u128: a client's counts may be as large as a u64 holds, and add up past it.
    let total: u128 = histogram.iter().map(|(_, n)| u128::from(*n)).sum();
    if total == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, u64)> = histogram.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let below = (total as f64 * quantile) as u128;
    let mut counted = 0u128;
    for (ms, n) in sorted {
        counted += u128::from(n);
        if total - counted <= below {
            return Some(ms);
        }
    }
    Some(0.0)
}

/// The run a verdict compares against, or why there is none.
#[derive(Debug, Clone, Copy)]
pub enum Baseline<'a> {
    Found {
        uuid: Uuid,
        rows: &'a [ResultRow],
    },
    /// Why there is no baseline: a sentence.
    Missing(&'a str),
}

/// One check's outcome on one row. `passed` is `None` for a check skipped (a baseline check
/// without a baseline), with the reason; a failed check says why when it is not the figure
/// (a row or figure the result lacks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub endpoint: String,
    /// The metric checked (`p95`, `fail_ratio`, …): the unit of `value` and `limit`.
    pub metric: String,
    /// The row's method, when the row has one.
    pub method: Option<String>,
    pub check: String,
    pub source: Source,
    /// The row's figure, in the metric's unit (ms, ratio, requests per second, requests).
    pub value: Option<f64>,
    /// The limit in the same unit (a baseline check's: the factor times the baseline's figure).
    pub limit: Option<f64>,
    pub passed: Option<bool>,
    pub reason: Option<String>,
}

/// A run's verdict: `passed` unless a check failed (skipped ones do not fail it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    /// The baseline run, when there was one.
    pub baseline: Option<Uuid>,
    pub checks: Vec<Outcome>,
}

impl Verdict {
    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.checks.iter().filter(|c| c.passed == Some(false))
    }

    /// One sentence for a person (the answer's description, the `verdict` event): `passed (3
    /// checks)`, or `FAILED: /checkout p95 < 500ms (612 ms); …`.
    pub fn summary(&self) -> String {
        let skipped = self.checks.iter().filter(|c| c.passed.is_none()).count();
        let skipped = match skipped {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        if self.passed {
            return match self.checks.len() {
                0 => "passed (no checks)".to_string(),
                1 => format!("passed (1 check{skipped})"),
                n => format!("passed ({n} checks{skipped})"),
            };
        }
        let count = self.failed().count();
        let mut failed: Vec<String> = self
            .failed()
            .take(SUMMARY_NAMED)
            .map(|c| {
                let why = match (c.value, &c.reason) {
                    (Some(v), _) => format!("{}", Rounded(v)),
                    (None, Some(r)) => r.clone(),
                    (None, None) => "no value".into(),
                };
                // An endpoint's name is a client's, up to a kilobyte: the sentence keeps less.
                format!("{} {} ({why})", prefix(&c.endpoint, 100), c.check)
            })
            .collect();
        if count > SUMMARY_NAMED {
            failed.push(format!("and {} more", count - SUMMARY_NAMED));
        }
        format!(
            "FAILED {count} of {} checks: {}",
            self.checks.len(),
            failed.join("; ")
        )
    }
}

/// A figure as a person reads it: at most three decimals, no trailing zeros.
pub struct Rounded(pub f64);

impl std::fmt::Display for Rounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = format!("{:.3}", self.0);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        f.write_str(text)
    }
}

/// Judges `rows` (a result's endpoint rows) by `thresholds`, against `baseline`. A check of an
/// endpoint applies to every row of that name (one outcome per method); an endpoint without a
/// row, or a row without the figure, fails the check (a CI must not pass on missing data); a
/// baseline check without a baseline, or whose baseline lacks the figure, is skipped.
pub fn judge(thresholds: &[Threshold], rows: &[ResultRow], baseline: Baseline<'_>) -> Verdict {
    let mut checks = Vec::new();
    for t in thresholds {
        // One row per name and method: a row that repeats another's is the client's mistake.
        let mut seen = std::collections::HashSet::new();
        let matching: Vec<&ResultRow> = rows
            .iter()
            .filter(|r| r.name == t.endpoint && seen.insert(r.method.as_str()))
            .collect();
        if checks.len() + matching.len() > MAX_OUTCOMES {
            checks.push(Outcome {
                endpoint: t.endpoint.clone(),
                metric: t.check.metric.name().to_string(),
                method: None,
                check: t.check.text.clone(),
                source: t.source,
                value: None,
                limit: None,
                passed: Some(false),
                reason: Some(format!(
                    "not judged: the checks' rows came to more than {MAX_OUTCOMES} outcomes (many rows of one name)"
                )),
            });
            break;
        }
        let outcome = |row: Option<&ResultRow>| Outcome {
            endpoint: t.endpoint.clone(),
            metric: t.check.metric.name().to_string(),
            method: row.map(|r| r.method.clone()).filter(|m| !m.is_empty()),
            check: t.check.text.clone(),
            source: t.source,
            value: None,
            limit: None,
            passed: Some(false),
            reason: None,
        };
        if matching.is_empty() {
            let mut o = outcome(None);
            o.reason = Some(if rows.is_empty() {
                "the result has no endpoint rows (no requestStats.stats)".to_string()
            } else {
                format!("the result has no row named {:?}", t.endpoint)
            });
            checks.push(o);
            continue;
        }
        for row in matching {
            let mut o = outcome(Some(row));
            let metric = t.check.metric;
            o.value = row.figures.get(metric);
            o.limit = match t.check.limit {
                Limit::Value(v) => Some(v),
                Limit::Baseline(factor) => match baseline {
                    Baseline::Missing(why) => {
                        o.passed = None;
                        o.reason = Some(why.to_string());
                        None
                    }
                    Baseline::Found { uuid, rows: base } => {
                        let figure = base
                            .iter()
                            .find(|b| b.name == row.name && b.method == row.method)
                            .and_then(|b| b.figures.get(metric));
                        if figure.is_none() {
                            o.passed = None;
                            o.reason = Some(format!(
                                "the baseline run {uuid} has no {} of {:?}",
                                metric.name(),
                                row.name
                            ));
                        }
                        figure.map(|b| b * factor)
                    }
                },
            };
            if o.passed.is_some() {
                match (o.value, o.limit) {
                    (Some(v), Some(l)) => o.passed = Some(t.check.op.holds(v, l)),
                    (None, _) => {
                        o.passed = Some(false);
                        o.reason = Some(format!(
                            "the row carries no {} (read from {})",
                            metric.name(),
                            read_from(metric)
                        ));
                    }
                    (Some(_), None) => {}
                }
            }
            checks.push(o);
        }
    }
    Verdict {
        passed: !checks.iter().any(|c| c.passed == Some(false)),
        baseline: match baseline {
            Baseline::Found { uuid, .. } => Some(uuid),
            Baseline::Missing(_) => None,
        },
        checks,
    }
}

#[cfg(test)]
mod tests;
