//! Schedulers: one OS thread each, run queues per priority, stealing, parking.
//!
//! ## Queues
//!
//! Each scheduler owns four FIFO `crossbeam_deque::Worker`s, one per priority, and
//! every other scheduler can steal from them; one global `Injector` per priority takes
//! processes made runnable by threads that are not schedulers (the timer thread, an
//! outside sender). A process made runnable on a scheduler thread goes to that
//! scheduler's own queue (cache-warm, no contention), as BEAM enqueues on the waker's
//! run queue.
//!
//! Pick order: max, then high, then normal and low, where low gets one pick in every
//! [`LOW_EVERY`] when both are runnable (so low progresses under normal load, as in
//! BEAM). Max, high and low are rare, so a VM-wide counter of queued rare-priority
//! processes lets the common case skip their queues. Every [`GLOBAL_EVERY`] picks
//! the injector is consulted before the local queue, so injected work is not starved
//! by a busy local queue.
//!
//! ## Parking and waking
//!
//! A scheduler with nothing to run or steal spins briefly ([`SPIN_ROUNDS`]), then
//! registers in the idle set and re-checks every queue before `park()`ing, while a
//! waker pushes first and then checks the idle count; both sides put a SeqCst fence
//! between their write and their read, so at least one of them sees the other (no lost
//! wake-up). A wake pops one idle scheduler and unparks it. Local pushes wake a sibling
//! only when the local queue holds surplus work (≥ [`WAKE_SURPLUS`] processes):
//! a token passed around a ring then stays on one warm core instead of bouncing
//! between cores on every message, while independent work spreads out.
//!
//! An idle VM therefore has all schedulers parked in the kernel and uses no CPU.

mod slot;
pub mod watchdog;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use crate::config::SliceHook;
use crate::process::context::Cx;
use crate::process::{Process, Step};
use crate::term::{Atom, Fragment, Term};
use crate::vm::VmInner;
pub use slot::LifoSlot;

/// Low priority gets one pick in this many when normal work is also runnable.
pub const LOW_EVERY: u64 = 8;
/// The global injector is checked first once in this many picks (tokio uses 61).
pub const GLOBAL_EVERY: u64 = 61;
/// Rounds of looking for work before parking. Each round checks every queue; a few
/// microseconds in all, which catches the common "message arrives right after" case
/// without burning a core on an idle VM.
pub const SPIN_ROUNDS: u32 = 64;
/// A local push wakes a parked sibling when the local queue holds this many.
pub const WAKE_SURPLUS: usize = 2;
/// Consecutive picks from the LIFO slot before it must yield to the queue.
pub const LIFO_MAX: u32 = 16;

const PRIOS: usize = 4;
const NORMAL: usize = 2;

/// Per-scheduler counters (read by statistics).
#[derive(Default)]
pub struct SchedStats {
    /// Nanoseconds spent not parked, since start, up to the current busy period.
    pub busy_ns: AtomicU64,
    /// When the current busy period began (ns since VM start, +1); 0 while parked.
    /// `statistics` adds the period in progress, so a scheduler that never parks
    /// still reads as busy (busy_ns alone grows only when it parks).
    pub busy_start_ns: AtomicU64,
    /// Slices run.
    pub slices: AtomicU64,
    /// Reductions executed.
    pub reductions: AtomicU64,
    /// Nanoseconds spent in the longest slice the watchdog has seen (slices shorter
    /// than its tick are not measured: timing every slice would cost two clock reads
    /// per slice, a fifth of a message hop).
    pub longest_slice_ns: AtomicU64,
    /// Slice sequence number: odd while a slice runs, even between slices. The
    /// watchdog compares it across ticks to find slices that run long.
    pub slice_seq: AtomicU64,
    /// The slice (sequence number) the watchdog found running past the long_schedule
    /// threshold, and when it first saw it (ns since VM start); the scheduler reports
    /// it when the slice ends.
    pub long_seq: AtomicU64,
    pub long_seen_ns: AtomicU64,
    /// The slice the watchdog last took over (so it acts once per slice).
    pub taken_over: AtomicU64,
    /// Times the watchdog handed this scheduler's work to the others.
    pub takeovers: AtomicU64,
    /// Slices longer than the long_schedule threshold.
    pub long_schedules: AtomicU64,
    /// Garbage collections run by this scheduler.
    pub gcs: AtomicU64,
    /// Bytes those collections reclaimed.
    pub reclaimed_bytes: AtomicU64,
}

