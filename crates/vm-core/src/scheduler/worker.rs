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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::Steal;

use super::queue::{self, RunQueues, Workers};
use super::Shared;
use crate::process::signal::Signal;
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
/// Rounds of looking for work before parking. Each round checks every queue; a few
/// microseconds in all, which catches the common "message arrives right after" case
/// without burning a core on an idle VM.
pub(crate) const SPIN_ROUNDS: u32 = 64;
/// Consecutive picks from the LIFO slot before it must yield to the queue: a pair of
/// processes bouncing a message would otherwise hold the scheduler forever.
pub(crate) const LIFO_MAX: u32 = 16;

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
    /// Reused buffer for draining inboxes.
    pub(super) buf: Vec<Signal>,
    /// Rounds spent looking for work since the last pick (see [`SPIN_ROUNDS`]).
    pub(super) spins: u32,
    /// A native process picked inside a batch past `batch_time`: it runs next, after
    /// the batch (it is QUEUED and in no run queue meanwhile).
    pub(super) stash: Option<(Arc<Process>, Priority)>,
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
            if !inj.is_empty() {
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
    pub(super) fn requeue(&self, p: Arc<Process>) {
        let prio = p.priority();
        self.queues().count_in(prio);
        if self.workers.push(p, prio) >= super::WAKE_SURPLUS {
            self.shared().wake_one();
        }
    }

    fn park(&mut self) {
        let sh = self.shared();
        let online = self.index < sh.online();
        let stopping = &self.vm.stopping;
        sh.idle.park(self.index, || {
            (online && sh.has_work()) || stopping.load(Ordering::Acquire)
        });
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
            s.hand_off_local_work();
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
                // Spin (yielding the core, holding no hook) before parking; a batch
                // that ran out of work spun only briefly, with the hook held.
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
    queue::leave();
}
