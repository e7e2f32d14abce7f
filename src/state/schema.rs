//! What the gateway knows of InfluxDB's schema: for each measurement it writes, each field's
//! type and which names are tags. With it a request that InfluxDB would refuse for a type
//! conflict (`"clients": "ten"` after runs stored a number) or a name used both as a tag and as
//! a field (InfluxDB 3 refuses that too) is answered 400 at once, naming the field and the type
//! earlier runs used, instead of ending in the dead letters.
//!
//! The knowledge comes from two places: the gateway's own accepted writes (learned as each
//! request's record is written), and InfluxDB itself (`SHOW FIELD KEYS`, `SHOW TAG KEYS`), read
//! at start, every `influxdb.schema_refresh`, and soon after a refusal, so that a schema that
//! changed under the gateway — a dropped measurement, a new database, a retention policy that
//! expired the old points — stops being held against requests. While the log is fully
//! delivered, InfluxDB's answer replaces what the gateway knew; while records wait, it is added
//! to it (their types are not in InfluxDB yet). It is saved with the job table's snapshot, for a
//! start while InfluxDB is away.
//!
//! No I/O here: the reading of InfluxDB's schema is `delivery::influx`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::ingest::line_protocol::{FieldValue, Point};

/// A field's type as InfluxDB names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
}

impl FieldType {
    /// The type of a value the gateway writes (numbers are always floats).
    pub fn of(value: &FieldValue) -> FieldType {
        match value {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Bool(_) => FieldType::Boolean,
            FieldValue::Str(_) => FieldType::String,
        }
    }

    /// From InfluxDB's word for it (`SHOW FIELD KEYS`'s `fieldType`).
    pub fn from_influx(word: &str) -> Option<FieldType> {
        Some(match word {
            "float" => FieldType::Float,
            "integer" => FieldType::Integer,
            "unsigned" => FieldType::Unsigned,
            "string" => FieldType::String,
            "boolean" => FieldType::Boolean,
            _ => return None,
        })
    }

    /// What a client sends for it, in an error message.
    fn as_sent(self) -> &'static str {
        match self {
            FieldType::Float | FieldType::Integer | FieldType::Unsigned => "a number",
            FieldType::String => "a string",
            FieldType::Boolean => "a boolean",
        }
    }

    fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }
}

/// The schema of one measurement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    pub fields: BTreeMap<String, FieldType>,
    pub tags: BTreeSet<String>,
}

/// The schema of every measurement known, by name.
pub type Known = BTreeMap<String, Measurement>;

/// Why InfluxDB would refuse a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The field has another type in the measurement.
    FieldType {
        measurement: String,
        field: String,
        earlier: FieldType,
        now: FieldType,
    },
    /// A name of the point is a tag here and a field in the measurement, or the other way.
    TagAndField {
        measurement: String,
        name: String,
        /// The name is a tag of the point (and a field in InfluxDB); else the reverse.
        is_tag_now: bool,
    },
}

impl Conflict {
    /// The name the conflict is about.
    pub fn name(&self) -> &str {
        match self {
            Conflict::FieldType { field, .. } => field,
            Conflict::TagAndField { name, .. } => name,
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::FieldType {
                measurement,
                earlier,
                now,
                ..
            } => {
                // "a number (float)", but "a string", not "a string (string)".
                let sent = now.as_sent();
                let now = if sent == format!("a {}", now.name()) {
                    sent.to_string()
                } else {
                    format!("{sent} ({})", now.name())
                };
                write!(
                    f,
                    "is {now}, but earlier runs wrote it to {measurement} as a {}, and InfluxDB keeps one type per field: send {}, or give the field another name",
                    earlier.name(),
                    earlier.as_sent()
                )
            }
            Conflict::TagAndField {
                measurement,
                is_tag_now: true,
                ..
            } => write!(
                f,
                "is a tag here, but earlier runs wrote it to {measurement} as a field, and a name is a tag or a field in InfluxDB, not both: give the tag another name"
            ),
            Conflict::TagAndField {
                measurement,
                is_tag_now: false,
                ..
            } => write!(
                f,
                "is a field here, but earlier runs wrote it to {measurement} as a tag, and a name is a tag or a field in InfluxDB, not both: give the field another name"
            ),
        }
    }
}

/// The gateway's knowledge of the schema; see the module documentation.
#[derive(Debug, Default)]
pub struct Schema {
    known: Mutex<Known>,
}