/// Scheduler state shared by all threads of one VM.
pub struct Shared {
    /// Tells this VM's scheduler threads from other VMs' (see `CURRENT`).
    id: u64,
    injectors: [Injector<Arc<Process>>; PRIOS],
    stealers: Vec<[Stealer<Arc<Process>>; PRIOS]>,
    rare_queued: AtomicIsize,
    idle: Mutex<Vec<usize>>,
    num_idle: AtomicUsize,
    threads: Vec<OnceLock<Thread>>,
    online: AtomicUsize,
    pub(crate) stats: Vec<CachePadded<SchedStats>>,
    pub(crate) slots: Vec<CachePadded<LifoSlot>>,
}

/// The queues one scheduler thread owns, plus its LIFO slot: the process most recently
/// made runnable by this scheduler's own running process (typically the receiver of a
/// message it just sent). It runs next, on this warm core, and cannot be stolen — the
/// same trick as tokio's LIFO slot and BEAM's direct hand-off — so a request/response
/// pair does not bounce between cores. [`LIFO_MAX`] consecutive slot picks at most,
/// then the slot goes to the back of the queue so nothing starves.
pub struct Workers {
    queues: [Worker<Arc<Process>>; PRIOS],
    index: usize,
}

thread_local! {
    /// The scheduler running on this thread: (vm id, its workers). Set for the life of
    /// the scheduler loop; null elsewhere.
    static CURRENT: Cell<(u64, *const Workers)> = const { Cell::new((0, std::ptr::null())) };
}

