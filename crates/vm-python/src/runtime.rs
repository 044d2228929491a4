//! The Python objects the driver needs (from beamvm._runtime, beamvm._compiler and the
//! public package), handed over once by `beamvm/__init__.py` through `_setup`.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

/// The Python protocol objects.
pub(crate) struct Runtime {
    pub(crate) kill: PyObject,
    pub(crate) new_cell: PyObject,
    pub(crate) compile_process: PyObject,
    pub(crate) preempt: PyObject,
    pub(crate) request: PyObject,
    pub(crate) any: PyObject,
    pub(crate) missing: PyObject,
    pub(crate) report: PyObject,
    /// `_runtime._TL`: the per-thread holder of the current budget cell (`.b`).
    pub(crate) tl: PyObject,
    /// `_runtime.REMAINING` and `_runtime.SLICE_START`: where the budget cell holds
    /// what the driver grants and reads (driver/budget.rs; the layout is `_runtime`'s).
    pub(crate) cell_remaining: usize,
    pub(crate) cell_slice_start: usize,
}

static RT: GILOnceCell<Runtime> = GILOnceCell::new();

/// The runtime objects; `_setup` must have run (beamvm/__init__.py does it on import).
pub(crate) fn rt(py: Python<'_>) -> &Runtime {
    RT.get(py)
        .expect("beamvm._native used before beamvm/__init__.py called _setup")
}

/// Whether `_setup` ran.
pub(crate) fn ready(py: Python<'_>) -> PyResult<()> {
    if RT.get(py).is_some() {
        Ok(())
    } else {
        Err(PyRuntimeError::new_err(
            "import beamvm (not beamvm._native alone) before using the VM",
        ))
    }
}

/// Installs the runtime objects (called once by beamvm/__init__.py, by keyword).
#[pyfunction]
#[pyo3(signature = (
    *, kill, new_cell, compile_process, preempt, request, any, missing, report, tl,
    cell_remaining, cell_slice_start
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _setup(
    py: Python<'_>,
    kill: PyObject,
    new_cell: PyObject,
    compile_process: PyObject,
    preempt: PyObject,
    request: PyObject,
    any: PyObject,
    missing: PyObject,
    report: PyObject,
    tl: PyObject,
    cell_remaining: usize,
    cell_slice_start: usize,
) -> PyResult<()> {
    if cell_remaining == cell_slice_start {
        return Err(PyValueError::new_err(
            "the budget cell's remaining and slice_start indices must differ",
        ));
    }
    let _ = RT.set(
        py,
        Runtime {
            kill,
            new_cell,
            compile_process,
            preempt,
            request,
            any,
            missing,
            report,
            tl,
            cell_remaining,
            cell_slice_start,
        },
    );
    Ok(())
}
