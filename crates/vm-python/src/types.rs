//! The Python faces of the VM's identifiers and shared binaries: `Atom`, `Pid`, `Ref`,
//! `Binary`.
//!
//! All four are immutable (`frozen`), hashable and comparable, so they work as dict
//! keys and inside patterns. `copy.copy`/`copy.deepcopy` return the object itself;
//! `Atom`, `Pid` and `Ref` pickle (a pid or reference records its node and the VM's
//! creation, through [`pid_parts`] / [`pid_from_parts`] and [`ref_parts`] /
//! [`ref_from_parts`], the one place that knows what identifies them). `Binary` wraps
//! a refcounted VM buffer and exposes it through the buffer protocol without copying;
//! it compares equal to `bytes` with the same content (and hashes like them), and
//! `bytes(b)` copies it out.

use std::hash::{Hash, Hasher};
use std::os::raw::{c_int, c_void};
use std::sync::OnceLock;

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use vm_core::term::RefcBin;
use vm_core::term::{ExternalPid, ExternalRef};
use vm_core::{Atom, Pid, Ref};

/// An Erlang atom: an interned name. `Atom("ok")`.
///
/// Atoms of the first [`SHARED_ATOMS`] table slots have one Python object each, which
/// `Atom(name)` and every message conversion return ([`PyAtom::object`]): converting
/// an atom allocates nothing, and `tag is GEN_CALL` is a valid fast check before `==`
/// (gen_server's loop). Equality never depends on it: `==` compares the atoms.
#[pyclass(frozen, name = "Atom", module = "beamvm")]
#[derive(Clone, Copy)]
pub struct PyAtom(pub Atom);

/// Atom table slots whose atoms share one Python object (64 KiB of cells). The
/// runtime's own atoms and a program's usual tags come first in the table; an atom past
/// this gets a new object per conversion, as all atoms did before.
const SHARED_ATOMS: usize = 4096;

static SHARED: [OnceLock<Py<PyAtom>>; SHARED_ATOMS] = [const { OnceLock::new() }; SHARED_ATOMS];

impl PyAtom {
    /// The Python object of `a`: the shared one for the first [`SHARED_ATOMS`] atoms.
    pub(crate) fn object(py: Python<'_>, a: Atom) -> PyResult<Py<PyAtom>> {
        let Some(cell) = SHARED.get(a.index() as usize) else {
            return Py::new(py, PyAtom(a));
        };
        if let Some(o) = cell.get() {
            return Ok(o.clone_ref(py));
        }
        let made = Py::new(py, PyAtom(a))?;
        // Another thread may have set it meanwhile (between GIL hand-overs): the first
        // wins and `made` is dropped.
        Ok(cell.get_or_init(|| made).clone_ref(py))
    }
}

#[pymethods]
impl PyAtom {
    #[new]
    fn new(py: Python<'_>, name: &str) -> PyResult<Py<Self>> {
        let a = Atom::try_new(name)
            .map_err(|e| PyValueError::new_err(format!("invalid atom {name:?}: {e}")))?;
        PyAtom::object(py, a)
    }

    /// The atom's name.
    #[getter]
    fn name(&self) -> &'static str {
        self.0.as_str()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let r = pyo3::types::PyString::new(py, self.0.as_str()).repr()?;
        Ok(format!("Atom({r})"))
    }

    fn __str__(&self) -> &'static str {
        self.0.as_str()
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("atom", self.0.as_str()).hash(&mut h);
        h.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyObject {
        let py = other.py();
        match other.downcast::<PyAtom>() {
            Ok(o) => op
                .matches(self.0.as_str().cmp(o.get().0.as_str()))
                .into_py(py),
            Err(_) => py.NotImplemented(),
        }
    }

    fn __reduce__(&self, py: Python<'_>) -> PyResult<(PyObject, (String,))> {
        let cls = py.get_type::<PyAtom>().into_any().unbind();
        Ok((cls, (self.0.as_str().to_owned(),)))
    }
}

/// What a `Pid` names, seen from the running VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PidTarget {
    /// A process of the current VM (alive or not).
    Local(Pid),
    /// A process of another VM: a stopped one (an earlier creation) or, later, another
    /// node's. It gets the dead-process behaviour everywhere (docs/semantics.md).
    Foreign(ExternalPid),
}

