//! Where delivered points end: the [`Sink`] trait, the one edge between delivery and a
//! database, and what a write can come to ([`SinkError`], [`Disposition`]).
//!
//! The real sink is InfluxDB over HTTP (`influx`); the tests use [`testing::MemorySink`], which
//! stores what it is given and answers each write as told, so every fault of the edge (a
//! refusal, a body too large, no answer, a timeout, bad credentials) is a fast in-process test.
//! A sink knows nothing of runs, requests or the spool: lines in, an outcome out.

use std::fmt;

use crate::state::schema::{Known, Retention, TargetPolicy};
use crate::storage::log::OwnedTarget;

/// A database that stores line protocol.
pub trait Sink: Send + Sync {
    /// Stores `lines`: line protocol, one point per line, separated by `'\n'`, timestamps in
    /// milliseconds since the Unix epoch. `Ok` means every line is stored.
    fn write(&self, lines: &str) -> Result<(), SinkError>;

    /// Stores `lines` for `target` (a write through InfluxDB's write API, for its own
    /// database): timestamps in nanoseconds. `Ok` means every line is stored. A sink that writes
    /// only to one database refuses it as misconfigured.
    fn write_to(&self, target: &OwnedTarget, lines: &str) -> Result<(), SinkError> {
        let _ = lines;
        Err(SinkError::Misconfigured {
            status: 404,
            message: format!("this sink cannot write to database {:?}", target.database),
            by_influxdb: true,
        })
    }

    /// A cheap check that the database answers at all; `Ok` when it does.
    fn ping(&self) -> Result<(), SinkError>;

    /// What the database says of the schema of `measurements` (each field's type, the tag
    /// names), or `None` where its API cannot say.
    fn schema(&self, measurements: &[&str]) -> Result<Option<Known>, SinkError> {
        let _ = measurements;
        Ok(None)
    }

    /// What `database` holds of field types, every measurement of it (the InfluxDB write
    /// API's databases), or `None` where the API cannot say.
    fn field_types_of(&self, database: &str) -> Result<Option<Known>, SinkError> {
        let _ = database;
        Ok(None)
    }

    /// Makes the destination ready to take writes (for InfluxDB 1.x with
    /// `influxdb.create_database`: `CREATE DATABASE`). Called once at start; its failure is
    /// told but holds nothing back (the sink may try again when a write finds the database
    /// missing).
    fn prepare(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// How long the database keeps the points written to it: `None` when it keeps them for
    /// ever or its API cannot say (InfluxDB 3); an error when it could not be asked (down, or
    /// the user may not read it).
    fn retention(&self) -> Result<Option<Retention>, SinkError> {
        Ok(None)
    }

    /// What the database says of the retention policy of `target` (a write API's database
    /// and retention policy, empty for its default): how long it keeps points, as
    /// [`Sink::retention`], or that it has no such policy.
    fn retention_of(&self, target: &OwnedTarget) -> Result<TargetPolicy, SinkError> {
        let _ = target;
        Ok(TargetPolicy::Keeps(None))
    }
}

/// A shared sink is a sink (the tests keep a handle on theirs to look into it).
impl<S: Sink + ?Sized> Sink for std::sync::Arc<S> {
    fn write(&self, lines: &str) -> Result<(), SinkError> {
        (**self).write(lines)
    }

    fn write_to(&self, target: &OwnedTarget, lines: &str) -> Result<(), SinkError> {
        (**self).write_to(target, lines)
    }

    fn ping(&self) -> Result<(), SinkError> {
        (**self).ping()
    }

    fn prepare(&self) -> Result<(), SinkError> {
        (**self).prepare()
    }

    fn schema(&self, measurements: &[&str]) -> Result<Option<Known>, SinkError> {
        (**self).schema(measurements)
    }

    fn field_types_of(&self, database: &str) -> Result<Option<Known>, SinkError> {
        (**self).field_types_of(database)
    }

    fn retention(&self) -> Result<Option<Retention>, SinkError> {
        (**self).retention()
    }

