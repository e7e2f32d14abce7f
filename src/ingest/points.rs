//! The points a run writes (docs/points.md): which measurement, which tags, which fields, which time.
//!
//! One place decides the shape of every point so that heartbeats, results and events of a run
//! always carry the same `uuid` and `host` tags and the gateway's own tags win over the client's.
//! Pure: no I/O, no clock, no job table; the caller passes the run and the time.

use compact_str::CompactString;
use uuid::Uuid;

use crate::ingest::line_protocol::{self, FieldValue, Point};
use crate::ingest::payload::{Record, RequestStats};

pub const HEARTBEAT: &str = "load_testing";
pub const RESULT: &str = "load_testing_result";
pub const REQUEST_STATS: &str = "load_testing_request_stats";
pub const EVENTS: &str = "load_testing_events";
/// One point per check of a run's verdict.
pub const CHECKS: &str = "load_testing_checks";
/// The tag naming the token a run was registered with (`auth.tag_runs_with_token_name`).
pub const TOKEN_NAME_TAG: &str = "token_name";
/// Every measurement the gateway writes.
pub const MEASUREMENTS: [&str; 5] = [HEARTBEAT, RESULT, REQUEST_STATS, EVENTS, CHECKS];

/// What every point of a run shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub uuid: Uuid,
    /// Held inline up to 24 bytes, as the tags are: a running run keeps them for its whole
    /// life, and most are short.
    pub host: CompactString,
    /// Client tags, already checked.
    pub tags: Vec<(CompactString, CompactString)>,
    /// When the run started, in Unix milliseconds.
    pub started_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started,
    Finished,
    Expired,
    /// The run's verdict, judged at its commit.
    Verdict,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Finished => "finished",
            Event::Expired => "expired",
            Event::Verdict => "verdict",
        }
    }
}

/// Adds the run's identity: `uuid`, `host`, the client's tags when `client_tags`, and the
/// `token_name` tag (part of who ran it) always. Tags and fields reaching here were checked by
/// `payload`, so a refusal would be a bug; it is skipped rather than turned into a panic on the
/// request path.
fn with_run(point: &mut Point, run: &Run, client_tags: bool) {
    for (k, v) in &run.tags {
        if client_tags || k == TOKEN_NAME_TAG {
            let _ = point.tag(k, v);
        }
    }
    let _ = point.tag(
        "uuid",
        run.uuid
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    let _ = point.tag("host", &run.host);
}

/// Names are a request's (`String`) or a running run's (held inline).
fn put_fields<'a, K: AsRef<str> + 'a>(
    point: &mut Point,
    fields: impl IntoIterator<Item = &'a (K, FieldValue)>,
) {
    for (k, v) in fields {
        let _ = point.field(k.as_ref(), v.clone());
    }
}

fn put_owned(point: &mut Point, fields: Vec<(String, FieldValue)>) {
    for (k, v) in fields {
        let _ = point.field_owned(k, v);
    }
}

/// A `load_testing` point: the run's fields and `elapsed`, so it always has a field.
pub fn heartbeat<K: AsRef<str>>(run: &Run, fields: &[(K, FieldValue)], now_ms: i64) -> Point {
    let mut p = Point::new(HEARTBEAT, now_ms);
    with_run(&mut p, run, true);
    put_fields(&mut p, fields);
    let elapsed = (now_ms - run.started_ms) as f64 / 1000.0;
    let _ = p.field("elapsed", FieldValue::Float(elapsed));
    p
}

/// A run's heartbeat encoded once, at register and at each progress: everything but `elapsed`
/// and the time, which change with every tick. Encoding 10 000 heartbeats is then a copy each,
/// not 10 000 points built and dropped. The encoded text is shared (`Arc`): a clone, such as
/// the tick takes under the job table's lock, costs a pointer copy whatever the run's size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BeatLine {
    /// Measurement, tags and the run's fields (see [`Point::encode_head`]).
    head: std::sync::Arc<str>,
    /// The head ends with fields, so `elapsed` follows a comma.
    has_fields: bool,
    /// `false` when a client tag is named `elapsed`, which then can't be a field.
    elapsed: bool,
}

