//! Tests of the series budget over real files under a temporary `storage.dir` (a small tmpfs
//! for the full disk).

use std::fs;
use std::sync::{Arc, Barrier};

use super::*;
use crate::storage::tests::{Dir, SmallDisk, fill, root};

fn open(dir: &Dir) -> SeriesBudget {
    SeriesBudget::open(&root(dir)).unwrap()
}

/// Distinct series hashes `from..to`, as lines of measurement `m` with a tag `n`.
fn series(from: u64, to: u64) -> Vec<u64> {
    (from..to)
        .map(|n| series_hash("m", &[("n".to_string(), n.to_string())]))
        .collect()
}

fn entries_on_disk(dir: &Dir) -> u64 {
    let len = fs::metadata(dir.path().join(SERIES_FILE)).unwrap().len();
    assert_eq!((len - HEADER_BYTES) % ENTRY_BYTES, 0, "whole entries only");
    (len - HEADER_BYTES) / ENTRY_BYTES
}

#[test]
fn the_series_hash_is_fnv1a_over_the_documented_form_and_ignores_tag_order() {
    // The file holds these values: they must never change between versions.
    let mut form = Vec::new();
    for s in ["cpu", "host", "a", "region", "eu"] {
        form.extend_from_slice(&(s.len() as u32).to_le_bytes());
        form.extend_from_slice(s.as_bytes());
    }
    let expected = fnv1a(FNV_OFFSET, &form);
    let tags = |t: &[(&str, &str)]| -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let sorted = tags(&[("host", "a"), ("region", "eu")]);
    assert_eq!(series_hash("cpu", &sorted), expected);
    assert_eq!(
        series_hash("cpu", &tags(&[("region", "eu"), ("host", "a")])),
        expected
    );
    // FNV-1a 64's published value for "a", to pin the function itself.
    assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    // The lengths keep names that run together apart.
    assert_ne!(
        series_hash("cpu", &tags(&[("ab", "c")])),
        series_hash("cpu", &tags(&[("a", "bc")]))
    );
    assert_ne!(
        series_hash::<String>("cpu", &[]),
        series_hash("cp", &tags(&[("u", "")]))
    );
    assert_ne!(book_hash("ab", "c"), book_hash("a", "bc"));
}

#[test]
fn new_series_pass_up_to_max_and_known_ones_pass_when_the_book_is_full() {
    let dir = Dir::new("series-max");
    let budget = open(&dir);
    let first = series(0, 3);
    let a = budget.admit("k6", "db", 3, &first).unwrap();
    assert_eq!(a.passed, vec![true; 3]);
    assert_eq!(a.taken, 3);
    // Full: a new series is refused, the known ones (and a line repeating one) pass.
    let more = [first[0], series(3, 4)[0], first[2], first[0]];
    let b = budget.admit("k6", "db", 3, &more).unwrap();
    assert_eq!(b.passed, vec![true, false, true, true]);
    assert_eq!((b.taken, b.refused()), (0, 1));
    assert_eq!(budget.count("k6", "db"), 3);
    assert_eq!(entries_on_disk(&dir), 3);
}

#[test]
fn a_new_series_on_many_lines_of_one_write_is_taken_once() {
    let dir = Dir::new("series-repeat");
    let budget = open(&dir);
    let s = series(0, 2);
    let a = budget
        .admit("k6", "db", 2, &[s[0], s[0], s[1], s[0]])
        .unwrap();
    assert_eq!(a.passed, vec![true; 4]);
    assert_eq!(a.taken, 2);
    assert_eq!(entries_on_disk(&dir), 2);
}

#[test]
fn each_client_and_database_has_a_budget_of_its_own() {
    let dir = Dir::new("series-books");
    let budget = open(&dir);
    let s = series(0, 2);
    assert_eq!(budget.admit("k6", "db", 2, &s).unwrap().taken, 2);
    // The same series in another database, and for another client, are new there.
    assert_eq!(budget.admit("k6", "other", 2, &s).unwrap().taken, 2);
    assert_eq!(budget.admit("jmeter", "db", 2, &s).unwrap().taken, 2);
    // A full book does not fill another.
    assert!(!budget.admit("k6", "db", 2, &series(2, 3)).unwrap().passed[0]);
    assert!(
        budget
            .admit("jmeter", "x", 2, &series(2, 3))
            .unwrap()
            .passed[0]
    );
    assert_eq!(budget.count("k6", "db"), 2);
    assert_eq!(budget.count("k6", "other"), 2);
    assert_eq!(budget.count("jmeter", "x"), 1);
    assert_eq!(budget.count("nobody", "db"), 0);
}

