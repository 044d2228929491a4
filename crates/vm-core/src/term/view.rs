//! [`View`]: a borrowed, read-only look at a term stored in a fragment or a heap.
//!
//! A view is a word plus the memory it lives in (`Src`: a fragment, a heap or a
//! builder in progress). It is `Copy`, three words wide, and every accessor is
//! zero-copy: bytes of a binary are borrowed from the fragment/heap (inline ones)
//! or from the shared buffer (refcounted ones). Pointer words are resolved by
//! bounds-checked indexing into the region the pointer names, so a word that does
//! not belong to the memory it is viewed in is a logic error that panics — it is
//! never undefined behaviour.
//!
//! Equality, hashing, order and printing are the generic ones from `order.rs`, so
//! `view == other_view`, `view.eq_term(&term)` and `hash(view) == hash(term)` hold
//! across representations.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use num_bigint::BigInt;

use super::builder::FragmentBuilder;
use super::order::{self, BigRef, Node, TermLike};
use super::word::*;
use super::{
    Atom, Binary, ExternalPid, ExternalRef, Fragment, Heap, Pid, Ref, RefcBin, Term, MAX_REF_WORDS,
};

/// What a term is.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// An integer that fits `i64`.
    Int,
    /// An integer outside `i64`.
    BigInt,
    /// A float.
    Float,
    /// An atom.
    Atom,
    /// A binary.
    Binary,
    /// Text (a Python `str`): UTF-8 bytes, never equal to a binary.
    Str,
    /// A tuple.
    Tuple,
    /// The empty list.
    Nil,
    /// A non-empty proper list.
    List,
    /// A map.
    Map,
    /// A pid, local ([`View::as_pid`]) or of another VM ([`View::as_external_pid`]).
    Pid,
    /// A reference, local ([`View::as_ref`]) or of another VM
    /// ([`View::as_external_ref`]).
    Ref,
}

/// The memory a view reads.
#[derive(Copy, Clone)]
pub(crate) enum Src<'a> {
    Frag(&'a Fragment),
    Heap(&'a Heap),
    Build(&'a FragmentBuilder),
}

impl<'a> Src<'a> {
    #[inline]
    pub(crate) fn words(self, old: bool) -> &'a [u64] {
        match self {
            Src::Frag(f) => f.words(),
            Src::Heap(h) => h.region(old),
            Src::Build(b) => b.words(),
        }
    }
    #[inline]
    pub(crate) fn bins(self, old: bool) -> &'a [RefcBin] {
        match self {
            Src::Frag(f) => f.bins(),
            Src::Heap(h) => h.region_bins(old),
            Src::Build(b) => b.bins(),
        }
    }
}

/// A term inside a fragment or heap, borrowed.
#[derive(Copy, Clone)]
pub struct View<'a> {
    word: Word,
    src: Src<'a>,
}

impl<'a> View<'a> {
    #[inline]
    pub(crate) fn new(word: Word, src: Src<'a>) -> View<'a> {
        View { word, src }
    }
    #[inline]
    pub(crate) fn src(&self) -> Src<'a> {
        self.src
    }

    /// The term's word (an immediate, or a pointer valid in this view's memory).
    #[inline]
    pub fn word(&self) -> Word {
        self.word
    }

    /// `(region, offset, header)` of a boxed object.
    #[inline]
    fn boxed(&self) -> Option<(&'a [u64], usize, u64)> {
        let w = self.word;
        if w.is_pointer() && !w.is_cons() {
            let words = self.src.words(w.is_old());
            let off = w.offset();
            Some((words, off, words[off]))
        } else {
            None
        }
    }

    #[inline]
    fn boxed_of(&self, sub: u64) -> Option<(&'a [u64], usize, u64)> {
        self.boxed().filter(|&(_, _, h)| subtag(h) == sub)
    }

