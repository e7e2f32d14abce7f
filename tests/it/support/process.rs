//! Child processes: SIGTERM, waiting with a deadline, running a command to completion, and
//! keeping the test runner's environment out of the programs under test.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::POLL;

/// Sends SIGTERM through the shell's `kill` builtin: std has no way to send a
/// signal other than SIGKILL, and `sh` is always present while the standalone
/// `kill` program (procps) is missing from minimal images.
pub(super) fn send_sigterm(pid: u32) {
    let status = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `sh -c kill -TERM {pid}`: {e}"));
    assert!(status.success(), "`kill -TERM {pid}` failed: {status}");
}

/// Polls `child` until it exits or `timeout` passes.
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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

/// Runs `cmd` (its output piped) until it exits or `timeout` passes, reading its output as it
/// comes; past the timeout `kill` stops it (the child is reaped after). The exit status (`None`:
/// killed), stdout and stderr.
pub fn run_collecting(
    cmd: &mut Command,
    timeout: Duration,
    kill: impl FnOnce(&mut Child),
) -> (Option<ExitStatus>, Vec<u8>, Vec<u8>) {
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
        kill(&mut child);
        let _ = child.wait();
    }
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

/// Runs `cmd` with piped output until it exits; kills it and panics after `timeout`.
pub fn run_to_completion(mut cmd: Command, timeout: Duration) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_collecting(&mut cmd, timeout, |child| {
        let _ = child.kill();
    });
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

/// Removes from `cmd`'s environment every variable of the test runner whose name starts with
/// `prefix`, so a developer's shell cannot change the configuration under test.
pub(super) fn remove_env_with_prefix(cmd: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(&name);
        }
    }
}
