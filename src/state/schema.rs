//! What the gateway knows of InfluxDB's schema: for each measurement it writes, each field's
//! type and which names are tags. With it a request that InfluxDB would refuse for a type
//! conflict (`"clients": "ten"` after runs stored a number) or a name used both as a tag and as
//! a field (InfluxDB 3 refuses that too) is answered 400 at once, naming the field and the type
//! earlier runs used, instead of ending in the dead letters.
//!
//! The knowledge comes from two places: the gateway's own accepted writes (each request checks
//! and claims the names it writes in one step, and what it claimed is learned once its record
//! is written, or let go if it is not: see [`Claim`]), and InfluxDB itself (`SHOW FIELD KEYS`, `SHOW TAG KEYS`), read
//! at start, every `influxdb.schema_refresh`, and soon after a refusal, so that a schema that
//! changed under the gateway — a dropped measurement, a new database, a retention policy that
//! expired the old points — stops being held against requests. When the log is fully
//! delivered as a reading begins, InfluxDB's answer replaces what the gateway knew, but for
//! what it learned since; while records wait, it is added to it (their types are not in
//! InfluxDB yet). It is saved with the job table's snapshot, for a
//! start while InfluxDB is away.
//!
//! No I/O here: the reading of InfluxDB's schema is `delivery::influx`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

mod claim;
mod conflict;
mod retention;
pub use claim::Claim;
use claim::{ClaimCounts, Claimed, Names, claimed_as};
pub use conflict::Conflict;
pub use retention::{Retention, TargetPolicy, TooOld};

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

/// The gateway's knowledge of the schema; see the module documentation.
#[derive(Debug, Default)]
pub struct Schema {
    inner: Mutex<Inner>,
    /// How long InfluxDB keeps the points the gateway writes, when it could tell (read with
    /// the schema); `None` when it keeps them for ever or could not say.
    retention: Mutex<Option<Retention>>,
    /// Counts the changes that can make a name a claim holds fail its check (see [`Claim`]'s
    /// `epoch`): InfluxDB's answers taken ([`Schema::update_from_influxdb`]) and names learned
    /// without a claim (`learn*`). Changed only under the lock of `inner`; read without it by
    /// a claim that holds every name it is asked for again.
    epoch: AtomicU64,
    /// InfluxDB's word was taken at least once.
    read: AtomicBool,
}

/// What [`Schema`] guards: what it knows, and what requests under way claimed.
#[derive(Debug, Default)]
struct Inner {
    known: Known,
    /// Names that requests being recorded are about to write, per measurement: what each is
    /// (a field of a type, or a tag) and how many [`Claim`]s hold it. Checked like `known`, so
    /// the second of two requests racing with a new field of two types is refused; never
    /// saved, and let go by a request that fails to be recorded. The names are shared with the
    /// claims holding them ([`Claim`]), so a name claimed by several requests at once is
    /// allocated once.
    claimed: Names<ClaimCounts>,
    /// What the gateway learned from its own writes since a reading of InfluxDB's schema began
    /// ([`Schema::reading_begins`]): that reading may have been answered before those writes
    /// reached InfluxDB, so what it says must not make the gateway forget them. Kept only while
    /// `reading`: at other times it would be cleared, unread, when the next reading begins.
    recent: Known,
    /// A reading of InfluxDB's schema began and its answer is not yet taken (one at a time:
    /// see [`Schema::reading_begins`]).
    reading: bool,
}

impl Inner {
    /// Learns that `measurement` has the field `name` of type `t` (a field already known keeps
    /// its type, as the first write of a type wins in InfluxDB too). Allocates only for what
    /// is new: every request writes names mostly known.
    fn add_field(&mut self, measurement: &str, name: &str, t: FieldType) {
        for known in self.learning() {
            in_measurement(known, measurement, |m| {
                if !m.fields.contains_key(name) {
                    m.fields.insert(name.to_string(), t);
                }
            });
        }
    }

    /// Learns that `measurement` has the tag `name`.
    fn add_tag(&mut self, measurement: &str, name: &str) {
        for known in self.learning() {
            in_measurement(known, measurement, |m| {
                if !m.tags.contains(name) {
                    m.tags.insert(name.to_string());
                }
            });
        }
    }

    /// What a name learned goes into: what the gateway knows, and, while a reading of
    /// InfluxDB's schema is under way, what it learned since that reading began.
    fn learning(&mut self) -> impl Iterator<Item = &mut Known> {
        let recent = self.reading.then_some(&mut self.recent);
        std::iter::once(&mut self.known).chain(recent)
    }
}

/// Changes the schema of `measurement` in `known` with `change`, adding it when missing (its
/// name is allocated only then).
fn in_measurement(known: &mut Known, measurement: &str, change: impl FnOnce(&mut Measurement)) {
    match known.get_mut(measurement) {
        Some(m) => change(m),
        None => {
            let mut m = Measurement::default();
            change(&mut m);
            known.insert(measurement.to_string(), m);
        }
    }
}

/// Whether InfluxDB would take `name` as `what` in `measurement`, of which `known` is what the
/// gateway knows (looked up once by the caller for all the names it checks), `claimed` what
/// requests under way claimed the name as.
fn check(
    known: Option<&Measurement>,
    claimed: Option<Claimed>,
    measurement: &str,
    name: &str,
    what: Claimed,
) -> Result<(), Conflict> {
    // The field's type, known or claimed.
    let field_type = || {
        known
            .and_then(|m| m.fields.get(name).copied())
            .or(match claimed {
                Some(Claimed::Field(t)) => Some(t),
                _ => None,
            })
    };
    match what {
        Claimed::Field(now) => {
            if let Some(earlier) = field_type()
                && earlier != now
            {
                return Err(Conflict::FieldType {
                    measurement: measurement.to_string(),
                    field: name.to_string(),
                    earlier,
                    now,
                });
            }
            let is_tag =
                known.is_some_and(|m| m.tags.contains(name)) || claimed == Some(Claimed::Tag);
            if is_tag {
                return Err(Conflict::TagAndField {
                    measurement: measurement.to_string(),
                    name: name.to_string(),
                    is_tag_now: false,
                });
            }
        }
        Claimed::Tag => {
            if field_type().is_some() {
                return Err(Conflict::TagAndField {
                    measurement: measurement.to_string(),
                    name: name.to_string(),
                    is_tag_now: true,
                });
            }
        }
    }
    Ok(())
}

