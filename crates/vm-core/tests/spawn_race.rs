//! Spawn publishes a process that is already QUEUED (issue 8, fault 3): a sender that
//! finds the new pid before the spawner enqueued it must not enqueue it a second time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vm_core::{Cx, Pid, Step, Term};

/// Polls `f` (without sleeping) for up to 5 s.
fn soon(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::yield_now();
    }
    f()
}

/// With a process limit of 1 every process gets slot 0 and the next serial, so a
/// sender thread knows the pid of the process about to be spawned and sends it one
/// message the moment the pid resolves, racing the spawner. A process in two run
/// queues is resumed a second time with nothing new to read: each body counts such
/// spurious resumes.
#[test]
fn a_sender_racing_spawn_never_makes_a_process_run_twice() {
    let mut vm = vm_limit(2, 1);
    let handle = vm.handle();
    const ROUNDS: u32 = 3000;
    let target = Arc::new(AtomicU32::new(u32::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (target, stop, handle) = (target.clone(), stop.clone(), handle.clone());
        std::thread::spawn(move || {
            let mut last = u32::MAX;
            while !stop.load(Ordering::Acquire) {
                let t = target.load(Ordering::Acquire);
                if t == last {
                    std::hint::spin_loop();
                    continue;
                }
                let pid = Pid::new(0, t);
                let end = Instant::now() + Duration::from_millis(50);
                while !handle.send(pid, int(1)) && Instant::now() < end {}
                last = t;
            }
        })
    };
    let spurious = Arc::new(AtomicU64::new(0));
    let runs = Arc::new(AtomicU64::new(0));
    for serial in 0..ROUNDS {
        target.store(serial, Ordering::Release);
        let got_first = Arc::new(AtomicBool::new(false));
        let (spurious, runs, got) = (spurious.clone(), runs.clone(), got_first.clone());
        let mut resumes = 0u32;
        let b = body(move |cx: &mut Cx<'_>| {
            resumes += 1;
            runs.fetch_add(1, Ordering::Relaxed);
            let mut new = 0;
            while let Some(m) = cx.recv() {
                new += 1;
                match m.view().as_int() {
                    Some(1) => got.store(true, Ordering::Release),
                    _ => return Step::Exit(term(Term::atom("normal"))),
                }
            }
            if resumes > 1 && new == 0 {
                spurious.fetch_add(1, Ordering::Relaxed);
            }
            Step::Wait
        });
        let pid = handle.spawn(b).expect("the previous process has exited");
        assert_eq!(pid, Pid::new(0, serial), "the sender guesses pids right");
        // The racing message arrives; a second queue entry would run meanwhile.
        assert!(soon(|| got_first.load(Ordering::Acquire)));
        std::thread::sleep(Duration::from_micros(100));
        handle.send(pid, int(2));
        assert!(soon(|| handle.process_count() == 0), "{pid} hangs");
    }
    stop.store(true, Ordering::Release);
    sender.join().unwrap();
    assert_eq!(
        spurious.load(Ordering::Relaxed),
        0,
        "processes resumed with nothing new (run twice from two queues), out of {} resumes",
        runs.load(Ordering::Relaxed)
    );
    assert_eq!(vm.shutdown_within(Some(Duration::from_secs(5))), 0);
}
