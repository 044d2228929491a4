//! Python values <-> terms.
//!
//! | Python | term | back |
//! |---|---|---|
//! | `True` / `False` | atoms `true` / `false` | `True` / `False` |
//! | `None` | atom `undefined` | `None` |
//! | `int` (any size; subclasses such as `IntEnum` too) | integer | `int` |
//! | `float` (and subclasses) | float | `float` |
//! | `str` (and subclasses) | text: UTF-8 bytes of their own kind (see vm-core's `word.rs`) | `str` |
//! | `bytes` | binary; over 64 bytes the `bytes` object itself is shared, not copied | `bytes`; `beamvm.Binary` over 64 bytes |
//! | `bytearray` | binary (a copy: it is mutable) | `bytes`; `beamvm.Binary` over 64 bytes |
//! | `beamvm.Binary` | the same shared binary (no copy) | `beamvm.Binary` |
//! | `tuple` (and subclasses: namedtuple) / `list` (and subclasses) | tuple / list | `tuple` / `list` |
//! | `dict` and its subclasses (`OrderedDict`, `defaultdict`, `Counter`, ...) | map | `dict` |
//! | `Atom`, `Pid`, `Ref` | atom, pid, reference | the same |
//! | `beamvm.ListKey` / `beamvm.MapKey` (hashable `tuple` subclasses) | list / map | `list` / `dict` |
//!
//! A map's keys, and everything inside them, convert in *key form*: a list there is a
//! `beamvm.ListKey`, a map a `beamvm.MapKey`, a charlist the `ListKey` of its codes
//! (python/beamvm/_wire.py), since a `dict` key must be hashable; both go back as the
//! list and map they stand for, so a map with list or map keys round-trips exactly.
//!
//! So Python values round-trip exactly, except that the atoms `true`, `false` and
//! `undefined` arrive as `True`, `False` and `None`, subclasses arrive as their base
//! type, and bytes over 64 bytes arrive as a zero-copy `beamvm.Binary` (equal to the
//! bytes it holds). A `str` is text, a kind of term no other value converts to, so no
//! message can forge one. Anything else raises `TypeError` naming its type. Every
//! conversion builds a fresh object graph: a received message is an independent copy.
//!
//! Depth: both directions recurse for the first [`RECURSION_DEPTH`] levels (no
//! allocation for the common shallow message) and walk deeper containers with an
//! explicit stack, so nesting is bounded by memory, never by the C stack (a
//! 100,000-deep tuple converts). A container that contains itself has no term form; it
//! is found by tracking the containers on the path once the explicit walk is deeper
//! than [`CYCLE_CHECK_DEPTH`] (shallow values, the common case, pay nothing for it).
//!
//! No substitution: a term that cannot be read back as the Python value of its kind
//! (which the VM never produces) is an error, never a made-up value.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use pyo3::exceptions::{PySystemError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::{GILOnceCell, GILProtected};
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::{ffi, PyTypeInfo};
use vm_core::term::{FragmentBuilder, Kind, ListIter, MapIter, RefcBin, TupleIter, WeakRefcBin};
use vm_core::{Atom, Fragment, Pid, Term, View, Word};

use crate::tcp::PySocket;
use crate::types::{PidTarget, PyAtom, PyBinary, PyPid, PyRef, RefId};

/// Path depth from which `to_fragment` tracks the containers on the path to detect
/// one that contains itself. Below it a cycle cannot hide for long (it deepens the
/// path by one per lap), and tracking would cost a hash insert per container of every
/// message; 512 keeps ordinary nested data out of the check.
pub const CYCLE_CHECK_DEPTH: usize = 512;

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

fn self_containing() -> PyErr {
    PyValueError::new_err(
        "cannot convert a container that contains itself to a beamvm term (terms are trees)",
    )
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
    // SAFETY: comparing type pointers; the value is read only when the type matched
    // (an exact int is read with the C API made for it, an Atom/Pid through its own
    // pyclass layout after the exact type check).
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
    push(&mut b, obj)?;
    b.finish().map_err(bad)
}

