//! How a commit is judged: the configuration's rules (`[[verdict.rule]]`) that match a run's
//! tags, a run's identity (`verdict.identity`) and its baseline from `state::results`, and the
//! result kept for reports and later baselines.

use compact_str::CompactString;
use uuid::Uuid;
use wildmatch::WildMatch;

use crate::config;
use crate::ingest::payload::{RequestStats, StatsRow};
use crate::ingest::points::Run;
use crate::state::jobs::Sample;
use crate::state::results::{RESULT_FORMAT, RESULT_VERSION, RunResult};
use crate::verdict::{self, Baseline, ResultRow, Source, Threshold, Verdict};

/// The configuration's side of verdicts, checked at the start.
#[derive(Debug, Default)]
pub struct Judging {
    /// `verdict.identity`: the tags that say which test a run is.
    pub identity: Vec<String>,
    pub rules: Vec<Rule>,
}

/// One `[[verdict.rule]]`: its checks apply to the runs whose tags all match its globs.
#[derive(Debug)]
pub struct Rule {
    pub tags: Vec<(String, WildMatch)>,
    pub thresholds: Vec<Threshold>,
}

impl Judging {
    /// From `[verdict]`, which `config::validate` has checked (a check it let through is read
    /// here the same way; one that would not read is left out).
    pub fn from_config(v: &config::Verdict) -> Judging {
        let rules = v
            .rules
            .iter()
            .map(|r| Rule {
                tags: r
                    .tags
                    .iter()
                    .map(|(k, glob)| (k.clone(), WildMatch::new(glob)))
                    .collect(),
                thresholds: serde_json::to_value(&r.thresholds)
                    .ok()
                    .and_then(|json| verdict::thresholds(&json, Source::Config).ok())
                    .unwrap_or_default(),
            })
            .collect();
        Judging {
            identity: v.identity.clone(),
            rules,
        }
    }

    /// The checks of every rule whose tags the run's `tags` match, in the order of the rules.
    pub fn checks_for(&self, tags: &[(CompactString, CompactString)]) -> Vec<Threshold> {
        self.rules
            .iter()
            .filter(|rule| {
                rule.tags.iter().all(|(name, glob)| {
                    tags.iter()
                        .any(|(k, value)| k == name && glob.matches(value))
                })
            })
            .flat_map(|rule| rule.thresholds.iter().cloned())
            .collect()
    }

    /// The run's identity, `test=shop` (each identity tag with its value, joined by `,`), or
    /// why it has none: the sentence a skipped baseline check gives.
    pub fn identity_of(&self, tags: &[(CompactString, CompactString)]) -> Result<String, String> {
        let mut parts = Vec::with_capacity(self.identity.len());
        for name in &self.identity {
            match tags.iter().find(|(k, _)| k == name) {
                // `\`, `,` and `=` escaped, so two sets of values never read as one.
                Some((_, value)) => {
                    let value = value
                        .replace('\\', "\\\\")
                        .replace(',', "\\,")
                        .replace('=', "\\=");
                    parts.push(format!("{name}={value}"));
                }
                None => {
                    return Err(format!(
                        "no baseline: the run has no {name:?} tag, which names the test it is (verdict.identity); the Locust plugin sends the locustfile's name"
                    ));
                }
            }
        }
        if parts.is_empty() {
            return Err("no baseline: verdict.identity names no tag".into());
        }
        Ok(parts.join(","))
    }
}

/// What a commit hands to [`judge`]: the run, who committed it, when, its stats and what the
/// job table kept of it.
pub struct Judged<'a> {
    pub run: &'a Run,
    pub owner: Option<&'a str>,
    pub now_ms: i64,
    pub stats: Option<&'a RequestStats>,
    pub thresholds: &'a [Threshold],
    pub samples: Vec<Sample>,
}

impl super::Service {
    /// Judges a commit: its rows' figures, the register's and the configuration's checks, the
    /// baseline (the last run of the same owner and identity that passed). Returns the result
    /// to keep, whose `verdict` is the commit's.
    pub(super) fn judge(&self, j: Judged<'_>) -> RunResult {
        // Room for an `Aggregated` row the gateway may add: a row is a few hundred bytes.
        let sent = j.stats.map_or(&[][..], |s| s.rows.as_slice());
        let mut rows: Vec<ResultRow> = Vec::with_capacity(sent.len() + 1);
        rows.extend(sent.iter().map(StatsRow::result_row));
        // `locust --json-file` writes no Aggregated row: the gateway computes it, so a check of
        // `Aggregated` reads the same figures whichever way Locust's stats came.
        if !rows.is_empty() && !rows.iter().any(ResultRow::is_aggregated) {
            let merged = j.stats.map(|s| s.merged.as_slice()).unwrap_or_default();
            rows.push(ResultRow::aggregate(&rows, merged));
        }
        let config = self.judging.checks_for(&j.run.tags);
        let checks = verdict::merge(j.thresholds, &config);
        let identity = self.judging.identity_of(&j.run.tags);
        let base = match &identity {
            Ok(id) => self.results.baseline(j.owner, id, &j.run.uuid),
            Err(_) => None,
        };
        let missing;
        let baseline = match (&base, &identity) {
            (Some(b), _) => Baseline::Found {
                uuid: b.uuid,
                rows: &b.rows,
            },
            (None, Err(why)) => Baseline::Missing(why),
            (None, Ok(id)) => {
                missing = format!("no baseline yet: no earlier run with {id} passed");
                Baseline::Missing(&missing)
            }
        };
        let verdict: Verdict = verdict::judge(&checks, &rows, baseline);
        RunResult {
            format: RESULT_FORMAT.into(),
            version: RESULT_VERSION,
            uuid: j.run.uuid,
            owner: j.owner.map(Into::into),
            identity: identity.ok(),
            // A run without checks was not judged: it passes, but is nobody's baseline.
            passed: verdict.passed && !verdict.checks.is_empty(),
            ended_ms: j.now_ms,
            host: j.run.host.to_string(),
            tags: j
                .run
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            started_ms: j.run.started_ms,
            rows,
            progress: j.samples,
            verdict,
        }
    }

    /// The baseline a result was judged against, for its report: `None` when it had none or
    /// it is no longer kept.
    pub fn baseline_of(&self, result: &RunResult) -> Option<RunResult> {
        let uuid: Uuid = result.verdict.baseline?;
        self.results.get(&uuid, result.owner.as_deref())
    }
}
