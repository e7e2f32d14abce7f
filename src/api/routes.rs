//! The route table: every route's method, path, whether it needs a token and its handler, in
//! one place. Routing, the 404 and 405 answers, the request counters of `/states` and
//! `/metrics`, `--help` and the check of docs/api.md's table of routes all read it.
//!
//! A handler is thin glue: it asks `ingest::payload` to check the body, calls one use-case of
//! `service`, and renders the outcome as JSON. It never holds a lock or does I/O itself.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::influx::{self, Flavor};
use super::{ApiError, App, Reply, arm_early, runs, states, unless_sent_early};
use crate::auth::Client;
use crate::delivery::Outcome;
use crate::http::Request;
use crate::ingest::json::Tolerated;
use crate::ingest::payload;
use crate::service::{Committed, Registered, now_ms};
use crate::state::jobs::Quota;

/// One route.
pub struct Route {
    pub method: &'static str,
    /// The whole path; a segment `{uuid}` stands for any one segment (the handler reads it).
    pub path: &'static str,
    /// Whether a token is needed when tokens are configured.
    pub token: bool,
    /// The name its requests are counted under in `/states` and `/metrics`.
    pub name: &'static str,
    /// The gateway's run API, or which of InfluxDB's: the shape of its answers.
    pub flavor: Flavor,
    /// Called with the request and the client its token names (`None` without tokens, and
    /// for routes that need none).
    pub handler: fn(&App, &Request, Option<&Client>) -> Result<Reply, ApiError>,
}

/// Every route, in the order docs/api.md lists them. A route's index here is its counter slot
/// (see `stats::Stats::new`); requests that match no route are counted as `other`.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/apiv0.1/events/register",
        token: true,
        name: "register",
        flavor: Flavor::Run,
        handler: register,
    },
    Route {
        method: "POST",
        path: "/apiv0.1/events/progress",
        token: true,
        name: "progress",
        flavor: Flavor::Run,
        handler: progress,
    },
    Route {
        method: "POST",
        path: "/apiv0.1/events/commit",
        token: true,
        name: "commit",
        flavor: Flavor::Run,
        handler: commit,
    },
    Route {
        method: "GET",
        path: "/apiv0.1/events/isrunning",
        token: true,
        name: "isrunning",
        flavor: Flavor::Run,
        handler: is_running,
    },
    Route {
        method: "GET",
        path: "/apiv0.1/states",
        token: true,
        name: "states",
        flavor: Flavor::Run,
        handler: |app, _, client| Ok(Reply::Json(states::states(app, client))),
    },
    Route {
        method: "GET",
        path: "/apiv0.1/metrics",
        token: true,
        name: "metrics",
        flavor: Flavor::Run,
        handler: |app, _, _| Ok(Reply::Text(states::metrics(app))),
    },
    Route {
        method: "GET",
        path: "/apiv0.1/runs/{uuid}",
        token: true,
        name: "run",
        flavor: Flavor::Run,
        handler: runs::run,
    },
    Route {
        method: "GET",
        path: "/apiv0.1/runs/{uuid}/report",
        token: true,
        name: "report",
        flavor: Flavor::Run,
        handler: runs::report,
    },
    Route {
        method: "GET",
        path: "/apiv0.1/ping",
        token: false,
        name: "ping",
        flavor: Flavor::Run,
        handler: |_, _, _| Ok(Reply::Json(json!({"res": "PONG!"}))),
    },
    Route {
        method: "POST",
        path: "/write",
        token: true,
        name: "influx_write",
        flavor: Flavor::V1,
        handler: influx::write_v1,
    },
    Route {
        method: "GET",
        path: "/ping",
        token: false,
        name: "influx_ping",
        flavor: Flavor::V1,
        handler: influx::ping,
    },
    Route {
        method: "HEAD",
        path: "/ping",
        token: false,
        name: "influx_ping_head",
        flavor: Flavor::V1,
        handler: influx::ping,
    },
    Route {
        method: "GET",
        path: "/query",
        token: true,
        name: "influx_query",
        flavor: Flavor::V1,
        handler: influx::query,
    },
    Route {
        method: "POST",
        path: "/query",
        token: true,
        name: "influx_query_post",
        flavor: Flavor::V1,
        handler: influx::query,
    },
    Route {
        method: "POST",
        path: "/api/v2/write",
        token: true,
        name: "influx_write_v2",
        flavor: Flavor::V2,
        handler: influx::write_v2,
    },
    Route {
        method: "GET",
        path: "/health",
        token: false,
        name: "influx_health",
        flavor: Flavor::V2,
        handler: influx::health,
    },
    Route {
        method: "POST",
        path: "/api/v3/write_lp",
        token: true,
        name: "influx_write_v3",
        flavor: Flavor::V3,
        handler: influx::write_v3,
    },
];

