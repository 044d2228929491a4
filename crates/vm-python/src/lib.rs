//! The `beamvm._native` extension module: the VM's Python binding.
//!
//! * [`types`]: `Atom`, `Pid`, `Ref`, `Binary` (zero-copy shared bytes).
//! * [`convert`]: Python values <-> terms (the table of what maps to what).
//! * [`pattern`]: receive patterns compiled to matchers over term views.
//! * [`driver`]: the Python process body, the GIL slice hook, the current process.
//! * [`runtime`]: the Python protocol objects and the exceptions.
//! * this file: the VM's life cycle (`start`, `stop`, `run`) and the process API.
//!
//! Locking rule: never wait for a process's lock while holding the GIL (a scheduler
//! holds a process's lock while it waits for the GIL to run it): calls that lock a
//! process (`process_info`) and the VM's start/stop release the GIL first.

#![allow(deprecated)] // IntoPy::into_py: still the plain way in pyo3 0.23

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use vm_core::{Atom, Error, Pid, Priority, SpawnOpts, Vm, VmConfig, VmRef};

mod compiled; // compiled process code: StopIteration carried out of a generator
pub mod convert;
pub mod driver;
mod introspect; // observer: top, proc_window, statistics_full, system monitor, snapshot
pub mod pattern;
pub mod runtime;
mod timeslice;
pub mod types; // slices end by time: the yield-now flag and its timer

use convert::{frag_to_py, to_fragment};
use driver::{in_process, parse_timeout, with_cx, GilHook, MainSlot, Outcome, PyProcess};
use runtime::{rt, BadArg, NoProc, ProcessExit, SystemLimit, Timeout};
use types::{PyAtom, PyBinary, PyPid, PyRef};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static VM: Mutex<Option<Vm>> = Mutex::new(None);
static HANDLE: RwLock<Option<VmRef>> = RwLock::new(None);

fn vm_err(e: Error) -> PyErr {
    match e {
        Error::SystemLimit => SystemLimit::new_err(e.to_string()),
        Error::NoProc => NoProc::new_err(e.to_string()),
        Error::BadArg(_) => BadArg::new_err(e.to_string()),
        Error::NotRunning => PyRuntimeError::new_err(e.to_string()),
        Error::Term(_) => PyValueError::new_err(e.to_string()),
    }
}

fn outside(name: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "{name}() must be called inside a beamvm process (spawned with beamvm.spawn or run \
         by beamvm.run)"
    ))
}

fn vm() -> PyResult<VmRef> {
    HANDLE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| {
            PyRuntimeError::new_err(
                "beamvm is not running: use beamvm.run(main) or beamvm.start() first",
            )
        })
}

fn atom_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Atom> {
    if let Ok(a) = obj.downcast::<PyAtom>() {
        return Ok(a.get().0);
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Atom::try_new(s.to_str()?).map_err(|e| PyValueError::new_err(e.to_string()));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a str or beamvm.Atom, not {}",
        obj.get_type().qualname()?
    )))
}

fn pid_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Pid> {
    obj.downcast::<PyPid>().map(|p| p.get().0).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a beamvm.Pid, not {}",
            obj.get_type()
                .qualname()
                .map(|s| s.to_string())
                .unwrap_or_default()
        ))
    })
}

fn ref_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<vm_core::Ref> {
    obj.downcast::<PyRef>().map(|p| p.get().0).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a beamvm.Ref, not {}",
            obj.get_type()
                .qualname()
                .map(|s| s.to_string())
                .unwrap_or_default()
        ))
    })
}

// --------------------------------------------------------------------------- life cycle

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
                "batch_time" => c.batch_time = parse_timeout(&v)?.unwrap_or(Duration::from_secs(1)),
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "unknown beamvm setting {other:?} (known: schedulers, \
                         schedulers_online, process_limit, reductions, dirty_cpu, dirty_io, \
                         batch_time)"
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

