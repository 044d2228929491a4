//! The VM's life cycle from Python: `start`, `stop`, `is_running`, `run`, and the one
//! accessor ([`vm`]) every other function uses to reach the running VM.
//!
//! Invariants:
//! * One VM per interpreter. [`STATE`] says whether it is stopped, starting or
//!   running; [`HANDLE`] is the cheap handle the API functions clone.
//! * Lock order: the GIL may be held while [`STATE`] is locked, never the other way
//!   round, and [`STATE`] is never held across `allow_threads` (a thread holding the
//!   GIL that calls `start`/`stop` would otherwise wait for the lock while its holder
//!   waits for the GIL). Starting marks the state `Starting`, releases the lock,
//!   starts the VM with the GIL released, then stores it; a concurrent start sees
//!   `Starting` and fails at once.
//! * Every start gets a new generation number: `run` waits for *its* VM's main process
//!   and notices when that VM is stopped by someone else (`beamvm.stop()` from a
//!   thread), instead of waiting forever.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use vm_core::{Fragment, Vm, VmConfig, VmRef};

use crate::api::make_body;
use crate::args::parse_seconds;
use crate::convert::frag_to_py;
use crate::driver::{busy_threads, in_process, GilHook};
use crate::errors::{not_running, vm_err, ProcessExit};
use crate::runtime;

/// Whether the VM runs.
enum State {
    Stopped,
    /// A thread is starting it (the lock is not held meanwhile).
    Starting,
    Running(Vm),
}

static STATE: Mutex<State> = Mutex::new(State::Stopped);
static HANDLE: RwLock<Option<VmRef>> = RwLock::new(None);
/// Incremented at every successful start; read by `run` to recognise its own VM.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The creation of the VM started last (0 before any): pids carry it, so that a pid
/// kept from a VM that has stopped never reaches a process of the next one. It stays
/// after a stop, so that pids read back from the VM that just stopped (its main's exit
/// reason) still show as local pids.
static CREATION: AtomicU32 = AtomicU32::new(0);
/// The index of this node's name atom: `nonode@nohost` until distribution starts
/// (dist.rs), which sets it before any process runs; local pids show it as their node.
static LOCAL_NODE: AtomicU32 = AtomicU32::new(vm_core::Atom::NONODE.index());

/// This node's name (`nonode@nohost` when not distributed).
pub(crate) fn local_node() -> vm_core::Atom {
    vm_core::Atom::from_index(LOCAL_NODE.load(Ordering::Acquire)).unwrap_or(vm_core::Atom::NONODE)
}

/// Sets this node's name (dist.rs, at start and stop of distribution).
pub(crate) fn set_local_node(a: vm_core::Atom) {
    LOCAL_NODE.store(a.index(), Ordering::Release);
}

/// Set in the child of an `os.fork()` made while a VM ran: the parent's VM does not
/// exist here (its threads were not copied), which errors say. Cleared by a start.
static FORKED_AWAY: AtomicBool = AtomicBool::new(false);
/// Set in the child of an `os.fork()` made by process code: this thread goes on
/// running that process's code, as a plain program (see `driver`).
static FORKED_IN_PROCESS: AtomicBool = AtomicBool::new(false);

/// How long stopping lets every scheduler end its slice by itself: a slice ends within
/// its budget (milliseconds), so this is only reached by code that cannot be preempted.
const STOP_GRACE: Duration = Duration::from_millis(100);
/// How long stopping then keeps interrupting the processes that still run (raising
/// `ProcessKilled` in their thread) before it gives up on them and reports them.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// Interval between two interruptions of a process that has not stopped.
const STOP_POLL: Duration = Duration::from_millis(20);

/// The running VM's handle, or the "not running" error.
pub(crate) fn vm() -> PyResult<VmRef> {
    current().ok_or_else(not_running)
}

