//! A panic anywhere in a slice or in process exit ends at most that process, never a
//! scheduler thread or a pool thread (issue 8, fault 2). One scheduler, so a dead
//! scheduler thread would stop everything that follows; each case then checks that the
//! VM still runs processes, and shutdown completes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vm_core::{Atom, Body, Cx, DirtyKind, Fragment, Pid, Step, Term, Vm, VmConfig, Word};

fn vm1() -> Vm {
    Vm::start(VmConfig {
        schedulers: 1,
        schedulers_online: 1,
        dirty_cpu: 1,
        dirty_io: 1,
        long_schedule: Duration::from_millis(10),
        ..VmConfig::default()
    })
    .expect("vm starts")
}

/// Spawns `victim` under a monitor and returns the reason of its DOWN.
fn down_reason(vm: &Vm, victim: impl Body) -> Term {
    let (tx, rx) = mpsc::channel();
    let victim = Arc::new(std::sync::Mutex::new(Some(
        Box::new(victim) as Box<dyn Body>
    )));
    let mut watching = false;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if !watching {
            watching = true;
            let b = victim.lock().unwrap().take().unwrap();
            let opts = vm_core::SpawnOpts {
                monitor: true,
                ..vm_core::SpawnOpts::default()
            };
            cx.spawn_opts(b, opts).expect("spawn victim");
        }
        if let Some(m) = cx.recv() {
            if let Term::Tuple(v) = m.to_term() {
                tx.send(v[4].clone()).unwrap();
                return Step::Exit(int(0));
            }
        }
        Step::Wait
    }))
    .unwrap();
    recv_timeout(&rx, 10)
}

/// The VM still runs processes: a message round trip through a new one.
fn assert_alive(vm: &Vm) {
    let (tx, rx) = mpsc::channel();
    let p = vm.spawn(forwarder(tx)).expect("spawn after the panic");
    vm.send(p, int(42));
    assert_eq!(
        recv_timeout(&rx, 5),
        Term::Int(42),
        "the scheduler survived"
    );
    vm.exit(p, term(Term::Atom(Atom::KILL)));
}

fn is_panic_reason(t: &Term, msg: &str) -> bool {
    match t {
        Term::Tuple(v) if v.len() == 2 => {
            v[0] == Term::Atom(Atom::PANIC)
                && matches!(&v[1], Term::Binary(b) if String::from_utf8_lossy(b.as_slice()).contains(msg))
        }
        _ => false,
    }
}

fn finish(mut vm: Vm) {
    assert_eq!(vm.shutdown_within(Some(Duration::from_secs(5))), 0);
}

#[test]
fn a_panic_in_resume_is_the_exit_reason() {
    let vm = vm1();
    let r = down_reason(&vm, body(|_: &mut Cx<'_>| -> Step { panic!("boom") }));
    assert!(is_panic_reason(&r, "boom"), "reason {r}");
    assert_alive(&vm);
    finish(vm);
}

/// A body whose `terminate` (cleanup when killed) and `Drop` both panic.
struct BadCleanup;

impl Body for BadCleanup {
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        while cx.recv().is_some() {}
        Step::Wait
    }
    fn terminate(&mut self, _: &mut Cx<'_>, _: &Fragment) {
        panic!("terminate failed");
    }
}

impl Drop for BadCleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop failed");
        }
    }
}

#[test]
fn panics_in_terminate_and_drop_at_exit_end_only_that_process() {
    let vm = vm1();
    let (tx, rx) = mpsc::channel();
    let watcher = vm.spawn(forwarder(tx)).unwrap();
    let victim = vm.spawn(BadCleanup).unwrap();
    // Linked and trapping: the watcher sees the reason of the kill.
    let mut done = false;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if !done {
            done = true;
            cx.monitor(victim);
            cx.exit(victim, term(Term::Atom(Atom::KILL)));
        }
        if let Some(m) = cx.recv() {
            cx.send(watcher, m);
            return Step::Exit(int(0));
        }
        Step::Wait
    }))
    .unwrap();
    match recv_timeout(&rx, 5) {
        Term::Tuple(v) => assert_eq!(v[4], Term::Atom(Atom::KILLED)),
        other => panic!("unexpected {other}"),
    }
    // Dropped at a normal exit too.
    let r = down_reason(&vm, {
        let mut b = Some(BadCleanup);
        body(move |_: &mut Cx<'_>| {
            drop(b.take());
            Step::Exit(term(Term::Atom(Atom::NORMAL)))
        })
    });
    // The body's own Drop ran inside its resume: that is a panic in the body.
    assert!(is_panic_reason(&r, "drop failed"), "reason {r}");
    let r = down_reason(&vm, {
        let mut first = true;
        let _held = BadCleanup;
        body(move |_: &mut Cx<'_>| {
            let _ = &_held;
            if first {
                first = false;
                return Step::Yield;
            }
            Step::Exit(term(Term::Atom(Atom::NORMAL)))
        })
    });
    assert_eq!(r, Term::Atom(Atom::NORMAL), "Drop after the exit signals");
    assert_alive(&vm);
    finish(vm);
}

