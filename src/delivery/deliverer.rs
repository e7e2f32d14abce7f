//! The deliverer: reads the log in order and writes it to InfluxDB in batches; refusals are
//! split until the refused units stand alone and dead-lettered; runs known to be refused are
//! probed in a write of their own; a failure that may pass keeps the batch for the next try.
//! It holds no lock across I/O.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

use super::sink::{Disposition, SinkError};
use super::{
    BACKOFF_MAX, BACKOFF_MIN, DOWN, Delivery, MIN_BODY_LIMIT, REFUSALS_KEPT, RESET_SUSPECT_BYTES,
    RunRefusal, UP, WriteLimits, lock,
};
use crate::config::Acknowledge;
use crate::ingest::line_protocol;
use crate::stats::Stats;
use crate::storage::dead_letters::{Kept, Key};
use crate::storage::log::{OwnedTarget, Position, Read};
use crate::storage::record::Kind;

/// What a batch's write settled: the requests InfluxDB refused (their record's number and
/// InfluxDB's reason), and the points it stored of records tried before.
#[derive(Default)]
struct Settled {
    dead: Vec<(u64, String)>,
    /// Records up to this number were in a write that failed (0: none).
    retried_upto: u64,
    /// Points stored of those records: `points_replayed`.
    replayed: usize,
}

impl Settled {
    /// Nothing settled yet, of a batch whose records up to `retried_upto` were in a write that
    /// failed.
    fn new(retried_upto: u64) -> Settled {
        Settled {
            retried_upto,
            ..Settled::default()
        }
    }

    /// `points` of record `seq` stored: counted in `points_written`, and as replayed when the
    /// record was tried before.
    fn count_stored(&mut self, stats: &Stats, seq: u64, points: usize) {
        if seq <= self.retried_upto {
            self.replayed += points;
        }
        Stats::add(&stats.points_written, points);
    }
}

/// A unit of a batch (or a part of one, when a unit too large for one write was cut), with
/// the record it belongs to.
#[derive(Clone, Copy)]
struct Piece<'a> {
    seq: u64,
    kind: Kind,
    /// Where its points go: a write through InfluxDB's API; `None`: `[influxdb]`'s database.
    target: Option<&'a OwnedTarget>,
    run: Uuid,
    /// The unit's place in its record: with `seq` and `line`, the key of its dead letter.
    unit: u32,
    /// The first of the unit's lines this piece holds (0 unless the unit was cut).
    line: u32,
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
            points: (starts.len() - mid) as u32,
            lines: tail,
            ..*self
        };
        Some((first, second))
    }
}

/// A record's bytes of line protocol and its points: what the limits of a write count.
fn size_of(record: &Read) -> (usize, usize) {
    let bytes = record.units.iter().map(|u| u.lines.len()).sum();
    let points = record.units.iter().map(|u| u.points as usize).sum();
    (bytes, points)
}

/// How often, at most, the deliverer logs that it cannot read the log.
const READ_FAILURE_TOLD_EVERY: Duration = Duration::from_secs(60);

