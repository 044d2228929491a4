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
//!
//! A server on another node is monitored through the distribution layer, so there the
//! alias is made apart (`alias()`, explicit) and given as the monitor's reference, and
//! the tag is gen.erl's `[alias | Ref]`: OTP 24+ servers (and beamvm's) answer `(Tag,
//! Reply)` through the alias (ALIAS_SEND), which the call deactivates when it ends
//! however it ends, so a late reply is dropped there too. Such a reply carries the ref
//! inside its tag, out of the mailbox index's reach, so a remote call's receive scans
//! ([`CallMode::take`]); the ref is unique, so the scan is exact.

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyList, PyString, PyTuple};
use vm_core::term::FragmentBuilder;
use vm_core::{AliasMode, Atom, Fragment, Key, Pid, Ref, View};

use crate::args::{atom_of, parse_timeout};
use crate::convert::{to_fragment, to_py};
use crate::driver::{stop_with, with_cx, ReceiveOp};
use crate::lifecycle::vm;
use crate::runtime::rt;
use crate::types::{PyAtom, PyPid};

/// Seconds a call waits by default (OTP's 5000 ms).
const DEFAULT_TIMEOUT: f64 = 5.0;

/// Words of a call request besides its request's: two tuples (headers and elements)
/// and a reference, with room to spare.
const CALL_WORDS: usize = 16;

/// What a call op needs to finish the call.
pub(crate) struct CallMode {
    mref: Ref,
    /// The server is on another node: its monitor lives in the distribution layer.
    remote: bool,
    server: PyObject,
    request: PyObject,
    timeout: PyObject,
}

/// The atoms a call or a cast uses, made once when `_native` is imported
/// ([`init_atoms`]): no atom table lookup per call, and a table filled by user code
/// later cannot make a call fail (issue 9 s.3).
struct CallAtoms {
    gen_call: Atom,
    gen_cast: Atom,
    gen_server: Atom,
    call: Atom,
    timeout: Atom,
    infinity: Atom,
    calling_self: Atom,
    alias: Atom,
}

static ATOMS: OnceLock<CallAtoms> = OnceLock::new();

fn make_atoms() -> Result<CallAtoms, vm_core::term::TermError> {
    Ok(CallAtoms {
        gen_call: Atom::try_new("$gen_call")?,
        gen_cast: Atom::try_new("$gen_cast")?,
        gen_server: Atom::try_new("gen_server")?,
        call: Atom::try_new("call")?,
        timeout: Atom::try_new("timeout")?,
        infinity: Atom::try_new("infinity")?,
        calling_self: Atom::try_new("calling_self")?,
        alias: Atom::try_new("alias")?,
    })
}

/// Makes the call atoms (at import, see `lib.rs`).
pub(crate) fn init_atoms() -> PyResult<()> {
    let made = make_atoms().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let _ = ATOMS.set(made);
    Ok(())
}

fn atoms() -> PyResult<&'static CallAtoms> {
    ATOMS
        .get()
        .ok_or_else(|| PyRuntimeError::new_err("beamvm._native was not initialised"))
}

