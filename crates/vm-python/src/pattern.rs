//! Receive patterns: a Python pattern compiled once into a matcher over [`View`]s, so
//! a selective receive never calls Python per queued message.
//!
//! A pattern is a Python value in which `beamvm.ANY` matches anything and a type
//! (`int`, `float`, `str`, `bytes`, `bool`, `tuple`, `list`, `dict`, `Atom`, `Pid`,
//! `Ref`) matches any value of that type; tuples and lists match element-wise (same
//! length), dicts match maps that have at least the pattern's keys (literal keys) with
//! matching values (Erlang's map patterns); anything else is a literal compared by
//! exact term equality (`1` does not match `1.0`).
//!
//! The key of a pattern drives the mailbox's index (keyed receive, cost independent
//! of the queue length): what the pattern fixes in a tuple's leading elements, under
//! the mailbox's one policy ([`Key::for_pattern`]): a literal `Ref` among the first
//! three elements, else a literal atom, small int or str as the first element; a
//! pattern that is a bare literal atom, small int or str keys on the message itself
//! ([`Key::of_bare`]).
//!
//! Patterns are written by hand, so their nesting is limited to [`MAX_PATTERN_DEPTH`]
//! (messages are not limited).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use vm_core::process::mailbox::KeyElem;
use vm_core::term::Kind;
use vm_core::{Atom, Key, Term, View};

use crate::convert::to_term;
use crate::errors::type_name;
use crate::types::{PyAtom, PyBinary, PyPid, PyRef};

/// Deepest nesting of a receive pattern.
pub const MAX_PATTERN_DEPTH: usize = 1000;

/// A value type a pattern can match by kind.
#[derive(Clone, Copy, Debug)]
pub enum TypeTest {
    /// `int`: an integer of any size.
    Int,
    /// `float`.
    Float,
    /// `str`.
    Str,
    /// `bytes`: a binary.
    Bytes,
    /// `bool`: the atoms `true` and `false`.
    Bool,
    /// `tuple` (not a str).
    Tuple,
    /// `list`.
    List,
    /// `dict`: a map.
    Dict,
    /// `Atom` (not `true`, `false` or `undefined`).
    Atom,
    /// `Pid`.
    Pid,
    /// `Ref`.
    Ref,
    /// `type(None)`: the atom `undefined`.
    NoneT,
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// `beamvm.ANY`: anything.
    Any,
    /// A type: any value of it.
    Type(TypeTest),
    /// A value: exactly equal terms.
    Literal(Term),
    /// A tuple of patterns: a tuple of the same size, element-wise.
    Tuple(Vec<Pattern>),
    /// A list of patterns: a list of the same length, element-wise.
    List(Vec<Pattern>),
    /// A dict of literal keys to patterns: a map with at least those keys.
    Map(Vec<(Term, Pattern)>),
}

/// Compiles a Python pattern; `any` is the `beamvm.ANY` object.
pub fn compile(obj: &Bound<'_, PyAny>, any: &Bound<'_, PyAny>) -> PyResult<Pattern> {
    let p = compile_inner(obj, any, 0)?;
    Ok(p)
}

fn compile_inner(
    obj: &Bound<'_, PyAny>,
    any: &Bound<'_, PyAny>,
    depth: usize,
) -> PyResult<Pattern> {
    if depth > MAX_PATTERN_DEPTH {
        return Err(PyValueError::new_err(format!(
            "receive pattern nested more than {MAX_PATTERN_DEPTH} levels deep"
        )));
    }
    if obj.is(any) {
        return Ok(Pattern::Any);
    }
    if let Ok(t) = obj.downcast::<PyType>() {
        let py = obj.py();
        let tt = if t.is(&py.get_type::<PyBool>()) {
            TypeTest::Bool
        } else if t.is(&py.get_type::<PyInt>()) {
            TypeTest::Int
        } else if t.is(&py.get_type::<PyFloat>()) {
            TypeTest::Float
        } else if t.is(&py.get_type::<PyString>()) {
            TypeTest::Str
        } else if t.is(&py.get_type::<PyBytes>()) || t.is(&py.get_type::<PyBinary>()) {
            TypeTest::Bytes
        } else if t.is(&py.get_type::<PyTuple>()) {
            TypeTest::Tuple
        } else if t.is(&py.get_type::<PyList>()) {
            TypeTest::List
        } else if t.is(&py.get_type::<PyDict>()) {
            TypeTest::Dict
        } else if t.is(&py.get_type::<PyAtom>()) {
            TypeTest::Atom
        } else if t.is(&py.get_type::<PyPid>()) {
            TypeTest::Pid
        } else if t.is(&py.get_type::<PyRef>()) {
            TypeTest::Ref
        } else if t.is(&py.None().bind(py).get_type()) {
            TypeTest::NoneT
        } else {
            return Err(PyTypeError::new_err(format!(
                "a type in a receive pattern must be one of int, float, str, bytes, bool, \
                 tuple, list, dict, Atom, Pid, Ref, type(None); got {}",
                t.qualname()?
            )));
        };
        return Ok(Pattern::Type(tt));
    }
    let subs = |items: Vec<Bound<'_, PyAny>>| -> PyResult<Vec<Pattern>> {
        items
            .iter()
            .map(|e| compile_inner(e, any, depth + 1))
            .collect()
    };
    let p = if let Ok(t) = obj.downcast_exact::<PyTuple>() {
        Pattern::Tuple(subs(t.iter().collect())?)
    } else if let Ok(l) = obj.downcast_exact::<PyList>() {
        Pattern::List(subs(l.iter().collect())?)
    } else if let Ok(d) = obj.downcast_exact::<PyDict>() {
        let mut v = Vec::with_capacity(d.len());
        for (k, val) in d.iter() {
            v.push((to_term(&k)?, compile_inner(&val, any, depth + 1)?));
        }
        Pattern::Map(v)
    } else {
        return literal(obj).map(Pattern::Literal);
    };
    // A container with no wildcard inside is one literal (one comparison).
    if is_literal(&p) {
        return Ok(Pattern::Literal(to_term(obj)?));
    }
    Ok(p)
}

