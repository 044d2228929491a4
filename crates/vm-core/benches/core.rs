//! Criterion benches of the core's hot paths: the inbox, the mailbox's keyed receive,
//! a ping-pong round trip between two processes, and spawn + exit.
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use vm_core::internals::{Inbox, RunState};
use vm_core::process::mailbox::{Key, Mailbox};
use vm_core::{Cx, Fragment, Ref, Step, Term, Vm, VmConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn inbox(c: &mut Criterion) {
    let ib = Inbox::new(RunState::Running);
    let mut out = Vec::with_capacity(64);
    c.bench_function("inbox push+take (batch of 64)", |b| {
        b.iter(|| {
            for i in 0..64u64 {
                let _ = ib.push(i);
            }
            out.clear();
            ib.take_all(&mut out);
        })
    });
}

fn keyed_receive(c: &mut Criterion) {
    let mut mb = Mailbox::default();
    for i in 0..50_000 {
        mb.push(Fragment::from_term(&Term::Tuple(vec![
            Term::atom("noise"),
            Term::Int(i),
        ])));
    }
    c.bench_function("keyed receive with 50k queued", |b| {
        b.iter(|| {
            let r = Ref::new();
            mb.push(Fragment::from_term(&Term::Tuple(vec![
                Term::atom("reply"),
                Term::Ref(r),
                Term::Int(1),
            ])));
            mb.take_keyed(Key::of_ref(r), &mut |_| true)
        })
    });
}

fn vm1() -> Vm {
    Vm::start(VmConfig {
        schedulers: 1,
        schedulers_online: 1,
        ..VmConfig::default()
    })
    .expect("vm")
}

fn pingpong(c: &mut Criterion) {
    c.bench_function("ping-pong round trip (1 scheduler)", |b| {
        b.iter_custom(|iters| {
            let vm = vm1();
            let (tx, rx) = mpsc::channel();
            let pong = vm
                .spawn(|cx: &mut Cx<'_>| {
                    while let Some(m) = cx.recv() {
                        if let Some(p) = m.view().as_pid() {
                            cx.send(p, Fragment::from_term(&Term::Int(0)));
                        }
                    }
                    Step::Wait
                })
                .expect("pong");
            let mut left = iters;
            let mut t0 = None;
            vm.spawn(move |cx: &mut Cx<'_>| {
                let start = *t0.get_or_insert_with(Instant::now);
                if left > 0 && cx.recv().is_none() && left != iters {
                    return Step::Wait;
                }
                if left == 0 {
                    tx.send(start.elapsed()).ok();
                    return Step::Exit(Fragment::from_term(&Term::Int(0)));
                }
                left -= 1;
                let me = cx.self_pid();
                cx.send(pong, Fragment::from_term(&Term::Pid(me)));
                Step::Wait
            })
            .expect("ping");
            rx.recv_timeout(Duration::from_secs(60)).expect("pingpong")
        })
    });
}

fn spawn_exit(c: &mut Criterion) {
    c.bench_function("spawn + exit (from a process, 1 scheduler)", |b| {
        b.iter_custom(|iters| {
            let vm = vm1();
            let (tx, rx) = mpsc::channel();
            let mut done = 0;
            let mut t0 = None;
            vm.spawn(move |cx: &mut Cx<'_>| {
                let t0 = *t0.get_or_insert_with(Instant::now);
                while done < iters {
                    cx.spawn(|_: &mut Cx<'_>| Step::Exit(Fragment::from_term(&Term::Int(0))))
                        .expect("spawn");
                    done += 1;
                    if cx.should_yield() {
                        return Step::Yield;
                    }
                }
                tx.send(t0.elapsed()).ok();
                Step::Exit(Fragment::from_term(&Term::Int(0)))
            })
            .expect("spawner");
            rx.recv_timeout(Duration::from_secs(60))
                .expect("spawn bench")
        })
    });
}

criterion_group!(benches, inbox, keyed_receive, pingpong, spawn_exit);
criterion_main!(benches);
