//! The budget cell: the process's `[remaining, kill_state, slice_start]` list that
//! compiled code counts reductions in (layout defined in `beamvm._runtime`). The driver
//! grants a slice's budget and reads what it used natively, without calling Python.

use std::cell::{Cell, RefCell};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::{ffi, intern};

use crate::runtime::rt;

thread_local! {
    /// The budget cell this thread last made `_runtime._TL.b` (see [`enter_cell`]).
    static TL_CELL: Cell<*mut ffi::PyObject> = const { Cell::new(std::ptr::null_mut()) };
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
    let p = cell.as_ptr();
    if TL_CELL.with(|c| c.get()) != p {
        tl_dict(py)?.set_item(intern!(py, "b"), cell)?;
        TL_CELL.with(|c| c.set(p));
    }
    Ok(())
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
