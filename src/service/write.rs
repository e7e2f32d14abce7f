//! The use-case of InfluxDB's write API: a body of line protocol written by one client to one
//! database, with the gateway's guarantees. It checks the client's rights (the database and
//! each line's measurement), reads the lines as InfluxDB 1.x would (`ingest::lp_parse`), refuses
//! at the request the lines InfluxDB would refuse for its schema (per database, with claims as
//! for the run routes) and those past the client's series budget (`state::series`), and has the
//! others recorded as one log record carrying its target before it returns.
//!
//! It never decides an HTTP status or a body's shape: each API (v1, v2, v3) says the outcome in
//! its own words (`api::influx`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::{ArmEarly, Service};
use crate::auth::Client;
use crate::config::Acknowledge;
use crate::delivery::{Outcome, WriteLimits};
use crate::ingest::lp_parse::{self, FieldValue, Line, Precision};
use crate::ingest::points;
use crate::state::schema::{Claim, FieldType, Retention};
use crate::state::series::{SeriesError, series_hash};
use crate::stats::Stats;
use crate::storage::log::{LogError, Position, Share};
use crate::storage::record::{Target, Unit};
use crate::sync::Waiter;

/// Databases the write API may write, all clients together: each holds a schema in memory
/// and a book of series per client, so a glob like `*` cannot make them grow without bound.
pub const MAX_DATABASES: usize = 1_000;

/// Bytes of a database or retention policy name at most (InfluxDB 1.x takes longer ones, but
/// no tool names its database so, and the name goes into every record of the log).
pub const MAX_NAME_BYTES: usize = 255;

/// Refused lines kept with their text in an answer at most; the others are counted.
pub const MAX_LINES_NAMED: usize = 100;

/// One write through InfluxDB's write API, as the route read it.
#[derive(Clone, Copy)]
pub struct WriteRequest<'a> {
    /// Whose token the request carries.
    pub client: &'a Client,
    /// The database (v1 `db`, v2 the bucket's database, v3 `db`); never empty.
    pub database: &'a str,
    /// The retention policy (v1 `rp`, v2 a bucket `db/rp`); empty: the database's default.
    pub retention_policy: &'a str,
    /// The body: line protocol.
    pub body: &'a [u8],
    pub precision: Precision,
    /// Whether the valid lines are written when others are refused (v1 and v2 always; v3's
    /// `accept_partial`).
    pub accept_partial: bool,
    /// When the gateway accepted the write, in nanoseconds since the Unix epoch: the time of
    /// the lines without a timestamp.
    pub now_ns: i64,
    /// Arms the answer to a write whose every line is taken (given [`Written::whole`]), for
    /// the thread that settles its record to send: once it is on disk with
    /// `delivery.acknowledge = "disk"`, once InfluxDB stored it with `"influxdb"` (see
    /// `answered`).
    pub answer_early: Option<ArmEarly<'a, Written>>,
}

/// Why a line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRefusal {
    /// It is not line protocol InfluxDB 1.x reads.
    Parse,
    /// InfluxDB 1.x reads it but refuses the point when it stores it: a `time` tag or only
    /// field, a field given twice with two types.
    Stored,
    /// A field's type, or a name as tag or field, conflicts with what the database holds.
    Schema,
    /// It is older than the target's retention policy keeps: InfluxDB would drop it.
    Retention,
    /// It would make a series past the client's `max_series` in the database.
    SeriesBudget,
}

/// A refused line: its number (1-based, in the body), its text (cut to 200 bytes), and what
/// InfluxDB would say of it (or, for the series budget, what the gateway says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLine {
    pub number: usize,
    pub text: String,
    pub why: LineRefusal,
    pub message: String,
}

/// What became of a write that was not refused whole.
#[derive(Debug)]
pub struct Written {
    /// Points recorded (0: none; then there is no record).
    pub points: usize,
    /// The refused lines, the first [`MAX_LINES_NAMED`] of them.
    pub refused: Vec<RefusedLine>,
    /// How many lines were refused in all.
    pub refused_count: usize,
    /// How many of them InfluxDB 1.x's parser refuses ([`LineRefusal::Parse`]): its partial
    /// writes count the others only (`dropped=N`).
    pub unparsed: usize,
    /// What the series budget said, when it refused lines: the sentence for a person.
    pub budget: Option<String>,
    /// Where the points went (`None` when nothing was recorded).
    pub outcome: Option<Outcome>,
}