#[test]
fn concurrent_admits_never_pass_more_than_max() {
    let dir = Dir::new("series-threads");
    let budget = Arc::new(open(&dir));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (budget, barrier) = (Arc::clone(&budget), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                // Ten writes of five series each, none shared with another thread.
                (0..10)
                    .map(|w| {
                        let from = t * 1000 + w * 5;
                        let a = budget.admit("k6", "db", 100, &series(from, from + 5));
                        a.unwrap().passed.iter().filter(|p| **p).count()
                    })
                    .sum::<usize>()
            })
        })
        .collect();
    let passed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(passed, 100, "400 new series offered, 100 room");
    assert_eq!(budget.count("k6", "db"), 100);
    assert_eq!(entries_on_disk(&dir), 100);
}

#[test]
fn concurrent_writes_of_the_same_new_series_take_it_once() {
    let dir = Dir::new("series-same");
    let budget = Arc::new(open(&dir));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (budget, barrier) = (Arc::clone(&budget), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                budget.admit("k6", "db", 10, &series(0, 10)).unwrap()
            })
        })
        .collect();
    let admitted: Vec<Admitted> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(admitted.iter().all(|a| a.passed == vec![true; 10]));
    assert_eq!(admitted.iter().map(|a| a.taken).sum::<u64>(), 10);
    assert_eq!(budget.count("k6", "db"), 10);
    assert_eq!(entries_on_disk(&dir), 10, "each series written once");
}

#[test]
fn a_restart_keeps_every_book() {
    let dir = Dir::new("series-reopen");
    {
        let budget = open(&dir);
        budget.admit("k6", "db", 3, &series(0, 3)).unwrap();
        budget.admit("k6", "other", 3, &series(0, 1)).unwrap();
    }
    let budget = open(&dir);
    assert_eq!(budget.count("k6", "db"), 3);
    assert_eq!(budget.count("k6", "other"), 1);
    // Still full after the restart; the known series pass.
    let a = budget.admit("k6", "db", 3, &series(0, 4)).unwrap();
    assert_eq!(a.passed, vec![true, true, true, false]);
    assert_eq!(a.taken, 0);
}

#[test]
fn a_torn_tail_is_left_out_and_cut_off() {
    let dir = Dir::new("series-torn");
    open(&dir).admit("k6", "db", 10, &series(0, 2)).unwrap();
    let path = dir.path().join(SERIES_FILE);
    let whole = fs::metadata(&path).unwrap().len();
    // A crash in the middle of the next entry, and a block of zeros a filesystem can show
    // after one.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 16]);
    bytes.extend_from_slice(&book_hash("k6", "db").to_le_bytes()[..5]);
    fs::write(&path, &bytes).unwrap();
    let budget = open(&dir);
    assert_eq!(budget.count("k6", "db"), 2);
    assert_eq!(fs::metadata(&path).unwrap().len(), whole + 16, "cut off");
    // The next entry goes after the whole ones and reads back.
    budget.admit("k6", "db", 10, &series(2, 3)).unwrap();
    drop(budget);
    assert_eq!(open(&dir).count("k6", "db"), 3);
}