impl Delivery {
    /// The deliverer: takes the log to InfluxDB from `at` on, until the process ends.
    pub fn run(&self, mut at: Position, stats: &Stats) {
        self.prepare();
        if at.next_seq > 1 {
            // Everything before the first undelivered record was delivered by an earlier run.
            self.settle(at.next_seq - 1, Vec::new());
        }
        let mut queue: VecDeque<Read> = VecDeque::new();
        let mut backoff = BACKOFF_MIN;
        // The batch at the front failed at least once.
        // Records up to this number were in a write that failed (0: none): they go again, and
        // what of them is stored then is counted as replayed.
        let mut retried_upto = 0u64;
        // When the queued records were read: each read's last record and when, oldest first.
        // A record lingers `delivery.linger` from when it was read, so at most once: also
        // when it was read during a write, while the queue never empties.
        let mut found: VecDeque<(u64, Instant)> = VecDeque::new();
        // Set while the deliverer lingers: when the records it lingers for were read. Those
        // read right after came meanwhile, and count as read then: they wait no more.
        let mut lingering_since: Option<Instant> = None;
        // When a failure to read the log was last logged.
        let mut read_failure_told: Option<Instant> = None;
        // When InfluxDB was last probed while nothing waited to be written.
        let mut idle_probe: Option<Instant> = None;
        // Since when nothing has waited to be written.
        let mut idle_since: Option<Instant> = None;
        while !self.is_stopping() {
            let read_at = lingering_since.take().unwrap_or_else(Instant::now);
            if queue.iter().map(|r| r.bytes).sum::<u64>() < self.limits.max_bytes as u64 {
                match self.log.read(&mut at, self.limits.max_bytes as u64) {
                    Ok(more) => {
                        if let Some(last) = more.last() {
                            found.push_back((last.seq, read_at));
                        }
                        queue.extend(more)
                    }
                    Err(e) => {
                        // Said at once, then once a minute while it lasts.
                        if read_failure_told
                            .is_none_or(|at: Instant| at.elapsed() >= READ_FAILURE_TOLD_EVERY)
                        {
                            read_failure_told = Some(Instant::now());
                            log::error!("the deliverer cannot read the log: {e}");
                        }
                        self.pause(BACKOFF_MIN);
                        continue;
                    }
                }
            }
            if queue.is_empty() {
                found.clear();
                // Quiet for a second: how far the log is delivered is saved, if it is not.
                if idle_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
                    self.log.save_delivered_if_behind();
                }
                if self.up.load(Ordering::Relaxed) == DOWN
                    && idle_probe.is_none_or(|at: Instant| at.elapsed() >= backoff)
                {
                    // Nothing waits to be written, so a probe that answers is all there is to
                    // know: InfluxDB answers again (InfluxDB is down here only by a probe: a
                    // write that failed keeps its records waiting, so the queue is not empty).
                    idle_probe = Some(Instant::now());
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    match self.sink.ping() {
                        Ok(()) => {
                            self.up.store(UP, Ordering::Relaxed);
                            self.tell_answering();
                            backoff = BACKOFF_MIN;
                        }
                        Err(e) => {
                            self.record_probe(&Err(e.clone()));
                            self.tell_failure(&e);
                        }
                    }
                }
                self.log
                    .wait_for_more(at.next_seq - 1, Duration::from_secs(1), || {
                        self.is_stopping()
                    });
                continue;
            }
            idle_since = None;
            if let Some((since, left)) = self.linger_left(&queue, retried_upto > 0, &mut found) {
                // Records that fill no write wait, once, for more to go with them: then
                // what came meanwhile is read, and all of it written.
                lingering_since = Some(since);
                self.pause(left);
                continue;
            }
            let take = self.batch_len(&queue);
            let batch: Vec<Read> = queue.drain(..take).collect();
            let beside = self.beside(&batch, &queue);
            let second: Vec<Read> = queue.drain(..beside).collect();
            let (first, then) = if second.is_empty() {
                (self.deliver(&batch, retried_upto, stats), None)
            } else {
                std::thread::scope(|scope| {
                    let other = scope.spawn(|| self.deliver(&second, retried_upto, stats));
                    let first = self.deliver(&batch, retried_upto, stats);
                    let then = other.join().unwrap_or_else(|_| {
                        Err(SinkError::Unreachable("the second write panicked".into()))
                    });
                    (first, Some(then))
                })
            };
            // Settled in the log's order: the second only once the first is.
            let mut failed = None;
            let first_done = match first {
                Ok(settled) => {
                    let last = queue.is_empty() && second.is_empty();
                    self.delivered(&batch, settled, &mut retried_upto, last, stats);
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            };
            match then {
                Some(Ok(settled)) if failed.is_none() => {
                    self.delivered(&second, settled, &mut retried_upto, queue.is_empty(), stats)
                }
                Some(Err(e)) if failed.is_none() => failed = Some(e),
                _ => {}
            }
            match failed {
                None => backoff = BACKOFF_MIN,
                Some(e) => {
                    // Nothing of the failed batch is settled: it goes again, first in line,
                    // with the second behind it when the first failed. A second written
                    // meanwhile is written again after the first: its points share no point
                    // (series and time) with the first's, so the order of the two writes
                    // changes nothing InfluxDB holds.
                    let again: Vec<Read> = if first_done {
                        second
                    } else {
                        batch.into_iter().chain(second).collect()
                    };
                    if let Some(last) = again.last() {
                        retried_upto = retried_upto.max(last.seq);
                    }
                    for record in again.into_iter().rev() {
                        queue.push_front(record);
                    }
                    self.wait_for_influxdb(&e, &mut backoff);
                }
            }
        }
    }

