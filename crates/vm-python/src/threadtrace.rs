//! `sys.settrace`/`sys.setprofile` on scheduler threads, so that debuggers and coverage
//! tools (`coverage run`, `threading.settrace`) see process code.
//!
//! Scheduler threads are native threads that Python's `threading` module never
//! started, so `threading.settrace` does not reach them, and the thread state a batch
//! runs in may be a new one each batch (pyo3's `with_gil` on a foreign thread). So the
//! trace and profile functions are kept here and installed at the start of every batch
//! while one is set ([`apply`], called by `GilHook::batch`).
//!
//! Invariants:
//! * Off costs one relaxed load per batch ([`ACTIVE`]).
//! * Set only from Python (`beamvm.trace.settrace`/`setprofile`, and at import from
//!   `threading.gettrace()`/`getprofile()`), with the GIL held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;

/// Whether a trace or profile function is set (read on every batch).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// `(trace, profile)` to install on scheduler threads.
static HOOKS: Mutex<(Option<PyObject>, Option<PyObject>)> = Mutex::new((None, None));

/// Sets the trace and profile functions scheduler threads install (None: none).
#[pyfunction]
#[pyo3(signature = (trace, profile))]
pub(crate) fn _set_thread_hooks(trace: Option<PyObject>, profile: Option<PyObject>) {
    let mut h = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    ACTIVE.store(trace.is_some() || profile.is_some(), Ordering::Release);
    *h = (trace, profile);
}

/// Installs the hooks on this (scheduler) thread, if any are set.
#[inline]
pub(crate) fn apply(py: Python<'_>) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let (t, p) = {
        let h = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        (
            h.0.as_ref().map(|o| o.clone_ref(py)),
            h.1.as_ref().map(|o| o.clone_ref(py)),
        )
    };
    let Ok(sys) = py.import("sys") else { return };
    for (name, f) in [("settrace", t), ("setprofile", p)] {
        if let Some(f) = f {
            if let Err(e) = sys.getattr(name).and_then(|s| s.call1((f,))) {
                e.write_unraisable(py, None);
            }
        }
    }
}

/// Adds this module's functions to `beamvm._native`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_set_thread_hooks, m)?)?;
    Ok(())
}
