//! The tagged 64-bit word: the unit every stored term is made of.
//!
//! Layout (low 4 bits are the tag; `x` is payload):
//!
//! ```text
//!  xxxx...xxx1   small integer, 63-bit signed (value = word as i64 >> 1)
//!  xxxx...0010   atom      payload = atom index (20 bits used)
//!  sss..s ii..i 0100  pid  bits 4..32 = index (28 bits), bits 32..64 = serial
//!  0000...0110   nil (the empty list)
//!  oooo...1000   boxed pointer into region 0 (young heap / the fragment)
//!  oooo...1010   cons pointer  into region 0
//!  oooo...1100   boxed pointer into region 1 (old heap)
//!  oooo...1110   cons pointer  into region 1
//!  pppp...ssss0000  header word (only inside memory, never a term):
//!                bits 4..8 = subtag, bits 8..64 = payload
//! ```
//!
//! Pointers hold a *word offset* (`o`, 60 bits) into their region's `Vec<u64>`, not a
//! machine address: all access is bounds-checked indexing, no `unsafe`. A fragment
//! has one region (0); a heap has two (0 = young, 1 = old), so every pointer says
//! which generation it points into and a minor GC can skip old pointers without
//! looking them up.
//!
//! Boxed objects start with a header (subtag, payload):
//!
//! | subtag | object | payload | words after the header |
//! |---|---|---|---|
//! | TUPLE | tuple | arity | `arity` terms |
//! | BIG_POS / BIG_NEG | integer outside the small range | limb count | limbs (raw, little-endian, no high zero limb) |
//! | FLOAT | float | 0 | 1 raw (f64 bits) |
//! | HEAP_BIN | binary <= 64 bytes | byte length | ceil(len/8) raw |
//! | REFC_BIN | large binary | index into the region's refc list | none |
//! | HEAP_STR | text (a Python `str`) <= 64 bytes of UTF-8 | byte length | ceil(len/8) raw |
//! | REFC_STR | larger text | index into the region's refc list | none |
//! | REF | reference | 0 | 1 raw (u64) |
//! | MAP | map | size n | n keys (sorted, term order) then n values |
//! | PID | pid whose index does not fit 28 bits | 0 | 1 raw (index << 32 \| serial) |
//! | EXT_PID | pid of another VM ([`ExternalPid`](super::ExternalPid)) | 0 | 3 raw: node atom index, id << 32 \| serial, creation |
//! | EXT_REF | reference of another VM ([`ExternalRef`](super::ExternalRef)) | word count n (1..=5) | 2 + ceil(n/2) raw: node atom index, creation, the words two per u64 (low half first) |
//! | FWD | forwarding marker, only during GC | new offset | — |
//!
//! Text is a binary flagged by its subtag (HEAP_STR / REFC_STR instead of HEAP_BIN /
//! REFC_BIN): the same bytes, but a distinct kind of term, so no binary, tuple or other
//! value a user builds can ever be read back as text (a Python `str` must not be
//! forgeable from bytes). Its bytes are valid UTF-8: only `&str` is ever written as
//! text.
//!
//! A cons cell is two term words (head, tail) with no header; since a header is
//! never a term, a GC can overwrite a moved cell's head with a FWD header. Memory is
//! *parseable* from any object boundary: a header says how many raw (non-term)
//! words follow it; every other word is a term. Copying, relocation and the GC scan
//! rely on this.

use super::{Atom, Pid};

/// Smallest integer stored as an immediate (63-bit signed).
pub const SMALL_INT_MIN: i64 = -(1 << 62);
/// Largest integer stored as an immediate.
pub const SMALL_INT_MAX: i64 = (1 << 62) - 1;

pub(crate) const TAG_MASK: u64 = 0xF;
pub(crate) const TAG_ATOM: u64 = 0x2;
pub(crate) const TAG_PID: u64 = 0x4;
pub(crate) const TAG_NIL: u64 = 0x6;
pub(crate) const TAG_HEADER: u64 = 0x0;
const PTR_BIT: u64 = 0x8;
const CONS_BIT: u64 = 0x2;
const OLD_BIT: u64 = 0x4;
const PTR_SHIFT: u32 = 4;

pub(crate) const SUB_TUPLE: u64 = 0;
pub(crate) const SUB_BIG_POS: u64 = 1;
pub(crate) const SUB_BIG_NEG: u64 = 2;
pub(crate) const SUB_FLOAT: u64 = 3;
pub(crate) const SUB_HEAP_BIN: u64 = 4;
pub(crate) const SUB_REFC_BIN: u64 = 5;
pub(crate) const SUB_REF: u64 = 6;
pub(crate) const SUB_MAP: u64 = 7;
pub(crate) const SUB_PID: u64 = 8;
pub(crate) const SUB_EXT_PID: u64 = 9;
pub(crate) const SUB_EXT_REF: u64 = 10;
pub(crate) const SUB_HEAP_STR: u64 = 11;
pub(crate) const SUB_REFC_STR: u64 = 12;
pub(crate) const SUB_FWD: u64 = 15;

