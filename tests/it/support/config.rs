//! consumer.toml text for the gateway under test: loopback on a free port, a given InfluxDB and
//! database, and whatever a test adds to each table.

/// A consumer.toml for the gateway under test: loopback on a free port, InfluxDB at
/// `influx_url` writing to `db`, storage in `./data` (the gateway's directory),
/// `[delivery] acknowledge` = [`ACKNOWLEDGE`], and what a test adds to each table:
///
/// ```ignore
/// let text = ConsumerToml::new(&influx.url, "runs")
///     .server("max_connections = 8")
///     .influxdb("max_write_lines = 10")
///     .rest("[jobs]\nmax_running = 2")
///     .toml();
/// ```
///
/// A key repeated from the ones set here (e.g. `listen`) is a TOML error.
#[derive(Debug, Clone)]
pub struct ConsumerToml {
    influx_url: String,
    db: String,
    server: String,
    influxdb: String,
    rest: String,
}

impl ConsumerToml {
    /// The minimal file: InfluxDB at `influx_url`, database `db`.
    pub fn new(influx_url: &str, db: &str) -> ConsumerToml {
        ConsumerToml {
            influx_url: influx_url.to_string(),
            db: db.to_string(),
            server: String::new(),
            influxdb: String::new(),
            rest: String::new(),
        }
    }

    /// Adds `lines` (keys, one a line) to `[server]`.
    pub fn server(mut self, lines: &str) -> ConsumerToml {
        self.server.push_str(&lines_of(lines));
        self
    }

    /// Adds `lines` (keys, one a line) to `[influxdb]`.
    pub fn influxdb(mut self, lines: &str) -> ConsumerToml {
        self.influxdb.push_str(&lines_of(lines));
        self
    }

    /// Appends `text` after `[storage]`, verbatim: lines before its first table header land in
    /// `[storage]`, and it must not open `[server]`, `[influxdb]` or `[storage]` (TOML forbids
    /// a table twice). A `[delivery]` table of its own replaces the default acknowledgement.
    pub fn rest(mut self, text: &str) -> ConsumerToml {
        self.rest.push_str(&lines_of(text));
        self
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        // A test that sets its own mode names `[delivery]` in `rest`.
        let delivery = if self.rest.contains("[delivery]") {
            String::new()
        } else {
            format!("[delivery]\nacknowledge = {}\n", toml_str(ACKNOWLEDGE))
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[influxdb]\nurl = {}\ndatabase = {}\n{}\n{delivery}[storage]\ndir = \"./data\"\n{}",
            self.server,
            toml_str(&self.influx_url),
            toml_str(&self.db),
            self.influxdb,
            self.rest,
        )
    }
}

/// `text` ending with a line break (nothing for nothing).
fn lines_of(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// The tests read back what they wrote right after the answer, so their gateways answer once
/// InfluxDB has the points; the tests of the "disk" mode say so themselves.
pub const ACKNOWLEDGE: &str = "influxdb";

/// Quotes `s` as a TOML basic string. JSON string escapes are a subset of TOML's,
/// so serde_json's encoding is valid TOML for ordinary text such as paths and URLs.
pub(super) fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}
