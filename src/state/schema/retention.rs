//! What InfluxDB says of the retention policy the gateway writes under, and of a time older
//! than it keeps. Types only; the reading is `delivery::influx`'s, the checks `Schema`'s.

/// The retention policy points are written under, as InfluxDB tells it: v1 the policy's
/// name and duration, v2 the bucket's retention rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The policy's name (v1) or `bucket <name>` (v2), for messages.
    pub policy: String,
    /// How long points are kept, in milliseconds; always more than 0 (a policy that keeps
    /// points for ever has no `Retention`).
    pub keeps_ms: i64,
    /// The policy's shard group duration, in milliseconds (0: not told). InfluxDB 1.x keeps a
    /// point older than the policy when a newer point of the same write falls in its shard
    /// group.
    pub shard_group_ms: i64,
}

/// What InfluxDB says of the retention policy a write names (a write API's target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    /// It exists: how long it keeps points (`None`: for ever, or InfluxDB did not say).
    Keeps(Option<Retention>),
    /// InfluxDB lists the database's policies and this is not one of them: a write there
    /// would be refused (InfluxDB 1.x answers 500 `retention policy not found`).
    Missing,
}

/// A time older than the retention policy keeps: InfluxDB would drop points stamped with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOld {
    /// The time, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub retention: Retention,
}

impl Retention {
    /// The duration as InfluxDB writes it: `1h`, `90m`, `7d`, `30s`.
    pub fn keeps(&self) -> String {
        let secs = self.keeps_ms / 1000;
        match secs {
            s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
            s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
            s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
            s if s > 0 => format!("{s}s"),
            _ => format!("{}ms", self.keeps_ms),
        }
    }
}
