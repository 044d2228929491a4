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
//! watchdog's tick (about a millisecond).
//!
//! With every scheduler idle the watchdog sleeps [`IDLE_TICK`] between looks, a few
//! hundred cheap wake-ups a second at most.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use crate::vm::VmInner;

/// How often a busy VM is checked.
pub const TICK: Duration = Duration::from_millis(1);
/// How often an idle VM is checked.
pub const IDLE_TICK: Duration = Duration::from_millis(5);
/// A slice older than this is treated as stuck: its queue is handed to the others.
/// Twice BEAM's usual slice, far below the 10 ms long_schedule report threshold.
pub const STUCK_AFTER: Duration = Duration::from_millis(2);

pub(crate) fn run(vm: Weak<VmInner>) {
    // Per scheduler: the slice sequence number seen last, and when it was first seen.
    let mut seen: Vec<(u64, u64)> = Vec::new();
    loop {
        let busy = {
            let Some(vm) = vm.upgrade() else { return };
            if vm.stopping.load(Ordering::Acquire) {
                return;
            }
            seen.resize(vm.sched.stats.len(), (0, 0));
            check(&vm, &mut seen)
        };
        std::thread::sleep(if busy { TICK } else { IDLE_TICK });
    }
}

/// One look; returns true if any scheduler was in a slice.
fn check(vm: &VmInner, seen: &mut [(u64, u64)]) -> bool {
    let now = vm.started.elapsed().as_nanos() as u64;
    let sh = &vm.sched;
    let stuck_after = STUCK_AFTER.as_nanos() as u64;
    let long = vm.config.long_schedule.as_nanos() as u64;
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
