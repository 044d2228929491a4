//! `gen_server.call` as a native primitive: the caller's whole half of a call, built as
//! OTP's gen.erl builds it, with no Python frame of its own.
//!
//! `beamvm.gen_server` registers [`_gen_call`] as the primitive implementation of
//! `gen_server.call`, so compiled process code runs `yield from _gen_call(server,
//! request, timeout)`. `_gen_call` resolves the server, monitors it with the monitor's
//! reference as an alias (`{alias, demonitor}`), sends `('$gen_call', (self, ref),
//! request)` and returns a [`ReceiveOp`] keyed by the ref that waits for `(ref, reply)`
//! or the server's `('DOWN', ref, ...)`. When it finishes ([`CallMode::finish`]):
//!
//! * a reply: demonitor with flush (which also deactivates the alias), return the reply;
//! * a DOWN: raise `beamvm.CallError((reason, mfa))`;
//! * the timeout: demonitor with flush -- from then on a reply is dropped by the VM --,
//!   then take a reply that arrived just before, if any (gen.erl does the same), else
//!   raise `CallError(('timeout', mfa))`.
//!
//! `mfa` is `('gen_server', 'call', [server, request, timeout])` with the server and the
//! timeout as the caller wrote them (`infinity` for None): OTP's exit reason exactly.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyList, PyString, PyTuple};
use vm_core::term::FragmentBuilder;
use vm_core::{AliasMode, Atom, Key, Pid, Ref, Term};

use crate::args::{atom_of, parse_timeout};
use crate::convert::{frag_to_py, to_fragment};
use crate::driver::{stop_with, with_cx, ReceiveOp};
use crate::lifecycle::vm;
use crate::pattern::Pattern;
use crate::runtime::rt;
use crate::types::{PyAtom, PyPid};

/// Seconds a call waits by default (OTP's 5000 ms).
const DEFAULT_TIMEOUT: f64 = 5.0;

/// What a call op needs to finish the call.
pub(crate) struct CallMode {
    mref: Ref,
    /// The server is on another node: its monitor lives in the distribution layer.
    remote: bool,
    server: PyObject,
    request: PyObject,
    timeout: PyObject,
}

static CALL_ERROR: GILOnceCell<PyObject> = GILOnceCell::new();
static WHEREIS: GILOnceCell<PyObject> = GILOnceCell::new();

fn otp_attr(py: Python<'_>, cell: &GILOnceCell<PyObject>, name: &str) -> PyResult<PyObject> {
    cell.get_or_try_init(py, || Ok(py.import("beamvm._otp")?.getattr(name)?.unbind()))
        .map(|o| o.clone_ref(py))
}

impl CallMode {
    fn mfa(&self, py: Python<'_>) -> PyResult<PyObject> {
        let args = PyList::new(
            py,
            [
                self.server.clone_ref(py),
                self.request.clone_ref(py),
                self.timeout.clone_ref(py),
            ],
        )?;
        let t = (
            PyAtom(Atom::new("gen_server")),
            PyAtom(Atom::new("call")),
            args,
        );
        Ok(t.into_pyobject(py)?.into_any().unbind())
    }

    /// Removes the monitor (and a DOWN of it already queued).
    fn demonitor(&self) {
        let mref = self.mref;
        if !self.remote {
            with_cx(|cx| cx.demonitor(mref, true));
            return;
        }
        let me = with_cx(|cx| cx.self_pid());
        if let (Some(me), Some(g)) = (me, crate::dist::current()) {
            g.demonitor(me, mref);
        }
        with_cx(|cx| cx.recv_keyed(Key::of_ref(mref), |m| m.tuple_len() == Some(5)));
    }

    fn error(&self, py: Python<'_>, why: PyObject) -> PyErr {
        let reason = match self.mfa(py) {
            Ok(mfa) => PyTuple::new(py, [why, mfa]),
            Err(e) => return e,
        };
        let made =
            reason.and_then(|r| otp_attr(py, &CALL_ERROR, "CallError")?.bind(py).call1((r,)));
        match made {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        }
    }

