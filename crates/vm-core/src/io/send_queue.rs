//! The bytes a socket has accepted from `send` but the kernel has not taken yet.
//!
//! Invariants:
//! - Bytes leave in the order they were queued; a partial write resumes at the exact
//!   byte it stopped at (the offset into the front chunk).
//! - `queued()` is the exact number of bytes still owed; the socket compares it with
//!   its watermarks to tell a sender to suspend (above high) and to wake it (at or
//!   below low). The queue never copies a binary: it holds the sender's refcounted
//!   buffer (or the small inline copy the term already was).
//! - A flush writes as much as the kernel takes, up to [`MAX_IOV`] chunks per
//!   `writev`, and stops at the first "would block": the reactor finishes it on the
//!   next writable edge.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Write};

use super::error::IoError;
use crate::term::Binary;

/// Chunks gathered into one `writev` (well under Linux's IOV_MAX of 1024; a flush
/// rarely has more than a header and a body).
const MAX_IOV: usize = 64;

#[derive(Debug)]
enum Chunk {
    Header([u8; 4], u8),
    Data(Binary),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Header(h, n) => &h[..usize::from(*n)],
            Chunk::Data(b) => b.as_slice(),
        }
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flush {
    /// Everything queued was written.
    Drained,
    /// The kernel's buffer is full; bytes remain.
    WouldBlock,
}

#[derive(Debug, Default)]
pub(super) struct SendQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    queued: usize,
}

impl SendQueue {
    pub(super) fn new() -> SendQueue {
        SendQueue::default()
    }

    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues a frame: `header` (0-4 bytes) then `data`.
    pub(super) fn push(&mut self, header: &[u8], data: Binary) {
        if !header.is_empty() {
            let mut h = [0u8; 4];
            h[..header.len()].copy_from_slice(header);
            self.chunks.push_back(Chunk::Header(h, header.len() as u8));
            self.queued += header.len();
        }
        if !data.is_empty() {
            self.queued += data.len();
            self.chunks.push_back(Chunk::Data(data));
        }
    }

    /// Writes as much as `w` accepts.
    pub(super) fn flush<W: Write>(&mut self, w: &mut W) -> Result<Flush, IoError> {
        while !self.chunks.is_empty() {
            let wrote = if self.chunks.len() == 1 {
                // One chunk (a raw-mode send, the usual case): a plain `write`, which
                // for a TCP stream is `send(2)`; `writev` goes through the VFS layer
                // (its own ~5% of an echo's server CPU in perf on loopback).
                w.write(&self.chunks[0].bytes()[self.offset..])
            } else {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let mut n = 0;
                for (i, c) in self.chunks.iter().take(MAX_IOV).enumerate() {
                    let bytes = c.bytes();
                    iov[i] = IoSlice::new(if i == 0 { &bytes[self.offset..] } else { bytes });
                    n = i + 1;
                }
                w.write_vectored(&iov[..n])
            };
            match wrote {
                Ok(0) => return Err(IoError::Closed),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Flush::WouldBlock),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Flush::Drained)
    }

    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.offset;
            if written >= left {
                written -= left;
                self.offset = 0;
                self.chunks.pop_front();
            } else {
                self.offset += written;
                written = 0;
            }
        }
        if self.chunks.is_empty() {
            // Release a queue that grew under a burst.
            if self.chunks.capacity() > 16 {
                self.chunks = VecDeque::new();
            }
        }
    }

    /// Drops everything queued (the socket is closing).
    pub(super) fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.offset = 0;
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// Accepts `budget` bytes, at most `per_call` per write, then would block.
    struct Tight {
        out: Vec<u8>,
        budget: usize,
        per_call: usize,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.budget).min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_at_the_exact_byte() {
        let mut q = SendQueue::new();
        let mut expect = vec![];
        for i in 0..20u8 {
            let body = vec![i; 37 + usize::from(i)];
            expect.extend_from_slice(&[0, 0, 0, body.len() as u8]);
            expect.extend_from_slice(&body);
            q.push(&[0, 0, 0, body.len() as u8], Binary::new(body));
        }
        assert_eq!(q.queued(), expect.len());
        let mut w = Tight {
            out: vec![],
            budget: 0,
            per_call: 7,
        };
        assert_eq!(q.flush(&mut w), Ok(Flush::WouldBlock));
        while !q.is_empty() {
            w.budget = 50;
            let before = q.queued();
            let r = q.flush(&mut w).unwrap();
            assert_eq!(before - q.queued(), 50.min(before));
            assert_eq!(r == Flush::Drained, q.is_empty());
        }
        assert_eq!(w.out, expect);
    }

    #[test]
    fn a_closed_writer_is_an_error() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = SendQueue::new();
        q.push(&[], Binary::from_slice(b"x"));
        assert_eq!(q.flush(&mut Zero), Err(IoError::Closed));
        q.clear();
        assert_eq!(q.flush(&mut Zero), Ok(Flush::Drained));
    }
}
