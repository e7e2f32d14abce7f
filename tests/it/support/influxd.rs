//! A throwaway InfluxDB 1.x server (`Influxd`) on loopback ports of its own, with its data in a
//! temporary directory, and the InfluxQL queries the tests read their points back with.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::config::toml_str;
use super::http::{request, try_request, urlencode};
use super::process::{remove_env_with_prefix, send_sigterm, wait_child};
use super::tempdir::TempDir;
use super::{POLL, START_TIMEOUT, STOP_TIMEOUT};

const INFLUXD_MISSING: &str = "influxd not found: install Debian's `influxdb` package \
    (apt-get install influxdb) or run scripts/test.sh, which installs it";

/// `influxd` on PATH, else Debian's /usr/bin/influxd; panics saying what to install.
fn find_influxd() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("influxd"))
            .find(|candidate| candidate.is_file())
    });
    let fallback = PathBuf::from("/usr/bin/influxd");
    match on_path {
        Some(path) => path,
        None if fallback.is_file() => fallback,
        None => panic!("{INFLUXD_MISSING}"),
    }
}

/// A throwaway InfluxDB 1.x server with its own ports and data under `dir`.
pub struct Influxd {
    /// `http://127.0.0.1:PORT`, with no trailing slash.
    pub url: String,
    pub dir: TempDir,
    /// None while stopped.
    child: Option<Child>,
    program: PathBuf,
    http_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
}

/// Why one attempt to bring influxd up failed.
enum LaunchError {
    /// Another process took one of the chosen ports first; new ports may help.
    PortTaken(String),
    Failed(String),
}

impl Influxd {
    /// Starts influxd on two free loopback ports (HTTP and the RPC port used by
    /// backup and restore) and waits until `/ping` answers 204. A port taken by
    /// someone else between choosing and binding it leads to new ports, three
    /// attempts at most. Panics with the log tail when influxd does not come up.
    pub fn start() -> Influxd {
        Influxd::start_with("")
    }

