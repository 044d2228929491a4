//! Encoding [`Term`]s canonically, as OTP 25/26 encode for distribution.
//!
//! One form per value: the smallest integer form (SMALL_INTEGER_EXT, INTEGER_EXT,
//! then SMALL_BIG_EXT/LARGE_BIG_EXT), UTF-8 atoms (SMALL_ATOM_UTF8_EXT up to 255
//! bytes), NEW_FLOAT_EXT, STRING_EXT for a proper list of at most 65535 integers in
//! 0..=255 (whether it is held as `List` or `Charlist`), NEW_PID_EXT,
//! NEWER_REFERENCE_EXT, NEW_PORT_EXT for port numbers of 28 bits and V4_PORT_EXT
//! above, funs as their stored bytes, map pairs in the order held.

use std::fmt;

use num_bigint::Sign;

use super::tags::*;
use super::{MAX_ATOM_CHARS, VERSION};
use crate::term::{Bytes, Pid, Term};

/// Where an encoding goes: a contiguous `Vec<u8>`, or [`Segments`], which keeps large
/// shared binaries as references instead of copying their bytes.
///
/// [`Segments`]: super::Segments
pub trait Sink {
    /// Appends one byte.
    fn push(&mut self, byte: u8);
    /// Appends bytes (copied).
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// Appends a binary's bytes (after its header): copied unless the sink can keep a
    /// reference to them.
    fn binary(&mut self, bytes: &Bytes) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
}

/// Largest port number NEW_PORT_EXT is used for (OTP's ERTS_MAX_V3_PORT_NUMBER).
const MAX_V3_PORT_NUMBER: u64 = (1 << 28) - 1;

/// Longest list STRING_EXT can hold.
const MAX_STRING_EXT: usize = 0xffff;

/// Why a term has no external encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// An atom longer than 255 characters.
    AtomTooLong,
    /// NaN or an infinity (Erlang floats are finite).
    NonFiniteFloat,
    /// A size beyond what the format's 4-byte lengths can state.
    TooLarge(&'static str),
    /// A reference with no words or more than five.
    BadRef,
    /// A trace token on a control message that has no `_TT` form.
    NoTraceForm,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::AtomTooLong => write!(f, "atom longer than 255 characters"),
            EncodeError::NonFiniteFloat => write!(f, "NaN and infinities have no Erlang form"),
            EncodeError::TooLarge(what) => write!(f, "{what} too large for the external format"),
            EncodeError::BadRef => write!(f, "a reference has 1 to 5 words"),
            EncodeError::NoTraceForm => {
                write!(f, "this control message has no trace-token form")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encodes `term` with the version byte.
pub fn encode(term: &Term) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(&mut out, term)?;
    Ok(out)
}

/// Appends `term`'s encoding, version byte first, to `out`.
pub fn encode_into<S: Sink>(out: &mut S, term: &Term) -> Result<(), EncodeError> {
    out.push(VERSION);
    encode_term_into(out, term)
}

/// Appends `term`'s encoding without the version byte (the body of a term).
///
/// Kept small: the recursive path must cost little stack per nesting level, so every
/// term that holds no other term is encoded out of line.
pub fn encode_term_into<S: Sink>(out: &mut S, term: &Term) -> Result<(), EncodeError> {
    match term {
        Term::Tuple(elems) => encode_tuple(out, elems),
        Term::List { .. } => encode_list(out, term),
        Term::Map(pairs) => encode_map(out, pairs),
        _ => encode_scalar(out, term),
    }
}

#[inline(never)]
fn encode_tuple<S: Sink>(out: &mut S, elems: &[Term]) -> Result<(), EncodeError> {
    if elems.len() <= 0xff {
        out.push(SMALL_TUPLE_EXT);
        out.push(elems.len() as u8);
    } else {
        out.push(LARGE_TUPLE_EXT);
        out.extend_from_slice(&len32(elems.len(), "tuple")?.to_be_bytes());
    }
    for e in elems {
        encode_term_into(out, e)?;
    }
    Ok(())
}

#[inline(never)]
fn encode_map<S: Sink>(out: &mut S, pairs: &[(Term, Term)]) -> Result<(), EncodeError> {
    out.push(MAP_EXT);
    out.extend_from_slice(&len32(pairs.len(), "map")?.to_be_bytes());
    for (k, v) in pairs {
        encode_term_into(out, k)?;
        encode_term_into(out, v)?;
    }
    Ok(())
}

#[inline(never)]
fn encode_scalar<S: Sink>(out: &mut S, term: &Term) -> Result<(), EncodeError> {
    match term {
        Term::Int(i) => encode_int(out, *i),
        Term::BigInt(b) => {
            let (sign, digits) = b.to_bytes_le();
            encode_big(out, sign == Sign::Minus, &digits)?;
        }
        Term::Float(f) => {
            if !f.is_finite() {
                return Err(EncodeError::NonFiniteFloat);
            }
            out.push(NEW_FLOAT_EXT);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Term::Atom(a) => encode_atom_into(out, a.as_str())?,
        Term::Binary(b) => {
            out.push(BINARY_EXT);
            out.extend_from_slice(&len32(b.len(), "binary")?.to_be_bytes());
            out.binary(b);
        }
        Term::BitBinary(b) => {
            out.push(BIT_BINARY_EXT);
            out.extend_from_slice(&len32(b.bytes().len(), "bitstring")?.to_be_bytes());
            out.push(b.last_bits());
            out.extend_from_slice(b.bytes());
        }
        Term::Nil => out.push(NIL_EXT),
        Term::Charlist(bytes) => encode_bytes_list(out, bytes)?,
        Term::Tuple(_) | Term::List { .. } | Term::Map(_) => encode_term_into(out, term)?,
        Term::Pid(p) => encode_pid(out, p)?,
        Term::Ref(r) => {
            if r.ids.is_empty() || r.ids.len() > 5 {
                return Err(EncodeError::BadRef);
            }
            out.push(NEWER_REFERENCE_EXT);
            out.extend_from_slice(&(r.ids.len() as u16).to_be_bytes());
            encode_atom_into(out, r.node.as_str())?;
            out.extend_from_slice(&r.creation.to_be_bytes());
            for id in &r.ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Term::Port(p) => {
            if p.id > MAX_V3_PORT_NUMBER {
                out.push(V4_PORT_EXT);
                encode_atom_into(out, p.node.as_str())?;
                out.extend_from_slice(&p.id.to_be_bytes());
            } else {
                out.push(NEW_PORT_EXT);
                encode_atom_into(out, p.node.as_str())?;
                out.extend_from_slice(&(p.id as u32).to_be_bytes());
            }
            out.extend_from_slice(&p.creation.to_be_bytes());
        }
        Term::Fun(f) => out.extend_from_slice(f.raw()),
    }
    Ok(())
}

fn len32(n: usize, what: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| EncodeError::TooLarge(what))
}

fn encode_int<S: Sink>(out: &mut S, i: i64) {
    if (0..=255).contains(&i) {
        out.push(SMALL_INTEGER_EXT);
        out.push(i as u8);
    } else if let Ok(small) = i32::try_from(i) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&small.to_be_bytes());
    } else {
        let magnitude = i.unsigned_abs().to_le_bytes();
        let used = 8 - magnitude.iter().rev().take_while(|&&b| b == 0).count();
        out.push(SMALL_BIG_EXT);
        out.push(used as u8);
        out.push(u8::from(i < 0));
        out.extend_from_slice(&magnitude[..used]);
    }
}