impl Written {
    /// A write whose every line was taken, with `outcome`, as far as its answer tells it (the
    /// number of points is not told): what an answer armed before the outcome is known is made
    /// from.
    pub fn whole(outcome: Outcome) -> Written {
        Written {
            points: 0,
            refused: Vec::new(),
            refused_count: 0,
            unparsed: 0,
            budget: None,
            outcome: Some(outcome),
        }
    }

    /// Whether every line was written.
    pub fn is_whole(&self) -> bool {
        self.refused_count == 0
    }
}

/// Why a write was refused whole.
#[derive(Debug)]
pub enum WriteRefused {
    /// The client may not write the database: what it may write.
    Database {
        database: String,
        allowed: Vec<String>,
    },
    /// The client may not write this measurement: what it may write.
    Measurement {
        measurement: String,
        line: usize,
        allowed: Vec<String>,
    },
    /// A line of one of the runs' measurements, in the database where the gateway writes its
    /// runs ([`OwnTarget`]).
    RunMeasurement {
        measurement: String,
        line: usize,
        database: String,
        /// How the write names the runs' target: by an ID, the bucket may be the runs' one.
        lands: Lands,
    },
    /// A database or retention policy name the gateway does not take.
    Name { what: &'static str, why: String },
    /// The body is not UTF-8: the line where it stops being so.
    NotUtf8 { line: usize },
    /// [`MAX_DATABASES`] databases are written already, or the token added its share of them.
    TooManyDatabases,
    /// InfluxDB lists the database's retention policies, and `policy` is not one of them.
    NoRetentionPolicy { database: String, policy: String },
    /// The series budget could not be written; nothing was recorded.
    Series(SeriesError),
    /// The log did not take the record; nothing was recorded.
    NotRecorded(LogError),
}

impl fmt::Display for WriteRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteRefused::Database { database, allowed } if allowed.is_empty() => write!(
                f,
                "this token may not write {database:?}: it may write no database through InfluxDB's write API; give its [[auth.token]] a databases list"
            ),
            WriteRefused::Database { database, allowed } => write!(
                f,
                "this token may not write {database:?}: it may write {}",
                quoted(allowed)
            ),
            WriteRefused::Measurement {
                measurement,
                line,
                allowed,
            } => write!(
                f,
                "line {line}: this token may not write the measurement {measurement:?}: it may write {}; nothing of this write was recorded",
                quoted(allowed)
            ),
            WriteRefused::RunMeasurement {
                measurement,
                line,
                database,
                lands: Lands::ByName,
            } => write!(
                f,
                "line {line}: the measurement {measurement:?} in {database:?} holds the runs the gateway records (its run API writes it there): InfluxDB's write API may not write it; write another measurement or another database; nothing of this write was recorded"
            ),
            WriteRefused::RunMeasurement {
                measurement,
                line,
                database,
                lands: Lands::ById,
            } => write!(
                f,
                "line {line}: InfluxDB 2 takes the bucket {database:?} for a bucket ID, which may be the bucket where the gateway records its runs: InfluxDB's write API may not write the runs' measurement {measurement:?} there; name the bucket, or write another measurement; nothing of this write was recorded"
            ),
            WriteRefused::Name { what, why } => write!(f, "{what} {why}"),
            WriteRefused::NotUtf8 { line } => write!(
                f,
                "line {line} is not UTF-8: send line protocol as UTF-8; nothing of this write was recorded"
            ),
            WriteRefused::TooManyDatabases => write!(
                f,
                "the gateway writes at most {MAX_DATABASES} databases through InfluxDB's write API, each token at most an equal share of them; this token's share, or all of them, are written already: write one of the databases written already, or narrow the tokens' databases"
            ),
            WriteRefused::NoRetentionPolicy { database, policy } => write!(
                f,
                "retention policy not found: {policy:?} is not one of the database {database:?}'s retention policies; leave rp out for the database's default policy, or name one SHOW RETENTION POLICIES lists; nothing of this write was recorded"
            ),
            WriteRefused::Series(e) => write!(
                f,
                "the series budget could not be kept on disk ({}); nothing was recorded",
                e.for_client()
            ),
            WriteRefused::NotRecorded(e) => write!(f, "{}", e.for_client()),
        }
    }
}

