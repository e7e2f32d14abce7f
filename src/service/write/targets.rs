//! The write API's knowledge of its databases and targets: each database's schema (field
//! types, learned from the gateway's writes and read from InfluxDB), and each target's
//! retention policy (how long InfluxDB keeps its points, whether it exists), with the wait of a
//! first write for InfluxDB's word on its target; and which points of a write InfluxDB drops for
//! its retention. It asks InfluxDB nothing itself: the schema thread reads and tells
//! (`service::upkeep`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::MAX_DATABASES;
use crate::config::Api;
use crate::delivery::influx::v2_bucket;
use crate::ingest::lp_parse;
use crate::state::schema::{Known, Retention, Schema, TargetPolicy};
use crate::storage::log::OwnedTarget;
use crate::sync::Signal;

/// The schemas of the databases written through the write API (InfluxDB keeps one type per
/// field and measurement in a database), each learned from the gateway's own writes there,
/// and at most [`MAX_DATABASES`] of them, each client adding at most its share; and how long
/// InfluxDB keeps the points of each target written (a database and a retention policy), at
/// most [`MAX_TARGETS`] of them.
#[derive(Default)]
pub struct Schemas {
    by_database: Mutex<Databases>,
    targets: Mutex<Targets>,
    /// Told each time a reading of InfluxDB's word on the targets ends.
    read: Signal,
    /// Whether a thread reads InfluxDB's word (said by `Service::schema_reader` before the
    /// thread runs): without one, a first write has nothing to wait for.
    reader: std::sync::atomic::AtomicBool,
}

/// Targets (database, retention policy) written at most, all clients together, whose
/// retention the gateway reads and checks at the door; past them, lines are not checked for
/// their age, and InfluxDB's own refusal of a point past its retention is a dead letter.
pub const MAX_TARGETS: usize = 2 * MAX_DATABASES;

/// Targets one client adds at most (of [`MAX_TARGETS`]): one token naming policies without
/// end stops being checked itself, long before the others would.
pub const MAX_TARGETS_PER_CLIENT: usize = 100;

/// How long a retention policy InfluxDB said is missing is taken as missing, before a write
/// naming it has it read again.
pub const MISSING_READ_AGAIN: Duration = Duration::from_secs(10);

/// How long a first write to a target waits for InfluxDB's word on it (its field types and
/// its retention) before its lines are checked against what the gateway knows without it.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(2);

/// Where the gateway writes its runs' points (`[influxdb]`'s database, or bucket with v2): the
/// write API may not write the runs' measurements ([`crate::ingest::points::MEASUREMENTS`])
/// there. Their field types are the run API's to claim, which a write through the write API
/// (checked against its own database's schema) would not see: a token writing
/// `load_testing users="many"` there had a run's `users=5` acknowledged and then refused by
/// InfluxDB, a dead letter of another client's points; and it could write points in runs it
/// does not own.
#[derive(Debug, Clone)]
pub struct OwnTarget {
    api: Api,
    /// v1 and v3: the database; v2: the bucket.
    name: String,
    /// v1: the runs' retention policy (`influxdb.retention_policy`; empty: the default).
    retention_policy: String,
}

impl OwnTarget {
    pub fn of(c: &crate::config::Influxdb) -> OwnTarget {
        let name = match c.api {
            Api::V2 => c.bucket.clone(),
            Api::V1 | Api::V3 => c.database.clone(),
        };
        OwnTarget {
            api: c.api,
            name,
            retention_policy: c.retention_policy.clone(),
        }
    }

    /// Whether a write API write to `database` and `retention_policy` goes exactly where the
    /// runs' points go: as [`OwnTarget::lands`] by name, and for v1 under the runs' retention
    /// policy (or none named). InfluxDB's answer that such a target is missing or closed is
    /// about `[influxdb]`; one about another policy of that database (a client's typo) is the
    /// client's.
    pub fn holds_the_runs(&self, database: &str, retention_policy: &str) -> bool {
        self.lands(database, retention_policy) == Some(Lands::ByName)
            && (self.api != Api::V1
                || retention_policy.is_empty()
                || retention_policy == self.retention_policy)
    }