    /// What kind of term this is.
    pub fn kind(&self) -> Kind {
        let w = self.word;
        if w.is_small_int() {
            return Kind::Int;
        }
        if w.is_atom() {
            return Kind::Atom;
        }
        if w.is_pid() {
            return Kind::Pid;
        }
        if w.is_nil() {
            return Kind::Nil;
        }
        if w.is_cons() {
            return Kind::List;
        }
        match self
            .boxed()
            .map(|(words, off, h)| (subtag(h), words, off, h))
        {
            Some((SUB_TUPLE, ..)) => Kind::Tuple,
            Some((SUB_BIG_POS | SUB_BIG_NEG, words, off, h)) => {
                if big_as_i64(words, off, h).is_some() {
                    Kind::Int
                } else {
                    Kind::BigInt
                }
            }
            Some((SUB_FLOAT, ..)) => Kind::Float,
            Some((SUB_HEAP_BIN | SUB_REFC_BIN, ..)) => Kind::Binary,
            Some((SUB_HEAP_STR | SUB_REFC_STR, ..)) => Kind::Str,
            Some((SUB_REF, ..)) => Kind::Ref,
            Some((SUB_MAP, ..)) => Kind::Map,
            Some((SUB_PID | SUB_EXT_PID, ..)) => Kind::Pid,
            Some((SUB_EXT_REF, ..)) => Kind::Ref,
            // Not a term word (a header): never produced by this crate.
            _ => Kind::Nil,
        }
    }

    /// The integer, if this is an integer that fits `i64`.
    #[inline]
    pub fn as_int(&self) -> Option<i64> {
        if let Some(i) = self.word.as_small_int() {
            return Some(i);
        }
        let (words, off, h) = self.boxed()?;
        match subtag(h) {
            SUB_BIG_POS | SUB_BIG_NEG => big_as_i64(words, off, h),
            _ => None,
        }
    }

    /// Any integer, as a `BigInt`.
    pub fn as_bigint(&self) -> Option<BigInt> {
        match self.node() {
            Node::Int(i) => Some(BigInt::from(i)),
            Node::Big(b) => Some(b.to_bigint()),
            _ => None,
        }
    }

    /// The float, if this is one.
    pub fn as_float(&self) -> Option<f64> {
        self.boxed_of(SUB_FLOAT)
            .map(|(words, off, _)| f64::from_bits(words[off + 1]))
    }

    #[inline]
    /// The atom, if this is one.
    pub fn as_atom(&self) -> Option<Atom> {
        self.word.as_atom()
    }

