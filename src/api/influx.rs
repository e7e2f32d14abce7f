//! InfluxDB's own HTTP API, as far as load tools and client libraries use it to write:
//! v1 `/write`, `/ping` and `/query` (`CREATE DATABASE`, `SHOW DATABASES`), v2
//! `/api/v2/write` and `/health`, v3 `/api/v3/write_lp`. Each route reads its API's query
//! parameters (percent-decoded, as a form), calls `service::write`, and says the outcome in its
//! API's own words: 204 for a whole write; v1's `partial write: … dropped=N`, v2's
//! `{"code": "invalid", "message": …}`, v3's `data` naming each refused line. So a client's
//! existing error handling works against the gateway.
//!
//! Nothing here holds a lock or does I/O; the query string may hold credentials (`p=`) and is
//! never logged.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::{ApiError, App, Reply};
use crate::auth::Client;
use crate::code::Code;
use crate::delivery::Outcome;
use crate::http::{Request, Response};
use crate::ingest::lp_parse::Precision;
use crate::service::write::{LineRefusal, WriteRefused, WriteRequest, Written, check_name};

/// The version the gateway's answers on these routes carry in `X-Influxdb-Version`: the 1.x
/// API it speaks, and itself.
pub fn version() -> String {
    format!("1.8.10-metrics-consumer-{}", env!("CARGO_PKG_VERSION"))
}

/// Which of InfluxDB's APIs a route belongs to: the shape of its error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The gateway's own run API.
    Run,
    V1,
    V2,
    V3,
}

/// The value of `key` in a query string or form body (`a=1&b=2`), `+` and percent-escapes
/// undone (borrowed from `query` when there were none); the first if given twice. Errors: the
/// value is not UTF-8 once decoded.
pub fn param<'q>(query: &'q str, key: &str) -> Result<Option<Cow<'q, str>>, ApiError> {
    // Split by a set of one char: a query is tens of bytes, too short for the searcher of a
    // `char` pattern (memchr) to pay for itself.
    for pair in query.split(['&']) {
        let (k, v) = pair
            .find(['='])
            .map_or((pair, ""), |at| (&pair[..at], &pair[at + 1..]));
        // A name without `+` or `%` is itself decoded: compared as it is, without a copy.
        let named = if k.bytes().any(|b| b == b'+' || b == b'%') {
            decode(k).as_deref() == Some(key)
        } else {
            k == key
        };
        if !named {
            continue;
        }
        return decode(v).map(Some).ok_or_else(|| {
            ApiError::Influx(
                Code::InvalidParameter,
                format!("the query parameter {key} is not UTF-8 once percent-decoded"),
            )
        });
    }
    Ok(None)
}

/// `text` with `+` read as a space and percent-escapes undone, as a form is (WHATWG URL's
/// `application/x-www-form-urlencoded`); `None` when that is not UTF-8.
fn decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.bytes().any(|b| b == b'+') {
        return percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .ok();
    }
    let spaced = text.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?;
    Some(Cow::Owned(decoded.into_owned()))
}

/// The client a write route needs: without tokens configured, the write API is closed (a
/// write needs a token with its databases).
fn writer(client: Option<&Client>) -> Result<&Client, ApiError> {
    client.ok_or_else(|| {
        ApiError::Influx(
            Code::DatabaseNotAllowed,
            "InfluxDB's write API needs a token: configure an [[auth.token]] with the databases it may write, and send it".into(),
        )
    })
}

/// `POST /write?db=&rp=&precision=` (v1).
pub fn write_v1(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let client = writer(client)?;
    let q = req.query();
    let database = required(param(q, "db")?, "db", "the database to write")?;
    let rp = param(q, "rp")?.unwrap_or_default();
    let precision = Precision::from_v1(&param(q, "precision")?.unwrap_or_default());
    let written = write(
        app,
        req,
        client,
        &database,
        &rp,
        precision,
        true,
        Flavor::V1,
    )?;
    Ok(answer(Flavor::V1, &written))
}

