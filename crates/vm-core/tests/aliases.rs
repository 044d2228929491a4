//! Process aliases (OTP 24 semantics) and keyed receive with several keys
//! (docs/semantics.md, "Aliases").
mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use vm_core::{AliasMode, Cx, Key, Pid, Ref, Step, Term};

/// A process that creates an alias with `mode`, hands it to the test, and forwards
/// every message it receives; `("unalias",)` makes it unalias and reply `unaliased`.
fn alias_owner(
    mode: AliasMode,
    tx: mpsc::Sender<Term>,
    atx: mpsc::Sender<Ref>,
) -> impl vm_core::Body {
    let mut alias = None;
    body(move |cx: &mut Cx<'_>| {
        let a = *alias.get_or_insert_with(|| {
            let a = cx.alias(mode);
            let _ = atx.send(a);
            a
        });
        while let Some(m) = cx.recv() {
            let t = m.to_term();
            if t == tuple(vec![atom("unalias")]) {
                let was = cx.unalias(a);
                let _ = tx.send(tuple(vec![atom("unaliased"), atom(&was.to_string())]));
            } else {
                let _ = tx.send(t);
            }
        }
        Step::Wait
    })
}

#[test]
fn a_message_to_an_active_alias_reaches_its_creator_and_none_after_unalias() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let (atx, arx) = mpsc::channel();
    let owner = vm.spawn(alias_owner(AliasMode::Explicit, tx, atx)).unwrap();
    let a = recv_timeout(&arx, 5);
    assert_eq!(vm.alias_count(), 1);
    assert_eq!(vm.aliases_of(owner), Some(1));
    assert!(vm.send_alias(a, int(1)));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(1));
    vm.send(owner, term(tuple(vec![atom("unalias")])));
    assert_eq!(
        recv_timeout(&rx, 5),
        tuple(vec![atom("unaliased"), atom("true")])
    );
    // Stale: not an error, and nothing arrives.
    assert!(!vm.send_alias(a, int(2)));
    vm.send(owner, int(3));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(3));
    assert_eq!(vm.alias_count(), 0);
    assert_eq!(vm.aliases_of(owner), Some(0));
    // unalias of an inactive alias says so.
    vm.send(owner, term(tuple(vec![atom("unalias")])));
    assert_eq!(
        recv_timeout(&rx, 5),
        tuple(vec![atom("unaliased"), atom("false")])
    );
}

#[test]
fn a_message_in_flight_when_the_alias_is_deactivated_is_dropped() {
    // The owner unaliases while the alias message sits in its inbox, not yet handled:
    // the owner's own check drops it (the router alone could not).
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let (atx, arx) = mpsc::channel();
    let sent = Arc::new(AtomicBool::new(false));
    let s2 = sent.clone();
    let mut state = 0;
    let owner = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if state == 0 {
                state = 1;
                let a = cx.alias(AliasMode::Explicit);
                atx.send(a).unwrap();
                // Stay in this slice until the test has sent through the alias: the
                // message is in the inbox, not yet drained.
                while !s2.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                cx.unalias(a);
            }
            while let Some(m) = cx.recv() {
                tx.send(m.to_term()).unwrap();
            }
            Step::Wait
        }))
        .unwrap();
    let a = recv_timeout(&arx, 5);
    assert!(vm.send_alias(a, int(1)), "routed while the alias is active");
    sent.store(true, Ordering::Release);
    vm.send(owner, int(2));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(2));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn an_alias_of_a_dead_process_drops_messages_and_leaves_the_router() {
    let vm = vm(2);
    let (atx, arx) = mpsc::channel();
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            let a = cx.alias(AliasMode::Explicit);
            let b = cx.alias(AliasMode::Reply);
            atx.send((a, b)).unwrap();
            Step::Exit(term(atom("normal")))
        }))
        .unwrap();
    let (a, b) = recv_timeout(&arx, 5);
    assert!(eventually(5, || !vm.is_alive(p)));
    assert!(!vm.send_alias(a, int(1)));
    assert!(!vm.send_alias(b, int(1)));
    assert_eq!(vm.alias_count(), 0);
    // A reference that never was an alias: also just dropped.
    assert!(!vm.send_alias(Ref::new(), int(1)));
}

#[test]
fn a_reply_alias_takes_one_message() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let (atx, arx) = mpsc::channel();
    let owner = vm.spawn(alias_owner(AliasMode::Reply, tx, atx)).unwrap();
    let a = recv_timeout(&arx, 5);
    vm.send_alias(a, int(1));
    vm.send_alias(a, int(2));
    vm.send(owner, int(3));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(1));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(3));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert_eq!(vm.alias_count(), 0);
}

