//! Erlang's exact equality, term order, hashing and printing, written once for any
//! term representation.
//!
//! [`TermLike`] is implemented by `&Term` (the owned tree) and by [`View`] (a term
//! in a fragment or heap). Every algorithm here is generic over *two* such types,
//! so a view can be compared with a `Term` without converting either.
//!
//! Invariants the implementations rely on:
//! - Integers are normalised: `Node::Int` for anything that fits `i64`, `Node::Big`
//!   only for values outside it (limbs little-endian, no high zero limb).
//! - Map entries come sorted by key in term order, keys unique.
//! - Equality is `=:=`: `1 =/= 1.0`; floats compare by bits (so `0.0 =/= -0.0`, as
//!   in OTP 27). Hashing is consistent with it: equal terms feed the hasher the
//!   same sequence, whatever their representation (inline vs refc binary, `Term` vs
//!   `View`).
//! - Order: number < atom < reference < pid < tuple < map < nil < list < binary <
//!   text. Text (a Python `str`, see `word.rs`) is never equal to a binary with the
//!   same bytes; it sorts after every binary, texts byte-wise (UTF-8 byte order is
//!   code point order).
//!   Local pids (references) order before external ones ([`ExternalPid`],
//!   [`ExternalRef`]: another VM's), which order by node name, creation, then id.
//!   Numbers by value; an integer and a float of equal value order integer first
//!   (so the order is total and agrees with `=:=`). Atoms by name, tuples by size
//!   then elements, maps by size then keys then values, lists element-wise,
//!   binaries byte-wise.
//!
//! Recursion follows the nesting of tuples and maps; list spines are iterated.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::Hasher;

use num_bigint::{BigInt, Sign};
use num_traits::{FromPrimitive, ToPrimitive};

use super::{Atom, ExternalPid, ExternalRef, Pid};

/// An integer outside the `i64` range.
#[derive(Copy, Clone)]
pub(crate) enum BigRef<'a> {
    Owned(&'a BigInt),
    Limbs { neg: bool, limbs: &'a [u64] },
}

impl<'a> BigRef<'a> {
    pub(crate) fn is_neg(&self) -> bool {
        match self {
            BigRef::Owned(b) => b.sign() == Sign::Minus,
            BigRef::Limbs { neg, .. } => *neg,
        }
    }
    pub(crate) fn limbs(&self) -> Cow<'a, [u64]> {
        match self {
            BigRef::Owned(b) => Cow::Owned(b.magnitude().to_u64_digits()),
            BigRef::Limbs { limbs, .. } => Cow::Borrowed(limbs),
        }
    }
    pub(crate) fn to_bigint(self) -> BigInt {
        match self {
            BigRef::Owned(b) => b.clone(),
            BigRef::Limbs { neg, limbs } => bigint_from_limbs(neg, limbs),
        }
    }
    fn to_f64(self) -> f64 {
        let neg = self.is_neg();
        let inf = if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        match self {
            BigRef::Owned(b) => b.to_f64().unwrap_or(inf),
            BigRef::Limbs { .. } => self.to_bigint().to_f64().unwrap_or(inf),
        }
    }
}

pub(crate) fn bigint_from_limbs(neg: bool, limbs: &[u64]) -> BigInt {
    let digits: Vec<u32> = limbs
        .iter()
        .flat_map(|&l| [l as u32, (l >> 32) as u32])
        .collect();
    let mag = num_bigint::BigUint::new(digits);
    BigInt::from_biguint(if neg { Sign::Minus } else { Sign::Plus }, mag)
}

