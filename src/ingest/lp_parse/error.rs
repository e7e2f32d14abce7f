//! Why the line-protocol reader refuses a line: the kinds of refusal, a sentence for a person
//! on each, and InfluxDB 1.6.7's own words. Plain values: nothing here reads a line.

use std::fmt;

/// Why a line is refused. Each kind has a sentence for a person ([`Kind::reason`]); the exact
/// text InfluxDB 1.6.7 gives is in [`LineError::detail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MissingMeasurement,
    MissingTagKey,
    MissingTagValue,
    /// An unescaped `=` in a tag value.
    InvalidTagFormat,
    DuplicateTags,
    /// A tag key `time` (refused when InfluxDB stores the point).
    TimeTag,
    MissingFields,
    MissingFieldKey,
    MissingFieldValue,
    /// Fields not of the shape `key=value[,key=value…]`.
    InvalidFieldFormat,
    UnbalancedQuotes,
    /// A number InfluxDB cannot read (`1.1.1`, `1x`, `-`, `1.5i`).
    InvalidNumber,
    /// `NaN`, `Inf` and their spellings: line protocol has no non-finite numbers.
    NotFinite,
    /// A float out of range (`1e400`) or with a broken exponent (`1e`).
    InvalidFloat,
    /// An integer outside `i64`.
    IntegerOutOfRange,
    /// An unsigned integer (`1u`): InfluxDB 1.6.7 does not take them.
    Unsigned,
    InvalidBoolean,
    /// The only field is `time`, which InfluxDB drops.
    TimeField,
    /// One field key twice in the line, with two types.
    FieldTypeConflict,
    /// A field key InfluxDB reads in two ways (a backslash right before its `=`), or an empty one.
    AmbiguousKey,
    /// A measurement, tag or field name holding a line break (InfluxDB stores it from a body
    /// starting with a space, but no line can carry it again).
    LineBreakInName,
    MaxKeyLength,
    /// A timestamp that is not an integer.
    BadTimestamp,
    /// A timestamp outside the range InfluxDB stores, in nanoseconds.
    TimeOutOfRange,
    /// Something other than spaces after the timestamp.
    TrailingText,
}

impl Kind {
    /// What is wrong and what to do, for a person.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::MissingMeasurement => "the line does not start with a measurement name",
            Kind::MissingTagKey => "a tag has no key: write tags as ,key=value",
            Kind::MissingTagValue => "a tag has no value: leave out tags without a value",
            Kind::InvalidTagFormat => "a tag value holds an unescaped '=': write it as \\=",
            Kind::DuplicateTags => "a tag key appears twice: give each tag once",
            Kind::TimeTag => "a tag is named \"time\", which InfluxDB reserves: rename it",
            Kind::MissingFields => {
                "the line has no fields: add at least one key=value after a space"
            }
            Kind::MissingFieldKey => "a field has no key: write fields as key=value",
            Kind::MissingFieldValue => "a field has no value: write fields as key=value",
            Kind::InvalidFieldFormat => {
                "the fields are not key=value pairs separated by commas (escape spaces, commas \
                 and '=' in keys with a backslash)"
            }
            Kind::UnbalancedQuotes => "a string value has no closing double quote",
            Kind::InvalidNumber => {
                "a number is malformed: write 1.5 for a float or 15i for an integer"
            }
            Kind::NotFinite => "NaN and infinities cannot be stored: leave the field out",
            Kind::InvalidFloat => "a float is out of range or has a broken exponent",
            Kind::IntegerOutOfRange => "an integer is outside the 64-bit signed range",
            Kind::Unsigned => "unsigned integers (the u suffix) are not supported: use i",
            Kind::InvalidBoolean => {
                "a value is not a number, a quoted string or a boolean (true/false); quote strings"
            }
            Kind::TimeField => "the only field is named \"time\", which InfluxDB drops: rename it",
            Kind::FieldTypeConflict => "a field is given twice with two different types",
            Kind::AmbiguousKey => {
                "a field key is empty or ends in a backslash right before '=': rename it"
            }
            Kind::LineBreakInName => {
                "a name holds a line break, which line protocol cannot carry: remove it (a body \
                 starting with a space keeps one inside a quote)"
            }
            Kind::MaxKeyLength => "the measurement, tags and a field key are over 65535 bytes",
            Kind::BadTimestamp => "the timestamp is not an integer",
            Kind::TimeOutOfRange => {
                "the timestamp is outside the years 1677 to 2262 in the given precision"
            }
            Kind::TrailingText => "there is text after the timestamp",
        }
    }
}

/// A refused line: the kind, and what InfluxDB 1.6.7 says after `unable to parse '<line>': `
/// (or its whole message, for refusals made when it stores the point: see [`LineError::influx`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub kind: Kind,
    pub detail: String,
}

impl LineError {
    pub(super) fn new(kind: Kind, detail: impl Into<String>) -> LineError {
        LineError {
            kind,
            detail: detail.into(),
        }
    }

    /// The message InfluxDB 1.6.7 gives for this refusal of `line` (the text of
    /// [`Entry::range`]): `unable to parse '<line>': <detail>`, or, for a `time` tag or field and
    /// for a type conflict, the message of its storage engine.
    pub fn influx(&self, line: &str) -> String {
        if self.when_stored() {
            self.detail.clone()
        } else {
            format!("unable to parse '{line}': {}", self.detail)
        }
    }

    /// Whether InfluxDB 1.6.7 refuses the line when it stores the point rather than when it
    /// parses it (a `time` tag or only field, a field with two types): it then counts the
    /// point in a partial write's `dropped=N`, which counts no line its parser refused.
    pub fn when_stored(&self) -> bool {
        matches!(
            self.kind,
            Kind::TimeTag | Kind::TimeField | Kind::FieldTypeConflict
        )
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind.reason(), self.detail)
    }
}