/// Converts `{tag, obj}` into a message fragment without a Python tuple (a call's
/// reply, `gen_call::_gen_reply`).
pub(crate) fn tagged_fragment(tag: vm_core::Ref, obj: &Bound<'_, PyAny>) -> PyResult<Fragment> {
    let mut b = FragmentBuilder::with_capacity(16);
    b.reference(tag);
    push(&mut b, obj)?;
    b.tuple(2).map_err(bad)?;
    b.finish().map_err(bad)
}

/// Converts a Python value into an owned term (patterns, literals).
pub fn to_term(obj: &Bound<'_, PyAny>) -> PyResult<Term> {
    Ok(to_fragment(obj)?.to_term())
}

fn bad(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A container being converted: its children are pushed one by one, then the
/// container itself (the builder's postfix protocol).
enum Open<'py> {
    Tuple {
        t: Bound<'py, PyTuple>,
        i: usize,
    },
    /// A `beamvm.ListKey`: a tuple of the elements of a list.
    ListKey {
        t: Bound<'py, PyTuple>,
        i: usize,
    },
    /// A `beamvm.MapKey`: a tuple of a map's `(key, value)` pairs (the value of the
    /// last pair taken waits in `value`).
    MapKey {
        t: Bound<'py, PyTuple>,
        i: usize,
        value: Option<Bound<'py, PyAny>>,
    },
    List {
        l: Bound<'py, PyList>,
        i: usize,
        n: usize,
    },
    Map {
        d: Bound<'py, PyDict>,
        it: pyo3::types::iter::BoundDictIterator<'py>,
        value: Option<Bound<'py, PyAny>>,
        n: usize,
    },
}

impl<'py> Open<'py> {
    fn ptr(&self) -> usize {
        match self {
            Open::Tuple { t, .. } | Open::ListKey { t, .. } | Open::MapKey { t, .. } => {
                t.as_ptr() as usize
            }
            Open::List { l, .. } => l.as_ptr() as usize,
            Open::Map { d, .. } => d.as_ptr() as usize,
        }
    }

    /// The next child to convert, or None when all were pushed.
    fn next_child(&mut self) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(match self {
            Open::Tuple { t, i } | Open::ListKey { t, i } => {
                // Checked first: reading past the end would build (and drop) an
                // IndexError, which costs more than the whole conversion.
                if *i >= t.len() {
                    return Ok(None);
                }
                let e = t.get_item(*i)?;
                *i += 1;
                Some(e)
            }
            Open::List { l, i, n } => {
                if *i >= *n {
                    None
                } else {
                    // Conversion runs no Python code, so the list cannot change
                    // meanwhile; still, a shorter list is an error, not a short term.
                    let e = l.get_item(*i).map_err(|_| {
                        PyValueError::new_err("list changed size during conversion")
                    })?;
                    *i += 1;
                    Some(e)
                }
            }
            Open::MapKey { t, i, value } => match value.take() {
                Some(v) => Some(v),
                None if *i >= t.len() => None,
                None => {
                    let pair = t.get_item(*i)?;
                    *i += 1;
                    match pair.downcast_exact::<PyTuple>() {
                        Ok(p) if p.len() == 2 => {
                            *value = Some(p.get_item(1)?);
                            Some(p.get_item(0)?)
                        }
                        _ => {
                            return Err(PyValueError::new_err("a MapKey holds (key, value) pairs"))
                        }
                    }
                }
            },
            Open::Map { it, value, .. } => match value.take() {
                Some(v) => Some(v),
                None => match it.next() {
                    Some((k, v)) => {
                        *value = Some(v);
                        Some(k)
                    }
                    None => None,
                },
            },
        })
    }

    /// Names the finished container to the builder.
    fn close(self, b: &mut FragmentBuilder) -> PyResult<()> {
        match self {
            Open::Tuple { t, .. } => b.tuple(t.len()).map(|_| ()).map_err(bad),
            Open::ListKey { t, .. } => b.list(t.len()).map(|_| ()).map_err(bad),
            Open::MapKey { t, .. } => b.map(t.len()).map(|_| ()).map_err(bad),
            Open::List { l, n, .. } => {
                if l.len() != n {
                    return Err(PyValueError::new_err("list changed size during conversion"));
                }
                b.list(n).map(|_| ()).map_err(bad)
            }
            Open::Map { d, n, .. } => {
                if d.len() != n {
                    return Err(PyValueError::new_err("dict changed size during conversion"));
                }
                b.map(n).map(|_| ()).map_err(bad)
            }
        }
    }
}

