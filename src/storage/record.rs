//! The format of one record of the log, sans-I/O: bytes in, bytes out, no files, no clock.
//!
//! ```text
//! header (16 bytes, little-endian)
//!   len    u32   bytes of the payload that follows
//!   crc    u32   CRC-32 (IEEE) of the seq bytes and the payload
//!   seq    u64   the record's number; the log's records are numbered 1, 2, 3, … without gaps
//! payload
//!   kind     u8    1 = a request, 2 = heartbeats of a tick, 3 = a write through InfluxDB's API;
//!                  with the flag 0x80 set (version 3 segments and later), a client follows
//!   client   flagged kinds only: the client (token name) that wrote the record, u32 length
//!            then 1 to 255 bytes of UTF-8; a record without the flag has none (a tick's
//!            heartbeats, a gateway without tokens)
//!   change   u64   the number of the last job-table change among the changes (0: none)
//!   changes  u32 length, then that many bytes: the job-table changes (journal lines), or none
//!   target   kind 3 only: where its points go, two texts of u32 length then bytes: the
//!            database and the retention policy (empty: the database's default)
//!   units    u32 count, then each unit:
//!     run    16 bytes   the run a heartbeat belongs to (all zeros for the other kinds)
//!     points u32        points in its lines
//!     lines  u32 length, then that many bytes of line protocol, each line ending in '\n'
//! ```
//!
//! Every segment file starts with a header naming the format and its version, before its first
//! record ([`segment_header`], [`check_segment_header`]):
//!
//! ```text
//! magic    6 bytes   "MCLOG\0"
//! version  u16       little-endian: [`SEGMENT_VERSION`]
//! ```
//!
//! The delivered mark (`log/delivered`) is two lines of text, `metrics-consumer-delivered 1`
//! and the number of the last delivered record ([`encode_delivered`], [`decode_delivered`]).
//! A file that does not start with its format's name, or names a version this program does not
//! read, is refused at start rather than guessed at: a change of format is a new version, and
//! this program says which one it reads.
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

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 6] = *b"MCLOG\0";
/// The version of the segment format this program writes: the record layout above. Version 2
/// added the records of kind 3 and their target; version 3 the client of a record (the kind's
/// flag [`CLIENT_FLAG`]); version 4 a commit's result among its job-table changes (a journal
/// line `{"seq":N,"result":…}`, see `state::journal`). Version 1 files (no kind 3), version 2
/// files (no client) and version 3 files (no result) are read as they are. A reader that meets
/// a later version stops, naming it: a program that reads only versions 1 to 3 refuses a
/// version 4 segment.
pub const SEGMENT_VERSION: u16 = 4;
/// The first segment version whose records may carry their client.
pub const SEGMENT_VERSION_CLIENTS: u16 = 3;
/// Set in the kind byte: the record's client follows it.
pub const CLIENT_FLAG: u8 = 0x80;
/// Bytes of a record's client at most. A token's own name is at most 64 bytes; a token without
/// one is named after its digest (`token#3f9c1a2b7d40`); names of older versions were up to
/// about 220 bytes.
pub const MAX_CLIENT_BYTES: usize = 255;
/// The oldest segment version this program reads.
pub const SEGMENT_VERSION_OLDEST: u16 = 1;
/// Bytes of the segment header: records start at this offset of the file.
pub const SEGMENT_HEADER_BYTES: usize = 8;
/// The first line of the delivered mark, without its version.
pub const DELIVERED_FORMAT: &str = "metrics-consumer-delivered";
/// The version of the delivered mark's format.
pub const DELIVERED_VERSION: u16 = 1;

/// Why a file's header is not one this program reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file does not start with the format's name: another program's file, or damage.
    Foreign { found: String },
    /// The format is ours, of a version this program does not read.
    Version { found: u16, reads: u16 },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Foreign { found } => write!(
                f,
                "it is not a file of metrics-consumer's log (it starts with {found})"
            ),
            HeaderError::Version { found, reads } => write!(
                f,
                "it is of version {found} of the format, and this program reads version {reads}"
            ),
        }
    }
}