impl Schema {
    /// A schema that starts from `known` (the snapshot's).
    pub fn new(known: Known) -> Schema {
        Schema {
            inner: Mutex::new(Inner {
                known,
                claimed: Names::default(),
                recent: Known::default(),
                reading: false,
            }),
            retention: Mutex::new(None),
            epoch: AtomicU64::new(0),
            read: AtomicBool::new(false),
        }
    }

    /// Sets what InfluxDB said of its retention policy (`None`: it keeps points for ever, or
    /// could not say).
    pub fn set_retention(&self, retention: Option<Retention>) {
        *crate::sync::lock(&self.retention) = retention;
    }

    /// Whether points stamped `at_ms` (Unix ms) would still be kept at `now_ms`: InfluxDB drops
    /// a point older than its retention policy's duration, so a run whose `startedAt` is older
    /// would be recorded and never stored.
    pub fn check_age(&self, at_ms: i64, now_ms: i64) -> Result<(), TooOld> {
        let retention = crate::sync::lock(&self.retention);
        match &*retention {
            Some(r) if at_ms < now_ms.saturating_sub(r.keeps_ms) => Err(TooOld {
                at_ms,
                retention: r.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// The lock, taken to change what is known other than by a claim: the epoch moves, so
    /// that no claim passes a name it holds without looking again (learning adds only names
    /// not known, but one of them may be a name a claim holds as another type).
    fn changing(&self) -> MutexGuard<'_, Inner> {
        let inner = self.lock();
        self.epoch.fetch_add(1, Ordering::Release);
        inner
    }

    /// Changes to what is known other than by claims so far (see `epoch`).
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A claim holding nothing yet, for one request: see [`Claim`].
    pub fn claim(&self) -> Claim<'_> {
        Claim::new(self)
    }

    /// Whether InfluxDB would take `fields` and `tags` (names) in `measurement`, as far as the
    /// gateway knows (what other requests claimed included); the first conflict found, in the
    /// order given. Claims nothing: a request that goes on to write claims what it writes.
    pub fn check<'a>(
        &self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a FieldValue)>,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Conflict> {
        let inner = self.lock();
        let (known, claimed) = (inner.known.get(measurement), inner.claimed.get(measurement));
        for (name, value) in fields {
            let what = Claimed::Field(FieldType::of(value));
            check(known, claimed_as(claimed, name), measurement, name, what)?;
        }
        for name in tags {
            check(
                known,
                claimed_as(claimed, name),
                measurement,
                name,
                Claimed::Tag,
            )?;
        }
        Ok(())
    }

    /// Learns the types and tags of points the gateway has written without a claim (with
    /// `influxdb.check_schema` off). A field already known keeps its type.
    pub fn learn(&self, points: &[Point]) {
        let mut inner = self.changing();
        for point in points {
            let measurement = point.measurement();
            for (name, value) in point.fields() {
                inner.add_field(measurement, name, FieldType::of(value));
            }
            for (name, _) in point.tags() {
                inner.add_tag(measurement, name);
            }
        }
    }

    /// Learns the types of `fields` written to `measurement` without a claim (a progress with
    /// `influxdb.check_schema` off: the heartbeats to come carry them).
    pub fn learn_fields(&self, measurement: &str, fields: &[(String, FieldValue)]) {
        let mut inner = self.changing();
        for (name, value) in fields {
            inner.add_field(measurement, name, FieldType::of(value));
        }
    }

    /// Learns the types of fields written to `measurement` without a claim (the write API's
    /// lines with `influxdb.check_schema` off). A field already known keeps its type.
    pub fn learn_types<'b>(
        &self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'b str, FieldType)>,
    ) {
        self.learn_types_and_tags(measurement, fields, std::iter::empty());
    }

    /// Learns the field types and the tags of `measurement` from points written before (the
    /// log's undelivered records, read at the start). A field already known keeps its type.
    pub fn learn_types_and_tags<'b>(
        &self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'b str, FieldType)>,
        tags: impl IntoIterator<Item = &'b str>,
    ) {
        let mut inner = self.changing();
        for (name, t) in fields {
            inner.add_field(measurement, name, t);
        }
        for name in tags {
            inner.add_tag(measurement, name);
        }
    }

    /// Takes what InfluxDB says of its schema: it replaces what the gateway knew when
    /// `replace` (nothing waited to be delivered as the reading began, so InfluxDB has every
    /// type the gateway wrote but those learned since: see [`Schema::reading_begins`]), else
    /// it is added, InfluxDB's types winning.
    ///
    /// What the gateway learned from its own writes since the reading began stays known when
    /// InfluxDB does not say otherwise: the reading may have been answered before those
    /// writes reached InfluxDB. (A register that taught the gateway a field's type, followed
    /// at once by another with another type, was accepted when a reading begun before the
    /// first one's write replaced what the gateway knew.)
    pub fn update_from_influxdb(&self, seen: Known, replace: bool) {
        self.update_keeping(seen, replace, Known::new());
    }

    /// [`Schema::update_from_influxdb`], keeping `pending` as well: names the gateway is yet to
    /// write, which InfluxDB cannot hold yet (the running runs' heartbeat fields, which a
    /// progress changed and the next tick writes). Kept like what was learned since the
    /// reading began, in the same step, so no request is checked against a schema without
    /// them.
    pub fn update_keeping(
        &self,
        seen: Known,
        replace: bool,
        pending: impl IntoIterator<Item = (String, Measurement)>,
    ) {
        let mut inner = self.changing();
        self.read.store(true, Ordering::Release);
        inner.reading = false;
        let recent = std::mem::take(&mut inner.recent);
        if replace {
            inner.known = seen;
        } else {
            for (name, m) in seen {
                let entry = inner.known.entry(name).or_default();
                entry.fields.extend(m.fields);
                entry.tags.extend(m.tags);
            }
        }
        // What the gateway learned since the reading began, then what it is yet to write (in
        // the order given): InfluxDB's answer wins over all, and the first over the next.
        for (measurement, m) in recent.into_iter().chain(pending) {
            let entry = inner.known.entry(measurement).or_default();
            for (name, t) in m.fields {
                entry.fields.entry(name).or_insert(t);
            }
            entry.tags.extend(m.tags);
        }
    }

    /// Whether InfluxDB's word was taken at least once ([`Schema::update_from_influxdb`]).
    pub fn read_once(&self) -> bool {
        self.read.load(Ordering::Acquire)
    }

    /// A reading of InfluxDB's schema begins: from now on what the gateway learns is kept
    /// through what that reading says ([`Schema::update_keeping`]). Then `caught_up` is asked
    /// whether every record of the log is delivered, and its answer returned: the reading's
    /// `replace`.
    ///
    /// Asked after, never before: each record's types must be in InfluxDB's answer, or the
    /// record counted as undelivered, or its types learned since the reading began. A record
    /// is counted from when it is appended, and its request learns its types once it is on
    /// disk ([`Claim::written`], or [`Schema::learn`] without claims), after the append: a
    /// record appended after `caught_up` looked is learned after the reading began; one
    /// appended before is counted, or was delivered before InfluxDB was asked. (Asked before,
    /// a record appended and learned between the two was in none of the three, and a reading
    /// that replaced what the gateway knew forgot its types: a request with another type was
    /// answered 200, and InfluxDB refused one of the two, a dead letter.) Names claimed and
    /// not yet written stay claimed whatever the reading says, and are learned when written.
    /// A heartbeat tick's record learns nothing: its types are the running runs', which the
    /// caller keeps as `pending`, taking those of the runs running just before it asks
    /// `caught_up` as well as those running when the answer is taken.
    ///
    /// One reading at a time (the schema thread's), its answer taken before the next begins,
    /// or none: the first answer of two overlapping readings would end what the second keeps.
    pub fn reading_begins(&self, caught_up: impl FnOnce() -> bool) -> bool {
        let mut inner = self.lock();
        inner.recent.clear();
        inner.reading = true;
        drop(inner);
        caught_up()
    }

    /// What the gateway knows, to save with the snapshot.
    pub fn known(&self) -> Known {
        self.lock().known.clone()
    }
}