/// Pushes a scalar onto the builder, or returns the container to open.
fn scalar_or_open<'py>(
    b: &mut FragmentBuilder,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<Open<'py>>> {
    if let Some(v) = immediate(obj) {
        push_imm(b, v);
    } else if let Ok(s) = obj.downcast::<PyString>() {
        b.str(s.to_str()?);
    } else if let Ok(t) = obj.downcast::<PyTuple>() {
        // Tuple subclasses (namedtuples, ...) travel as plain tuples, except the key
        // forms of a list and a map (python/beamvm/_wire.py), which travel as what they
        // stand for.
        let t = t.clone();
        if !t.is_exact_instance_of::<PyTuple>() {
            let k = key_forms(obj.py())?;
            if obj.is_instance(k.list_key.bind(obj.py()))? {
                return Ok(Some(Open::ListKey { t, i: 0 }));
            }
            if obj.is_instance(k.map_key.bind(obj.py()))? {
                return Ok(Some(Open::MapKey {
                    t,
                    i: 0,
                    value: None,
                }));
            }
        }
        return Ok(Some(Open::Tuple { t, i: 0 }));
    } else if let Ok(l) = obj.downcast::<PyList>() {
        let n = l.len();
        return Ok(Some(Open::List {
            l: l.clone(),
            i: 0,
            n,
        }));
    } else if let Ok(v) = obj.downcast::<PyInt>() {
        // Big ints, and int subclasses (IntEnum, ...) read as plain ints: the digits are
        // read directly, no `__int__`/`__index__` of the subclass runs. (`bool`, which
        // cannot be subclassed, was taken by `immediate`.)
        match v.extract::<i64>() {
            Ok(i) => {
                b.int(i);
            }
            Err(_) => {
                let big: num_bigint::BigInt = v.extract()?;
                b.bigint(&big);
            }
        }
    } else if let Ok(f) = obj.downcast::<PyFloat>() {
        b.float(f.value());
    } else if let Ok(by) = obj.downcast::<PyBytes>() {
        bytes(b, by);
    } else if let Ok(d) = obj.downcast::<PyDict>() {
        // dict and its subclasses (OrderedDict, defaultdict, Counter, ...): a map, read
        // from the dict's own storage (their entries, in any order: maps are sorted).
        let n = d.len();
        return Ok(Some(Open::Map {
            d: d.clone(),
            it: d.iter(),
            value: None,
            n,
        }));
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
    } else if let Ok(s) = obj.downcast_exact::<PySocket>() {
        vm_core::io::messages::push_socket(b, vm_core::io::SocketId(s.get().current_id()));
    } else if let Ok(ba) = obj.downcast::<PyByteArray>() {
        let v = ba.to_vec();
        if v.len() > vm_core::term::HEAP_BINARY_MAX {
            b.refc_binary(RefcBin::from_vec(v));
        } else {
            b.binary(&v);
        }
    } else if let Ok(m) = obj.getattr(pyo3::intern!(obj.py(), "__beamvm_term__")) {
        // beamvm.Charlist, ImproperList, Fun, Port, BitString (python/beamvm/_wire.py):
        // their tagged-tuple form.
        let t = m.call0()?;
        if t.downcast_exact::<PyTuple>().is_err() {
            return Err(no_term_form(obj));
        }
        push(b, &t)?;
    } else {
        return Err(no_term_form(obj));
    }
    Ok(None)
}

/// `beamvm._wire._from_term`, which makes the Python value of a tagged tuple.
fn wire_from_term(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: GILOnceCell<PyObject> = GILOnceCell::new();
    F.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("beamvm._wire")?.getattr("_from_term")?.unbind())
    })
    .map(|f| f.bind(py))
}

/// The key forms of lists and maps (`beamvm._wire`): the classes, which `to_fragment`
/// recognises, and the functions that make them from values already in key form.
struct KeyForms {
    list_key: PyObject,
    map_key: PyObject,
    make_list_key: PyObject,
    make_map_key: PyObject,
}

