//! Writing terms into word memory: from a [`Term`], from a [`View`] (deep copy),
//! and relocating a flat fragment into a bigger region.
//!
//! All writers append to a `Vec<u64>` region plus its refc list and return the
//! root word; pointers they write are absolute offsets into that region, tagged
//! region 0 (young heap / fragment). Invariants they keep:
//! - Memory stays parseable (see `word.rs`): objects are written whole, placeholder
//!   words are overwritten before the writer returns.
//! - Integers are normalised (small immediate, else boxed with minimal limbs), maps
//!   are sorted with unique keys, binaries over `HEAP_BINARY_MAX` bytes are refc
//!   (an oversized `Binary::Inline` is moved to a `RefcBin`), pids whose index does
//!   not fit 28 bits are boxed.
//! - Each REFC_BIN object owns one entry of the region's refc list (its payload is
//!   the entry's index), so a collector can rebuild the list from the live objects.
//!
//! Copying from a view (`copy_view`) is a Cheney copy: the root object is copied,
//! then the destination is scanned once, left to right, copying whatever each
//! not-yet-scanned pointer refers to. No recursion, so a list of a million elements
//! (or a deeply nested term) is copied in constant stack; like BEAM's copy, shared
//! subterms are copied once per reference.

use num_bigint::{BigInt, Sign};

use super::binary::HEAP_BINARY_MAX;
use super::order::TermLike;
use super::view::{Src, View};
use super::word::*;
use super::{Binary, ExternalPid, ExternalRef, Pid, RefcBin, Term};

/// Words a term needs when written (an upper bound for maps with duplicate keys).
pub(crate) fn words_needed(t: &Term) -> usize {
    match t {
        Term::Int(i) => {
            if Word::small_int(*i).is_some() {
                0
            } else {
                2
            }
        }
        Term::BigInt(b) => 1 + b.magnitude().to_u64_digits().len(),
        Term::Float(_) | Term::Ref(_) => 2,
        Term::ExternalPid(_) => 4,
        Term::ExternalRef(r) => 3 + r.words().len().div_ceil(2),
        Term::Atom(_) => 0,
        Term::Pid(p) => {
            if p.is_compact() {
                0
            } else {
                2
            }
        }
        Term::Binary(b) | Term::Str(b) => bin_words(b),
        Term::Tuple(v) => 1 + v.len() + v.iter().map(words_needed).sum::<usize>(),
        Term::List(v) => 2 * v.len() + v.iter().map(words_needed).sum::<usize>(),
        Term::Map(m) => {
            1 + 2 * m.len()
                + m.iter()
                    .map(|(k, v)| words_needed(k) + words_needed(v))
                    .sum::<usize>()
        }
    }
}

fn bin_words(b: &Binary) -> usize {
    match b {
        Binary::Inline(v) if v.len() <= HEAP_BINARY_MAX => 1 + v.len().div_ceil(8),
        _ => 1,
    }
}

/// The immediate word for `t`, if it is one.
#[inline]
pub(crate) fn immediate_of(t: &Term) -> Option<Word> {
    match t {
        Term::Int(i) => Word::small_int(*i),
        Term::Atom(a) => Some(Word::atom(*a)),
        Term::Pid(p) => Word::try_pid(*p),
        Term::List(v) if v.is_empty() => Some(Word::NIL),
        _ => None,
    }
}