/// The running VM's handle, if any.
pub(crate) fn current() -> Option<VmRef> {
    HANDLE.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn lock_state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

// --------------------------------------------------------------------------- main slot

/// How `beamvm.run`'s main process ended.
pub(crate) enum Outcome {
    Returned(PyObject),
    Raised(PyObject),
    Exited(Fragment),
}

/// Where the main process leaves its outcome for `beamvm.run`.
#[derive(Default)]
pub(crate) struct MainSlot {
    pub(crate) outcome: Mutex<Option<Outcome>>,
    pub(crate) cv: Condvar,
}

impl MainSlot {
    /// Records the outcome (the first one wins) and wakes `run`.
    pub(crate) fn set(&self, o: Outcome) {
        let mut g = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(o);
        }
        self.cv.notify_all();
    }
}

// --------------------------------------------------------------------------- start/stop

fn config_from(cfg: Option<&Bound<'_, PyDict>>) -> PyResult<VmConfig> {
    let mut c = VmConfig::from_env().map_err(vm_err)?;
    let mut online_set = false;
    let mut dirty_cpu_set = false;
    if let Some(d) = cfg {
        for (k, v) in d.iter() {
            let key: String = k.extract()?;
            let n = || -> PyResult<usize> {
                v.extract::<usize>().map_err(|_| {
                    PyTypeError::new_err(format!("{key} must be a positive int, got {v}"))
                })
            };
            match key.as_str() {
                "schedulers" => c.schedulers = n()?,
                "schedulers_online" => {
                    c.schedulers_online = n()?;
                    online_set = true;
                }
                "process_limit" => c.process_limit = n()?,
                "reductions" => {
                    c.reductions = u32::try_from(n()?)
                        .map_err(|_| PyValueError::new_err("reductions is too large"))?
                }
                "dirty_cpu" | "dirty_cpu_schedulers" => {
                    c.dirty_cpu = n()?;
                    dirty_cpu_set = true;
                }
                "dirty_io" | "dirty_io_schedulers" => c.dirty_io = n()?,
                "batch_time" => {
                    c.batch_time =
                        parse_seconds(&v, "batch_time")?.unwrap_or(Duration::from_secs(1))
                }
                "release_idle_memory" => {
                    c.idle_release = v.extract::<bool>().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "release_idle_memory must be True or False, got {v}"
                        ))
                    })?
                }
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "unknown beamvm setting {other:?} (known: schedulers, \
                         schedulers_online, process_limit, reductions, dirty_cpu, dirty_io, \
                         batch_time, release_idle_memory)"
                    )))
                }
            }
        }
        if d.contains("schedulers")? {
            if !online_set {
                c.schedulers_online = c.schedulers;
            }
            if !dirty_cpu_set {
                c.dirty_cpu = c.schedulers;
            }
        }
    }
    c.slice_hook = Some(Arc::new(GilHook));
    Ok(c)
}

fn start_vm(py: Python<'_>, cfg: Option<&Bound<'_, PyDict>>) -> PyResult<u64> {
    runtime::ready(py)?;
    if in_process() {
        return Err(PyRuntimeError::new_err(
            "beamvm cannot be started from inside a beamvm process",
        ));
    }
    let c = config_from(cfg)?;
    {
        let mut g = lock_state();
        match *g {
            State::Stopped => *g = State::Starting,
            State::Starting | State::Running(_) => {
                return Err(PyRuntimeError::new_err(
                    "beamvm is already running (one VM per interpreter; call beamvm.stop() \
                     first)",
                ))
            }
        }
    }
    match py.allow_threads(|| Vm::start(c)) {
        Ok(v) => {
            // Active socket messages read ("tcp", s, data) in Python (beamvm.tcp).
            v.set_io_tag_style(vm_core::io::TagStyle::Strings);
            let gen = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
            CREATION.store(v.creation(), Ordering::Release);
            *HANDLE.write().unwrap_or_else(|e| e.into_inner()) = Some(v.handle());
            *lock_state() = State::Running(v);
            FORKED_AWAY.store(false, Ordering::Release);
            Ok(gen)
        }
        Err(e) => {
            *lock_state() = State::Stopped;
            Err(vm_err(e))
        }
    }
}

