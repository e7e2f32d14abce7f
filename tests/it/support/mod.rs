//! Shared helpers for the integration tests: a throwaway InfluxDB 1.x server
//! (`Influxd`), the gateway binary run as a child process (`Gateway`), a raw
//! HTTP/1.1 client that can also send malformed bytes, a client socket bound to a
//! chosen loopback address, polling, temporary directories and consumer.toml
//! builders. Every test module uses it through `crate::support`.
//!
//! Every server started here listens on 127.0.0.1 only and is stopped by its PID
//! when its handle is dropped, so a failing test cannot leave one running.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// How often every wait in this module looks again.
const POLL: Duration = Duration::from_millis(20);
/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect, read and write limit of the raw HTTP client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Gateway::spawn_with` lets the binary run before it is killed; a
/// command such as `--check-config` that starts serving instead of exiting must
/// fail the test rather than hang it.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

/// A fresh directory under the system temporary directory, removed on drop.
///
/// When it is dropped while the thread panics (a failing test), the directory is
/// kept and its path printed, so server logs and spool files can be inspected.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `metrics-consumer-<prefix>-<pid>-<counter>-<nanos>`. The process id
    /// and counter keep parallel tests and test binaries apart; the timestamp
    /// keeps a rerun from colliding with a directory kept by an earlier failure.
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "metrics-consumer-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        // create_dir rather than create_dir_all: an existing directory means a
        // name collision, which must not silently share state between tests.
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test failed: kept {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Small shared helpers
// ---------------------------------------------------------------------------

/// Polls `f` every 20 ms until it returns true; panics naming `what` on timeout.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(POLL);
    }
}

/// Quotes `s` as a TOML basic string. JSON string escapes are a subset of TOML's,
/// so serde_json's encoding is valid TOML for ordinary text such as paths and URLs.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// Percent-encodes everything but RFC 3986 unreserved characters; good for both
/// query-string values and `application/x-www-form-urlencoded` bodies.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks the kernel for `N` distinct free loopback ports. All listeners are held
/// until every port is known, so the same port cannot be handed out twice; the
/// port can still be taken by someone else before the server binds it, which is
/// why the callers retry.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port"))
        .collect();
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
    }
    ports
}

/// Sends SIGTERM through the shell's `kill` builtin: std has no way to send a
/// signal other than SIGKILL, and `sh` is always present while the standalone
/// `kill` program (procps) is missing from minimal images.
fn send_sigterm(pid: u32) {
    let status = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `sh -c kill -TERM {pid}`: {e}"));
    assert!(status.success(), "`kill -TERM {pid}` failed: {status}");
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// The last `n` lines of `text`, for panic messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn lock(log: &Mutex<String>) -> MutexGuard<'_, String> {
    // A reader thread cannot panic while holding the lock, but a poisoned lock
    // must not hide the log from the panic message that explains a failure.
    log.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// InfluxDB
// ---------------------------------------------------------------------------

const INFLUXD_MISSING: &str = "influxd not found: install Debian's `influxdb` package \
    (apt-get install influxdb) or run scripts/test.sh, which installs it";

/// `influxd` on PATH, else Debian's /usr/bin/influxd; panics saying what to install.
pub fn find_influxd() -> PathBuf {
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
            let config = influxd_config(influxd.dir.path(), http_port, rpc_port);
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
            if let Ok(resp) = try_request(addr, "GET", "/ping", &[], None) {
                if resp.status == 204 {
                    self.child = Some(child);
                    return Ok(());
                }
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
        let path = format!("/query?db={}&epoch=ms", urlencode(db));
        let body = format!("q={}", urlencode(q));
        let resp = request(
            self.addr(),
            "POST",
            &path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&body),
        );
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

fn remove_env_with_prefix(cmd: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(&name);
        }
    }
}

/// A config that keeps influxd small, quiet and on loopback. Upstream names the
/// usage-report switch `reporting-disabled` while Debian's build renamed it
/// `reporting-enabled`; influxd ignores unknown keys, so both are set.
fn influxd_config(dir: &Path, http_port: u16, rpc_port: u16) -> String {
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

// ---------------------------------------------------------------------------
// The gateway binary
// ---------------------------------------------------------------------------

/// The gateway binary that Cargo built for this test run.
pub fn gateway_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_metrics-consumer"))
}

/// The gateway running as a child process, with its own directory holding
/// `consumer.toml` (and `./data`, the default storage directory).
pub struct Gateway {
    /// Where it listens, parsed from its `listening on http://ADDR` log line.
    pub addr: SocketAddr,
    pub dir: TempDir,
    child: Child,
    /// stderr and stdout, line by line, across restarts.
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    program: PathBuf,
    config_path: PathBuf,
    /// Extra environment variables, set again on `restart`.
    env: Vec<(OsString, OsString)>,
    /// Set once the child has been reaped, so it is never signalled again (its
    /// PID may by then belong to another process).
    exit: Option<ExitStatus>,
}

