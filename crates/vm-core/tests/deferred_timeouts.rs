//! Receive timeouts armed late (scheduler/deferred.rs): a long timeout gets a timer only
//! if its wait outlives about a millisecond, yet every timeout still fires on time,
//! including for a process whose scheduler is stuck in a long slice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vm_core::{Cx, Fragment, Pid, Step, Term, Vm, VmConfig};

fn vm(schedulers: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers,
        schedulers_online: schedulers,
        ..VmConfig::default()
    })
    .expect("vm")
}

fn normal() -> Step {
    Step::Exit(Fragment::from_term(&Term::atom("normal")))
}

/// A process that waits with `timeout` and no message ever comes: it reports how long
/// after its first slice the timeout came.
fn waiter(timeout: Duration, tx: mpsc::Sender<Duration>) -> impl FnMut(&mut Cx<'_>) -> Step {
    let mut t0: Option<Instant> = None;
    move |cx: &mut Cx<'_>| {
        let t = *t0.get_or_insert_with(Instant::now);
        if cx.recv().is_some() {
            return normal();
        }
        if cx.timed_out() {
            let _ = tx.send(t.elapsed());
            return normal();
        }
        cx.wait(Some(timeout))
    }
}

#[test]
fn a_long_timeout_with_no_message_fires_on_time() {
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    vm.spawn(waiter(Duration::from_millis(60), tx))
        .expect("spawn");
    let took = rx.recv_timeout(Duration::from_secs(30)).expect("timed out");
    assert!(took >= Duration::from_millis(60), "early: {took:?}");
    assert!(took < Duration::from_secs(10), "far too late: {took:?}");
    assert_eq!(vm.system_info().timers, 0, "the fired timer is gone");
}

#[test]
fn waits_answered_at_once_arm_no_timer() {
    // A client calls an echo server 20,000 times, each reply awaited with a 5 s
    // timeout (gen_server.call's). Before, each call armed and removed a timer; now a
    // wait that ends within a millisecond never arms one. The server reads the VM's
    // live timer count at each request, while the client waits: it is 0 unless the OS
    // descheduled the thread for a millisecond mid-call (a few times on a loaded
    // machine, never most).
    let vm = vm(1);
    let (tx, rx) = mpsc::channel();
    let seen_armed = Arc::new(AtomicUsize::new(0));
    let seen = seen_armed.clone();
    let handle = vm.handle();
    let server = vm
        .spawn(move |cx: &mut Cx<'_>| {
            while let Some(m) = cx.recv() {
                // The client waits for this request's reply now.
                if handle.system_info().timers > 0 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                let t = m.to_term();
                if let Term::Tuple(v) = &t {
                    if let [Term::Pid(from), n] = &v[..] {
                        cx.send(*from, Fragment::from_term(n));
                    }
                }
            }
            cx.wait(None)
        })
        .expect("server");
    let mut n = 0i64;
    let mut sent = false;
    vm.spawn(move |cx: &mut Cx<'_>| loop {
        let me: Pid = cx.self_pid();
        if !sent {
            let msg = Term::Tuple(vec![Term::Pid(me), Term::Int(n)]);
            cx.send(server, Fragment::from_term(&msg));
            sent = true;
        }
        match cx.recv() {
            Some(_) => {
                n += 1;
                sent = false;
                if n == 20_000 {
                    let _ = tx.send(());
                    return normal();
                }
            }
            None => {
                if cx.timed_out() {
                    panic!("a reply took 5 s");
                }
                return cx.wait(Some(Duration::from_secs(5)));
            }
        }
    })
    .expect("client");
    rx.recv_timeout(Duration::from_secs(120))
        .expect("calls done");
    let armed = seen_armed.load(Ordering::Relaxed);
    assert!(
        armed < 2_000,
        "{armed} of 20,000 replies found a timer armed"
    );
}

#[test]
fn a_stuck_scheduler_does_not_hold_back_the_timeouts_it_deferred() {
    // The waiter starts its 100 ms wait on the scheduler that its parent then blocks
    // for 3 s in one slice. The other scheduler, woken by the watchdog, arms the
    // waiter's timer: the timeout comes on time, not after the stuck slice.
    let vm = vm(2);
    let (tx, rx) = mpsc::channel();
    let mut step = 0;
    let mut tx = Some(tx);
    vm.spawn(move |cx: &mut Cx<'_>| {
        step += 1;
        match step {
            1 => {
                let tx = tx.take().expect("first slice");
                cx.spawn(waiter(Duration::from_millis(100), tx))
                    .expect("spawn waiter");
                // Yield: the waiter (in this scheduler's hand-off slot) runs first.
                Step::Yield
            }
            2 => {
                std::thread::sleep(Duration::from_secs(3)); // a long C call, say
                normal()
            }
            _ => normal(),
        }
    })
    .expect("spawn");
    let took = rx.recv_timeout(Duration::from_secs(30)).expect("timed out");
    assert!(took >= Duration::from_millis(100), "early: {took:?}");
    assert!(
        took < Duration::from_millis(2_500),
        "held back by the stuck slice: {took:?}"
    );
}
