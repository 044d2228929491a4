//! [`Segments`]: encoded bytes that keep large shared binaries by reference, so that a
//! big binary goes from its own buffer to the socket (a vectored write) without being
//! copied into the frame, as erl writes a refc binary from where it is.
//!
//! The bytes are one contiguous `Vec<u8>` (headers, small terms, small binaries,
//! several frames back to back) and a list of *splices*: shared binaries to be written
//! at given offsets of that `Vec`. The stream they stand for is the `Vec`'s bytes with
//! each splice's bytes inserted at its offset, in order; [`Segments::to_vec`] builds it
//! (tests compare it with the contiguous encoding) and [`Segments::io_slices`] lends it
//! out as `IoSlice`s from any position (a partial write resumes where it stopped).

use std::io::IoSlice;

use super::encode::Sink;
use crate::term::Bytes;

/// Smallest shared binary kept by reference: below it a copy costs less than a
/// segment of its own (an iovec, a refcount).
pub const SPLICE_MIN: usize = 64 * 1024;

/// Encoded bytes with large shared binaries spliced in by reference (module docs).
#[derive(Default)]
pub struct Segments {
    bytes: Vec<u8>,
    /// `(offset in bytes, binary)`, offsets non-decreasing.
    splices: Vec<(usize, Bytes)>,
    /// Total length of the splices.
    spliced: usize,
}

/// A position in a [`Segments`] to roll back to ([`Segments::mark`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    bytes: usize,
    splices: usize,
    spliced: usize,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments")
            .field("len", &self.len())
            .field("splices", &self.splices.len())
            .finish()
    }
}

impl Segments {
    /// Empty.
    pub fn new() -> Self {
        Segments::default()
    }

    /// Length of the stream (owned bytes and splices).
    pub fn len(&self) -> usize {
        self.bytes.len() + self.spliced
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity of the owned part (what keeping this buffer costs, splices aside).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// How many binaries are held by reference.
    pub fn splice_count(&self) -> usize {
        self.splices.len()
    }

    /// Empties it, keeping the owned part's allocation (the splices' refcounts drop).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.splices.clear();
        self.spliced = 0;
    }

    /// The current end, to roll back to or to patch a length word at.
    pub fn mark(&self) -> Mark {
        Mark {
            bytes: self.bytes.len(),
            splices: self.splices.len(),
            spliced: self.spliced,
        }
    }

    /// Drops everything appended after `m`.
    pub fn truncate(&mut self, m: Mark) {
        self.bytes.truncate(m.bytes);
        self.splices.truncate(m.splices);
        self.spliced = m.spliced;
    }

    /// Stream length from `m` to the end.
    pub fn len_since(&self, m: Mark) -> usize {
        self.len() - (m.bytes + m.spliced)
    }

    /// Overwrites the 4 owned bytes at `m` (a frame's length word, appended as zeros
    /// right at `m`); `false` when there are not 4 owned bytes there.
    pub fn patch_u32(&mut self, m: Mark, value: u32) -> bool {
        match self.bytes.get_mut(m.bytes..m.bytes + 4) {
            Some(w) => {
                w.copy_from_slice(&value.to_be_bytes());
                true
            }
            None => false,
        }
    }

    /// The stream as one contiguous buffer (a copy: for tests and small uses).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let mut at = 0;
        for (off, b) in &self.splices {
            out.extend_from_slice(&self.bytes[at..*off]);
            out.extend_from_slice(b);
            at = *off;
        }
        out.extend_from_slice(&self.bytes[at..]);
        out
    }

    /// Appends to `out` the stream from position `from` on, as at most `max` slices
    /// (empty ones left out); what does not fit is for the next call.
    pub fn io_slices<'a>(&'a self, from: usize, out: &mut Vec<IoSlice<'a>>, max: usize) {
        // `skip`: how much of the stream is still before `from`.
        let mut skip = from;
        let mut at = 0;
        let mut push = |s: &'a [u8], out: &mut Vec<IoSlice<'a>>| {
            if skip >= s.len() {
                skip -= s.len();
            } else if out.len() < max {
                out.push(IoSlice::new(&s[skip..]));
                skip = 0;
            }
        };
        for (off, b) in &self.splices {
            push(&self.bytes[at..*off], out);
            push(b.as_slice(), out);
            at = *off;
        }
        push(&self.bytes[at..], out);
    }
}

impl Sink for Segments {
    #[inline]
    fn push(&mut self, byte: u8) {
        self.bytes.push(byte);
    }

    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn binary(&mut self, b: &Bytes) {
        // Only a shared binary is kept by reference: an owned one would have to be
        // copied to be kept, and is copied here instead.
        if b.is_shared() && b.len() >= SPLICE_MIN {
            self.spliced += b.len();
            self.splices.push((self.bytes.len(), b.clone()));
        } else {
            self.bytes.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{encode, encode_into};
    use crate::term::{SharedBuf, Term};
    use std::sync::Arc;

    fn shared(n: usize, seed: u8) -> Bytes {
        let v: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let owner: SharedBuf = Arc::new(v);
        Bytes::shared(owner)
    }

    fn flatten(s: &Segments, from: usize, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = from;
        loop {
            let mut v = Vec::new();
            s.io_slices(at, &mut v, max);
            if v.is_empty() {
                return out;
            }
            for sl in &v {
                out.extend_from_slice(sl);
                at += sl.len();
            }
        }
    }

    /// A term with shared binaries above and below the threshold, owned ones, back to
    /// back and nested: the segments hold exactly the contiguous encoding's bytes, and
    /// every starting position and slice budget reads the same stream.
    #[test]
    fn segments_are_the_contiguous_encoding() {
        let big1 = shared(SPLICE_MIN, 1);
        let big2 = shared(300_000, 2);
        let small = shared(SPLICE_MIN - 1, 3);
        let t = Term::tuple(vec![
            Term::Binary(big1.clone()),
            Term::Binary(big2.clone()),
            Term::list(vec![
                Term::Binary(small),
                Term::Binary(big1),
                Term::binary(vec![5u8; 100_000]),
                Term::atom("x"),
            ]),
            Term::Binary(big2),
            Term::Int(1),
        ]);
        let contiguous = encode(&t).expect("encodes");
        let mut s = Segments::new();
        encode_into(&mut s, &t).expect("encodes");
        assert_eq!(
            s.splice_count(),
            4,
            "the four big shared binaries by reference"
        );
        assert_eq!(s.len(), contiguous.len());
        assert_eq!(s.to_vec(), contiguous);
        for from in [
            0,
            1,
            5,
            6,
            SPLICE_MIN + 6,
            SPLICE_MIN + 7,
            contiguous.len() - 1,
        ] {
            for max in [1, 2, 3, 64] {
                assert_eq!(flatten(&s, from, max), contiguous[from..], "from {from}");
            }
        }
        assert!(flatten(&s, contiguous.len(), 8).is_empty());
    }

    #[test]
    fn truncate_and_patch() {
        let mut s = Segments::new();
        s.extend_from_slice(b"ab");
        let m = s.mark();
        s.extend_from_slice(&[0; 4]);
        s.binary(&shared(SPLICE_MIN, 0));
        assert_eq!(s.len_since(m), 4 + SPLICE_MIN);
        assert!(s.patch_u32(m, 7));
        assert_eq!(&s.to_vec()[..6], &[b'a', b'b', 0, 0, 0, 7]);
        s.truncate(m);
        assert_eq!(s.to_vec(), b"ab");
        assert_eq!(s.splice_count(), 0);
        assert!(!s.patch_u32(m, 1), "no owned bytes there any more");
    }
}
