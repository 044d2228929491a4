//! Decoding external terms into [`Term`]s.
//!
//! A recursive-descent reader over a byte slice. Invariants:
//!
//! * No allocation is sized by a wire length alone: a count is first checked against
//!   the bytes left (each element takes at least one byte), so memory stays within a
//!   small factor of the input.
//! * Recursion depth is bounded by [`DecodeOptions::max_depth`]; list tails are walked
//!   in a loop (a LIST_EXT whose tail is another LIST_EXT is one list), so only real
//!   nesting counts.
//! * Every error is a value; nothing here indexes without a bounds check.

use std::collections::HashSet;
use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};
use num_bigint::{BigInt, Sign};

use super::tags::*;
use super::{encode_term_into, MAX_ATOM_CHARS, VERSION};
use crate::atoms::{AtomGate, AtomRefusal, TrustAll};
use crate::term::{Atom, BitBinary, Bytes, Fun, FunKind, Pid, Port, Ref, SharedBuf, Term};

/// Default nesting bound of [`DecodeOptions`].
///
/// Deep enough for any term a program builds on purpose (records in lists in maps go a
/// few dozen levels), and half of what the recursive decoder, encoder, comparison and
/// `Drop` manage on a 2 MiB thread stack in a debug build (about 1.3 KB a level there,
/// 200 bytes in release), so a term this deep is safe on any thread that runs tests
/// or drivers (tests/etf.rs decodes, encodes, compares and drops it on such a thread).
/// Erlang itself has no bound; a deeper term is refused with [`DecodeError::TooDeep`].
pub const DEFAULT_MAX_DEPTH: usize = 512;

/// Default bound on a compressed term's inflated size: 1 GiB.
///
/// A compressed term states its inflated size; a peer could state 4 GiB with a few
/// bytes of zlib behind it. Inflation grows the output as data really comes out and
/// stops at the stated size, and no stated size above this is accepted.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 1 << 30;

/// Most elements reserved ahead of decoding them. A count on the wire is checked
/// against the bytes left, but one byte of input can become a 40-byte `Term`; beyond
/// this, vectors grow as elements are actually decoded.
const MAX_PREALLOC: usize = 4096;

/// Most words a reference may carry (OTP's ERTS_MAX_REF_NUMBERS on 64-bit builds).
const MAX_REF_WORDS: usize = 5;

/// Limits for one decode.
#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    /// How deeply tuples, lists, maps and funs may nest.
    pub max_depth: usize,
    /// The largest inflated size a compressed term may state.
    pub max_decompressed: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_depth: DEFAULT_MAX_DEPTH,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
        }
    }
}

