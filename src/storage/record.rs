//! The format of one record of the log, sans-I/O: bytes in, bytes out, no files, no clock.
//!
//! ```text
//! header (16 bytes, little-endian)
//!   len    u32   bytes of the payload that follows
//!   crc    u32   CRC-32 (IEEE) of the seq bytes and the payload
//!   seq    u64   the record's number; the log's records are numbered 1, 2, 3, … without gaps
//! payload
//!   kind     u8    1 = a request, 2 = heartbeats of a tick
//!   change   u64   the number of the last job-table change among the changes (0: none)
//!   changes  u32 length, then that many bytes: the job-table changes (journal lines), or none
//!   units    u32 count, then each unit:
//!     run    16 bytes   the run a heartbeat belongs to (all zeros for the other kinds)
//!     points u32        points in its lines
//!     lines  u32 length, then that many bytes of line protocol, each line ending in '\n'
//! ```
//!
//! A unit is what InfluxDB may refuse on its own: a request's points are one unit, a tick's are
//! one unit per run. A header of zeros marks the end of the records (the file is filled with
//! zeros ahead of them). This module only frames and checks; what a damaged frame means (the
//! torn tail of a crash, or damage inside the log) is for `log` to decide.

use uuid::Uuid;

/// Bytes of the header before each payload.
pub const HEADER_BYTES: usize = 16;

/// The largest payload accepted when reading: more than any record the gateway writes (a
/// request body is at most 64 MiB), less than a damaged length could make it allocate.
pub const MAX_PAYLOAD_BYTES: usize = 256 << 20;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The points and job-table change of one request (or a change alone: progress).
    Request = 1,
    /// Heartbeats of a tick, one unit per run, and the tick's job-table changes.
    Heartbeats = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Heartbeats),
            _ => None,
        }
    }
}

/// One unit of a record, borrowed from the caller or from the record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit<'a> {
    /// The run of a heartbeat; nil for a request's points.
    pub run: Uuid,
    /// Points in `lines`.
    pub points: u32,
    /// Line protocol, every line ending in '\n'.
    pub lines: &'a str,
}

/// A record's payload, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload<'a> {
    pub kind: Kind,
    /// The number of the last job-table change in `changes` (0: none).
    pub change_seq: u64,
    /// Job-table changes: journal lines, each ending in '\n' (empty: none).
    pub changes: &'a [u8],
    pub units: Vec<Unit<'a>>,
}