impl Gateway {
    /// Starts the gateway with `config_toml` and waits until it listens; panics
    /// with its log otherwise. The config must keep the log level at `info` or
    /// lower, since the `listening on` line is how the address is learned.
    pub fn start(config_toml: &str) -> Gateway {
        Gateway::try_start(config_toml)
            .unwrap_or_else(|log| panic!("metrics-consumer did not start; its log:\n{log}"))
    }

    /// Like `start`, but returns the collected log when the gateway exits (or
    /// stays silent for 10 s) instead of listening.
    pub fn try_start(config_toml: &str) -> Result<Gateway, String> {
        Gateway::try_start_in(TempDir::new("gateway"), config_toml)
    }

    /// Like `start`, in a directory the caller has filled first (token files,
    /// TLS keys, or the `data` directory of an earlier run).
    pub fn start_in(dir: TempDir, config_toml: &str) -> Gateway {
        Gateway::try_start_in(dir, config_toml)
            .unwrap_or_else(|log| panic!("metrics-consumer did not start; its log:\n{log}"))
    }

    pub fn try_start_in(dir: TempDir, config_toml: &str) -> Result<Gateway, String> {
        Gateway::try_start_program(gateway_binary(), dir, config_toml)
    }

    /// Like `start_in`, with `env` added to the gateway's environment (also after
    /// `restart`), e.g. `NOTIFY_SOCKET` as systemd sets it.
    pub fn start_in_with_env(dir: TempDir, config_toml: &str, env: &[(&str, &OsStr)]) -> Gateway {
        let env = env
            .iter()
            .map(|(name, value)| (OsString::from(name), value.to_os_string()))
            .collect();
        Gateway::launch(gateway_binary(), dir, config_toml, env)
            .unwrap_or_else(|log| panic!("metrics-consumer did not start; its log:\n{log}"))
    }

    /// `try_start_in` with another program in place of the gateway; the harness
    /// self-test uses it to check this module against a stand-in.
    pub fn try_start_program(
        program: &Path,
        dir: TempDir,
        config_toml: &str,
    ) -> Result<Gateway, String> {
        Gateway::launch(program, dir, config_toml, Vec::new())
    }

    fn launch(
        program: &Path,
        dir: TempDir,
        config_toml: &str,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Gateway, String> {
        let config_path = dir.join("consumer.toml");
        fs::write(&config_path, config_toml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let (child, readers) =
            spawn_logged(program, dir.path(), &config_path, &env, Arc::clone(&log));
        let mut gateway = Gateway {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            child,
            log,
            readers,
            program: program.to_path_buf(),
            config_path,
            env,
            exit: None,
        };
        gateway.await_listening(0)?;
        Ok(gateway)
    }

    /// A command for the gateway binary with everything the harness sets: working
    /// directory `dir`, no `CONSUMER_*` variables (they would override the
    /// config under test), stdin from /dev/null.
    pub fn command(dir: &Path) -> Command {
        base_command(gateway_binary(), dir)
    }

    /// Runs the binary with `args` to completion (30 s at most, then it is
    /// killed and the test fails) in a fresh directory. `config`, when given, is
    /// written there as `consumer.toml`, which is also the default config path;
    /// `--config` is not added, so pass it in `args` to test that option.
    pub fn spawn_with(args: &[&str], config: Option<&str>) -> Output {
        let dir = TempDir::new("gateway-run");
        if let Some(config) = config {
            fs::write(dir.join("consumer.toml"), config).expect("write consumer.toml");
        }
        let mut cmd = Gateway::command(dir.path());
        cmd.args(args);
        run_to_completion(cmd, RUN_TIMEOUT)
    }

    /// Everything the gateway wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_alive(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// SIGKILL, as in a crash, and waits for the process.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// SIGTERM, as from a service manager; follow with `wait_exit`.
    pub fn terminate(&mut self) {
        if self.poll_exit().is_none() {
            send_sigterm(self.pid());
        }
    }

    /// Waits up to `timeout` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Starts the gateway again in the same directory with the same config, as
    /// after a crash or an upgrade; the spool and job table under `./data` are
    /// kept. A running gateway is first stopped with SIGTERM (SIGKILL after
    /// 10 s); call `kill` first to test recovery from a crash. With port 0 in the
    /// config the new process listens elsewhere: `addr` is updated.
    pub fn restart(&mut self) {
        if self.poll_exit().is_none() {
            send_sigterm(self.pid());
            if self.wait_exit(STOP_TIMEOUT).is_none() {
                self.kill();
            }
        }
        self.join_readers();
        let offset = {
            let mut log = lock(&self.log);
            log.push_str("----- restart -----\n");
            log.len()
        };
        // The new process's lines go into the same log, after the marker.
        let (child, readers) = spawn_logged(
            &self.program,
            self.dir.path(),
            &self.config_path,
            &self.env,
            Arc::clone(&self.log),
        );
        self.child = child;
        self.readers = readers;
        self.exit = None;
        if let Err(log) = self.await_listening(offset) {
            panic!("metrics-consumer did not restart; its log:\n{log}");
        }
    }

    /// Resident memory in KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_field("VmRSS")
    }

    /// Number of threads (Threads in /proc/PID/status).
    pub fn threads(&self) -> u64 {
        self.proc_status_field("Threads")
    }

    /// Number of open file descriptors, for leak checks.
    pub fn open_fds(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid());
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .count()
    }