impl Shared {
    pub(crate) fn new(n: usize, online: usize) -> (Shared, Vec<Workers>) {
        let workers: Vec<Workers> = (0..n)
            .map(|_| ())
            .enumerate()
            .map(|(index, _)| Workers {
                queues: std::array::from_fn(|_| Worker::new_fifo()),
                index,
            })
            .collect();
        let stealers = workers
            .iter()
            .map(|w| std::array::from_fn(|i| w.queues[i].stealer()))
            .collect();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let shared = Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            injectors: std::array::from_fn(|_| Injector::new()),
            stealers,
            rare_queued: AtomicIsize::new(0),
            idle: Mutex::new(Vec::new()),
            num_idle: AtomicUsize::new(0),
            threads: (0..n).map(|_| OnceLock::new()).collect(),
            online: AtomicUsize::new(online),
            stats: (0..n)
                .map(|_| CachePadded::new(SchedStats::default()))
                .collect(),
            slots: (0..n)
                .map(|_| CachePadded::new(LifoSlot::default()))
                .collect(),
        };
        (shared, workers)
    }

    pub(crate) fn register_thread(&self, i: usize, t: Thread) {
        let _ = self.threads[i].set(t);
    }

    pub(crate) fn all_registered(&self) {
        self.wake_all();
    }

    /// Schedulers.
    pub fn count(&self) -> usize {
        self.stealers.len()
    }

    /// Schedulers taking work.
    pub fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    pub(crate) fn set_online(&self, n: usize) -> crate::Result<usize> {
        if n == 0 || n > self.count() {
            return Err(crate::Error::BadArg(format!(
                "schedulers_online must be between 1 and {}, got {n}",
                self.count()
            )));
        }
        let old = self.online.swap(n, Ordering::AcqRel);
        self.wake_all();
        Ok(old)
    }

    /// Run queue lengths per scheduler (all priorities), then the global queue.
    pub fn run_queue_lengths(&self) -> (Vec<usize>, usize) {
        let per = self
            .stealers
            .iter()
            .map(|s| s.iter().map(|q| q.len()).sum())
            .collect();
        let global = self.injectors.iter().map(|q| q.len()).sum();
        (per, global)
    }

    /// Makes `p` (already in state QUEUED) runnable.
    pub(crate) fn enqueue(&self, p: Arc<Process>) {
        let prio = p.priority.load(Ordering::Relaxed) as usize % PRIOS;
        if prio != NORMAL {
            self.rare_queued.fetch_add(1, Ordering::AcqRel);
        }
        let (id, w) = CURRENT.with(|c| c.get());
        if id == self.id && !w.is_null() {
            // SAFETY: CURRENT holds a pointer to the `Workers` owned by this thread's
            // scheduler loop; it is set when the loop starts and cleared before the
            // `Workers` is dropped, and only this thread reads it. `Worker::push` and
            // `Cell::replace` take `&self`, so no aliasing `&mut` exists.
            let w = unsafe { &*w };
            let p = if prio == NORMAL {
                match self.slots[w.index].put(p) {
                    Some(prev) => prev,
                    None => return,
                }
            } else {
                p
            };
            let q = &w.queues[prio];
            q.push(p);
            if q.len() >= WAKE_SURPLUS {
                self.wake_one();
            }
        } else {
            self.injectors[prio].push(p);
            self.wake_one();
        }
    }

    fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.num_idle.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Prefer online schedulers.
        let online = self.online();
        let pos = idle.iter().rposition(|&i| i < online);
        if let Some(pos) = pos {
            let i = idle.swap_remove(pos);
            self.num_idle.fetch_sub(1, Ordering::SeqCst);
            drop(idle);
            if let Some(t) = self.threads[i].get() {
                t.unpark();
            }
        }
    }

    pub(crate) fn wake_all(&self) {
        for t in self.threads.iter().filter_map(|t| t.get()) {
            t.unpark();
        }
    }

    /// Hands scheduler `i`'s unstealable work (its LIFO slot) to the global queue and
    /// wakes an idle scheduler to steal the rest (the watchdog, for a stuck slice).
    pub(crate) fn hand_over(&self, i: usize) {
        if let Some(p) = self.slots[i].take() {
            self.injectors[NORMAL].push(p);
        }
        if self.has_work() {
            self.wake_one();
        }
    }

    /// Drops every queued process reference (shutdown).
    pub(crate) fn drain(&self) {
        for s in &self.slots {
            drop(s.take());
        }
        for inj in &self.injectors {
            while !matches!(inj.steal(), Steal::Empty) {}
        }
        for s in &self.stealers {
            for q in s {
                while !matches!(q.steal(), Steal::Empty) {}
            }
        }
    }

    fn has_work(&self) -> bool {
        self.injectors.iter().any(|q| !q.is_empty())
            || self
                .stealers
                .iter()
                .any(|s| s.iter().any(|q| !q.is_empty()))
    }
}

struct Sched<'a> {
    vm: &'a Arc<VmInner>,
    index: usize,
    workers: &'a Workers,
    ticks: u64,
    low_ticks: u64,
    lifo_streak: u32,
    seq: u64,
    rng: u64,
    buf: Vec<crate::process::signal::Signal>,
    /// Rounds spent looking for work since the last pick (see [`SPIN_ROUNDS`]).
    spins: u32,
    /// A native process picked inside a batch past `batch_time`: it runs next, after
    /// the batch (it is QUEUED and in no run queue meanwhile).
    stash: Option<(Arc<Process>, usize)>,
}