fn start_vm(py: Python<'_>, cfg: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    runtime::ready(py)?;
    if in_process() {
        return Err(PyRuntimeError::new_err(
            "beamvm cannot be started from inside a beamvm process",
        ));
    }
    let c = config_from(cfg)?;
    let mut g = VM.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_some() {
        return Err(PyRuntimeError::new_err(
            "beamvm is already running (one VM per interpreter; call beamvm.stop() first)",
        ));
    }
    let v = py.allow_threads(|| Vm::start(c)).map_err(vm_err)?;
    *HANDLE.write().unwrap_or_else(|e| e.into_inner()) = Some(v.handle());
    *g = Some(v);
    Ok(())
}

/// How long stopping the VM waits for schedulers to finish their slice.
const STOP_WAIT: Duration = Duration::from_secs(5);

fn stop_vm(py: Python<'_>) -> PyResult<bool> {
    if in_process() {
        return Err(PyRuntimeError::new_err(
            "beamvm cannot be stopped from inside a beamvm process (return from main instead)",
        ));
    }
    let v = VM.lock().unwrap_or_else(|e| e.into_inner()).take();
    *HANDLE.write().unwrap_or_else(|e| e.into_inner()) = None;
    match v {
        Some(mut v) => {
            let stuck = py.allow_threads(move || {
                let stuck = v.shutdown_within(Some(STOP_WAIT));
                if stuck > 0 {
                    // Dropping would wait again; the stuck threads keep what they use.
                    std::mem::forget(v);
                }
                stuck
            });
            if stuck > 0 {
                let msg = format!(
                    "beamvm: {stuck} scheduler thread(s) did not stop within {} s: a process \
                     is running code that cannot be preempted (a C call, or a function \
                     without source such as one defined in `python -c`); it was left \
                     running. Move long calls to beamvm.dirty_cpu/dirty_io.",
                    STOP_WAIT.as_secs()
                );
                let c = std::ffi::CString::new(msg.clone()).unwrap_or_default();
                let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
                if PyErr::warn(py, &category, &c, 1).is_err() {
                    // Warnings cannot be raised right now (e.g. while a Ctrl-C is being
                    // handled, a second KeyboardInterrupt comes back): say it plainly.
                    eprintln!("{msg}");
                }
            }
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Starts the VM for embedding (settings as keyword arguments; see `beamvm.run`).
#[pyfunction]
#[pyo3(signature = (**config))]
fn start(py: Python<'_>, config: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    start_vm(py, config)
}

/// Stops the VM: every process is dropped; returns False if it was not running.
#[pyfunction]
fn stop(py: Python<'_>) -> PyResult<bool> {
    stop_vm(py)
}

/// Whether the VM is running.
#[pyfunction]
fn is_running() -> bool {
    HANDLE.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Starts the VM, runs `main(*args)` as a process, stops the VM, returns main's result.
#[pyfunction]
#[pyo3(signature = (main, args, config=None))]
fn run(
    py: Python<'_>,
    main: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    config: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyObject> {
    start_vm(py, config)?;
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

// --------------------------------------------------------------------------- processes

fn make_body(
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
    Ok(PyProcess::new(gen, cell, label, main))
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
fn spawn(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyPid> {
    if !in_process() {
        vm()?;
    }
    spawn_impl(py, f, args, kwargs, SpawnOpts::default(), "spawn").map(|(p, _)| PyPid(p))
}

/// Spawns `f(*args, **kwargs)` linked to the calling process; returns its pid. Arguments
/// are copied as in `spawn`.
#[pyfunction]
#[pyo3(signature = (f, /, *args, **kwargs))]
fn spawn_link(
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
    spawn_impl(py, f, args, kwargs, opts, "spawn_link").map(|(p, _)| PyPid(p))
}

/// Spawns `f(*args, **kwargs)` monitored by the calling process; returns `(pid, ref)`.
/// Arguments are copied as in `spawn`.
#[pyfunction]
#[pyo3(signature = (f, /, *args, **kwargs))]
fn spawn_monitor(
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
    Ok((PyPid(p), PyRef(r.unwrap_or(vm_core::Ref(0)))))
}

fn parse_priority(obj: &Bound<'_, PyAny>) -> PyResult<Priority> {
    let a = atom_of(obj, "priority")?;
    Priority::from_name(a.as_str()).ok_or_else(|| {
        PyValueError::new_err(format!(
            "priority must be 'low', 'normal', 'high' or 'max', not {:?}",
            a.as_str()
        ))
    })
}

/// Spawns with options: `spawn_opt(f, args=(), kwargs=None, *, link=False,
/// monitor=False, priority='normal', trap_exit=False)`; returns the pid, or
/// `(pid, ref)` when `monitor` is set.
#[pyfunction]
#[pyo3(signature = (f, args=None, kwargs=None, *, link=false, monitor=false, priority=None, trap_exit=false))]
#[allow(clippy::too_many_arguments)]
fn spawn_opt(
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
        Some(r) if monitor => (PyPid(p), PyRef(r)).into_py(py),
        _ => PyPid(p).into_py(py),
    })
}

/// Sends `msg` (copied) to a pid or registered name; returns `msg`. Sending to a dead
/// pid is not an error (the message is dropped); to an unregistered name it is.
#[pyfunction]
fn send<'py>(dest: &Bound<'py, PyAny>, msg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let mut frag = Some(to_fragment(msg)?);
    if let Ok(p) = dest.downcast_exact::<PyPid>() {
        let pid = p.get().0;
        // The fragment moves into the closure only when a process is running here.
        if with_cx(|cx| cx.send(pid, frag.take().expect("fragment"))).is_none() {
            vm()?.send(pid, frag.take().expect("fragment"));
        }
        return Ok(msg.clone());
    }
    let name = atom_of(dest, "send's destination (a Pid or a registered name)")?;
    match with_cx(|cx| cx.send_named(name, frag.take().expect("fragment"))) {
        Some(r) => r.map_err(vm_err)?,
        None => vm()?
            .send_named(name, frag.take().expect("fragment"))
            .map_err(vm_err)?,
    }
    Ok(msg.clone())
}

/// The calling process's pid.
#[pyfunction]
fn self_pid() -> PyResult<PyPid> {
    with_cx(|cx| PyPid(cx.self_pid())).ok_or_else(|| outside("self_pid"))
}

/// Links the calling process to `pid` (NoProc if it is dead and exits are not trapped).
#[pyfunction]
fn link(pid: &Bound<'_, PyAny>) -> PyResult<bool> {
    let pid = pid_of(pid, "link's argument")?;
    with_cx(|cx| cx.link(pid))
        .ok_or_else(|| outside("link"))?
        .map_err(vm_err)?;
    Ok(true)
}

/// Removes the link to `pid`, if any.
#[pyfunction]
fn unlink(pid: &Bound<'_, PyAny>) -> PyResult<bool> {
    let pid = pid_of(pid, "unlink's argument")?;
    with_cx(|cx| cx.unlink(pid)).ok_or_else(|| outside("unlink"))?;
    Ok(true)
}

/// Monitors `pid` (or a registered name): one `(Atom('DOWN'), ref, Atom('process'),
/// pid, reason)` message will come (`reason` = `Atom('noproc')` if it is not alive).
#[pyfunction]
fn monitor(target: &Bound<'_, PyAny>) -> PyResult<PyRef> {
    let pid = if target.downcast::<PyPid>().is_ok() {
        pid_of(target, "monitor's argument")?
    } else {
        let name = atom_of(target, "monitor's argument (a Pid or a registered name)")?;
        match vm()?.whereis(name) {
            Some(p) => p,
            None => Pid::new(vm_core::term::MAX_PID_INDEX, u32::MAX),
        }
    };
    with_cx(|cx| PyRef(cx.monitor(pid))).ok_or_else(|| outside("monitor"))
}

/// Removes a monitor; with `flush`, also its DOWN message if it arrived. Returns
/// whether the monitor was still active.
#[pyfunction]
#[pyo3(signature = (ref_, flush=false))]
fn demonitor(ref_: &Bound<'_, PyAny>, flush: bool) -> PyResult<bool> {
    let r = ref_of(ref_, "demonitor's argument")?;
    with_cx(|cx| cx.demonitor(r, flush)).ok_or_else(|| outside("demonitor"))
}

/// `exit(reason)` ends the calling process with `reason` (raises ProcessExit);
/// `exit(pid, reason)` sends an exit signal (`Atom('kill')` cannot be trapped).
#[pyfunction]
#[pyo3(signature = (*args))]
fn exit(args: &Bound<'_, PyTuple>) -> PyResult<bool> {
    match args.len() {
        1 => {
            let reason = args.get_item(0)?;
            to_fragment(&reason)?;
            Err(ProcessExit::new_err((reason.unbind(),)))
        }
        2 => {
            let pid = pid_of(&args.get_item(0)?, "exit's first argument")?;
            let reason = to_fragment(&args.get_item(1)?)?;
            if with_cx(|cx| cx.exit(pid, reason.clone())).is_none() {
                vm()?.exit(pid, reason);
            }
            Ok(true)
        }
        n => Err(PyTypeError::new_err(format!(
            "exit() takes exit(reason) or exit(pid, reason), got {n} arguments"
        ))),
    }
}

/// Sets a process flag and returns its old value: `trap_exit` (bool), `priority`
/// ('low', 'normal', 'high', 'max').
#[pyfunction]
fn process_flag(
    py: Python<'_>,
    flag: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<PyObject> {
    let f = atom_of(flag, "process_flag's flag")?;
    match f.as_str() {
        "trap_exit" => {
            let on = value.is_truthy()?;
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
fn register(name: &Bound<'_, PyAny>, pid: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let name = atom_of(name, "a registered name")?;
    let pid = match pid {
        Some(p) => pid_of(p, "register's pid")?,
        None => with_cx(|cx| cx.self_pid()).ok_or_else(|| outside("register (without a pid)"))?,
    };
    vm()?.register(name, pid).map_err(vm_err)?;
    Ok(true)
}

/// Removes a registered name.
#[pyfunction]
fn unregister(name: &Bound<'_, PyAny>) -> PyResult<bool> {
    let name = atom_of(name, "a registered name")?;
    vm()?.unregister(name).map_err(vm_err)?;
    Ok(true)
}

/// The pid registered as `name`, or None.
#[pyfunction]
fn whereis(name: &Bound<'_, PyAny>) -> PyResult<Option<PyPid>> {
    let name = atom_of(name, "a registered name")?;
    Ok(vm()?.whereis(name).map(PyPid))
}

/// A new unique reference.
#[pyfunction]
fn make_ref() -> PyRef {
    PyRef(vm_core::Ref::new())
}

/// Sends `msg` to `dest` (a pid, or a name resolved now) after `seconds`; returns a
/// timer reference for `cancel_timer`.
#[pyfunction]
fn send_after(
    seconds: &Bound<'_, PyAny>,
    dest: &Bound<'_, PyAny>,
    msg: &Bound<'_, PyAny>,
) -> PyResult<PyRef> {
    let t = parse_timeout(seconds)?
        .ok_or_else(|| PyValueError::new_err("send_after needs a finite delay"))?;
    let frag = to_fragment(msg)?;
    let v = vm()?;
    let pid = if let Ok(p) = dest.downcast::<PyPid>() {
        p.get().0
    } else {
        let name = atom_of(
            dest,
            "send_after's destination (a Pid or a registered name)",
        )?;
        v.whereis(name).ok_or_else(|| {
            BadArg::new_err(format!("no process is registered as {:?}", name.as_str()))
        })?
    };
    Ok(PyRef(
        match with_cx(|cx| cx.send_after(t, pid, frag.clone())) {
            Some(r) => r,
            None => v.send_after(t, pid, frag),
        },
    ))
}

/// Cancels a timer; returns the seconds it had left, or None if it already fired.
#[pyfunction]
fn cancel_timer(ref_: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let r = ref_of(ref_, "cancel_timer's argument")?;
    Ok(vm()?.cancel_timer(r).map(|d| d.as_secs_f64()))
}

/// Seconds left on a timer, or None.
#[pyfunction]
fn read_timer(ref_: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let r = ref_of(ref_, "read_timer's argument")?;
    Ok(vm()?.read_timer(r).map(|d| d.as_secs_f64()))
}

/// Whether `pid` is alive.
#[pyfunction]
fn is_alive(pid: &Bound<'_, PyAny>) -> PyResult<bool> {
    let pid = pid_of(pid, "is_alive's argument")?;
    Ok(vm()?.is_alive(pid))
}

fn pids(py: Python<'_>, v: &[Pid]) -> PyResult<Py<PyList>> {
    Ok(PyList::new(py, v.iter().map(|p| PyPid(*p)))?.unbind())
}

/// A snapshot of a process (default: the caller) as a dict, or None if it is dead.
#[pyfunction]
#[pyo3(signature = (pid=None))]
fn process_info(py: Python<'_>, pid: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Py<PyDict>>> {
    let me = with_cx(|cx| cx.self_pid());
    let pid = match pid {
        Some(p) => pid_of(p, "process_info's argument")?,
        None => me.ok_or_else(|| outside("process_info (without a pid)"))?,
    };
    let v = vm()?;
    let d = PyDict::new(py);
    if Some(pid) == me {
        // The caller's own control block is locked by its scheduler while it runs:
        // answer from its context and the published counters.
        let (links, qlen, trap) = with_cx(|cx| {
            let links = cx.links();
            let q = cx.message_queue_len();
            let old = cx.trap_exit(false);
            cx.trap_exit(old);
            (links, q, old)
        })
        .unwrap_or_default();
        d.set_item("pid", PyPid(pid))?;
        d.set_item("status", "running")?;
        d.set_item("message_queue_len", qlen)?;
        d.set_item("links", pids(py, &links)?)?;
        d.set_item("trap_exit", trap)?;
        d.set_item("registered_name", py.None())?;
        return Ok(Some(d.unbind()));
    }
    let Some(info) = py.allow_threads(|| v.process_info(pid)) else {
        return Ok(None);
    };
    d.set_item("pid", PyPid(info.pid))?;
    d.set_item("status", info.status)?;
    d.set_item("priority", info.priority)?;
    d.set_item("reductions", info.reductions)?;
    d.set_item("message_queue_len", info.message_queue_len)?;
    d.set_item("memory", info.memory)?;
    d.set_item("heap_size", info.heap_size)?;
    d.set_item("minor_gcs", info.minor_gcs)?;
    d.set_item("major_gcs", info.major_gcs)?;
    d.set_item("links", pids(py, &info.links)?)?;
    d.set_item("monitors", pids(py, &info.monitors)?)?;
    d.set_item("monitored_by", pids(py, &info.monitored_by)?)?;
    d.set_item("trap_exit", info.trap_exit)?;
    d.set_item(
        "registered_name",
        info.registered_name.map(|a| a.as_str().to_owned()),
    )?;
    d.set_item("current_function", info.current)?;
    Ok(Some(d.unbind()))
}

/// Pids of all live processes.
#[pyfunction]
fn processes(py: Python<'_>) -> PyResult<Py<PyList>> {
    let v = vm()?;
    pids(py, &v.processes())
}

/// Memory by category in bytes: total, processes, binary, atom, system.
#[pyfunction]
fn memory(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let m = vm()?.memory();
    let d = PyDict::new(py);
    d.set_item("total", m.total)?;
    d.set_item("processes", m.processes)?;
    d.set_item("binary", m.binary)?;
    d.set_item("atom", m.atom)?;
    d.set_item("system", m.system)?;
    Ok(d.unbind())
}

/// System facts: schedulers, dirty pools, limits, counts, version.
#[pyfunction]
fn system_info(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let s = vm()?.system_info();
    let d = PyDict::new(py);
    d.set_item("schedulers", s.schedulers)?;
    d.set_item("schedulers_online", s.schedulers_online)?;
    d.set_item("dirty_cpu_schedulers", s.dirty_cpu_schedulers)?;
    d.set_item("dirty_io_schedulers", s.dirty_io_schedulers)?;
    d.set_item("process_limit", s.process_limit)?;
    d.set_item("process_count", s.process_count)?;
    d.set_item("reductions_per_slice", s.reductions_per_slice)?;
    d.set_item("atom_count", s.atom_count)?;
    d.set_item("atom_limit", s.atom_limit)?;
    d.set_item("registered", s.registered)?;
    d.set_item("timers", s.timers)?;
    d.set_item("version", s.version)?;
    Ok(d.unbind())
}

/// Scheduler and process statistics (the same dict as `statistics_full`).
#[pyfunction]
fn statistics(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let s = vm()?.statistics();
    Ok(introspect::stats_dict(py, &s)?.unbind())
}

/// Converts a value to its term form and back (what a receiver would see).
#[pyfunction]
fn roundtrip(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<PyObject> {
    let f = to_fragment(obj)?;
    frag_to_py(py, &f)
}

/// Whether the caller runs inside a beamvm process.
#[pyfunction]
fn in_process_() -> bool {
    in_process()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyAtom>()?;
    m.add_class::<PyPid>()?;
    m.add_class::<PyRef>()?;
    m.add_class::<PyBinary>()?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("SystemLimit", py.get_type::<SystemLimit>())?;
    m.add("NoProc", py.get_type::<NoProc>())?;
    m.add("BadArg", py.get_type::<BadArg>())?;
    m.add("ProcessExit", py.get_type::<ProcessExit>())?;
    m.add_function(wrap_pyfunction!(runtime::_setup, m)?)?;
    m.add_class::<driver::ReceiveOp>()?;
    m.add_function(wrap_pyfunction!(driver::_receive, m)?)?;
    m.add_function(wrap_pyfunction!(driver::_recv, m)?)?;
    m.add_function(wrap_pyfunction!(driver::_quiesce_dirty, m)?)?;
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(stop, m)?)?;
    m.add_function(wrap_pyfunction!(is_running, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(spawn, m)?)?;
    m.add_function(wrap_pyfunction!(spawn_link, m)?)?;
    m.add_function(wrap_pyfunction!(spawn_monitor, m)?)?;
    m.add_function(wrap_pyfunction!(spawn_opt, m)?)?;
    m.add_function(wrap_pyfunction!(send, m)?)?;
    m.add_function(wrap_pyfunction!(self_pid, m)?)?;
    m.add_function(wrap_pyfunction!(link, m)?)?;
    m.add_function(wrap_pyfunction!(unlink, m)?)?;
    m.add_function(wrap_pyfunction!(monitor, m)?)?;
    m.add_function(wrap_pyfunction!(demonitor, m)?)?;
    m.add_function(wrap_pyfunction!(exit, m)?)?;
    m.add_function(wrap_pyfunction!(process_flag, m)?)?;
    m.add_function(wrap_pyfunction!(register, m)?)?;
    m.add_function(wrap_pyfunction!(unregister, m)?)?;
    m.add_function(wrap_pyfunction!(whereis, m)?)?;
    m.add_function(wrap_pyfunction!(make_ref, m)?)?;
    m.add_function(wrap_pyfunction!(send_after, m)?)?;
    m.add_function(wrap_pyfunction!(cancel_timer, m)?)?;
    m.add_function(wrap_pyfunction!(read_timer, m)?)?;
    m.add_function(wrap_pyfunction!(is_alive, m)?)?;
    m.add_function(wrap_pyfunction!(process_info, m)?)?;
    m.add_function(wrap_pyfunction!(processes, m)?)?;
    m.add_function(wrap_pyfunction!(memory, m)?)?;
    m.add_function(wrap_pyfunction!(system_info, m)?)?;
    m.add_function(wrap_pyfunction!(statistics, m)?)?;
    m.add_function(wrap_pyfunction!(roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(in_process_, m)?)?;
    introspect::register(m)?; // introspect.rs
                              // timeslice.rs: slices end by time as well as by reductions
    m.add_function(wrap_pyfunction!(timeslice::_timeslice_setup, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_overdue, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_raise_yield_flag, m)?)?;
    m.add_function(wrap_pyfunction!(compiled::_set_stop_carrier, m)?)?; // compiled.rs
    Ok(())
}
