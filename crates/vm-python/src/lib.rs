//! The `beamvm._native` extension module: the VM's Python binding.
//!
//! Layout (one concern per file, as pydantic-core's):
//!
//! * [`lifecycle`]: starting and stopping the VM (`start`, `stop`, `run`), the one
//!   accessor every function uses to reach it.
//! * [`alias`]: process aliases (`alias`, `unalias`, sends to an alias).
//! * [`api`]: the process API (spawn, send, links, monitors, exits, names, timers).
//! * [`introspect`]: `process_info`, `memory`, `statistics`, `top`, `snapshot`, ...
//! * [`observer_http`]: the web observer (`vm-observer`'s server on native threads).
//! * [`driver`]: the Python process body (a compiled generator driven one slice at a
//!   time), the GIL batch hook, the current process, the budget cell, receive, dirty
//!   calls.
//! * [`gen_call`]: the caller's half of `gen_server.call`, as a native primitive.
//! * [`convert`]: Python values <-> terms (the table of what maps to what).
//! * [`pattern`]: receive patterns compiled to matchers over term views.
//! * [`types`]: `Atom`, `Pid`, `Ref`, `Binary` (zero-copy shared bytes).
//! * [`alloc`]: what the VM holds outside its counters (allocator caches, Python
//!   process objects) and releasing the caches.
//! * [`tcp`]: `beamvm.tcp`'s native half: sockets owned by processes (`Socket`).
//! * [`args`]: argument parsing shared by the API (names, pids, refs, timeouts).
//! * [`errors`]: the exceptions, and the one mapping from `vm_core::Error` to them.
//! * [`runtime`]: the Python protocol objects handed over by `beamvm/__init__.py`.
//! * [`timeslice`], [`compiled`]: native support for compiled process code (slices end
//!   by time; `StopIteration` carried out of a generator).
//! * [`stacktrace`], [`msgtrace`]: a Python process's stack (`current_stacktrace`), the
//!   send/receive hook of `beamvm.trace.messages`; [`threadtrace`]: `sys.settrace` on
//!   scheduler threads.
//! * [`finalize`]: the interpreter's exit: VM threads never touch a finalising
//!   interpreter.
//!
//! The module itself is declared here, in one place ([`_native`]).
//!
//! Locking rule: never wait for a process's lock while holding the GIL (a scheduler
//! holds a process's lock while it waits for the GIL to run it). No call here waits
//! for one: introspection (`process_info`, `process_summary`, a body's label) reads
//! published counters and only *tries* the process's lock (vm-core's stats.rs), and the
//! VM's start and stop, which wait for its threads, release the GIL first.

#![allow(deprecated)] // IntoPy::into_py: still the plain way in pyo3 0.23

mod alias;
mod alloc;
mod api;
mod args;
mod compiled;
pub mod convert;
mod dist;
mod dist_conn;
mod driver;
mod errors;
mod finalize;
mod gen_call;
mod introspect;
mod lifecycle;
mod logbridge;
mod msgtrace;
mod observer_http;
pub mod pattern;
mod runtime;
mod stacktrace;
mod tcp;
mod threadtrace;
mod timeslice;
pub mod types;

use pyo3::prelude::*;

