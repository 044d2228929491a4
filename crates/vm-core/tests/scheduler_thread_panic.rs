//! A panic that escapes a scheduler thread's loop (here, from the embedder's idle
//! hook, which the scheduler calls outside any process's slice) still counts the
//! thread out, so shutdown returns instead of waiting for it forever. (Its own test
//! binary: the hook is process-wide.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use vm_core::{Atom, Cx, Step, Term};

static PANICKED: AtomicBool = AtomicBool::new(false);

fn hook() {
    PANICKED.store(true, Ordering::SeqCst);
    panic!("idle hook fails");
}

#[test]
fn shutdown_returns_after_a_scheduler_thread_panicked() {
    vm_core::set_idle_hook(hook);
    let mut vm = vm(1);
    // Run something, then idle: the hook comes due half a second later.
    let (tx, rx) = mpsc::channel();
    vm.spawn(move |_: &mut Cx<'_>| {
        let _ = tx.send(());
        Step::Exit(term(Term::Atom(Atom::NORMAL)))
    })
    .expect("spawn");
    recv_timeout(&rx, 10);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !PANICKED.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the idle hook was never called");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        vm.shutdown();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("shutdown waits for a scheduler thread that panicked");
}
