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
//! act on the current process. It is cleared before `resume` returns. The driver
//! itself holds the same raw pointer ([`CxPtr`]) and never a `&mut Cx` across a call
//! into Python (see `current.rs`).
//!
//! Every call into process code (resuming the generator, throwing into it, killing it,
//! reporting its crash) goes through [`crate::finalize`]'s guarded calls, so a thread
//! that the interpreter ends at finalisation parks instead of aborting the process.
//!
//! GIL: the class is [`BodyClass::Hooked`]; the VM's [`GilHook`] runs a batch of Python
//! slices on a scheduler thread inside one `Python::with_gil`, and `resume` uses that
//! batch's GIL (see [`with_batch_gil`]). Nothing here relies on the GIL for the VM's
//! own safety.

mod budget;
mod context;
mod current;
mod dirty;
mod gil;
mod receive;
mod recursion;

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::{ffi, intern};
use vm_core::{Atom, Body, BodyClass, Cx, Fragment, Step, Term};

use crate::args::parse_timeout;
use crate::convert::{frag_to_py, to_fragment};
use crate::errors::Timeout;
use crate::finalize;
use crate::lifecycle::{MainSlot, Outcome};
use crate::runtime::rt;
use budget::{enter_cell, used_cell};
pub(crate) use context::copy_current as copy_context;
use context::Entered;
pub(crate) use current::{in_process, with_cx};
use current::{CurrentGuard, CxPtr, Slice};
use dirty::{dirty_job, DirtyOutcome};
pub(crate) use gil::with_batch_gil;
pub(crate) use gil::{busy_threads, forget_threads, GilHook};
pub(crate) use receive::{_receive, _recv, _recv_any, stop_with, ReceiveOp};
use receive::{is_receive_op, Delivery};

// --------------------------------------------------------------------------- the body

/// How a frame that yielded `op` itself resumes, given what its receive finished with
/// (see [`ReceiveOp::deliver`]: a gen_server call's op turns it into the reply or the
/// `CallError`).
fn deliver(py: Python<'_>, op: &Bound<'_, ReceiveOp>, v: PyObject) -> Next {
    match op.borrow().deliver(py, v) {
        Ok(v) => Next::Send(v),
        Err(e) => Next::Throw(e.into_value(py).into_any()),
    }
}

enum Next {
    Send(PyObject),
    Throw(PyObject),
}

enum Pending {
    /// A receive waiting for a message, and how to hand it over.
    Receive(Py<ReceiveOp>, Delivery),
    Sleep,
    /// A call running on a dirty pool; the outcome arrives as a signal.
    Dirty,
}

/// A Python process (see the module docs).
pub(crate) struct PyProcess {
    gen: Option<Py<PyAny>>,
    cell: Option<Py<PyAny>>,
    next: Option<Next>,
    pending: Option<Pending>,
    sleep_for: Duration,
    label: String,
    main: Option<Arc<MainSlot>>,
    /// The process's own `contextvars.Context`: every slice runs inside it (see
    /// `context.rs`).
    ctx: Option<Py<PyAny>>,
    /// This process's share of `memory()` (its Python objects, measured at spawn).
    _counted: crate::alloc::Counted,
}

impl PyProcess {
    pub(crate) fn new(
        py: Python<'_>,
        gen: Py<PyAny>,
        cell: Py<PyAny>,
        label: String,
        main: Option<Arc<MainSlot>>,
        ctx: Py<PyAny>,
    ) -> Self {
        // Every process's cell and context weigh the same: measured once.
        static FIXED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let fixed = *FIXED.get_or_init(|| {
            crate::alloc::sizeof(py, cell.bind(py))
                + crate::alloc::sizeof(py, ctx.bind(py))
                + std::mem::size_of::<PyProcess>()
        });
        let _counted = crate::alloc::Counted::new(gen.bind(py), fixed);
        PyProcess {
            _counted,
            gen: Some(gen),
            cell: Some(cell),
            next: None,
            pending: None,
            sleep_for: Duration::ZERO,
            label,
            main,
            ctx: Some(ctx),
        }
    }

    // `CxPtr::with` returns None only for a nested use of the context, which the
    // driver never makes (it is not called from inside a `with` closure); the
    // fallbacks below (no message, not timed out, yield) keep even that case safe.