#[test]
fn a_file_that_is_not_the_budget_stops_the_start_naming_it() {
    let dir = Dir::new("series-foreign");
    let path = dir.path().join(SERIES_FILE);
    fs::write(&path, "host,region=eu value=1\n").unwrap();
    let err = SeriesBudget::open(&root(&dir)).unwrap_err();
    assert!(matches!(err, SeriesError::Foreign { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("move it away"),
        "{message}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        b"host,region=eu value=1\n",
        "left as it was"
    );
    let mut newer = b"MCSER\0".to_vec();
    newer.extend_from_slice(&2u16.to_le_bytes());
    fs::write(&path, &newer).unwrap();
    let err = SeriesBudget::open(&root(&dir)).unwrap_err().to_string();
    assert!(
        err.contains("version 2") && err.contains("reads version 1"),
        "{err}"
    );
}

#[test]
fn the_file_is_never_reached_through_a_link() {
    let dir = Dir::new("series-link");
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, "precious").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join(SERIES_FILE)).unwrap();
    assert!(SeriesBudget::open(&root(&dir)).is_err());
    assert_eq!(fs::read(&elsewhere).unwrap(), b"precious");
}

#[test]
fn a_failed_write_takes_its_new_series_back() {
    let dir = Dir::new("series-fail");
    let budget = open(&dir);
    budget.admit("k6", "db", 3, &series(0, 1)).unwrap();
    budget.fail_next_writes(1);
    let err = budget.admit("k6", "db", 3, &series(0, 3)).unwrap_err();
    assert!(
        err.to_string().contains("a failure the test asked for"),
        "{err}"
    );
    assert_eq!(budget.count("k6", "db"), 1, "taken back");
    assert_eq!(entries_on_disk(&dir), 1, "cut back off the file");
    // The room is there again for the next write.
    let a = budget.admit("k6", "db", 3, &series(1, 4)).unwrap();
    assert_eq!(a.passed, vec![true, true, false]);
    drop(budget);
    assert_eq!(open(&dir).count("k6", "db"), 3);
}

#[test]
fn of_two_writes_racing_with_a_new_series_whose_first_write_fails_the_other_takes_it() {
    let dir = Dir::new("series-race-fail");
    let budget = Arc::new(open(&dir));
    budget.fail_next_writes(1);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (budget, barrier) = (Arc::clone(&budget), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                budget.admit("k6", "db", 10, &series(0, 5))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    let ok = results.iter().find_map(|r| r.as_ref().ok()).unwrap();
    assert_eq!((ok.passed.clone(), ok.taken), (vec![true; 5], 5));
    assert_eq!(budget.count("k6", "db"), 5);
    assert_eq!(entries_on_disk(&dir), 5);
}

#[test]
fn a_full_disk_refuses_the_write_and_takes_its_series_back() {
    let disk = SmallDisk::new("series-full", "1m");
    let budget = SeriesBudget::open(&root(&disk.0)).unwrap();
    // 255 entries fill the file's first page; the next write needs a page the disk lacks.
    budget.admit("k6", "db", 1000, &series(0, 255)).unwrap();
    fill(disk.0.path());
    let err = budget
        .admit("k6", "db", 1000, &series(255, 300))
        .unwrap_err();
    assert!(
        matches!(&err, SeriesError::Io { error, .. } if crate::storage::is_disk_full(error)),
        "{err}"
    );
    assert_eq!(budget.count("k6", "db"), 255);
    // Known series still pass on the full disk: they write nothing.
    assert_eq!(
        budget
            .admit("k6", "db", 1000, &series(0, 255))
            .unwrap()
            .passed,
        vec![true; 255]
    );
    fs::remove_file(disk.0.path().join("filler")).unwrap();
    assert_eq!(
        budget
            .admit("k6", "db", 1000, &series(255, 300))
            .unwrap()
            .taken,
        45
    );
    drop(budget);
    assert_eq!(
        SeriesBudget::open(&root(&disk.0))
            .unwrap()
            .count("k6", "db"),
        300
    );
}

#[test]
fn a_start_makes_the_file_empty_and_the_first_write_puts_the_header_before_its_entries() {
    let dir = Dir::new("series-new");
    let path = dir.path().join(SERIES_FILE);
    drop(open(&dir));
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        0,
        "no room needed at start"
    );
    // A first write cut short in its header: nothing was acknowledged.
    fs::write(&path, b"MCS").unwrap();
    let budget = open(&dir);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0, "cut off");
    budget.admit("k6", "db", 10, &series(0, 1)).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"MCSER\0\x01\0");
    assert_eq!(bytes.len(), 8 + 16);
    drop(budget);
    assert_eq!(open(&dir).count("k6", "db"), 1);
}
