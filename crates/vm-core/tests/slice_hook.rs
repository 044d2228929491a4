//! The slice hook's batching rules: hooked slices run inside `SliceHook::batch`;
//! native slices picked meanwhile run inside it for up to `batch_time`, and after it
//! past that; the batch ends before the scheduler parks.
mod common;
use common::*;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use vm_core::{Cx, Pid, SliceHook, Step, Vm, VmConfig};

thread_local! {
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
}

fn in_batch() -> bool {
    IN_BATCH.with(|c| c.get())
}

#[derive(Default)]
struct CountingHook {
    /// Batches open now (on any scheduler thread).
    open: AtomicUsize,
    batches: AtomicUsize,
}

impl SliceHook for CountingHook {
    fn batch(&self, run: &mut dyn FnMut()) {
        assert!(!in_batch(), "batches nest");
        IN_BATCH.with(|c| c.set(true));
        self.open.fetch_add(1, Ordering::SeqCst);
        self.batches.fetch_add(1, Ordering::SeqCst);
        run();
        self.open.fetch_sub(1, Ordering::SeqCst);
        IN_BATCH.with(|c| c.set(false));
    }
}

struct Counts {
    hooked_in: AtomicUsize,
    hooked_out: AtomicUsize,
    native_in: AtomicUsize,
    native_out: AtomicUsize,
}

/// Ping-pong between a hooked and a native process, `rounds` times, on one scheduler.
fn ping_pong(batch_time: Duration, rounds: usize) -> (Vm, Arc<CountingHook>, Arc<Counts>) {
    let hook = Arc::new(CountingHook::default());
    let vm = Vm::start(VmConfig {
        schedulers: 1,
        schedulers_online: 1,
        slice_hook: Some(hook.clone()),
        batch_time,
        ..VmConfig::default()
    })
    .expect("vm starts");
    let counts = Arc::new(Counts {
        hooked_in: AtomicUsize::new(0),
        hooked_out: AtomicUsize::new(0),
        native_in: AtomicUsize::new(0),
        native_out: AtomicUsize::new(0),
    });
    let (tx, rx) = mpsc::channel();
    let peer: Arc<OnceLock<Pid>> = Arc::new(OnceLock::new());
    let (c, p) = (counts.clone(), peer.clone());
    let native = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            while let Some(m) = cx.recv() {
                let n = if in_batch() {
                    &c.native_in
                } else {
                    &c.native_out
                };
                n.fetch_add(1, Ordering::SeqCst);
                if let Some(&to) = p.get() {
                    cx.send(to, m);
                }
            }
            Step::Wait
        }))
        .unwrap();
    let c = counts.clone();
    let mut seen = 0;
    let hooked = vm
        .spawn(Hooked(move |cx: &mut Cx<'_>| {
            while let Some(m) = cx.recv() {
                let n = if in_batch() {
                    &c.hooked_in
                } else {
                    &c.hooked_out
                };
                n.fetch_add(1, Ordering::SeqCst);
                seen += 1;
                if seen == rounds {
                    let _ = tx.send(());
                    return Step::Exit(int(0));
                }
                cx.send(native, m);
            }
            Step::Wait
        }))
        .unwrap();
    peer.set(hooked).unwrap();
    vm.send(hooked, int(0));
    recv_timeout(&rx, 10);
    (vm, hook, counts)
}

#[test]
fn hooked_slices_run_in_a_batch_and_native_ones_join_it_within_batch_time() {
    let (vm, hook, c) = ping_pong(Duration::from_secs(60), 1000);
    assert_eq!(c.hooked_out.load(Ordering::SeqCst), 0);
    assert_eq!(c.hooked_in.load(Ordering::SeqCst), 1000);
    // The native replies are picked inside the open batch.
    assert!(c.native_in.load(Ordering::SeqCst) >= 990);
    // One batch (or a few, if the scheduler ran dry between the first messages).
    assert!(hook.batches.load(Ordering::SeqCst) < 10);
    // Idle now: the batch ended before the scheduler parked.
    assert!(eventually(5, || hook.open.load(Ordering::SeqCst) == 0));
    drop(vm);
}

