//! Property tests across modules: random payloads through `payload` → `points` →
//! `line_protocol`, read back with InfluxData's parser. Whatever the gateway accepts must come
//! out of InfluxDB's own reading exactly as the client sent it; whatever it refuses must be
//! refused without a panic.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::ingest::line_protocol::tests::assert_round_trip;
use crate::ingest::line_protocol::{FieldValue, encode_batch};
use crate::ingest::payload::{self, PayloadLimits};
use crate::ingest::points::{self, Run};

const LIMITS: PayloadLimits = PayloadLimits {
    max_string_bytes: 4096,
    max_stats_rows: 50,
};

/// Text made mostly of the characters line protocol has to escape or cannot carry.
fn hostile_text(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(",".to_string()),
        Just("=".to_string()),
        Just(" ".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just("\t".to_string()),
        Just("_".to_string()),
        Just("time".to_string()),
        Just("é".to_string()),
        Just("🚀".to_string()),
        "[a-z]{1,4}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|p| p.concat())
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        hostile_text(8).prop_map(Value::String),
    ]
}

fn object(max: usize) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((hostile_text(5), scalar()), 0..max)
        .prop_map(|kv| kv.into_iter().collect())
}

fn payload() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of(prop_oneof![
            (0i64..4_000_000_000).prop_map(|s| json!(s)),
            Just(json!("2016-11-20T10:00:00Z")),
            hostile_text(4).prop_map(Value::String),
        ]),
        prop::option::of(hostile_text(6)),
        prop::option::of(scalar()),
        object(6),
        object(6),
        object(10),
    )
        .prop_map(|(started, host, target, tags, inner_tags, fields)| {
            let mut m = Map::new();
            if let Some(s) = started {
                m.insert("startedAt".into(), s);
            }
            if let Some(h) = host {
                m.insert("hostname".into(), Value::String(h));
            }
            if let Some(t) = target {
                m.insert("targetHost".into(), t);
            }
            m.insert("tags".into(), Value::Object(tags));
            m.insert(
                "measurement".into(),
                json!({"tags": inner_tags, "fields": fields}),
            );
            m
        })
}

fn run_for(record: &payload::Record) -> Run {
    Run {
        uuid: Uuid::from_u128(7),
        host: record.host.as_deref().unwrap_or("127.0.0.1").into(),
        tags: record
            .tags
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
        started_ms: record.started_at_ms.unwrap_or(1_000),
    }
}

proptest! {
    // 512 cases at the least; more with PROPTEST_CASES (which `default` reads).
    #![proptest_config(ProptestConfig::with_cases(ProptestConfig::default().cases.max(512)))]

    #[test]
    fn accepted_registers_read_back_exactly(body in payload()) {
        let Ok(record) = payload::register(&serde_json::to_vec(&body).unwrap(), LIMITS) else { return Ok(()) };
        let run = run_for(&record);
        let pts = points::register(&run, &record, 2_000);
        assert_round_trip(&pts, &encode_batch(&pts));
        // The heartbeat carries exactly the client's tags and fields, plus the gateway's own.
        let beat = &pts[1];
        let tags: Vec<(&str, &str)> = beat.tags().filter(|(k, _)| *k != "uuid" && *k != "host").collect();
        let expected: Vec<(&str, &str)> = record.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(tags, expected);
        let fields: Vec<(&str, &FieldValue)> = beat.fields().filter(|(k, _)| *k != "elapsed").collect();
        let expected: Vec<(&str, &FieldValue)> =
            record.fields.iter().filter(|(k, _)| k != "elapsed").map(|(k, v)| (k.as_str(), v)).collect();
        prop_assert_eq!(fields, expected);
    }

    #[test]
    fn accepted_commits_read_back_exactly(
        body in payload(),
        rows in prop::collection::vec((hostile_text(12), hostile_text(3), object(4)), 0..5),
        scalars in object(4),
    ) {
        let stats_rows: Vec<Value> = rows
            .into_iter()
            .map(|(name, method, mut members)| {
                members.insert("name".into(), Value::String(name));
                members.insert("method".into(), Value::String(method));
                members.insert("num_requests".into(), json!(3));
                Value::Object(members)
            })
            .collect();
        let mut stats = scalars;
        stats.insert("stats".into(), Value::Array(stats_rows));
        let mut body = body;
        body.insert("uuid".into(), json!(Uuid::from_u128(7)));
        if let Some(Value::Object(m)) = body.get_mut("measurement")
            && let Some(Value::Object(fields)) = m.get_mut("fields")
        {
            fields.insert("requestStats".into(), Value::String(Value::Object(stats).to_string()));
        }
        let Ok(commit) = payload::commit(&serde_json::to_vec(&body).unwrap(), LIMITS) else { return Ok(()) };
        let run = run_for(&commit.record);
        let pts = points::commit(&run, &commit.record, commit.stats.clone(), 3_000);
        assert_round_trip(&pts, &encode_batch(&pts));
        let stats = commit.stats.unwrap();
        prop_assert_eq!(pts.iter().filter(|p| p.measurement() == points::REQUEST_STATS).count(), stats.rows.len());
    }

    #[test]
    fn any_body_is_answered_without_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = payload::register(&body, LIMITS);
        let _ = payload::commit(&body, LIMITS);
        let _ = payload::progress(&body, LIMITS);
    }
}
