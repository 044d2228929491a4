//! [`FragmentBuilder`]: builds a fragment directly, without an intermediate
//! [`Term`] (the Python converter's path).
//!
//! Postfix protocol: push the children, then name the container. Every value call
//! (`int`, `atom`, `binary`, ...) pushes one finished term; `tuple(n)`, `list(n)`
//! and `map(n)` pop the last `n` terms (`2n` for a map: key, value, key, value, ...)
//! and push the container. `finish` requires exactly one term left. So
//! `{ok, [1, 2]}` is `atom(ok) int(1) int(2) list(2) tuple(2) finish()`.
//!
//! This order suits a depth-first converter: a child is complete before its parent
//! is written, so the parent is one contiguous object and nothing is patched later.
//!
//! Invariants: the builder's words are always parseable (objects are written whole);
//! the stack holds only words valid in them. Misuse (popping more terms than were
//! pushed, finishing with zero or several terms) returns a [`TermError`]; a failed
//! container call leaves the builder unchanged. Nothing panics. Map keys are sorted in term order and
//! duplicates resolved last-wins, as `maps:from_list/1` does.

use num_bigint::BigInt;

use super::encode;
use super::order;
use super::view::{Src, View};
use super::word::*;
use super::{Atom, ExternalPid, ExternalRef, Fragment, Pid, Ref, RefcBin, Term, TermError};

/// Builds a [`Fragment`] term by term (see the module docs for the protocol).
#[derive(Default)]
pub struct FragmentBuilder {
    words: Vec<u64>,
    bins: Vec<RefcBin>,
    stack: Vec<Word>,
}

impl FragmentBuilder {
    /// An empty builder.
    pub fn new() -> FragmentBuilder {
        FragmentBuilder::default()
    }

    /// Preallocates `words` words of term data.
    #[inline]
    pub fn with_capacity(words: usize) -> FragmentBuilder {
        FragmentBuilder {
            words: Vec::with_capacity(words),
            bins: Vec::new(),
            stack: Vec::with_capacity(8),
        }
    }

    /// Finished terms waiting for a container (or for `finish`).
    pub fn pending(&self) -> usize {
        self.stack.len()
    }

    #[inline]
    fn push(&mut self, w: Word) -> &mut Self {
        self.stack.push(w);
        self
    }