#[cfg(test)]
mod tests {
    /// A reading of InfluxDB's schema answered before the gateway's own write reached
    /// InfluxDB must not make the gateway forget what that write taught it.
    #[test]
    fn a_reading_older_than_a_write_does_not_forget_what_the_write_taught() {
        use crate::ingest::line_protocol::{FieldValue, Point};
        let schema = Schema::default();
        schema.reading_begins(|| true);
        let mut p = Point::new("load_testing", 1);
        p.field("clients", FieldValue::Float(5.0)).unwrap();
        schema.learn(&[p]);
        // The reading began before the write and says InfluxDB has nothing.
        schema.update_from_influxdb(Known::default(), true);
        let ten = FieldValue::Str("ten".into());
        assert!(
            schema
                .check("load_testing", [("clients", &ten)], std::iter::empty())
                .is_err(),
            "the type the write taught is kept"
        );
        // The next reading, begun after the write, is InfluxDB's word again.
        schema.reading_begins(|| true);
        schema.update_from_influxdb(Known::default(), true);
        assert!(
            schema
                .check("load_testing", [("clients", &ten)], std::iter::empty())
                .is_ok()
        );
    }

    /// A request that appends its record right after a reading found the log delivered, and
    /// learns its types, is not counted by that answer: what it taught is kept through the
    /// reading, for it was learned after the reading began.
    #[test]
    fn a_write_learned_right_after_the_log_was_found_delivered_is_kept_through_the_reading() {
        use crate::ingest::line_protocol::FieldValue;
        let schema = Schema::default();
        let number = FieldValue::Float(1.0);
        let caught_up = schema.reading_begins(|| {
            let delivered = true;
            let mut claim = schema.claim();
            claim.fields("m", [("x", &number)], []).unwrap();
            claim.written();
            delivered
        });
        assert!(caught_up);
        schema.update_from_influxdb(Known::new(), caught_up);
        assert_eq!(schema.known()["m"].fields["x"], FieldType::Float);
    }

    #[test]
    fn a_time_older_than_the_retention_policy_keeps_is_refused() {
        let schema = Schema::default();
        let hour = 3_600_000;
        assert_eq!(
            schema.check_age(0, 10 * hour),
            Ok(()),
            "nothing known: kept"
        );
        let onehour = Retention {
            policy: "onehour".into(),
            keeps_ms: hour,
            shard_group_ms: hour,
        };
        schema.set_retention(Some(onehour.clone()));
        assert_eq!(schema.check_age(10 * hour - hour / 2, 10 * hour), Ok(()));
        assert_eq!(
            schema.check_age(8 * hour, 10 * hour),
            Err(TooOld {
                at_ms: 8 * hour,
                retention: onehour
            })
        );
        schema.set_retention(None);
        assert_eq!(schema.check_age(0, 10 * hour), Ok(()), "kept for ever");
        let odd = Retention {
            policy: "p".into(),
            keeps_ms: 90 * 60_000,
            shard_group_ms: 0,
        };
        assert_eq!(odd.keeps(), "90m");
    }

    use super::*;

    /// InfluxDB's word, added to what the gateway knows: `measurement` has `field` of type `t`.
    fn influxdb_says(schema: &Schema, measurement: &str, field: &str, t: FieldType) {
        let mut seen = Known::new();
        seen.entry(measurement.into())
            .or_default()
            .fields
            .insert(field.into(), t);
        schema.update_from_influxdb(seen, false);
    }

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

    /// A commit's endpoint rows have the same names: a row like the one before it is passed
    /// without lookups, but only that: one field of another type, a tag more, or another
    /// measurement is looked at, and everything is learned at the write.
    #[test]
    fn points_alike_are_claimed_once_and_a_difference_is_still_found() {
        let schema = Schema::default();
        let (one, text) = (FieldValue::Float(1.0), FieldValue::Str("s".into()));
        let row = |v: &FieldValue, tags: &[&str]| point("rows", &[("n", v.clone())], tags);
        schema.learn(&[point(
            "rows",
            &[("n", one.clone()), ("x", one.clone())],
            &[],
        )]);
        let mut claim = schema.claim();
        let err = claim
            .points(&[
                row(&one, &["name"]),
                row(&one, &["name"]),
                row(&text, &["name"]),
            ])
            .unwrap_err();
        assert!(matches!(err, Conflict::FieldType { .. }), "{err}");
        drop(claim);
        let mut claim = schema.claim();
        let err = claim
            .points(&[row(&one, &["name"]), row(&one, &["name", "x"])])
            .unwrap_err();
        assert!(matches!(err, Conflict::TagAndField { .. }), "{err}");
        drop(claim);
        let other = point("other", &[("n", text.clone())], &["name"]);
        let mut claim = schema.claim();
        claim
            .points(&[row(&one, &["name"]), row(&one, &["name"]), other])
            .unwrap();
        claim.written();
        let known = schema.known();
        assert!(known["rows"].tags.contains("name"));
        assert_eq!(known["other"].fields["n"], FieldType::String);
    }