    /// Like [`Influxd::start`], with `http_extra` lines added to influxd's `[http]` section
    /// (e.g. `max-body-size = 2000000`).
    pub fn start_with(http_extra: &str) -> Influxd {
        let program = find_influxd();
        let dir = TempDir::new("influxd");
        let config_path = dir.join("influxd.conf");
        let log_path = dir.join("influxd.log");
        let mut influxd = Influxd {
            url: String::new(),
            dir,
            child: None,
            program,
            http_port: 0,
            config_path,
            log_path,
        };
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let [http_port, rpc_port] = free_ports::<2>();
            influxd.http_port = http_port;
            influxd.url = format!("http://127.0.0.1:{http_port}");
            let config = influxd_config(influxd.dir.path(), http_port, rpc_port, http_extra);
            fs::write(&influxd.config_path, config).expect("write influxd.conf");
            match influxd.launch() {
                Ok(()) => return influxd,
                Err(LaunchError::PortTaken(_)) if attempt < ATTEMPTS => continue,
                Err(LaunchError::PortTaken(log) | LaunchError::Failed(log)) => {
                    panic!("influxd did not start (attempt {attempt}); log tail:\n{log}")
                }
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// The HTTP address, 127.0.0.1:PORT.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything influxd wrote so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops influxd with SIGTERM (a clean shutdown takes milliseconds), falling
    /// back to SIGKILL after 10 s. The HTTP port refuses connections afterwards.
    /// Does nothing when already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            send_sigterm(child.id());
            if wait_child(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// Starts influxd again on the same ports and data directory (stopping it
    /// first when running), so written data is still there. Panics with the log
    /// tail when it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        // The ports were just released by our own process, so a clash means
        // someone else grabbed one; give them a moment rather than new ports,
        // because the gateway under test keeps the old URL.
        let mut last = String::new();
        for _ in 0..3 {
            match self.launch() {
                Ok(()) => return,
                Err(LaunchError::PortTaken(log)) => {
                    last = log;
                    thread::sleep(Duration::from_millis(200));
                }
                Err(LaunchError::Failed(log)) => {
                    panic!("influxd did not restart; log tail:\n{log}")
                }
            }
        }
        panic!(
            "influxd did not restart: port {} stays taken; log tail:\n{last}",
            self.http_port
        );
    }

    /// Spawns influxd with the current config and waits for `/ping`.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open influxd.log");
        let offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        writeln!(
            log,
            "===== influxd run -config {} =====",
            self.config_path.display()
        )
        .expect("write influxd.log");
        let mut cmd = Command::new(&self.program);
        cmd.arg("run")
            .arg("-config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        // influxd 1.x lets INFLUXDB_* variables override the config file, which
        // could move it off the chosen ports or directories.
        remove_env_with_prefix(&mut cmd, "INFLUXDB_");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()));

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.addr();
        loop {
            if let Ok(resp) = try_request(addr, "GET", "/ping", &[], None)
                && resp.status == 204
            {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.log();
                let this_run = log.get(offset..).unwrap_or(&log);
                let text = format!("{}\n(influxd exited: {status})", tail(this_run, 40));
                return Err(if this_run.contains("address already in use") {
                    LaunchError::PortTaken(text)
                } else {
                    LaunchError::Failed(text)
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = self.log();
                let this_run = log.get(offset..).unwrap_or(&log);
                return Err(LaunchError::Failed(format!(
                    "{}\n(no 204 from {}/ping within {START_TIMEOUT:?}; killed)",
                    tail(this_run, 40),
                    self.url
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// Runs an InfluxQL query (POST /query?db=DB&epoch=ms, so times are integer
    /// milliseconds) and returns the JSON answer. Panics with the body on a
    /// non-200 status. Statement errors come back inside the JSON
    /// (`results[i].error`) and are left to the caller.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let resp = self.post_query(&format!("/query?db={}&epoch=ms", urlencode(db)), q);
        if resp.status != 200 {
            panic!(
                "InfluxDB query {q:?} on {db:?} answered {}: {}",
                resp.status, resp.body
            );
        }
        resp.json()
    }

    /// Like [`Influxd::query`], with times as integer nanoseconds (`epoch=ns`): for points
    /// written at a precision finer than milliseconds.
    pub fn query_ns(&self, db: &str, q: &str) -> Value {
        let resp = self.post_query(&format!("/query?db={}&epoch=ns", urlencode(db)), q);
        if resp.status != 200 {
            panic!(
                "InfluxDB query {q:?} on {db:?} answered {}: {}",
                resp.status, resp.body
            );
        }
        resp.json()
    }

    /// Runs `q` and panics when any statement reports an error.
    pub fn exec(&self, db: &str, q: &str) -> Value {
        let v = self.query(db, q);
        for result in v["results"].as_array().into_iter().flatten() {
            if let Some(err) = result.get("error") {
                panic!("InfluxDB statement {q:?} on {db:?} failed: {err}");
            }
        }
        v
    }

    pub fn create_database(&self, db: &str) {
        self.exec("", &format!("CREATE DATABASE {}", quote_ident(db)));
    }

    /// Writes line protocol with millisecond timestamps (POST
    /// /write?db=DB&precision=ms); panics unless InfluxDB answers 204.
    pub fn write(&self, db: &str, lines: &str) {
        let path = format!("/write?db={}&precision=ms", urlencode(db));
        let resp = request(self.addr(), "POST", &path, &[], Some(lines));
        if resp.status != 204 {
            panic!(
                "InfluxDB write to {db:?} answered {}: {}",
                resp.status, resp.body
            );
        }
    }

    /// The result of one query, or `None` when the database does not exist (yet); any other
    /// error panics with the query.
    fn result(&self, db: &str, q: &str) -> Option<Value> {
        let mut v = self.query(db, q);
        let result = v["results"][0].take();
        if let Some(err) = result.get("error") {
            if err
                .as_str()
                .is_some_and(|e| e.starts_with("database not found"))
            {
                return None;
            }
            panic!("{q} on {db:?} failed: {err}");
        }
        Some(result)
    }

    /// Every point of `measurement` (`SELECT * FROM "measurement"`), oldest
    /// first, as maps from column (time, tags and fields) to value. Columns that
    /// are null for a point, i.e. fields it does not have, are left out. A missing
    /// database or measurement gives an empty Vec, so this can be polled while
    /// the gateway is still creating the database; other errors panic.
    pub fn series(&self, db: &str, measurement: &str) -> Vec<Map<String, Value>> {
        let q = format!("SELECT * FROM {}", quote_ident(measurement));
        let Some(result) = self.result(db, &q) else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for series in result["series"].as_array().into_iter().flatten() {
            let columns: Vec<&str> = series["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or_default())
                .collect();
            for values in series["values"].as_array().into_iter().flatten() {
                let mut row = Map::new();
                // Present only with GROUP BY, which SELECT * does not use;
                // merged anyway so a row always carries its tags.
                if let Some(tags) = series.get("tags").and_then(Value::as_object) {
                    row.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                for (column, value) in columns.iter().zip(values.as_array().into_iter().flatten()) {
                    if !value.is_null() {
                        row.insert((*column).to_string(), value.clone());
                    }
                }
                rows.push(row);
            }
        }
        rows
    }

    /// The uuids that have a point in `measurement` (with tag `event` = `event` for events).
    pub fn uuids(
        &self,
        db: &str,
        measurement: &str,
        event: Option<&str>,
    ) -> std::collections::HashSet<String> {
        self.series(db, measurement)
            .into_iter()
            .filter(|r| event.is_none_or(|e| r.get("event").and_then(Value::as_str) == Some(e)))
            .filter_map(|r| r.get("uuid")?.as_str().map(String::from))
            .collect()
    }

    /// Number of points in `measurement` (0 when it or the database is missing).
    pub fn count(&self, db: &str, measurement: &str) -> usize {
        self.series(db, measurement).len()
    }

    /// Names of the measurements in `db` (empty when the database is missing).
    pub fn measurements(&self, db: &str) -> Vec<String> {
        let Some(result) = self.result(db, "SHOW MEASUREMENTS") else {
            return Vec::new();
        };
        result["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[0].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An InfluxQL identifier in double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A config that keeps influxd small, quiet and on loopback. Upstream names the
/// usage-report switch `reporting-disabled` while Debian's build renamed it
/// `reporting-enabled`; influxd ignores unknown keys, so both are set.
fn influxd_config(dir: &Path, http_port: u16, rpc_port: u16, http_extra: &str) -> String {
    let path = |name: &str| toml_str(&dir.join(name).to_string_lossy());
    format!(
        r#"reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {meta}

[data]
  dir = {data}
  wal-dir = {wal}
  query-log-enabled = false
  index-version = "inmem"

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  {http_extra}

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[logging]
  suppress-logo = true
"#,
        meta = path("meta"),
        data = path("data"),
        wal = path("wal"),
    )
}

/// `N` distinct free loopback ports, below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): outgoing connections take their local ports from that
/// range, so a port in it that a stop released may be taken by any connection made meanwhile
/// (a test's client, a gateway retrying InfluxDB), and the restart would find it taken. All
/// listeners are held until every port is known, so the same port cannot be handed out twice;
/// the port can still be taken by another test's server before this one binds it, which is
/// why the callers retry.
fn free_ports<const N: usize>() -> [u16; N] {
    use std::hash::{BuildHasher, RandomState};
    const LOWEST: u16 = 10_000;
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let random = RandomState::new();
    let mut listeners: Vec<TcpListener> = Vec::new();
    for attempt in 0u64.. {
        if listeners.len() == N {
            break;
        }
        let listener = if ephemeral > LOWEST + 1000 && attempt < 10_000 {
            let span = u64::from(ephemeral - LOWEST);
            let port = LOWEST + (random.hash_one(attempt) % span) as u16;
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => listener,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port")
        };
        listeners.push(listener);
    }
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
    }
    ports
}

/// The last `n` lines of `text`, for panic messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Influxd {
    /// POSTs the InfluxQL `q` as a form to `path` (`/query?…`).
    fn post_query(&self, path: &str, q: &str) -> super::http::RawResponse {
        let body = format!("q={}", urlencode(q));
        request(
            self.addr(),
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&body),
        )
    }

    /// Runs `q` as `user` (influxd with `auth-enabled = true`), and panics when InfluxDB
    /// answers other than 200 or a statement reports an error.
    pub fn exec_as(&self, user: &str, password: &str, q: &str) -> Value {
        let path = format!("/query?u={}&p={}", urlencode(user), urlencode(password));
        let resp = self.post_query(&path, q);
        let v = resp.json();
        let failed = v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r.get("error").is_some());
        if resp.status != 200 || failed {
            panic!(
                "InfluxDB statement {q:?} as {user:?} answered {}: {}",
                resp.status, resp.body
            );
        }
        v
    }
}