/// `"k6", "jmeter_*"`.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes per line that reading a body holds beyond its text: the line's `Line` (its
/// measurement, tags and fields as strings, borrowed from the body or copied where an escape
/// was undone, and vectors), its outcome and series hash.
pub const COST_PER_LINE: u64 = 192;

/// Bytes per `=` of a body beyond its text: each tag and field of a line is one `=`, read into
/// a pair of strings (or a string and a value, each copied at worst) in a vector that may
/// have doubled, and past 32 fields an index of them. A line of a thousand one-byte fields holds far more than
/// its bytes: charged so, it cannot take more memory than the budget let it in for.
pub const COST_PER_PAIR: u64 = 128;

/// Bytes that handling a write of `body` holds at once, at most (the body budget charges them
/// before the request is handled): the lines read ([`COST_PER_LINE`] each, [`COST_PER_PAIR`]
/// for each tag and field, and their text again, unescaped) and the line protocol recorded
/// (the text once more). A count of bytes, not a parse.
pub fn handling_cost(body: &[u8]) -> u64 {
    let (newlines, pairs) = count_newlines_and_equals(body);
    let lines = 1 + newlines;
    lines
        .saturating_mul(COST_PER_LINE)
        .saturating_add(pairs.saturating_mul(COST_PER_PAIR))
        .saturating_add((body.len() as u64).saturating_mul(2))
}

/// How many `\n` and how many `=` `body` holds: both counted in one pass, 64 bytes at a time
/// into byte-wide sums (at most 64 each, so they cannot overflow), which the compiler turns
/// into vector compares; a byte-by-byte count takes about ten times the instructions.
fn count_newlines_and_equals(body: &[u8]) -> (u64, u64) {
    let (mut newlines, mut equals) = (0u64, 0u64);
    let mut chunks = body.chunks_exact(64);
    for chunk in &mut chunks {
        let (mut n, mut e) = (0u8, 0u8);
        for &b in chunk {
            n += u8::from(b == b'\n');
            e += u8::from(b == b'=');
        }
        newlines += u64::from(n);
        equals += u64::from(e);
    }
    for &b in chunks.remainder() {
        newlines += u64::from(b == b'\n');
        equals += u64::from(b == b'=');
    }
    (newlines, equals)
}

mod refusals;
mod targets;
use refusals::{QUOTED_CHARS, Refusals, cut};
use targets::Beyond;
pub use targets::{FIRST_READ_WAIT, Lands, OwnTarget, Schemas, TargetRetention};

/// Checks a database or retention policy name: at most [`MAX_NAME_BYTES`] bytes, no control
/// characters, no whitespace but ' ', no `/` or `\`, not `.` or `..` (InfluxDB 1.x makes no
/// database or retention policy of such a name: a write there would be acknowledged and then
/// refused, and its refused `CREATE DATABASE` would hold back the making of every other
/// database). The error is the rest of a sentence after the name's role.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long: at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("holds a control character: name it with printable characters".into());
    }
    if name.chars().any(|c| c.is_whitespace() && c != ' ') {
        return Err("holds whitespace other than ' ', which InfluxDB refuses in a name".into());
    }
    if name.contains(['/', '\\']) {
        return Err(
            "holds '/' or '\\', which InfluxDB refuses in a name (a v2 bucket \"db/rp\" is split at its first '/')".into(),
        );
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a name"));
    }
    // InfluxDB takes only printable characters (Go's unicode.IsPrint); without the Unicode
    // categories at hand the gateway takes a narrower set it is sure of: letters and digits
    // of any script, ASCII punctuation and ' '. A zero-width space or a joiner would otherwise
    // be answered 204 and refused by InfluxDB at delivery.
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || c.is_ascii_punctuation() || c == ' '))
    {
        return Err(format!(
            "holds {:?} (U+{:04X}): a name is letters, digits, ASCII punctuation and spaces",
            c, c as u32
        ));
    }
    Ok(())
}