/// The route of `path` and its index in [`ROUTES`]; a trailing slash is ignored.
#[cfg(test)]
pub fn find(path: &str) -> Option<(usize, &'static Route)> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    ROUTES
        .iter()
        .enumerate()
        .find(|&(i, _)| path_matches(i, path))
}

/// Where the first `{…}` segment of a route path starts, computed once per route at compile
/// time; `None` for a route without one, which matches its path alone, compared whole.
const fn segment_at(pattern: &str) -> Option<usize> {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// [`segment_at`] of each route of [`ROUTES`], by index.
const SEGMENT_AT: [Option<usize>; ROUTES.len()] = {
    let mut out = [None; ROUTES.len()];
    let mut i = 0;
    while i < ROUTES.len() {
        out[i] = segment_at(ROUTES[i].path);
        i += 1;
    }
    out
};

/// Whether `path` is a path of the route `ROUTES[i]`: the same segments, a `{uuid}` segment
/// standing for any one non-empty segment.
fn path_matches(i: usize, path: &str) -> bool {
    let pattern = ROUTES[i].path;
    let Some(at) = SEGMENT_AT[i] else {
        return pattern == path;
    };
    // The text before the first `{` is the same: most paths part there.
    if !path.starts_with(&pattern[..at]) {
        return false;
    }
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some("{uuid}"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The route of `path` taking `method`, and its index in [`ROUTES`]. Errors: no route has the
/// path (404); routes have it, but none takes the method (405, with the methods they take).
pub fn find_for(path: &str, method: &str) -> Result<(usize, &'static Route), ApiError> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let mut allow: Vec<&str> = Vec::new();
    for (i, route) in ROUTES.iter().enumerate() {
        if path_matches(i, path) {
            if route.method == method {
                return Ok((i, route));
            }
            allow.push(route.method);
        }
    }
    if allow.is_empty() {
        Err(ApiError::NoRoute)
    } else {
        Err(ApiError::Method(allow.join(", ")))
    }
}

/// The names requests are counted under, one per route.
pub fn names() -> Vec<&'static str> {
    ROUTES.iter().map(|r| r.name).collect()
}

/// `POST /apiv0.1/events/register, GET …`: every route, for messages and `--help`.
pub fn listing(separator: &str) -> String {
    ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect::<Vec<_>>()
        .join(separator)
}

fn register(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let mut record = payload::register(&req.body, app.payload_limits())?;
    let tolerated = record.tolerated;
    let ignored = std::mem::take(&mut record.ignored);
    let quota = client.map(quota_of);
    let reply = |registered: &Registered| {
        let uuid = registered.uuid;
        let notes: Vec<String> = tolerated_note(tolerated)
            .into_iter()
            .chain(ignored_note(&ignored))
            .collect();
        let description =
            (!notes.is_empty()).then(|| format!("run {uuid} registered; {}", notes.join("; ")));
        RunAnswer {
            data: AnswerData {
                description,
                uuid: Some(uuid),
            },
            ..RunAnswer::new(uuid, &ignored, tolerated)
        }
        .with_outcome(&registered.outcome)
        .reply()
    };
    let arm = |registered: &Registered| arm_early(req, Flavor::Run, reply(registered));
    // Without a host the peer's address says at least where the run came from.
    let registered = app.service.register_answering(
        record,
        &peer_host(req.peer.ip()),
        quota,
        now_ms(),
        Some(&arm),
    )?;
    Ok(unless_sent_early(req, || reply(&registered)))
}

/// What a client may hold of the job table.
fn quota_of(c: &Client) -> Quota<'_> {
    Quota {
        owner: &c.name,
        max_running: c.max_running,
        max_bytes: c.max_table_bytes,
        max_spool_bytes: c.max_spool_bytes,
    }
}

fn progress(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let (uuid, mut record) = payload::progress(&req.body, app.payload_limits())?;
    let tolerated = record.tolerated;
    let ignored = std::mem::take(&mut record.ignored);
    let reply = || {
        let mut description = format!("run {uuid} updated");
        for note in tolerated_note(tolerated)
            .into_iter()
            .chain(ignored_note(&ignored))
        {
            description.push_str("; ");
            description.push_str(&note);
        }
        RunAnswer {
            data: AnswerData {
                description: Some(description),
                uuid: None,
            },
            ..RunAnswer::new(uuid, &ignored, tolerated)
        }
        .reply()
    };
    let arm = |_: &()| arm_early(req, Flavor::Run, reply());
    app.service
        .progress_answering(uuid, record, client.map(quota_of), now_ms(), Some(&arm))?;
    Ok(unless_sent_early(req, reply))
}

fn commit(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let mut commit = payload::commit(&req.body, app.payload_limits())?;
    let ignored = std::mem::take(&mut commit.record.ignored);
    let mut tolerated = commit.record.tolerated;
    let mut notes = Vec::new();
    if let Some(s) = &commit.stats {
        tolerated = tolerated.add(s.tolerated);
        notes.extend(stats_notes(s));
    }
    notes.extend(tolerated_note(tolerated));
    notes.extend(ignored_note(&ignored));
    let reply = |c: &Committed| committed_reply(c, notes.clone(), tolerated, &ignored);
    let arm = |c: &Committed| arm_early(req, Flavor::Run, reply(c));
    let c = app
        .service
        .commit_answering(commit, client.map(quota_of), now_ms(), Some(&arm))?;
    Ok(unless_sent_early(req, || reply(&c)))
}

/// The answer to a commit: the run, its points, the verdict and what was not kept as sent.
fn committed_reply(
    c: &Committed,
    mut notes: Vec<String>,
    tolerated: Tolerated,
    ignored: &[payload::Ignored],
) -> Reply {
    let uuid = c.uuid;
    let mut description = format!(
        "run {uuid} finished; wrote {} points ({} endpoint rows)",
        c.points, c.rows
    );
    if c.left_out > 0 {
        notes.push(format!(
            "{} requestStats members were left out of the points: InfluxDB holds them with another type, or as tags, from earlier runs (they are in the requestStats text)",
            c.left_out
        ));
    }
    if c.rows_sent > c.rows {
        notes.insert(
            0,
            format!(
                "{} of {} stats rows were written: the rest (rows past limits.max_stats_rows but the Aggregated row, and rows with no number to record) are only in requestStats",
                c.rows, c.rows_sent
            ),
        );
    }
    for note in notes {
        description.push_str("; ");
        description.push_str(&note);
    }
    description.push_str("; verdict: ");
    description.push_str(&c.verdict.summary());
    if let Some(why) = &c.not_kept {
        description.push_str(&format!(
            "; its result could not be kept ({why}): no report, and no later run's baseline"
        ));
    }
    RunAnswer {
        data: AnswerData {
            description: Some(description),
            uuid: None,
        },
        // As a `Value`: its members, and each check's, by name, as the answer always had them.
        verdict: Some(serde_json::to_value(&c.verdict).unwrap_or(Value::Null)),
        report: Some(format!("/apiv0.1/runs/{uuid}/report")),
        ..RunAnswer::new(uuid, ignored, tolerated)
    }
    .with_outcome(&c.outcome)
    .reply()
}

/// The JSON answer of the run routes (register, progress, commit), written straight from what
/// it says rather than built as a `serde_json::Value` first. Its members are in the order of
/// their names, as a `Value`'s object writes them; the optional ones are left out when absent.
#[derive(serde::Serialize)]
struct RunAnswer<'a> {
    data: AnswerData,
    /// Why InfluxDB refused the request's points (they are in the dead letters).
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter: Option<&'a str>,
    /// Whether InfluxDB has the points (register and commit; a progress writes none).
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<bool>,
    /// Each misspelled key nothing read, with its likely meaning.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    did_you_mean: std::collections::BTreeMap<&'a str, &'static str>,
    /// Every key nothing read, as a path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<&'a str>,
    /// Numbers not finite, read as `null` and left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    non_finite_numbers: Option<usize>,
    /// The run's report page (commit).
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<String>,
    uuid: uuid::Uuid,
    /// The run's verdict (commit).
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<Value>,
}