impl BeatLine {
    /// Bytes of the encoded heartbeat (measurement, tags and the run's fields): what
    /// `limits.max_run_bytes` bounds.
    pub fn size(&self) -> usize {
        self.head.len()
    }

    pub fn new<K: AsRef<str>>(run: &Run, fields: &[(K, FieldValue)]) -> BeatLine {
        let mut p = Point::new(HEARTBEAT, 0);
        with_run(&mut p, run, true);
        // The gateway's `elapsed` replaces a client field of that name, as in [`heartbeat`].
        put_fields(
            &mut p,
            fields.iter().filter(|(k, _)| k.as_ref() != "elapsed"),
        );
        let mut head = String::new();
        p.encode_head(&mut head);
        BeatLine {
            head: head.into(),
            has_fields: p.field_count() > 0,
            elapsed: !p.has_tag("elapsed"),
        }
    }

    /// Appends the heartbeat at `now_ms` as one line with its `'\n'`; `false` (and nothing
    /// appended) when it would have no field.
    pub fn encode(&self, started_ms: i64, now_ms: i64, out: &mut String) -> bool {
        if !self.has_fields && !self.elapsed {
            return false;
        }
        out.push_str(&self.head);
        if self.elapsed {
            out.push_str(if self.has_fields {
                ",elapsed="
            } else {
                " elapsed="
            });
            let elapsed = (now_ms - started_ms) as f64 / 1000.0;
            line_protocol::encode_field_value(out, &FieldValue::Float(elapsed));
        }
        out.push(' ');
        line_protocol::push_integer(out, now_ms);
        out.push('\n');
        true
    }
}

/// A `load_testing_events` point with a sentence for Grafana annotations.
pub fn event(run: &Run, event: Event, time_ms: i64, text: String) -> Point {
    let mut p = Point::new(EVENTS, time_ms);
    with_run(&mut p, run, false);
    let _ = p.tag("event", event.as_str());
    let _ = p.field("text", FieldValue::Str(text));
    p
}

/// The points of a register: the `started` event and the first heartbeat.
pub fn register(run: &Run, record: &Record, now_ms: i64) -> Vec<Point> {
    let text = format!("load test started on {} (run {})", run.host, run.uuid);
    vec![
        event(
            run,
            Event::Started,
            record.started_at_ms.unwrap_or(now_ms),
            text,
        ),
        heartbeat(run, &record.fields, now_ms),
    ]
}

/// The points of a commit: the result (when there is anything to record), one point per
/// endpoint row, and the `finished` event. `run.tags` are the register's and the commit's tags.
/// The stats are taken over: their text and members move into the points, not copied, so a
/// commit of many rows holds them once.
pub fn commit(run: &Run, record: &Record, stats: Option<RequestStats>, now_ms: i64) -> Vec<Point> {
    let time = record.started_at_ms.unwrap_or(now_ms);
    let mut points = Vec::new();

    let mut result = Point::new(RESULT, time);
    with_run(&mut result, run, true);
    let rows = match stats {
        Some(stats) => {
            if let Some(text) = stats.text {
                let _ = result.field("requestStats", FieldValue::Str(text));
            }
            put_owned(&mut result, stats.scalars);
            stats.rows
        }
        None => Vec::new(),
    };
    // The client's own fields are explicit, so they win over members of requestStats.
    put_fields(&mut result, &record.fields);
    if result.field_count() > 0 {
        points.push(result);
    }

    points.reserve(rows.len() + 1);
    // Every row is one point, so the answer's count of rows is what InfluxDB holds. Its tags
    // go in first: the run's tags and the gateway's, the same for every row (made once and
    // copied), then the row's name and method (its identity among the rows; a run tag of
    // either name is never on a row), where the run's identity has no tag of that name. A
    // member named like one of them is left out of the point (it stays in the requestStats
    // text): a name written as a tag and as a field would be refused by InfluxDB 3 and by the
    // gateway's own schema check for every later run.
    let mut run_tags = Point::new(REQUEST_STATS, time);
    for (k, v) in &run.tags {
        if k != "name" && k != "method" {
            let _ = run_tags.tag(k, v);
        }
    }
    with_run(&mut run_tags, run, false);
    for row in rows {
        let tag_bytes = row.tags.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut p = run_tags.copy_with_room(row.tags.len(), tag_bytes, row.fields.len());
        for (k, v) in &row.tags {
            if !run_tags.has_tag(k) {
                let _ = p.tag(k, v);
            }
        }
        put_owned(&mut p, row.fields);
        if p.field_count() > 0 {
            points.push(p);
        }
    }

    points.push(event(
        run,
        Event::Finished,
        time,
        finished_text(run, record, now_ms),
    ));
    points
}

