//! Dirty calls from Python: `dirty_cpu`/`dirty_io` run a Python callable on a vm-core
//! dirty pool thread, which takes the GIL for the call (C code that releases the GIL
//! then runs in parallel with the schedulers). Pool threads pass the interpreter's
//! gate ([`crate::finalize`]) for every use of Python, so none starts touching a
//! finalising interpreter, and `atexit` waits (bounded) for the calls still running.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::finalize;

/// What a dirty job hands back: the call's return value or the exception it raised
/// (with its traceback). Dropped with the GIL held, whichever thread drops it (a pool
/// thread when the process died meanwhile), so no reference waits for a later
/// acquisition; leaked once the interpreter is exiting.
pub(crate) struct DirtyOutcome(pub(crate) Option<Result<PyObject, PyObject>>);

impl Drop for DirtyOutcome {
    fn drop(&mut self) {
        let Some(v) = self.0.take() else { return };
        match finalize::enter() {
            Some(_pass) => Python::with_gil(|_py| drop(v)),
            // The interpreter is finalising: touching it now would crash.
            None => std::mem::forget(v),
        }
    }
}

/// The job for `beamvm.dirty_cpu/dirty_io(fn, *args, **kwargs)`: runs on a pool
/// thread, takes the GIL to call `fn` (C code that releases the GIL, such as
/// `time.sleep`, hashlib or zlib, then runs in parallel with the schedulers), and
/// drops its references under the same GIL hold. The whole call is inside the
/// interpreter's gate, so the exit waits for it.
pub(crate) fn dirty_job(
    f: PyObject,
    args: Py<PyTuple>,
    kwargs: Option<PyObject>,
) -> vm_core::DirtyJob {
    Box::new(move || {
        let Some(pass) = finalize::enter() else {
            // Leaked on purpose: the interpreter is going away.
            std::mem::forget((f, args, kwargs));
            return Box::new(DirtyOutcome(None)) as Box<dyn std::any::Any + Send>;
        };
        let out = Python::with_gil(|py| {
            // One thread state for the pool thread's life, not one per call.
            super::gil::keep_thread_state(py);
            let kw = kwargs
                .as_ref()
                .and_then(|k| k.bind(py).downcast::<PyDict>().ok().cloned());
            let r = {
                let _cap = super::recursion::Cap::apply(py);
                finalize::call(f.bind(py), args.bind(py), kw.as_ref())
            };
            if crate::lifecycle::forked_away() {
                // `fn` forked, and this is the child: only this thread was copied, and
                // the pool it belongs to does not exist here. The child ends when `fn`
                // returns, as a child forked from a thread does.
                super::forked_child_exit(py, r.err());
            }
            let out = match r {
                Ok(v) => Ok(v.unbind()),
                Err(e) => Err(e.into_value(py).into_any()),
            };
            drop(kw);
            drop(f);
            drop(args);
            drop(kwargs);
            out
        });
        drop(pass);
        Box::new(DirtyOutcome(Some(out))) as Box<dyn std::any::Any + Send>
    })
}