    /// Pushes an integer (any size that fits `i64`).
    pub fn int(&mut self, v: i64) -> &mut Self {
        let w = encode::write_int(&mut self.words, v);
        self.push(w)
    }
    /// Any integer (normalised: values that fit `i64` are stored as such).
    pub fn bigint(&mut self, v: &BigInt) -> &mut Self {
        let w = encode::write_bigint(&mut self.words, v);
        self.push(w)
    }
    /// Pushes a float.
    pub fn float(&mut self, v: f64) -> &mut Self {
        let w = encode::write_float(&mut self.words, v);
        self.push(w)
    }
    /// Pushes an atom.
    pub fn atom(&mut self, a: Atom) -> &mut Self {
        self.push(Word::atom(a))
    }
    /// Pushes `true` or `false`.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.atom(Atom::from_bool(b))
    }
    /// Pushes the empty list.
    pub fn nil(&mut self) -> &mut Self {
        self.push(Word::NIL)
    }
    /// Copies `bytes`: inline up to `HEAP_BINARY_MAX`, else into a new refc buffer.
    pub fn binary(&mut self, bytes: &[u8]) -> &mut Self {
        let w = encode::write_bytes(&mut self.words, &mut self.bins, bytes);
        self.push(w)
    }
    /// Text (a Python `str`): copies its UTF-8 bytes, inline up to `HEAP_BINARY_MAX`,
    /// else into a new refc buffer.
    pub fn str(&mut self, s: &str) -> &mut Self {
        let w = encode::write_str(&mut self.words, &mut self.bins, s);
        self.push(w)
    }
    /// Shares an existing refcounted buffer (no copy, whatever its size).
    pub fn refc_binary(&mut self, bin: RefcBin) -> &mut Self {
        let w = encode::write_refc(&mut self.words, &mut self.bins, bin);
        self.push(w)
    }
    /// Pushes a pid.
    pub fn pid(&mut self, p: Pid) -> &mut Self {
        let w = encode::write_pid(&mut self.words, p);
        self.push(w)
    }
    /// A pid of another VM.
    pub fn external_pid(&mut self, p: &ExternalPid) -> &mut Self {
        let w = encode::write_external_pid(&mut self.words, p);
        self.push(w)
    }
    /// A reference of another VM.
    pub fn external_ref(&mut self, r: &ExternalRef) -> &mut Self {
        let w = encode::write_external_ref(&mut self.words, r);
        self.push(w)
    }
    /// Pushes a local reference.
    pub fn reference(&mut self, r: Ref) -> &mut Self {
        let w = encode::write_ref(&mut self.words, r.0);
        self.push(w)
    }
    /// A whole owned term as one child.
    pub fn term(&mut self, t: &Term) -> &mut Self {
        let w = encode::write_term(&mut self.words, &mut self.bins, t);
        self.push(w)
    }
    /// A whole term from a view (deep copy) as one child.
    pub fn view(&mut self, v: View<'_>) -> &mut Self {
        let w = encode::copy_view(&mut self.words, &mut self.bins, v);
        self.push(w)
    }

    fn check(&self, needed: usize) -> Result<usize, TermError> {
        let available = self.stack.len();
        if needed > available {
            Err(TermError::BuilderUnderflow { needed, available })
        } else {
            Ok(available - needed)
        }
    }

    /// Pops `arity` terms into a tuple (first pushed = first element).
    #[inline]
    pub fn tuple(&mut self, arity: usize) -> Result<&mut Self, TermError> {
        let start = self.check(arity)?;
        let off = self.words.len();
        self.words.push(header(SUB_TUPLE, arity as u64));
        self.words
            .extend(self.stack.drain(start..).map(|w| w.to_bits()));
        Ok(self.push(Word::ptr(false, YOUNG, off)))
    }

    /// Pops `len` terms into a proper list (first pushed = head).
    pub fn list(&mut self, len: usize) -> Result<&mut Self, TermError> {
        let start = self.check(len)?;
        if len == 0 {
            return Ok(self.push(Word::NIL));
        }
        let off = self.words.len();
        for (i, w) in self.stack.drain(start..).enumerate() {
            let cell = off + 2 * i;
            self.words.push(w.to_bits());
            let tail = if i + 1 < len {
                Word::ptr(true, YOUNG, cell + 2)
            } else {
                Word::NIL
            };
            self.words.push(tail.to_bits());
        }
        Ok(self.push(Word::ptr(true, YOUNG, off)))
    }

    /// Pops `pairs` key/value pairs (pushed key, value, key, value, ...) into a map.
    /// Keys are sorted; for a repeated key the last value wins.
    pub fn map(&mut self, pairs: usize) -> Result<&mut Self, TermError> {
        let needed = pairs.checked_mul(2).ok_or(TermError::BuilderUnderflow {
            needed: usize::MAX,
            available: self.stack.len(),
        })?;
        let start = self.check(needed)?;
        let mut entries: Vec<(Word, Word)> = self.stack[start..]
            .chunks_exact(2)
            .map(|kv| (kv[0], kv[1]))
            .rev()
            .collect();
        {
            let src = Src::Build(self);
            let key = |w: Word| View::new(w, src);
            entries.sort_by(|a, b| order::cmp(key(a.0), key(b.0)));
            entries.dedup_by(|later, first| order::eq(key(later.0), key(first.0)));
        }
        self.stack.truncate(start);
        let n = entries.len();
        let off = self.words.len();
        self.words.push(header(SUB_MAP, n as u64));
        self.words.extend(entries.iter().map(|e| e.0.to_bits()));
        self.words.extend(entries.iter().map(|e| e.1.to_bits()));
        Ok(self.push(Word::ptr(false, YOUNG, off)))
    }

    /// The one finished term as a fragment; an error unless exactly one term is
    /// pending.
    #[inline]
    pub fn finish(self) -> Result<Fragment, TermError> {
        match self.stack.len() {
            0 => Err(TermError::BuilderEmpty),
            1 => {
                let root = self.stack[0];
                if self.words.is_empty() {
                    return Ok(Fragment::immediate(root));
                }
                Ok(Fragment::from_parts(root, self.words, self.bins))
            }
            pending => Err(TermError::BuilderIncomplete { pending }),
        }
    }

    #[inline]
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }
    #[inline]
    pub(crate) fn bins(&self) -> &[RefcBin] {
        &self.bins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_nested() {
        let mut b = FragmentBuilder::new();
        b.atom(Atom::OK).int(1).int(2);
        b.list(2).unwrap().tuple(2).unwrap();
        let f = b.finish().unwrap();
        assert_eq!(f.to_string(), "{ok,[1,2]}");
    }

    #[test]
    fn misuse_is_an_error() {
        let mut b = FragmentBuilder::new();
        b.int(1);
        assert_eq!(
            b.tuple(2).err(),
            Some(TermError::BuilderUnderflow {
                needed: 2,
                available: 1
            })
        );
        assert!(b.map(1).is_err());
        b.int(2);
        assert!(matches!(
            FragmentBuilder::new().finish(),
            Err(TermError::BuilderEmpty)
        ));
        assert!(matches!(
            b.finish(),
            Err(TermError::BuilderIncomplete { pending: 2 })
        ));
    }

    #[test]
    fn map_sorts_and_dedups() {
        let mut b = FragmentBuilder::new();
        b.atom(Atom::new("b")).int(1);
        b.atom(Atom::new("a")).int(2);
        b.atom(Atom::new("b")).int(3);
        b.map(3).unwrap();
        let f = b.finish().unwrap();
        assert_eq!(f.to_string(), "#{a => 2,b => 3}");
        assert_eq!(
            f.view().map_get(&Term::atom("b")).and_then(|v| v.as_int()),
            Some(3)
        );
    }
}
