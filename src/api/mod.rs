//! The HTTP face of the service: [`App`] answers each request by finding its route in
//! `routes`, checking the token, and calling the route's handler, which is thin glue around
//! one use-case of `service`.
//!
//! Every refusal becomes an HTTP answer in exactly one place, [`ApiError::response`], with a
//! [`Code`] from the one table of codes. The access log and the request counters are written
//! here, after each answer. Handlers never hold the job-table lock while writing, and nothing
//! here logs a request body or a token.

mod influx;
mod report;
mod routes;
mod runs;
mod states;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use routes::{ROUTES, listing, names as route_names};

use influx::Flavor;

use crate::auth::{Client, Denied, FailedChecks, RequestRate, Tokens, retry_after_secs};
use crate::code::Code;
use crate::config::Settings;
use crate::http::{Exchange, Handler, Head, Request, Response};
use crate::ingest::payload::{PayloadError, PayloadLimits};
use crate::logtext::{ACCESS_LINES, MISSING_TOKEN_LINES, REFUSED_TOKEN_LINES};
use crate::service::{Refused, Service};
use crate::state::schema::Conflict;
use crate::stats::Stats;
use crate::sync::Waiter;

/// Everything the handlers share.
pub struct App {
    pub settings: Settings,
    pub tokens: Tokens,
    /// Failed token checks per address (`auth.max_failures` in `auth.failure_window`).
    pub failed_checks: FailedChecks,
    /// Each client's `requests_per_second`.
    pub request_rate: RequestRate,
    pub service: Arc<Service>,
    pub started: Instant,
    /// The connections and the request bodies in memory, kept by the HTTP server.
    pub http: crate::http::Gauges,
}

/// Why a request was not done. Mapped to an answer in [`ApiError::response`].
#[derive(Debug)]
pub enum ApiError {
    Payload(PayloadError),
    Unauthorized(Denied),
    /// The address has spent its failed token checks; it may try again after this long.
    AuthThrottled(Duration),
    /// The client (by name) has spent its `requests_per_second`; room again after this long.
    RateLimited(String, Duration),
    NoRoute,
    /// The route takes these methods (as `Allow` lists them).
    Method(String),
    Refused(Refused),
    /// A refusal of InfluxDB's write API: its code and the message.
    Influx(Code, String),
}

impl ApiError {
    fn response(&self) -> Response {
        let (code, message) = match self {
            ApiError::Payload(e) => (e.code, e.to_string()),
            ApiError::Unauthorized(denied) => (Code::Unauthorized, denied.message().to_string()),
            ApiError::AuthThrottled(wait) => {
                let secs = retry_after_secs(*wait);
                return retry_in(
                    Code::TooManyAuthFailures,
                    &format!(
                        "too many failed token checks from this address (auth.max_failures in auth.failure_window); try again in {secs} s"
                    ),
                    secs,
                );
            }
            ApiError::RateLimited(name, wait) => {
                let secs = retry_after_secs(*wait);
                return retry_in(
                    Code::TooManyRequests,
                    &format!(
                        "the token {:?} has spent its requests_per_second; try again in {secs} s",
                        name
                    ),
                    secs,
                );
            }
            ApiError::NoRoute => (
                Code::NotFound,
                format!("no such route; the routes are: {}", listing(", ")),
            ),
            ApiError::Method(allow) => {
                return Response::error(
                    Code::MethodNotAllowed,
                    &format!("this route takes {allow}"),
                )
                .with_header("Allow", allow.clone());
            }
            ApiError::Refused(refused) => (refused_code(refused), refused.to_string()),
            ApiError::Influx(code, message) => (*code, message.clone()),
        };
        let response = Response::error(code, &message);
        match self {
            ApiError::Unauthorized(_) => response
                .with_header("WWW-Authenticate", "Bearer realm=\"metrics-consumer\"")
                .with_header("WWW-Authenticate", "Basic realm=\"metrics-consumer\""),
            _ => response,
        }
    }
}

/// An error answer whose `Retry-After` is `secs` rather than the code's usual.
fn retry_in(code: Code, message: &str, secs: u64) -> Response {
    let mut response = Response::error(code, message);
    response.headers.retain(|(name, _)| *name != "Retry-After");
    response.with_header("Retry-After", secs.to_string())
}

/// The code of each way a use-case can refuse.
fn refused_code(refused: &Refused) -> Code {
    match refused {
        Refused::UnknownRun(_) => Code::UnknownRun,
        Refused::AlreadyCommitted { .. } => Code::AlreadyCommitted,
        Refused::CommitInProgress(_) => Code::CommitInProgress,
        Refused::TooManyRunning(_) => Code::TooManyRunning,
        Refused::TooManyRunningForToken { .. } => Code::TooManyRunningForToken,
        Refused::TableFullForToken { .. } => Code::TokenTableFull,
        Refused::FieldIsTokenTag => Code::InvalidField,
        Refused::TooManyFields(_) => Code::TooManyFields,
        Refused::RunTooLarge { .. } => Code::RunTooLarge,
        Refused::TableFull(_) => Code::JobTableFull,
        Refused::FieldIsTag => Code::InvalidField,
        Refused::NotRecorded(why) if why.is_spool_full() => Code::SpoolFull,
        Refused::NotRecorded(why) if why.is_share_full() => Code::SpoolShareFull,
        Refused::NotRecorded(_) => Code::StorageError,
        Refused::SchemaConflict {
            conflict: Conflict::FieldType { .. },
            ..
        } => Code::FieldTypeConflict,
        Refused::SchemaConflict { .. } => Code::TagFieldConflict,
        Refused::OlderThanRetention(_) => Code::OlderThanRetention,
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        ApiError::Payload(e)
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        ApiError::Refused(e)
    }
}

