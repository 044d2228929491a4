//! The native half of `beamvm.tcp`: sockets owned by processes, on vm-core's reactor.
//!
//! Each function here is one reactor operation done by the calling process (its pid is
//! the caller and, for `listen`/`connect`/`accept`, the new socket's owner). None of
//! them blocks: an operation that must wait returns `None`/`False`, and
//! `python/beamvm/tcp.py` then receives the completion message
//! (`('$tcp', sock, op, result)`, see vm-core's `io::messages`) with a keyed receive,
//! the timeout being a receive timeout followed by [`_tcp_cancel`]. Options were
//! validated by `tcp.py` (naming them as the user wrote them); what reaches here is
//! checked again and refused with `ValueError`/`TypeError`, never a panic.
//!
//! Errors are raised as `beamvm.tcp.TcpError` (an `OSError`) carrying Erlang's reason
//! (`closed`, `econnrefused`, `emfile`...), built by `tcp._error`.
//!
//! A socket in Python is a [`PySocket`] (`#Socket<N>`); in a term it is
//! `{'$socket', Id}` (crates/vm-python/src/convert.rs maps the two), so it travels in
//! messages and matches in receive patterns like any value.

use std::net::{IpAddr, Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyString};
use vm_core::io::{
    Accept, ActiveOpt, Addr, IoError, ListenOpts, Packet, Reactor, Recv, SendStatus, SetOpts,
    SockName, SocketId, SocketOpts,
};
use vm_core::term::Binary;
use vm_core::Pid;

use crate::args::pid_of;
use crate::driver::with_cx;
use crate::errors::{outside, type_name};
use crate::types::{PidTarget, PyBinary};

/// A socket owned by a process (gen_tcp's port). Immutable; equal by identity of the
/// socket it names; sent in messages as `('$socket', id)`.
///
/// It also carries the creation of the VM that made it (as pids do): socket ids start
/// afresh in each VM, so a socket kept from a stopped VM must not name the new VM's
/// socket of the same number. Used after its VM stopped (whose sockets all closed), it
/// is `closed`.
#[pyclass(frozen, eq, hash, name = "Socket", module = "beamvm.tcp")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PySocket {
    id: u64,
    creation: u32,
}

/// The id a socket of a stopped VM travels as in a term: no socket ever has it (slot
/// index `u32::MAX`: the table would need 4 billion slots), so every operation finds it
/// closed; and it is a small integer, so it travels in a term as a socket.
const STALE_SOCKET: u64 = u32::MAX as u64;

impl PySocket {
    /// Socket `id` of the current VM.
    pub(crate) fn new(id: u64) -> PySocket {
        PySocket {
            id,
            creation: crate::lifecycle::creation(),
        }
    }

    /// The id this socket has in the current VM: [`STALE_SOCKET`] if its VM stopped.
    pub(crate) fn current_id(&self) -> u64 {
        if self.creation == crate::lifecycle::creation() {
            self.id
        } else {
            STALE_SOCKET
        }
    }
}

#[pymethods]
impl PySocket {
    fn __repr__(&self) -> String {
        let id = SocketId(self.id);
        format!("#Socket<{}.{}>", id.0 & 0xffff_ffff, id.0 >> 32)
    }

    /// The socket's number (unique in its VM, never reused there).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }
}

fn sock_of(obj: &Bound<'_, PyAny>) -> PyResult<SocketId> {
    obj.downcast::<PySocket>()
        .map(|s| SocketId(s.get().current_id()))
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "expected a beamvm.tcp socket (what listen, accept or connect returned), not {}",
                type_name(obj)
            ))
        })
}

