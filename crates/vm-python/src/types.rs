//! The Python faces of the VM's identifiers and shared binaries: `Atom`, `Pid`, `Ref`,
//! `Binary`.
//!
//! All four are immutable (`frozen`), hashable and comparable, so they work as dict
//! keys and inside patterns. `copy.copy`/`copy.deepcopy` return the object itself;
//! `Atom`, `Pid` and `Ref` pickle (a pid or reference records its node and the VM's
//! creation, through [`pid_parts`] / [`pid_from_parts`] and [`ref_parts`] /
//! [`ref_from_parts`], the one place that knows what identifies them). `Binary` wraps a refcounted VM buffer and exposes it
//! through the buffer protocol without copying; it compares equal to `bytes` with the
//! same content (and hashes like them), and `bytes(b)` copies it out.

use std::hash::{Hash, Hasher};
use std::os::raw::{c_int, c_void};

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use vm_core::term::RefcBin;
use vm_core::{Atom, Pid, Ref};

/// An Erlang atom: an interned name. `Atom("ok")`.
#[pyclass(frozen, name = "Atom", module = "beamvm")]
#[derive(Clone, Copy)]
pub struct PyAtom(pub Atom);

#[pymethods]
impl PyAtom {
    #[new]
    fn new(name: &str) -> PyResult<Self> {
        Atom::try_new(name)
            .map(PyAtom)
            .map_err(|e| PyValueError::new_err(format!("invalid atom {name:?}: {e}")))
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

/// A process identifier, shown as Erlang does: `<0.12.0>`.
#[pyclass(frozen, name = "Pid", module = "beamvm")]
#[derive(Clone, Copy)]
pub struct PyPid(pub Pid);

#[pymethods]
impl PyPid {
    /// The pid's slot in the process table.
    #[getter]
    fn index(&self) -> u32 {
        self.0.index
    }

    /// The pid's serial (a slot's reuse count).
    #[getter]
    fn serial(&self) -> u32 {
        self.0.serial
    }

    fn __repr__(&self) -> String {
        self.0.to_string()
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("pid", self.0).hash(&mut h);
        h.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyObject {
        let py = other.py();
        match other.downcast::<PyPid>() {
            Ok(o) => op.matches(self.0.cmp(&o.get().0)).into_py(py),
            Err(_) => py.NotImplemented(),
        }
    }

    /// Pickles as `beamvm._native._pid(node, index, serial, creation)`.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("beamvm._native")?.getattr("_pid")?;
        Ok((f, pid_parts(self.0).into_pyobject(py)?))
    }

    fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> Bound<'py, Self> {
        slf
    }
}

/// The name of this node (distribution is not available yet: Erlang's name for a node
/// that is not alive).
const NODE: &str = "nonode@nohost";

/// What identifies a pid beyond this VM: `(node, index, serial, creation)`.
pub(crate) fn pid_parts(p: Pid) -> (&'static str, u32, u32, u32) {
    (NODE, p.index, p.serial, 0)
}

/// The pid `pid_parts` described; a pid of another node or VM cannot be used here.
pub(crate) fn pid_from_parts(node: &str, index: u32, serial: u32, creation: u32) -> PyResult<Pid> {
    if node != NODE || creation != 0 {
        return Err(PyValueError::new_err(format!(
            "the pid <{index}.{serial}> of node {node:?} (creation {creation}) does not belong \
             to this node ({NODE:?}, creation 0)"
        )));
    }
    Ok(Pid::new(index, serial))
}

/// What identifies a reference beyond this VM: `(node, number, creation)`.
pub(crate) fn ref_parts(r: Ref) -> (&'static str, u64, u32) {
    (NODE, r.0, 0)
}

/// The reference `ref_parts` described; one of another node or VM cannot be used here.
pub(crate) fn ref_from_parts(node: &str, number: u64, creation: u32) -> PyResult<Ref> {
    if node != NODE || creation != 0 {
        return Err(PyValueError::new_err(format!(
            "the reference #Ref<{number}> of node {node:?} (creation {creation}) does not \
             belong to this node ({NODE:?}, creation 0)"
        )));
    }
    Ok(Ref(number))
}

/// Rebuilds a pickled `Pid` (see `Pid.__reduce__`).
#[pyfunction]
pub(crate) fn _pid(node: &str, index: u32, serial: u32, creation: u32) -> PyResult<PyPid> {
    pid_from_parts(node, index, serial, creation).map(PyPid)
}

/// Rebuilds a pickled `Ref` (see `Ref.__reduce__`).
#[pyfunction]
pub(crate) fn _ref(node: &str, number: u64, creation: u32) -> PyResult<PyRef> {
    ref_from_parts(node, number, creation).map(PyRef)
}

/// A unique reference (`make_ref()`), shown as `#Ref<0.N>`.
#[pyclass(frozen, name = "Ref", module = "beamvm")]
#[derive(Clone, Copy)]
pub struct PyRef(pub Ref);

#[pymethods]
impl PyRef {
    fn __repr__(&self) -> String {
        self.0.to_string()
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("ref", self.0).hash(&mut h);
        h.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyObject {
        let py = other.py();
        match other.downcast::<PyRef>() {
            Ok(o) => op.matches(self.0.cmp(&o.get().0)).into_py(py),
            Err(_) => py.NotImplemented(),
        }
    }

    /// Pickles as `beamvm._native._ref(node, number, creation)`.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("beamvm._native")?.getattr("_ref")?;
        Ok((f, ref_parts(self.0).into_pyobject(py)?))
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
        // SAFETY: `view` is non-NULL and points at a Py_buffer the caller lets us fill
        // (the `bf_getbuffer` contract). `obj` takes a new reference to this Binary,
        // which CPython releases with the view, so `buf` (its shared buffer, immutable
        // and alive as long as the Binary) stays valid for the view's whole life; the
        // bytes are exposed read-only. `shape` and `strides` point into the view itself
        // (`len`, `itemsize`), which outlives every reader of them.
        unsafe {
            (*view).obj = slf.clone().into_any().into_ptr();
            (*view).buf = bytes.as_ptr() as *mut c_void;
            (*view).len = bytes.len() as isize;
            (*view).readonly = 1;
            (*view).itemsize = 1;
            (*view).format = if flags & pyo3::ffi::PyBUF_FORMAT == pyo3::ffi::PyBUF_FORMAT {
                c"B".as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & pyo3::ffi::PyBUF_ND == pyo3::ffi::PyBUF_ND {
                &mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & pyo3::ffi::PyBUF_STRIDES == pyo3::ffi::PyBUF_STRIDES {
                &mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    /// Nothing to release: the view's reference to this Binary (`obj`) keeps the bytes
    /// alive and CPython drops it.
    ///
    /// # Safety
    /// Called by CPython with a view this Binary filled; it is not read.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}
}
