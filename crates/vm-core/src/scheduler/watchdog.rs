//! The watchdog: notices a scheduler stuck in a long slice and lets the others take
//! over its work.
//!
//! A slice should last well under a millisecond; one that runs far longer (a native
//! body that forgot to yield, a Python process inside a long C call) holds its
//! scheduler thread. Every scheduler publishes when its current slice began; this
//! thread looks every [`TICK`] and, for a slice older than [`STUCK_AFTER`], moves the
//! stuck scheduler's LIFO slot (the only work that cannot be stolen) to the global
//! queue and wakes an idle scheduler, which then steals the stuck one's queue. The
//! rest of the VM keeps its latency; the long slice itself is reported as a
//! `long_schedule` event when it ends (see `VmInner::report_long_schedule`).
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
pub const IDLE_TICK: Duration = Duration::from_millis(10);
/// A slice older than this is treated as stuck: its queue is handed to the others.
/// Twice BEAM's usual slice, far below the 10 ms long_schedule report threshold.
pub const STUCK_AFTER: Duration = Duration::from_millis(2);

pub(crate) fn run(vm: Weak<VmInner>) {
    loop {
        let busy = {
            let Some(vm) = vm.upgrade() else { return };
            if vm.stopping.load(Ordering::Acquire) {
                return;
            }
            check(&vm)
        };
        std::thread::sleep(if busy { TICK } else { IDLE_TICK });
    }
}

/// One look; returns true if any scheduler was in a slice.
fn check(vm: &VmInner) -> bool {
    let now = vm.started.elapsed().as_nanos() as u64;
    let sh = &vm.sched;
    let mut busy = false;
    for (i, st) in sh.stats.iter().enumerate() {
        let start = st.slice_start_ns.load(Ordering::Acquire);
        if start == 0 {
            continue;
        }
        busy = true;
        if now.saturating_sub(start) < STUCK_AFTER.as_nanos() as u64 {
            continue;
        }
        // Once per stuck slice.
        if st.taken_over.swap(start, Ordering::AcqRel) == start {
            continue;
        }
        st.takeovers.fetch_add(1, Ordering::Relaxed);
        sh.hand_over(i);
    }
    busy
}
