//! Errors: the exceptions `beamvm._native` raises and the one mapping from the core's
//! [`vm_core::Error`] to them.
//!
//! Every function of the extension that calls into vm-core reports its errors through
//! [`vm_err`], so one core error always becomes the same Python exception:
//!
//! | vm-core | Python |
//! |---|---|
//! | `SystemLimit` | `beamvm.SystemLimit` |
//! | `NoProc` | `beamvm.NoProc` |
//! | `BadArg` | `beamvm.BadArg` |
//! | `NotRunning` | `RuntimeError` (with how to start the VM) |
//! | `Term` | `ValueError` |
//!
//! Calls that need a running process and are made elsewhere get [`outside`]; calls
//! that need a running VM and find none get [`not_running`].

use pyo3::create_exception;
use pyo3::exceptions::{PyBaseException, PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use vm_core::Error;

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

/// The Python exception for a core error (see the module docs).
pub(crate) fn vm_err(e: Error) -> PyErr {
    match e {
        Error::SystemLimit => SystemLimit::new_err(e.to_string()),
        Error::NoProc => NoProc::new_err(e.to_string()),
        Error::BadArg(_) => BadArg::new_err(e.to_string()),
        Error::NotRunning => not_running(),
        Error::Term(_) => PyValueError::new_err(e.to_string()),
    }
}

/// `name()` was called outside a process but needs one.
pub(crate) fn outside(name: &str) -> PyErr {
    if crate::lifecycle::forked_away() {
        return forked();
    }
    PyRuntimeError::new_err(format!(
        "{name}() must be called inside a beamvm process (spawned with beamvm.spawn or run \
         by beamvm.run)"
    ))
}

/// The VM is not running (or, in the child of an `os.fork()`, was left in the parent).
pub(crate) fn not_running() -> PyErr {
    if crate::lifecycle::forked_away() {
        return forked();
    }
    PyRuntimeError::new_err("beamvm is not running: use beamvm.run(main) or beamvm.start() first")
}

/// A VM call in the child of an `os.fork()` made while the VM ran.
pub(crate) fn forked() -> PyErr {
    PyRuntimeError::new_err(
        "beamvm's VM does not survive os.fork(): this child process has no VM (the \
         parent's processes, names and timers stay in the parent). Start a new one here \
         with beamvm.start() or beamvm.run(), or fork before starting the VM (or use \
         multiprocessing's 'spawn' or 'forkserver' start method).",
    )
}

/// The name of `obj`'s type, for error messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .qualname()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "object".into())
}