impl Service {
    /// Writes the lines of `w.body` to its database: see the module documentation. Lines that
    /// InfluxDB would refuse are refused one by one (all of them when `!w.accept_partial`);
    /// the others are recorded as one log record before this returns.
    ///
    /// Errors (nothing recorded): the client may not write the database or a line's
    /// measurement, a name the gateway does not take, a body that is not UTF-8, too many
    /// databases, the series budget or the log failing.
    pub fn write(&self, w: WriteRequest<'_>) -> Result<Written, WriteRefused> {
        let client = w.client;
        if !client.may_write_database(w.database) {
            return Err(WriteRefused::Database {
                database: w.database.to_string(),
                allowed: client.databases.clone(),
            });
        }
        for (what, name) in [
            ("the database", w.database),
            ("the retention policy", w.retention_policy),
        ] {
            check_name(name).map_err(|why| WriteRefused::Name { what, why })?;
        }
        let body = std::str::from_utf8(w.body).map_err(|e| WriteRefused::NotUtf8 {
            line: 1 + w.body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
        })?;
        let parsed = lp_parse::parse(body, w.precision, w.now_ns);
        let own = self.own_target.lands(w.database, w.retention_policy);
        for entry in &parsed.entries {
            let Ok(line) = &entry.result else { continue };
            if !client.may_write_measurement(&line.measurement) {
                return Err(WriteRefused::Measurement {
                    measurement: cut(&line.measurement, QUOTED_CHARS),
                    line: entry.number,
                    allowed: client.measurements.clone(),
                });
            }
            if let Some(lands) = own
                && points::MEASUREMENTS.contains(&&*line.measurement)
            {
                return Err(WriteRefused::RunMeasurement {
                    measurement: cut(&line.measurement, QUOTED_CHARS),
                    line: entry.number,
                    database: w.database.to_string(),
                    lands,
                });
            }
        }
        let (schema, new) = self
            .write_schemas
            .of(w.database, Some(&w.client.name))
            .ok_or(WriteRefused::TooManyDatabases)?;
        if new {
            // The schema thread reads what InfluxDB holds there (with the write's target,
            // below); until then the gateway knows only what it writes itself.
            self.schema_stale.want_first_read();
        }
        let retention = self.retention_for(&w)?;
        let beyond = retention
            .as_ref()
            .map(|r| Beyond::of(r, w.now_ns, &parsed))
            .unwrap_or_default();
        let mut claim = schema.claim();
        let mut refusals = Refusals::default();
        // Each line's outcome: `Some` while it may still be written.
        let mut kept: Vec<Option<&Line>> = Vec::with_capacity(parsed.entries.len());
        for entry in &parsed.entries {
            let text = &body[entry.range.clone()];
            match &entry.result {
                Err(e) => {
                    let why = if e.when_stored() {
                        LineRefusal::Stored
                    } else {
                        LineRefusal::Parse
                    };
                    refusals.add(entry.number, text, why, |quoted| e.influx(quoted));
                    kept.push(None);
                }
                // InfluxDB drops a point older than its retention policy keeps before it
                // looks at its fields.
                Ok(line) if beyond.drops(line.time_ns) => {
                    refusals.add(entry.number, text, LineRefusal::Retention, |_| {
                        "points beyond retention policy".into()
                    });
                    kept.push(None);
                }
                Ok(line) => match self.claim_line(&mut claim, line) {
                    Ok(()) => kept.push(Some(line)),
                    Err(message) => {
                        refusals.add(entry.number, text, LineRefusal::Schema, |_| message);
                        kept.push(None);
                    }
                },
            }
        }
        if !w.accept_partial && refusals.count > 0 {
            return Ok(refusals.into_written(0, None, None));
        }
        // A record the log would refuse (the token's share or the log full) must take nothing
        // from the series budget: asked first, with the lines' text for the record's size.
        let bytes: usize = parsed
            .entries
            .iter()
            .zip(&kept)
            .filter(|(_, line)| line.is_some())
            .map(|(entry, _)| entry.range.len() + 1)
            .sum();
        if bytes > 0 {
            self.delivery
                .log()
                .has_room(bytes as u64, Some(share_of(w.client)))
                .map_err(WriteRefused::NotRecorded)?;
        }
        let budget = self.admit_series(&w, &parsed, &mut kept, body, &mut refusals)?;
        if !w.accept_partial && refusals.count > 0 {
            return Ok(refusals.into_written(0, budget, None));
        }
        let lines: Vec<&Line> = kept.iter().flatten().copied().collect();
        if lines.is_empty() {
            return Ok(refusals.into_written(0, budget, None));
        }
        // Only a write with nothing refused has an answer that cannot change once on disk.
        let whole = refusals.count == 0 && budget.is_none();
        let answer = match whole {
            true => self.arm(
                Acknowledge::Disk,
                w.answer_early,
                &Written::whole(Outcome::Recorded),
            ),
            false => None,
        };
        let seq = self.record_lines(&w, &lines, answer)?;
        if self.check_schema {
            claim.written();
        } else {
            drop(claim);
            for line in &lines {
                schema.learn_types(&line.measurement, field_types(line));
            }
        }
        let stored = match whole {
            true => self.arm(
                Acknowledge::Influxdb,
                w.answer_early,
                &Written::whole(Outcome::Delivered),
            ),
            false => None,
        };
        let outcome = self.delivery.outcome_with(seq, stored);
        Ok(refusals.into_written(lines.len(), budget, Some(outcome)))
    }

