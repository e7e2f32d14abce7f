//! Content codings of request bodies (RFC 9110 §8.4): undoing `Content-Encoding: gzip` or
//! `deflate` before a handler sees the body, within a bound of its own.
//!
//! InfluxDB's client libraries, Telegraf, JMeter and the Locust plugin compress what they send.
//! The codings read are `gzip` and `x-gzip` (RFC 1952, several members allowed), `deflate`
//! (the zlib format of RFC 1950, as RFC 9110 §8.4.1.2 defines it, and the raw deflate data of
//! RFC 1951 that some clients send under that name) and `identity`; anything else is refused
//! with 415 and `Accept-Encoding` naming what is read (RFC 9110 §15.5.16). A compressed body
//! may inflate to `server.max_inflated_bytes` (16 MiB unless configured; never less than
//! `server.max_body_bytes`):
//! the inflated bytes are read in chunks into a buffer that grows only as they arrive, and the
//! request is refused with 413 as soon as one byte more would be needed, so a small "bomb"
//! costs at most that bound, never what it would inflate to. Every byte the buffer grows by is
//! first taken from an [`Allowance`] (the server's budget of body bytes in flight), which may
//! refuse it.
//!
//! Sans-I/O over bytes already read: headers and body in, body out. The inflation itself is
//! `flate2`'s; nothing here writes a decoder of its own.

use std::fmt;
use std::io::Read;

use flate2::bufread::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use super::Headers;
use crate::code::Code;

/// Largest body a compressed request may inflate to, in bytes (16 MiB), unless
/// `server.max_body_bytes` is larger, which then bounds it instead: a plain body may already be
/// that large, so inflating to it costs nothing more. 16 MiB holds the commit of a Locust run
/// with about 20 000 endpoints (some 800 bytes of JSON per row), which gzip sends in well under
/// the default 1 MiB body limit; and it is the most memory one connection can make the gateway
/// hold for a body. The default of `server.max_inflated_bytes`.
pub const MAX_INFLATED_BYTES: usize = 16 * 1024 * 1024;

/// Content codings applied on top of each other at most (`gzip, gzip` is legal, but each layer
/// costs an inflation up to the bound, so a long list is refused rather than worked through).
const MAX_CODINGS: usize = 2;

/// Bytes inflated per read: the buffer grows by at most this much beyond what has arrived.
const CHUNK: usize = 16 * 1024;

/// What `Accept-Encoding` says on a 415: the codings this module reads.
pub const ACCEPTED: &str = "gzip, deflate";

/// One content coding this module can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// Why a body could not be decoded. Each maps to one [`Code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding this module does not read, as sent (cut short, control characters replaced).
    Unsupported(String),
    /// More codings than [`MAX_CODINGS`].
    TooManyCodings(usize),
    /// The body would inflate past this many bytes.
    TooLarge { limit: usize },
    /// The [`Allowance`] has no bytes to give now: the gateway holds as many request bodies as
    /// it may, `budget` bytes (`server.max_body_bytes_in_flight`).
    Busy { budget: u64 },
    /// The body is not valid data of its coding; the detail says how.
    Corrupt {
        coding: &'static str,
        detail: &'static str,
    },
}

