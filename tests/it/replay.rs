//! `metrics-consumer replay-dead-letters` when not every letter goes through, against a real
//! `influxd`: a letter that cannot be read is named and kept while the others are delivered;
//! InfluxDB down, or answering 5xx (a loopback stub, for the 5xx on demand), stops the replay at
//! once and changes no letter; a letter InfluxDB refuses again keeps InfluxDB's new reason; a
//! letter whose files cannot be changed is named and the others go on. Each case has its own
//! exit status (docs/delivery.md, "Watching and emptying").
//!
//! The letters are written as the gateway keeps them (src/storage/dead_letters.rs):
//! `dead-letter/<record>-<unit>-<points>.lp` with the lines (timestamps in milliseconds, or a
//! first line naming a target and nanoseconds) and `.error` beside it with the reason.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::{ConsumerToml, Gateway, Influxd, TempDir, run_to_completion, stand_in};

/// The exit statuses of `replay-dead-letters`, as documented.
const EXIT_STILL_REFUSED: i32 = 1;
const EXIT_INFLUXDB_UNREACHABLE: i32 = 3;
const EXIT_FILES: i32 = 4;

/// A reason as the gateway recorded it when InfluxDB refused a letter.
const OLD_REASON: &str = "2024-05-01T10:00:00Z influxdb answered 400: an old reason\n";

/// The measurement the letters write.
const MEASUREMENT: &str = "replayed";

/// A directory with a consumer.toml for `influx_url` (database `runs`, `influxdb_extra` in
/// `[influxdb]`) and an empty `data/dead-letter`.
fn setup(influx_url: &str, influxdb_extra: &str) -> TempDir {
    let dir = TempDir::new("replay");
    fs::write(
        dir.join("consumer.toml"),
        ConsumerToml::new(influx_url, "runs")
            .influxdb(influxdb_extra)
            .toml(),
    )
    .unwrap();
    fs::create_dir_all(dir.join("data/dead-letter")).unwrap();
    dir
}

/// Writes dead letter `record` (one point) with `lines` and the reason [`OLD_REASON`]; its
/// `.lp` path.
fn letter(dir: &TempDir, record: u64, lines: &[u8]) -> PathBuf {
    let path = dir.join(format!("data/dead-letter/{record:020}-0-1.lp"));
    fs::write(path.with_extension("error"), OLD_REASON).unwrap();
    fs::write(&path, lines).unwrap();
    path
}

/// The line of point `n` of [`MEASUREMENT`], field `v` a float, time in milliseconds.
fn point(n: u64) -> String {
    format!("{MEASUREMENT},letter={n} v={n} {}\n", 1_700_000_000_000 + n)
}

