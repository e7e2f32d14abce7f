//! Running as a systemd service: the `sd_notify` messages the real binary sends
//! (`READY=1`, `STOPPING=1`), `scripts/install.sh` into a temporary DESTDIR, the shipped
//! unit checked by `systemd-analyze verify`, the gateway started the way the unit starts
//! it, shellcheck over the shell scripts, and the Containerfile's parts agreeing with each
//! other. The live deployments run in `scripts/systemd-e2e.sh` (a real systemd in
//! systemd-nspawn) and `scripts/container-e2e.sh` (podman), which `scripts/test.sh` calls.
//!
//! No test here needs systemd to be running: the notification socket is the test's
//! own, and `systemd-analyze verify` reads unit files offline.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{Gateway, TempDir, gateway_binary, get, parse_listening, request};

/// Nothing listens on the discard port: these tests need no InfluxDB.
const NO_INFLUX: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\n[influxdb]\nurl = \"http://127.0.0.1:9\"\n";
const TOKEN: &str = "service-token-0123456789abcdef";
/// How long a notification may take to arrive.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The next datagram on `receiver`, waiting up to `NOTIFY_TIMEOUT`.
/// What the gateway sends once it serves: `READY=1`, and a status replacing the one a long
/// start set.
const READY: &str = "READY=1\nSTATUS=serving";

/// What it sends as it begins to stop.
const STOPPING: &str =
    "STOPPING=1\nSTATUS=stopping: finishing the requests in flight, then saving the job table";

fn next_notification(receiver: &UnixDatagram, waiting_for: &str) -> String {
    receiver.set_read_timeout(Some(NOTIFY_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    let n = receiver
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification while waiting for {waiting_for}: {e}"));
    text(&buf[..n])
}

fn assert_nothing_more(receiver: &UnixDatagram) {
    receiver.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    match receiver.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("unexpected notification: {other:?}"),
    }
    receiver.set_nonblocking(false).unwrap();
}

/// Starts the gateway with `NOTIFY_SOCKET=notify_socket`, then checks: `READY=1` arrives
/// once, after `listening on` is logged and when ping answers; SIGTERM brings
/// `STOPPING=1` and a clean exit.
fn ready_then_stopping(notify_socket: &OsStr, receiver: &UnixDatagram) {
    let mut gw = Gateway::start_in_with_env(
        TempDir::new("gateway-notify"),
        NO_INFLUX,
        &[("NOTIFY_SOCKET", notify_socket)],
    );
    assert_eq!(next_notification(receiver, "READY=1"), READY);
    assert!(gw.log().contains("listening on http://"), "{}", gw.log());
    assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
    assert_nothing_more(receiver);

    gw.terminate();
    assert_eq!(next_notification(receiver, "STOPPING=1"), STOPPING);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits after SIGTERM");
    assert!(status.success(), "{status:?}: {}", gw.log());
    assert_nothing_more(receiver);
}

#[test]
fn ready_and_stopping_reach_a_path_notify_socket() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let receiver = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(path.as_os_str(), &receiver);
}

#[test]
fn ready_and_stopping_reach_an_abstract_notify_socket() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("metrics-consumer-test-{}-{nanos}", std::process::id());
    let receiver =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    ready_then_stopping(OsStr::new(&format!("@{name}")), &receiver);
}

#[test]
fn a_notify_socket_nobody_listens_on_does_not_stop_the_gateway() {
    let dir = TempDir::new("notify-nobody");
    let absent = dir.join("nobody.sock");
    for socket in [absent.as_os_str(), OsStr::new("not-a-socket-address")] {
        let mut gw = Gateway::start_in_with_env(
            TempDir::new("gateway-notify"),
            NO_INFLUX,
            &[("NOTIFY_SOCKET", socket)],
        );
        assert_eq!(get(gw.addr, "/apiv0.1/ping").status, 200);
        gw.terminate();
        let status = gw.wait_exit(Duration::from_secs(15)).expect("exits");
        assert!(status.success(), "{status:?}: {}", gw.log());
    }
}

// ---------------------------------------------------------------------------
// scripts/install.sh
// ---------------------------------------------------------------------------

