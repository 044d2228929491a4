//! Ten blocking calls on the dirty IO pool while a 10 ms ticker keeps time. In a test
//! binary of its own, so no other test's VM competes for the two cores while it
//! measures lateness.
mod common;
use common::*;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_core::{Cx, DirtyKind, Step};

#[test]
fn ten_blocking_calls_on_dirty_io_run_in_parallel_while_a_ticker_keeps_time() {
    let vm = vm_pools(1, 1, 10);
    assert_eq!(vm.system_info().dirty_io_schedulers, 10);
    // A 10 ms ticker measuring its lateness.
    let (ltx, lrx) = mpsc::channel();
    let mut due = Instant::now() + Duration::from_millis(10);
    let mut late = Vec::new();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if cx.timed_out() {
            late.push(Instant::now().saturating_duration_since(due));
            due += Duration::from_millis(10);
            if late.len() == 100 {
                ltx.send(std::mem::take(&mut late)).unwrap();
                return Step::Exit(int(0));
            }
        }
        let wait = due.saturating_duration_since(Instant::now());
        cx.wait(Some(wait.max(Duration::from_micros(1))))
    }))
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    for _ in 0..10 {
        vm.spawn(dirty_caller(DirtyKind::Io, 200, tx.clone()))
            .unwrap();
    }
    for _ in 0..10 {
        let (v, _) = recv_timeout(&rx, 10);
        assert_eq!(v, 400, "the job's result reaches the process");
    }
    // In parallel: ~200 ms in all; one after the other (on the scheduler, or a pool
    // of one) it would be 2 s. The bound leaves room for a loaded machine.
    let all = t0.elapsed();
    assert!(
        all < Duration::from_millis(1500),
        "10 × 200 ms took {all:?}"
    );
    let mut late = recv_timeout(&lrx, 10);
    late.sort();
    // Calls that held the one scheduler (2 s of them, one after the other) would make
    // most ticks hundreds of ms late. The median is robust to a loaded machine's
    // outliers (the lateness figures themselves are a benchmark: B7/B8 in the
    // workloads runner).
    let p50 = late[49];
    assert!(
        p50 <= Duration::from_millis(20),
        "ticker p50 lateness {p50:?} (p99 {:?})",
        late[98]
    );
}
