//! The GIL around Python slices: [`GilHook`] holds it across a batch of slices on a
//! scheduler thread, and [`with_batch_gil`] lets each slice use that hold.

use std::cell::Cell;

use pyo3::prelude::*;
use vm_core::SliceHook;

thread_local! {
    /// True while this thread runs a batch inside [`GilHook::batch`]'s `with_gil`.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
}

/// Holds the GIL across a batch of Python slices on a scheduler thread: the whole
/// batch runs inside one `Python::with_gil`, so pyo3's GIL count stays above zero and
/// each slice's [`with_batch_gil`] is free (no `PyGILState_Ensure`, no reference-pool
/// update per slice).
pub struct GilHook;

impl SliceHook for GilHook {
    fn batch(&self, run: &mut dyn FnMut()) {
        // The interpreter is initialised (we are its extension module) and beamvm stops
        // the VM at exit (atexit) before finalisation.
        Python::with_gil(|_py| {
            struct Reset(bool);
            impl Drop for Reset {
                fn drop(&mut self) {
                    IN_BATCH.with(|c| c.set(self.0));
                }
            }
            let _reset = Reset(IN_BATCH.with(|c| c.replace(true)));
            run();
        })
    }
}

/// Runs `f` with the GIL: the batch's own when called inside [`GilHook::batch`] on
/// this thread, otherwise a `Python::with_gil` of its own.
pub(crate) fn with_batch_gil<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    if IN_BATCH.with(|c| c.get()) {
        // SAFETY: IN_BATCH is true only while this thread runs inside the
        // `Python::with_gil` closure of `GilHook::batch` (it is reset when the closure
        // ends, even by unwinding), and the scheduler calls bodies from that closure, not
        // from code that released the GIL (`allow_threads`) inside it. So this thread
        // holds the GIL and pyo3's GIL count is above zero, which is what
        // `assume_gil_acquired` requires.
        f(unsafe { Python::assume_gil_acquired() })
    } else {
        Python::with_gil(f)
    }
}
