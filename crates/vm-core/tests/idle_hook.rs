//! The embedder's idle hook (`vm_core::set_idle_hook`): a scheduler that ran something
//! and then found no work for half a second calls it once, on its own thread; it is not
//! called again until the scheduler has run something since. One that never idles that
//! long but parks calls it every 5 s. (Its own test binary: the
//! hook is process-wide, and other tests' schedulers would call it too.)

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_core::{Step, Term};

static CALLS: AtomicUsize = AtomicUsize::new(0);

fn hook() {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

/// Runs one process to completion on `vm` and returns when it has.
fn run_one(vm: &vm_core::Vm) {
    let (tx, rx) = mpsc::channel();
    vm.spawn(move |_cx: &mut vm_core::Cx<'_>| {
        let _ = tx.send(());
        Step::Exit(term(Term::Atom(vm_core::Atom::NORMAL)))
    })
    .unwrap();
    recv_timeout(&rx, 10);
}

#[test]
fn an_idle_scheduler_calls_the_hook_once_per_idle_period_and_a_parking_one_every_5_s() {
    vm_core::set_idle_hook(hook);
    let vm = vm(1);
    // Freshly started, nothing run: no call however long it idles.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        0,
        "called before anything ran"
    );

    // Busy now and then (every 50 ms) for 1.5 s: never idle long enough.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        run_one(&vm);
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = CALLS.load(Ordering::SeqCst);
    assert!(during <= 1, "called {during} times while busy every 50 ms");

    // Then quiet: called once (give a slow machine 10 s), and only once.
    run_one(&vm);
    let base = CALLS.load(Ordering::SeqCst);
    assert!(
        eventually(10, || CALLS.load(Ordering::SeqCst) > base),
        "an idle scheduler never called the hook"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        base + 1,
        "called again while idle"
    );

    // Work again, then idle again: one more call.
    run_one(&vm);
    assert!(eventually(10, || CALLS.load(Ordering::SeqCst) == base + 2));

    // Never idle for half a second (work every 50 ms) but parking in between: called
    // once the last call is 5 s old (PURGE_EVERY), not at every park.
    let before = CALLS.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_millis(6500);
    while Instant::now() < until {
        run_one(&vm);
        std::thread::sleep(Duration::from_millis(50));
    }
    let periodic = CALLS.load(Ordering::SeqCst) - before;
    assert!(
        (1..=2).contains(&periodic),
        "{periodic} calls in 6.5 s of work every 50 ms"
    );
}
