//! Schedulers: one OS thread each, run queues per priority, stealing, parking.
//!
//! Laid out as tokio's multi-thread runtime is, one concern per file:
//!
//! * [`queue`]: the run queues — per scheduler, one FIFO per priority that the others
//!   can steal from; one global injector per priority for processes made runnable by
//!   threads that are not schedulers (timers, dirty pools, outside senders).
//! * [`slot`]: the LIFO hand-off slot, where a process woken by the running process
//!   waits to run next on the same warm core.
//! * [`idle`]: parked schedulers and waking them, with the argument for why no wake-up
//!   is lost between a scheduler going to sleep and work arriving.
//! * [`worker`]: a scheduler thread's loop — pick order, stealing, spinning, parking,
//!   going offline.
//! * [`slice`]: running one slice of a process inside its panic perimeter, then the
//!   accounting and GC that close it.
//! * [`batch`]: [`SliceHook`] and running consecutive hooked slices (Python's, under
//!   one GIL acquisition) in one batch.
//! * [`watchdog`]: the thread that notices a stuck scheduler and reports long slices.
//!
//! [`Shared`] is the part every thread sees (the router's handle on the schedulers:
//! enqueue, wake, statistics); each scheduler thread also owns its local queues
//! ([`Workers`]). The only module cycle left is this one ↔ `vm`: a scheduler runs
//! processes with a `Cx` that reaches the VM, as tokio's worker reaches its handle.
//!
//! ## Where a runnable process goes
//!
//! A process made runnable on a scheduler thread goes to that scheduler: a normal
//! priority one into its LIFO slot (the previous occupant moves to the back of the
//! local queue), others to the local queue of their priority (cache-warm, no
//! contention; BEAM also enqueues on the waker's run queue). From any other thread it
//! goes to the injector. Local pushes wake a parked sibling only when the local queue
//! holds surplus work ([`WAKE_SURPLUS`]): a token passed around a ring then stays on one
//! warm core instead of bouncing between cores on every message, while independent
//! work spreads out. An idle VM has all schedulers parked in the kernel and uses no
//! CPU.

mod batch;
pub(crate) mod deferred;
mod idle;
mod queue;
mod slice;
mod slot;
pub(crate) mod watchdog;
mod worker;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use crate::process::{Priority, Process};
pub use batch::SliceHook;
use idle::Idle;
use queue::RunQueues;
pub(crate) use queue::Workers;
pub(crate) use slot::LifoSlot;
pub(crate) use worker::run;

/// A local push wakes a parked sibling when the local queue holds this many: one
/// process queued behind the running one is the normal state of a ring or a
/// request/response pair (waking a core for it would move the token to a cold core on
/// every hop); two means work is piling up.
pub(crate) const WAKE_SURPLUS: usize = 2;

/// Per-scheduler counters (read by statistics).
#[derive(Default)]
pub(crate) struct SchedStats {
    /// Nanoseconds spent not parked, since start, up to the current busy period.
    pub(crate) busy_ns: AtomicU64,
    /// When the current busy period began (ns since VM start, +1); 0 while parked.
    /// `statistics` adds the period in progress, so a scheduler that never parks
    /// still reads as busy (busy_ns alone grows only when it parks).
    pub(crate) busy_start_ns: AtomicU64,
    /// Slices run.
    pub(crate) slices: AtomicU64,
    /// Reductions executed.
    pub(crate) reductions: AtomicU64,
    /// Nanoseconds spent in the longest slice the watchdog has seen (slices shorter
    /// than its tick are not measured: timing every slice would cost two clock reads
    /// per slice, a fifth of a message hop).
    pub(crate) longest_slice_ns: AtomicU64,
    /// Slice sequence number: odd while a slice runs, even between slices. The
    /// watchdog compares it across ticks to find slices that run long.
    pub(crate) slice_seq: AtomicU64,
    /// The slice (sequence number) the watchdog found running past the long_schedule
    /// threshold; the scheduler reports it when the slice ends.
    pub(crate) long_seq: AtomicU64,
    /// When the watchdog first saw that slice (ns since VM start).
    pub(crate) long_seen_ns: AtomicU64,
    /// The slice the watchdog last took over (so it acts once per slice).
    pub(crate) taken_over: AtomicU64,
    /// Times the watchdog handed this scheduler's work to the others.
    pub(crate) takeovers: AtomicU64,
    /// Slices longer than the long_schedule threshold.
    pub(crate) long_schedules: AtomicU64,
    /// Processes that ended on this scheduler (counted here, not VM-wide: a shared
    /// counter would be one more contended read-modify-write per exit).
    pub(crate) exits: AtomicU64,
    /// Garbage collections run by this scheduler.
    pub(crate) gcs: AtomicU64,
    /// Bytes those collections reclaimed.
    pub(crate) reclaimed_bytes: AtomicU64,
    /// Messages sent by processes run here (each slice's `Cx` count, added at its end).
    pub(crate) messages_sent: AtomicU64,
}

