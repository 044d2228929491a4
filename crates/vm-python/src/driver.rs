//! The Python process driver: a [`Body`] that runs a compiled process generator.
//!
//! Protocol (docs/preemption.md): each slice, `_runtime.enter(cell, budget)` then
//! `gen.send(value)` (or `gen.throw(exc)`), then `_runtime.used(cell)` is charged to
//! the slice. What the generator yields decides the step: `PREEMPT` -> `Yield`; a
//! `Request` -> performed here (a receive tries the mailbox at once and, if nothing
//! matches, the request is kept and the process suspends with `Wait`, so no scheduler
//! thread ever blocks); returning -> exit `normal`; raising -> exit with the exception
//! as reason (plus an error report when no process is linked to see it).
//!
//! While the generator runs, a pointer to the slice's [`Cx`] sits in a thread-local
//! (see [`with_cx`]), so the `_native` functions Python calls (send, spawn, link, ...)
//! act on the current process. It is cleared before `resume` returns.
//!
//! GIL: the class is [`BodyClass::Hooked`]; the VM's [`GilHook`] runs a batch of Python
//! slices on a scheduler thread inside one `Python::with_gil`, and `resume` uses that
//! batch's GIL (see [`with_batch_gil`]). Nothing here relies on the GIL for the VM's
//! own safety.