    fn poll(&mut self, py: Python<'_>, cx: CxPtr) -> PyResult<Result<Next, Step>> {
        match self.pending.as_ref() {
            Some(Pending::Receive(op, delivery)) => {
                let into_op = *delivery == Delivery::StoreInOp;
                let op = op.bind(py).clone();
                let m = {
                    let o = op.borrow();
                    cx.with(|c| o.try_take(c)).flatten()
                };
                if let Some(m) = m {
                    // The op's reference is released through `op` (a `Bound`).
                    if let Some(Pending::Receive(held, _)) = self.pending.take() {
                        drop(held.into_bound(py));
                    }
                    if !into_op {
                        let out = op.borrow().deliver_message(py, &m);
                        return Ok(Ok(match out {
                            Ok(v) => Next::Send(v),
                            Err(e) => Next::Throw(e.into_value(py).into_any()),
                        }));
                    }
                    return match receive::traced(py, frag_to_py(py, &m)) {
                        Ok(v) => {
                            op.borrow_mut().result = Some(v);
                            Ok(Ok(Next::Send(py.None())))
                        }
                        Err(e) => Ok(Ok(Next::Throw(e.into_value(py).into_any()))),
                    };
                }
                let (timeout, default) = {
                    let o = op.borrow();
                    (o.timeout, o.default.as_ref().map(|d| d.clone_ref(py)))
                };
                if timeout.is_some() && cx.with(|c| c.timed_out()).unwrap_or(false) {
                    let out = match default {
                        Some(d) if into_op => {
                            op.borrow_mut().result = Some(d);
                            Next::Send(py.None())
                        }
                        Some(d) => deliver(py, &op, d),
                        None => Next::Throw(
                            Timeout::new_err("receive timed out")
                                .into_value(py)
                                .into_any(),
                        ),
                    };
                    self.pending = None;
                    return Ok(Ok(out));
                }
                Ok(Err(cx.with(|c| c.wait(timeout)).unwrap_or(Step::Yield)))
            }
            Some(Pending::Dirty) => match cx.with(|c| c.dirty_result()).flatten() {
                None => Ok(Err(cx.with(|c| c.wait(None)).unwrap_or(Step::Yield))),
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
                if cx.with(|c| c.timed_out()).unwrap_or(false) {
                    self.pending = None;
                    return Ok(Ok(Next::Send(py.None())));
                }
                let t = self.sleep_for;
                Ok(Err(cx.with(|c| c.wait(Some(t))).unwrap_or(Step::Yield)))
            }
            None => Ok(Ok(Next::Send(py.None()))),
        }
    }