fn stop_vm(py: Python<'_>) -> PyResult<bool> {
    if in_process() {
        return Err(PyRuntimeError::new_err(
            "beamvm cannot be stopped from inside a beamvm process (return from main instead)",
        ));
    }
    // Distribution first: no connection delivers into a VM that is going away.
    crate::dist::_dist_stop(py);
    let v = {
        let mut g = lock_state();
        match std::mem::replace(&mut *g, State::Stopped) {
            State::Running(v) => Some(v),
            State::Starting => {
                // Another thread is starting it: leave that to finish.
                *g = State::Starting;
                None
            }
            State::Stopped => None,
        }
    };
    let Some(mut v) = v else {
        return Ok(false);
    };
    *HANDLE.write().unwrap_or_else(|e| e.into_inner()) = None;
    let stuck = py.allow_threads(move || {
        let stuck = v.shutdown_within(Some(STOP_GRACE));
        if stuck > 0 {
            // Dropping would wait again; the stuck threads keep what they use.
            std::mem::forget(v);
        }
        stuck
    });
    if stuck > 0 {
        interrupt_stuck(py);
    }
    Ok(true)
}

/// Ends the slices that did not end when the VM stopped: code that cannot be preempted
/// (a loop in a function without source, a loop of C calls in code run by C). Raises
/// `ProcessKilled` in each scheduler thread still running Python, again every
/// [`STOP_POLL`] for code that catches it, for up to [`STOP_WAIT`]; the exception
/// unwinds the process's code (`finally` blocks run), its slice ends and the thread
/// exits. A thread still inside one long C call after that is reported (with the
/// Python function that made the call) and left running; the interpreter's exit does
/// not wait for it (see `finalize.rs`).
fn interrupt_stuck(py: Python<'_>) {
    let killed = py
        .import("beamvm._runtime")
        .and_then(|m| m.getattr("ProcessKilled"))
        .ok();
    let deadline = Instant::now() + STOP_WAIT;
    let mut busy = busy_threads(py);
    while !busy.is_empty() && Instant::now() < deadline {
        if let Some(k) = &killed {
            for t in &busy {
                // SAFETY: we hold the GIL (required); `k` is a live exception class,
                // which CPython instantiates in the target thread. An id that no
                // longer has a thread state (its batch just ended) is ignored.
                unsafe {
                    // pyo3-ffi declares the id as a C long; CPython 3.7+ takes an unsigned long
                    // with the same bits.
                    pyo3::ffi::PyThreadState_SetAsyncExc(t.ident as _, k.as_ptr());
                }
            }
        }
        py.allow_threads(|| std::thread::sleep(STOP_POLL));
        busy = busy_threads(py);
    }
    if busy.is_empty() {
        return;
    }
    let frames = py
        .import("sys")
        .and_then(|s| s.call_method0("_current_frames"))
        .ok();
    let mut wheres = Vec::new();
    for t in &busy {
        let at = frames
            .as_ref()
            .and_then(|f| f.get_item(t.ident).ok())
            .and_then(|f| describe_frame(&f).ok());
        wheres.push(at.unwrap_or_else(|| "in code with no Python frame".into()));
    }
    let msg = format!(
        "beamvm: {} scheduler thread(s) did not stop within {:.1} s: a process is \
         running code that cannot be preempted or interrupted ({}): a single long C \
         call, or code that catches ProcessKilled. It was left running; the \
         interpreter's exit does not wait for it. Move long calls to \
         beamvm.dirty_cpu/dirty_io.",
        busy.len(),
        (STOP_GRACE + STOP_WAIT).as_secs_f64(),
        wheres.join("; ")
    );
    let c = std::ffi::CString::new(msg.clone()).unwrap_or_default();
    let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
    if PyErr::warn(py, &category, &c, 1).is_err() {
        // Warnings cannot be raised right now (e.g. while a Ctrl-C is being
        // handled, a second KeyboardInterrupt comes back): say it plainly.
        eprintln!("{msg}");
    }
}

/// `"in f() at file.py:12"` for a frame object.
fn describe_frame(f: &Bound<'_, PyAny>) -> PyResult<String> {
    let code = f.getattr("f_code")?;
    let name: String = code.getattr("co_qualname")?.extract()?;
    let file: String = code.getattr("co_filename")?.extract()?;
    let line: Option<i64> = f.getattr("f_lineno")?.extract()?;
    Ok(format!(
        "in {name}() at {file}:{}",
        line.map_or_else(|| "?".into(), |l| l.to_string())
    ))
}

/// The creation of the current (or last stopped) VM; see [`CREATION`].
pub(crate) fn creation() -> u32 {
    CREATION.load(Ordering::Acquire)
}

