//! The watchdog: notices a scheduler stuck in a long slice and lets the others take
//! over its work.
//!
//! A slice should last well under a millisecond; one that runs far longer (a native
//! body that forgot to yield, a Python process inside a long C call) holds its
//! scheduler thread. Every scheduler publishes a slice sequence number (odd during a
//! slice) instead of timestamps — reading the clock twice per slice would cost a fifth
//! of a message hop; this thread looks every [`TICK`], times slices it sees on two
//! looks, and for one older than [`STUCK_AFTER`] moves the
//! stuck scheduler's LIFO slot (the only work that cannot be stolen) to the global
//! queue and wakes an idle scheduler, which then steals the stuck one's queue. The
//! rest of the VM keeps its latency. A slice seen running past the long_schedule
//! threshold is flagged, and its scheduler reports it as a `long_schedule` event when
//! it ends (see `VmInner::report_long_schedule`); durations are measured to the
//! watchdog's tick (about a millisecond). It needs only the schedulers' shared state
//! (their counters, hand-off slots and run queues), not the VM.
//!
//! With every scheduler idle the watchdog sleeps [`IDLE_TICK`] between looks, and
//! once the VM has been idle for [`SLEEP_AFTER`] it sleeps until a scheduler wakes up
//! (which wakes it: [`Sleeper::wake`], once per scheduler wake-up, not per slice), or
//! [`SLEEP_TICK`] at most: an idle VM no longer wakes the CPU 200 times a second. The
//! bound covers the one race the wake-up can lose (a scheduler that wakes just as the
//! watchdog decides to sleep reads the old flag): a stuck slice then waits that long
//! to be seen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::Shared;

/// Idle looks in a row (at [`IDLE_TICK`]) before the watchdog sleeps until woken, if
/// every scheduler is parked then.
pub(crate) const SLEEP_AFTER: u32 = 20;
/// The longest sleep of an idle watchdog (see the module docs).
pub(crate) const SLEEP_TICK: Duration = Duration::from_millis(100);

/// The watchdog's thread and whether it sleeps until woken.
#[derive(Default)]
pub(crate) struct Sleeper {
    thread: OnceLock<Thread>,
    asleep: AtomicBool,
}