    /// How long InfluxDB keeps the points of the write's target. A first write to a target
    /// asks for InfluxDB's word on it (its database's field types, its retention) and waits
    /// for it, [`FIRST_READ_WAIT`] at most: InfluxDB slow or away, the write is checked
    /// against what the gateway knows without it.
    ///
    /// Errors: InfluxDB has no such retention policy in the database.
    fn retention_for(&self, w: &WriteRequest<'_>) -> Result<Option<Retention>, WriteRefused> {
        let schemas = &self.write_schemas;
        let (database, policy, client) = (w.database, w.retention_policy, &w.client.name);
        let mut known = schemas.retention_of(database, policy, client);
        if let TargetRetention::Unread { added } = known {
            if added {
                self.schema_stale.want_first_read();
            }
            schemas.wait_read(database, policy, FIRST_READ_WAIT);
            known = schemas.retention_of(database, policy, client);
        }
        match known {
            TargetRetention::Known(retention) => Ok(retention),
            TargetRetention::Missing => Err(WriteRefused::NoRetentionPolicy {
                database: database.to_string(),
                policy: policy.to_string(),
            }),
            TargetRetention::Unread { .. } | TargetRetention::Untracked => Ok(None),
        }
    }

    /// Checks one line's fields and tags against what the database's schema knows and other
    /// writes claimed, and claims them; InfluxDB's words for a conflict.
    fn claim_line(&self, claim: &mut Claim<'_>, line: &Line) -> Result<(), String> {
        if !self.check_schema {
            return Ok(());
        }
        // Only field types: InfluxDB 1.x takes a tag and a field of one name in a measurement.
        claim
            .field_types(&line.measurement, field_types(line))
            .map_err(|conflict| conflict.influx())
    }

