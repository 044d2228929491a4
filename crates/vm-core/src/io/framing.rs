//! Cutting a byte stream into gen_tcp packets: `raw`, `{packet, 1|2|4}`, `line`.
//!
//! A [`Framer`] holds only what the reactor read but could not deliver yet: a partial
//! frame, or whole frames the owner has not asked for (active `once` delivers one).
//! Invariants:
//! - Memory follows data: an empty framer holds no buffer (10,000 idle connections
//!   cost nothing here), and a consumed buffer is released, not kept at its peak.
//! - A length header announcing more than the socket's limit is [`IoError::Emsgsize`]
//!   as soon as the header is complete: the body is never buffered, so a hostile
//!   4-byte header cannot make us allocate 4 GiB. A header within the limit does not
//!   reserve its body either: the buffer grows as the bytes arrive (at most one
//!   [`READ_CHUNK`] ahead), so 40 peers announcing 60 MiB each cost what they sent.
//!   A line longer than the limit without its `\n` is the same error.
//! - Frames come out in stream order, whatever the read boundaries were: a frame
//!   split over 1-byte reads is the same frame.
//! - The scan for `\n` resumes where it stopped, so a long line arriving in small
//!   pieces costs linear, not quadratic, time.

use super::conn::READ_CHUNK;
use super::error::IoError;
use super::options::Packet;
use crate::term::Binary;

#[derive(Debug, Default)]
pub(super) struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    start: usize,
    /// Line mode: `buf[start..scanned]` holds no `\n`.
    scanned: usize,
}

impl Framer {
    pub(super) fn new() -> Framer {
        Framer::default()
    }

