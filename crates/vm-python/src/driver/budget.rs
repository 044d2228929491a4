//! The budget cell: the process's `[remaining, kill_state, slice_start]` list that
//! compiled code counts reductions in. Its layout is defined once, in `beamvm._runtime`
//! (`REMAINING`, `SLICE_START`, ...), and handed to `_setup`: this module indexes the cell
//! by those (runtime.rs's `Runtime::cell_remaining` and `cell_slice_start`), never by
//! numbers of its own. The driver grants a slice's budget and reads what it used
//! natively, without calling Python.

use std::cell::{Cell, RefCell};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::{ffi, intern};

use crate::runtime::rt;

extern "C" {
    // Not declared by pyo3-ffi 0.23 (stable ABI since 3.9).
    #[link_name = "PyThreadState_GetID"]
    fn py_thread_state_get_id(tstate: *mut ffi::PyThreadState) -> u64;
}

/// What this thread remembers between slices, in one thread-local: in this shared
/// library every thread-local access is a call (`__tls_get_addr`), and a slice used to
/// make four of them here.
struct ThreadCells {
    /// The budget cell this thread last made `_runtime._TL.b` (see [`enter_cell`]).
    cell: Cell<*mut ffi::PyObject>,
    /// The id of the Python thread state `cell` and `tl_dict` belong to (see
    /// [`forget_tl_if_new_thread_state`]).
    tstate: Cell<u64>,
    /// The int object for the budget this thread granted last (normally the VM's
    /// reductions per slice): CPython caches only ints up to 256, so writing the cell
    /// would otherwise allocate an int per resume.
    budget_int: RefCell<Option<(i64, Py<PyAny>)>>,
    /// `_runtime._TL`'s dict for this thread, with the `_TL` it belongs to.
    tl_dict: RefCell<Option<(*mut ffi::PyObject, Py<PyDict>)>>,
}

thread_local! {
    static TL: ThreadCells = const {
        ThreadCells {
            cell: Cell::new(std::ptr::null_mut()),
            tstate: Cell::new(0),
            budget_int: RefCell::new(None),
            tl_dict: RefCell::new(None),
        }
    };
}

/// `_runtime.enter(cell, n)` done natively: grant `n` (>= 1) reductions to the
/// process's budget cell (`remaining` and `slice_start`) and make it this
/// thread's current cell (`_runtime._TL.b`), which compiled code reads at entry.
///
/// `_TL.b` is only assigned when this thread last assigned a different cell: on a
/// scheduler thread nothing but this driver assigns `_TL.b` (`_runtime.kill` restores
/// what it found), and `_TL.b` holds a strong reference to the cell we assigned, so
/// the remembered pointer cannot be freed and reused while it is current.
///
/// Call only inside [`super::gil::with_batch_gil`], which has made sure that what this
/// thread remembers belongs to its current Python thread state
/// ([`forget_tl_if_new_thread_state`], once per GIL hold rather than per slice).
pub(crate) fn enter_cell(py: Python<'_>, cell: &Bound<'_, PyAny>, n: i64) -> PyResult<()> {
    let list = cell.downcast_exact::<PyList>()?;
    let r = rt(py);
    let (remaining, slice_start) = (r.cell_remaining, r.cell_slice_start);
    TL.with(|tl| {
        let n = budget_int(py, tl, n.max(1))?;
        list.set_item(remaining, &n)?;
        // `slice_start` usually holds this very object already (the same grant as last
        // slice, from the cached int): then there is nothing to write.
        if item_ptr(list, slice_start) != Some(n.as_ptr()) {
            list.set_item(slice_start, &n)?;
        }
        let p = cell.as_ptr();
        if tl.cell.get() != p {
            tl_dict(py, tl)?.set_item(intern!(py, "b"), cell)?;
            tl.cell.set(p);
        }
        Ok(())
    })
}

