//! Mailboxes: arrival order, selective receive with a save position, timeouts,
//! per-sender ordering under stress, and keyed receives that do not scan.
mod common;
use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vm_core::process::mailbox::KeyElem;
use vm_core::{Atom, Cx, Key, Ref, Step, Term, Vm};

/// Spawns a collector that, once it has `n` messages queued, runs `f` once and exits.
fn when_queued<F>(vm: &Vm, n: usize, mut f: F) -> vm_core::Pid
where
    F: FnMut(&mut Cx<'_>) + Send + 'static,
{
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if cx.message_queue_len() >= n {
            f(cx);
            return Step::Exit(int(0));
        }
        Step::Wait
    }))
    .unwrap()
}

#[test]
fn receive_in_arrival_order() {
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let p = when_queued(&vm, 100, move |cx| {
        let mut got = Vec::new();
        while let Some(m) = cx.recv() {
            got.push(m.view().as_int().unwrap());
        }
        tx.send(got).unwrap();
    });
    for i in 0..100 {
        vm.send(p, int(i));
    }
    assert_eq!(recv_timeout(&rx, 5), (0..100).collect::<Vec<_>>());
}

#[test]
fn selective_receive_takes_first_match_and_keeps_the_rest_in_order() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let p = when_queued(&vm, 10, move |cx| {
        let even = cx.recv_where(|v| v.as_int().is_some_and(|i| i % 2 == 0 && i > 4));
        let rest: Vec<i64> = std::iter::from_fn(|| cx.recv())
            .map(|m| m.view().as_int().unwrap())
            .collect();
        tx.send((even.map(|m| m.view().as_int().unwrap()), rest))
            .unwrap();
    });
    for i in 0..10 {
        vm.send(p, int(i));
    }
    let (even, rest) = recv_timeout(&rx, 5);
    assert_eq!(even, Some(6));
    assert_eq!(rest, vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
}

#[test]
fn selective_receive_does_not_rescan_rejected_messages() {
    let vm = vm(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let (tx, rx) = mpsc::channel();
    let mut seen_rounds = Vec::new();
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            let before = c2.load(Ordering::Relaxed);
            let got = cx.recv_where(|v| {
                c2.fetch_add(1, Ordering::Relaxed);
                v.eq_term(&Term::atom("wanted"))
            });
            seen_rounds.push(c2.load(Ordering::Relaxed) - before);
            if got.is_some() {
                tx.send(seen_rounds.clone()).unwrap();
                return Step::Exit(int(0));
            }
            Step::Wait
        }))
        .unwrap();
    // Three batches of unrelated messages, each waking the receiver.
    for batch in 0..3 {
        for i in 0..50 {
            vm.send(p, int(batch * 100 + i));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    vm.send(p, term(Term::atom("wanted")));
    let rounds = recv_timeout(&rx, 5);
    // Each wake-up examines only what arrived since the previous one.
    let total: usize = rounds.iter().sum();
    assert_eq!(total, 151, "each message examined exactly once: {rounds:?}");
}

/// Waits for one message with a timeout; reports "message" or "timeout".
fn receive_or_timeout(
    ms: u64,
    tx: mpsc::Sender<&'static str>,
) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    move |cx: &mut Cx<'_>| {
        if cx.recv().is_some() {
            tx.send("message").unwrap();
            return Step::Exit(int(0));
        }
        if cx.timed_out() {
            tx.send("timeout").unwrap();
            return Step::Exit(int(0));
        }
        cx.wait(Some(Duration::from_millis(ms)))
    }
}

#[test]
fn receive_timeout_fires_and_a_message_cancels_it() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    vm.spawn(receive_or_timeout(50, tx)).unwrap();
    assert_eq!(recv_timeout(&rx, 5), "timeout");
    assert!(t0.elapsed() >= Duration::from_millis(50));

    let (tx, rx) = mpsc::channel();
    let p = vm.spawn(receive_or_timeout(500, tx)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    vm.send(p, int(1));
    assert_eq!(recv_timeout(&rx, 5), "message");
    assert_eq!(
        vm.system_info().timers,
        0,
        "the receive timer was cancelled"
    );
}

