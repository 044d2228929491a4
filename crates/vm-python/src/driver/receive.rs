//! `beamvm.receive` in process code: the [`ReceiveOp`] a waiting receive suspends on,
//! and the two entry points compiled code calls, [`_receive`] (the primitive's
//! generator implementation, run with `yield from`) and [`_recv`] (the fast path, a
//! plain call). See docs/preemption.md, "The native driver's shortcuts".

use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyBaseException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyTuple;
use pyo3::{ffi, PyTypeInfo};
use vm_core::{Cx, Fragment, Key};

use super::current::{in_process, with_cx};
use crate::args::parse_timeout;
use crate::convert::frag_to_py;
use crate::pattern::{self, Pattern};
use crate::runtime::rt;

/// Raises `StopIteration(v)` from a native iterator so that `yield from` evaluates to
/// `v`. A tuple or exception value must travel inside an instance (a bare one would be
/// read as the exception's arguments).
pub(crate) fn stop_with(py: Python<'_>, v: PyObject) -> PyErr {
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

/// How the driver hands a waiting receive its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Compiled code yielded the op that [`_recv`] returned: resume the frame with
    /// `send(message)` (or `throw(Timeout)`).
    SendToFrame,
    /// The op yielded itself from its `__next__` (a `yield from` runs it): store the
    /// message in the op and resume with `send(None)`; `__next__` then finishes the
    /// `yield from` with it.
    StoreInOp,
}

/// One call of `beamvm.receive` in process code: `yield from _receive(*patterns,
/// timeout=, default=)` runs it.
///
/// The patterns are compiled once, here; with several, the first queued message (in
/// mailbox order) that matches any of them is taken, as Erlang's receive with several
/// clauses. When every pattern has a key (a literal ref, or a literal tag), the receive
/// looks only at messages carrying one of the keys. Inside a process the first `__next__` tries the
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
    /// The other patterns of a receive with several (empty for one).
    alts: Vec<Pattern>,
    /// Every pattern's key, when all have one (a receive with several patterns).
    keys: Option<Vec<Key>>,
    pub(crate) timeout: Option<Duration>,
    /// The value returned on timeout (None: raise `Timeout`).
    pub(crate) default: Option<PyObject>,
    /// The Python arguments, kept for the `Request` a non-VM driver sees.
    args: Option<Py<PyTuple>>,
    /// 0: not started; 1: yielded, waiting for the driver; 2: finished.
    state: u8,
    pub(crate) result: Option<PyObject>,
    /// How the driver delivers the message this op waits for.
    pub(crate) delivery: Delivery,
    /// Set when the op finishes a gen_server call (see `gen_call.rs`).
    pub(crate) call: Option<Box<crate::gen_call::CallMode>>,
}

fn missing_obj() -> PyObject {
    // SAFETY: only evaluated as a default argument inside the `_receive`/`_recv`
    // wrappers, which run with the GIL held.
    let py = unsafe { Python::assume_gil_acquired() };
    rt(py).missing.clone_ref(py)
}