fn key_forms(py: Python<'_>) -> PyResult<&KeyForms> {
    static K: GILOnceCell<KeyForms> = GILOnceCell::new();
    K.get_or_try_init(py, || {
        let m = py.import("beamvm._wire")?;
        Ok::<_, PyErr>(KeyForms {
            list_key: m.getattr("ListKey")?.unbind(),
            map_key: m.getattr("MapKey")?.unbind(),
            make_list_key: m.getattr("_list_key")?.unbind(),
            make_map_key: m.getattr("_map_key")?.unbind(),
        })
    })
}

/// A `beamvm.ListKey` of `items` (a list in a map key).
fn list_key(py: Python<'_>, items: Vec<PyObject>) -> PyResult<PyObject> {
    let t = PyTuple::new(py, items)?;
    key_forms(py)?.make_list_key.call1(py, (t,))
}

/// A `beamvm.MapKey` of a map's pairs, given as key, value, key, value, ... (a map in a
/// map key).
fn map_key(py: Python<'_>, kvs: Vec<PyObject>) -> PyResult<PyObject> {
    let mut pairs = Vec::with_capacity(kvs.len() / 2);
    let mut it = kvs.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push(PyTuple::new(py, [k, v])?);
    }
    let t = PyTuple::new(py, pairs)?;
    key_forms(py)?.make_map_key.call1(py, (t,))
}

/// The Python value of a wire-only tagged tuple (`{'$charlist', L}`, ...: dist.rs), or
/// `None` for any other term. In a map key (`key`), a charlist is the `ListKey` of its
/// codes and an improper list's parts are in key form.
fn wire_to_py(py: Python<'_>, v: View<'_>, key: bool) -> PyResult<Option<PyObject>> {
    let n = v.tuple_len().unwrap_or(0);
    if n != 2 && n != 3 {
        return Ok(None);
    }
    let Some(tag) = v.tuple_get(0).and_then(|t| t.as_atom()) else {
        return Ok(None);
    };
    if !is_wire_tag(tag) {
        return Ok(None);
    }
    let a = v.tuple_get(1).map(|x| to_py_as(py, x, key)).transpose()?;
    let c = v.tuple_get(2).map(|x| to_py_as(py, x, key)).transpose()?;
    if key && tag == crate::dist::tags().charlist {
        // Erlang has one term for "abc" and [97, 98, 99]: as a key, it is a ListKey.
        return a.map(Some).ok_or_else(|| unreadable(Kind::Tuple));
    }
    let f = wire_from_term(py)?;
    Ok(Some(
        f.call1((
            PyAtom(tag),
            a.unwrap_or_else(|| py.None()),
            c.unwrap_or_else(|| py.None()),
        ))?
        .unbind(),
    ))
}

/// Whether `a` tags a wire-only value (dist.rs).
fn is_wire_tag(a: Atom) -> bool {
    let t = crate::dist::tags();
    a == t.charlist || a == t.improper || a == t.fun || a == t.port || a == t.bits
}

/// A `bytes` (or subclass) value: copied inline up to 64 bytes; above, shared without a
/// copy (see [`shared_bytes`]).
fn bytes(b: &mut FragmentBuilder, by: &Bound<'_, PyBytes>) {
    let data = by.as_bytes();
    if data.len() > vm_core::term::HEAP_BINARY_MAX {
        b.refc_binary(shared_bytes(by));
    } else {
        b.binary(data);
    }
}

/// A refcounted binary over a Python `bytes` object's own data, holding a reference
/// to it: no copy, whatever its size, and the object lives until the binary's last
/// holder (a message, a heap, a `Binary`) is gone.
///
/// The reference may be dropped on a scheduler thread that does not hold the GIL;
/// pyo3 then queues the decref and performs it the next time a thread takes the GIL
/// through pyo3 (every Python slice batch, every return from `allow_threads` such as
/// `run`'s wait loop), so the object is freed soon after, never touched without the
/// GIL.
///
/// One object gives one binary however often it is sent ([`SHARED`]), so its memory is
/// counted once in `memory()['binary']`.
pub(crate) fn shared_bytes(by: &Bound<'_, PyBytes>) -> RefcBin {
    let key = by.as_ptr() as usize;
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    // A live entry means the object is alive (the binary holds a reference to it), so
    // its address is not reused by another object.
    if let Some(bin) = shared.map.get(&key).and_then(WeakRefcBin::upgrade) {
        return bin;
    }
    let data = by.as_bytes();
    let owner: Box<dyn Send + Sync> = Box::new(by.clone().unbind());
    // SAFETY: `data` is the bytes object's own buffer: `owner` holds a strong reference
    // to the object, so the buffer stays allocated as long as the owner lives, and a
    // bytes object is immutable (CPython writes a bytes buffer only while building a
    // fresh object no one else references), so nothing writes it meanwhile.
    let bin = unsafe { RefcBin::from_foreign(data.as_ptr(), data.len(), owner) };
    shared.insert(key, &bin);
    bin
}