/// Every file under `data/dead-letter` but the lock, with its bytes, escaped (a directory as
/// `None`).
fn files(dir: &TempDir) -> BTreeMap<String, Option<String>> {
    fs::read_dir(dir.join("data/dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "lock")
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&p).ok();
            (name, bytes.map(|b| b.escape_ascii().to_string()))
        })
        .collect()
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Runs `replay-dead-letters` in `dir`: its exit code, stdout and stderr.
fn replay(dir: &TempDir) -> (Option<i32>, String, String) {
    let mut cmd = Gateway::command(dir.path());
    cmd.arg("replay-dead-letters");
    let out = run_to_completion(cmd, Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `letter` tags of the points of [`MEASUREMENT`] in `runs`, read back from InfluxDB.
fn stored(influx: &Influxd) -> Vec<String> {
    let mut letters: Vec<String> = influx
        .series("runs", MEASUREMENT)
        .into_iter()
        .map(|row| row["letter"].as_str().unwrap().to_string())
        .collect();
    letters.sort();
    letters
}

/// Letters 2 and 3 cannot be read (not UTF-8; a target line cut short): letters 1 and 4 are
/// still delivered and removed, the two are named, kept byte for byte with their reasons, and
/// the exit status says that letters are left that cannot be read.
#[test]
fn an_unreadable_letter_is_named_and_kept_and_the_others_are_delivered() {
    let influx = Influxd::start();
    let dir = setup(&influx.url, "");
    let first = letter(&dir, 1, point(1).as_bytes());
    let not_utf8 = letter(&dir, 2, &[point(2).as_bytes(), b"\xff\xfe\n"].concat());
    let cut = letter(
        &dir,
        3,
        format!(
            "# metrics-consumer target {{\"database\":\"ru\n{}",
            point(3)
        )
        .as_bytes(),
    );
    let last = letter(&dir, 4, point(4).as_bytes());
    let before = files(&dir);

    let (code, out, err) = replay(&dir);
    assert_eq!(stored(&influx), ["1", "4"], "{out}{err}");
    let after = files(&dir);
    let stem = |path: &Path| path.file_stem().unwrap().to_string_lossy().into_owned();
    let bad = [stem(&not_utf8), stem(&cut)];
    let kept: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(file, _)| bad.iter().any(|b| file.starts_with(&format!("{b}."))))
        .collect();
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert_eq!(
        after, kept,
        "only the unreadable letters are left, as they were"
    );
    assert!(!first.exists() && !last.exists());
    for bad in [&not_utf8, &cut] {
        assert!(err.contains(&name(bad)), "names {}: {err}", bad.display());
    }
    assert!(
        out.contains("2 dead letters delivered, 0 still refused, 2 unreadable, 0 left untried"),
        "{out}"
    );
    assert_eq!(code, Some(EXIT_FILES), "{out}{err}");
}

/// InfluxDB is stopped: the replay stops at the first letter, says InfluxDB could not be
/// reached and how many letters were left, and no letter's file changes (the reasons
/// InfluxDB gave stay what the operator reads).
#[test]
fn influxdb_down_changes_no_letter_and_says_so() {
    let mut influx = Influxd::start();
    let dir = setup(&influx.url, "");
    for n in 1..=3 {
        letter(&dir, n, point(n).as_bytes());
    }
    influx.stop();
    let before = files(&dir);

    let (code, out, err) = replay(&dir);
    assert_eq!(files(&dir), before, "no letter changed: {out}{err}");
    assert!(err.contains("InfluxDB could not be reached"), "{err}");
    assert!(err.contains("3 dead letters left untouched"), "{err}");
    assert!(
        out.contains("0 dead letters delivered, 0 still refused, 0 unreadable, 3 left untried"),
        "{out}"
    );
    influx.restart();
    assert!(stored(&influx).is_empty());
    assert_eq!(code, Some(EXIT_INFLUXDB_UNREACHABLE), "{out}{err}");
}

/// A loopback stand-in for InfluxDB: `GET /ping` answers 204, every other request 503; the
/// number of requests other than `/ping` it got.
fn failing_influxdb() -> (SocketAddr, Arc<AtomicUsize>) {
    let body = r#"{"error":"the stand-in is overloaded"}"#;
    counting_stand_in(format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nX-Influxdb-Version: 1.8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A loopback stand-in for InfluxDB: `GET /ping` answers 204, every other request `answer`
/// (a whole HTTP response); the number of requests other than `/ping` it got.
fn counting_stand_in(answer: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&writes);
    let (addr, _) = stand_in(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        answer.clone()
    });
    (addr, writes)
}

/// InfluxDB answers 503: the replay stops after the first write (the others would fail the
/// same way), changes no letter, and exits as when InfluxDB cannot be reached.
#[test]
fn a_5xx_stops_the_replay_at_once_and_changes_no_letter() {
    let (addr, writes) = failing_influxdb();
    let dir = setup(&format!("http://{addr}"), "");
    for n in 1..=3 {
        letter(&dir, n, point(n).as_bytes());
    }
    let before = files(&dir);

    let (code, out, err) = replay(&dir);
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "one write, then stopped: {out}{err}"
    );
    assert_eq!(files(&dir), before, "no letter changed");
    assert!(
        err.contains("503") && err.contains("the stand-in is overloaded"),
        "{err}"
    );
    assert!(err.contains("3 dead letters left untouched"), "{err}");
    assert!(
        out.contains("0 dead letters delivered, 0 still refused, 0 unreadable, 3 left untried"),
        "{out}"
    );
    assert_eq!(code, Some(EXIT_INFLUXDB_UNREACHABLE), "{out}{err}");
}

/// A server at `influxdb.url` that is not InfluxDB (a proxy's route, a web server) answers
/// every write 404 with a page of its own: that says nothing of the letters' databases, so
/// letters for a client's own database are not "refused again" with the page as their reason.
/// The replay stops at the first, as for the gateway's own database, and changes no letter.
#[test]
fn a_404_that_is_not_influxdbs_changes_no_letter_of_a_clients_database() {
    let page = "<html><body>404 Not Found</body></html>";
    let (addr, writes) = counting_stand_in(format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
        page.len()
    ));
    let dir = setup(&format!("http://{addr}"), "create_database = false");
    for n in 1..=2 {
        let target =
            r#"# metrics-consumer target {"database":"k6","retention_policy":"","precision":"ns"}"#;
        letter(&dir, n, format!("{target}\n{}", point(n)).as_bytes());
    }
    let before = files(&dir);

    let (code, out, err) = replay(&dir);
    assert_eq!(files(&dir), before, "no letter changed: {out}{err}");
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "stopped at the first: {err}"
    );
    assert!(err.contains("not as InfluxDB answers"), "{err}");
    assert!(err.contains("2 dead letters left untouched"), "{err}");
    assert_eq!(code, Some(EXIT_INFLUXDB_UNREACHABLE), "{out}{err}");
}

