//! Process aliases from Python (OTP 24): `alias`, `unalias`, sending to an alias, and
//! the monitor option that makes a monitor's reference an alias. The semantics live in
//! vm-core's `alias.rs`; this file parses arguments and picks the process context or the
//! VM handle, as `api.rs` does for the other primitives.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vm_core::{AliasMode, Fragment, Ref};

use crate::args::{atom_of, ref_of};
use crate::driver::with_cx;
use crate::errors::outside;
use crate::lifecycle::vm;
use crate::types::PyRef;

/// Creates an alias of the calling process: a reference that routes messages sent to
/// it (`send(alias, msg)`) to this process until `unalias(alias)`, or — with
/// `reply=True` — until the first such message arrives. Messages sent to an inactive
/// alias are dropped by the VM.
#[pyfunction]
#[pyo3(signature = (*, reply=false))]
pub(crate) fn alias(reply: bool) -> PyResult<PyRef> {
    let mode = if reply {
        AliasMode::Reply
    } else {
        AliasMode::Explicit
    };
    with_cx(|cx| PyRef::local(cx.alias(mode))).ok_or_else(|| outside("alias"))
}

/// Deactivates an alias of the calling process; returns whether it was active. Messages
/// sent to it afterwards, and those still in flight, never reach the mailbox.
#[pyfunction]
pub(crate) fn unalias(ref_: &Bound<'_, PyAny>) -> PyResult<bool> {
    let r = ref_of(ref_, "unalias's argument")?;
    // A reference of another VM was never an alias of this process.
    with_cx(|cx| r.is_some_and(|r| cx.unalias(r))).ok_or_else(|| outside("unalias"))
}

/// Parses `monitor(..., alias=...)`: None (no alias) or OTP's option name.
pub(crate) fn parse_monitor_alias(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<AliasMode>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_none() {
        return Ok(None);
    }
    let a = atom_of(v, "monitor's alias option")?;
    match AliasMode::from_name(a.as_str()) {
        Some(AliasMode::Reply) | None => Err(PyValueError::new_err(format!(
            "monitor's alias must be 'demonitor', 'reply_demonitor' or 'explicit_unalias' \
             (or None), not {:?}",
            a.as_str()
        ))),
        Some(m) => Ok(Some(m)),
    }
}

/// Sends a message through an alias, from a process or from outside; a stale alias
/// drops it (not an error).
pub(crate) fn send_to_alias(r: Ref, frag: Fragment) -> PyResult<()> {
    let mut frag = Some(frag);
    // The fragment moves into the closure only when a process is running here.
    if with_cx(|cx| cx.send_alias(r, frag.take().expect("fragment"))).is_none() {
        vm()?.send_alias(r, frag.take().expect("fragment"));
    }
    Ok(())
}

/// Aliases routed by the VM, all processes together (a leak check for tests).
#[pyfunction]
pub(crate) fn _alias_count() -> PyResult<usize> {
    Ok(vm()?.alias_count())
}
