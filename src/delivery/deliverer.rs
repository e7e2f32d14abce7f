//! The deliverer: reads the log in order and writes it to InfluxDB in batches (each written by
//! `pieces.rs`), two at once when a backlog allows, lingering for more in disk mode; a failure
//! that may pass keeps the batch for the next try, after a backoff probing `/ping`; the body
//! limit InfluxDB was found to take. It holds no lock across I/O.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::pieces::{Carried, Settled};
use super::sink::SinkError;
use super::{BACKOFF_MAX, BACKOFF_MIN, DOWN, Delivery, MIN_BODY_LIMIT, UP, WriteLimits, lock};
use crate::config::Acknowledge;
use crate::ingest::line_protocol;
use crate::stats::Stats;
use crate::storage::log::{OwnedTarget, Position, Read};
use crate::storage::record::Kind;

/// A record's bytes of line protocol and its points: what the limits of a write count.
fn size_of(record: &Read) -> (usize, usize) {
    let bytes = record.units.iter().map(|u| u.len()).sum();
    let points = record.units.iter().map(|u| u.points as usize).sum();
    (bytes, points)
}

/// How often, at most, the deliverer logs that it cannot read the log.
const READ_FAILURE_TOLD_EVERY: Duration = Duration::from_secs(60);

/// Drops the answers left to the deliverer when its loop ends, however it ends (a panic too):
/// their requests answer from their own threads.
struct DropAnswersAtEnd<'a>(&'a Delivery);

impl Drop for DropAnswersAtEnd<'_> {
    fn drop(&mut self) {
        self.0.drop_answers();
    }
}