/// A process identifier: the node, the id and serial the node gave it, and the
/// creation of the VM that made it (a new number each time a VM starts). A pid of the
/// current VM shows as Erlang shows a local pid, `<0.12.0>`; any other (a pid kept
/// from a VM that has stopped) as `<nonode@nohost.12.0.3>`, and it never reaches a
/// process of the current VM.
#[pyclass(frozen, name = "Pid", module = "beamvm")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PyPid {
    node: Atom,
    pid: Pid,
    creation: u32,
}

impl PyPid {
    /// A pid of the current VM.
    pub(crate) fn local(pid: Pid) -> PyPid {
        PyPid {
            node: crate::lifecycle::local_node(),
            pid,
            creation: crate::lifecycle::creation(),
        }
    }

    /// A pid of another VM (or the current VM's, given in external form).
    pub(crate) fn external(e: ExternalPid) -> PyPid {
        PyPid {
            node: e.node,
            pid: e.local_part(),
            creation: e.creation,
        }
    }

    /// What this pid names in the running VM.
    pub(crate) fn target(&self) -> PidTarget {
        if self.node == crate::lifecycle::local_node()
            && self.creation == crate::lifecycle::creation()
            && self.pid.is_compact()
        {
            PidTarget::Local(self.pid)
        } else {
            PidTarget::Foreign(ExternalPid::new(self.node, self.pid, self.creation))
        }
    }

    /// Term order among Python pids: node name, creation, id, serial (stable as VMs
    /// come and go, unlike "local first").
    fn key(&self) -> (&'static str, u32, u32, u32) {
        (
            self.node.as_str(),
            self.creation,
            self.pid.index,
            self.pid.serial,
        )
    }
}

#[pymethods]
impl PyPid {
    /// The node the process lives (or lived) on: `Atom('nonode@nohost')` for a VM
    /// that is not a distributed node.
    #[getter]
    fn node(&self) -> PyAtom {
        PyAtom(self.node)
    }

    /// The pid's id on its node (its slot in that VM's process table).
    #[getter]
    fn id(&self) -> u32 {
        self.pid.index
    }

    /// The pid's slot in the process table (the same as `id`).
    #[getter]
    fn index(&self) -> u32 {
        self.pid.index
    }

    /// The pid's serial (a slot's reuse count).
    #[getter]
    fn serial(&self) -> u32 {
        self.pid.serial
    }

    /// The creation of the VM that made the pid.
    #[getter]
    fn creation(&self) -> u32 {
        self.creation
    }

    fn __repr__(&self) -> String {
        match self.target() {
            PidTarget::Local(p) => p.to_string(),
            PidTarget::Foreign(e) => e.to_string(),
        }
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("pid", self.node.index(), self.pid, self.creation).hash(&mut h);
        h.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyObject {
        let py = other.py();
        match other.downcast::<PyPid>() {
            Ok(o) => op.matches(self.key().cmp(&o.get().key())).into_py(py),
            Err(_) => py.NotImplemented(),
        }
    }

    /// Pickles as `beamvm._native._pid(node, id, serial, creation)`: a pid records its
    /// node and the creation of its VM, so one unpickled after that VM stopped is a
    /// pid of another VM (the dead-process behaviour), never a process of the new one.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("beamvm._native")?.getattr("_pid")?;
        Ok((f, pid_parts(self).into_pyobject(py)?))
    }

    fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> Bound<'py, Self> {
        slf
    }
}

/// What identifies a pid beyond this VM: `(node, id, serial, creation)`.
pub(crate) fn pid_parts(p: &PyPid) -> (&'static str, u32, u32, u32) {
    (p.node.as_str(), p.pid.index, p.pid.serial, p.creation)
}

/// The pid `pid_parts` described: a pid of the running VM if node and creation are
/// its own, else a pid of another VM (see [`PyPid::target`]).
pub(crate) fn pid_from_parts(node: &str, id: u32, serial: u32, creation: u32) -> PyResult<PyPid> {
    Ok(PyPid {
        node: node_atom(node)?,
        pid: Pid::new(id, serial),
        creation,
    })
}

