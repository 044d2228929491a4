//! Batches of hooked slices: [`SliceHook`] and the loop that runs them.
//!
//! A body of class [`BodyClass::Hooked`](crate::BodyClass) (a Python process) needs
//! its embedder's context around its slices (the GIL). Taking it per slice would cost
//! an acquisition per message and, worse, defeat CPython's hand-over (see
//! `run_batch`), so the scheduler runs consecutive picks inside one
//! [`SliceHook::batch`] call.
//!
//! Socket sends made inside a batch are deferred (`io::defer`): queued on the socket,
//! written by this scheduler once the batch has ended and the hook is released, so a
//! Python process's kernel writes happen without the GIL. A batch that has deferred
//! `io::defer::FLUSH_AT` sockets, or has run a default slice's worth of reductions
//! since its first deferral, ends after its current slice to write them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::worker::Sched;

/// Rounds a batch spins for work, holding the hook, before it ends: well under a
/// microsecond, enough for a message already on its way.
const BATCH_SPIN_ROUNDS: u32 = 64;
/// How long the same spin lasts while only lazy waiters (schedulers with a CPU-bound
/// process to run) wait for the hook, polling the reactor, so
/// that a batch serving I/O-bound processes does not hand the GIL to a spinner each
/// time its queue runs dry for a moment (each such turn costs the I/O-bound processes
/// a CPU-bound slice and two wake-ups). The lazy waiter still gets its turn within
/// [`YIELD_AFTER`].
const LAZY_SPIN: Duration = Duration::from_micros(50);
/// How long another scheduler may wait to enter a batch before the running batch
/// ends after its next hooked slice. Without it the waiter's processes wait for
/// CPython's switch interval (5 ms) on every turn: with one CPU-bound Python process
/// beside I/O-bound ones, the latter's round trips took two intervals at p99 (B11's
/// hog variant: p99 10 ms). Counted from when the waiter began, not from the batch's
/// start: a batch that ends by itself within it (its queue ran dry, the usual case
/// under I/O load) hands over as before, with no extra GIL switch. A millisecond is
/// the BEAM's own slice length; the GIL then changes hands at most about a thousand
/// times a second.
pub(crate) const YIELD_AFTER: Duration = Duration::from_millis(1);
/// Rounds (each yielding the core) that a scheduler which ended its batch for a
/// waiter gives the waiter to take the hook, before it competes for the hook again: a
/// released GIL goes to whoever asks first, and the thread that just released it,
/// already running, would nearly always win against one being woken.
const HANDOFF_ROUNDS: u32 = 64;
/// A batch that waited this long for the hook shares it: another scheduler was running
/// hooked slices meanwhile. Well above an uncontended acquisition (under a
/// microsecond) and a wake-up's latency is not needed: any real wait means the GIL is
/// the resource the schedulers' Python processes queue for.
const CONTENDED_WAIT: Duration = Duration::from_micros(10);
/// In a contended batch a hooked slice gets the default budget divided by this. The
/// GIL is then one core shared by every scheduler's Python processes, and a CPU-bound
/// process holds it for its whole slice while the others' processes (each needing a
/// few microseconds) wait: B11's echo with one spinning process kept ~50% of its
/// throughput with 4000-reduction slices (about 0.3 ms of that loop), ~67% at 1000,
/// ~77% at 500 and ~81% at 250 (with the hand-over rules below). 500 (~40 µs of a
/// tight loop) keeps the cost of the extra slices for CPU-bound work sharing the GIL
/// to a few percent (a resume costs about a microsecond). A process that waits in
/// `receive` before its budget runs out never notices.
pub(crate) const CONTENDED_DIVISOR: u32 = 8;
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
    ///
    /// Other schedulers are not left to that interval: one about to enter a batch
    /// counts itself in `hook_waiters` until it holds the hook; once one has waited
    /// [`YIELD_AFTER`] the batch ends after its current hooked slice (a batch with no
    /// work ends at once while anyone waits), then gives the waiter [`HANDOFF_ROUNDS`] to take
    /// the hook before this scheduler competes again. Only schedulers count: a plain
    /// Python thread still gets the GIL by CPython's own hand-over, as before.
    ///
    /// A hooked slice that ran out of budget (`Step::Yield`: a CPU-bound process) ends
    /// the batch at once while another scheduler waits, whatever the wait: as on the
    /// BEAM it gets one slice per turn, not a streak of them while other schedulers'
    /// processes queue for the GIL. And a batch that had to wait for the hook gives its
    /// hooked slices a budget divided by [`CONTENDED_DIVISOR`]: with the GIL shared, a
    /// CPU-bound slice is everyone's latency.
    ///
    /// A scheduler whose batch would start with a CPU-bound process (`cpu_bound`: its
    /// last slice ended in `Yield`) waits as a *lazy* waiter (`hook_waiters[1]`): the
    /// running batch owes it the hook only once it has waited [`YIELD_AFTER`], keeps
    /// the hook through a dry moment for up to [`LAZY_SPIN`], and writes its deferred
    /// sends with the hook held rather than release it to a spinner. Inside a batch, a
    /// CPU-bound pick while another scheduler waits for the hook is not started: it is
    /// stashed (it runs first in this scheduler's next batch) and the hook handed over.
    /// So with the GIL contended, a CPU-bound Python process gets a short slice at
    /// least every millisecond and whenever the I/O-bound ones leave the GIL idle.
    pub(super) fn run_batch(&mut self, hook: &dyn SliceHook, p: Arc<Process>, prio: Priority) {
        let mut first = Some((p, prio));
        let batch_time = self.vm.config.batch_time;
        let vm = self.vm;
        let sh = &vm.router.sched;
        let [(waiters, since), (lazy, lazy_since)] = &*sh.hook_waiters;
        // Which count this scheduler waits in: lazy if its batch would start with a
        // CPU-bound process (see the module docs).
        let (mine, my_since) = match &first {
            Some((p, _)) if p.cpu_bound.load(Ordering::Relaxed) => (lazy, lazy_since),
            _ => (waiters, since),
        };
        let now_ns = || vm.started.elapsed().as_nanos() as u64;
        let yield_after = YIELD_AFTER.as_nanos() as u64;
        let asked = Instant::now();
        // Relaxed throughout: the count only decides when a batch ends early, and a
        // stale read costs at most the old behaviour (the switch interval) or one
        // early hand-over.
        if mine.fetch_add(1, Ordering::Relaxed) == 0 {
            my_since.store(now_ns(), Ordering::Relaxed);
        }
        let mut entered = false;
        let mut handed_off = false;
        let mut deferred_since: Option<u64> = None;
        let mut dry_since: Option<u64> = None;
        let lazy_spin = LAZY_SPIN.as_nanos() as u64;
        // Sends made in the batch are written after it, without the hook (io::defer).
        crate::io::defer::begin();
        // The hook is the embedder's code around the slices (each slice has its own
        // perimeter): if it panics, the batch ends, and a first pick it never ran runs
        // without it.
        let batch = catch_unwind(AssertUnwindSafe(|| {
            hook.batch(&mut || {
                if !entered {
                    entered = true;
                    mine.fetch_sub(1, Ordering::Relaxed);
                    self.contended = asked.elapsed() >= CONTENDED_WAIT;
                }
                let start = Instant::now();
                let mut pick = first.take();
                let mut first_pick = true;
                loop {
                    match pick {
                        Some((p, prio)) => {
                            if !first_pick
                                && p.hooked
                                && p.cpu_bound.load(Ordering::Relaxed)
                                && waiters.load(Ordering::Relaxed) > 0
                            {
                                self.stash = Some((p, prio));
                                handed_off = true;
                                return;
                            }
                            first_pick = false;
                            self.spins = 0;
                            if !p.hooked && start.elapsed() >= batch_time {
                                self.stash = Some((p, prio));
                                return;
                            }
                            let hooked = p.hooked;
                            self.run_one(p, prio);
                            let waited = |since: &AtomicU64| {
                                now_ns().saturating_sub(since.load(Ordering::Relaxed))
                                    >= yield_after
                            };
                            if hooked
                                && ((waiters.load(Ordering::Relaxed) > 0
                                    && (self.yielded || waited(since)))
                                    || (lazy.load(Ordering::Relaxed) > 0 && waited(lazy_since)))
                            {
                                handed_off = true;
                                return;
                            }
                            if self.deferred_writes_due(&mut deferred_since) {
                                if waiters.load(Ordering::Relaxed) == 0
                                    && lazy.load(Ordering::Relaxed) > 0
                                {
                                    // Only schedulers with a CPU-bound process wait:
                                    // releasing the hook to write would hand it to
                                    // one of them for a slice. Write with it held.
                                    self.flush_deferred();
                                    crate::io::defer::begin();
                                    deferred_since = None;
                                } else {
                                    // Make the deferred writes now, outside the hook.
                                    return;
                                }
                            }
                        }
                        None if waiters.load(Ordering::Relaxed) > 0 => {
                            // Nothing to run and a scheduler waits for the hook: no
                            // spin holding it.
                            self.spins = 0;
                            return;
                        }
                        None => {
                            // A short spin with the hook held (no yield: a thread
                            // that yields the core while holding the GIL keeps every
                            // other scheduler waiting for it, for a whole time slice of
                            // the OS when the machine is busy). The longer, yielding
                            // spin happens after the batch, without the GIL.
                            self.spins += 1;
                            if self.spins == 1 {
                                dry_since = None;
                            }
                            let done = if lazy.load(Ordering::Relaxed) > 0 {
                                // The clock only while a lazy waiter keeps us spinning.
                                let t = *dry_since.get_or_insert_with(now_ns);
                                now_ns().saturating_sub(t) >= lazy_spin
                            } else {
                                self.spins >= BATCH_SPIN_ROUNDS
                            };
                            if done {
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
        self.contended = false;
        if !entered {
            // The hook never ran the batch (it panicked, or refused: the interpreter
            // is exiting).
            mine.fetch_sub(1, Ordering::Relaxed);
        }
        self.flush_deferred();
        if batch.is_err() {
            if let Some((p, prio)) = first.take() {
                self.run_one(p, prio);
            }
        }
        if handed_off {
            for _ in 0..HANDOFF_ROUNDS {
                if waiters.load(Ordering::Relaxed) == 0 && lazy.load(Ordering::Relaxed) == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }

    /// Whether the batch should end to write its deferred sends: [`FLUSH_AT`] sockets,
    /// or a default slice's worth of reductions ran since the first was deferred
    /// (`since`: the scheduler's reduction count then), so that bytes wait for at most
    /// about one slice of other work (a CPU-bound process's), not for several. Two
    /// loads per slice, no clock.
    ///
    /// [`FLUSH_AT`]: crate::io::defer::FLUSH_AT
    fn deferred_writes_due(&self, since: &mut Option<u64>) -> bool {
        let n = crate::io::defer::pending();
        if n == 0 {
            return false;
        }
        if n >= crate::io::defer::FLUSH_AT {
            return true;
        }
        let ran = self.shared().stats[self.index]
            .reductions
            .load(Ordering::Relaxed);
        let first = *since.get_or_insert(ran);
        ran.wrapping_sub(first) >= u64::from(crate::config::DEFAULT_REDUCTIONS)
    }

    /// Ends this thread's deferral and writes the sockets the batch deferred sends on
    /// (io::defer), with the hook released.
    fn flush_deferred(&self) {
        let socks = crate::io::defer::end();
        if socks.is_empty() {
            return;
        }
        if let Some(r) = self.shared().idle.reactor() {
            r.flush_deferred(&socks);
        }
    }
}
