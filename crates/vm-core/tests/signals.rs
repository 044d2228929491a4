//! Links, monitors and exit signals, with Erlang's semantics (docs/semantics.md).
mod common;
use common::*;

use std::sync::mpsc;
use std::time::Duration;

use vm_core::{Cx, Error, Pid, Ref, Step, Term, VmRef};

/// A process that traps exits (if asked) and forwards every message to `tx`; it also
/// runs `setup` once first.
fn watcher<F>(tx: mpsc::Sender<Term>, trap: bool, mut setup: F) -> impl vm_core::Body
where
    F: FnMut(&mut Cx<'_>) + Send + 'static,
{
    let mut started = false;
    body(move |cx: &mut Cx<'_>| {
        if !started {
            started = true;
            cx.trap_exit(trap);
            setup(cx);
        }
        while let Some(m) = cx.recv() {
            let _ = tx.send(m.to_term());
        }
        Step::Wait
    })
}

fn exit_msg(from: Pid, reason: Term) -> Term {
    tuple(vec![atom("EXIT"), Term::Pid(from), reason])
}

/// Spawns a process that dies with `reason` when it receives any message.
fn die_on_message(vm: &VmRef, reason: Term) -> Pid {
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if cx.recv().is_some() {
            return Step::Exit(term(reason.clone()));
        }
        Step::Wait
    }))
    .unwrap()
}

#[test]
fn normal_exit_does_not_kill_a_linked_process() {
    let vm = vm(2);
    let h = vm.handle();
    let child = die_on_message(&h, atom("normal"));
    let (tx, rx) = mpsc::channel();
    let w = vm
        .spawn(watcher(tx, false, move |cx| {
            cx.link(child).unwrap();
        }))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    vm.send(child, int(0));
    assert!(eventually(5, || !vm.is_alive(child)));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        vm.is_alive(w),
        "normal exit must not kill a non-trapping linked process"
    );
    vm.send(w, int(5));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(5));
}

