//! Python values <-> terms.
//!
//! | Python | term | back |
//! |---|---|---|
//! | `True` / `False` | atoms `true` / `false` | `True` / `False` |
//! | `None` | atom `undefined` | `None` |
//! | `int` (any size) | integer | `int` |
//! | `float` | float | `float` |
//! | `str` | `{'$str', <<UTF-8>>}` | `str` |
//! | `bytes`, `bytearray` | binary (shared refc binary over 64 bytes) | `bytes`; `beamvm.Binary` over 64 bytes |
//! | `beamvm.Binary` | the same shared binary (no copy) | `beamvm.Binary` |
//! | `tuple` / `list` / `dict` | tuple / list / map | `tuple` / `list` / `dict` |
//! | `Atom`, `Pid`, `Ref` | atom, pid, reference | the same |
//!
//! So Python values round-trip exactly, except that the atoms `true`, `false` and
//! `undefined` arrive as `True`, `False` and `None`, a tuple `(Atom('$str'), b'...')`
//! arrives as a `str`, and bytes over 64 bytes arrive as a zero-copy `beamvm.Binary`
//! (equal to the bytes it holds). Anything else raises `TypeError` naming its type.
//! Every conversion builds a fresh object graph: a received message is an
//! independent copy.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use pyo3::{ffi, PyTypeInfo};
use std::sync::OnceLock;
use vm_core::term::{FragmentBuilder, Kind, RefcBin};
use vm_core::{Atom, Fragment, Pid, Term, View, Word};

use crate::types::{PidTarget, PyAtom, PyBinary, PyPid, PyRef, RefId};

/// Deepest nesting converted (a guard against self-referencing containers).
pub const MAX_DEPTH: usize = 1000;

/// The atom that tags a Python `str` inside a term.
pub fn str_tag() -> Atom {
    static A: OnceLock<Atom> = OnceLock::new();
    *A.get_or_init(|| Atom::new("$str"))
}

fn no_term_form(obj: &Bound<'_, PyAny>) -> PyErr {
    let tn = obj
        .get_type()
        .qualname()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!(
        "cannot convert an object of type '{tn}' to a beamvm term (messages and exit \
         reasons may hold int, float, str, bytes, bool, None, tuple, list, dict, Atom, \
         Pid, Ref and Binary)"
    ))
}

/// Raw type pointers of the classes the fast paths test by identity (a pyclass
/// downcast goes through PyO3's lazy type object on every call).
struct Types {
    atom: usize,
    pid: usize,
}

fn types(py: Python<'_>) -> &'static Types {
    static T: GILOnceCell<Types> = GILOnceCell::new();
    T.get_or_init(py, || Types {
        atom: PyAtom::type_object_raw(py) as usize,
        pid: PyPid::type_object_raw(py) as usize,
    })
}

/// A value that needs no heap words: None, a bool, an int that fits `i64`, an Atom,
/// a Pid. Exact types only (subclasses take the general path).
#[derive(Clone, Copy)]
enum Imm {
    Atom(Atom),
    Int(i64),
    Pid(Pid),
}

#[inline]
fn immediate(obj: &Bound<'_, PyAny>) -> Option<Imm> {
    let py = obj.py();
    let ty = obj.get_type_ptr();
    // SAFETY: comparing type pointers; the value is read only when the type matched.
    unsafe {
        if obj.is_none() {
            Some(Imm::Atom(Atom::UNDEFINED))
        } else if ty == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            let mut overflow = 0;
            let v = ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow);
            if overflow != 0 {
                return None;
            }
            if v == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            Some(Imm::Int(v))
        } else if ty == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
            Some(Imm::Atom(Atom::from_bool(obj.as_ptr() == ffi::Py_True())))
        } else if ty as usize == types(py).pid {
            match obj.downcast_unchecked::<PyPid>().get().target() {
                PidTarget::Local(p) => Some(Imm::Pid(p)),
                // Another VM's pid is boxed (the general path).
                PidTarget::Foreign(_) => None,
            }
        } else if ty as usize == types(py).atom {
            Some(Imm::Atom(obj.downcast_unchecked::<PyAtom>().get().0))
        } else {
            None
        }
    }
}

