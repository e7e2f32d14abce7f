//! Writing one batch: its records' units as pieces, in one write; a write InfluxDB refuses is
//! split until the refused pieces stand alone and are dead-lettered (or, for a run's heartbeat,
//! counted once its reason is known); runs known to be refused are probed in a write of their
//! own. What a batch's write settled ([`Settled`]) goes back to the deliverer's loop
//! (`deliverer.rs`), which keeps a batch whose write failed in a way that may pass.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use uuid::Uuid;

use super::sink::{Disposition, SinkError};
use super::{Delivery, MIN_BODY_LIMIT, REFUSALS_KEPT, RESET_SUSPECT_BYTES, RunRefusal, lock};
use crate::ingest::line_protocol;
use crate::logtext::{DEAD_LETTER_FAILURE_LINES, REFUSED_POINTS_LINES};
use crate::stats::Stats;
use crate::storage::dead_letters::{Kept, Key};
use crate::storage::log::{OwnedTarget, Read};
use crate::storage::record::Kind;

/// What a try at writing a batch settled: the requests InfluxDB refused (their record's number
/// and InfluxDB's reason), the points it stored of records that waited through a failure, the
/// pieces settled, and the failure that ended the try early, if one did: what it settled
/// before stays settled ([`Carried`]).
#[derive(Default)]
pub(super) struct Settled {
    pub(super) dead: Vec<(u64, String)>,
    /// Records up to this number were written before InfluxDB took writes again after a
    /// failure (0: none).
    retried_upto: u64,
    /// Points stored of those records: `points_replayed`.
    pub(super) replayed: usize,
    /// The pieces stored, dead-lettered or counted as refused: their record and unit, and
    /// where their lines are in the unit's (bytes).
    done: Vec<((u64, u32), Range<usize>)>,
    /// The failure that may pass which ended the try (what is not settled waits for the next).
    pub(super) failed: Option<SinkError>,
}

impl Settled {
    /// Nothing settled yet, of a batch whose records up to `retried_upto` waited through a
    /// failure.
    fn new(retried_upto: u64) -> Settled {
        Settled {
            retried_upto,
            ..Settled::default()
        }
    }

    /// A try that settled nothing: it failed with `e`.
    pub(super) fn failed(e: SinkError) -> Settled {
        Settled {
            failed: Some(e),
            ..Settled::default()
        }
    }

    /// `piece` stored: its points counted in `points_written`, and as replayed when its
    /// record waited through a failure.
    fn count_stored(&mut self, stats: &Stats, piece: &Piece<'_>) {
        let points = piece.points as usize;
        if piece.seq <= self.retried_upto {
            self.replayed += points;
        }
        Stats::add(&stats.points_written, points);
        self.settled(piece);
    }

    /// `piece` is settled: a later try of its batch leaves it out.
    fn settled(&mut self, piece: &Piece<'_>) {
        let at = piece.at as usize;
        self.done
            .push(((piece.seq, piece.unit), at..at + piece.lines.len()));
    }
}

/// What tries of batches that failed settled before the failure, kept by the deliverer until
/// their records are settled: the next try writes only the pieces left, so no point is written
/// or counted twice (`points_written`, `points_replayed`, dead letters, refused heartbeats),
/// and the refusals found are told when their records are settled (to a request that reads its
/// outcome then: one waiting was answered by the failure).
#[derive(Default)]
pub(super) struct Carried {
    /// By record and unit, the bytes of the unit's lines settled.
    done: HashMap<(u64, u32), Vec<Range<usize>>>,
    /// The requests refused, with InfluxDB's reason, of records not yet settled.
    dead: Vec<(u64, String)>,
}

impl Carried {
    /// Keeps what a try that failed (or one written beside it, which goes again after it)
    /// settled; the points it stored of records that waited are counted as replayed now.
    pub(super) fn keep(&mut self, settled: Settled, stats: &Stats) {
        for (key, range) in settled.done {
            self.done.entry(key).or_default().push(range);
        }
        self.dead.extend(settled.dead);
        Stats::add(&stats.points_replayed, settled.replayed);
    }

    /// Records up to `last` are settled: what was kept of them is let go, and the refusals
    /// found of them by earlier tries are added to `dead`.
    pub(super) fn settle(&mut self, last: u64, dead: &mut Vec<(u64, String)>) {
        if !self.done.is_empty() {
            self.done.retain(|&(seq, _), _| seq > last);
        }
        if !self.dead.is_empty() {
            let (theirs, later) = std::mem::take(&mut self.dead)
                .into_iter()
                .partition(|(seq, _)| *seq <= last);
            self.dead = later;
            dead.extend(theirs);
        }
    }