    fn request(&mut self, py: Python<'_>, cx: CxPtr, out: &Bound<'_, PyAny>) -> PyResult<()> {
        let kind = out.getattr(intern!(py, "kind"))?;
        let args = out.getattr(intern!(py, "args"))?;
        let args = args.downcast::<PyTuple>()?;
        let kind = kind.downcast::<PyString>()?.to_str()?;
        match kind {
            "receive" | "receive_any" => {
                // A Request-style receive (from a primitive written in Python):
                // (pattern, timeout, default), or (patterns, ...) for "receive_any".
                let first = args.get_item(0)?;
                let patterns = if kind == "receive" {
                    PyTuple::new(py, [first])?
                } else {
                    first.downcast_into::<PyTuple>()?
                };
                let op = _receive(
                    py,
                    &patterns,
                    Some(&args.get_item(1)?),
                    args.get_item(2)?.unbind(),
                )?;
                self.pending = Some(Pending::Receive(Py::new(py, op)?, Delivery::SendToFrame));
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
                let job = dirty_job(f, fargs, kw);
                cx.with(|c| c.dirty(kind, job))
                    .ok_or_else(|| PyRuntimeError::new_err("no process context"))?
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

    fn run(&mut self, py: Python<'_>, cx: CxPtr) -> Step {
        let r = rt(py);
        // The process's context, entered for the whole slice (left on every return).
        let entered = match self.ctx.as_ref() {
            // SAFETY: the context is `self.ctx`, which nothing in `run` replaces or drops,
            // and `self` outlives this call, so it outlives the guard.
            Some(c) => unsafe { Entered::enter(c.bind(py)) }.map(Some),
            None => Ok(None),
        };
        let _entered = match entered {
            Ok(e) => e,
            Err(e) => return self.crashed(py, cx, e),
        };
        // In the child of an `os.fork()` made by this process's code, this thread runs
        // that code to its end as a plain program (see `forked_child_exit`). The fork
        // happens inside a call into process code, so the flag is read after each one.
        let mut forked = crate::lifecycle::forked_in_process();
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
            // One use of the context for both (each use is a thread-local lookup).
            let (yield_now, budget) = cx
                .with(|c| (c.should_yield(), c.budget_left()))
                .unwrap_or((true, 1));
            if !forked && yield_now {
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
            if let Err(e) = enter_cell(py, &cell, budget.max(1)) {
                return self.crashed(py, cx, e);
            }
            // No `&mut Cx` is alive here: process code may use the context itself.
            let res = {
                let _cap = recursion::Cap::apply(py);
                // As `Bound`s, released by a plain decref (a `Py`'s drop goes through
                // pyo3's check for the GIL, a thread-local lookup, twice a slice).
                match self.next.take().unwrap_or_else(|| Next::Send(py.None())) {
                    Next::Send(v) => send(py, &gen, &v.into_bound(py)),
                    Next::Throw(e) => throw(&gen, &e.into_bound(py)).map(Sent::Yielded),
                }
            };
            let used = used_cell(&cell).max(1);
            cx.with(|c| c.bump(used));
            forked = forked || crate::lifecycle::forked_in_process();
            match res {
                Ok(Sent::Yielded(out)) => {
                    if out.is(r.preempt.bind(py)) {
                        if forked {
                            continue;
                        }
                        return Step::Yield;
                    }
                    if forked {
                        // A receive, sleep or dirty call: there is no VM here.
                        self.next = Some(Next::Throw(
                            crate::errors::forked().into_value(py).into_any(),
                        ));
                        continue;
                    }
                    if is_receive_op(py, &out) {
                        // SAFETY: `is_receive_op` checked that the object's type is
                        // exactly `ReceiveOp`'s.
                        let op = unsafe { out.downcast_unchecked::<ReceiveOp>() };
                        let delivery = op.borrow().delivery;
                        self.pending = Some(Pending::Receive(op.clone().unbind(), delivery));
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
                        // compiled.rs: the body raised StopIteration.
                        if forked {
                            forked_child_exit(py, Some(e));
                        }
                        return self.crashed(py, cx, e);
                    }
                    if forked {
                        forked_child_exit(py, None);
                    }
                    self.gen = None;
                    if let Some(m) = &self.main {
                        m.set(Outcome::Returned(v.unbind()));
                    }
                    return Step::Exit(Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)));
                }
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                    // StopIteration from `throw` when the generator returns.
                    if forked {
                        forked_child_exit(py, None);
                    }
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
                Err(e) if forked => forked_child_exit(py, Some(e)),
                Err(e) => return self.crashed(py, cx, e),
            }
        }
    }

    fn crashed(&mut self, py: Python<'_>, cx: CxPtr, e: PyErr) -> Step {
        self.gen = None;
        let r = rt(py);
        let exc = e.into_value(py).into_any();
        let exc = exc.bind(py);
        let (reason, report) = exit_reason(py, exc);
        if let Some(m) = &self.main {
            // `run` re-raises it, frames and all.
            m.set(Outcome::Raised(exc.clone().unbind()));
        } else {
            if report {
                // Reported when no linked process will see it, and not while the VM
                // stops (stopping interrupts the processes that did not end their
                // slice).
                let who = cx.with(|c| (c.links().is_empty() && c.vm().is_running(), c.self_pid()));
                if let Some((true, pid)) = who {
                    if let Ok(args) =
                        (crate::types::PyPid::local(pid), exc.clone()).into_pyobject(py)
                    {
                        let _ = finalize::call(r.report.bind(py), &args, None);
                    }
                }
            }
            release_frames(py, exc);
        }
        Step::Exit(reason)
    }
}

/// Releases what an ended process's frames held (a Binary, an open file) at once:
/// drops the traceback of `exc` and of the exceptions chained to it (`__context__`,
/// `__cause__`). The kill's exception sits in a reference cycle with `kill`'s own frame
/// (a local of that frame holds it, its traceback holds the frame), which kept every
/// frame of the process alive until the cyclic GC ran (never, with gc disabled);
/// without the traceback the frames are freed by reference counting.
fn release_frames(py: Python<'_>, exc: &Bound<'_, PyAny>) {
    // A chain longer than this is cut there (chains are short; this bounds a cycle).
    const MAX_CHAIN: usize = 64;
    let mut next = Some(exc.clone());
    for _ in 0..MAX_CHAIN {
        let Some(e) = next.take() else { break };
        if !e.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            break;
        }
        if let Err(err) = e.setattr(intern!(py, "__traceback__"), py.None()) {
            err.write_unraisable(py, Some(&e));
        }
        next = e
            .getattr(intern!(py, "__context__"))
            .ok()
            .filter(|c| !c.is_none())
            .or_else(|| {
                e.getattr(intern!(py, "__cause__"))
                    .ok()
                    .filter(|c| !c.is_none())
            });
    }
}