    fn retention_of(&self, target: &OwnedTarget) -> Result<TargetPolicy, SinkError> {
        (**self).retention_of(target)
    }
}

/// Why a write stored nothing (or, for [`SinkError::Refused`], not everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// The database refused the data itself (InfluxDB: 400 with a bad line or a field type
    /// conflict, a partial write, 422). Sending it again cannot help. `lines` names the
    /// refused lines (0-based, as [`crate::ingest::line_protocol::split_lines`] counts them)
    /// when the answer says which.
    Refused {
        status: u16,
        message: String,
        lines: Option<Vec<usize>>,
    },
    /// The body is larger than the database takes in one write (413).
    TooLarge { message: String },
    /// No answer: connection refused, a name that does not resolve, TLS.
    Unreachable(String),
    /// The connection broke (reset, broken pipe, closed early) while the body was being sent
    /// or before the answer came. It may be a passing fault, or InfluxDB closing on a body it
    /// will not read (influxd answers 413 and closes while the client still sends): it is never
    /// taken as a refusal of the data by itself.
    Broken(String),
    /// No answer within `influxdb.timeout`.
    TimedOut(String),
    /// Credentials, database or bucket are wrong (401, 403, 404): nothing arrives until the
    /// configuration is fixed. `by_influxdb`: InfluxDB itself answered (its
    /// `X-Influxdb-Version`, or its API's own error shape), not a proxy or another server at
    /// `influxdb.url`, whose 404 or 403 says nothing of a database.
    Misconfigured {
        status: u16,
        message: String,
        by_influxdb: bool,
    },
    /// The database is busy or failing (5xx, 429, 408), or answered a status that does not
    /// say the data is wrong: it may take the same write later.
    Unavailable { status: u16, message: String },
}

/// What a failed write means for its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Down, busy or slow: keep the points and try again later.
    Retry,
    /// Credentials or database/bucket are wrong: keep them and try again later, and say so
    /// loudly, because nothing arrives until the configuration is fixed.
    RetryMisconfigured,
    /// The data itself was refused, definitely: retrying cannot help. Only this ever sends
    /// points to the dead letters.
    Reject,
}

impl SinkError {
    /// Sorts a failure by what it means for the points that were sent.
    pub fn disposition(&self) -> Disposition {
        match self {
            SinkError::Refused { .. } | SinkError::TooLarge { .. } => Disposition::Reject,
            SinkError::Misconfigured { .. } => Disposition::RetryMisconfigured,
            SinkError::Unreachable(_)
            | SinkError::Broken(_)
            | SinkError::TimedOut(_)
            | SinkError::Unavailable { .. } => Disposition::Retry,
        }
    }

    /// What a failed write of points for `target` means for them: as
    /// [`SinkError::disposition`], except that a client's own database, bucket or retention
    /// policy (a write through InfluxDB's API) that InfluxDB says is missing or closed to the
    /// gateway (404, 403; 500 "retention policy not found") refuses the points. Only a person
    /// can fix it, and waiting for it would hold back every other target's points behind them.
    /// The same status from another server (a proxy, a wrong `influxdb.url`) says nothing of
    /// the database: the points wait, as the gateway's own do.
    pub fn disposition_for(&self, target: Option<&OwnedTarget>) -> Disposition {
        match self {
            SinkError::Misconfigured {
                status: 403 | 404 | 500,
                by_influxdb: true,
                ..
            } if target.is_some() => Disposition::Reject,
            _ => self.disposition(),
        }
    }

    /// The error an InfluxDB HTTP answer with `status` (not 2xx) stands for. Only the answers
    /// that say the data is wrong refuse it: 400 (a line InfluxDB cannot parse, a field type
    /// conflict, a partial write) and 422 (InfluxDB 2's unprocessable points); 413 says the
    /// body is too large. 401, 403 and 404 say the configuration is wrong (taken as
    /// InfluxDB's own answer); every other status
    /// (5xx, 408, 429, and a 4xx a proxy may answer, such as 405 or 502's cousins) says
    /// nothing about the data, so the points are kept and tried again.
    pub fn from_status(status: u16, message: String) -> SinkError {
        match status {
            400 | 422 => SinkError::Refused {
                status,
                message,
                lines: None,
            },
            401 | 403 | 404 => SinkError::Misconfigured {
                status,
                message,
                by_influxdb: true,
            },
            413 => SinkError::TooLarge { message },
            _ => SinkError::Unavailable { status, message },
        }
    }

