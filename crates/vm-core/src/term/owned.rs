//! [`Term`]: the owned form of a term, for building and inspecting.
//!
//! Invariants (kept by the constructors; the variants are public, so code that
//! builds variants directly must keep them too — fragments and heaps re-normalise
//! what they store anyway):
//! - `Int` holds every integer that fits `i64`; `BigInt` only values outside it.
//! - `List` is a proper list; the empty `List` is nil (`[]`).
//! - `Map` is sorted by key in term order with unique keys.
//! - `Str` holds valid UTF-8 (build it with [`Term::str`]).
//!
//! Equality is Erlang's exact `=:=` (`1 =/= 1.0`), `Hash` agrees with it, and `Ord`
//! is Erlang's term order; all three come from `order.rs`, shared with [`View`].
//!
//! [`View`]: super::View

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use num_bigint::BigInt;

use super::order::{self, BigRef, Node, TermLike};
use super::{Atom, Binary, ExternalPid, ExternalRef, Pid, Ref, RefcBin, TermError};

/// An Erlang term, owned.
#[derive(Clone)]
pub enum Term {
    /// An integer that fits `i64`.
    Int(i64),
    /// Only values outside `i64` (see [`Term::bigint`]).
    BigInt(Box<BigInt>),
    /// A float.
    Float(f64),
    /// An atom.
    Atom(Atom),
    /// A binary.
    Binary(Binary),
    /// Text: UTF-8 bytes that are a distinct kind of term, never equal to a binary
    /// (a Python `str`). Distribution sends it as a UTF-8 binary.
    Str(Binary),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A proper list; empty is nil.
    List(Vec<Term>),
    /// Sorted by key, unique keys (see [`Term::map`]).
    Map(Vec<(Term, Term)>),
    /// A process identifier.
    Pid(Pid),
    /// A reference.
    Ref(Ref),
    /// A pid of another VM (see [`ExternalPid`]).
    ExternalPid(ExternalPid),
    /// A reference of another VM (see [`ExternalRef`]).
    ExternalRef(ExternalRef),
}

impl Term {
    /// An atom term. Panics on an invalid name; see [`Term::try_atom`].
    pub fn atom(name: &str) -> Term {
        Term::Atom(Atom::new(name))
    }
    /// An atom term, or why `name` cannot be an atom (too long, table full).
    pub fn try_atom(name: &str) -> Result<Term, TermError> {
        Atom::try_new(name).map(Term::Atom)
    }
    /// A tuple.
    pub fn tuple(elems: Vec<Term>) -> Term {
        Term::Tuple(elems)
    }
    /// A proper list.
    pub fn list(elems: Vec<Term>) -> Term {
        Term::List(elems)
    }
    /// `[]`.
    pub fn nil() -> Term {
        Term::List(Vec::new())
    }
    /// A map from pairs in any order; for a repeated key the last value wins
    /// (`maps:from_list/1`).
    pub fn map(mut pairs: Vec<(Term, Term)>) -> Term {
        pairs.reverse(); // so that the stable sort keeps the *last* duplicate first
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, first| later.0 == first.0);
        Term::Map(pairs)
    }
    /// A binary: inline up to `HEAP_BINARY_MAX` bytes, refcounted above.
    pub fn binary(bytes: Vec<u8>) -> Term {
        Term::Binary(Binary::new(bytes))
    }
    /// A binary sharing `bin`'s buffer.
    pub fn refc_binary(bin: RefcBin) -> Term {
        Term::Binary(Binary::Refc(bin))
    }
    /// Text: inline up to `HEAP_BINARY_MAX` bytes of UTF-8, refcounted above.
    pub fn str(s: &str) -> Term {
        Term::Str(Binary::new(s.as_bytes().to_vec()))
    }
    /// An integer.
    pub fn int(v: i64) -> Term {
        Term::Int(v)
    }
    /// Any integer, normalised to `Int` when it fits `i64`.
    pub fn bigint(v: BigInt) -> Term {
        match i64::try_from(&v) {
            Ok(i) => Term::Int(i),
            Err(_) => Term::BigInt(Box::new(v)),
        }
    }
    /// A float.
    pub fn float(v: f64) -> Term {
        Term::Float(v)
    }
    /// A pid.
    pub fn pid(p: Pid) -> Term {
        Term::Pid(p)
    }
    /// A reference.
    pub fn reference(r: Ref) -> Term {
        Term::Ref(r)
    }

    /// True for the empty list.
    pub fn is_nil(&self) -> bool {
        matches!(self, Term::List(v) if v.is_empty())
    }
    /// The integer, if this is one that fits `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Term::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The atom, if this is one.
    pub fn as_atom(&self) -> Option<Atom> {
        match self {
            Term::Atom(a) => Some(*a),
            _ => None,
        }
    }
    /// The bytes, if this is a binary.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b.as_slice()),
            _ => None,
        }
    }
    /// The text of a `Str` term.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Term::Str(b) => std::str::from_utf8(b.as_slice()).ok(),
            _ => None,
        }
    }
    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(v) => Some(v),
            _ => None,
        }
    }
    /// The value under `key` in a map.
    pub fn map_get(&self, key: &Term) -> Option<&Term> {
        match self {
            Term::Map(m) => m
                .binary_search_by(|(k, _)| k.cmp(key))
                .ok()
                .map(|i| &m[i].1),
            _ => None,
        }
    }
}

fn pair_refs(p: &(Term, Term)) -> (&Term, &Term) {
    (&p.0, &p.1)
}