/// An answer's `data`: what Locust's client reads (`uuid` at a register, `description`).
#[derive(serde::Serialize)]
struct AnswerData {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<uuid::Uuid>,
}

impl<'a> RunAnswer<'a> {
    /// The answer about run `uuid`, with the keys nothing read and the numbers not finite.
    fn new(uuid: uuid::Uuid, ignored: &'a [payload::Ignored], tolerated: Tolerated) -> Self {
        RunAnswer {
            data: AnswerData {
                description: None,
                uuid: None,
            },
            dead_letter: None,
            delivered: None,
            did_you_mean: ignored
                .iter()
                .filter_map(|i| Some((i.key.as_str(), i.near?)))
                .collect(),
            ignored: ignored.iter().map(|i| i.key.as_str()).collect(),
            non_finite_numbers: (tolerated.non_finite > 0).then_some(tolerated.non_finite),
            report: None,
            uuid,
            verdict: None,
        }
    }

    /// With what became of the request's points: `delivered`, and `dead_letter` when InfluxDB
    /// refused them.
    fn with_outcome(self, outcome: &'a Outcome) -> Self {
        RunAnswer {
            delivered: Some(outcome.delivered()),
            dead_letter: match outcome {
                Outcome::DeadLettered(why) => Some(why),
                _ => None,
            },
            ..self
        }
    }