    /// The error a failed exchange with InfluxDB stands for, from what the socket said: a
    /// timeout, a connection that broke once made ([`SinkError::Broken`]), or no connection.
    pub fn from_io(kind: std::io::ErrorKind, message: String) -> SinkError {
        use std::io::ErrorKind as K;
        match kind {
            K::TimedOut | K::WouldBlock => SinkError::TimedOut(message),
            K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted | K::UnexpectedEof => {
                SinkError::Broken(message)
            }
            _ => SinkError::Unreachable(message),
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Unreachable(why) => write!(f, "influxdb is unreachable: {why}"),
            SinkError::TimedOut(why) => write!(
                f,
                "influxdb did not answer within influxdb.timeout ({why}): raise it if InfluxDB is only slow"
            ),
            SinkError::Broken(why) => write!(f, "the connection to influxdb broke: {why}"),
            SinkError::TooLarge { message } => write!(f, "influxdb answered 413: {message}"),
            SinkError::Refused {
                status, message, ..
            }
            | SinkError::Misconfigured {
                status, message, ..
            }
            | SinkError::Unavailable { status, message } => {
                write!(f, "influxdb answered {status}: {message}")
            }
        }
    }
}

impl std::error::Error for SinkError {}

#[cfg(test)]
pub mod testing {
    //! An in-memory sink for in-process tests of delivery: it keeps what it stores and answers
    //! each write as the test tells it.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::{Known, OwnedTarget, Sink, SinkError};

    /// How the sink answers one write.
    #[derive(Debug, Clone)]
    pub enum Answer {
        /// Fails with this error; with [`SinkError::Refused`] the lines that do not contain
        /// `refuse_marker` are stored, as InfluxDB 1.x does with a partial write.
        Fail(SinkError),
        /// Panics, as a bug in a sink would.
        Panic,
        /// Answers as without a queued answer: lets a later queued answer reach a later write.
        AsUsual,
    }

    /// A sink that stores lines in memory. Writes are answered by the queued answers in order;
    /// without one, a write is stored, except that a body over a set size is refused as too
    /// large or breaks the connection, and lines containing the refusal marker are refused
    /// (the whole write fails, the other lines are stored: a partial write).
    #[derive(Default)]
    pub struct MemorySink {
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        answers: VecDeque<Answer>,
        refuse_marker: Option<String>,
        /// Refusals name the refused lines as InfluxDB 3 does (1-based in its answer, 0-based
        /// here, counted by InfluxDB's own line splitter).
        name_lines: bool,
        ping_fails: bool,
        /// Every write fails as unreachable: InfluxDB away.
        down: bool,
        /// Bodies larger than this are refused as too large (413).
        max_body: Option<usize>,
        /// Bodies larger than this break the connection (as influxd closing on a 413 does).
        reset_above: Option<usize>,
        /// Every body sent, in order.
        bodies: Vec<String>,
        /// The bodies written to a target of their own: their place in `bodies`, and where.
        targets: Vec<(usize, OwnedTarget)>,
        /// Every line stored, in order.
        stored: Vec<String>,
        /// What the sink says it holds when its schema is read (of the gateway's measurements
        /// and of every database alike); `None`: it cannot say, as InfluxDB 2 and 3 here.
        schema: Option<Known>,
    }

    impl MemorySink {
        pub fn new() -> MemorySink {
            MemorySink::default()
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            crate::sync::lock(&self.state)
        }

        /// Queues the answers to the next writes, in order.
        pub fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
            self.lock().answers.extend(answers);
        }

        /// From now on, every write with a line containing `marker` is refused as a partial
        /// write: its other lines are stored.
        pub fn refuse_lines_with(&self, marker: &str) {
            self.lock().refuse_marker = Some(marker.to_string());
        }

