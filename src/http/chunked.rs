//! Sans-I/O decoding of a chunked request body (`Transfer-Encoding: chunked`), strictly: hex
//! sizes of at most `MAX_SIZE_DIGITS` digits, chunk extensions read and ignored within
//! `MAX_EXTENSION_BYTES`, every line ended by CRLF (a bare LF or CR is refused), the last chunk
//! `0`, trailer fields read and ignored within the head's limits, then the final CRLF.
//!
//! `Decoder` is a state machine over bytes: it takes whatever part of the body the caller has,
//! however it was split, appends the data to the caller's buffer and says how many bytes it
//! used; bytes after the final CRLF are left for the next request on the connection. It never
//! reads a socket, never allocates beyond appending data bytes that actually arrived, and
//! refuses a chunk whose announced size would take the body past its limit before any of its
//! bytes arrive. A refusal leaves the connection's framing unknown: the caller closes it.

use std::fmt;

use super::head::{MAX_HEAD_BYTES, MAX_HEADERS};

/// Most hex digits of a chunk size, leading zeros included: 16 digits always fit in a `u64`,
/// so the size cannot overflow, and a size longer than that is no size a body here can have.
pub const MAX_SIZE_DIGITS: u8 = 16;

/// Most bytes of chunk extensions on one chunk line (from the first `;` or whitespace after the
/// size to its CR). They are ignored; the bound keeps a client from sending a body of them.
pub const MAX_EXTENSION_BYTES: usize = 1024;

/// Most bytes of trailer fields, line ends included, as for a request head.
pub const MAX_TRAILER_BYTES: usize = MAX_HEAD_BYTES;

/// Most trailer fields, as for a request head.
pub const MAX_TRAILERS: usize = MAX_HEADERS;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not valid chunked framing; the detail names the part at fault (no client bytes).
    Malformed(&'static str),
    /// A chunk would take the decoded body past `limit` bytes (`server.max_body_bytes`).
    TooLarge { limit: u64 },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Malformed(detail) => write!(f, "malformed chunked body ({detail})"),
            ChunkError::TooLarge { limit } => write!(
                f,
                "chunked request body is larger than {limit} bytes (server.max_body_bytes)"
            ),
        }
    }
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk size: `digits` read so far, worth `value`.
    Size { digits: u8, value: u64 },
    /// Whitespace after the size: only more whitespace or `;` may follow.
    SizeSpace { value: u64, ext: usize },
    /// Inside chunk extensions after a `;`, `ext` bytes of them so far.
    Extension { value: u64, ext: usize },
    /// The CR of a chunk line was read; its LF must follow.
    SizeLf { value: u64 },
    /// Data of a chunk, `left` bytes of it still to come.
    Data { left: u64 },
    /// The data of a chunk ended; its CR must follow.
    DataCr,
    /// The CR after a chunk's data was read; its LF must follow.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    LineStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    TrailerValue,
    /// The CR of a trailer line was read.
    TrailerLf,
    /// The CR of the final empty line was read.
    FinalLf,
    /// The body ended.
    Done,
}

/// Decodes one chunked body, fed in pieces of any size.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Most decoded bytes the body may have.
    limit: u64,
    /// Decoded bytes so far.
    decoded: u64,
    /// Trailer bytes and fields so far.
    trailer_bytes: usize,
    trailers: usize,
}

/// A token character of RFC 9110 (a header field's name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in an extension or a field value: visible, obs-text, space or tab.
fn is_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn malformed<T>(detail: &'static str) -> Result<T, ChunkError> {
    Err(ChunkError::Malformed(detail))
}

impl Decoder {
    /// A decoder for a body of at most `limit` decoded bytes.
    pub fn new(limit: u64) -> Decoder {
        Decoder {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            limit,
            decoded: 0,
            trailer_bytes: 0,
            trailers: 0,
        }
    }

