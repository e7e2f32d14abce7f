//! The names requests being recorded are about to write, claimed against each other: a
//! [`Claim`] checks and claims a request's names in one step under the schema's lock, learns
//! them when the request's record is written, and lets them go when it is not. Names alike
//! are looked up once: consecutive points alike in one call, and fields a claim holds already
//! (a commit's endpoint rows, a write's lines of one measurement) without the lock. No I/O, and nothing of what
//! the schema knows is changed here but by a claim's end (learned, or let go).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Conflict, FieldType, Inner, Measurement, Schema, check, in_measurement};
use crate::ingest::line_protocol::{FieldValue, Point};

/// `name` as a key of `map`: the one held there, shared, or a new one.
fn shared_key<V>(map: &Names<V>, name: &str) -> Arc<str> {
    match map.get_key_value(name) {
        Some((key, _)) => Arc::clone(key),
        None => Arc::from(name),
    }
}

/// The names claimed in one measurement: what each is, and how many claims hold it (a `Cell`:
/// one lookup of a name finds what it is, its key to share and its count to raise).
pub(super) type ClaimCounts = Names<(Claimed, Cell<usize>)>;

/// A map keyed by names, for the claims: the schema's own (`claimed`, and each
/// measurement's in it) and a claim's (`held`). Sorted: all are read under the schema's lock,
/// which every request takes, and one write can fill them with a million names, so their
/// worst case must not depend on names a client chooses. Hashed maps were measured
/// (docs/performance-history.md): foldhash took 5 % off a cycle's instructions but promises nothing
/// against names crafted to collide; std's SipHash does, and was slower than these.
pub(super) type Names<V> = BTreeMap<Arc<str>, V>;

/// What a claimed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claimed {
    Field(FieldType),
    Tag,
}

/// What `name` is claimed as in one measurement, of which `claimed` is what requests under
/// way claimed.
pub(super) fn claimed_as(claimed: Option<&ClaimCounts>, name: &str) -> Option<Claimed> {
    claimed?.get(name).map(|(what, _)| *what)
}

impl Inner {
    /// One claim less on `name`; the entry goes with the last.
    fn unclaim(&mut self, measurement: &str, name: &str) {
        let Some(m) = self.claimed.get_mut(measurement) else {
            return;
        };
        if let Some((_, n)) = m.get_mut(name) {
            let n = n.get_mut();
            *n -= 1;
            if *n == 0 {
                m.remove(name);
            }
        }
        if m.is_empty() {
            self.claimed.remove(measurement);
        }
    }
}

/// The names one request is about to write, held against other requests from the moment they
/// were checked until the request's record is on disk ([`Claim::written`]: they are learned)
/// or the request fails (dropped: they are let go, so a type nobody wrote is never held
/// against anyone). Checking and claiming are one step under the schema's lock: two requests
/// cannot both pass with two types of one new field.
#[derive(Debug)]
pub struct Claim<'a> {
    schema: &'a Schema,
    /// The names this claim holds, each once, per measurement (shared with the schema's
    /// `claimed`), with what each was claimed as.
    held: Names<Names<Claimed>>,
    /// The schema's `epoch` when the claim first claimed: while it is the same, a name this
    /// claim holds passes its check again as what it was claimed as (only a change the epoch
    /// counts, InfluxDB's word or a name learned without a claim, changes what a check says
    /// of a name claimed), so it is not looked up again.
    epoch: Option<u64>,
}

/// One measurement's part of a claim, under the schema's lock: what the gateway knows of it,
/// what requests under way claimed in it and what this claim holds of it, each looked up once
/// for all the names checked in it.
struct Cursor<'c> {
    measurement: &'c str,
    known: Option<&'c Measurement>,
    claimed: &'c mut ClaimCounts,
    held: &'c mut Names<Claimed>,
    /// The schema's `epoch` is the one the claim first claimed under.
    same_epoch: bool,
}