/// The points of a run's verdict, at `time_ms` (the commit's): one `load_testing_checks` point
/// per check outcome, tagged with the endpoint (`name`, `method`) and the check's text
/// (`check`), with the fields `value` and `limit` (where known) and `result` (`passed`,
/// `failed`, `skipped`); then the `verdict` event, whose text is the verdict's summary. A run
/// without checks has none: there is nothing to annotate.
pub fn verdict(run: &Run, verdict: &crate::verdict::Verdict, time_ms: i64) -> Vec<Point> {
    use crate::ingest::line_protocol::{MAX_TAG_VALUE_BYTES, sanitize_tag_value};
    if verdict.checks.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::with_capacity(verdict.checks.len() + 1);
    for c in &verdict.checks {
        let mut p = Point::new(CHECKS, time_ms);
        // The point's own tags and fields win over the run's tags of the same names: a run
        // tagged `value` must not make its verdict's points refused.
        for (k, v) in &run.tags {
            if !matches!(
                k.as_str(),
                "name" | "method" | "check" | "value" | "limit" | "result"
            ) {
                let _ = p.tag(k, v);
            }
        }
        with_run(&mut p, run, false);
        // As an endpoint row's tags: the name as sent where a tag can carry it, else its safe
        // form with the CRC-32 of the name (the same as the row's, so the two join).
        let tag_of = |text: &str| match crate::ingest::line_protocol::check_tag_value(text) {
            Ok(()) => text.to_string(),
            Err(_) => crate::ingest::payload::safe_tag(text),
        };
        let _ = p.tag("name", &tag_of(&c.endpoint));
        if let Some(method) = &c.method {
            let _ = p.tag("method", &tag_of(method));
        }
        let _ = p.tag("check", &sanitize_tag_value(&c.check, MAX_TAG_VALUE_BYTES));
        for (key, value) in [("value", c.value), ("limit", c.limit)] {
            if let Some(v) = value {
                let _ = p.field(key, FieldValue::Float(v));
            }
        }
        let result = match c.passed {
            Some(true) => "passed",
            Some(false) => "failed",
            None => "skipped",
        };
        let _ = p.field("result", FieldValue::Str(result.into()));
        points.push(p);
    }
    points.push(event(
        run,
        Event::Verdict,
        time_ms,
        format!("verdict of run {}: {}", run.uuid, verdict.summary()),
    ));
    points
}

/// The `finished` event's sentence. A client that says how long its test ran (a `duration`
/// field, in seconds, as the Locust plugin sends) is believed: the time between the run's
/// start and its commit says nothing of the test when a client registers and commits at its
/// end (a 60 s test used to read "after 0m00s" beside its `duration` of 60). Without one, the
/// sentence says what the gateway measured, as that: the time from the start to the commit.
fn finished_text(run: &Run, record: &Record, now_ms: i64) -> String {
    let reported = record.fields.iter().find_map(|(k, v)| match v {
        FieldValue::Float(secs) if k == "duration" && secs.is_finite() && *secs >= 0.0 => {
            Some(*secs)
        }
        _ => None,
    });
    match reported {
        Some(secs) => format!(
            "load test finished on {} after {} (the duration it reported; run {})",
            run.host,
            span(secs.round() as i64),
            run.uuid
        ),
        None => format!(
            "load test finished on {}, committed {} after its start (run {})",
            run.host,
            span((now_ms - run.started_ms).max(0) / 1000),
            run.uuid
        ),
    }
}