    fn reply(&self) -> Reply {
        // Serialising these cannot fail (every map key is a string); the fallback keeps the
        // path free of panics all the same, as `Response::json`'s.
        let bytes = serde_json::to_vec(self).unwrap_or_else(|_| b"null".to_vec());
        Reply::Response(crate::http::Response::json_bytes(200, bytes))
    }
}

/// `ignored keys: "measurment" (did you mean "measurement"?), "state"`: the sentence of an
/// answer about keys nothing read.
fn ignored_note(ignored: &[payload::Ignored]) -> Option<String> {
    if ignored.is_empty() {
        return None;
    }
    let keys: Vec<String> = ignored
        .iter()
        .map(|i| match i.near {
            Some(near) => format!("{:?} (did you mean {near:?}?)", i.key),
            None => format!("{:?}", i.key),
        })
        .collect();
    Some(format!("ignored keys: {}", keys.join(", ")))
}

/// What the answer says about a `requestStats` whose rows or text could not be kept as sent.
fn stats_notes(s: &payload::RequestStats) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(why) = &s.not_stats {
        notes.push(format!(
            "requestStats is not stats ({why}); its text is kept as sent ({} bytes), without endpoint rows",
            s.cut.sent_bytes
        ));
        return notes;
    }
    if s.repeated > 0 {
        notes.push(format!(
            "{} rows repeated the name and method of an earlier row; their name tags end in ~2, ~3, ... and full_name holds the name",
            s.repeated
        ));
    }
    let safe = s.renamed - s.repeated;
    if safe > 0 {
        notes.push(format!(
            "{safe} endpoint names were made safe for their tag (name~crc32); full_name holds each as sent"
        ));
    }
    match &s.text {
        None => notes.push(format!(
            "the requestStats text ({} bytes) is longer than limits.max_string_bytes even without its rows, and was not kept",
            s.cut.sent_bytes
        )),
        Some(_) if s.cut.rows + s.cut.errors > 0 => notes.push(format!(
            "the requestStats text ({} bytes) is longer than limits.max_string_bytes: {} stats rows and {} errors were left out of it (rows_left_out, errors_left_out)",
            s.cut.sent_bytes, s.cut.rows, s.cut.errors
        )),
        Some(_) => {}
    }
    notes
}