#[test]
fn abnormal_exit_spreads_along_links() {
    let vm = vm(2);
    let h = vm.handle();
    let a = die_on_message(&h, atom("boom"));
    let (tx, rx) = mpsc::channel();
    // b links to a; c links to b and traps: c sees b die with boom.
    let b = vm
        .spawn(watcher(mpsc::channel().0, false, move |cx| {
            cx.link(a).unwrap()
        }))
        .unwrap();
    let c = vm
        .spawn(watcher(tx, true, move |cx| cx.link(b).unwrap()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    vm.send(a, int(0));
    assert_eq!(recv_timeout(&rx, 5), exit_msg(b, atom("boom")));
    assert!(!vm.is_alive(b));
    assert!(vm.is_alive(c), "a trapping process lives on");
}

#[test]
fn trapping_process_receives_exit_messages_including_normal() {
    let vm = vm(2);
    let h = vm.handle();
    let a = die_on_message(&h, atom("normal"));
    let (tx, rx) = mpsc::channel();
    vm.spawn(watcher(tx, true, move |cx| cx.link(a).unwrap()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    vm.send(a, int(0));
    assert_eq!(recv_timeout(&rx, 5), exit_msg(a, atom("normal")));
}

#[test]
fn link_is_idempotent_and_unlink_removes_both_sides() {
    let vm = vm(2);
    let h = vm.handle();
    let target = die_on_message(&h, atom("boom"));
    let (tx, rx) = mpsc::channel();
    let w = vm
        .spawn(watcher(tx, true, move |cx| {
            cx.link(target).unwrap();
            cx.link(target).unwrap();
            cx.unlink(target);
        }))
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(vm.process_info(w).unwrap().links.is_empty());
    assert!(eventually(2, || vm
        .process_info(target)
        .unwrap()
        .links
        .is_empty()));
    vm.send(target, int(0));
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "no EXIT after unlink"
    );
}

#[test]
fn link_to_dead_process_noproc_error_or_exit_message() {
    let vm = vm(2);
    let dead = vm.spawn(body(|_: &mut Cx<'_>| Step::Exit(int(0)))).unwrap();
    assert!(eventually(5, || !vm.is_alive(dead)));
    // Not trapping: link fails with noproc.
    let (tx, rx) = mpsc::channel();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        tx.send(cx.link(dead)).unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    assert_eq!(recv_timeout(&rx, 5), Err(Error::NoProc));
    // Trapping: an EXIT noproc message, and link returns Ok.
    let (tx, rx) = mpsc::channel();
    vm.spawn(watcher(tx, true, move |cx| cx.link(dead).unwrap()))
        .unwrap();
    assert_eq!(recv_timeout(&rx, 5), exit_msg(dead, atom("noproc")));
}

#[test]
fn kill_cannot_be_trapped_and_links_see_killed() {
    let vm = vm(2);
    let (tx_dead, _rx_dead) = mpsc::channel();
    let victim = vm.spawn(watcher(tx_dead, true, |_| {})).unwrap();
    let (tx, rx) = mpsc::channel();
    vm.spawn(watcher(tx, true, move |cx| cx.link(victim).unwrap()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (ktx, krx) = mpsc::channel();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        cx.exit(victim, term(atom("kill")));
        ktx.send(()).unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    recv_timeout(&krx, 5);
    assert_eq!(recv_timeout(&rx, 5), exit_msg(victim, atom("killed")));
    assert!(!vm.is_alive(victim));
}

#[test]
fn exit_normal_to_another_process_is_ignored_unless_trapping() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let plain = vm.spawn(watcher(tx.clone(), false, |_| {})).unwrap();
    let trapper = vm.spawn(watcher(tx, true, |_| {})).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (stx, srx) = mpsc::channel();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        cx.exit(plain, term(atom("normal")));
        cx.exit(trapper, term(atom("normal")));
        stx.send(cx.self_pid()).unwrap();
        Step::Wait
    }))
    .unwrap();
    let sender = recv_timeout(&srx, 5);
    assert_eq!(recv_timeout(&rx, 5), exit_msg(sender, atom("normal")));
    assert!(vm.is_alive(plain));
    // Any other reason kills a non-trapping process.
    let killer_done = mpsc::channel::<()>();
    let kd = killer_done.0;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        cx.exit(plain, term(atom("shutdown")));
        kd.send(()).unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    recv_timeout(&killer_done.1, 5);
    assert!(eventually(5, || !vm.is_alive(plain)));
}

#[test]
fn process_may_exit_itself_with_any_reason() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    vm.spawn(watcher(tx, true, |cx| {
        let child = cx
            .spawn_link(body(|cx: &mut Cx<'_>| {
                let me = cx.self_pid();
                cx.exit(me, term(atom("my_reason")));
                Step::Wait
            }))
            .unwrap();
        let _ = child;
    }))
    .unwrap();
    match recv_timeout(&rx, 5) {
        Term::Tuple(v) => assert_eq!(v[2], atom("my_reason")),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn spawn_link_is_atomic_even_when_the_child_dies_at_once() {
    let vm = vm(2);
    for _ in 0..200 {
        let (tx, rx) = mpsc::channel();
        vm.spawn(watcher(tx, true, |cx| {
            cx.spawn_link(body(|_: &mut Cx<'_>| Step::Exit(term(atom("instant")))))
                .unwrap();
        }))
        .unwrap();
        match recv_timeout(&rx, 5) {
            Term::Tuple(v) => assert_eq!(v[2], atom("instant")),
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn spawn_monitor_is_atomic_and_down_carries_the_reason() {
    let vm = vm(2);
    for _ in 0..200 {
        let (tx, rx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        vm.spawn(watcher(tx, false, move |cx| {
            let (pid, r) = cx
                .spawn_monitor(body(|_: &mut Cx<'_>| Step::Exit(term(atom("instant")))))
                .unwrap();
            rtx.send((pid, r)).unwrap();
        }))
        .unwrap();
        let (pid, r) = recv_timeout(&rrx, 5);
        assert_eq!(
            recv_timeout(&rx, 5),
            tuple(vec![
                atom("DOWN"),
                Term::Ref(r),
                atom("process"),
                Term::Pid(pid),
                atom("instant")
            ])
        );
    }
}

#[test]
fn monitor_dead_process_gives_noproc_and_monitors_stack() {
    let vm = vm(2);
    let dead = vm.spawn(body(|_: &mut Cx<'_>| Step::Exit(int(0)))).unwrap();
    assert!(eventually(5, || !vm.is_alive(dead)));
    let h = vm.handle();
    let target = die_on_message(&h, atom("bye"));
    let (tx, rx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    vm.spawn(watcher(tx, false, move |cx| {
        let r0 = cx.monitor(dead);
        let r1 = cx.monitor(target);
        let r2 = cx.monitor(target);
        rtx.send((r0, r1, r2)).unwrap();
    }))
    .unwrap();
    let (r0, r1, r2) = recv_timeout(&rrx, 5);
    let down = |r: Ref, p: Pid, why: &str| {
        tuple(vec![
            atom("DOWN"),
            Term::Ref(r),
            atom("process"),
            Term::Pid(p),
            atom(why),
        ])
    };
    assert_eq!(recv_timeout(&rx, 5), down(r0, dead, "noproc"));
    vm.send(target, int(0));
    let mut got = vec![recv_timeout(&rx, 5), recv_timeout(&rx, 5)];
    got.sort_by_key(|t| t.to_string());
    let mut want = vec![down(r1, target, "bye"), down(r2, target, "bye")];
    want.sort_by_key(|t| t.to_string());
    assert_eq!(got, want, "two monitors, two DOWNs");
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "exactly one each"
    );
}

#[test]
fn demonitor_flush_removes_a_queued_down() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let mut mref = None;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        let r = *mref.get_or_insert_with(|| {
            let child = cx.spawn(body(|_: &mut Cx<'_>| Step::Exit(int(0)))).unwrap();
            cx.monitor(child)
        });
        // Wait until the DOWN is queued, without receiving it.
        let queued = cx.message_queue_len();
        if queued == 0 {
            return Step::Wait;
        }
        let active = cx.demonitor(r, true);
        tx.send((queued, active, cx.message_queue_len())).unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    let (queued, active, after) = recv_timeout(&rx, 5);
    assert_eq!(queued, 1);
    assert!(!active, "the monitor had fired");
    assert_eq!(after, 0, "flush removed the DOWN");
}

#[test]
fn demonitor_before_death_means_no_down() {
    let vm = vm(2);
    let h = vm.handle();
    let target = die_on_message(&h, atom("bye"));
    let (tx, rx) = mpsc::channel();
    vm.spawn(watcher(tx, false, move |cx| {
        let r = cx.monitor(target);
        assert!(cx.demonitor(r, false));
    }))
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    vm.send(target, int(0));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn signals_from_one_process_arrive_in_order() {
    // A sends a message, then exits with a reason: the trapping receiver sees the
    // message before the EXIT.
    let vm = vm(2);
    for _ in 0..100 {
        let (tx, rx) = mpsc::channel();
        vm.spawn(watcher(tx, true, |cx| {
            let me = cx.self_pid();
            cx.spawn_link(body(move |cx: &mut Cx<'_>| {
                for i in 0..5 {
                    cx.send(me, int(i));
                }
                Step::Exit(term(atom("done")))
            }))
            .unwrap();
        }))
        .unwrap();
        for i in 0..5 {
            assert_eq!(recv_timeout(&rx, 5), Term::Int(i));
        }
        match recv_timeout(&rx, 5) {
            Term::Tuple(v) => assert_eq!(v[0], atom("EXIT")),
            other => panic!("expected EXIT last, got {other}"),
        }
    }
}

/// A process that ends releases its name, its timers, its links (the linked process
/// gets the exit signal and no longer lists it), the monitors on it (one DOWN) and the
/// monitor it held on another process (which no longer lists it).
#[test]
fn exit_cleans_up_name_timers_and_links() {
    let vm = vm(2);
    let h = vm.handle();
    let target = vm.spawn(idle()).unwrap();
    let mut started = false;
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !started {
                started = true;
                cx.monitor(target);
            }
            if cx.recv().is_some() {
                return Step::Exit(term(atom("bye")));
            }
            Step::Wait
        }))
        .unwrap();
    let (ltx, lrx) = mpsc::channel();
    let linker = vm
        .spawn(watcher(ltx, true, move |cx| cx.link(p).unwrap()))
        .unwrap();
    let (mtx, mrx) = mpsc::channel();
    vm.spawn(watcher(mtx, false, move |cx| {
        cx.monitor(p);
    }))
    .unwrap();
    let name = vm_core::Atom::new("cleanup_test_name");
    vm.register(name, p).unwrap();
    vm.send_after(Duration::from_secs(3600), p, int(1));
    assert_eq!(vm.system_info().timers, 1);
    // Every relation is in place before p dies.
    assert!(eventually(5, || {
        let info = h.process_info(p).expect("alive");
        info.links == vec![linker] && info.monitored_by.len() == 1 && info.monitors == vec![target]
    }));
    assert!(eventually(5, || h
        .process_info(target)
        .is_some_and(|i| i.monitored_by == vec![p])));
    vm.send(p, int(0));
    assert!(eventually(5, || !vm.is_alive(p)));
    assert_eq!(vm.whereis(name), None, "name released");
    assert!(
        eventually(5, || vm.system_info().timers == 0),
        "timers cancelled"
    );
    assert_eq!(
        recv_timeout(&lrx, 5),
        exit_msg(p, atom("bye")),
        "link signalled"
    );
    assert!(
        eventually(5, || h
            .process_info(linker)
            .is_some_and(|i| i.links.is_empty())),
        "the link is gone on the other side"
    );
    match recv_timeout(&mrx, 5) {
        Term::Tuple(v) => {
            assert_eq!(v[0], atom("DOWN"));
            assert_eq!(v[3], Term::Pid(p));
            assert_eq!(v[4], atom("bye"));
        }
        other => panic!("expected a DOWN, got {other}"),
    }
    assert!(
        mrx.recv_timeout(Duration::from_millis(50)).is_err(),
        "one DOWN"
    );
    assert!(
        eventually(5, || h
            .process_info(target)
            .is_some_and(|i| i.monitored_by.is_empty())),
        "the monitor p held is removed"
    );
}

/// A chain link: spawns the next link (linked) until `remaining` is 0; the last
/// reports its pid.
struct Chain {
    remaining: usize,
    done: mpsc::Sender<Pid>,
    started: bool,
}

impl vm_core::Body for Chain {
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        if !self.started {
            self.started = true;
            if self.remaining > 0 {
                let next = Chain {
                    remaining: self.remaining - 1,
                    done: self.done.clone(),
                    started: false,
                };
                cx.spawn_link(next).unwrap();
            } else {
                self.done.send(cx.self_pid()).unwrap();
            }
        }
        while cx.recv().is_some() {}
        Step::Wait
    }
}

#[test]
fn chain_of_100k_linked_processes_dies_from_one_end() {
    const N: usize = 100_000;
    let vm = vm_limit(2, 200_000);
    let (tx, rx) = mpsc::channel();
    let (dtx, drx) = mpsc::channel();
    let (ftx, frx) = mpsc::channel();
    vm.spawn(watcher(tx, true, move |cx| {
        let first = cx
            .spawn_link(Chain {
                remaining: N - 1,
                done: dtx.clone(),
                started: false,
            })
            .unwrap();
        ftx.send(first).unwrap();
    }))
    .unwrap();
    let first = recv_timeout(&frx, 60);
    let last = recv_timeout(&drx, 120);
    assert_eq!(vm.process_count(), N + 1);
    let t0 = std::time::Instant::now();
    vm.exit(last, term(atom("kill")));
    assert_eq!(recv_timeout(&rx, 120), exit_msg(first, atom("killed")));
    let took = t0.elapsed();
    assert!(
        eventually(30, || vm.process_count() == 1),
        "whole chain gone"
    );
    eprintln!("exit cascade through {N} linked processes: {took:?}");
}

#[test]
fn trapping_process_gets_all_100k_exit_messages() {
    const N: usize = 100_000;
    let vm = vm_limit(2, 200_000);
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    let mut count = 0usize;
    let mut started = false;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if !started {
            started = true;
            cx.trap_exit(true);
            for _ in 0..N {
                let c = cx
                    .spawn_link(body(|cx: &mut Cx<'_>| {
                        if cx.recv().is_some() {
                            return Step::Exit(term(atom("bye")));
                        }
                        Step::Wait
                    }))
                    .unwrap();
                children.push(c);
            }
            for c in children.drain(..) {
                cx.send(c, int(0));
            }
        }
        while let Some(m) = cx.recv() {
            let v = m.view();
            if v.tuple_get(0).and_then(|e| e.as_atom()) == Some(vm_core::Atom::EXIT) {
                count += 1;
            }
            if count == N {
                tx.send(count).unwrap();
                return Step::Exit(int(0));
            }
        }
        Step::Wait
    }))
    .unwrap();
    assert_eq!(recv_timeout(&rx, 120), N);
}

/// Links and monitors set and removed from many processes while their targets die:
/// every active monitor yields exactly one DOWN, no duplicates, no deadlock.
#[test]
fn concurrent_links_monitors_and_deaths() {
    let vm = vm(2);
    for round in 0..20 {
        let targets: Vec<Pid> = (0..50)
            .map(|_| die_on_message(&vm.handle(), atom("gone")))
            .collect();
        let (tx, rx) = mpsc::channel();
        let watchers = 8;
        for w in 0..watchers {
            let targets = targets.clone();
            let tx = tx.clone();
            let mut refs: Vec<Ref> = Vec::new();
            let mut downs = 0usize;
            let mut phase = 0;
            vm.spawn(body(move |cx: &mut Cx<'_>| {
                if phase == 0 {
                    phase = 1;
                    cx.trap_exit(true);
                    for (i, &t) in targets.iter().enumerate() {
                        let r = cx.monitor(t);
                        if (i + w + round) % 3 == 0 {
                            cx.demonitor(r, true);
                        } else {
                            refs.push(r);
                        }
                        if i % 2 == 0 {
                            let _ = cx.link(t);
                            if i % 4 == 0 {
                                cx.unlink(t);
                            }
                        }
                    }
                    if refs.is_empty() {
                        tx.send(Ok(0)).unwrap();
                        return Step::Exit(int(0));
                    }
                }
                while let Some(m) = cx.recv() {
                    let v = m.view();
                    if v.tuple_get(0).and_then(|e| e.as_atom()) == Some(vm_core::Atom::DOWN) {
                        let r = v.tuple_get(1).and_then(|e| e.as_ref()).unwrap();
                        match refs.iter().position(|x| *x == r) {
                            Some(i) => {
                                refs.swap_remove(i);
                                downs += 1;
                            }
                            None => {
                                tx.send(Err(format!("duplicate or unknown DOWN {r}")))
                                    .unwrap();
                                return Step::Exit(int(1));
                            }
                        }
                        if refs.is_empty() {
                            tx.send(Ok(downs)).unwrap();
                            return Step::Wait;
                        }
                    }
                }
                Step::Wait
            }))
            .unwrap();
        }
        // Kill targets while watchers are still setting up.
        for t in &targets {
            vm.send(*t, int(0));
        }
        for _ in 0..watchers {
            assert!(recv_timeout(&rx, 30).is_ok());
        }
    }
}

#[test]
fn nothing_leaks_over_100k_lifecycles() {
    let vm = vm_limit(2, 200_000);
    let before = vm.memory();
    let base_count = vm.process_count();
    let (tx, rx) = mpsc::channel();
    let mut left = 100_000usize;
    let mut phase = 0;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if phase == 0 {
            phase = 1;
            cx.trap_exit(true);
        }
        // Keep 1000 in flight: each linked, monitored, named? (names are global; skip)
        while let Some(_m) = cx.recv() {
            left -= 1;
            if left == 0 {
                tx.send(()).unwrap();
                return Step::Exit(int(0));
            }
        }
        let me = cx.self_pid();
        for _ in 0..100 {
            cx.spawn_link(body(move |cx: &mut Cx<'_>| {
                let blob = Term::binary(vec![7u8; 1000]);
                cx.send_after(Duration::from_secs(3600), cx.self_pid(), int(1));
                cx.monitor(me);
                let f = term(blob);
                let w = cx.heap().attach(f);
                cx.regs().push(w);
                Step::Exit(term(atom("done")))
            }))
            .unwrap();
        }
        Step::Wait
    }))
    .unwrap();
    recv_timeout(&rx, 120);
    assert!(eventually(10, || vm.process_count() == base_count));
    assert!(
        eventually(10, || vm.system_info().timers == 0),
        "timers leaked"
    );
    let after = vm.memory();
    assert!(
        after.processes <= before.processes + 4096,
        "process memory grew: {before:?} -> {after:?}"
    );
    assert!(
        after.binary <= before.binary + 4096,
        "binaries leaked: {before:?} -> {after:?}"
    );
}

/// A signal that becomes a message (a trapped EXIT here) and arrives during the
/// receiver's slice, with no plain message beside it, is received by the next `recv`
/// of that slice: it must not sit in the mailbox while the process goes to sleep.
#[test]
fn exit_message_arriving_mid_slice_is_received_at_once() {
    let vm = vm(2);
    let h = vm.handle();
    let child = die_on_message(&h, atom("boom"));
    let (tx, rx) = mpsc::channel();
    let h2 = vm.handle();
    let mut phase = 0;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if phase == 0 {
            phase = 1;
            cx.trap_exit(true);
            cx.link(child).unwrap();
            h2.send(child, int(0));
            // Stay in this slice until the child is dead: its EXIT is then in our
            // inbox, arrived after the slice's initial drain.
            let t0 = std::time::Instant::now();
            while h2.is_alive(child) && t0.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        while let Some(m) = cx.recv() {
            let _ = tx.send(m.to_term());
        }
        Step::Wait
    }))
    .unwrap();
    assert_eq!(recv_timeout(&rx, 5), exit_msg(child, atom("boom")));
}