/// A body whose label panics, in a slice long enough for a long_schedule report.
struct BadLabel(bool);

impl Body for BadLabel {
    fn resume(&mut self, _: &mut Cx<'_>) -> Step {
        if self.0 {
            return Step::Exit(term(Term::Atom(Atom::NORMAL)));
        }
        self.0 = true;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(40) {
            std::hint::spin_loop();
        }
        Step::Yield
    }
    fn label(&self) -> String {
        panic!("label failed")
    }
}

#[test]
fn a_panic_in_label_during_a_long_schedule_report_is_contained() {
    let vm = vm1();
    let (tx, rx) = mpsc::channel();
    let mon = vm.spawn(forwarder(tx)).unwrap();
    vm.set_system_monitor(Some(mon));
    let r = down_reason(&vm, BadLabel(false));
    assert_eq!(r, Term::Atom(Atom::NORMAL));
    // (Other slices may be reported too on a loaded machine: look for this one.)
    let want = Term::Tuple(vec![
        Term::Atom(Atom::IN),
        Term::binary(b"(label panicked)".to_vec()),
    ]);
    loop {
        match recv_timeout(&rx, 5) {
            Term::Tuple(v) => {
                assert_eq!(v[2], Term::Atom(Atom::LONG_SCHEDULE));
                let Term::List(info) = &v[3] else {
                    panic!("info")
                };
                if info[1] == want {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_alive(&vm);
    finish(vm);
}

/// A body that breaks the heap contract (it keeps a heap word across a GC outside its
/// registers, then roots it): the GC between its slices panics on the stale word.
#[test]
fn a_panic_in_gc_ends_only_that_process() {
    let vm = vm1();
    let mut step = 0;
    let mut stale = None;
    let r = down_reason(
        &vm,
        body(move |cx: &mut Cx<'_>| {
            step += 1;
            let heap = cx.heap();
            if step == 1 {
                // Far into the young generation, then garbage: reclaimed by the GC
                // after this slice.
                heap.alloc_term(&Term::Tuple((0..50_000).map(Term::Int).collect()));
                stale = Some(heap.alloc_term(&Term::Tuple(vec![Term::Int(1)])));
                return Step::Yield;
            }
            let w: Word = stale.expect("set in the first slice");
            while !cx.heap().needs_gc() {
                cx.heap().alloc_term(&Term::Tuple(vec![Term::Int(2); 8]));
            }
            cx.regs().push(w);
            Step::Yield
        }),
    );
    assert!(is_panic_reason(&r, ""), "reason {r}");
    assert_alive(&vm);
    finish(vm);
}

/// A dirty job's result whose Drop panics: dropped at the process's exit (it never took
/// it), and dropped on the pool thread when the process died first.
#[test]
fn a_panic_dropping_a_dirty_result_is_contained() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("result drop failed");
        }
    }
    let vm = vm1();
    // Exit without taking the result: it is dropped by the exit path.
    let r = down_reason(&vm, {
        let mut submitted = false;
        body(move |cx: &mut Cx<'_>| {
            if !submitted {
                submitted = true;
                return cx
                    .dirty(DirtyKind::Io, Box::new(|| Box::new(Bomb)))
                    .unwrap();
            }
            if cx.dirty_pending() {
                return Step::Wait;
            }
            Step::Exit(term(Term::Atom(Atom::NORMAL)))
        })
    });
    assert_eq!(r, Term::Atom(Atom::NORMAL));
    // Killed while the job runs: the result is refused and dropped on the pool thread.
    let release = Arc::new(AtomicBool::new(false));
    let rel = release.clone();
    let (tx, rx) = mpsc::channel::<Pid>();
    let mut submitted = false;
    let p = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !submitted {
                submitted = true;
                tx.send(cx.self_pid()).unwrap();
                let rel = rel.clone();
                return cx
                    .dirty(
                        DirtyKind::Io,
                        Box::new(move || {
                            while !rel.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Box::new(Bomb)
                        }),
                    )
                    .unwrap();
            }
            Step::Wait
        }))
        .unwrap();
    assert_eq!(recv_timeout(&rx, 5), p);
    vm.exit(p, term(Term::Atom(Atom::KILL)));
    assert!(eventually(5, || !vm.is_alive(p)));
    release.store(true, Ordering::Release);
    // The one IO thread is still there: a second job completes.
    let (tx, rx) = mpsc::channel();
    vm.spawn(dirty_caller(DirtyKind::Io, 1, tx)).unwrap();
    assert_eq!(recv_timeout(&rx, 5).0, 2, "the pool thread survived");
    assert_alive(&vm);
    finish(vm);
}
