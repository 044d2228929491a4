//! The current process: while a Python process's generator runs, a pointer to the
//! slice's [`Cx`] sits in a thread-local, so the `_native` functions Python calls
//! (send, spawn, link, ...) act on that process. [`CurrentGuard`] sets it for the length
//! of a call into Python and restores the previous value when dropped.
//!
//! Aliasing rule (issue 8, fault 5): no `&mut Cx` lives across a call into Python.
//! The driver and the API functions hold only a [`CxPtr`] (a pointer to the slice's
//! [`Slice`], which holds the raw pointer to the `Cx`) and make a `&mut Cx` for the
//! length of one closure of pure Rust ([`CxPtr::with`], [`with_cx`]). A call into Python may run any process code, which may call the API,
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

/// One slice's context as the driver and the API share it: the raw pointer to the
/// `Cx`, whether a `&mut Cx` made from it is live, and the Python objects whose drop
/// waits for that borrow to end. It lives on the stack of `resume`/`terminate` for the
/// length of the call; the thread-local [`CURRENT`] points at it meanwhile.
pub(crate) struct Slice {
    cx: NonNull<Cx<'static>>,
    /// True while a `&mut Cx` made by [`CxPtr::with`] is live.
    borrowed: Cell<bool>,
    /// Whether `deferred` holds anything (so releasing a borrow costs one load).
    has_deferred: Cell<bool>,
    /// Python references dropped while the context was borrowed (see [`defer_drop`]).
    deferred: RefCell<Vec<PyObject>>,
}

impl Slice {
    /// The shared state of a slice's context. Everything the caller does with the
    /// context from here on must go through [`Slice::ptr`] (not through `cx` itself),
    /// so every `&mut Cx` made later is derived from this pointer.
    pub(crate) fn new(cx: &mut Cx<'_>) -> Slice {
        Slice {
            cx: NonNull::from(cx).cast(),
            borrowed: Cell::new(false),
            has_deferred: Cell::new(false),
            deferred: RefCell::new(Vec::new()),
        }
    }

    /// The handle the driver passes around (valid while `self` lives).
    pub(crate) fn ptr(&self) -> CxPtr {
        CxPtr(NonNull::from(self))
    }

    /// Releases the objects dropped while the context was borrowed, now that it is free.
    #[cold]
    #[inline(never)]
    fn release_deferred(&self) {
        self.has_deferred.set(false);
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        drop(deferred);
    }
}

thread_local! {
    /// The slice running on this thread, or null.
    static CURRENT: Cell<*const Slice> = const { Cell::new(std::ptr::null()) };
}

/// A handle to the running slice's context ([`Slice`]): valid while the `Slice` it was
/// made from lives (the length of the `resume`/`terminate` call).
#[derive(Clone, Copy)]
pub(crate) struct CxPtr(NonNull<Slice>);

impl CxPtr {
    /// Runs `f` with the context, or returns None if it is already borrowed (a nested
    /// use, which would alias). `f` must be pure Rust: it must not call into Python
    /// (which may call back into `with_cx`).
    #[inline]
    pub(crate) fn with<R>(self, f: impl FnOnce(&mut Cx<'_>) -> R) -> Option<R> {
        // SAFETY: a `CxPtr` is made by `Slice::ptr` from a `Slice` on the stack of the
        // `resume`/`terminate` call running on this thread, and is used (by the driver
        // directly, by the API through CURRENT) only while that call runs.
        let slice = unsafe { self.0.as_ref() };
        if slice.borrowed.replace(true) {
            debug_assert!(false, "nested use of the current process's context");
            return None;
        }
        struct Release<'a>(&'a Slice);
        impl Drop for Release<'_> {
            // Inlined: this runs at the end of every use of the context (several per
            // slice); the rare release of deferred objects stays out of line.
            #[inline(always)]
            fn drop(&mut self) {
                self.0.borrowed.set(false);
                if self.0.has_deferred.get() {
                    self.0.release_deferred();
                }
            }
        }
        let _release = Release(slice);
        // SAFETY: the pointer was made from a live `&mut Cx` by `Slice::new` in
        // `resume`/`terminate`, which keep that context alive and untouched (they use
        // only the slice) until they return. `borrowed` makes this the only `&mut Cx`
        // made from it for its lifetime, and it ends with `f` (the higher-ranked
        // closure cannot keep it or anything borrowed from it). The lifetime `'static`
        // in the pointer's type is erased, never relied on.
        let cx = unsafe { &mut *slice.cx.as_ptr() };
        Some(f(cx))
    }
}

/// Makes a slice current on this thread until dropped.
pub(crate) struct CurrentGuard(*const Slice);

impl CurrentGuard {
    pub(crate) fn set(cx: CxPtr) -> CurrentGuard {
        let prev = CURRENT.with(|c| c.replace(cx.0.as_ptr()));
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
fn current() -> Option<CxPtr> {
    if crate::lifecycle::forked_in_process() {
        return None;
    }
    NonNull::new(CURRENT.with(|c| c.get()).cast_mut()).map(CxPtr)
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

/// The current slice's state, if any.
fn with_slice<R>(f: impl FnOnce(&Slice) -> R) -> Option<R> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: a non-null CURRENT points at the `Slice` of the `resume`/`terminate`
    // call running on this thread (the guard resets it before that call returns).
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

/// Whether the current context is borrowed right now (a drop happening inside a
/// [`with_cx`] closure).
pub(crate) fn borrowed() -> bool {
    with_slice(|s| s.borrowed.get()).unwrap_or(false)
}

/// Keeps `obj` until the current borrow of the context ends: dropping it now could run
/// Python code (a `__del__`) that calls the API while the context is borrowed. Called
/// only when [`borrowed`] said so; without a current slice `obj` is simply dropped.
pub(crate) fn defer_drop(obj: PyObject) {
    let obj = std::cell::Cell::new(Some(obj));
    with_slice(|s| {
        if let Some(o) = obj.take() {
            s.deferred.borrow_mut().push(o);
            s.has_deferred.set(true);
        }
    });
    drop(obj.take());
}
