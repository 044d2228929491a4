//! [`Fragment`]: a self-contained term in one allocation — the form a message
//! travels in.
//!
//! Layout: `root` (a word), `words` (one boxed slice: the whole term, pointers are
//! offsets into it, region 0) and `bins` (the refcounted binaries the term's
//! REFC_BIN objects index, boxed and only allocated when there is one). Total
//! size: 32 bytes.
//!
//! Invariants:
//! - An immediate term (small int, atom, compact pid, nil) has `words` empty and
//!   `bins` `None`: making, cloning, moving and dropping it allocate nothing.
//! - `words` is parseable from offset 0 (see `word.rs`) and every pointer in it,
//!   and `root`, points inside it; every REFC_BIN payload indexes `bins`.
//! - A fragment never shares words with anything: `Clone` is a deep copy (one
//!   allocation of words) and refc binaries are shared by refcount, never copied.
//!   Dropping the fragment drops its refc handles.
//! - `Send + Sync`: plain data plus `Arc`s.

use std::fmt;

use super::encode;
use super::word::{header, SUB_TUPLE, YOUNG};

/// Largest tuple `from_term` writes through the all-immediates fast path.
const FLAT_TUPLE_MAX: usize = 8;
use super::view::{Src, View};
use super::{RefcBin, Term, TermError, Word};

/// An owned, self-contained term.
pub struct Fragment {
    root: Word,
    words: Box<[u64]>,
    // A thin pointer (8 bytes) keeps `Fragment` at 32 bytes; the extra indirection
    // only exists for terms holding large binaries.
    #[allow(clippy::box_collection)]
    bins: Option<Box<Vec<RefcBin>>>,
}

impl Fragment {
    /// An immediate term: no allocation. A word that is not an immediate (a
    /// pointer, meaningless without its heap) gives `[]` (and asserts in debug
    /// builds); use [`Fragment::try_immediate`] to check.
    #[inline]
    pub fn immediate(w: Word) -> Fragment {
        debug_assert!(w.is_immediate(), "Fragment::immediate({w:?})");
        Fragment {
            root: if w.is_immediate() { w } else { Word::NIL },
            words: Box::new([]),
            bins: None,
        }
    }

    #[inline]
    /// A fragment holding one immediate word, or `NotImmediate` for a word that points into memory.
    pub fn try_immediate(w: Word) -> Result<Fragment, TermError> {
        if w.is_immediate() {
            Ok(Fragment::immediate(w))
        } else {
            Err(TermError::NotImmediate)
        }
    }

    /// Assembles a fragment from parts produced by the writers (crate-internal).
    #[inline]
    pub(crate) fn from_parts(root: Word, words: Vec<u64>, bins: Vec<RefcBin>) -> Fragment {
        Fragment {
            root,
            words: words.into_boxed_slice(),
            bins: if bins.is_empty() {
                None
            } else {
                Some(Box::new(bins))
            },
        }
    }

    /// Encodes `t`: one exact-size allocation of words (plus a refc list if the
    /// term holds large binaries).
    pub fn from_term(t: &Term) -> Fragment {
        if let Some(w) = encode::immediate_of(t) {
            return Fragment::immediate(w);
        }
        if let Term::Tuple(elems) = t {
            // Fast path for the common `{tag, pid, value}` message: no size pass.
            if let Some(f) = Fragment::flat_tuple(elems) {
                return f;
            }
        }
        let mut words = Vec::with_capacity(encode::words_needed(t));
        let mut bins = Vec::new();
        let root = encode::write_term(&mut words, &mut bins, t);
        Fragment::from_parts(root, words, bins)
    }

    /// A tuple of immediates, written in one go (`None` if an element is boxed).
    #[inline]
    fn flat_tuple(elems: &[Term]) -> Option<Fragment> {
        if elems.len() > FLAT_TUPLE_MAX {
            return None;
        }
        let mut buf = [0u64; FLAT_TUPLE_MAX];
        for (slot, e) in buf.iter_mut().zip(elems) {
            *slot = encode::immediate_of(e)?.to_bits();
        }
        let mut words = Vec::with_capacity(1 + elems.len());
        words.push(header(SUB_TUPLE, elems.len() as u64));
        words.extend_from_slice(&buf[..elems.len()]);
        Some(Fragment {
            root: Word::ptr(false, YOUNG, 0),
            words: words.into_boxed_slice(),
            bins: None,
        })
    }

    /// A deep copy of a term in a heap or another fragment (refc binaries shared).
    pub fn copy_of(v: View<'_>) -> Fragment {
        let w = v.word();
        if !w.is_pointer() {
            return Fragment::immediate(w);
        }
        let mut words = Vec::with_capacity(v.size_words());
        let mut bins = Vec::new();
        let root = encode::copy_view(&mut words, &mut bins, v);
        Fragment::from_parts(root, words, bins)
    }

    #[inline]
    /// A read-only view of the term.
    pub fn view(&self) -> View<'_> {
        View::new(self.root, Src::Frag(self))
    }

    /// The term as an owned [`Term`].
    pub fn to_term(&self) -> Term {
        self.view().to_term()
    }

    /// The root word (an immediate, or a pointer into this fragment's words).
    #[inline]
    pub fn root(&self) -> Word {
        self.root
    }

    /// Whether the term is an immediate (no words).
    #[inline]
    pub fn is_immediate(&self) -> bool {
        self.words.is_empty()
    }

    /// Bytes of term data: the words, inline binaries included. Refcounted binaries
    /// are not counted (they are in `binary_bytes()`, once, however shared).
    #[inline]
    pub fn byte_size(&self) -> usize {
        self.words.len() * 8
    }

    /// Words of term data.
    #[inline]
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// Refcounted binaries this fragment holds.
    pub fn refc_binaries(&self) -> &[RefcBin] {
        self.bins()
    }

    #[inline]
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    #[inline]
    pub(crate) fn bins(&self) -> &[RefcBin] {
        match &self.bins {
            Some(b) => b,
            None => &[],
        }
    }

    /// Takes the fragment apart (for attaching to a heap).
    pub(crate) fn into_parts(self) -> (Word, Box<[u64]>, Vec<RefcBin>) {
        (
            self.root,
            self.words,
            self.bins.map(|b| *b).unwrap_or_default(),
        )
    }
}

impl Clone for Fragment {
    fn clone(&self) -> Fragment {
        Fragment {
            root: self.root,
            words: self.words.clone(),
            bins: self.bins.clone(),
        }
    }
}

impl From<&Term> for Fragment {
    fn from(t: &Term) -> Fragment {
        Fragment::from_term(t)
    }
}

impl PartialEq for Fragment {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}
impl Eq for Fragment {}

impl fmt::Display for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.view(), f)
    }
}
impl fmt::Debug for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fragment({})", self.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::{Atom, Pid};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn size_and_send() {
        assert_send_sync::<Fragment>();
        assert!(std::mem::size_of::<Fragment>() <= 32);
    }

    #[test]
    fn small_tuple() {
        let t = Term::tuple(vec![
            Term::Atom(Atom::OK),
            Term::Int(42),
            Term::pid(Pid::new(3, 0)),
        ]);
        let f = Fragment::from_term(&t);
        assert_eq!(f.word_count(), 4);
        let v = f.view();
        assert_eq!(v.tuple_len(), Some(3));
        assert_eq!(v.tuple_get(1).and_then(|x| x.as_int()), Some(42));
        assert_eq!(f.to_term(), t);
        assert_eq!(f.clone().to_term(), t);
        assert_eq!(Fragment::copy_of(v).to_term(), t);
    }
}
