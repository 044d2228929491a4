//! Introspection: `process_info`, `processes`, `memory`, `system_info`, `statistics`,
//! and the live views for operators, `top`, `proc_window`, `statistics_full`,
//! `set_system_monitor` and `snapshot` (what `beamvm.observer` serves and
//! `python -m beamvm top` shows).
//!
//! Invariants:
//! * Nothing here stops the world. The core's queries read published atomics or walk
//!   the process table lock-free (tens of ms per million processes); every walk runs
//!   with the GIL released, so Python processes keep running while an observer thread
//!   looks, and a process that calls these functions holds no one else up.
//! * Nothing here waits for a process: `snapshot` describes the listed processes with
//!   `process_summary` (published counters; the label only if the process's lock is
//!   free), never `process_info`, which waits for a running process's slice to end (a
//!   busy process keeps re-taking its lock, so that wait can last hundreds of ms) and
//!   would deadlock on the caller's own process.
//! * Callable from processes and from plain threads; a stopped VM is a RuntimeError
//!   that says how to start one, a bad argument a ValueError.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use vm_core::{Pid, Statistics, VmRef};

use crate::args::pid_of;
use crate::driver::with_cx;
use crate::errors::outside;
use crate::types::{PidTarget, PyPid};

/// The keys `top` and `proc_window` rank by.
const BY: [&str; 3] = ["message_queue_len", "memory", "reductions"];

fn handle() -> PyResult<VmRef> {
    crate::lifecycle::vm()
}

fn check_by(by: &str) -> PyResult<()> {
    if BY.contains(&by) {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "by={by:?}: expected 'message_queue_len', 'memory' or 'reductions'"
        )))
    }
}