/// One level of a term.
pub(crate) enum Node<'a, T: TermLike<'a>> {
    Int(i64),
    Big(BigRef<'a>),
    Float(f64),
    Atom(Atom),
    Ref(u64),
    Pid(Pid),
    ExtRef(ExternalRef),
    ExtPid(ExternalPid),
    Bin(&'a [u8]),
    /// Text: valid UTF-8.
    Str(&'a [u8]),
    Tuple(usize, T::Elems),
    Nil,
    List(T::List),
    Map(usize, T::Pairs),
}

pub(crate) trait TermLike<'a>: Copy {
    type Elems: Iterator<Item = Self>;
    type List: Iterator<Item = Self>;
    type Pairs: Iterator<Item = (Self, Self)>;
    fn node(self) -> Node<'a, Self>;
}

fn class<'a, T: TermLike<'a>>(n: &Node<'a, T>) -> u8 {
    match n {
        Node::Int(_) | Node::Big(_) | Node::Float(_) => 0,
        Node::Atom(_) => 1,
        Node::Ref(_) | Node::ExtRef(_) => 2,
        Node::Pid(_) | Node::ExtPid(_) => 3,
        Node::Tuple(..) => 4,
        Node::Map(..) => 5,
        Node::Nil => 6,
        Node::List(_) => 7,
        Node::Bin(_) => 8,
        Node::Str(_) => 9,
    }
}

// ---------------------------------------------------------------- equality

pub(crate) fn eq<'a, 'b, A: TermLike<'a>, B: TermLike<'b>>(a: A, b: B) -> bool {
    match (a.node(), b.node()) {
        (Node::Int(x), Node::Int(y)) => x == y,
        (Node::Big(x), Node::Big(y)) => x.is_neg() == y.is_neg() && x.limbs() == y.limbs(),
        (Node::Float(x), Node::Float(y)) => x.to_bits() == y.to_bits(),
        (Node::Atom(x), Node::Atom(y)) => x == y,
        (Node::Ref(x), Node::Ref(y)) => x == y,
        (Node::Pid(x), Node::Pid(y)) => x == y,
        (Node::ExtRef(x), Node::ExtRef(y)) => x == y,
        (Node::ExtPid(x), Node::ExtPid(y)) => x == y,
        (Node::Bin(x), Node::Bin(y)) => x == y,
        (Node::Str(x), Node::Str(y)) => x == y,
        (Node::Tuple(n, xs), Node::Tuple(m, ys)) => n == m && xs.zip(ys).all(|(x, y)| eq(x, y)),
        (Node::Nil, Node::Nil) => true,
        (Node::List(mut xs), Node::List(mut ys)) => loop {
            match (xs.next(), ys.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if eq(x, y) => {}
                _ => return false,
            }
        },
        (Node::Map(n, xs), Node::Map(m, ys)) => {
            n == m
                && xs
                    .zip(ys)
                    .all(|((k1, v1), (k2, v2))| eq(k1, k2) && eq(v1, v2))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- order

pub(crate) fn cmp<'a, 'b, A: TermLike<'a>, B: TermLike<'b>>(a: A, b: B) -> Ordering {
    let (na, nb) = (a.node(), b.node());
    let (ca, cb) = (class(&na), class(&nb));
    if ca != cb {
        return ca.cmp(&cb);
    }
    match (na, nb) {
        (Node::Atom(x), Node::Atom(y)) => {
            if x == y {
                Ordering::Equal
            } else {
                x.as_str().cmp(y.as_str())
            }
        }
        (Node::Ref(x), Node::Ref(y)) => x.cmp(&y),
        (Node::Pid(x), Node::Pid(y)) => x.cmp(&y),
        (Node::ExtRef(x), Node::ExtRef(y)) => x.cmp(&y),
        (Node::ExtPid(x), Node::ExtPid(y)) => x.cmp(&y),
        // Local before external (same class).
        (Node::Ref(_), Node::ExtRef(_)) | (Node::Pid(_), Node::ExtPid(_)) => Ordering::Less,
        (Node::ExtRef(_), Node::Ref(_)) | (Node::ExtPid(_), Node::Pid(_)) => Ordering::Greater,
        (Node::Bin(x), Node::Bin(y)) => x.cmp(y),
        (Node::Str(x), Node::Str(y)) => x.cmp(y),
        (Node::Tuple(n, xs), Node::Tuple(m, ys)) => n.cmp(&m).then_with(|| cmp_seq(xs, ys)),
        (Node::Nil, Node::Nil) => Ordering::Equal,
        (Node::List(xs), Node::List(ys)) => cmp_seq(xs, ys),
        (Node::Map(n, xs), Node::Map(m, ys)) => n.cmp(&m).then_with(|| {
            // Keys first (all of them), then values in key order.
            let pairs: Vec<_> = xs.zip(ys).collect();
            for ((k1, _), (k2, _)) in &pairs {
                let o = cmp(*k1, *k2);
                if o != Ordering::Equal {
                    return o;
                }
            }
            for ((_, v1), (_, v2)) in &pairs {
                let o = cmp(*v1, *v2);
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }),
        (x, y) => cmp_num(num(x), num(y)),
    }
}

fn cmp_seq<'a, 'b, A: TermLike<'a>, B: TermLike<'b>>(
    mut xs: impl Iterator<Item = A>,
    mut ys: impl Iterator<Item = B>,
) -> Ordering {
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = cmp(x, y);
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[derive(Copy, Clone)]
enum Num<'a> {
    I(i64),
    B(BigRef<'a>),
    F(f64),
}

fn num<'a, T: TermLike<'a>>(n: Node<'a, T>) -> Num<'a> {
    match n {
        Node::Int(i) => Num::I(i),
        Node::Big(b) => Num::B(b),
        Node::Float(f) => Num::F(f),
        // Only numbers reach here (same class 0).
        _ => Num::I(0),
    }
}

fn cmp_num(a: Num<'_>, b: Num<'_>) -> Ordering {
    match (a, b) {
        (Num::I(x), Num::I(y)) => x.cmp(&y),
        (Num::I(_), Num::B(y)) => {
            if y.is_neg() {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Num::B(_), Num::I(_)) => cmp_num(b, a).reverse(),
        (Num::B(x), Num::B(y)) => match (x.is_neg(), y.is_neg()) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (neg, _) => {
                let m = cmp_magnitude(&x.limbs(), &y.limbs());
                if neg {
                    m.reverse()
                } else {
                    m
                }
            }
        },
        (Num::F(x), Num::F(y)) => cmp_f64(x, y),
        (Num::I(x), Num::F(y)) => cmp_int_float(x, y),
        (Num::F(_), Num::I(_)) | (Num::F(_), Num::B(_)) => cmp_num(b, a).reverse(),
        (Num::B(x), Num::F(y)) => cmp_big_float(x, y),
    }
}

fn cmp_magnitude(x: &[u64], y: &[u64]) -> Ordering {
    x.len()
        .cmp(&y.len())
        .then_with(|| x.iter().rev().cmp(y.iter().rev()))
}

fn cmp_f64(x: f64, y: f64) -> Ordering {
    match x.partial_cmp(&y) {
        Some(Ordering::Equal) | None => x.total_cmp(&y),
        Some(o) => o,
    }
}

/// 2^63 as f64: the first float above every i64.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Exact comparison of an integer and a float; equal values order the integer
/// first. Rounding to f64 is monotone, so if the rounded integer differs from the
/// float the order is already decided; otherwise the float is integral and in range.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    let fi = i as f64;
    if f.is_nan() {
        return fi.total_cmp(&f);
    }
    match fi.partial_cmp(&f) {
        Some(Ordering::Equal) => {
            if f >= TWO_POW_63 {
                Ordering::Less
            } else {
                i.cmp(&(f as i64)).then(Ordering::Less)
            }
        }
        Some(o) => o,
        None => fi.total_cmp(&f),
    }
}

fn cmp_big_float(b: BigRef<'_>, f: f64) -> Ordering {
    let bf = b.to_f64();
    if f.is_nan() {
        return bf.total_cmp(&f);
    }
    match bf.partial_cmp(&f) {
        Some(Ordering::Equal) => {
            if f.is_infinite() {
                // A finite integer rounded to infinity: it is strictly inside.
                if f > 0.0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            } else {
                match BigInt::from_f64(f) {
                    Some(fb) => b.to_bigint().cmp(&fb).then(Ordering::Less),
                    None => Ordering::Less,
                }
            }
        }
        Some(o) => o,
        None => bf.total_cmp(&f),
    }
}

// ---------------------------------------------------------------- hashing

pub(crate) fn hash<'a, T: TermLike<'a>, H: Hasher>(t: T, h: &mut H) {
    match t.node() {
        Node::Int(i) => {
            h.write_u8(0);
            h.write_i64(i);
        }
        Node::Big(b) => {
            h.write_u8(1);
            h.write_u8(b.is_neg() as u8);
            for &l in b.limbs().iter() {
                h.write_u64(l);
            }
        }
        Node::Float(f) => {
            h.write_u8(2);
            h.write_u64(f.to_bits());
        }
        Node::Atom(a) => {
            h.write_u8(3);
            h.write_u32(a.index());
        }
        Node::Ref(r) => {
            h.write_u8(4);
            h.write_u64(r);
        }
        Node::Pid(p) => {
            h.write_u8(5);
            h.write_u32(p.index);
            h.write_u32(p.serial);
        }
        Node::ExtPid(p) => {
            h.write_u8(11);
            h.write_u32(p.node.index());
            h.write_u32(p.id);
            h.write_u32(p.serial);
            h.write_u32(p.creation);
        }
        Node::ExtRef(r) => {
            h.write_u8(12);
            h.write_u32(r.node().index());
            h.write_u32(r.creation());
            h.write_usize(r.words().len());
            for &w in r.words() {
                h.write_u32(w);
            }
        }
        Node::Bin(b) => {
            h.write_u8(6);
            h.write_usize(b.len());
            h.write(b);
        }
        Node::Str(b) => {
            h.write_u8(11);
            h.write_usize(b.len());
            h.write(b);
        }
        Node::Tuple(n, xs) => {
            h.write_u8(7);
            h.write_usize(n);
            xs.for_each(|x| hash(x, h));
        }
        Node::Nil => h.write_u8(8),
        Node::List(xs) => {
            h.write_u8(9);
            let mut n = 0usize;
            for x in xs {
                hash(x, h);
                n += 1;
            }
            h.write_usize(n);
        }
        Node::Map(n, xs) => {
            h.write_u8(10);
            h.write_usize(n);
            for (k, v) in xs {
                hash(k, h);
                hash(v, h);
            }
        }
    }
}

// ---------------------------------------------------------------- printing

/// Erlang syntax: `{ok,<0.5.1>,[1,2]}`, `<<1,2,3>>`, `<<"text">>`, `#{a => 1}`.
pub(crate) fn fmt<'a, T: TermLike<'a>>(t: T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match t.node() {
        Node::Int(i) => write!(f, "{i}"),
        Node::Big(b) => write!(f, "{}", b.to_bigint()),
        Node::Float(x) => fmt_float(x, f),
        Node::Atom(a) => write!(f, "{a}"),
        Node::Ref(r) => write!(f, "#Ref<0.{r}>"),
        Node::Pid(p) => write!(f, "{p}"),
        Node::ExtRef(r) => write!(f, "{r}"),
        Node::ExtPid(p) => write!(f, "{p}"),
        Node::Bin(b) => fmt_binary(b, f),
        Node::Str(b) => fmt_str(b, f),
        Node::Tuple(_, xs) => {
            f.write_str("{")?;
            fmt_seq(xs, f)?;
            f.write_str("}")
        }
        Node::Nil => f.write_str("[]"),
        Node::List(xs) => {
            f.write_str("[")?;
            fmt_seq(xs, f)?;
            f.write_str("]")
        }
        Node::Map(_, xs) => {
            f.write_str("#{")?;
            for (i, (k, v)) in xs.enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                fmt(k, f)?;
                f.write_str(" => ")?;
                fmt(v, f)?;
            }
            f.write_str("}")
        }
    }
}

fn fmt_seq<'a, T: TermLike<'a>>(
    xs: impl Iterator<Item = T>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    for (i, x) in xs.enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        fmt(x, f)?;
    }
    Ok(())
}

fn fmt_float(x: f64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let s = format!("{x:?}");
    // Erlang always has a fraction: 1.0e20, not 1e20.
    match s.find('e') {
        Some(e) if !s[..e].contains('.') => write!(f, "{}.0{}", &s[..e], &s[e..]),
        _ => f.write_str(&s),
    }
}

/// Text as Erlang writes a UTF-8 binary literal: `<<"héllo"/utf8>>`.
fn fmt_str(b: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("<<\"")?;
    for c in String::from_utf8_lossy(b).chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c if c.is_control() => write!(f, "\\x{{{:x}}}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"/utf8>>")
}

fn fmt_binary(b: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let printable = !b.is_empty() && b.iter().all(|&c| (0x20..0x7f).contains(&c));
    f.write_str("<<")?;
    if printable {
        f.write_str("\"")?;
        for &c in b {
            match c {
                b'"' => f.write_str("\\\"")?,
                b'\\' => f.write_str("\\\\")?,
                c => write!(f, "{}", c as char)?,
            }
        }
        f.write_str("\"")?;
    } else {
        for (i, c) in b.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
    }
    f.write_str(">>")
}