/// Runs `scripts/install.sh --binary <the test build> ARGS` with `DESTDIR=destdir`.
fn install(destdir: &Path, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--binary")
        .arg(gateway_binary())
        .args(args)
        .env("DESTDIR", destdir)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs scripts/install.sh");
    let shown = format!(
        "install.sh {args:?}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file under `dir` with its content and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime, u32)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let meta = fs::metadata(&path).unwrap();
                files.insert(
                    path.clone(),
                    (
                        fs::read(&path).unwrap(),
                        meta.modified().unwrap(),
                        mode(&path),
                    ),
                );
            }
        }
    }
    files
}

#[test]
fn install_sh_installs_into_a_destdir_and_a_second_run_changes_nothing() {
    let destdir = TempDir::new("install");
    let d = destdir.path();
    let out = install(d, &[]);
    let said = text(&out.stdout);

    let binary = d.join("usr/local/bin/metrics-consumer");
    let unit = d.join("etc/systemd/system/metrics-consumer.service");
    let etc = d.join("etc/metrics-consumer");
    for (path, expected) in [
        (&binary, 0o755),
        (&unit, 0o644),
        (&etc.join("consumer.toml"), 0o640),
        (&etc.join("tokens"), 0o600),
        (&etc.join("influxdb-secret"), 0o600),
    ] {
        assert_eq!(mode(path), expected, "mode of {}", path.display());
        assert!(
            said.contains(&path.display().to_string()),
            "install.sh names {}: {said}",
            path.display()
        );
    }
    assert_eq!(
        fs::read(&binary).unwrap(),
        fs::read(gateway_binary()).unwrap()
    );
    assert_eq!(
        fs::read_to_string(&unit).unwrap(),
        fs::read_to_string(repo().join("scripts/metrics-consumer.service")).unwrap(),
        "with the default prefix the unit is installed as shipped"
    );
    assert_eq!(
        fs::read_to_string(etc.join("consumer.toml")).unwrap(),
        fs::read_to_string(repo().join("consumer.toml")).unwrap()
    );
    assert!(
        fs::read_to_string(etc.join("tokens"))
            .unwrap()
            .lines()
            .all(|l| l.starts_with('#')),
        "the tokens file holds no token until the operator adds one"
    );
    assert_eq!(fs::read(etc.join("influxdb-secret")).unwrap(), b"");
    for step in ["systemctl daemon-reload", "enable --now", "journalctl -u"] {
        assert!(said.contains(step), "next steps mention {step:?}: {said}");
    }

    // Idempotent: the second run touches nothing and says so.
    let before = snapshot(d);
    let out = install(d, &[]);
    let said = text(&out.stdout);
    assert_eq!(snapshot(d), before, "a second run changed files: {said}");
    assert!(said.contains("nothing to do"), "{said}");
    for verb in ["installed", "created", "chmod"] {
        assert!(
            !said.lines().any(|l| l.starts_with(verb)),
            "second run: {said}"
        );
    }

    // An operator's configuration and secrets are never overwritten; a wrong mode on
    // the binary is put right.
    fs::write(etc.join("consumer.toml"), "[log]\nlevel = \"debug\"\n").unwrap();
    fs::write(etc.join("tokens"), format!("{TOKEN}\n")).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o700)).unwrap();
    let said = text(&install(d, &[]).stdout);
    assert_eq!(
        fs::read_to_string(etc.join("consumer.toml")).unwrap(),
        "[log]\nlevel = \"debug\"\n"
    );
    assert_eq!(
        fs::read_to_string(etc.join("tokens")).unwrap(),
        format!("{TOKEN}\n")
    );
    assert_eq!(mode(&binary), 0o755, "{said}");
    assert!(said.contains("kept"), "{said}");
}

