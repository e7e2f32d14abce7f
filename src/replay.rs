//! `metrics-consumer replay-dead-letters`: sends each dead letter to InfluxDB again, oldest
//! first, and says what came of each.
//!
//! - delivered: the letter is removed; when it cannot be, it stays and is sent again by the
//!   next replay (InfluxDB keeps one point per series and timestamp, so that stores nothing
//!   twice), and the others go on;
//! - refused again (InfluxDB's definite refusal, as delivery sorts failures:
//!   [`SinkError::disposition_for`]): the letter stays, its `.error` file with InfluxDB's new
//!   reason;
//! - unreadable (not UTF-8, a target line that does not read, not a file): named, and kept as
//!   it is; the others go on;
//! - a failure that may pass (InfluxDB unreachable, 5xx, a timeout) or that the configuration
//!   causes (credentials, the database): the replay stops at once, since every letter after it
//!   would fail the same way, and no letter is changed: each keeps the reason InfluxDB gave.
//!
//! [`Replayed`] counts them; [`Replayed::outcome`] is what the exit status says (main.rs maps it
//! to a number, documented in docs/delivery.md).

use std::fmt;
use std::path::PathBuf;

use crate::delivery::sink::{Disposition, Sink, SinkError};
use crate::storage::dead_letters;

/// What a replay came to: how many letters ended each way.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Written to InfluxDB (removed, or not: `not_removed`).
    pub delivered: usize,
    /// Of the delivered, those that could not be removed: sent again next time.
    pub not_removed: usize,
    /// Refused again by InfluxDB, definitely.
    pub refused: usize,
    /// Of the refused, those whose new reason could not be written.
    pub reason_not_recorded: usize,
    /// Could not be read: kept as they are.
    pub unreadable: usize,
    /// Not sent, or sent without an answer that says anything of the letter, when the replay
    /// stopped: unchanged.
    pub untried: usize,
    /// Why the replay stopped before the last letter.
    pub stopped: Option<SinkError>,
}

/// Why a replay did not leave the dead letters empty, the gravest first (the exit status says
/// the first that holds).
#[derive(Debug)]
pub enum Unfinished {
    /// InfluxDB could not take the writes: the replay stopped, `left` letters unchanged.
    Influxdb { error: SinkError, left: usize },
    /// Letters whose files could not be read, removed (once delivered) or given their new
    /// reason.
    Files {
        unreadable: usize,
        not_removed: usize,
        reason_not_recorded: usize,
    },
    /// Letters InfluxDB refused again.
    StillRefused(usize),
}

/// Sends `letters` (the `.lp` files of dead letters, oldest first) to `sink`, telling each
/// one's trouble on stderr as it comes.
pub fn send(letters: &[PathBuf], sink: &impl Sink) -> Replayed {
    let mut replayed = Replayed::default();
    for (i, path) in letters.iter().enumerate() {
        let shown = path.display();
        let (target, lines) = match dead_letters::read_letter(path) {
            Ok(letter) => letter,
            Err(e) => {
                eprintln!("{shown}: cannot be read, kept as it is: {e}");
                replayed.unreadable += 1;
                continue;
            }
        };
        let written = match &target {
            None => sink.write(&lines),
            Some(target) => sink.write_to(target, &lines),
        };
        let error = match written {
            Ok(()) => {
                replayed.delivered += 1;
                if let Err(e) = dead_letters::remove(path) {
                    eprintln!(
                        "{shown}: delivered, but it could not be removed: {e}; the next replay-dead-letters will send it again, which stores nothing twice (InfluxDB keeps one point per series and timestamp: a point sent again overwrites itself)"
                    );
                    replayed.not_removed += 1;
                }
                continue;
            }
            Err(error) => error,
        };
        if error.disposition_for(target.as_ref()) != Disposition::Reject {
            replayed.untried = letters.len() - i;
            replayed.stopped = Some(error);
            break;
        }
        replayed.refused += 1;
        match dead_letters::update(path, &error.to_string()) {
            Ok(()) => eprintln!("{shown}: refused again: {error}"),
            Err(e) => {
                eprintln!(
                    "{shown}: refused again: {error}; the new reason could not be recorded beside it (its .error file keeps the old one): {e}"
                );
                replayed.reason_not_recorded += 1;
            }
        }
    }
    replayed
}

impl Replayed {
    /// `Ok` when every letter was delivered and removed; else the gravest reason why not.
    pub fn outcome(self) -> Result<(), Unfinished> {
        if let Some(error) = self.stopped {
            return Err(Unfinished::Influxdb {
                error,
                left: self.untried,
            });
        }
        if self.unreadable + self.not_removed + self.reason_not_recorded > 0 {
            return Err(Unfinished::Files {
                unreadable: self.unreadable,
                not_removed: self.not_removed,
                reason_not_recorded: self.reason_not_recorded,
            });
        }
        if self.refused > 0 {
            return Err(Unfinished::StillRefused(self.refused));
        }
        Ok(())
    }
}

/// The summary line: every count, always, in one order, for people and scripts alike.
impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dead letters delivered, {} still refused, {} unreadable, {} left untried",
            self.delivered, self.refused, self.unreadable, self.untried
        )
    }
}