/// `POST /api/v2/write?org=&bucket=&precision=` (v2): the bucket `db` or `db/rp`.
pub fn write_v2(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let client = writer(client)?;
    let q = req.query();
    let bucket = required(param(q, "bucket")?, "bucket", "the bucket to write")?;
    let (database, rp) = bucket.split_once('/').unwrap_or((&bucket, ""));
    let precision = match param(q, "precision")? {
        None => Precision::Nanosecond,
        Some(p) => Precision::from_v2(&p).ok_or_else(|| {
            ApiError::Influx(
                Code::InvalidParameter,
                format!("precision {p:?} is not one of ns, us, ms, s"),
            )
        })?,
    };
    let written = write(app, req, client, database, rp, precision, true, Flavor::V2)?;
    Ok(answer(Flavor::V2, &written))
}

/// `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=` (v3). `no_sync` is read and
/// ignored: the answer always follows the fsync.
pub fn write_v3(app: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let client = writer(client)?;
    let q = req.query();
    let database = required(param(q, "db")?, "db", "the database to write")?;
    let precision = match param(q, "precision")? {
        None => Precision::Auto,
        Some(p) => Precision::from_v3(&p).ok_or_else(|| {
            ApiError::Influx(
                Code::InvalidParameter,
                format!(
                    "precision {p:?} is not one of auto, nanosecond, microsecond, millisecond, second"
                ),
            )
        })?,
    };
    let accept_partial = match param(q, "accept_partial")?.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::Influx(
                Code::InvalidParameter,
                format!("accept_partial {other:?} is not true or false"),
            ));
        }
    };
    let written = write(
        app,
        req,
        client,
        &database,
        "",
        precision,
        accept_partial,
        Flavor::V3,
    )?;
    Ok(answer(Flavor::V3, &written))
}

/// A parameter that must be given and not empty.
fn required<'q>(
    value: Option<Cow<'q, str>>,
    key: &str,
    what: &str,
) -> Result<Cow<'q, str>, ApiError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::Influx(
            Code::MissingDatabase,
            format!("{key} is required: {what}"),
        )),
    }
}

/// Writes the request's lines; `flavor` shapes the answer to a whole write that the log's
/// writer may send for it (see `http::EarlyAnswer`), exactly as [`answer`] and the handler
/// would.
#[allow(clippy::too_many_arguments)]
fn write(
    app: &App,
    req: &Request,
    client: &Client,
    database: &str,
    rp: &str,
    precision: Precision,
    accept_partial: bool,
    flavor: Flavor,
) -> Result<Written, ApiError> {
    let now_ns = crate::service::now_ms().saturating_mul(1_000_000);
    let arm = |whole: &Written| super::arm_early(req, flavor, answer(flavor, whole));
    app.service
        .write(WriteRequest {
            client,
            database,
            retention_policy: rp,
            body: &req.body,
            precision,
            accept_partial,
            now_ns,
            answer_early: Some(&arm),
        })
        .map_err(|refused| {
            let code = match &refused {
                WriteRefused::Database { .. } => Code::DatabaseNotAllowed,
                WriteRefused::Measurement { .. } | WriteRefused::RunMeasurement { .. } => {
                    Code::MeasurementNotAllowed
                }
                WriteRefused::Name { .. } => Code::MissingDatabase,
                WriteRefused::NotUtf8 { .. } => Code::LinesRefused,
                WriteRefused::TooManyDatabases => Code::TooManyDatabases,
                WriteRefused::NoRetentionPolicy { .. } => Code::UnknownRetentionPolicy,
                WriteRefused::Series(_) => Code::StorageError,
                WriteRefused::NotRecorded(e) if e.is_spool_full() => Code::SpoolFull,
                WriteRefused::NotRecorded(e) if e.is_share_full() => Code::SpoolShareFull,
                WriteRefused::NotRecorded(_) => Code::StorageError,
            };
            ApiError::Influx(code, refused.to_string())
        })
}

