//! Sends deferred to the end of a batch of hooked slices: the kernel write of a Python
//! process's `send` made outside the GIL.
//!
//! A Python process runs inside a batch that holds the GIL (scheduler/batch.rs). On
//! loopback the `writev` of a send is most of a round trip's server CPU (the sender's
//! system call runs the peer's TCP receive path and wakes it, and the peer often
//! preempts the sender on its way out): made inside the slice, all of it happens with
//! the GIL held, and the other scheduler's Python processes wait for it. While a
//! scheduler thread runs a batch it *defers* its sends: `send` queues the bytes on the
//! socket (as it always did) but skips the write, and notes the socket here; when the
//! batch ends, after the GIL is released, the scheduler writes every noted socket's
//! queue ([`Reactor::flush_deferred`](super::Reactor::flush_deferred)). A batch that
//! has deferred [`FLUSH_AT`] sockets ends early so that bytes never wait long.
//!
//! Invariants:
//! - **Order.** Deferring changes only *when* queued bytes reach the kernel, never
//!   their order: every write, deferred or not, takes the socket's queue from its
//!   front, and a later send (from any thread), a writable edge, `close`, `drain` or
//!   `shutdown` writes what an earlier deferred send left queued first.
//! - **Nothing is left behind.** A socket noted here is written when the batch ends,
//!   whatever ended it (a panic in the hook included: the scheduler flushes after
//!   `catch_unwind`); one that closed meanwhile (its owner exited and `close` wrote
//!   what it could, as for any queued bytes) is skipped.
//! - **Bytes wait little.** A batch ends to write its deferred sockets once it has
//!   [`FLUSH_AT`] of them or a default slice's worth of reductions ran since its
//!   first (checked after each slice: a CPU-bound neighbour delays them by about one
//!   of its slices), and the watchdog writes the list of a
//!   scheduler stuck in one slice (a process blocked in a C call) when it hands its
//!   work over: the list is per scheduler ([`DeferList`]), reachable from there.
//! - **Backpressure is unchanged.** A send that would take the queue above the high
//!   watermark is written at once, as before, and suspends the sender if the kernel
//!   does not take it; a deferred send never returns `Suspend`.
//! - **Only where someone flushes.** A thread defers only between [`begin`] and
//!   [`end`] (a scheduler's batch); sends from anywhere else write at once.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, MutexGuard};

use super::event::SocketId;

/// Sockets a batch may defer before it ends early to write them: at ~5 µs per loopback
/// write, 32 writes are ~0.15 ms, a fraction of the 1 ms a batch may keep the GIL from
/// a waiting scheduler (`YIELD_AFTER`); a deferred echo waits at most that many other
/// slices, each a few µs in an echo server.
pub(crate) const FLUSH_AT: usize = 32;
/// One scheduler's deferred sockets (each once: `ConnState::flush_due`). Its thread
/// notes them; it writes them when its batch ends, or the watchdog does if the
/// scheduler is stuck in a slice.
#[derive(Debug, Default)]
pub(crate) struct DeferList {
    socks: Mutex<Vec<SocketId>>,
}

impl DeferList {
    fn lock(&self) -> MutexGuard<'_, Vec<SocketId>> {
        // A Vec push or take cannot leave it inconsistent.
        self.socks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sockets noted so far, leaving the list empty.
    pub(crate) fn take(&self) -> Vec<SocketId> {
        std::mem::take(&mut *self.lock())
    }
}

thread_local! {
    /// Whether this thread defers its sends now.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// This scheduler thread's list (set once, when the thread starts).
    static LIST: RefCell<Option<Arc<DeferList>>> = const { RefCell::new(None) };
    /// Sockets this thread noted since its batch began (without the list's lock; the
    /// watchdog may have taken them meanwhile, which only ends the batch early).
    static NOTED: Cell<usize> = const { Cell::new(0) };
}

/// This thread is the scheduler that owns `list` (at its start).
pub(crate) fn attach(list: Arc<DeferList>) {
    LIST.with(|l| *l.borrow_mut() = Some(list));
}

/// This thread defers its sends from now on (a scheduler entering a batch); a thread
/// with no list never defers.
pub(crate) fn begin() {
    let has = LIST.with(|l| l.borrow().is_some());
    ACTIVE.with(|a| a.set(has));
}

/// This thread stops deferring; returns the sockets to write (the caller writes them
/// with [`Reactor::flush_deferred`](super::Reactor::flush_deferred)).
pub(crate) fn end() -> Vec<SocketId> {
    ACTIVE.with(|a| a.set(false));
    NOTED.with(|n| n.set(0));
    LIST.with(|l| l.borrow().as_ref().map(|l| l.take()).unwrap_or_default())
}

/// Whether sends on this thread are deferred now.
pub(super) fn active() -> bool {
    ACTIVE.with(|a| a.get())
}

/// Notes a socket whose bytes wait for the end of the batch.
pub(super) fn note(id: SocketId) {
    LIST.with(|l| {
        if let Some(l) = l.borrow().as_ref() {
            l.lock().push(id);
            NOTED.with(|n| n.set(n.get() + 1));
        }
    });
}

/// Sockets deferred so far in this batch.
pub(crate) fn pending() -> usize {
    NOTED.with(|n| n.get())
}