    /// A batch written: its records' bytes go back to their clients' shares, and it is
    /// settled (its refused requests named by `dead`).
    fn delivered(
        &self,
        batch: &[Read],
        settled: Settled,
        retried_upto: &mut u64,
        queue_empty: bool,
        stats: &Stats,
    ) {
        let last = batch.last().map_or(0, |r| r.seq);
        // Stored after a failed try: what InfluxDB refused is not, nor records read since.
        Stats::add(&stats.points_replayed, settled.replayed);
        if last >= *retried_upto {
            *retried_upto = 0;
        }
        self.log.delivered(last, batch);
        self.settle(last, settled.dead);
        if queue_empty && self.log.undelivered().0 == 0 {
            self.tell_delivered();
        }
    }

    /// How many records of `queue` go in a second write beside `batch`'s, at the same time
    /// (0: none). Only when InfluxDB has a backlog to take: `batch` filled a write and the
    /// queue holds another of the same target, neither holding runs' heartbeats. And only when
    /// no point of the second has the series and time of one of `batch`'s: InfluxDB keeps the
    /// last write of a point, and two writes at once have no last. Two writes at once let InfluxDB use two cores; one after
    /// the other, a 5 000-line write at a time, it takes half of what its clients could send.
    fn beside(&self, batch: &[Read], queue: &VecDeque<Read>) -> usize {
        let target = batch.first().and_then(|r| r.target.as_ref());
        if queue.front().is_none_or(|r| r.target.as_ref() != target) {
            return 0;
        }
        let take = self.batch_len(queue);
        // Runs' heartbeats are sorted into those of runs InfluxDB refused before and the
        // others as a batch is written; two batches at once would sort them before either
        // knows what the other's write found.
        let beats = |r: &Read| r.kind == Kind::Heartbeats;
        if batch.iter().any(beats) || queue.iter().take(take).any(beats) {
            return 0;
        }
        let mut keys = std::collections::HashSet::new();
        for line in batch
            .iter()
            .flat_map(|r| &r.units)
            .flat_map(|u| line_protocol::split_lines(&u.lines))
        {
            match point_key(line) {
                Some(key) => keys.insert(key),
                None => return 0,
            };
        }
        let apart = queue
            .iter()
            .take(take)
            .flat_map(|r| &r.units)
            .flat_map(|u| line_protocol::split_lines(&u.lines))
            .all(|line| point_key(line).is_some_and(|key| !keys.contains(&key)));
        if apart { take } else { 0 }
    }

    /// How many records of `queue` (at least one) go in the next write.
    fn batch_len(&self, queue: &VecDeque<Read>) -> usize {
        let limits = WriteLimits {
            max_bytes: self.body_limit(),
            ..self.limits
        };
        // A write goes to one target: the records of the first one's.
        let target = queue.front().and_then(|r| r.target.as_ref());
        let same = queue
            .iter()
            .take_while(|r| r.target.as_ref() == target)
            .count();
        limits.first_write(queue.iter().take(same).map(size_of))
    }

    /// How much longer the records of `queue` wait for more ([`Delivery::lingers`]): when
    /// the first of them was read (`found`, of which the reads before it are let go), and what
    /// is left of `delivery.linger` since; `None`: they go now.
    fn linger_left(
        &self,
        queue: &VecDeque<Read>,
        retried: bool,
        found: &mut VecDeque<(u64, Instant)>,
    ) -> Option<(Instant, Duration)> {
        let front = queue.front()?.seq;
        while found.front().is_some_and(|&(last, _)| last < front) {
            found.pop_front();
        }
        if !self.lingers(queue, retried) {
            return None;
        }
        let read_at = found.front()?.1;
        let left = self.limits.linger.checked_sub(read_at.elapsed())?;
        (!left.is_zero()).then_some((read_at, left))
    }