/// Bytes the record of `changes` and `units` takes, header included.
pub fn encoded_len(changes: &[u8], units: &[Unit<'_>]) -> usize {
    HEADER_BYTES
        + 1
        + 8
        + 4
        + changes.len()
        + 4
        + units
            .iter()
            .map(|u| 16 + 4 + 4 + u.lines.len())
            .sum::<usize>()
}

/// Appends the record to `out`. Lengths above `u32::MAX` cannot occur: a record is bounded by
/// the request body limit (64 MiB at most) or by `influxdb.max_write_bytes`.
pub fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    kind: Kind,
    change_seq: u64,
    changes: &[u8],
    units: &[Unit<'_>],
) {
    let start = out.len();
    out.reserve(encoded_len(changes, units));
    out.extend_from_slice(&[0; 8]); // len and crc, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&change_seq.to_le_bytes());
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    out.extend_from_slice(changes);
    out.extend_from_slice(&(units.len() as u32).to_le_bytes());
    for unit in units {
        out.extend_from_slice(unit.run.as_bytes());
        out.extend_from_slice(&unit.points.to_le_bytes());
        out.extend_from_slice(&(unit.lines.len() as u32).to_le_bytes());
        out.extend_from_slice(unit.lines.as_bytes());
    }
    let len = (out.len() - start - HEADER_BYTES) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Gives an encoded record (exactly its bytes) its number, and the checksum that goes with it.
/// The log numbers records as it writes them, so that a group that fails leaves no gap.
pub fn stamp(record: &mut [u8], seq: u64) {
    record[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&record[8..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What the bytes at the front of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole record that passes its checksum: its number, and the bytes it takes (header
    /// included); the payload is `buf[HEADER_BYTES..len]`.
    Record { seq: u64, len: usize },
    /// A header of zeros: the records end here.
    End,
    /// The buffer ends before the record does; `needed` bytes would hold it.
    Short { needed: usize },
    /// Not a record: a length beyond [`MAX_PAYLOAD_BYTES`], or a checksum that does not match.
    Damaged(Damage),
}

/// Why a frame is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The length in the header is impossible.
    Length(usize),
    /// The checksum does not match the bytes.
    Checksum,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Length(len) => write!(f, "its length ({len} bytes) is impossible"),
            Damage::Checksum => f.write_str("it fails its checksum"),
        }
    }
}

/// Reads the frame at the front of `buf`.
pub fn frame(buf: &[u8]) -> Frame {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        if buf.iter().all(|&b| b == 0) {
            return Frame::End;
        }
        return Frame::Short {
            needed: HEADER_BYTES,
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let len = u32_at(header, 0) as usize;
    if len == 0 || len > MAX_PAYLOAD_BYTES {
        return Frame::Damaged(Damage::Length(len));
    }
    let total = HEADER_BYTES + len;
    let Some(record) = buf.get(..total) else {
        return Frame::Short { needed: total };
    };
    if crc32fast::hash(&record[8..]) != u32_at(header, 4) {
        return Frame::Damaged(Damage::Checksum);
    }
    Frame::Record {
        seq: u64_at(header, 8),
        len: total,
    }
}

/// Why a payload that passed its checksum does not decode: a record this program did not
/// write, or a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPayload(&'static str);

impl std::fmt::Display for BadPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its payload does not decode ({})", self.0)
    }
}

/// Decodes the payload of a record (`buf[HEADER_BYTES..len]` of a [`Frame::Record`]).
pub fn decode(payload: &[u8]) -> Result<Payload<'_>, BadPayload> {
    let mut at = 0;
    let kind = payload
        .first()
        .copied()
        .and_then(Kind::from_byte)
        .ok_or(BadPayload("unknown kind"))?;
    at += 1;
    let change_seq = payload
        .get(at..at + 8)
        .map(|b| u64_at(b, 0))
        .ok_or(BadPayload("the change number is cut short"))?;
    at += 8;
    let changes = take(payload, &mut at)?;
    let count = read_u32(payload, &mut at)? as usize;
    // Each unit takes at least 24 bytes, which bounds what a count can make us reserve.
    if count > payload.len() / 24 {
        return Err(BadPayload("more units than bytes"));
    }
    let mut units = Vec::with_capacity(count);
    for _ in 0..count {
        let run = payload
            .get(at..at + 16)
            .and_then(|b| Uuid::from_slice(b).ok())
            .ok_or(BadPayload("a unit is cut short"))?;
        at += 16;
        let points = read_u32(payload, &mut at)?;
        let lines = std::str::from_utf8(take(payload, &mut at)?)
            .map_err(|_| BadPayload("lines that are not UTF-8"))?;
        units.push(Unit { run, points, lines });
    }
    if at != payload.len() {
        return Err(BadPayload("bytes after the last unit"));
    }
    Ok(Payload {
        kind,
        change_seq,
        changes,
        units,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn read_u32(b: &[u8], at: &mut usize) -> Result<u32, BadPayload> {
    if b.len() < *at + 4 {
        return Err(BadPayload("a length is cut short"));
    }
    let v = u32_at(b, *at);
    *at += 4;
    Ok(v)
}

/// A length-prefixed run of bytes.
fn take<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8], BadPayload> {
    let len = read_u32(b, at)? as usize;
    let bytes = b.get(*at..*at + len).ok_or(BadPayload("bytes cut short"))?;
    *at += len;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let units = [
            Unit {
                run: Uuid::from_u128(7),
                points: 1,
                lines: "load_testing,uuid=x v=1 1\n",
            },
            Unit {
                run: Uuid::nil(),
                points: 2,
                lines: "a v=1 1\nb v=2 2\n",
            },
        ];
        encode(
            &mut out,
            seq,
            Kind::Heartbeats,
            3,
            b"{\"seq\":3,\"del\":\"x\"}\n",
            &units,
        );
        assert_eq!(
            out.len(),
            encoded_len(b"{\"seq\":3,\"del\":\"x\"}\n", &units)
        );
        out
    }

    #[test]
    fn a_record_reads_back_exactly() {
        let bytes = sample(42);
        let Frame::Record { seq, len } = frame(&bytes) else {
            panic!("{:?}", frame(&bytes));
        };
        assert_eq!((seq, len), (42, bytes.len()));
        let payload = decode(&bytes[HEADER_BYTES..len]).unwrap();
        assert_eq!(payload.kind, Kind::Heartbeats);
        assert_eq!(payload.change_seq, 3);
        assert_eq!(payload.changes, b"{\"seq\":3,\"del\":\"x\"}\n");
        assert_eq!(payload.units.len(), 2);
        assert_eq!(payload.units[0].run, Uuid::from_u128(7));
        assert_eq!(payload.units[1].lines, "a v=1 1\nb v=2 2\n");
        assert_eq!(payload.units[1].points, 2);
    }

    #[test]
    fn a_stamped_record_has_its_new_number_and_a_good_checksum() {
        let mut bytes = sample(0);
        stamp(&mut bytes, 77);
        assert_eq!(
            frame(&bytes),
            Frame::Record {
                seq: 77,
                len: bytes.len()
            }
        );
    }

    #[test]
    fn zeros_end_the_records_and_a_short_buffer_asks_for_more() {
        assert_eq!(frame(&[0; 40]), Frame::End);
        assert_eq!(frame(&[0; 3]), Frame::End);
        assert_eq!(frame(&[]), Frame::End);
        let bytes = sample(1);
        assert_eq!(
            frame(&bytes[..10]),
            Frame::Short {
                needed: HEADER_BYTES
            }
        );
        assert_eq!(
            frame(&bytes[..bytes.len() - 1]),
            Frame::Short {
                needed: bytes.len()
            }
        );
    }

    #[test]
    fn every_damaged_byte_is_found() {
        let bytes = sample(9);
        for i in 0..bytes.len() {
            for value in [0u8, 0xff, bytes[i] ^ 1] {
                if value == bytes[i] {
                    continue;
                }
                let mut damaged = bytes.clone();
                damaged[i] = value;
                let seen = frame(&damaged);
                assert!(
                    !matches!(seen, Frame::Record { .. }),
                    "byte {i} set to {value:#x} went unnoticed"
                );
            }
        }
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            frame(&huge),
            Frame::Damaged(Damage::Length(u32::MAX as usize))
        );
    }

    #[test]
    fn payloads_this_program_did_not_write_are_refused_without_panic() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[1, 0, 0, 0]).is_err());
        assert!(decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]).is_err());
        let bytes = sample(1);
        let payload = &bytes[HEADER_BYTES..];
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
    }
}