static CALL_ERROR: GILOnceCell<PyObject> = GILOnceCell::new();
static WHEREIS: GILOnceCell<PyObject> = GILOnceCell::new();
static IMPROPER_LIST: GILOnceCell<PyObject> = GILOnceCell::new();

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
        let a = atoms()?;
        let t = (PyAtom(a.gen_server), PyAtom(a.call), args);
        Ok(t.into_pyobject(py)?.into_any().unbind())
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

    /// Removes the monitor (and a DOWN of it already queued) and deactivates the alias:
    /// from then on no reply reaches the mailbox.
    fn demonitor(&self) {
        let mref = self.mref;
        if !self.remote {
            with_cx(|cx| cx.demonitor(mref, true));
            return;
        }
        self.unalias_remote();
        let me = with_cx(|cx| cx.self_pid());
        if let (Some(me), Some(g)) = (me, crate::dist::current()) {
            g.demonitor(me, mref);
        }
        with_cx(|cx| cx.recv_keyed(Key::of_ref(mref), |m| m.tuple_len() == Some(5)));
    }

    /// A remote call's alias is not its monitor's (which lives in the distribution
    /// layer): it ends here, when the call ends, whatever ended it.
    fn unalias_remote(&self) {
        if self.remote {
            with_cx(|cx| cx.unalias(self.mref));
        }
    }

    /// Takes the call's reply or its server's DOWN from the mailbox, if one is there
    /// (see [`answers`]; a remote call's reply is found by a scan, module docs).
    pub(crate) fn take(&self, cx: &mut vm_core::Cx<'_>) -> Option<Fragment> {
        let mref = self.mref;
        if self.remote {
            return cx.recv_where(|v| answers_remote(v, mref));
        }
        cx.recv_keyed(Key::of_ref(mref), |v| answers(v, mref))
    }

    /// A reply already queued when the call timed out (after [`CallMode::demonitor`]).
    fn take_late_reply(&self) -> Option<Fragment> {
        let mref = self.mref;
        with_cx(|cx| {
            if self.remote {
                cx.recv_where(|v| v.tuple_len() == Some(2) && answers_remote(v, mref))
            } else {
                cx.recv_keyed(Key::of_ref(mref), |m| m.tuple_len() == Some(2))
            }
        })
        .flatten()
    }

    /// The outcome of the call, given what the receive finished with (see the module
    /// docs): the reply, or the `CallError` to raise.
    pub(crate) fn outcome(&self, py: Python<'_>, v: PyObject) -> PyResult<PyObject> {
        if v.is(&rt(py).missing) {
            // Timed out: after the demonitor no reply reaches the mailbox; one that is
            // already there is still ours.
            self.demonitor();
            if let Some(m) = self.take_late_reply() {
                return self.reply_of(py, &m);
            }
            return Err(self.error(py, PyAtom(atoms()?.timeout).into_py(py)));
        }
        let t = v.bind(py);
        if t.len()? == 2 {
            self.demonitor();
            return Ok(t.get_item(1)?.unbind());
        }
        self.unalias_remote();
        Err(self.error(py, t.get_item(4)?.unbind()))
    }

    /// The outcome of the call from the message its receive took, converting only the
    /// reply (or the DOWN's reason): a `(ref, reply)` or a `('DOWN', ref, ...)`.
    pub(crate) fn reply_of(&self, py: Python<'_>, m: &Fragment) -> PyResult<PyObject> {
        let v = m.view();
        if v.tuple_len() == Some(2) {
            self.demonitor();
            return v
                .tuple_get(1)
                .map_or_else(|| Ok(py.None()), |r| to_py(py, r));
        }
        self.unalias_remote();
        let reason = match v.tuple_get(4) {
            Some(r) => to_py(py, r)?,
            None => py.None(),
        };
        Err(self.error(py, reason))
    }

    /// [`CallMode::outcome`] as a `yield from` finishes: a `StopIteration` carrying the
    /// reply, or the `CallError`.
    pub(crate) fn finish(&self, py: Python<'_>, v: PyObject) -> PyErr {
        match self.outcome(py, v) {
            Ok(r) => stop_with(py, r),
            Err(e) => e,
        }
    }
}

static DEFAULT_TIMEOUT_OBJ: GILOnceCell<PyObject> = GILOnceCell::new();