    /// The pieces of `piece` (a whole unit) not settled yet: itself when none of it is, else
    /// one piece for each run of lines left.
    fn left<'a>(&self, piece: Piece<'a>, out: &mut Vec<Piece<'a>>) {
        let Some(done) = self.done.get(&(piece.seq, piece.unit)) else {
            out.push(piece);
            return;
        };
        let mut done = done.clone();
        done.sort_by_key(|r| r.start);
        let mut from = 0;
        let mut gaps = Vec::new();
        for range in done {
            if range.start > from {
                gaps.push(from..range.start);
            }
            from = from.max(range.end);
        }
        if from < piece.lines.len() {
            gaps.push(from..piece.lines.len());
        }
        for gap in gaps {
            let lines = &piece.lines[gap.clone()];
            let count = line_protocol::split_lines(lines).count();
            if count == 0 {
                continue;
            }
            out.push(Piece {
                at: gap.start as u32,
                line: line_protocol::split_lines(&piece.lines[..gap.start]).count() as u32,
                points: count as u32,
                lines,
                ..piece
            });
        }
    }
}

/// A unit of a batch (or a part of one, when a unit too large for one write was cut), with
/// the record it belongs to.
#[derive(Clone, Copy)]
pub(super) struct Piece<'a> {
    seq: u64,
    kind: Kind,
    /// Where its points go: a write through InfluxDB's API; `None`: `[influxdb]`'s database.
    target: Option<&'a OwnedTarget>,
    /// The client that wrote its record (a token's name); `None`: none. Its dead letter is
    /// counted in that client's share.
    client: Option<&'a str>,
    run: Uuid,
    /// The unit's place in its record: with `seq` and `line`, the key of its dead letter.
    unit: u32,
    /// The first of the unit's lines this piece holds (0 unless the unit was cut).
    line: u32,
    /// Where its lines begin in the unit's, in bytes (0 unless the unit was cut).
    at: u32,
    points: u32,
    lines: &'a str,
}

impl<'a> Piece<'a> {
    /// A run's heartbeat (not a request's points).
    fn is_heartbeat(&self) -> bool {
        self.kind == Kind::Heartbeats && !self.run.is_nil()
    }

    /// The piece cut in two at its middle line, or `None` for a single line.
    fn halves(&self) -> Option<(Piece<'a>, Piece<'a>)> {
        let starts: Vec<usize> = line_protocol::split_lines(self.lines)
            .map(|line| line.as_ptr() as usize - self.lines.as_ptr() as usize)
            .collect();
        let mid = starts.len() / 2;
        let cut = *starts.get(mid).filter(|_| mid > 0)?;
        let (head, tail) = self.lines.split_at(cut);
        let first = Piece {
            points: mid as u32,
            lines: head,
            ..*self
        };
        let second = Piece {
            line: self.line + mid as u32,
            at: self.at + cut as u32,
            points: (starts.len() - mid) as u32,
            lines: tail,
            ..*self
        };
        Some((first, second))
    }
}

impl Delivery {
    /// Writes what is left of a batch of records (what `carried` does not hold as settled by
    /// earlier tries): what it settled, with the failure that may pass which ended the try, if
    /// one did. The heartbeats of runs InfluxDB refused before go in a write of their own
    /// ([`Delivery::probe_refused`]), so that they never make everyone else's points wait
    /// while a shared write is split to find them again.
    pub(super) fn deliver(
        &self,
        batch: &[Read],
        carried: &Carried,
        retried_upto: u64,
        stats: &Stats,
    ) -> Settled {
        let mut pieces = Vec::new();
        for record in batch {
            for (unit, (u, lines)) in record.units_with_lines().enumerate() {
                if u.points == 0 {
                    continue;
                }
                let piece = Piece {
                    seq: record.seq,
                    kind: record.kind,
                    target: record.target.as_ref(),
                    client: record.client.as_deref(),
                    run: u.run,
                    unit: unit as u32,
                    line: 0,
                    at: 0,
                    points: u.points,
                    lines,
                };
                carried.left(piece, &mut pieces);
            }
        }
        let refusals = lock(&self.refusals);
        let (known, others): (Vec<Piece<'_>>, Vec<Piece<'_>>) = pieces
            .into_iter()
            .partition(|p| p.is_heartbeat() && refusals.contains_key(&p.run));
        drop(refusals);
        let mut out = Settled::new(retried_upto);
        let mut tried = Ok(());
        if !others.is_empty() {
            tried = self.write_pieces(&others, stats, &mut out);
        }
        if tried.is_ok() && !known.is_empty() {
            tried = self.probe_refused(&known, stats, &mut out);
        }
        out.failed = tried.err();
        out
    }