/// Region of a pointer: 0 = young heap or fragment, 1 = old heap.
pub(crate) const YOUNG: bool = false;
pub(crate) const OLD: bool = true;

/// A tagged term word. Immediates (small ints, atoms, pids, nil) stand alone;
/// pointer words are only meaningful together with the fragment or heap they came
/// from.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Word(pub(crate) u64);

impl Word {
    /// The empty list.
    pub const NIL: Word = Word(TAG_NIL);

    /// A small integer, if `v` fits 63 bits.
    #[inline]
    pub const fn small_int(v: i64) -> Option<Word> {
        if v >= SMALL_INT_MIN && v <= SMALL_INT_MAX {
            Some(Word(((v << 1) | 1) as u64))
        } else {
            None
        }
    }

    #[inline]
    /// The word for atom `a`.
    pub const fn atom(a: Atom) -> Word {
        Word(((a.index() as u64) << PTR_SHIFT) | TAG_ATOM)
    }

    /// An immediate pid. Panics if `p.index` exceeds [`super::PID_INDEX_BITS`] bits:
    /// use [`Word::try_pid`] for pids from untrusted sources (fragments and heaps
    /// box such pids instead).
    #[inline]
    pub fn pid(p: Pid) -> Word {
        match Word::try_pid(p) {
            Some(w) => w,
            None => panic!("pid index {} does not fit an immediate word", p.index),
        }
    }

    #[inline]
    /// The word for pid `p`, or None if its index or serial does not fit an immediate.
    pub const fn try_pid(p: Pid) -> Option<Word> {
        if p.is_compact() {
            Some(Word(
                ((p.serial as u64) << 32) | ((p.index as u64) << PTR_SHIFT) | TAG_PID,
            ))
        } else {
            None
        }
    }

    /// The raw bits (for hashing, debugging, storing in atomics).
    #[inline]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    #[inline]
    /// True for a small integer.
    pub const fn is_small_int(self) -> bool {
        self.0 & 1 == 1
    }
    #[inline]
    /// True for an atom.
    pub const fn is_atom(self) -> bool {
        self.0 & TAG_MASK == TAG_ATOM
    }
    #[inline]
    /// True for a pid.
    pub const fn is_pid(self) -> bool {
        self.0 & TAG_MASK == TAG_PID
    }
    #[inline]
    /// True for the empty list.
    pub const fn is_nil(self) -> bool {
        self.0 == TAG_NIL
    }
    /// A pointer into memory (boxed or cons).
    #[inline]
    pub const fn is_pointer(self) -> bool {
        self.0 & (PTR_BIT | 1) == PTR_BIT
    }
    /// A term that needs no memory: small int, atom, pid or nil.
    #[inline]
    pub const fn is_immediate(self) -> bool {
        !self.is_pointer() && !is_header(self.0)
    }

    #[inline]
    /// The small integer, if this is one.
    pub const fn as_small_int(self) -> Option<i64> {
        if self.is_small_int() {
            Some((self.0 as i64) >> 1)
        } else {
            None
        }
    }
    #[inline]
    /// The atom, if this is one.
    pub const fn as_atom(self) -> Option<Atom> {
        if self.is_atom() {
            // Atom words are only made from `Atom`s (no public raw constructor).
            Some(Atom::from_index_unchecked((self.0 >> PTR_SHIFT) as u32))
        } else {
            None
        }
    }
    #[inline]
    /// The pid, if this is one.
    pub const fn as_pid(self) -> Option<Pid> {
        if self.is_pid() {
            Some(Pid {
                index: ((self.0 >> PTR_SHIFT) as u32) & super::MAX_PID_INDEX,
                serial: (self.0 >> 32) as u32,
            })
        } else {
            None
        }
    }

    // ---- crate-internal pointer helpers ----