/// A successful answer's body.
pub enum Reply {
    Json(serde_json::Value),
    /// The Prometheus text format.
    Text(String),
    /// An answer made whole by the route (InfluxDB's APIs: 204, their own error shapes).
    Response(Response),
    /// The answer went early ([`http::EarlyAnswer::is_sent`](crate::http::EarlyAnswer::is_sent)):
    /// nothing is made, and nothing of it is sent.
    SentEarly,
}

impl Reply {
    /// The answer on the wire's terms: JSON and text with 200.
    fn into_response(self) -> Response {
        match self {
            Reply::Response(response) => response,
            Reply::Json(body) => Response::json(200, &body),
            Reply::Text(text) => Response {
                status: 200,
                headers: vec![(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8".into(),
                )],
                body: text.into_bytes(),
                client: None,
                code: None,
            },
            Reply::SentEarly => Response {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
                client: None,
                code: None,
            },
        }
    }
}

impl App {
    fn payload_limits(&self) -> PayloadLimits {
        PayloadLimits {
            max_string_bytes: self.settings.config.limits.max_string_bytes,
            max_stats_rows: self.settings.config.limits.max_stats_rows,
        }
    }

    fn stats(&self) -> &Stats {
        &self.service.stats
    }

    /// Whether the request of `head` may go on, before its body is read: its route exists, takes
    /// its method, and its token passes the check when the route needs one. The client its
    /// token names (`None` for routes without a token, and when no tokens are configured).
    fn admission(
        &self,
        head: &Head<'_>,
        route: &'static routes::Route,
    ) -> Result<Option<&Client>, ApiError> {
        if route.token {
            self.authenticate(head, route.flavor == Flavor::V1)
        } else {
            Ok(None)
        }
    }

    /// Answers `req` by `route`, which `admission` let through as `req.client`.
    fn route(&self, req: &Request, route: &'static routes::Route) -> Result<Reply, ApiError> {
        let client = req
            .client
            .as_deref()
            .and_then(|name| self.settings.clients.iter().find(|c| c.name == name));
        (route.handler)(self, req, client)
    }