    /// Whether a write API write to `database` and `retention_policy` lands where the runs'
    /// points are: v1 the same database (whatever the policy: a database has one type a
    /// field), v2 the same bucket (`database`, or `database/retention_policy`, as the
    /// deliverer names it), v3 the same database.
    #[cfg(test)]
    pub fn is(&self, database: &str, retention_policy: &str) -> bool {
        self.lands(database, retention_policy).is_some()
    }

    /// [`OwnTarget::is`], and how: [`Lands::ById`] for a v2 bucket named by 16 hexadecimal
    /// digits, which InfluxDB 2's `/api/v2/write` looks up as a bucket ID before it looks for a
    /// name, and which may be the runs' bucket (the gateway does not know its ID).
    pub fn lands(&self, database: &str, retention_policy: &str) -> Option<Lands> {
        let by_name = match self.api {
            Api::V2 if retention_policy.is_empty() && is_bucket_id(database) => {
                return Some(Lands::ById);
            }
            Api::V2 => self.name == v2_bucket(database, retention_policy),
            Api::V1 | Api::V3 => self.name == database,
        };
        by_name.then_some(Lands::ByName)
    }
}

/// How a write reaches the runs' target ([`OwnTarget::lands`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lands {
    /// It names it.
    ByName,
    /// It names a bucket ID, which may be the runs' bucket.
    ById,
}

/// Whether InfluxDB 2 reads `bucket` as a bucket ID (`platform.IDFromString`): 16 hexadecimal
/// digits, not all zeros.
fn is_bucket_id(bucket: &str) -> bool {
    bucket.len() == 16
        && bucket.bytes().all(|b| b.is_ascii_hexdigit())
        && bucket.bytes().any(|b| b != b'0')
}

/// What the gateway knows of a target's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRetention {
    /// InfluxDB was asked: how long it keeps the target's points (`None`: for ever, or it
    /// did not say).
    Known(Option<Retention>),
    /// InfluxDB lists the database's retention policies, and the target's is not one of them.
    Missing,
    /// InfluxDB was not asked yet; `added`: the target was added now.
    Unread { added: bool },
    /// [`MAX_TARGETS`] are known, or the client added [`MAX_TARGETS_PER_CLIENT`], and this is
    /// not one of them: its lines are not checked for their age.
    Untracked,
}

/// The databases with a schema, and how many each client added.
struct Databases {
    schemas: HashMap<String, Arc<Schema>>,
    added_by: HashMap<String, usize>,
    /// Databases one client adds at most ([`Schemas::shared_by`]; all of them by default).
    per_client: usize,
}

impl Default for Databases {
    fn default() -> Databases {
        Databases {
            schemas: HashMap::new(),
            added_by: HashMap::new(),
            per_client: MAX_DATABASES,
        }
    }
}

/// What the gateway knows of each target's retention: `None` until InfluxDB was asked once
/// (whatever it answered), then what it said (kept for ever as far as known, when it could
/// not tell).
#[derive(Default)]
struct Targets {
    retention: HashMap<(String, String), Option<TargetPolicy>>,
    /// How many targets each client added.
    added_by: HashMap<String, usize>,
    /// When InfluxDB last said a target's policy is missing: a write there then reads it
    /// again, [`MISSING_READ_AGAIN`] later at the soonest (the operator may have made it).
    missing_at: HashMap<(String, String), std::time::Instant>,
    /// Targets found missing that are being read again.
    rereading: std::collections::HashSet<(String, String)>,
    /// Unread targets a write waited [`FIRST_READ_WAIT`] for in vain (InfluxDB slow or away,
    /// or the reader busy with many targets): later writes there do not wait again until
    /// they are read.
    waited_out: std::collections::HashSet<(String, String)>,
}