impl DecodeError {
    /// The code of the answer (its status comes with it).
    pub fn code(&self) -> Code {
        match self {
            DecodeError::Unsupported(_) | DecodeError::TooManyCodings(_) => {
                Code::UnsupportedContentEncoding
            }
            DecodeError::TooLarge { .. } => Code::InflatedTooLarge,
            DecodeError::Busy { .. } => Code::TooManyBodies,
            DecodeError::Corrupt { .. } => Code::InvalidContentEncoding,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported(coding) => write!(
                f,
                "Content-Encoding {coding:?} is not read here; send the body plain or with Content-Encoding: gzip or deflate"
            ),
            DecodeError::TooManyCodings(n) => write!(
                f,
                "Content-Encoding lists {n} codings; at most {MAX_CODINGS} are undone, so compress the body once"
            ),
            DecodeError::TooLarge { limit } => write!(
                f,
                "the compressed body inflates to more than {limit} bytes, the most a compressed body may hold (server.max_inflated_bytes); send less per request"
            ),
            DecodeError::Busy { budget } => write!(
                f,
                "the gateway holds as many request bodies as it may ({budget} bytes, server.max_body_bytes_in_flight), counting what compressed bodies inflate to; retry after Retry-After"
            ),
            DecodeError::Corrupt { coding, detail } => write!(
                f,
                "the body is not valid {coding} data ({detail}), though Content-Encoding says {coding}; compress it whole, once, or drop the header"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Memory a decode may take for what it inflates: the server's budget of body bytes in flight.
/// The bytes of the body handed to [`decode`] are held already.
pub trait Allowance {
    /// Takes `bytes` more, or says, as the error to answer with, why not.
    fn take(&mut self, bytes: usize) -> Result<(), DecodeError>;
    /// Gives back `bytes` no longer held.
    fn give(&mut self, bytes: usize);
}

/// No bound but the decode's own `limit`, for tests of the decoding alone.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbounded;

#[cfg(test)]
impl Allowance for Unbounded {
    fn take(&mut self, _: usize) -> Result<(), DecodeError> {
        Ok(())
    }
    fn give(&mut self, _: usize) {}
}

/// The codings of every `Content-Encoding` header, in the order they were applied. Values are
/// comma-separated lists of case-insensitive tokens (RFC 9110 §8.4); `identity` and empty items
/// change nothing and are left out.
fn codings<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for value in values {
        for item in value.split(|&b| b == b',') {
            let token = item.trim_ascii();
            let coding = if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                continue;
            } else if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case(b"deflate") {
                Coding::Deflate
            } else {
                return Err(DecodeError::Unsupported(shown(token)));
            };
            out.push(coding);
        }
    }
    if out.len() > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings(out.len()));
    }
    Ok(out)
}

/// Client text for a message: at most 32 characters, made safe for logs (see `logtext`).
fn shown(token: &[u8]) -> String {
    crate::logtext::escape(&String::from_utf8_lossy(token), 32)
}

/// Undoes the `Content-Encoding` of `body` and removes the header from `headers`, so the
/// handler sees a plain body. A body without the header (or only `identity`) comes back as it
/// is; so does an empty body, which has nothing to inflate.
///
/// `allowance` holds `body.len()` bytes when this is called; every byte an inflated buffer grows
/// by is taken from it first, and the bytes of a body inflated from are given back, so that on
/// success it holds what the result was allocated with. On an error it may hold more: the
/// caller drops everything then.
pub fn decode(
    headers: &mut Headers,
    body: Vec<u8>,
    limit: usize,
    allowance: &mut dyn Allowance,
) -> Result<Vec<u8>, DecodeError> {
    let list = codings(headers.values("content-encoding"))?;
    headers.remove("content-encoding");
    let mut body = body;
    let mut held = body.len();
    // The last coding listed was applied last, so it is undone first (RFC 9110 §8.4).
    for coding in list.into_iter().rev() {
        if body.is_empty() {
            break;
        }
        let (inflated, taken) = inflate(coding, &body, limit, allowance)?;
        allowance.give(held);
        (body, held) = (inflated, taken);
    }
    Ok(body)
}

/// Inflates `data` of one coding, refusing as soon as the result would pass `limit` bytes or
/// `allowance` refuses memory; returns it with the bytes taken for it.
fn inflate(
    coding: Coding,
    data: &[u8],
    limit: usize,
    allowance: &mut dyn Allowance,
) -> Result<(Vec<u8>, usize), DecodeError> {
    match coding {
        Coding::Gzip => read_bounded(MultiGzDecoder::new(data), coding, limit, allowance),
        // RFC 9110 means the zlib format; raw deflate data has no zlib header, which is two
        // bytes whose first names method 8 and which together are a multiple of 31 (RFC 1950).
        Coding::Deflate if is_zlib_header(data) => {
            read_bounded(ZlibDecoder::new(data), coding, limit, allowance)
        }
        Coding::Deflate => read_bounded(DeflateDecoder::new(data), coding, limit, allowance),
    }
}