    /// The client whose token the request carries (`None` when no tokens are configured).
    /// With `query_credentials` (InfluxDB 1.x's routes), a request without an `Authorization`
    /// header may carry the token as the query's `p` (the password; `u` is not read).
    ///
    /// Errors: no token or a wrong one (401); too many failed checks from the address of late
    /// (429, checked before the token, so that guessing costs time); the client's request rate
    /// spent (429).
    fn authenticate(
        &self,
        req: &Head<'_>,
        query_credentials: bool,
    ) -> Result<Option<&Client>, ApiError> {
        if self.tokens.is_open() {
            return Ok(None);
        }
        let ip = req.peer.ip();
        let now = Instant::now();
        if let Err(wait) = self.failed_checks.check(ip, now) {
            Stats::add(&self.stats().auth_failures, 1);
            return Err(ApiError::AuthThrottled(wait));
        }
        let password = match req.header("authorization") {
            None if query_credentials => influx::param(req.query, "p").ok().flatten(),
            _ => None,
        };
        let checked = match &password {
            Some(p) => self.tokens.check_password(p.as_bytes()),
            None => self.tokens.check(req.header("authorization")),
        };
        let index = match checked {
            Ok(index) => index,
            Err(denied) => {
                // A request without credentials guesses nothing: a browser asks without them
                // first and sends the token in answer to the 401's Basic challenge. Only a
                // wrong or malformed token is a failure: counted, and towards
                // `auth.max_failures`.
                let guessed = denied != Denied::Missing;
                if guessed {
                    Stats::add(&self.stats().auth_failures, 1);
                }
                let spent = guessed && self.failed_checks.failed(ip, now);
                let (level, budget) = match denied {
                    Denied::Missing => (log::Level::Info, &MISSING_TOKEN_LINES),
                    Denied::Malformed | Denied::WrongToken => {
                        (log::Level::Warn, &REFUSED_TOKEN_LINES)
                    }
                };
                if !budget.allows(level, now) {
                    return Err(ApiError::Unauthorized(denied));
                }
                log::log!(
                    level,
                    "refused {} {} from {ip}: {}{}",
                    loggable(req.method),
                    loggable(req.path),
                    match denied {
                        Denied::Missing => "no token",
                        Denied::Malformed => "malformed Authorization header",
                        Denied::WrongToken => "wrong token",
                    },
                    if spent {
                        "; too many failed token checks from this address: its requests are answered 429 for a while (auth.max_failures, auth.failure_window)"
                    } else {
                        ""
                    }
                );
                return Err(ApiError::Unauthorized(denied));
            }
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let client = self.settings.clients.get(index);
        if let Err(wait) = self.request_rate.take(index, now) {
            let name = client.map(|c| c.name.clone()).unwrap_or_default();
            return Err(ApiError::RateLimited(name, wait));
        }
        Ok(client)
    }
}

/// Arms `reply` as the answer to `req` that the thread writing its record sends (see
/// `http::EarlyAnswer`), shaped as `handle` shapes a route's reply in `flavor`; `None` where
/// the layer offers no early answer.
fn arm_early(req: &Request, flavor: Flavor, reply: Reply) -> Option<Arc<dyn Waiter>> {
    let early = req.early.as_ref()?;
    let mut response = flavored(flavor, reply.into_response());
    response.client = req.client.clone();
    early.arm(response)
}

/// `reply()`, unless the answer to `req` went early: then nothing is made.
fn unless_sent_early(req: &Request, reply: impl FnOnce() -> Reply) -> Reply {
    match &req.early {
        Some(early) if early.is_sent() => Reply::SentEarly,
        _ => reply(),
    }
}

/// Every answer of InfluxDB's routes carries `X-Influxdb-Version`, as InfluxDB's do; a v2
/// route's errors have v2's shape.
fn flavored(flavor: Flavor, response: Response) -> Response {
    // An answer `admit` dressed already, when the layer passes it through `Handler::dress`.
    if response
        .headers
        .iter()
        .any(|(n, _)| *n == "X-Influxdb-Version")
    {
        return response;
    }
    let response = match flavor {
        Flavor::Run => return response,
        Flavor::V2 if response.status >= 400 => influx::reshape_v2(response),
        _ => response,
    };
    response.with_header("X-Influxdb-Version", influx::version())
}

/// Keeps client text out of the log's structure (see `logtext`), cut to 200 characters.
fn loggable(text: &str) -> String {
    crate::logtext::escape(text, 200)
}

impl Handler for App {
    fn cost(&self, req: &Request) -> u64 {
        match routes::find_for(req.path(), req.method()) {
            Ok((_, route)) if route.flavor != Flavor::Run => {
                crate::service::write::handling_cost(&req.body)
            }
            _ => crate::ingest::payload::handling_cost(&req.body),
        }
    }

    fn admit(&self, head: &Head<'_>) -> Result<Option<String>, Response> {
        let found = routes::find_for(head.path, head.method);
        let flavor = found.as_ref().map_or(Flavor::Run, |(_, r)| r.flavor);
        match found.and_then(|(_, route)| self.admission(head, route)) {
            Ok(client) => Ok(client.map(|c| c.name.clone())),
            Err(e) => {
                let mut response = flavored(flavor, e.response());
                // The token was right: the access log names the client.
                if let ApiError::RateLimited(name, _) = &e {
                    response.client = Some(name.clone());
                }
                Err(response)
            }
        }
    }

    fn handle(&self, req: &Request) -> Response {
        let client = req.client.clone();
        let found = routes::find_for(req.path(), req.method());
        let flavor = found.as_ref().map_or(Flavor::Run, |(_, r)| r.flavor);
        let mut response = match found.and_then(|(_, route)| self.route(req, route)) {
            Ok(reply) => reply.into_response(),
            Err(e) => e.response(),
        };
        response = flavored(flavor, response);
        response.client = client;
        response
    }

    fn dress(&self, method: &str, path: &str, response: Response) -> Response {
        match routes::find_for(path, method) {
            Ok((_, route)) => flavored(route.flavor, response),
            Err(_) => response,
        }
    }

    fn completed(&self, ex: &Exchange<'_>) {
        let route = routes::find_for(ex.path, ex.method).map_or(ROUTES.len(), |(i, _)| i);
        self.stats().request(route, ex.status, ex.duration);
        if let Some(code) = ex.code {
            self.stats().refusal(code);
        }
        if !ACCESS_LINES.allows(log::Level::Info, Instant::now()) {
            return;
        }
        log::info!(
            target: "access",
            "{} {} {} {} {} {:.1}ms{}",
            ex.peer.ip(),
            loggable(ex.method),
            loggable(ex.path),
            ex.status,
            ex.bytes,
            ex.duration.as_secs_f64() * 1000.0,
            ex.client
                .map_or(String::new(), |name| format!(" client={}", loggable(name)))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_cannot_forge_lines() {
        assert_eq!(loggable("/a\nGET /b 200"), "/a?GET /b 200");
        assert_eq!(
            loggable(&"x".repeat(500)),
            format!("{}...", "x".repeat(200))
        );
        assert_eq!(loggable("/runs/\u{202E}txt.exe"), "/runs/?txt.exe");
    }
}
