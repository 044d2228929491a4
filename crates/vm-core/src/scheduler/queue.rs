//! Run queues: per scheduler and priority a FIFO the others can steal from, and a
//! global injector per priority.
//!
//! Each scheduler thread owns its [`Workers`] (`crossbeam_deque::Worker`s, FIFO, one
//! per priority); every other scheduler holds their `Stealer`s. Processes made
//! runnable by a thread that is not one of this VM's schedulers go to the injector of
//! their priority, from which schedulers take batches into their own queues.
//!
//! A scheduler knows its own queues through a thread-local pointer, set for the life
//! of its loop ([`enter`]); a push from that thread goes straight to its local queue.
//!
//! Max, high and low priority are rare, so a VM-wide count of processes queued at
//! those priorities (`rare`) lets the common pick skip their queues.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use crate::process::{Priority, Process};

/// The queues shared by all schedulers of one VM.
pub(crate) struct RunQueues {
    /// Tells this VM's scheduler threads from other VMs' (see [`enter`]).
    id: u64,
    injectors: [Injector<Arc<Process>>; Priority::COUNT],
    stealers: Vec<[Stealer<Arc<Process>>; Priority::COUNT]>,
    /// Processes queued at a priority other than normal (may dip below zero for a
    /// moment: a pop can be counted before the push it takes).
    rare: AtomicIsize,
}

/// The queues one scheduler thread owns.
pub(crate) struct Workers {
    queues: [Worker<Arc<Process>>; Priority::COUNT],
    index: usize,
}

thread_local! {
    /// The scheduler running on this thread: (its VM's queue id, its workers). Set for
    /// the life of the scheduler loop; null elsewhere.
    static CURRENT: Cell<(u64, *const Workers)> = const { Cell::new((0, std::ptr::null())) };
}

/// Marks this thread as the scheduler owning `w` in the VM whose queues have `id`,
/// until [`leave`].
pub(crate) fn enter(id: u64, w: &Workers) {
    CURRENT.with(|c| c.set((id, w as *const Workers)));
}

/// Ends what [`enter`] started (before the `Workers` go away).
pub(crate) fn leave() {
    CURRENT.with(|c| c.set((0, std::ptr::null())));
}

impl RunQueues {
    /// Queues for `n` schedulers, and each one's local half.
    pub(crate) fn new(n: usize) -> (RunQueues, Vec<Workers>) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let workers: Vec<Workers> = (0..n)
            .map(|index| Workers {
                queues: std::array::from_fn(|_| Worker::new_fifo()),
                index,
            })
            .collect();
        let stealers = workers
            .iter()
            .map(|w| std::array::from_fn(|i| w.queues[i].stealer()))
            .collect();
        let q = RunQueues {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            injectors: std::array::from_fn(|_| Injector::new()),
            stealers,
            rare: AtomicIsize::new(0),
        };
        (q, workers)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Schedulers.
    pub(crate) fn schedulers(&self) -> usize {
        self.stealers.len()
    }

    /// Counts a process about to be queued at `prio`.
    pub(crate) fn count_in(&self, prio: Priority) {
        if prio != Priority::Normal {
            self.rare.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts a process taken from a queue of `prio`.
    pub(crate) fn count_out(&self, prio: Priority) {
        if prio != Priority::Normal {
            self.rare.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// True if a process may be queued at a priority other than normal.
    pub(crate) fn rare(&self) -> bool {
        self.rare.load(Ordering::Acquire) > 0
    }

    /// This thread's own queues, if it is one of this VM's schedulers.
    pub(crate) fn local(&self) -> Option<&Workers> {
        let (id, w) = CURRENT.with(|c| c.get());
        if id != self.id || w.is_null() {
            return None;
        }
        // SAFETY: CURRENT holds a pointer to the `Workers` owned by this thread's
        // scheduler loop, set by `enter` when the loop starts and cleared by `leave`
        // before the `Workers` is dropped, and only this thread reads it; the loop
        // outlives every call made from it (all callers run inside it). `Workers`
        // methods take `&self`, so no aliasing `&mut` exists.
        Some(unsafe { &*w })
    }

    /// Puts `p` in the injector of `prio` (from a thread that is not a scheduler, or
    /// work handed away).
    pub(crate) fn inject(&self, p: Arc<Process>, prio: Priority) {
        self.injectors[prio.index()].push(p);
    }

    /// The injector of `prio`.
    pub(crate) fn injector(&self, prio: Priority) -> &Injector<Arc<Process>> {
        &self.injectors[prio.index()]
    }

    /// Scheduler `j`'s queue of `prio`, for stealing.
    pub(crate) fn stealer(&self, j: usize, prio: Priority) -> &Stealer<Arc<Process>> {
        &self.stealers[j][prio.index()]
    }

    /// Queue lengths per scheduler (all priorities), then the injectors'.
    pub(crate) fn lengths(&self) -> (Vec<usize>, usize) {
        let per = self
            .stealers
            .iter()
            .map(|s| s.iter().map(|q| q.len()).sum())
            .collect();
        let global = self.injectors.iter().map(|q| q.len()).sum();
        (per, global)
    }

    /// True if any queue holds a process.
    pub(crate) fn has_work(&self) -> bool {
        self.injectors.iter().any(|q| !q.is_empty())
            || self
                .stealers
                .iter()
                .any(|s| s.iter().any(|q| !q.is_empty()))
    }

    /// Drops every queued process reference (shutdown).
    pub(crate) fn drain(&self) {
        for inj in &self.injectors {
            while !matches!(inj.steal(), Steal::Empty) {}
        }
        for s in &self.stealers {
            for q in s {
                while !matches!(q.steal(), Steal::Empty) {}
            }
        }
    }
}

impl Workers {
    /// Which scheduler these queues belong to.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The local queue of `prio`.
    pub(crate) fn queue(&self, prio: Priority) -> &Worker<Arc<Process>> {
        &self.queues[prio.index()]
    }

    /// Pushes `p` at the back of the local queue of `prio`; returns that queue's length.
    pub(crate) fn push(&self, p: Arc<Process>, prio: Priority) -> usize {
        let q = self.queue(prio);
        q.push(p);
        q.len()
    }

    /// Empties every local queue into `f` (with the queue's priority).
    pub(crate) fn drain_into(&self, mut f: impl FnMut(Arc<Process>, Priority)) {
        for prio in Priority::ALL {
            while let Some(p) = self.queue(prio).pop() {
                f(p, prio);
            }
        }
    }
}