        /// From now on, refusals name the refused lines, as InfluxDB 3's partial writes do.
        pub fn name_refused_lines(&self) {
            self.lock().name_lines = true;
        }

        /// From now on, bodies over `bytes` are answered 413, as InfluxDB's body limit does.
        pub fn refuse_bodies_over(&self, bytes: usize) {
            self.lock().max_body = Some(bytes);
        }

        /// From now on, bodies over `bytes` break the connection while they are sent.
        pub fn reset_bodies_over(&self, bytes: usize) {
            self.lock().reset_above = Some(bytes);
        }

        /// Makes `ping` fail (or work again).
        pub fn set_ping_fails(&self, fails: bool) {
            self.lock().ping_fails = fails;
        }

        /// InfluxDB away (every write and ping fails as unreachable), or back.
        pub fn set_down(&self, down: bool) {
            let mut s = self.lock();
            s.down = down;
            s.ping_fails = down;
        }

        /// From now on, a reading of the sink's schema (the gateway's measurements, or any
        /// database's field types) answers `known`, as InfluxDB 1.x answers `SHOW FIELD KEYS`,
        /// whatever was written since: it stands for an answer given before those writes
        /// reached InfluxDB.
        pub fn say_schema(&self, known: Known) {
            self.lock().schema = Some(known);
        }

        /// The bodies written to a target of their own: their place in [`MemorySink::bodies`],
        /// and the target.
        pub fn targets(&self) -> Vec<(usize, OwnedTarget)> {
            self.lock().targets.clone()
        }

        /// Every body written so far, in order.
        pub fn bodies(&self) -> Vec<String> {
            self.lock().bodies.clone()
        }