impl<'c> Cursor<'c> {
    /// Looks `measurement` up in `inner` and in `held` (a claim's), adding it to both when
    /// missing (the caller removes what is left empty: [`Claim::drop_empty`]).
    fn open(
        held: &'c mut Names<Names<Claimed>>,
        inner: &'c mut Inner,
        measurement: &'c str,
        same_epoch: bool,
    ) -> Cursor<'c> {
        let Inner { known, claimed, .. } = inner;
        let key = shared_key(claimed, measurement);
        let claimed = claimed.entry(Arc::clone(&key)).or_default();
        let held = held.entry(key).or_default();
        Cursor {
            measurement,
            known: known.get(measurement),
            claimed,
            held,
            same_epoch,
        }
    }

    /// Checks `name` as `what` and claims it, unless the claim holds it already; whether it
    /// was claimed now (to be let go if a later name of the same call conflicts).
    fn claim(&mut self, name: &str, what: Claimed) -> Result<bool, Conflict> {
        let held = self.held.get(name).copied();
        // While the schema's epoch is unchanged, a name held passes its check again as what
        // it was claimed as.
        if self.same_epoch && held == Some(what) {
            return Ok(false);
        }
        // One lookup of the name in the claims: what it is claimed as, its key, its count.
        let claimed = self.claimed.get_key_value(name);
        check(
            self.known,
            claimed.map(|(_, (c, _))| *c),
            self.measurement,
            name,
            what,
        )?;
        if held.is_some() {
            return Ok(false);
        }
        let key = match claimed {
            Some((key, (_, count))) => {
                count.set(count.get() + 1);
                Arc::clone(key)
            }
            None => {
                let key: Arc<str> = Arc::from(name);
                self.claimed.insert(Arc::clone(&key), (what, Cell::new(1)));
                key
            }
        };
        self.held.insert(key, what);
        Ok(true)
    }
}

/// Whether `a` and `b` have the same measurement, tags (by name) and fields (by name and type),
/// in the same order: what [`Claim::points`] checks of one it checks of the other.
fn same_names(a: &Point, b: &Point) -> bool {
    same_str(a.measurement(), b.measurement())
        && a.tags().map(|(k, _)| k).eq(b.tags().map(|(k, _)| k))
        && a.fields()
            .map(|(k, v)| (k, FieldType::of(v)))
            .eq(b.fields().map(|(k, v)| (k, FieldType::of(v))))
}

