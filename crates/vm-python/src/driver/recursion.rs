//! Recursion inside a process is bounded by the thread's real stack.
//!
//! Process code runs on VM threads with [`vm_core::config::THREAD_STACK_SIZE`] of stack.
//! How much of it one level of Python recursion costs depends on the version:
//!
//! | CPython | deep recursion through | C stack per level | bounded by |
//! |---|---|---|---|
//! | 3.11 | a call between compiled functions (`yield from` chain) | 418 B | `sys.setrecursionlimit` |
//! | 3.11 | a Python function called from C (`map`) | 624 B | `sys.setrecursionlimit` |
//! | 3.11 | a plain Python call | ~0 (inlined) | `sys.setrecursionlimit` |
//! | 3.12, 3.13 | a `yield from` chain, plain calls | ~0 (inlined) | `sys.setrecursionlimit` |
//! | 3.12, 3.13 | anything through C | per level | a fixed C recursion limit (1,500 / 10,000 units) |
//!
//! (Measured on this project's CPython 3.11.7, 3.12.1 and 3.13.0 builds: the depth
//! at which a thread with a 16 MB stack overflows, and the depth at which a limit of
//! 100,000 raises RecursionError; one level costs one unit of the limit on 3.11.)
//!
//! So on 3.12+ the interpreter's own C recursion limit keeps a 64 MB stack safe
//! whatever `sys.setrecursionlimit` says, but on 3.11 the only bound on C recursion is
//! that limit, which is interpreter-wide: `sys.setrecursionlimit(250_000)` followed by
//! 190,000 levels of recursion in a process overflowed the stack (SIGSEGV). On 3.11,
//! [`Cap`] therefore lowers the limit to what the stack holds ([`safe_limit`]) for the
//! length of each call into process code, and puts the user's value back after it:
//! such a recursion ends with RecursionError. While a process runs with the limit
//! lowered, `sys.getrecursionlimit()` reads the lowered value (in that process and in
//! any thread that runs meanwhile).

use std::os::raw::c_int;
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;

/// C stack one unit of the recursion limit may use on CPython 3.11: the worst case
/// measured (624 B, a Python function called from C) with room for C extensions'
/// frames.
const STACK_BYTES_PER_LEVEL: usize = 1024;
/// Stack kept for what runs below the first level (the scheduler, the driver, pyo3)
/// and for the frames of the deepest level itself.
const STACK_RESERVE: usize = 1 << 20;

/// The deepest recursion limit a VM thread's stack holds on CPython 3.11.
pub(crate) fn safe_limit() -> c_int {
    let levels =
        vm_core::config::THREAD_STACK_SIZE.saturating_sub(STACK_RESERVE) / STACK_BYTES_PER_LEVEL;
    c_int::try_from(levels).unwrap_or(c_int::MAX).max(1000)
}

/// Whether the running interpreter bounds C recursion only by the recursion limit
/// (CPython before 3.12).
fn needs_cap(py: Python<'_>) -> bool {
    static OLD: OnceLock<bool> = OnceLock::new();
    *OLD.get_or_init(|| !py.version_info().ge(&(3, 12)))
}

/// Lowers the recursion limit to [`safe_limit`] while it lives, if the interpreter
/// needs it and the limit is higher (module docs).
pub(crate) struct Cap<'py> {
    /// The limit to put back, when it was lowered.
    restore: Option<c_int>,
    /// The GIL is held while the cap lives (its drop writes the limit).
    _py: Python<'py>,
}

impl<'py> Cap<'py> {
    /// Applies the cap for a call into Python code on this (VM) thread.
    pub(crate) fn apply(py: Python<'py>) -> Cap<'py> {
        if !needs_cap(py) {
            return Cap {
                restore: None,
                _py: py,
            };
        }
        // SAFETY: we hold the GIL (the `Python` token proves it); both functions only
        // read or write the interpreter's limit (and its threads' counters).
        let limit = unsafe { ffi::Py_GetRecursionLimit() };
        let safe = safe_limit();
        if limit <= safe {
            return Cap {
                restore: None,
                _py: py,
            };
        }
        // SAFETY: as above.
        unsafe { ffi::Py_SetRecursionLimit(safe) };
        Cap {
            restore: Some(limit),
            _py: py,
        }
    }
}

impl Drop for Cap<'_> {
    fn drop(&mut self) {
        let Some(limit) = self.restore else { return };
        // SAFETY: the GIL is held (the cap holds a `Python<'py>` token, so it cannot
        // outlive the GIL scope it was made in); as in `apply` otherwise.
        unsafe {
            // Process code that set a limit of its own meanwhile keeps it.
            if ffi::Py_GetRecursionLimit() == safe_limit() {
                ffi::Py_SetRecursionLimit(limit);
            }
        }
    }
}
