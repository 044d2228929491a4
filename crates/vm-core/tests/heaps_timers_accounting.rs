//! Process heaps and GC seen through the VM, shared binaries across processes, timers,
//! names, and the accounting queries.
mod common;
use common::*;

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vm_core::term::binary_bytes;
use vm_core::{Atom, Cx, Error, Fragment, Step, Term};

/// Tests that measure the global binary counter run one at a time.
static BINARY_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn per_process_gc_runs_between_slices_keeps_live_data_and_is_reported() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let live = Term::Tuple(vec![
        Term::atom("keep"),
        Term::List((0..50).map(Term::Int).collect()),
    ]);
    let live2 = live.clone();
    let mut slices = 0;
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if slices == 0 {
                let w = cx.heap().alloc_term(&live2);
                cx.regs().push(w);
            }
            slices += 1;
            // Garbage: terms built and dropped (not in registers).
            for i in 0..200 {
                let t = Term::Tuple(vec![Term::Int(i), Term::List(vec![Term::Int(i); 20])]);
                cx.heap().alloc_term(&t);
            }
            cx.bump(4000);
            if slices == 300 {
                let w = cx.regs()[0];
                let intact = cx.heap().view(w).to_term();
                tx.send(intact).unwrap();
                return Step::Wait;
            }
            Step::Yield
        }))
        .unwrap();
    let intact = recv_timeout(&rx, 30);
    assert_eq!(intact, live, "the live term survived every collection");
    // Counters are published at the end of each slice (process_info never waits for
    // one): read them once the last slice has ended.
    assert!(eventually(5, || vm
        .process_info(p)
        .is_some_and(|i| i.status == "waiting")));
    let info = vm.process_info(p).unwrap();
    assert!(info.minor_gcs > 0, "minor collections happened: {info:?}");
    // 300 slices × 200 × ~25 words of garbage = 1.5M words; the heap stays far below.
    assert!(info.heap_size < 200_000, "heap stayed bounded: {info:?}");
    assert!(
        info.reductions > 300 * 4000,
        "GC work is charged as reductions"
    );
}

#[test]
fn a_100mb_binary_sent_to_10_processes_is_shared_and_freed_with_its_last_holder() {
    let _g = BINARY_LOCK.lock().unwrap();
    let vm = vm(2);
    let base = binary_bytes();
    let big = term(Term::binary(vec![9u8; 100 * 1024 * 1024]));
    assert!(binary_bytes() >= base + 100 * 1024 * 1024);
    let (tx, rx) = mpsc::channel();
    let mut holders = Vec::new();
    for _ in 0..10 {
        let tx = tx.clone();
        let mut held = Vec::new();
        let p = vm
            .spawn(body(move |cx: &mut Cx<'_>| {
                while let Some(m) = cx.recv() {
                    let len = m.view().as_bytes().map(|b| b.len()).unwrap_or(0);
                    held.push(m);
                    tx.send(len).unwrap();
                }
                Step::Wait
            }))
            .unwrap();
        vm.send(p, big.clone());
        holders.push(p);
    }
    for _ in 0..10 {
        assert_eq!(recv_timeout(&rx, 10), 100 * 1024 * 1024);
    }
    drop(big);
    let with_holders = binary_bytes() - base;
    assert!(
        with_holders <= 100 * 1024 * 1024 + 1024 * 1024,
        "10 holders must share one copy: {with_holders} bytes"
    );
    for (i, p) in holders.iter().enumerate() {
        vm.exit(*p, term(atom("kill")));
        if i < 9 {
            assert!(eventually(5, || !vm.is_alive(*p)));
            assert!(
                binary_bytes() >= base + 100 * 1024 * 1024,
                "still held by others"
            );
        }
    }
    assert!(
        eventually(5, || binary_bytes() < base + 1024 * 1024),
        "memory returns when the last holder dies"
    );
}