use std::cell::{Cell, RefCell};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pyo3::exceptions::{
    PyBaseException, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::{ffi, intern, PyTypeInfo};
use vm_core::{Atom, Body, BodyClass, Cx, Fragment, Key, SliceHook, Step, Term};

use crate::convert::{frag_to_py, to_fragment};
use crate::pattern::{self, Pattern};
use crate::runtime::{rt, Timeout};

extern "C" {
    // Not declared by pyo3-ffi 0.23 (stable ABI since 3.9).
    #[link_name = "PyThreadState_GetID"]
    fn py_thread_state_get_id(tstate: *mut ffi::PyThreadState) -> u64;
    // pyo3-ffi 0.23 declares it without its return value.
    #[link_name = "PyIter_Send"]
    fn py_iter_send(
        iter: *mut ffi::PyObject,
        arg: *mut ffi::PyObject,
        presult: *mut *mut ffi::PyObject,
    ) -> c_int;
}

// --------------------------------------------------------------------------- GIL hook

thread_local! {
    /// True while this thread runs a batch inside [`GilHook::batch`]'s `with_gil`.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
    static CURRENT: Cell<*mut ()> = const { Cell::new(std::ptr::null_mut()) };
    /// The budget cell this thread last made `_runtime._TL.b` (see [`enter_cell`]).
    static TL_CELL: Cell<*mut ffi::PyObject> = const { Cell::new(std::ptr::null_mut()) };
    /// The id of the Python thread state `TL_CELL` and `TL_DICT` belong to (see
    /// [`forget_tl_if_new_thread_state`]).
    static TL_TSTATE: Cell<u64> = const { Cell::new(0) };
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
fn with_batch_gil<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
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

// --------------------------------------------------------------------------- current cx

struct CurrentGuard(*mut ());

impl CurrentGuard {
    fn set(cx: *mut Cx<'_>) -> CurrentGuard {
        let prev = CURRENT.with(|c| c.replace(cx as *mut ()));
        CurrentGuard(prev)
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Runs `f` with the current process's context, or returns None outside a process.
pub fn with_cx<R>(f: impl FnOnce(&mut Cx<'_>) -> R) -> Option<R> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: the pointer is set by `resume`/`terminate` for the duration of a call
    // into Python on this thread and cleared before they return; the driver does not
    // touch the context while Python runs, and `f` must not call back into Python code
    // that re-enters `with_cx`.
    let cx = unsafe { &mut *(p as *mut Cx<'static>) };
    Some(f(cx))
}

/// True when called from a running process on this thread.
pub fn in_process() -> bool {
    CURRENT.with(|c| !c.get().is_null())
}

// --------------------------------------------------------------------------- budget cell

/// `_runtime.enter(cell, n)` done natively: grant `n` (>= 1) reductions to the
/// process's budget cell (`[remaining, kill_state, slice_start]`) and make it this
/// thread's current cell (`_runtime._TL.b`), which compiled code reads at entry.
///
/// `_TL.b` is only assigned when this thread last assigned a different cell: on a
/// scheduler thread nothing but this driver assigns `_TL.b` (`_runtime.kill` restores
/// what it found), and `_TL.b` holds a strong reference to the cell we assigned, so
/// the remembered pointer cannot be freed and reused while it is current.
fn enter_cell(py: Python<'_>, cell: &Bound<'_, PyAny>, n: i64) -> PyResult<()> {
    let list = cell.downcast_exact::<PyList>()?;
    let n = budget_int(py, n.max(1))?;
    list.set_item(0, &n)?;
    list.set_item(2, &n)?;
    forget_tl_if_new_thread_state(py);
    let p = cell.as_ptr();
    if TL_CELL.with(|c| c.get()) != p {
        tl_dict(py)?.set_item(intern!(py, "b"), cell)?;
        TL_CELL.with(|c| c.set(p));
    }
    Ok(())
}

/// Drops the cached `_TL` dict and current cell when this thread runs under a new Python
/// thread state. pyo3 deletes a thread state it created once the thread's GIL count drops
/// to zero -- a batch ends whenever the scheduler parks -- and `threading.local` keeps its
/// per-thread dict in the thread state: under the next one `_TL.__dict__` is a new dict
/// (holding a default cell), so writing the process's cell into the cached old dict would
/// leave compiled code counting into a cell no driver grants, yielding at every check.
fn forget_tl_if_new_thread_state(_py: Python<'_>) {
    // SAFETY: with the GIL held (`_py`) this thread has a current thread state, which
    // `PyThreadState_Get` returns and `PyThreadState_GetID` only reads.
    let id = unsafe { py_thread_state_get_id(ffi::PyThreadState_Get()) };
    if TL_TSTATE.with(|c| c.replace(id)) != id {
        TL_CELL.with(|c| c.set(std::ptr::null_mut()));
        TL_DICT.with(|c| *c.borrow_mut() = None);
    }
}

/// `_runtime.used(cell)` done natively: reductions consumed since [`enter_cell`].
fn used_cell(cell: &Bound<'_, PyAny>) -> i64 {
    let Ok(list) = cell.downcast_exact::<PyList>() else {
        return 1;
    };
    let get = |i: usize| {
        list.get_item(i)
            .and_then(|v| v.extract::<i64>())
            .unwrap_or(0)
    };
    get(2) - get(0).max(0)
}

thread_local! {
    /// The int object for the budget this thread granted last (normally the VM's
    /// reductions per slice): CPython caches only ints up to 256, so writing the cell
    /// would otherwise allocate an int per resume.
    static BUDGET_INT: RefCell<Option<(i64, Py<PyAny>)>> = const { RefCell::new(None) };
    /// `_runtime._TL`'s dict for this thread, with the `_TL` it belongs to.
    static TL_DICT: RefCell<Option<(*mut ffi::PyObject, Py<PyDict>)>> = const { RefCell::new(None) };
}

/// `n` as a Python int, reusing this thread's cached object when `n` is unchanged.
fn budget_int(py: Python<'_>, n: i64) -> PyResult<Bound<'_, PyAny>> {
    BUDGET_INT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((v, o)) = c.as_ref() {
            if *v == n {
                return Ok(o.bind(py).clone());
            }
        }
        let o = n.into_pyobject(py)?.into_any();
        *c = Some((n, o.clone().unbind()));
        Ok(o)
    })
}

/// This thread's `__dict__` of `_runtime._TL` (a `threading.local`): assigning `b` in
/// it is what `_TL.b = cell` does (`_ThreadCells` defines no descriptor `b`, so
/// `local_setattro` ends in a store into this dict) without the attribute machinery.
/// The per-thread dict lives as long as the thread; the cache is keyed by the `_TL`
/// object (kept alive by the runtime, so its address is not reused).
fn tl_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let tl = rt(py).tl.bind(py);
    TL_DICT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((k, d)) = c.as_ref() {
            if *k == tl.as_ptr() {
                return Ok(d.bind(py).clone());
            }
        }
        let d = tl
            .getattr(intern!(py, "__dict__"))?
            .downcast_into::<PyDict>()?;
        *c = Some((tl.as_ptr(), d.clone().unbind()));
        Ok(d)
    })
}

// --------------------------------------------------------------------------- receive op

/// Raises `StopIteration(v)` from a native iterator so that `yield from` evaluates to
/// `v`. A tuple or exception value must travel inside an instance (a bare one would be
/// read as the exception's arguments).
fn stop_with(py: Python<'_>, v: PyObject) -> PyErr {
    let b = v.bind(py);
    if b.is_instance_of::<PyTuple>() || b.is_instance_of::<PyBaseException>() {
        match PyStopIteration::type_object(py).call1((b,)) {
            Ok(inst) => PyErr::from_value(inst),
            Err(e) => e,
        }
    } else {
        PyStopIteration::new_err(v)
    }
}

/// One call of `beamvm.receive` in process code: `yield from _receive(pattern, timeout,
/// default)` runs it.
///
/// The pattern is compiled once, here. Inside a process the first `__next__` tries the
/// mailbox directly and, when a message matches, finishes at once (`StopIteration`
/// carrying the message): a receive that finds its message queued never goes back to
/// the driver. Otherwise it yields itself; the driver keeps it as the pending receive,
/// polls the mailbox with its compiled pattern, and resumes the generator after storing
/// the message in `result` (or throws `Timeout` into it). Outside a process (a test
/// driver) it yields the protocol's `Request("receive", (pattern, timeout, default))`
/// and finishes with whatever is sent back.
#[pyclass(module = "beamvm._native", name = "_ReceiveOp", freelist = 64)]
pub struct ReceiveOp {
    pat: Pattern,
    key: Option<Key>,
    timeout: Option<Duration>,
    /// The value returned on timeout (None: raise `Timeout`).
    default: Option<PyObject>,
    /// The Python arguments, kept for the `Request` a non-VM driver sees.
    args: Option<Py<PyTuple>>,
    /// 0: not started; 1: yielded, waiting for the driver; 2: finished.
    state: u8,
    result: Option<PyObject>,
    /// Set when `__next__` yielded the op (a `yield from` runs it): the driver then
    /// stores the message in `result` and resumes with None. Clear when compiled code
    /// yielded the op returned by [`_recv`] itself: the driver sends the message.
    via_iter: bool,
}

fn any_obj() -> PyObject {
    // SAFETY: only evaluated as a default argument inside the `_receive` wrapper, which
    // runs with the GIL held.
    let py = unsafe { Python::assume_gil_acquired() };
    rt(py).any.clone_ref(py)
}

fn missing_obj() -> PyObject {
    // SAFETY: as in `any_obj`.
    let py = unsafe { Python::assume_gil_acquired() };
    rt(py).missing.clone_ref(py)
}

static RECEIVE_OP_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// `type(obj) is _ReceiveOp`, by a cached type pointer (pyo3's lazy type lookup costs
/// more than the rest of the check, on every yield).
fn is_receive_op(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    let mut t = RECEIVE_OP_TYPE.load(Ordering::Relaxed);
    if t.is_null() {
        // The type object is created once and kept alive by pyo3 for the life of the
        // interpreter, so its address never changes or gets reused.
        t = ReceiveOp::type_object_raw(py);
        RECEIVE_OP_TYPE.store(t, Ordering::Relaxed);
    }
    // SAFETY: `obj` is a live object (we hold a reference), so reading its type is valid.
    unsafe { ffi::Py_TYPE(obj.as_ptr()) == t }
}

/// The implementation of `beamvm.receive` (see [`ReceiveOp`]).
#[pyfunction]
#[pyo3(signature = (pattern = any_obj(), timeout = None, default = missing_obj()))]
pub fn _receive(
    py: Python<'_>,
    pattern: PyObject,
    timeout: Option<&Bound<'_, PyAny>>,
    default: PyObject,
) -> PyResult<ReceiveOp> {
    let r = rt(py);
    let pat = pattern::compile(pattern.bind(py), r.any.bind(py))?;
    let key = pat.key();
    let t = match timeout {
        Some(t) => parse_timeout(t)?,
        None => None,
    };
    let in_proc = in_process();
    let args = if in_proc {
        None
    } else {
        let t: PyObject = timeout.map_or_else(|| py.None(), |t| t.clone().unbind());
        Some(PyTuple::new(py, [pattern, t, default.clone_ref(py)])?.unbind())
    };
    let default = if default.is(&r.missing) {
        None
    } else {
        Some(default)
    };
    Ok(ReceiveOp {
        pat,
        key,
        timeout: t,
        default,
        args,
        state: 0,
        result: None,
        via_iter: false,
    })
}

static ANY_WAIT: GILOnceCell<Py<ReceiveOp>> = GILOnceCell::new();

/// The op `_recv` returns for every `receive()` (any message, no timeout) that waits.
fn any_wait_op(py: Python<'_>) -> PyResult<&Py<ReceiveOp>> {
    ANY_WAIT.get_or_try_init(py, || {
        Py::new(
            py,
            ReceiveOp {
                pat: Pattern::Any,
                key: None,
                timeout: None,
                default: None,
                args: None,
                state: 1,
                result: None,
                via_iter: false,
            },
        )
    })
}

/// The fast path of `beamvm.receive` that compiled code calls plainly (see
/// `_compiler.set_fast_receive`). Inside a process it returns a matching queued message
/// at once; otherwise it returns a waiting `_ReceiveOp` that the compiled frame yields
/// itself (one yield, no `yield from` level): the driver keeps it as the pending
/// receive and resumes the frame with `send(message)` or `throw(Timeout)`. Outside a
/// process (a test driver) it returns `Request("receive", (pattern, timeout, default))`
/// for the frame to yield. Argument errors raise at the call, as before.
#[pyfunction]
#[pyo3(signature = (pattern = any_obj(), timeout = None, default = missing_obj()))]
pub fn _recv(
    py: Python<'_>,
    pattern: PyObject,
    timeout: Option<&Bound<'_, PyAny>>,
    default: PyObject,
) -> PyResult<PyObject> {
    let r = rt(py);
    if timeout.is_none() && pattern.is(&r.any) && default.is(&r.missing) {
        // `receive()`: the next message, no timeout -- no pattern to compile, and a
        // shared op (the driver never mutates an op that compiled code yielded).
        match with_cx(|cx| cx.recv()) {
            Some(Some(m)) => return frag_to_py(py, &m),
            Some(None) => return Ok(any_wait_op(py)?.clone_ref(py).into_any()),
            None => {}
        }
    }
    let mut op = _receive(py, pattern, timeout, default)?;
    if let Some(args) = op.args.take() {
        return rt(py).request.call1(py, ("receive", args));
    }
    if let Some(m) = with_cx(|cx| op.try_take(cx)).flatten() {
        return frag_to_py(py, &m);
    }
    op.state = 1;
    Ok(Py::new(py, op)?.into_any())
}

impl ReceiveOp {
    /// Takes the first matching message from the current process's mailbox.
    fn try_take(&self, cx: &mut Cx<'_>) -> Option<Fragment> {
        match (&self.pat, self.key) {
            (Pattern::Any, _) => cx.recv(),
            (p, Some(k)) => cx.recv_keyed(k, |v| p.matches(v)),
            (p, None) => cx.recv_where(|v| p.matches(v)),
        }
    }
}

#[pymethods]
impl ReceiveOp {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyObject> {
        let py = slf.py();
        match slf.state {
            0 => {
                if slf.args.is_none() {
                    let m = with_cx(|cx| slf.try_take(cx)).flatten();
                    if let Some(m) = m {
                        slf.state = 2;
                        return Err(stop_with(py, frag_to_py(py, &m)?));
                    }
                    slf.state = 1;
                    slf.via_iter = true;
                    return Ok(slf.into_pyobject(py)?.into_any().unbind());
                }
                slf.state = 1;
                let args = slf.args.as_ref().map(|a| a.clone_ref(py));
                Ok(rt(py).request.call1(py, ("receive", args))?)
            }
            1 => {
                slf.state = 2;
                let v = slf.result.take().unwrap_or_else(|| py.None());
                Err(stop_with(py, v))
            }
            _ => Err(PyStopIteration::new_err(())),
        }
    }

    /// Finishes the receive with `value` (what a driver sends back).
    fn send(mut slf: PyRefMut<'_, Self>, value: PyObject) -> PyErr {
        let py = slf.py();
        slf.state = 2;
        slf.result = None;
        stop_with(py, value)
    }
}

// --------------------------------------------------------------------------- main slot

/// How `beamvm.run`'s main process ended.
pub enum Outcome {
    Returned(PyObject),
    Raised(PyObject),
    Exited(Fragment),
}

/// Where the main process leaves its outcome for `beamvm.run`.
#[derive(Default)]
pub struct MainSlot {
    pub outcome: Mutex<Option<Outcome>>,
    pub cv: Condvar,
}

impl MainSlot {
    fn set(&self, o: Outcome) {
        let mut g = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(o);
        }
        self.cv.notify_all();
    }
}

// --------------------------------------------------------------------------- the body

enum Next {
    Send(PyObject),
    Throw(PyObject),
}

enum Pending {
    /// The op, and whether the generator yielded the op itself (then the message is
    /// stored in the op and the generator resumed with None) rather than a `Request`.
    Receive(Py<ReceiveOp>, bool),
    Sleep,
    /// A call running on a dirty pool; the outcome arrives as a signal.
    Dirty,
}

// --------------------------------------------------------------------------- dirty calls

/// What a dirty job hands back: the call's return value or the exception it raised
/// (with its traceback). Dropped with the GIL held, whichever thread drops it (a pool
/// thread when the process died meanwhile), so no reference waits for a later
/// acquisition.
struct DirtyOutcome(Option<Result<PyObject, PyObject>>);

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
fn dirty_job(f: PyObject, args: Py<PyTuple>, kwargs: Option<PyObject>) -> vm_core::DirtyJob {
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

/// A Python process (see the module docs).
pub struct PyProcess {
    gen: Option<Py<PyAny>>,
    cell: Option<Py<PyAny>>,
    next: Option<Next>,
    pending: Option<Pending>,
    sleep_for: Duration,
    label: String,
    main: Option<Arc<MainSlot>>,
}

impl PyProcess {
    pub fn new(
        gen: Py<PyAny>,
        cell: Py<PyAny>,
        label: String,
        main: Option<Arc<MainSlot>>,
    ) -> Self {
        PyProcess {
            gen: Some(gen),
            cell: Some(cell),
            next: None,
            pending: None,
            sleep_for: Duration::ZERO,
            label,
            main,
        }
    }

    fn poll(&mut self, py: Python<'_>, cx: &mut Cx<'_>) -> PyResult<Result<Next, Step>> {
        match self.pending.as_ref() {
            Some(Pending::Receive(op, direct)) => {
                let direct = *direct;
                let op = op.bind(py).clone();
                let m = op.borrow().try_take(cx);
                if let Some(m) = m {
                    self.pending = None;
                    return match frag_to_py(py, &m) {
                        Ok(v) if direct => {
                            op.borrow_mut().result = Some(v);
                            Ok(Ok(Next::Send(py.None())))
                        }
                        Ok(v) => Ok(Ok(Next::Send(v))),
                        Err(e) => Ok(Ok(Next::Throw(e.into_value(py).into_any()))),
                    };
                }
                let (timeout, default) = {
                    let o = op.borrow();
                    (o.timeout, o.default.as_ref().map(|d| d.clone_ref(py)))
                };
                if timeout.is_some() && cx.timed_out() {
                    let out = match default {
                        Some(d) if direct => {
                            op.borrow_mut().result = Some(d);
                            Next::Send(py.None())
                        }
                        Some(d) => Next::Send(d),
                        None => Next::Throw(
                            Timeout::new_err("receive timed out")
                                .into_value(py)
                                .into_any(),
                        ),
                    };
                    self.pending = None;
                    return Ok(Ok(out));
                }
                Ok(Err(cx.wait(timeout)))
            }
            Some(Pending::Dirty) => match cx.dirty_result() {
                None => Ok(Err(cx.wait(None))),
                Some(r) => {
                    self.pending = None;
                    let out = match r {
                        Ok(b) => match b.downcast::<DirtyOutcome>() {
                            Ok(mut o) => match o.0.take() {
                                Some(Ok(v)) => Next::Send(v),
                                Some(Err(e)) => Next::Throw(e),
                                None => Next::Send(py.None()),
                            },
                            Err(_) => Next::Throw(
                                PyRuntimeError::new_err("a dirty job returned a foreign value")
                                    .into_value(py)
                                    .into_any(),
                            ),
                        },
                        Err(panic) => Next::Throw(
                            PyRuntimeError::new_err(format!("dirty job panicked: {panic}"))
                                .into_value(py)
                                .into_any(),
                        ),
                    };
                    Ok(Ok(out))
                }
            },
            Some(Pending::Sleep) => {
                if cx.timed_out() {
                    self.pending = None;
                    return Ok(Ok(Next::Send(py.None())));
                }
                Ok(Err(cx.wait(Some(self.sleep_for))))
            }
            None => Ok(Ok(Next::Send(py.None()))),
        }
    }

    fn request(&mut self, py: Python<'_>, cx: &mut Cx<'_>, out: &Bound<'_, PyAny>) -> PyResult<()> {
        let kind = out.getattr(intern!(py, "kind"))?;
        let args = out.getattr(intern!(py, "args"))?;
        let args = args.downcast::<PyTuple>()?;
        let kind = kind.downcast::<PyString>()?.to_str()?;
        match kind {
            "receive" => {
                // A Request-style receive (from a primitive written in Python).
                let op = _receive(
                    py,
                    args.get_item(0)?.unbind(),
                    Some(&args.get_item(1)?),
                    args.get_item(2)?.unbind(),
                )?;
                self.pending = Some(Pending::Receive(Py::new(py, op)?, false));
            }
            "dirty" => {
                // ("cpu" | "io", fn, args, kwargs)
                let kind = match args.get_item(0)?.downcast::<PyString>()?.to_str()? {
                    "cpu" => vm_core::DirtyKind::Cpu,
                    "io" => vm_core::DirtyKind::Io,
                    k => return Err(PyValueError::new_err(format!("unknown dirty pool {k:?}"))),
                };
                let f = args.get_item(1)?.unbind();
                let fargs = args.get_item(2)?.downcast_into::<PyTuple>()?.unbind();
                let kw = args.get_item(3)?;
                let kw = if kw.is_none() {
                    None
                } else {
                    Some(kw.unbind())
                };
                cx.dirty(kind, dirty_job(f, fargs, kw))
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                self.pending = Some(Pending::Dirty);
            }
            "sleep" => {
                let t = parse_timeout(&args.get_item(0)?)?.unwrap_or(Duration::MAX);
                self.sleep_for = t;
                self.pending = Some(Pending::Sleep);
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown beamvm request kind {other:?}"
                )))
            }
        }
        Ok(())
    }

    fn run(&mut self, py: Python<'_>, cx: &mut Cx<'_>) -> Step {
        let r = rt(py);
        loop {
            if self.pending.is_some() {
                match self.poll(py, cx) {
                    Ok(Ok(n)) => self.next = Some(n),
                    Ok(Err(step)) => return step,
                    Err(e) => {
                        self.pending = None;
                        self.next = Some(Next::Throw(e.into_value(py).into_any()));
                    }
                }
            }
            if cx.should_yield() {
                return Step::Yield;
            }
            let Some(gen) = self.gen.as_ref() else {
                return Step::Exit(Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)));
            };
            let gen = gen.bind(py).clone();
            let Some(cell) = self.cell.as_ref() else {
                return Step::Exit(Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)));
            };
            let cell = cell.bind(py).clone();
            let budget = cx.budget_left().max(1);
            if let Err(e) = enter_cell(py, &cell, budget) {
                return self.crashed(py, cx, e);
            }
            let res = match self.next.take().unwrap_or_else(|| Next::Send(py.None())) {
                Next::Send(v) => send(py, &gen, v.bind(py)),
                Next::Throw(e) => gen
                    .call_method1(intern!(py, "throw"), (e,))
                    .map(Sent::Yielded),
            };
            cx.bump(used_cell(&cell).max(1));
            match res {
                Ok(Sent::Yielded(out)) => {
                    if out.is(r.preempt.bind(py)) {
                        return Step::Yield;
                    }
                    if is_receive_op(py, &out) {
                        // SAFETY: `is_receive_op` checked that the object's type is
                        // exactly `ReceiveOp`'s.
                        let op = unsafe { out.downcast_unchecked::<ReceiveOp>() };
                        let direct = op.borrow().via_iter;
                        self.pending = Some(Pending::Receive(op.clone().unbind(), direct));
                        continue;
                    }
                    if out.is_instance(r.request.bind(py)).unwrap_or(false) {
                        if let Err(e) = self.request(py, cx, &out) {
                            self.next = Some(Next::Throw(e.into_value(py).into_any()));
                        }
                        continue;
                    }
                    let e = PyTypeError::new_err(format!(
                        "a beamvm process yielded {}; process code must not yield \
                         (generator functions cannot be processes' own code)",
                        out.repr().map(|s| s.to_string()).unwrap_or_default()
                    ));
                    self.next = Some(Next::Throw(e.into_value(py).into_any()));
                }
                Ok(Sent::Returned(v)) => {
                    if let Some(e) = crate::compiled::carried_stop(py, &v) {
                        return self.crashed(py, cx, e); // compiled.rs: body raised StopIteration
                    }
                    self.gen = None;
                    if let Some(m) = &self.main {
                        m.set(Outcome::Returned(v.unbind()));
                    }
                    return Step::Exit(Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)));
                }
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                    // StopIteration from `throw` when the generator returns.
                    self.gen = None;
                    let v = e
                        .value(py)
                        .getattr("value")
                        .map(|v| v.unbind())
                        .unwrap_or_else(|_| py.None());
                    if let Some(e) = crate::compiled::carried_stop(py, v.bind(py)) {
                        return self.crashed(py, cx, e); // compiled.rs
                    }
                    if let Some(m) = &self.main {
                        m.set(Outcome::Returned(v));
                    }
                    return Step::Exit(Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)));
                }
                Err(e) => return self.crashed(py, cx, e),
            }
        }
    }

    fn crashed(&mut self, py: Python<'_>, cx: &mut Cx<'_>, e: PyErr) -> Step {
        self.gen = None;
        let r = rt(py);
        let exc = e.into_value(py).into_any();
        let exc = exc.bind(py);
        let (reason, report) = exit_reason(py, exc);
        if let Some(m) = &self.main {
            m.set(Outcome::Raised(exc.clone().unbind()));
        } else if report && cx.links().is_empty() {
            let pid = crate::types::PyPid(cx.self_pid());
            let _ = r.report.bind(py).call1((pid, exc));
        }
        Step::Exit(reason)
    }
}