impl Schemas {
    /// Schemas for `clients` clients that may write databases: each adds at most an equal
    /// share of [`MAX_DATABASES`] (all of them to a client alone), so that one token whose
    /// globs allow many names cannot take every place and lock the others out of their own
    /// databases (403 `too_many_databases`).
    pub fn shared_by(clients: usize) -> Schemas {
        let schemas = Schemas::default();
        crate::sync::lock(&schemas.by_database).per_client = MAX_DATABASES / clients.max(1);
        schemas
    }

    /// The schema of `database`, and whether it was made now (empty: InfluxDB's word on it is
    /// to be read); a database not known yet is added for `client` (`None`: no client, held to
    /// the bound alone). `None` when [`MAX_DATABASES`] are known, or `client` added its share
    /// ([`Schemas::shared_by`]), and it is not one of them.
    pub fn of(&self, database: &str, client: Option<&str>) -> Option<(Arc<Schema>, bool)> {
        let mut databases = crate::sync::lock(&self.by_database);
        if let Some(schema) = databases.schemas.get(database) {
            return Some((Arc::clone(schema), false));
        }
        let added = |c: &str| databases.added_by.get(c).copied().unwrap_or(0);
        if databases.schemas.len() >= MAX_DATABASES
            || client.is_some_and(|c| added(c) >= databases.per_client)
        {
            return None;
        }
        if let Some(client) = client {
            *databases.added_by.entry(client.to_string()).or_default() += 1;
        }
        let schema = Arc::new(Schema::new(Known::default()));
        databases
            .schemas
            .insert(database.to_string(), Arc::clone(&schema));
        Some((schema, true))
    }

    /// Every database known, with its schema.
    pub fn all(&self) -> Vec<(String, Arc<Schema>)> {
        crate::sync::lock(&self.by_database)
            .schemas
            .iter()
            .map(|(name, schema)| (name.clone(), Arc::clone(schema)))
            .collect()
    }

    /// What InfluxDB said of the target of `database` and `policy`; a target not known yet
    /// is added for `client`, to be read ([`TargetRetention::Unread`]), within the bounds.
    pub fn retention_of(&self, database: &str, policy: &str, client: &str) -> TargetRetention {
        let mut targets = crate::sync::lock(&self.targets);
        let key = (database.to_string(), policy.to_string());
        match targets.retention.get(&key) {
            Some(Some(TargetPolicy::Keeps(retention))) => TargetRetention::Known(retention.clone()),
            Some(Some(TargetPolicy::Missing))
                if targets
                    .missing_at
                    .get(&key)
                    .is_some_and(|at| at.elapsed() >= MISSING_READ_AGAIN) =>
            {
                // Read again; missing it stays when InfluxDB cannot be asked.
                targets.missing_at.remove(&key);
                targets.rereading.insert(key.clone());
                targets.retention.insert(key, None);
                TargetRetention::Unread { added: true }
            }
            Some(Some(TargetPolicy::Missing)) => TargetRetention::Missing,
            Some(None) => TargetRetention::Unread { added: false },
            None if targets.retention.len() >= MAX_TARGETS
                || targets.added_by.get(client).copied().unwrap_or(0) >= MAX_TARGETS_PER_CLIENT =>
            {
                TargetRetention::Untracked
            }
            None => {
                targets.retention.insert(key, None);
                *targets.added_by.entry(client.to_string()).or_insert(0) += 1;
                TargetRetention::Unread { added: true }
            }
        }
    }

    /// The targets known, to read their retention: every one, or (`unread_only`) those
    /// InfluxDB was not asked of yet.
    pub fn targets(&self, unread_only: bool) -> Vec<OwnedTarget> {
        crate::sync::lock(&self.targets)
            .retention
            .iter()
            .filter(|(_, known)| !unread_only || known.is_none())
            .map(|((database, retention_policy), _)| OwnedTarget {
                database: database.clone(),
                retention_policy: retention_policy.clone(),
            })
            .collect()
    }

