//! Dirty pools and the long-schedule watchdog.
mod common;
use common::*;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vm_core::{Cx, DirtyKind, Step, Term};

#[test]
fn a_process_killed_during_its_dirty_call_is_cleaned_up_and_the_thread_reused() {
    let vm = vm_pools(1, 1, 1);
    let payload = Arc::new(());
    let p2 = payload.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let mut once = false;
    let victim = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !once {
                once = true;
                let p = p2.clone();
                let st = started_tx.clone();
                return cx
                    .dirty(
                        DirtyKind::Io,
                        Box::new(move || {
                            st.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(1000));
                            Box::new(p)
                        }),
                    )
                    .unwrap();
            }
            Step::Wait
        }))
        .unwrap();
    recv_timeout(&started_rx, 5);
    let t0 = Instant::now();
    vm.exit(victim, term(atom("kill")));
    assert!(eventually(5, || !vm.is_alive(victim)));
    assert!(
        // The job runs 1 s: well under that is "without waiting", even when loaded.
        t0.elapsed() < Duration::from_millis(700),
        "killed without waiting for the job"
    );
    // The job's result (holding `payload`) is dropped once the job ends.
    assert!(
        eventually(5, || Arc::strong_count(&payload) == 1),
        "result leaked"
    );
    // The single IO thread is reused.
    let (tx, rx) = mpsc::channel();
    vm.spawn(dirty_caller(DirtyKind::Io, 10, tx)).unwrap();
    assert_eq!(recv_timeout(&rx, 5).0, 20);
}

#[test]
fn a_panicking_dirty_job_returns_an_error_and_the_pool_survives() {
    let vm = vm_pools(1, 1, 1);
    let (tx, rx) = mpsc::channel();
    let mut once = false;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if !once {
            once = true;
            return cx
                .dirty(DirtyKind::Cpu, Box::new(|| panic!("dirty boom")))
                .unwrap();
        }
        match cx.dirty_result() {
            None => Step::Wait,
            Some(r) => {
                tx.send(r.err()).unwrap();
                Step::Exit(int(0))
            }
        }
    }))
    .unwrap();
    assert_eq!(recv_timeout(&rx, 5).as_deref(), Some("dirty boom"));
    let (tx, rx) = mpsc::channel();
    vm.spawn(dirty_caller(DirtyKind::Cpu, 1, tx)).unwrap();
    assert_eq!(recv_timeout(&rx, 5).0, 2);
}

/// A slice stuck for 300 ms: the process it just woke (in the stuck scheduler's
/// hand-off slot) is taken over by the other scheduler within a few ms, and the
/// long_schedule event reaches the system monitor.
#[test]
fn watchdog_hands_a_stuck_schedulers_work_to_the_others_and_reports_it() {
    let vm = vm(2);
    let (mtx, mrx) = mpsc::channel();
    let monitor = vm.spawn(forwarder(mtx)).unwrap();
    assert_eq!(vm.set_system_monitor(Some(monitor)), None);
    let (ttx, trx) = mpsc::channel();
    let waker = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if let Some(m) = cx.recv() {
                let sent = m.view().as_int().unwrap() as u64;
                ttx.send(sent).unwrap();
                return Step::Exit(int(0));
            }
            Step::Wait
        }))
        .unwrap();
    let base = Instant::now();
    let mut once = false;
    let hog = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if once {
                return Step::Exit(int(0));
            }
            once = true;
            let sent = base.elapsed().as_micros() as i64;
            cx.send(waker, int(sent));
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(300) {
                std::hint::spin_loop();
            }
            Step::Yield
        }))
        .unwrap();
    let sent_us = recv_timeout(&trx, 5);
    let got_us = base.elapsed().as_micros() as u64;
    let delay = Duration::from_micros(got_us - sent_us);
    // The hog holds its scheduler 300 ms: a woken process left behind it would wait
    // that long; moved by the watchdog it waits a few ms (generous for a loaded host).
    assert!(
        delay < Duration::from_millis(150),
        "woken process waited {delay:?}"
    );
    match recv_timeout(&mrx, 5) {
        Term::Tuple(v) => {
            assert_eq!(v[0], atom("monitor"));
            assert_eq!(v[1], Term::Pid(hog));
            assert_eq!(v[2], atom("long_schedule"));
            let Term::List(info) = &v[3] else {
                panic!("info list")
            };
            let Term::Tuple(t) = &info[0] else {
                panic!("timeout entry")
            };
            assert!(matches!(t[1], Term::Int(ms) if ms >= 290), "reported {t:?}");
        }
        other => panic!("unexpected {other}"),
    }
    let st = vm.statistics();
    assert!(st
        .longest_slice
        .iter()
        .any(|d| *d >= Duration::from_millis(290)));
}
