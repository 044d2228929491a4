//! Dirty calls from Python: `dirty_cpu`/`dirty_io` run a Python callable on a vm-core
//! dirty pool thread, which takes the GIL for the call (C code that releases the GIL
//! then runs in parallel with the schedulers), and at interpreter exit
//! [`_quiesce_dirty`] keeps pool threads from touching a finalising interpreter.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// What a dirty job hands back: the call's return value or the exception it raised
/// (with its traceback). Dropped with the GIL held, whichever thread drops it (a pool
/// thread when the process died meanwhile), so no reference waits for a later
/// acquisition.
pub(crate) struct DirtyOutcome(pub(crate) Option<Result<PyObject, PyObject>>);

impl Drop for DirtyOutcome {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            if DIRTY_EXITING.load(Ordering::Acquire) {
                // The interpreter is finalising: touching it now would crash.
                std::mem::forget(v);
            } else {
                Python::with_gil(|_py| drop(v));
            }
        }
    }
}

/// Dirty jobs inside a Python call right now. The VM detaches pool threads still
/// running a job at shutdown, so at interpreter exit [`quiesce_dirty`] waits for
/// these before Python finalises (a thread holding the GIL then would crash it).
static DIRTY_ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set at interpreter exit: jobs that have not started calling Python do not start.
static DIRTY_EXITING: AtomicBool = AtomicBool::new(false);

/// Called at interpreter exit after the VM stopped: stops new dirty Python calls and
/// waits up to `timeout` seconds for running ones to return. Returns how many still
/// run.
#[pyfunction]
pub fn _quiesce_dirty(py: Python<'_>, timeout: f64) -> usize {
    DIRTY_EXITING.store(true, Ordering::Release);
    let until = std::time::Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.allow_threads(|| {
        while DIRTY_ACTIVE.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    DIRTY_ACTIVE.load(Ordering::Acquire)
}

/// The job for `beamvm.dirty_cpu/dirty_io(fn, *args, **kwargs)`: runs on a pool
/// thread, takes the GIL to call `fn` (C code that releases the GIL, such as
/// `time.sleep`, hashlib or zlib, then runs in parallel with the schedulers), and
/// drops its references under the same GIL hold.
pub(crate) fn dirty_job(
    f: PyObject,
    args: Py<PyTuple>,
    kwargs: Option<PyObject>,
) -> vm_core::DirtyJob {
    Box::new(move || {
        if DIRTY_EXITING.load(Ordering::Acquire) {
            // Leaked on purpose: the interpreter is going away.
            std::mem::forget((f, args, kwargs));
            return Box::new(DirtyOutcome(None)) as Box<dyn std::any::Any + Send>;
        }
        DIRTY_ACTIVE.fetch_add(1, Ordering::AcqRel);
        let out = Python::with_gil(|py| {
            let kw = kwargs
                .as_ref()
                .and_then(|k| k.bind(py).downcast::<pyo3::types::PyDict>().ok().cloned());
            let r = f.bind(py).call(args.bind(py), kw.as_ref());
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
        DIRTY_ACTIVE.fetch_sub(1, Ordering::AcqRel);
        Box::new(DirtyOutcome(Some(out))) as Box<dyn std::any::Any + Send>
    })
}