    /// Bytes held, not yet delivered.
    pub(super) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes of heap this framer holds (for memory accounting).
    #[cfg_attr(not(test), allow(dead_code))] // used by tests
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends bytes read from the socket.
    pub(super) fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub(super) fn next_frame(
        &mut self,
        packet: Packet,
        limit: usize,
    ) -> Result<Option<Binary>, IoError> {
        let have = self.buffered();
        match packet {
            Packet::Raw => Ok((have > 0).then(|| self.take(0, have))),
            Packet::Len(h) => {
                let h = usize::from(h);
                if have < h {
                    return Ok(None);
                }
                let len = self.buf[self.start..self.start + h]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                if len > limit {
                    return Err(IoError::Emsgsize);
                }
                if have < h + len {
                    // Room for the next read, not the whole body: a header may
                    // announce up to `limit` bytes that never come, so the buffer
                    // grows (amortized) as they arrive instead.
                    self.buf.reserve((h + len - have).min(READ_CHUNK));
                    return Ok(None);
                }
                Ok(Some(self.take(h, len)))
            }
            Packet::Line => {
                let from = self.scanned.max(self.start);
                match self.buf[from..].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        let len = from + i + 1 - self.start;
                        if len > limit {
                            return Err(IoError::Emsgsize);
                        }
                        Ok(Some(self.take(0, len)))
                    }
                    None => {
                        self.scanned = self.buf.len();
                        if self.buffered() > limit {
                            return Err(IoError::Emsgsize);
                        }
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Exactly `n` bytes (raw `recv(n)`), `None` until that many are held.
    pub(super) fn take_exact(&mut self, n: usize) -> Option<Binary> {
        (n > 0 && self.buffered() >= n).then(|| self.take(0, n))
    }

    /// Hands out `len` bytes after skipping `skip` header bytes, and consumes both.
    fn take(&mut self, skip: usize, len: usize) -> Binary {
        let from = self.start + skip;
        let to = from + len;
        let frame = if self.start == 0 && skip == 0 && to == self.buf.len() {
            // The whole buffer is the frame: hand the allocation over, no copy.
            Binary::new(std::mem::take(&mut self.buf))
        } else {
            Binary::from_slice(&self.buf[from..to])
        };
        self.start = to;
        if self.start >= self.buf.len() {
            // Release the buffer: an idle socket holds no memory here.
            self.buf = Vec::new();
            self.start = 0;
        }
        self.scanned = self.start;
        frame
    }
}

/// The header `send` puts before a frame in `{packet, N}` mode; empty otherwise.
pub(super) fn header(packet: Packet, len: usize) -> Result<([u8; 4], usize), IoError> {
    let Packet::Len(h) = packet else {
        return Ok(([0; 4], 0));
    };
    if len > packet.header_max() {
        return Err(IoError::Emsgsize);
    }
    let h = usize::from(h);
    let be = (len as u32).to_be_bytes();
    let mut out = [0u8; 4];
    out[..h].copy_from_slice(&be[4 - h..]);
    Ok((out, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn frames(f: &mut Framer, p: Packet) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(b) = f.next_frame(p, LIMIT).unwrap() {
            out.push(b.as_slice().to_vec());
        }
        out
    }

    fn framed(h: usize, body: &[u8]) -> Vec<u8> {
        let (hdr, n) = header(Packet::Len(h as u8), body.len()).unwrap();
        let mut v = hdr[..n].to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn packet_4_survives_1_byte_writes() {
        let bodies: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![], vec![7u8; 300], b"x".to_vec()];
        let stream: Vec<u8> = bodies.iter().flat_map(|b| framed(4, b)).collect();
        let mut f = Framer::new();
        let mut got = vec![];
        for byte in &stream {
            f.push(std::slice::from_ref(byte));
            got.extend(frames(&mut f, Packet::Len(4)));
        }
        assert_eq!(got, bodies);
        assert_eq!(f.buffered(), 0);
        assert_eq!(f.capacity(), 0, "an empty framer holds no buffer");
    }

    #[test]
    fn packet_1_and_2_and_coalesced_reads() {
        for h in [1usize, 2] {
            let stream: Vec<u8> = [framed(h, b"ab"), framed(h, b"cde"), framed(h, b"f")].concat();
            let mut f = Framer::new();
            f.push(&stream[..4]);
            assert_eq!(frames(&mut f, Packet::Len(h as u8)), vec![b"ab".to_vec()]);
            f.push(&stream[4..]);
            assert_eq!(
                frames(&mut f, Packet::Len(h as u8)),
                vec![b"cde".to_vec(), b"f".to_vec()]
            );
        }
    }

    #[test]
    fn an_oversize_header_is_rejected_before_any_body_is_buffered() {
        let mut f = Framer::new();
        f.push(&u32::MAX.to_be_bytes());
        assert_eq!(f.next_frame(Packet::Len(4), 1000), Err(IoError::Emsgsize));
        assert!(f.capacity() < 64, "no allocation for the announced 4 GiB");
        let mut f = Framer::new();
        f.push(&framed(4, &[1u8; 1001]));
        assert_eq!(f.next_frame(Packet::Len(4), 1000), Err(IoError::Emsgsize));
        let mut f = Framer::new();
        f.push(&framed(4, &[1u8; 1000]));
        assert_eq!(
            f.next_frame(Packet::Len(4), 1000).unwrap().unwrap().len(),
            1000
        );
    }

    #[test]
    fn a_huge_announced_frame_is_not_reserved_before_its_bytes_arrive() {
        let mut f = Framer::new();
        let limit = 64 << 20;
        f.push(&(60u32 << 20).to_be_bytes());
        assert_eq!(f.next_frame(Packet::Len(4), limit), Ok(None));
        // What arrived plus one read, at most doubled by the Vec's growth.
        let bound = |f: &Framer| 2 * (f.buffered() + READ_CHUNK);
        assert!(f.capacity() <= bound(&f), "reserved {} bytes", f.capacity());
        f.push(&[7; 1000]);
        assert_eq!(f.next_frame(Packet::Len(4), limit), Ok(None));
        assert!(f.capacity() <= bound(&f), "reserved {} bytes", f.capacity());
        // The frame still comes out whole once its bytes are in.
        let body = vec![9u8; 3 * READ_CHUNK];
        let mut f = Framer::new();
        f.push(&framed(4, &body)[..4]);
        assert_eq!(f.next_frame(Packet::Len(4), limit), Ok(None));
        for piece in body.chunks(1000) {
            f.push(piece);
        }
        let got = f.next_frame(Packet::Len(4), limit).unwrap().unwrap();
        assert_eq!(got.as_slice(), &body[..]);
    }

    #[test]
    fn lines_keep_their_newline_and_overlong_lines_are_errors() {
        let mut f = Framer::new();
        for piece in [&b"he"[..], b"llo\nwor", b"ld\n", b"\n", b"tail"] {
            f.push(piece);
        }
        assert_eq!(
            frames(&mut f, Packet::Line),
            vec![b"hello\n".to_vec(), b"world\n".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(f.buffered(), 4);
        let mut f = Framer::new();
        f.push(&[b'a'; 11]);
        assert_eq!(f.next_frame(Packet::Line, 10), Err(IoError::Emsgsize));
        let mut f = Framer::new();
        f.push(b"0123456789\n");
        assert_eq!(f.next_frame(Packet::Line, 10), Err(IoError::Emsgsize));
    }

    #[test]
    fn a_long_line_in_small_pieces_is_scanned_once() {
        let mut f = Framer::new();
        for _ in 0..10_000 {
            f.push(b"abcdefgh");
            assert_eq!(f.next_frame(Packet::Line, LIMIT), Ok(None));
        }
        assert_eq!(f.scanned - f.start, 80_000);
        f.push(b"\n");
        assert_eq!(
            f.next_frame(Packet::Line, LIMIT).unwrap().unwrap().len(),
            80_001
        );
    }

    #[test]
    fn raw_hands_out_everything_and_take_exact_waits_for_n() {
        let mut f = Framer::new();
        f.push(&[1u8; 100]);
        let b = f.next_frame(Packet::Raw, LIMIT).unwrap().unwrap();
        assert!(matches!(b, Binary::Refc(_)), "over 64 bytes: refcounted");
        assert_eq!(f.next_frame(Packet::Raw, LIMIT), Ok(None));
        f.push(b"abc");
        assert_eq!(f.take_exact(5), None);
        f.push(b"defg");
        assert_eq!(f.take_exact(5).unwrap().as_slice(), b"abcde");
        assert_eq!(f.take_exact(2).unwrap().as_slice(), b"fg");
        assert_eq!(f.take_exact(0), None);
    }

    #[test]
    fn send_headers_and_their_limits() {
        assert_eq!(header(Packet::Len(2), 258).unwrap(), ([1, 2, 0, 0], 2));
        assert_eq!(header(Packet::Len(4), 5).unwrap(), ([0, 0, 0, 5], 4));
        assert_eq!(header(Packet::Len(1), 256), Err(IoError::Emsgsize));
        assert_eq!(header(Packet::Raw, 1 << 30).unwrap().1, 0);
    }
}