impl<'a> TermLike<'a> for &'a Term {
    type Elems = std::slice::Iter<'a, Term>;
    type List = std::slice::Iter<'a, Term>;
    type Pairs = std::iter::Map<
        std::slice::Iter<'a, (Term, Term)>,
        fn(&'a (Term, Term)) -> (&'a Term, &'a Term),
    >;

    fn node(self) -> Node<'a, Self> {
        match self {
            Term::Int(i) => Node::Int(*i),
            Term::BigInt(b) => match i64::try_from(&**b) {
                Ok(i) => Node::Int(i), // tolerate an unnormalised BigInt
                Err(_) => Node::Big(BigRef::Owned(b)),
            },
            Term::Float(f) => Node::Float(*f),
            Term::Atom(a) => Node::Atom(*a),
            Term::Binary(b) => Node::Bin(b.as_slice()),
            Term::Str(b) => Node::Str(b.as_slice()),
            Term::Tuple(v) => Node::Tuple(v.len(), v.iter()),
            Term::List(v) if v.is_empty() => Node::Nil,
            Term::List(v) => Node::List(v.iter()),
            Term::Map(m) => Node::Map(
                m.len(),
                m.iter()
                    .map(pair_refs as fn(&'a (Term, Term)) -> (&'a Term, &'a Term)),
            ),
            Term::Pid(p) => Node::Pid(*p),
            Term::Ref(r) => Node::Ref(r.0),
            Term::ExternalPid(p) => Node::ExtPid(*p),
            Term::ExternalRef(r) => Node::ExtRef(*r),
        }
    }
}

impl PartialEq for Term {
    fn eq(&self, other: &Self) -> bool {
        order::eq(self, other)
    }
}
impl Eq for Term {}

impl Hash for Term {
    fn hash<H: Hasher>(&self, state: &mut H) {
        order::hash(self, state)
    }
}

impl PartialOrd for Term {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Term {
    fn cmp(&self, other: &Self) -> Ordering {
        order::cmp(self, other)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        order::fmt(self, f)
    }
}
impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        order::fmt(self, f)
    }
}

impl From<i64> for Term {
    fn from(v: i64) -> Term {
        Term::Int(v)
    }
}
impl From<i32> for Term {
    fn from(v: i32) -> Term {
        Term::Int(v as i64)
    }
}
impl From<u64> for Term {
    fn from(v: u64) -> Term {
        Term::bigint(BigInt::from(v))
    }
}
impl From<BigInt> for Term {
    fn from(v: BigInt) -> Term {
        Term::bigint(v)
    }
}
impl From<f64> for Term {
    fn from(v: f64) -> Term {
        Term::Float(v)
    }
}
impl From<bool> for Term {
    fn from(v: bool) -> Term {
        Term::Atom(Atom::from_bool(v))
    }
}
impl From<Atom> for Term {
    fn from(v: Atom) -> Term {
        Term::Atom(v)
    }
}
impl From<Pid> for Term {
    fn from(v: Pid) -> Term {
        Term::Pid(v)
    }
}
impl From<ExternalPid> for Term {
    fn from(v: ExternalPid) -> Term {
        Term::ExternalPid(v)
    }
}
impl From<ExternalRef> for Term {
    fn from(v: ExternalRef) -> Term {
        Term::ExternalRef(v)
    }
}
impl From<Ref> for Term {
    fn from(v: Ref) -> Term {
        Term::Ref(v)
    }
}
/// A string becomes a UTF-8 binary (as in Elixir); [`Term::str`] makes text.
impl From<&str> for Term {
    fn from(v: &str) -> Term {
        Term::binary(v.as_bytes().to_vec())
    }
}
impl From<Vec<u8>> for Term {
    fn from(v: Vec<u8>) -> Term {
        Term::binary(v)
    }
}
impl From<RefcBin> for Term {
    fn from(v: RefcBin) -> Term {
        Term::refc_binary(v)
    }
}
impl From<Vec<Term>> for Term {
    /// A list.
    fn from(v: Vec<Term>) -> Term {
        Term::List(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let t = Term::tuple(vec![
            Term::atom("ok"),
            Term::pid(Pid::new(5, 1)),
            Term::list(vec![1.into(), 2.into()]),
        ]);
        assert_eq!(t.to_string(), "{ok,<0.5.1>,[1,2]}");
        assert_eq!(Term::binary(vec![1, 2, 3]).to_string(), "<<1,2,3>>");
        assert_eq!(Term::from("hi").to_string(), "<<\"hi\">>");
        assert_eq!(
            Term::map(vec![(Term::atom("a"), 1.into())]).to_string(),
            "#{a => 1}"
        );
        assert_eq!(Term::float(1e20).to_string(), "1.0e20");
        assert_eq!(Term::float(0.5).to_string(), "0.5");
        assert_eq!(Term::nil().to_string(), "[]");
        assert_eq!(Term::from(u64::MAX).to_string(), "18446744073709551615");
    }

    #[test]
    fn map_last_duplicate_wins() {
        let m = Term::map(vec![
            (Term::atom("b"), 1.into()),
            (Term::atom("a"), 2.into()),
            (Term::atom("b"), 3.into()),
        ]);
        assert_eq!(
            m,
            Term::Map(vec![
                (Term::atom("a"), 2.into()),
                (Term::atom("b"), 3.into())
            ])
        );
        assert_eq!(m.map_get(&Term::atom("b")), Some(&Term::Int(3)));
    }
}