/// The caller side of a call as gen.erl builds it, with `mode` for the monitor's alias.
/// Reports what it received (in order) after `server` was told to do `what`.
fn caller(
    server: Pid,
    mode: AliasMode,
    tx: mpsc::Sender<(Ref, Term)>,
    then_demonitor: bool,
) -> impl vm_core::Body {
    let mut mref = None;
    body(move |cx: &mut Cx<'_>| {
        let r = *mref.get_or_insert_with(|| {
            let r = cx.monitor_alias(server, mode);
            let me = cx.self_pid();
            cx.send(server, term(tuple(vec![Term::Pid(me), Term::Ref(r)])));
            if then_demonitor {
                cx.demonitor(r, true);
            }
            r
        });
        while let Some(m) = cx.recv() {
            let _ = tx.send((r, m.to_term()));
        }
        Step::Wait
    })
}

/// A server that answers `{From, Alias}` twice through the alias, then dies with
/// `boom` when told.
fn twice_replier() -> impl vm_core::Body {
    body(|cx: &mut Cx<'_>| {
        while let Some(m) = cx.recv() {
            let t = m.to_term();
            if t == atom("die") {
                return Step::Exit(term(atom("boom")));
            }
            if let Term::Tuple(v) = &t {
                if let [Term::Pid(_), Term::Ref(r)] = v.as_slice() {
                    for i in 0..2 {
                        cx.send_alias(*r, term(tuple(vec![Term::Ref(*r), Term::Int(i)])));
                    }
                }
            }
        }
        Step::Wait
    })
}

#[test]
fn a_reply_demonitor_alias_takes_one_reply_and_removes_its_monitor() {
    let vm = vm(2);
    let server = vm.spawn(twice_replier()).unwrap();
    let (tx, rx) = mpsc::channel();
    let c = vm
        .spawn(caller(server, AliasMode::ReplyDemonitor, tx, false))
        .unwrap();
    let (r, first) = recv_timeout(&rx, 5);
    assert_eq!(first, tuple(vec![Term::Ref(r), Term::Int(0)]));
    vm.send(server, term(atom("die")));
    assert!(eventually(5, || !vm.is_alive(server)));
    vm.send(c, int(99));
    let (_, next) = recv_timeout(&rx, 5);
    assert_eq!(
        next,
        Term::Int(99),
        "neither the 2nd reply nor a DOWN arrives"
    );
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert_eq!(vm.alias_count(), 0);
}

#[test]
fn a_demonitor_alias_lives_until_the_down_is_delivered() {
    let vm = vm(2);
    let server = vm.spawn(twice_replier()).unwrap();
    let (tx, rx) = mpsc::channel();
    let _c = vm
        .spawn(caller(server, AliasMode::Demonitor, tx, false))
        .unwrap();
    let (r, a) = recv_timeout(&rx, 5);
    let (_, b) = recv_timeout(&rx, 5);
    assert_eq!(a, tuple(vec![Term::Ref(r), Term::Int(0)]));
    assert_eq!(b, tuple(vec![Term::Ref(r), Term::Int(1)]));
    assert_eq!(vm.alias_count(), 1);
    vm.send(server, term(atom("die")));
    let (_, down) = recv_timeout(&rx, 5);
    assert_eq!(
        down,
        tuple(vec![
            atom("DOWN"),
            Term::Ref(r),
            atom("process"),
            Term::Pid(server),
            atom("boom")
        ])
    );
    assert_eq!(vm.alias_count(), 0);
    assert!(!vm.send_alias(r, int(5)));
}

#[test]
fn demonitor_deactivates_a_monitor_alias_so_late_replies_are_dropped() {
    // gen.erl's timeout path: demonitor(Mref, [flush]) and the replies the server sends
    // afterwards (or that were in flight) never reach the caller.
    let vm = vm(2);
    let server = vm.spawn(twice_replier()).unwrap();
    let (tx, rx) = mpsc::channel();
    let c = vm
        .spawn(caller(server, AliasMode::Demonitor, tx, true))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    vm.send(c, int(7));
    let (_, m) = recv_timeout(&rx, 5);
    assert_eq!(m, Term::Int(7));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert_eq!(vm.alias_count(), 0);
    assert_eq!(
        vm.process_info(server).map(|i| i.monitored_by.len()),
        Some(0)
    );
}