#[test]
fn install_sh_puts_the_binary_under_the_prefix_and_the_unit_follows() {
    let destdir = TempDir::new("install-prefix");
    let d = destdir.path();
    install(d, &["--prefix", "/opt/metrics-consumer"]);
    assert_eq!(
        mode(&d.join("opt/metrics-consumer/bin/metrics-consumer")),
        0o755
    );
    assert!(!d.join("usr/local/bin/metrics-consumer").exists());
    let unit = fs::read_to_string(d.join("etc/systemd/system/metrics-consumer.service")).unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        [
            "ExecStart=/opt/metrics-consumer/bin/metrics-consumer --config ${CREDENTIALS_DIRECTORY}/consumer.toml"
        ]
    );

    for bad in ["relative/dir", "/opt/with space", "/opt/%n"] {
        let out = Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .args(["--binary", "/bin/true", "--prefix", bad])
            .env("DESTDIR", d)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--prefix {bad:?}");
        assert!(
            text(&out.stderr).contains("--prefix"),
            "{}",
            text(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------
// The unit file
// ---------------------------------------------------------------------------

const SYSTEMD_ANALYZE_MISSING: &str = "systemd-analyze not found: install Debian's `systemd` \
    package (apt-get install systemd; it does not replace the running init system) or run \
    scripts/test.sh, which installs it";

fn find_systemd_analyze() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("systemd-analyze"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/systemd-analyze")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{SYSTEMD_ANALYZE_MISSING}"))
}

/// `Key=Value` lines of the unit's `[section]`, in order (keys may repeat).
fn settings<'a>(unit: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut found = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').expect("Key=Value");
            found.push((key, value));
        }
    }
    found
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    let analyze = find_systemd_analyze();
    let destdir = TempDir::new("install-verify");
    let d = destdir.path();
    install(d, &[]);
    let unit = fs::read_to_string(d.join("etc/systemd/system/metrics-consumer.service")).unwrap();

    // verify checks that ExecStart's program exists, so the copy it reads points at the
    // binary installed under DESTDIR; the file keeps its name, which verify also checks.
    let installed = d.join("usr/local/bin/metrics-consumer");
    let checked = unit.replace(
        "ExecStart=/usr/local/bin/metrics-consumer ",
        &format!("ExecStart={} ", installed.display()),
    );
    assert_ne!(
        checked, unit,
        "the unit has the ExecStart line install.sh writes"
    );
    let dir = TempDir::new("verify");
    let copy = dir.join("metrics-consumer.service");
    fs::write(&copy, &checked).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .env_remove("SYSTEMD_LOG_LEVEL")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", analyze.display()));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // verify exits 0 on unknown keys and bad values too, and only warns: every line it
    // writes about the unit counts as a failure.
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("metrics-consumer.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify {} ({}):\n{said}",
        copy.display(),
        out.status
    );
}

#[test]
fn the_unit_has_the_settings_the_readme_describes() {
    let unit = fs::read_to_string(repo().join("scripts/metrics-consumer.service")).unwrap();
    let service = settings(&unit, "Service");
    let has = |key: &str, value: &str| service.contains(&(key, value));
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/local/bin/metrics-consumer --config ${CREDENTIALS_DIRECTORY}/consumer.toml",
        ),
        ("DynamicUser", "yes"),
        ("StateDirectory", "metrics-consumer"),
        ("WorkingDirectory", "/var/lib/metrics-consumer"),
        ("ConfigurationDirectory", "metrics-consumer"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(has(key, value), "[Service] lacks {key}={value}");
    }
    assert!(service.iter().any(|(k, _)| *k == "MemoryMax"));
    assert_eq!(
        settings(&unit, "Install"),
        [("WantedBy", "multi-user.target")]
    );

    // systemd refuses to start the unit when a credential's source file is missing, so
    // install.sh must create every one of them.
    let credentials: Vec<(&str, &str)> = service
        .iter()
        .filter(|(k, _)| *k == "LoadCredential")
        .map(|(_, v)| v.split_once(':').expect("LoadCredential=ID:PATH"))
        .collect();
    assert_eq!(
        credentials,
        [
            ("consumer.toml", "/etc/metrics-consumer/consumer.toml"),
            ("tokens", "/etc/metrics-consumer/tokens"),
            ("influxdb-secret", "/etc/metrics-consumer/influxdb-secret"),
        ]
    );
    let destdir = TempDir::new("install-credentials");
    install(destdir.path(), &[]);
    for (_, source) in &credentials {
        let installed = destdir.join(source.trim_start_matches('/'));
        assert!(installed.is_file(), "install.sh creates {source}");
    }
}

// ---------------------------------------------------------------------------
// The gateway started as the unit starts it
// ---------------------------------------------------------------------------

