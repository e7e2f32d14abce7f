//! The InfluxDB sink: the only module that talks to InfluxDB.
//!
//! It sends line protocol with millisecond precision to the v1 `/write`, the v2 `/api/v2/write`
//! or the v3 `/api/v3/write_lp` endpoint (with `precision=millisecond` always: InfluxDB 3 would
//! guess the precision from the numbers' size), creates the v1 database when asked to, reads InfluxDB's answers
//! within bounds, and sorts a failure into a [`SinkError`] (whose disposition says: try again
//! later, or never, for bad data).
//!
//! It never follows redirects (they would carry credentials elsewhere), never takes a proxy
//! from the environment, never reads more than [`MAX_ANSWER_BYTES`] of an answer, and never
//! logs a credential. It knows nothing of jobs or HTTP clients of the gateway.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::config::{Api, Influxdb};
use crate::delivery::sink::{Disposition, Sink, SinkError};
use crate::state::schema::{Known, Retention, TargetPolicy};
use crate::storage::log::OwnedTarget;

mod answers;
use answers::{
    MAX_SCHEMA_BYTES, parse_bucket_retention, parse_counts, parse_retention_policies, parse_schema,
    parse_target_policy, quote_identifier,
};

/// ureq looks up the host of every request, even one that goes out on a pooled connection, and
/// with a time limit set it starts a thread for each lookup so it can stop waiting: one thread
/// per write to InfluxDB. An address (`127.0.0.1`, `[::1]`, the usual case for a gateway beside
/// its InfluxDB) needs no lookup, so it is answered here at once; a name still goes through
/// ureq's own resolver with its time limit.
#[derive(Debug, Default)]
struct AddressFirst(DefaultResolver);

impl Resolver for AddressFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if let (Ok(ip), Some(port)) = (host.parse::<IpAddr>(), port) {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        self.0.resolve(uri, config, timeout)
    }
}

/// InfluxDB's error answers are short JSON; anything longer is cut.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// How long after a failed `CREATE DATABASE` it may be tried again, when writes find the
/// database missing.
const CREATE_RETRY_EVERY: Duration = Duration::from_secs(60);
/// How much of InfluxDB's message is kept for answers, states and logs.
const MAX_MESSAGE_CHARS: usize = 500;

pub struct Influx {
    agent: ureq::Agent,
    write_url: String,
    query_url: String,
    /// The `Authorization` header value; never logged or shown.
    authorization: Option<String>,
    database: String,
    retention_policy: String,
    api: Api,
    /// v1 with `create_database`: when `CREATE DATABASE` of each database last failed, so that
    /// a user who may not create databases (InfluxDB answers 403) is not asked again on every
    /// write, and a refusal of one database (a name InfluxDB will not make) holds back no
    /// other. At most one entry per database written (the write API's are bounded).
    create_failed: Mutex<std::collections::HashMap<String, Instant>>,
    create_database: bool,
    base_url: String,
    /// v2: the organization and the bucket, to read the bucket's retention.
    org: String,
    bucket: String,
}

/// What an empty write told of the right to write (`--check-influxdb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCheck {
    /// InfluxDB took the empty write (v1 answers 204 once the user may write and the database
    /// and retention policy exist).
    Taken,
    /// InfluxDB checked the credentials and the bucket or database, then refused the empty
    /// body itself (InfluxDB 2 answers 400 "writing requires points"): its words.
    BodyRefused(String),
}