/// Whether `a` and `b` are the same text, by their address first (the items of one point
/// share their measurement's).
fn same_str(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

impl<'a> Claim<'a> {
    /// A claim of `schema` holding nothing yet.
    pub(super) fn new(schema: &'a Schema) -> Claim<'a> {
        Claim {
            schema,
            held: Names::default(),
            epoch: None,
        }
    }

    /// The names held, per measurement, for the tests' checks of the counts.
    #[cfg(test)]
    pub(super) fn held(&self) -> &Names<Names<Claimed>> {
        &self.held
    }
}

impl Claim<'_> {
    /// Checks the fields and tags (names) of one measurement against what is known and what
    /// other requests claimed, and claims them; on a conflict (the first, in the order given)
    /// nothing of this call is claimed.
    pub fn fields<'b>(
        &mut self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'b str, &'b FieldValue)>,
        tags: impl IntoIterator<Item = &'b str>,
    ) -> Result<(), Conflict> {
        let items = fields
            .into_iter()
            .map(|(k, v)| (measurement, k, Claimed::Field(FieldType::of(v))))
            .chain(tags.into_iter().map(|k| (measurement, k, Claimed::Tag)));
        let mut inner = self.schema.lock();
        self.claim_all(&mut inner, items)
    }

    /// [`Claim::fields`] of fields given by their types, without tags (the InfluxDB write
    /// API's lines: InfluxDB 1.x takes a tag and a field of one name). Fields this claim holds
    /// already, as those types, pass without the schema's lock while the schema's epoch is
    /// unchanged (a body of 5 000 lines repeats a few measurements and fields).
    pub fn field_types<'b, I>(&mut self, measurement: &str, fields: I) -> Result<(), Conflict>
    where
        I: IntoIterator<Item = (&'b str, FieldType)>,
        I::IntoIter: Clone,
    {
        let fields = fields.into_iter();
        if self.holds(measurement, fields.clone()) {
            return Ok(());
        }
        self.claim_types(measurement, fields)
    }

    /// [`Claim::field_types`] without its shortcut (always under the lock), for the tests to
    /// compare it with.
    #[cfg(test)]
    pub(super) fn field_types_plain<'b>(
        &mut self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'b str, FieldType)>,
    ) -> Result<(), Conflict> {
        self.claim_types(measurement, fields)
    }

    /// Checks and claims `fields` of `measurement` under the schema's lock.
    fn claim_types<'b>(
        &mut self,
        measurement: &str,
        fields: impl IntoIterator<Item = (&'b str, FieldType)>,
    ) -> Result<(), Conflict> {
        let items = fields
            .into_iter()
            .map(|(k, t)| (measurement, k, Claimed::Field(t)));
        let mut inner = self.schema.lock();
        self.claim_all(&mut inner, items)
    }

    /// Keeps of `fields` (fields of `measurement`) those that pass [`Claim::fields`] one by
    /// one, claiming them, under one taking of the schema's lock; how many were left out.
    /// Fields this claim holds already, as those types, are kept without the lock while
    /// the schema's epoch is unchanged (a commit's endpoint rows have the same members).
    pub fn retain_fields(
        &mut self,
        measurement: &str,
        fields: &mut Vec<(String, FieldValue)>,
    ) -> usize {
        let types = fields.iter().map(|(k, v)| (k.as_str(), FieldType::of(v)));
        if self.holds(measurement, types) {
            return 0;
        }
        self.retain_locked(measurement, fields)
    }

    /// [`Claim::retain_fields`] without its shortcut, for the tests to compare it with.
    #[cfg(test)]
    pub(super) fn retain_fields_plain(
        &mut self,
        measurement: &str,
        fields: &mut Vec<(String, FieldValue)>,
    ) -> usize {
        self.retain_locked(measurement, fields)
    }

    /// [`Claim::retain_fields`] under the schema's lock.
    fn retain_locked(
        &mut self,
        measurement: &str,
        fields: &mut Vec<(String, FieldValue)>,
    ) -> usize {
        let before = fields.len();
        let mut inner = self.schema.lock();
        let same_epoch = self.same_epoch();
        let mut at = Cursor::open(&mut self.held, &mut inner, measurement, same_epoch);
        // A field refused claimed nothing: nothing to let go.
        fields.retain(|(k, v)| at.claim(k, Claimed::Field(FieldType::of(v))).is_ok());
        self.drop_empty(&mut inner, measurement);
        before - fields.len()
    }

    /// [`Claim::fields`] for every field and tag of `points`. A point with the names and types
    /// of the one before it (a commit's endpoint rows) is not looked at: under the same taking
    /// of the lock, its names were just claimed or found held.
    pub fn points(&mut self, points: &[Point]) -> Result<(), Conflict> {
        let distinct = points
            .iter()
            .enumerate()
            .filter(|&(i, p)| i == 0 || !same_names(&points[i - 1], p))
            .map(|(_, p)| p);
        self.claim_points(distinct)
    }

    /// [`Claim::points`] without its shortcut, for the tests to compare it with.
    #[cfg(test)]
    pub(super) fn points_plain(&mut self, points: &[Point]) -> Result<(), Conflict> {
        self.claim_points(points.iter())
    }

    /// Checks and claims every field and tag of `points` under one taking of the lock.
    fn claim_points<'p>(
        &mut self,
        points: impl Iterator<Item = &'p Point>,
    ) -> Result<(), Conflict> {
        let items = points.flat_map(|p| {
            let m = p.measurement();
            p.fields()
                .map(move |(k, v)| (m, k, Claimed::Field(FieldType::of(v))))
                .chain(p.tags().map(move |(k, _)| (m, k, Claimed::Tag)))
        });
        let mut inner = self.schema.lock();
        self.claim_all(&mut inner, items)
    }

    /// Whether the schema's `epoch` is the one this claim first claimed under (it is from now
    /// on, when this is its first claim).
    fn same_epoch(&mut self) -> bool {
        let now = self.schema.epoch();
        *self.epoch.get_or_insert(now) == now
    }

    /// Whether this claim holds every one of `fields` in `measurement`, as that type, and
    /// the schema's epoch is unchanged since it first claimed: they would pass again, claiming
    /// nothing more. Read without the schema's lock: only the claim itself changes what it
    /// holds, and a change the epoch counts made right after this looks is made after it.
    fn holds<'b>(
        &self,
        measurement: &str,
        mut fields: impl Iterator<Item = (&'b str, FieldType)>,
    ) -> bool {
        let (Some(epoch), Some(held)) = (self.epoch, self.held.get(measurement)) else {
            return false;
        };
        epoch == self.schema.epoch() && fields.all(|(k, t)| held.get(k) == Some(&Claimed::Field(t)))
    }

    /// Checks and claims `items` under the schema's lock (`inner`); on a conflict nothing of
    /// them is claimed.
    fn claim_all<'b>(
        &mut self,
        inner: &mut Inner,
        items: impl IntoIterator<Item = (&'b str, &'b str, Claimed)>,
    ) -> Result<(), Conflict> {
        let same_epoch = self.same_epoch();
        // Room for a commit's names at once (its rows' names are claimed once, by the first).
        let mut added: Vec<(&'b str, &'b str)> = Vec::with_capacity(32);
        let mut outcome = Ok(());
        // Consecutive items mostly share their measurement: its lookups are made once for them.
        let mut items = items.into_iter().peekable();
        while let Some(&(measurement, _, _)) = items.peek() {
            let mut at = Cursor::open(&mut self.held, inner, measurement, same_epoch);
            while let Some((_, name, what)) = items.next_if(|(m, _, _)| same_str(m, measurement)) {
                match at.claim(name, what) {
                    Ok(true) => added.push((measurement, name)),
                    Ok(false) => {}
                    Err(conflict) => {
                        outcome = Err(conflict);
                        break;
                    }
                }
            }
            self.drop_empty(inner, measurement);
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_err() {
            for (m, n) in added {
                inner.unclaim(m, n);
                if let Some(names) = self.held.get_mut(m) {
                    names.remove(n);
                    if names.is_empty() {
                        self.held.remove(m);
                    }
                }
            }
        }
        outcome
    }

    /// Removes `measurement`, which a [`Cursor`] opened, where it is left without a name
    /// claimed (in the schema) or held (by this claim). Only that one is looked at: the write
    /// API claims each line's names with a call of its own, and a look at every measurement
    /// claimed made a body of n measurements cost n²/2 steps under the schema's lock.
    fn drop_empty(&mut self, inner: &mut Inner, measurement: &str) {
        if inner.claimed.get(measurement).is_some_and(|n| n.is_empty()) {
            inner.claimed.remove(measurement);
        }
        if self.held.get(measurement).is_some_and(|n| n.is_empty()) {
            self.held.remove(measurement);
        }
    }

    /// The request's record is on disk: what it claimed is learned (a field already known
    /// keeps its type, as the first write of a type wins in InfluxDB too).
    pub fn written(mut self) {
        let held = std::mem::take(&mut self.held);
        let mut inner = self.schema.lock();
        let inner = &mut *inner;
        for (measurement, names) in held {
            // One look at the measurement's claims and one at its schema for all its names.
            let Some(claims) = inner.claimed.get_mut(&*measurement) else {
                continue;
            };
            let mut learned: Vec<(Arc<str>, Claimed)> = Vec::with_capacity(names.len());
            for name in names.into_keys() {
                let Some((what, count)) = claims.get_mut(&*name) else {
                    continue;
                };
                let what = *what;
                let count = count.get_mut();
                *count -= 1;
                if *count == 0 {
                    claims.remove(&*name);
                }
                learned.push((name, what));
            }
            if claims.is_empty() {
                inner.claimed.remove(&*measurement);
            }
            if learned.is_empty() {
                continue;
            }
            for known in inner.learning() {
                in_measurement(known, &measurement, |m| {
                    for (name, what) in &learned {
                        match what {
                            Claimed::Field(t) => {
                                if !m.fields.contains_key(&**name) {
                                    m.fields.insert(name.to_string(), *t);
                                }
                            }
                            Claimed::Tag => {
                                if !m.tags.contains(&**name) {
                                    m.tags.insert(name.to_string());
                                }
                            }
                        }
                    }
                });
            }
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut inner = self.schema.lock();
        for (measurement, names) in std::mem::take(&mut self.held) {
            for name in names.into_keys() {
                inner.unclaim(&measurement, &name);
            }
        }
    }
}