    /// Whether the final CRLF was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads what it can of `input`, appending the chunks' data to `body` (at most
    /// `input.len()` bytes, never past the limit), and returns how many bytes of `input` it
    /// used: all of them until the body ends, then only up to its final CRLF. An error leaves
    /// the decoder unusable (the body's framing is lost).
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                let rest = input.get(at..).unwrap_or_default();
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                body.extend_from_slice(rest.get(..n).unwrap_or_default());
                at += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let b = input.get(at).copied().unwrap_or_default();
            at += 1;
            self.state = self.step(b)?;
        }
        Ok(at)
    }

    /// The state after byte `b` (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        let state = match self.state {
            State::Size { digits, value } => match (b, char::from(b).to_digit(16)) {
                (_, Some(digit)) if digits < MAX_SIZE_DIGITS => State::Size {
                    digits: digits + 1,
                    // 16 hex digits fit in 64 bits: no overflow.
                    value: (value << 4) | u64::from(digit),
                },
                (_, Some(_)) => return malformed("chunk size has more than 16 hex digits"),
                _ if digits == 0 => return malformed("chunk size is not a hex number"),
                (b'\r', _) => State::SizeLf { value },
                (b' ' | b'\t', _) => State::SizeSpace { value, ext: 1 },
                (b';', _) => State::Extension { value, ext: 1 },
                (b'\n', _) => return malformed("bare LF after a chunk size"),
                _ => return malformed("junk after a chunk size"),
            },
            State::SizeSpace { value, ext } => match b {
                _ if ext >= MAX_EXTENSION_BYTES => {
                    return malformed("chunk extensions longer than 1024 bytes");
                }
                b' ' | b'\t' => State::SizeSpace {
                    value,
                    ext: ext + 1,
                },
                b';' => State::Extension {
                    value,
                    ext: ext + 1,
                },
                _ => return malformed("junk after a chunk size"),
            },
            State::Extension { value, ext } => match b {
                b'\r' => State::SizeLf { value },
                _ if ext >= MAX_EXTENSION_BYTES => {
                    return malformed("chunk extensions longer than 1024 bytes");
                }
                b'\n' => return malformed("bare LF in a chunk line"),
                _ if is_text(b) => State::Extension {
                    value,
                    ext: ext + 1,
                },
                _ => return malformed("control character in a chunk extension"),
            },
            State::SizeLf { value } => match b {
                b'\n' if value == 0 => State::LineStart,
                b'\n' => {
                    let total = self.decoded.saturating_add(value);
                    if total > self.limit {
                        return Err(ChunkError::TooLarge { limit: self.limit });
                    }
                    self.decoded = total;
                    State::Data { left: value }
                }
                _ => return malformed("CR without LF in a chunk line"),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return malformed("chunk data longer than its size, or not ended by CRLF"),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    digits: 0,
                    value: 0,
                },
                _ => return malformed("CR without LF after chunk data"),
            },
            State::TrailerLf => {
                self.trailer_byte()?;
                match b {
                    b'\n' => State::LineStart,
                    _ => return malformed("CR without LF in a trailer field"),
                }
            }
            State::LineStart => match b {
                b'\r' => State::FinalLf,
                b'\n' => return malformed("bare LF after the last chunk"),
                b' ' | b'\t' => return malformed("folded trailer line"),
                _ if is_tchar(b) => {
                    if self.trailers >= MAX_TRAILERS {
                        return malformed("more than 64 trailer fields");
                    }
                    self.trailers += 1;
                    self.trailer_byte()?;
                    State::TrailerName
                }
                _ => return malformed("invalid trailer field name"),
            },
            State::TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => State::TrailerValue,
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return malformed("invalid trailer field name"),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return malformed("bare LF in a trailer field"),
                    _ if is_text(b) => State::TrailerValue,
                    _ => return malformed("control character in a trailer field"),
                }
            }
            State::FinalLf => match b {
                b'\n' => State::Done,
                _ => return malformed("CR without LF at the end of the body"),
            },
            // `feed` handles data and never steps past the end.
            State::Data { .. } | State::Done => self.state,
        };
        Ok(state)
    }

    /// Counts one more trailer byte against `MAX_TRAILER_BYTES`.
    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return malformed("trailer fields larger than 16384 bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` at every split and byte by byte; all must agree.
    #[track_caller]
    fn decode(input: &[u8], limit: u64) -> Result<(Vec<u8>, usize), ChunkError> {
        let whole = decode_all(input, limit);
        for cut in 0..=input.len() {
            assert_eq!(
                decode_all_split(input, cut, limit),
                whole,
                "split at {cut} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut decoder = Decoder::new(limit);
        let mut body = Vec::new();
        let mut used = 0;
        let bytewise = loop {
            if decoder.is_done() {
                break Ok((body, used));
            }
            let Some(b) = input.get(used..=used) else {
                break Err(ChunkError::Malformed("ended early"));
            };
            match decoder.feed(b, &mut body) {
                Ok(n) => used += n,
                Err(e) => break Err(e),
            }
        };
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    /// Like `decode_split`, but an input that ends before the body does is an error.
    fn decode_all_split(
        input: &[u8],
        cut: usize,
        limit: u64,
    ) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = Decoder::new(limit);
        let mut body = Vec::new();
        let (first, second) = input.split_at(cut.min(input.len()));
        let mut used = decoder.feed(first, &mut body)?;
        if !decoder.is_done() {
            used += decoder.feed(second, &mut body)?;
        }
        if !decoder.is_done() {
            return Err(ChunkError::Malformed("ended early"));
        }
        Ok((body, used))
    }

    fn decode_all(input: &[u8], limit: u64) -> Result<(Vec<u8>, usize), ChunkError> {
        decode_all_split(input, input.len(), limit)
    }

    fn ok(input: &str) -> String {
        let (body, used) = decode(input.as_bytes(), 1 << 20).expect("valid");
        assert_eq!(used, input.len(), "every byte used");
        String::from_utf8(body).expect("utf-8")
    }

    #[track_caller]
    fn refused(input: &str, why: &str) {
        match decode(input.as_bytes(), 1 << 20) {
            Err(ChunkError::Malformed(detail)) => {
                assert!(detail.contains(why), "{detail:?} for {input:?}")
            }
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn valid_bodies_decode_at_every_split() {
        assert_eq!(ok("0\r\n\r\n"), "");
        assert_eq!(ok("5\r\nhello\r\n0\r\n\r\n"), "hello");
        assert_eq!(ok("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
        assert_eq!(ok("A\r\n0123456789\r\n0\r\n\r\n"), "0123456789");
        assert_eq!(ok("a\r\n0123456789\r\n000\r\n\r\n"), "0123456789");
        assert_eq!(ok("0000000000000003\r\nabc\r\n0\r\n\r\n"), "abc");
        // Chunk data may hold CR, LF and anything else.
        assert_eq!(ok("4\r\n\r\n\r\n\r\n0\r\n\r\n"), "\r\n\r\n");
        // Extensions, with or without values, quoted or not, after whitespace: ignored.
        assert_eq!(ok("3;name=value;q=\"a;b\"\r\nabc\r\n0;last\r\n\r\n"), "abc");
        assert_eq!(ok("3 ;x\r\nabc\r\n0\t;y=1\r\n\r\n"), "abc");
        // Trailer fields: read and ignored.
        assert_eq!(
            ok("3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Empty:\r\n\r\n"),
            "abc"
        );
    }

    #[test]
    fn bytes_after_the_body_are_left_for_the_next_request() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (body, used) = decode(input, 100).expect("valid");
        assert_eq!(body, b"abc");
        assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn malformed_sizes_are_refused() {
        refused("\r\n\r\n", "not a hex number");
        refused("-5\r\nhello\r\n0\r\n\r\n", "not a hex number");
        refused("+5\r\nhello\r\n0\r\n\r\n", "not a hex number");
        refused("0x5\r\nhello\r\n0\r\n\r\n", "junk after a chunk size");
        refused(" 5\r\nhello\r\n0\r\n\r\n", "not a hex number");
        refused("5 \r\nhello\r\n0\r\n\r\n", "junk after a chunk size");
        refused("5g\r\nhello\r\n0\r\n\r\n", "junk after a chunk size");
        refused("g\r\n", "not a hex number");
        refused(
            "00000000000000005\r\nhello\r\n0\r\n\r\n",
            "more than 16 hex digits",
        );
        refused("10000000000000000\r\n", "more than 16 hex digits");
    }

    #[test]
    fn line_ends_must_be_crlf() {
        refused("5\nhello\r\n0\r\n\r\n", "bare LF after a chunk size");
        refused("5\r\nhello\n0\r\n\r\n", "not ended by CRLF");
        refused("5\r\nhello\r\r\n0\r\n\r\n", "CR without LF");
        refused("5\rhello\r\n0\r\n\r\n", "CR without LF");
        refused("5\r\nhello\r\n0\n\r\n", "bare LF after a chunk size");
        refused("5\r\nhello\r\n0\r\n\n", "bare LF after the last chunk");
        refused("5\r\nhello\r\n0\r\n\rX", "CR without LF at the end");
        refused("5;ext\nhello\r\n0\r\n\r\n", "bare LF in a chunk line");
        refused("0\r\nX-T: 1\n\r\n", "bare LF in a trailer field");
        refused("0\r\nX-T: 1\rX\r\n", "CR without LF");
    }

    #[test]
    fn chunk_data_must_match_its_size() {
        refused("5\r\nhello!\r\n0\r\n\r\n", "longer than its size");
        refused("5\r\nhell\r\n0\r\n\r\n", "longer than its size");
    }

    #[test]
    fn extensions_are_bounded_and_without_controls() {
        let at_bound = format!(
            "3;{}\r\nabc\r\n0\r\n\r\n",
            "x".repeat(MAX_EXTENSION_BYTES - 1)
        );
        assert_eq!(ok(&at_bound), "abc");
        let past = format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(MAX_EXTENSION_BYTES));
        refused(&past, "longer than 1024 bytes");
        let spaces = format!("3{};\r\nabc\r\n0\r\n\r\n", " ".repeat(MAX_EXTENSION_BYTES));
        refused(&spaces, "longer than 1024 bytes");
        refused("3;a\0b\r\nabc\r\n0\r\n\r\n", "control character");
        refused("3 x\r\nabc\r\n0\r\n\r\n", "junk after a chunk size");
    }

    #[test]
    fn trailers_are_bounded_in_count_and_bytes() {
        let many = |n: usize| {
            let mut s = "0\r\n".to_owned();
            for i in 0..n {
                s.push_str(&format!("X-{i}: v\r\n"));
            }
            s.push_str("\r\n");
            s
        };
        assert_eq!(ok(&many(MAX_TRAILERS)), "");
        refused(&many(MAX_TRAILERS + 1), "more than 64 trailer fields");
        let big = |n: usize| format!("0\r\nX: {}\r\n\r\n", "v".repeat(n));
        // "X: " and CRLF are 5 bytes of the line.
        assert_eq!(ok(&big(MAX_TRAILER_BYTES - 5)), "");
        refused(&big(MAX_TRAILER_BYTES - 4), "larger than 16384 bytes");
        refused("0\r\n folded: v\r\n\r\n", "folded trailer line");
        refused("0\r\nX-T: 1\r\n\tmore\r\n\r\n", "folded trailer line");
        refused("0\r\nNo colon\r\n\r\n", "invalid trailer field name");
        refused("0\r\n: v\r\n\r\n", "invalid trailer field name");
        refused(
            "0\r\nX-T: a\x01b\r\n\r\n",
            "control character in a trailer field",
        );
    }

    #[test]
    fn a_chunk_past_the_limit_is_refused_before_its_data() {
        // A chunk announcing more than the limit is refused at its line, with nothing
        // appended: a body that claims huge chunks costs nothing.
        let mut decoder = Decoder::new(10);
        let mut body = Vec::new();
        assert_eq!(
            decoder.feed(b"ffffffffffffffff\r\n", &mut body),
            Err(ChunkError::TooLarge { limit: 10 })
        );
        assert_eq!(body.capacity(), 0);
        // The limit holds over all chunks together, and exactly at it the body is taken.
        assert_eq!(
            decode(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10).map(|(b, _)| b),
            Ok(b"helloworld".to_vec())
        );
        assert_eq!(
            decode(b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", 10),
            Err(ChunkError::TooLarge { limit: 10 })
        );
    }

    #[test]
    fn decoding_never_appends_more_than_it_was_given() {
        let mut decoder = Decoder::new(1 << 20);
        let mut body = Vec::new();
        assert_eq!(decoder.feed(b"fffff\r\nab", &mut body), Ok(9));
        assert_eq!(body, b"ab");
        assert!(!decoder.is_done());
    }
}