static RECEIVE_OP_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// `type(obj) is _ReceiveOp`, by a cached type pointer (pyo3's lazy type lookup costs
/// more than the rest of the check, on every yield).
pub(crate) fn is_receive_op(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
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
#[pyo3(signature = (*patterns, timeout = None, default = missing_obj()))]
pub(crate) fn _receive(
    py: Python<'_>,
    patterns: &Bound<'_, PyTuple>,
    timeout: Option<&Bound<'_, PyAny>>,
    default: PyObject,
) -> PyResult<ReceiveOp> {
    let r = rt(py);
    if patterns.len() <= 1 {
        let pattern = match patterns.len() {
            0 => r.any.clone_ref(py),
            _ => patterns.get_item(0)?.unbind(),
        };
        return receive_op(py, pattern, None, timeout, default);
    }
    let first = patterns.get_item(0)?.unbind();
    receive_op(py, first, Some(patterns), timeout, default)
}

/// Builds the op for `pattern` (the only or first pattern) and, for a receive with
/// several, the whole tuple `all`.
fn receive_op(
    py: Python<'_>,
    pattern: PyObject,
    all: Option<&Bound<'_, PyTuple>>,
    timeout: Option<&Bound<'_, PyAny>>,
    default: PyObject,
) -> PyResult<ReceiveOp> {
    let r = rt(py);
    let pat = pattern::compile(pattern.bind(py), r.any.bind(py))?;
    let key = pat.key();
    let mut alts = Vec::new();
    let mut keys = None;
    if let Some(all) = all {
        let mut ks = key.map(|k| vec![k]);
        for p in all.iter().skip(1) {
            let c = pattern::compile(&p, r.any.bind(py))?;
            ks = match (ks, c.key()) {
                (Some(mut v), Some(k)) => {
                    v.push(k);
                    Some(v)
                }
                _ => None,
            };
            alts.push(c);
        }
        keys = ks;
    }
    let t = match timeout {
        Some(t) => parse_timeout(t)?,
        None => None,
    };
    let in_proc = in_process();
    let args = if in_proc {
        None
    } else {
        let t: PyObject = timeout.map_or_else(|| py.None(), |t| t.clone().unbind());
        let p = match all {
            Some(all) => all.clone().into_any().unbind(),
            None => pattern,
        };
        Some(PyTuple::new(py, [p, t, default.clone_ref(py)])?.unbind())
    };
    let default = if default.is(&r.missing) {
        None
    } else {
        Some(default)
    };
    Ok(ReceiveOp {
        pat,
        key,
        alts,
        keys,
        timeout: t,
        default,
        args,
        state: 0,
        result: None,
        delivery: Delivery::SendToFrame,
        call: None,
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
                alts: Vec::new(),
                keys: None,
                timeout: None,
                default: None,
                args: None,
                state: 1,
                result: None,
                delivery: Delivery::SendToFrame,
                call: None,
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
/// for the frame to yield (`Request("receive_any", (patterns, timeout, default))` for a
/// receive with several patterns). Argument errors raise at the call, as before.
///
/// Takes `beamvm.receive`'s arguments as the compiled call site wrote them:
/// `(*patterns, timeout=None, default=...)`.
#[pyfunction]
#[pyo3(signature = (*patterns, timeout = None, default = missing_obj()))]
pub(crate) fn _recv(
    py: Python<'_>,
    patterns: &Bound<'_, PyTuple>,
    timeout: Option<&Bound<'_, PyAny>>,
    default: PyObject,
) -> PyResult<PyObject> {
    let r = rt(py);
    let any_pattern = match patterns.len() {
        0 => true,
        1 => patterns.get_item(0)?.is(&r.any),
        _ => false,
    };
    if timeout.is_none() && any_pattern && default.is(&r.missing) {
        // `receive()`: the next message, no timeout -- no pattern to compile, and a
        // shared op (the driver never mutates an op that compiled code yielded).
        match with_cx(|cx| cx.recv()) {
            Some(Some(m)) => return traced(py, frag_to_py(py, &m)),
            Some(None) => return Ok(any_wait_op(py)?.clone_ref(py).into_any()),
            None => {}
        }
    }
    let mut op = _receive(py, patterns, timeout, default)?;
    if let Some(args) = op.args.take() {
        let kind = if op.alts.is_empty() {
            "receive"
        } else {
            "receive_any"
        };
        return rt(py).request.call1(py, (kind, args));
    }
    if let Some(m) = with_cx(|cx| op.try_take(cx)).flatten() {
        return traced(py, frag_to_py(py, &m));
    }
    op.state = 1;
    Ok(Py::new(py, op)?.into_any())
}

/// `_recv(timeout=timeout)`: the next message, whatever it is. Compiled code calls it
/// for `receive()` (no arguments): the general `_recv`'s `*patterns` signature costs a
/// tuple and a longer argument parse per call, the larger part of the call on the
/// ping-pong path (benches B3). It has a parameter, though unused there, because
/// CPython's call specialisation has no fast path for a builtin without parameters
/// (`METH_NOARGS`), and one for `METH_FASTCALL | METH_KEYWORDS`, which this gets.
#[pyfunction]
#[pyo3(signature = (timeout = None))]
pub(crate) fn _recv_any(py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<PyObject> {
    if timeout.is_none() {
        match with_cx(|cx| cx.recv()) {
            Some(Some(m)) => return traced(py, frag_to_py(py, &m)),
            Some(None) => return Ok(any_wait_op(py)?.clone_ref(py).into_any()),
            // Outside a process (or a nested use): what `_recv()` does there.
            None => {}
        }
    }
    _recv(
        py,
        &PyTuple::empty(py),
        timeout,
        rt(py).missing.clone_ref(py),
    )
}

/// A received message, reported to the message trace (`crate::msgtrace`) if it is on.
#[inline]
pub(crate) fn traced(py: Python<'_>, got: PyResult<PyObject>) -> PyResult<PyObject> {
    if let Ok(v) = &got {
        crate::msgtrace::received(py, v);
    }
    got
}

impl ReceiveOp {
    /// An op waiting (in a process) for the reply to the gen_server call `call` (or
    /// its server's DOWN): see [`ReceiveOp::try_take`]. It has no patterns of its own.
    pub(crate) fn call(
        call: Box<crate::gen_call::CallMode>,
        timeout: Option<Duration>,
        default: Option<PyObject>,
    ) -> ReceiveOp {
        ReceiveOp {
            pat: Pattern::Any,
            key: None,
            keys: None,
            alts: Vec::new(),
            timeout,
            default,
            args: None,
            state: 0,
            result: None,
            delivery: Delivery::SendToFrame,
            call: Some(call),
        }
    }

    /// The value the receive finishes with: the message, or what a call makes of it.
    fn finish(&self, py: Python<'_>, v: PyObject) -> PyErr {
        match &self.call {
            Some(c) => c.finish(py, v),
            None => stop_with(py, v),
        }
    }

    /// What a frame that yielded this op itself ([`Delivery::SendToFrame`]) is resumed
    /// with, given what the receive finished with (the message, or the default on
    /// timeout): that value, or for a gen_server call its outcome (the reply, or the
    /// `CallError` to throw into the frame).
    pub(crate) fn deliver(&self, py: Python<'_>, v: PyObject) -> PyResult<PyObject> {
        match &self.call {
            Some(c) => c.outcome(py, v),
            None => Ok(v),
        }
    }

    /// [`ReceiveOp::deliver`] for the message `m` the receive took: a call converts only
    /// its reply.
    pub(crate) fn deliver_message(&self, py: Python<'_>, m: &Fragment) -> PyResult<PyObject> {
        match &self.call {
            Some(c) => c.reply_of(py, m),
            None => traced(py, frag_to_py(py, m)),
        }
    }

    /// Takes the first matching message from the current process's mailbox.
    pub(crate) fn try_take(&self, cx: &mut Cx<'_>) -> Option<Fragment> {
        if let Some(c) = &self.call {
            // A call's reply or DOWN, found by the ref's index entry; matched by shape
            // here rather than by patterns (no pattern to build and free per call).
            return c.take(cx);
        }
        if !self.alts.is_empty() {
            let pats = (&self.pat, &self.alts);
            let any =
                |v: vm_core::View<'_>| pats.0.matches(v) || pats.1.iter().any(|p| p.matches(v));
            return match &self.keys {
                Some(keys) => cx.recv_keyed_any(keys, any),
                None => cx.recv_where(any),
            };
        }
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
                        return Err(slf.finish(py, traced(py, frag_to_py(py, &m))?));
                    }
                    slf.state = 1;
                    slf.delivery = Delivery::StoreInOp;
                    return Ok(slf.into_pyobject(py)?.into_any().unbind());
                }
                slf.state = 1;
                let args = slf.args.as_ref().map(|a| a.clone_ref(py));
                let kind = if slf.alts.is_empty() {
                    "receive"
                } else {
                    "receive_any"
                };
                Ok(rt(py).request.call1(py, (kind, args))?)
            }
            1 => {
                slf.state = 2;
                let v = slf.result.take().unwrap_or_else(|| py.None());
                Err(slf.finish(py, v))
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