impl Schema {
    /// A schema that starts from `known` (the snapshot's).
    pub fn new(known: Known) -> Schema {
        Schema {
            known: Mutex::new(known),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether InfluxDB would take `fields` and `tags` (names) in `measurement`, as far as the
    /// gateway knows; the first conflict found, in the order given.
    pub fn check<'a>(
        &self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a FieldValue)>,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Conflict> {
        let known = self.lock();
        let Some(m) = known.get(measurement) else {
            return Ok(());
        };
        for (name, value) in fields {
            let now = FieldType::of(value);
            if let Some(&earlier) = m.fields.get(name)
                && earlier != now
            {
                return Err(Conflict::FieldType {
                    measurement: measurement.to_string(),
                    field: name.to_string(),
                    earlier,
                    now,
                });
            }
            if m.tags.contains(name) {
                return Err(Conflict::TagAndField {
                    measurement: measurement.to_string(),
                    name: name.to_string(),
                    is_tag_now: false,
                });
            }
        }
        for name in tags {
            if m.fields.contains_key(name) {
                return Err(Conflict::TagAndField {
                    measurement: measurement.to_string(),
                    name: name.to_string(),
                    is_tag_now: true,
                });
            }
        }
        Ok(())
    }

    /// Learns the types and tags of points the gateway has accepted. A field already known
    /// keeps its type (the first write of a type wins in InfluxDB too).
    pub fn learn(&self, points: &[Point]) {
        let mut known = self.lock();
        for point in points {
            let m = known.entry(point.measurement().to_string()).or_default();
            for (name, value) in point.fields() {
                if !m.fields.contains_key(name) {
                    m.fields.insert(name.to_string(), FieldType::of(value));
                }
            }
            for (name, _) in point.tags() {
                if !m.tags.contains(name) {
                    m.tags.insert(name.to_string());
                }
            }
        }
    }

    /// Learns the types of `fields` written to `measurement` (a progress: the heartbeats to
    /// come carry them).
    pub fn learn_fields(&self, measurement: &str, fields: &[(String, FieldValue)]) {
        let mut known = self.lock();
        let m = known.entry(measurement.to_string()).or_default();
        for (name, value) in fields {
            if !m.fields.contains_key(name) {
                m.fields.insert(name.clone(), FieldType::of(value));
            }
        }
    }

    /// Takes what InfluxDB says of its schema: it replaces what the gateway knew when
    /// `replace` (nothing waits to be delivered, so InfluxDB has every type the gateway
    /// wrote), else it is added, InfluxDB's types winning.
    pub fn update_from_influxdb(&self, seen: Known, replace: bool) {
        let mut known = self.lock();
        if replace {
            *known = seen;
            return;
        }
        for (name, m) in seen {
            let entry = known.entry(name).or_default();
            entry.fields.extend(m.fields);
            entry.tags.extend(m.tags);
        }
    }

    /// What the gateway knows, to save with the snapshot.
    pub fn known(&self) -> Known {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(measurement: &'static str, fields: &[(&str, FieldValue)], tags: &[&str]) -> Point {
        let mut p = Point::new(measurement, 1);
        for (k, v) in fields {
            p.field(k, v.clone()).unwrap();
        }
        for t in tags {
            p.tag(t, "v").unwrap();
        }
        p
    }

    #[test]
    fn a_type_conflict_and_a_name_both_tag_and_field_are_found() {
        let schema = Schema::default();
        schema.learn(&[point(
            "load_testing",
            &[("clients", FieldValue::Float(5.0))],
            &["mode"],
        )]);
        let ten = FieldValue::Str("ten".into());
        let err = schema
            .check("load_testing", [("clients", &ten)], [])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "is a string, but earlier runs wrote it to load_testing as a float, and InfluxDB keeps one type per field: send a number, or give the field another name"
        );
        let one = FieldValue::Float(1.0);
        assert!(matches!(
            schema.check("load_testing", [("mode", &one)], []),
            Err(Conflict::TagAndField {
                is_tag_now: false,
                ..
            })
        ));
        assert!(matches!(
            schema.check("load_testing", [], ["clients"]),
            Err(Conflict::TagAndField {
                is_tag_now: true,
                ..
            })
        ));
        // Other measurements and new names are not held against anything.
        assert!(
            schema
                .check("load_testing_result", [("clients", &ten)], [])
                .is_ok()
        );
        assert!(
            schema
                .check("load_testing", [("users", &ten)], ["team"])
                .is_ok()
        );
        assert!(
            schema
                .check("load_testing", [("clients", &one)], [])
                .is_ok()
        );
    }

    #[test]
    fn influxdbs_answer_replaces_or_adds_to_what_was_learned() {
        let schema = Schema::default();
        schema.learn(&[point("m", &[("a", FieldValue::Float(1.0))], &[])]);
        schema.learn(&[point("m", &[("a", FieldValue::Bool(true))], &[])]);
        assert_eq!(
            schema.known()["m"].fields["a"],
            FieldType::Float,
            "the first type stays"
        );
        let mut seen = Known::new();
        seen.entry("m".into())
            .or_default()
            .fields
            .insert("b".into(), FieldType::String);
        schema.update_from_influxdb(seen.clone(), false);
        assert_eq!(
            schema.known()["m"].fields.len(),
            2,
            "added while records wait"
        );
        // The measurement was dropped: InfluxDB, caught up, no longer knows it.
        schema.update_from_influxdb(Known::new(), true);
        let ten = FieldValue::Str("ten".into());
        assert!(schema.check("m", [("a", &ten)], []).is_ok());
    }
}