impl Sched<'_> {
    fn shared(&self) -> &Shared {
        &self.vm.router.sched
    }

    fn steal_into(&mut self, prio: usize) -> Option<Arc<Process>> {
        let sh = &self.vm.router.sched;
        let local = &self.workers.queues[prio];
        loop {
            match sh.injectors[prio].steal_batch_and_pop(local) {
                Steal::Success(p) => return Some(p),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        let n = sh.stealers.len();
        if n > 1 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let start = (self.rng as usize) % n;
            for k in 0..n {
                let j = (start + k) % n;
                if j == self.index {
                    continue;
                }
                loop {
                    match sh.stealers[j][prio].steal_batch_and_pop(local) {
                        Steal::Success(p) => return Some(p),
                        Steal::Retry => continue,
                        Steal::Empty => break,
                    }
                }
            }
        }
        None
    }

    fn pop(&mut self, prio: usize) -> Option<Arc<Process>> {
        if prio == NORMAL {
            // Processes woken from outside (timers, other threads) wait in the injector:
            // move them behind the local queue every pick, so a woken process waits for
            // at most one round of the local queue, and take one first once in
            // GLOBAL_EVERY picks.
            let inj = &self.vm.router.sched.injectors[prio];
            if !inj.is_empty() {
                if self.ticks.is_multiple_of(GLOBAL_EVERY) {
                    if let Steal::Success(p) = inj.steal() {
                        self.lifo_streak = 0;
                        return Some(p);
                    }
                }
                let _ = inj.steal_batch(&self.workers.queues[prio]);
            }
            if let Some(p) = self.shared().slots[self.index].take() {
                // Past the streak limit the slot yields to queued work, if there is any.
                if self.lifo_streak < LIFO_MAX || self.workers.queues[prio].is_empty() {
                    self.lifo_streak += 1;
                    return Some(p);
                }
                self.workers.queues[prio].push(p);
            }
            self.lifo_streak = 0;
        }
        if let Some(p) = self.workers.queues[prio].pop() {
            return Some(p);
        }
        self.steal_into(prio)
    }

    fn next(&mut self) -> Option<(Arc<Process>, usize)> {
        self.ticks += 1;
        let rare = self.shared().rare_queued.load(Ordering::Acquire) > 0;
        if rare {
            for prio in [0, 1] {
                if let Some(p) = self.pop(prio) {
                    return Some((p, prio));
                }
            }
            self.low_ticks += 1;
            if self.low_ticks.is_multiple_of(LOW_EVERY) {
                if let Some(p) = self.pop(3) {
                    return Some((p, 3));
                }
            }
        }
        if let Some(p) = self.pop(NORMAL) {
            return Some((p, NORMAL));
        }
        if rare {
            if let Some(p) = self.pop(3) {
                return Some((p, 3));
            }
        }
        None
    }

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
    fn run_batch(&mut self, hook: &dyn SliceHook, p: Arc<Process>, prio: usize) {
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
                            self.spins += 1;
                            if self.spins >= SPIN_ROUNDS {
                                return;
                            }
                            std::hint::spin_loop();
                            std::thread::yield_now();
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

    /// Runs one slice of `p` inside the perimeter: a panic anywhere in it — the body
    /// (its `resume` has a perimeter of its own that turns the panic into the exit
    /// reason), the drain of its signals, GC, the accounting (a body's `label`), the
    /// exit path (a body's `Drop`) — ends that process with `{panic, Message}` and
    /// leaves this scheduler as it was between slices. The body is held outside the
    /// perimeter while it is out of the process, so unwinding never drops it (a `Drop`
    /// that panicked during unwinding would abort).
    fn run_one(&mut self, p: Arc<Process>, prio: usize) {
        if prio != NORMAL {
            self.shared().rare_queued.fetch_sub(1, Ordering::AcqRel);
        }
        if !p.inbox.begin() {
            // Not QUEUED: it exited (shutdown race); nothing to run.
            return;
        }
        self.seq += 2;
        let seq = self.seq + 1; // odd: in a slice
        self.vm.router.sched.stats[self.index]
            .slice_seq
            .store(seq, Ordering::Release);
        let mut body = None;
        let slice = catch_unwind(AssertUnwindSafe(|| self.slice(&p, seq, &mut body)));
        if let Err(e) = slice {
            self.recover(&p, seq, body, panic_reason(e));
        }
    }

    /// Ends `p` after a panic escaped its slice, and closes the slice. The exit path
    /// is idempotent (each step takes what it releases), so it completes whatever an
    /// interrupted exit left.
    fn recover(
        &mut self,
        p: &Arc<Process>,
        seq: u64,
        body: Option<Box<dyn crate::process::Body>>,
        reason: Fragment,
    ) {
        self.buf.clear();
        let vm = self.vm;
        let done = catch_unwind(AssertUnwindSafe(|| {
            let mut g = p.lock();
            if body.is_some() {
                g.body = body;
            }
            vm.finish(p, g, reason);
        }));
        debug_assert!(done.is_ok(), "the exit path panicked twice");
        self.vm.router.sched.stats[self.index]
            .slice_seq
            .store(seq + 1, Ordering::Release);
    }

    /// One slice of `p` (see [`run_one`](Self::run_one)); `slot` holds the body while
    /// it is out of the process.
    fn slice(
        &mut self,
        p: &Arc<Process>,
        seq: u64,
        slot: &mut Option<Box<dyn crate::process::Body>>,
    ) {
        let mut g = p.lock();
        *slot = g.body.take();
        let Some(body) = slot.as_mut() else {
            // Already finished (shutdown race); nothing to run.
            return;
        };
        let budget = i64::from(self.vm.config.reductions);
        let mut cx = Cx {
            vm: self.vm,
            proc: p,
            p: &mut g,
            budget,
            buf: &mut self.buf,
        };
        cx.drain();
        let step = if cx.p.exiting.is_some() {
            None
        } else {
            match catch_unwind(AssertUnwindSafe(|| body.resume(&mut cx))) {
                Ok(s) => Some(s),
                Err(e) => Some(Step::Exit(panic_reason(e))),
            }
        };
        let mut used = (budget - cx.budget).max(1) as u64;
        cx.publish_queue_len();
        let exiting = cx.p.exiting.take();
        if let Some(reason) = exiting {
            // Killed by a signal: let the body clean up, then end it.
            let _ = catch_unwind(AssertUnwindSafe(|| body.terminate(&mut cx, &reason)));
            self.account(p, used, seq, &**body);
            g.body = slot.take();
            self.vm.finish(p, g, reason);
            return;
        }
        if let Some(m) = g.mem.as_deref_mut().filter(|m| m.heap.needs_gc()) {
            let report = m.heap.gc(&mut m.regs);
            used += report.reductions as u64;
            let st = &self.vm.router.sched.stats[self.index];
            st.gcs.fetch_add(1, Ordering::Relaxed);
            st.reclaimed_bytes
                .fetch_add(report.reclaimed_words as u64 * 8, Ordering::Relaxed);
            if report.major {
                p.major_gcs.fetch_add(1, Ordering::Relaxed);
            } else {
                p.minor_gcs.fetch_add(1, Ordering::Relaxed);
            }
        }
        p.publish_heap(&g);
        self.account(p, used, seq, &**body);
        g.body = slot.take();
        match step {
            Some(Step::Exit(reason)) => self.vm.finish(p, g, reason),
            Some(Step::Yield) | None => {
                drop(g);
                p.inbox.yielded();
                self.requeue(p.clone());
            }
            Some(Step::Wait) => {
                drop(g);
                if !p.inbox.park() {
                    // Signals arrived since the body last looked: run it again.
                    self.requeue(p.clone());
                }
            }
        }
    }

    /// Puts a process that used its slice at the back of this scheduler's queue for
    /// its priority (never in the LIFO slot: that would let it run again at once).
    fn requeue(&self, p: Arc<Process>) {
        let prio = p.priority.load(Ordering::Relaxed) as usize % PRIOS;
        if prio != NORMAL {
            self.vm
                .router
                .sched
                .rare_queued
                .fetch_add(1, Ordering::AcqRel);
        }
        let q = &self.workers.queues[prio];
        q.push(p);
        if q.len() >= WAKE_SURPLUS {
            self.vm.router.sched.wake_one();
        }
    }

    fn account(&self, p: &Process, used: u64, seq: u64, body: &dyn crate::process::Body) {
        // Single-writer counters (the process's, while it runs here; this scheduler's
        // own): a load and a store, no locked read-modify-write.
        bump(&p.reductions, used);
        let st = &self.vm.router.sched.stats[self.index];
        st.slice_seq.store(seq + 1, Ordering::Release);
        bump(&st.slices, 1);
        bump(&st.reductions, used);
        if st.long_seq.load(Ordering::Acquire) == seq {
            // The watchdog saw this slice running past the threshold.
            let seen = Duration::from_nanos(st.long_seen_ns.load(Ordering::Acquire));
            let el =
                self.vm.started.elapsed().saturating_sub(seen) + crate::scheduler::watchdog::TICK;
            let ns = el.as_nanos() as u64;
            if ns > st.longest_slice_ns.load(Ordering::Relaxed) {
                st.longest_slice_ns.store(ns, Ordering::Relaxed);
            }
            if el >= self.vm.config.long_schedule {
                st.long_schedules.fetch_add(1, Ordering::Relaxed);
                // The label is the body's code: a panic there gives a placeholder.
                let label = catch_unwind(AssertUnwindSafe(|| body.label()))
                    .unwrap_or_else(|_| String::from("(label panicked)"));
                self.vm.report_long_schedule(p.pid, el, &label);
            }
        }
    }

    fn park(&mut self) {
        let sh = &self.vm.router.sched;
        {
            let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(self.index);
            sh.num_idle.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        let online = self.index < sh.online();
        if (online && sh.has_work()) || self.vm.stopping.load(Ordering::Acquire) {
            self.unidle();
            return;
        }
        std::thread::park();
        self.unidle();
    }

    fn unidle(&self) {
        let sh = &self.vm.router.sched;
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = idle.iter().position(|&i| i == self.index) {
            idle.swap_remove(pos);
            sh.num_idle.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Adds to a counter that only the calling thread writes (readers may see it lag).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn panic_reason(e: Box<dyn std::any::Any + Send>) -> Fragment {
    let msg = if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    };
    Fragment::from_term(&Term::Tuple(vec![
        Term::Atom(Atom::PANIC),
        Term::binary(msg.into_bytes()),
    ]))
}

/// The scheduler thread's main loop.
pub(crate) fn run(vm: Arc<VmInner>, index: usize, workers: Workers) {
    CURRENT.with(|c| c.set((vm.router.sched.id, &workers as *const Workers)));
    let mut s = Sched {
        vm: &vm,
        index,
        workers: &workers,
        ticks: 0,
        low_ticks: 0,
        lifo_streak: 0,
        seq: 0,
        rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
        buf: Vec::new(),
        spins: 0,
        stash: None,
    };
    let mut busy_since = Instant::now();
    let since_start = |t: Instant| t.duration_since(vm.started).as_nanos() as u64 + 1;
    let st = &vm.router.sched.stats[index];
    st.busy_start_ns
        .store(since_start(busy_since), Ordering::Release);
    let hook = vm.config.slice_hook.as_deref();
    loop {
        if vm.stopping.load(Ordering::Acquire) {
            break;
        }
        if index >= vm.router.sched.online() {
            // Offline: hand local work to the others and sleep until brought back.
            if let Some((p, prio)) = s.stash.take() {
                vm.router.sched.injectors[prio].push(p);
            }
            if let Some(p) = vm.router.sched.slots[index].take() {
                vm.router.sched.injectors[NORMAL].push(p);
            }
            for q in &workers.queues {
                while let Some(p) = q.pop() {
                    let prio = p.priority.load(Ordering::Relaxed) as usize % PRIOS;
                    vm.router.sched.injectors[prio].push(p);
                }
            }
            s.park();
            continue;
        }
        let pick = match s.stash.take() {
            Some(p) => Some(p),
            None => s.next(),
        };
        match pick {
            Some((p, prio)) => {
                s.spins = 0;
                match hook {
                    Some(h) if p.hooked => s.run_batch(h, p, prio),
                    _ => s.run_one(p, prio),
                }
            }
            None => {
                // A batch that ran out of work has spun already: park at once.
                s.spins += 1;
                if s.spins < SPIN_ROUNDS {
                    std::hint::spin_loop();
                    std::thread::yield_now();
                    continue;
                }
                s.spins = 0;
                // Period closed before it is added: a reader never counts it twice.
                st.busy_start_ns.store(0, Ordering::Release);
                st.busy_ns
                    .fetch_add(busy_since.elapsed().as_nanos() as u64, Ordering::Release);
                s.park();
                busy_since = Instant::now();
                st.busy_start_ns
                    .store(since_start(busy_since), Ordering::Release);
            }
        }
    }
    drop(s.stash.take());
    drop(vm.router.sched.slots[index].take());
    st.busy_start_ns.store(0, Ordering::Release);
    st.busy_ns
        .fetch_add(busy_since.elapsed().as_nanos() as u64, Ordering::Release);
    CURRENT.with(|c| c.set((0, std::ptr::null())));
}