    /// Takes the series of the lines still kept from the client's budget in the database;
    /// lines past it are refused. The sentence saying so, naming the tag with the most
    /// distinct values among them.
    fn admit_series<'l>(
        &self,
        w: &WriteRequest<'_>,
        parsed: &'l lp_parse::Parsed,
        kept: &mut [Option<&'l Line>],
        body: &str,
        refusals: &mut Refusals,
    ) -> Result<Option<String>, WriteRefused> {
        let at: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].is_some()).collect();
        let hashes: Vec<u64> = at
            .iter()
            .filter_map(|&i| kept[i].map(|l| series_hash(&l.measurement, &l.tags)))
            .collect();
        if hashes.is_empty() {
            return Ok(None);
        }
        let (client, max) = (&w.client.name, w.client.max_series);
        let admitted = if w.accept_partial {
            self.series.admit(client, w.database, max, &hashes)
        } else {
            self.series.admit_whole(client, w.database, max, &hashes)
        }
        .map_err(|e| {
            // The operator's to fix (a full disk), as a failed write to the log.
            self.series.errors.error(&format_args!(
                "the series budget could not be kept on disk: {e}; writes with new series are answered 503 until it can"
            ));
            WriteRefused::Series(e)
        })?;
        if admitted.refused() == 0 {
            return Ok(None);
        }
        let mut over: Vec<&Line> = Vec::new();
        for (&i, &passed) in at.iter().zip(&admitted.passed) {
            if passed {
                continue;
            }
            if let Some(line) = kept[i].take() {
                over.push(line);
            }
            let entry = &parsed.entries[i];
            refusals.add(
                entry.number,
                &body[entry.range.clone()],
                LineRefusal::SeriesBudget,
                |_| {
                    "max-series exceeded: the token's series budget in this database is spent"
                        .into()
                },
            );
        }
        Ok(Some(budget_sentence(w, &over)))
    }

    /// Records `lines` as one log record for the request's target, cut into units of the
    /// deliverer's write limits, and waits until it is on disk (through `answer`, an answer armed
    /// for the thread that writes the record to send, when there is one); its number.
    fn record_lines(
        &self,
        w: &WriteRequest<'_>,
        lines: &[&Line],
        answer: Option<Arc<dyn Waiter>>,
    ) -> Result<u64, WriteRefused> {
        // Every line encoded once into one text (a line comes out about as long as it came in,
        // its time perhaps longer), then cut into units.
        let mut text = String::with_capacity(w.body.len() + 24 * lines.len());
        let mut ends = Vec::with_capacity(lines.len());
        for line in lines {
            line.encode_ns(&mut text);
            text.push('\n');
            ends.push(text.len());
        }
        let units = cut_units(&text, &ends, &self.write_limits);
        let target = Target {
            database: w.database,
            retention_policy: w.retention_policy,
        };
        let log = self.delivery.log();
        let ticket = log
            .append_write(target, &units, Some(share_of(w.client)))
            .map_err(WriteRefused::NotRecorded)?;
        let seq = match answer {
            Some(waiter) => log.wait_with(ticket, waiter),
            None => log.wait(ticket),
        }
        .map_err(WriteRefused::NotRecorded)?;
        Stats::add(&self.stats.points_spooled, lines.len());
        Ok(seq)
    }
}

/// `text`, lines of line protocol ending at the byte offsets `ends`, cut into units by the rule
/// the deliverer's writes follow ([`WriteLimits::first_write`]): a unit goes over a write's
/// limits (bytes, lines) only when it is a single line, so a unit never asks InfluxDB for more
/// than one write may hold.
pub(super) fn cut_units<'a>(text: &'a str, ends: &[usize], limits: &WriteLimits) -> Vec<Unit<'a>> {
    let mut units = Vec::new();
    let (mut start, mut first_line) = (0, 0);
    while let Some(rest) = ends.get(first_line..).filter(|rest| !rest.is_empty()) {
        let sizes = rest.iter().scan(start, |at, &end| {
            Some((end - std::mem::replace(at, end), 1))
        });
        let n = limits.first_write(sizes);
        // `first_write` counts at most the sizes it was given, and at least one.
        let end = rest[n - 1];
        units.push(Unit {
            run: uuid::Uuid::nil(),
            points: n as u32,
            lines: &text[start..end],
        });
        (start, first_line) = (end, first_line + n);
    }
    units
}

/// The client's share of the log.
fn share_of(client: &Client) -> Share<'_> {
    Share {
        client: &client.name,
        limit: client.max_spool_bytes,
    }
}

/// The sentence of a write some of whose lines the series budget refused: the budget, and
/// the tag with the most distinct values among the refused lines (the one to drop).
fn budget_sentence(w: &WriteRequest<'_>, over: &[&Line]) -> String {
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in over {
        for (k, v) in &line.tags {
            values.entry(k).or_default().insert(v);
        }
    }
    let top = values
        .iter()
        .max_by_key(|(k, v)| (v.len(), std::cmp::Reverse(*k)))
        .map(|(k, v)| (*k, v.len()));
    let mut sentence = format!(
        "{} lines would make series past the token {:?}'s max_series ({}) in the database {:?}, and were refused; series already made are still taken",
        over.len(),
        w.client.name,
        w.client.max_series,
        w.database
    );
    if let Some((tag, n)) = top {
        // A client's tag key, as long as its line: quoted by its first characters.
        let tag = cut(tag, QUOTED_CHARS);
        sentence.push_str(&format!(
            ": the tag {tag:?} has the most distinct values among them ({n}); leave it out of the points (k6: K6_INFLUXDB_TAG_EXCLUDE; JMeter and Telegraf: drop the tag), or raise max_series"
        ));
    } else {
        sentence.push_str(": raise max_series, or write fewer measurements");
    }
    sentence
}