    fn proc_status_field(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path} (has the process exited?)"))
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit
    }

    /// Waits until the log after `offset` has a `listening on` line, the
    /// process exits, or 10 s pass. On failure the process is gone and the
    /// whole log is returned.
    fn await_listening(&mut self, offset: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = parse_listening(lock(&self.log).get(offset..).unwrap_or_default());
            if let Some(addr) = found {
                self.addr = addr;
                return Ok(());
            }
            if let Some(status) = self.poll_exit() {
                self.join_readers();
                return Err(format!("{}[metrics-consumer exited: {status}]", self.log()));
            }
            if Instant::now() >= deadline {
                self.kill();
                self.join_readers();
                return Err(format!(
                    "{}[no `listening on http://` line within {START_TIMEOUT:?}; killed]",
                    self.log()
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Lets the reader threads drain what the exited process left in its pipes.
    /// Bounded, because a grandchild holding the pipe open would keep them
    /// reading forever.
    fn join_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        for reader in std::mem::take(&mut self.readers) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn base_command(program: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).stdin(Stdio::null());
    // The gateway reads secrets from these; a developer's shell must not leak
    // them into the configuration under test.
    for name in [
        "CONSUMER_INFLUXDB_PASSWORD",
        "CONSUMER_INFLUXDB_TOKEN",
        "CONSUMER_AUTH_TOKENS",
    ] {
        cmd.env_remove(name);
    }
    remove_env_with_prefix(&mut cmd, "CONSUMER_");
    // A test run started by a systemd service (a CI runner) inherits its NOTIFY_SOCKET;
    // gateways under test must not report to that service's manager.
    cmd.env_remove("NOTIFY_SOCKET");
    cmd
}

/// Spawns `program --config CONFIG` in `dir`, with `env` added to its
/// environment and stderr and stdout both appended to `log`. Both are read to
/// EOF so the child never blocks on a full pipe; stdout is captured too so that
/// nothing is lost whichever stream the logger picks.
fn spawn_logged(
    program: &Path,
    dir: &Path,
    config_path: &Path,
    env: &[(OsString, OsString)],
    log: Arc<Mutex<String>>,
) -> (Child, Vec<JoinHandle<()>>) {
    let mut cmd = base_command(program, dir);
    cmd.envs(env.iter().map(|(name, value)| (name, value)))
        .arg("--config")
        .arg(config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let readers = vec![
        pump_lines(child.stderr.take().expect("piped stderr"), Arc::clone(&log)),
        pump_lines(child.stdout.take().expect("piped stdout"), log),
    ];
    (child, readers)
}

fn pump_lines(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut log = lock(&log);
                    log.push_str(&text);
                    if !text.ends_with('\n') {
                        log.push('\n');
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

/// The address in the first `listening on http://ADDR` (or `https://`) line.
pub fn parse_listening(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        ["listening on http://", "listening on https://"]
            .iter()
            .find_map(|marker| {
                let rest = &line[line.find(marker)? + marker.len()..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                // Tolerate a trailing slash or punctuation after the port.
                rest[..end]
                    .trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != ']')
                    .parse()
                    .ok()
            })
    })
}

/// Runs `cmd` with piped output until it exits; kills it and panics after `timeout`.
fn run_to_completion(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let collect = |mut stream: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{program} {:?} still ran after {timeout:?}; killed. stdout:\n{}\nstderr:\n{}",
            cmd.get_args().collect::<Vec<&OsStr>>(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// In order of arrival, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Decoded from chunked encoding when needed; invalid UTF-8 is replaced.
    pub body: String,
}

impl RawResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with status and body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }
}

/// Connects (5 s timeouts), writes `bytes` as they are and reads one response.
/// A failed write is not final: a server may answer early (413, 431) and close
/// while the rest is still being sent, so the response is read anyway.
pub fn try_send_raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let written = stream.write_all(bytes).and_then(|()| stream.flush());
    let head_request = bytes.starts_with(b"HEAD ");
    match read_response(&mut BufReader::new(&stream), head_request) {
        Ok(resp) => Ok(resp),
        Err(read_err) => Err(match written {
            Err(write_err) => io::Error::new(
                write_err.kind(),
                format!("write failed ({write_err}), then no response ({read_err})"),
            ),
            Ok(()) => read_err,
        }),
    }
}

/// `try_send_raw` that panics, naming the address, when no response arrives.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    try_send_raw(addr, bytes).unwrap_or_else(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        panic!("no HTTP response from {addr} to {shown:?}: {e}")
    })
}

