//! Argument parsing shared by the API functions: names (atoms), pids, refs, timeouts,
//! priorities. Each parser names the argument as the caller wrote it (`what`) and
//! says what it accepts.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use vm_core::{Atom, Priority};

use crate::errors::type_name;
use crate::types::{PidTarget, PyAtom, PyPid, PyRef, RefId};

pub(crate) fn atom_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Atom> {
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

/// A name to look up: the atom it names, or None when no atom has that name (so no
/// process can be registered under it). Never creates an atom: looking up 5,000
/// unknown names leaves the atom table as it was.
pub(crate) fn existing_atom_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<Atom>> {
    if let Ok(a) = obj.downcast::<PyAtom>() {
        return Ok(Some(a.get().0));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(Atom::existing(s.to_str()?));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a str or beamvm.Atom, not {}",
        obj.get_type().qualname()?
    )))
}

/// `obj` as the user wrote it (its repr), for error messages.
pub(crate) fn spelled(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| type_name(obj))
}

/// What a `Pid` argument names in the running VM: a local pid, or another VM's
/// (which the caller gives the dead-process behaviour).
pub(crate) fn pid_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<PidTarget> {
    obj.downcast::<PyPid>()
        .map(|p| p.get().target())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{what} must be a beamvm.Pid, not {}",
                type_name(obj)
            ))
        })
}

/// A `Ref` argument: `Some` for a reference made by this node, `None` for another VM's
/// (which is no monitor or timer here).
pub(crate) fn ref_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<vm_core::Ref>> {
    obj.downcast::<PyRef>()
        .map(|p| match p.get().0 {
            RefId::Local(r) => Some(r),
            RefId::External(_) => None,
        })
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{what} must be a beamvm.Ref, not {}",
                type_name(obj)
            ))
        })
}

pub(crate) fn parse_priority(obj: &Bound<'_, PyAny>) -> PyResult<Priority> {
    let a = atom_of(obj, "priority")?;
    Priority::from_name(a.as_str()).ok_or_else(|| {
        PyValueError::new_err(format!(
            "priority must be 'low', 'normal', 'high' or 'max', not {:?}",
            a.as_str()
        ))
    })
}

/// Parses a timeout in seconds (None: forever).
pub(crate) fn parse_timeout(t: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    parse_seconds(t, "timeout")
}

/// Seconds above this are treated as "forever" (about 31 years; `Instant + Duration`
/// cannot represent arbitrarily far deadlines).
const FOREVER_SECS: f64 = 1e9;

/// Parses a duration in seconds named `what` in errors: None, a non-negative int or
/// float; infinity, NaN-free huge values and ints too large for a float mean forever
/// (None).
pub(crate) fn parse_seconds(t: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<Duration>> {
    if t.is_none() {
        return Ok(None);
    }
    if t.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number of seconds or None, not bool"
        )));
    }
    let s: f64 = match t.extract::<f64>() {
        Ok(s) => s,
        Err(_) if t.is_instance_of::<pyo3::types::PyInt>() => {
            // An int too large for a float: forever if positive.
            if t.gt(0)? {
                return Ok(None);
            }
            return Err(PyValueError::new_err(format!(
                "{what} must be >= 0 seconds, got {t}"
            )));
        }
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "{what} must be a number of seconds or None, not {}",
                type_name(t)
            )))
        }
    };
    if s.is_nan() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be >= 0 seconds, got {s}"
        )));
    }
    if s.is_infinite() || s > FOREVER_SECS {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(s)))
}
