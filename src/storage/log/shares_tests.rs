//! Each client's share of the log: enforced at append while the log has room, given back when
//! a write fails and when the deliverer marks records delivered, and counted again at start
//! from the records not yet delivered (version 3 segments), older segments counting against
//! the whole log only.

use super::tests::read_all;
use super::*;
use crate::storage::record::HEADER_BYTES;
use crate::storage::tests::Dir;
use std::fs;
use uuid::Uuid;

fn open_with(dir: &Dir, limit: u64) -> (Log, Position, Opened) {
    let handle = DirHandle::open(dir.path()).unwrap();
    Log::open_sized(handle, limit, false, 1 << 20, &mut |_| {}).unwrap()
}

/// 1 KiB of points of one line.
fn kib(n: u64) -> String {
    format!("m,n=n{n} v=\"{}\" {n}\n", "x".repeat(1000))
}

fn units(lines: &str) -> [Unit<'_>; 1] {
    [Unit {
        run: Uuid::nil(),
        points: 1,
        lines,
    }]
}

fn share(client: &str, limit: u64) -> Option<Share<'_>> {
    Some(Share { client, limit })
}

/// Appends 1 KiB of points for `client` (with `limit` as its share) and waits for it.
fn put(log: &Log, n: u64, client: &str, limit: u64) -> Result<u64, LogError> {
    let lines = kib(n);
    let ticket = log.append(Kind::Request, 0, b"", &units(&lines), share(client, limit))?;
    log.wait(ticket)
}

/// Bytes one record of [`put`] takes for `client`.
fn record_bytes(client: &str) -> u64 {
    let lines = kib(1);
    let units = units(&lines);
    record::encoded_len(&Parts {
        client: Some(client),
        ..Parts::of(Kind::Request, &units)
    }) as u64
}

/// A client at its share is refused, naming itself and its share, with nothing queued; another
/// client and records without a client still go in; a record without points (a progress) may
/// go the headroom further.
#[test]
fn a_client_past_its_share_is_refused_and_the_others_write_on() {
    let dir = Dir::new("shares-enforced");
    let (log, _, _) = open_with(&dir, 1 << 30);
    let one = record_bytes("a");
    let limit = 3 * one + one / 2;
    for n in 1..=3 {
        put(&log, n, "a", limit).unwrap();
    }
    assert_eq!(log.undelivered_of("a"), 3 * one);
    let (records, bytes) = log.undelivered();
    let err = put(&log, 4, "a", limit).unwrap_err();
    assert!(err.is_share_full() && !err.is_spool_full(), "{err}");
    assert!(
        matches!(&err, LogError::ShareFull { client, bytes, limit: l } if client == "a" && *bytes == 3 * one && *l == limit),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"a\"")
            && text.contains(&limit.to_string())
            && text.contains("[[auth.token]] max_spool_bytes"),
        "{text}"
    );
    assert_eq!(log.undelivered(), (records, bytes), "nothing was queued");
    assert_eq!(log.undelivered_of("a"), 3 * one);
    // Another client, and a record of no client, are not held back by a's share.
    for n in 1..=3 {
        put(&log, n, "b", limit).unwrap();
    }
    let lines = kib(9);
    let t = log
        .append(Kind::Request, 0, b"", &units(&lines), None)
        .unwrap();
    log.wait(t).unwrap();
    assert_eq!(log.undelivered_of("b"), 3 * one);
    // A progress (a change without points) of a still goes in: the table may change.
    let t = log
        .append(Kind::Request, 7, b"{\"seq\":7}\n", &[], share("a", limit))
        .unwrap();
    log.wait(t).unwrap();
}

/// When the whole log is at its hard bound (`storage.max_spool_bytes` and the headroom), that is
/// what a client is told, whatever its share says; a client without a share is held to the
/// bound itself.
#[test]
fn a_full_log_is_spool_full_even_for_a_client_within_its_share() {
    let dir = Dir::new("shares-global");
    let one = record_bytes("a");
    let (log, _, _) = open_with(&dir, 2 * one);
    // Shares are held to the hard bound alone: a client within its share writes past the
    // bound of points while the headroom lasts.
    put(&log, 1, "a", 1 << 40).unwrap();
    put(&log, 2, "b", 1 << 40).unwrap();
    put(&log, 3, "a", 1 << 40).unwrap();
    // Without a share, the bound of points itself.
    let lines = kib(1);
    let err = log
        .append(Kind::Request, 0, b"", &units(&lines), None)
        .unwrap_err();
    assert!(err.is_spool_full(), "{err}");
    // Past the headroom, everyone is told the log is full.
    let big = format!("m v=\"{}\" 1\n", "x".repeat(4 << 20));
    let mut last = Ok(0);
    for _ in 0..8 {
        last = log
            .append(Kind::Request, 0, b"", &units(&big), share("a", 1 << 40))
            .and_then(|t| log.wait(t));
        if last.is_err() {
            break;
        }
    }
    let err = last.unwrap_err();
    assert!(err.is_spool_full(), "{err}");
    assert!(log.undelivered_bytes() <= 2 * one + HEADROOM_BYTES);
}

