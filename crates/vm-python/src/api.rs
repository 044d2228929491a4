//! The process API: spawning, messages, links, monitors, exits, flags, names,
//! timers. Each function works from inside a process (through the current process's
//! context, [`with_cx`]) and, where Erlang allows it, from plain Python code outside any
//! process (through the VM handle, as the VM's [`vm_core::EXTERNAL_PID`]).

use std::sync::Arc;

use pyo3::exceptions::{PySystemError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use vm_core::term::FragmentBuilder;
use vm_core::{Atom, Error, Fragment, Pid, Priority, SpawnOpts};

use crate::args::{
    atom_of, existing_atom_of, parse_priority, parse_timeout, pid_of, ref_of, spelled,
};
use crate::convert::{self, frag_to_py, to_fragment};
use crate::driver::{copy_context, in_process, with_cx, PyProcess};
use crate::errors::{outside, vm_err, BadArg, ProcessExit};
use crate::lifecycle::{vm, MainSlot};
use crate::runtime::{self, rt};
use crate::types::{PidTarget, PyAtom, PyPid, PyRef};

/// A pid no process of this VM ever has: the process table never gives out its
/// highest index (reserved for `vm_core::EXTERNAL_PID`), and no slot reaches this
/// serial. A timer to another VM's pid targets it, so its message is dropped.
const NEVER_ALIVE: Pid = Pid::new(vm_core::term::MAX_PID_INDEX, u32::MAX);

pub(crate) fn make_body(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    main: Option<Arc<MainSlot>>,
    copy: bool,
) -> PyResult<PyProcess> {
    runtime::ready(py)?;
    if !f.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "a process must be callable, not {}",
            f.get_type().qualname()?
        )));
    }
    let r = rt(py);
    let gen = if copy {
        // Erlang copies spawn arguments: a child never sees its parent mutate them.
        let copied: Vec<PyObject> = args
            .iter()
            .map(|a| Ok(convert::copy_value(py, &a)?.unwrap_or_else(|| a.unbind())))
            .collect::<PyResult<_>>()?;
        let args = PyTuple::new(py, copied)?;
        let kw = match kwargs {
            Some(k) => {
                let d = PyDict::new(py);
                for (key, v) in k.iter() {
                    let v2 = convert::copy_value(py, &v)?.unwrap_or_else(|| v.unbind());
                    d.set_item(key, v2)?;
                }
                Some(d)
            }
            None => None,
        };
        r.compile_process.call1(py, (f, args, kw))?
    } else {
        r.compile_process.call1(py, (f, args, kwargs))?
    };
    let cell = r.new_cell.call0(py)?;
    let label = match f.getattr(pyo3::intern!(py, "__qualname__")) {
        Ok(q) => q.to_string(),
        Err(_) => f.get_type().qualname()?.to_string(),
    };
    // The spawner's current context, copied: the child starts with the parent's
    // context variables, as a thread started with `copy_context().run` does.
    let ctx = copy_context(py)?;
    Ok(PyProcess::new(py, gen, cell, label, main, ctx))
}

fn spawn_impl(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    opts: SpawnOpts,
    name: &str,
) -> PyResult<(Pid, Option<vm_core::Ref>)> {
    if !in_process() && (opts.link || opts.monitor) {
        return Err(outside(name));
    }
    let mut body = Some(Box::new(make_body(py, f, args, kwargs, None, true)?));
    // The body moves into the closure only when a process is running here.
    match with_cx(|cx| cx.spawn_opts(body.take().expect("body"), opts)) {
        Some(r) => r.map_err(vm_err),
        None => vm()?
            .spawn_opts(body.take().expect("body"), opts)
            .map(|p| (p, None))
            .map_err(vm_err),
    }
}

