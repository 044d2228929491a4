//! What observers read: the one-walk census agrees with `top` and `memory`, the
//! message counter counts sends from processes and from outside, long slices are
//! logged without a system monitor, and process details sample the queue without
//! waiting on a busy process.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use vm_core::observe::render_bounded;
use vm_core::{Cx, Step, Term, View};

/// Erlang form, cut at 240 bytes.
fn erl(v: View<'_>) -> String {
    render_bounded(&v, 240)
}

/// A process that never receives: what is sent to it stays queued.
fn hoarder() -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    |_cx: &mut Cx<'_>| Step::Wait
}

/// A process whose first slice spins for `ms` (after telling `started`), then exits.
fn spins_once(ms: u64, started: mpsc::Sender<()>) -> impl FnMut(&mut Cx<'_>) -> Step + Send {
    let mut once = false;
    move |_cx: &mut Cx<'_>| {
        if once {
            return Step::Exit(int(0));
        }
        once = true;
        let _ = started.send(());
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(ms) {
            std::hint::spin_loop();
        }
        Step::Yield
    }
}

#[test]
fn census_agrees_with_top_memory_and_system_info() {
    let vm = vm(2);
    let idle: Vec<_> = (0..100).map(|_| vm.spawn(idle()).unwrap()).collect();
    let hogs: Vec<_> = (0..3).map(|_| vm.spawn(hoarder()).unwrap()).collect();
    for (i, h) in hogs.iter().enumerate() {
        for m in 0..(10 * (i as i64 + 1)) {
            vm.send(*h, int(m));
        }
    }
    assert!(eventually(5, || vm.top(1, "message_queue_len").unwrap()
        == vec![(hogs[2], 30)]
        && vm.census(0).waiting == 103));
    let c = vm.census(3);
    assert_eq!(c.processes, 103);
    assert_eq!(c.processes, vm.system_info().process_count);
    assert_eq!((c.waiting, c.runnable, c.running), (103, 0, 0));
    assert_eq!(c.messages_queued, 10 + 20 + 30);
    assert_eq!(
        c.top_message_queue_len,
        vec![(hogs[2], 30), (hogs[1], 20), (hogs[0], 10)]
    );
    assert_eq!(
        c.top_message_queue_len,
        vm.top(3, "message_queue_len").unwrap()
    );
    let values = |v: &[(vm_core::Pid, u64)]| v.iter().map(|e| e.1).collect::<Vec<_>>();
    for (by, got) in [("memory", &c.top_memory), ("reductions", &c.top_reductions)] {
        assert_eq!(values(got), values(&vm.top(3, by).unwrap()), "top by {by}");
    }
    let m = vm.memory();
    assert_eq!(c.memory.processes, m.processes);
    assert_eq!(c.memory.atom, m.atom);
    assert_eq!(
        c.memory.total,
        c.memory.processes + c.memory.binary + c.memory.atom + c.memory.system
    );
    let none = vm.census(0);
    assert!(none.top_memory.is_empty() && none.top_reductions.is_empty());
    assert_eq!(none.processes, 103);
    for p in idle.iter().chain(&hogs) {
        vm.exit(*p, term(atom("kill")));
    }
    assert!(eventually(5, || vm.census(1).processes == 0));
}

#[test]
fn messages_sent_counts_sends_by_processes_and_from_outside() {
    let vm = vm(2);
    let before = vm.statistics().messages_sent;
    let sink = vm.spawn(idle()).unwrap();
    let (tx, rx) = mpsc::channel();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        for i in 0..1000 {
            cx.send(sink, int(i));
        }
        tx.send(()).unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    recv_timeout(&rx, 5);
    for i in 0..10 {
        vm.send(sink, int(i));
    }
    // The sender's count is published when its slice ends.
    assert!(eventually(5, || vm.statistics().messages_sent == before + 1010));
    // A send to a dead process is still a send (Erlang's `!` counts it too).
    vm.send(vm_core::Pid::new(999_999, 7), int(0));
    assert_eq!(vm.statistics().messages_sent, before + 1011);
}

#[test]
fn long_slices_are_logged_without_a_system_monitor() {
    let vm = vm(2);
    assert!(vm.long_schedule_events().is_empty());
    let hog = vm.spawn(spins_once(40, mpsc::channel().0)).unwrap();
    assert!(eventually(5, || !vm.long_schedule_events().is_empty()));
    let ev = &vm.long_schedule_events()[0];
    assert_eq!(ev.pid, hog);
    assert!(ev.took >= Duration::from_millis(30), "{ev:?}");
    assert!(ev.at >= ev.took);
    assert_eq!(vm.statistics().long_schedules, 1);
}

#[test]
fn process_detail_samples_the_queue_in_order_and_bounds_each_message() {
    let vm = vm(2);
    let p = vm.spawn(hoarder()).unwrap();
    vm.send(p, int(1));
    vm.send(
        p,
        term(tuple(vec![atom("hello"), Term::binary(b"x".to_vec())])),
    );
    vm.send(p, term(Term::List((0..10_000).map(Term::Int).collect())));
    vm.send(p, int(4));
    assert!(eventually(5, || vm
        .process_detail(p, 10, Duration::from_secs(1), &erl)
        .is_some_and(|d| d.queue_sample.len() == 4)));
    let d = vm
        .process_detail(p, 3, Duration::from_secs(1), &erl)
        .unwrap();
    assert_eq!(d.queue_sample[0], "1");
    assert_eq!(d.queue_sample[1], "{hello,<<\"x\">>}");
    assert!(d.queue_sample[2].starts_with("[0,1,2,3,"));
    assert!(d.queue_sample[2].ends_with("..."));
    assert!(d.queue_sample[2].len() <= 240 + 3);
    assert_eq!(d.queue_sample.len(), 3, "sample size is honoured");
    let info = d.info.expect("an idle process's lock is free");
    assert_eq!(info.message_queue_len, 4);
    assert_eq!(d.summary.pid, p);
    assert_eq!(d.in_transit, 0);
    vm.exit(p, term(atom("kill")));
    assert!(eventually(5, || vm
        .process_detail(p, 3, Duration::ZERO, &erl)
        .is_none()));
}

#[test]
fn process_detail_does_not_wait_for_a_process_in_a_long_slice() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let hog = vm.spawn(spins_once(1500, tx)).unwrap();
    recv_timeout(&rx, 5);
    let t = Instant::now();
    let d = vm
        .process_detail(hog, 5, Duration::from_millis(50), &erl)
        .expect("alive");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "gave up at the deadline"
    );
    assert!(d.info.is_none() && d.queue_sample.is_empty());
    assert_eq!(d.summary.status, "running");
}