/// Scheduler state shared by all threads of one VM.
pub(crate) struct Shared {
    queues: RunQueues,
    idle: Idle,
    /// Schedulers waiting to enter a [`SliceHook`] batch (blocked on the GIL), and when
    /// the first of them began (ns since the VM started): a batch ends at its next
    /// hooked slice once a waiter has waited [`batch::YIELD_AFTER`] (see `run_batch`).
    /// `[0]`: urgent waiters; `[1]`: lazy ones, whose batch would start with a
    /// CPU-bound process (the running batch owes them a turn only after
    /// `YIELD_AFTER`). One cache line for both: a batch reads both after every slice.
    pub(crate) hook_waiters: CachePadded<[(AtomicUsize, AtomicU64); 2]>,
    pub(crate) stats: Vec<CachePadded<SchedStats>>,
    pub(crate) slots: Vec<CachePadded<LifoSlot>>,
    /// Each scheduler's receive timeouts not armed yet (see [`deferred`]).
    pub(crate) deferred: Vec<CachePadded<deferred::Deferred>>,
    /// Each scheduler's socket sends deferred to the end of its batch (`io::defer`):
    /// the watchdog writes a stuck scheduler's (see [`Shared::hand_over`]).
    pub(crate) io_deferred: Vec<Arc<crate::io::defer::DeferList>>,
    /// The watchdog's thread, and whether it sleeps through an idle period (see
    /// `watchdog`): a scheduler that wakes up wakes it.
    pub(crate) watchdog: watchdog::Sleeper,
}

impl Shared {
    /// State for `n` schedulers, `online` of them taking work, and each scheduler's
    /// local queues (for its thread).
    pub(crate) fn new(n: usize, online: usize) -> (Shared, Vec<Workers>) {
        let (queues, workers) = RunQueues::new(n);
        let shared = Shared {
            queues,
            idle: Idle::new(n, online),
            hook_waiters: CachePadded::new(std::array::from_fn(|_| {
                (AtomicUsize::new(0), AtomicU64::new(0))
            })),
            stats: (0..n)
                .map(|_| CachePadded::new(SchedStats::default()))
                .collect(),
            slots: (0..n)
                .map(|_| CachePadded::new(LifoSlot::default()))
                .collect(),
            deferred: (0..n)
                .map(|_| CachePadded::new(deferred::Deferred::default()))
                .collect(),
            io_deferred: (0..n).map(|_| Arc::default()).collect(),
            watchdog: watchdog::Sleeper::default(),
        };
        (shared, workers)
    }

    pub(crate) fn register_thread(&self, i: usize, t: Thread) {
        self.idle.register_thread(i, t);
    }

    pub(crate) fn all_registered(&self) {
        self.wake_all();
    }

    /// Schedulers.
    pub(crate) fn count(&self) -> usize {
        self.stats.len()
    }

    /// Schedulers taking work.
    pub(crate) fn online(&self) -> usize {
        self.idle.online()
    }

    pub(crate) fn set_online(&self, n: usize) -> crate::Result<usize> {
        if n == 0 || n > self.count() {
            return Err(crate::Error::BadArg(format!(
                "schedulers_online must be between 1 and {}, got {n}",
                self.count()
            )));
        }
        let old = self.idle.set_online(n);
        self.wake_all();
        Ok(old)
    }

    /// Run queue lengths per scheduler (all priorities), then the global queue.
    pub(crate) fn run_queue_lengths(&self) -> (Vec<usize>, usize) {
        self.queues.lengths()
    }

    /// Makes `p` (already QUEUED) runnable; see the module docs for where it goes.
    pub(crate) fn enqueue(&self, p: Arc<Process>) {
        let prio = p.priority();
        self.queues.count_in(prio);
        match self.queues.local() {
            Some(w) => {
                let p = if prio == Priority::Normal {
                    match self.slots[w.index()].put(p) {
                        Some(prev) => prev,
                        None => return,
                    }
                } else {
                    p
                };
                if w.push(p, prio) >= WAKE_SURPLUS {
                    self.wake_one();
                }
            }
            None => {
                self.queues.inject(p, prio);
                self.wake_one();
            }
        }
    }

    /// Wakes one parked online scheduler, if any.
    pub(crate) fn wake_one(&self) {
        self.idle.wake_one();
    }

    /// The VM's reactor was made: idle schedulers poll it from now on (`idle`).
    pub(crate) fn set_reactor(&self, r: Arc<crate::io::Reactor>) {
        self.idle.set_reactor(r);
    }

    /// Wakes every scheduler (shutdown, a change of schedulers online).
    /// Whether every scheduler is parked (see [`Idle::all_parked`]).
    pub(crate) fn all_parked(&self) -> bool {
        self.idle.all_parked()
    }

    pub(crate) fn wake_all(&self) {
        self.idle.wake_all();
        self.watchdog.wake();
    }

    /// Hands scheduler `i`'s unstealable work (its LIFO slot) to the global queue and
    /// wakes an idle scheduler to steal the rest (the watchdog, for a stuck slice).
    pub(crate) fn hand_over(&self, i: usize) {
        if let Some(p) = self.slots[i].take() {
            self.queues.inject(p, Priority::Normal);
        }
        // A scheduler woken here also arms the stuck one's receive timeouts before it
        // parks again (see `deferred`).
        if self.queues.has_work() || self.deferred[i].pending() {
            self.wake_one();
        }
        // Sends its batch deferred would wait for the stuck slice: write them now.
        let socks = self.io_deferred[i].take();
        if !socks.is_empty() {
            if let Some(r) = self.idle.reactor() {
                r.flush_deferred(&socks);
            }
        }
    }

    /// Drops every queued process reference (shutdown).
    pub(crate) fn drain(&self) {
        for s in &self.slots {
            drop(s.take());
        }
        self.queues.drain();
    }

    /// True if any queue (not the slots) holds a process.
    fn has_work(&self) -> bool {
        self.queues.has_work()
    }

    /// Tells this VM's scheduler threads from other VMs'.
    pub(crate) fn id(&self) -> u64 {
        self.queues.id()
    }
}

/// Adds to a counter that only the calling thread writes (readers may see it lag): a
/// load and a store, no locked read-modify-write.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}