/// A client's progress past its share takes only its part of the headroom, and never the room
/// another client's share keeps for points.
#[test]
fn progress_past_a_share_never_takes_another_client_s_room() {
    let dir = Dir::new("shares-headroom");
    let limit = 2 << 20;
    let (log, _, _) = open_with(&dir, limit);
    let half = limit / 2;
    // a fills its share with points, then keeps sending progress until refused.
    while put(&log, 60, "a", half).is_ok() {}
    // A progress's change, 60 KiB (its journal line: the run's fields).
    let change = vec![b'x'; 60 << 10];
    let mut held_past = 0;
    loop {
        let r = log
            .append(Kind::Request, 1, &change, &[], share("a", half))
            .and_then(|t| log.wait(t));
        match r {
            Ok(_) => held_past += 1,
            Err(e) => {
                assert!(e.is_share_full(), "{e}");
                break;
            }
        }
        assert!(held_past < 10_000, "never refused");
    }
    assert!(
        log.undelivered_of("a") <= half + HEADROOM_BYTES / 2 + (64 << 10),
        "a holds {}",
        log.undelivered_of("a")
    );
    // b still writes points within its share.
    put(&log, 60, "b", half).unwrap();
}

/// A client with nothing waiting may write one record larger than its share: a share smaller
/// than a large commit does not shut its client out for good.
#[test]
fn a_client_with_nothing_waiting_may_write_one_record_larger_than_its_share() {
    let dir = Dir::new("shares-one-record");
    let (log, _, _) = open_with(&dir, 1 << 30);
    put(&log, 1, "a", 10).unwrap();
    assert!(put(&log, 2, "a", 10).unwrap_err().is_share_full());
}

/// What the deliverer marks delivered goes back to each client's share.
#[test]
fn delivered_records_give_their_bytes_back_to_their_clients() {
    let dir = Dir::new("shares-delivered");
    let (log, mut at, _) = open_with(&dir, 1 << 30);
    let one = record_bytes("a");
    let limit = 2 * one;
    put(&log, 1, "a", limit).unwrap();
    put(&log, 2, "b", limit).unwrap();
    put(&log, 3, "a", limit).unwrap();
    assert!(put(&log, 4, "a", limit).unwrap_err().is_share_full());
    let read = read_all(&log, &mut at);
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].client.as_deref(), Some("a"));
    assert_eq!(read[1].client.as_deref(), Some("b"));
    // The first two delivered: a gets one record back, b all of it.
    log.delivered(read[1].seq, &read[..2]);
    assert_eq!(log.undelivered_of("a"), one);
    assert_eq!(log.undelivered_of("b"), 0);
    put(&log, 4, "a", limit).unwrap();
    log.delivered(read[2].seq, &read[2..]);
    assert_eq!(log.undelivered_of("a"), one, "the fourth one waits");
    let rest = read_all(&log, &mut at);
    log.delivered(rest[0].seq, &rest);
    assert_eq!(log.undelivered_of("a"), 0);
    assert_eq!(log.undelivered(), (0, 0));
}

/// A failed write gives the bytes of its records back to their clients, as to the log.
#[test]
fn a_failed_write_gives_the_clients_bytes_back() {
    let dir = Dir::new("shares-failed");
    let (log, _, _) = open_with(&dir, 1 << 30);
    let one = record_bytes("a");
    put(&log, 1, "a", 2 * one).unwrap();
    log.fail_next_writes(1);
    let err = put(&log, 2, "a", 2 * one).unwrap_err();
    assert!(!err.is_share_full(), "{err}");
    assert_eq!(log.undelivered_of("a"), one);
    // Failed again, and its cut-back too (the log broken until the next append mends it):
    // its bytes go back as well.
    log.fail_next_writes(1);
    log.fail_next_undos(1);
    assert!(put(&log, 2, "a", 2 * one).is_err());
    assert_eq!(log.undelivered_of("a"), one);
    put(&log, 3, "a", 2 * one).unwrap();
    assert_eq!(log.undelivered_of("a"), 2 * one);
}