/// Shows up to the first `n` bytes of `bytes`, printable ASCII as is and the rest escaped.
fn show(bytes: &[u8], n: usize) -> String {
    if bytes.is_empty() {
        return "nothing: the file is empty".into();
    }
    let shown: String = bytes[..bytes.len().min(n)]
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("\"{shown}\"")
}

/// The header every segment file starts with.
pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[..6].copy_from_slice(&SEGMENT_MAGIC);
    header[6..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header
}

/// Checks the header at the start of a segment's bytes (`bytes` may be the whole file); the
/// version it names.
pub fn check_segment_header(bytes: &[u8]) -> Result<u16, HeaderError> {
    if bytes.len() < SEGMENT_HEADER_BYTES || bytes[..6] != SEGMENT_MAGIC {
        return Err(HeaderError::Foreign {
            found: show(bytes, SEGMENT_HEADER_BYTES),
        });
    }
    let found = u16::from_le_bytes([bytes[6], bytes[7]]);
    if !(SEGMENT_VERSION_OLDEST..=SEGMENT_VERSION).contains(&found) {
        return Err(HeaderError::Version {
            found,
            reads: SEGMENT_VERSION,
        });
    }
    Ok(found)
}

/// The bytes of the delivered mark saying records up to `seq` are delivered.
pub fn encode_delivered(seq: u64) -> Vec<u8> {
    format!("{DELIVERED_FORMAT} {DELIVERED_VERSION}\n{seq}\n").into_bytes()
}

/// The number in a delivered mark's bytes.
pub fn decode_delivered(bytes: &[u8]) -> Result<u64, HeaderError> {
    let foreign = || HeaderError::Foreign {
        found: show(bytes, 40),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| foreign())?;
    let mut lines = text.lines();
    let version = lines
        .next()
        .and_then(|first| first.strip_prefix(DELIVERED_FORMAT))
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(foreign)?;
    let found: u16 = version.parse().map_err(|_| foreign())?;
    if found != DELIVERED_VERSION {
        return Err(HeaderError::Version {
            found,
            reads: DELIVERED_VERSION,
        });
    }
    lines
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(foreign)
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The points and job-table change of one request (or a change alone: progress).
    Request = 1,
    /// Heartbeats of a tick, one unit per run, and the tick's job-table changes.
    Heartbeats = 2,
    /// The points of one write through InfluxDB's write API, for its own [`Target`], with
    /// timestamps in nanoseconds; no job-table changes.
    Write = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Heartbeats),
            3 => Some(Kind::Write),
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

/// Where the points of a [`Kind::Write`] record go: the database (for InfluxDB 2, the bucket
/// of that name, or `database/retention_policy`, as its DBRP mapping names them) and the
/// retention policy (empty: the database's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub database: &'a str,
    pub retention_policy: &'a str,
}

/// A record's payload, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload<'a> {
    pub kind: Kind,
    /// The client (token name) that wrote the record; `None`: no client (a tick's heartbeats,
    /// a gateway without tokens, a segment older than version 3).
    pub client: Option<&'a str>,
    /// The number of the last job-table change in `changes` (0: none).
    pub change_seq: u64,
    /// Job-table changes: journal lines, each ending in '\n' (empty: none).
    pub changes: &'a [u8],
    /// Where the points go: for [`Kind::Write`] only; the others go to `[influxdb]`'s.
    pub target: Option<Target<'a>>,
    pub units: Vec<Unit<'a>>,
}

/// What a record to encode holds: see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub kind: Kind,
    /// The client that writes it: 1 to [`MAX_CLIENT_BYTES`] bytes ([`client_fits`]), or none.
    pub client: Option<&'a str>,
    /// The number of the last job-table change in `changes` (0: none).
    pub change_seq: u64,
    pub changes: &'a [u8],
    /// Written for [`Kind::Write`] (and must be given for it), never for the other kinds.
    pub target: Option<Target<'a>>,
    pub units: &'a [Unit<'a>],
}