#[test]
fn a_monitor_alias_on_a_dead_process_is_never_active() {
    let vm = vm(2);
    let dead = vm
        .spawn(body(|_cx: &mut Cx<'_>| Step::Exit(int(0))))
        .unwrap();
    assert!(eventually(5, || !vm.is_alive(dead)));
    let (tx, rx) = mpsc::channel();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        let r = cx.monitor_alias(dead, AliasMode::Demonitor);
        let down = cx.recv().map(|m| m.to_term());
        tx.send((r, down, cx.aliases().len())).unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    let (r, down, n) = recv_timeout(&rx, 5);
    assert_eq!(
        down,
        Some(tuple(vec![
            atom("DOWN"),
            Term::Ref(r),
            atom("process"),
            Term::Pid(dead),
            atom("noproc")
        ]))
    );
    assert_eq!(n, 0);
}

#[test]
fn a_monitor_alias_on_a_dead_process_leaves_only_an_explicit_alias_routed() {
    // monitor_alias puts the alias in the router before the Monitor signal goes (one
    // relations lock for both); on a dead target the noproc DOWN must take a monitor
    // alias out of the router again, and leave an explicit one in place.
    let vm = vm(2);
    let dead = vm
        .spawn(body(|_cx: &mut Cx<'_>| Step::Exit(int(0))))
        .unwrap();
    assert!(eventually(5, || !vm.is_alive(dead)));
    let before = vm.alias_count();
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let owner = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            let mut seen = Vec::new();
            for mode in [
                AliasMode::Demonitor,
                AliasMode::ReplyDemonitor,
                AliasMode::Explicit,
            ] {
                let r = cx.monitor_alias(dead, mode);
                let down = cx.recv().map(|m| m.to_term());
                seen.push((
                    mode,
                    down == Some(noproc_down(r, dead)),
                    cx.aliases().contains(&r),
                ));
            }
            tx.send(seen).unwrap();
            let _ = go_rx.recv_timeout(Duration::from_secs(5));
            Step::Exit(int(0))
        }))
        .unwrap();
    let seen = recv_timeout(&rx, 5);
    assert_eq!(
        seen,
        vec![
            (AliasMode::Demonitor, true, false),
            (AliasMode::ReplyDemonitor, true, false),
            (AliasMode::Explicit, true, true),
        ]
    );
    // Only the explicit alias is routed while its owner lives; none after it exits.
    assert_eq!(vm.alias_count(), before + 1);
    go_tx.send(()).unwrap();
    assert!(eventually(5, || !vm.is_alive(owner)));
    assert!(eventually(5, || vm.alias_count() == before));
}

fn noproc_down(r: Ref, dead: Pid) -> Term {
    tuple(vec![
        atom("DOWN"),
        Term::Ref(r),
        atom("process"),
        Term::Pid(dead),
        atom("noproc"),
    ])
}

#[test]
fn after_unalias_returns_no_alias_message_is_received_under_concurrent_senders() {
    // Four threads hammer the alias; the owner takes alias messages for a while,
    // unaliases, and from then on must see only plain messages.
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let (atx, arx) = mpsc::channel();
    let mut alias = None;
    let mut got = 0usize;
    let mut after = 0usize;
    let mut queued_at_unalias = 0usize;
    let owner = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            let a = *alias.get_or_insert_with(|| {
                let a = cx.alias(AliasMode::Explicit);
                atx.send(a).unwrap();
                a
            });
            while let Some(m) = cx.recv() {
                match m.to_term() {
                    Term::Int(1) if cx.aliases().is_empty() => after += 1,
                    Term::Int(1) => {
                        got += 1;
                        if got == 1000 {
                            // Already queued: kept (Erlang keeps them too). Anything
                            // that was still in the inbox is dropped by unalias.
                            queued_at_unalias = cx.message_queue_len();
                            cx.unalias(a);
                        }
                    }
                    Term::Int(2) => {
                        tx.send((got, after, queued_at_unalias)).unwrap();
                        return Step::Exit(int(0));
                    }
                    _ => {}
                }
            }
            Step::Wait
        }))
        .unwrap();
    let a = recv_timeout(&arx, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = vm.handle();
            let stop = stop.clone();
            let sent = sent.clone();
            std::thread::spawn(move || {
                // Bounded: unbounded senders on a 2-core host can outrun the owner
                // for good, and a failed assertion below must not leave them
                // spinning (the test then hung instead of failing).
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    h.send_alias(a, int(1));
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    let unaliased = eventually(30, || vm.alias_count() == 0);
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(unaliased, "the owner never took 1000 alias messages");
    vm.send(owner, int(2));
    let (got, after, queued) = recv_timeout(&rx, 10);
    assert_eq!(got, 1000);
    assert_eq!(
        after, queued,
        "only the alias messages queued before unalias may be received after it"
    );
    assert!(sent.load(Ordering::Relaxed) > 1000);
}

#[test]
fn no_alias_leaks_over_20k_lifecycles() {
    let vm = vm(2);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..20_000 {
        let d = done.clone();
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            cx.alias(AliasMode::Explicit);
            let me = cx.self_pid();
            cx.monitor_alias(me, AliasMode::Demonitor);
            d.fetch_add(1, Ordering::Relaxed);
            Step::Exit(int(0))
        }))
        .unwrap();
    }
    assert!(eventually(30, || done.load(Ordering::Relaxed) == 20_000
        && vm.process_count() == 0));
    assert_eq!(vm.alias_count(), 0);
}

