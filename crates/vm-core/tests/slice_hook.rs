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

/// Two schedulers whose hooked slices share one [`ExclusiveHook`], as Python
/// processes share the GIL.
fn two_schedulers_one_exclusive_hook() -> Vm {
    Vm::start(VmConfig {
        schedulers: 2,
        schedulers_online: 2,
        slice_hook: Some(Arc::new(ExclusiveHook::default())),
        ..VmConfig::default()
    })
    .expect("vm starts")
}

#[test]
fn a_batch_that_never_runs_dry_hands_the_hook_to_a_waiting_scheduler() {
    // Two hooked processes that always have work, on two schedulers: each batch would
    // go on for ever, so the scheduler that is not holding the exclusive hook would
    // wait for it for ever with its process. A waiter that has waited YIELD_AFTER
    // (1 ms) makes the running batch end after its current slice.
    let vm = two_schedulers_one_exclusive_hook();
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
    // Two hooked processes that always have work, on two schedulers sharing one
    // exclusive hook, as Python processes share the GIL: `cpu` ends every slice in
    // Yield (CPU-bound), `busy` sends itself a message and waits (a process that keeps
    // receiving). Each slice notes, under the hook, who ran, the budget it got and its
    // thread.
    // - Asserted: a batch that waited for the hook gives its slices an eighth of the
    //   budget, and no other budget is ever given; both keep running.
    // - Measured, not asserted: `cpu` runs one slice per turn and `busy` ~47 (its
    //   scheduler is owed the hook back at once after a CPU-bound slice, `cpu`'s only
    //   after 1 ms), where the 1 ms rule alone gave `cpu` ~47 too. Those streaks depend
    //   on both scheduler threads having a core: on a loaded machine a descheduled
    //   waiter is not waiting, and nothing is owed to it (docs/io.md, round 6, has the
    //   A/B figures). The medians are printed for a human reading `--nocapture`.
    // The two may settle on one scheduler (the other parked: a queue of one wakes
    // nobody), where they alternate uncontended: such an attempt is made again.
    let full = i64::from(VmConfig::default().reductions);
    let mut log = contended_log();
    for _ in 0..10 {
        let across = log
            .windows(2)
            .filter(|w| w[0].0 != w[1].0 && w[0].2 != w[1].2)
            .count();
        if across >= 50 {
            break;
        }
        log = contended_log();
    }
    for &(_, b, _) in log.iter() {
        assert!(b == full || b == full / 8, "a slice got budget {b}");
    }
    assert!(
        log.iter().any(|e| e.0 == 0 && e.1 == full / 8),
        "no contended slice of the CPU-bound process got the shorter budget"
    );
    assert!(
        log.iter().filter(|e| e.0 == 0).count() >= 100,
        "the CPU-bound process starved"
    );
    assert!(
        log.iter().filter(|e| e.0 == 1).count() >= 100,
        "the receiving process starved"
    );
    let median_streak = |who: usize| {
        let mut streaks = Vec::new();
        let mut n = 0;
        for (i, e) in log.iter().enumerate() {
            if e.0 == who {
                n += 1;
            }
            if n > 0 && (e.0 != who || i + 1 == log.len()) {
                streaks.push(n);
                n = 0;
            }
        }
        streaks.sort_unstable();
        streaks.get(streaks.len() / 2).copied().unwrap_or(0)
    };
    eprintln!(
        "slices per turn (medians): CPU-bound {}, receiving {}",
        median_streak(0),
        median_streak(1)
    );
}

/// One run of the test above: every slice's (process, budget, thread), until the hook
/// changed hands 200 times.
fn contended_log() -> Vec<(usize, i64, std::thread::ThreadId)> {
    let vm = two_schedulers_one_exclusive_hook();
    type Log = Vec<(usize, i64, std::thread::ThreadId)>;
    let log: Arc<std::sync::Mutex<Log>> = Arc::default();
    let spin = || {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_micros(20) {}
    };
    let me = || std::thread::current().id();
    let l = log.clone();
    vm.spawn(Hooked(move |cx: &mut Cx<'_>| {
        let budget = cx.budget_left();
        l.lock().unwrap().push((0, budget, me()));
        cx.bump(budget);
        spin();
        Step::Yield
    }))
    .unwrap();
    let l = log.clone();
    vm.spawn(Hooked(move |cx: &mut Cx<'_>| {
        l.lock().unwrap().push((1, cx.budget_left(), me()));
        cx.recv();
        let pid = cx.self_pid();
        cx.send(pid, int(1));
        spin();
        cx.wait(None)
    }))
    .unwrap();
    let turns = |l: &Log| l.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(
        eventually(60, || turns(&log.lock().unwrap()) >= 200),
        "the hook changed hands fewer than 200 times in 60 s"
    );
    drop(vm);
    let log = log.lock().unwrap().clone();
    log
}