impl<'a> Parts<'a> {
    /// A record of `kind` holding `units` alone: no client, no change, no target.
    pub fn of(kind: Kind, units: &'a [Unit<'a>]) -> Parts<'a> {
        Parts {
            kind,
            client: None,
            change_seq: 0,
            changes: b"",
            target: None,
            units,
        }
    }

    /// The target as it is written: [`Kind::Write`]'s (empty names when none was given), none
    /// for the other kinds.
    fn written_target(&self) -> Option<Target<'a>> {
        (self.kind == Kind::Write).then(|| {
            self.target.unwrap_or(Target {
                database: "",
                retention_policy: "",
            })
        })
    }
}

/// Whether `client` can be a record's client: 1 to [`MAX_CLIENT_BYTES`] bytes.
pub fn client_fits(client: &str) -> bool {
    (1..=MAX_CLIENT_BYTES).contains(&client.len())
}

/// Bytes the record of `parts` takes, header included.
pub fn encoded_len(parts: &Parts<'_>) -> usize {
    HEADER_BYTES
        + 1
        + parts.client.map_or(0, |c| 4 + c.len())
        + 8
        + 4
        + parts.changes.len()
        + parts
            .written_target()
            .map_or(0, |t| 8 + t.database.len() + t.retention_policy.len())
        + 4
        + parts
            .units
            .iter()
            .map(|u| 16 + 4 + 4 + u.lines.len())
            .sum::<usize>()
}