impl Sleeper {
    /// Wakes the watchdog if it sleeps through an idle period (a scheduler woke up,
    /// or the VM stops). One load when it does not.
    #[inline]
    pub(crate) fn wake(&self) {
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Sleeps until [`wake`](Self::wake) or [`SLEEP_TICK`]; `still_idle` is checked
    /// after the flag is up, so a scheduler that began a slice meanwhile is seen.
    /// Returns whether it slept (false: `still_idle` said no).
    fn sleep(&self, still_idle: impl Fn() -> bool) -> bool {
        let _ = self.thread.set(std::thread::current());
        self.asleep.store(true, Ordering::SeqCst);
        let idle = still_idle();
        if idle {
            std::thread::park_timeout(SLEEP_TICK);
        }
        self.asleep.store(false, Ordering::Release);
        idle
    }
}

/// How often a busy VM is checked.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// How often an idle VM is checked.
pub(crate) const IDLE_TICK: Duration = Duration::from_millis(5);
/// A slice older than this is treated as stuck: its queue is handed to the others.
/// Twice BEAM's usual slice, far below the 10 ms long_schedule report threshold.
pub(crate) const STUCK_AFTER: Duration = Duration::from_millis(2);

/// The watchdog thread's loop: looks at `sched`'s schedulers every tick until
/// `stopping`. `started` is the clock the schedulers' timestamps count from; slices
/// longer than `long_schedule` are flagged for a report.
pub(crate) fn run(
    sched: &Shared,
    started: Instant,
    long_schedule: Duration,
    stopping: &AtomicBool,
) {
    // Per scheduler: the slice sequence number seen last, and when it was first seen.
    let mut seen = vec![(0, 0); sched.stats.len()];
    let mut idle_looks: u32 = 0;
    while !stopping.load(Ordering::Acquire) {
        let now = started.elapsed().as_nanos() as u64;
        let busy = check(sched, now, long_schedule, &mut seen);
        idle_looks = if busy {
            0
        } else {
            idle_looks.saturating_add(1)
        };
        // Only with every scheduler parked: one that spins between short slices would
        // start a long one without waking up, unseen for SLEEP_TICK. A sleep that
        // ends by its timeout with the VM still idle is followed by another.
        let slept = idle_looks >= SLEEP_AFTER
            && sched
                .watchdog
                .sleep(|| !stopping.load(Ordering::Acquire) && sched.all_parked());
        if !slept {
            std::thread::sleep(if busy { TICK } else { IDLE_TICK });
        }
    }
}

/// One look at `now` (ns since the VM started); returns true if any scheduler was in a
/// slice.
fn check(sh: &Shared, now: u64, long_schedule: Duration, seen: &mut [(u64, u64)]) -> bool {
    let stuck_after = STUCK_AFTER.as_nanos() as u64;
    let long = long_schedule.as_nanos() as u64;
    let mut busy = false;
    for (i, st) in sh.stats.iter().enumerate() {
        let seq = st.slice_seq.load(Ordering::Acquire);
        if seq % 2 == 0 {
            continue; // between slices
        }
        busy = true;
        let (last, first_seen) = &mut seen[i];
        if *last != seq {
            // A slice we have not seen before: it started since the previous look.
            *last = seq;
            *first_seen = now;
            continue;
        }
        let running = now.saturating_sub(*first_seen) + TICK.as_nanos() as u64;
        if running >= stuck_after && st.taken_over.swap(seq, Ordering::AcqRel) != seq {
            st.takeovers.fetch_add(1, Ordering::Relaxed);
            sh.hand_over(i);
        }
        if running >= long.min(stuck_after) && st.long_seq.load(Ordering::Relaxed) != seq {
            st.long_seen_ns.store(*first_seen, Ordering::Release);
            st.long_seq.store(seq, Ordering::Release);
        }
    }
    busy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::{bare_router, idle_process};

    /// On scheduler queues alone (no VM): a slice seen on two looks 3 ms apart is
    /// stuck — the process in its hand-off slot moves to the global queue, once — and
    /// is flagged for a long_schedule report; a new slice starts the count again.
    #[test]
    fn a_stuck_slice_is_taken_over_once_and_flagged() {
        let router = bare_router();
        let sh = &router.sched;
        let p = idle_process(&router);
        assert!(sh.slots[0].put(p).is_none());
        let long = Duration::from_millis(2);
        let mut seen = vec![(0, 0)];
        assert!(!check(sh, 0, long, &mut seen), "between slices");
        sh.stats[0].slice_seq.store(3, Ordering::Release); // in slice 3
        assert!(check(sh, 1_000_000, long, &mut seen));
        assert_eq!(sh.run_queue_lengths().1, 0, "1 ms: not stuck yet");
        assert!(check(sh, 4_000_000, long, &mut seen));
        assert_eq!(
            sh.run_queue_lengths().1,
            1,
            "the slot's process was handed over"
        );
        assert!(!sh.slots[0].is_occupied());
        assert_eq!(sh.stats[0].takeovers.load(Ordering::Relaxed), 1);
        assert_eq!(sh.stats[0].long_seq.load(Ordering::Relaxed), 3, "flagged");
        check(sh, 6_000_000, long, &mut seen);
        assert_eq!(
            sh.stats[0].takeovers.load(Ordering::Relaxed),
            1,
            "once per slice"
        );
        sh.stats[0].slice_seq.store(5, Ordering::Release);
        check(sh, 7_000_000, long, &mut seen);
        assert_eq!(
            seen[0],
            (5, 7_000_000),
            "a new slice is timed from its first look"
        );
    }
}
