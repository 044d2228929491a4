//! Native support for compiled process code (python/beamvm/_compiler.py).
//!
//! A compiled function is a generator, and PEP 479 turns a `StopIteration` leaving a
//! generator into `RuntimeError`. So a compiled function returns a carrier object
//! (`_compiler._StopCarrier`, holding the exception) instead of letting a
//! `StopIteration` out, and its caller re-raises it. A process body that ends that way
//! has raised `StopIteration`, as plain Python would have: [`carried_stop`] gives the
//! driver the exception to end the process with.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

static CARRIER: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// Registers the carrier type (called once by `beamvm/__init__.py`).
#[pyfunction]
pub(crate) fn _set_stop_carrier(py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<()> {
    let t = t
        .downcast::<PyType>()
        .map_err(|_| PyTypeError::new_err("_set_stop_carrier expects a type"))?;
    let _ = CARRIER.set(py, t.clone().unbind());
    Ok(())
}

/// The `StopIteration` a process body's return value carries, if it is a carrier.
pub(crate) fn carried_stop(py: Python<'_>, v: &Bound<'_, PyAny>) -> Option<PyErr> {
    let t = CARRIER.get(py)?;
    if !v.get_type().is(t.bind(py)) {
        return None;
    }
    let exc = v.getattr(pyo3::intern!(py, "exc")).ok()?;
    Some(PyErr::from_value(exc))
}
