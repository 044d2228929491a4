//! Processes, pids, the process limit, schedulers, priorities, idle parking, shutdown.
mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use vm_core::{Atom, Cx, Error, Priority, SpawnOpts, Step, Term, Vm, VmConfig};

#[test]
fn spawned_process_runs_and_exits() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let pid = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            tx.send(cx.self_pid()).unwrap();
            Step::Exit(int(0))
        }))
        .unwrap();
    assert_eq!(recv_timeout(&rx, 5), pid);
    assert!(eventually(5, || !vm.is_alive(pid)));
}

#[test]
fn stale_pid_never_reaches_a_new_process() {
    // Limit 1: the second process must reuse the first one's slot.
    let vm = vm_limit(1, 1);
    let first = vm.spawn(body(|_: &mut Cx<'_>| Step::Exit(int(0)))).unwrap();
    assert!(eventually(5, || !vm.is_alive(first) && vm.process_count() == 0));
    let (tx, rx) = mpsc::channel();
    let second = vm
        .spawn(forwarder(tx))
        .expect("slot is free again after the first exit");
    assert_eq!(first.index, second.index, "slot reused");
    assert_ne!(first.serial, second.serial, "serial differs");
    assert!(!vm.send(first, int(1)), "stale pid is not delivered");
    assert!(vm.send(second, int(2)));
    assert_eq!(
        recv_timeout(&rx, 5),
        Term::Int(2),
        "only the live pid's message"
    );
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
}

#[test]
fn process_limit_gives_system_limit_and_vm_keeps_working() {
    let vm = vm_limit(2, 10);
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(vm.spawn(idle()).unwrap());
    }
    for _ in 0..3 {
        assert_eq!(vm.spawn(idle()).unwrap_err(), Error::SystemLimit);
    }
    assert_eq!(vm.process_count(), 10);
    // Existing processes still work.
    let (tx, rx) = mpsc::channel();
    vm.exit(pids[0], term(atom("kill")));
    assert!(eventually(5, || !vm.is_alive(pids[0]) && vm.process_count() == 9));
    let p = vm.spawn(forwarder(tx)).expect("room again after an exit");
    vm.send(p, int(7));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(7));
    assert!(Error::SystemLimit.to_string().contains("process_limit"));
}

#[test]
fn process_limit_can_be_ten_million() {
    let vm = vm_limit(1, 10_000_000);
    assert_eq!(vm.system_info().process_limit, 10_000_000);
    let p = vm.spawn(idle()).unwrap();
    assert!(vm.is_alive(p));
}

#[test]
fn bad_config_is_an_error_not_a_crash() {
    for cfg in [
        VmConfig {
            schedulers: 0,
            ..VmConfig::default()
        },
        VmConfig {
            schedulers: 2,
            schedulers_online: 3,
            ..VmConfig::default()
        },
        VmConfig {
            process_limit: 0,
            ..VmConfig::default()
        },
        VmConfig {
            reductions: 0,
            ..VmConfig::default()
        },
    ] {
        assert!(matches!(Vm::start(cfg), Err(Error::BadArg(_))));
    }
}

/// One scheduler: a process that never waits and a 10 ms ticker both progress.
#[test]
fn one_scheduler_spinner_and_ticker_both_progress() {
    let vm = vm(1);
    let spins = Arc::new(AtomicU64::new(0));
    let s2 = spins.clone();
    vm.spawn(body(move |cx: &mut Cx<'_>| loop {
        s2.fetch_add(1, Ordering::Relaxed);
        cx.bump(1);
        if cx.should_yield() {
            return Step::Yield;
        }
    }))
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let mut ticks = 0;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if cx.timed_out() {
            ticks += 1;
            tx.send(ticks).ok();
            if ticks == 10 {
                return Step::Exit(int(0));
            }
        }
        cx.wait(Some(Duration::from_millis(10)))
    }))
    .unwrap();
    let t0 = Instant::now();
    let mut last = 0;
    while last < 10 {
        last = recv_timeout(&rx, 5);
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(95),
        "ticks are 10 ms apart"
    );
    assert!(spins.load(Ordering::Relaxed) > 1000, "spinner progressed");
}