/// The answer to a write in its API's words.
fn answer(flavor: Flavor, w: &Written) -> Reply {
    if let Some(Outcome::DeadLettered(why)) = &w.outcome {
        let message =
            format!("InfluxDB refused the write ({why}); the gateway keeps it as a dead letter");
        return Reply::Response(error(flavor, Code::LinesRefused, &message, None));
    }
    if w.is_whole() {
        return Reply::Response(Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
            client: None,
            code: None,
        });
    }
    let written = w.points;
    // InfluxDB 1.x answers a body none of whose lines it could parse with the refusals alone;
    // once a point reached its storage engine (written, or refused there), as a partial write
    // whose `dropped=N` counts the points refused there, not the lines its parser refused.
    let parsed_none = written == 0 && w.unparsed == w.refused_count;
    let dropped = match flavor {
        Flavor::V1 => w.refused_count - w.unparsed,
        _ => w.refused_count,
    };
    let mut message = match flavor {
        Flavor::V2 if written > 0 => format!("partial write error ({written} written): "),
        Flavor::V3 if written > 0 => "partial write of line protocol occurred: ".to_string(),
        Flavor::V3 => "no line of the write was recorded: ".to_string(),
        Flavor::V1 if parsed_none => String::new(),
        Flavor::V1 => "partial write: ".to_string(),
        _ if written > 0 => "partial write: ".to_string(),
        _ => String::new(),
    };
    // The first lines refused, each with its reason; as InfluxDB 1.x says them, a reason
    // its storage engine gives (a type conflict, a point past the retention policy) once,
    // however many lines it refused, and a parse error for each line.
    let shown = &w.refused[..w.refused.len().min(10)];
    let mut reasons: Vec<&str> = Vec::with_capacity(shown.len());
    for r in shown {
        let told = r.why != LineRefusal::Parse && reasons.contains(&r.message.as_str());
        if !told {
            reasons.push(&r.message);
        }
    }
    message.push_str(&reasons.join("\n"));
    if w.refused_count > shown.len() {
        message.push_str(&format!("\n… and {} more", w.refused_count - shown.len()));
    }
    if let Some(budget) = &w.budget {
        message.push('\n');
        message.push_str(budget);
    }
    if !(flavor == Flavor::V1 && parsed_none) {
        message.push_str(&format!(" dropped={dropped}"));
    }
    let data = (flavor == Flavor::V3).then(|| {
        w.refused
            .iter()
            .map(|r| {
                json!({
                    "original_line": r.text,
                    "line_number": r.number,
                    "error_message": r.message,
                })
            })
            .collect::<Value>()
    });
    Reply::Response(error(flavor, Code::LinesRefused, &message, data))
}

/// An error answer in `flavor`'s shape: v1 `{"error", "code"}`, v2 `{"code": v2's word,
/// "message", "error"}`, v3 `{"error", "code", "data"}`.
pub fn error(flavor: Flavor, code: Code, message: &str, data: Option<Value>) -> Response {
    let body = match flavor {
        Flavor::V2 => json!({
            "code": v2_code(code.status()),
            "message": message,
            "error": message,
            "reason": code.as_str(),
        }),
        Flavor::V3 => json!({"error": message, "code": code.as_str(), "data": data}),
        Flavor::V1 | Flavor::Run => json!({"error": message, "code": code.as_str()}),
    };
    let response = Response {
        code: Some(code),
        ..Response::json(code.status(), &body)
    };
    match code.retry_after() {
        Some(s) => response.with_header("Retry-After", s.to_string()),
        None => response,
    }
}

/// The `code` word InfluxDB 2's API gives for a status.
fn v2_code(status: u16) -> &'static str {
    match status {
        400 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        408 => "request timeout",
        413 => "request too large",
        429 => "too many requests",
        503 => "unavailable",
        _ => "internal error",
    }
}