    /// Whether the records of `queue` wait `delivery.linger` for more before they are
    /// written: with `acknowledge = "disk"` (in `"influxdb"` mode requests wait for the
    /// write), when they fill no write, and not for a batch that failed (`retried`: it goes
    /// as soon as InfluxDB takes writes again).
    fn lingers(&self, queue: &VecDeque<Read>, retried: bool) -> bool {
        if self.acknowledge != Acknowledge::Disk || self.limits.linger.is_zero() || retried {
            return false;
        }
        let (bytes, lines) = queue
            .iter()
            .map(size_of)
            .fold((0, 0), |(b, l), (rb, rl)| (b + rb, l + rl));
        // One write takes them all, with room for more.
        self.batch_len(queue) == queue.len()
            && bytes < self.body_limit()
            && lines < self.limits.max_lines
    }

    /// Writes a batch of records; `Ok` with the refused requests (settled: stored or
    /// dead-lettered), or the failure that may pass. The heartbeats of runs InfluxDB refused
    /// before go in a write of their own ([`Delivery::probe_refused`]), so that they never make
    /// everyone else's points wait while a shared write is split to find them again.
    fn deliver(
        &self,
        batch: &[Read],
        retried_upto: u64,
        stats: &Stats,
    ) -> Result<Settled, SinkError> {
        let pieces = batch.iter().flat_map(|record| {
            record
                .units
                .iter()
                .enumerate()
                .filter(|(_, u)| u.points > 0)
                .map(move |(unit, u)| Piece {
                    seq: record.seq,
                    kind: record.kind,
                    target: record.target.as_ref(),
                    run: u.run,
                    unit: unit as u32,
                    line: 0,
                    points: u.points,
                    lines: &u.lines,
                })
        });
        let refusals = lock(&self.refusals);
        let (known, others): (Vec<Piece<'_>>, Vec<Piece<'_>>) =
            pieces.partition(|p| p.is_heartbeat() && refusals.contains_key(&p.run));
        drop(refusals);
        let mut out = Settled::new(retried_upto);
        if !others.is_empty() {
            self.write_pieces(&others, stats, &mut out)?;
        }
        if !known.is_empty() {
            self.probe_refused(&known, stats, &mut out)?;
        }
        Ok(out)
    }