/// Ends the child of an `os.fork()` made by process code (or by a dirty call), once that
/// code has finished,
/// as a Python program whose main code finished would: an uncaught exception is printed
/// and the status is 1, `SystemExit` gives its status, `atexit` handlers run and the
/// standard streams are flushed. The interpreter is not finalised (CPython does not
/// finalise a child forked from a thread either: this thread's state belongs to the
/// parent's VM), and the rest of the parent's VM, copied into the child, never runs.
pub(crate) fn forked_child_exit(py: Python<'_>, err: Option<PyErr>) -> ! {
    let code = match err {
        None => 0,
        Some(e) if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) => {
            let c = e.value(py).getattr("code").ok();
            match c {
                None => 1,
                Some(c) if c.is_none() => 0,
                Some(c) => c.extract::<i32>().unwrap_or_else(|_| {
                    let _ = py
                        .import("sys")
                        .and_then(|s| s.getattr("stderr"))
                        .and_then(|f| f.call_method1("write", (format!("{c}\n"),)));
                    1
                }),
            }
        }
        Some(e) => {
            e.print(py);
            1
        }
    };
    let _ = py
        .import("atexit")
        .and_then(|m| m.call_method0("_run_exitfuncs"));
    if let Ok(sys) = py.import("sys") {
        for stream in ["stdout", "stderr"] {
            let _ = sys.getattr(stream).and_then(|f| f.call_method0("flush"));
        }
    }
    std::process::exit(code)
}

enum Sent<'py> {
    Yielded(Bound<'py, PyAny>),
    Returned(Bound<'py, PyAny>),
}

/// `gen.send(v)` through `PyIter_Send` (no StopIteration object when it returns).
fn send<'py>(
    py: Python<'py>,
    gen: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
) -> PyResult<Sent<'py>> {
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: we hold the GIL; gen and v are live objects; `out` is a local.
    let rc = unsafe { finalize::iter_send(gen.as_ptr(), v.as_ptr(), &mut out) };
    match rc {
        // SAFETY: PyIter_Send returns a new reference in `out` for PYGEN_NEXT (1) and
        // PYGEN_RETURN (0), and sets an exception for PYGEN_ERROR (-1).
        1 => Ok(Sent::Yielded(unsafe { Bound::from_owned_ptr(py, out) })),
        // SAFETY: as above.
        0 => Ok(Sent::Returned(unsafe { Bound::from_owned_ptr(py, out) })),
        _ => Err(PyErr::fetch(py)),
    }
}

/// `gen.throw(exc)`: what the generator yields next, or its end as an exception
/// (`StopIteration` when it returns).
fn throw<'py>(gen: &Bound<'py, PyAny>, exc: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = gen.py();
    let m = gen.getattr(intern!(py, "throw"))?;
    let args = PyTuple::new(py, [exc])?;
    finalize::call(&m, &args, None)
}