#[inline]
fn push_imm(b: &mut FragmentBuilder, v: Imm) {
    match v {
        Imm::Atom(a) => b.atom(a),
        Imm::Int(i) => b.int(i),
        Imm::Pid(p) => b.pid(p),
    };
}

/// Converts a Python value into a message fragment.
pub fn to_fragment(obj: &Bound<'_, PyAny>) -> PyResult<Fragment> {
    if let Some(v) = immediate(obj) {
        let w = match v {
            Imm::Atom(a) => Some(Word::atom(a)),
            Imm::Int(i) => Word::small_int(i),
            Imm::Pid(p) => Word::try_pid(p),
        };
        if let Some(w) = w {
            return Ok(Fragment::immediate(w));
        }
    }
    let mut b = FragmentBuilder::with_capacity(16);
    push(&mut b, obj, 0)?;
    b.finish().map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Converts a Python value into an owned term (patterns, literals).
pub fn to_term(obj: &Bound<'_, PyAny>) -> PyResult<Term> {
    Ok(to_fragment(obj)?.to_term())
}

fn bad(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn push(b: &mut FragmentBuilder, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "value nested more than {MAX_DEPTH} levels deep (a container that contains itself?)"
        )));
    }
    if let Some(v) = immediate(obj) {
        push_imm(b, v);
    } else if let Ok(s) = obj.downcast_exact::<PyString>() {
        b.atom(str_tag());
        b.binary(s.to_str()?.as_bytes());
        b.tuple(2).map_err(bad)?;
    } else if let Ok(v) = obj.downcast_exact::<PyInt>() {
        match v.extract::<i64>() {
            Ok(i) => {
                b.int(i);
            }
            Err(_) => {
                let big: num_bigint::BigInt = v.extract()?;
                b.bigint(&big);
            }
        }
    } else if let Ok(v) = obj.downcast_exact::<PyBool>() {
        b.bool(v.is_true());
    } else if let Ok(t) = obj.downcast_exact::<PyTuple>() {
        for e in t.iter() {
            push(b, &e, depth + 1)?;
        }
        b.tuple(t.len()).map_err(bad)?;
    } else if let Ok(l) = obj.downcast_exact::<PyList>() {
        let n = l.len();
        for e in l.iter() {
            push(b, &e, depth + 1)?;
        }
        if l.len() != n {
            return Err(PyValueError::new_err("list changed size during conversion"));
        }
        b.list(n).map_err(bad)?;
    } else if let Ok(f) = obj.downcast_exact::<PyFloat>() {
        b.float(f.value());
    } else if let Ok(by) = obj.downcast_exact::<PyBytes>() {
        b.binary(by.as_bytes());
    } else if let Ok(d) = obj.downcast_exact::<PyDict>() {
        let n = d.len();
        for (k, v) in d.iter() {
            push(b, &k, depth + 1)?;
            push(b, &v, depth + 1)?;
        }
        b.map(n).map_err(bad)?;
    } else if let Ok(a) = obj.downcast_exact::<PyAtom>() {
        b.atom(a.get().0);
    } else if let Ok(p) = obj.downcast_exact::<PyPid>() {
        match p.get().target() {
            PidTarget::Local(p) => b.pid(p),
            PidTarget::Foreign(e) => b.external_pid(&e),
        };
    } else if let Ok(r) = obj.downcast_exact::<PyRef>() {
        match r.get().0 {
            RefId::Local(r) => b.reference(r),
            RefId::External(r) => b.external_ref(&r),
        };
    } else if let Ok(bin) = obj.downcast_exact::<PyBinary>() {
        b.refc_binary(bin.get().0.clone());
    } else if let Ok(ba) = obj.downcast::<PyByteArray>() {
        let v = ba.to_vec();
        if v.len() > vm_core::term::HEAP_BINARY_MAX {
            b.refc_binary(RefcBin::from_vec(v));
        } else {
            b.binary(&v);
        }
    } else if obj.is_instance_of::<PyBool>() {
        b.bool(obj.is_truthy()?);
    } else if let Ok(v) = obj.downcast::<PyInt>() {
        // int subclasses (IntEnum, ...) travel as plain ints.
        let plain = py_int(v)?;
        push(b, &plain, depth + 1)?;
    } else if let Ok(s) = obj.downcast::<PyString>() {
        b.atom(str_tag());
        b.binary(s.to_str()?.as_bytes());
        b.tuple(2).map_err(bad)?;
    } else if let Ok(t) = obj.downcast::<PyTuple>() {
        // namedtuples and other tuple subclasses travel as plain tuples.
        for e in t.iter() {
            push(b, &e, depth + 1)?;
        }
        b.tuple(t.len()).map_err(bad)?;
    } else if let Ok(f) = obj.downcast::<PyFloat>() {
        b.float(f.value());
    } else if let Ok(m) = obj.getattr(pyo3::intern!(obj.py(), "__beamvm_term__")) {
        // beamvm.Charlist, ImproperList, Fun, Port, BitString (python/beamvm/_wire.py):
        // their tagged-tuple form.
        let t = m.call0()?;
        if t.downcast_exact::<PyTuple>().is_err() {
            return Err(no_term_form(obj));
        }
        push(b, &t, depth + 1)?;
    } else {
        return Err(no_term_form(obj));
    }
    Ok(())
}

