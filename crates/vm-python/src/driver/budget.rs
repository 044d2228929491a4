//! The budget cell: the process's `[remaining, kill_state, slice_start]` list that
//! compiled code counts reductions in (layout defined in `beamvm._runtime`). The driver
//! grants a slice's budget and reads what it used natively, without calling Python.

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

thread_local! {
    /// The budget cell this thread last made `_runtime._TL.b` (see [`enter_cell`]).
    static TL_CELL: Cell<*mut ffi::PyObject> = const { Cell::new(std::ptr::null_mut()) };
    /// The id of the Python thread state `TL_CELL` and `TL_DICT` belong to (see
    /// [`forget_tl_if_new_thread_state`]).
    static TL_TSTATE: Cell<u64> = const { Cell::new(0) };
}

/// `_runtime.enter(cell, n)` done natively: grant `n` (>= 1) reductions to the
/// process's budget cell (`[remaining, kill_state, slice_start]`) and make it this
/// thread's current cell (`_runtime._TL.b`), which compiled code reads at entry.
///
/// `_TL.b` is only assigned when this thread last assigned a different cell: on a
/// scheduler thread nothing but this driver assigns `_TL.b` (`_runtime.kill` restores
/// what it found), and `_TL.b` holds a strong reference to the cell we assigned, so
/// the remembered pointer cannot be freed and reused while it is current.
pub(crate) fn enter_cell(py: Python<'_>, cell: &Bound<'_, PyAny>, n: i64) -> PyResult<()> {
    let list = cell.downcast_exact::<PyList>()?;
    let n = budget_int(py, n.max(1))?;
    list.set_item(0, &n)?;
    list.set_item(2, &n)?;
    forget_tl_if_new_thread_state(py);
    let p = cell.as_ptr();
    if TL_CELL.with(|c| c.get()) != p {
        tl_dict(py)?.set_item(intern!(py, "b"), cell)?;
        TL_CELL.with(|c| c.set(p));
    }
    Ok(())
}

/// Drops the cached `_TL` dict and current cell when this thread runs under a new Python
/// thread state. pyo3 deletes a thread state it created once the thread's GIL count drops
/// to zero -- a batch ends whenever the scheduler parks -- and `threading.local` keeps its
/// per-thread dict in the thread state: under the next one `_TL.__dict__` is a new dict
/// (holding a default cell), so writing the process's cell into the cached old dict would
/// leave compiled code counting into a cell no driver grants, yielding at every check
/// (issue 8, fault 10: messaging ~40% slower for good after a wait).
fn forget_tl_if_new_thread_state(_py: Python<'_>) {
    // SAFETY: with the GIL held (`_py`) this thread has a current thread state, which
    // `PyThreadState_Get` returns and `PyThreadState_GetID` only reads.
    let id = unsafe { py_thread_state_get_id(ffi::PyThreadState_Get()) };
    if TL_TSTATE.with(|c| c.replace(id)) != id {
        TL_CELL.with(|c| c.set(std::ptr::null_mut()));
        TL_DICT.with(|c| *c.borrow_mut() = None);
    }
}

/// `_runtime.used(cell)` done natively: reductions consumed since [`enter_cell`].
pub(crate) fn used_cell(cell: &Bound<'_, PyAny>) -> i64 {
    let Ok(list) = cell.downcast_exact::<PyList>() else {
        return 1;
    };
    let get = |i: usize| {
        list.get_item(i)
            .and_then(|v| v.extract::<i64>())
            .unwrap_or(0)
    };
    get(2) - get(0).max(0)
}

thread_local! {
    /// The int object for the budget this thread granted last (normally the VM's
    /// reductions per slice): CPython caches only ints up to 256, so writing the cell
    /// would otherwise allocate an int per resume.
    static BUDGET_INT: RefCell<Option<(i64, Py<PyAny>)>> = const { RefCell::new(None) };
    /// `_runtime._TL`'s dict for this thread, with the `_TL` it belongs to.
    static TL_DICT: RefCell<Option<(*mut ffi::PyObject, Py<PyDict>)>> = const { RefCell::new(None) };
}

/// `n` as a Python int, reusing this thread's cached object when `n` is unchanged.
fn budget_int(py: Python<'_>, n: i64) -> PyResult<Bound<'_, PyAny>> {
    BUDGET_INT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((v, o)) = c.as_ref() {
            if *v == n {
                return Ok(o.bind(py).clone());
            }
        }
        let o = n.into_pyobject(py)?.into_any();
        *c = Some((n, o.clone().unbind()));
        Ok(o)
    })
}

/// This thread's `__dict__` of `_runtime._TL` (a `threading.local`): assigning `b` in
/// it is what `_TL.b = cell` does (`_ThreadCells` defines no descriptor `b`, so
/// `local_setattro` ends in a store into this dict) without the attribute machinery.
/// The per-thread dict lives as long as the thread; the cache is keyed by the `_TL`
/// object (kept alive by the runtime, so its address is not reused).
fn tl_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let tl = rt(py).tl.bind(py);
    TL_DICT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((k, d)) = c.as_ref() {
            if *k == tl.as_ptr() {
                return Ok(d.bind(py).clone());
            }
        }
        let d = tl
            .getattr(intern!(py, "__dict__"))?
            .downcast_into::<PyDict>()?;
        *c = Some((tl.as_ptr(), d.clone().unbind()));
        Ok(d)
    })
}