/// `2m05s`, `1h02m05s`: whole seconds as a reader counts them.
fn span(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::line_protocol::encode_batch;
    use crate::ingest::payload::StatsRow;

    fn run() -> Run {
        Run {
            uuid: Uuid::nil(),
            host: "lg-1".into(),
            tags: vec![
                ("mode".into(), "single".into()),
                ("uuid".into(), "client".into()),
            ],
            started_ms: 1_000_000,
        }
    }

    #[test]
    fn register_writes_started_event_and_first_heartbeat() {
        let record = Record {
            started_at_ms: Some(999_000),
            fields: vec![("clients".into(), FieldValue::Float(10.0))],
            ..Record::default()
        };
        let lines = encode_batch(&register(&run(), &record, 1_002_500));
        let nil = Uuid::nil();
        assert_eq!(
            lines.trim_end(),
            format!(
                "load_testing_events,event=started,host=lg-1,uuid={nil} text=\"load test started on lg-1 (run {nil})\" 999000\n\
                 load_testing,host=lg-1,mode=single,uuid={nil} clients=10,elapsed=2.5 1002500"
            )
        );
    }

    /// The cached heartbeat says what [`heartbeat`] says, for ordinary runs and odd ones.
    #[test]
    fn beat_line_encodes_like_the_heartbeat_point() {
        let plain = vec![
            ("clients".into(), FieldValue::Float(10.0)),
            ("ok".into(), FieldValue::Bool(true)),
            ("note".into(), FieldValue::Str("a \"b\" c,d=e".into())),
        ];
        let mut tagged = run();
        tagged.tags.push(("elapsed".into(), "x".into()));
        let with_elapsed = vec![("elapsed".into(), FieldValue::Float(1.0))];
        let cases: Vec<(Run, Vec<(String, FieldValue)>)> = vec![
            (run(), plain.clone()),
            (run(), vec![]),
            (run(), with_elapsed.clone()),
            (tagged.clone(), plain),
            (tagged.clone(), vec![]),
            (tagged, with_elapsed),
        ];
        for (run, fields) in cases {
            let point = heartbeat(&run, &fields, 1_004_250);
            let mut line = String::new();
            let wrote = BeatLine::new(&run, &fields).encode(run.started_ms, 1_004_250, &mut line);
            assert_eq!(wrote, point.field_count() > 0, "{run:?} {fields:?}");
            if wrote {
                assert_eq!(line, encode_batch(std::slice::from_ref(&point)));
            } else {
                assert!(line.is_empty());
            }
        }
    }

    /// The tick clones every running run's heartbeat under the job table's lock: a clone
    /// shares the encoded text, so a run of 60 KiB of fields costs a pointer copy there.
    #[test]
    fn a_cloned_beat_line_shares_its_text() {
        let fields = vec![("big", FieldValue::Str("x".repeat(60 << 10)))];
        let beat = BeatLine::new(&run(), &fields);
        let clone = beat.clone();
        assert!(beat.size() > 60 << 10);
        assert!(std::ptr::eq(beat.head.as_ptr(), clone.head.as_ptr()));
        assert_eq!(beat, clone);
    }

    /// Every row is a point, so the count of rows in the answer is what InfluxDB holds: a
    /// member named like a client tag of the run keeps its value, and that tag is left off
    /// this row's point; a run tag named `name` or `method` never stands in for the row's own.
    #[test]
    fn a_row_member_named_like_a_tag_is_left_out_and_the_tag_kept() {
        let mut tagged = run();
        tagged.tags.push(("name".into(), "run-name".into()));
        tagged.tags.push((TOKEN_NAME_TAG.into(), "team-a".into()));
        let stats = RequestStats {
            text: Some("{}".into()),
            rows: vec![
                StatsRow {
                    tags: vec![("name".into(), "/x".into())],
                    fields: vec![
                        ("mode".into(), FieldValue::Float(1.0)),
                        (TOKEN_NAME_TAG.into(), FieldValue::Float(7.0)),
                        ("uuid".into(), FieldValue::Float(8.0)),
                        ("n".into(), FieldValue::Float(3.0)),
                    ],
                    computed: Vec::new(),
                },
                StatsRow {
                    tags: vec![],
                    fields: vec![("mode".into(), FieldValue::Float(2.0))],
                    computed: Vec::new(),
                },
            ],
            rows_sent: 2,
            ..RequestStats::default()
        };
        let points = commit(&tagged, &Record::default(), Some(stats.clone()), 2_000_000);
        let text = encode_batch(&points);
        let nil = Uuid::nil();
        assert!(
            text.contains(&format!(
                "load_testing_request_stats,host=lg-1,mode=single,name=/x,token_name=team-a,uuid={nil} n=3 2000000"
            )),
            "{text}"
        );
        assert_eq!(
            points
                .iter()
                .filter(|p| p.measurement() == REQUEST_STATS)
                .count(),
            1,
            "a row left with nothing to record is not a point: {text}"
        );
    }

    #[test]
    fn commit_without_fields_writes_only_the_finished_event() {
        let points = commit(&run(), &Record::default(), None, 1_125_000);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].measurement(), EVENTS);
        assert!(
            encode_batch(&points).contains("finished on lg-1, committed 2m05s after its start"),
            "{}",
            encode_batch(&points)
        );
    }

    /// A run registered and committed at once, with the `duration` of its 60 s test: its
    /// `finished` event said "after 0m00s".
    #[test]
    fn finished_event_tells_the_duration_the_client_reported() {
        let record = Record {
            fields: vec![("duration".into(), FieldValue::Float(60.4))],
            ..Record::default()
        };
        let text = encode_batch(&commit(&run(), &record, None, 1_000_100));
        assert!(
            text.contains("finished on lg-1 after 1m00s (the duration it reported; run"),
            "{text}"
        );
        assert!(!text.contains("0m00s"), "{text}");
        let long = Record {
            fields: vec![("duration".into(), FieldValue::Float(3725.0))],
            ..Record::default()
        };
        assert!(encode_batch(&commit(&run(), &long, None, 1_000_100)).contains("after 1h02m05s"));
        let not_a_number = Record {
            fields: vec![("duration".into(), FieldValue::Str("1m".into()))],
            ..Record::default()
        };
        assert!(
            encode_batch(&commit(&run(), &not_a_number, None, 1_125_000))
                .contains("committed 2m05s after its start")
        );
    }

    #[test]
    fn commit_rows_keep_the_run_identity() {
        let stats = RequestStats {
            text: Some("{}".into()),
            scalars: vec![("total_rps".into(), FieldValue::Float(3.0))],
            rows: vec![StatsRow {
                tags: vec![("name".into(), "/x".into()), ("host".into(), "evil".into())],
                fields: vec![("num_requests".into(), FieldValue::Float(4.0))],
                computed: Vec::new(),
            }],
            rows_sent: 1,
            ..RequestStats::default()
        };
        let record = Record {
            fields: vec![("total_rps".into(), FieldValue::Float(5.0))],
            ..Record::default()
        };
        let points = commit(&run(), &record, Some(stats.clone()), 2_000_000);
        let text = encode_batch(&points);
        let nil = Uuid::nil();
        assert!(text.contains(&format!(
            "load_testing_result,host=lg-1,mode=single,uuid={nil} requestStats=\"{{}}\",total_rps=5 2000000"
        )));
        assert!(text.contains(&format!(
            "load_testing_request_stats,host=lg-1,mode=single,name=/x,uuid={nil} num_requests=4 2000000"
        )));
    }
}