/// Appends the record of `parts`, numbered `seq`, to `out`. Lengths above `u32::MAX` cannot
/// occur: a record is bounded by the request body limit (64 MiB at most) or by
/// `influxdb.max_write_bytes`, and a client by [`MAX_CLIENT_BYTES`] (the caller checks it with
/// [`client_fits`]; the reader refuses a client outside those bounds).
pub fn encode(out: &mut Vec<u8>, seq: u64, parts: &Parts<'_>) {
    let target = parts.written_target();
    let start = out.len();
    out.reserve(encoded_len(parts));
    out.extend_from_slice(&[0; 8]); // len and crc, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    match parts.client {
        Some(client) => {
            out.push(parts.kind as u8 | CLIENT_FLAG);
            out.extend_from_slice(&(client.len() as u32).to_le_bytes());
            out.extend_from_slice(client.as_bytes());
        }
        None => out.push(parts.kind as u8),
    }
    out.extend_from_slice(&parts.change_seq.to_le_bytes());
    out.extend_from_slice(&(parts.changes.len() as u32).to_le_bytes());
    out.extend_from_slice(parts.changes);
    if let Some(target) = target {
        for text in [target.database, target.retention_policy] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.extend_from_slice(&(parts.units.len() as u32).to_le_bytes());
    for unit in parts.units {
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

/// Decodes the payload of a record (`buf[HEADER_BYTES..len]` of a [`Frame::Record`]) of a
/// segment of `version`: only version [`SEGMENT_VERSION_CLIENTS`] and later hold a client, so
/// a flagged kind in an older segment is damage, not a record.
pub fn decode(payload: &[u8], version: u16) -> Result<Payload<'_>, BadPayload> {
    let mut at = 0;
    let byte = payload.first().copied().ok_or(BadPayload("unknown kind"))?;
    let flagged = byte & CLIENT_FLAG != 0;
    if flagged && version < SEGMENT_VERSION_CLIENTS {
        return Err(BadPayload(
            "a record with a client in a segment of a version without clients",
        ));
    }
    let kind = Kind::from_byte(byte & !CLIENT_FLAG).ok_or(BadPayload("unknown kind"))?;
    at += 1;
    let client = if flagged {
        let name = take(payload, &mut at)?;
        if !(1..=MAX_CLIENT_BYTES).contains(&name.len()) {
            return Err(BadPayload("a client name of an impossible length"));
        }
        Some(std::str::from_utf8(name).map_err(|_| BadPayload("a client name that is not UTF-8"))?)
    } else {
        None
    };
    let change_seq = payload
        .get(at..at + 8)
        .map(|b| u64_at(b, 0))
        .ok_or(BadPayload("the change number is cut short"))?;
    at += 8;
    let changes = take(payload, &mut at)?;
    let target = if kind == Kind::Write {
        let database = std::str::from_utf8(take(payload, &mut at)?)
            .map_err(|_| BadPayload("a database name that is not UTF-8"))?;
        let retention_policy = std::str::from_utf8(take(payload, &mut at)?)
            .map_err(|_| BadPayload("a retention policy name that is not UTF-8"))?;
        Some(Target {
            database,
            retention_policy,
        })
    } else {
        None
    };
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
        client,
        change_seq,
        changes,
        target,
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
        let parts = Parts {
            change_seq: 3,
            changes: b"{\"seq\":3,\"del\":\"x\"}\n",
            ..Parts::of(Kind::Heartbeats, &units)
        };
        encode(&mut out, seq, &parts);
        assert_eq!(out.len(), encoded_len(&parts));
        out
    }

    #[test]
    fn a_record_reads_back_exactly() {
        let bytes = sample(42);
        let Frame::Record { seq, len } = frame(&bytes) else {
            panic!("{:?}", frame(&bytes));
        };
        assert_eq!((seq, len), (42, bytes.len()));
        let payload = decode(&bytes[HEADER_BYTES..len], SEGMENT_VERSION).unwrap();
        assert_eq!(payload.kind, Kind::Heartbeats);
        assert_eq!(payload.client, None);
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
        let v = SEGMENT_VERSION;
        assert!(decode(&[], v).is_err());
        assert!(decode(&[9], v).is_err());
        assert!(decode(&[0x89], v).is_err());
        assert!(decode(&[1, 0, 0, 0], v).is_err());
        assert!(
            decode(
                &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255],
                v
            )
            .is_err()
        );
        let bytes = sample(1);
        let payload = &bytes[HEADER_BYTES..];
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut], v).is_err(), "cut at {cut}");
        }
    }

    /// A write through InfluxDB's API carries its target; the other kinds none.
    #[test]
    fn a_write_record_carries_its_target() {
        let target = Target {
            database: "k6 \"runs\"",
            retention_policy: "autogen",
        };
        let units = [Unit {
            run: Uuid::nil(),
            points: 1,
            lines: "http_reqs,url=/ value=1 1700000000000000000\n",
        }];
        let mut out = Vec::new();
        let parts = Parts {
            target: Some(target),
            ..Parts::of(Kind::Write, &units)
        };
        encode(&mut out, 9, &parts);
        assert_eq!(out.len(), encoded_len(&parts));
        let Frame::Record { seq, len } = frame(&out) else {
            panic!("a whole record")
        };
        assert_eq!((seq, len), (9, out.len()));
        let payload = decode(&out[HEADER_BYTES..len], 2).unwrap();
        assert_eq!(payload.kind, Kind::Write);
        assert_eq!(payload.target, Some(target));
        assert_eq!(payload.units, units);
        for cut in 0..len - HEADER_BYTES {
            assert!(
                decode(&out[HEADER_BYTES..HEADER_BYTES + cut], 2).is_err(),
                "cut at {cut}"
            );
        }
        // A target given for another kind is not written.
        let mut plain = Vec::new();
        let parts = Parts {
            target: Some(target),
            ..Parts::of(Kind::Request, &units)
        };
        encode(&mut plain, 9, &parts);
        assert_eq!(decode(&plain[HEADER_BYTES..], 2).unwrap().target, None);
    }

    /// A record carries the client that wrote it, of every kind, and reads back exactly; cut
    /// anywhere, or with its client's length damaged, it is refused, never a panic.
    #[test]
    fn a_record_carries_its_client() {
        let units = [Unit {
            run: Uuid::nil(),
            points: 1,
            lines: "http_reqs value=1 1700000000000000000\n",
        }];
        let target = Target {
            database: "k6",
            retention_policy: "",
        };
        for kind in [Kind::Request, Kind::Heartbeats, Kind::Write] {
            for client in ["a", "team-a.k6_1", "auth.tokens[2]", &"x".repeat(255)] {
                let parts = Parts {
                    client: Some(client),
                    change_seq: 4,
                    changes: b"{\"seq\":4}\n",
                    target: Some(target),
                    ..Parts::of(kind, &units)
                };
                let mut out = Vec::new();
                encode(&mut out, 5, &parts);
                assert_eq!(out.len(), encoded_len(&parts), "{kind:?}");
                assert_eq!(out[HEADER_BYTES], kind as u8 | CLIENT_FLAG);
                let Frame::Record { len, .. } = frame(&out) else {
                    panic!("a whole record")
                };
                let payload = decode(&out[HEADER_BYTES..len], 3).unwrap();
                assert_eq!(payload.kind, kind);
                assert_eq!(payload.client, Some(client));
                assert_eq!(payload.change_seq, 4);
                assert_eq!(payload.changes, b"{\"seq\":4}\n");
                assert_eq!(payload.units, units);
                assert_eq!(payload.target.is_some(), kind == Kind::Write);
                for cut in 0..len - HEADER_BYTES {
                    assert!(
                        decode(&out[HEADER_BYTES..HEADER_BYTES + cut], 3).is_err(),
                        "{kind:?} cut at {cut}"
                    );
                }
                // Only a version 3 segment holds clients: in an older one it is damage.
                for older in [1, 2] {
                    assert!(decode(&out[HEADER_BYTES..len], older).is_err());
                }
            }
        }
        // The client's length cut short, or damaged, or of an impossible size.
        let payload = |length: &[u8]| {
            let mut p = vec![Kind::Request as u8 | CLIENT_FLAG];
            p.extend_from_slice(length);
            p
        };
        assert_eq!(
            decode(&payload(&[3, 0]), 3),
            Err(BadPayload("a length is cut short"))
        );
        assert!(decode(&payload(&u32::MAX.to_le_bytes()), 3).is_err());
        let mut empty = payload(&0u32.to_le_bytes());
        empty.extend_from_slice(&[0; 16]);
        assert_eq!(
            decode(&empty, 3),
            Err(BadPayload("a client name of an impossible length"))
        );
        let mut long = payload(&256u32.to_le_bytes());
        long.extend_from_slice(&[b'x'; 300]);
        assert!(decode(&long, 3).is_err());
        let mut not_utf8 = payload(&1u32.to_le_bytes());
        not_utf8.extend_from_slice(&[0xff]);
        not_utf8.extend_from_slice(&[0; 16]);
        assert_eq!(
            decode(&not_utf8, 3),
            Err(BadPayload("a client name that is not UTF-8"))
        );
        assert!(client_fits("a") && client_fits(&"x".repeat(255)));
        assert!(!client_fits("") && !client_fits(&"x".repeat(256)));
    }

    #[test]
    fn a_segment_header_names_the_format_and_its_version() {
        let header = segment_header();
        assert_eq!(&header[..6], b"MCLOG\0");
        assert_eq!(check_segment_header(&header), Ok(4));
        for version in [1, 2, 3] {
            let mut older = header;
            older[6] = version;
            assert_eq!(
                check_segment_header(&older),
                Ok(u16::from(version)),
                "version {version} is read"
            );
        }
        let mut other = header;
        other[6] = 5;
        let later = check_segment_header(&other).unwrap_err();
        assert_eq!(later, HeaderError::Version { found: 5, reads: 4 });
        assert_eq!(
            later.to_string(),
            "it is of version 5 of the format, and this program reads version 4"
        );
        let foreign = check_segment_header(b"{\"seq\":1}\n").unwrap_err();
        assert!(matches!(foreign, HeaderError::Foreign { .. }));
        assert!(
            foreign.to_string().contains(r#"starts with "{\"seq\":1""#),
            "{foreign}"
        );
        assert!(matches!(
            check_segment_header(b""),
            Err(HeaderError::Foreign { found }) if found.contains("empty")
        ));
    }

    #[test]
    fn the_delivered_mark_names_its_format_and_version() {
        assert_eq!(decode_delivered(&encode_delivered(42)), Ok(42));
        assert_eq!(
            decode_delivered(b"metrics-consumer-delivered 7\n42\n"),
            Err(HeaderError::Version { found: 7, reads: 1 })
        );
        assert!(matches!(
            decode_delivered(b"42\n"),
            Err(HeaderError::Foreign { .. })
        ));
    }
}
