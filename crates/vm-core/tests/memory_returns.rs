//! Memory comes back after a load: a flood of messages into one process, drained,
//! receiver exited, round after round, leaves the resident set where the first round
//! left it. (Its own test binary: it reads the process's RSS.)
//!
//! What used to stay: the mailbox kept its queue's storage after `clear` (40 bytes per
//! slot: 21 MB for this test's 300,000 messages) and the control block that owns it is freed
//! lazily by the process table's epoch reclamation (a thread's deferred frees wait for
//! 64 of them), so every round's storage stayed; and each scheduler's drain buffer kept
//! room for the largest drain it ever did (48 bytes per signal).

mod common;

use common::*;
use std::sync::mpsc;
use std::time::Duration;

use vm_core::{Atom, Cx, Step, Term};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}

const MESSAGES: i64 = 300_000;

/// One round: a receiver that waits for `go` (so the flood queues up), then drains
/// everything and exits.
fn round(vm: &vm_core::Vm) {
    let (tx, rx) = mpsc::channel();
    let mut seen = 0i64;
    let mut started = false;
    let p = vm
        .spawn(move |cx: &mut Cx<'_>| {
            if !started {
                let go = cx.recv_where(|v| v.as_atom() == Some(Atom::OK));
                if go.is_none() {
                    return Step::Wait;
                }
                started = true;
            }
            while let Some(_m) = cx.recv() {
                seen += 1;
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
            if seen == MESSAGES {
                let _ = tx.send(());
                return Step::Exit(term(Term::Atom(Atom::NORMAL)));
            }
            Step::Wait
        })
        .unwrap();
    for i in 0..MESSAGES {
        vm.send(
            p,
            term(Term::Tuple(vec![Term::Int(i), Term::str("payload")])),
        );
    }
    vm.send(p, term(Term::Atom(Atom::OK)));
    recv_timeout(&rx, 120);
    assert!(eventually(10, || !vm.is_alive(p)));
}

#[test]
fn rss_after_ten_flood_rounds_stays_near_the_first() {
    let vm = vm(1);
    round(&vm);
    std::thread::sleep(Duration::from_millis(200));
    let first = rss_bytes();
    let mut last = first;
    for _ in 1..10 {
        round(&vm);
        std::thread::sleep(Duration::from_millis(200));
        last = rss_bytes();
    }
    let mb = |b: usize| b as f64 / 1e6;
    assert!(
        (last as f64) < 1.5 * first as f64,
        "RSS after the first round {:.0} MB, after the tenth {:.0} MB",
        mb(first),
        mb(last)
    );
}