    /// The outcome of the call, given what the receive finished with (see the module
    /// docs): a `StopIteration` carrying the reply, or the `CallError`.
    pub(crate) fn finish(&self, py: Python<'_>, v: PyObject) -> PyErr {
        let mref = self.mref;
        if v.is(&rt(py).missing) {
            // Timed out: after the demonitor no reply reaches the mailbox; one that is
            // already there is still ours.
            self.demonitor();
            let late = with_cx(|cx| cx.recv_keyed(Key::of_ref(mref), |m| m.tuple_len() == Some(2)))
                .flatten();
            if let Some(m) = late {
                return match frag_to_py(py, &m).and_then(|t| t.bind(py).get_item(1)) {
                    Ok(r) => stop_with(py, r.unbind()),
                    Err(e) => e,
                };
            }
            return self.error(py, PyAtom(Atom::new("timeout")).into_py(py));
        }
        let t = v.bind(py);
        match t.len() {
            Ok(2) => {
                self.demonitor();
                match t.get_item(1) {
                    Ok(r) => stop_with(py, r.unbind()),
                    Err(e) => e,
                }
            }
            _ => match t.get_item(4) {
                Ok(reason) => self.error(py, reason.unbind()),
                Err(e) => e,
            },
        }
    }
}

fn default_timeout(py: Python<'_>) -> PyObject {
    DEFAULT_TIMEOUT.into_py(py)
}

fn default_timeout_obj() -> PyObject {
    // SAFETY: only evaluated as a default argument inside the `_gen_call` wrapper, which
    // runs with the GIL held.
    let py = unsafe { Python::assume_gil_acquired() };
    default_timeout(py)
}

/// Resolves a server reference: a Pid, a registered name, or whatever `beamvm._otp`'s
/// `whereis` accepts (a via tuple; it raises TypeError for anything else).
fn resolve(py: Python<'_>, server: &Bound<'_, PyAny>) -> PyResult<Option<Pid>> {
    if let Ok(p) = server.downcast_exact::<PyPid>() {
        return Ok(local_pid(p.get()));
    }
    if server.is_instance_of::<PyString>() || server.downcast_exact::<PyAtom>().is_ok() {
        let name = atom_of(server, "a server name")?;
        return Ok(vm()?.whereis(name));
    }
    let found = otp_attr(py, &WHEREIS, "whereis")?
        .bind(py)
        .call1((server,))?;
    if found.is_none() {
        return Ok(None);
    }
    Ok(local_pid(found.downcast::<PyPid>()?.get()))
}

/// The pid of a process of this VM; None for another VM's (dead here: a call to it
/// fails with noproc).
fn local_pid(p: &PyPid) -> Option<Pid> {
    match p.target() {
        crate::types::PidTarget::Local(pid) => Some(pid),
        crate::types::PidTarget::Foreign(_) => None,
    }
}