/// The binaries made from Python `bytes` objects that are still held somewhere, by
/// object address; dead entries are swept when they outnumber the live ones.
struct Shared {
    map: HashMap<usize, WeakRefcBin>,
    live_after_sweep: usize,
}

impl Shared {
    fn insert(&mut self, key: usize, bin: &RefcBin) {
        if self.map.len() >= 2 * self.live_after_sweep + 64 {
            self.map.retain(|_, w| w.upgrade().is_some());
            self.live_after_sweep = self.map.len();
            if self.map.capacity() > 4 * self.map.len() + 64 {
                self.map.shrink_to_fit();
            }
        }
        self.map.insert(key, bin.downgrade());
    }
}

static SHARED: LazyLock<Mutex<Shared>> = LazyLock::new(|| {
    Mutex::new(Shared {
        map: HashMap::new(),
        live_after_sweep: 0,
    })
});

/// Nesting converted by plain recursion (both ways) before an explicit stack takes
/// over: the common shallow message allocates no stack, and the C stack used stays
/// bounded (64 small frames) whatever the depth.
const RECURSION_DEPTH: usize = 64;

/// Converts `root` onto the builder, depth-first (see the module docs for depth and
/// cycles).
fn push(b: &mut FragmentBuilder, root: &Bound<'_, PyAny>) -> PyResult<()> {
    push_rec(b, root, 0)
}

fn push_rec(b: &mut FragmentBuilder, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
    // The common message shapes first, without building an `Open`.
    if let Some(v) = immediate(obj) {
        push_imm(b, v);
        return Ok(());
    }
    if depth < RECURSION_DEPTH {
        if let Ok(t) = obj.downcast_exact::<PyTuple>() {
            for e in t.iter() {
                push_rec(b, &e, depth + 1)?;
            }
            b.tuple(t.len()).map_err(bad)?;
            return Ok(());
        }
    }
    let Some(mut open) = scalar_or_open(b, obj)? else {
        return Ok(());
    };
    if depth >= RECURSION_DEPTH {
        return push_deep(b, open);
    }
    while let Some(child) = open.next_child()? {
        push_rec(b, &child, depth + 1)?;
    }
    open.close(b)
}

/// Converts the rest of a deep value, from the container `first`, with an explicit
/// stack; a container that contains itself is found by tracking the path once it is
/// deeper than [`CYCLE_CHECK_DEPTH`] here (a cycle repeats along any long path).
fn push_deep<'py>(b: &mut FragmentBuilder, first: Open<'py>) -> PyResult<()> {
    let mut stack: Vec<Open<'py>> = vec![first];
    let mut on_path: Option<HashSet<usize>> = None;
    while let Some(top) = stack.last_mut() {
        match top.next_child()? {
            Some(child) => {
                if let Some(open) = scalar_or_open(b, &child)? {
                    if stack.len() >= CYCLE_CHECK_DEPTH {
                        let path =
                            on_path.get_or_insert_with(|| stack.iter().map(Open::ptr).collect());
                        if !path.insert(open.ptr()) {
                            return Err(self_containing());
                        }
                    }
                    stack.push(open);
                }
            }
            None => {
                if let Some(open) = stack.pop() {
                    if let Some(path) = on_path.as_mut() {
                        path.remove(&open.ptr());
                    }
                    open.close(b)?;
                }
            }
        }
    }
    Ok(())
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
        // itself. Shared by reference, as documented.
        Err(e) if e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<PyValueError>(py) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A term the VM made that does not read back as its kind: never produced by vm-core,
/// reported rather than replaced by a made-up value.
fn unreadable(kind: Kind) -> PyErr {
    PySystemError::new_err(format!(
        "beamvm: a term of kind {kind:?} could not be read (a bug in beamvm; please report it)"
    ))
}

/// A container being rebuilt: its children's Python values collect on the value stack
/// and the container is made from them when its iterator is done. `got` counts the
/// children taken; `want` is what the container's header promised (None for a list,
/// whose length is its spine's). `key`: the container is in a map key, so it is built
/// in key form (a list as `ListKey`, a map as `MapKey`).
struct Building<'a> {
    kind: Kind,
    children: Children<'a>,
    got: usize,
    want: Option<usize>,
    key: bool,
}

