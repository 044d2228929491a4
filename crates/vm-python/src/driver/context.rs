//! Each process's own `contextvars.Context`.
//!
//! A process gets a copy of its spawner's current context at spawn (as a thread started
//! with `contextvars.copy_context().run` would): context variables, and everything built
//! on them such as `decimal`'s current context, are then per process. Each slice runs
//! inside that context: the driver enters it natively (`PyContext_Enter`) before
//! resuming the generator and leaves it (`PyContext_Exit`) when the slice ends, on every
//! path out of the slice ([`Entered`]'s drop). Entering is two pointer swaps in the
//! thread state, much cheaper than `Context.run` per resume, and one enter covers every
//! resume of the generator within the slice (a receive that finds its message resumes
//! the frame again without leaving the slice).
//!
//! Copying is O(1) (a context is a persistent map, the copy shares it), so spawn pays
//! one small object per process. The copy is shallow, as `copy_context` is; one value
//! kept in a context variable is mutable and matters: `decimal`'s current context
//! (`getcontext().prec = 5` mutates it). So when `decimal` is imported, the child's
//! context gets a copy of the spawner's decimal context (same settings, its own
//! object): changing precision in one process never changes another's results.
//!
//! `threading.local` is not a context variable: it stays per OS thread, so process
//! code must not keep per-process state in one (a process may resume on another
//! scheduler thread, and processes sharing a thread share its locals).

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{ffi, intern};

/// A new process's context: a copy of the calling thread's current context (the
/// spawner's: inside a process, that process's own), with its own decimal context.
pub(crate) fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: called with the GIL held (`py`); PyContext_CopyCurrent returns a new
    // reference or NULL with an exception set, which `from_owned_ptr_or_err` reports.
    let ctx = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }?;
    // SAFETY: GIL held; PyImport_GetModuleDict returns a borrowed reference to the
    // interpreter's `sys.modules` dict, which lives as long as the interpreter.
    let modules = unsafe { Bound::from_borrowed_ptr(py, ffi::PyImport_GetModuleDict()) };
    let modules = modules.downcast_into::<PyDict>()?;
    if let Some(decimal) = modules.get_item(intern!(py, "decimal"))? {
        // SAFETY: `ctx` outlives the guard (both local; the guard is dropped first).
        let _in_child = unsafe { Entered::enter(&ctx)? };
        let own = decimal
            .call_method0(intern!(py, "getcontext"))?
            .call_method0(intern!(py, "copy"))?;
        decimal.call_method1(intern!(py, "setcontext"), (own,))?;
    }
    Ok(ctx.unbind())
}

/// A context entered for the length of a slice; leaving it is the drop. It holds the
/// context by pointer, without a reference of its own: the caller keeps the context
/// alive for as long as the guard lives (the process owns its context).
pub(crate) struct Entered<'py> {
    py: Python<'py>,
    ctx: *mut ffi::PyObject,
}

impl<'py> Entered<'py> {
    /// Enters `ctx` on this thread (fails if it is already entered, e.g. by another
    /// thread: a process never runs on two threads at once, so that is a bug).
    ///
    /// # Safety
    /// `ctx` must stay alive until the returned guard is dropped.
    pub(crate) unsafe fn enter(ctx: &Bound<'py, PyAny>) -> PyResult<Entered<'py>> {
        // SAFETY: `ctx` is a live `contextvars.Context` (made by `copy_current`) and the
        // GIL is held (it is a `Bound<'py, _>`). PyContext_Enter returns 0, or -1 with
        // an exception set.
        if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } != 0 {
            return Err(PyErr::fetch(ctx.py()));
        }
        Ok(Entered {
            py: ctx.py(),
            ctx: ctx.as_ptr(),
        })
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // SAFETY: the context was entered on this thread by `enter`, is still alive
        // (`enter`'s contract) and the GIL is still held (`'py`). PyContext_Exit fails
        // only if code inside the slice entered another context and did not leave it (a
        // C extension's bug): that is reported as unraisable, the process goes on.
        if unsafe { ffi::PyContext_Exit(self.ctx) } != 0 {
            PyErr::fetch(self.py).write_unraisable(self.py, None);
        }
    }
}