/// The exit reason for an exception that ended a process, and whether it is a crash
/// worth an error report. `beamvm.ProcessExit(reason)` (raised by `exit(reason)`)
/// exits with `reason` (`normal` when it has none; the str `repr(reason)` when the
/// reason has no term form, which is an abnormal exit like any other); any other
/// exception with `(Atom('error'), 'ExceptionType', 'message')`.
pub(crate) fn exit_reason(py: Python<'_>, exc: &Bound<'_, PyAny>) -> (Fragment, bool) {
    if exc.is_instance_of::<crate::errors::ProcessExit>() {
        let reason = match exc.getattr("args").and_then(|a| a.get_item(0)) {
            Err(_) => Fragment::immediate(vm_core::Word::atom(Atom::NORMAL)),
            Ok(r) => to_fragment(&r).unwrap_or_else(|_| {
                let repr = r.repr().map(|s| s.to_string()).unwrap_or_default();
                Fragment::from_term(&Term::str(&repr))
            }),
        };
        return (reason, false);
    }
    // An exception that names its exit reason (beamvm.CallError: what an Erlang caller
    // that does not catch would exit with); reported like any crash.
    if let Ok(r) = exc.getattr(intern!(py, "__exit_reason__")) {
        if let Ok(f) = to_fragment(&r) {
            return (f, true);
        }
    }
    let tn = exc
        .get_type()
        .qualname()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let msg = exc.str().map(|s| s.to_string()).unwrap_or_default();
    let t = Term::Tuple(vec![
        Term::Atom(Atom::ERROR),
        Term::str(&tn),
        Term::str(&msg),
    ]);
    (Fragment::from_term(&t), true)
}

impl Body for PyProcess {
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        let _clock = crate::timeslice::Mark::begin(); // timeslice.rs: the slice's clock
                                                      // From here on the context is used through the slice only (current.rs).
                                                      // Distribution frames sent in this slice are written once, when it ends.
        let _dist = vm_dist::node::DeferWrites::begin();
        let slice = Slice::new(cx);
        let cx = slice.ptr();
        with_batch_gil(|py| {
            let _g = CurrentGuard::set(cx);
            self.run(py, cx)
        })
    }

    fn terminate(&mut self, cx: &mut Cx<'_>, reason: &Fragment) {
        let _clock = crate::timeslice::Mark::begin(); // timeslice.rs: bounds kill cleanup
        let slice = Slice::new(cx);
        let cx = slice.ptr();
        with_batch_gil(|py| {
            if let Some(m) = &self.main {
                m.set(Outcome::Exited(reason.clone()));
            }
            let Some(gen) = self.gen.take() else { return };
            let _g = CurrentGuard::set(cx);
            // Cleanup code runs in the process's context too; if it cannot be entered,
            // cleanup runs in the thread's.
            let ctx = self.ctx.as_ref().map(|c| c.bind(py).clone());
            // SAFETY: `ctx` is a local reference that outlives the guard (declared after).
            let _entered = ctx.as_ref().and_then(|c| unsafe { Entered::enter(c) }.ok());
            let r = rt(py);
            let none = py.None();
            let cell = self
                .cell
                .as_ref()
                .map_or_else(|| py.None(), |c| c.clone_ref(py));
            let mut out = None;
            if let Ok(args) = PyTuple::new(py, [gen.clone_ref(py), none.clone_ref(py), none, cell])
            {
                let _cap = recursion::Cap::apply(py);
                out = finalize::call(r.kill.bind(py), &args, None).ok();
            }
            self.pending = None;
            self.next = None;
            drop(gen);
            // The exception the kill ended with holds the process's frames through its
            // traceback, in a cycle with `kill`'s own frame: release them now, not when
            // the cyclic GC runs (never, with gc disabled).
            if let Some(exc) = out {
                release_frames(py, &exc);
            }
        });
    }

    fn class(&self) -> BodyClass {
        BodyClass::Hooked
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl PyProcess {
    /// The process's generator (its outermost frame), while it has one; see
    /// `crate::stacktrace`.
    pub(crate) fn generator(&self, py: Python<'_>) -> Option<PyObject> {
        self.gen.as_ref().map(|g| g.clone_ref(py))
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        let mut objs: Vec<PyObject> = Vec::with_capacity(5);
        objs.extend(self.gen.take());
        objs.extend(self.cell.take());
        objs.extend(self.ctx.take());
        match self.next.take() {
            Some(Next::Send(v)) | Some(Next::Throw(v)) => objs.push(v),
            None => {}
        }
        if let Some(Pending::Receive(op, _)) = self.pending.take() {
            objs.push(op.into_any());
        }
        if current::borrowed() {
            // Dropped inside a `with_cx` closure (a spawn that failed): a `__del__`
            // run now could call the API while the context is borrowed.
            objs.into_iter().for_each(current::defer_drop);
            return;
        }
        match finalize::enter() {
            Some(_pass) => with_batch_gil(|_py| drop(objs)),
            // The interpreter is finalising: touching it now would crash.
            None => std::mem::forget(objs),
        }
    }
}