impl Influx {
    pub fn new(c: &Influxdb) -> Influx {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(c.timeout.0))
            .timeout_connect(Some(c.timeout.0))
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("metrics-consumer/", env!("CARGO_PKG_VERSION")))
            // ureq's defaults (128 KiB in and out per connection, 10 idle connections) are
            // sized for downloads; InfluxDB answers a write with a few hundred bytes, and the
            // writes are few and large (delivery groups them). Smaller buffers only mean more
            // system calls per large write, and the idle ones would sit in resident memory.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(64 * 1024)
            .max_idle_connections(4)
            .max_idle_connections_per_host(4)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            AddressFirst::default(),
        );
        let base = c.url.trim_end_matches('/').to_string();
        let (write_url, authorization) = match c.api {
            Api::V1 => {
                let mut url = format!("{base}/write?db={}&precision=ms", encode(&c.database));
                if !c.retention_policy.is_empty() {
                    url.push_str(&format!("&rp={}", encode(&c.retention_policy)));
                }
                let auth = (!c.username.is_empty())
                    .then(|| crate::auth::basic_credentials(&c.username, &c.password));
                (url, auth)
            }
            Api::V2 => {
                let url = format!(
                    "{base}/api/v2/write?org={}&bucket={}&precision=ms",
                    encode(&c.org),
                    encode(&c.bucket)
                );
                // InfluxDB 2 OSS documents `Authorization: Token`.
                let auth = (!c.token.is_empty()).then(|| format!("Token {}", c.token));
                (url, auth)
            }
            Api::V3 => {
                // InfluxDB 3's native endpoint; `accept_partial` stays at its default (true), so a
                // refused line names itself and the others are stored.
                let url = format!(
                    "{base}/api/v3/write_lp?db={}&precision=millisecond",
                    encode(&c.database)
                );
                let auth = (!c.token.is_empty()).then(|| format!("Bearer {}", c.token));
                (url, auth)
            }
        };
        Influx {
            agent,
            write_url,
            query_url: format!("{base}/query"),
            authorization,
            database: c.database.clone(),
            retention_policy: c.retention_policy.clone(),
            api: c.api,
            create_failed: Mutex::new(std::collections::HashMap::new()),
            create_database: c.api == Api::V1 && c.create_database,
            base_url: base,
            org: c.org.clone(),
            bucket: c.bucket.clone(),
        }
    }

    /// v1 with `create_database`: `CREATE DATABASE` (a no-op when it exists). Tried at start,
    /// and again when a write finds the database missing (not within [`CREATE_RETRY_EVERY`] of
    /// a try InfluxDB refused). Its failure never holds a write back: the write's own answer
    /// says what is wrong.
    fn create_database(&self) -> Result<(), SinkError> {
        self.create_named(&self.database)
    }

    /// [`Influx::create_database`] for the database `database`.
    fn create_named(&self, database: &str) -> Result<(), SinkError> {
        let query = format!(
            "q={}",
            encode(&format!(
                "CREATE DATABASE \"{}\"",
                database.replace('"', "\\\"")
            ))
        );
        let result = self.post(
            &self.query_url,
            query.as_bytes(),
            "application/x-www-form-urlencoded",
        );
        // Only InfluxDB's own refusal holds the next try back: a try that found it down, busy
        // or slow says nothing of whether the database may be made, and the next write that
        // finds it missing tries again at once.
        {
            let mut failed = crate::sync::lock(&self.create_failed);
            match &result {
                Err(e) if e.disposition() != Disposition::Retry => {
                    failed.insert(database.to_string(), Instant::now());
                }
                _ => {
                    failed.remove(database);
                }
            }
        }
        match &result {
            Ok(()) => log::info!("influxdb: database {database:?} is ready"),
            Err(SinkError::Misconfigured {
                status: 401 | 403, ..
            }) => log::warn!(
                "influxdb: the user may not create database {database:?} (it takes an admin); writes go on, and succeed once an admin creates it and grants WRITE (or set influxdb.create_database = false)"
            ),
            Err(e) => log::warn!("influxdb: cannot create database {database:?}: {e}"),
        }
        result
    }

    /// Whether `CREATE DATABASE` of `database` may be tried now: when asked to, and not within
    /// [`CREATE_RETRY_EVERY`] of a failed try of it.
    fn may_create(&self, database: &str) -> bool {
        self.create_database
            && crate::sync::lock(&self.create_failed)
                .get(database)
                .is_none_or(|at| at.elapsed() >= CREATE_RETRY_EVERY)
    }

    /// Whether `url` is one of InfluxDB's write endpoints (its answer is read as a write's).
    fn is_write_url(&self, url: &str) -> bool {
        url.strip_prefix(&self.base_url).is_some_and(|path| {
            ["/write?", "/api/v2/write?", "/api/v3/write_lp?"]
                .iter()
                .any(|write| path.starts_with(write))
        })
    }

    /// The write URL for `target`, timestamps in nanoseconds: v1 its database and retention
    /// policy; v2 the bucket named by InfluxDB 2's DBRP convention (`database`, or
    /// `database/retention_policy`) in `influxdb.org`; v3 its database.
    fn target_url(&self, target: &OwnedTarget) -> String {
        let base = &self.base_url;
        let (db, rp) = (&target.database, &target.retention_policy);
        match self.api {
            Api::V1 => {
                let mut url = format!("{base}/write?db={}&precision=ns", encode(db));
                if !rp.is_empty() {
                    url.push_str(&format!("&rp={}", encode(rp)));
                }
                url
            }
            Api::V2 => format!(
                "{base}/api/v2/write?org={}&bucket={}&precision=ns",
                encode(&self.org),
                encode(&v2_bucket(db, rp))
            ),
            Api::V3 => format!(
                "{base}/api/v3/write_lp?db={}&precision=nanosecond",
                encode(db)
            ),
        }
    }

    fn post(&self, url: &str, body: &[u8], content_type: &str) -> Result<(), SinkError> {
        self.exchange(url, body, content_type, MAX_ANSWER_BYTES)
            .map(drop)
    }

    /// POSTs `body` and returns the answer's text (at most `limit` bytes read) when the status
    /// is 2xx and no error is in it.
    fn exchange(
        &self,
        url: &str,
        body: &[u8],
        content_type: &str,
        limit: u64,
    ) -> Result<String, SinkError> {
        let mut request = self.agent.post(url).header("Content-Type", content_type);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = request.send(body).map_err(failed)?;
        let status = response.status().as_u16();
        // InfluxDB 1.x and 2.x name themselves in every answer; a proxy in front does not.
        let version_header = response.headers().contains_key("x-influxdb-version");
        // The answer is read (bounded) even on success so the connection can be reused.
        let text = response
            .body_mut()
            .with_config()
            .limit(limit)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        if self.is_write_url(url) {
            let said = InfluxdbSaid::of(self.api, version_header, &text);
            return write_answer(status, &text, said).map(|()| text);
        }
        if (200..300).contains(&status) {
            // InfluxDB 1.x query answers are 200 even when the statement failed.
            if let Some(message) = error_message(&text).filter(|_| status == 200) {
                return Err(SinkError::from_status(400, message));
            }
            return Ok(text);
        }
        let message = error_message(&text).unwrap_or_else(|| cut(text.trim()));
        Err(SinkError::from_status(status, message))
    }

    /// Whether the credentials may write to the database (bucket): a write with an empty body,
    /// which stores nothing. InfluxDB checks the credentials, the database (bucket) and v1's
    /// retention policy before it reads the body: v1 answers 204, v2 400 "writing requires
    /// points"; 401, 403 and 404 say which is wrong ([`SinkError::Misconfigured`] with
    /// InfluxDB's words). Never creates the database.
    pub fn check_write(&self) -> Result<WriteCheck, SinkError> {
        match self.post(&self.write_url, b"", "text/plain; charset=utf-8") {
            Ok(()) => Ok(WriteCheck::Taken),
            Err(SinkError::Refused { message, .. }) => Ok(WriteCheck::BodyRefused(message)),
            Err(e) => Err(e),
        }
    }

    /// v1: how many values of the `uuid` tag each measurement holds (InfluxDB's estimate,
    /// `SHOW TAG VALUES CARDINALITY`), by measurement name; every run adds one, and InfluxDB
    /// 1.x refuses new ones beyond its `max-values-per-tag`. `None` for v2 and v3.
    pub fn uuid_values(&self) -> Result<Option<Vec<(String, u64)>>, SinkError> {
        if self.api != Api::V1 {
            return Ok(None);
        }
        let text = self.query("SHOW TAG VALUES CARDINALITY WITH KEY = \"uuid\"")?;
        Ok(Some(parse_counts(&text)))
    }

    /// One InfluxQL statement on the database; the answer's text.
    fn query(&self, statement: &str) -> Result<String, SinkError> {
        let query = format!("db={}&q={}", encode(&self.database), encode(statement));
        self.exchange(
            &self.query_url,
            query.as_bytes(),
            "application/x-www-form-urlencoded",
            MAX_ANSWER_BYTES,
        )
    }

    /// GETs `url` with the credentials; the answer's text when it is 2xx.
    fn get(&self, url: &str) -> Result<String, SinkError> {
        let mut request = self.agent.get(url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = request.call().map_err(failed)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = error_message(&text).unwrap_or_else(|| cut(text.trim()));
        Err(SinkError::from_status(status, message))
    }
}