enum Sent<'py> {
    Yielded(Bound<'py, PyAny>),
    Returned(Bound<'py, PyAny>),
}

fn send<'py>(
    py: Python<'py>,
    gen: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
) -> PyResult<Sent<'py>> {
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: gen and v are live objects; PyIter_Send returns a new reference in `out`
    // for PYGEN_NEXT and PYGEN_RETURN and sets an exception for PYGEN_ERROR.
    let rc = unsafe { py_iter_send(gen.as_ptr(), v.as_ptr(), &mut out) };
    match rc {
        1 => Ok(Sent::Yielded(unsafe { Bound::from_owned_ptr(py, out) })),
        0 => Ok(Sent::Returned(unsafe { Bound::from_owned_ptr(py, out) })),
        _ => Err(PyErr::fetch(py)),
    }
}

/// Parses a timeout in seconds (None: forever).
pub fn parse_timeout(t: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if t.is_none() {
        return Ok(None);
    }
    let s: f64 = t.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "timeout must be a number of seconds or None, not {}",
            t.get_type()
                .qualname()
                .map(|s| s.to_string())
                .unwrap_or_default()
        ))
    })?;
    if s.is_nan() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be >= 0 seconds, got {s}"
        )));
    }
    if s.is_infinite() || s > 1e9 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(s)))
}

