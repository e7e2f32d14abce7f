//! The index of the results kept, with what each client's results weigh counted as they come
//! and go, so that a commit within every bound (as most are) learns it without going over every
//! result. Never reads or writes a segment.

use std::collections::HashMap;

use uuid::Uuid;

use super::store::Place;

/// What the index keeps of a result.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub owner: Option<String>,
    pub identity: Option<String>,
    pub passed: bool,
    pub ended_ms: i64,
    /// Its commit is on disk (a result saved for a commit under way is not yet).
    pub committed: bool,
    /// Where its line is.
    pub place: Place,
}

impl Meta {
    /// Bytes of its line.
    pub fn bytes(&self) -> u64 {
        u64::from(self.place.len)
    }
}

/// The results by run, and their count and bytes, in all and per owner.
#[derive(Debug, Default)]
pub(super) struct Index {
    metas: HashMap<Uuid, Meta>,
    /// Each token's results and the bytes of their lines.
    owned: HashMap<String, (usize, u64)>,
    /// The same of the results without an owner (no tokens).
    anonymous: (usize, u64),
    /// The bytes of every line.
    bytes: u64,
}

impl Index {
    /// Adds `meta` for `uuid`; returns the one it replaces.
    pub fn insert(&mut self, uuid: Uuid, meta: Meta) -> Option<Meta> {
        let slot = match &meta.owner {
            Some(owner) => self.owned.entry(owner.clone()).or_default(),
            None => &mut self.anonymous,
        };
        slot.0 += 1;
        slot.1 += meta.bytes();
        self.bytes += meta.bytes();
        let old = self.metas.insert(uuid, meta);
        if let Some(old) = &old {
            self.uncount(old);
        }
        old
    }

    /// Takes the result of `uuid` out.
    pub fn remove(&mut self, uuid: &Uuid) -> Option<Meta> {
        let old = self.metas.remove(uuid)?;
        self.uncount(&old);
        Some(old)
    }

    fn uncount(&mut self, meta: &Meta) {
        self.bytes -= meta.bytes();
        let slot = match &meta.owner {
            Some(owner) => self.owned.get_mut(owner),
            None => Some(&mut self.anonymous),
        };
        if let Some(slot) = slot {
            slot.0 -= 1;
            slot.1 -= meta.bytes();
            if slot.0 == 0
                && let Some(owner) = &meta.owner
            {
                self.owned.remove(owner);
            }
        }
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&Meta> {
        self.metas.get(uuid)
    }

    pub fn contains_key(&self, uuid: &Uuid) -> bool {
        self.metas.contains_key(uuid)
    }

    /// The result of `uuid` counts: its commit is on disk.
    pub fn set_committed(&mut self, uuid: &Uuid) {
        if let Some(meta) = self.metas.get_mut(uuid) {
            meta.committed = true;
        }
    }

    /// The places of the lines in segment `segment`, to be moved by `relocate` (a line moved
    /// keeps its length, so what is counted stays right).
    pub fn in_segment(&self, segment: u64) -> Vec<(Uuid, Place)> {
        self.metas
            .iter()
            .filter(|(_, m)| m.place.segment == segment)
            .map(|(u, m)| (*u, m.place))
            .collect()
    }

    /// The line of `uuid` was written again at `place`, of the same length.
    pub fn relocate(&mut self, uuid: &Uuid, place: Place) {
        if let Some(meta) = self.metas.get_mut(uuid) {
            debug_assert_eq!(meta.place.len, place.len);
            meta.place = place;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &Meta)> {
        self.metas.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Uuid> {
        self.metas.keys()
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// The bytes of every line kept.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `owner`'s results and the bytes of their lines.
    pub fn usage_of(&self, owner: Option<&str>) -> (usize, u64) {
        match owner {
            Some(owner) => self.owned.get(owner).copied().unwrap_or_default(),
            None => self.anonymous,
        }
    }

    /// Every owner with a result, and its results and bytes.
    pub fn usage(&self) -> impl Iterator<Item = (Option<&str>, (usize, u64))> {
        let anonymous = (self.anonymous.0 > 0).then_some((None, self.anonymous));
        anonymous
            .into_iter()
            .chain(self.owned.iter().map(|(o, u)| (Some(o.as_str()), *u)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(owner: Option<&str>, segment: u64, len: u32) -> Meta {
        Meta {
            owner: owner.map(Into::into),
            identity: None,
            passed: true,
            ended_ms: 0,
            committed: true,
            place: Place {
                segment,
                offset: 0,
                len,
            },
        }
    }

    #[test]
    fn what_each_owner_keeps_is_counted_as_results_come_are_replaced_move_and_go() {
        let mut index = Index::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        index.insert(a, meta(Some("ci"), 1, 100));
        index.insert(b, meta(None, 1, 50));
        index.insert(c, meta(Some("lab"), 1, 30));
        assert_eq!((index.len(), index.bytes()), (3, 180));
        // Written again (a restore, a second save): the later one counts, once.
        assert!(index.insert(a, meta(Some("ci"), 2, 70)).is_some());
        assert_eq!(index.usage_of(Some("ci")), (1, 70));
        assert_eq!(index.bytes(), 150);
        // Moved by a compaction: same length, so the counts stay.
        index.relocate(
            &c,
            Place {
                segment: 3,
                offset: 9,
                len: 30,
            },
        );
        assert_eq!(
            index.in_segment(3),
            vec![(
                c,
                Place {
                    segment: 3,
                    offset: 9,
                    len: 30
                }
            )]
        );
        assert_eq!(index.usage_of(Some("lab")), (1, 30));
        assert!(index.remove(&b).is_some());
        assert!(index.remove(&b).is_none(), "taken out once");
        assert_eq!(index.usage_of(None), (0, 0));
        index.remove(&c);
        let mut usage: Vec<_> = index.usage().collect();
        usage.sort();
        assert_eq!(
            usage,
            vec![(Some("ci"), (1, 70))],
            "an owner with nothing left is not listed"
        );
        assert_eq!((index.len(), index.bytes()), (1, 70));
    }
}
