//! The owned term this crate decodes into and encodes from.
//!
//! [`Term`] is a plain Rust value, independent of vm-core's heap terms: the codec, the
//! control messages and the blocking test driver work on it. When distribution is wired
//! into the VM, the decoder's output is rebuilt as heap terms (see docs/distribution.md,
//! "Integration plan"); nothing here assumes a process heap.
//!
//! Invariants the codec keeps (and constructors below respect):
//!
//! * An integer that fits in an `i64` is always [`Term::Int`]; [`Term::BigInt`] holds
//!   only values outside that range, so each integer has one representation.
//! * A list is [`Term::Nil`], a [`Term::Charlist`] (what STRING_EXT decodes to: a list
//!   of small integers, kept apart so it is never mistaken for text), or a
//!   [`Term::List`] with at least one element and a tail (`Nil` for a proper list,
//!   anything else for an improper one). Encoding chooses STRING_EXT exactly where OTP
//!   does, whichever of the two list forms holds the integers.
//! * A map keeps its pairs in wire order: OTP writes large maps in its hash order, and
//!   re-encoding in the received order is what makes a round trip byte-identical.
//! * A fun is opaque: it keeps the exact bytes it arrived as and re-encodes them
//!   unchanged, beside the few fields that are useful to show.
//!
//! Equality (`PartialEq`) is structural: `Charlist(b"ab")` and the `List` of the same
//! integers are different values of this type, although Erlang's `=:=` holds between
//! what they encode. Compare encodings where Erlang's equality is meant.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use num_bigint::BigInt;

/// An atom's text (UTF-8; Latin-1 atoms are converted on receive).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Atom(Arc<str>);

impl Atom {
    /// An atom with the given text. Length limits are checked where atoms are decoded
    /// or encoded, not here.
    pub fn new(text: &str) -> Self {
        Atom(Arc::from(text))
    }

    /// The atom's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Atom {
    fn from(text: &str) -> Self {
        Atom::new(text)
    }
}

impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process identifier of any node: NEW_PID_EXT's fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    /// The node the process lives on.
    pub node: Atom,
    /// Process number (32 bits on the wire since OTP 24).
    pub id: u32,
    /// Serial, bumped when the number is reused.
    pub serial: u32,
    /// The node incarnation that created the pid (32 bits; old PID_EXT's 8-bit value is
    /// widened).
    pub creation: u32,
}

/// A reference of any node: NEWER_REFERENCE_EXT's fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ref {
    /// The node that made the reference.
    pub node: Atom,
    /// The incarnation of that node.
    pub creation: u32,
    /// One to five 32-bit words, most significant last as on the wire.
    pub ids: Vec<u32>,
}

/// A port of any node: V4_PORT_EXT's fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// The node that owns the port.
    pub node: Atom,
    /// Port number (64 bits on the wire with V4_NC; NEW_PORT_EXT carries 32).
    pub id: u64,
    /// The incarnation of that node.
    pub creation: u32,
}

/// What a fun's bytes say, for display and dispatch; the bytes themselves stay opaque.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FunKind {
    /// `fun Module:Function/Arity` (EXPORT_EXT).
    Export {
        /// The module.
        module: Atom,
        /// The function.
        function: Atom,
        /// The arity.
        arity: u8,
    },
    /// A closure (NEW_FUN_EXT): code of another node's module, never callable here.
    Local {
        /// The module that defines the fun.
        module: Atom,
        /// The arity.
        arity: u8,
        /// Index of the fun in the module's fun table.
        index: u32,
        /// MD5 of the module's code (the fun's identity with `index`).
        uniq: [u8; 16],
        /// The process that created the fun.
        pid: Pid,
        /// How many free variables the closure captured.
        num_free: u32,
    },
}

/// A fun, kept as the exact bytes it arrived as (from its tag on) so that sending it
/// back gives the peer the same fun.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fun {
    /// What the bytes say.
    pub kind: FunKind,
    raw: Vec<u8>,
}