    /// Writes `pieces` as one write. Only InfluxDB's definite refusal of the data sends
    /// anything to the dead letters: a refused write of several pieces is written again in
    /// parts until the refused pieces stand alone ([`Delivery::write_split`]); a 413 is a
    /// refusal only of a single line over 1 KiB ([`MIN_BODY_LIMIT`]), and not even that once
    /// a smaller line got one, until a write is stored again; lines InfluxDB 3 names are
    /// refused and the rest counted as stored. Every other failure (5xx, 429, a timeout, a
    /// broken connection, credentials) is returned, and the caller keeps the batch to try
    /// again what is left of it ([`Carried`]); a connection that broke while sending a large
    /// body, while `/ping` answers, is taken for a body limit and the write is split, never
    /// refused for it.
    fn write_pieces(
        &self,
        pieces: &[Piece<'_>],
        stats: &Stats,
        out: &mut Settled,
    ) -> Result<(), SinkError> {
        let body = join(pieces);
        // A batch holds records of one target (`batch_len`), so its pieces share it.
        let error = match self.write(pieces[0].target, &body, stats) {
            Ok(()) => {
                for piece in pieces {
                    out.count_stored(stats, piece);
                }
                return Ok(());
            }
            Err(e) => e,
        };
        // Counted as InfluxDB counts lines, not by what the units say they hold.
        let one_line =
            || pieces.len() == 1 && line_protocol::split_lines(pieces[0].lines).nth(1).is_none();
        match error {
            SinkError::Refused {
                status,
                message,
                lines: Some(refused),
            } => {
                // InfluxDB 3 names the refused lines and stored the others (a partial write):
                // the pieces holding a refused line are dead-lettered, the rest are written.
                // Its line numbers count lines as its parser splits them (a newline inside a
                // string value does not end a line), and so does `split_lines`.
                let e = SinkError::Refused {
                    status,
                    message,
                    lines: None,
                };
                let (holding, lines) = holding_named(pieces, &refused);
                if refused.iter().any(|&line| line >= lines) {
                    // The answer does not fit the body sent: find the refused lines by
                    // writing in parts, as when InfluxDB does not name them.
                    return self.refused_write(pieces, e, stats, out);
                }
                for (piece, refused) in pieces.iter().zip(holding) {
                    if refused {
                        self.refused(piece, &e, stats, out);
                    } else {
                        out.count_stored(stats, piece);
                    }
                }
                Ok(())
            }
            e @ SinkError::Refused { .. } => self.refused_write(pieces, e, stats, out),
            // A single line of no more than the smallest body the gateway ever cuts writes
            // to: a 413 cannot be about its size, but about a body limit (InfluxDB's, or a
            // proxy's) set below any write. Kept and tried again, as a failure only a person
            // can fix; never a dead letter.
            // Once such a limit was met, until a write is stored again, a 413 to a longer line
            // is not taken as about that line either.
            SinkError::TooLarge { message }
                if one_line()
                    && (body.len() <= MIN_BODY_LIMIT
                        || self.body_limit_broken.load(Ordering::Relaxed)) =>
            {
                self.body_limit_broken.store(true, Ordering::Relaxed);
                let e = SinkError::Misconfigured {
                    status: 413,
                    message: format!(
                        "{message} (to a write of a single line of {} bytes: the body limit of InfluxDB, or of a proxy in front of it, is set below what it must take)",
                        body.len()
                    ),
                    by_influxdb: false,
                };
                // The health says so too: InfluxDB takes no write, for this reason.
                self.record_write(pieces[0].target, &Err(e.clone()));
                Err(e)
            }
            e @ SinkError::TooLarge { .. } if one_line() => {
                // A single line InfluxDB will not take for its size: a definite refusal.
                self.refused(&pieces[0], &e, stats, out);
                Ok(())
            }
            e @ SinkError::TooLarge { .. } => {
                self.learn_body_limit(body.len());
                log::debug!(
                    "influxdb refused a write of {} bytes as too large; writing it in parts: {e}",
                    body.len()
                );
                self.write_split(pieces, &e, stats, out)
            }
            SinkError::Broken(why)
                if body.len() > RESET_SUSPECT_BYTES && !one_line() && self.sink.ping().is_ok() =>
            {
                // InfluxDB answers, yet the connection broke while a large body was being
                // sent: influxd answers 413 and closes on a body over its limit before the
                // client has sent it all. It may also have been a passing fault, so it is
                // never a refusal: the write is split, and writes stay smaller from now on.
                log::warn!(
                    "the connection to influxdb broke while sending {} bytes, and /ping answers: taken for a body limit, the write goes in parts ({why})",
                    body.len()
                );
                self.learn_body_limit(body.len());
                let e = SinkError::Broken(why);
                self.write_split(pieces, &e, stats, out)
            }
            // A client's own database, bucket or retention policy that InfluxDB says is
            // missing or closed to the gateway (`SinkError::disposition_for`): only a person
            // can fix it, and keeping the batch would hold back every other target's points
            // and the gateway's own behind it. Refused: to the dead letters with their target,
            // for `replay-dead-letters` once it is fixed.
            e @ SinkError::Misconfigured { .. }
                if self.disposition_of(&e, pieces[0].target) == Disposition::Reject =>
            {
                for piece in pieces {
                    self.refused(piece, &e, stats, out);
                }
                Ok(())
            }
            e => Err(e),
        }
    }

    /// A write InfluxDB refused for its data (400, 422) without naming the lines: a piece
    /// alone is dead-lettered, several are written again in parts.
    fn refused_write(
        &self,
        pieces: &[Piece<'_>],
        e: SinkError,
        stats: &Stats,
        out: &mut Settled,
    ) -> Result<(), SinkError> {
        if let [piece] = pieces {
            self.refused(piece, &e, stats, out);
            return Ok(());
        }
        log::debug!(
            "influxdb refused a write of {} units; writing it in parts to find the refused ones: {e}",
            pieces.len()
        );
        self.write_split(pieces, &e, stats, out)
    }

    /// Writes `pieces` (more than one line), which failed with `e`, in parts: requests' points
    /// apart from heartbeats first (so a run's refused heartbeats never hold a request's points
    /// back), else in halves; a single piece is cut in halves at its lines.
    fn write_split(
        &self,
        pieces: &[Piece<'_>],
        e: &SinkError,
        stats: &Stats,
        out: &mut Settled,
    ) -> Result<(), SinkError> {
        let parts: Vec<Vec<Piece<'_>>> = match pieces {
            [piece] => match piece.halves() {
                Some((first, second)) => vec![vec![first], vec![second]],
                // The callers split only what holds more than one line; a line cannot be cut.
                None if e.disposition() == Disposition::Reject => {
                    self.refused(piece, e, stats, out);
                    return Ok(());
                }
                None => return Err(e.clone()),
            },
            _ if pieces.iter().any(|p| p.is_heartbeat())
                && pieces.iter().any(|p| !p.is_heartbeat()) =>
            {
                let (beats, requests): (Vec<Piece<'_>>, Vec<Piece<'_>>) =
                    pieces.iter().partition(|p| p.is_heartbeat());
                vec![requests, beats]
            }
            _ => {
                let (first, second) = pieces.split_at(pieces.len() / 2);
                vec![first.to_vec(), second.to_vec()]
            }
        };
        for part in parts {
            self.write_pieces(&part, stats, out)?;
        }
        Ok(())
    }

    /// Writes the heartbeats of runs InfluxDB refused before, as one write of their own, each
    /// tick: a probe, never split. Runs whose heartbeat InfluxDB takes (the whole write
    /// stored, or InfluxDB 3 not naming their line) are known as refused no longer; the others
    /// are counted as refused again, without a dead letter (each run has one for its reason;
    /// a run probed alone, or with only its own heartbeats, is refused as usual, so a new
    /// reason of its own gets one).
    /// InfluxDB 1.x and 2.x store the good lines of a partial write, so a run that InfluxDB
    /// takes again among refused ones still has its heartbeats stored.
    fn probe_refused(
        &self,
        known: &[Piece<'_>],
        stats: &Stats,
        out: &mut Settled,
    ) -> Result<(), SinkError> {
        let body = join(known);
        let refused: Vec<bool> = match self.write(None, &body, stats) {
            Ok(()) => vec![false; known.len()],
            Err(SinkError::Refused {
                lines: Some(lines), ..
            }) => holding_named(known, &lines).0,
            Err(e) if e.disposition() == Disposition::Reject => {
                if known.iter().all(|p| p.run == known[0].run) {
                    // One run's heartbeats alone (one tick's, or several ticks' delivered
                    // together): the refusal is the run's own, so a new reason gets its dead
                    // letter, once.
                    for piece in known {
                        self.refused(piece, &e, stats, out);
                    }
                    return Ok(());
                }
                vec![true; known.len()]
            }
            Err(e) => return Err(e),
        };
        let mut taken = 0;
        let mut refusals = lock(&self.refusals);
        for (piece, refused) in known.iter().zip(refused) {
            if refused {
                out.settled(piece);
                Stats::add(&stats.heartbeats_refused, 1);
                if let Some(entry) = refusals.get_mut(&piece.run) {
                    entry.count += 1;
                    entry.at = SystemTime::now();
                }
            } else {
                out.count_stored(stats, piece);
                refusals.remove(&piece.run);
                taken += 1;
            }
        }
        drop(refusals);
        if taken > 0 {
            log::info!("influxdb takes the heartbeats of {taken} runs it refused before");
        }
        Ok(())
    }

    /// A unit InfluxDB refused on its own: a request's points go to the dead letters; a run's
    /// heartbeat too, the first time for each reason, and is counted after that.
    fn refused(&self, piece: &Piece<'_>, e: &SinkError, stats: &Stats, out: &mut Settled) {
        self.refusals_seen.fetch_add(1, Ordering::Relaxed);
        out.settled(piece);
        let message = e.to_string();
        let points = piece.points as usize;
        if piece.kind == Kind::Heartbeats && !piece.run.is_nil() {
            Stats::add(&stats.heartbeats_refused, 1);
            let mut refusals = lock(&self.refusals);
            let seen = refusals.get(&piece.run).is_some_and(|r| r.error == message);
            let entry = refusals.entry(piece.run).or_insert_with(|| RunRefusal {
                error: message.clone(),
                at: SystemTime::now(),
                count: 0,
            });
            entry.error = message.clone();
            entry.at = SystemTime::now();
            entry.count += 1;
            if refusals.len() > REFUSALS_KEPT {
                forget_oldest(&mut refusals);
            }
            drop(refusals);
            if seen {
                return;
            }
            if REFUSED_POINTS_LINES.allows(log::Level::Error, Instant::now()) {
                log::error!(
                    "influxdb refused the heartbeat of run {}; it goes to the dead letters once for this reason, later ones are counted: {message}",
                    piece.run
                );
            }
        } else {
            if REFUSED_POINTS_LINES.allows(log::Level::Error, Instant::now()) {
                log::error!(
                    "influxdb refused {points} points (record {}, unit {}, from its line {}); they go to the dead letters: {message}",
                    piece.seq,
                    piece.unit,
                    piece.line
                );
            }
            out.dead.push((piece.seq, message.clone()));
        }
        match self.dead.store(
            Key {
                record: piece.seq,
                unit: piece.unit,
                line: piece.line,
            },
            piece.client,
            piece.target,
            piece.lines,
            points as u64,
            &message,
        ) {
            Ok(Kept::Kept) => Stats::add(&stats.points_dead_lettered, points),
            Ok(Kept::Dropped) => Stats::add(&stats.points_dropped, points),
            Err(io) => {
                // The points can be kept nowhere; holding up everything behind them would not
                // bring them back.
                if DEAD_LETTER_FAILURE_LINES.allows(log::Level::Error, Instant::now()) {
                    log::error!(
                        "cannot write a dead letter ({io}); {points} refused points are dropped"
                    );
                }
                Stats::add(&stats.points_dropped, points);
            }
        }
    }
}

/// Forgets the tenth of the refusals heard of longest ago.
fn forget_oldest(refusals: &mut HashMap<Uuid, RunRefusal>) {
    let mut times: Vec<SystemTime> = refusals.values().map(|r| r.at).collect();
    times.sort_unstable();
    let cut = times[times.len() / 10];
    refusals.retain(|_, r| r.at > cut);
}

/// Which of `pieces`, written as one body, hold a line InfluxDB 3 named as refused (`named`:
/// 0-based, counted as its parser splits lines, a newline inside a string value ending none,
/// as [`line_protocol::split_lines`] counts them), and how many lines the body has.
fn holding_named(pieces: &[Piece<'_>], named: &[usize]) -> (Vec<bool>, usize) {
    let mut first_line = 0;
    let holding = pieces
        .iter()
        .map(|piece| {
            let lines = first_line..first_line + line_protocol::split_lines(piece.lines).count();
            first_line = lines.end;
            named.iter().any(|line| lines.contains(line))
        })
        .collect();
    (holding, first_line)
}

/// The lines of several units as one body. Each unit's lines end with '\n'; one that does not
/// gets it, so lines of two units never run together.
fn join(pieces: &[Piece<'_>]) -> String {
    let mut body = String::with_capacity(pieces.iter().map(|p| p.lines.len() + 1).sum());
    for piece in pieces {
        body.push_str(piece.lines);
        if !piece.lines.is_empty() && !piece.lines.ends_with('\n') {
            body.push('\n');
        }
    }
    body
}
