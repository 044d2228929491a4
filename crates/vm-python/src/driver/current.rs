//! The current process: while a Python process's generator runs, a pointer to the
//! slice's [`Cx`] sits in a thread-local, so the `_native` functions Python calls
//! (send, spawn, link, ...) act on that process. [`CurrentGuard`] sets it for the length
//! of a call into Python and restores the previous value when dropped.

use std::cell::Cell;

use vm_core::Cx;

thread_local! {
    static CURRENT: Cell<*mut ()> = const { Cell::new(std::ptr::null_mut()) };
}

/// Makes a context current until dropped.
pub(crate) struct CurrentGuard(*mut ());

impl CurrentGuard {
    pub(crate) fn set(cx: *mut Cx<'_>) -> CurrentGuard {
        let prev = CURRENT.with(|c| c.replace(cx as *mut ()));
        CurrentGuard(prev)
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Runs `f` with the current process's context, or returns None outside a process.
pub fn with_cx<R>(f: impl FnOnce(&mut Cx<'_>) -> R) -> Option<R> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: the pointer is set by `resume`/`terminate` for the duration of a call
    // into Python on this thread and cleared before they return; the driver does not
    // touch the context while Python runs, and `f` must not call back into Python code
    // that re-enters `with_cx`.
    let cx = unsafe { &mut *(p as *mut Cx<'static>) };
    Some(f(cx))
}

/// True when called from a running process on this thread.
pub fn in_process() -> bool {
    CURRENT.with(|c| !c.get().is_null())
}