/// The atom of a node name in a pickled pid or reference.
fn node_atom(node: &str) -> PyResult<Atom> {
    Atom::try_new(node)
        .map_err(|e| PyValueError::new_err(format!("invalid node name {node:?}: {e}")))
}

/// What identifies a reference beyond this VM: `(node, creation, words)`, the words
/// low first (a reference of this VM: its 64-bit number as two words, and the running
/// VM's creation).
pub(crate) fn ref_parts(r: &RefId) -> (&'static str, u32, Vec<u32>) {
    match r {
        RefId::Local(r) => (
            Atom::NONODE.as_str(),
            crate::lifecycle::creation(),
            vec![r.0 as u32, (r.0 >> 32) as u32],
        ),
        RefId::External(e) => (e.node().as_str(), e.creation(), e.words().to_vec()),
    }
}

/// The reference `ref_parts` described: this VM's if node and creation are the running
/// VM's, else one of another VM.
pub(crate) fn ref_from_parts(node: &str, creation: u32, words: &[u32]) -> PyResult<RefId> {
    let atom = node_atom(node)?;
    if let [lo, hi] = *words {
        if atom == Atom::NONODE && creation == crate::lifecycle::creation() {
            return Ok(RefId::Local(Ref(u64::from(lo) | (u64::from(hi) << 32))));
        }
    }
    ExternalRef::new(atom, creation, words)
        .map(RefId::External)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "a reference has 1 to {} words, not {}",
                vm_core::term::MAX_REF_WORDS,
                words.len()
            ))
        })
}

/// Rebuilds a pickled `Pid` (see `Pid.__reduce__`).
#[pyfunction]
pub(crate) fn _pid(node: &str, id: u32, serial: u32, creation: u32) -> PyResult<PyPid> {
    pid_from_parts(node, id, serial, creation)
}

/// Rebuilds a pickled `Ref` (see `Ref.__reduce__`).
#[pyfunction]
pub(crate) fn _ref(node: &str, creation: u32, words: Vec<u32>) -> PyResult<PyRef> {
    ref_from_parts(node, creation, &words).map(PyRef)
}

/// What a `Ref` is: one made by this node, or one of another VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RefId {
    /// Made by this node (`make_ref`, monitors, timers).
    Local(Ref),
    /// Made by another VM (arrives, later, through distribution).
    External(ExternalRef),
}

/// A unique reference (`make_ref()`), shown as `#Ref<0.N>`.
#[pyclass(frozen, name = "Ref", module = "beamvm")]
#[derive(Clone, Copy)]
pub struct PyRef(pub(crate) RefId);

impl PyRef {
    /// A reference made by this node.
    pub(crate) fn local(r: Ref) -> PyRef {
        PyRef(RefId::Local(r))
    }
}

#[pymethods]
impl PyRef {
    fn __repr__(&self) -> String {
        match self.0 {
            RefId::Local(r) => r.to_string(),
            RefId::External(r) => r.to_string(),
        }
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("ref", self.0).hash(&mut h);
        h.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyObject {
        let py = other.py();
        match other.downcast::<PyRef>() {
            Ok(o) => {
                let ord = match (self.0, o.get().0) {
                    (RefId::Local(a), RefId::Local(b)) => a.cmp(&b),
                    (RefId::External(a), RefId::External(b)) => a.cmp(&b),
                    // Term order: local references first.
                    (RefId::Local(_), RefId::External(_)) => std::cmp::Ordering::Less,
                    (RefId::External(_), RefId::Local(_)) => std::cmp::Ordering::Greater,
                };
                op.matches(ord).into_py(py)
            }
            Err(_) => py.NotImplemented(),
        }
    }

    /// Pickles as `beamvm._native._ref(node, creation, words)` (see [`ref_parts`]).
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("beamvm._native")?.getattr("_ref")?;
        Ok((f, ref_parts(&self.0).into_pyobject(py)?))
    }

    fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> Bound<'py, Self> {
        slf
    }
}

