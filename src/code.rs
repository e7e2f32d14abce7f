//! Every error the gateway answers with, in one table: its HTTP status, its machine code (the
//! `"code"` member of the JSON error body), what the client should do about it, and whether the
//! answer carries `Retry-After`.
//!
//! The HTTP layer's own refusals (408, 411, 413, 431, 500, 503) and the API's (400, 401, 404,
//! 405, 409, 503) all come from here, so a new error is one new row, and docs/errors.md's table of
//! codes is checked against [`Code::ALL`] by a test. The message of each answer says what went
//! wrong in this request (naming the key or the limit); the advice here is the same for every
//! request with that code.

/// Declares [`Code`] from rows of `Variant = (status, "machine_code", retry_after, "advice")`.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = ($status:literal, $name:literal, $retry:expr, $advice:literal),)*) => {
        /// Why a request was refused; see the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the order of the table: `code as usize` is its place here.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The HTTP status of an answer with this code.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// The machine code, as it appears in `{"error": ..., "code": ...}`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// Seconds the client should wait before sending again, sent as `Retry-After`.
            pub fn retry_after(self) -> Option<u32> {
                match self {
                    $(Code::$variant => $retry,)*
                }
            }

            /// What the client can do about it, the same for every answer with this code.
            // Read by the check of docs/errors.md's table of codes.
            #[cfg_attr(not(test), allow(dead_code))]
            pub fn advice(self) -> &'static str {
                match self {
                    $(Code::$variant => $advice,)*
                }
            }
        }
    };
}