enum Children<'a> {
    Tuple(TupleIter<'a>),
    List(ListIter<'a>),
    /// A map's keys and values in turn (the value of the last key taken waits here).
    Map(MapIter<'a>, Option<View<'a>>),
}

impl<'a> Building<'a> {
    /// The next child, and whether it is to be converted in key form (it is a map's
    /// key, or inside a key).
    fn next_child(&mut self) -> Option<(View<'a>, bool)> {
        let e = match &mut self.children {
            Children::Tuple(it) => it.next().map(|e| (e, self.key)),
            Children::List(it) => it.next().map(|e| (e, self.key)),
            Children::Map(it, value) => match value.take() {
                Some(v) => Some((v, self.key)),
                None => it.next().map(|(k, v)| {
                    *value = Some(v);
                    (k, true)
                }),
            },
        };
        self.got += e.is_some() as usize;
        e
    }

    /// Builds the container from the last `got` values on `vals`.
    fn close(self, py: Python<'_>, vals: &mut Vec<PyObject>) -> PyResult<PyObject> {
        if self.want.is_some_and(|w| w != self.got) || self.got > vals.len() {
            return Err(unreadable(self.kind));
        }
        let items = vals.split_off(vals.len() - self.got);
        Ok(match self.children {
            Children::Tuple(_) => PyTuple::new(py, items)?.into_any().unbind(),
            Children::List(_) if self.key => list_key(py, items)?,
            Children::List(_) => PyList::new(py, items)?.into_any().unbind(),
            Children::Map(..) if self.key => map_key(py, items)?,
            Children::Map(..) => {
                let d = PyDict::new(py);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.set_item(k, v)?;
                }
                d.into_any().unbind()
            }
        })
    }
}

/// A scalar's Python value, or the container to rebuild (in key form if `key`).
fn leaf_or_open<'a>(
    py: Python<'_>,
    v: View<'a>,
    key: bool,
) -> PyResult<Result<PyObject, Building<'a>>> {
    let kind = v.kind();
    let missing = || unreadable(kind);
    Ok(Ok(match kind {
        Kind::Int => v.as_int().ok_or_else(missing)?.into_py(py),
        Kind::BigInt => v.as_bigint().ok_or_else(missing)?.into_py(py),
        Kind::Float => v.as_float().ok_or_else(missing)?.into_py(py),
        Kind::Atom => match v.as_atom().ok_or_else(missing)? {
            Atom::TRUE => true.into_py(py),
            Atom::FALSE => false.into_py(py),
            Atom::UNDEFINED => py.None(),
            a => PyAtom::object(py, a)?.into_any(),
        },
        Kind::Str => {
            let s = v.as_str_bytes().ok_or_else(missing)?;
            // SAFETY: `s` is a live slice of `s.len()` bytes (borrowed from the term for
            // this call); PyUnicode_DecodeUTF8 copies it and returns a new reference or
            // NULL with an exception set, which `from_owned_ptr_or_err` turns into Err.
            unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyUnicode_DecodeUTF8(
                        s.as_ptr().cast(),
                        s.len() as ffi::Py_ssize_t,
                        c"strict".as_ptr(),
                    ),
                )?
                .unbind()
            }
        }
        Kind::Binary => match v.as_refc_binary() {
            Some(rb) => PyBinary(rb).into_py(py),
            None => PyBytes::new(py, v.as_bytes().ok_or_else(missing)?)
                .into_any()
                .unbind(),
        },
        Kind::Nil if key => list_key(py, Vec::new())?,
        Kind::Nil => PyList::empty(py).into_any().unbind(),
        Kind::Pid => match (v.as_pid(), v.as_external_pid()) {
            (Some(p), _) => local_pid_to_py(py, p),
            (None, Some(e)) => PyPid::external(e).into_py(py),
            (None, None) => return Err(missing()),
        },
        Kind::Ref => match (v.as_ref(), v.as_external_ref()) {
            (Some(r), _) => PyRef::local(r).into_py(py),
            (None, Some(r)) => PyRef(RefId::External(r)).into_py(py),
            (None, None) => return Err(missing()),
        },
        Kind::Tuple => {
            // {'$socket', Id}: a beamvm.tcp socket (crates/vm-core/src/io/messages.rs).
            if let Some(id) = vm_core::io::messages::socket_of(v) {
                return Ok(Ok(PySocket::new(id.0).into_py(py)));
            }
            if let Some(w) = wire_to_py(py, v, key)? {
                return Ok(Ok(w));
            }
            return Ok(Err(Building {
                kind,
                children: Children::Tuple(v.tuple_iter().ok_or_else(missing)?),
                got: 0,
                want: Some(v.tuple_len().ok_or_else(missing)?),
                key,
            }));
        }
        Kind::List => {
            return Ok(Err(Building {
                kind,
                children: Children::List(v.list_iter().ok_or_else(missing)?),
                got: 0,
                want: None,
                key,
            }))
        }
        Kind::Map => {
            return Ok(Err(Building {
                kind,
                children: Children::Map(v.map_iter().ok_or_else(missing)?, None),
                got: 0,
                want: Some(2 * v.map_len().ok_or_else(missing)?),
                key,
            }))
        }
    }))
}

