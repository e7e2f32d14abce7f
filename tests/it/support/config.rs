//! consumer.toml text for the gateway under test: loopback on a free port, a given InfluxDB and
//! database, and whatever a test adds to each table.

/// A minimal consumer.toml: loopback on a free port, InfluxDB at `influx_url`
/// writing to `db`, storage in `./data` (the gateway's directory). `extra` is
/// appended verbatim. TOML forbids repeating a table header, so `extra` must
/// not open `[server]`, `[influxdb]` or `[storage]`; lines of `extra` before its
/// first table header land in `[storage]`. Use `config_with` to add keys to
/// `[server]` or `[influxdb]`.
pub fn config(influx_url: &str, db: &str, extra: &str) -> String {
    config_with(influx_url, db, "", "", extra)
}

/// Like `config`, with `server_extra` lines added to `[server]` and
/// `influx_extra` lines added to `[influxdb]`; `rest` is appended as `extra` is
/// in `config`. A key repeated from the defaults (e.g. `listen`) is a TOML error.
/// `[delivery] acknowledge` is [`ACKNOWLEDGE`] unless `rest` has a `[delivery]` of its own.
pub fn config_with(
    influx_url: &str,
    db: &str,
    server_extra: &str,
    influx_extra: &str,
    rest: &str,
) -> String {
    fn lines(text: &str) -> String {
        if text.is_empty() || text.ends_with('\n') {
            text.to_string()
        } else {
            format!("{text}\n")
        }
    }
    // A test that sets its own mode names `[delivery]` in `rest`.
    let delivery = if rest.contains("[delivery]") {
        String::new()
    } else {
        format!("[delivery]\nacknowledge = {}\n", toml_str(ACKNOWLEDGE))
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[influxdb]\nurl = {}\ndatabase = {}\n{}\n{delivery}[storage]\ndir = \"./data\"\n{}",
        lines(server_extra),
        toml_str(influx_url),
        toml_str(db),
        lines(influx_extra),
        lines(rest),
    )
}

/// The tests read back what they wrote right after the answer, so their gateways answer once
/// InfluxDB has the points; the tests of the "disk" mode say so themselves.
pub const ACKNOWLEDGE: &str = "influxdb";

/// Quotes `s` as a TOML basic string. JSON string escapes are a subset of TOML's,
/// so serde_json's encoding is valid TOML for ordinary text such as paths and URLs.
pub(super) fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}