/// A start counts each client's records after the delivered mark again: a client at its share
/// before a restart is still refused after it.
#[test]
fn a_start_counts_each_clients_undelivered_records_again() {
    let dir = Dir::new("shares-restart");
    let one = record_bytes("a");
    let limit = 3 * one;
    {
        let (log, mut at, _) = open_with(&dir, 1 << 30);
        for n in 1..=4 {
            put(&log, n, "a", 4 * one).unwrap();
            put(&log, n, "b", 4 * one).unwrap();
        }
        let t = log
            .append(Kind::Heartbeats, 0, b"", &units("hb v=1 1\n"), None)
            .unwrap();
        log.wait(t).unwrap();
        // The first two records (one of a, one of b) delivered and marked.
        let read = read_all(&log, &mut at);
        log.delivered(read[1].seq, &read[..2]);
        log.save_delivered();
    }
    let (log, _, opened) = open_with(&dir, 1 << 30);
    assert_eq!(opened.undelivered.0, 7);
    assert_eq!(log.undelivered_of("a"), 3 * one);
    assert_eq!(log.undelivered_of("b"), 3 * one);
    assert!(put(&log, 5, "a", limit).unwrap_err().is_share_full());
    put(&log, 5, "c", limit).unwrap();
}

/// Bytes of a version-2 segment as the program before wrote it: records of no client.
fn version_2_segment(records: u64) -> Vec<u8> {
    let mut bytes = b"MCLOG\0\x02\0".to_vec();
    for n in 1..=records {
        let lines = kib(n);
        record::encode(&mut bytes, n, &Parts::of(Kind::Request, &units(&lines)));
    }
    bytes
}

/// A version-2 segment (no clients) opens: its records count against the whole log only, and
/// clients write on (in a new, version-3 segment).
#[test]
fn a_version_2_segment_opens_and_counts_against_the_whole_log_only() {
    let dir = Dir::new("shares-v2");
    let old = version_2_segment(3);
    fs::write(dir.path().join(segment_name(1)), &old).unwrap();
    let (log, mut at, opened) = open_with(&dir, 1 << 30);
    assert_eq!(
        opened.undelivered,
        (3, (old.len() - SEGMENT_HEADER_BYTES) as u64)
    );
    assert_eq!(log.undelivered_of("a"), 0);
    put(&log, 4, "a", 1 << 20).unwrap();
    let read = read_all(&log, &mut at);
    assert_eq!(read.len(), 4);
    assert!(read[..3].iter().all(|r| r.client.is_none()));
    assert_eq!(read[3].client.as_deref(), Some("a"));
    assert_eq!(
        fs::read(dir.path().join(segment_name(4))).unwrap()[..8],
        *b"MCLOG\0\x04\0",
        "a client's record begins a segment of the version this program writes"
    );
    drop(log);
    let (log, _, _) = open_with(&dir, 1 << 30);
    assert_eq!(log.undelivered_of("a"), read[3].bytes);
}

/// A record with a client inside a version-2 segment is damage (that version holds none): the
/// start stops, naming the file.
#[test]
fn a_record_with_a_client_in_a_version_2_segment_is_damage() {
    let dir = Dir::new("shares-v2-flagged");
    let mut bytes = version_2_segment(1);
    let lines = kib(2);
    let units = units(&lines);
    record::encode(
        &mut bytes,
        2,
        &Parts {
            client: Some("a"),
            ..Parts::of(Kind::Request, &units)
        },
    );
    record::encode(&mut bytes, 3, &Parts::of(Kind::Request, &units));
    fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
    let handle = DirHandle::open(dir.path()).unwrap();
    let Err(e) = Log::open_sized(handle, 1 << 30, false, 1 << 20, &mut |_| {}) else {
        panic!("a client's record in a version-2 segment was read");
    };
    assert!(matches!(&e, OpenError::Damaged { after_seq: 1, .. }), "{e}");
    assert!(e.to_string().contains("a version without clients"), "{e}");
    // The same record under a version-3 header reads.
    bytes[6] = 3;
    fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
    let (log, _, opened) = open_with(&dir, 1 << 30);
    assert_eq!(opened.records, 3);
    assert_eq!(
        log.undelivered_of("a"),
        (HEADER_BYTES + 1 + 4 + 1 + 8 + 4 + 4 + 24 + lines.len()) as u64
    );
}