/// [`DEFAULT_TIMEOUT`] as a Python float, made once (not a new float per call).
fn default_timeout(py: Python<'_>) -> PyObject {
    DEFAULT_TIMEOUT_OBJ
        .get_or_init(py, || DEFAULT_TIMEOUT.into_py(py))
        .clone_ref(py)
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
    let a = atoms()?;
    if !crate::driver::in_process() {
        return Err(PyRuntimeError::new_err(
            "gen_server.call() must be called inside a beamvm process (spawned with \
             beamvm.spawn or run by beamvm.run); from asyncio use beamvm.aio.call",
        ));
    }
    let timeout_term: PyObject = if timeout.is_none() {
        PyAtom(a.infinity).into_py(py)
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
    // A pid of this VM (the common case) needs no look at distribution.
    let local = match server.downcast_exact::<PyPid>() {
        Ok(p) => local_pid(p.get()),
        Err(_) => None,
    };
    let target = match local {
        Some(_) => None,
        None => crate::dist::monitor_target(server)?,
    };
    let sent = match target {
        // A server on another node: a remote monitor (whose DOWN uses a local ref) on
        // the call's alias, and the request over the wire with the tag `[alias | Ref]`;
        // the reply comes through the alias as `{[alias | Ref], Reply}` (module docs).
        Some(target) => {
            let g = crate::dist::current()
                .ok_or_else(|| PyRuntimeError::new_err("this VM is not a node"))?;
            let improper = IMPROPER_LIST
                .get_or_try_init(py, || {
                    Ok::<_, PyErr>(py.import("beamvm._wire")?.getattr("ImproperList")?.unbind())
                })?
                .bind(py);
            let Some((me, mref)) = with_cx(|cx| {
                let me = cx.self_pid();
                let alias = cx.alias(AliasMode::Explicit);
                (me, g.monitor_as(me, target, alias))
            }) else {
                return Err(call.error(py, PyAtom(a.calling_self).into_py(py)));
            };
            // From here the alias is the call's: ended by `outcome` however it ends.
            call.remote = true;
            call.mref = mref;
            let sent = (|| -> PyResult<()> {
                let elems = PyList::new(py, [PyAtom(a.alias)])?;
                let tag = improper.call1((elems, crate::types::PyRef::local(mref)))?;
                let from = PyTuple::new(py, [PyPid::local(me).into_py(py), tag.unbind()])?;
                let msg = PyTuple::new(
                    py,
                    [
                        PyAtom(a.gen_call).into_py(py),
                        from.into_any().unbind(),
                        request.clone().unbind(),
                    ],
                )?;
                crate::api::send(server, msg.as_any()).map(drop)
            })();
            if let Err(e) = sent {
                call.demonitor();
                return Err(e);
            }
            Some(Some(mref))
        }
        None => {
            let resolved = match local {
                Some(pid) => Some(pid),
                None => resolve(py, server)?,
            };
            let Some(pid) = resolved else {
                return Err(call.error(py, PyAtom(Atom::NOPROC).into_py(py)));
            };
            with_cx(|cx| {
                let me = cx.self_pid();
                if me == pid {
                    return None;
                }
                let mref = cx.monitor_alias(pid, AliasMode::Demonitor);
                // `{'$gen_call', {Pid, Ref}, Request}`: the tuples' words, the ref's
                // and the request's, allocated once (no growth, no shrink at finish).
                let mut b = FragmentBuilder::with_capacity(CALL_WORDS + req.word_count());
                b.atom(a.gen_call).pid(me).reference(mref);
                let built = b.tuple(2).and_then(|b| b.view(req.view()).tuple(3)).is_ok();
                if let Some(frag) = built.then(|| b.finish().ok()).flatten() {
                    cx.send(pid, frag);
                }
                Some(mref)
            })
        }
    };
    let mref = match sent {
        Some(Some(r)) => r,
        _ => return Err(call.error(py, PyAtom(a.calling_self).into_py(py))),
    };
    call.mref = mref;
    Ok(ReceiveOp::call(
        Box::new(call),
        t,
        Some(rt(py).missing.clone_ref(py)),
    ))
}

/// Whether `v` answers the call whose monitor (and alias) is `mref`: its reply
/// `(mref, reply)` or its server's `('DOWN', mref, process, pid, reason)` -- what a
/// call's receive takes (gen.erl's receive in `do_call`).
pub(crate) fn answers(v: View<'_>, mref: Ref) -> bool {
    match v.tuple_len() {
        Some(2) => v.tuple_get(0).and_then(|e| e.as_ref()) == Some(mref),
        Some(5) => {
            v.tuple_get(0).and_then(|e| e.as_atom()) == Some(Atom::DOWN)
                && v.tuple_get(1).and_then(|e| e.as_ref()) == Some(mref)
        }
        _ => false,
    }
}

/// [`answers`] for a call to another node, whose reply's tag is `[alias | mref]`
/// (in the VM the tagged tuple `('$improper', [alias], mref)`); a reply tagged with
/// `mref` itself, or a server's DOWN, as for a local call.
fn answers_remote(v: View<'_>, mref: Ref) -> bool {
    if answers(v, mref) {
        return true;
    }
    let is_tag = |t: View<'_>| {
        t.tuple_len() == Some(3)
            && t.tuple_get(0).and_then(|e| e.as_atom()) == Some(crate::dist::tags().improper)
            && t.tuple_get(2).and_then(|e| e.as_ref()) == Some(mref)
    };
    v.tuple_len() == Some(2) && v.tuple_get(0).is_some_and(is_tag)
}

/// The server's half of answering a call: for `from_ = (Pid, Tag)` whose tag is an
/// alias of this VM (a caller here: `gen_server.call` made it), sends `(Tag, value)`
/// through it, as `send(tag, (tag, value))` does, without the Python tuple; a reply
/// after the caller gave up is dropped by the VM. Returns False, sending nothing, for
/// any other `from_` (a caller on another node): `reply` knows those forms.
#[pyfunction]
pub(crate) fn _gen_reply(
    py: Python<'_>,
    from_: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let Ok(t) = from_.downcast_exact::<PyTuple>() else {
        return Ok(false);
    };
    if t.len() != 2 {
        return Ok(false);
    }
    let tag = t.get_item(1)?;
    let Ok(r) = tag.downcast_exact::<crate::types::PyRef>() else {
        return Ok(false);
    };
    let crate::types::RefId::Local(mref) = r.get().0 else {
        return Ok(false);
    };
    if crate::msgtrace::is_on() {
        // The trace reports the message as Python code would have sent it.
        let msg = PyTuple::new(py, [tag.clone(), value.clone()])?;
        crate::api::send(&tag, msg.as_any())?;
        return Ok(true);
    }
    crate::alias::send_to_alias(mref, crate::convert::tagged_fragment(mref, value)?)?;
    Ok(true)
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
    b.atom(atoms()?.gen_cast).view(m.view());
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