#[test]
fn max_priority_runs_first_and_low_still_progresses() {
    let vm = vm(1);
    // Hold the single scheduler busy while we enqueue, so order is decided by priority.
    let gate = Arc::new(AtomicBool::new(false));
    let g2 = gate.clone();
    let (tx, rx) = mpsc::channel::<&'static str>();
    vm.spawn(body(move |_: &mut Cx<'_>| {
        while !g2.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        Step::Exit(int(0))
    }))
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    for (prio, name) in [
        (Priority::Low, "low"),
        (Priority::Normal, "normal"),
        (Priority::High, "high"),
        (Priority::Max, "max"),
    ] {
        let tx = tx.clone();
        vm.spawn_opts(
            Box::new(body(move |_: &mut Cx<'_>| {
                tx.send(name).ok();
                Step::Exit(int(0))
            })),
            SpawnOpts {
                priority: prio,
                ..SpawnOpts::default()
            },
        )
        .unwrap();
    }
    gate.store(true, Ordering::Release);
    let order: Vec<_> = (0..4).map(|_| recv_timeout(&rx, 5)).collect();
    assert_eq!(order, vec!["max", "high", "normal", "low"]);

    // Low progresses while normal processes keep the scheduler busy: it gets one pick
    // in LOW_EVERY (8), as in BEAM.
    let low_runs = Arc::new(AtomicU64::new(0));
    let normal_runs = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..4 {
        let (stop, n) = (stop.clone(), normal_runs.clone());
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            if stop.load(Ordering::Relaxed) {
                return Step::Exit(int(0));
            }
            n.fetch_add(1, Ordering::Relaxed);
            cx.bump(4000);
            Step::Yield
        }))
        .unwrap();
    }
    let l2 = low_runs.clone();
    let s2 = stop.clone();
    vm.spawn_opts(
        Box::new(body(move |cx: &mut Cx<'_>| {
            if s2.load(Ordering::Relaxed) {
                return Step::Exit(int(0));
            }
            l2.fetch_add(1, Ordering::Relaxed);
            cx.bump(4000);
            Step::Yield
        })),
        SpawnOpts {
            priority: Priority::Low,
            ..SpawnOpts::default()
        },
    )
    .unwrap();
    assert!(
        eventually(5, || low_runs.load(Ordering::Relaxed) > 1000),
        "low starved"
    );
    // Counted over a window once all five run (the counts are per slice, not time).
    let (l0, n0) = (
        low_runs.load(Ordering::Relaxed),
        normal_runs.load(Ordering::Relaxed),
    );
    assert!(eventually(5, || low_runs.load(Ordering::Relaxed) > l0 + 2000));
    let low = low_runs.load(Ordering::Relaxed) - l0;
    let normal = normal_runs.load(Ordering::Relaxed) - n0;
    stop.store(true, Ordering::Relaxed);
    let share = low as f64 / (low + normal) as f64;
    assert!(
        (0.11..=0.14).contains(&share),
        "low had {low} of {} slices ({share:.3}), expected 1 in 8",
        low + normal
    );
}

#[test]
fn shutdown_joins_threads_and_frees_every_process() {
    let token = Arc::new(());
    let mut vm = vm(2);
    for _ in 0..1000 {
        let t = token.clone();
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            let _keep = &t;
            while cx.recv().is_some() {}
            Step::Wait
        }))
        .unwrap();
    }
    // Some runnable forever too.
    for _ in 0..4 {
        let t = token.clone();
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            let _keep = &t;
            cx.bump(4000);
            Step::Yield
        }))
        .unwrap();
    }
    assert!(Arc::strong_count(&token) > 1000);
    vm.shutdown();
    assert_eq!(Arc::strong_count(&token), 1, "every process body was freed");
    assert!(!vm.is_running());
    assert_eq!(vm.spawn(idle()).unwrap_err(), Error::NotRunning);
}

/// A panicking body ends with `{panic, Message}` (seen by a monitor); the VM and other
/// processes go on.
#[test]
fn panic_in_a_body_ends_only_that_process() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let survivor = vm.spawn(forwarder(tx.clone())).unwrap();
    let mut started = false;
    let watcher = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !started {
                started = true;
                cx.spawn_monitor(body(|_: &mut Cx<'_>| -> Step { panic!("boom") }))
                    .unwrap();
            }
            if let Some(m) = cx.recv() {
                cx.send(survivor, m);
                return Step::Exit(int(0));
            }
            Step::Wait
        }))
        .unwrap();
    let Term::Tuple(down) = recv_timeout(&rx, 5) else {
        panic!("a DOWN tuple")
    };
    assert_eq!(down[0], Term::Atom(Atom::DOWN));
    assert_eq!(
        down[4],
        Term::Tuple(vec![
            Term::Atom(Atom::PANIC),
            Term::binary(b"boom".to_vec())
        ]),
        "the reason is {{panic, Message}}"
    );
    assert!(eventually(5, || !vm.is_alive(watcher)));
    vm.send(survivor, int(1));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(1));
}

