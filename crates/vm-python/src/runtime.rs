//! The Python objects the driver needs (from beamvm._runtime, beamvm._compiler and the
//! public package), handed over once by `beamvm/__init__.py` through `_setup`, and the
//! exceptions the extension raises.

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

create_exception!(
    beamvm,
    Timeout,
    PyException,
    "A receive with a timeout and no default got no matching message in time."
);
create_exception!(
    beamvm,
    SystemLimit,
    PyException,
    "A VM limit was hit (e.g. the process table is full: raise process_limit)."
);
create_exception!(
    beamvm,
    NoProc,
    PyException,
    "The target process does not exist (link to a dead pid without trap_exit)."
);
create_exception!(
    beamvm,
    BadArg,
    PyException,
    "The VM rejected an argument (e.g. registering a name that is taken)."
);
create_exception!(
    beamvm,
    ProcessExit,
    PyBaseException,
    "Raised by exit(reason) to end the calling process with that reason; raised by \
     beamvm.run when its main process was killed by an exit signal (args[0] = reason)."
);

/// The Python protocol objects.
pub struct Runtime {
    pub enter: PyObject,
    pub used: PyObject,
    pub kill: PyObject,
    pub new_cell: PyObject,
    pub compile_process: PyObject,
    pub preempt: PyObject,
    pub request: PyObject,
    pub any: PyObject,
    pub missing: PyObject,
    pub report: PyObject,
    /// `_runtime._TL`: the per-thread holder of the current budget cell (`.b`).
    pub tl: PyObject,
}

static RT: GILOnceCell<Runtime> = GILOnceCell::new();

/// The runtime objects; `_setup` must have run (beamvm/__init__.py does it on import).
pub fn rt(py: Python<'_>) -> &Runtime {
    RT.get(py)
        .expect("beamvm._native used before beamvm/__init__.py called _setup")
}

/// Whether `_setup` ran.
pub fn ready(py: Python<'_>) -> PyResult<()> {
    if RT.get(py).is_some() {
        Ok(())
    } else {
        Err(PyRuntimeError::new_err(
            "import beamvm (not beamvm._native alone) before using the VM",
        ))
    }
}

/// Installs the runtime objects (called once by beamvm/__init__.py).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn _setup(
    py: Python<'_>,
    enter: PyObject,
    used: PyObject,
    kill: PyObject,
    new_cell: PyObject,
    compile_process: PyObject,
    preempt: PyObject,
    request: PyObject,
    any: PyObject,
    missing: PyObject,
    report: PyObject,
    tl: PyObject,
) -> PyResult<()> {
    let _ = RT.set(
        py,
        Runtime {
            enter,
            used,
            kill,
            new_cell,
            compile_process,
            preempt,
            request,
            any,
            missing,
            report,
            tl,
        },
    );
    Ok(())
}
