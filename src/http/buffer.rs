//! `InBuf`, the input buffer of one connection: it holds a request head and any
//! pipelined bytes read along with it, and is lent out as scratch space when a
//! connection is drained before it closes.
//!
//! It never grows: its capacity is fixed at `MAX_HEAD_BYTES` when it is made, so no
//! client can make it allocate more. It must never panic on any offset (every slice is
//! taken with `get`), and it never waits: it reads only when asked, once, from the
//! reader it is handed, whose timeouts and deadlines are the caller's.

use std::io::{self, Read};

use super::head::MAX_HEAD_BYTES;

/// Fixed-capacity input buffer for one connection: exactly `MAX_HEAD_BYTES`, which
/// bounds both the head and any pipelined bytes read along with it. Bodies never go
/// through it except for the part that arrived in the same read as the head.
pub(super) struct InBuf {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub(super) fn new() -> InBuf {
        InBuf {
            bytes: vec![0; MAX_HEAD_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub(super) fn data(&self) -> &[u8] {
        self.bytes.get(self.start..self.end).unwrap_or_default()
    }

    pub(super) fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn is_full(&self) -> bool {
        self.end >= self.bytes.len()
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops line ends at the front. Some clients send a stray CRLF after a request
    /// body; it is not the start of the next request, so it must neither start the
    /// head deadline (earning an idle client a 408) nor take up buffer space.
    pub(super) fn skip_line_ends(&mut self) {
        let stray = self
            .data()
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        self.consume(stray);
    }

    /// Moves buffered bytes to the front so that a new head has the full capacity.
    pub(super) fn compact(&mut self) {
        if self.start > 0 && self.start <= self.end && self.end <= self.bytes.len() {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One read into the free space at the end.
    pub(super) fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        let spare = match self.bytes.get_mut(self.end..) {
            Some(spare) if !spare.is_empty() => spare,
            _ => return Err(io::Error::other("input buffer is full")),
        };
        let n = reader.read(spare)?.min(spare.len());
        self.end += n;
        Ok(n)
    }

    /// The whole storage, emptied, for use as scratch space.
    pub(super) fn scratch(&mut self) -> &mut [u8] {
        self.start = 0;
        self.end = 0;
        &mut self.bytes
    }
}