/// Reads one response from `reader`: status line, headers, then a body framed
/// by Content-Length, chunked encoding or the end of the stream. Interim 1xx
/// responses are skipped. `head_request` means no body follows whatever the
/// headers say. Usable on a kept-alive connection for a second response.
pub fn read_response(reader: &mut impl BufRead, head_request: bool) -> io::Result<RawResponse> {
    loop {
        let status_line = read_line(reader)?.ok_or_else(|| {
            bad(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(
                io::ErrorKind::InvalidData,
                &format!("bad status line {status_line:?}"),
            ));
        }
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
            bad(
                io::ErrorKind::InvalidData,
                &format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or_default().to_string();

        let mut headers = Vec::new();
        loop {
            let line = read_line(reader)?.ok_or_else(|| {
                bad(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the headers",
                )
            })?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| {
                bad(
                    io::ErrorKind::InvalidData,
                    &format!("bad header line {line:?}"),
                )
            })?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }

        let mut resp = RawResponse {
            status,
            reason,
            headers,
            body: String::new(),
        };
        if head_request || status == 204 || status == 304 || status == 101 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            read_chunked(reader)?
        } else if let Some(length) = resp.header("content-length") {
            let length: usize = length.parse().map_err(|_| {
                bad(
                    io::ErrorKind::InvalidData,
                    &format!("bad Content-Length {length:?}"),
                )
            })?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            body
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        };
        resp.body = String::from_utf8_lossy(&body).into_owned();
        return Ok(resp);
    }
}

fn bad(kind: io::ErrorKind, message: &str) -> io::Error {
    io::Error::new(kind, message.to_string())
}

/// One CRLF- (or LF-) terminated line without its terminator; None at EOF.
/// Capped at 64 KiB so a misbehaving server cannot grow it without bound.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader.take(64 * 1024).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(bad(io::ErrorKind::InvalidData, "line too long or cut off"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| {
            bad(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunked body",
            )
        })?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            bad(
                io::ErrorKind::InvalidData,
                &format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            // Trailer fields, if any, up to the blank line.
            while let Some(trailer) = read_line(reader)? {
                if trailer.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if read_line(reader)?.is_none_or(|rest| !rest.is_empty()) {
            return Err(bad(
                io::ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
    }
}

/// Sends a well-formed HTTP/1.1 request with `Host`, `Connection: close` and,
/// when there is a body, `Content-Length` (each unless `headers` has it).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> io::Result<RawResponse> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    try_send_raw(addr, req.as_bytes())
}

/// `try_request` that panics when no response arrives.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> RawResponse {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: no response: {e}"))
}

/// POSTs `value` as `application/json`.
/// A register that must succeed (no token); returns the run's uuid.
pub fn register(addr: SocketAddr, body: &Value) -> String {
    let answer = post_json(addr, "/apiv0.1/events/register", body);
    assert_eq!(answer.status, 200, "register {body}: {}", answer.body);
    answer.json()["uuid"]
        .as_str()
        .expect("register answers a uuid")
        .to_string()
}

pub fn post_json(addr: SocketAddr, path: &str, value: &Value) -> RawResponse {
    let body = serde_json::to_string(value).expect("a JSON value always serializes");
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&body),
    )
}

pub fn get(addr: SocketAddr, path: &str) -> RawResponse {
    request(addr, "GET", path, &[], None)
}

/// A TCP connection to `addr` from `src_ip` (any port), e.g. from 127.0.0.2 to
/// test per-client-IP limits: all of 127.0.0.0/8 reaches loopback on Linux.
/// 5 s connect, read and write timeouts.
pub fn connect_from(src_ip: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .expect("create a TCP socket");
    let local = SocketAddr::new(src_ip, 0);
    socket
        .bind(&local.into())
        .unwrap_or_else(|e| panic!("cannot bind a client socket to {local}: {e}"));
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect from {src_ip} to {addr}: {e}"));
    let stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set write timeout");
    stream
}

// ---------------------------------------------------------------------------
// consumer.toml builders
// ---------------------------------------------------------------------------

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
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[influxdb]\nurl = {}\ndatabase = {}\n{}\n[storage]\ndir = \"./data\"\n{}",
        lines(server_extra),
        toml_str(influx_url),
        toml_str(db),
        lines(influx_extra),
        lines(rest),
    )
}
