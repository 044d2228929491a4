//! A scheduler thread's loop: pick a process, run a slice (or a batch of them), and
//! when there is nothing to run, steal, spin, then park.
//!
//! ## Pick order
//!
//! Max, then high, then normal and low, where low gets one pick in every
//! [`LOW_EVERY`] when both are runnable (so low progresses under normal load, as in
//! BEAM). Within normal priority: the LIFO slot first (the process the running one
//! just woke; at most [`LIFO_MAX`] slot picks in a row while the queue has work), then
//! the local queue, then the injector, then the other schedulers' queues (stealing
//! half of one, from a random victim). Processes woken from outside wait in the
//! injector: every pick moves them behind the local queue (so a woken process waits
//! for at most one round of the local queue), and once in [`GLOBAL_EVERY`] picks one
//! is taken before the local queue.
//!
//! ## Running out of work
//!
//! [`SPIN_ROUNDS`] rounds of looking (yielding the core between them), then park (see
//! `idle`). Before parking, the busy period is closed for `statistics`. A scheduler
//! beyond `schedulers_online` hands its local work to the injectors and parks until
//! brought back.
//!
//! ## Network I/O (BEAM's check_io)
//!
//! Once the VM has sockets, the schedulers poll the reactor themselves: one that runs
//! out of work parks in `epoll_wait` if no other scheduler does (else on its futex),
//! and handles the readiness it wakes for; the processes that readiness makes
//! runnable land in its own queues, so an echo costs no thread hand-off. A busy
//! scheduler looks without waiting every [`IO_POLL_EVERY`] picks, every
//! [`IO_SPIN_POLL`] rounds of a batch's spin and after every yield of its idle spin,
//! so events are seen while no scheduler is idle.
//! That keeps the invariant: while sockets exist, some scheduler is in `epoll_wait`
//! or is running and will poll (a scheduler parks on its futex only when the poller
//! is held by another, which either sleeps in epoll or is running). A VM without
//! sockets pays one relaxed load per [`IO_POLL_EVERY`] picks.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_deque::Steal;

use super::queue::{self, RunQueues, Workers};
use super::Shared;
use crate::process::{Priority, Process};
use crate::vm::VmInner;