impl Sink for Influx {
    /// Writes line protocol (lines separated by '\n'). On success InfluxDB has stored it. A v1
    /// database found missing (404) is created when `influxdb.create_database` allows, and the
    /// write made again at once.
    fn write(&self, lines: &str) -> Result<(), SinkError> {
        let post = || {
            self.post(
                &self.write_url,
                lines.as_bytes(),
                "text/plain; charset=utf-8",
            )
        };
        let result = post();
        if let Err(SinkError::Misconfigured { status: 404, .. }) = &result
            && self.may_create(&self.database)
            && self.create_database().is_ok()
        {
            // The database was dropped while we ran, or never made: made now.
            return post();
        }
        result
    }

    /// Writes to `target` as [`Influx::write`] does to `[influxdb]`'s database; a v1 database
    /// found missing is created the same way.
    fn write_to(&self, target: &OwnedTarget, lines: &str) -> Result<(), SinkError> {
        let url = self.target_url(target);
        let post = || self.post(&url, lines.as_bytes(), "text/plain; charset=utf-8");
        let result = post();
        if let Err(SinkError::Misconfigured { status: 404, .. }) = &result
            && self.may_create(&target.database)
            && self.create_named(&target.database).is_ok()
        {
            return post();
        }
        result
    }

    /// InfluxDB 1.x, 2.x and 3.x answer `GET /ping` with 204 (3.x may ask for the token). Only
    /// whether InfluxDB answers: what a write needs beyond that, the write's answer says.
    fn ping(&self) -> Result<(), SinkError> {
        let mut request = self.agent.get(format!("{}/ping", self.base_url));
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let response = request.call().map_err(failed)?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(SinkError::from_status(
                status,
                format!("/ping answered {status}"),
            ));
        }
        Ok(())
    }

    fn prepare(&self) -> Result<(), SinkError> {
        if self.create_database {
            self.create_database()?;
        }
        Ok(())
    }

    /// v1: `SHOW RETENTION POLICIES` (the user needs READ): `influxdb.retention_policy`'s
    /// duration, or the default policy's. v2: the bucket's `retentionRules` from
    /// `GET /api/v2/buckets` (the token needs to read buckets). v3: `None` (not told over
    /// this API). `None` too for a policy that keeps points for ever.
    fn retention(&self) -> Result<Option<Retention>, SinkError> {
        match self.api {
            Api::V1 => {
                let statement = format!(
                    "SHOW RETENTION POLICIES ON {}",
                    quote_identifier(&self.database)
                );
                match self.query(&statement) {
                    Ok(text) => Ok(parse_retention_policies(&text, &self.retention_policy)),
                    // Nothing is kept for a database that does not exist (yet).
                    Err(SinkError::Refused { message, .. })
                        if message.contains("database not found") =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
            Api::V2 => {
                let url = format!(
                    "{}/api/v2/buckets?org={}&name={}",
                    self.base_url,
                    encode(&self.org),
                    encode(&self.bucket)
                );
                Ok(parse_bucket_retention(&self.get(&url)?, &self.bucket))
            }
            Api::V3 => Ok(None),
        }
    }

    /// v1: `SHOW RETENTION POLICIES` on the target's database: the target's policy's
    /// duration, or the default policy's when it names none; a policy the database does not
    /// list is [`TargetPolicy::Missing`]. v2: the `retentionRules` of the bucket the target is
    /// written to (`database`, or `database/retention_policy`). v3: nothing told. Kept for
    /// ever (no retention) too for a database that does not exist yet (InfluxDB makes it
    /// with the first write), a bucket not found, and a policy that keeps points for ever.
    fn retention_of(&self, target: &OwnedTarget) -> Result<TargetPolicy, SinkError> {
        let (db, rp) = (&target.database, &target.retention_policy);
        match self.api {
            Api::V1 => {
                let query = format!(
                    "q={}",
                    encode(&format!(
                        "SHOW RETENTION POLICIES ON {}",
                        quote_identifier(db)
                    ))
                );
                match self.exchange(
                    &self.query_url,
                    query.as_bytes(),
                    "application/x-www-form-urlencoded",
                    MAX_SCHEMA_BYTES,
                ) {
                    Ok(text) => Ok(parse_target_policy(&text, rp)),
                    Err(SinkError::Refused { message, .. })
                        if message.contains("database not found") =>
                    {
                        Ok(TargetPolicy::Keeps(None))
                    }
                    Err(e) => Err(e),
                }
            }
            Api::V2 => {
                let bucket = v2_bucket(db, rp);
                let url = format!(
                    "{}/api/v2/buckets?org={}&name={}",
                    self.base_url,
                    encode(&self.org),
                    encode(&bucket)
                );
                match self.get(&url) {
                    Ok(text) => Ok(TargetPolicy::Keeps(parse_bucket_retention(&text, &bucket))),
                    // A bucket not made yet keeps nothing yet.
                    Err(SinkError::Misconfigured { status: 404, .. }) => {
                        Ok(TargetPolicy::Keeps(None))
                    }
                    Err(e) => Err(e),
                }
            }
            Api::V3 => Ok(TargetPolicy::Keeps(None)),
        }
    }

    /// v1: `SHOW FIELD KEYS` and `SHOW TAG KEYS` of the measurements, in one query. A database
    /// that does not exist (yet, or any more) has no schema. v2 and v3 answer `None`: the gateway
    /// knows only what it wrote itself there.
    fn schema(&self, measurements: &[&str]) -> Result<Option<Known>, SinkError> {
        if self.api != Api::V1 {
            return Ok(None);
        }
        let from: Vec<String> = measurements
            .iter()
            .map(|m| match &self.retention_policy {
                rp if rp.is_empty() => quote_identifier(m),
                rp => format!("{}.{}", quote_identifier(rp), quote_identifier(m)),
            })
            .collect();
        let from = from.join(",");
        // Two queries, not two statements in one: InfluxDB 1.6 answers a missing database with
        // "not executed" for the first of several statements, and names the cause only when it
        // is alone.
        let mut texts = Vec::new();
        for show in ["SHOW FIELD KEYS", "SHOW TAG KEYS"] {
            let query = format!(
                "db={}&q={}",
                encode(&self.database),
                encode(&format!("{show} FROM {from}"))
            );
            match self.exchange(
                &self.query_url,
                query.as_bytes(),
                "application/x-www-form-urlencoded",
                MAX_SCHEMA_BYTES,
            ) {
                Ok(text) => texts.push(text),
                Err(SinkError::Refused { message, .. })
                    if message.contains("database not found") =>
                {
                    return Ok(Some(Known::new()));
                }
                Err(e) => return Err(e),
            }
        }
        let mut known = parse_schema(&texts[0], true);
        for (name, m) in parse_schema(&texts[1], false) {
            known.entry(name).or_default().tags.extend(m.tags);
        }
        Ok(Some(known))
    }

    /// `SHOW FIELD KEYS` of every measurement of `database` (tags are not needed: InfluxDB
    /// 1.x takes a tag and a field of one name), through `/query`: InfluxDB 1.x's own, and the
    /// 1.x compatibility endpoint of InfluxDB 2 (the bucket `database`, by its virtual DBRP
    /// mapping) and of InfluxDB 3 (the database), which answer in 1.x's shape. A database that
    /// does not exist has none.
    fn field_types_of(&self, database: &str) -> Result<Option<Known>, SinkError> {
        let query = format!("db={}&q={}", encode(database), encode("SHOW FIELD KEYS"));
        match self.exchange(
            &self.query_url,
            query.as_bytes(),
            "application/x-www-form-urlencoded",
            MAX_SCHEMA_BYTES,
        ) {
            Ok(text) => Ok(Some(parse_schema(&text, true))),
            Err(SinkError::Refused { message, .. }) if message.contains("database not found") => {
                Ok(Some(Known::new()))
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether an answer is InfluxDB's own. InfluxDB 1.x and 2.x send `X-Influxdb-Version` with
/// every answer; a proxy, a load balancer or a web server in front of it does not. Without the
/// header, an answer in the API's own error shape is taken as InfluxDB's too: v2's
/// `{"code": ..., "message": ...}`, v3's `{"error": ...}` (whose server may not send the
/// header). A 400 that is not InfluxDB's says nothing of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfluxdbSaid {
    Yes,
    No,
}

impl InfluxdbSaid {
    fn of(api: Api, version_header: bool, text: &str) -> InfluxdbSaid {
        if version_header {
            return InfluxdbSaid::Yes;
        }
        // InfluxDB 1.x is known only by its header, and an empty answer (every stored write's)
        // has no shape: no JSON to read.
        if matches!(api, Api::V1) || text.trim().is_empty() {
            return InfluxdbSaid::No;
        }
        let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let has = |key: &str| {
            json.as_ref()
                .and_then(|v| v.get(key))
                .is_some_and(|v| v.is_string())
        };
        let own_shape = match api {
            Api::V1 => false,
            Api::V2 => has("code") && has("message"),
            Api::V3 => has("error"),
        };
        if own_shape {
            InfluxdbSaid::Yes
        } else {
            InfluxdbSaid::No
        }
    }
}

/// What InfluxDB's answer to a write (`status`, the body's `text`) means. InfluxDB 1.x, 2.x and
/// 3.x answer a stored write with 204 and no body; anything else in 2xx (a web page, a proxy's
/// `200 {"error": ...}`) is not InfluxDB saying it stored the points, so they are kept and tried
/// again. A 400 or 422 refuses the data only when it is InfluxDB's own answer with its JSON
/// error (`said`): a proxy's 400, page or JSON, says nothing of the lines, so it is tried again.
fn write_answer(status: u16, text: &str, said: InfluxdbSaid) -> Result<(), SinkError> {
    let shown = || cut(text.trim());
    match status {
        200..=299 if text.trim().is_empty() => Ok(()),
        200..=299 => Err(SinkError::Unavailable {
            status,
            message: format!(
                "answered {status} with a body instead of InfluxDB's 204 (is influxdb.url InfluxDB itself?): {}",
                shown()
            ),
        }),
        400 | 422 => match error_message(text).filter(|_| said == InfluxdbSaid::Yes) {
            Some(message) => Err(SinkError::Refused {
                status,
                message,
                lines: refused_lines(text),
            }),
            None => Err(SinkError::Unavailable {
                status,
                message: format!(
                    "answered {status}, but not as InfluxDB answers (no X-Influxdb-Version, or no JSON error: a proxy?): {}",
                    shown()
                ),
            }),
        },
        // InfluxDB 1.x answers a write to a retention policy the database lacks with 500: not
        // a passing fault, but one only a person can fix (as a missing database's 404).
        500 if said == InfluxdbSaid::Yes
            && error_message(text).is_some_and(|m| m.starts_with("retention policy not found")) =>
        {
            Err(SinkError::Misconfigured {
                status,
                message: error_message(text).unwrap_or_else(shown),
                by_influxdb: true,
            })
        }
        // A 404 or 403 that is not InfluxDB's (a proxy's, or another server's at a wrong
        // `influxdb.url`) is wrong configuration too, but says nothing of a database.
        403 | 404 if said == InfluxdbSaid::No => Err(SinkError::Misconfigured {
            status,
            message: format!(
                "answered {status}, but not as InfluxDB answers (no X-Influxdb-Version, or no JSON error: is influxdb.url InfluxDB itself?): {}",
                shown()
            ),
            by_influxdb: false,
        }),
        _ => Err(SinkError::from_status(
            status,
            error_message(text).unwrap_or_else(shown),
        )),
    }
}

/// The InfluxDB 2 bucket a database and retention policy name, by its DBRP convention:
/// `database`, or `database/retention_policy`.
pub fn v2_bucket<'a>(database: &'a str, retention_policy: &str) -> Cow<'a, str> {
    if retention_policy.is_empty() {
        Cow::Borrowed(database)
    } else {
        Cow::Owned(format!("{database}/{retention_policy}"))
    }
}

/// What a request to InfluxDB that got no answer stands for: a timeout, a connection that
/// broke once made, or none made.
fn failed(e: ureq::Error) -> SinkError {
    match e {
        // No connection made in time is a network fault (a host that drops packets, a name
        // that does not resolve), not a slow InfluxDB.
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            SinkError::Unreachable(format!("no connection within influxdb.timeout ({e})"))
        }
        ureq::Error::Timeout(_) => SinkError::TimedOut(e.to_string()),
        ureq::Error::Io(io) => SinkError::from_io(io.kind(), io.to_string()),
        _ => SinkError::Unreachable(e.to_string()),
    }
}

/// InfluxDB's own message: v1 `{"error": ...}`, v1 query `{"results":[{"error": ...}]}`,
/// v2 `{"code": ..., "message": ...}`, v3 `{"error": ..., "data": [{"line_number": N,
/// "error_message": ...}, ...]}` (a partial write: the first refused line is named).
fn error_message(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let found = v
        .get("error")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("results")?.get(0)?.get("error"))?;
    let mut message = found.as_str()?.to_string();
    let first = v.get("data").and_then(|d| match d {
        serde_json::Value::Array(items) => items.first(),
        item => Some(item),
    });
    if let Some(item) = first
        && let Some(why) = item.get("error_message").and_then(|m| m.as_str())
    {
        match item.get("line_number").and_then(|n| n.as_u64()) {
            Some(n) => message.push_str(&format!(": line {n}: {why}")),
            None => message.push_str(&format!(": {why}")),
        }
    }
    Some(cut(&message))
}