    /// Sets what InfluxDB said of `target`'s retention policy; `None` keeps what was known
    /// (it could not be asked), but counts as asked.
    pub fn set_retention(&self, target: &OwnedTarget, said: Option<TargetPolicy>) {
        let mut targets = crate::sync::lock(&self.targets);
        let key = (target.database.clone(), target.retention_policy.clone());
        targets.waited_out.remove(&key);
        let was_missing = targets.rereading.remove(&key);
        let said = match said {
            None if was_missing => Some(TargetPolicy::Missing),
            said => said,
        };
        if said == Some(TargetPolicy::Missing) {
            targets
                .missing_at
                .insert(key.clone(), std::time::Instant::now());
        }
        if let Some(known) = targets.retention.get_mut(&key) {
            *known = match (said, known.take()) {
                (Some(retention), _) => Some(retention),
                (None, Some(was)) => Some(was),
                (None, None) => Some(TargetPolicy::Keeps(None)),
            };
        }
        // The writer waiting for this target goes on now, not when every target is read.
        self.read.notify_all();
    }

    /// A thread reads InfluxDB's word on the targets from now on.
    pub fn reader_runs(&self) {
        self.reader
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A reading of every target ended: wakes the writers waiting for it.
    pub fn reading_ended(&self) {
        let _held = crate::sync::lock(&self.targets);
        self.read.notify_all();
    }

    /// Waits until the target of `database` and `policy` was asked once, or `timeout` passed
    /// (InfluxDB slow or away: the write goes on without its word). Once a wait for a target
    /// timed out, the writes after it go on at once until the target is read: only a first
    /// write waits.
    pub fn wait_read(&self, database: &str, policy: &str, timeout: Duration) {
        if !self.reader.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let key = (database.to_string(), policy.to_string());
        let targets = crate::sync::lock(&self.targets);
        if targets.waited_out.contains(&key) {
            return;
        }
        let waiting = |t: &mut Targets| {
            matches!(t.retention.get(&key), Some(None)) && !t.waited_out.contains(&key)
        };
        let (mut targets, waited) =
            crate::sync::unpoisoned(self.read.wait_timeout_while(targets, timeout, waiting));
        if waited.timed_out() && matches!(targets.retention.get(&key), Some(None)) {
            targets.waited_out.insert(key);
        }
    }
}

/// Nanoseconds from Go's zero time (year 1, January 1, UTC), from which InfluxDB 1.x's shard
/// groups are cut (`time.Truncate`), to the Unix epoch.
const GO_ZERO_TO_UNIX_NS: i128 = 62_135_596_800 * 1_000_000_000;

/// Which points of a write InfluxDB 1.x drops for its retention policy: those older than the
/// policy keeps (`now` less its duration), unless a newer point of the same write falls in
/// their shard group, which InfluxDB then makes or finds, and stores them in
/// (`PointsWriter.MapShards`).
#[derive(Default)]
pub(super) struct Beyond {
    /// Nanoseconds since the Unix epoch: points before are older than the policy keeps.
    oldest_ns: Option<i64>,
    /// The shard group duration in nanoseconds (0: not told, every older point is dropped).
    group_ns: i128,
    /// The start of the shard group of each point of the write that is not older.
    groups: std::collections::HashSet<i128>,
}

impl Beyond {
    pub(super) fn of(retention: &Retention, now_ns: i64, parsed: &lp_parse::Parsed) -> Beyond {
        let oldest_ns = now_ns.saturating_sub(retention.keeps_ms.saturating_mul(1_000_000));
        let group_ns = i128::from(retention.shard_group_ms) * 1_000_000;
        let mut beyond = Beyond {
            oldest_ns: Some(oldest_ns),
            group_ns,
            groups: Default::default(),
        };
        if group_ns > 0 {
            for entry in &parsed.entries {
                if let Ok(line) = &entry.result
                    && line.time_ns >= oldest_ns
                {
                    let group = beyond.group_of(line.time_ns);
                    beyond.groups.insert(group);
                }
            }
        }
        beyond
    }

    /// The start of the shard group of a point at `time_ns`, as Go's `time.Truncate` cuts it.
    fn group_of(&self, time_ns: i64) -> i128 {
        let since_zero = i128::from(time_ns) + GO_ZERO_TO_UNIX_NS;
        i128::from(time_ns) - since_zero.rem_euclid(self.group_ns)
    }

