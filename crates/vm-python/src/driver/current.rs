//! The current process: while a Python process's generator runs, a pointer to the
//! slice's [`Cx`] sits in a thread-local, so the `_native` functions Python calls
//! (send, spawn, link, ...) act on that process. [`CurrentGuard`] sets it for the length
//! of a call into Python and restores the previous value when dropped.
//!
//! Aliasing rule (issue 8, fault 5): no `&mut Cx` lives across a call into Python.
//! The driver and the API functions hold only a [`CxPtr`] (a raw pointer) and make a
//! `&mut Cx` for the length of one closure of pure Rust ([`CxPtr::with`],
//! [`with_cx`]). A call into Python may run any process code, which may call the API,
//! which makes its own `&mut Cx` from the same pointer; since the driver's was gone
//! before the call and is re-made after it, two never coexist, and the compiler cannot
//! keep a value of the context (the budget) cached across the call. A closure that
//! reached Python anyway (a `__del__` run by a drop) finds the context borrowed and
//! gets `None` (asserted in debug builds); Python objects dropped while the context is
//! borrowed are released after the closure instead ([`defer_drop`]).

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use pyo3::PyObject;
use vm_core::Cx;

thread_local! {
    static CURRENT: Cell<*mut ()> = const { Cell::new(std::ptr::null_mut()) };
    /// True while a `&mut Cx` made by [`CxPtr::with`] is live on this thread.
    static BORROWED: Cell<bool> = const { Cell::new(false) };
    /// Python references dropped while the context was borrowed (see [`defer_drop`]).
    static DEFERRED: RefCell<Vec<PyObject>> = const { RefCell::new(Vec::new()) };
}

/// The running slice's context as a raw pointer: valid while the [`CurrentGuard`] that
/// published it (or the `resume`/`terminate` call that made it) is alive.
#[derive(Clone, Copy)]
pub(crate) struct CxPtr(NonNull<Cx<'static>>);

impl CxPtr {
    /// The pointer to a slice's context. Everything the caller does with the context
    /// from here on must go through the returned pointer (not through `cx` itself), so
    /// every `&mut Cx` made later is derived from it.
    pub(crate) fn new(cx: &mut Cx<'_>) -> CxPtr {
        CxPtr(NonNull::from(cx).cast())
    }

    /// Runs `f` with the context, or returns None if it is already borrowed on this
    /// thread (a nested use, which would alias). `f` must be pure Rust: it must not call
    /// into Python (which may call back into `with_cx`).
    pub(crate) fn with<R>(self, f: impl FnOnce(&mut Cx<'_>) -> R) -> Option<R> {
        if BORROWED.with(|b| b.replace(true)) {
            debug_assert!(false, "nested use of the current process's context");
            return None;
        }
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                BORROWED.with(|b| b.set(false));
                // Objects dropped meanwhile are released now, with the context free.
                let deferred = DEFERRED.with(|d| {
                    let mut d = d.borrow_mut();
                    (!d.is_empty()).then(|| std::mem::take(&mut *d))
                });
                drop(deferred);
            }
        }
        let _release = Release;
        // SAFETY: the pointer was made from a live `&mut Cx` by `CxPtr::new` in
        // `resume`/`terminate`, which keep that context alive and untouched (they use
        // only this pointer) until the guard that published it is dropped, and it is
        // published only on the thread running the slice. BORROWED makes this the only
        // `&mut Cx` on this thread for its lifetime, and it ends with `f` (the
        // higher-ranked closure cannot keep it or anything borrowed from it). The
        // lifetime `'static` in the pointer's type is erased, never relied on.
        let cx = unsafe { &mut *self.0.as_ptr() };
        Some(f(cx))
    }
}

/// Makes a context current until dropped.
pub(crate) struct CurrentGuard(*mut ());

impl CurrentGuard {
    pub(crate) fn set(cx: CxPtr) -> CurrentGuard {
        let prev = CURRENT.with(|c| c.replace(cx.0.as_ptr().cast()));
        CurrentGuard(prev)
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// The current process's context, if a process runs on this thread. None in the child
/// of an `os.fork()` made by process code: the context there is a copy of the parent's
/// VM, which the child must not use.
pub(crate) fn current() -> Option<CxPtr> {
    if crate::lifecycle::forked_in_process() {
        return None;
    }
    NonNull::new(CURRENT.with(|c| c.get()).cast()).map(CxPtr)
}

/// Runs `f` with the current process's context, or returns None outside a process
/// (see [`CxPtr::with`]: `f` must not call into Python).
pub(crate) fn with_cx<R>(f: impl FnOnce(&mut Cx<'_>) -> R) -> Option<R> {
    current()?.with(f)
}

/// True when called from a running process on this thread.
pub(crate) fn in_process() -> bool {
    CURRENT.with(|c| !c.get().is_null())
}

/// Whether the current context is borrowed right now (a drop happening inside a
/// [`with_cx`] closure).
pub(crate) fn borrowed() -> bool {
    BORROWED.with(|b| b.get())
}

/// Keeps `obj` until the current borrow of the context ends: dropping it now could run
/// Python code (a `__del__`) that calls the API while the context is borrowed.
pub(crate) fn defer_drop(obj: PyObject) {
    DEFERRED.with(|d| d.borrow_mut().push(obj));
}