impl Service {
    /// Learns the field types (and the run measurements' tags) of the points still waiting
    /// in the log from `from` on (where the deliverer starts), before any request is taken:
    /// the gateway answered them knowing those types, and without them, after a restart, a
    /// request bringing another type of one of their fields would be taken, and InfluxDB
    /// would refuse one of the two (a dead letter). The write API's schemas are not in the
    /// snapshot, and the run API's holds only what it learned before the snapshot was taken.
    /// A field already known keeps its type. Returns how many records were read; a record
    /// the log cannot read stops it (the deliverer meets it too, and says so).
    pub fn learn_undelivered(&self, from: Position) -> u64 {
        let (mut at, mut records) = (from, 0);
        loop {
            let read = match self.delivery.log().read(&mut at, LEARN_CHUNK_BYTES) {
                Ok(read) if !read.is_empty() => read,
                _ => return records,
            };
            for record in &read {
                records += 1;
                // The write API's lines learn into their database's schema, the others into
                // the runs'.
                let database = match &record.target {
                    None => None,
                    Some(target) => match self
                        .write_schemas
                        .of(&target.database, record.client.as_deref())
                    {
                        Some((schema, new)) => {
                            if new {
                                // Read from InfluxDB as soon as the schema thread runs.
                                self.schema_stale.want_first_read();
                            }
                            Some(schema)
                        }
                        // Past the databases the gateway keeps a schema of.
                        None => continue,
                    },
                };
                for (_, lines) in record.units_with_lines() {
                    let parsed = lp_parse::parse(lines, Precision::Nanosecond, 0);
                    for line in parsed.entries.iter().filter_map(|e| e.result.as_ref().ok()) {
                        match &database {
                            None => self.schema.learn_types_and_tags(
                                &line.measurement,
                                field_types(line),
                                line.tags.iter().map(|(k, _)| k.as_ref()),
                            ),
                            Some(schema) => {
                                schema.learn_types(&line.measurement, field_types(line))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How much of the log [`Service::learn_undelivered`] reads at a time, in bytes.
const LEARN_CHUNK_BYTES: u64 = 4 << 20;

/// The fields of `line` with their types, as InfluxDB names them.
fn field_types<'l>(line: &'l Line<'_>) -> impl Iterator<Item = (&'l str, FieldType)> + Clone {
    line.fields.iter().map(|(k, v)| {
        let t = match v {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Integer(_) => FieldType::Integer,
            FieldValue::String(_) => FieldType::String,
            FieldValue::Boolean(_) => FieldType::Boolean,
        };
        (k.as_ref(), t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_equals_are_counted_in_any_length_of_body() {
        for len in [0usize, 1, 63, 64, 65, 200, 1000] {
            let body: Vec<u8> = (0..len).map(|i| b"a=\n,bc=="[i % 8]).collect();
            let newlines = body.iter().filter(|&&b| b == b'\n').count() as u64;
            let equals = body.iter().filter(|&&b| b == b'=').count() as u64;
            assert_eq!(
                count_newlines_and_equals(&body),
                (newlines, equals),
                "{len}"
            );
        }
        let all = vec![b'='; 64 * 5 + 3];
        assert_eq!(count_newlines_and_equals(&all), (0, 64 * 5 + 3));
    }

    #[test]
    fn a_body_of_many_fields_costs_more_than_its_bytes() {
        let plain = handling_cost(b"m v=1 1\n");
        assert_eq!(plain, 2 * COST_PER_LINE + COST_PER_PAIR + 2 * 8);
        let wide: Vec<u8> = std::iter::once(b"m ".to_vec())
            .chain((0..1000).map(|i| format!("f{i}=1,").into_bytes()))
            .flatten()
            .collect();
        assert!(
            handling_cost(&wide) >= 1000 * COST_PER_PAIR,
            "{}",
            handling_cost(&wide)
        );
    }
}