/// `beamvm._wire._from_term`, which makes the Python value of a tagged tuple.
fn wire_from_term(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: GILOnceCell<PyObject> = GILOnceCell::new();
    F.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("beamvm._wire")?.getattr("_from_term")?.unbind())
    })
    .map(|f| f.bind(py))
}

/// Whether `a` tags a wire-only value (dist.rs).
fn is_wire_tag(a: Atom) -> bool {
    let t = crate::dist::tags();
    a == t.charlist || a == t.improper || a == t.fun || a == t.port || a == t.bits
}

fn py_int<'py>(v: &Bound<'py, PyInt>) -> PyResult<Bound<'py, PyAny>> {
    v.py().get_type::<PyInt>().call1((v,))
}

/// An independent copy of `obj` made through its term form (what a receiver of it as
/// a message would see), or None when it has no term form (it, or a value inside it,
/// is a function, a set, an arbitrary object, ...).
pub fn copy_value(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Option<PyObject>> {
    if immediate(obj).is_some() {
        // Immutable and shared anyway: no copy needed.
        return Ok(Some(obj.clone().unbind()));
    }
    // Cheap refusal for the common objects with no term form (no error is built).
    let convertible = obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyDict>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyInt>()
        || obj.is_instance_of::<PyFloat>()
        || obj.downcast_exact::<PyAtom>().is_ok()
        || obj.downcast_exact::<PyRef>().is_ok()
        || obj.downcast_exact::<PyPid>().is_ok()
        || obj.downcast_exact::<PyBinary>().is_ok();
    if !convertible {
        return Ok(None);
    }
    match to_fragment(obj) {
        Ok(f) => frag_to_py(py, &f).map(Some),
        // No term form: a value of another type inside, or a container that contains
        // itself (or is nested past MAX_DEPTH). Shared by reference, as documented.
        Err(e) if e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<PyValueError>(py) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Converts a term into fresh Python objects.
pub fn to_py(py: Python<'_>, v: View<'_>) -> PyResult<PyObject> {
    Ok(match v.kind() {
        Kind::Int => v.as_int().unwrap_or(0).into_py(py),
        Kind::BigInt => match v.as_bigint() {
            Some(b) => b.into_py(py),
            None => 0.into_py(py),
        },
        Kind::Float => v.as_float().unwrap_or(0.0).into_py(py),
        Kind::Atom => {
            let a = v.as_atom().unwrap_or(Atom::UNDEFINED);
            if a == Atom::TRUE {
                true.into_py(py)
            } else if a == Atom::FALSE {
                false.into_py(py)
            } else if a == Atom::UNDEFINED {
                py.None()
            } else {
                PyAtom(a).into_py(py)
            }
        }
        Kind::Binary => match v.as_refc_binary() {
            Some(rb) => PyBinary(rb).into_py(py),
            None => PyBytes::new(py, v.as_bytes().unwrap_or(&[]))
                .into_any()
                .unbind(),
        },
        Kind::Tuple => {
            let n = v.tuple_len().unwrap_or(0);
            if n == 2 || n == 3 {
                if let Some(tag) = v.tuple_get(0).and_then(|t| t.as_atom()) {
                    if is_wire_tag(tag) {
                        let a = v.tuple_get(1).map(|x| to_py(py, x)).transpose()?;
                        let c = v.tuple_get(2).map(|x| to_py(py, x)).transpose()?;
                        let f = wire_from_term(py)?;
                        return Ok(f
                            .call1((
                                PyAtom(tag),
                                a.unwrap_or_else(|| py.None()),
                                c.unwrap_or_else(|| py.None()),
                            ))?
                            .unbind());
                    }
                }
            }
            if n == 2 {
                if let (Some(t), Some(s)) = (v.tuple_get(0), v.tuple_get(1)) {
                    if t.as_atom() == Some(str_tag()) {
                        if let Some(bytes) = s.as_bytes() {
                            let st = std::str::from_utf8(bytes)
                                .map_err(|e| PyValueError::new_err(e.to_string()))?;
                            return Ok(PyString::new(py, st).into_any().unbind());
                        }
                    }
                }
            }
            // SAFETY: a new tuple of n slots, each set once below; a slot left NULL by
            // an early error return is fine for the tuple's dealloc.
            let t = unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(n as ffi::Py_ssize_t))?
            };
            if let Some(it) = v.tuple_iter() {
                for (i, e) in it.enumerate().take(n) {
                    let item = to_py(py, e)?;
                    // SAFETY: `t` is the new tuple of `n` slots made above and `i < n`;
                    // SET_ITEM steals the new reference `into_ptr` gives it.
                    unsafe {
                        ffi::PyTuple_SET_ITEM(t.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr())
                    };
                }
            }
            t.unbind()
        }
        Kind::Nil => PyList::empty(py).into_any().unbind(),
        Kind::List => {
            let l = PyList::empty(py);
            if let Some(it) = v.list_iter() {
                for e in it {
                    l.append(to_py(py, e)?)?;
                }
            }
            l.into_any().unbind()
        }
        Kind::Map => {
            let d = PyDict::new(py);
            if let Some(it) = v.map_iter() {
                for (k, val) in it {
                    d.set_item(to_py(py, k)?, to_py(py, val)?)?;
                }
            }
            d.into_any().unbind()
        }
        Kind::Pid => match (v.as_pid(), v.as_external_pid()) {
            (Some(p), _) => PyPid::local(p).into_py(py),
            (None, Some(e)) => PyPid::external(e).into_py(py),
            (None, None) => return Err(PyValueError::new_err("malformed pid term")),
        },
        Kind::Ref => match (v.as_ref(), v.as_external_ref()) {
            (Some(r), _) => PyRef::local(r).into_py(py),
            (None, Some(r)) => PyRef(RefId::External(r)).into_py(py),
            (None, None) => return Err(PyValueError::new_err("malformed reference term")),
        },
    })
}

/// Converts a fragment into fresh Python objects.
pub fn frag_to_py(py: Python<'_>, f: &Fragment) -> PyResult<PyObject> {
    to_py(py, f.view())
}
