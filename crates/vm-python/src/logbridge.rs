//! The Rust crates' `log` records, handed to Python's `logging`.
//!
//! vm-dist and the binding report what a user must be able to see — a connection
//! refused for a wrong cookie, a peer declared down, a frame that broke the protocol —
//! with the `log` crate. Without a logger installed those records went nowhere. This
//! module is that logger: each record becomes a call to
//! `logging.getLogger(name).log(level, "%s", message)`, with `name` `beamvm.dist` for
//! distribution (vm-dist and `dist*.rs`), `beamvm.io` for sockets, `beamvm` otherwise.
//!
//! Invariants:
//! - **The thread that logs never touches Python.** A record is made where it happens:
//!   on a scheduler thread, a handshake thread, often with a VM lock held. Taking the
//!   GIL there could deadlock with a Python thread that holds the GIL and waits for that
//!   lock. So [`Bridge::log`] only formats the message and queues it (one short, leaf
//!   mutex), and one thread of its own, `beamvm-log`, started at the first record,
//!   takes the GIL and calls `logging` with nothing else held.
//! - **Bounded.** At most [`QUEUE_MAX`] records wait; past that they are counted and
//!   the count is logged once the queue drains (a peer that makes a record per frame
//!   cannot grow memory without bound).
//! - **Never into a finalising interpreter.** The `beamvm-log` thread passes
//!   `finalize`'s gate before each batch; once the gate is closed it drops what is
//!   queued and ends. In a child after `os.fork()` the thread does not exist: the first
//!   record there starts a new one (the owner is recorded by process id).
//! - Levels: `Info` and above are queued ([`log::set_max_level`]); Python's own logger
//!   configuration filters further, as for any Python library. `Debug`/`Trace`
//!   records (per-message detail) are not formatted at all.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::finalize;

/// Records waiting for the `beamvm-log` thread before new ones are dropped (counted).
pub(crate) const QUEUE_MAX: usize = 1024;

struct Record {
    logger: &'static str,
    level: i32,
    message: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Record>,
    dropped: u64,
    /// The process id the `beamvm-log` thread was started in (0: none yet).
    thread_pid: u32,
}

#[derive(Default)]
struct Bridge {
    state: Mutex<State>,
    ready: Condvar,
}

fn bridge() -> &'static Bridge {
    static B: OnceLock<Bridge> = OnceLock::new();
    B.get_or_init(Bridge::default)
}

impl Bridge {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a push, a pop or a counter: a panic cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Python's `logging` level for a `log` level.
fn py_level(l: log::Level) -> i32 {
    match l {
        log::Level::Error => 40,
        log::Level::Warn => 30,
        log::Level::Info => 20,
        log::Level::Debug => 10,
        log::Level::Trace => 5,
    }
}

/// The Python logger a record's target (its Rust module path) goes to.
fn logger_for(target: &str) -> &'static str {
    if target.starts_with("vm_dist") || target.starts_with("_native::dist") {
        "beamvm.dist"
    } else if target.contains("::io") || target.starts_with("_native::tcp") {
        "beamvm.io"
    } else {
        "beamvm"
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let rec = Record {
            logger: logger_for(r.target()),
            level: py_level(r.level()),
            message: r.args().to_string(),
        };
        let b = bridge();
        let mut st = b.lock();
        if st.queue.len() >= QUEUE_MAX {
            st.dropped += 1;
            return;
        }
        st.queue.push_back(rec);
        let pid = std::process::id();
        if st.thread_pid != pid {
            let started = std::thread::Builder::new()
                .name("beamvm-log".into())
                .spawn(run)
                .is_ok();
            if started {
                st.thread_pid = pid;
            }
        }
        drop(st);
        b.ready.notify_one();
    }

    fn flush(&self) {}
}

/// Installs the bridge as the `log` crate's logger (once per process; `false` if
/// another logger was installed first, e.g. by another extension module).
pub(crate) fn install() -> bool {
    static LOGGER: Logger = Logger;
    let ok = log::set_logger(&LOGGER).is_ok();
    if ok {
        log::set_max_level(log::LevelFilter::Info);
    }
    ok
}

/// The `beamvm-log` thread: waits for records and hands them to `logging`.
fn run() {
    let b = bridge();
    loop {
        let (batch, dropped) = {
            let mut st = b.lock();
            while st.queue.is_empty() && st.dropped == 0 {
                st = b.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            (
                std::mem::take(&mut st.queue),
                std::mem::take(&mut st.dropped),
            )
        };
        let Some(_pass) = finalize::enter() else {
            // The interpreter is exiting: nothing may be handed to it any more.
            return;
        };
        Python::with_gil(|py| {
            for r in batch {
                emit(py, r.logger, r.level, &r.message);
            }
            if dropped > 0 {
                let m =
                    format!("{dropped} log records were dropped (more than {QUEUE_MAX} queued)");
                emit(py, "beamvm", 30, &m);
            }
        });
    }
}

/// `logging.getLogger(logger).log(level, "%s", message)`; a failing handler is
/// Python's to report (`logging` prints handler errors itself), never the VM's.
fn emit(py: Python<'_>, logger: &str, level: i32, message: &str) {
    let call = || -> PyResult<()> {
        let get = py.import("logging")?.getattr("getLogger")?;
        let lg = get.call1((logger,))?;
        let log = lg.getattr("log")?;
        let args = PyTuple::new(
            py,
            [
                level.into_pyobject(py)?.into_any(),
                "%s".into_pyobject(py)?.into_any(),
                message.into_pyobject(py)?.into_any(),
            ],
        )?;
        finalize::call(&log, &args, None)?;
        Ok(())
    };
    if let Err(e) = call() {
        e.print(py);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_to_the_logger_of_their_crate_at_pythons_levels() {
        assert_eq!(logger_for("vm_dist::node::conn"), "beamvm.dist");
        assert_eq!(logger_for("_native::dist"), "beamvm.dist");
        assert_eq!(logger_for("vm_core::io::reactor"), "beamvm.io");
        assert_eq!(logger_for("vm_core::vm"), "beamvm");
        assert_eq!(py_level(log::Level::Error), 40);
        assert_eq!(py_level(log::Level::Warn), 30);
        assert_eq!(py_level(log::Level::Info), 20);
    }
}