/// The caller's half of `gen_server.call(server, request, timeout=5.0)`: the op that
/// compiled code runs with `yield from` (see the module docs).
#[pyfunction]
#[pyo3(signature = (server, request, timeout = default_timeout_obj()))]
pub(crate) fn _gen_call(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    request: &Bound<'_, PyAny>,
    timeout: PyObject,
) -> PyResult<ReceiveOp> {
    let timeout = timeout.bind(py);
    let t = parse_timeout(timeout)?;
    if !crate::driver::in_process() {
        return Err(PyRuntimeError::new_err(
            "gen_server.call() must be called inside a beamvm process (spawned with \
             beamvm.spawn or run by beamvm.run); from asyncio use beamvm.aio.call",
        ));
    }
    let timeout_term: PyObject = if timeout.is_none() {
        PyAtom(Atom::new("infinity")).into_py(py)
    } else {
        timeout.clone().unbind()
    };
    let mut call = CallMode {
        mref: Ref(0),
        remote: false,
        server: server.clone().unbind(),
        request: request.clone().unbind(),
        timeout: timeout_term,
    };
    let req = to_fragment(request)?;
    let remote = crate::dist::monitor_target(server)?;
    let (pid, sent) = match remote {
        // A server on another node: a remote monitor (whose DOWN uses a local ref) and
        // the request over the wire; the reply comes to our pid as `{Ref, Reply}`.
        Some(target) => {
            call.remote = true;
            let g = crate::dist::current().ok_or_else(|| PyRuntimeError::new_err("not a node"))?;
            let sent = with_cx(|cx| {
                let me = cx.self_pid();
                let mref = g.monitor(me, target);
                Some((me, mref))
            });
            let Some(Some((me, mref))) = sent else {
                return Err(call.error(py, PyAtom(Atom::new("calling_self")).into_py(py)));
            };
            let msg = PyTuple::new(
                py,
                [
                    PyAtom(Atom::new("$gen_call")).into_py(py),
                    (PyPid::local(me), crate::types::PyRef::local(mref)).into_py(py),
                    request.clone().unbind(),
                ],
            )?;
            crate::api::send(server, msg.as_any())?;
            (None, Some(Some(mref)))
        }
        None => match resolve(py, server)? {
            Some(pid) => (Some(pid), None),
            None => return Err(call.error(py, PyAtom(Atom::new("noproc")).into_py(py))),
        },
    };
    let sent = match (pid, sent) {
        (_, Some(s)) => s,
        (Some(pid), None) => local_call(pid, &req),
        (None, None) => None,
    };
    let mref = match sent {
        Some(r) => r,
        _ => return Err(call.error(py, PyAtom(Atom::new("calling_self")).into_py(py))),
    };
    call.mref = mref;
    let reply = Pattern::Tuple(vec![Pattern::Literal(Term::Ref(mref)), Pattern::Any]);
    let down = Pattern::Tuple(vec![
        Pattern::Literal(Term::Atom(Atom::DOWN)),
        Pattern::Literal(Term::Ref(mref)),
        Pattern::Any,
        Pattern::Any,
        Pattern::Any,
    ]);
    let key = Key::of_ref(mref);
    Ok(ReceiveOp::keyed(
        reply,
        vec![down],
        vec![key, key],
        t,
        Some(rt(py).missing.clone_ref(py)),
        Some(Box::new(call)),
    ))
}

/// Monitors the local server `pid` with an alias and sends it the request; `None` when
/// the caller is the server (or no process runs here).
fn local_call(pid: Pid, req: &vm_core::Fragment) -> Option<Ref> {
    with_cx(|cx| {
        let me = cx.self_pid();
        if me == pid {
            return None;
        }
        let mref = cx.monitor_alias(pid, AliasMode::Demonitor);
        let mut b = FragmentBuilder::new();
        b.atom(Atom::new("$gen_call")).pid(me).reference(mref);
        let built = b.tuple(2).and_then(|b| b.view(req.view()).tuple(3)).is_ok();
        if let Some(frag) = built.then(|| b.finish().ok()).flatten() {
            cx.send(pid, frag);
        }
        Some(mref)
    })
    .flatten()
}

/// `gen_server.cast(server, msg)`: sends `('$gen_cast', msg)` to the server and returns
/// at once; a dead server or an unknown name drops it, as in OTP (a bad via module or
/// a server of the wrong type is still an error). Native, so that a cast costs compiled
/// process code no Python frame.
#[pyfunction]
pub(crate) fn _gen_cast(
    py: Python<'_>,
    server: &Bound<'_, PyAny>,
    msg: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let Some(pid) = resolve(py, server)? else {
        return Ok(());
    };
    let m = to_fragment(msg)?;
    let mut b = FragmentBuilder::new();
    b.atom(Atom::new("$gen_cast")).view(m.view());
    b.tuple(2)
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let frag = b
        .finish()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let mut frag = Some(frag);
    // The fragment moves into the closure only when a process is running here.
    if with_cx(|cx| cx.send(pid, frag.take().expect("fragment"))).is_none() {
        vm()?.send(pid, frag.take().expect("fragment"));
    }
    Ok(())
}