impl Fun {
    /// A fun from its decoded fields and its encoding (tag byte first). Only the
    /// decoder builds these: `raw` must be a valid EXPORT_EXT or NEW_FUN_EXT encoding.
    pub(crate) fn from_parts(kind: FunKind, raw: Vec<u8>) -> Self {
        Fun { kind, raw }
    }

    /// An export fun `fun Module:Function/Arity`, encoded as OTP 26 does.
    pub fn export(
        module: &str,
        function: &str,
        arity: u8,
    ) -> Result<Self, crate::etf::EncodeError> {
        let mut raw = vec![crate::etf::tags::EXPORT_EXT];
        crate::etf::encode_atom_into(&mut raw, module)?;
        crate::etf::encode_atom_into(&mut raw, function)?;
        raw.push(crate::etf::tags::SMALL_INTEGER_EXT);
        raw.push(arity);
        Ok(Fun {
            kind: FunKind::Export {
                module: Atom::new(module),
                function: Atom::new(function),
                arity,
            },
            raw,
        })
    }

    /// The fun's encoding, tag byte first.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// A buffer shared by the binaries that are ranges of it: a received frame, or a
/// binary of the VM being sent. Its bytes must never change while it lives (every
/// holder reads them without a lock, and the writer reads them after the encoder
/// measured them).
pub type SharedBuf = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A binary's bytes: owned, or a range of a [`SharedBuf`] held by a refcount, so that
/// a large binary goes from the VM to the socket, and from the received frame to the
/// VM, without a copy. Equality, hashing and `Debug` are the bytes'.
#[derive(Clone)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<u8>),
    Shared {
        owner: SharedBuf,
        start: usize,
        len: usize,
    },
}

impl Bytes {
    /// All of `owner`'s bytes, shared (a refcount, no copy).
    pub fn shared(owner: SharedBuf) -> Bytes {
        let len = (*owner).as_ref().len();
        Bytes(Repr::Shared {
            owner,
            start: 0,
            len,
        })
    }

    /// `owner`'s bytes at `start..start + len`, shared; `None` when that range is not
    /// inside them.
    pub fn shared_range(owner: SharedBuf, start: usize, len: usize) -> Option<Bytes> {
        let end = start.checked_add(len)?;
        if end > (*owner).as_ref().len() {
            return None;
        }
        Some(Bytes(Repr::Shared { owner, start, len }))
    }

    /// `part` shared from `owner` when it lies inside `owner`'s bytes, `None` otherwise
    /// (a decoder's slice of a frame: its position is found from its address).
    pub fn shared_slice(owner: &SharedBuf, part: &[u8]) -> Option<Bytes> {
        let whole = (**owner).as_ref();
        let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        Bytes::shared_range(owner.clone(), start, part.len())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            // In range when made (checked above) and the owner never changes; an owner
            // that broke that contract reads as empty rather than panicking.
            Repr::Shared { owner, start, len } => {
                (**owner).as_ref().get(*start..*start + *len).unwrap_or(&[])
            }
        }
    }

    /// Whether the bytes are a shared buffer's (not owned).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }

    /// The owned bytes without a copy, or `self` back when they are shared.
    pub fn try_into_vec(self) -> Result<Vec<u8>, Bytes> {
        match self.0 {
            Repr::Owned(v) => Ok(v),
            shared => Err(Bytes(shared)),
        }
    }

    /// The bytes as a `Vec` (a copy when they are shared).
    pub fn into_vec(self) -> Vec<u8> {
        self.try_into_vec()
            .unwrap_or_else(|b| b.as_slice().to_vec())
    }
}