/// A literal value in a pattern; a value with no term form gets an error that says
/// what a pattern can hold (a callable is the usual mistake: a predicate).
fn literal(obj: &Bound<'_, PyAny>) -> PyResult<Term> {
    to_term(obj).map_err(|e| {
        let py = obj.py();
        if !e.is_instance_of::<PyTypeError>(py) {
            return e;
        }
        let what = if obj.is_callable() {
            format!(
                "a callable ({}) cannot be a receive pattern: patterns are values (matched \
                 by equality), types (int, str, bytes, tuple, Atom, Pid, Ref, ...) and ANY, \
                 combined in tuples, lists and dicts; to select by a predicate, receive \
                 ANY and test the message in your code",
                obj.repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| type_name(obj))
            )
        } else {
            format!(
                "a {} cannot be part of a receive pattern: patterns are values (int, \
                 float, str, bytes, bool, None, Atom, Pid, Ref), types (int, str, bytes, \
                 tuple, Atom, Pid, Ref, ...) and ANY, combined in tuples, lists and dicts",
                type_name(obj)
            )
        };
        PyTypeError::new_err(what)
    })
}

fn is_literal(p: &Pattern) -> bool {
    match p {
        Pattern::Literal(_) => true,
        Pattern::Tuple(v) | Pattern::List(v) => v.iter().all(is_literal),
        _ => false,
    }
}

fn type_ok(t: TypeTest, v: View<'_>) -> bool {
    let k = v.kind();
    match t {
        TypeTest::Int => matches!(k, Kind::Int | Kind::BigInt),
        TypeTest::Float => k == Kind::Float,
        TypeTest::Str => k == Kind::Str,
        TypeTest::Bytes => k == Kind::Binary,
        TypeTest::Bool => matches!(v.as_atom(), Some(Atom::TRUE) | Some(Atom::FALSE)),
        TypeTest::Tuple => k == Kind::Tuple,
        TypeTest::List => matches!(k, Kind::List | Kind::Nil),
        TypeTest::Dict => k == Kind::Map,
        TypeTest::Atom => {
            k == Kind::Atom
                && !matches!(
                    v.as_atom(),
                    Some(Atom::TRUE) | Some(Atom::FALSE) | Some(Atom::UNDEFINED)
                )
        }
        TypeTest::Pid => k == Kind::Pid,
        TypeTest::Ref => k == Kind::Ref,
        TypeTest::NoneT => v.as_atom() == Some(Atom::UNDEFINED),
    }
}

impl Pattern {
    /// Whether `v` matches.
    pub fn matches(&self, v: View<'_>) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Type(t) => type_ok(*t, v),
            Pattern::Literal(t) => v.eq_term(t),
            Pattern::Tuple(ps) => {
                if v.tuple_len() != Some(ps.len()) {
                    return false;
                }
                ps.iter()
                    .enumerate()
                    .all(|(i, p)| v.tuple_get(i).is_some_and(|e| p.matches(e)))
            }
            Pattern::List(ps) => {
                if ps.is_empty() {
                    return v.is_nil();
                }
                let Some(it) = v.list_iter() else {
                    return false;
                };
                let mut n = 0;
                for e in it {
                    if n >= ps.len() || !ps[n].matches(e) {
                        return false;
                    }
                    n += 1;
                }
                n == ps.len()
            }
            Pattern::Map(kvs) => {
                if v.kind() != Kind::Map {
                    return false;
                }
                kvs.iter()
                    .all(|(k, p)| v.map_get(k).is_some_and(|e| p.matches(e)))
            }
        }
    }

    /// The mailbox key every message matching this pattern carries, if any.
    pub fn key(&self) -> Option<Key> {
        match self {
            Pattern::Tuple(ps) => Key::for_pattern(ps.iter().map(|p| match p {
                Pattern::Literal(t) => KeyElem::of_term(t),
                _ => KeyElem::Other,
            })),
            Pattern::Literal(Term::Tuple(ts)) => Key::for_pattern(ts.iter().map(KeyElem::of_term)),
            Pattern::Literal(t) => Key::of_bare(KeyElem::of_term(t)),
            _ => None,
        }
    }
}