/// Low priority gets one pick in this many when normal work is also runnable
/// (BEAM's ratio: a low process is scheduled once per 8 normal reschedules).
pub(crate) const LOW_EVERY: u64 = 8;
/// Once in this many picks, a process from the injector is taken before the local
/// queue. The number is Go's scheduler's (runtime/proc.go checks the global run queue
/// every 61 schedule ticks; tokio took it from there as its fixed interval): prime, so
/// it does not fall into step with other periodic picks such as [`LOW_EVERY`]. Every
/// pick already moves injected processes behind the local queue, so this only bounds
/// the wait of one behind a long local queue.
pub(crate) const GLOBAL_EVERY: u64 = 61;
/// Rounds of looking for work before parking. Each round checks every queue and yields
/// the core (a `sched_yield`, ~0.5-1 µs of system time here), which catches the common
/// "message arrives right after" case without burning a core on an idle VM. Measured
/// (release build, 2 cores): 64 rounds cost ~46 µs of CPU per idle transition (a
/// process woken by a timer, 4 of them sleeping 0.2 ms in turn), 16 rounds ~27 µs,
/// 8 ~21 µs; a ping-pong round trip between two Python processes was 1.38 / 1.25 /
/// 1.34 µs and 1.54 µs with no spin at all. 16: most of the saving, none of the latency.
pub(crate) const SPIN_ROUNDS: u32 = 16;
/// Consecutive picks from the LIFO slot before it must yield to the queue: a pair of
/// processes bouncing a message would otherwise hold the scheduler forever.
pub(crate) const LIFO_MAX: u32 = 16;
/// A busy scheduler polls the reactor (without waiting) once in this many picks. A
/// pick of an echo process is a few microseconds, so readiness waits ~0.1-0.5 ms at
/// worst while every scheduler is busy; an `epoll_wait` that finds nothing costs about
/// half a microsecond, under 1% at this rate. Prime for the reason [`GLOBAL_EVERY`] is.
pub(crate) const IO_POLL_EVERY: u64 = 31;
/// A busy scheduler also polls once this many reductions ran since its last poll
/// (one default slice, `DEFAULT_REDUCTIONS`): picks of a spinning process are long
/// (a whole slice each), so counting picks alone would leave readiness waiting 31
/// slices behind it, and it is the scheduler holding the GIL, running a Python
/// spinner, that can run the Python processes the readiness wakes at once.
pub(crate) const IO_POLL_REDUCTIONS: u64 = crate::config::DEFAULT_REDUCTIONS as u64;
/// A batch spinning with the hook held (the GIL) polls the reactor once in this many
/// rounds (the first round included): work that readiness brings is found without
/// parking, and the GIL is not held across many system calls. The yielding spin after
/// a batch polls after every yield instead: readiness that arrives while a scheduler
/// spins would otherwise wait for the spin to end and the scheduler to park in
/// `epoll_wait`, behind up to 15 `sched_yield`s, each of which can hand the core to
/// another process for its time slice on a loaded machine. Measured (release, same
/// runs, 2 loaded cores): B12 beamvm<->beamvm round trip p50 34.7 µs polling every
/// round, 63-79 µs polling once per spin, 40.3 µs with the old reader threads; B11
/// beamvm-py echo 96k / 53k round trips/s at 100 / 1,000 connections, 68k / 46k
/// before (back to back, `--quick`, 3 reps).
pub(crate) const IO_SPIN_POLL: u32 = 16;
/// Longest sleep in `epoll_wait`. Wake-ups do not depend on it (the reactor's waker
/// interrupts the wait); it bounds how long a lost one could go unnoticed, for ten
/// idle wake-ups a second while sockets exist (the old poll thread's tick).
pub(crate) const IO_PARK_TICK: Duration = Duration::from_millis(100);
/// A scheduler idle this long after running something calls the embedder's idle hook
/// once ([`crate::set_idle_hook`]: the Python binding returns the allocator's free pages
/// to the OS). The allocator purges freed pages only on a thread that keeps allocating,
/// so without this an idle VM kept a drained flood's ~180 MB forever. Half a second: a
/// server between requests (gaps of milliseconds) never pays for it, a VM that went
/// quiet gives its memory back before anyone looks twice. The hook's cost grows with
/// the heap (mimalloc's forced collect visits its pages: ~10 ms with 200,000 live
/// processes); work arriving meanwhile goes to another parked scheduler, if any.
pub(crate) const IDLE_PURGE_AFTER: Duration = Duration::from_millis(500);
/// A scheduler that never idles that long (a process ticking every 100 ms keeps waking
/// it) still calls the idle hook when it parks, once this long after its last call,
/// if it ran something since: a forced collect every 5 s costs at most ~0.2% of a core
/// (see the cost above), and the memory of a burst still comes back.
pub(crate) const PURGE_EVERY: Duration = Duration::from_secs(5);

/// One scheduler thread's state.
pub(super) struct Sched<'a> {
    pub(super) vm: &'a Arc<VmInner>,
    pub(super) index: usize,
    pub(super) workers: &'a Workers,
    ticks: u64,
    low_ticks: u64,
    lifo_streak: u32,
    /// Slices run (the slice sequence number is derived from it).
    pub(super) seq: u64,
    rng: u64,
    /// Rounds spent looking for work since the last pick (see [`SPIN_ROUNDS`]).
    pub(super) spins: u32,
    /// A native process picked inside a batch past `batch_time`: it runs next, after
    /// the batch (it is QUEUED and in no run queue meanwhile).
    pub(super) stash: Option<(Arc<Process>, Priority)>,
    /// When the current busy period began (for `statistics`).
    busy_since: Cell<Instant>,
    /// This scheduler's reduction count when it last polled the reactor.
    io_reductions: u64,
    /// It ran something since it last called the idle hook (see [`IDLE_PURGE_AFTER`]).
    ran_since_purge: bool,
    /// When it last called the idle hook (or started), for [`PURGE_EVERY`].
    last_purge: Instant,
    /// When it last stopped finding work, while `ran_since_purge`.
    idle_since: Option<Instant>,
    /// The last slice ended in `Step::Yield` (it ran out of budget or time: CPU-bound).
    pub(super) yielded: bool,
    /// The current batch waited for the hook (see `batch::CONTENDED_WAIT`): its hooked
    /// slices get a shorter budget.
    pub(super) contended: bool,
}