/// An external pid term, as the distribution layer shows another node's process.
fn remote_pid() -> Term {
    Term::ExternalPid(vm_core::term::ExternalPid::new(
        vm_core::Atom::new("erl@host"),
        Pid::new(77, 0),
        9,
    ))
}

#[test]
fn an_exit_from_a_remote_process_names_it_when_trapped_and_kills_otherwise() {
    let vm = vm(2);
    let h = vm.handle();
    let (tx, rx) = mpsc::channel();
    let trapping = vm.spawn(watcher(tx, true, |_| {})).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(h.exit_from_remote(trapping, term(remote_pid()), term(atom("boom")), true));
    assert_eq!(
        recv_timeout(&rx, 5),
        tuple(vec![atom("EXIT"), remote_pid(), atom("boom")])
    );
    // Not trapping: normal is ignored, any other reason kills; kill by exit/2 is killed.
    let plain = h.spawn(idle()).unwrap();
    assert!(h.exit_from_remote(plain, term(remote_pid()), term(atom("normal")), true));
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.is_alive(plain));
    assert!(h.exit_from_remote(plain, term(remote_pid()), term(atom("kill")), false));
    assert!(eventually(5, || !h.is_alive(plain)));
    assert!(!h.exit_from_remote(plain, term(remote_pid()), term(atom("x")), false));
}

#[test]
fn monitor_for_watches_from_the_call_on_even_before_the_watcher_runs() {
    let vm = vm(2);
    let h = vm.handle();
    let target = die_on_message(&h, atom("its_reason"));
    let (tx, rx) = mpsc::channel();
    let w = h.spawn(forwarder(tx)).unwrap();
    let mref = h.monitor_for(w, target).expect("watcher alive");
    h.send(target, int(0));
    let down = recv_timeout(&rx, 5);
    assert_eq!(
        down,
        tuple(vec![
            atom("DOWN"),
            Term::Ref(mref),
            atom("process"),
            Term::Pid(target),
            atom("its_reason")
        ])
    );
    // A dead target: noproc at once.
    let mref = h.monitor_for(w, target).expect("watcher alive");
    let down = recv_timeout(&rx, 5);
    assert_eq!(down.as_tuple().map(|t| t[1].clone()), Some(Term::Ref(mref)));
    assert_eq!(down.as_tuple().map(|t| t[4].clone()), Some(atom("noproc")));
}