/// An error answer of the HTTP layer or of the routing (401, 429, 405, …) reshaped for a v2
/// route: `message` beside `error`, and v2's word as `code` (the gateway's in `reason`).
pub fn reshape_v2(mut response: Response) -> Response {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&response.body) else {
        return response;
    };
    if body.contains_key("message") {
        return response;
    }
    if let Some(message) = body.get("error").cloned() {
        let ours = body.remove("code").unwrap_or(Value::Null);
        body.insert("message".into(), message);
        body.insert("code".into(), v2_code(response.status).into());
        body.insert("reason".into(), ours);
        response.body = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    }
    response
}

/// `GET|HEAD /ping`: 204, as InfluxDB answers it (the version header is added to every
/// answer of these routes).
pub fn ping(_: &App, _: &Request, _: Option<&Client>) -> Result<Reply, ApiError> {
    Ok(Reply::Response(Response {
        status: 204,
        headers: vec![("X-Influxdb-Build", "OSS".into())],
        body: Vec::new(),
        client: None,
        code: None,
    }))
}

/// How long after a failed write to the log `GET /health` says `fail` (while no write has
/// succeeded since). The log is tried again by the next request only: a health check that
/// failed for as long as nothing wrote would keep a load balancer from ever sending the
/// write that finds the disk freed.
pub const HEALTH_FAILS_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /health`: InfluxDB 2's answer, `pass` while the gateway takes writes; 503 `fail`, as
/// InfluxDB 2 answers when it is not ready, saying why, while every write is refused:
/// within [`HEALTH_FAILS_FOR`] of a failed write to the log (a full disk: 503
/// `storage_error`) while none has succeeded since (without the path under `storage.dir`),
/// and from a write refused for the log's bound (503 `spool_full`: InfluxDB has been away)
/// until InfluxDB takes part of the log or a write is taken.
pub fn health(app: &App, _: &Request, _: Option<&Client>) -> Result<Reply, ApiError> {
    let now = std::time::Instant::now();
    let log = app.service.delivery.log();
    let failing = match log.write_failure().filter(|f| fails_health(f.since, now)) {
        Some(failure) => Some(format!(
            "the gateway cannot write its log: {} (the next write tries again)",
            failure.for_client
        )),
        None => log.is_full().then(|| {
            format!(
                "the gateway's log holds storage.max_spool_bytes = {} bytes InfluxDB has not taken: writes are refused 503 spool_full until it takes some",
                log.limit()
            )
        }),
    };
    let (status, message) = match &failing {
        Some(why) => ("fail", why.as_str()),
        None => ("pass", "ready for queries and writes"),
    };
    let body = json!({
        "name": "influxdb",
        "message": message,
        "status": status,
        "checks": [],
        "version": version(),
        "commit": "metrics-consumer",
    });
    Ok(match failing {
        Some(_) => Reply::Response(Response::json(503, &body)),
        None => Reply::Json(body),
    })
}

/// Whether a write to the log that failed `since` (none succeeding since; a request refused
/// while the log is broken counts as one) makes `GET /health` say `fail` `now`: within
/// [`HEALTH_FAILS_FOR`] of it, on the monotonic clock, so that a wall clock set back cannot
/// keep it failing.
fn fails_health(since: std::time::Instant, now: std::time::Instant) -> bool {
    now.saturating_duration_since(since) < HEALTH_FAILS_FOR
}

/// `GET|POST /query?q=`: `CREATE DATABASE` of a database the token may write (answered as
/// done: the gateway makes it in InfluxDB with its first write), `SHOW DATABASES` (the
/// token's, as named without globs); anything else 403, the gateway being insert-only.
pub fn query(_: &App, req: &Request, client: Option<&Client>) -> Result<Reply, ApiError> {
    let client = writer(client)?;
    let form = std::str::from_utf8(&req.body).unwrap_or("");
    let q = match param(req.query(), "q")? {
        Some(q) => q,
        None => param(form, "q")?.unwrap_or_default(),
    };
    let mut results = Vec::new();
    for (id, statement) in statements(&q)
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let words: Vec<&str> = statement.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let result = match upper.as_slice() {
            [c, d, ..] if c == "CREATE" && d == "DATABASE" && words.len() >= 3 => {
                let (name, rest) = create_database(statement);
                if !rest.trim().is_empty() {
                    // A retention asked for and silently not made would mislead the client.
                    return Err(ApiError::Influx(
                        Code::InsertOnly,
                        format!(
                            "metrics-consumer makes a database with InfluxDB's default retention policy at the first write, and takes no clause after the name ({}); drop it, or create the database with its retention policy in InfluxDB itself",
                            crate::logtext::escape(rest.trim(), 64)
                        ),
                    ));
                }
                check_name(&name).map_err(|why| {
                    ApiError::Influx(Code::MissingDatabase, format!("the database {why}"))
                })?;
                if !client.may_write_database(&name) {
                    return Err(ApiError::Influx(
                        Code::DatabaseNotAllowed,
                        WriteRefused::Database {
                            database: name,
                            allowed: client.databases.clone(),
                        }
                        .to_string(),
                    ));
                }
                json!({"statement_id": id})
            }
            [s, d] if s == "SHOW" && d == "DATABASES" => {
                let names: Vec<Value> = client
                    .databases
                    .iter()
                    .filter(|d| !d.contains(['*', '?', '[']))
                    .map(|d| json!([d]))
                    .collect();
                json!({"statement_id": id, "series": [
                    {"name": "databases", "columns": ["name"], "values": names}
                ]})
            }
            _ => {
                return Err(ApiError::Influx(
                    Code::InsertOnly,
                    "metrics-consumer is insert-only: it answers CREATE DATABASE and SHOW DATABASES, and writes; query InfluxDB itself for anything else".into(),
                ));
            }
        };
        results.push(result);
    }
    if results.is_empty() {
        return Err(ApiError::Influx(
            Code::InvalidParameter,
            "q is required: CREATE DATABASE <name> or SHOW DATABASES".into(),
        ));
    }
    Ok(Reply::Json(json!({ "results": results })))
}

/// The statements of a query: `q` split at each `;` outside double-quoted identifiers and
/// single-quoted strings (with their `\` escapes), as InfluxQL reads them, so `CREATE DATABASE
/// "a;b"` is one statement.
fn statements(q: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (at, c) in q.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ';') => {
                out.push(&q[start..at]);
                start = at + 1;
            }
            (None, _) => {}
        }
    }
    out.push(&q[start..]);
    out
}