    /// Rows whose fields a claim holds as their types are kept without the lock; a row with a
    /// field of another type, or any row once InfluxDB's word changed, is checked as alone.
    #[test]
    fn rows_held_pass_again_and_others_are_checked_until_influxdbs_word_changes() {
        let schema = Schema::default();
        let (one, text) = (FieldValue::Float(1.0), FieldValue::Str("s".into()));
        let fields =
            |v: &FieldValue| vec![("a".to_string(), one.clone()), ("b".to_string(), v.clone())];
        schema.learn(&[point("m", &[("b", one.clone())], &[])]);
        let mut claim = schema.claim();
        let mut rows = [
            fields(&one),
            fields(&one),
            fields(&text),
            fields(&text),
            fields(&one),
        ];
        let left_out: usize = rows.iter_mut().map(|r| claim.retain_fields("m", r)).sum();
        assert_eq!(left_out, 2);
        let kept: Vec<usize> = rows.iter().map(Vec::len).collect();
        assert_eq!(kept, [2, 2, 1, 1, 2]);
        // InfluxDB says `a` is a string: a row held whole before loses it.
        influxdb_says(&schema, "m", "a", FieldType::String);
        let mut row = fields(&one);
        assert_eq!(claim.retain_fields("m", &mut row), 1);
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].0, "b");
    }

    /// Names learned without a claim move the epoch as InfluxDB's word does: a claim that
    /// holds a name learned meanwhile as another type looks again rather than passing it.
    #[test]
    fn a_name_learned_as_another_type_is_not_passed_by_a_claim_holding_it() {
        let schema = Schema::default();
        let one = FieldValue::Float(1.0);
        let row = || vec![("a".to_string(), one.clone())];
        let mut claim = schema.claim();
        assert_eq!(claim.retain_fields("m", &mut row()), 0);
        assert_eq!(
            claim.retain_fields("m", &mut row()),
            0,
            "held: passes again"
        );
        schema.learn_types("m", [("a", FieldType::String)]);
        let mut again = row();
        assert_eq!(claim.retain_fields("m", &mut again), 1);
        assert!(again.is_empty());
    }

    /// Names learned without a claim move the epoch but are not InfluxDB's word:
    /// the schema is still unread (upkeep's first reading of a write database is still due),
    /// and a claim's held names of the same type still pass, unrelated names learned or not.
    #[test]
    fn names_learned_are_not_a_reading_and_leave_a_claims_own_names_passing() {
        let schema = Schema::default();
        schema.learn_types_and_tags("m", [("x", FieldType::Float)], ["t"]);
        schema.learn_fields("m", &[("y".to_string(), FieldValue::Bool(true))]);
        assert!(!schema.read_once(), "learning is not InfluxDB's word");
        let mut claim = schema.claim();
        let row = || vec![("a".to_string(), FieldValue::Float(1.0))];
        assert_eq!(claim.retain_fields("m", &mut row()), 0);
        schema.learn_types("m", [("b", FieldType::String)]);
        schema.learn_types("m", [("a", FieldType::Float)]);
        assert_eq!(claim.retain_fields("m", &mut row()), 0, "same type: passes");
        assert!(claim.fields("m", std::iter::empty(), ["t"]).is_ok());
        let s = FieldValue::Str("s".into());
        assert!(claim.fields("m", [("x", &s)], std::iter::empty()).is_err());
        claim.written();
        assert!(!schema.read_once());
        schema.update_from_influxdb(Known::new(), false);
        assert!(schema.read_once());
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

    #[test]
    fn of_two_requests_racing_with_two_types_of_a_new_field_the_second_is_refused() {
        let schema = Schema::default();
        let (num, text) = (FieldValue::Float(1.5), FieldValue::Str("s".into()));
        // Both are checked before either is written: the first claims the field.
        let mut first = schema.claim();
        first.fields("m", [("new", &num)], []).unwrap();
        let mut second = schema.claim();
        let err = second.fields("m", [("new", &text)], []).unwrap_err();
        assert_eq!(err.name(), "new");
        assert!(
            err.to_string()
                .starts_with("is a string, but earlier runs wrote it to m as a float"),
            "{err}"
        );
        // A tag of that name is refused as well, and one of the same type goes along.
        assert!(second.fields("m", [], ["new"]).is_err());
        let mut third = schema.claim();
        third.fields("m", [("new", &num)], []).unwrap();
        assert!(
            schema.known().is_empty(),
            "nothing learned before it is written"
        );
        first.written();
        drop(third);
        assert_eq!(schema.known()["m"].fields["new"], FieldType::Float);
    }

    #[test]
    fn a_claim_of_a_request_that_was_not_recorded_is_let_go() {
        let schema = Schema::default();
        let (num, text) = (FieldValue::Float(1.5), FieldValue::Str("s".into()));
        let mut first = schema.claim();
        first.fields("m", [("new", &num)], ["t"]).unwrap();
        let mut same = schema.claim();
        same.fields("m", [("new", &num)], []).unwrap();
        // The first fails to be recorded; the other holding the same type still holds it.
        drop(first);
        assert!(schema.claim().fields("m", [("new", &text)], []).is_err());
        drop(same);
        // Nobody wrote it: the other type is taken now, and the tag name is free as a field.
        let mut other = schema.claim();
        other
            .fields("m", [("new", &text), ("t", &num)], [])
            .unwrap();
        other.written();
        assert_eq!(schema.known()["m"].fields["new"], FieldType::String);
    }

    #[test]
    fn a_conflict_inside_one_claim_claims_nothing_of_it() {
        let schema = Schema::default();
        let a = point("m", &[("x", FieldValue::Float(1.0))], &[]);
        let b = point(
            "m",
            &[("y", FieldValue::Float(1.0)), ("x", FieldValue::Bool(true))],
            &[],
        );
        let mut claim = schema.claim();
        assert!(claim.points(&[a, b]).is_err());
        // y and x were let go with the refused call.
        let mut other = schema.claim();
        let text = FieldValue::Str("s".into());
        other.fields("m", [("x", &text), ("y", &text)], []).unwrap();
    }

    /// A write teaches the gateway a field it knew when it was checked: InfluxDB's word may
    /// have made the gateway forget the field in between.
    #[test]
    fn a_known_field_forgotten_by_influxdbs_word_during_a_request_is_learned_at_its_write() {
        let schema = Schema::default();
        let number = FieldValue::Float(1.0);
        let mut first = schema.claim();
        first.fields("m", [("x", &number)], []).unwrap();
        first.written();
        schema.reading_begins(|| true);
        let mut claim = schema.claim();
        claim.fields("m", [("x", &number)], []).unwrap();
        schema.update_from_influxdb(Known::new(), true);
        assert!(schema.known().is_empty());
        claim.written();
        assert_eq!(schema.known()["m"].fields["x"], FieldType::Float);
    }

    /// A claim's names are looked up once per measurement (a run of names in one): a conflict
    /// in a later measurement lets go of what the call claimed in the earlier ones, and
    /// returns to a measurement claimed before in the same call.
    #[test]
    fn a_conflict_in_a_later_measurement_lets_go_of_the_earlier_ones() {
        let schema = Schema::default();
        let mut first = schema.claim();
        first
            .points(&[point("b", &[("y", FieldValue::Float(1.0))], &[])])
            .unwrap();
        first.written();
        let points = [
            point("a", &[("x", FieldValue::Float(1.0))], &["t"]),
            point("b", &[("z", FieldValue::Float(1.0))], &[]),
            point("a", &[("w", FieldValue::Float(1.0))], &[]),
            point("b", &[("y", FieldValue::Bool(true))], &[]),
        ];
        let mut claim = schema.claim();
        assert!(matches!(
            claim.points(&points),
            Err(Conflict::FieldType { field, .. }) if field == "y"
        ));
        let text = FieldValue::Str("s".into());
        let mut other = schema.claim();
        other
            .fields("a", [("x", &text), ("w", &text), ("t", &text)], [])
            .unwrap();
        other.fields("b", [("z", &text)], []).unwrap();
        // The claim refused still holds nothing: dropping it lets go of nothing of the other's.
        drop(claim);
        let number = FieldValue::Float(1.0);
        assert!(schema.claim().fields("a", [("x", &number)], []).is_err());
    }

    /// A name a claim already holds is not checked again while InfluxDB's word is unchanged;
    /// once InfluxDB says otherwise, it is, so the claim cannot write it with a type InfluxDB
    /// now holds against it.
    #[test]
    fn a_name_a_claim_holds_is_checked_again_after_influxdbs_word_changed() {
        let schema = Schema::default();
        let number = FieldValue::Float(1.0);
        let mut claim = schema.claim();
        claim.fields("m", [("x", &number)], []).unwrap();
        claim.fields("m", [("x", &number)], []).unwrap();
        influxdb_says(&schema, "m", "x", FieldType::String);
        assert!(matches!(
            claim.fields("m", [("x", &number)], []),
            Err(Conflict::FieldType { .. })
        ));
        let mut fields = vec![("x".to_string(), number.clone())];
        assert_eq!(claim.retain_fields("m", &mut fields), 1);
        assert!(fields.is_empty());
    }

    /// The write API's lines: fields a claim holds as the types asked pass again without the
    /// lock; a type it does not hold them as, a field it does not hold, or InfluxDB's word
    /// changed since, and they are checked (and claimed) as any other.
    #[test]
    fn fields_a_claim_holds_pass_again_until_influxdbs_word_changes() {
        let schema = Schema::default();
        let mut other = schema.claim();
        other.field_types("m", [("y", FieldType::Boolean)]).unwrap();
        let mut claim = schema.claim();
        claim.field_types("m", [("x", FieldType::Float)]).unwrap();
        claim.field_types("m", [("x", FieldType::Float)]).unwrap();
        assert!(matches!(
            claim.field_types("m", [("x", FieldType::String)]),
            Err(Conflict::FieldType { .. })
        ));
        assert!(matches!(
            claim.field_types("m", [("x", FieldType::Float), ("y", FieldType::Float)]),
            Err(Conflict::FieldType { .. })
        ));
        assert!(matches!(
            claim.field_types("n", [("x", FieldType::String)]),
            Ok(())
        ));
        assert_eq!(claim.held()["m"].len(), 1, "nothing of a refused call held");
        influxdb_says(&schema, "m", "x", FieldType::Integer);
        assert!(matches!(
            claim.field_types("m", [("x", FieldType::Float)]),
            Err(Conflict::FieldType { .. })
        ));
    }

    /// The write API's shortcut against the plain call: a field held as one type in one measurement asked for in
    /// another, two claims, InfluxDB's word taken between calls (added to, then replacing
    /// what was known), `read_once`; each answer of the shortcut is the plain call's.
    #[test]
    fn field_types_with_two_claims_and_influxdbs_word_between_calls_answer_as_the_plain_call() {
        let (s1, s2) = (Schema::default(), Schema::default());
        let (mut a1, mut a2) = (s1.claim(), s2.claim());
        let (mut b1, mut b2) = (s1.claim(), s2.claim());
        let word = |m: &str, x: &str, t: FieldType| {
            let mut seen = Known::new();
            seen.entry(m.into()).or_default().fields.insert(x.into(), t);
            seen
        };
        type Call<'c> = (&'c str, usize, &'c str, &'c [(&'c str, FieldType)]);
        let calls: &[Call<'_>] = &[
            ("a", 0, "m", &[("x", FieldType::Float)]),
            ("a", 0, "m", &[("x", FieldType::Float)]),
            ("b", 0, "n", &[("x", FieldType::String)]),
            ("a", 0, "n", &[("x", FieldType::Float)]),
            ("a", 0, "n", &[("x", FieldType::String)]),
            (
                "a",
                0,
                "m",
                &[("x", FieldType::Float), ("x", FieldType::String)],
            ),
            ("a", 0, "m", &[("x", FieldType::Float)]),
            ("word", 0, "m", &[("x", FieldType::Integer)]),
            ("a", 0, "m", &[("x", FieldType::Float)]),
            ("a", 0, "m", &[("y", FieldType::Float)]),
            ("a", 0, "m", &[("y", FieldType::Float)]),
            ("b", 0, "m", &[("y", FieldType::Boolean)]),
            ("replace", 0, "", &[]),
            ("a", 0, "m", &[("x", FieldType::Float)]),
            ("a", 0, "m", &[("x", FieldType::Float)]),
            ("b", 0, "m", &[("x", FieldType::Integer)]),
            ("b", 0, "n", &[("x", FieldType::String)]),
            ("word", 0, "n", &[("x", FieldType::Float)]),
            ("b", 0, "n", &[("x", FieldType::String)]),
            ("a", 0, "n", &[("x", FieldType::Float)]),
            ("a", 0, "m", &[("y", FieldType::Float)]),
        ];
        for (step, &(who, _, m, fields)) in calls.iter().enumerate() {
            let (r1, r2) = match who {
                "a" => (
                    a1.field_types(m, fields.iter().copied()),
                    a2.field_types_plain(m, fields.iter().copied()),
                ),
                "b" => (
                    b1.field_types(m, fields.iter().copied()),
                    b2.field_types_plain(m, fields.iter().copied()),
                ),
                "word" => {
                    let (x, t) = fields[0];
                    s1.update_from_influxdb(word(m, x, t), false);
                    s2.update_from_influxdb(word(m, x, t), false);
                    assert!(s1.read_once());
                    continue;
                }
                _ => {
                    s1.update_from_influxdb(Known::new(), true);
                    s2.update_from_influxdb(Known::new(), true);
                    continue;
                }
            };
            let show = |r: Result<(), Conflict>| r.map_err(|e| e.to_string());
            assert_eq!(show(r1), show(r2), "step {step}: {who} {m} {fields:?}");
            assert_eq!(s1.known(), s2.known(), "step {step}");
        }
    }

    /// InfluxDB's word taken on another thread, and seen taken (a flag set after
    /// it), is never passed over by the shortcut: a field the claim holds as a type InfluxDB
    /// now holds otherwise is refused from then on.
    #[test]
    fn influxdbs_word_taken_on_another_thread_is_seen_by_the_shortcut() {
        use std::sync::atomic::AtomicBool;
        for _ in 0..200 {
            let schema = Schema::default();
            let taken = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let mut claim = schema.claim();
                claim.field_types("m", [("x", FieldType::Float)]).unwrap();
                scope.spawn(|| {
                    influxdb_says(&schema, "m", "x", FieldType::Integer);
                    taken.store(true, Ordering::Release);
                });
                loop {
                    let after = taken.load(Ordering::Acquire);
                    let r = claim.field_types("m", [("x", FieldType::Float)]);
                    if after {
                        assert!(r.is_err(), "passed after InfluxDB's word was taken");
                        assert!(schema.read_once());
                        break;
                    }
                }
            });
        }
    }

    /// The claims are let go when their requests end: what a burst of names claimed (one
    /// InfluxDB write of a million one-line measurements, refused, or many in flight at once)
    /// must not stay held by the schema, which lives as long as the gateway: nothing is left
    /// claimed, and a sorted map holds no room for what it no longer holds (a hashed one kept
    /// its table at its largest).
    #[test]
    fn a_burst_of_names_claimed_and_let_go_leaves_nothing_claimed() {
        let schema = Schema::default();
        let names: Vec<String> = (0..20_000).map(|i| format!("m{i}")).collect();
        let mut claim = claim_each(&schema, &names);
        // One measurement with many fields, as well.
        claim
            .field_types("wide", names.iter().map(|n| (n.as_str(), FieldType::Float)))
            .unwrap();
        drop(claim);
        {
            let inner = schema.lock();
            assert!(inner.claimed.is_empty());
        }
        // The same through `written`.
        claim_each(&schema, &names).written();
        let inner = schema.lock();
        assert!(inner.claimed.is_empty());
        assert_eq!(inner.known.len(), names.len());
    }

    /// A claim of the field `x` in each measurement of `names`, one call each, as the write
    /// API claims a body's lines.
    fn claim_each<'s>(schema: &'s Schema, names: &[String]) -> Claim<'s> {
        let mut claim = schema.claim();
        for name in names {
            claim.field_types(name, [("x", FieldType::Float)]).unwrap();
        }
        claim
    }

    /// One InfluxDB write claims each line's names with a call of its own: a call looks only
    /// at the measurement it opened, not at every one the request (or any other in flight)
    /// claimed before it, which made a write of n one-line measurements n²/2 steps under the
    /// schema's lock (50 000 lines: 47 s in a debug build, under a second now; no bound on
    /// time is asserted here, nextest reports a slow test). What matters besides: all of them
    /// claimed, each held once, and nothing left once written.
    #[test]
    fn claiming_a_writes_lines_one_by_one_claims_each_and_leaves_nothing() {
        let schema = Schema::default();
        let names: Vec<String> = (0..50_000).map(|i| format!("m{i}")).collect();
        let claim = claim_each(&schema, &names);
        assert_eq!(claim.held().len(), names.len());
        assert_eq!(schema.lock().claimed.len(), names.len());
        // A conflict in the middle of a call leaves the other measurements as they were.
        let mut other = schema.claim();
        let mixed = [("x", FieldType::Float), ("y", FieldType::String)];
        other.field_types("m7", mixed).unwrap();
        let refused = other.field_types("m8", [("y", FieldType::Float), ("x", FieldType::String)]);
        assert!(refused.is_err());
        // Its `y`, claimed before the conflict, is let go: m8 holds the first claim's `x` only.
        assert_eq!(schema.lock().claimed.get("m8").map(|m| m.len()), Some(1));
        drop(other);
        assert_eq!(schema.lock().claimed.get("m7").map(|m| m.len()), Some(1));
        claim.written();
        let inner = schema.lock();
        assert!(inner.claimed.is_empty());
        assert_eq!(inner.known.len(), names.len());
    }

    /// The shortcuts for points alike and names held ([`Claim::points`], [`Claim::retain_fields`])
    /// against the plain calls, two schemas in lockstep through random calls of three claims,
    /// the rows' iterator changing the schema between rows (InfluxDB's word, another claim
    /// written or let go): each call's outcome, what each claim holds, the counts claimed and
    /// what is known stay the same. `CLAIM_RUNS` sets the number of runs (each its own seed,
    /// named in a failure: `CLAIM_FIRST_RUN` starts there).
    #[test]
    fn the_shortcuts_for_names_alike_claim_what_the_plain_calls_claim() {
        // What happens to the schema between two rows: InfluxDB's word, or another claim
        // written or let go.
        fn between_rows(
            op: usize,
            schema: &Schema,
            seen: &Known,
            replace: bool,
            other: &mut Option<Claim<'_>>,
        ) {
            match op {
                0 => schema.update_from_influxdb(seen.clone(), replace),
                1 => {
                    if let Some(o) = other.take() {
                        o.written();
                    }
                }
                _ => {
                    other.take();
                }
            }
        }
        use std::collections::BTreeMap;
        fn held(claim: &Claim<'_>) -> BTreeMap<String, BTreeMap<String, Claimed>> {
            claim
                .held()
                .iter()
                .map(|(m, n)| {
                    (
                        m.to_string(),
                        n.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
                    )
                })
                .collect()
        }
        fn claimed(schema: &Schema) -> BTreeMap<(String, String), (Claimed, usize)> {
            let inner = schema.lock();
            let mut out = BTreeMap::new();
            for (m, names) in &inner.claimed {
                for (n, (w, c)) in names {
                    out.insert((m.to_string(), n.to_string()), (*w, c.get()));
                }
            }
            out
        }
        const MS: [&str; 2] = ["a", "b"];
        const NAMES: [&str; 3] = ["x", "y", "z"];
        let values = [
            FieldValue::Float(1.0),
            FieldValue::Float(-0.0),
            FieldValue::Bool(true),
            FieldValue::Str("s".into()),
        ];
        let types = [FieldType::Float, FieldType::Boolean, FieldType::String];
        let env = |name: &str, or: u64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(or)
        };
        let first = env("CLAIM_FIRST_RUN", 0);
        for run in first..first + env("CLAIM_RUNS", 200) {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ (run.wrapping_mul(0x2545F4914F6CDD1D) | 1);
            let mut next = move |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as usize
            };
            let (s1, s2) = (Schema::default(), Schema::default());
            let mut c1: Vec<Option<Claim<'_>>> = (0..3).map(|_| Some(s1.claim())).collect();
            let mut c2: Vec<Option<Claim<'_>>> = (0..3).map(|_| Some(s2.claim())).collect();
            for step in 0..300 {
                let c = next(3);
                if c1[c].is_none() {
                    c1[c] = Some(s1.claim());
                    c2[c] = Some(s2.claim());
                }
                let mut seen = Known::new();
                for _ in 0..next(3) {
                    let m = seen.entry(MS[next(2)].into()).or_default();
                    if next(3) == 0 {
                        m.tags.insert(NAMES[next(3)].into());
                    } else {
                        m.fields.insert(NAMES[next(3)].into(), types[next(3)]);
                    }
                }
                let replace = next(2) == 0;
                match next(100) {
                    25..=34 => {
                        // The write API's lines: one measurement's fields by their types,
                        // often those the claim holds (in this measurement or the other).
                        let m = MS[next(2)];
                        let fields: Vec<(&str, FieldType)> = (0..1 + next(3))
                            .map(|_| (NAMES[next(3)], types[next(3)]))
                            .collect();
                        let r1 = c1[c]
                            .as_mut()
                            .unwrap()
                            .field_types(m, fields.iter().copied())
                            .map_err(|e| e.to_string());
                        let r2 = c2[c]
                            .as_mut()
                            .unwrap()
                            .field_types_plain(m, fields.iter().copied())
                            .map_err(|e| e.to_string());
                        assert_eq!(r1, r2, "run {run} step {step}: field types {m} {fields:?}");
                    }
                    0..=24 => {
                        let alike = next(2) == 0;
                        let mut points: Vec<Point> = Vec::new();
                        for _ in 0..1 + next(5) {
                            if alike && !points.is_empty() && next(3) != 0 {
                                // The one before, with other tag and field values (`-0.0` for `0.0`).
                                let prev = points.last().unwrap();
                                let mut p = Point::new(prev.measurement(), 2);
                                for (k, v) in prev.fields() {
                                    let v = match v {
                                        FieldValue::Float(f) => FieldValue::Float(-f),
                                        o => o.clone(),
                                    };
                                    let _ = p.field(k, v);
                                }
                                for (k, _) in prev.tags() {
                                    let _ = p.tag(k, "other");
                                }
                                points.push(p);
                                continue;
                            }
                            let mut p = Point::new(MS[next(2)], 1);
                            for _ in 0..next(3) {
                                let _ = p.field(NAMES[next(3)], values[next(4)].clone());
                            }
                            for _ in 0..next(2) {
                                let _ = p.tag(NAMES[next(3)], "v");
                            }
                            points.push(p);
                        }
                        let r1 = c1[c]
                            .as_mut()
                            .unwrap()
                            .points(&points)
                            .map_err(|e| e.to_string());
                        let r2 = c2[c]
                            .as_mut()
                            .unwrap()
                            .points_plain(&points)
                            .map_err(|e| e.to_string());
                        assert_eq!(r1, r2, "run {run} step {step}: points {points:?}");
                    }
                    35..=69 => {
                        let mut rows: Vec<Vec<(String, FieldValue)>> = Vec::new();
                        for _ in 0..next(6) {
                            if !rows.is_empty() && next(3) != 0 {
                                let r = rows.last().unwrap().clone();
                                rows.push(r);
                                continue;
                            }
                            rows.push(
                                (0..next(3))
                                    .map(|_| (NAMES[next(3)].to_string(), values[next(4)].clone()))
                                    .collect(),
                            );
                        }
                        let m = MS[next(2)];
                        let change_at = if next(3) == 0 {
                            next(rows.len() + 1)
                        } else {
                            usize::MAX
                        };
                        let mut rows2 = rows.clone();
                        let orig = rows.clone();
                        let (s1r, s2r) = (&s1, &s2);
                        let (seen1, seen2) = (seen.clone(), seen.clone());
                        let j = (c + 1 + next(2)) % 3;
                        let other_op = next(3);
                        let mut o1 = c1[j].take();
                        let mut o2 = c2[j].take();
                        let it1 = rows.iter_mut().enumerate().map(|(i, r)| {
                            if i == change_at {
                                between_rows(other_op, s1r, &seen1, replace, &mut o1);
                            }
                            r
                        });
                        let claim1 = c1[c].as_mut().unwrap();
                        let n1: usize = it1.map(|r| claim1.retain_fields(m, r)).sum();
                        let claim2 = c2[c].as_mut().unwrap();
                        let mut n2 = 0;
                        for (i, r) in rows2.iter_mut().enumerate() {
                            if i == change_at {
                                between_rows(other_op, s2r, &seen2, replace, &mut o2);
                            }
                            n2 += claim2.retain_fields_plain(m, r);
                        }
                        assert_eq!(
                            (n1, &rows),
                            (n2, &rows2),
                            "run {run} step {step}: rows {orig:?}"
                        );
                        c1[j] = o1;
                        c2[j] = o2;
                    }
                    70..=79 => {
                        s1.update_from_influxdb(seen.clone(), replace);
                        s2.update_from_influxdb(seen, replace);
                    }
                    80..=89 => {
                        c1[c].take().unwrap().written();
                        c2[c].take().unwrap().written();
                    }
                    _ => {
                        c1[c] = None;
                        c2[c] = None;
                    }
                }
                for i in 0..3 {
                    assert_eq!(
                        c1[i].as_ref().map(held),
                        c2[i].as_ref().map(held),
                        "run {run} step {step}: held of {i}"
                    );
                }
                assert_eq!(claimed(&s1), claimed(&s2), "run {run} step {step}: claimed");
                assert_eq!(s1.known(), s2.known(), "run {run} step {step}: known");
            }
        }
    }

    /// What the schema's claims and every live claim hold, checked after each call of a long
    /// run of random calls (several claims; points with measurements coming back within one
    /// call; conflicts in any measurement of a call; retain_fields refusing some or all;
    /// InfluxDB's word changing; claims written or dropped): no measurement left empty in
    /// `claimed` or in any `held`; each name's count is the number of live claims holding it,
    /// as what they hold it as; a refused call changes nothing a claim holds; a call that
    /// passes holds every name it was given.
    #[test]
    fn claims_keep_their_counts_and_leave_nothing_empty_through_random_calls() {
        use std::collections::BTreeMap;
        type Snapshot = BTreeMap<String, BTreeMap<String, Claimed>>;
        fn snapshot(claim: &Claim<'_>) -> Snapshot {
            claim
                .held()
                .iter()
                .map(|(m, names)| {
                    let names = names.iter().map(|(n, w)| (n.to_string(), *w)).collect();
                    (m.to_string(), names)
                })
                .collect()
        }
        fn check_all(schema: &Schema, claims: &[Option<Claim<'_>>], step: usize) {
            let inner = schema.lock();
            // (What each holds a name as may differ once InfluxDB's word changed: a known
            // type wins over a claimed one in the check. Only the counts are compared.)
            let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
            for claim in claims.iter().flatten() {
                for (m, names) in claim.held() {
                    assert!(
                        !names.is_empty(),
                        "step {step}: {m} empty in a claim's held"
                    );
                    for n in names.keys() {
                        *counts.entry((m.to_string(), n.to_string())).or_default() += 1;
                    }
                }
            }
            let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
            for (m, names) in &inner.claimed {
                assert!(
                    !names.is_empty(),
                    "step {step}: {m} empty in the schema's claimed"
                );
                for (n, (_, count)) in names {
                    seen.insert((m.to_string(), n.to_string()), count.get());
                }
            }
            assert_eq!(seen, counts, "step {step}: the schema's counts");
        }
        const MEASUREMENTS: [&str; 3] = ["a", "b", "c"];
        const NAMES: [&str; 4] = ["w", "x", "y", "z"];
        let values = [
            FieldValue::Float(1.0),
            FieldValue::Bool(true),
            FieldValue::Str("s".into()),
        ];
        let types = [FieldType::Float, FieldType::Boolean, FieldType::String];
        let mut seed: u64 = std::env::var("CLAIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let schema = Schema::default();
        let mut claims: Vec<Option<Claim<'_>>> = (0..4).map(|_| Some(schema.claim())).collect();
        for step in 0..20_000 {
            let c = next(claims.len());
            if claims[c].is_none() {
                claims[c] = Some(schema.claim());
            }
            let op = next(100);
            let claim = claims[c].as_mut().unwrap();
            let before = snapshot(claim);
            match op {
                0..=39 => {
                    // Points of one to four measurements, a measurement coming back (A, B, A).
                    let points: Vec<Point> = (0..1 + next(4))
                        .map(|_| {
                            let fields: Vec<(&str, FieldValue)> = (0..next(3))
                                .map(|_| (NAMES[next(4)], values[next(3)].clone()))
                                .collect();
                            let tags: Vec<&str> = (0..next(2)).map(|_| NAMES[next(4)]).collect();
                            let mut p = Point::new(MEASUREMENTS[next(3)], 1);
                            for (k, v) in &fields {
                                let _ = p.field(k, v.clone());
                            }
                            for t in &tags {
                                let _ = p.tag(t, "v");
                            }
                            p
                        })
                        .collect();
                    match claim.points(&points) {
                        Err(_) => assert_eq!(snapshot(claim), before, "step {step}: refused"),
                        Ok(()) => {
                            let held = snapshot(claim);
                            for p in &points {
                                for (k, _) in p.fields() {
                                    assert!(held[p.measurement()].contains_key(k), "step {step}");
                                }
                                for (k, _) in p.tags() {
                                    assert!(held[p.measurement()].contains_key(k), "step {step}");
                                }
                            }
                        }
                    }
                }
                40..=59 => {
                    let m = MEASUREMENTS[next(3)];
                    let fields: Vec<(&str, FieldType)> = (0..next(4))
                        .map(|_| (NAMES[next(4)], types[next(3)]))
                        .collect();
                    if claim.field_types(m, fields.iter().copied()).is_err() {
                        assert_eq!(snapshot(claim), before, "step {step}: refused");
                    }
                }
                60..=79 => {
                    let m = MEASUREMENTS[next(3)];
                    let mut fields: Vec<(String, FieldValue)> = (0..next(4))
                        .map(|_| (NAMES[next(4)].to_string(), values[next(3)].clone()))
                        .collect();
                    claim.retain_fields(m, &mut fields);
                    let held = snapshot(claim);
                    for (k, _) in &fields {
                        assert!(held[m].contains_key(k.as_str()), "step {step}: kept, held");
                    }
                }
                80..=87 => claims[c].take().unwrap().written(),
                88..=95 => drop(claims[c].take()),
                _ => {
                    // InfluxDB's word: forgets, or holds a type against a name.
                    let mut seen = Known::new();
                    if next(2) == 0 {
                        seen.entry(MEASUREMENTS[next(3)].to_string())
                            .or_default()
                            .fields
                            .insert(NAMES[next(4)].to_string(), types[next(3)]);
                    }
                    schema.update_from_influxdb(seen, next(2) == 0);
                }
            }
            check_all(&schema, &claims, step);
        }
        claims.clear();
        assert!(schema.lock().claimed.is_empty());
    }
}