impl Default for Bytes {
    fn default() -> Self {
        Bytes(Repr::Owned(Vec::new()))
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(Repr::Owned(v))
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(Repr::Owned(v.to_vec()))
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl std::hash::Hash for Bytes {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// A bitstring whose length is not a whole number of bytes (BIT_BINARY_EXT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitBinary {
    bytes: Vec<u8>,
    last_bits: u8,
}

impl BitBinary {
    /// `bytes`, of which only the `last_bits` high bits of the last byte count
    /// (1..=7; 8 would be a binary). The unused low bits are cleared, as OTP does.
    /// `None` when `bytes` is empty or `last_bits` is out of range.
    pub fn new(mut bytes: Vec<u8>, last_bits: u8) -> Option<Self> {
        if !(1..=7).contains(&last_bits) {
            return None;
        }
        let last = bytes.last_mut()?;
        *last &= 0xffu8 << (8 - last_bits);
        Some(BitBinary { bytes, last_bits })
    }

    /// The bytes, the last one partly used.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many high bits of the last byte belong to the bitstring (1..=7).
    pub fn last_bits(&self) -> u8 {
        self.last_bits
    }

    /// The length in bits.
    pub fn bit_len(&self) -> u64 {
        (self.bytes.len() as u64 - 1) * 8 + u64::from(self.last_bits)
    }
}

/// An Erlang term, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// An integer in `i64` range.
    Int(i64),
    /// An integer outside `i64` range (never one that fits).
    BigInt(BigInt),
    /// A float (always finite: the wire has no NaN or infinity).
    Float(f64),
    /// An atom.
    Atom(Atom),
    /// A binary (large ones may share a buffer: [`Bytes`]).
    Binary(Bytes),
    /// A bitstring that is not a binary.
    BitBinary(BitBinary),
    /// A tuple.
    Tuple(Vec<Term>),
    /// The empty list.
    Nil,
    /// A non-empty list; `tail` is `Nil` for a proper list.
    List {
        /// The elements (at least one).
        elems: Vec<Term>,
        /// What the last cons cell's tail holds.
        tail: Box<Term>,
    },
    /// A proper list of integers 0..=255 received as STRING_EXT (Python's `Charlist`).
    Charlist(Vec<u8>),
    /// A map, pairs in wire order.
    Map(Vec<(Term, Term)>),
    /// A pid.
    Pid(Pid),
    /// A reference.
    Ref(Ref),
    /// A port.
    Port(Port),
    /// A fun, opaque.
    Fun(Box<Fun>),
}

impl Term {
    /// The atom `name`.
    pub fn atom(name: &str) -> Term {
        Term::Atom(Atom::new(name))
    }

    /// An integer, as `Int` when it fits in an `i64`.
    pub fn int(value: impl Into<BigInt>) -> Term {
        let big: BigInt = value.into();
        match i64::try_from(&big) {
            Ok(small) => Term::Int(small),
            Err(_) => Term::BigInt(big),
        }
    }

    /// A proper list (`Nil` when empty).
    pub fn list(elems: Vec<Term>) -> Term {
        Term::improper_list(elems, Term::Nil)
    }

    /// A list ending in `tail` (`tail` itself when there are no elements).
    pub fn improper_list(elems: Vec<Term>, tail: Term) -> Term {
        if elems.is_empty() {
            tail
        } else {
            Term::List {
                elems,
                tail: Box::new(tail),
            }
        }
    }

    /// A tuple.
    pub fn tuple(elems: Vec<Term>) -> Term {
        Term::Tuple(elems)
    }

    /// A binary.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Term {
        Term::Binary(Bytes::from(bytes.into()))
    }

    /// The atom's text when this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a.as_str()),
            _ => None,
        }
    }

    /// The pid when this is one.
    pub fn as_pid(&self) -> Option<&Pid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }

    /// The elements when this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The value when this is an integer in `i64` range.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Term::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl From<Pid> for Term {
    fn from(p: Pid) -> Self {
        Term::Pid(p)
    }
}

impl From<Ref> for Term {
    fn from(r: Ref) -> Self {
        Term::Ref(r)
    }
}

impl From<Atom> for Term {
    fn from(a: Atom) -> Self {
        Term::Atom(a)
    }
}

impl From<i64> for Term {
    fn from(i: i64) -> Self {
        Term::Int(i)
    }
}