/// The name after `CREATE DATABASE` in `statement` (its first two words, split at any
/// whitespace, as the statement's words were): a bare word, or a double-quoted identifier with
/// `\"` escapes; and what follows it (`WITH …`).
fn create_database(statement: &str) -> (String, &str) {
    let rest = skip_word(skip_word(statement));
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        while let Some((_, c)) = chars.next() {
            match c {
                '\\' => name.extend(chars.next().map(|(_, c)| c)),
                '"' => break,
                c => name.push(c),
            }
        }
        let after = chars.next().map_or(quoted.len(), |(at, _)| at);
        return (name, &quoted[after..]);
    }
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    (rest[..end].to_string(), &rest[end..])
}

#[cfg(test)]
fn unquote(statement: &str) -> String {
    create_database(statement).0
}

/// `s` past its first word and the whitespace around it. Cut at the whitespace character's own
/// index: some are wider than a byte (U+00A0).
fn skip_word(s: &str) -> &str {
    let s = s.trim_start();
    s.find(char::is_whitespace)
        .map_or("", |at| s[at..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_for_a_minute_after_a_failed_write_to_the_log() {
        let since = std::time::Instant::now();
        let later = |s: u64| since + std::time::Duration::from_secs(s);
        assert!(fails_health(since, since));
        assert!(fails_health(since, later(59)));
        assert!(!fails_health(since, later(60)));
        assert!(!fails_health(since, later(3600)));
    }

    #[test]
    fn parameters_are_read_as_a_form() {
        let q = "db=k6&rp=a%20b&precision=ms&x=1+2&db=other";
        assert_eq!(param(q, "db").ok().flatten().as_deref(), Some("k6"));
        assert_eq!(param(q, "rp").ok().flatten().as_deref(), Some("a b"));
        assert_eq!(param(q, "x").ok().flatten().as_deref(), Some("1 2"));
        assert_eq!(param(q, "nope").ok().flatten(), None);
        assert!(param("db=%ff", "db").is_err());
        // Names are decoded too: an escaped name is the same name, a bad one none.
        assert_eq!(param("%64b=k6", "db").ok().flatten().as_deref(), Some("k6"));
        assert_eq!(param("a+b=1", "a b").ok().flatten().as_deref(), Some("1"));
        assert_eq!(
            param("%ff=1&db=2", "db").ok().flatten().as_deref(),
            Some("2")
        );
    }

    #[test]
    fn a_reason_of_the_storage_engine_is_told_once_and_a_parse_error_for_each_line() {
        use crate::service::write::RefusedLine;
        let line = |number: usize, why: LineRefusal, message: &str| RefusedLine {
            number,
            text: String::new(),
            why,
            message: message.to_string(),
        };
        let old = "points beyond retention policy";
        let written = Written {
            points: 1,
            refused: vec![
                line(1, LineRefusal::Retention, old),
                line(
                    2,
                    LineRefusal::Parse,
                    "unable to parse 'bad': missing fields",
                ),
                line(3, LineRefusal::Retention, old),
                line(
                    4,
                    LineRefusal::Parse,
                    "unable to parse 'bad': missing fields",
                ),
            ],
            refused_count: 4,
            unparsed: 2,
            budget: None,
            outcome: None,
        };
        let Reply::Response(response) = answer(Flavor::V1, &written) else {
            panic!("a response");
        };
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        // influxd 1.6.7 answers two points past the policy with the reason once, dropped=2.
        assert_eq!(
            body["error"],
            "partial write: points beyond retention policy\nunable to parse 'bad': missing fields\nunable to parse 'bad': missing fields dropped=2"
        );
    }

    #[test]
    fn a_create_database_whose_words_are_split_by_a_wide_space_is_read_without_a_panic() {
        // U+00A0 and U+3000 are whitespace to split_whitespace, and wider than one byte.
        assert_eq!(unquote("CREATE\u{a0}DATABASE k6"), "k6");
        assert_eq!(unquote("CREATE\u{3000}DATABASE\u{3000}\"k6\""), "k6");
        assert_eq!(unquote("\u{a0}CREATE DATABASE"), "");
    }

    #[test]
    fn create_database_names_are_read_bare_or_quoted() {
        assert_eq!(unquote("CREATE DATABASE k6"), "k6");
        assert_eq!(
            unquote("create database \"my db\" WITH DURATION 1d"),
            "my db"
        );
        assert_eq!(unquote("CREATE  DATABASE   \"a\\\"b\""), "a\"b");
        assert_eq!(
            create_database("CREATE DATABASE \"k6\" WITH DURATION 1d")
                .1
                .trim(),
            "WITH DURATION 1d"
        );
        assert_eq!(create_database("CREATE DATABASE k6 ").1.trim(), "");
        assert_eq!(create_database("CREATE DATABASE \"k6\"").1, "");
    }

    #[test]
    fn statements_are_split_at_semicolons_outside_quotes() {
        assert_eq!(
            statements("CREATE DATABASE \"a;b\"; SHOW DATABASES"),
            ["CREATE DATABASE \"a;b\"", " SHOW DATABASES"]
        );
        assert_eq!(
            statements("CREATE DATABASE \"a\\\";b\";x"),
            ["CREATE DATABASE \"a\\\";b\"", "x"]
        );
        assert_eq!(statements("SELECT 'x;y' ; z"), ["SELECT 'x;y' ", " z"]);
        assert_eq!(statements("SHOW DATABASES"), ["SHOW DATABASES"]);
    }
}