/// Another replay-dead-letters holds the dead letters' lock: this one sends nothing, changes
/// no letter, and says another replay is running (not another gateway, nor a storage.dir to
/// give it), exiting 2.
#[test]
fn a_second_replay_says_another_replay_runs_and_sends_nothing() {
    let (addr, writes) = failing_influxdb();
    let dir = setup(&format!("http://{addr}"), "");
    letter(&dir, 1, point(1).as_bytes());
    let dead = dir.join("data/dead-letter");
    // Held as a running replay holds it: a lock on the directory, its pid in `lock`.
    let held = fs::File::open(&dead).unwrap();
    held.try_lock().unwrap();
    fs::write(dead.join("lock"), "4242\n").unwrap();
    let before = files(&dir);

    let (code, out, err) = replay(&dir);
    assert_eq!(files(&dir), before, "no letter changed: {out}{err}");
    assert_eq!(writes.load(Ordering::SeqCst), 0, "nothing sent: {err}");
    assert!(
        err.contains("another replay-dead-letters (pid 4242) is sending the dead letters"),
        "{err}"
    );
    assert!(!err.contains("storage.dir of its own"), "{err}");
    assert_eq!(code, Some(2), "{out}{err}");
    drop(held);
}

/// Run where `storage.dir` (relative to the working directory) is not, the replay finds no
/// dead letters directory: it says so, naming where it looked and why, exits 2, and makes
/// nothing there. Making it and answering "0 dead letters delivered" with 0 told an operator
/// who ran it from the wrong directory that every letter was delivered.
#[test]
fn a_replay_where_there_is_no_dead_letter_directory_says_so_and_makes_none() {
    let (addr, writes) = failing_influxdb();
    let dir = setup(&format!("http://{addr}"), "");
    fs::remove_dir_all(dir.join("data")).unwrap();

    let (code, out, err) = replay(&dir);
    assert!(!dir.join("data").exists(), "nothing made: {out}{err}");
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    assert!(err.contains("data/dead-letter"), "{err}");
    assert!(err.contains("relative to the working directory"), "{err}");
    assert!(!out.contains("dead letters delivered"), "{out}");
    assert_eq!(code, Some(2), "{out}{err}");
}

/// Letter 1 meets a field type conflict and letter 2 names a database InfluxDB does not have
/// (and the gateway may not create): both stay, each with InfluxDB's new reason in place of
/// the old one, letter 3 is delivered, and the exit status says letters are still refused.
#[test]
fn a_letter_still_refused_keeps_influxdbs_new_reason() {
    let influx = Influxd::start();
    influx.create_database("runs");
    influx.write("runs", &point(0));
    let dir = setup(&influx.url, "create_database = false");
    let conflict = letter(
        &dir,
        1,
        format!("{MEASUREMENT},letter=1 v=\"text\" 1700000000001\n").as_bytes(),
    );
    let missing = letter(
        &dir,
        2,
        format!(
            "# metrics-consumer target {{\"database\":\"gone\",\"retention_policy\":\"\",\"precision\":\"ns\"}}\n{MEASUREMENT},letter=2 v=2 1700000000002000000\n"
        )
        .as_bytes(),
    );
    let good = letter(&dir, 3, point(3).as_bytes());
    let lines_before: Vec<Vec<u8>> = [&conflict, &missing]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();

    let (code, out, err) = replay(&dir);
    for (path, lines) in [&conflict, &missing].iter().zip(&lines_before) {
        assert_eq!(
            &fs::read(path).unwrap(),
            lines,
            "the lines are kept: {out}{err}"
        );
    }
    let reason = |path: &Path| fs::read_to_string(path.with_extension("error")).unwrap();
    let why = reason(&conflict);
    assert!(
        why.contains("field type conflict") && !why.contains("an old reason"),
        "{why}"
    );
    let why = reason(&missing);
    assert!(
        why.contains("database not found") && !why.contains("an old reason"),
        "{why}"
    );
    assert!(!good.exists() && !good.with_extension("error").exists());
    assert_eq!(stored(&influx), ["0", "3"]);
    let refused: Value = influx.query("gone", "SHOW MEASUREMENTS");
    assert!(refused["results"][0]["series"].is_null(), "{refused}");
    for path in [&conflict, &missing] {
        assert!(err.contains(&name(path)), "names {}: {err}", path.display());
    }
    assert!(
        out.contains("1 dead letters delivered, 2 still refused, 0 unreadable, 0 left untried"),
        "{out}"
    );
    assert_eq!(code, Some(EXIT_STILL_REFUSED), "{out}{err}");
}