/// Drops the cached `_TL` dict and current cell when this thread runs under a new Python
/// thread state. pyo3 deletes a thread state it created once the thread's GIL count drops
/// to zero -- a batch ends whenever the scheduler parks -- and `threading.local` keeps its
/// per-thread dict in the thread state: under the next one `_TL.__dict__` is a new dict
/// (holding a default cell), so writing the process's cell into the cached old dict would
/// leave compiled code counting into a cell no driver grants, yielding at every check
/// (issue 8, fault 10: messaging ~40% slower for good after a wait).
///
/// The thread state cannot change while the GIL stays held, so `with_batch_gil` calls
/// this once per hold: at the start of each batch and of each hold of its own.
pub(crate) fn forget_tl_if_new_thread_state(_py: Python<'_>) {
    // SAFETY: with the GIL held (`_py`) this thread has a current thread state, which
    // `PyThreadState_Get` returns and `PyThreadState_GetID` only reads.
    let id = unsafe { py_thread_state_get_id(ffi::PyThreadState_Get()) };
    TL.with(|tl| {
        if tl.tstate.replace(id) != id {
            tl.cell.set(std::ptr::null_mut());
            // Dropped after the borrow ends: a dict's drop may run Python code.
            let old = tl.tl_dict.borrow_mut().take();
            drop(old);
        }
    });
}

/// `_runtime.used(cell)` done natively: reductions consumed since [`enter_cell`].
pub(crate) fn used_cell(cell: &Bound<'_, PyAny>) -> i64 {
    let Ok(list) = cell.downcast_exact::<PyList>() else {
        return 1;
    };
    let get = |i: usize| {
        let Some(p) = item_ptr(list, i) else { return 0 };
        // SAFETY: `p` is a live item of `list` (see `item_ptr`), a borrowed reference
        // used before anything can change the list. PyLong_AsLongLong accepts any
        // object: for a non-int (or an int out of range) it returns -1 with an
        // exception set, which is cleared here (a cell holding garbage reads as 0, as
        // `extract` failing did).
        unsafe {
            let v = ffi::PyLong_AsLongLong(p);
            if v == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return 0;
            }
            v
        }
    };
    let r = rt(cell.py());
    get(r.cell_slice_start) - get(r.cell_remaining).max(0)
}

/// The item at `i` of `list` as a borrowed pointer, without the reference count
/// traffic of `get_item` (twice per slice each way); None past the end.
fn item_ptr(list: &Bound<'_, PyList>, i: usize) -> Option<*mut ffi::PyObject> {
    // SAFETY: `list` is a live list and the GIL is held (it is a `Bound`); reading its
    // size and, below it, an item slot is what PyList_GetItem does without the checks
    // repeated here. The pointer is borrowed: the list keeps the item alive until it is
    // changed, and callers use it before running any code that could change it.
    unsafe {
        let n = ffi::PyList_GET_SIZE(list.as_ptr());
        if (i as ffi::Py_ssize_t) < n {
            Some(ffi::PyList_GET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t))
        } else {
            None
        }
    }
}

/// `n` as a Python int, reusing this thread's cached object when `n` is unchanged.
fn budget_int<'py>(py: Python<'py>, tl: &ThreadCells, n: i64) -> PyResult<Bound<'py, PyAny>> {
    if let Some((v, o)) = tl.budget_int.borrow().as_ref() {
        if *v == n {
            return Ok(o.bind(py).clone());
        }
    }
    let o = n.into_pyobject(py)?.into_any();
    let old = tl.budget_int.replace(Some((n, o.clone().unbind())));
    drop(old); // after the borrow: an int's drop runs no Python code, but stay uniform
    Ok(o)
}

/// This thread's `__dict__` of `_runtime._TL` (a `threading.local`): assigning `b` in
/// it is what `_TL.b = cell` does (`_ThreadCells` defines no descriptor `b`, so
/// `local_setattro` ends in a store into this dict) without the attribute machinery.
/// The per-thread dict lives as long as the thread; the cache is keyed by the `_TL`
/// object (kept alive by the runtime, so its address is not reused).
fn tl_dict<'py>(py: Python<'py>, cells: &ThreadCells) -> PyResult<Bound<'py, PyDict>> {
    let tl = rt(py).tl.bind(py);
    if let Some((k, d)) = cells.tl_dict.borrow().as_ref() {
        if *k == tl.as_ptr() {
            return Ok(d.bind(py).clone());
        }
    }
    // No borrow is held across the attribute lookup (it runs Python code).
    let d = tl
        .getattr(intern!(py, "__dict__"))?
        .downcast_into::<PyDict>()?;
    let old = cells
        .tl_dict
        .replace(Some((tl.as_ptr(), d.clone().unbind())));
    drop(old);
    Ok(d)
}