/// Converts a term into fresh Python objects, depth-first (see the module docs).
pub fn to_py(py: Python<'_>, v: View<'_>) -> PyResult<PyObject> {
    to_py_rec(py, v, 0, false)
}

/// [`to_py`], in key form if `key` (see [`to_py_rec`]).
fn to_py_as(py: Python<'_>, v: View<'_>, key: bool) -> PyResult<PyObject> {
    to_py_rec(py, v, 0, key)
}

/// Converts `v` at nesting `depth`. A map's keys, and everything inside them, are
/// converted in key form (`key`): Python's `dict` needs hashable keys, so a list there
/// becomes a `beamvm.ListKey` and a map a `beamvm.MapKey` (python/beamvm/_wire.py),
/// which `to_fragment` turns back into the same list and map.
fn to_py_rec(py: Python<'_>, v: View<'_>, depth: usize, key: bool) -> PyResult<PyObject> {
    // Tuples, the common message shape, first, without building a `Building`.
    if depth < RECURSION_DEPTH {
        if let Some(it) = v.tuple_iter() {
            if it.len() == 2 || it.len() == 3 {
                if let Some(id) = vm_core::io::messages::socket_of(v) {
                    return Ok(PySocket::new(id.0).into_py(py));
                }
                if let Some(w) = wire_to_py(py, v, key)? {
                    return Ok(w);
                }
            }
            return tuple_to_py(py, it, depth, key);
        }
    }
    let mut open = match leaf_or_open(py, v, key)? {
        Ok(leaf) => return Ok(leaf),
        Err(open) => open,
    };
    if depth >= RECURSION_DEPTH {
        return to_py_deep(py, open);
    }
    match open.children {
        Children::Tuple(it) => tuple_to_py(py, it, depth, key),
        // In a key: the children's values, then the key form made from them.
        Children::List(_) | Children::Map(..) if key => {
            let mut items = Vec::new();
            while let Some((child, k)) = open.next_child() {
                items.push(to_py_rec(py, child, depth + 1, k)?);
            }
            if open.want.is_some_and(|w| w != open.got) {
                return Err(unreadable(open.kind));
            }
            match open.children {
                Children::List(_) => list_key(py, items),
                _ => map_key(py, items),
            }
        }
        Children::List(_) => {
            let l = PyList::empty(py);
            while let Some((child, k)) = open.next_child() {
                l.append(to_py_rec(py, child, depth + 1, k)?)?;
            }
            Ok(l.into_any().unbind())
        }
        Children::Map(..) => {
            let d = PyDict::new(py);
            while let Some((k, key_form)) = open.next_child() {
                let k = to_py_rec(py, k, depth + 1, key_form)?;
                let Some((val, key_form)) = open.next_child() else {
                    return Err(unreadable(open.kind));
                };
                d.set_item(k, to_py_rec(py, val, depth + 1, key_form)?)?;
            }
            if open.want.is_some_and(|w| w != open.got) {
                return Err(unreadable(open.kind));
            }
            Ok(d.into_any().unbind())
        }
    }
}

