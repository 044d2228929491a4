//! The web observer from Python: `HttpObserver`, `_serve_http`, `_serve_http_relay`
//! and `_observer_get` (what `beamvm.observer.serve_http`, `python -m beamvm observer
//! --attach` and the socket observer's `{"get": ...}` requests use).
//!
//! Invariants:
//! * The server ([`vm_observer`]) runs on its own native threads and never takes the
//!   GIL: it finds the VM through [`crate::lifecycle::current`] (a lock, no Python),
//!   so it keeps answering while Python processes hold the GIL on every scheduler,
//!   and it outlives VM starts and stops (a stopped VM reads as `"running": false`).
//! * Binding, closing and answering a relayed request run with the GIL released.
//! * The process page's stack trace comes from [`crate::stacktrace::provider`], which
//!   takes the GIL for one walk of the process's frames (only that page needs it).

use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use vm_observer::{relay::Relay, Backend, HttpServer, Local, StackTraceFn};

fn vm_source() -> vm_observer::VmSource {
    Arc::new(crate::lifecycle::current)
}

/// The stack-trace provider for process pages (see the module docs).
fn stacktrace_provider() -> Option<StackTraceFn> {
    Some(crate::stacktrace::provider())
}

/// A running web observer; `close()` stops it and frees the port.
#[pyclass(name = "HttpObserver", module = "beamvm._native", frozen)]
pub struct PyHttpObserver {
    server: HttpServer,
    host: String,
    attached_to: Option<String>,
}

#[pymethods]
impl PyHttpObserver {
    /// The port it listens on (the one the OS picked when asked for port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// The host it was bound to.
    #[getter]
    fn host(&self) -> &str {
        &self.host
    }

    /// The page's address, e.g. `http://127.0.0.1:8080/`.
    #[getter]
    fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{}/", self.port())
    }

    /// Whether `close()` has run.
    #[getter]
    fn closed(&self) -> bool {
        self.server.is_closed()
    }

    /// Stops serving and frees the port (idempotent); connections in hand finish.
    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.server.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "serving" };
        match &self.attached_to {
            Some(sock) => format!(
                "<beamvm.observer.HttpObserver {} for {sock} {state}>",
                self.url()
            ),
            None => format!("<beamvm.observer.HttpObserver {} {state}>", self.url()),
        }
    }
}

fn start(
    py: Python<'_>,
    host: &str,
    port: u16,
    backend: Backend,
    attached_to: Option<String>,
) -> PyResult<PyHttpObserver> {
    let server = py
        .allow_threads(|| vm_observer::serve(host, port, backend))
        .map_err(|e| {
            let msg = format!("cannot serve the beamvm web observer on {host}:{port}: {e}");
            match e.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, msg)),
                None => PyOSError::new_err(msg),
            }
        })?;
    Ok(PyHttpObserver {
        server,
        host: host.to_owned(),
        attached_to,
    })
}

/// Serves the web observer of this process's VM on `host:port` (0: any free port).
#[pyfunction]
#[pyo3(signature = (host, port))]
pub(crate) fn _serve_http(py: Python<'_>, host: &str, port: u16) -> PyResult<PyHttpObserver> {
    let local = Local::new(vm_source(), stacktrace_provider());
    start(py, host, port, Backend::Local(local), None)
}

/// Serves the web observer of the program whose observer socket is `socket`.
#[pyfunction]
#[pyo3(signature = (socket, host, port))]
pub(crate) fn _serve_http_relay(
    py: Python<'_>,
    socket: &str,
    host: &str,
    port: u16,
) -> PyResult<PyHttpObserver> {
    let relay = Relay::new(socket);
    py.allow_threads(|| relay.probe())
        .map_err(PyOSError::new_err)?;
    start(
        py,
        host,
        port,
        Backend::Relay(relay),
        Some(socket.to_owned()),
    )
}

/// The back end that answers relayed requests (one per process, for its cache).
fn shared_local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| Local::new(vm_source(), stacktrace_provider()))
}

/// Answers a data request `target` (e.g. `/api/snapshot?n=10`) for a relay: returns
/// `(status, content_type, body)`. Computed with the GIL released.
#[pyfunction]
pub(crate) fn _observer_get(py: Python<'_>, target: &str) -> PyResult<(u16, String, String)> {
    let req = vm_observer::http::parse_head(&format!("GET {target} HTTP/1.1"))
        .map_err(|e| PyValueError::new_err(format!("bad observer request target: {e}")))?;
    let r = py.allow_threads(|| shared_local().answer(&req));
    let body = String::from_utf8(r.body)
        .map_err(|_| PyValueError::new_err("the observer produced a non-UTF-8 body"))?;
    Ok((r.status, r.content_type, body))
}

/// Adds this module's names to `beamvm._native`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHttpObserver>()?;
    m.add_function(wrap_pyfunction!(_serve_http, m)?)?;
    m.add_function(wrap_pyfunction!(_serve_http_relay, m)?)?;
    m.add_function(wrap_pyfunction!(_observer_get, m)?)?;
    Ok(())
}