/// The exit reason for an exception that ended a process, and whether it is a crash
/// worth an error report. `beamvm.ProcessExit(reason)` (raised by `exit(reason)`)
/// exits with `reason`; any other exception with
/// `(Atom('error'), 'ExceptionType', 'message')`.
pub fn exit_reason(py: Python<'_>, exc: &Bound<'_, PyAny>) -> (Fragment, bool) {
    if exc.is_instance_of::<crate::runtime::ProcessExit>() {
        let reason = exc
            .getattr("args")
            .and_then(|a| a.get_item(0))
            .ok()
            .and_then(|r| to_fragment(&r).ok())
            .unwrap_or_else(|| Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)));
        return (reason, false);
    }
    let tn = exc
        .get_type()
        .qualname()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let msg = exc.str().map(|s| s.to_string()).unwrap_or_default();
    let _ = py;
    let t = Term::Tuple(vec![Term::Atom(Atom::ERROR), str_term(&tn), str_term(&msg)]);
    (Fragment::from_term(&t), true)
}

fn str_term(s: &str) -> Term {
    Term::Tuple(vec![
        Term::Atom(crate::convert::str_tag()),
        Term::binary(s.as_bytes().to_vec()),
    ])
}

impl Body for PyProcess {
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        let _slice = crate::timeslice::Mark::begin(); // timeslice.rs: the slice's clock
        with_batch_gil(|py| {
            let cxp: *mut Cx<'_> = cx;
            let _g = CurrentGuard::set(cxp);
            // SAFETY: see `with_cx`; the driver and Python never use the context at
            // the same time.
            let cx = unsafe { &mut *cxp };
            self.run(py, cx)
        })
    }

    fn terminate(&mut self, cx: &mut Cx<'_>, reason: &Fragment) {
        let _slice = crate::timeslice::Mark::begin(); // timeslice.rs: bounds kill cleanup
        with_batch_gil(|py| {
            if let Some(m) = &self.main {
                m.set(Outcome::Exited(reason.clone()));
            }
            let Some(gen) = self.gen.take() else { return };
            let cxp: *mut Cx<'_> = cx;
            let _g = CurrentGuard::set(cxp);
            let r = rt(py);
            let _ = r
                .kill
                .bind(py)
                .call1((gen.bind(py), py.None(), py.None(), self.cell.as_ref()));
            self.pending = None;
            self.next = None;
            drop(gen);
        });
    }

    fn class(&self) -> BodyClass {
        BodyClass::Hooked
    }

    fn label(&self) -> String {
        self.label.clone()
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        Python::with_gil(|_py| {
            self.gen = None;
            self.cell = None;
            self.next = None;
            self.pending = None;
            self.main = None;
        });
    }
}
