//! `/apiv0.1/runs/<uuid>`: one run as JSON (its summary, its result and verdict, its baseline's
//! rows, its progress), and `/apiv0.1/runs/<uuid>/report`, the same as a self-contained HTML
//! page. A token sees its own runs; another's is unknown to it (404), as on every run route.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{ApiError, App, Reply};
use crate::auth::Client;
use crate::http::{Request, Response};
use crate::service::{Refused, rfc3339};
use crate::state::jobs::{Sample, State};
use crate::state::results::RunResult;

/// The path's uuid: the segment after `/apiv0.1/runs/`.
fn uuid_in(path: &str) -> Result<Uuid, ApiError> {
    let segment = path
        .strip_prefix("/apiv0.1/runs/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    Uuid::parse_str(segment).map_err(|_| {
        ApiError::Payload(crate::ingest::payload::PayloadError {
            key: "uuid".into(),
            message: format!(
                "{:?} in the path is not a uuid; use /apiv0.1/runs/<uuid>, with the uuid register answered",
                crate::logtext::escape(segment, 64)
            ),
            code: crate::code::Code::InvalidUuid,
        })
    })
}

/// A run's tags as a JSON object, from a running run's (inline strings) or a result's.
fn tags_object<S: AsRef<str>>(tags: &[(S, S)]) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| {
                (
                    k.as_ref().to_string(),
                    Value::String(v.as_ref().to_string()),
                )
            })
            .collect::<Map<String, Value>>(),
    )
}

fn progress(samples: &[Sample]) -> Value {
    samples
        .iter()
        .map(|s| json!({"time": rfc3339(s.ms), "users": s.users, "rps": s.rps}))
        .collect()
}

/// The JSON of a run (docs/verdicts.md shows it), as `caller` may see it.
///
/// Errors: 400 for a path whose segment is not a uuid, 404 for a run the gateway does not know
/// or that another token registered.
pub fn view(app: &App, path: &str, caller: Option<&str>) -> Result<Value, ApiError> {
    let uuid = uuid_in(path)?;
    let service = &app.service;
    if let Some(result) = service.results.get(&uuid, caller) {
        return Ok(of_result(&result, service.baseline_of(&result).as_ref()));
    }
    let job = service
        .jobs
        .get_for(&uuid, caller)
        .ok_or(ApiError::Refused(Refused::UnknownRun(uuid)))?;
    let ended = match job.state {
        State::Finished { at_ms } | State::Expired { at_ms } => Some(rfc3339(at_ms)),
        State::Running | State::Committing { .. } => None,
    };
    Ok(json!({
        "uuid": uuid,
        "state": job.state.as_str(),
        "host": job.run.host,
        "tags": tags_object(&job.run.tags),
        "started_at": rfc3339(job.run.started_ms),
        "ended_at": ended,
        "progress": progress(&job.samples),
        "result": Value::Null,
        "verdict": Value::Null,
        "baseline": Value::Null,
    }))
}

/// A committed run's JSON from its kept result, with its baseline's rows when still kept.
fn of_result(r: &RunResult, baseline: Option<&RunResult>) -> Value {
    json!({
        "uuid": r.uuid,
        "state": "finished",
        "host": r.host,
        "tags": tags_object(&r.tags),
        "started_at": rfc3339(r.started_ms),
        "ended_at": rfc3339(r.ended_ms),
        "progress": progress(&r.progress),
        "result": {"rows": r.rows},
        "verdict": r.verdict,
        "baseline": baseline.map(|b| json!({
            "uuid": b.uuid,
            "started_at": rfc3339(b.started_ms),
            "rows": b.rows,
        })),
    })
}

/// `GET /apiv0.1/runs/<uuid>`.
pub fn run(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    view(app, req.path(), client.map(|c| c.name.as_str())).map(Reply::Json)
}

/// What a report page may load: nothing from anywhere (its style is inline, its chart an
/// inline SVG, and it runs no script), so a name a client sent can never run as code.
pub const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /apiv0.1/runs/<uuid>/report`.
pub fn report(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let view = view(app, req.path(), client.map(|c| c.name.as_str()))?;
    let page = super::report::render(&view);
    Ok(Reply::Response(Response {
        status: 200,
        headers: vec![
            ("Content-Type", "text/html; charset=utf-8".into()),
            ("Content-Security-Policy", REPORT_CSP.into()),
            ("X-Content-Type-Options", "nosniff".into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: page.into_bytes(),
        client: None,
        code: None,
    }))
}