/// What the answer says about numbers and strings the JSON reader had to rewrite.
fn tolerated_note(t: Tolerated) -> Option<String> {
    let mut parts = Vec::new();
    if t.non_finite > 0 {
        let (what, were) = if t.non_finite == 1 {
            ("number that is", "was")
        } else {
            ("numbers that are", "were")
        };
        parts.push(format!(
            "{} {what} not finite (NaN, Infinity or beyond 1.8e308) {were} read as null and left out",
            t.non_finite
        ));
    }
    if t.lone_surrogates > 0 {
        let (what, were) = if t.lone_surrogates == 1 {
            ("escape", "was")
        } else {
            ("escapes", "were")
        };
        parts.push(format!(
            "{} lone surrogate {what} (\\udXXX) {were} read as U+FFFD",
            t.lone_surrogates
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn is_running(app: &App, _: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let map: Map<String, Value> = app
        .service
        .jobs
        .is_running(client.map(|c| c.name.as_str()))
        .into_iter()
        .map(|(uuid, running)| (uuid.to_string(), Value::Bool(running)))
        .collect();
    Ok(Reply::Json(Value::Object(map)))
}

fn peer_host(ip: IpAddr) -> String {
    ip.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run routes' answers, written straight from what they say, are the JSON a
    /// `serde_json::Value` of the same members wrote (every object's members by name), byte
    /// for byte.
    #[test]
    fn a_run_answer_is_written_as_a_json_object_of_its_members() {
        let uuid = uuid::Uuid::from_u128(7);
        let ignored = [
            payload::Ignored {
                key: "measurment".into(),
                near: Some("measurement"),
            },
            payload::Ignored {
                key: "state".into(),
                near: None,
            },
        ];
        let tolerated = Tolerated {
            non_finite: 2,
            lone_surrogates: 0,
        };
        let verdict = crate::verdict::Verdict {
            passed: true,
            baseline: Some(uuid),
            checks: Vec::new(),
        };
        let refused = Outcome::DeadLettered("field type conflict".into());
        let bytes = |reply: Reply| match reply {
            Reply::Response(r) => String::from_utf8(r.body).unwrap(),
            _ => panic!("not a response"),
        };
        let full = RunAnswer {
            data: AnswerData {
                description: Some("run finished".into()),
                uuid: Some(uuid),
            },
            verdict: Some(serde_json::to_value(&verdict).unwrap()),
            report: Some("/apiv0.1/runs/x/report".into()),
            ..RunAnswer::new(uuid, &ignored, tolerated)
        }
        .with_outcome(&refused)
        .reply();
        let as_value = json!({
            "uuid": uuid,
            "data": {"uuid": uuid, "description": "run finished"},
            "verdict": verdict,
            "report": "/apiv0.1/runs/x/report",
            "ignored": ["measurment", "state"],
            "did_you_mean": {"measurment": "measurement"},
            "delivered": false,
            "dead_letter": "field type conflict",
            "non_finite_numbers": 2,
        });
        assert_eq!(bytes(full), serde_json::to_string(&as_value).unwrap());
        // The optional members are left out when absent.
        let bare = RunAnswer::new(uuid, &[], Tolerated::default()).reply();
        assert_eq!(bytes(bare), format!(r#"{{"data":{{}},"uuid":"{uuid}"}}"#));
    }

    /// A commit's answer, with a check, is what the same answer built as a `serde_json::Value`
    /// writes (the verdict through `serde_json::to_value`): its maps in the order of their
    /// keys, down to each check outcome's members.
    #[test]
    fn a_commit_answer_with_checks_is_written_as_the_value_wrote_it() {
        let uuid = uuid::Uuid::from_u128(7);
        let ignored = [payload::Ignored {
            key: "measurment".into(),
            near: Some("measurement"),
        }];
        let tolerated = Tolerated {
            non_finite: 1,
            lone_surrogates: 0,
        };
        let verdict = crate::verdict::Verdict {
            passed: false,
            baseline: None,
            checks: vec![crate::verdict::Outcome {
                endpoint: "/checkout".into(),
                metric: "p95".into(),
                method: Some("GET".into()),
                check: "p95 < 500ms".into(),
                source: crate::verdict::Source::Register,
                value: Some(612.0),
                limit: Some(500.0),
                passed: Some(false),
                reason: None,
            }],
        };
        let committed = Committed {
            uuid,
            points: 3,
            rows: 1,
            rows_sent: 1,
            left_out: 0,
            outcome: Outcome::Recorded,
            verdict: verdict.clone(),
            not_kept: None,
        };
        // The notes as `commit` gathers them (no requestStats here).
        let notes: Vec<String> = tolerated_note(tolerated)
            .into_iter()
            .chain(ignored_note(&ignored))
            .collect();
        let Reply::Response(new) = committed_reply(&committed, notes, tolerated, &ignored) else {
            panic!("not a response");
        };
        let new = String::from_utf8(new.body).unwrap();

        // The same answer built as a `serde_json::Value`, member by member.
        let description = format!(
            "run {uuid} finished; wrote 3 points (1 endpoint rows); {}; {}; verdict: {}",
            tolerated_note(tolerated).unwrap(),
            ignored_note(&ignored).unwrap(),
            verdict.summary()
        );
        let mut old = json!({"uuid": uuid, "data": {"description": description}});
        old["verdict"] = serde_json::to_value(&verdict).unwrap_or(Value::Null);
        old["report"] = Value::String(format!("/apiv0.1/runs/{uuid}/report"));
        old["ignored"] = ignored
            .iter()
            .map(|i| Value::from(i.key.as_str()))
            .collect();
        old["did_you_mean"] = json!({"measurment": "measurement"});
        old["delivered"] = Value::Bool(false);
        old["non_finite_numbers"] = 1.into();
        // Same members and values at least.
        assert_eq!(
            serde_json::from_str::<Value>(&new).unwrap(),
            old,
            "members or values differ"
        );
        assert_eq!(
            new,
            serde_json::to_string(&old).unwrap(),
            "member order differs"
        );
    }

    #[test]
    fn routes_are_found_with_or_without_a_trailing_slash() {
        let name = |path| find(path).map(|(_, r)| r.name);
        assert_eq!(name("/apiv0.1/events/register"), Some("register"));
        assert_eq!(name("/apiv0.1/events/commit/"), Some("commit"));
        assert_eq!(name("/apiv0.1/ping"), Some("ping"));
        assert_eq!(name("/apiv0.1/"), None);
        assert_eq!(name("/"), None);
        assert_eq!(name("/apiv0.1/states/x"), None);
        for (i, route) in ROUTES.iter().enumerate() {
            assert_eq!(
                find_for(route.path, route.method).map(|(at, _)| at).ok(),
                Some(i)
            );
            assert_eq!(
                route.path.starts_with("/apiv0.1/"),
                route.flavor == Flavor::Run,
                "{}",
                route.path
            );
        }
    }

    #[test]
    fn the_api_doc_lists_every_route() {
        use crate::doc_tables::{API, table};
        let rows = table("docs/api.md", API, "| method | path | token | does |");
        let documented: Vec<(String, String, String)> = rows
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone(), row[2].clone()))
            .collect();
        let expected: Vec<(String, String, String)> = ROUTES
            .iter()
            .map(|r| {
                (
                    r.method.to_string(),
                    format!("`{}`", r.path),
                    if r.token { "yes" } else { "no" }.to_string(),
                )
            })
            .collect();
        assert_eq!(
            documented, expected,
            "docs/api.md's table of routes must list every route, in order"
        );
    }
}
