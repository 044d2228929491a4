//! Batches of hooked slices: [`SliceHook`] and the loop that runs them.
//!
//! A body of class [`BodyClass::Hooked`](crate::BodyClass) (a Python process) needs
//! its embedder's context around its slices (the GIL). Taking it per slice would cost
//! an acquisition per message and, worse, defeat CPython's hand-over (see
//! `run_batch`), so the scheduler runs consecutive picks inside one
//! [`SliceHook::batch`] call.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::worker::Sched;

/// Rounds a batch spins for work, holding the hook, before it ends: well under a
/// microsecond, enough for a message already on its way.
const BATCH_SPIN_ROUNDS: u32 = 64;
use crate::process::{Priority, Process};

/// Wraps each batch of [`BodyClass::Hooked`](crate::BodyClass) slices on a scheduler
/// thread. The Python binding holds the GIL across the batch.
///
/// A batch starts when the scheduler picks a hooked process and goes on while picks
/// keep coming: more hooked slices, native slices for up to
/// [`VmConfig::batch_time`](crate::VmConfig::batch_time) (a native pick past that ends the batch and runs right
/// after it), and the scheduler's short spin for work. It ends before the scheduler
/// parks, goes offline or stops.
pub trait SliceHook: Send + Sync {
    /// Runs `run` (the whole batch) on the calling scheduler thread with the hook
    /// entered. The default is `enter(); run(); leave()`; an implementation that can
    /// only provide its context around a closure (pyo3's `Python::with_gil`) overrides
    /// this instead.
    fn batch(&self, run: &mut dyn FnMut()) {
        self.enter();
        run();
        self.leave();
    }
    /// Called on the scheduler thread before the first hooked slice of a batch (by the
    /// default [`batch`](SliceHook::batch)).
    fn enter(&self) {}
    /// Called on the same thread after the batch's last slice (by the default
    /// [`batch`](SliceHook::batch)).
    fn leave(&self) {}
}

impl Sched<'_> {
    /// Runs `p`, a hooked process, and the picks after it inside one
    /// [`SliceHook::batch`] call. The batch keeps the hook (the GIL) across consecutive
    /// hooked slices: releasing and re-taking the GIL at once would defeat CPython's own
    /// hand-over, which lets a waiting thread ask the holder to drop the GIL after the
    /// switch interval (5 ms) *unless the GIL changed hands meanwhile* — a release/re-take
    /// every slice counts as a change, so waiters would starve (a plain Python thread
    /// beside one spinning process waited 1.8 s). The interpreter therefore bounds the
    /// batch, at its switch interval. Native slices picked meanwhile run inside the batch
    /// for up to `batch_time` (dropping the GIL for a few microseconds helps no one and
    /// makes it change hands); a native pick past that ends the batch and runs right
    /// after it, so other threads get their turn. The batch also covers the spin for
    /// work, and ends before the scheduler parks, goes offline or stops.
    pub(super) fn run_batch(&mut self, hook: &dyn SliceHook, p: Arc<Process>, prio: Priority) {
        let mut first = Some((p, prio));
        let batch_time = self.vm.config.batch_time;
        // The hook is the embedder's code around the slices (each slice has its own
        // perimeter): if it panics, the batch ends, and a first pick it never ran runs
        // without it.
        let batch = catch_unwind(AssertUnwindSafe(|| {
            hook.batch(&mut || {
                let start = Instant::now();
                let mut pick = first.take();
                loop {
                    match pick {
                        Some((p, prio)) => {
                            self.spins = 0;
                            if !p.hooked && start.elapsed() >= batch_time {
                                self.stash = Some((p, prio));
                                return;
                            }
                            self.run_one(p, prio);
                        }
                        None => {
                            // A short spin with the hook held (no yield: a thread
                            // that yields the core while holding the GIL keeps every
                            // other scheduler waiting for it, for a whole time slice of
                            // the OS when the machine is busy). The longer, yielding
                            // spin happens after the batch, without the GIL.
                            self.spins += 1;
                            if self.spins >= BATCH_SPIN_ROUNDS {
                                self.spins = 0;
                                return;
                            }
                            std::hint::spin_loop();
                        }
                    }
                    if self.vm.stopping.load(Ordering::Acquire)
                        || self.index >= self.shared().online()
                    {
                        return;
                    }
                    pick = self.next();
                }
            })
        }));
        if batch.is_err() {
            if let Some((p, prio)) = first.take() {
                self.run_one(p, prio);
            }
        }
    }
}
