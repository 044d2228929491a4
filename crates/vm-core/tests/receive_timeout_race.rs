//! A timed receive never sleeps on a message that arrived while it was deciding to
//! wait: `Cx::timed_out` drains the inbox (to see the timeout signal), and a message
//! it moves into the mailbox must make the following `Cx::wait` look again instead of
//! parking until the timeout (found by beamvm.tcp's 1,000-client test: one connect in
//! a few thousand waited for its whole timeout).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_core::{Cx, Fragment, Step, Term, Vm, VmConfig};

#[test]
fn a_message_drained_by_timed_out_wakes_the_receive_at_once() {
    let vm = Vm::start(VmConfig {
        schedulers: 1,
        schedulers_online: 1,
        ..VmConfig::default()
    })
    .expect("vm");
    let (tx, rx) = mpsc::channel();
    let mut started: Option<Instant> = None;
    let mut first = None;
    vm.spawn(move |cx: &mut Cx<'_>| {
        let t0 = *started.get_or_insert_with(Instant::now);
        if let Some(m) = cx.recv_where(|v| v.as_int() == Some(7)) {
            let _ = tx.send((m.to_term(), t0.elapsed(), first));
            return Step::Exit(Fragment::from_term(&Term::atom("normal")));
        }
        if first.is_none() {
            // The message arrives after the body looked and before it waits: here it
            // is sent by the process itself, as a reactor or another thread might.
            let me = cx.self_pid();
            cx.send(me, Fragment::from_term(&Term::Int(7)));
        }
        if cx.timed_out() {
            let _ = tx.send((Term::atom("timeout"), t0.elapsed(), first));
            return Step::Exit(Fragment::from_term(&Term::atom("normal")));
        }
        let step = cx.wait(Some(Duration::from_secs(30)));
        first.get_or_insert(matches!(step, Step::Yield));
        step
    })
    .expect("spawn");
    let (got, took, yielded) = rx.recv_timeout(Duration::from_secs(60)).expect("result");
    assert_eq!(got, Term::Int(7));
    assert_eq!(yielded, Some(true), "wait looked again instead of sleeping");
    assert!(
        took < Duration::from_secs(20),
        "woken only by the timeout: {took:?}"
    );
}