impl fmt::Display for Unfinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfinished::Influxdb { error, left } => {
                let again = "run replay-dead-letters again once InfluxDB takes writes";
                let (what, then) = match error {
                    SinkError::Misconfigured { .. } => (
                        "InfluxDB does not take the gateway's writes as [influxdb] configures them",
                        "fix [influxdb] (`metrics-consumer --check-influxdb` says what is wrong), then run replay-dead-letters again",
                    ),
                    SinkError::Unavailable { .. } => ("InfluxDB is unavailable", again),
                    _ => ("InfluxDB could not be reached", again),
                };
                write!(
                    f,
                    "{what}, so the replay stopped ({error}): {left} dead letters left untouched, each with its reason; {then}"
                )
            }
            Unfinished::Files {
                unreadable,
                not_removed,
                reason_not_recorded,
            } => {
                let parts = [
                    (
                        *unreadable,
                        "dead letters could not be read (kept as they are)",
                    ),
                    (
                        *not_removed,
                        "delivered dead letters could not be removed (sent again next time)",
                    ),
                    (
                        *reason_not_recorded,
                        "refused dead letters could not be given their new reason",
                    ),
                ];
                let said: Vec<String> = parts
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {what}"))
                    .collect();
                write!(f, "{}; see the messages above", said.join(", "))
            }
            Unfinished::StillRefused(n) => write!(
                f,
                "{n} dead letters were refused again; each one's .error file holds InfluxDB's reason"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::sink::testing::{Answer, MemorySink};
    use crate::storage::tests::Dir;
    use std::fs;

    const OLD: &str = "2024-05-01T10:00:00Z influxdb answered 400: an old reason\n";

    /// Dead letters of one point each, with `bodies` as their files' text and the reason
    /// [`OLD`]; their paths, oldest first.
    fn letters(dir: &Dir, bodies: &[&str]) -> Vec<PathBuf> {
        let dead = dir.path().join(dead_letters::DIR);
        fs::create_dir_all(&dead).unwrap();
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let path = dead.join(format!("{:020}-0-1.lp", i + 1));
                fs::write(&path, body).unwrap();
                fs::write(path.with_extension("error"), OLD).unwrap();
                path
            })
            .collect()
    }

    fn reason(path: &std::path::Path) -> String {
        fs::read_to_string(path.with_extension("error")).unwrap()
    }

    /// Credentials InfluxDB refuses would meet every letter: the first stops the replay, and
    /// no letter's reason is replaced by it.
    #[test]
    fn refused_credentials_stop_the_replay_and_change_no_letter() {
        let dir = Dir::new("replay-credentials");
        let paths = letters(&dir, &["m v=1 1\n", "m v=2 2\n", "m v=3 3\n"]);
        let sink = MemorySink::new();
        sink.answer([Answer::Fail(SinkError::from_status(
            401,
            "authorization failed".into(),
        ))]);
        let replayed = send(&paths, &sink);
        assert_eq!(sink.bodies().len(), 1, "stopped at the first");
        assert_eq!(
            (replayed.delivered, replayed.refused, replayed.untried),
            (0, 0, 3)
        );
        for path in &paths {
            assert!(path.exists());
            assert_eq!(reason(path), OLD);
        }
        let said = replayed.outcome().unwrap_err();
        assert!(matches!(said, Unfinished::Influxdb { left: 3, .. }));
        assert!(
            said.to_string()
                .starts_with("InfluxDB does not take the gateway's writes"),
            "{said}"
        );
    }

    /// A client's own database InfluxDB says is missing refuses that letter alone, as the
    /// deliverer refuses it: it keeps the new reason, and the letters after it are delivered.
    #[test]
    fn a_targets_missing_database_refuses_that_letter_alone() {
        let dir = Dir::new("replay-target");
        let targeted = "# metrics-consumer target {\"database\":\"gone\",\"retention_policy\":\"\",\"precision\":\"ns\"}\nm v=1 1\n";
        let paths = letters(&dir, &[targeted, "m v=2 2\n"]);
        let sink = MemorySink::new();
        sink.answer([Answer::Fail(SinkError::from_status(
            404,
            "database not found: \"gone\"".into(),
        ))]);
        let replayed = send(&paths, &sink);
        assert_eq!((replayed.delivered, replayed.refused), (1, 1));
        assert!(paths[0].exists() && !paths[1].exists());
        assert!(reason(&paths[0]).contains("database not found"));
        assert_eq!(sink.stored(), ["m v=2 2"]);
        assert!(matches!(
            replayed.outcome(),
            Err(Unfinished::StillRefused(1))
        ));
    }

    /// The outcome names the gravest shortfall: InfluxDB stopping the replay, then the files,
    /// then refusals.
    #[test]
    fn the_outcome_is_the_gravest_shortfall() {
        let replayed = |f: fn(&mut Replayed)| {
            let mut r = Replayed::default();
            f(&mut r);
            r.outcome()
        };
        assert!(replayed(|_| {}).is_ok());
        assert!(replayed(|r| r.delivered = 3).is_ok());
        assert!(matches!(
            replayed(|r| r.refused = 2),
            Err(Unfinished::StillRefused(2))
        ));
        assert!(matches!(
            replayed(|r| {
                r.refused = 2;
                r.unreadable = 1;
            }),
            Err(Unfinished::Files { unreadable: 1, .. })
        ));
        assert!(matches!(
            replayed(|r| {
                r.delivered = 1;
                r.not_removed = 1;
            }),
            Err(Unfinished::Files { not_removed: 1, .. })
        ));
        assert!(matches!(
            replayed(|r| {
                r.unreadable = 1;
                r.untried = 4;
                r.stopped = Some(SinkError::Unreachable("connection refused".into()));
            }),
            Err(Unfinished::Influxdb { left: 4, .. })
        ));
    }
}