    /// Whether InfluxDB drops a point at `time_ns` of this write.
    pub(super) fn drops(&self, time_ns: i64) -> bool {
        match self.oldest_ns {
            Some(oldest) if time_ns < oldest => {
                self.group_ns <= 0 || !self.groups.contains(&self.group_of(time_ns))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::lp_parse::Precision;

    #[test]
    fn a_target_s_retention_is_unread_until_influxdb_was_asked_once() {
        let schemas = Schemas::default();
        let target = OwnedTarget {
            database: "k6".into(),
            retention_policy: String::new(),
        };
        assert_eq!(
            schemas.retention_of("k6", "", "k6"),
            TargetRetention::Unread { added: true }
        );
        assert_eq!(
            schemas.retention_of("k6", "", "k6"),
            TargetRetention::Unread { added: false }
        );
        assert_eq!(schemas.targets(true), vec![target.clone()]);
        // Without a reader there is nothing to wait for.
        let started = std::time::Instant::now();
        schemas.wait_read("k6", "", Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(5));
        // InfluxDB could not be asked: asked all the same, kept for ever as far as known.
        schemas.set_retention(&target, None);
        assert_eq!(
            schemas.retention_of("k6", "", "k6"),
            TargetRetention::Known(None)
        );
        assert!(schemas.targets(true).is_empty());
        let hour = Retention {
            policy: "short".into(),
            keeps_ms: 3_600_000,
            shard_group_ms: 3_600_000,
        };
        schemas.set_retention(&target, Some(TargetPolicy::Keeps(Some(hour.clone()))));
        assert_eq!(
            schemas.retention_of("k6", "", "k6"),
            TargetRetention::Known(Some(hour.clone()))
        );
        // A later reading that fails keeps what was known.
        schemas.set_retention(&target, None);
        assert_eq!(
            schemas.retention_of("k6", "", "k6"),
            TargetRetention::Known(Some(hour))
        );
        // InfluxDB does not list the policy.
        let typo = OwnedTarget {
            database: "k6".into(),
            retention_policy: "typo".into(),
        };
        let _ = schemas.retention_of("k6", "typo", "k6");
        schemas.set_retention(&typo, Some(TargetPolicy::Missing));
        assert_eq!(
            schemas.retention_of("k6", "typo", "other"),
            TargetRetention::Missing
        );
        // Some time on, a write has it read again; InfluxDB away, it stays missing.
        let key = ("k6".to_string(), "typo".to_string());
        let long_ago = std::time::Instant::now() - MISSING_READ_AGAIN - Duration::from_secs(1);
        crate::sync::lock(&schemas.targets)
            .missing_at
            .insert(key.clone(), long_ago);
        assert_eq!(
            schemas.retention_of("k6", "typo", "k6"),
            TargetRetention::Unread { added: true }
        );
        schemas.set_retention(&typo, None);
        assert_eq!(
            schemas.retention_of("k6", "typo", "k6"),
            TargetRetention::Missing
        );
        // Made since: taken.
        crate::sync::lock(&schemas.targets)
            .missing_at
            .insert(key, long_ago);
        let _ = schemas.retention_of("k6", "typo", "k6");
        schemas.set_retention(&typo, Some(TargetPolicy::Keeps(None)));
        assert_eq!(
            schemas.retention_of("k6", "typo", "k6"),
            TargetRetention::Known(None)
        );
        // One client adds a bounded number of targets: past it, its own are not tracked,
        // and another client's still are.
        for i in 0..MAX_TARGETS_PER_CLIENT {
            let _ = schemas.retention_of("greedy", &format!("rp{i}"), "greedy");
        }
        assert_eq!(
            schemas.retention_of("greedy", "one more", "greedy"),
            TargetRetention::Untracked
        );
        assert_eq!(
            schemas.retention_of("k6", "fresh", "k6"),
            TargetRetention::Unread { added: true }
        );
        // A policy of its own is another target; past the bound, targets are not tracked.
        for i in 1..MAX_TARGETS {
            let _ = schemas.retention_of(
                "k6",
                &format!("rp{i}"),
                &format!("client{}", i / MAX_TARGETS_PER_CLIENT),
            );
        }
        assert_eq!(
            schemas.retention_of("k6", "one more", "k6"),
            TargetRetention::Untracked
        );
    }

    #[test]
    fn each_client_adds_at_most_its_share_of_the_databases() {
        let schemas = Schemas::shared_by(4);
        let share = MAX_DATABASES / 4;
        for i in 0..share {
            let (_, new) = schemas.of(&format!("jmeter_{i}"), Some("greedy")).unwrap();
            assert!(new);
        }
        // Past its share the greedy client is refused a new database, not one it has.
        assert!(schemas.of("jmeter_more", Some("greedy")).is_none());
        assert!(!schemas.of("jmeter_0", Some("greedy")).unwrap().1);
        // Another client's first write to its own database is taken; and a database one
        // client added is every client's to write (a schema is the database's, not a token's).
        assert!(schemas.of("other", Some("other")).unwrap().1);
        assert!(!schemas.of("jmeter_1", Some("other")).unwrap().1);
        // Records of no client (read back at the start) are held to the bound alone, and the
        // bound holds for everyone.
        for i in 0..MAX_DATABASES - share - 1 {
            assert!(schemas.of(&format!("old_{i}"), None).is_some());
        }
        assert!(schemas.of("one_more", None).is_none());
        assert!(schemas.of("one_more", Some("third")).is_none());
        assert_eq!(schemas.all().len(), MAX_DATABASES);
        // A token alone has every place.
        let alone = Schemas::shared_by(1);
        for i in 0..MAX_DATABASES {
            assert!(alone.of(&format!("db{i}"), Some("only")).is_some());
        }
        assert!(alone.of("past", Some("only")).is_none());
    }

    #[test]
    fn a_first_write_waits_for_its_target_s_reading_at_most_its_bound() {
        let schemas = Arc::new(Schemas::default());
        schemas.reader_runs();
        assert!(matches!(
            schemas.retention_of("k6", "", "k6"),
            TargetRetention::Unread { .. }
        ));
        let started = std::time::Instant::now();
        schemas.wait_read("k6", "", Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // The reading is late: the writes after the first one that waited for it in vain do
        // not wait again.
        let started = std::time::Instant::now();
        schemas.wait_read("k6", "", Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Another target's first write still waits.
        let _ = schemas.retention_of("k6", "long", "k6");
        let started = std::time::Instant::now();
        schemas.wait_read("k6", "long", Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A reading that ends wakes the writer waiting.
        let _ = schemas.retention_of("wake", "", "k6");
        let reader = Arc::clone(&schemas);
        let read = std::thread::spawn(move || {
            // Once the writer sleeps, so that the wake is what ends its wait.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while reader.read.waiters() == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer never waited"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            reader.set_retention(
                &OwnedTarget {
                    database: "wake".into(),
                    retention_policy: String::new(),
                },
                Some(TargetPolicy::Keeps(None)),
            );
            reader.reading_ended();
        });
        let started = std::time::Instant::now();
        schemas.wait_read("wake", "", Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(
            schemas.retention_of("wake", "", "k6"),
            TargetRetention::Known(None)
        );
        read.join().unwrap();
    }

    #[test]
    fn shard_groups_are_cut_from_go_s_zero_time_as_influxdb_cuts_them() {
        let day = 86_400_000_000_000i64;
        let week = Beyond {
            oldest_ns: None,
            group_ns: i128::from(7 * day),
            groups: Default::default(),
        };
        // Go's zero time was a Monday, so week-long groups start on Mondays: the Unix epoch,
        // a Thursday, is in the group that starts on Monday 1969-12-29.
        assert_eq!(week.group_of(0), i128::from(-3 * day));
        assert_eq!(week.group_of(4 * day - 1), i128::from(-3 * day));
        assert_eq!(week.group_of(4 * day), i128::from(4 * day));
        let hour = Beyond {
            group_ns: 3_600_000_000_000,
            ..week
        };
        assert_eq!(hour.group_of(7_200_000_000_001), 7_200_000_000_000);
        assert_eq!(hour.group_of(-1), -3_600_000_000_000);
    }

    #[test]
    fn an_older_point_is_kept_when_a_newer_one_of_the_write_is_in_its_shard_group() {
        let hour = 3_600_000_000_000i64;
        let retention = Retention {
            policy: "short".into(),
            keeps_ms: 3_600_000,
            shard_group_ms: 3_600_000,
        };
        let now = 100 * hour + hour / 2;
        let body = format!("m v=1 {}\n", 99 * hour + hour / 2 + 1);
        let parsed = lp_parse::parse(&body, Precision::Nanosecond, now);
        let beyond = Beyond::of(&retention, now, &parsed);
        assert!(!beyond.drops(99 * hour + 1), "in the newer point's group");
        assert!(beyond.drops(99 * hour - 1), "in the group before");
        let alone = lp_parse::parse("", Precision::Nanosecond, now);
        assert!(Beyond::of(&retention, now, &alone).drops(99 * hour + 1));
        let untold = Retention {
            shard_group_ms: 0,
            ..retention
        };
        assert!(Beyond::of(&untold, now, &parsed).drops(99 * hour + 1));
        assert!(
            !Beyond::default().drops(0),
            "no retention known: nothing dropped"
        );
    }

    #[test]
    fn the_runs_target_is_the_database_or_the_bucket_the_runs_go_to() {
        use crate::config::Influxdb;
        let v1 = OwnTarget::of(&Influxdb {
            database: "runs".into(),
            ..Default::default()
        });
        assert!(v1.is("runs", "") && v1.is("runs", "autogen") && v1.is("runs", "weekly"));
        assert!(!v1.is("runs2", "") && !v1.is("Runs", ""));
        let v2 = OwnTarget::of(&Influxdb {
            api: Api::V2,
            bucket: "runs".into(),
            ..Default::default()
        });
        assert!(v2.is("runs", "") && !v2.is("runs", "autogen"));
        // InfluxDB 2 looks a bucket of 16 hexadecimal digits up as an ID first: it may be the
        // runs' bucket by its ID.
        assert!(v2.is("0a1B2c3D4e5F6789", ""));
        assert_eq!(v2.lands("0a1B2c3D4e5F6789", ""), Some(Lands::ById));
        assert_eq!(v2.lands("runs", ""), Some(Lands::ByName));
        assert!(!v2.is("0000000000000000", "") && !v2.is("0a1b2c3d4e5f678", ""));
        assert!(!v2.is("0a1b2c3d4e5f6789", "autogen") && !v2.is("0a1b2c3d4e5f678g", ""));
        assert!(!v1.is("0a1b2c3d4e5f6789", ""), "v1 and v3 have no IDs");
        let v2rp = OwnTarget::of(&Influxdb {
            api: Api::V2,
            bucket: "runs/autogen".into(),
            ..Default::default()
        });
        assert!(v2rp.is("runs", "autogen") && !v2rp.is("runs", "") && !v2rp.is("run", "s/autogen"));
        let v3 = OwnTarget::of(&Influxdb {
            api: Api::V3,
            database: "runs".into(),
            ..Default::default()
        });
        assert!(v3.is("runs", "") && !v3.is("other", ""));
        // Where the runs' points go exactly: v1 under the runs' policy, or none named.
        let v1rp = OwnTarget::of(&Influxdb {
            database: "runs".into(),
            retention_policy: "weekly".into(),
            ..Default::default()
        });
        assert!(v1rp.holds_the_runs("runs", "") && v1rp.holds_the_runs("runs", "weekly"));
        assert!(!v1rp.holds_the_runs("runs", "typo") && !v1.holds_the_runs("runs", "typo"));
        assert!(
            v2rp.holds_the_runs("runs", "autogen") && !v2.holds_the_runs("0a1b2c3d4e5f6789", "")
        );
        assert!(v3.holds_the_runs("runs", "") && !v3.holds_the_runs("other", ""));
    }
}