/// A gateway child process killed by its PID when dropped, so a failing test leaves
/// nothing running.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's configuration for the service: the installed consumer.toml with the
/// client tokens and the InfluxDB password taken from the credentials, and (for this
/// test only) a free port and no InfluxDB.
fn readme_service_config(installed: &str) -> String {
    let edited = installed
        .replace("token_files = []", "token_files = [\"tokens\"]")
        .replace(
            "password_file = \"\"",
            "password_file = \"influxdb-secret\"",
        )
        .replace("username = \"\"", "username = \"loadtests\"")
        .replace("listen = \"127.0.0.1:3000\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "url = \"http://127.0.0.1:8086\"",
            "url = \"http://127.0.0.1:9\"",
        );
    for key in [
        "token_files = [\"tokens\"]",
        "influxdb-secret",
        "127.0.0.1:0",
        "127.0.0.1:9",
    ] {
        assert!(
            edited.contains(key),
            "consumer.toml no longer has the line for {key}"
        );
    }
    edited
}

/// scripts/install.sh into a fresh DESTDIR, then what the README has the operator do: the
/// configuration for the service in the installed consumer.toml, a client token in `tokens` and
/// the InfluxDB password in `influxdb-secret`. Returns the DESTDIR.
fn installed_and_configured() -> TempDir {
    let destdir = TempDir::new("install-run");
    install(destdir.path(), &[]);
    let etc = destdir.join("etc/metrics-consumer");
    let installed = fs::read_to_string(etc.join("consumer.toml")).unwrap();
    fs::write(etc.join("consumer.toml"), readme_service_config(&installed)).unwrap();
    fs::write(etc.join("tokens"), format!("{TOKEN}\n")).unwrap();
    fs::write(etc.join("influxdb-secret"), "influx-password\n").unwrap();
    destdir
}

/// By hand, as an operator checks the configuration: relative secret paths are relative to
/// /etc/metrics-consumer.
#[test]
fn the_installed_configuration_passes_check_config_and_shows_no_secret() {
    let destdir = installed_and_configured();
    let d = destdir.path();
    let etc = d.join("etc/metrics-consumer");
    let binary = d.join("usr/local/bin/metrics-consumer");
    let out = Command::new(&binary)
        .args(["--check-config", "--config"])
        .arg(etc.join("consumer.toml"))
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        !shown.contains(TOKEN) && !shown.contains("influx-password"),
        "{shown}"
    );
}

#[test]
fn the_gateway_runs_with_its_config_and_secrets_in_a_credentials_directory() {
    let destdir = installed_and_configured();
    let etc = destdir.join("etc/metrics-consumer");

    // As systemd runs it: the configuration and secrets copied into a credentials
    // directory, the working directory the state directory, NOTIFY_SOCKET set.
    let credentials = TempDir::new("credentials");
    for name in ["consumer.toml", "tokens", "influxdb-secret"] {
        fs::copy(etc.join(name), credentials.join(name)).unwrap();
        fs::set_permissions(credentials.join(name), fs::Permissions::from_mode(0o400)).unwrap();
    }
    let state = TempDir::new("state");
    let notify = state.join("notify.sock");
    let receiver = UnixDatagram::bind(&notify).unwrap();
    let mut cmd = Gateway::command(state.path());
    cmd.arg("--config")
        .arg(credentials.join("consumer.toml"))
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Started(cmd.spawn().expect("the installed binary runs"));
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.0.stderr.take().unwrap();
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    assert_eq!(next_notification(&receiver, "READY=1"), READY);
    // The gateway logged `listening on` before READY=1, but the reader thread may not
    // have taken the line from the pipe yet.
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let addr = loop {
        let found = parse_listening(&log.lock().unwrap());
        if let Some(addr) = found {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "no `listening on` line: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    let bearer = format!("Bearer {TOKEN}");
    let body = r#"{"host": "lg-1", "measurement": {"fields": {"clients": 1}}}"#;
    let path = "/apiv0.1/events/register";
    let register = request(
        addr,
        "POST",
        path,
        &[("Authorization", &bearer)],
        Some(body),
    );
    assert_eq!(register.status, 200, "{}", register.body);
    let refused = request(addr, "POST", path, &[], Some(body));
    assert_eq!(
        refused.status, 401,
        "the token from the credential is required"
    );
    // storage.dir = "./data": the log and the job table are in the state directory.
    assert!(state.join("data/jobs.json").is_file());
    assert!(state.join("data/log").is_dir());
    assert!(state.join("data/lock").is_file());

    let status = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(next_notification(&receiver, "STOPPING=1"), STOPPING);
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 15 s after SIGTERM: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    assert!(exit.success(), "{exit:?}: {}", log.lock().unwrap());
}

// ---------------------------------------------------------------------------
// Shell scripts
// ---------------------------------------------------------------------------

const SHELLCHECK_MISSING: &str = "shellcheck not found: install Debian's `shellcheck` package \
    (apt-get install shellcheck) or run scripts/test.sh, which installs it";

#[test]
fn shell_scripts_are_shellcheck_clean_and_executable() {
    let mut scripts = Vec::new();
    for dir in ["scripts", "scripts/lib", "scripts/examples", ".ci"] {
        for entry in fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let is_shell = path.extension() == Some(OsStr::new("sh"))
                || fs::read_to_string(&path).is_ok_and(|t| t.starts_with("#!/usr/bin/env bash"));
            if path.is_file() && is_shell {
                scripts.push(path);
            }
        }
    }
    assert!(scripts.len() >= 10, "found only {scripts:?}");
    for script in &scripts {
        // Sourced libraries are not run on their own.
        if !script.starts_with(repo().join("scripts/lib")) {
            assert!(
                mode(script) & 0o111 == 0o111,
                "{} is not executable",
                script.display()
            );
        }
    }
    let out = Command::new("shellcheck")
        .arg("--external-sources")
        .args(&scripts)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{SHELLCHECK_MISSING} ({e})"));
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The container image and the end-to-end tests of both deployments
// ---------------------------------------------------------------------------

/// The value of the first `INSTRUCTION` line of the Containerfile.
fn instruction<'a>(containerfile: &'a str, name: &str) -> &'a str {
    containerfile
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("the Containerfile has no {name}"))
        .trim()
}