impl Sched<'_> {
    pub(super) fn shared(&self) -> &Shared {
        &self.vm.router.sched
    }

    fn queues(&self) -> &RunQueues {
        &self.vm.router.sched.queues
    }

    /// Takes a batch from the injector or from another scheduler into the local queue
    /// of `prio`, and pops one.
    fn steal_into(&mut self, prio: Priority) -> Option<Arc<Process>> {
        let local = self.workers.queue(prio);
        let qs = &self.vm.router.sched.queues;
        loop {
            match qs.injector(prio).steal_batch_and_pop(local) {
                Steal::Success(p) => return Some(p),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        let n = qs.schedulers();
        if n > 1 {
            // xorshift: a cheap random first victim, so thieves spread out.
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
                    match qs.stealer(j, prio).steal_batch_and_pop(local) {
                        Steal::Success(p) => return Some(p),
                        Steal::Retry => continue,
                        Steal::Empty => break,
                    }
                }
            }
        }
        None
    }

    fn pop(&mut self, prio: Priority) -> Option<Arc<Process>> {
        if prio == Priority::Normal {
            let inj = self.queues().injector(prio);
            // A scheduler whose queue is the long one leaves the global queue to the
            // others (it may have just put a process there to even them out).
            if !inj.is_empty() && !self.longest_queue(prio) {
                if self.ticks.is_multiple_of(GLOBAL_EVERY) {
                    if let Steal::Success(p) = inj.steal() {
                        self.lifo_streak = 0;
                        return Some(p);
                    }
                }
                let _ = inj.steal_batch(self.workers.queue(prio));
            }
            if let Some(p) = self.shared().slots[self.index].take() {
                // Past the streak limit the slot yields to queued work, if there is any.
                if self.lifo_streak < LIFO_MAX || self.workers.queue(prio).is_empty() {
                    self.lifo_streak += 1;
                    return Some(p);
                }
                self.workers.queue(prio).push(p);
            }
            self.lifo_streak = 0;
        }
        if let Some(p) = self.workers.queue(prio).pop() {
            return Some(p);
        }
        self.steal_into(prio)
    }

    /// The next process to run and the priority of the queue it came from.
    pub(super) fn next(&mut self) -> Option<(Arc<Process>, Priority)> {
        self.ticks += 1;
        if self.ticks.is_multiple_of(IO_POLL_EVERY) || self.ran_a_slice_since_polling() {
            self.poll_io();
        }
        let pick = self.pick();
        if pick.is_none() && self.spins.is_multiple_of(IO_SPIN_POLL) && self.poll_io() > 0 {
            return self.pick();
        }
        pick
    }

    /// [`IO_POLL_REDUCTIONS`] ran since the last poll (one load of this scheduler's
    /// own counter).
    #[inline(always)]
    fn ran_a_slice_since_polling(&self) -> bool {
        let ran = self.shared().stats[self.index]
            .reductions
            .load(Ordering::Relaxed);
        ran.wrapping_sub(self.io_reductions) >= IO_POLL_REDUCTIONS
    }

    /// Handles whatever readiness the reactor has, without waiting; the events handled
    /// (0 without sockets, or while another scheduler polls). Out of line: the pick
    /// path stays as small as without a reactor.
    #[cold]
    #[inline(never)]
    fn poll_io(&mut self) -> usize {
        self.io_reductions = self.shared().stats[self.index]
            .reductions
            .load(Ordering::Relaxed);
        match self.shared().idle.reactor() {
            Some(r) if r.socket_count() > 0 => r
                .try_poll(Some(Duration::ZERO), || false, || {})
                .and_then(|r| r.ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    #[inline(always)]
    fn pick(&mut self) -> Option<(Arc<Process>, Priority)> {
        let rare = self.queues().rare();
        if rare {
            for prio in [Priority::Max, Priority::High] {
                if let Some(p) = self.pop(prio) {
                    return Some((p, prio));
                }
            }
            self.low_ticks += 1;
            if self.low_ticks.is_multiple_of(LOW_EVERY) {
                if let Some(p) = self.pop(Priority::Low) {
                    return Some((p, Priority::Low));
                }
            }
        }
        if let Some(p) = self.pop(Priority::Normal) {
            return Some((p, Priority::Normal));
        }
        if rare {
            if let Some(p) = self.pop(Priority::Low) {
                return Some((p, Priority::Low));
            }
        }
        None
    }

    /// Puts a process that used its slice at the back of this scheduler's queue for
    /// its priority (never in the LIFO slot: that would let it run again at once).
    ///
    /// Unless this scheduler's queue is longer than another online scheduler's by more
    /// than one: then it goes to the global queue, which every scheduler looks at
    /// before its own, so CPU-bound processes spread evenly. Stealing alone never
    /// evens them out, since only an idle scheduler steals and a scheduler with one
    /// spinner is never idle: with four spinners split one and three, the one got as
    /// much CPU as the three together. (The BEAM balances its run queues periodically
    /// for the same reason.) Only a process that ran a slice and is runnable again
    /// comes here (it yielded, or signals came as it was about to wait; a wake-up by
    /// a message goes through `Shared::enqueue`), and a queue shorter than two costs
    /// one load.
    pub(super) fn requeue(&self, p: Arc<Process>) {
        let prio = p.priority();
        self.queues().count_in(prio);
        if self.longest_queue(prio) {
            self.queues().inject(p, prio);
            self.shared().wake_one();
            return;
        }
        if self.workers.push(p, prio) >= super::WAKE_SURPLUS {
            self.shared().wake_one();
        }
    }

    /// This scheduler's queue of `prio` is longer than some other online scheduler's
    /// by more than one (see [`requeue`](Self::requeue)).
    fn longest_queue(&self, prio: Priority) -> bool {
        let mine = self.workers.queue(prio).len();
        if mine < 2 {
            return false;
        }
        let qs = self.queues();
        let online = self.shared().online().min(qs.schedulers());
        (0..online)
            .filter(|&j| j != self.index)
            .any(|j| qs.stealer(j, prio).len() + 1 < mine)
    }

    /// Parks until woken: in the reactor's `epoll_wait` if the VM has sockets and no
    /// other scheduler is in it (then handles what it found), else on the futex.
    /// Closes the busy period for `statistics` and opens the next one on waking.
    /// `limit`: the longest sleep (until the idle hook is due, from
    /// [`idle_purge`](Self::idle_purge)); `None`: until woken.
    fn park(&mut self, limit: Option<Duration>) {
        let vm = self.vm;
        let sh = &vm.router.sched;
        let st = &sh.stats[self.index];
        // Period closed before it is added: a reader never counts it twice.
        st.busy_start_ns.store(0, Ordering::Release);
        st.busy_ns.fetch_add(
            self.busy_since.get().elapsed().as_nanos() as u64,
            Ordering::Release,
        );
        let online = self.index < sh.online();
        let keep_running = || (online && sh.has_work()) || vm.stopping.load(Ordering::Acquire);
        let polled = match sh.idle.reactor() {
            Some(r) if online && r.socket_count() > 0 => {
                let tick = limit.map_or(IO_PARK_TICK, |d| d.min(IO_PARK_TICK));
                sh.idle
                    .park_in_poll(self.index, tick, keep_running, || self.busy_begins())
            }
            _ => None,
        };
        match polled {
            Some(Ok(_)) => {}
            // Nobody else polls now (an `epoll_wait` error, or another scheduler
            // holds the poller): the futex, as without sockets.
            Some(Err(_)) | None => {
                sh.idle.park(self.index, limit, keep_running);
                self.busy_begins();
            }
        }
    }

    /// How long until the idle hook is due (`None`: not due: nothing ran since it last
    /// ran, or no hook): [`IDLE_PURGE_AFTER`] into an idle period, or at once when the
    /// last call is [`PURGE_EVERY`] old. Starts the idle period on the first call after
    /// running.
    fn purge_due_in(&mut self) -> Option<Duration> {
        if !self.ran_since_purge
            || !self.vm.config.idle_release
            || crate::stats::idle_hook().is_none()
        {
            return None;
        }
        if self.last_purge.elapsed() >= PURGE_EVERY {
            return Some(Duration::ZERO);
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        Some(IDLE_PURGE_AFTER.saturating_sub(since.elapsed()))
    }

    /// Called with no work found, before parking: runs the idle hook when it is due
    /// (see [`purge_due_in`](Self::purge_due_in)). Returns how long the park may last
    /// before the hook is due (`None`: no limit).
    fn idle_purge(&mut self) -> Option<Duration> {
        let due = self.purge_due_in();
        if due != Some(Duration::ZERO) {
            return due;
        }
        if let Some(hook) = crate::stats::idle_hook() {
            hook();
        }
        self.ran_since_purge = false;
        self.last_purge = Instant::now();
        self.idle_since = None;
        None
    }

    /// Arms every receive timeout this scheduler deferred, and the other schedulers'
    /// older than `ARM_AFTER` (one of them may be stuck in a long slice): a parked
    /// scheduler arms nothing (see `deferred`).
    fn arm_deferred_before_parking(&self) {
        let lists = &self.shared().deferred;
        for (i, list) in lists.iter().enumerate() {
            if i == self.index {
                super::deferred::arm(self.vm, list, None, usize::MAX);
            } else {
                super::deferred::arm_old(self.vm, list, None);
            }
        }
    }

    /// Notes that this scheduler ran something (the idle hook becomes due again).
    fn ran(&mut self) {
        self.ran_since_purge = true;
        self.idle_since = None;
    }

    /// Opens a busy period for `statistics` (and wakes the watchdog if it sleeps
    /// through an idle period).
    fn busy_begins(&self) {
        self.shared().watchdog.wake();
        let now = Instant::now();
        self.busy_since.set(now);
        let ns = now.duration_since(self.vm.started).as_nanos() as u64 + 1;
        self.shared().stats[self.index]
            .busy_start_ns
            .store(ns, Ordering::Release);
    }

    /// Offline: hands local work (stash, slot, queues) to the injectors.
    fn hand_off_local_work(&mut self) {
        let qs = &self.vm.router.sched.queues;
        if let Some((p, prio)) = self.stash.take() {
            qs.inject(p, prio);
        }
        if let Some(p) = self.shared().slots[self.index].take() {
            qs.inject(p, Priority::Normal);
        }
        self.workers.drain_into(|p, prio| qs.inject(p, prio));
    }
}

/// The scheduler thread's main loop.
pub(crate) fn run(vm: Arc<VmInner>, index: usize, workers: Workers) {
    queue::enter(vm.router.sched.id(), &workers);
    crate::io::defer::attach(vm.router.sched.io_deferred[index].clone());
    let mut s = Sched {
        vm: &vm,
        index,
        workers: &workers,
        ticks: 0,
        low_ticks: 0,
        lifo_streak: 0,
        seq: 0,
        rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
        spins: 0,
        stash: None,
        busy_since: Cell::new(Instant::now()),
        io_reductions: 0,
        ran_since_purge: false,
        last_purge: Instant::now(),
        idle_since: None,
        yielded: false,
        contended: false,
    };
    s.busy_begins();
    let st = &vm.router.sched.stats[index];
    let hook = vm.config.slice_hook.as_deref();
    loop {
        if vm.stopping.load(Ordering::Acquire) {
            break;
        }
        if index >= vm.router.sched.online() {
            // Offline: hand local work to the others and sleep until brought back.
            s.hand_off_local_work();
            s.arm_deferred_before_parking();
            s.park(None);
            continue;
        }
        let pick = match s.stash.take() {
            Some(p) => Some(p),
            None => s.next(),
        };
        match pick {
            Some((p, prio)) => {
                s.spins = 0;
                s.ran();
                match hook {
                    Some(h) if p.hooked => s.run_batch(h, p, prio),
                    _ => s.run_one(p, prio),
                }
            }
            None => {
                // Spin (yielding the core, holding no hook) before parking; a batch
                // that ran out of work spun only briefly, with the hook held.
                s.spins += 1;
                if s.spins < SPIN_ROUNDS {
                    std::hint::spin_loop();
                    std::thread::yield_now();
                    // Readiness that came while the core was yielded is taken now,
                    // by this warm scheduler (see IO_SPIN_POLL).
                    s.poll_io();
                    continue;
                }
                s.spins = 0;
                s.arm_deferred_before_parking();
                let limit = s.idle_purge();
                s.park(limit);
            }
        }
    }
    drop(s.stash.take());
    drop(vm.router.sched.slots[index].take());
    st.busy_start_ns.store(0, Ordering::Release);
    st.busy_ns.fetch_add(
        s.busy_since.get().elapsed().as_nanos() as u64,
        Ordering::Release,
    );
    queue::leave();
}