/// A tuple's elements converted into a new tuple (in key form if `key`).
fn tuple_to_py(py: Python<'_>, it: TupleIter<'_>, depth: usize, key: bool) -> PyResult<PyObject> {
    let n = it.len();
    // SAFETY: PyTuple_New returns a new tuple of `n` empty (NULL) slots, or NULL with an
    // exception set (reported by `from_owned_ptr_or_err`).
    let t = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(n as ffi::Py_ssize_t))? };
    let mut filled = 0;
    for child in it {
        if filled >= n {
            return Err(unreadable(Kind::Tuple));
        }
        let item = to_py_rec(py, child, depth + 1, key)?;
        // SAFETY: `t` is a fresh tuple no one else references; slot `filled < n` is
        // still empty and is set exactly once; SET_ITEM steals `item`'s reference.
        unsafe { ffi::PyTuple_SET_ITEM(t.as_ptr(), filled as ffi::Py_ssize_t, item.into_ptr()) };
        filled += 1;
    }
    if filled != n {
        // Never hand out a tuple with empty slots (dropping it is safe: a tuple's
        // deallocation skips them).
        return Err(unreadable(Kind::Tuple));
    }
    Ok(t.into_any().unbind())
}

/// Converts the rest of a deep term, from the container `first`, with an explicit
/// stack: children's values collect on a value stack and each container is built from
/// them when its iterator is done.
fn to_py_deep(py: Python<'_>, first: Building<'_>) -> PyResult<PyObject> {
    let mut stack = vec![first];
    let mut vals: Vec<PyObject> = Vec::new();
    while let Some(top) = stack.last_mut() {
        match top.next_child() {
            Some((child, key)) => match leaf_or_open(py, child, key)? {
                Ok(leaf) => vals.push(leaf),
                Err(open) => stack.push(open),
            },
            None => {
                if let Some(done) = stack.pop() {
                    let obj = done.close(py, &mut vals)?;
                    if stack.is_empty() {
                        return Ok(obj);
                    }
                    vals.push(obj);
                }
            }
        }
    }
    Err(unreadable(Kind::Tuple))
}

/// Converts a fragment into fresh Python objects.
pub fn frag_to_py(py: Python<'_>, f: &Fragment) -> PyResult<PyObject> {
    to_py(py, f.view())
}

/// The last local pid made into a Python object, with that object. A server answering
/// one client converts the client's pid at every message (`from_` of each call), and a
/// `Pid` is immutable, so the object is shared instead of allocated and freed each time
/// (~1% of a `gen_server.call` round trip). A static, never dropped: nothing is released
/// after the interpreter has finalized.
static LAST_PID: GILProtected<RefCell<Option<SharedPid>>> = GILProtected::new(RefCell::new(None));

/// A pid and the Python object made for it.
type SharedPid = (PyPid, Py<PyPid>);

/// `pid` (of this VM) as a Python `Pid`, shared with the previous conversion when it was
/// the same pid.
fn local_pid_to_py(py: Python<'_>, pid: Pid) -> PyObject {
    let key = PyPid::local(pid);
    // A conversion cannot re-enter this one (`Py::new` runs no Python code), but a
    // borrow that fails is a cache miss, never a panic.
    let Ok(mut last) = LAST_PID.get(py).try_borrow_mut() else {
        return key.into_py(py);
    };
    if let Some((k, obj)) = last.as_ref() {
        if *k == key {
            return obj.clone_ref(py).into_any();
        }
    }
    match Py::new(py, key) {
        Ok(obj) => {
            *last = Some((key, obj.clone_ref(py)));
            obj.into_any()
        }
        Err(_) => key.into_py(py),
    }
}