/// The exception for `e` (`beamvm.tcp._error(reason, errno)` builds it).
pub(crate) fn tcp_err(py: Python<'_>, e: IoError) -> PyErr {
    static MAKE: GILOnceCell<PyObject> = GILOnceCell::new();
    let errno = match e {
        IoError::Posix(n) => Some(n),
        _ => None,
    };
    let made = MAKE
        .get_or_try_init(py, || {
            py.import("beamvm.tcp")?
                .getattr("_error")
                .map(|f| f.unbind())
        })
        .and_then(|f| f.bind(py).call1((e.reason(), errno)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// The caller's pid and the VM's reactor (made on first use).
fn caller(py: Python<'_>, what: &str) -> PyResult<(Pid, Arc<Reactor>)> {
    let got = with_cx(|cx| (cx.self_pid(), cx.io())).ok_or_else(|| outside(what))?;
    let r = got.1.map_err(|e| tcp_err(py, e))?;
    Ok((got.0, r))
}

fn io_result<T>(py: Python<'_>, r: Result<T, IoError>) -> PyResult<T> {
    r.map_err(|e| tcp_err(py, e))
}

fn parse_packet(obj: &Bound<'_, PyAny>) -> PyResult<Packet> {
    if let Ok(s) = obj.downcast::<PyString>() {
        return match s.to_str()? {
            "raw" => Ok(Packet::Raw),
            "line" => Ok(Packet::Line),
            other => Err(PyValueError::new_err(format!(
                "packet must be 'raw', 1, 2, 4 or 'line', not {other:?}"
            ))),
        };
    }
    if obj.downcast::<PyInt>().is_ok() && obj.downcast::<PyBool>().is_err() {
        // An int beyond i64 is just another wrong value, not an OverflowError.
        return match obj.extract::<i64>() {
            Ok(0) => Ok(Packet::Raw),
            Ok(n @ (1 | 2 | 4)) => Ok(Packet::Len(n as u8)),
            _ => Err(PyValueError::new_err(format!(
                "packet must be 'raw', 1, 2, 4 or 'line', not {obj}"
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "packet must be 'raw', 1, 2, 4 or 'line', not {}",
        type_name(obj)
    )))
}

fn parse_active(obj: &Bound<'_, PyAny>) -> PyResult<ActiveOpt> {
    if let Ok(b) = obj.downcast::<PyBool>() {
        return Ok(if b.is_true() {
            ActiveOpt::True
        } else {
            ActiveOpt::False
        });
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        if s.to_str()? == "once" {
            return Ok(ActiveOpt::Once);
        }
        return Err(PyValueError::new_err(format!(
            "active must be False, True, 'once' or an int, not {:?}",
            s.to_str()?
        )));
    }
    if obj.downcast::<PyInt>().is_ok() {
        // An int beyond i32 (even beyond i64) is out of range, not an OverflowError.
        return obj
            .extract::<i32>()
            .ok()
            .map(ActiveOpt::N)
            .and_then(|a| a.validate().ok())
            .ok_or_else(|| {
                PyValueError::new_err(format!("active must be in -32768..32767, not {obj}"))
            });
    }
    Err(PyTypeError::new_err(format!(
        "active must be False, True, 'once' or an int, not {}",
        type_name(obj)
    )))
}

fn active_py(py: Python<'_>, a: ActiveOpt) -> PyObject {
    match a {
        ActiveOpt::False => false.into_py(py),
        ActiveOpt::True => true.into_py(py),
        ActiveOpt::Once => "once".into_py(py),
        ActiveOpt::N(n) => n.into_py(py),
    }
}

fn packet_py(py: Python<'_>, p: Packet) -> PyObject {
    match p {
        Packet::Raw => "raw".into_py(py),
        Packet::Line => "line".into_py(py),
        Packet::Len(n) => n.into_py(py),
    }
}

fn addr_of(ip: Option<&str>, port: u16, path: Option<PathBuf>) -> PyResult<Addr> {
    if let Some(p) = path {
        // The kernel would stop at the NUL and bind a different path.
        if p.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(PyValueError::new_err("path must not contain a NUL byte"));
        }
        return Ok(Addr::Unix(p));
    }
    let ip = ip.unwrap_or("127.0.0.1");
    let ip: IpAddr = ip.parse().map_err(|_| {
        PyValueError::new_err(format!("host must be an IP address here, not {ip:?}"))
    })?;
    Ok(Addr::Inet(SocketAddr::new(ip, port)))
}

fn name_py(py: Python<'_>, n: SockName) -> PyObject {
    match n {
        SockName::Inet(a) => (a.ip().to_string(), a.port()).into_py(py),
        SockName::Unix(Some(p)) => p.to_string_lossy().into_owned().into_py(py),
        SockName::Unix(None) => "".into_py(py),
    }
}

fn socket_opts(
    packet: &Bound<'_, PyAny>,
    packet_size: usize,
    active: &Bound<'_, PyAny>,
    nodelay: bool,
) -> PyResult<SocketOpts> {
    Ok(SocketOpts {
        packet: parse_packet(packet)?,
        packet_size,
        active: parse_active(active)?,
        nodelay,
        ..SocketOpts::default()
    })
}

/// `listen`: a listening socket owned by the caller. `ip` an IP literal (tcp.py
/// resolves names) or `path` a Unix socket path.
#[pyfunction]
#[pyo3(signature = (ip, port, path, backlog, reuseaddr, packet, packet_size, active, nodelay))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _tcp_listen(
    py: Python<'_>,
    ip: Option<&str>,
    port: u16,
    path: Option<PathBuf>,
    backlog: u32,
    reuseaddr: bool,
    packet: &Bound<'_, PyAny>,
    packet_size: usize,
    active: &Bound<'_, PyAny>,
    nodelay: bool,
) -> PyResult<PySocket> {
    let addr = addr_of(ip, port, path)?;
    let opts = ListenOpts {
        backlog,
        reuseaddr,
        socket: socket_opts(packet, packet_size, active, nodelay)?,
    };
    let (me, r) = caller(py, "tcp.listen")?;
    io_result(py, r.listen(me, &addr, opts)).map(|s| PySocket::new(s.0))
}

/// `accept`: the new socket, or `None` (wait for `('$tcp', ls, 'accept', result)`).
#[pyfunction]
pub(crate) fn _tcp_accept(py: Python<'_>, ls: &Bound<'_, PyAny>) -> PyResult<Option<PySocket>> {
    let ls = sock_of(ls)?;
    let (me, r) = caller(py, "tcp.accept")?;
    Ok(match io_result(py, r.accept(ls, me))? {
        Accept::Ready(s) => Some(PySocket::new(s.0)),
        Accept::Pending => None,
    })
}

/// `connect`: the socket at once (owned by the caller); the outcome arrives as
/// `('$tcp', s, 'connect', result)`.
#[pyfunction]
#[pyo3(signature = (ip, port, path, packet, packet_size, active, nodelay))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _tcp_connect(
    py: Python<'_>,
    ip: Option<&str>,
    port: u16,
    path: Option<PathBuf>,
    packet: &Bound<'_, PyAny>,
    packet_size: usize,
    active: &Bound<'_, PyAny>,
    nodelay: bool,
) -> PyResult<PySocket> {
    let addr = addr_of(ip, port, path)?;
    let opts = socket_opts(packet, packet_size, active, nodelay)?;
    let (me, r) = caller(py, "tcp.connect")?;
    io_result(py, r.connect(me, &addr, opts)).map(|s| PySocket::new(s.0))
}

fn data_of(data: &Bound<'_, PyAny>) -> PyResult<Binary> {
    if let Ok(b) = data.downcast::<PyBytes>() {
        return Ok(Binary::from_slice(b.as_bytes()));
    }
    if let Ok(b) = data.downcast::<PyBinary>() {
        return Ok(Binary::Refc(b.get().0.clone()));
    }
    if let Ok(b) = data.downcast::<PyByteArray>() {
        return Ok(Binary::new(b.to_vec()));
    }
    if data.downcast::<PyString>().is_ok() {
        return Err(PyTypeError::new_err(
            "data must be bytes-like, not str (encode it: data.encode())",
        ));
    }
    Err(PyTypeError::new_err(format!(
        "data must be bytes, bytearray, memoryview or beamvm.Binary, not {}",
        type_name(data)
    )))
}

/// `send`: `True` when queued below the high watermark; `False`: wait for
/// `('$tcp', s, 'send', result)` (the kernel buffer is full).
#[pyfunction]
pub(crate) fn _tcp_send(
    py: Python<'_>,
    s: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let s = sock_of(s)?;
    let data = match data.downcast::<pyo3::types::PyMemoryView>() {
        Ok(m) => Binary::new(m.call_method0("tobytes")?.extract::<Vec<u8>>()?),
        Err(_) => data_of(data)?,
    };
    let (me, r) = caller(py, "tcp.send")?;
    Ok(match io_result(py, r.send(s, me, data))? {
        SendStatus::Sent => true,
        SendStatus::Suspend => false,
    })
}

/// Passive `recv(length)`: the data, or `None` (wait for `('$tcp', s, 'recv', result)`).
#[pyfunction]
pub(crate) fn _tcp_recv(
    py: Python<'_>,
    s: &Bound<'_, PyAny>,
    length: usize,
) -> PyResult<Option<PyObject>> {
    let s = sock_of(s)?;
    let (me, r) = caller(py, "tcp.recv")?;
    Ok(match io_result(py, r.recv(s, me, length))? {
        Recv::Data(Binary::Refc(rb)) => Some(PyBinary(rb).into_py(py)),
        Recv::Data(Binary::Inline(v)) => Some(PyBytes::new(py, &v).into_any().unbind()),
        Recv::Pending => None,
    })
}

/// `setopts`: only the options given change (`None`: unchanged).
#[pyfunction]
#[pyo3(signature = (s, packet=None, packet_size=None, active=None, nodelay=None))]
pub(crate) fn _tcp_setopts(
    py: Python<'_>,
    s: &Bound<'_, PyAny>,
    packet: Option<&Bound<'_, PyAny>>,
    packet_size: Option<usize>,
    active: Option<&Bound<'_, PyAny>>,
    nodelay: Option<bool>,
) -> PyResult<()> {
    let s = sock_of(s)?;
    let set = SetOpts {
        packet: packet.map(parse_packet).transpose()?,
        packet_size,
        active: active.map(parse_active).transpose()?,
        nodelay,
    };
    let (_, r) = caller(py, "tcp.setopts")?;
    io_result(py, r.setopts(s, set))
}

/// `getopts`: `{'packet', 'packet_size', 'active', 'nodelay'}` as they are now.
#[pyfunction]
pub(crate) fn _tcp_getopts(
    py: Python<'_>,
    s: &Bound<'_, PyAny>,
) -> PyResult<std::collections::HashMap<&'static str, PyObject>> {
    let s = sock_of(s)?;
    let (_, r) = caller(py, "tcp.getopts")?;
    let o = io_result(py, r.getopts(s))?;
    let mut m = std::collections::HashMap::new();
    m.insert("packet", packet_py(py, o.packet));
    m.insert("packet_size", o.packet_size.into_py(py));
    m.insert("active", active_py(py, o.active));
    m.insert("nodelay", o.nodelay.into_py(py));
    Ok(m)
}

/// The socket's owner (`None` once it is closed).
#[pyfunction]
pub(crate) fn _tcp_owner(
    py: Python<'_>,
    s: &Bound<'_, PyAny>,
) -> PyResult<Option<crate::types::PyPid>> {
    let s = sock_of(s)?;
    let (_, r) = caller(py, "tcp.controlling_process")?;
    Ok(r.owner(s).map(crate::types::PyPid::local))
}

/// `controlling_process`: only the owner may hand the socket over (`not_owner`).
#[pyfunction]
pub(crate) fn _tcp_controlling_process(
    py: Python<'_>,
    s: &Bound<'_, PyAny>,
    pid: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let s = sock_of(s)?;
    let PidTarget::Local(to) = pid_of(pid, "controlling_process's pid")? else {
        return Err(tcp_err(py, IoError::Einval));
    };
    let (me, r) = caller(py, "tcp.controlling_process")?;
    io_result(py, r.controlling_process(s, me, to))
}

/// The first half of `close`: the bytes still queued to send, 0 when the socket may
/// be closed now; otherwise wait for `('$tcp', s, 'send', result)`.
#[pyfunction]
pub(crate) fn _tcp_drain(py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<usize> {
    let s = sock_of(s)?;
    let (me, r) = caller(py, "tcp.close")?;
    Ok(r.drain(s, me))
}

/// `close`: idempotent.
#[pyfunction]
pub(crate) fn _tcp_close(py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<()> {
    let s = sock_of(s)?;
    let (_, r) = caller(py, "tcp.close")?;
    io_result(py, r.close(s))
}

/// `shutdown(how)`: `'read'`, `'write'` or `'read_write'`.
#[pyfunction]
pub(crate) fn _tcp_shutdown(py: Python<'_>, s: &Bound<'_, PyAny>, how: &str) -> PyResult<()> {
    let s = sock_of(s)?;
    let how = match how {
        "read" => Shutdown::Read,
        "write" => Shutdown::Write,
        "read_write" => Shutdown::Both,
        other => {
            return Err(PyValueError::new_err(format!(
                "shutdown's how must be 'read', 'write' or 'read_write', not {other:?}"
            )))
        }
    };
    let (_, r) = caller(py, "tcp.shutdown")?;
    io_result(py, r.shutdown(s, how))
}

/// Withdraws the caller's pending accept/recv/send wait on `s`: `True` if it was
/// waiting (no completion will come), `False` if the completion is on its way.
#[pyfunction]
pub(crate) fn _tcp_cancel(py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<bool> {
    let s = sock_of(s)?;
    let (me, r) = caller(py, "tcp.cancel")?;
    Ok(r.cancel(s, me))
}

/// `peername`: `(ip, port)`, or the path of a Unix socket.
#[pyfunction]
pub(crate) fn _tcp_peername(py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<PyObject> {
    let s = sock_of(s)?;
    let (_, r) = caller(py, "tcp.peername")?;
    io_result(py, r.peername(s)).map(|n| name_py(py, n))
}

/// `sockname`: `(ip, port)` (a listener on port 0 tells the port it got), or a path.
#[pyfunction]
pub(crate) fn _tcp_sockname(py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<PyObject> {
    let s = sock_of(s)?;
    let (_, r) = caller(py, "tcp.sockname")?;
    io_result(py, r.sockname(s)).map(|n| name_py(py, n))
}

/// Open sockets in the running VM (0 before the first one).
#[pyfunction]
pub(crate) fn _tcp_socket_count() -> PyResult<usize> {
    Ok(crate::lifecycle::current().map_or(0, |v| v.socket_count()))
}
