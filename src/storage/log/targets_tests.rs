//! Attacks on the log's records that name a target of their own (kind 3, segment version 2):
//! hostile payloads, version-1 segments written by hand, and targets across a restart.

use super::tests::read_all;
use super::*;
use crate::storage::record::{HEADER_BYTES, Parts, Payload};
use crate::storage::tests::Dir;
use std::fs;
use uuid::Uuid;

fn open(dir: &Dir) -> (Log, Position, Opened) {
    let handle = DirHandle::open(dir.path()).unwrap();
    Log::open_sized(handle, 1 << 30, false, 1 << 20, &mut |_| {}).unwrap()
}

fn unit(lines: &str) -> [Unit<'_>; 1] {
    [Unit {
        run: Uuid::nil(),
        points: 1,
        lines,
    }]
}

/// Bytes of a version-1 segment as the previous program wrote it: two request records.
fn version_1_segment() -> Vec<u8> {
    let mut bytes = b"MCLOG\0\x01\0".to_vec();
    record::encode(&mut bytes, 1, &Parts::of(Kind::Request, &unit("m v=1 1\n")));
    record::encode(&mut bytes, 2, &Parts::of(Kind::Request, &unit("m v=2 2\n")));
    bytes
}

/// A tiny xorshift, so the hostile payloads are the same at every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Kind-3 payloads damaged at random (bytes flipped, lengths set to huge values, cut short,
/// kinds swapped) never panic, and whatever decodes refers only to bytes of the payload.
#[test]
fn hostile_kind_3_payloads_never_panic_nor_reserve_beyond_their_bytes() {
    let target = Target {
        database: "k6",
        retention_policy: "week",
    };
    let mut good = Vec::new();
    let units = unit("m v=1 1\n");
    record::encode(
        &mut good,
        1,
        &Parts {
            client: Some("team-a"),
            target: Some(target),
            ..Parts::of(Kind::Write, &units)
        },
    );
    let payload = good[HEADER_BYTES..].to_vec();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200_000 {
        let mut p = payload.clone();
        for _ in 0..1 + next(&mut state) % 4 {
            let at = (next(&mut state) as usize) % p.len();
            match next(&mut state) % 4 {
                0 => p[at] = next(&mut state) as u8,
                1 if at + 4 <= p.len() => {
                    p[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                }
                2 => p.truncate(at),
                // Kinds, flagged or not.
                _ => p[0] = (next(&mut state) % 5) as u8 | (next(&mut state) as u8 & 0x80),
            }
            if p.is_empty() {
                break;
            }
        }
        for version in [2, 3] {
            let Ok(Payload {
                target,
                units,
                client,
                ..
            }) = record::decode(&p, version)
            else {
                continue;
            };
            assert!(units.len() <= p.len() / 24, "{} units", units.len());
            assert!(client.is_none_or(|c| c.len() <= p.len()));
            if let Some(t) = target {
                assert!(t.database.len() + t.retention_policy.len() <= p.len());
            }
        }
    }
    // Every length at its largest, one at a time.
    for at in 0..payload.len().saturating_sub(3) {
        let mut p = payload.clone();
        p[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = record::decode(&p, 3);
    }
}

/// A version-1 segment, written by hand as the previous program did, is read: its records are
/// found at start and read back, without a target.
#[test]
fn a_version_1_segment_written_by_hand_is_read() {
    let dir = Dir::new("targets-v1-read");
    fs::write(dir.path().join(segment_name(1)), version_1_segment()).unwrap();
    let (log, mut at, opened) = open(&dir);
    assert_eq!(opened.records, 2);
    assert!(opened.torn.is_none());
    let read = read_all(&log, &mut at);
    assert_eq!(read.len(), 2);
    assert_eq!(read[1].lines(&read[1].units[0]), "m v=2 2\n");
    assert!(read.iter().all(|r| r.target.is_none()));
}

/// A version-5 header stops the start, naming the file and the versions this program reads.
#[test]
fn a_version_5_segment_is_refused_with_a_clear_message() {
    let dir = Dir::new("targets-v5");
    let mut bytes = version_1_segment();
    bytes[6] = 5;
    fs::write(dir.path().join(segment_name(1)), bytes).unwrap();
    let handle = DirHandle::open(dir.path()).unwrap();
    let Err(e) = Log::open_sized(handle, 1 << 30, false, 1 << 20, &mut |_| {}) else {
        panic!("a version-5 segment was opened");
    };
    let text = e.to_string();
    assert!(text.contains(&segment_name(1)), "{text}");
    assert!(text.contains("version 5"), "{text}");
    assert!(text.contains("versions 1 to 4"), "{text}");
}

/// The last segment of a version-1 log is written on after an upgrade. A record of kind 3
/// must not land under a header that says version 1: a program that reads only version 1
/// (the one before, started again after a downgrade) trusts the header, meets a kind it does
/// not know, and takes the record for a write torn by a crash — it cuts acknowledged points
/// off the log — instead of stopping with "another version".
#[test]
fn a_write_record_never_lands_in_a_segment_whose_header_says_version_1() {
    let dir = Dir::new("targets-v1-append");
    fs::write(dir.path().join(segment_name(1)), version_1_segment()).unwrap();
    let (log, mut at, _) = open(&dir);
    let target = Target {
        database: "k6",
        retention_policy: "",
    };
    let ticket = log
        .append_write(target, &unit("http_reqs v=1 1700000000000000000\n"), None)
        .unwrap();
    assert_eq!(log.wait(ticket).unwrap(), 3);
    let read = read_all(&log, &mut at);
    assert_eq!(read.len(), 3);
    assert_eq!(
        read[2].target.as_ref().map(|t| t.database.as_str()),
        Some("k6")
    );
    drop(log);
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        let mut pos = SEGMENT_HEADER_BYTES;
        while let Frame::Record { len, .. } = record::frame(&bytes[pos..]) {
            let version = u16::from_le_bytes([bytes[6], bytes[7]]);
            let payload = record::decode(&bytes[pos + HEADER_BYTES..pos + len], version).unwrap();
            if payload.kind == Kind::Write {
                assert_ne!(
                    &bytes[..SEGMENT_HEADER_BYTES],
                    b"MCLOG\0\x01\0",
                    "{}: a kind-3 record at offset {pos} under a version-1 header",
                    path.display()
                );
            }
            pos += len;
        }
    }
}

/// Targets with hostile names (quotes, newlines, '#', empty, long) survive a restart, and the
/// records between them keep none.
#[test]
fn targets_survive_a_restart_mixed_with_records_of_none() {
    let dir = Dir::new("targets-restart");
    let long = "d".repeat(10_000);
    let names: [(&str, &str); 4] = [
        ("k6 \"runs\"", ""),
        ("a\nb#c", "rp \"x\"\n"),
        ("", ""),
        (long.as_str(), "week"),
    ];
    {
        let (log, _, _) = open(&dir);
        for (i, (db, rp)) in names.iter().enumerate() {
            let lines = format!("m v={i} {i}\n");
            let t = log
                .append_write(
                    Target {
                        database: db,
                        retention_policy: rp,
                    },
                    &unit(&lines),
                    None,
                )
                .unwrap();
            log.wait(t).unwrap();
            let t = log
                .append(Kind::Request, 0, b"", &unit("own v=1 1\n"), None)
                .unwrap();
            log.wait(t).unwrap();
        }
        log.close();
    }
    let (log, mut at, opened) = open(&dir);
    assert_eq!(opened.records, 8);
    let read = read_all(&log, &mut at);
    for (i, (db, rp)) in names.iter().enumerate() {
        let t = read[2 * i].target.as_ref().expect("a target");
        assert_eq!(
            (t.database.as_str(), t.retention_policy.as_str()),
            (*db, *rp)
        );
        assert_eq!(read[2 * i].kind, Kind::Write);
        assert!(read[2 * i + 1].target.is_none());
    }
}