    #[inline]
    pub(crate) const fn ptr(cons: bool, old: bool, offset: usize) -> Word {
        let mut bits = PTR_BIT | ((offset as u64) << PTR_SHIFT);
        if cons {
            bits |= CONS_BIT;
        }
        if old {
            bits |= OLD_BIT;
        }
        Word(bits)
    }
    #[inline]
    pub(crate) const fn is_cons(self) -> bool {
        self.0 & CONS_BIT != 0
    }
    #[inline]
    pub(crate) const fn is_old(self) -> bool {
        self.0 & OLD_BIT != 0
    }
    #[inline]
    pub(crate) const fn offset(self) -> usize {
        (self.0 >> PTR_SHIFT) as usize
    }
    /// The same pointer moved by `delta` words (relocation into a bigger region).
    #[inline]
    pub(crate) const fn relocated(self, delta: usize) -> Word {
        Word::ptr(self.is_cons(), self.is_old(), self.offset() + delta)
    }
}

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(i) = self.as_small_int() {
            write!(f, "Word(int {i})")
        } else if let Some(a) = self.as_atom() {
            write!(f, "Word(atom {a})")
        } else if let Some(p) = self.as_pid() {
            write!(f, "Word(pid {p})")
        } else if self.is_nil() {
            write!(f, "Word([])")
        } else if self.is_pointer() {
            write!(
                f,
                "Word({} -> {}@{})",
                if self.is_cons() { "cons" } else { "boxed" },
                if self.is_old() { "old" } else { "young" },
                self.offset()
            )
        } else {
            write!(f, "Word({:#x})", self.0)
        }
    }
}

// ---- header words ----

#[inline]
pub(crate) const fn is_header(w: u64) -> bool {
    w & TAG_MASK == TAG_HEADER
}
#[inline]
pub(crate) const fn header(sub: u64, payload: u64) -> u64 {
    (payload << 8) | (sub << 4) | TAG_HEADER
}
#[inline]
pub(crate) const fn subtag(h: u64) -> u64 {
    (h >> 4) & 0xF
}
#[inline]
pub(crate) const fn payload(h: u64) -> u64 {
    h >> 8
}

/// Whether a subtag is a refcounted buffer (binary or text): its payload indexes the
/// region's refc list, which copies and collections must rewrite.
#[inline]
pub(crate) const fn is_refc(sub: u64) -> bool {
    matches!(sub, SUB_REFC_BIN | SUB_REFC_STR)
}

/// Words of raw (non-term) data following a header.
#[inline]
pub(crate) const fn raw_words(h: u64) -> usize {
    match subtag(h) {
        SUB_BIG_POS | SUB_BIG_NEG => payload(h) as usize,
        SUB_FLOAT | SUB_REF | SUB_PID => 1,
        SUB_EXT_PID => 3,
        SUB_EXT_REF => 2 + (payload(h) as usize).div_ceil(2),
        SUB_HEAP_BIN | SUB_HEAP_STR => (payload(h) as usize).div_ceil(8),
        _ => 0,
    }
}

/// Total words of the boxed object whose header is `h`, header included.
#[inline]
pub(crate) const fn object_words(h: u64) -> usize {
    match subtag(h) {
        SUB_TUPLE => 1 + payload(h) as usize,
        SUB_MAP => 1 + 2 * payload(h) as usize,
        SUB_REFC_BIN | SUB_REFC_STR | SUB_FWD => 1,
        _ => 1 + raw_words(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates_round_trip() {
        for v in [0, 1, -1, SMALL_INT_MIN, SMALL_INT_MAX, 12345, -98765] {
            let w = Word::small_int(v).unwrap();
            assert_eq!(w.as_small_int(), Some(v));
            assert!(w.is_immediate());
        }
        assert!(Word::small_int(SMALL_INT_MAX + 1).is_none());
        assert!(Word::small_int(SMALL_INT_MIN - 1).is_none());
        let p = Pid::new(super::super::MAX_PID_INDEX, u32::MAX);
        assert_eq!(Word::pid(p).as_pid(), Some(p));
        assert!(Word::try_pid(Pid::new(1 << 28, 0)).is_none());
        assert_eq!(Word::atom(Atom::OK).as_atom(), Some(Atom::OK));
        assert!(Word::NIL.is_nil() && Word::NIL.is_immediate());
        let ptr = Word::ptr(true, OLD, 1234);
        assert!(ptr.is_pointer() && ptr.is_cons() && ptr.is_old() && !ptr.is_immediate());
        assert_eq!(ptr.offset(), 1234);
        assert!(!is_header(ptr.0));
        let h = header(SUB_HEAP_BIN, 17);
        assert!(is_header(h) && !Word(h).is_immediate());
        assert_eq!(object_words(h), 4);
        assert_eq!(object_words(header(SUB_EXT_PID, 0)), 4);
        assert_eq!(object_words(header(SUB_EXT_REF, 3)), 5);
        assert_eq!(object_words(header(SUB_EXT_REF, 5)), 6);
    }
}