codes! {
    // The HTTP layer: framing, limits and the server itself.
    /// The request head is not valid HTTP/1.x.
    MalformedRequest = (400, "malformed_request", None, "send a valid HTTP/1.1 request"),
    /// A protocol other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion = (400, "unsupported_version", None, "speak HTTP/1.1 or HTTP/1.0"),
    /// The request target does not start with `/`.
    InvalidTarget = (400, "invalid_target", None, "send a path that starts with '/'"),
    /// `Content-Length` is not one plain decimal number.
    InvalidContentLength = (400, "invalid_content_length", None, "send exactly one Content-Length, a decimal number"),
    /// The head did not arrive within `server.header_timeout`.
    HeadTimeout = (408, "head_timeout", None, "send the whole request head within server.header_timeout"),
    /// The body did not arrive within `server.header_timeout` after the head, or fell behind
    /// the pace that would have it arrive by then.
    BodyTimeout = (408, "body_timeout", None, "send the body right after the head, at a pace that ends it within server.header_timeout"),
    /// A `Transfer-Encoding` other than `chunked` alone: only `Content-Length` and chunked
    /// bodies are read.
    TransferEncodingUnsupported = (411, "transfer_encoding_unsupported", None, "send the body with Content-Length, or with 'Transfer-Encoding: chunked' alone"),
    /// A request framed more than one way: `Transfer-Encoding` with `Content-Length`, twice,
    /// or on HTTP/1.0.
    AmbiguousFraming = (400, "ambiguous_framing", None, "send either one Content-Length or, over HTTP/1.1, 'Transfer-Encoding: chunked' alone"),
    /// The declared body is larger than `server.max_body_bytes`.
    BodyTooLarge = (413, "body_too_large", None, "send a smaller body, or raise server.max_body_bytes"),
    /// A compressed body inflates past its bound (`http::encoding::MAX_INFLATED_BYTES`, or
    /// `server.max_body_bytes` when larger).
    InflatedTooLarge = (413, "inflated_too_large", None, "send less per request, or raise server.max_inflated_bytes"),
    /// A `Content-Encoding` other than gzip, x-gzip, deflate or identity (RFC 9110 §15.5.16).
    UnsupportedContentEncoding = (415, "unsupported_content_encoding", None, "send the body plain, or with Content-Encoding gzip or deflate (named in Accept-Encoding)"),
    /// The body is not valid data of the coding its `Content-Encoding` names.
    InvalidContentEncoding = (400, "invalid_content_encoding", None, "compress the body once, whole, with the coding Content-Encoding names"),
    /// An `Expect` other than `100-continue`.
    ExpectationFailed = (417, "expectation_failed", None, "remove the Expect header; only 100-continue is supported"),
    /// The head is over 16 KiB or 64 headers.
    HeadTooLarge = (431, "head_too_large", None, "send a head of at most 16 KiB and 64 headers"),
    /// The handler failed; nothing was recorded.
    InternalError = (500, "internal_error", None, "retry; report it if it persists"),
    /// The connection caps (`server.max_connections`, `server.max_connections_per_ip`) are reached,
    /// and no open connection can give way (see `http::caps`).
    TooManyConnections = (503, "too_many_connections", Some(1), "retry after Retry-After, and close connections you do not use"),
    /// The request bodies in memory (and what compressed ones inflate to) hold
    /// `server.max_body_bytes_in_flight`, and none gave way within a second.
    TooManyBodies = (503, "too_many_bodies", Some(1), "retry after Retry-After; the gateway holds as many request bodies as server.max_body_bytes_in_flight allows"),

    // Routing and tokens.
    /// No token, a malformed `Authorization` header, or a wrong token.
    Unauthorized = (401, "unauthorized", None, "send a configured token: Authorization: Bearer TOKEN"),
    /// Too many failed token checks from the client's address (or IPv6 /64) of late
    /// (`auth.max_failures` within `auth.failure_window`); Retry-After says when to try again.
    TooManyAuthFailures = (429, "too_many_auth_failures", Some(6), "check the token, then wait for Retry-After before trying again"),
    /// The token's `requests_per_second` is spent; Retry-After says when there is room.
    TooManyRequests = (429, "too_many_requests", Some(1), "send fewer requests per second, or raise requests_per_second of the token"),
    /// No route has this path.
    NotFound = (404, "not_found", None, "use one of the routes under /apiv0.1/"),
    /// The route takes another method, named in `Allow`.
    MethodNotAllowed = (405, "method_not_allowed", None, "use the method named in the Allow header"),

    // The request body.
    /// The body is empty.
    EmptyBody = (400, "empty_body", None, "send a JSON object"),
    /// The body is not UTF-8: UTF-16 or UTF-32 (with or without a byte order mark), or bytes
    /// that are not UTF-8 at all.
    UnsupportedCharset = (415, "unsupported_charset", None, "send the JSON as UTF-8 (RFC 8259 §8.1)"),
    /// The body is JSON but not an object.
    NotAnObject = (400, "not_an_object", None, "send a JSON object, not an array or a scalar"),
    /// The body is not valid JSON.
    InvalidJson = (400, "invalid_json", None, "send valid JSON; the message gives line and column"),
    /// `uuid` is missing.
    MissingUuid = (400, "missing_uuid", None, "send the uuid that register answered"),
    /// `uuid` is not a UUID.
    InvalidUuid = (400, "invalid_uuid", None, "send the uuid that register answered, as a string"),
    /// `measurement` is not an object.
    InvalidMeasurement = (400, "invalid_measurement", None, "send measurement as an object with fields and tags"),
    /// `tags` or `fields` is not an object.
    InvalidObject = (400, "invalid_object", None, "send tags and fields as JSON objects"),
    /// A tag's name or value breaks the rules.
    InvalidTag = (400, "invalid_tag", None, "fix the tag the message names (see Payload rules)"),
    /// A field's name or value breaks the rules.
    InvalidField = (400, "invalid_field", None, "fix the field the message names (see Payload rules)"),
    /// More than 32 tags.
    TooManyTags = (400, "too_many_tags", None, "send at most 32 tags"),
    /// More than 64 fields, in the request or in the run after a progress.
    TooManyFields = (400, "too_many_fields", None, "send at most 64 fields per run"),
    /// A string field over `limits.max_string_bytes`.
    StringTooLong = (400, "string_too_long", None, "send a shorter string, or raise limits.max_string_bytes"),
    /// `startedAt` is not a time.
    InvalidTime = (400, "invalid_time", None, "send Unix seconds, RFC 3339 or an HTTP-date"),
    /// A field has another type than earlier runs wrote to the measurement.
    FieldTypeConflict = (400, "field_type_conflict", None, "send the field with the type earlier runs used, or give it another name"),
    /// A name is a tag here and a field in the measurement, or the other way.
    TagFieldConflict = (400, "tag_field_conflict", None, "give the tag or the field another name"),
    /// `startedAt` is older than InfluxDB's retention policy keeps.
    OlderThanRetention = (400, "older_than_retention", None, "send a later startedAt, or lengthen the retention policy"),
    /// `requestStats` is neither an object, an array of rows nor a string.
    InvalidStats = (400, "invalid_stats", None, "send requestStats as an object, an array of rows, or a string"),
    /// A register's `thresholds` holds a check the gateway cannot read.
    InvalidCheck = (400, "invalid_check", None, "write each check as \"<metric> <op> <value>\", e.g. \"p95 < 500ms\" (docs/verdicts.md)"),

    // InfluxDB's write API (/write, /api/v2/write, /api/v3/write_lp, /query).
    /// No database (v1 and v3 `db`, v2 `bucket`), or one the gateway does not take.
    MissingDatabase = (400, "missing_database", None, "name the database: db= (v1, v3) or bucket= (v2)"),
    /// The write names a retention policy (v1 `rp`, v2 a bucket `db/rp`) that InfluxDB does not
    /// list for the database.
    UnknownRetentionPolicy = (400, "unknown_retention_policy", None, "leave rp out for the database's default policy, or name one SHOW RETENTION POLICIES lists"),
    /// A query parameter the API defines has a value it does not take (`precision`,
    /// `accept_partial`).
    InvalidParameter = (400, "invalid_parameter", None, "send the parameter the message names with one of the values it lists"),
    /// Lines of the body were refused (not line protocol, a field type the database holds
    /// otherwise, past the token's series budget); the others were written unless the message
    /// says nothing was.
    LinesRefused = (400, "lines_refused", None, "fix or drop the lines the message names"),
    /// The token may not write the database (or no token is configured for the write API).
    DatabaseNotAllowed = (403, "database_not_allowed", None, "write a database the token's databases list names, or add it there"),
    /// The token may not write a measurement of the body; nothing was recorded.
    MeasurementNotAllowed = (403, "measurement_not_allowed", None, "write measurements the token's measurements globs match, or add it there; never the runs' own (load_testing*) where the gateway writes its runs"),
    /// A query other than `CREATE DATABASE` or `SHOW DATABASES`: the gateway only writes.
    InsertOnly = (403, "insert_only", None, "query InfluxDB itself; the gateway only takes writes"),
    /// The write API's databases (all tokens together) are at their bound.
    TooManyDatabases = (403, "too_many_databases", None, "write one of the databases written already, or narrow the tokens' databases globs"),

    // The run's state.
    /// The uuid names no run the gateway knows.
    UnknownRun = (404, "unknown_run", None, "register the run first; finished runs are forgotten after jobs.finished_retention"),
    /// The run was committed already.
    AlreadyCommitted = (409, "already_committed", None, "nothing to do: the first commit was recorded"),
    /// A commit of the run is under way.
    CommitInProgress = (409, "commit_in_progress", None, "wait for the answer to the first commit"),
    /// `jobs.max_running` runs are running.
    TooManyRunning = (503, "too_many_running", Some(5), "commit finished runs, or raise jobs.max_running"),
    /// The token's client has its `max_running` runs running.
    TooManyRunningForToken = (429, "too_many_running_for_token", Some(5), "commit finished runs, or raise max_running of the token"),
    /// The run's heartbeat (measurement, tags and fields it keeps while it runs) would be over
    /// `limits.max_run_bytes`.
    RunTooLarge = (413, "run_too_large", None, "keep register and progress to a few numbers; send the results with the commit"),
    /// The token's runs hold its share of `jobs.max_table_bytes`.
    TokenTableFull = (429, "token_table_full", Some(30), "commit finished runs of this token; its share of jobs.max_table_bytes follows its max_running"),
    /// The running jobs hold `jobs.max_table_bytes`.
    JobTableFull = (503, "job_table_full", Some(30), "commit finished runs, or raise jobs.max_table_bytes"),

    // Storage.
    /// The spool is full (`storage.max_spool_bytes`): InfluxDB must catch up first.
    SpoolFull = (503, "spool_full", Some(30), "retry after Retry-After, once InfluxDB has caught up"),
    /// The token's share of the spool (`[[auth.token]] max_spool_bytes`) is full, while the
    /// spool has room for other tokens.
    SpoolShareFull = (503, "spool_share_full", Some(30), "retry after Retry-After, once InfluxDB has taken this token's records; raise max_spool_bytes of the token if the disk has room"),
    /// The disk under `storage.dir` failed; nothing was recorded.
    StorageError = (503, "storage_error", Some(30), "retry after Retry-After; the operator should check storage.dir"),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_lowercase_and_error_statuses() {
        let mut seen = std::collections::HashSet::new();
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(
                *code as usize, i,
                "{code:?}: the refusals are counted at its place"
            );
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                code.as_str()
            );
            assert!((400..600).contains(&code.status()), "{code:?}");
            assert!(!code.advice().is_empty());
            assert_eq!(
                code.retry_after().is_some(),
                code.status() == 503 || code.status() == 429,
                "{code:?}: every 503 and 429 says when to come back, nothing else does"
            );
        }
    }

    #[test]
    fn the_errors_doc_lists_every_code() {
        use crate::doc_tables::{ERRORS, table};
        let rows = table(
            "docs/errors.md",
            ERRORS,
            "| status | code | Retry-After | what to do |",
        );
        let documented: Vec<[String; 4]> = rows
            .into_iter()
            .map(|row| {
                <[String; 4]>::try_from(row)
                    .unwrap_or_else(|row| panic!("a row of four cells: {row:?}"))
            })
            .collect();
        let expected: Vec<[String; 4]> = Code::ALL
            .iter()
            .map(|code| {
                [
                    code.status().to_string(),
                    format!("`{}`", code.as_str()),
                    code.retry_after()
                        .map_or(String::new(), |s| format!("{s} s")),
                    code.advice().to_string(),
                ]
            })
            .collect();
        assert_eq!(
            documented, expected,
            "docs/errors.md's table of errors must list every Code, in order"
        );
    }
}