#[test]
fn a_native_pick_past_batch_time_runs_after_the_batch() {
    let (vm, hook, c) = ping_pong(Duration::ZERO, 500);
    assert_eq!(c.hooked_out.load(Ordering::SeqCst), 0);
    assert_eq!(c.hooked_in.load(Ordering::SeqCst), 500);
    assert_eq!(c.native_in.load(Ordering::SeqCst), 0);
    assert_eq!(c.native_out.load(Ordering::SeqCst), 499);
    // Every native slice ended a batch.
    assert!(hook.batches.load(Ordering::SeqCst) >= 499);
    assert!(eventually(5, || hook.open.load(Ordering::SeqCst) == 0));
    drop(vm);
}

/// A hook that is one exclusive lock, as the GIL is, but without CPython's switch
/// interval: nothing but the scheduler hands it over.
#[derive(Default)]
struct ExclusiveHook(std::sync::Mutex<()>);

impl SliceHook for ExclusiveHook {
    fn batch(&self, run: &mut dyn FnMut()) {
        let _held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        run();
    }
}

#[test]
fn a_batch_that_never_runs_dry_hands_the_hook_to_a_waiting_scheduler() {
    // Two hooked processes that always have work, on two schedulers: each batch would
    // go on for ever, so the scheduler that is not holding the exclusive hook would
    // wait for it for ever with its process. A waiter that has waited YIELD_AFTER
    // (1 ms) makes the running batch end after its current slice.
    let vm = Vm::start(VmConfig {
        schedulers: 2,
        schedulers_online: 2,
        slice_hook: Some(Arc::new(ExclusiveHook::default())),
        ..VmConfig::default()
    })
    .expect("vm starts");
    let slices: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    for i in 0..2 {
        let s = slices.clone();
        vm.spawn(Hooked(move |cx: &mut Cx<'_>| {
            s[i].fetch_add(1, Ordering::Relaxed);
            cx.bump(4000);
            std::thread::sleep(Duration::from_micros(200)); // a CPU-bound slice
            Step::Yield
        }))
        .unwrap();
    }
    // Generous: each needs only 20 slices (~4 ms of its own work) within 30 s.
    assert!(
        eventually(30, || slices
            .iter()
            .all(|n| n.load(Ordering::Relaxed) >= 20)),
        "slices per process: {:?}",
        slices
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    drop(vm);
}

#[test]
fn a_cpu_bound_slice_hands_a_contended_hook_over_and_contended_slices_are_shorter() {
    // Two hooked processes that always have work (CPU-bound: every slice ends in
    // Yield), on two schedulers sharing one exclusive hook, as Python processes share
    // the GIL. Each slice notes, under the hook, which process ran and the budget it
    // was given. A batch that waited for the hook gives its slices a quarter of the
    // default budget, and a CPU-bound slice ends its batch at once when the other
    // scheduler waits: the hook changes hands about once per contended slice, where
    // the 1 ms rule alone (YIELD_AFTER) would let ~50 of these 20 µs slices run in a
    // row.
    let vm = Vm::start(VmConfig {
        schedulers: 2,
        schedulers_online: 2,
        slice_hook: Some(Arc::new(ExclusiveHook::default())),
        ..VmConfig::default()
    })
    .expect("vm starts");
    let full = i64::from(VmConfig::default().reductions);
    let log: Arc<std::sync::Mutex<Vec<(usize, i64)>>> = Arc::default();
    for i in 0..2 {
        let log = log.clone();
        vm.spawn(Hooked(move |cx: &mut Cx<'_>| {
            let budget = cx.budget_left();
            log.lock().unwrap().push((i, budget));
            cx.bump(budget);
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_micros(20) {}
            Step::Yield
        }))
        .unwrap();
    }
    let enough = |l: &Vec<(usize, i64)>| l.iter().filter(|e| e.1 < full).count() >= 400;
    assert!(
        eventually(60, || enough(&log.lock().unwrap())),
        "too few contended slices in 60 s"
    );
    drop(vm);
    let log = log.lock().unwrap();
    for &(_, b) in log.iter() {
        assert!(b == full || b == full / 4, "a slice got budget {b}");
    }
    let contended = log.iter().filter(|e| e.1 < full).count();
    let handovers = log.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(
        handovers * 4 >= contended,
        "{handovers} hand-overs for {contended} contended slices"
    );
}