/// Whether this is the child of an `os.fork()` made while a VM ran (and no VM was
/// started since).
pub(crate) fn forked_away() -> bool {
    FORKED_AWAY.load(Ordering::Acquire)
}

/// Whether this is the child of an `os.fork()` made by process code.
pub(crate) fn forked_in_process() -> bool {
    FORKED_IN_PROCESS.load(Ordering::Relaxed)
}

/// `os.register_at_fork(after_in_child=...)`: the VM does not survive a fork (only the
/// forking thread exists in the child; the VM's threads do not). Forgets the parent's
/// VM without touching it (dropping it would wait for threads that are not there, and
/// drop the parent's processes, running their cleanup code here), so that every API
/// call says the VM is gone and how to start one. Our locks are taken only with the
/// GIL held, which the forking thread holds, so none is copied locked.
#[pyfunction]
pub(crate) fn _after_fork(py: Python<'_>) {
    let had = match std::mem::replace(&mut *lock_state(), State::Stopped) {
        State::Running(v) => {
            std::mem::forget(v);
            true
        }
        State::Starting => true,
        State::Stopped => false,
    };
    if let Some(h) = HANDLE.write().unwrap_or_else(|e| e.into_inner()).take() {
        std::mem::forget(h);
    }
    if had {
        FORKED_AWAY.store(true, Ordering::Release);
    }
    if in_process() {
        FORKED_IN_PROCESS.store(true, Ordering::Relaxed);
    }
    crate::driver::forget_threads(py);
    crate::finalize::after_fork();
    crate::timeslice::after_fork();
}

/// Starts the VM for embedding (settings as keyword arguments; see `beamvm.run`).
#[pyfunction]
#[pyo3(signature = (**config))]
pub(crate) fn start(py: Python<'_>, config: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    start_vm(py, config).map(|_| ())
}

/// Stops the VM: every process is dropped; returns False if it was not running.
#[pyfunction]
pub(crate) fn stop(py: Python<'_>) -> PyResult<bool> {
    stop_vm(py)
}

/// Whether the VM is running.
#[pyfunction]
pub(crate) fn is_running() -> bool {
    current().is_some()
}

/// Starts the VM, runs `main(*args)` as a process, stops the VM, returns main's result.
#[pyfunction]
#[pyo3(signature = (main, args, config=None))]
pub(crate) fn run(
    py: Python<'_>,
    main: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    config: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyObject> {
    let gen = start_vm(py, config)?;
    let slot = Arc::new(MainSlot::default());
    let body = match make_body(py, main, args, None, Some(slot.clone()), false) {
        Ok(b) => b,
        Err(e) => {
            stop_vm(py)?;
            return Err(e);
        }
    };
    if let Err(e) = vm().and_then(|v| v.spawn(body).map_err(vm_err)) {
        stop_vm(py)?;
        return Err(e);
    }
    loop {
        let done = py.allow_threads(|| {
            let g = slot.outcome.lock().unwrap_or_else(|e| e.into_inner());
            let (g, _) = slot
                .cv
                .wait_timeout_while(g, Duration::from_millis(50), |o| o.is_none())
                .unwrap_or_else(|e| e.into_inner());
            g.is_some()
        });
        if done {
            break;
        }
        if current().is_none() || GENERATION.load(Ordering::Acquire) != gen {
            // Stopped by someone else (beamvm.stop() from another thread).
            return Err(PyRuntimeError::new_err(
                "beamvm was stopped (beamvm.stop() from another thread) before the main \
                 process of beamvm.run returned",
            ));
        }
        if let Err(e) = py.check_signals() {
            stop_vm(py)?;
            return Err(e);
        }
    }
    stop_vm(py)?;
    let outcome = slot
        .outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match outcome {
        Some(Outcome::Returned(v)) => Ok(v),
        Some(Outcome::Raised(e)) => Err(PyErr::from_value(e.into_bound(py))),
        Some(Outcome::Exited(reason)) => {
            let r = frag_to_py(py, &reason)?;
            Err(ProcessExit::new_err((r,)))
        }
        None => Err(PyRuntimeError::new_err("the main process vanished")),
    }
}