#[test]
fn send_after_delivers_late_enough_and_cancel_prevents_it() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let p = vm.spawn(forwarder(tx)).unwrap();
    let t0 = Instant::now();
    vm.send_after(Duration::from_millis(30), p, int(1));
    let r = vm.send_after(Duration::from_millis(40), p, int(2));
    let left = vm.cancel_timer(r).expect("was pending");
    assert!(left > Duration::from_millis(10) && left <= Duration::from_millis(40));
    assert_eq!(vm.cancel_timer(r), None, "cancelling twice gives None");
    assert_eq!(recv_timeout(&rx, 5), Term::Int(1));
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert!(
        rx.recv_timeout(Duration::from_millis(80)).is_err(),
        "cancelled timer never fires"
    );
}

/// Timeouts too long for the clock (`Duration::MAX`, `u64::MAX` seconds: `sleep(None)`
/// and `sleep(inf)` from Python) mean "never" (issue 8, fault 8): no panic, the timer
/// never fires, can be read and cancelled; a receive with such a timeout waits for a
/// message like one without.
#[test]
fn huge_and_infinite_timeouts_are_infinity() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let p = vm.spawn(forwarder(tx.clone())).unwrap();
    for huge in [Duration::MAX, Duration::from_secs(u64::MAX)] {
        let r = vm.send_after(huge, p, int(9));
        assert_eq!(vm.read_timer(r), Some(Duration::MAX), "time left: forever");
        assert_eq!(vm.cancel_timer(r), Some(Duration::MAX));
        assert_eq!(vm.read_timer(r), None);
    }
    let forever = vm.send_after(Duration::MAX, p, int(9));
    // A process waiting with a huge timeout, and one setting such a timer itself.
    let mut phase = 0;
    let waiter = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if phase == 0 {
                phase = 1;
                let me = cx.self_pid();
                let r = cx.send_after(Duration::from_secs(u64::MAX), me, int(7));
                assert_eq!(cx.cancel_timer(r), Some(Duration::MAX));
            }
            if let Some(m) = cx.recv() {
                tx.send(m.to_term()).unwrap();
                return Step::Exit(int(0));
            }
            if cx.timed_out() {
                tx.send(Term::atom("timed_out")).unwrap();
                return Step::Exit(int(0));
            }
            cx.wait(Some(Duration::MAX))
        }))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(vm.is_alive(waiter), "still waiting");
    vm.send(waiter, int(5));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(5));
    assert!(vm.is_alive(p));
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(vm.system_info().timers, 1, "the infinite timer to p");
    vm.exit(p, term(atom("kill")));
    assert!(
        eventually(5, || vm.system_info().timers == 0),
        "cancelled at exit"
    );
    assert_eq!(vm.cancel_timer(forever), None);
}

