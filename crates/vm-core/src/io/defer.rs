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
//! - **Backpressure is unchanged.** A send that would take the queue above the high
//!   watermark is written at once, as before, and suspends the sender if the kernel
//!   does not take it; a deferred send never returns `Suspend`.
//! - **Only where someone flushes.** A thread defers only between [`begin`] and
//!   [`end`] (a scheduler's batch); sends from anywhere else write at once.

use std::cell::{Cell, RefCell};

use super::event::SocketId;

/// Sockets a batch may defer before it ends early to write them: at ~5 µs per loopback
/// write, 32 writes are ~0.15 ms, a fraction of the 1 ms a batch may keep the GIL from
/// a waiting scheduler (`YIELD_AFTER`); a deferred echo waits at most that many other
/// slices, each a few µs in an echo server.
pub(crate) const FLUSH_AT: usize = 32;

thread_local! {
    /// Whether this thread defers its sends now.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// The sockets with deferred bytes, each once (`ConnState::flush_due`).
    static DEFERRED: RefCell<Vec<SocketId>> = const { RefCell::new(Vec::new()) };
}

/// This thread defers its sends from now on (a scheduler entering a batch).
pub(crate) fn begin() {
    ACTIVE.with(|a| a.set(true));
}

/// This thread stops deferring; returns the sockets to write (the caller writes them
/// with [`Reactor::flush_deferred`](super::Reactor::flush_deferred)).
pub(crate) fn end() -> Vec<SocketId> {
    ACTIVE.with(|a| a.set(false));
    DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Whether sends on this thread are deferred now.
pub(super) fn active() -> bool {
    ACTIVE.with(|a| a.get())
}

/// Notes a socket whose bytes wait for the end of the batch.
pub(super) fn note(id: SocketId) {
    DEFERRED.with(|d| d.borrow_mut().push(id));
}

/// Sockets deferred so far in this batch.
pub(crate) fn pending() -> usize {
    DEFERRED.with(|d| d.borrow().len())
}