fn check_n(n: i64) -> PyResult<usize> {
    usize::try_from(n).map_err(|_| PyValueError::new_err(format!("n must be >= 0, got {n}")))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ratio(busy: Duration, total: Duration) -> f64 {
    if total.is_zero() {
        0.0
    } else {
        (busy.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    }
}

fn ranked(v: Vec<(Pid, u64)>) -> Vec<(PyPid, u64)> {
    v.into_iter().map(|(p, n)| (PyPid::local(p), n)).collect()
}

/// The `n` processes with the largest `by` (`message_queue_len`, `memory` in bytes or
/// `reductions`), largest first, as `(pid, value)`. One lock-free walk of the process
/// table with the GIL released (~tens of ms per million processes).
#[pyfunction]
#[pyo3(signature = (n=10, by="message_queue_len"))]
pub(crate) fn top(py: Python<'_>, n: i64, by: &str) -> PyResult<Vec<(PyPid, u64)>> {
    check_by(by)?;
    let n = check_n(n)?;
    let v = handle()?;
    let by = by.to_owned();
    let out = py
        .allow_threads(move || v.top(n, &by))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(ranked(out))
}

/// recon's `proc_window`: the `n` processes whose `by` grew most over `interval`
/// seconds, largest growth first, as `(pid, growth)`. Blocks the caller (not the VM)
/// for `interval`, with the GIL released; called from a process, it holds that
/// process's scheduler thread meanwhile (the watchdog hands its queue to the others).
#[pyfunction]
#[pyo3(signature = (n=10, by="reductions", interval=1.0))]
pub(crate) fn proc_window(
    py: Python<'_>,
    n: i64,
    by: &str,
    interval: f64,
) -> PyResult<Vec<(PyPid, u64)>> {
    check_by(by)?;
    let n = check_n(n)?;
    if !interval.is_finite() || interval < 0.0 {
        return Err(PyValueError::new_err(format!(
            "interval must be a finite number of seconds >= 0, got {interval}"
        )));
    }
    let v = handle()?;
    let by = by.to_owned();
    let out = py
        .allow_threads(move || v.proc_window(n, &by, Duration::from_secs_f64(interval)))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(ranked(out))
}

pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &Statistics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let wall: Vec<(f64, f64)> = s
        .scheduler_wall_time
        .iter()
        .map(|(b, t)| (secs(*b), secs(*t)))
        .collect();
    let uptime = s
        .scheduler_wall_time
        .first()
        .map(|(_, t)| secs(*t))
        .unwrap_or(0.0);
    d.set_item("uptime", uptime)?;
    d.set_item("scheduler_wall_time", wall)?;
    d.set_item("scheduler_utilisation", s.scheduler_utilisation())?;
    d.set_item("slices", s.slices.clone())?;
    d.set_item("run_queue_lengths", s.run_queue_lengths.clone())?;
    d.set_item("global_run_queue", s.global_run_queue)?;
    d.set_item("total_reductions", s.total_reductions)?;
    d.set_item("context_switches", s.context_switches)?;
    d.set_item("spawned", s.spawned)?;
    d.set_item("exited", s.exited)?;
    let longest: Vec<f64> = s.longest_slice.iter().map(|d| secs(*d)).collect();
    d.set_item("longest_slice", longest)?;
    d.set_item("long_schedules", s.long_schedules)?;
    d.set_item("watchdog_takeovers", s.watchdog_takeovers)?;
    d.set_item("gcs", s.gcs)?;
    d.set_item("gc_reclaimed_bytes", s.gc_reclaimed_bytes)?;
    let (cb, ct) = s.dirty_cpu_wall_time;
    let (ib, it) = s.dirty_io_wall_time;
    d.set_item("dirty_cpu_wall_time", (secs(cb), secs(ct)))?;
    d.set_item("dirty_io_wall_time", (secs(ib), secs(it)))?;
    d.set_item("dirty_cpu_utilisation", ratio(cb, ct))?;
    d.set_item("dirty_io_utilisation", ratio(ib, it))?;
    d.set_item("dirty_cpu_queued", s.dirty_queued.0)?;
    d.set_item("dirty_io_queued", s.dirty_queued.1)?;
    d.set_item("dirty_cpu_completed", s.dirty_completed.0)?;
    d.set_item("dirty_io_completed", s.dirty_completed.1)?;
    d.set_item("messages_sent", s.messages_sent)?;
    Ok(d)
}

/// Everything in the core's `Statistics`, durations in float seconds: `uptime`,
/// `scheduler_wall_time` (per scheduler `(busy, total)`), `scheduler_utilisation`
/// (busy / total since start, per scheduler), `slices`, `run_queue_lengths`,
/// `global_run_queue`, `total_reductions`, `context_switches`, `spawned`, `exited`,
/// `longest_slice`, `long_schedules`, `watchdog_takeovers`, `gcs`,
/// `gc_reclaimed_bytes`, `dirty_cpu_wall_time` / `dirty_io_wall_time` (`(busy,
/// total)`, total = threads x uptime), `dirty_cpu_utilisation`,
/// `dirty_io_utilisation`, `dirty_cpu_queued`, `dirty_io_queued`,
/// `dirty_cpu_completed`, `dirty_io_completed`, `messages_sent`. Reads counters only.
#[pyfunction]
pub(crate) fn statistics_full(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let v = handle()?;
    let s = py.allow_threads(move || v.statistics());
    Ok(stats_dict(py, &s)?.unbind())
}

/// Sets (or with None clears) the process that receives system monitor events, like
/// `erlang:system_monitor/2`; returns the previous one. Events are messages
/// `(Atom('monitor'), pid, Atom('long_schedule'), [(Atom('timeout'), ms), (Atom('in'),
/// label)])` for every slice that ran past the long_schedule threshold (10 ms).
#[pyfunction]
#[pyo3(signature = (pid))]
pub(crate) fn set_system_monitor(pid: Option<&Bound<'_, PyAny>>) -> PyResult<Option<PyPid>> {
    let pid = match pid {
        None => None,
        Some(p) => match pid_of(p, "set_system_monitor's argument (a Pid or None)")? {
            PidTarget::Local(p) => Some(p),
            PidTarget::Foreign(e) => {
                return Err(crate::errors::BadArg::new_err(format!(
                    "{e} is a pid of another VM (one that has stopped), not a process \
                     of this one: it cannot receive system monitor events"
                )))
            }
        },
    };
    Ok(handle()?.set_system_monitor(pid).map(PyPid::local))
}

/// What one snapshot gathers, without the GIL.
struct Gathered {
    system: vm_core::SystemInfo,
    memory: vm_core::Memory,
    stats: Statistics,
    tops: Vec<(&'static str, Vec<(Pid, u64)>)>,
    infos: Vec<vm_core::ProcessSummary>,
    took: Duration,
}

fn gather(v: &VmRef, n: usize) -> vm_core::Result<Gathered> {
    let t0 = std::time::Instant::now();
    let system = v.system_info();
    let memory = v.memory();
    let stats = v.statistics();
    let mut tops = Vec::with_capacity(BY.len());
    let mut wanted: Vec<Pid> = Vec::new();
    for by in BY {
        let t = v.top(n, by)?;
        wanted.extend(t.iter().map(|(p, _)| *p));
        tops.push((by, t));
    }
    wanted.sort();
    wanted.dedup();
    let infos = wanted
        .into_iter()
        .filter_map(|p| v.process_summary(p))
        .collect();
    Ok(Gathered {
        system,
        memory,
        stats,
        tops,
        infos,
        took: t0.elapsed(),
    })
}

/// One observer snapshot as a dict: `system_info`, `memory`, `statistics` (as
/// `statistics_full`), `process_count`, `top` (`{by: [{pid, value, name, current,
/// status, message_queue_len, memory, reductions}, ...]}` for each of
/// message_queue_len, memory and reductions, `n` each) and `took` (seconds spent
/// gathering). All walks run with the GIL released; per-process details are read
/// without waiting (`current` is None while the process is in a slice; a process that
/// died meanwhile keeps only pid and value).
#[pyfunction]
#[pyo3(signature = (n=10))]
pub(crate) fn snapshot(py: Python<'_>, n: i64) -> PyResult<Py<PyDict>> {
    let n = check_n(n)?;
    let v = handle()?;
    let g = py
        .allow_threads(move || gather(&v, n))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let d = PyDict::new(py);
    let s = &g.system;
    d.set_item("system_info", system_info_dict(py, s)?)?;
    d.set_item("memory", memory_dict(py, &g.memory)?)?;
    d.set_item("statistics", stats_dict(py, &g.stats)?)?;
    d.set_item("process_count", s.process_count)?;
    let top = PyDict::new(py);
    for (by, list) in &g.tops {
        let rows = PyList::empty(py);
        for (pid, value) in list {
            let row = PyDict::new(py);
            row.set_item("pid", PyPid::local(*pid))?;
            row.set_item("value", *value)?;
            if let Some(i) = g.infos.iter().find(|i| i.pid == *pid) {
                row.set_item("name", i.registered_name.map(|a| a.as_str().to_owned()))?;
                row.set_item("current", i.current.as_deref())?;
                row.set_item("priority", i.priority)?;
                row.set_item("status", i.status)?;
                row.set_item("message_queue_len", i.message_queue_len)?;
                row.set_item("memory", i.memory)?;
                row.set_item("reductions", i.reductions)?;
            }
            rows.append(row)?;
        }
        top.set_item(*by, rows)?;
    }
    d.set_item("top", top)?;
    d.set_item("took", secs(g.took))?;
    Ok(d.unbind())
}

fn pids(py: Python<'_>, v: &[Pid]) -> PyResult<Py<PyList>> {
    Ok(PyList::new(py, v.iter().map(|p| PyPid::local(*p)))?.unbind())
}

/// A snapshot of a process (default: the caller) as a dict, or None if it is dead.
/// The keys are the same for every process; for the calling process `status` is
/// `'running'` and `current_function` is the function that called `process_info`
/// (for another process: the function it was spawned with). Asking about oneself
/// reads one's own state and never waits.
#[pyfunction]
#[pyo3(signature = (pid=None))]
pub(crate) fn process_info(
    py: Python<'_>,
    pid: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyDict>>> {
    let me = with_cx(|cx| cx.self_pid());
    let pid = match pid {
        Some(p) => match pid_of(p, "process_info's argument")? {
            PidTarget::Local(p) => p,
            // Another VM's process is dead here.
            PidTarget::Foreign(_) => return Ok(None),
        },
        None => me.ok_or_else(|| outside("process_info (without a pid)"))?,
    };
    let v = handle()?;
    let own = Some(pid) == me;
    let info = if own {
        // The innermost frame that is not beamvm's own `process_info` wrapper.
        let mut frame = py.import("sys")?.call_method1("_getframe", (0,))?;
        let caller = loop {
            let code = frame.getattr("f_code")?;
            let name = code.getattr("co_qualname")?.extract::<String>()?;
            let file = code.getattr("co_filename")?.extract::<String>()?;
            let sep = std::path::MAIN_SEPARATOR;
            let wrapper = file.contains(&format!("{sep}beamvm{sep}"));
            let back = frame.getattr("f_back")?;
            if !wrapper || back.is_none() {
                break name;
            }
            frame = back;
        };
        with_cx(|cx| cx.process_info(caller)).ok_or_else(|| outside("process_info"))?
    } else {
        match py.allow_threads(|| v.process_info(pid)) {
            Some(info) => info,
            None => return Ok(None),
        }
    };
    let d = PyDict::new(py);
    d.set_item("pid", PyPid::local(info.pid))?;
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
    let aliases = if own {
        with_cx(|cx| cx.aliases().len()).unwrap_or_default()
    } else {
        py.allow_threads(|| v.aliases_of(pid)).unwrap_or(0)
    };
    d.set_item("aliases", aliases)?;
    d.set_item("trap_exit", info.trap_exit)?;
    d.set_item(
        "registered_name",
        info.registered_name.map(|a| a.as_str().to_owned()),
    )?;
    d.set_item("current_function", info.current)?;
    Ok(Some(d.unbind()))
}

/// Pids of all live processes (one walk of the table, with the GIL released).
#[pyfunction]
pub(crate) fn processes(py: Python<'_>) -> PyResult<Py<PyList>> {
    let v = handle()?;
    let mut all = py.allow_threads(move || v.processes());
    // Distribution's helpers (watchers) are the system's, as erl's are not user code.
    crate::dist::drop_system(&mut all);
    pids(py, &all)
}

/// `memory()`'s dict: bytes by category (the Python objects of process frames are in
/// `processes`, declared to vm-core by `alloc::Counted`; `allocator` is measured by
/// `alloc::cached`, vm-core's allocator probe).
fn memory_dict<'py>(py: Python<'py>, m: &vm_core::Memory) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("total", m.total)?;
    d.set_item("processes", m.processes)?;
    d.set_item("binary", m.binary)?;
    d.set_item("atom", m.atom)?;
    d.set_item("system", m.system)?;
    d.set_item("allocator", m.allocator)?;
    Ok(d)
}

/// `system_info()`'s dict.
fn system_info_dict<'py>(py: Python<'py>, s: &vm_core::SystemInfo) -> PyResult<Bound<'py, PyDict>> {
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
    Ok(d)
}