/// What scripts/container-e2e.sh cannot see from outside the image: its parts agree. The user
/// is one of the image's /etc/passwd, whose home is the working directory and the volume; the
/// port exposed is the one it listens on; the build context lets in what the COPYs take.
#[test]
fn the_containerfile_agrees_with_its_files() {
    let containerfile = fs::read_to_string(repo().join("Containerfile")).unwrap();
    assert_eq!(instruction(&containerfile, "FROM"), "scratch");
    let passwd = fs::read_to_string(repo().join("scripts/container/rootfs/etc/passwd")).unwrap();
    let user = instruction(&containerfile, "USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("metrics-consumer:"))
        .expect("a metrics-consumer user")
        .split(':')
        .collect();
    assert_eq!((entry[2], entry[3]), (uid, gid), "USER is the passwd entry");
    assert_ne!(uid, "0", "not root");
    let home = entry[5];
    assert_eq!(instruction(&containerfile, "WORKDIR"), home);
    assert_eq!(
        instruction(&containerfile, "VOLUME"),
        format!("[\"{home}\"]")
    );
    assert!(
        containerfile.contains(&format!(
            "COPY --chown={user} scripts/container/state/ {home}/"
        )),
        "the volume's directory belongs to the user"
    );
    let listen = instruction(&containerfile, "ENV")
        .strip_prefix("CONSUMER_SERVER_LISTEN=")
        .expect("ENV CONSUMER_SERVER_LISTEN=...");
    let port = listen.rsplit(':').next().unwrap();
    assert_eq!(instruction(&containerfile, "EXPOSE"), port);
    assert_eq!(
        instruction(&containerfile, "ENTRYPOINT"),
        "[\"/usr/local/bin/metrics-consumer\"]"
    );
    let binary = instruction(&containerfile, "ARG")
        .strip_prefix("BINARY=")
        .expect("ARG BINARY=...");
    assert_eq!(
        binary,
        "target/x86_64-unknown-linux-gnu/release/metrics-consumer"
    );
    let ignore = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for allowed in ["!scripts/container/", "!target/*/release/metrics-consumer"] {
        assert!(
            ignore.lines().any(|l| l == allowed),
            ".dockerignore lets in {allowed}"
        );
    }
}

#[test]
fn the_test_command_runs_both_deployment_tests() {
    let test = fs::read_to_string(repo().join("scripts/test.sh")).unwrap();
    for script in ["scripts/container-e2e.sh", "scripts/systemd-e2e.sh"] {
        assert!(
            test.lines().any(|l| l.trim() == script),
            "scripts/test.sh runs {script}"
        );
        assert!(repo().join(script).is_file());
    }
}