    /// Writes `pieces` as one write. Only InfluxDB's definite refusal of the data sends
    /// anything to the dead letters: a refused write of several pieces is written again in
    /// parts until the refused pieces stand alone ([`Delivery::write_split`]); a 413 is a
    /// refusal only of a single line; lines InfluxDB 3 names are refused and the rest counted
    /// as stored. Every other failure (5xx, 429, a timeout, a broken connection, credentials)
    /// is returned, and the caller keeps the whole batch to try again; a connection that broke
    /// while sending a large body, while `/ping` answers, is taken for a body limit and the
    /// write is split, never refused for it.
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
                    out.count_stored(stats, piece.seq, piece.points as usize);
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
                let counts: Vec<usize> = pieces
                    .iter()
                    .map(|p| line_protocol::split_lines(p.lines).count())
                    .collect();
                let total: usize = counts.iter().sum();
                if refused.iter().any(|&line| line >= total) {
                    // The answer does not fit the body sent: find the refused lines by
                    // writing in parts, as when InfluxDB does not name them.
                    return self.refused_write(pieces, e, stats, out);
                }
                let mut first_line = 0;
                for (piece, count) in pieces.iter().zip(counts) {
                    let range = first_line..first_line + count;
                    first_line += count;
                    if refused.iter().any(|line| range.contains(line)) {
                        self.refused(piece, &e, stats, out);
                    } else {
                        out.count_stored(stats, piece.seq, piece.points as usize);
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
            }) => {
                let mut first_line = 0;
                known
                    .iter()
                    .map(|piece| {
                        let count = line_protocol::split_lines(piece.lines).count();
                        let range = first_line..first_line + count;
                        first_line += count;
                        lines.iter().any(|line| range.contains(line))
                    })
                    .collect()
            }
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
                Stats::add(&stats.heartbeats_refused, 1);
                if let Some(entry) = refusals.get_mut(&piece.run) {
                    entry.count += 1;
                    entry.at = SystemTime::now();
                }
            } else {
                out.count_stored(stats, piece.seq, piece.points as usize);
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

    /// The bytes a write may take now: what InfluxDB was last found to take, for
    /// [`super::BODY_LIMIT_KEPT`] after it refused a larger one; then `influxdb.max_write_bytes` again.
    fn body_limit(&self) -> usize {
        let learned = self.learned_max_bytes.load(Ordering::Relaxed);
        if learned >= self.limits.max_bytes {
            return learned;
        }
        let kept = Duration::from_millis(self.body_limit_kept_ms.load(Ordering::Relaxed));
        let mut at = lock(&self.learned_at);
        if let Some(since) = at.map(|at| at.elapsed())
            && since >= kept
        {
            *at = None;
            self.learned_max_bytes
                .store(self.limits.max_bytes, Ordering::Relaxed);
            log::info!(
                "writes of up to {} bytes (influxdb.max_write_bytes) are tried again: influxdb refused larger ones than {learned} bytes {}s ago",
                self.limits.max_bytes,
                since.as_secs()
            );
            return self.limits.max_bytes;
        }
        learned
    }

    /// InfluxDB refused a write of `bytes` as too large: later batches are at most half that,
    /// for [`super::BODY_LIMIT_KEPT`].
    fn learn_body_limit(&self, bytes: usize) {
        let half = (bytes / 2).max(MIN_BODY_LIMIT);
        *lock(&self.learned_at) = Some(Instant::now());
        let before = self.learned_max_bytes.fetch_min(half, Ordering::Relaxed);
        if half >= before {
            return;
        }
        // Told as a warning once per limit: the hourly try of the configured size that InfluxDB
        // still refuses is only information.
        if self.body_limit_told.fetch_min(half, Ordering::Relaxed) <= half {
            log::info!(
                "influxdb still refuses writes of {bytes} bytes; writes stay at most {half} bytes"
            );
        } else {
            log::warn!(
                "influxdb refused a write of {bytes} bytes as too large; writes are now at most {half} bytes (influxdb.max_write_bytes is {}: lower it to InfluxDB's body limit)",
                self.limits.max_bytes
            );
        }
    }

    /// One InfluxDB write, counted. A sink that panics (a bug) fails the write as if InfluxDB
    /// did not answer, so the deliverer lives on and tries again later.
    fn write(
        &self,
        target: Option<&OwnedTarget>,
        body: &str,
        stats: &Stats,
    ) -> Result<(), SinkError> {
        Stats::add(&stats.influxdb_writes, 1);
        let result = catch_unwind(AssertUnwindSafe(|| match target {
            None => self.sink.write(body),
            Some(target) => self.sink.write_to(target, body),
        }))
        .unwrap_or_else(|_| {
            log::error!(
                "the InfluxDB client panicked while writing; the write is tried again later"
            );
            Err(SinkError::Unreachable(
                "the InfluxDB client panicked".into(),
            ))
        });
        self.record_write(target, &result);
        result
    }

    /// A unit InfluxDB refused on its own: a request's points go to the dead letters; a run's
    /// heartbeat too, the first time for each reason, and is counted after that.
    fn refused(&self, piece: &Piece<'_>, e: &SinkError, stats: &Stats, out: &mut Settled) {
        self.refusals_seen.fetch_add(1, Ordering::Relaxed);
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
            log::error!(
                "influxdb refused the heartbeat of run {}; it goes to the dead letters once for this reason, later ones are counted: {message}",
                piece.run
            );
        } else {
            log::error!(
                "influxdb refused {points} points (record {}, unit {}, from its line {}); they go to the dead letters: {message}",
                piece.seq,
                piece.unit,
                piece.line
            );
            out.dead.push((piece.seq, message.clone()));
        }
        match self.dead.store(
            Key {
                record: piece.seq,
                unit: piece.unit,
                line: piece.line,
            },
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
                log::error!(
                    "cannot write a dead letter ({io}); {points} refused points are dropped"
                );
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

/// A point's identity to InfluxDB, hashed: its series key (the text before the first
/// unescaped space: the gateway writes tags sorted, so one series has one text) and its
/// timestamp (the text after the last space). `None` for a line without a timestamp at its end
/// (its time would be InfluxDB's clock), or where the two cannot be told apart.
fn point_key(line: &str) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b' ' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    let series = line.get(..i)?;
    let at = line.rfind(' ').filter(|&at| at > i)?;
    let time = &line[at + 1..];
    let digits = time.strip_prefix('-').unwrap_or(time);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (series, time).hash(&mut hasher);
    Some(hasher.finish())
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