pub(crate) fn write_int(words: &mut Vec<u64>, i: i64) -> Word {
    if let Some(w) = Word::small_int(i) {
        return w;
    }
    let off = words.len();
    let sub = if i < 0 { SUB_BIG_NEG } else { SUB_BIG_POS };
    words.push(header(sub, 1));
    words.push(i.unsigned_abs());
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_bigint(words: &mut Vec<u64>, b: &BigInt) -> Word {
    if let Ok(i) = i64::try_from(b) {
        return write_int(words, i);
    }
    let limbs = b.magnitude().to_u64_digits();
    let off = words.len();
    let sub = if b.sign() == Sign::Minus {
        SUB_BIG_NEG
    } else {
        SUB_BIG_POS
    };
    words.push(header(sub, limbs.len() as u64));
    words.extend_from_slice(&limbs);
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_float(words: &mut Vec<u64>, f: f64) -> Word {
    let off = words.len();
    words.push(header(SUB_FLOAT, 0));
    words.push(f.to_bits());
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_ref(words: &mut Vec<u64>, r: u64) -> Word {
    let off = words.len();
    words.push(header(SUB_REF, 0));
    words.push(r);
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_pid(words: &mut Vec<u64>, p: Pid) -> Word {
    if let Some(w) = Word::try_pid(p) {
        return w;
    }
    let off = words.len();
    words.push(header(SUB_PID, 0));
    words.push(((p.index as u64) << 32) | p.serial as u64);
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_external_pid(words: &mut Vec<u64>, p: &ExternalPid) -> Word {
    let off = words.len();
    words.push(header(SUB_EXT_PID, 0));
    words.push(u64::from(p.node.index()));
    words.push((u64::from(p.id) << 32) | u64::from(p.serial));
    words.push(u64::from(p.creation));
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_external_ref(words: &mut Vec<u64>, r: &ExternalRef) -> Word {
    let off = words.len();
    let ws = r.words();
    words.push(header(SUB_EXT_REF, ws.len() as u64));
    words.push(u64::from(r.node().index()));
    words.push(u64::from(r.creation()));
    for pair in ws.chunks(2) {
        let hi = pair.get(1).copied().unwrap_or(0);
        words.push(u64::from(pair[0]) | (u64::from(hi) << 32));
    }
    Word::ptr(false, YOUNG, off)
}

/// A binary: inline when small, else a fresh (copied) refc buffer.
pub(crate) fn write_bytes(words: &mut Vec<u64>, bins: &mut Vec<RefcBin>, b: &[u8]) -> Word {
    write_bytes_as(words, bins, false, b)
}

/// Text (UTF-8, a `&str`'s bytes): inline when small, else a fresh refc buffer; the
/// same layout as a binary under the text subtags (see `word.rs`).
pub(crate) fn write_str(words: &mut Vec<u64>, bins: &mut Vec<RefcBin>, s: &str) -> Word {
    write_bytes_as(words, bins, true, s.as_bytes())
}

fn write_bytes_as(words: &mut Vec<u64>, bins: &mut Vec<RefcBin>, text: bool, b: &[u8]) -> Word {
    if b.len() <= HEAP_BINARY_MAX {
        write_inline(words, if text { SUB_HEAP_STR } else { SUB_HEAP_BIN }, b)
    } else {
        write_refc_as(words, bins, text, RefcBin::from_slice(b))
    }
}

/// Bytes inline after a header of subtag `sub` (HEAP_BIN or HEAP_STR).
fn write_inline(words: &mut Vec<u64>, sub: u64, b: &[u8]) -> Word {
    let off = words.len();
    let n = b.len().div_ceil(8);
    words.push(header(sub, b.len() as u64));
    words.resize(off + 1 + n, 0);
    bytemuck::cast_slice_mut::<u64, u8>(&mut words[off + 1..])[..b.len()].copy_from_slice(b);
    Word::ptr(false, YOUNG, off)
}

pub(crate) fn write_refc(words: &mut Vec<u64>, bins: &mut Vec<RefcBin>, r: RefcBin) -> Word {
    write_refc_as(words, bins, false, r)
}

/// A shared buffer as a binary or (`text`, UTF-8 bytes only) as text.
pub(crate) fn write_refc_as(
    words: &mut Vec<u64>,
    bins: &mut Vec<RefcBin>,
    text: bool,
    r: RefcBin,
) -> Word {
    let off = words.len();
    let sub = if text { SUB_REFC_STR } else { SUB_REFC_BIN };
    words.push(header(sub, bins.len() as u64));
    bins.push(r);
    Word::ptr(false, YOUNG, off)
}

/// Writes `t`; returns its word.
pub(crate) fn write_term(words: &mut Vec<u64>, bins: &mut Vec<RefcBin>, t: &Term) -> Word {
    match t {
        Term::Int(i) => write_int(words, *i),
        Term::BigInt(b) => write_bigint(words, b),
        Term::Float(f) => write_float(words, *f),
        Term::Atom(a) => Word::atom(*a),
        Term::Pid(p) => write_pid(words, *p),
        Term::Ref(r) => write_ref(words, r.0),
        Term::ExternalPid(p) => write_external_pid(words, p),
        Term::ExternalRef(r) => write_external_ref(words, r),
        Term::Binary(Binary::Refc(r)) => write_refc(words, bins, r.clone()),
        Term::Binary(Binary::Inline(v)) => write_bytes(words, bins, v),
        Term::Str(Binary::Refc(r)) => write_refc_as(words, bins, true, r.clone()),
        Term::Str(Binary::Inline(v)) => write_bytes_as(words, bins, true, v),
        Term::Tuple(v) => {
            let off = words.len();
            words.push(header(SUB_TUPLE, v.len() as u64));
            words.resize(off + 1 + v.len(), Word::NIL.0);
            for (i, e) in v.iter().enumerate() {
                let w = write_term(words, bins, e);
                words[off + 1 + i] = w.0;
            }
            Word::ptr(false, YOUNG, off)
        }
        Term::List(v) => {
            if v.is_empty() {
                return Word::NIL;
            }
            let off = words.len();
            let n = v.len();
            words.resize(off + 2 * n, Word::NIL.0);
            for (i, e) in v.iter().enumerate() {
                let w = write_term(words, bins, e);
                let cell = off + 2 * i;
                words[cell] = w.0;
                if i + 1 < n {
                    words[cell + 1] = Word::ptr(true, YOUNG, cell + 2).0;
                }
            }
            Word::ptr(true, YOUNG, off)
        }
        Term::Map(m) => {
            let sorted = m.windows(2).all(|p| p[0].0 < p[1].0);
            if sorted {
                write_map(words, bins, m.iter().map(|(k, v)| (k, v)), m.len())
            } else {
                // A hand-built, unsorted map: normalise (last duplicate wins).
                let mut refs: Vec<&(Term, Term)> = m.iter().rev().collect();
                refs.sort_by(|a, b| a.0.cmp(&b.0));
                refs.dedup_by(|later, first| later.0 == first.0);
                let n = refs.len();
                write_map(words, bins, refs.into_iter().map(|(k, v)| (k, v)), n)
            }
        }
    }
}

fn write_map<'t>(
    words: &mut Vec<u64>,
    bins: &mut Vec<RefcBin>,
    pairs: impl Iterator<Item = (&'t Term, &'t Term)>,
    n: usize,
) -> Word {
    let off = words.len();
    words.push(header(SUB_MAP, n as u64));
    words.resize(off + 1 + 2 * n, Word::NIL.0);
    for (i, (k, v)) in pairs.enumerate() {
        let kw = write_term(words, bins, k);
        words[off + 1 + i] = kw.0;
        let vw = write_term(words, bins, v);
        words[off + 1 + n + i] = vw.0;
    }
    Word::ptr(false, YOUNG, off)
}

/// Copies one object that `w` (a pointer valid in `src`) refers to, appending it
/// to `dst`; its inner pointers still refer to `src` until scanned.
#[inline]
fn copy_object(dst: &mut Vec<u64>, dst_bins: &mut Vec<RefcBin>, src: Src<'_>, w: Word) -> Word {
    let mem = src.words(w.is_old());
    let off = w.offset();
    let new = dst.len();
    if w.is_cons() {
        dst.extend_from_slice(&mem[off..off + 2]);
        return Word::ptr(true, YOUNG, new);
    }
    let h = mem[off];
    if is_refc(subtag(h)) {
        let bin = src.bins(w.is_old())[payload(h) as usize].clone();
        dst.push(header(subtag(h), dst_bins.len() as u64));
        dst_bins.push(bin);
    } else {
        dst.extend_from_slice(&mem[off..off + object_words(h)]);
    }
    Word::ptr(false, YOUNG, new)
}

/// Deep-copies the term `v` into `dst` (refc binaries shared); returns its word.
pub(crate) fn copy_view(dst: &mut Vec<u64>, dst_bins: &mut Vec<RefcBin>, v: View<'_>) -> Word {
    let w = v.word();
    if !w.is_pointer() {
        return w;
    }
    let src = v.src();
    let base = dst.len();
    let root = copy_object(dst, dst_bins, src, w);
    let mut i = base;
    while i < dst.len() {
        let x = dst[i];
        if is_header(x) {
            i += 1 + raw_words(x);
            continue;
        }
        let xw = Word(x);
        if xw.is_pointer() {
            dst[i] = copy_object(dst, dst_bins, src, xw).0;
        }
        i += 1;
    }
    root
}

/// Words a copy of `v` needs (no recursion on list spines).
pub(crate) fn view_words(v: View<'_>) -> usize {
    use super::order::Node;
    let w = v.word();
    if !w.is_pointer() {
        return 0;
    }
    match v.node() {
        Node::Tuple(n, xs) => 1 + n + xs.map(view_words).sum::<usize>(),
        Node::List(xs) => xs.map(|x| 2 + view_words(x)).sum(),
        Node::Map(n, xs) => {
            1 + 2 * n
                + xs.map(|(k, x)| view_words(k) + view_words(x))
                    .sum::<usize>()
        }
        _ => {
            let mem = v.src().words(w.is_old());
            object_words(mem[w.offset()])
        }
    }
}

/// Appends the flat region `src` (pointers relative to its start, region 0) to
/// `dst`, moving its pointers by `dst.len()` and its refc indices by
/// `bin_base`. Returns the relocated `root`. One pass, no recursion.
pub(crate) fn append_relocated(
    dst: &mut Vec<u64>,
    src: &[u64],
    bin_base: usize,
    root: Word,
) -> Word {
    let base = dst.len();
    dst.reserve(src.len());
    let mut i = 0;
    while i < src.len() {
        let x = src[i];
        if is_header(x) {
            if is_refc(subtag(x)) {
                dst.push(header(subtag(x), payload(x) + bin_base as u64));
                i += 1;
            } else {
                let end = i + 1 + raw_words(x);
                dst.extend_from_slice(&src[i..end]);
                i = end;
            }
        } else {
            let w = Word(x);
            dst.push(if w.is_pointer() {
                w.relocated(base).0
            } else {
                x
            });
            i += 1;
        }
    }
    if root.is_pointer() {
        root.relocated(base)
    } else {
        root
    }
}