/// A letter whose reason is a directory (so neither its removal nor a new reason can be
/// written): letter 1 is delivered but cannot be removed, and the replay says it will be sent
/// again (which stores nothing twice) and goes on; letter 2 is refused again and its new
/// reason cannot be written, which is said; letter 3 is delivered and removed.
#[test]
fn a_letter_whose_files_cannot_be_changed_is_named_and_the_others_go_on() {
    let influx = Influxd::start();
    influx.create_database("runs");
    influx.write("runs", &point(0));
    let dir = setup(&influx.url, "");
    let stuck = letter(&dir, 1, point(1).as_bytes());
    let refused = letter(
        &dir,
        2,
        format!("{MEASUREMENT},letter=2 v=\"text\" 1700000000002\n").as_bytes(),
    );
    for path in [&stuck, &refused] {
        let reason = path.with_extension("error");
        fs::remove_file(&reason).unwrap();
        fs::create_dir(&reason).unwrap();
        fs::write(reason.join("in-the-way"), "x").unwrap();
    }
    let last = letter(&dir, 3, point(3).as_bytes());

    let (code, out, err) = replay(&dir);
    assert!(
        stuck.exists() && refused.exists(),
        "the letters whose files could not be changed are kept: {out}{err}"
    );
    assert!(!last.exists());
    assert_eq!(stored(&influx), ["0", "1", "3"]);
    assert!(
        out.contains("2 dead letters delivered, 1 still refused, 0 unreadable, 0 left untried"),
        "{out}"
    );
    let about = |path: &Path| {
        err.lines()
            .find(|l| l.contains(&name(path)))
            .unwrap_or_else(|| panic!("names {}: {err}", path.display()))
            .to_string()
    };
    let line = about(&stuck);
    assert!(
        line.contains("delivered") && line.contains("sent again") && line.contains("overwrite"),
        "{line}"
    );
    let line = about(&refused);
    assert!(
        line.contains("field type conflict") && line.contains("could not be recorded"),
        "{line}"
    );
    assert_eq!(code, Some(EXIT_FILES), "{out}{err}");
}

/// Letters named by the token that wrote them (`-<token>` before the extension, bytes other
/// than letters, digits, `.`, `_` and `-` as `%XX`, as the gateway names them) are listed,
/// delivered and removed as any other; one InfluxDB refuses again keeps its name and takes
/// InfluxDB's new reason.
#[test]
fn letters_named_by_their_token_are_replayed_as_any_other() {
    let influx = Influxd::start();
    let dir = setup(&influx.url, "");
    let named = |record: u64, token: &str, lines: &str| {
        let path = dir.join(format!("data/dead-letter/{record:020}-0-1-{token}.lp"));
        fs::write(path.with_extension("error"), OLD_REASON).unwrap();
        fs::write(&path, lines).unwrap();
        path
    };
    let first = named(1, "ci-runner.eu", &point(1));
    let second = named(2, "tokens.txt%3A3", &point(2));
    // `v` is a float in InfluxDB once the letters before it are delivered.
    let conflict = format!(
        "{MEASUREMENT},letter=3 v=\"text\" {}\n",
        1_700_000_000_003u64
    );
    let third = named(3, "secrets%2Ftokens.txt%3A4", &conflict);

    let (code, out, err) = replay(&dir);
    assert_eq!(stored(&influx), ["1", "2"], "{out}{err}");
    assert!(!first.exists() && !second.exists(), "{:?}", files(&dir));
    assert_eq!(
        fs::read_to_string(&third).unwrap(),
        conflict,
        "kept under its name"
    );
    let reason = fs::read_to_string(third.with_extension("error")).unwrap();
    assert_ne!(reason, OLD_REASON);
    assert!(reason.contains("field type conflict"), "{reason}");
    assert!(
        out.contains("2 dead letters delivered, 1 still refused, 0 unreadable, 0 left untried"),
        "{out}"
    );
    assert_eq!(code, Some(EXIT_STILL_REFUSED), "{out}{err}");
}
