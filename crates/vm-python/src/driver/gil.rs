//! The GIL around Python slices: [`GilHook`] holds it across a batch of slices on a
//! scheduler thread, and [`with_batch_gil`] lets each slice use that hold.
//!
//! Scheduler threads also register here ([`busy_threads`]): which of them is inside a
//! batch right now, under which Python thread id, so that stopping the VM can
//! interrupt a process that does not end its slice (`lifecycle::stop`) and name the
//! code a stuck thread runs.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pyo3::prelude::*;
use vm_core::SliceHook;

use crate::finalize;

extern "C" {
    // CPython's thread id (`threading.get_ident()`); not declared by pyo3-ffi 0.23.
    fn PyThread_get_thread_ident() -> std::os::raw::c_ulong;
}

thread_local! {
    /// True while this thread runs a batch inside [`GilHook::batch`]'s `with_gil`.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
    /// This thread keeps its Python thread state between GIL holds (see
    /// [`keep_thread_state`]); dropped at the thread's exit, which deletes it.
    static KEPT: RefCell<Option<KeptThreadState>> = const { RefCell::new(None) };
    /// This scheduler thread's entry in [`THREADS`] (made at its first batch).
    static ME: RefCell<Option<Arc<SchedThread>>> = const { RefCell::new(None) };
}

/// A scheduler thread that has run Python slices.
pub(crate) struct SchedThread {
    /// `threading.get_ident()` of the thread (CPython's thread id).
    pub(crate) ident: std::os::raw::c_ulong,
    /// Inside a batch (holding or waiting for the GIL to run Python slices).
    busy: AtomicBool,
}

/// Every scheduler thread that ran Python slices and still exists. Locked only with
/// the GIL held, so that `os.fork()` (which holds the GIL) never copies it locked.
static THREADS: Mutex<Vec<Weak<SchedThread>>> = Mutex::new(Vec::new());

/// This thread's entry, made on first use (call with the GIL held: see [`THREADS`]).
fn me(_py: Python<'_>) -> Arc<SchedThread> {
    ME.with(|m| {
        m.borrow_mut()
            .get_or_insert_with(|| {
                // SAFETY: PyThread_get_thread_ident has no preconditions (it returns the
                // calling thread's id; no GIL needed).
                let ident = unsafe { PyThread_get_thread_ident() };
                let t = Arc::new(SchedThread {
                    ident,
                    busy: AtomicBool::new(false),
                });
                let mut all = THREADS.lock().unwrap_or_else(|e| e.into_inner());
                all.retain(|w| w.strong_count() > 0);
                all.push(Arc::downgrade(&t));
                t
            })
            .clone()
    })
}

/// Makes this VM thread keep its Python thread state until it exits. Call with the GIL
/// held (inside `Python::with_gil`).
///
/// A thread CPython did not start gets a thread state from `PyGILState_Ensure` when it
/// takes the GIL, and loses it when the matching release brings its count to zero: a
/// new thread state (and its frame stack, an `mmap`ed chunk: an `mmap` and a `munmap`,
/// whose TLB shoot-down interrupts every core) for every batch. Most batches are short
/// (a process woken by a message or by readiness runs one slice), so that was a large
/// part of their cost. One extra count, taken here and given back when the thread
/// exits, keeps the state: later holds only take and drop the GIL.
pub(crate) fn keep_thread_state(_py: Python<'_>) {
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if k.is_none() {
            // SAFETY: the GIL is held by this thread (caller's contract), so this is a
            // nested Ensure: it only increments this thread state's count (returning
            // LOCKED) and takes nothing else.
            unsafe { pyo3::ffi::PyGILState_Ensure() };
            *k = Some(KeptThreadState);
        }
    });
}

/// The extra count [`keep_thread_state`] holds on this thread's Python thread state.
pub(crate) struct KeptThreadState;

impl Drop for KeptThreadState {
    /// At the thread's exit: gives the count back, which deletes the thread state, if
    /// the interpreter is still there to take it (past the exit gate, the thread state
    /// is left to the interpreter's own finalisation, which deletes every one).
    fn drop(&mut self) {
        let Some(_pass) = finalize::enter() else {
            return;
        };
        // SAFETY: the interpreter is not finalising (the gate is open, and stays open
        // while we are inside it). Ensure takes the GIL with this thread's kept state
        // (its count becomes 2); the first Release (LOCKED: we held nothing before
        // this state was made ours) drops our kept count and keeps the GIL; the second
        // brings the count to zero, which clears and deletes the thread state and
        // releases the GIL. Raw calls: pyo3's own thread-locals may already be gone
        // while thread-locals are destroyed.
        unsafe {
            let state = pyo3::ffi::PyGILState_Ensure();
            pyo3::ffi::PyGILState_Release(pyo3::ffi::PyGILState_STATE::PyGILState_LOCKED);
            pyo3::ffi::PyGILState_Release(state);
        }
    }
}

/// After `os.fork()`, in the child: the parent's scheduler threads do not exist here.
pub(crate) fn forget_threads(_py: Python<'_>) {
    THREADS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The scheduler threads inside a batch right now.
pub(crate) fn busy_threads(_py: Python<'_>) -> Vec<Arc<SchedThread>> {
    THREADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|t| t.busy.load(Ordering::Acquire))
        .collect()
}

/// Holds the GIL across a batch of Python slices on a scheduler thread: the whole
/// batch runs inside one `Python::with_gil`, so pyo3's GIL count stays above zero and
/// each slice's [`with_batch_gil`] is free (no `PyGILState_Ensure`, no reference-pool
/// update per slice).
pub(crate) struct GilHook;

impl SliceHook for GilHook {
    fn batch(&self, run: &mut dyn FnMut()) {
        // Taking the GIL passes the interpreter's gate: once the interpreter is
        // exiting (the VM has been stopped) a scheduler thread runs no more Python.
        let Some(pass) = finalize::enter() else {
            return;
        };
        struct Reset(bool, Arc<SchedThread>);
        impl Drop for Reset {
            fn drop(&mut self) {
                IN_BATCH.with(|c| c.set(self.0));
                self.1.busy.store(false, Ordering::Release);
            }
        }
        Python::with_gil(|py| {
            // Holding the GIL: finalisation cannot begin until this batch lets go of
            // it, and from there on the guarded calls into process code handle it.
            drop(pass);
            keep_thread_state(py);
            // The thread state is fixed until the GIL count drops to zero again.
            super::budget::forget_tl_if_new_thread_state(py);
            let me = me(py);
            me.busy.store(true, Ordering::Release);
            let _reset = Reset(IN_BATCH.with(|c| c.replace(true)), me);
            crate::threadtrace::apply(py); // debuggers and coverage see process code
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
        Python::with_gil(|py| {
            // This hold may run under a new thread state (see the batch's).
            super::budget::forget_tl_if_new_thread_state(py);
            f(py)
        })
    }
}