fn encode_big<S: Sink>(out: &mut S, negative: bool, digits: &[u8]) -> Result<(), EncodeError> {
    if digits.len() <= 0xff {
        out.push(SMALL_BIG_EXT);
        out.push(digits.len() as u8);
    } else {
        out.push(LARGE_BIG_EXT);
        out.extend_from_slice(&len32(digits.len(), "integer")?.to_be_bytes());
    }
    out.push(u8::from(negative));
    out.extend_from_slice(digits);
    Ok(())
}

/// Appends an atom as OTP does toward a UTF8_ATOMS peer.
pub(crate) fn encode_atom_into<S: Sink>(out: &mut S, text: &str) -> Result<(), EncodeError> {
    if text.len() > MAX_ATOM_CHARS && text.chars().count() > MAX_ATOM_CHARS {
        return Err(EncodeError::AtomTooLong);
    }
    if text.len() <= 0xff {
        out.push(SMALL_ATOM_UTF8_EXT);
        out.push(text.len() as u8);
    } else {
        out.push(ATOM_UTF8_EXT);
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn encode_pid<S: Sink>(out: &mut S, p: &Pid) -> Result<(), EncodeError> {
    out.push(NEW_PID_EXT);
    encode_atom_into(out, p.node.as_str())?;
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&p.serial.to_be_bytes());
    out.extend_from_slice(&p.creation.to_be_bytes());
    Ok(())
}

fn encode_bytes_list<S: Sink>(out: &mut S, bytes: &[u8]) -> Result<(), EncodeError> {
    if bytes.is_empty() {
        out.push(NIL_EXT);
    } else if bytes.len() <= MAX_STRING_EXT {
        out.push(STRING_EXT);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    } else {
        out.push(LIST_EXT);
        out.extend_from_slice(&len32(bytes.len(), "list")?.to_be_bytes());
        for &b in bytes {
            out.push(SMALL_INTEGER_EXT);
            out.push(b);
        }
        out.push(NIL_EXT);
    }
    Ok(())
}

/// One element of a list seen through its chain of tails.
enum Elem<'t> {
    Term(&'t Term),
    Byte(u8),
}

/// Encodes a `List`, folding tails that are themselves lists into one LIST_EXT (or one
/// STRING_EXT), as the cons cells they stand for would be encoded.
#[inline(never)]
fn encode_list<S: Sink>(out: &mut S, list: &Term) -> Result<(), EncodeError> {
    let mut elems: Vec<Elem<'_>> = Vec::new();
    let mut cur = list;
    let tail = loop {
        match cur {
            Term::List { elems: es, tail } => {
                elems.extend(es.iter().map(Elem::Term));
                cur = tail;
            }
            Term::Charlist(bytes) => {
                elems.extend(bytes.iter().map(|&b| Elem::Byte(b)));
                break &Term::Nil;
            }
            other => break other,
        }
    };
    let byte_of = |e: &Elem<'_>| match e {
        Elem::Byte(b) => Some(*b),
        Elem::Term(Term::Int(i)) => u8::try_from(*i).ok(),
        Elem::Term(_) => None,
    };
    if matches!(tail, Term::Nil) && elems.len() <= MAX_STRING_EXT {
        let bytes: Option<Vec<u8>> = elems.iter().map(byte_of).collect();
        if let Some(bytes) = bytes {
            return encode_bytes_list(out, &bytes);
        }
    }
    if elems.is_empty() {
        return encode_term_into(out, tail);
    }
    out.push(LIST_EXT);
    out.extend_from_slice(&len32(elems.len(), "list")?.to_be_bytes());
    for e in &elems {
        match e {
            Elem::Term(t) => encode_term_into(out, t)?,
            Elem::Byte(b) => encode_int(out, i64::from(*b)),
        }
    }
    encode_term_into(out, tail)
}