// ------------------------------------------------------------- keyed receive, several keys

#[test]
fn a_receive_keyed_by_several_refs_takes_the_first_in_mailbox_order_without_scanning() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let (r1, r2) = (Ref::new(), Ref::new());
    let examined = Arc::new(AtomicUsize::new(0));
    let ex = examined.clone();
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if cx.message_queue_len() < 50_003 {
                return Step::Wait;
            }
            let keys = [Key::of_ref(r1), Key::of_ref(r2)];
            let take = |cx: &mut Cx<'_>| {
                cx.recv_keyed_any(&keys, |v| {
                    ex.fetch_add(1, Ordering::Relaxed);
                    v.tuple_get(0).and_then(|e| e.as_atom()).map(|a| a.as_str()) != Some("skip")
                })
                .map(|m| m.to_term())
            };
            let a = take(cx);
            let b = take(cx);
            let c = take(cx);
            tx.send((a, b, c, ex.load(Ordering::Relaxed), cx.message_queue_len()))
                .unwrap();
            Step::Exit(int(0))
        }))
        .unwrap();
    for i in 0..50_000 {
        vm.send(p, term(tuple(vec![atom("noise"), Term::Int(i)])));
    }
    // Arrival order: r2's DOWN-like message first, then a rejected one, then r1's reply.
    let down = tuple(vec![atom("DOWN"), Term::Ref(r2), atom("process")]);
    let skipped = tuple(vec![atom("skip"), Term::Ref(r1)]);
    let reply = tuple(vec![Term::Ref(r1), Term::Int(42)]);
    vm.send(p, term(down.clone()));
    vm.send(p, term(skipped));
    vm.send(p, term(reply.clone()));
    let (a, b, c, n, left) = recv_timeout(&rx, 30);
    assert_eq!(a, Some(down));
    assert_eq!(b, Some(reply));
    assert_eq!(c, None);
    assert!(n <= 10, "examined {n} messages");
    assert_eq!(left, 50_001);
}

#[test]
fn a_receive_keyed_by_several_keys_in_a_short_queue_keeps_mailbox_order() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let (r1, r2) = (Ref::new(), Ref::new());
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if cx.message_queue_len() < 4 {
                return Step::Wait;
            }
            let keys = [Key::of_ref(r1), Key::of_ref(r2), Key::of_ref(r1)];
            let mut out = Vec::new();
            while let Some(m) = cx.recv_keyed_any(&keys, |_| true) {
                out.push(m.to_term());
            }
            tx.send((out, cx.message_queue_len())).unwrap();
            Step::Exit(int(0))
        }))
        .unwrap();
    let m = |r: Ref, i| tuple(vec![Term::Ref(r), Term::Int(i)]);
    vm.send(p, term(m(r2, 1)));
    vm.send(p, int(0));
    vm.send(p, term(m(r1, 2)));
    vm.send(p, term(m(r2, 3)));
    let (out, left) = recv_timeout(&rx, 5);
    assert_eq!(out, vec![m(r2, 1), m(r1, 2), m(r2, 3)]);
    assert_eq!(left, 1);
}

#[test]
fn a_long_selective_scan_is_charged_as_reductions() {
    // BEAM's loop_rec: each message a receive examines costs a reduction.
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if cx.message_queue_len() < 10_000 {
                return Step::Wait;
            }
            let before = cx.budget_left();
            let none = cx.recv_where(|v| v.as_atom().is_some());
            tx.send((none.is_none(), before - cx.budget_left()))
                .unwrap();
            Step::Exit(int(0))
        }))
        .unwrap();
    for i in 0..10_000 {
        vm.send(p, int(i));
    }
    let (none, charged) = recv_timeout(&rx, 10);
    assert!(none);
    assert!(charged >= 10_000, "charged {charged}");
}