impl Delivery {
    /// The deliverer: takes the log to InfluxDB from `at` on, until the process ends.
    pub fn run(&self, mut at: Position, stats: &Stats) {
        let _answers = DropAnswersAtEnd(self);
        self.prepare();
        if at.next_seq > 1 {
            // Everything before the first undelivered record was delivered by an earlier run.
            self.settle(at.next_seq - 1, Vec::new());
        }
        let mut queue: VecDeque<Read> = VecDeque::new();
        let mut backoff = BACKOFF_MIN;
        // Records up to this number were written before InfluxDB took writes again after a
        // failure (0: none): what of them is stored is counted as replayed. Records written
        // once it answers again did not wait through it.
        let mut retried_upto = 0u64;
        // What tries that failed settled of records still waiting.
        let mut carried = Carried::default();
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
                (self.deliver(&batch, &carried, retried_upto, stats), None)
            } else {
                std::thread::scope(|scope| {
                    let other =
                        scope.spawn(|| self.deliver(&second, &carried, retried_upto, stats));
                    let first = self.deliver(&batch, &carried, retried_upto, stats);
                    let then = other.join().unwrap_or_else(|_| {
                        Settled::failed(SinkError::Unreachable("the second write panicked".into()))
                    });
                    (first, Some(then))
                })
            };
            // Settled in the log's order: the second only once the first is. What a try
            // that failed settled before its failure, and what a second written beside a
            // first that failed settled, is carried until its records are settled.
            let mut failed = None;
            let first_done = first.failed.is_none();
            if first_done {
                let last = queue.is_empty() && second.is_empty();
                self.delivered(&batch, first, &mut carried, &mut retried_upto, last, stats);
            } else {
                failed = first.failed.clone();
                carried.keep(first, stats);
            }
            if let Some(then) = then {
                if failed.is_none() && then.failed.is_none() {
                    let last = queue.is_empty();
                    self.delivered(&second, then, &mut carried, &mut retried_upto, last, stats);
                } else {
                    failed = failed.or_else(|| then.failed.clone());
                    carried.keep(then, stats);
                }
            }
            match failed {
                None => backoff = BACKOFF_MIN,
                Some(e) => {
                    // What is not settled of the failed batch goes again, first in line, with
                    // the second behind it when the first failed. A second written meanwhile
                    // is carried as settled, and its records settled after the first's.
                    let again: Vec<Read> = if first_done {
                        second
                    } else {
                        batch.into_iter().chain(second).collect()
                    };
                    for record in again.into_iter().rev() {
                        queue.push_front(record);
                    }
                    self.wait_for_influxdb(&e, &mut backoff);
                    retried_upto = retried_upto.max(self.log.last_written());
                }
            }
        }
    }

    /// A batch written: its records' bytes go back to their clients' shares, and it is
    /// settled (its refused requests named by `dead`).
    fn delivered(
        &self,
        batch: &[Read],
        mut settled: Settled,
        carried: &mut Carried,
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
        carried.settle(last, &mut settled.dead);
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
            .flat_map(Read::units_with_lines)
            .flat_map(|(_, lines)| line_protocol::split_lines(lines))
        {
            match point_key(line) {
                Some(key) => keys.insert(key),
                None => return 0,
            };
        }
        let apart = queue
            .iter()
            .take(take)
            .flat_map(Read::units_with_lines)
            .flat_map(|(_, lines)| line_protocol::split_lines(lines))
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
    pub(super) fn learn_body_limit(&self, bytes: usize) {
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
    pub(super) fn write(
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
}

/// A point's identity to InfluxDB: a checksum (CRC-32) of its series key (the text before the
/// first unescaped space: the gateway writes tags sorted, so one series has one text) and its
/// timestamp (the text after the last space, in nanoseconds). `None` for a line without a
/// timestamp at its end (its time would be InfluxDB's clock), or where the two cannot be told
/// apart. Two points of one series and time have one key; two others share one only when
/// their times are equal and their series' checksums collide, which keeps a second write from
/// going beside the first for nothing, and never the other way.
fn point_key(line: &str) -> Option<(u32, i64)> {
    let bytes = line.as_bytes();
    // The series key ends at the first space not escaped: backslashes are rare, so the search
    // jumps to the next space or backslash.
    let mut i = 0;
    while let Some(at) = memchr::memchr2(b' ', b'\\', bytes.get(i..)?) {
        i += at;
        if bytes.get(i) == Some(&b' ') {
            break;
        }
        i += 2;
    }
    let series = bytes.get(..i)?;
    let at = line.rfind(' ').filter(|&at| at > i)?;
    let time = &line[at + 1..];
    let digits = time.strip_prefix('-').unwrap_or(time);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((crc32fast::hash(series), time.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::point_key;
    use proptest::prelude::*;

    /// One series and time, one key; its series ends at the first space no backslash escapes;
    /// a line without a time of digits at its end has none.
    #[test]
    fn a_points_key_is_its_series_and_time() {
        let key = |line: &str| point_key(line).map(|(_, time)| time);
        assert_eq!(point_key("m,t=a v=1 5"), point_key("m,t=a v=2 5"));
        assert_ne!(point_key("m,t=a v=1 5"), point_key("m,t=a v=1 6"));
        assert_ne!(point_key("m,t=a v=1 5"), point_key("m,t=b v=1 5"));
        assert_eq!(key("m,t=a\\ b v=1 -5"), Some(-5));
        assert_ne!(point_key("m,t=a\\ b v=1 5"), point_key("m,t=a v=1 5"));
        assert_eq!(
            point_key("m,t=a\\\\ v=\"x y\" 7"),
            point_key("m,t=a\\\\ v=2 7")
        );
        for line in [
            "m,t=a v=1",
            "m v=1 5x",
            "m v=1 ",
            "m\\ v=1",
            "m,t=a\\",
            "nospace",
            "m v=1 99999999999999999999",
        ] {
            assert_eq!(point_key(line), None, "{line}");
        }
    }

    /// A name as clients write them: escapes of every kind, backslash runs, quotes, equals
    /// signs, non-ASCII.
    fn raw_name() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "b", "\\", "\\\\", "\\,", "\\ ", "\\=", "\\\"", "\"", "é", "🚀", "\\é", "x\\",
            ]),
            1..5,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A line's series as a client writes it, tags in the order given.
    fn raw_series() -> impl Strategy<Value = String> {
        (
            raw_name(),
            prop::collection::vec((raw_name(), raw_name()), 0..5),
        )
            .prop_map(|(m, tags)| {
                let mut s = m;
                for (k, v) in tags {
                    s.push_str(&format!(",{k}={v}"));
                }
                s
            })
    }

    /// A field set whose string values hold spaces, escaped quotes and backslashes, and digits
    /// after a space.
    fn raw_fields() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                raw_name(),
                prop::sample::select(vec![
                    "1",
                    "-2i",
                    "t",
                    "\"a b\"",
                    "\"x\\\" 5\"",
                    "\"\\\\\"",
                    "\" 7\"",
                    "1.5",
                ]),
            ),
            1..4,
        )
        .prop_map(|fields| {
            fields
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    proptest! {
        /// Two lines the write API accepted as one point (series and time), however
        /// their client wrote them (tags in another order, other fields, another spelling of
        /// the time), come out of `encode_ns` with one key, never `None`.
        #[test]
        fn one_point_one_key_through_encode_ns(
            a in raw_series(),
            fa in raw_fields(),
            fb in raw_fields(),
            time in any::<i64>(),
            reverse in any::<bool>(),
        ) {
            use crate::ingest::lp_parse::{Precision, parse};
            let body_a = format!("{a} {fa} {time}");
            let parsed_a = parse(&body_a, Precision::Nanosecond, 0);
            let Some(Ok(line_a)) = parsed_a.entries.first().map(|e| e.result.clone()) else {
                return Ok(());
            };
            // The same series, its tags the other way round.
            let b = if reverse {
                let mut parts = split_series(&a);
                parts[1..].reverse();
                parts.join(",")
            } else {
                a.clone()
            };
            let body_b = format!("{b} {fb} {time}");
            let parsed_b = parse(&body_b, Precision::Nanosecond, 0);
            let Some(Ok(line_b)) = parsed_b.entries.first().map(|e| e.result.clone()) else {
                return Ok(());
            };
            prop_assume!(line_a.measurement == line_b.measurement && line_a.tags == line_b.tags);
            let (mut ta, mut tb) = (String::new(), String::new());
            line_a.encode_ns(&mut ta);
            line_b.encode_ns(&mut tb);
            let (ka, kb) = (point_key(&ta), point_key(&tb));
            prop_assert!(ka.is_some(), "{:?} → {:?}", body_a, ta);
            prop_assert_eq!(ka, kb, "{:?} / {:?}", ta, tb);
            prop_assert_eq!(ka.map(|(_, t)| t), Some(line_a.time_ns));
        }

        /// No line makes `point_key` panic.
        #[test]
        fn any_line_is_keyed_without_panic(line in any::<String>(), series in raw_series(), f in raw_fields()) {
            let _ = point_key(&line);
            let _ = point_key(&format!("{series} {f}"));
            let _ = point_key(&format!("{series}\\"));
            let _ = point_key(&format!("{series} {f} 99999999999999999999"));
        }
    }

    /// A series as written cut at its unescaped commas (InfluxDB's one-byte-back rule).
    fn split_series(s: &str) -> Vec<String> {
        let b = s.as_bytes();
        let mut parts = Vec::new();
        let mut from = 0;
        for i in 0..b.len() {
            if b[i] == b',' && (i == 0 || b[i - 1] != b'\\') {
                parts.push(s[from..i].to_string());
                from = i + 1;
            }
        }
        parts.push(s[from..].to_string());
        parts
    }

    /// Lines of one point and lines without a key: escapes, negative times, times beyond i64, trailing
    /// backslashes, string fields holding spaces and `\"`.
    #[test]
    fn named_lines_are_keyed_as_their_point() {
        let same = [
            ("m,t=a\\\\\\ b v=\"x y\" -5", "m,t=a\\\\\\ b w=1i -5"),
            ("m\\ x,t=\\,a v=\"a\\\" 7\" 1", "m\\ x,t=\\,a v=1 1"),
            (
                "m,t=a v=\" 7\" -9223372036854775806",
                "m,t=a v=2 -9223372036854775806",
            ),
            ("m v=\"\\\\\" 0", "m v=1 0"),
        ];
        for (a, b) in same {
            assert!(point_key(a).is_some(), "{a}");
            assert_eq!(point_key(a), point_key(b), "{a} / {b}");
        }
        for line in [
            "m,t=a v=\"x 5\"",
            "m,t=a\\",
            "m,t=a\\\\",
            "m v=1 9223372036854775808",
            "m v=1 -9223372036854775809",
            "m v=1 -",
            "m\\",
            "\\",
            "",
            " ",
        ] {
            assert_eq!(point_key(line), None, "{line:?}");
        }
    }
}
