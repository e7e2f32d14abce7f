//! The gateway binary run as a child process (`Gateway`): started with a consumer.toml in a
//! directory of its own, its address learned from its log, stopped, killed and restarted as a
//! service manager would, its log and /proc figures read by the tests.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::process::{remove_env_with_prefix, run_to_completion, send_sigterm};
use super::tempdir::TempDir;
use super::{POLL, START_TIMEOUT, STOP_TIMEOUT};

/// How long `Gateway::spawn_with` lets the binary run before it is killed; a
/// command such as `--check-config` that starts serving instead of exiting must
/// fail the test rather than hang it.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Gateway::log`] waits at most for the gateway's pipes to be read.
const LOG_DRAIN: Duration = Duration::from_secs(2);
/// How many of its last log lines (access lines left out) a gateway prints when the test
/// holding it fails.
const LOG_TAIL_LINES: usize = 60;

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
    readers: Vec<Pump>,
    program: PathBuf,
    config_path: PathBuf,
    /// Extra environment variables, set again on `restart`.
    env: Vec<(OsString, OsString)>,
    /// Command-line arguments after `--config`, kept for `restart`.
    args: Vec<OsString>,
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

    /// Like `start_in`, with `args` after `--config` (e.g. `--repair`), also after `restart`.
    pub fn start_in_with_args(dir: TempDir, config_toml: &str, args: &[&str]) -> Gateway {
        let args = args.iter().map(OsString::from).collect();
        Gateway::launch_with(gateway_binary(), dir, config_toml, Vec::new(), args)
            .unwrap_or_else(|log| panic!("metrics-consumer did not start; its log:\n{log}"))
    }

    fn launch(
        program: &Path,
        dir: TempDir,
        config_toml: &str,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Gateway, String> {
        Gateway::launch_with(program, dir, config_toml, env, Vec::new())
    }

    fn launch_with(
        program: &Path,
        dir: TempDir,
        config_toml: &str,
        env: Vec<(OsString, OsString)>,
        args: Vec<OsString>,
    ) -> Result<Gateway, String> {
        let config_path = dir.join("consumer.toml");
        fs::write(&config_path, config_toml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let (child, readers) = spawn_logged(
            program,
            dir.path(),
            &config_path,
            &env,
            &args,
            Arc::clone(&log),
        );
        let mut gateway = Gateway {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            child,
            log,
            readers,
            program: program.to_path_buf(),
            config_path,
            env,
            args,
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

    /// Everything the gateway wrote to stderr and stdout so far: what is still in its pipes is
    /// read first (a line logged just before an answer reaches the pipe before the answer does,
    /// and its reader a moment later), for [`LOG_DRAIN`] at most.
    pub fn log(&self) -> String {
        let deadline = Instant::now() + LOG_DRAIN;
        while self.readers.iter().any(|p| !p.drained()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
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
            &self.args,
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

    /// Peak resident memory of the process so far in KiB (VmHWM in /proc/PID/status).
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_field("VmHWM")
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
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status);
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
        while self.readers.iter().any(|r| !r.thread.is_finished()) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        for reader in std::mem::take(&mut self.readers) {
            if reader.thread.is_finished() {
                let _ = reader.thread.join();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if thread::panicking() {
            // A failed test shows what the gateway said (a CI run keeps nothing else): its
            // whole log beside the kept files, and its last lines other than the access log.
            let log = self.log();
            let _ = fs::write(self.dir.join("gateway.log"), &log);
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" access: "))
                .rev()
                .take(LOG_TAIL_LINES)
                .collect();
            eprintln!(
                "----- the gateway's last {} log lines, access lines left out -----",
                tail.len()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
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
    args: &[OsString],
    log: Arc<Mutex<String>>,
) -> (Child, Vec<Pump>) {
    let mut cmd = base_command(program, dir);
    cmd.envs(env.iter().map(|(name, value)| (name, value)))
        .arg("--config")
        .arg(config_path)
        .args(args)
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

/// A reader thread moving one of the gateway's pipes into its log, line by line.
struct Pump {
    thread: JoinHandle<()>,
    /// The pipe's read end (a second handle), to see whether anything waits in it.
    pipe: OwnedFd,
    /// The thread holds no bytes it has not put in the log (it waits for more).
    idle: Arc<AtomicBool>,
}

impl Pump {
    /// Everything written to the pipe so far is in the log (or the pipe is closed).
    fn drained(&self) -> bool {
        self.thread.is_finished()
            || (self.idle.load(Ordering::SeqCst)
                && rustix::io::ioctl_fionread(&self.pipe).is_ok_and(|n| n == 0))
    }
}

fn pump_lines(stream: impl Read + AsFd + Send + 'static, log: Arc<Mutex<String>>) -> Pump {
    let pipe = stream
        .as_fd()
        .try_clone_to_owned()
        .expect("a second handle on the gateway's pipe");
    let idle = Arc::new(AtomicBool::new(false));
    let busy = Arc::clone(&idle);
    let thread = thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            busy.store(reader.buffer().is_empty(), Ordering::SeqCst);
            let read = reader.read_until(b'\n', &mut line);
            busy.store(false, Ordering::SeqCst);
            match read {
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
    });
    Pump { thread, pipe, idle }
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

fn lock(log: &Mutex<String>) -> MutexGuard<'_, String> {
    // A reader thread cannot panic while holding the lock, but a poisoned lock
    // must not hide the log from the panic message that explains a failure.
    log.lock().unwrap_or_else(|e| e.into_inner())
}