        /// Every line stored so far, in order.
        pub fn stored(&self) -> Vec<String> {
            self.lock().stored.clone()
        }
    }

    impl Sink for MemorySink {
        /// Answers as [`MemorySink::write`] does, and notes where the body went.
        fn write_to(&self, target: &OwnedTarget, lines: &str) -> Result<(), SinkError> {
            {
                let mut s = self.lock();
                let at = s.bodies.len();
                s.targets.push((at, target.clone()));
            }
            self.write(lines)
        }

        fn write(&self, lines: &str) -> Result<(), SinkError> {
            let mut s = self.lock();
            s.bodies.push(lines.to_string());
            let answer = s.answers.pop_front();
            let marker = s.refuse_marker.clone();
            let refused = |line: &str| marker.as_deref().is_some_and(|m| line.contains(m));
            // Lines as InfluxDB splits them (its own splitter): a newline inside a string
            // value does not end a line.
            let split = |body: &'_ str| -> Vec<String> {
                influxdb_line_protocol::split_lines(body)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            };
            let error = match answer {
                Some(Answer::Panic) => {
                    drop(s);
                    panic!("the memory sink panics, as the test asked");
                }
                Some(Answer::Fail(e)) => Some(e),
                _ if s.down => Some(SinkError::Unreachable("connection refused".into())),
                _ if s.reset_above.is_some_and(|max| lines.len() > max) => Some(SinkError::Broken(
                    "connection reset by peer (os error 104)".into(),
                )),
                _ if s.max_body.is_some_and(|max| lines.len() > max) => Some(SinkError::TooLarge {
                    message: "request entity too large".into(),
                }),
                None | Some(Answer::AsUsual) if split(lines).iter().any(|l| refused(l)) => {
                    let why = format!(
                        "partial write: field type conflict on lines with {}",
                        marker.as_deref().unwrap_or_default()
                    );
                    let named = s.name_lines.then(|| {
                        split(lines)
                            .iter()
                            .enumerate()
                            .filter(|(_, l)| refused(l))
                            .map(|(i, _)| i)
                            .collect()
                    });
                    Some(SinkError::Refused {
                        status: 400,
                        message: why,
                        lines: named,
                    })
                }
                None | Some(Answer::AsUsual) => None,
            };
            match error {
                // InfluxDB 1.x stores the good lines of a partial write before answering 400.
                Some(e @ SinkError::Refused { .. }) => {
                    let kept: Vec<String> =
                        split(lines).into_iter().filter(|l| !refused(l)).collect();
                    s.stored.extend(kept);
                    Err(e)
                }
                Some(e) => Err(e),
                None => {
                    s.stored.extend(split(lines));
                    Ok(())
                }
            }
        }

        fn ping(&self) -> Result<(), SinkError> {
            if self.lock().ping_fails {
                Err(SinkError::Unreachable("connection refused".into()))
            } else {
                Ok(())
            }
        }

        fn schema(&self, _measurements: &[&str]) -> Result<Option<Known>, SinkError> {
            Ok(self.lock().schema.clone())
        }

        fn field_types_of(&self, _database: &str) -> Result<Option<Known>, SinkError> {
            Ok(self.lock().schema.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_by_what_they_mean_for_the_points() {
        let disposition = |status| SinkError::from_status(status, String::new()).disposition();
        // Anything that does not say the data is wrong keeps the points: 5xx, throttling,
        // and 4xx a proxy in front of InfluxDB may answer.
        for s in [500, 502, 503, 504, 429, 408, 405, 409, 411, 415, 499] {
            assert_eq!(disposition(s), Disposition::Retry, "{s}");
        }
        for s in [401, 403, 404] {
            assert_eq!(disposition(s), Disposition::RetryMisconfigured, "{s}");
        }
        for s in [400, 413, 422] {
            assert_eq!(disposition(s), Disposition::Reject, "{s}");
        }
        assert_eq!(
            SinkError::Unreachable("x".into()).disposition(),
            Disposition::Retry
        );
        assert_eq!(
            SinkError::TimedOut("x".into()).disposition(),
            Disposition::Retry
        );
        use std::io::ErrorKind as K;
        for kind in [K::ConnectionReset, K::BrokenPipe, K::UnexpectedEof] {
            let e = SinkError::from_io(kind, "x".into());
            assert!(matches!(e, SinkError::Broken(_)), "{kind:?}");
            assert_eq!(e.disposition(), Disposition::Retry, "{kind:?}");
        }
        assert!(matches!(
            SinkError::from_io(K::TimedOut, "x".into()),
            SinkError::TimedOut(_)
        ));
        assert!(matches!(
            SinkError::from_io(K::ConnectionRefused, "x".into()),
            SinkError::Unreachable(_)
        ));
        // For a client's own database, a missing or closed database refuses the points; for
        // the gateway's own, or with wrong credentials, they wait.
        let target = OwnedTarget {
            database: "theirs".into(),
            retention_policy: String::new(),
        };
        for s in [403, 404] {
            let e = SinkError::from_status(s, String::new());
            assert_eq!(e.disposition_for(Some(&target)), Disposition::Reject, "{s}");
            assert_eq!(
                e.disposition_for(None),
                Disposition::RetryMisconfigured,
                "{s}"
            );
        }
        let unauthorized = SinkError::from_status(401, String::new());
        assert_eq!(
            unauthorized.disposition_for(Some(&target)),
            Disposition::RetryMisconfigured
        );
        let busy = SinkError::from_status(503, String::new());
        assert_eq!(busy.disposition_for(Some(&target)), Disposition::Retry);
        assert_eq!(
            SinkError::from_status(413, "too big".into()).to_string(),
            "influxdb answered 413: too big"
        );
    }

    /// A write that got no answer in time says so, and which setting bounds it: "unreachable"
    /// sent operators looking for a network fault when InfluxDB was only slow.
    #[test]
    fn a_timeout_is_told_as_one_not_as_unreachable() {
        let told = SinkError::TimedOut("timeout: global".into()).to_string();
        assert!(
            told.contains("did not answer within influxdb.timeout")
                && !told.contains("unreachable"),
            "{told}"
        );
        let told = SinkError::Unreachable("connection refused".into()).to_string();
        assert_eq!(told, "influxdb is unreachable: connection refused");
    }
}