/// Memory by category in bytes: `processes` (control blocks, heaps, queued messages in
/// inboxes and mailboxes, and the Python objects of process frames as measured at
/// spawn), `binary` (shared binaries, each counted once, Python `bytes` shared without
/// a copy included), `atom`, `system` (process table, timers and the messages they
/// hold), `allocator` (what the allocator keeps committed beyond those: caches that
/// `release_memory()` returns, and fragmentation), and `total`, their sum. One walk of
/// the table, with the GIL released.
#[pyfunction]
pub(crate) fn memory(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let v = handle()?;
    let m = py.allow_threads(move || v.memory());
    Ok(memory_dict(py, &m)?.unbind())
}

/// Returns the memory the allocators keep for reuse to the OS now (what
/// `memory()['allocator']` counts as cache, and the free pages of the C library's heaps,
/// where Python's large objects live); the number of bytes that came back. The
/// allocator does this by itself over time when threads keep allocating; an idle VM
/// after a burst keeps its pages until this is called.
#[pyfunction]
pub(crate) fn release_memory(py: Python<'_>) -> usize {
    py.allow_threads(crate::alloc::release)
}

/// System facts: schedulers, dirty pools, limits, counts, version.
#[pyfunction]
pub(crate) fn system_info(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let v = handle()?;
    let s = py.allow_threads(move || v.system_info());
    Ok(system_info_dict(py, &s)?.unbind())
}

/// Scheduler and process statistics (the same dict as `statistics_full`).
#[pyfunction]
pub(crate) fn statistics(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let v = handle()?;
    let s = py.allow_threads(move || v.statistics());
    Ok(stats_dict(py, &s)?.unbind())
}

/// Adds this module's functions to `beamvm._native`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(top, m)?)?;
    m.add_function(wrap_pyfunction!(proc_window, m)?)?;
    m.add_function(wrap_pyfunction!(statistics_full, m)?)?;
    m.add_function(wrap_pyfunction!(set_system_monitor, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(process_info, m)?)?;
    m.add_function(wrap_pyfunction!(processes, m)?)?;
    m.add_function(wrap_pyfunction!(memory, m)?)?;
    m.add_function(wrap_pyfunction!(release_memory, m)?)?;
    m.add_function(wrap_pyfunction!(system_info, m)?)?;
    m.add_function(wrap_pyfunction!(statistics, m)?)?;
    Ok(())
}
