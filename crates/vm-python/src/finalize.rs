//! The interpreter's exit: VM threads never touch a finalising interpreter.
//!
//! The VM's threads (schedulers running Python slices, dirty pool threads running
//! `dirty_cpu`/`dirty_io` calls) are not Python threads: nothing in CPython waits for
//! them at exit. Two things can go wrong when the interpreter finalises under them:
//!
//! 1. A thread that *starts* using Python after finalisation began (takes the GIL,
//!    drops a reference) touches freed interpreter state. The [`Gate`] prevents it:
//!    every such entry passes the gate, `beamvm`'s `atexit` hook closes it
//!    ([`_quiesce`]) after stopping the VM, and waits (bounded) for the threads inside
//!    to leave. The gate is a Dekker handshake: an entering thread increments `inside`
//!    and then reads `closed`; the closer stores `closed` and then reads `inside`. Both
//!    sides put a SeqCst fence between their write and their read (as the scheduler's
//!    park does), so at least one of them sees the other's write: either the thread
//!    sees the gate closed and stays out, or the closer counts it and waits. (With
//!    release/acquire alone both reads could miss the other's write, the
//!    store-buffering pattern; the loom model below checks the protocol.)
//! 2. A thread that is *already* in Python when finalisation begins — a process stuck
//!    in one long C call that released the GIL (`time.sleep(30)`, a blocking read), or
//!    code that swallows the kill at stop — eventually asks for the GIL again. CPython
//!    3.11-3.13 then end the thread with `pthread_exit` (`take_gil`:
//!    "PyThread_exit_thread" once `_PyThreadState_MustExit`), a forced unwind. Passing
//!    through Rust frames, that unwind reaches a `catch_unwind` (the scheduler's
//!    perimeter, pyo3's trampolines) or an `extern "C"` call site and the process
//!    aborts (SIGABRT, "FATAL: exception not rethrown"). The calls through which VM
//!    threads run Python code ([`iter_send`], [`call`]) are therefore made through
//!    `extern "C-unwind"` declarations with a guard in the calling frame: when the
//!    forced unwind arrives there, the guard's destructor (run as the frame's cleanup)
//!    parks the thread for good instead of letting the unwind go on. Nothing that
//!    thread holds is needed any more (the VM has been stopped and detached it), and
//!    the process's exit ends it. CPython 3.14 parks such threads itself
//!    (`PyThread_hang_thread`).

use std::os::raw::c_int;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

/// The gate VM threads pass before using Python (see the module docs).
pub(crate) struct Gate {
    closed: AtomicBool,
    inside: AtomicUsize,
}

/// A thread's passage through the [`Gate`]: it may use Python until this is dropped.
pub(crate) struct Pass<'g>(&'g Gate);

impl Gate {
    /// An open gate with nobody inside.
    pub(crate) fn new() -> Gate {
        Gate {
            closed: AtomicBool::new(false),
            inside: AtomicUsize::new(0),
        }
    }

    /// Enters, unless the gate is closed. Increment first, then check (Dekker).
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        self.inside.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.inside.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Pass(self))
    }

    /// Closes the gate: no thread enters after this returns, and every thread that
    /// entered before is counted by [`Gate::inside`] from here on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Threads inside right now.
    pub(crate) fn inside(&self) -> usize {
        self.inside.load(Ordering::SeqCst)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The interpreter's gate. A `OnceLock` rather than a const static so that the loom
/// build (whose atomics are not const) compiles the same code.
static GATE: OnceLock<Gate> = OnceLock::new();

fn gate() -> &'static Gate {
    GATE.get_or_init(Gate::new)
}

/// Passes the interpreter's gate: `None` once the interpreter is exiting (the caller
/// must then leave Python alone: leak what it would drop, skip what it would call).
pub(crate) fn enter() -> Option<Pass<'static>> {
    gate().enter()
}

/// After `os.fork()`, in the child: the threads counted inside the gate were the
/// parent's, and do not exist here.
pub(crate) fn after_fork() {
    gate().inside.store(0, Ordering::SeqCst);
}

/// How often [`_quiesce`] looks whether the threads inside have left.
const QUIESCE_POLL: Duration = Duration::from_millis(2);

/// Called by `beamvm`'s `atexit` hook after the VM stopped: closes the gate (no VM
/// thread starts using Python any more) and waits up to `timeout` seconds, with the GIL
/// released, for the threads inside (dirty calls still running) to leave. Returns how
/// many are still inside; those are abandoned (see the module docs, point 2).
#[pyfunction]
pub(crate) fn _quiesce(py: Python<'_>, timeout: f64) -> usize {
    let gate = gate();
    gate.close();
    let timeout = if timeout.is_finite() {
        timeout.max(0.0)
    } else {
        0.0
    };
    let until = Instant::now() + Duration::from_secs_f64(timeout.min(1e6));
    py.allow_threads(|| {
        while gate.inside() > 0 && Instant::now() < until {
            std::thread::sleep(QUIESCE_POLL);
        }
    });
    gate.inside()
}

// --------------------------------------------------------------------------- guarded calls