/// Why bytes are not a valid external term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a term.
    Truncated,
    /// The first byte is not 131.
    BadVersion(u8),
    /// A tag byte this decoder does not know.
    UnknownTag(u8),
    /// LOCAL_EXT: only meaningful inside the node that wrote it.
    LocalExt,
    /// An atom-cache reference, but no atom cache was negotiated.
    AtomCacheRef,
    /// The old FUN_EXT, removed in OTP 23.
    OldFun,
    /// Bytes left after the term.
    TrailingBytes(usize),
    /// A length or count that the input cannot hold, or that is out of range.
    BadLength(&'static str),
    /// Nested deeper than [`DecodeOptions::max_depth`].
    TooDeep,
    /// An atom that is not valid UTF-8, too long, or where an atom must be.
    BadAtom(&'static str),
    /// The atom table or this peer's atom allowance refused a new atom.
    AtomLimit(AtomRefusal),
    /// A float that is not finite or does not parse.
    BadFloat,
    /// A map with the same key twice.
    DuplicateMapKey,
    /// A compressed term that does not inflate to its stated size.
    BadCompression(&'static str),
    /// A field with a value out of its range (sign byte, bit count, integer form...).
    BadValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "external term is truncated"),
            DecodeError::BadVersion(v) => {
                write!(f, "external term starts with {v}, expected version 131")
            }
            DecodeError::UnknownTag(t) => write!(f, "unknown external term tag {t}"),
            DecodeError::LocalExt => write!(f, "LOCAL_EXT is not accepted from a peer"),
            DecodeError::AtomCacheRef => {
                write!(f, "atom cache reference, but no atom cache was negotiated")
            }
            DecodeError::OldFun => write!(f, "FUN_EXT (pre-OTP 23 fun) is not supported"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes left after the term"),
            DecodeError::BadLength(what) => write!(f, "bad length of {what}"),
            DecodeError::TooDeep => write!(f, "term nested deeper than the limit"),
            DecodeError::BadAtom(why) => write!(f, "bad atom: {why}"),
            DecodeError::AtomLimit(AtomRefusal::TableFull) => write!(f, "atom table is full"),
            DecodeError::AtomLimit(AtomRefusal::BudgetSpent { limit }) => {
                write!(f, "peer created more than {limit} new atoms")
            }
            DecodeError::BadFloat => write!(f, "float is not finite or malformed"),
            DecodeError::DuplicateMapKey => write!(f, "map has a duplicate key"),
            DecodeError::BadCompression(why) => write!(f, "bad compressed term: {why}"),
            DecodeError::BadValue(what) => write!(f, "bad value: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one whole external term (version byte first), with default limits and
/// every atom accepted. For bytes from a peer use [`decode_with`] and an atom budget.
pub fn decode(bytes: &[u8]) -> Result<Term, DecodeError> {
    decode_with(bytes, &DecodeOptions::default(), &mut TrustAll)
}

/// Decodes one whole external term; bytes after it are an error.
pub fn decode_with(
    bytes: &[u8],
    opts: &DecodeOptions,
    atoms: &mut dyn AtomGate,
) -> Result<Term, DecodeError> {
    decode_with_shared(bytes, opts, atoms, None)
}

/// [`decode_with`] sharing large binaries with `share` (see [`decode_prefix_shared`]).
pub fn decode_with_shared(
    bytes: &[u8],
    opts: &DecodeOptions,
    atoms: &mut dyn AtomGate,
    share: Option<&SharedBuf>,
) -> Result<Term, DecodeError> {
    let (term, used) = decode_prefix_shared(bytes, opts, atoms, share)?;
    match bytes.len() - used {
        0 => Ok(term),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

/// Decodes the external term at the start of `bytes`; returns it and how many bytes it
/// took (a distribution frame holds a control term and a message back to back).
pub fn decode_prefix(
    bytes: &[u8],
    opts: &DecodeOptions,
    atoms: &mut dyn AtomGate,
) -> Result<(Term, usize), DecodeError> {
    decode_prefix_shared(bytes, opts, atoms, None)
}

/// [`decode_prefix`] of bytes that lie in `share` (a received frame's buffer): each
/// binary of at least [`SPLICE_MIN`] bytes becomes a range of that buffer (a
/// refcount, no copy). Bytes outside `share` (an inflated compressed term) are copied
/// as usual.
///
/// [`SPLICE_MIN`]: super::SPLICE_MIN
pub fn decode_prefix_shared(
    bytes: &[u8],
    opts: &DecodeOptions,
    atoms: &mut dyn AtomGate,
    share: Option<&SharedBuf>,
) -> Result<(Term, usize), DecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    if r.peek()? == COMPRESSED {
        r.pos += 1;
        let size = r.u32()? as usize;
        if size > opts.max_decompressed {
            return Err(DecodeError::BadCompression("stated size above the limit"));
        }
        let (inflated, used) = inflate(&bytes[r.pos..], size)?;
        let mut inner = Decoder {
            r: Reader {
                buf: &inflated,
                pos: 0,
            },
            opts,
            atoms,
            depth: 0,
            // The inflated bytes are a buffer of their own: copied as before.
            share: None,
        };
        let term = inner.term()?;
        if inner.r.pos != inflated.len() {
            return Err(DecodeError::TrailingBytes(inflated.len() - inner.r.pos));
        }
        return Ok((term, r.pos + used));
    }
    let mut d = Decoder {
        r,
        opts,
        atoms,
        depth: 0,
        share,
    };
    let term = d.term()?;
    Ok((term, d.r.pos))
}

/// Inflates the zlib stream at the start of `input` to exactly `size` bytes; returns
/// the bytes and how much of `input` the stream took.
fn inflate(input: &[u8], size: usize) -> Result<(Vec<u8>, usize), DecodeError> {
    /// First output allocation; a false stated size costs memory only as fast as
    /// real data inflates.
    const STEP: usize = 64 * 1024;
    let mut z = Decompress::new(true);
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Room for one byte past the stated size, so a stream that is too long is
        // seen as such; growth doubles (bounded by twice what really came out).
        if out.len() == out.capacity() {
            let target = (size + 1).min(out.len().max(STEP) * 2);
            out.reserve_exact(target.saturating_sub(out.len()));
        }
        let before = (z.total_in(), z.total_out());
        let in_pos = (z.total_in() as usize).min(input.len());
        let status = z
            .decompress_vec(&input[in_pos..], &mut out, FlushDecompress::None)
            .map_err(|_| DecodeError::BadCompression("corrupt zlib stream"))?;
        if out.len() > size {
            return Err(DecodeError::BadCompression("inflates past its stated size"));
        }
        match status {
            Status::StreamEnd if out.len() == size => return Ok((out, z.total_in() as usize)),
            Status::StreamEnd => {
                return Err(DecodeError::BadCompression(
                    "inflates short of its stated size",
                ))
            }
            Status::Ok | Status::BufError => {
                if (z.total_in(), z.total_out()) == before && out.len() < out.capacity() {
                    // No progress with output room to spare: the input ended.
                    return Err(DecodeError::Truncated);
                }
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A count of items of at least `min_size` bytes each, checked against the input.
    fn count(
        &mut self,
        n: usize,
        min_size: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(DecodeError::BadLength(what));
        }
        Ok(n)
    }
}

struct Decoder<'a, 'o, 'g> {
    r: Reader<'a>,
    opts: &'o DecodeOptions,
    atoms: &'g mut dyn AtomGate,
    depth: usize,
    /// The buffer `r`'s bytes lie in, when large binaries may share it.
    share: Option<&'o SharedBuf>,
}

impl<'a> Decoder<'a, '_, '_> {
    fn enter(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > self.opts.max_depth {
            return Err(DecodeError::TooDeep);
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A binary's bytes: a range of the shared frame when large and inside it, else
    /// a copy.
    fn binary(&self, data: &[u8]) -> Bytes {
        if data.len() >= super::SPLICE_MIN {
            if let Some(b) = self.share.and_then(|s| Bytes::shared_slice(s, data)) {
                return b;
            }
        }
        Bytes::from(data)
    }

    /// One term. Kept small: the recursive path (term -> tuple/list/map/fun -> term)
    /// must cost little stack per level, so everything else is out of line.
    fn term(&mut self) -> Result<Term, DecodeError> {
        let tag = self.r.u8()?;
        match tag {
            SMALL_TUPLE_EXT => {
                let n = usize::from(self.r.u8()?);
                self.tuple(n)
            }
            LARGE_TUPLE_EXT => {
                let n = self.r.u32()? as usize;
                self.tuple(n)
            }
            LIST_EXT => self.list(),
            MAP_EXT => self.map(),
            NEW_FUN_EXT => self.local_fun(),
            _ => self.scalar(tag),
        }
    }

    /// Every term that holds no other term.
    #[inline(never)]
    fn scalar(&mut self, tag: u8) -> Result<Term, DecodeError> {
        match tag {
            SMALL_INTEGER_EXT => Ok(Term::Int(i64::from(self.r.u8()?))),
            INTEGER_EXT => Ok(Term::Int(i64::from(self.r.u32()? as i32))),
            SMALL_BIG_EXT => {
                let n = usize::from(self.r.u8()?);
                self.big(n)
            }
            LARGE_BIG_EXT => {
                let n = self.r.u32()? as usize;
                let n = self.r.count(n, 1, "LARGE_BIG_EXT")?;
                self.big(n)
            }
            NEW_FLOAT_EXT => {
                let f = f64::from_bits(self.r.u64()?);
                if f.is_finite() {
                    Ok(Term::Float(f))
                } else {
                    Err(DecodeError::BadFloat)
                }
            }
            FLOAT_EXT => self.old_float(),
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
                Ok(Term::Atom(self.atom_body(tag)?))
            }
            BINARY_EXT => {
                let n = self.r.u32()? as usize;
                let data = self.r.take(n)?;
                Ok(Term::Binary(self.binary(data)))
            }
            BIT_BINARY_EXT => {
                let n = self.r.u32()? as usize;
                let bits = self.r.u8()?;
                let data = self.r.take(n)?;
                match (n, bits) {
                    // An empty bitstring is sent as zero bytes with bits 0 by some
                    // encoders; it is the empty binary.
                    (0, 0) => Ok(Term::Binary(Bytes::default())),
                    (0, _) => Err(DecodeError::BadValue("BIT_BINARY_EXT bit count")),
                    (_, 8) => Ok(Term::Binary(self.binary(data))),
                    (_, 1..=7) => BitBinary::new(data.to_vec(), bits)
                        .map(Term::BitBinary)
                        .ok_or(DecodeError::BadValue("BIT_BINARY_EXT bit count")),
                    _ => Err(DecodeError::BadValue("BIT_BINARY_EXT bit count")),
                }
            }
            NIL_EXT => Ok(Term::Nil),
            STRING_EXT => {
                let n = usize::from(self.r.u16()?);
                let bytes = self.r.take(n)?;
                Ok(if n == 0 {
                    Term::Nil
                } else {
                    Term::Charlist(bytes.to_vec())
                })
            }
            NEW_PID_EXT | PID_EXT => Ok(Term::Pid(self.pid_body(tag)?)),
            NEWER_REFERENCE_EXT | NEW_REFERENCE_EXT => {
                let n = usize::from(self.r.u16()?);
                if n == 0 || n > MAX_REF_WORDS {
                    return Err(DecodeError::BadLength("reference words"));
                }
                let node = self.node_atom()?;
                let creation = if tag == NEWER_REFERENCE_EXT {
                    self.r.u32()?
                } else {
                    u32::from(self.r.u8()?)
                };
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(self.r.u32()?);
                }
                Ok(Term::Ref(Ref {
                    node,
                    creation,
                    ids,
                }))
            }
            REFERENCE_EXT => {
                let node = self.node_atom()?;
                let id = self.r.u32()?;
                let creation = u32::from(self.r.u8()?);
                Ok(Term::Ref(Ref {
                    node,
                    creation,
                    ids: vec![id],
                }))
            }
            NEW_PORT_EXT | V4_PORT_EXT | PORT_EXT => {
                let node = self.node_atom()?;
                let (id, creation) = match tag {
                    V4_PORT_EXT => (self.r.u64()?, self.r.u32()?),
                    NEW_PORT_EXT => (u64::from(self.r.u32()?), self.r.u32()?),
                    _ => (u64::from(self.r.u32()?), u32::from(self.r.u8()?)),
                };
                Ok(Term::Port(Port { node, id, creation }))
            }
            EXPORT_EXT => self.export_fun(),
            FUN_EXT => Err(DecodeError::OldFun),
            LOCAL_EXT => Err(DecodeError::LocalExt),
            ATOM_CACHE_REF => Err(DecodeError::AtomCacheRef),
            other => Err(DecodeError::UnknownTag(other)),
        }
    }

    fn big(&mut self, n: usize) -> Result<Term, DecodeError> {
        let sign = self.r.u8()?;
        let digits = self.r.take(n)?;
        let sign = match sign {
            0 => Sign::Plus,
            1 => Sign::Minus,
            _ => return Err(DecodeError::BadValue("bignum sign")),
        };
        Ok(Term::int(BigInt::from_bytes_le(sign, digits)))
    }

    fn old_float(&mut self) -> Result<Term, DecodeError> {
        let raw = self.r.take(31)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end]).map_err(|_| DecodeError::BadFloat)?;
        let f: f64 = text.trim().parse().map_err(|_| DecodeError::BadFloat)?;
        if f.is_finite() {
            Ok(Term::Float(f))
        } else {
            Err(DecodeError::BadFloat)
        }
    }

    /// The text of an atom whose tag was just read, admitted through the gate.
    fn atom_body(&mut self, tag: u8) -> Result<Atom, DecodeError> {
        let n = match tag {
            ATOM_EXT | ATOM_UTF8_EXT => usize::from(self.r.u16()?),
            _ => usize::from(self.r.u8()?),
        };
        let bytes = self.r.take(n)?;
        if tag == ATOM_EXT || tag == SMALL_ATOM_EXT {
            if n > MAX_ATOM_CHARS {
                return Err(DecodeError::BadAtom("longer than 255 characters"));
            }
            if bytes.is_ascii() {
                // ASCII is the same text in Latin-1 and UTF-8: no conversion.
                let text =
                    std::str::from_utf8(bytes).map_err(|_| DecodeError::BadAtom("not UTF-8"))?;
                return self.atoms.atom(text).map_err(DecodeError::AtomLimit);
            }
            // Latin-1: each byte is the code point.
            let text: String = bytes.iter().map(|&b| char::from(b)).collect();
            return self.atoms.atom(&text).map_err(DecodeError::AtomLimit);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadAtom("not UTF-8"))?;
        // Bytes >= chars: only long byte strings need counting.
        if n > MAX_ATOM_CHARS && text.chars().count() > MAX_ATOM_CHARS {
            return Err(DecodeError::BadAtom("longer than 255 characters"));
        }
        self.atoms.atom(text).map_err(DecodeError::AtomLimit)
    }

    /// An atom where the format requires one (node names, modules, functions).
    fn node_atom(&mut self) -> Result<Atom, DecodeError> {
        let tag = self.r.u8()?;
        match tag {
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => self.atom_body(tag),
            ATOM_CACHE_REF => Err(DecodeError::AtomCacheRef),
            _ => Err(DecodeError::BadAtom("an atom is required here")),
        }
    }

    fn pid_body(&mut self, tag: u8) -> Result<Pid, DecodeError> {
        let node = self.node_atom()?;
        let id = self.r.u32()?;
        let serial = self.r.u32()?;
        let creation = if tag == NEW_PID_EXT {
            self.r.u32()?
        } else {
            u32::from(self.r.u8()?)
        };
        Ok(Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    #[inline(never)]
    fn tuple(&mut self, n: usize) -> Result<Term, DecodeError> {
        let n = self.r.count(n, 1, "tuple")?;
        self.enter()?;
        let mut elems = Vec::with_capacity(n.min(MAX_PREALLOC));
        for _ in 0..n {
            elems.push(self.term()?);
        }
        self.leave();
        Ok(Term::Tuple(elems))
    }

    /// LIST_EXT; a tail that is itself a list (LIST_EXT or STRING_EXT) is folded in.
    #[inline(never)]
    fn list(&mut self) -> Result<Term, DecodeError> {
        self.enter()?;
        let mut elems: Vec<Term> = Vec::new();
        let tail = loop {
            let n = self.r.u32()? as usize;
            let n = self.r.count(n, 1, "list")?;
            elems.reserve(n.min(MAX_PREALLOC));
            for _ in 0..n {
                elems.push(self.term()?);
            }
            match self.r.peek()? {
                LIST_EXT => {
                    self.r.pos += 1;
                }
                STRING_EXT => {
                    self.r.pos += 1;
                    let n = usize::from(self.r.u16()?);
                    let bytes = self.r.take(n)?;
                    elems.extend(bytes.iter().map(|&b| Term::Int(i64::from(b))));
                    break Term::Nil;
                }
                _ => break self.term()?,
            }
        };
        self.leave();
        Ok(Term::improper_list(elems, tail))
    }

    #[inline(never)]
    fn map(&mut self) -> Result<Term, DecodeError> {
        let n = self.r.u32()? as usize;
        let n = self.r.count(n, 2, "map")?;
        self.enter()?;
        let mut pairs = Vec::with_capacity(n.min(MAX_PREALLOC));
        let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(n.min(MAX_PREALLOC));
        for _ in 0..n {
            let k = self.term()?;
            let v = self.term()?;
            // Keys are compared by their canonical encoding: equal encodings are
            // exactly the `=:=`-equal keys (one form per integer, atom, list...).
            let mut key_bytes = Vec::new();
            encode_term_into(&mut key_bytes, &k).map_err(|_| DecodeError::BadValue("map key"))?;
            if !seen.insert(key_bytes) {
                return Err(DecodeError::DuplicateMapKey);
            }
            pairs.push((k, v));
        }
        self.leave();
        Ok(Term::Map(pairs))
    }

    fn export_fun(&mut self) -> Result<Term, DecodeError> {
        let start = self.r.pos - 1;
        let module = self.node_atom()?;
        let function = self.node_atom()?;
        if self.r.u8()? != SMALL_INTEGER_EXT {
            return Err(DecodeError::BadValue("export fun arity"));
        }
        let arity = self.r.u8()?;
        let raw = self.r.buf[start..self.r.pos].to_vec();
        Ok(Term::Fun(Box::new(Fun::from_parts(
            FunKind::Export {
                module,
                function,
                arity,
            },
            raw,
        ))))
    }

    #[inline(never)]
    fn local_fun(&mut self) -> Result<Term, DecodeError> {
        let start = self.r.pos - 1;
        let size = self.r.u32()? as usize;
        // Size counts itself and everything after it up to the fun's end.
        if size < 4 || size - 4 > self.r.remaining() {
            return Err(DecodeError::BadLength("NEW_FUN_EXT"));
        }
        let end = self.r.pos - 4 + size;
        self.enter()?;
        let arity = self.r.u8()?;
        let uniq: [u8; 16] = self.r.array()?;
        let index = self.r.u32()?;
        let num_free = self.r.u32()?;
        let module = self.node_atom()?;
        for what in ["fun old index", "fun old uniq"] {
            match self.r.u8()? {
                SMALL_INTEGER_EXT => {
                    self.r.u8()?;
                }
                INTEGER_EXT => {
                    self.r.u32()?;
                }
                _ => return Err(DecodeError::BadValue(what)),
            }
        }
        let pid = match self.r.u8()? {
            tag @ (NEW_PID_EXT | PID_EXT) => self.pid_body(tag)?,
            _ => return Err(DecodeError::BadValue("fun creator pid")),
        };
        let n = self.r.count(num_free as usize, 1, "fun free variables")?;
        for _ in 0..n {
            self.term()?;
        }
        self.leave();
        if self.r.pos != end {
            return Err(DecodeError::BadLength("NEW_FUN_EXT"));
        }
        let raw = self.r.buf[start..end].to_vec();
        Ok(Term::Fun(Box::new(Fun::from_parts(
            FunKind::Local {
                module,
                arity,
                index,
                uniq,
                pid,
                num_free,
            },
            raw,
        ))))
    }
}