use errors::{BadArg, NoProc, ProcessExit, SystemLimit, Timeout};
use types::{PyAtom, PyBinary, PyPid, PyRef};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // memory()['allocator']: what mimalloc holds beyond the VM's counters (alloc.rs).
    vm_core::set_allocator_probe(alloc::cached);
    // An idle scheduler returns the free pages it and the C heap keep (alloc.rs).
    vm_core::set_idle_hook(alloc::on_idle);
    // The binding makes no atom of its own at run time: the ones it needs are
    // vm-core's predefined atoms (once user code has filled the atom table, making one
    // lazily would fail inside a scheduler thread, issue 9 s.3), and a `str` is text,
    // not an atom-tagged tuple.
    gen_call::init_atoms()?;
    // The Rust crates' `log` records (a connection refused for a wrong cookie, a
    // peer declared down) go to Python's `logging` (logbridge.rs).
    logbridge::install();
    // (The tags of wire-only values, dist.rs, are predefined atoms too.)
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Types and exceptions.
    m.add_class::<PyAtom>()?;
    m.add_class::<PyPid>()?;
    m.add_class::<PyRef>()?;
    m.add_class::<PyBinary>()?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("SystemLimit", py.get_type::<SystemLimit>())?;
    m.add("NoProc", py.get_type::<NoProc>())?;
    m.add("BadArg", py.get_type::<BadArg>())?;
    m.add("ProcessExit", py.get_type::<ProcessExit>())?;
    // The atoms exit signals give a meaning to (a str spelling is refused by `exit`).
    m.add("NORMAL", PyAtom(vm_core::Atom::NORMAL))?;
    m.add("KILL", PyAtom(vm_core::Atom::KILL))?;
    m.add("SHUTDOWN", PyAtom(vm_core::Atom::SHUTDOWN))?;
    // Unpickling pids and references.
    m.add_function(wrap_pyfunction!(types::_pid, m)?)?;
    m.add_function(wrap_pyfunction!(types::_ref, m)?)?;
    m.add_function(wrap_pyfunction!(alloc::_allocator_stats, m)?)?;
    // The protocol with beamvm's Python half.
    m.add_function(wrap_pyfunction!(runtime::_setup, m)?)?;
    m.add_class::<driver::ReceiveOp>()?;
    m.add_function(wrap_pyfunction!(driver::_receive, m)?)?;
    m.add_function(wrap_pyfunction!(driver::_recv, m)?)?;
    m.add_function(wrap_pyfunction!(driver::_recv_any, m)?)?;
    m.add_function(wrap_pyfunction!(finalize::_quiesce, m)?)?;
    m.add_function(wrap_pyfunction!(gen_call::_gen_call, m)?)?;
    m.add_function(wrap_pyfunction!(gen_call::_gen_cast, m)?)?;
    m.add_function(wrap_pyfunction!(gen_call::_gen_reply, m)?)?;
    // Life cycle.
    m.add_function(wrap_pyfunction!(lifecycle::start, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::stop, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::is_running, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::run, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::_after_fork, m)?)?;
    // Processes.
    m.add_function(wrap_pyfunction!(api::spawn, m)?)?;
    m.add_function(wrap_pyfunction!(api::spawn_link, m)?)?;
    m.add_function(wrap_pyfunction!(api::spawn_monitor, m)?)?;
    m.add_function(wrap_pyfunction!(api::spawn_opt, m)?)?;
    m.add_function(wrap_pyfunction!(api::send, m)?)?;
    m.add_function(wrap_pyfunction!(api::self_pid, m)?)?;
    m.add_function(wrap_pyfunction!(api::link, m)?)?;
    m.add_function(wrap_pyfunction!(api::unlink, m)?)?;
    m.add_function(wrap_pyfunction!(api::monitor, m)?)?;
    m.add_function(wrap_pyfunction!(api::demonitor, m)?)?;
    m.add_function(wrap_pyfunction!(alias::alias, m)?)?;
    m.add_function(wrap_pyfunction!(alias::unalias, m)?)?;
    m.add_function(wrap_pyfunction!(alias::_alias_count, m)?)?;
    m.add_function(wrap_pyfunction!(api::exit, m)?)?;
    m.add_function(wrap_pyfunction!(api::process_flag, m)?)?;
    m.add_function(wrap_pyfunction!(api::register, m)?)?;
    m.add_function(wrap_pyfunction!(api::unregister, m)?)?;
    m.add_function(wrap_pyfunction!(api::whereis, m)?)?;
    m.add_function(wrap_pyfunction!(api::make_ref, m)?)?;
    m.add_function(wrap_pyfunction!(api::send_after, m)?)?;
    m.add_function(wrap_pyfunction!(api::cancel_timer, m)?)?;
    m.add_function(wrap_pyfunction!(api::read_timer, m)?)?;
    m.add_function(wrap_pyfunction!(api::is_alive, m)?)?;
    m.add_function(wrap_pyfunction!(api::roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(dist::_dist_start, m)?)?;
    m.add_function(wrap_pyfunction!(dist::_dist_stop, m)?)?;
    m.add_function(wrap_pyfunction!(dist::node, m)?)?;
    m.add_function(wrap_pyfunction!(dist::nodes, m)?)?;
    m.add_function(wrap_pyfunction!(dist::dist_ping, m)?)?;
    m.add_function(wrap_pyfunction!(dist::dist_expose, m)?)?;
    m.add_function(wrap_pyfunction!(dist::dist_monitor_node, m)?)?;
    m.add_class::<dist::RpcCall>()?;
    m.add_function(wrap_pyfunction!(dist::term_to_binary, m)?)?;
    m.add_function(wrap_pyfunction!(dist::binary_to_term, m)?)?;
    m.add_function(wrap_pyfunction!(api::in_process_, m)?)?;
    // Introspection.
    introspect::register(m)?;
    // The web observer.
    observer_http::register(m)?;
    msgtrace::register(m)?;
    stacktrace::register(m)?;
    threadtrace::register(m)?;
    // Compiled process code: slices end by time (timeslice.rs); StopIteration carried
    // out of a generator (compiled.rs).
    // beamvm.tcp's native half (tcp.rs).
    m.add_class::<tcp::PySocket>()?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_listen, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_accept, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_connect, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_send, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_recv, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_setopts, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_getopts, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_owner, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_controlling_process, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_drain, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_close, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_cancel, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_peername, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_sockname, m)?)?;
    m.add_function(wrap_pyfunction!(tcp::_tcp_socket_count, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_timeslice_setup, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_overdue, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_resume_grace, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_resumed, m)?)?;
    m.add_function(wrap_pyfunction!(timeslice::_raise_yield_flag, m)?)?;
    m.add_function(wrap_pyfunction!(compiled::_set_stop_carrier, m)?)?;
    Ok(())
}