/// Bytes on the VM's shared binary heap, seen without a copy.
///
/// Received in place of `bytes` for binaries over 64 bytes. Supports the buffer
/// protocol (`memoryview(b)`, `numpy.frombuffer(b)`), `len`, indexing through
/// `memoryview`, equality and hashing like `bytes`; `bytes(b)` copies. Sending it on
/// shares the same buffer again.
#[pyclass(frozen, name = "Binary", module = "beamvm")]
pub struct PyBinary(pub RefcBin);

#[pymethods]
impl PyBinary {
    /// Shares the `bytes` object's own buffer (no copy).
    #[new]
    fn new(data: &Bound<'_, PyBytes>) -> Self {
        PyBinary(crate::convert::shared_bytes(data))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.as_slice())
    }

    /// How many holders share the buffer (processes' messages, heaps, `Binary` objects).
    #[getter]
    fn refcount(&self) -> usize {
        self.0.ref_count()
    }

    /// The address of the shared buffer (equal addresses: the same bytes, not a copy).
    #[getter]
    fn address(&self) -> usize {
        self.0.as_slice().as_ptr() as usize
    }

    fn __repr__(&self) -> String {
        let s = self.0.as_slice();
        let head: String = s
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join("");
        format!(
            "Binary(<{} bytes: {}{}>)",
            s.len(),
            head,
            if s.len() > 16 { "..." } else { "" }
        )
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        PyBytes::new(py, self.0.as_slice()).hash()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<PyObject> {
        let py = other.py();
        let mine = self.0.as_slice();
        let theirs: Vec<u8>;
        let o: &[u8] = if let Ok(b) = other.downcast::<PyBinary>() {
            b.get().0.as_slice()
        } else if let Ok(b) = other.downcast::<PyBytes>() {
            b.as_bytes()
        } else if other.is_instance_of::<pyo3::types::PyByteArray>()
            || other.is_instance_of::<pyo3::types::PyMemoryView>()
        {
            theirs = other
                .call_method0("__bytes__")
                .or_else(|_| py.get_type::<PyBytes>().call1((other,)))?
                .extract()?;
            &theirs
        } else {
            return Ok(py.NotImplemented());
        };
        Ok(op.matches(mine.cmp(o)).into_py(py))
    }

    /// The buffer protocol (PEP 3118): a read-only, one-dimensional view of the bytes.
    ///
    /// # Safety
    /// Called by CPython with `view` pointing at a `Py_buffer` it owns (or NULL, which
    /// is refused), as `bf_getbuffer` is.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("NULL view"));
        }
        if flags & pyo3::ffi::PyBUF_WRITABLE == pyo3::ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("beamvm.Binary is read-only"));
        }
        let bytes = slf.get().0.as_slice();
        // SAFETY: `view` is non-null (checked) and CPython hands `__getbuffer__` a
        // writable Py_buffer that nothing else touches until we return.
        let v = unsafe { &mut *view };
        v.obj = slf.clone().into_any().into_ptr();
        v.buf = bytes.as_ptr() as *mut c_void;
        v.len = bytes.len() as isize;
        v.readonly = 1;
        v.itemsize = 1;
        v.format = if flags & pyo3::ffi::PyBUF_FORMAT == pyo3::ffi::PyBUF_FORMAT {
            c"B".as_ptr() as *mut _
        } else {
            std::ptr::null_mut()
        };
        v.ndim = 1;
        // shape and strides point into the view itself, which the consumer keeps alive
        // for as long as it uses them (the buffer protocol's rule).
        v.shape = if flags & pyo3::ffi::PyBUF_ND == pyo3::ffi::PyBUF_ND {
            &mut v.len
        } else {
            std::ptr::null_mut()
        };
        v.strides = if flags & pyo3::ffi::PyBUF_STRIDES == pyo3::ffi::PyBUF_STRIDES {
            &mut v.itemsize
        } else {
            std::ptr::null_mut()
        };
        v.suboffsets = std::ptr::null_mut();
        v.internal = std::ptr::null_mut();
        Ok(())
    }

    /// Nothing to release: the view's reference to this Binary (`obj`) keeps the bytes
    /// alive and CPython drops it.
    ///
    /// # Safety
    /// Called by CPython with a view this Binary filled; it is not read.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}
}