/// Spawns `f(*args, **kwargs)` as a process; returns its pid.
///
/// Arguments are copied as messages are (through their term form), so the child never
/// sees the caller mutate them; an argument with no term form (a function, a set, an
/// arbitrary object, or a container holding one) is passed by reference, shared.
#[pyfunction]
#[pyo3(signature = (f, /, *args, **kwargs))]
pub(crate) fn spawn(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyPid> {
    if !in_process() {
        vm()?;
    }
    spawn_impl(py, f, args, kwargs, SpawnOpts::default(), "spawn").map(|(p, _)| PyPid::local(p))
}

/// Spawns `f(*args, **kwargs)` linked to the calling process; returns its pid. Arguments
/// are copied as in `spawn`.
#[pyfunction]
#[pyo3(signature = (f, /, *args, **kwargs))]
pub(crate) fn spawn_link(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyPid> {
    if !in_process() {
        return Err(outside("spawn_link"));
    }
    let opts = SpawnOpts {
        link: true,
        ..SpawnOpts::default()
    };
    spawn_impl(py, f, args, kwargs, opts, "spawn_link").map(|(p, _)| PyPid::local(p))
}

/// Spawns `f(*args, **kwargs)` monitored by the calling process; returns `(pid, ref)`.
/// Arguments are copied as in `spawn`.
#[pyfunction]
#[pyo3(signature = (f, /, *args, **kwargs))]
pub(crate) fn spawn_monitor(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(PyPid, PyRef)> {
    if !in_process() {
        return Err(outside("spawn_monitor"));
    }
    let opts = SpawnOpts {
        monitor: true,
        ..SpawnOpts::default()
    };
    let (p, r) = spawn_impl(py, f, args, kwargs, opts, "spawn_monitor")?;
    let r = r.ok_or_else(|| PySystemError::new_err("spawn_monitor: the VM made no monitor"))?;
    Ok((PyPid::local(p), PyRef::local(r)))
}

/// Spawns with options: `spawn_opt(f, args=(), kwargs=None, *, link=False,
/// monitor=False, priority='normal', trap_exit=False)`; returns the pid, or
/// `(pid, ref)` when `monitor` is set.
#[pyfunction]
#[pyo3(signature = (f, args=None, kwargs=None, *, link=false, monitor=false, priority=None, trap_exit=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_opt(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: Option<&Bound<'_, PyTuple>>,
    kwargs: Option<&Bound<'_, PyDict>>,
    link: bool,
    monitor: bool,
    priority: Option<&Bound<'_, PyAny>>,
    trap_exit: bool,
) -> PyResult<PyObject> {
    let empty = PyTuple::empty(py);
    let args = args.unwrap_or(&empty);
    let opts = SpawnOpts {
        link,
        monitor,
        priority: match priority {
            Some(p) => parse_priority(p)?,
            None => Priority::Normal,
        },
        trap_exit,
    };
    if !in_process() {
        vm()?;
    }
    let (p, r) = spawn_impl(py, f, args, kwargs, opts, "spawn_opt")?;
    Ok(match r {
        Some(r) if monitor => (PyPid::local(p), PyRef::local(r)).into_py(py),
        _ => PyPid::local(p).into_py(py),
    })
}

/// Sends `msg` (copied) to a pid, an alias (a Ref), a registered name or a `('via',
/// module, key)` name; returns `msg`.
/// Sending to a dead pid or an inactive alias is not an error (the message is dropped);
/// to an unregistered name it is.
#[pyfunction]
pub(crate) fn send<'py>(
    dest: &Bound<'py, PyAny>,
    msg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    crate::msgtrace::sent(dest.py(), dest, msg);
    let mut frag = Some(to_fragment(msg)?);
    if let Ok(p) = dest.downcast_exact::<PyPid>() {
        let pid = match p.get().target() {
            PidTarget::Local(pid) => pid,
            PidTarget::Foreign(e) => {
                // Another node's process goes over the wire; a stopped VM's is dead
                // here: the message is dropped.
                if let Some(g) = crate::dist::current().filter(|g| g.is_remote(e.node)) {
                    let me = with_cx(|cx| cx.self_pid());
                    g.send(me, &e, frag.as_ref().expect("fragment"))?;
                }
                return Ok(msg.clone());
            }
        };
        // The fragment moves into the closure only when a process is running here.
        if with_cx(|cx| cx.send(pid, frag.take().expect("fragment"))).is_none() {
            vm()?.send(pid, frag.take().expect("fragment"));
        }
        return Ok(msg.clone());
    }
    if let Ok(r) = dest.downcast_exact::<PyRef>() {
        match r.get().0 {
            crate::types::RefId::Local(r) => {
                crate::alias::send_to_alias(r, frag.take().expect("fragment"))?;
            }
            // Another node's alias goes over the wire (ALIAS_SEND); a stopped VM's
            // routes nowhere: dropped, as to a dead alias.
            crate::types::RefId::External(e) => {
                if let Some(g) = crate::dist::current().filter(|g| g.is_remote(e.node())) {
                    let me = with_cx(|cx| cx.self_pid());
                    g.alias_send(me, &e, frag.as_ref().expect("fragment"))?;
                }
            }
        }

        return Ok(msg.clone());
    }
    if let Ok(t) = dest.downcast_exact::<PyTuple>() {
        if t.len() == 2 {
            // (name, node): a registered name on a node (this one or another).
            let name = atom_of(&t.get_item(0)?, "the name in a (name, node) destination")?;
            let node = atom_of(&t.get_item(1)?, "the node in a (name, node) destination")?;
            if node != crate::lifecycle::local_node() {
                let g = crate::dist::current().ok_or_else(|| {
                    PyTypeError::new_err(format!(
                        "cannot send to ({name}, {node}): this VM is not a distributed node \
                         (start it with beamvm.run(main, node='name@host'))"
                    ))
                })?;
                let me = with_cx(|cx| cx.self_pid());
                g.reg_send(me, name, node, frag.as_ref().expect("fragment"))?;
                return Ok(msg.clone());
            }
            match with_cx(|cx| cx.send_named(name, frag.take().expect("fragment"))) {
                Some(r) => r.map_err(vm_err)?,
                None => vm()?
                    .send_named(name, frag.take().expect("fragment"))
                    .map_err(vm_err)?,
            }
            return Ok(msg.clone());
        }
        // ('via', module, key): the via module sends (beamvm._otp.send_via).
        let py = dest.py();
        py.import("beamvm._otp")?
            .getattr("send_via")?
            .call1((dest, msg))?;
        return Ok(msg.clone());
    }
    let name = existing_atom_of(
        dest,
        "send's destination (a Pid, an alias Ref or a registered name)",
    )?;
    let Some(pid) = name.map(whereis_name).transpose()?.flatten() else {
        return Err(BadArg::new_err(format!(
            "send: no process is registered as {}",
            spelled(dest)
        )));
    };
    if with_cx(|cx| cx.send(pid, frag.take().expect("fragment"))).is_none() {
        vm()?.send(pid, frag.take().expect("fragment"));
    }
    Ok(msg.clone())
}

/// The pid registered as `name`, asked from the current process or the VM.
fn whereis_name(name: Atom) -> PyResult<Option<Pid>> {
    match with_cx(|cx| cx.whereis(name)) {
        Some(p) => Ok(p),
        None => Ok(vm()?.whereis(name)),
    }
}

/// The calling process's pid.
#[pyfunction]
pub(crate) fn self_pid() -> PyResult<PyPid> {
    with_cx(|cx| PyPid::local(cx.self_pid())).ok_or_else(|| outside("self_pid"))
}

/// Links the calling process to `pid` (NoProc if it is dead and exits are not trapped).
#[pyfunction]
pub(crate) fn link(pid: &Bound<'_, PyAny>) -> PyResult<bool> {
    let r = match pid_of(pid, "link's argument")? {
        PidTarget::Local(pid) => with_cx(|cx| cx.link(pid)),
        PidTarget::Foreign(e) if crate::dist::current().is_some_and(|g| g.is_remote(e.node)) => {
            let me = with_cx(|cx| cx.self_pid());
            me.map(|me| {
                if let Some(g) = crate::dist::current() {
                    g.link(me, &e);
                }
                Ok(())
            })
        }
        // Another VM's process is dead here: as erlang:link/1 to a dead pid.
        PidTarget::Foreign(e) => with_cx(|cx| {
            if !trapping(cx) {
                return Err(vm_core::Error::NoProc);
            }
            let mut b = FragmentBuilder::with_capacity(8);
            b.atom(Atom::EXIT).external_pid(&e).atom(Atom::NOPROC);
            if let Some(m) = tuple_of(b, 3) {
                let me = cx.self_pid();
                cx.send(me, m);
            }
            Ok(())
        }),
    };
    r.ok_or_else(|| outside("link"))?.map_err(vm_err)?;
    Ok(true)
}

/// The tuple of the `n` terms pushed on `b` (a message the API builds itself).
fn tuple_of(mut b: FragmentBuilder, n: usize) -> Option<vm_core::Fragment> {
    if b.tuple(n).is_err() {
        return None;
    }
    b.finish().ok()
}

/// Whether the process traps exits.
fn trapping(cx: &mut vm_core::Cx<'_>) -> bool {
    let on = cx.trap_exit(false);
    cx.trap_exit(on);
    on
}

/// Removes the link to `pid`, if any.
#[pyfunction]
pub(crate) fn unlink(pid: &Bound<'_, PyAny>) -> PyResult<bool> {
    let target = pid_of(pid, "unlink's argument")?;
    let me = with_cx(|cx| {
        if let PidTarget::Local(pid) = target {
            cx.unlink(pid);
        }
        cx.self_pid()
    })
    .ok_or_else(|| outside("unlink"))?;
    if let PidTarget::Foreign(e) = target {
        if let Some(g) = crate::dist::current().filter(|g| g.is_remote(e.node)) {
            g.unlink(me, &e);
        }
    }
    Ok(true)
}

/// Monitors `pid` (or a registered name): one `(Atom('DOWN'), ref, Atom('process'),
/// pid, reason)` message will come (`reason` = `Atom('noproc')` if it is not alive).
/// A name that no process has gives at once, as Erlang does, `(Atom('DOWN'), ref,
/// Atom('process'), (name, node), Atom('noproc'))`, `node` being this node's name
/// (`Atom('nonode@nohost')`).
/// With `alias='demonitor'` (or `'reply_demonitor'`, `'explicit_unalias'`) the
/// returned reference is also an alias of the caller (OTP's `{alias, Mode}` option;
/// not for a name no process has: its DOWN is already there; for a process on another
/// node it raises `NotImplementedError`).
#[pyfunction]
#[pyo3(signature = (target, *, alias=None))]
pub(crate) fn monitor(
    target: &Bound<'_, PyAny>,
    alias: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyRef> {
    let mode = crate::alias::parse_monitor_alias(alias)?;
    if let Some(remote) = crate::dist::monitor_target(target)? {
        let me = with_cx(|cx| cx.self_pid()).ok_or_else(|| outside("monitor"))?;
        if mode.is_some() {
            // Not silently a plain monitor: the alias would never be made.
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(
                "monitor(..., alias=...) of a process on another node is not supported; \
                 make the alias with beamvm.alias() and monitor without alias=",
            ));
        }
        if let Some(g) = crate::dist::current() {
            return Ok(PyRef::local(g.monitor(me, remote)));
        }
    }
    let pid = if target.downcast::<PyPid>().is_ok() {
        pid_of(target, "monitor's argument")?
    } else {
        if !in_process() {
            return Err(outside("monitor"));
        }
        let what = "monitor's argument (a Pid or a registered name)";
        match existing_atom_of(target, what)?
            .map(whereis_name)
            .transpose()?
            .flatten()
        {
            Some(pid) => PidTarget::Local(pid),
            None => {
                // No process has the name: the DOWN comes at once, naming what was
                // monitored. The reference is a fresh one that no monitor holds
                // (demonitor on it returns False).
                let name = atom_of(target, what)?;
                let r = vm_core::Ref::new();
                let mut b = FragmentBuilder::with_capacity(16);
                b.atom(Atom::DOWN)
                    .reference(r)
                    .atom(Atom::PROCESS)
                    .atom(name)
                    .atom(Atom::NONODE);
                if b.tuple(2).is_err() {
                    return Err(PySystemError::new_err("monitor: could not build DOWN"));
                }
                b.atom(Atom::NOPROC);
                let down = tuple_of(b, 5)
                    .ok_or_else(|| PySystemError::new_err("monitor: could not build DOWN"))?;
                with_cx(|cx| cx.send(cx.self_pid(), down)).ok_or_else(|| outside("monitor"))?;
                return Ok(PyRef::local(r));
            }
        }
    };
    let r = match pid {
        PidTarget::Local(pid) => with_cx(|cx| match mode {
            Some(m) => cx.monitor_alias(pid, m),
            None => cx.monitor(pid),
        }),
        // Another VM's process is dead here: the DOWN (noproc) comes at once.
        PidTarget::Foreign(e) => with_cx(|cx| {
            let r = vm_core::Ref::new();
            let mut b = FragmentBuilder::with_capacity(16);
            b.atom(Atom::DOWN)
                .reference(r)
                .atom(Atom::PROCESS)
                .external_pid(&e)
                .atom(Atom::NOPROC);
            if let Some(m) = tuple_of(b, 5) {
                let me = cx.self_pid();
                cx.send(me, m);
            }
            r
        }),
    };
    r.map(PyRef::local).ok_or_else(|| outside("monitor"))
}

/// Removes a monitor; with `flush`, also its DOWN message if it arrived. Returns
/// whether the monitor was still active.
#[pyfunction]
#[pyo3(signature = (ref_, flush=false))]
pub(crate) fn demonitor(ref_: &Bound<'_, PyAny>, flush: bool) -> PyResult<bool> {
    let r = ref_of(ref_, "demonitor's argument")?;
    let (local, me) = with_cx(|cx| (r.is_some_and(|r| cx.demonitor(r, flush)), cx.self_pid()))
        .ok_or_else(|| outside("demonitor"))?;
    if local {
        return Ok(true);
    }
    // A monitor of another node's process lives in the distribution layer.
    Ok(match (r, crate::dist::current()) {
        (Some(r), Some(g)) => g.demonitor(me, r),
        _ => false,
    })
}

/// An exit reason; the str spellings of the three atoms Erlang gives a meaning
/// (`'normal'`, `'kill'`, `'shutdown'`) are refused: as a str they would be ordinary
/// reasons (`exit(pid, 'kill')` would not kill, `exit('normal')` would kill the linked
/// processes).
fn exit_reason_of(reason: &Bound<'_, PyAny>) -> PyResult<Fragment> {
    if let Ok(s) = reason.downcast::<PyString>() {
        let constant = match s.to_str()? {
            "normal" => Some("NORMAL"),
            "kill" => Some("KILL"),
            "shutdown" => Some("SHUTDOWN"),
            _ => None,
        };
        if let Some(c) = constant {
            let name = s.to_str()?;
            return Err(PyTypeError::new_err(format!(
                "exit reason '{name}' is a str, not the atom {name}: a str is an ordinary \
                 (abnormal, trappable) exit reason. Use beamvm.{c} (Atom('{name}'))."
            )));
        }
    }
    to_fragment(reason)
}

/// `exit(reason)` ends the calling process with `reason` (raises ProcessExit);
/// `exit(pid, reason)` sends an exit signal (`KILL` cannot be trapped). Sent to the
/// calling process itself, a signal that ends it (any reason but `NORMAL` when not
/// trapping exits, `NORMAL` too as in Erlang, `KILL` always) takes effect at once: the
/// call raises ProcessExit and the process exits with that reason (`killed` for
/// `KILL`) even if the exception is caught.
#[pyfunction]
#[pyo3(signature = (*args))]
pub(crate) fn exit(args: &Bound<'_, PyTuple>) -> PyResult<bool> {
    match args.len() {
        1 => {
            let reason = args.get_item(0)?;
            exit_reason_of(&reason)?;
            Err(ProcessExit::new_err((reason.unbind(),)))
        }
        2 => {
            let target = pid_of(&args.get_item(0)?, "exit's first argument")?;
            let reason_obj = args.get_item(1)?;
            let reason = exit_reason_of(&reason_obj)?;
            let pid = match target {
                PidTarget::Local(pid) => pid,
                PidTarget::Foreign(e) => {
                    // Another node's process: EXIT2 over the wire; a stopped VM's is
                    // dead here: the signal goes nowhere.
                    if let Some(g) = crate::dist::current().filter(|g| g.is_remote(e.node)) {
                        let me = with_cx(|cx| cx.self_pid());
                        g.exit(me, &e, &reason)?;
                    }
                    return Ok(true);
                }
            };
            let is_kill = reason.view().as_atom() == Some(Atom::KILL);
            match with_cx(|cx| {
                cx.exit(pid, reason.clone());
                pid == cx.self_pid() && cx.is_exiting()
            }) {
                Some(true) => {
                    let py = args.py();
                    let ended = if is_kill {
                        PyAtom(Atom::KILLED).into_py(py)
                    } else {
                        reason_obj.unbind()
                    };
                    Err(ProcessExit::new_err((ended,)))
                }
                Some(false) => Ok(true),
                None => {
                    vm()?.exit(pid, reason);
                    Ok(true)
                }
            }
        }
        n => Err(PyTypeError::new_err(format!(
            "exit() takes exit(reason) or exit(pid, reason), got {n} arguments"
        ))),
    }
}

/// Sets a process flag and returns its old value: `trap_exit` (bool), `priority`
/// ('low', 'normal', 'high', 'max').
#[pyfunction]
pub(crate) fn process_flag(
    py: Python<'_>,
    flag: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<PyObject> {
    let f = atom_of(flag, "process_flag's flag")?;
    match f.as_str() {
        "trap_exit" => {
            let on = value
                .downcast::<PyBool>()
                .map_err(|_| {
                    PyTypeError::new_err(format!(
                        "process_flag('trap_exit', value) takes True or False, not {}",
                        spelled(value)
                    ))
                })?
                .is_true();
            let old = with_cx(|cx| cx.trap_exit(on)).ok_or_else(|| outside("process_flag"))?;
            Ok(old.into_py(py))
        }
        "priority" => {
            let p = parse_priority(value)?;
            let old = with_cx(|cx| cx.set_priority(p)).ok_or_else(|| outside("process_flag"))?;
            Ok(old.name().into_py(py))
        }
        other => Err(PyValueError::new_err(format!(
            "unknown process flag {other:?} (known: 'trap_exit', 'priority')"
        ))),
    }
}

/// Registers `pid` (default: the calling process) under `name`.
#[pyfunction]
#[pyo3(signature = (name, pid=None))]
pub(crate) fn register(name: &Bound<'_, PyAny>, pid: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let atom = atom_of(name, "a registered name")?;
    let pid = match pid {
        Some(p) => match pid_of(p, "register's pid")? {
            PidTarget::Local(pid) => pid,
            PidTarget::Foreign(e) => {
                return Err(BadArg::new_err(format!(
                    "cannot register {e}: it is a pid of another VM (one that has \
                     stopped), not a process of this one"
                )))
            }
        },
        None => with_cx(|cx| cx.self_pid()).ok_or_else(|| outside("register (without a pid)"))?,
    };
    vm()?
        .register(atom, pid)
        .map_err(|e| named(e, &format!("register({}, {pid})", spelled(name))))?;
    Ok(true)
}

/// A core error for a call on a name, saying the call as the user wrote it.
fn named(e: Error, call: &str) -> PyErr {
    match e {
        Error::BadArg(why) => BadArg::new_err(format!("{call}: {why}")),
        e => vm_err(e),
    }
}

/// Removes a registered name.
#[pyfunction]
pub(crate) fn unregister(name: &Bound<'_, PyAny>) -> PyResult<bool> {
    let call = || format!("unregister({})", spelled(name));
    let Some(atom) = existing_atom_of(name, "a registered name")? else {
        return Err(BadArg::new_err(format!(
            "{}: the name is not registered",
            call()
        )));
    };
    vm()?.unregister(atom).map_err(|e| named(e, &call()))?;
    Ok(true)
}

/// The pid registered as `name`, or None. Creates no atom.
#[pyfunction]
pub(crate) fn whereis(name: &Bound<'_, PyAny>) -> PyResult<Option<PyPid>> {
    let v = vm()?;
    Ok(existing_atom_of(name, "a registered name")?
        .and_then(|a| v.whereis(a))
        .map(PyPid::local))
}

/// A new unique reference.
#[pyfunction]
pub(crate) fn make_ref() -> PyRef {
    PyRef::local(vm_core::Ref::new())
}

/// Sends `msg` to `dest` after `seconds`; returns a timer reference for
/// `cancel_timer`. `dest` is a pid (the timer is cancelled if that process dies) or a
/// registered name, looked up when the timer fires, as Erlang's `send_after/3` with
/// an atom: never an error; the message is dropped if no process has the name then.
#[pyfunction]
pub(crate) fn send_after(
    seconds: &Bound<'_, PyAny>,
    dest: &Bound<'_, PyAny>,
    msg: &Bound<'_, PyAny>,
) -> PyResult<PyRef> {
    let t = parse_timeout(seconds)?
        .ok_or_else(|| PyValueError::new_err("send_after needs a finite delay"))?;
    let frag = to_fragment(msg)?;
    let v = vm()?;
    let mut frag = Some(frag);
    let r = if let Ok(p) = dest.downcast::<PyPid>() {
        let pid = match p.get().target() {
            PidTarget::Local(pid) => pid,
            // Another VM's process is dead here: the timer runs, its message is
            // dropped at expiry (a pid no process of this VM ever has).
            PidTarget::Foreign(_) => NEVER_ALIVE,
        };
        match with_cx(|cx| cx.send_after(t, pid, frag.take().expect("fragment"))) {
            Some(r) => r,
            None => v.send_after(t, pid, frag.take().expect("fragment")),
        }
    } else {
        let name = atom_of(
            dest,
            "send_after's destination (a Pid or a registered name)",
        )?;
        match with_cx(|cx| cx.send_after_named(t, name, frag.take().expect("fragment"))) {
            Some(r) => r,
            None => v.send_after_named(t, name, frag.take().expect("fragment")),
        }
    };
    Ok(PyRef::local(r))
}

/// Cancels a timer; returns the seconds it had left, or None if it already fired.
#[pyfunction]
pub(crate) fn cancel_timer(ref_: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let r = ref_of(ref_, "cancel_timer's argument")?;
    let v = vm()?;
    Ok(r.and_then(|r| v.cancel_timer(r)).map(|d| d.as_secs_f64()))
}

/// Seconds left on a timer, or None.
#[pyfunction]
pub(crate) fn read_timer(ref_: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let r = ref_of(ref_, "read_timer's argument")?;
    let v = vm()?;
    Ok(r.and_then(|r| v.read_timer(r)).map(|d| d.as_secs_f64()))
}

/// Whether `pid` is alive.
#[pyfunction]
pub(crate) fn is_alive(pid: &Bound<'_, PyAny>) -> PyResult<bool> {
    let target = pid_of(pid, "is_alive's argument")?;
    let v = vm()?;
    Ok(match target {
        PidTarget::Local(pid) => v.is_alive(pid),
        PidTarget::Foreign(_) => false,
    })
}

/// Converts a value to its term form and back (what a receiver would see).
#[pyfunction]
pub(crate) fn roundtrip(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<PyObject> {
    let f = to_fragment(obj)?;
    frag_to_py(py, &f)
}

/// Whether the caller runs inside a beamvm process.
#[pyfunction]
pub(crate) fn in_process_() -> bool {
    in_process()
}
