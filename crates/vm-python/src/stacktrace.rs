//! `process_info(pid, "current_stacktrace")` and the web observer's stack-trace
//! provider: a Python process's stack, read from its generator between slices.
//!
//! Invariants:
//! * Never waits for a process: the body is read under a `try_lock`
//!   ([`vm_core::VmRef::with_body`]); a process in a slice (or a native one) has no
//!   readable stack and gives None. Only the generator is cloned under the process's
//!   lock; its frames are walked (`beamvm._stacktrace.frames`) after the lock is let go,
//!   with the GIL held, so no process code runs meanwhile.
//! * The caller asking for its own stack is answered from its running frames by the
//!   Python half (its body is locked by its own scheduler).
//! * The observer's provider runs on the observer's native threads: it takes the GIL
//!   for one walk (a process page, not the charts or tables, which need no GIL).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyList;
use vm_core::Pid;

use crate::args::pid_of;
use crate::driver::PyProcess;
use crate::types::PidTarget;

/// The generator of `pid`'s body (its outermost Python frame), if it is a Python
/// process between slices.
fn generator_of(py: Python<'_>, pid: Pid) -> Option<PyObject> {
    let v = crate::lifecycle::vm().ok()?;
    v.with_body(pid, |b| {
        b.as_any()?.downcast_ref::<PyProcess>()?.generator(py)
    })
    .flatten()
}

/// `pid`'s generator, or None (not alive, not a Python process, in a slice now).
#[pyfunction]
pub(crate) fn _process_generator(py: Python<'_>, pid: &Bound<'_, PyAny>) -> PyResult<PyObject> {
    let pid = match pid_of(pid, "current_stacktrace's pid")? {
        PidTarget::Local(p) => p,
        PidTarget::Foreign(_) => return Ok(py.None()),
    };
    Ok(generator_of(py, pid).unwrap_or_else(|| py.None()))
}

fn frames(py: Python<'_>, pid: Pid) -> PyResult<Option<Vec<vm_observer::Frame>>> {
    let Some(gen) = generator_of(py, pid) else {
        return Ok(None);
    };
    let got = py
        .import("beamvm._stacktrace")?
        .getattr("frames")?
        .call1((gen,))?;
    let list = got.downcast::<PyList>()?;
    let mut out = Vec::with_capacity(list.len());
    for f in list.iter() {
        let (module, function, file, line): (String, String, String, u32) = f.extract()?;
        out.push(vm_observer::Frame {
            module,
            function,
            file,
            line,
        });
    }
    Ok(Some(out))
}

/// The provider the web observer's process page calls (see the module docs).
pub(crate) fn provider() -> vm_observer::StackTraceFn {
    Arc::new(|pid| {
        // The interpreter is exiting: leave Python alone.
        let _pass = crate::finalize::enter()?;
        Python::with_gil(|py| frames(py, pid).unwrap_or(None))
    })
}

/// Adds this module's functions to `beamvm._native`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_process_generator, m)?)?;
    Ok(())
}
