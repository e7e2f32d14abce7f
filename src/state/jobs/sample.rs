//! A run's progress over time, for its report's chart: users and requests per second at the
//! register and at each progress, bounded per run.

use crate::ingest::line_protocol::FieldValue;

/// A run's progress at one moment, for the report's chart.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub ms: i64,
    /// Users running (`user_count`, else `users`, else `clients`).
    pub users: Option<f64>,
    /// Requests per second (`current_rps`, else `rps`).
    pub rps: Option<f64>,
}

/// Samples of a run kept at most.
pub const MAX_SAMPLES: usize = 300;

impl Sample {
    /// The sample of a run whose fields are `fields` at `ms`; `None` when they say nothing of
    /// users or requests per second.
    pub fn of<K: AsRef<str>>(fields: &[(K, FieldValue)], ms: i64) -> Option<Sample> {
        let first = |keys: &[&str]| {
            keys.iter().find_map(|key| {
                fields.iter().find_map(|(k, v)| match v {
                    FieldValue::Float(f) if k.as_ref() == *key && f.is_finite() => Some(*f),
                    _ => None,
                })
            })
        };
        let users = first(&["user_count", "users", "clients"]);
        let rps = first(&["current_rps", "rps"]);
        (users.is_some() || rps.is_some()).then_some(Sample { ms, users, rps })
    }
}

/// Adds `sample` to `samples`, letting every other one go when [`MAX_SAMPLES`] are held.
pub(super) fn add_sample(samples: &mut Vec<Sample>, sample: Option<Sample>) {
    let Some(sample) = sample else {
        return;
    };
    if samples.len() >= MAX_SAMPLES {
        let mut i = 0;
        samples.retain(|_| {
            i += 1;
            i % 2 == 1
        });
    }
    samples.push(sample);
}