#[test]
fn message_queue_len_counts_queued_messages() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if cx.message_queue_len() == 25 {
                cx.recv();
                tx.send(cx.message_queue_len()).unwrap();
                return Step::Exit(int(0));
            }
            Step::Wait
        }))
        .unwrap();
    for i in 0..25 {
        vm.send(p, int(i));
    }
    assert_eq!(recv_timeout(&rx, 5), 24);
}

/// 8 sender threads × 100,000 numbered messages: each sender's sequence arrives in
/// order and nothing is lost.
#[test]
fn per_sender_order_under_stress() {
    const SENDERS: i64 = 8;
    const N: i64 = 100_000;
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let mut next = vec![0i64; SENDERS as usize];
    let mut total = 0;
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            while let Some(m) = cx.recv() {
                let v = m.view();
                let s = v.tuple_get(0).and_then(|e| e.as_int()).unwrap() as usize;
                let i = v.tuple_get(1).and_then(|e| e.as_int()).unwrap();
                if i != next[s] {
                    tx.send(Err(format!("sender {s}: got {i}, expected {}", next[s])))
                        .unwrap();
                    return Step::Exit(int(1));
                }
                next[s] += 1;
                total += 1;
                if total == SENDERS * N {
                    tx.send(Ok(total)).unwrap();
                    return Step::Exit(int(0));
                }
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
            Step::Wait
        }))
        .unwrap();
    let hs: Vec<_> = (0..SENDERS)
        .map(|s| {
            let h = vm.handle();
            std::thread::spawn(move || {
                for i in 0..N {
                    h.send(p, term(Term::Tuple(vec![Term::Int(s), Term::Int(i)])));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(recv_timeout(&rx, 60), Ok(SENDERS * N));
}

/// With 50,000 unmatched messages queued, a receive keyed by a fresh reference or by
/// a tag examines only candidates (a few), not the queue.
#[test]
fn keyed_receive_does_not_scan_unrelated_messages() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let r = Ref::new();
    let examined = Arc::new(AtomicUsize::new(0));
    let ex = examined.clone();
    let p = when_queued(&vm, 50_002, move |cx| {
        let by_ref = cx.recv_keyed(Key::of_ref(r), |_| {
            ex.fetch_add(1, Ordering::Relaxed);
            true
        });
        let by_ref_n = ex.swap(0, Ordering::Relaxed);
        let by_tag = cx.recv_keyed(Key::Atom(vm_core::Atom::new("rare_tag").index()), |_| {
            ex.fetch_add(1, Ordering::Relaxed);
            true
        });
        let by_tag_n = ex.swap(0, Ordering::Relaxed);
        let missing = cx.recv_keyed(Key::Atom(vm_core::Atom::new("absent_tag").index()), |_| {
            ex.fetch_add(1, Ordering::Relaxed);
            true
        });
        tx.send((
            by_ref.map(|m| m.to_term()),
            by_ref_n,
            by_tag.map(|m| m.to_term()),
            by_tag_n,
            missing.is_none(),
            ex.load(Ordering::Relaxed),
            cx.message_queue_len(),
        ))
        .unwrap();
    });
    for i in 0..50_000 {
        vm.send(
            p,
            term(Term::Tuple(vec![Term::atom("noise"), Term::Int(i)])),
        );
    }
    let reply = Term::Tuple(vec![Term::atom("reply"), Term::Ref(r), Term::Int(42)]);
    vm.send(p, term(reply.clone()));
    let tagged = Term::Tuple(vec![Term::atom("rare_tag"), Term::Int(7)]);
    vm.send(p, term(tagged.clone()));
    let (a, an, b, bn, missing, mn, left) = recv_timeout(&rx, 30);
    assert_eq!(a, Some(reply));
    assert_eq!(b, Some(tagged));
    assert!(missing);
    assert!(
        an <= 1 && bn <= 1 && mn == 0,
        "examined {an}, {bn}, {mn} messages"
    );
    assert_eq!(left, 50_000);
}

/// The work behind the rule above, counted rather than timed: with 50,000 unrelated
/// messages queued, keyed takes by reference and by tag examine a handful of messages,
/// where the same receive done by scanning examines them all (so a linear scan would
/// fail this test).
#[test]
fn keyed_take_examines_candidates_not_the_queue() {
    use vm_core::process::mailbox::{Mailbox, INDEX_THRESHOLD};
    let mut mb = Mailbox::default();
    for i in 0..50_000 {
        mb.push(term(Term::Tuple(vec![Term::atom("noise"), Term::Int(i)])));
    }
    let r = Ref::new();
    let reply = Term::Tuple(vec![Term::atom("reply"), Term::Ref(r), Term::Int(42)]);
    mb.push(term(reply.clone()));
    let tagged = Term::Tuple(vec![Term::atom("rare_tag"), Term::Int(7)]);
    mb.push(term(tagged.clone()));

    let before = mb.examined();
    let got = mb
        .take_keyed(Key::of_ref(r), &mut |_| true)
        .map(|m| m.to_term());
    assert_eq!(got, Some(reply));
    let tag = Key::Atom(vm_core::Atom::new("rare_tag").index());
    let got = mb.take_keyed(tag, &mut |_| true).map(|m| m.to_term());
    assert_eq!(got, Some(tagged));
    let absent = Key::Atom(vm_core::Atom::new("absent_tag").index());
    assert!(mb.take_keyed(absent, &mut |_| true).is_none());
    let keyed = mb.examined() - before;
    // The unindexed prefix (the first INDEX_THRESHOLD arrivals) is scanned three
    // times, plus one candidate each for the two hits.
    assert!(
        keyed <= 3 * INDEX_THRESHOLD as u64 + 2,
        "keyed takes examined {keyed} messages"
    );

    // The same search for an absent key done by scanning: every queued message.
    let before = mb.examined();
    assert!(mb
        .take_where(&mut |v| v.tuple_get(0).and_then(|e| e.as_atom())
            == vm_core::Atom::existing("absent_tag"))
        .is_none());
    assert_eq!(
        mb.examined() - before,
        50_000,
        "a scan examines the whole queue"
    );
    assert_eq!(mb.len(), 50_000);
}

#[test]
fn a_text_tag_is_indexed_like_an_atom_tag() {
    // A Python receive for ("job", ANY) keys on the text tag: with 50,000 unrelated
    // messages (binary and text tags alike) it examines only the one it takes.
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let examined = Arc::new(AtomicUsize::new(0));
    let ex = examined.clone();
    let p = when_queued(&vm, 50_001, move |cx| {
        let pattern = [Term::str("job")];
        let key = Key::for_pattern(pattern.iter().map(KeyElem::of_term)).unwrap();
        let got = cx.recv_keyed(key, |v| {
            ex.fetch_add(1, Ordering::Relaxed);
            v.tuple_get(0).and_then(|t| t.as_str()) == Some("job")
        });
        tx.send((got.map(|m| m.to_term()), ex.load(Ordering::Relaxed)))
            .unwrap();
    });
    for i in 0..50_000 {
        let tag = if i % 2 == 0 {
            Term::binary(b"job".to_vec())
        } else {
            Term::str("noise")
        };
        vm.send(p, term(Term::Tuple(vec![tag, Term::Int(i)])));
    }
    let job = Term::Tuple(vec![Term::str("job"), Term::Int(7)]);
    vm.send(p, term(job.clone()));
    let (got, n) = recv_timeout(&rx, 30);
    assert_eq!(got, Some(job));
    assert!(n <= 1, "examined {n} messages");
}

#[test]
fn a_bare_text_or_atom_message_is_found_by_key() {
    // receive("stop") in Python: the message is a bare text, not a tuple. With 50,000
    // tuples queued it is found by its key (the one it would have as a tag), and a bare
    // atom too, without examining the tuples.
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let examined = Arc::new(AtomicUsize::new(0));
    let ex = examined.clone();
    let p = when_queued(&vm, 50_002, move |cx| {
        let mut got = Vec::new();
        for want in [Term::str("stop"), Term::Atom(Atom::OK)] {
            let key = Key::of_bare(KeyElem::of_term(&want)).unwrap();
            let m = cx.recv_keyed(key, |v| {
                ex.fetch_add(1, Ordering::Relaxed);
                v.eq_term(&want)
            });
            got.push(m.map(|m| m.to_term()));
        }
        tx.send((got, ex.load(Ordering::Relaxed))).unwrap();
    });
    for i in 0..50_000 {
        // Tuples tagged with the same text and atom: a different key policy position.
        let tag = if i % 2 == 0 {
            Term::str("stop")
        } else {
            Term::Atom(Atom::OK)
        };
        vm.send(p, term(Term::Tuple(vec![tag, Term::Int(i)])));
    }
    vm.send(p, term(Term::Atom(Atom::OK)));
    vm.send(p, term(Term::str("stop")));
    let (got, n) = recv_timeout(&rx, 30);
    assert_eq!(
        got,
        vec![Some(Term::str("stop")), Some(Term::Atom(Atom::OK))]
    );
    // Bare keys are apart from tag keys: the tuples tagged "stop" and ok are not
    // examined.
    assert!(n <= 2, "examined {n} messages");
}

#[test]
fn keyed_receive_in_a_short_queue_finds_the_match() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let r = Ref::new();
    let p = when_queued(&vm, 3, move |cx| {
        let m = cx.recv_keyed(Key::of_ref(r), |_| true).map(|m| m.to_term());
        tx.send((m, cx.recv().map(|m| m.to_term()))).unwrap();
    });
    vm.send(p, int(1));
    vm.send(p, term(Term::Tuple(vec![Term::Ref(r), Term::Int(2)])));
    vm.send(p, int(3));
    let (m, first) = recv_timeout(&rx, 5);
    assert_eq!(m, Some(Term::Tuple(vec![Term::Ref(r), Term::Int(2)])));
    assert_eq!(first, Some(Term::Int(1)));
}

/// A process that only takes messages in arrival order never pays for the index,
/// however long its queue grows (a fan-in sink: B4); one that receives by key gets
/// the queue indexed at its first keyed receive, and when it goes back to plain
/// receives the index is dropped once stale entries dominate, so a steady flood keeps
/// it bounded.
#[test]
fn only_a_process_that_receives_by_key_has_its_queue_indexed() {
    use vm_core::process::mailbox::{Mailbox, INDEX_THRESHOLD};
    let mut mb = Mailbox::default();
    for i in 0..10_000 {
        mb.push(term(Term::Tuple(vec![Term::atom("job"), Term::Int(i)])));
        if i % 3 == 0 {
            mb.pop_front();
        }
    }
    assert!(!mb.is_indexed(), "arrival-order takes only: no index");
    let live = mb.len();
    let r = Ref::new();
    mb.push(term(Term::Tuple(vec![Term::Ref(r), Term::Int(1)])));
    assert!(mb.take_keyed(Key::of_ref(r), &mut |_| true).is_some());
    assert!(
        mb.is_indexed(),
        "a keyed receive on a long queue indexes it"
    );
    assert!(
        mb.examined() <= 1,
        "the first keyed receive found its message through the index"
    );
    // Back to plain receives under a steady flood: the index goes once it is mostly
    // stale, and its size stays bounded meanwhile.
    let mut peak = 0;
    for i in 0..50_000 {
        mb.push(term(Term::Tuple(vec![Term::atom("job"), Term::Int(i)])));
        mb.pop_front();
        peak = peak.max(mb.heap_bytes());
    }
    assert_eq!(mb.len(), live);
    assert!(!mb.is_indexed(), "plain receives dropped the stale index");
    assert!(
        peak < 64 * (live + 4 * INDEX_THRESHOLD) + (1 << 20),
        "peak {peak} bytes"
    );
    // A keyed receive again indexes the whole queue again: still found by key.
    let tag = Term::atom("rare");
    mb.push(term(Term::Tuple(vec![tag.clone(), Term::Int(2)])));
    let key = Key::Atom(vm_core::Atom::new("rare").index());
    let before = mb.examined();
    assert!(mb.take_keyed(key, &mut |_| true).is_some());
    assert!(mb.examined() - before <= 1);
}
