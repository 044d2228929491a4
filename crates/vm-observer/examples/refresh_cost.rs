//! What one refresh of the web observer costs the VM at a million processes.
//!
//! `cargo run --release -p vm-observer --example refresh_cost -- [PROCESSES] [ROUNDS]`
//!
//! Spawns PROCESSES (default 1,000,000) idle native processes, then times, ROUNDS times
//! each (default 11), the census walk alone (and, for comparison, the four walks it
//! replaces: `memory()` and three `top`s), a whole `/api/snapshot` (census, counters,
//! the listed processes' summaries, JSON), `/metrics`, and one page refresh end to end
//! over HTTP (request, snapshot, reply) with the snapshot cache expired. Prints the
//! median, min and max of each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_core::{Cx, Step, Vm, VmConfig};
use vm_observer::{metrics, serve, snapshot, Backend, Local, SNAPSHOT_TTL};

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:7.2} ms   min {:7.2}   max {:7.2}",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    )
}

fn time(rounds: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let procs: usize = args
        .next()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(11);
    let vm = Vm::start(VmConfig {
        process_limit: procs + 1000,
        ..VmConfig::default()
    })
    .expect("vm starts");
    let t = Instant::now();
    for _ in 0..procs {
        vm.spawn(Box::new(|cx: &mut Cx<'_>| {
            while cx.recv().is_some() {}
            Step::Wait
        }))
        .expect("spawn");
    }
    while vm.census(0).waiting < procs {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{procs} idle processes spawned and settled in {:.1} s; {} schedulers",
        t.elapsed().as_secs_f64(),
        vm.system_info().schedulers
    );
    let h = vm.handle();
    println!(
        "census(10)              {}",
        stats(time(rounds, || {
            std::hint::black_box(h.census(10));
        }))
    );
    let mut cpu = Vec::new();
    for _ in 0..rounds {
        let c0 = snapshot::thread_cpu_time();
        std::hint::black_box(snapshot::snapshot(&h, 10));
        cpu.push(snapshot::thread_cpu_time().saturating_sub(c0));
    }
    println!("/api/snapshot (CPU)     {}", stats(cpu));
    println!(
        "memory() + 3 x top(10)  {}   (the walks census replaces)",
        stats(time(rounds, || {
            std::hint::black_box(h.memory());
            for by in snapshot::BY {
                std::hint::black_box(h.top(10, by).expect("top"));
            }
        }))
    );
    let mut bytes = 0;
    println!(
        "/api/snapshot (VM work) {}",
        stats(time(rounds, || {
            bytes = snapshot::snapshot(&h, 10).to_string().len();
        }))
    );
    println!(
        "/metrics (VM work)      {}",
        stats(time(rounds, || {
            std::hint::black_box(metrics::render(Some(&h)));
        }))
    );
    let h2 = h.clone();
    let srv = serve(
        "127.0.0.1",
        0,
        Backend::Local(Local::new(Arc::new(move || Some(h2.clone())), None)),
    )
    .expect("binds");
    let addr = srv.local_addr();
    let over_http = time(rounds, || {
        std::thread::sleep(SNAPSHOT_TTL); // an expired cache: every request walks
        let mut s = TcpStream::connect(addr).expect("connects");
        s.write_all(b"GET /api/snapshot?n=10 HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200"));
    });
    println!(
        "GET /api/snapshot       {}   (wait for the cache to expire excluded)",
        stats(
            over_http
                .into_iter()
                .map(|d| d.saturating_sub(SNAPSHOT_TTL))
                .collect()
        )
    );
    println!("snapshot JSON: {bytes} bytes");
}