extern "C-unwind" {
    // Declared here with the unwind ABI (pyo3-ffi declares them "C"): at finalisation
    // CPython may end the calling thread inside them with a forced unwind (module docs).
    #[link_name = "PyIter_Send"]
    fn py_iter_send_unwind(
        iter: *mut ffi::PyObject,
        arg: *mut ffi::PyObject,
        presult: *mut *mut ffi::PyObject,
    ) -> c_int;
    #[link_name = "PyObject_Call"]
    fn py_object_call_unwind(
        callable: *mut ffi::PyObject,
        args: *mut ffi::PyObject,
        kwargs: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
}

/// Parks the thread for good when dropped: armed around a call into Python, disarmed
/// (forgotten) when the call returns. It is dropped only if the call unwinds, which
/// CPython does only to end a thread at finalisation (`pthread_exit`'s forced unwind).
struct ParkOnUnwind;

impl Drop for ParkOnUnwind {
    fn drop(&mut self) {
        // The interpreter is finalising and ends this thread. Stop here, before the
        // unwind reaches a frame that would abort the process; the process's exit
        // ends the thread.
        loop {
            std::thread::park();
        }
    }
}

/// `PyIter_Send(iter, arg, &out)`: resumes a generator (process code) from a VM thread,
/// parking the thread if the interpreter ends it meanwhile (module docs).
///
/// # Safety
/// The GIL is held; `iter` and `arg` are live objects; `out` is writable.
pub(crate) unsafe fn iter_send(
    iter: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    out: *mut *mut ffi::PyObject,
) -> c_int {
    let guard = ParkOnUnwind;
    // SAFETY: the caller's contract is PyIter_Send's; the declaration matches CPython's
    // (`int PyIter_Send(PyObject *, PyObject *, PyObject **)`, 3.10+).
    let rc = unsafe { py_iter_send_unwind(iter, arg, out) };
    std::mem::forget(guard);
    rc
}

/// `callable(*args, **kwargs)` from a VM thread, parking the thread if the interpreter
/// ends it meanwhile (module docs).
pub(crate) fn call<'py>(
    callable: &Bound<'py, PyAny>,
    args: &Bound<'py, pyo3::types::PyTuple>,
    kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let kw = kwargs.map_or(std::ptr::null_mut(), |k| k.as_ptr());
    let guard = ParkOnUnwind;
    // SAFETY: we hold the GIL (the `Bound`s prove it); the callable and the argument
    // tuple are live; `kwargs` is a dict or NULL, as PyObject_Call requires.
    let r = unsafe { py_object_call_unwind(callable.as_ptr(), args.as_ptr(), kw) };
    std::mem::forget(guard);
    if r.is_null() {
        Err(PyErr::fetch(py))
    } else {
        // SAFETY: PyObject_Call returned a new reference.
        Ok(unsafe { Bound::from_owned_ptr(py, r) })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_lets_nobody_in_and_counts_who_is_inside() {
        let g = Gate::new();
        let a = g.enter().expect("open gate");
        let b = g.enter().expect("open gate");
        assert_eq!(g.inside(), 2);
        g.close();
        assert!(g.enter().is_none());
        assert_eq!(g.inside(), 2, "a refused entry leaves no count behind");
        drop(a);
        drop(b);
        assert_eq!(g.inside(), 0);
    }

    #[test]
    fn gate_stress_nobody_is_inside_once_the_closer_saw_zero() {
        // Threads enter and leave in a loop while the gate closes. Once the closer saw
        // the count at zero after closing, it "finalises"; a thread holding a pass must
        // never see that.
        use std::sync::Arc;
        for _ in 0..50 {
            let g = Arc::new(Gate::new());
            let finalised = Arc::new(AtomicBool::new(false));
            let ts: Vec<_> = (0..3)
                .map(|_| {
                    let (g, f) = (g.clone(), finalised.clone());
                    std::thread::spawn(move || {
                        for _ in 0..2_000 {
                            if let Some(p) = g.enter() {
                                assert!(!f.load(Ordering::SeqCst), "inside after finalising");
                                drop(p);
                            }
                        }
                    })
                })
                .collect();
            std::thread::yield_now();
            g.close();
            while g.inside() > 0 {
                std::thread::yield_now();
            }
            finalised.store(true, Ordering::SeqCst);
            for t in ts {
                t.join().expect("no thread saw a finalised interpreter");
            }
            assert!(g.enter().is_none());
        }
    }
}

/// Model check of the gate's handshake under loom (`RUSTFLAGS="--cfg loom" cargo test
/// -p vm-python --lib loom`): in every interleaving, a thread that got through the gate
/// is seen by a closer that then decides whether the interpreter may finalise.
#[cfg(loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_closer_sees_every_thread_that_entered() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let finalised = Arc::new(AtomicBool::new(false));
            let (g2, f2) = (gate.clone(), finalised.clone());
            let t = loom::thread::spawn(move || {
                if let Some(pass) = g2.enter() {
                    // Using Python here: the interpreter must not be finalised.
                    assert!(
                        !f2.load(Ordering::SeqCst),
                        "entered a finalised interpreter"
                    );
                    drop(pass);
                }
            });
            gate.close();
            if gate.inside() == 0 {
                finalised.store(true, Ordering::SeqCst);
            }
            t.join().expect("thread");
        });
    }
}