    /// `true`/`false` atoms as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self.word.as_atom()? {
            Atom::TRUE => Some(true),
            Atom::FALSE => Some(false),
            _ => None,
        }
    }

    #[inline]
    /// The pid, if this is one.
    pub fn as_pid(&self) -> Option<Pid> {
        if let Some(p) = self.word.as_pid() {
            return Some(p);
        }
        self.boxed_of(SUB_PID).map(|(words, off, _)| {
            let raw = words[off + 1];
            Pid::new((raw >> 32) as u32, raw as u32)
        })
    }

    /// A pid of another VM.
    pub fn as_external_pid(&self) -> Option<ExternalPid> {
        self.boxed_of(SUB_EXT_PID)
            .map(|(words, off, _)| ext_pid(words, off))
    }

    /// A reference of another VM.
    pub fn as_external_ref(&self) -> Option<ExternalRef> {
        self.boxed_of(SUB_EXT_REF)
            .and_then(|(words, off, h)| ext_ref(words, off, h))
    }

    /// A local reference (a reference of another VM is [`View::as_external_ref`]).
    pub fn as_ref(&self) -> Option<Ref> {
        self.boxed_of(SUB_REF)
            .map(|(words, off, _)| Ref(words[off + 1]))
    }

    /// The bytes of a binary, borrowed (inline or refcounted).
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        let (words, off, h) = self.boxed()?;
        match subtag(h) {
            SUB_HEAP_BIN => Some(heap_bin_bytes(words, off, h)),
            SUB_REFC_BIN => Some(self.refc(h).as_slice()),
            _ => None,
        }
    }

    /// The shared buffer of a refcounted binary (a refcount bump, no copy).
    pub fn as_refc_binary(&self) -> Option<RefcBin> {
        self.boxed_of(SUB_REFC_BIN)
            .map(|(_, _, h)| self.refc(h).clone())
    }

    /// The UTF-8 bytes of a text term, borrowed (never checked again: only `&str`
    /// is written as text).
    pub fn as_str_bytes(&self) -> Option<&'a [u8]> {
        let (words, off, h) = self.boxed()?;
        match subtag(h) {
            SUB_HEAP_STR => Some(heap_bin_bytes(words, off, h)),
            SUB_REFC_STR => Some(self.refc(h).as_slice()),
            _ => None,
        }
    }

    /// The text of a text term.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_str_bytes()?).ok()
    }

    #[inline]
    fn refc(&self, h: u64) -> &'a RefcBin {
        &self.src.bins(self.word.is_old())[payload(h) as usize]
    }

    /// True for the empty list.
    pub fn is_nil(&self) -> bool {
        self.word.is_nil()
    }

    #[inline]
    /// The arity, if this is a tuple.
    pub fn tuple_len(&self) -> Option<usize> {
        self.boxed_of(SUB_TUPLE)
            .map(|(_, _, h)| payload(h) as usize)
    }

    /// Element `i` (0-based) of a tuple.
    #[inline]
    pub fn tuple_get(&self, i: usize) -> Option<View<'a>> {
        let (words, off, h) = self.boxed_of(SUB_TUPLE)?;
        if i < payload(h) as usize {
            Some(View::new(Word(words[off + 1 + i]), self.src))
        } else {
            None
        }
    }

    /// The elements, if this is a tuple.
    pub fn tuple_iter(&self) -> Option<TupleIter<'a>> {
        let (words, off, h) = self.boxed_of(SUB_TUPLE)?;
        Some(TupleIter {
            src: self.src,
            words,
            next: off + 1,
            end: off + 1 + payload(h) as usize,
        })
    }

    /// The elements of a proper list (`[]` gives an empty iterator); `None` if
    /// this is not a list.
    pub fn list_iter(&self) -> Option<ListIter<'a>> {
        if self.word.is_nil() || (self.word.is_pointer() && self.word.is_cons()) {
            Some(ListIter {
                cur: self.word,
                src: self.src,
            })
        } else {
            None
        }
    }

    /// The number of entries, if this is a map.
    pub fn map_len(&self) -> Option<usize> {
        self.boxed_of(SUB_MAP).map(|(_, _, h)| payload(h) as usize)
    }

    /// Entries of a map, in key order.
    pub fn map_iter(&self) -> Option<MapIter<'a>> {
        let (words, off, h) = self.boxed_of(SUB_MAP)?;
        let n = payload(h) as usize;
        Some(MapIter {
            src: self.src,
            words,
            keys: off + 1,
            n,
            i: 0,
        })
    }

    /// The value under `key` (binary search over the sorted keys).
    pub fn map_get(&self, key: &Term) -> Option<View<'a>> {
        self.map_find(|k| order::cmp(k, key))
    }

    /// The value under a key given as a view (possibly from other memory).
    pub fn map_get_view(&self, key: View<'_>) -> Option<View<'a>> {
        self.map_find(|k| order::cmp(k, key))
    }

    fn map_find(&self, mut cmp_key: impl FnMut(View<'a>) -> Ordering) -> Option<View<'a>> {
        let (words, off, h) = self.boxed_of(SUB_MAP)?;
        let n = payload(h) as usize;
        let keys = &words[off + 1..off + 1 + n];
        let i = keys
            .binary_search_by(|&k| cmp_key(View::new(Word(k), self.src)))
            .ok()?;
        Some(View::new(Word(words[off + 1 + n + i]), self.src))
    }

    /// An owned copy (refcounted binaries are shared, not copied).
    pub fn to_term(&self) -> Term {
        match self.node() {
            Node::Int(i) => Term::Int(i),
            Node::Big(b) => Term::BigInt(Box::new(b.to_bigint())),
            Node::Float(f) => Term::Float(f),
            Node::Atom(a) => Term::Atom(a),
            Node::Ref(r) => Term::Ref(Ref(r)),
            Node::Pid(p) => Term::Pid(p),
            Node::ExtRef(r) => Term::ExternalRef(r),
            Node::ExtPid(p) => Term::ExternalPid(p),
            Node::Bin(bytes) => match self.as_refc_binary() {
                Some(r) => Term::Binary(Binary::Refc(r)),
                None => Term::Binary(Binary::Inline(bytes.to_vec())),
            },
            Node::Str(bytes) => match self.boxed_of(SUB_REFC_STR) {
                Some((_, _, h)) => Term::Str(Binary::Refc(self.refc(h).clone())),
                None => Term::Str(Binary::Inline(bytes.to_vec())),
            },
            Node::Tuple(_, xs) => Term::Tuple(xs.map(|x| x.to_term()).collect()),
            Node::Nil => Term::List(Vec::new()),
            Node::List(xs) => Term::List(xs.map(|x| x.to_term()).collect()),
            Node::Map(_, xs) => Term::Map(xs.map(|(k, v)| (k.to_term(), v.to_term())).collect()),
        }
    }

    /// Exact equality (`=:=`) with an owned term, without allocating.
    pub fn eq_term(&self, t: &Term) -> bool {
        order::eq(*self, t)
    }

    /// Term order against an owned term.
    pub fn cmp_term(&self, t: &Term) -> Ordering {
        order::cmp(*self, t)
    }

    /// Term order against another view.
    pub fn term_cmp(&self, other: &View<'_>) -> Ordering {
        order::cmp(*self, *other)
    }

    /// Words this term occupies (as a fragment would hold it; shared subterms are
    /// counted once per reference, as a copy would make them).
    pub fn size_words(&self) -> usize {
        super::encode::view_words(*self)
    }
}

fn big_as_i64(words: &[u64], off: usize, h: u64) -> Option<i64> {
    let n = payload(h) as usize;
    let mag = match n {
        0 => 0,
        1 => words[off + 1],
        _ => return None,
    };
    if subtag(h) == SUB_BIG_NEG {
        if mag <= 1 << 63 {
            Some((mag as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(mag).ok()
    }
}

fn ext_pid(words: &[u64], off: usize) -> ExternalPid {
    let ids = words[off + 2];
    ExternalPid {
        // Written from an `Atom` by `write_external_pid`.
        node: Atom::from_index_unchecked(words[off + 1] as u32),
        id: (ids >> 32) as u32,
        serial: ids as u32,
        creation: words[off + 3] as u32,
    }
}

fn ext_ref(words: &[u64], off: usize, h: u64) -> Option<ExternalRef> {
    let n = payload(h) as usize;
    let mut ws = [0u32; MAX_REF_WORDS];
    for (i, w) in ws.iter_mut().enumerate().take(n.min(MAX_REF_WORDS)) {
        let pair = words[off + 3 + i / 2];
        *w = if i % 2 == 0 {
            pair as u32
        } else {
            (pair >> 32) as u32
        };
    }
    ExternalRef::new(
        Atom::from_index_unchecked(words[off + 1] as u32),
        words[off + 2] as u32,
        &ws[..n.min(MAX_REF_WORDS)],
    )
}

fn heap_bin_bytes(words: &[u64], off: usize, h: u64) -> &[u8] {
    let len = payload(h) as usize;
    let raw = &words[off + 1..off + 1 + len.div_ceil(8)];
    &bytemuck::cast_slice::<u64, u8>(raw)[..len]
}

impl<'a> TermLike<'a> for View<'a> {
    type Elems = TupleIter<'a>;
    type List = ListIter<'a>;
    type Pairs = MapIter<'a>;

    fn node(self) -> Node<'a, Self> {
        let w = self.word;
        if let Some(i) = w.as_small_int() {
            return Node::Int(i);
        }
        if let Some(a) = w.as_atom() {
            return Node::Atom(a);
        }
        if let Some(p) = w.as_pid() {
            return Node::Pid(p);
        }
        if w.is_nil() {
            return Node::Nil;
        }
        if w.is_cons() {
            return Node::List(ListIter {
                cur: w,
                src: self.src,
            });
        }
        let Some((words, off, h)) = self.boxed() else {
            return Node::Nil;
        };
        match subtag(h) {
            SUB_TUPLE => {
                let n = payload(h) as usize;
                Node::Tuple(
                    n,
                    TupleIter {
                        src: self.src,
                        words,
                        next: off + 1,
                        end: off + 1 + n,
                    },
                )
            }
            SUB_BIG_POS | SUB_BIG_NEG => match big_as_i64(words, off, h) {
                Some(i) => Node::Int(i),
                None => Node::Big(BigRef::Limbs {
                    neg: subtag(h) == SUB_BIG_NEG,
                    limbs: &words[off + 1..off + 1 + payload(h) as usize],
                }),
            },
            SUB_FLOAT => Node::Float(f64::from_bits(words[off + 1])),
            SUB_HEAP_BIN => Node::Bin(heap_bin_bytes(words, off, h)),
            SUB_REFC_BIN => Node::Bin(self.refc(h).as_slice()),
            SUB_HEAP_STR => Node::Str(heap_bin_bytes(words, off, h)),
            SUB_REFC_STR => Node::Str(self.refc(h).as_slice()),
            SUB_REF => Node::Ref(words[off + 1]),
            SUB_PID => {
                let raw = words[off + 1];
                Node::Pid(Pid::new((raw >> 32) as u32, raw as u32))
            }
            SUB_EXT_PID => Node::ExtPid(ext_pid(words, off)),
            SUB_EXT_REF => match ext_ref(words, off, h) {
                Some(r) => Node::ExtRef(r),
                None => Node::Nil,
            },
            SUB_MAP => {
                let n = payload(h) as usize;
                Node::Map(
                    n,
                    MapIter {
                        src: self.src,
                        words,
                        keys: off + 1,
                        n,
                        i: 0,
                    },
                )
            }
            _ => Node::Nil,
        }
    }
}

/// Elements of a tuple.
#[derive(Clone)]
pub struct TupleIter<'a> {
    src: Src<'a>,
    words: &'a [u64],
    next: usize,
    end: usize,
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = View<'a>;
    #[inline]
    fn next(&mut self) -> Option<View<'a>> {
        if self.next < self.end {
            let v = View::new(Word(self.words[self.next]), self.src);
            self.next += 1;
            Some(v)
        } else {
            None
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}
impl ExactSizeIterator for TupleIter<'_> {}

/// Elements of a proper list.
#[derive(Clone)]
pub struct ListIter<'a> {
    cur: Word,
    src: Src<'a>,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = View<'a>;
    #[inline]
    fn next(&mut self) -> Option<View<'a>> {
        let w = self.cur;
        if !(w.is_pointer() && w.is_cons()) {
            return None;
        }
        let words = self.src.words(w.is_old());
        let off = w.offset();
        self.cur = Word(words[off + 1]);
        Some(View::new(Word(words[off]), self.src))
    }
}

/// Entries of a map in key order.
#[derive(Clone)]
pub struct MapIter<'a> {
    src: Src<'a>,
    words: &'a [u64],
    keys: usize,
    n: usize,
    i: usize,
}

impl<'a> Iterator for MapIter<'a> {
    type Item = (View<'a>, View<'a>);
    #[inline]
    fn next(&mut self) -> Option<(View<'a>, View<'a>)> {
        if self.i < self.n {
            let k = View::new(Word(self.words[self.keys + self.i]), self.src);
            let v = View::new(Word(self.words[self.keys + self.n + self.i]), self.src);
            self.i += 1;
            Some((k, v))
        } else {
            None
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.n - self.i;
        (n, Some(n))
    }
}
impl ExactSizeIterator for MapIter<'_> {}

impl PartialEq for View<'_> {
    fn eq(&self, other: &Self) -> bool {
        order::eq(*self, *other)
    }
}
impl Eq for View<'_> {}

impl PartialEq<Term> for View<'_> {
    fn eq(&self, other: &Term) -> bool {
        order::eq(*self, other)
    }
}

/// Consistent with `Term`'s `Hash`: a view and the term it holds hash alike.
impl Hash for View<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        order::hash(*self, state)
    }
}

impl fmt::Display for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        order::fmt(*self, f)
    }
}
impl fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        order::fmt(*self, f)
    }
}
