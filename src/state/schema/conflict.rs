//! Why InfluxDB would refuse a point for its schema: a field of another type, or a name that is
//! a tag in one place and a field in another; said for the run routes' clients and in InfluxDB's
//! own words (the write API's). Plain values: nothing here reads the schema.

use std::fmt;

use super::FieldType;

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

    /// What InfluxDB 1.x says when it refuses a point for this conflict (its storage engine's
    /// words, as in `partial write: field type conflict: … dropped=1`).
    pub fn influx(&self) -> String {
        match self {
            Conflict::FieldType {
                measurement,
                field,
                earlier,
                now,
            } => format!(
                "field type conflict: input field \"{field}\" on measurement \"{measurement}\" is type {}, already exists as type {}",
                now.name(),
                earlier.name()
            ),
            Conflict::TagAndField {
                measurement, name, ..
            } => format!(
                "conflict: \"{name}\" is a tag and a field in measurement \"{measurement}\""
            ),
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