/// A timer aimed at a process that is not alive is cancelled at once instead of
/// lingering until its deadline (issue 8, fault 9: send_after checked liveness and
/// flagged the process after adding the timer, racing its exit).
#[test]
fn a_timer_for_a_dead_process_does_not_linger() {
    let vm = vm(1);
    let p = vm.spawn(body(|_: &mut Cx<'_>| Step::Exit(int(0)))).unwrap();
    assert!(eventually(5, || !vm.is_alive(p)));
    let r = vm.send_after(Duration::from_secs(3600), p, int(1));
    assert_eq!(
        vm.system_info().timers,
        0,
        "no timer kept for a dead process"
    );
    assert_eq!(vm.cancel_timer(r), None);
    // Racing exits: processes that end at once while timers are set for them.
    for _ in 0..200 {
        let p = vm.spawn(body(|_: &mut Cx<'_>| Step::Exit(int(0)))).unwrap();
        vm.send_after(Duration::from_secs(3600), p, int(1));
    }
    assert!(eventually(5, || vm.process_count() == 0));
    assert!(
        eventually(5, || vm.system_info().timers == 0),
        "{} timers linger",
        vm.system_info().timers
    );
}

#[test]
fn send_after_to_a_name_resolves_it_when_the_timer_fires() {
    // erlang:send_after/3 with an atom: looked up at expiry, never an error.
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let name = Atom::new("timer_named_target");
    vm.send_after_named(Duration::from_millis(40), name, int(1));
    vm.send_after_named(Duration::from_millis(5), Atom::new("timer_nobody"), int(2));
    let p = vm.spawn(forwarder(tx)).unwrap();
    vm.register(name, p).unwrap(); // registered after the timer was set
    assert_eq!(recv_timeout(&rx, 5), Term::Int(1));
    let r = vm.send_after_named(Duration::from_millis(20), name, int(3));
    assert!(vm.cancel_timer(r).is_some());
    assert!(
        rx.recv_timeout(Duration::from_millis(80)).is_err(),
        "cancelled named timer never fires; the unregistered one was dropped"
    );
}

#[test]
fn cancelled_timers_give_their_memory_back() {
    // 100,000 timers an hour away, created and cancelled, five times: the timer
    // service's memory returns each time (it grew by ~10-25 MB a cycle while cancelled
    // slots waited for their deadlines).
    let vm = vm(1);
    let p = vm.spawn(idle()).unwrap();
    let base = vm.memory().system;
    let mut after = Vec::new();
    for _ in 0..5 {
        let refs: Vec<_> = (0..100_000)
            .map(|i| vm.send_after(Duration::from_secs(3600), p, int(i)))
            .collect();
        assert!(
            vm.memory().system > base + 5_000_000,
            "100k timers are counted"
        );
        for r in refs {
            assert!(vm.cancel_timer(r).is_some());
        }
        after.push(vm.memory().system);
    }
    assert!(
        after.iter().all(|&m| m < base + 200_000),
        "system memory after each cycle {after:?}, before {base}"
    );
}

#[test]
fn memory_counts_queued_messages_in_inboxes_and_mailboxes() {
    // Before: memory() counted control blocks and heaps only, so a million queued
    // messages weighed nothing.
    let vm = vm(1);
    let base = vm.memory().processes;
    // Never receives: the messages stay in its inbox.
    let unread = vm.spawn(|_: &mut Cx<'_>| Step::Wait).unwrap();
    // Drains everything into its mailbox, takes nothing.
    let hoarder = vm
        .spawn(|cx: &mut Cx<'_>| {
            let _ = cx.recv_where(|_| false);
            Step::Wait
        })
        .unwrap();
    let msg = Term::Tuple(vec![Term::atom("data"), Term::binary(vec![7; 60])]);
    let words = Fragment::from_term(&msg).byte_size();
    for _ in 0..100_000 {
        vm.send(unread, term(msg.clone()));
        vm.send(hoarder, term(msg.clone()));
    }
    assert!(eventually(10, || vm
        .process_info(hoarder)
        .unwrap()
        .message_queue_len
        == 100_000));
    let held = 100_000 * words;
    let grown = vm.memory().processes - base;
    assert!(
        grown >= 2 * held && grown < 2 * held * 4,
        "200,000 queued messages of {words} bytes: memory().processes grew {grown}"
    );
    let info = vm.process_info(unread).unwrap();
    assert!(
        info.memory >= held,
        "process_info counts the inbox: {}",
        info.memory
    );
    vm.exit(unread, term(atom("kill")));
    vm.exit(hoarder, term(atom("kill")));
    assert!(eventually(10, || vm.memory().processes < base + 100_000));
}

#[test]
fn names_register_whereis_send_and_errors() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let p = vm.spawn(forwarder(tx)).unwrap();
    let q = vm.spawn(idle()).unwrap();
    let name = Atom::new("names_test_server");
    vm.register(name, p).unwrap();
    assert_eq!(vm.whereis(name), Some(p));
    vm.send_named(name, int(3)).unwrap();
    assert_eq!(recv_timeout(&rx, 5), Term::Int(3));
    assert!(
        matches!(vm.register(name, q), Err(Error::BadArg(_))),
        "name taken"
    );
    assert!(
        matches!(
            vm.register(Atom::new("names_test_other"), p),
            Err(Error::BadArg(_))
        ),
        "process already named"
    );
    assert!(matches!(
        vm.send_named(Atom::new("names_test_nobody"), int(0)),
        Err(Error::BadArg(_))
    ));
    vm.unregister(name).unwrap();
    assert_eq!(vm.whereis(name), None);
    assert!(matches!(vm.unregister(name), Err(Error::BadArg(_))));
    vm.exit(q, term(atom("kill")));
    assert!(eventually(5, || !vm.is_alive(q)));
    assert!(
        matches!(vm.register(name, q), Err(Error::BadArg(_))),
        "dead process"
    );
}

#[test]
fn process_info_processes_memory_and_system_info() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let mut started = false;
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !started {
                started = true;
                cx.trap_exit(true);
                let w = cx
                    .heap()
                    .alloc_term(&Term::List((0..100).map(Term::Int).collect()));
                cx.regs().push(w);
                tx.send(()).unwrap();
            }
            Step::Wait
        }))
        .unwrap();
    recv_timeout(&rx, 5);
    for i in 0..5 {
        vm.send(p, int(i));
    }
    assert!(eventually(5, || {
        let i = vm.process_info(p).unwrap();
        i.message_queue_len == 5 && i.status == "waiting"
    }));
    let info = vm.process_info(p).unwrap();
    assert_eq!(info.status, "waiting");
    assert_eq!(info.priority, "normal");
    assert!(info.trap_exit);
    assert!(info.reductions > 0);
    assert!(
        info.heap_size >= 200,
        "a 100-element list is at least 200 words"
    );
    assert!(info.memory > info.heap_size * 8);
    assert!(vm.processes().contains(&p));
    let m = vm.memory();
    assert_eq!(m.total, m.processes + m.binary + m.atom + m.system);
    assert!(m.processes >= info.memory - 1000 && m.atom > 0);
    let si = vm.system_info();
    assert_eq!(si.schedulers, 2);
    assert_eq!(si.process_limit, 262_144);
    assert_eq!(si.process_count, 1);
    assert_eq!(si.reductions_per_slice, 4000);
    let st = vm.statistics();
    assert_eq!(st.scheduler_wall_time.len(), 2);
    assert!(st.total_reductions > 0 && st.context_switches > 0);
    let top = vm.top(1, "message_queue_len").unwrap();
    assert_eq!(top, vec![(p, 5)]);
    assert!(matches!(vm.top(1, "bogus"), Err(Error::BadArg(_))));
    vm.exit(p, term(atom("kill")));
    assert!(eventually(5, || vm.process_info(p).is_none()));
}

#[test]
fn proc_window_finds_the_busiest_process_and_statistics_add_up() {
    let vm = vm(2);
    for _ in 0..50 {
        vm.spawn(idle()).unwrap();
    }
    let busy = vm
        .spawn(body(|cx: &mut Cx<'_>| {
            cx.bump(4000);
            Step::Yield
        }))
        .unwrap();
    let top = vm
        .proc_window(3, "reductions", Duration::from_millis(50))
        .unwrap();
    assert_eq!(
        top[0].0, busy,
        "the spinner used the most reductions in the window"
    );
    assert!(top[0].1 > 4000);
    assert!(matches!(
        vm.proc_window(3, "nope", Duration::ZERO),
        Err(Error::BadArg(_))
    ));
    vm.exit(busy, term(atom("kill")));
    let st = vm.statistics();
    let u = st.scheduler_utilisation();
    assert_eq!(u.len(), 2);
    assert!(u.iter().all(|x| (0.0..=1.0).contains(x)));
    assert!(st.dirty_cpu_wall_time.1 > Duration::ZERO);
}