/// The lines (0-based) an InfluxDB 3 partial write names as refused, or `None` when the answer
/// does not say (InfluxDB 1.x and 2.x do not).
fn refused_lines(text: &str) -> Option<Vec<usize>> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let data = v.get("data")?.as_array()?;
    let lines: Vec<usize> = data
        .iter()
        .filter_map(|item| item.get("line_number")?.as_u64())
        .filter_map(|n| usize::try_from(n).ok()?.checked_sub(1))
        .collect();
    (!lines.is_empty() && lines.len() == data.len()).then_some(lines)
}

/// InfluxDB's message, which may quote a client's names, made safe for answers and logs.
fn cut(text: &str) -> String {
    crate::logtext::escape(text, MAX_MESSAGE_CHARS)
}

/// What a query-string value keeps as it is: RFC 3986's unreserved characters (section 2.3);
/// every other byte is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query-string value (RFC 3986 unreserved characters stay).
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::answers::go_duration_ms;
    use super::*;
    use crate::state::schema::FieldType;

    /// A write for a target of its own goes to that database (v1, v3) or the bucket InfluxDB 2's
    /// DBRP convention names (v2), in nanoseconds, its names encoded; and its answer is read as
    /// a write's.
    #[test]
    fn a_write_for_a_target_goes_to_its_database_or_bucket_in_nanoseconds() {
        let target = |database: &str, rp: &str| OwnedTarget {
            database: database.into(),
            retention_policy: rp.into(),
        };
        let url = |api, t: &OwnedTarget| {
            let influx = Influx::new(&Influxdb {
                url: "http://db:8086/".into(),
                api,
                org: "lab".into(),
                ..Influxdb::default()
            });
            let url = influx.target_url(t);
            assert!(influx.is_write_url(&url), "{url}");
            url
        };
        let k6 = target("k6 runs", "");
        let week = target("jmeter", "week");
        assert_eq!(
            url(Api::V1, &k6),
            "http://db:8086/write?db=k6%20runs&precision=ns"
        );
        assert_eq!(
            url(Api::V1, &week),
            "http://db:8086/write?db=jmeter&precision=ns&rp=week"
        );
        assert_eq!(
            url(Api::V2, &week),
            "http://db:8086/api/v2/write?org=lab&bucket=jmeter%2Fweek&precision=ns"
        );
        assert_eq!(
            url(Api::V3, &k6),
            "http://db:8086/api/v3/write_lp?db=k6%20runs&precision=nanosecond"
        );
        let influx = Influx::new(&Influxdb::default());
        assert!(!influx.is_write_url(&influx.query_url));
    }

    /// A `CREATE DATABASE` InfluxDB refused holds back the next try of that database only: a
    /// client's database InfluxDB will not make must not hold back the making of every other.
    #[test]
    fn a_refused_create_database_holds_back_that_database_only() {
        let influx = Influx::new(&Influxdb::default());
        assert!(influx.may_create("k6") && influx.may_create("jmeter"));
        crate::sync::lock(&influx.create_failed).insert("k6".into(), Instant::now());
        assert!(!influx.may_create("k6"));
        assert!(influx.may_create("jmeter"));
        crate::sync::lock(&influx.create_failed)
            .insert("k6".into(), Instant::now() - CREATE_RETRY_EVERY);
        assert!(influx.may_create("k6"), "tried again after a minute");
    }

    /// Only InfluxDB's 204 is a stored write, and only its own JSON refuses the data: a web
    /// page answering 200, a proxy's 200 with an error, or a proxy's 400 page keep the points.
    #[test]
    fn only_influxdbs_own_answers_store_or_refuse_a_write() {
        let yes = InfluxdbSaid::Yes;
        assert_eq!(write_answer(204, "", yes), Ok(()));
        let kept = |status, text: &str, said| {
            let e = write_answer(status, text, said).unwrap_err();
            assert_eq!(e.disposition(), Disposition::Retry, "{status} {text}: {e}");
        };
        kept(200, "<html><body>down for maintenance</body></html>", yes);
        kept(200, r#"{"error":"upstream timed out"}"#, yes);
        let page = "<html><head><title>400 Bad Request</title></head><body>nginx</body></html>";
        kept(400, page, InfluxdbSaid::No);
        kept(422, "", yes);
        kept(502, "<html>Bad Gateway</html>", InfluxdbSaid::No);
        // A proxy's JSON 400 (no X-Influxdb-Version) says nothing of the data: kept.
        let proxy = r#"{"message":"Request header or cookie too large"}"#;
        kept(400, proxy, InfluxdbSaid::No);
        let refused = write_answer(
            400,
            r#"{"error":"partial write: field type conflict"}"#,
            yes,
        );
        assert!(matches!(
            refused,
            Err(SinkError::Refused { status: 400, .. })
        ));
        let v2 = write_answer(
            422,
            r#"{"code":"unprocessable entity","message":"failure writing points"}"#,
            yes,
        );
        assert!(matches!(v2, Err(SinkError::Refused { status: 422, .. })));
        let v3 = write_answer(
            400,
            r#"{"error":"partial write of line protocol occurred","data":[{"line_number":2,"error_message":"invalid column type"}]}"#,
            yes,
        );
        assert!(matches!(v3, Err(SinkError::Refused { lines: Some(ref l), .. }) if l == &[1]));
    }

    /// A write API target's database that InfluxDB says is missing or closed refuses its
    /// points; the same 404 or 403 from a proxy or another server at `influxdb.url` says
    /// nothing of the database: the points wait, as the gateway's own do.
    #[test]
    fn only_influxdbs_own_404_or_403_refuses_a_targets_points() {
        let target = OwnedTarget {
            database: "k6".into(),
            retention_policy: String::new(),
        };
        let missing = r#"{"error":"database not found: \"k6\""}"#;
        let e = write_answer(404, missing, InfluxdbSaid::Yes).unwrap_err();
        assert_eq!(e.disposition_for(Some(&target)), Disposition::Reject, "{e}");
        let page = "<html><body>404 Not Found</body></html>";
        for status in [403, 404] {
            let e = write_answer(status, page, InfluxdbSaid::No).unwrap_err();
            assert_eq!(
                e.disposition_for(Some(&target)),
                Disposition::RetryMisconfigured,
                "{e}"
            );
            assert_eq!(e.disposition_for(None), Disposition::RetryMisconfigured);
        }
    }

    /// Whose answer it is: InfluxDB 1.x and 2.x by their header; without it, only v2's and
    /// v3's own error shapes.
    #[test]
    fn an_answer_is_influxdbs_by_its_header_or_its_apis_own_shape() {
        let said = InfluxdbSaid::of;
        assert_eq!(said(Api::V1, true, ""), InfluxdbSaid::Yes);
        assert_eq!(
            said(Api::V1, false, r#"{"error":"bad request"}"#),
            InfluxdbSaid::No
        );
        assert_eq!(
            said(Api::V2, false, r#"{"message":"too large"}"#),
            InfluxdbSaid::No
        );
        assert_eq!(
            said(
                Api::V2,
                false,
                r#"{"code":"invalid","message":"unable to parse"}"#
            ),
            InfluxdbSaid::Yes
        );
        assert_eq!(
            said(Api::V3, false, r#"{"error":"parse error"}"#),
            InfluxdbSaid::Yes
        );
        assert_eq!(said(Api::V3, false, "<html>400</html>"), InfluxdbSaid::No);
    }

    #[test]
    fn the_schema_is_read_from_show_field_keys_and_show_tag_keys() {
        let fields = r#"{"results":[{"statement_id":0,"series":[{"name":"load_testing","columns":["fieldKey","fieldType"],"values":[["clients","float"],["elapsed","float"],["note","string"],["note","float"]]},{"name":"load_testing_events","columns":["fieldKey","fieldType"],"values":[["text","string"]]}]}]}"#;
        let tags = r#"{"results":[{"statement_id":0,"series":[{"name":"load_testing","columns":["tagKey"],"values":[["host"],["uuid"]]}]}]}"#;
        let known = parse_schema(fields, true);
        let heartbeats = &known["load_testing"];
        assert_eq!(heartbeats.fields["clients"], FieldType::Float);
        assert_eq!(
            heartbeats.fields["note"],
            FieldType::String,
            "the first type listed"
        );
        assert_eq!(
            known["load_testing_events"].fields["text"],
            FieldType::String
        );
        let tags = parse_schema(tags, false);
        assert!(
            tags["load_testing"].tags.contains("uuid") && tags["load_testing"].fields.is_empty()
        );
        assert!(parse_schema(r#"{"results":[{"statement_id":0}]}"#, true).is_empty());
        assert_eq!(quote_identifier(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn retention_is_read_from_each_api_answer() {
        let policies = r#"{"results":[{"statement_id":0,"series":[{"columns":["name","duration","shardGroupDuration","replicaN","default"],"values":[["autogen","0s","168h0m0s",1,false],["onehour","1h0m0s","1h0m0s",1,true]]}]}]}"#;
        let onehour = parse_retention_policies(policies, "").unwrap();
        assert_eq!(
            (onehour.policy.as_str(), onehour.keeps_ms),
            ("onehour", 3_600_000)
        );
        assert_eq!(onehour.keeps(), "1h");
        assert_eq!(
            parse_retention_policies(policies, "autogen"),
            None,
            "for ever"
        );
        assert_eq!(parse_retention_policies(policies, "other"), None);
        assert_eq!(
            go_duration_ms("168h30m5s"),
            Some((168 * 3600 + 30 * 60 + 5) * 1000)
        );
        assert_eq!(go_duration_ms("1x"), None);
        let buckets = r#"{"buckets":[{"name":"runs","retentionRules":[{"type":"expire","everySeconds":86400}]}]}"#;
        let kept = parse_bucket_retention(buckets, "runs").unwrap();
        assert_eq!(
            (kept.policy.as_str(), kept.keeps()),
            ("bucket runs", "1d".into())
        );
        assert_eq!(parse_bucket_retention(buckets, "other"), None);
        let for_ever = r#"{"buckets":[{"name":"runs","retentionRules":[]}]}"#;
        assert_eq!(parse_bucket_retention(for_ever, "runs"), None);
        let counts = r#"{"results":[{"statement_id":0,"series":[{"name":"load_testing","columns":["count"],"values":[[2]]},{"name":"load_testing_events","columns":["count"],"values":[[1]]}]}]}"#;
        assert_eq!(
            parse_counts(counts),
            vec![
                ("load_testing".into(), 2),
                ("load_testing_events".into(), 1)
            ]
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("my db&x=1"), "my%20db%26x%3D1");
        assert_eq!(encode("telegraf"), "telegraf");
    }

    #[test]
    fn messages_are_taken_from_each_answer_shape() {
        assert_eq!(
            error_message(r#"{"error":"field type conflict"}"#).as_deref(),
            Some("field type conflict")
        );
        assert_eq!(
            error_message(r#"{"code":"invalid","message":"bad line"}"#).as_deref(),
            Some("bad line")
        );
        assert_eq!(
            error_message(r#"{"results":[{"statement_id":0,"error":"nope"}]}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(error_message(r#"{"results":[{"statement_id":0}]}"#), None);
        // InfluxDB 3's partial write, as its documentation shows it.
        let v3 = r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"home,room=Sunroom temp=hi 1735549200","line_number":2,"error_message":"invalid column type for column 'temp', expected iox::column_type::field::float, got iox::column_type::field::string"}]}"#;
        assert_eq!(
            error_message(v3).as_deref(),
            Some(
                "partial write of line protocol occurred: line 2: invalid column type for column 'temp', expected iox::column_type::field::float, got iox::column_type::field::string"
            )
        );
        assert_eq!(refused_lines(v3), Some(vec![1]));
        assert_eq!(
            refused_lines(r#"{"error":"partial write: x dropped=1"}"#),
            None
        );
        assert_eq!(cut("a\nb"), "a?b");
        assert_eq!(cut("field \"x\u{2028}y\u{202E}\""), "field \"x?y?\"");
    }

    /// A connection not made in time is a network fault, told as unreachable; a timeout once
    /// connected is InfluxDB being slow.
    #[test]
    fn a_connect_timeout_is_unreachable_and_a_late_answer_timed_out() {
        for kind in [ureq::Timeout::Connect, ureq::Timeout::Resolve] {
            let e = failed(ureq::Error::Timeout(kind));
            assert!(matches!(e, SinkError::Unreachable(_)), "{kind:?}: {e:?}");
            assert!(
                e.to_string()
                    .contains("no connection within influxdb.timeout"),
                "{e}"
            );
        }
        for kind in [ureq::Timeout::Global, ureq::Timeout::RecvResponse] {
            let e = failed(ureq::Error::Timeout(kind));
            assert!(matches!(e, SinkError::TimedOut(_)), "{kind:?}: {e:?}");
        }
    }
}
