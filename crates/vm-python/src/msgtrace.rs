//! Message tracing (`beamvm.trace.messages`): the send and receive events of process
//! code, reported to one Python hook.
//!
//! Invariants:
//! * Off costs one relaxed load per send and per received message: [`ON`] is false
//!   unless a hook is installed, and nothing else runs.
//! * The hook is called with the GIL held, in the sending or receiving process's own
//!   context (so it can ask `self_pid()`): a send as it is made (so it is reported
//!   before the receiver can report its receive), a receive once it is done. It never
//!   changes what is delivered. Its errors are reported as unraisable, never
//!   raised into the traced code.
//! * A send made by the hook itself (the trace's output going to an `io` process) is
//!   not traced again: [`IN_HOOK`] is set while the hook runs on this thread.
//! * Receives are reported when process code takes a message (the fast receive, a
//!   waiting receive resumed by the driver, the receive op), not when it is queued.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;

/// Whether a hook is installed (read without the lock on every send and receive).
static ON: AtomicBool = AtomicBool::new(false);
/// The installed hook: `hook(event, message, destination_or_None)`.
static HOOK: Mutex<Option<PyObject>> = Mutex::new(None);

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Installs `hook` (or removes it with None). `hook("send", msg, dest)` runs after a
/// send by process code, `hook("receive", msg, None)` after a receive.
#[pyfunction]
#[pyo3(signature = (hook))]
pub(crate) fn _set_message_hook(hook: Option<PyObject>) {
    let mut h = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    ON.store(hook.is_some(), Ordering::Release);
    *h = hook;
}

fn call(py: Python<'_>, event: &str, msg: &Bound<'_, PyAny>, dest: Option<&Bound<'_, PyAny>>) {
    if IN_HOOK.with(|f| f.replace(true)) {
        return;
    }
    let hook = HOOK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|h| h.clone_ref(py));
    if let Some(h) = hook {
        let dest = dest.map_or_else(|| py.None(), |d| d.clone().unbind());
        if let Err(e) = h.call1(py, (event, msg, dest)) {
            e.write_unraisable(py, Some(h.bind(py)));
        }
    }
    IN_HOOK.with(|f| f.set(false));
}

/// Reports a send of `msg` to `dest` by the current code, if message tracing is on.
#[inline]
pub(crate) fn sent(py: Python<'_>, dest: &Bound<'_, PyAny>, msg: &Bound<'_, PyAny>) {
    if ON.load(Ordering::Relaxed) {
        call(py, "send", msg, Some(dest));
    }
}

/// Whether message tracing is on (a sender that skips building the message as a
/// Python value asks first).
#[inline]
pub(crate) fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Reports that the current process received `msg`, if message tracing is on.
#[inline]
pub(crate) fn received(py: Python<'_>, msg: &PyObject) {
    if ON.load(Ordering::Relaxed) {
        call(py, "receive", msg.bind(py), None);
    }
}

/// Adds this module's functions to `beamvm._native`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_set_message_hook, m)?)?;
    Ok(())
}