fn is_zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn read_bounded(
    mut decoder: impl Read,
    coding: Coding,
    limit: usize,
    allowance: &mut dyn Allowance,
) -> Result<(Vec<u8>, usize), DecodeError> {
    let corrupt = |detail| DecodeError::Corrupt {
        coding: coding.name(),
        detail,
    };
    let mut out: Vec<u8> = Vec::new();
    // Bytes taken from `allowance` for `out`: what it is allocated with.
    let mut taken = 0;
    let mut chunk = [0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok((out, taken)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                // Cut short, or bytes after a whole gzip member that begin no other (too few
                // for a member's header): the decoder cannot tell the two apart.
                return Err(corrupt(
                    "it ends before the compressed data does, or bytes after it are not compressed data",
                ));
            }
            Err(_) => return Err(corrupt("its header, data or checksum is wrong")),
        };
        let needed = out.len().saturating_add(n);
        if needed > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if needed > out.capacity() {
            // Grow geometrically, as Vec would, but never past the limit.
            let target = out.capacity().saturating_mul(2).max(needed).min(limit);
            if target > taken {
                allowance.take(target - taken)?;
                taken = target;
            }
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn with(values: &[&str]) -> Headers {
        let mut headers = Headers::default();
        headers.push("Host", b"gw");
        for v in values {
            headers.push("Content-Encoding", v.as_bytes());
        }
        headers
    }

    const JSON: &[u8] = br#"{"host":"lg-1"}"#;

    #[test]
    fn every_spelling_of_the_codings_read_gives_the_plain_body() {
        let cases: Vec<(Vec<&str>, Vec<u8>)> = vec![
            (vec![], JSON.to_vec()),
            (vec!["identity"], JSON.to_vec()),
            (vec![""], JSON.to_vec()),
            (vec![" , identity ,"], JSON.to_vec()),
            (vec!["gzip"], gzip(JSON)),
            (vec!["GZip"], gzip(JSON)),
            (vec![" x-gzip "], gzip(JSON)),
            (vec!["gzip, identity"], gzip(JSON)),
            (vec!["identity", "gzip"], gzip(JSON)),
            (vec!["deflate"], zlib(JSON)),
            (vec!["Deflate"], raw_deflate(JSON)),
            // Applied in the order listed: deflate first, then gzip.
            (vec!["deflate, gzip"], gzip(&zlib(JSON))),
            (vec!["gzip", "gzip"], gzip(&gzip(JSON))),
            // Two gzip members, as `cat a.gz b.gz` makes.
            (
                vec!["gzip"],
                [gzip(b"{\"host\":"), gzip(b"\"lg-1\"}")].concat(),
            ),
        ];
        for (values, body) in cases {
            let mut headers = with(&values);
            let plain = decode(&mut headers, body, MAX_INFLATED_BYTES, &mut Unbounded)
                .unwrap_or_else(|e| panic!("{values:?}: {e}"));
            assert_eq!(plain, JSON, "{values:?}");
            assert_eq!(
                headers,
                with(&[]),
                "{values:?}: Content-Encoding is removed"
            );
        }
        // An empty body has nothing to inflate.
        assert_eq!(
            decode(
                &mut with(&["gzip"]),
                Vec::new(),
                MAX_INFLATED_BYTES,
                &mut Unbounded
            ),
            Ok(Vec::new())
        );
    }

    #[test]
    fn other_codings_are_refused_by_name() {
        for (value, shown) in [
            ("br", "br"),
            ("zstd", "zstd"),
            ("compress", "compress"),
            ("gzip, br", "br"),
            ("gzip;q=1", "gzip;q=1"),
            ("\u{7f}x", "?x"),
        ] {
            let err = decode(
                &mut with(&[value]),
                gzip(JSON),
                MAX_INFLATED_BYTES,
                &mut Unbounded,
            )
            .unwrap_err();
            assert_eq!(err, DecodeError::Unsupported(shown.into()), "{value:?}");
            assert_eq!(err.code().status(), 415);
            assert!(err.to_string().contains("gzip or deflate"), "{err}");
        }
        let err = decode(
            &mut with(&["gzip, gzip, gzip"]),
            gzip(JSON),
            1 << 20,
            &mut Unbounded,
        )
        .unwrap_err();
        assert_eq!(err, DecodeError::TooManyCodings(3));
    }

    #[test]
    fn corrupt_data_is_refused_naming_the_coding() {
        let whole = gzip(JSON);
        let mut flipped = whole.clone();
        let at = flipped.len() - 6;
        flipped[at] ^= 0xff; // the CRC-32 of the trailer
        for (name, value, body) in [
            ("truncated", "gzip", whole[..whole.len() - 4].to_vec()),
            ("wrong checksum", "gzip", flipped),
            ("plain JSON labelled gzip", "gzip", JSON.to_vec()),
            (
                "garbage after the member",
                "gzip",
                [whole.clone(), b"xx".to_vec()].concat(),
            ),
            ("gzip labelled deflate", "deflate", whole.clone()),
            ("plain JSON labelled deflate", "deflate", JSON.to_vec()),
        ] {
            let err = decode(
                &mut with(&[value]),
                body,
                MAX_INFLATED_BYTES,
                &mut Unbounded,
            )
            .unwrap_err();
            assert!(
                matches!(err, DecodeError::Corrupt { coding, .. } if coding == value),
                "{name}: {err:?}"
            );
            assert_eq!(err.code().status(), 400, "{name}");
        }
        // What is said of bytes after a whole member names them, as it names a body cut short.
        let after = decode(
            &mut with(&["gzip"]),
            [whole.clone(), b"xx".to_vec()].concat(),
            MAX_INFLATED_BYTES,
            &mut Unbounded,
        )
        .unwrap_err();
        assert!(after.to_string().contains("bytes after it"), "{after}");
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_without_inflating_it() {
        // 64 MiB of zeros in about 64 KiB.
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
        let limit = 1 << 20;
        let err = decode(&mut with(&["gzip"]), bomb, limit, &mut Unbounded).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { limit });
        assert_eq!(err.code().status(), 413);
        // Exactly at the limit is fine, and the buffer never grows past it.
        let (fits, taken) = read_bounded(
            MultiGzDecoder::new(&gzip(&zeros)[..]),
            Coding::Gzip,
            limit,
            &mut Unbounded,
        )
        .unwrap();
        assert_eq!(fits.len(), limit);
        assert!(fits.capacity() <= limit, "{}", fits.capacity());
        assert_eq!(taken, limit);
    }

    /// An allowance of `room` bytes that records what it holds, as the server's budget does.
    struct Counted {
        room: usize,
        held: usize,
        most: usize,
    }

    impl Allowance for Counted {
        fn take(&mut self, bytes: usize) -> Result<(), DecodeError> {
            if self.held + bytes > self.room {
                return Err(DecodeError::Busy { budget: 7 });
            }
            self.held += bytes;
            self.most = self.most.max(self.held);
            Ok(())
        }
        fn give(&mut self, bytes: usize) {
            self.held -= bytes;
        }
    }

    #[test]
    fn inflated_bytes_are_taken_from_the_allowance_before_they_are_allocated() {
        let plain = vec![b'x'; 1 << 20];
        let body = gzip(&plain);
        let compressed = body.len();
        // The compressed body is held by the caller, then what it inflates to.
        let mut allowance = Counted {
            room: 4 << 20,
            held: compressed,
            most: compressed,
        };
        let out = decode(
            &mut with(&["gzip"]),
            body,
            MAX_INFLATED_BYTES,
            &mut allowance,
        )
        .unwrap();
        assert_eq!(out, plain);
        assert_eq!(
            allowance.held,
            out.capacity(),
            "held: the result's allocation"
        );
        assert!(
            allowance.most <= compressed + (1 << 20),
            "{}",
            allowance.most
        );

        // Twice compressed: the middle layer is given back too.
        let twice = gzip(&gzip(&plain));
        let mut allowance = Counted {
            room: 4 << 20,
            held: twice.len(),
            most: 0,
        };
        let out = decode(
            &mut with(&["gzip, gzip"]),
            twice,
            MAX_INFLATED_BYTES,
            &mut allowance,
        )
        .unwrap();
        assert_eq!(allowance.held, out.capacity());

        // Too little room: refused with the allowance's answer, which is a 503.
        let mut tight = Counted {
            room: compressed + (512 << 10),
            held: compressed,
            most: 0,
        };
        let err = decode(
            &mut with(&["gzip"]),
            gzip(&plain),
            MAX_INFLATED_BYTES,
            &mut tight,
        )
        .unwrap_err();
        assert_eq!(err, DecodeError::Busy { budget: 7 });
        assert_eq!(
            (err.code().status(), err.code().retry_after()),
            (503, Some(1))
        );
        assert!(tight.held <= tight.room);
    }
}
