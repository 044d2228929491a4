//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use std::time::Instant;

use vm_core::{Body, BodyClass, Cx, DirtyKind, Fragment, Pid, Step, Term, Vm, VmConfig};

/// A VM with `n` schedulers.
pub fn vm(n: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers: n,
        schedulers_online: n,
        ..VmConfig::default()
    })
    .expect("vm starts")
}

/// A VM with `n` schedulers and a process limit.
pub fn vm_limit(n: usize, limit: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers: n,
        schedulers_online: n,
        process_limit: limit,
        ..VmConfig::default()
    })
    .expect("vm starts")
}

pub fn int(i: i64) -> Fragment {
    Fragment::from_term(&Term::Int(i))
}

pub fn term(t: Term) -> Fragment {
    Fragment::from_term(&t)
}

pub fn atom(s: &str) -> Term {
    Term::atom(s)
}

pub fn tuple(v: Vec<Term>) -> Term {
    Term::Tuple(v)
}

/// Turns a closure into a body (annotates the higher-ranked signature).
pub fn body<F>(f: F) -> F
where
    F: FnMut(&mut Cx<'_>) -> Step + Send + 'static,
{
    f
}

/// A process that waits forever (until killed).
pub fn idle() -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    |cx: &mut Cx<'_>| {
        while cx.recv().is_some() {}
        Step::Wait
    }
}

/// A process that forwards every message it receives (as a Term) to a channel.
pub fn forwarder(tx: mpsc::Sender<Term>) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    move |cx: &mut Cx<'_>| {
        while let Some(m) = cx.recv() {
            let _ = tx.send(m.to_term());
        }
        Step::Wait
    }
}

pub fn recv_timeout<T>(rx: &mpsc::Receiver<T>, secs: u64) -> T {
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("expected a value from the VM in time")
}

pub fn pid_of(t: &Term) -> Pid {
    match t {
        Term::Pid(p) => *p,
        other => panic!("not a pid: {other}"),
    }
}

/// Polls `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
}

/// A VM with the given scheduler and dirty pool sizes.
pub fn vm_pools(schedulers: usize, cpu: usize, io: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers,
        schedulers_online: schedulers,
        dirty_cpu: cpu,
        dirty_io: io,
        ..VmConfig::default()
    })
    .unwrap()
}

/// A process that sleeps `ms` on a dirty pool (the job returns `ms * 2`) and reports (its result, elapsed).
pub fn dirty_caller(
    kind: DirtyKind,
    ms: u64,
    tx: mpsc::Sender<(u64, Duration)>,
) -> impl vm_core::Body {
    let mut started: Option<Instant> = None;
    body(move |cx: &mut Cx<'_>| {
        if started.is_none() {
            started = Some(Instant::now());
            return cx
                .dirty(
                    kind,
                    Box::new(move || {
                        std::thread::sleep(Duration::from_millis(ms));
                        Box::new(ms * 2)
                    }),
                )
                .unwrap();
        }
        match cx.dirty_result() {
            None => Step::Wait,
            Some(r) => {
                let v = *r.unwrap().downcast::<u64>().unwrap();
                tx.send((v, started.unwrap().elapsed())).unwrap();
                Step::Exit(int(0))
            }
        }
    })
}

/// A body of class `Hooked` (what a Python process is): its slices run inside the
/// VM's slice hook.
pub struct Hooked<F>(pub F);

impl<F> Body for Hooked<F>
where
    F: FnMut(&mut Cx<'_>) -> Step + Send + 'static,
{
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        (self.0)(cx)
    }

    fn class(&self) -> BodyClass {
        BodyClass::Hooked
    }
}