#[test]
fn work_is_stolen_across_schedulers() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    // Many CPU-bound processes spawned from one process (so all start in its
    // scheduler's queue): another scheduler must steal and run some. Every slice
    // records the thread it ran on, and the processes keep running until two
    // schedulers were seen or 20 s passed: on a loaded machine the second scheduler's
    // thread may get a core late, which must not read as "no stealing".
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (tx2, seen2) = (tx.clone(), seen.clone());
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        for _ in 0..8 {
            let (tx, seen) = (tx2.clone(), seen2.clone());
            cx.spawn(body(move |cx: &mut Cx<'_>| {
                cx.bump(4000);
                let both = {
                    let mut s = seen.lock().unwrap();
                    s.insert(std::thread::current().name().map(String::from));
                    s.len() >= 2
                };
                if both || Instant::now() > deadline {
                    tx.send(()).ok();
                    return Step::Exit(int(0));
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(200) {}
                Step::Yield
            }))
            .unwrap();
        }
        Step::Exit(int(0))
    }))
    .unwrap();
    for _ in 0..8 {
        recv_timeout(&rx, 30);
    }
    let names = seen.lock().unwrap().clone();
    assert!(
        names.len() >= 2,
        "only one scheduler ran processes: {names:?}"
    );
}

/// Taking schedulers offline moves their work to the ones online (and parks them);
/// bringing them back spreads work again, and nothing is lost either way.
#[test]
fn schedulers_offline_hand_their_work_over_and_come_back() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    let vm = vm(3);
    let names: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicU64::new(0));
    for _ in 0..12 {
        let (names, stop, finished) = (names.clone(), stop.clone(), finished.clone());
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            if stop.load(Ordering::Acquire) {
                finished.fetch_add(1, Ordering::AcqRel);
                return Step::Exit(int(0));
            }
            let me = std::thread::current().name().unwrap_or("?").to_string();
            names.lock().unwrap().push(me);
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(100) {}
            cx.bump(4000);
            Step::Yield
        }))
        .unwrap();
    }
    let seen = |names: &Mutex<Vec<String>>| -> HashSet<String> {
        std::thread::sleep(Duration::from_millis(100));
        names.lock().unwrap().drain(..).collect()
    };
    seen(&names);
    assert_eq!(vm.set_schedulers_online(1).unwrap(), 3);
    seen(&names); // slices that were running when it changed
    let online_one = seen(&names);
    assert_eq!(
        online_one,
        HashSet::from(["beamvm-sched-0".to_string()]),
        "only the online scheduler runs processes"
    );
    assert_eq!(vm.set_schedulers_online(3).unwrap(), 1);
    assert!(
        eventually(5, || seen(&names).len() >= 2),
        "work spreads again once they are back"
    );
    stop.store(true, Ordering::Release);
    assert!(eventually(5, || finished.load(Ordering::Acquire) == 12));
    assert!(vm.set_schedulers_online(0).is_err());
    assert!(vm.set_schedulers_online(4).is_err());
}

#[test]
fn shutdown_within_leaves_a_stuck_scheduler_and_returns() {
    use std::sync::atomic::AtomicBool;
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let mut vm = vm(2);
    let (tx, rx) = mpsc::channel();
    vm.spawn(body(move |_: &mut Cx<'_>| {
        tx.send(()).ok();
        // A slice that does not return until released (code that cannot be preempted).
        while !RELEASE.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Step::Exit(int(0))
    }))
    .unwrap();
    recv_timeout(&rx, 5);
    let t0 = Instant::now();
    let stuck = vm.shutdown_within(Some(Duration::from_millis(200)));
    assert_eq!(stuck, 1, "the stuck scheduler is reported and left running");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!vm.is_running());
    RELEASE.store(true, Ordering::Release);
}
