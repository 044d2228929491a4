//! The native workloads defined in docs/benchmarks.md ('Workloads'), for beamvm's Rust
//! processes.
//!
//! `cargo run --release -p vm-core --example workloads -- [--quick] [--reps N] [NAME ...]`
//! prints one JSON object per line:
//! `{"workload": "B2", "metric": "...", "value": median, "unit": "...", "median": ..,
//!   "min": .., "max": .., "reps": N}`.
//! Names: B1 B1b B2 B3 B3W B4 B5 B6 B7 B8 B9 B10 CASCADE MONITOR TOP (default: all),
//! and ECHO (by name only: TCP echo of native processes over loopback, B11 in one VM).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[path = "common/echo_native.rs"]
mod echo_native;

use vm_core::{Atom, Cx, Fragment, Key, Pid, Ref, Step, Term, Vm, VmConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn vm(schedulers: usize, limit: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers,
        schedulers_online: schedulers,
        process_limit: limit,
        ..VmConfig::default()
    })
    .expect("vm")
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn int(i: i64) -> Fragment {
    Fragment::from_term(&Term::Int(i))
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn body<F: FnMut(&mut Cx<'_>) -> Step + Send + 'static>(f: F) -> F {
    f
}

fn wait_forever() -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    |cx: &mut Cx<'_>| {
        while cx.recv().is_some() {}
        Step::Wait
    }
}

struct Out {
    metrics: Vec<(String, String, &'static str, Vec<f64>)>,
}

impl Out {
    fn add(&mut self, w: &str, metric: &str, unit: &'static str, v: f64) {
        match self.metrics.iter_mut().find(|m| m.0 == w && m.1 == metric) {
            Some(m) => m.3.push(v),
            None => self
                .metrics
                .push((w.to_string(), metric.to_string(), unit, vec![v])),
        }
    }

    fn flush(&mut self) {
        for (w, m, unit, mut vs) in self.metrics.drain(..) {
            vs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let med = vs[vs.len() / 2];
            println!(
                "{{\"workload\": \"{w}\", \"metric\": \"{m}\", \"value\": {med:.3}, \"unit\": \"{unit}\", \"median\": {med:.3}, \"min\": {:.3}, \"max\": {:.3}, \"reps\": {}}}",
                vs[0],
                vs[vs.len() - 1],
                vs.len()
            );
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ------------------------------------------------------------------ B1

/// Spawns `n` processes that wait forever, from one spawner process (yielding when
/// its budget is spent), and returns once every one of them has run its first slice
/// and blocked in receive.
fn spawn_idle(vm: &Vm, n: usize) {
    let started = Arc::new(AtomicU64::new(0));
    let s2 = started.clone();
    let mut spawned = 0usize;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        while spawned < n {
            let s3 = s2.clone();
            let mut first = true;
            cx.spawn(body(move |cx: &mut Cx<'_>| {
                if first {
                    first = false;
                    s3.fetch_add(1, Ordering::Relaxed);
                }
                while cx.recv().is_some() {}
                Step::Wait
            }))
            .expect("spawn");
            spawned += 1;
            if cx.should_yield() {
                return Step::Yield;
            }
        }
        Step::Exit(int(0))
    }))
    .expect("spawner");
    while started.load(Ordering::Relaxed) < n as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn b1(out: &mut Out, n: usize) {
    let vm = vm(cores(), n + 16);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    spawn_idle(&vm, n);
    let spawn_time = t0.elapsed();
    while vm.process_count() > n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let rss1 = rss_bytes();
    out.add(
        "B1",
        "spawn_us",
        "us",
        spawn_time.as_secs_f64() * 1e6 / n as f64,
    );
    out.add(
        "B1",
        "bytes_per_process",
        "bytes",
        rss1.saturating_sub(rss0) as f64 / n as f64,
    );
    let pids = vm.processes();
    let t1 = Instant::now();
    let kill = Fragment::from_term(&Term::atom("kill"));
    for p in pids {
        vm.exit(p, kill.clone());
    }
    while vm.process_count() > 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    out.add(
        "B1",
        "teardown_us",
        "us",
        t1.elapsed().as_secs_f64() * 1e6 / n as f64,
    );
}

fn b1_fresh(out: &mut Out, quick: bool) {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--reps", "1", "B1"]);
    if quick {
        cmd.arg("--quick");
    }
    let res = cmd.output().expect("run B1 in a fresh process");
    for line in String::from_utf8_lossy(&res.stdout).lines() {
        let field = |k: &str| {
            let i = line.find(&format!("\"{k}\": "))? + k.len() + 4;
            let rest = &line[i..];
            let end = rest.find([',', '}'])?;
            Some(rest[..end].trim().trim_matches('"').to_string())
        };
        if let (Some(m), Some(v)) = (field("metric"), field("value")) {
            if let Ok(v) = v.parse::<f64>() {
                let unit = match m.as_str() {
                    "bytes_per_process" => "bytes",
                    _ => "us",
                };
                out.add("B1", &m, unit, v);
            }
        }
    }
}

fn b1b(out: &mut Out) {
    let vm = vm(1, 1000);
    for _ in 0..1000 {
        vm.spawn(wait_forever()).expect("under the limit");
    }
    let err = vm.spawn(wait_forever()).expect_err("over the limit");
    let still = vm.spawn(wait_forever()).is_err();
    let p = vm.processes()[0];
    vm.exit(p, Fragment::from_term(&Term::atom("kill")));
    while vm.process_count() == 1000 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ok_after = vm.spawn(wait_forever()).is_ok();
    eprintln!("B1b: spawn past the limit -> {err}; VM works afterwards: {ok_after}");
    out.add(
        "B1b",
        "system_limit_error",
        "bool",
        f64::from(u8::from(still)),
    );
    out.add("B1b", "works_after", "bool", f64::from(u8::from(ok_after)));
}

// ------------------------------------------------------------------ B2 / B9

/// A ring of `n` processes passing a token `laps` times. Returns messages/s.
fn ring(vm: &Vm, n: usize, laps: usize, rings: usize) -> f64 {
    let (tx, rx) = mpsc::channel();
    let mut firsts = Vec::new();
    for _ in 0..rings {
        // Build: the last process forwards to the first, which we learn after.
        let first_slot: Arc<std::sync::OnceLock<Pid>> = Arc::new(std::sync::OnceLock::new());
        let mut next: Option<Pid> = None;
        for i in 0..n {
            let fs = first_slot.clone();
            let tx = tx.clone();
            let is_first = i == n - 1; // created last, becomes the head
            let target = next;
            let p = vm
                .spawn(body(move |cx: &mut Cx<'_>| {
                    while let Some(m) = cx.recv() {
                        let k = m.view().as_int().unwrap_or(0);
                        if is_first && k == 0 {
                            tx.send(()).ok();
                            return Step::Wait;
                        }
                        let to = match target {
                            Some(t) => t,
                            None => *fs.get().expect("ring closed"),
                        };
                        let k = if is_first { k - 1 } else { k };
                        cx.send(to, int(k));
                        if cx.should_yield() {
                            return Step::Yield;
                        }
                    }
                    Step::Wait
                }))
                .expect("spawn ring");
            next = Some(p);
        }
        let head = next.expect("ring has a head");
        first_slot.set(head).ok();
        firsts.push(head);
    }
    let t0 = Instant::now();
    for &h in &firsts {
        vm.send(h, int(laps as i64));
    }
    for _ in 0..rings {
        rx.recv().ok();
    }
    let el = t0.elapsed();
    (n * laps * rings) as f64 / el.as_secs_f64()
}

fn b2(out: &mut Out, quick: bool) {
    let laps = if quick { 10 } else { 100 };
    let vm = vm(cores(), 100_000);
    out.add("B2", "msgs_per_s", "msgs/s", ring(&vm, 10_000, laps, 1));
}

fn b9(out: &mut Out, quick: bool) {
    let laps = if quick { 10 } else { 100 };
    let one = {
        let vm = vm(1, 100_000);
        ring(&vm, 10_000, laps, 4)
    };
    let all = {
        let vm = vm(cores(), 100_000);
        ring(&vm, 10_000, laps, 4)
    };
    out.add("B9", "4_rings_1_scheduler", "msgs/s", one);
    out.add("B9", "4_rings_all_schedulers", "msgs/s", all);
    out.add("B9", "scaling_ratio", "x", all / one);
    out.add("B9", "schedulers", "count", cores() as f64);
}

// ------------------------------------------------------------------ B3 / B10

fn pingpong(vm: &Vm, rounds: usize) -> (u64, u64, f64) {
    pingpong_after(vm, rounds, None)
}

/// Ping-pong between two processes; with `wait`, the pinger first waits that long in a
/// receive with a timeout (as a process calling `sleep` does) and then starts.
fn pingpong_after(vm: &Vm, rounds: usize, wait: Option<Duration>) -> (u64, u64, f64) {
    let (tx, rx) = mpsc::channel();
    let ponger = vm
        .spawn(body(|cx: &mut Cx<'_>| {
            while let Some(m) = cx.recv() {
                if let Some(p) = m.view().as_pid() {
                    let me = cx.self_pid();
                    cx.send(p, Fragment::from_term(&Term::Pid(me)));
                }
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
            Step::Wait
        }))
        .expect("ponger");
    let mut samples: Vec<u64> = Vec::with_capacity(rounds);
    let mut last = Instant::now();
    let mut started = false;
    let mut start = Instant::now();
    let mut waited = wait.is_none();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        let me = Fragment::from_term(&Term::Pid(cx.self_pid()));
        if !waited {
            if !cx.timed_out() {
                return cx.wait(wait);
            }
            waited = true;
            start = Instant::now();
        }
        if !started {
            started = true;
            last = Instant::now();
            cx.send(ponger, me);
            return Step::Wait;
        }
        while cx.recv().is_some() {
            let now = Instant::now();
            samples.push((now - last).as_nanos() as u64);
            last = now;
            if samples.len() == rounds {
                let total = start.elapsed();
                tx.send((std::mem::take(&mut samples), total)).ok();
                return Step::Exit(int(0));
            }
            cx.send(ponger, me.clone());
            if cx.should_yield() {
                return Step::Yield;
            }
        }
        Step::Wait
    }))
    .expect("pinger");
    let (mut s, total) = rx.recv().expect("pingpong result");
    s.sort_unstable();
    (
        pct(&s, 0.5),
        pct(&s, 0.99),
        total.as_nanos() as f64 / rounds as f64,
    )
}

fn b3(out: &mut Out, quick: bool, idle: usize, name: &str) {
    let rounds = if quick { 100_000 } else { 1_000_000 };
    let vm = vm(cores(), idle + 1000);
    for _ in 0..idle {
        vm.spawn(wait_forever()).expect("idle");
    }
    while vm.process_count() < idle {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (p50, p99, mean) = pingpong(&vm, rounds);
    out.add(name, "round_trip_p50", "ns", p50 as f64);
    out.add(name, "round_trip_p99", "ns", p99 as f64);
    out.add(name, "round_trip_mean", "ns", mean);
}

/// B3 after a wait: in one VM, a ping-pong (before), then a pinger that first waits
/// 200 ms in a receive with a timeout before its ping-pong (after). A wait must leave no
/// state behind that slows messaging down (issue 8, fault 10): the ratio should be ~1.
fn b3_after_wait(out: &mut Out, quick: bool) {
    let rounds = if quick { 100_000 } else { 1_000_000 };
    let vm = vm(cores(), 1000);
    let (before, _, _) = pingpong(&vm, rounds);
    let (after, p99, mean) = pingpong_after(&vm, rounds, Some(Duration::from_millis(200)));
    out.add("B3W", "round_trip_p50_before_wait", "ns", before as f64);
    out.add("B3W", "round_trip_p50_after_wait", "ns", after as f64);
    out.add("B3W", "round_trip_p99_after_wait", "ns", p99 as f64);
    out.add("B3W", "round_trip_mean_after_wait", "ns", mean);
    out.add(
        "B3W",
        "after_over_before",
        "x",
        after as f64 / before.max(1) as f64,
    );
}

// ------------------------------------------------------------------ B4

fn b4(out: &mut Out, quick: bool, schedulers: usize) {
    let producers = 1000;
    let per = if quick { 100 } else { 1000 };
    let vm = vm(schedulers, 10_000);
    let (tx, rx) = mpsc::channel();
    let total = producers * per;
    let mut got = 0usize;
    let consumer = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            while cx.recv().is_some() {
                got += 1;
                if got == total {
                    tx.send(Instant::now()).ok();
                    return Step::Exit(int(0));
                }
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
            Step::Wait
        }))
        .expect("consumer");
    let go = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    for i in 0..producers {
        let go = go.clone();
        let ready = ready.clone();
        let mut sent = 0;
        let mut counted = false;
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            if !counted {
                counted = true;
                ready.fetch_add(1, Ordering::Relaxed);
            }
            if !go.load(Ordering::Acquire) {
                return Step::Yield;
            }
            while sent < per {
                cx.send(consumer, int((i * per + sent) as i64));
                sent += 1;
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
            Step::Exit(int(0))
        }))
        .expect("producer");
    }
    while ready.load(Ordering::Relaxed) < producers as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    go.store(true, Ordering::Release);
    let end = rx.recv().expect("fan-in result");
    let name = if schedulers == 1 {
        "msgs_per_s".to_string()
    } else {
        format!("msgs_per_s_{schedulers}_schedulers")
    };
    out.add(
        "B4",
        &name,
        "msgs/s",
        total as f64 / (end - t0).as_secs_f64(),
    );
}

// ------------------------------------------------------------------ B5

fn b5(out: &mut Out, quick: bool) {
    let noise = 50_000;
    let n = if quick { 200 } else { 1000 };
    let vm = vm(1, 1000);
    let tags: Vec<Atom> = (0..n).map(|i| Atom::new(&format!("b5_tag_{i}"))).collect();
    let (tx, rx) = mpsc::channel();
    let mut filled = false;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        let me = cx.self_pid();
        if !filled {
            filled = true;
            for i in 0..noise {
                cx.send(
                    me,
                    Fragment::from_term(&Term::Tuple(vec![Term::atom("noise"), Term::Int(i)])),
                );
            }
            cx.bump(-1_000_000);
        }
        assert_eq!(cx.message_queue_len(), noise as usize);
        let reply = Term::atom("reply");
        // Ref-keyed.
        let mut ref_ns = 0u128;
        for i in 0..n {
            let r = Ref::new();
            cx.send(
                me,
                Fragment::from_term(&Term::Tuple(vec![
                    reply.clone(),
                    Term::Ref(r),
                    Term::Int(i),
                ])),
            );
            let t = Instant::now();
            let m = cx.recv_keyed(Key::of_ref(r), |_| true);
            ref_ns += t.elapsed().as_nanos();
            assert!(m.is_some());
        }
        // Tag-keyed: the tag is on no queued message.
        let mut tag_ns = 0u128;
        for (i, tag) in tags.iter().enumerate() {
            cx.send(
                me,
                Fragment::from_term(&Term::Tuple(vec![Term::Atom(*tag), Term::Int(i as i64)])),
            );
            let t = Instant::now();
            let m = cx.recv_keyed(Key::Atom(tag.index()), |_| true);
            tag_ns += t.elapsed().as_nanos();
            assert!(m.is_some());
        }
        // Plain pattern (what BEAM does for a non-ref pattern: scan everything).
        let mut scan_ns = 0u128;
        let scans = 20;
        for i in 0..scans {
            let r = Ref::new();
            cx.send(
                me,
                Fragment::from_term(&Term::Tuple(vec![
                    reply.clone(),
                    Term::Ref(r),
                    Term::Int(i),
                ])),
            );
            let t = Instant::now();
            let m = cx.recv_where(|v| v.tuple_get(1).and_then(|e| e.as_ref()) == Some(r));
            scan_ns += t.elapsed().as_nanos();
            assert!(m.is_some());
        }
        tx.send((
            ref_ns as f64 / n as f64 / 1000.0,
            tag_ns as f64 / n as f64 / 1000.0,
            scan_ns as f64 / scans as f64 / 1000.0,
        ))
        .ok();
        Step::Exit(int(0))
    }))
    .expect("b5");
    let (r, t, s) = rx.recv().expect("b5 result");
    out.add("B5", "ref_receive_us", "us", r);
    out.add("B5", "tag_receive_us", "us", t);
    out.add("B5", "plain_scan_receive_us", "us", s);
}

// ------------------------------------------------------------------ B6

fn b6(out: &mut Out) {
    let vm = vm(cores(), 1000);
    let bin0 = vm.memory().binary;
    let big = Fragment::from_term(&Term::binary(vec![1u8; 100 * 1024 * 1024]));
    let bin1 = vm.memory().binary;
    let rss0 = rss_bytes();
    let (tx, rx) = mpsc::channel();
    for _ in 0..10 {
        let tx = tx.clone();
        let mut held = Vec::new();
        let p = vm
            .spawn(body(move |cx: &mut Cx<'_>| {
                while let Some(m) = cx.recv() {
                    held.push(m);
                    tx.send(()).ok();
                }
                Step::Wait
            }))
            .expect("holder");
        vm.send(p, big.clone());
    }
    for _ in 0..10 {
        rx.recv().ok();
    }
    let rss1 = rss_bytes();
    let bin2 = vm.memory().binary;
    drop(big);
    let mb = |b: usize| b as f64 / (1024.0 * 1024.0);
    out.add("B6", "extra_rss", "MB", mb(rss1.saturating_sub(rss0)));
    out.add(
        "B6",
        "extra_binary_memory",
        "MB",
        mb(bin2.saturating_sub(bin1)),
    );
    out.add(
        "B6",
        "binary_memory_of_original",
        "MB",
        mb(bin1.saturating_sub(bin0)),
    );
}

// ------------------------------------------------------------------ B7

/// Spawns the 10 ms ticker of B7/B8: it asks to wake every 10 ms for `secs` and sends
/// back how late (µs) each wake-up was.
fn spawn_ticker(vm: &Vm, secs: f64) -> mpsc::Receiver<Vec<u64>> {
    let (tx, rx) = mpsc::channel();
    let period = Duration::from_millis(10);
    let ticks = (secs * 100.0) as usize;
    let mut due = Instant::now() + period;
    let mut late: Vec<u64> = Vec::new();
    let mut first = true;
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if first {
            first = false;
            due = Instant::now() + period;
        } else if cx.timed_out() {
            let now = Instant::now();
            late.push(now.saturating_duration_since(due).as_micros() as u64);
            if late.len() == ticks {
                tx.send(std::mem::take(&mut late)).ok();
                return Step::Exit(int(0));
            }
            due += period;
        }
        let wait = due.saturating_duration_since(Instant::now());
        cx.wait(Some(wait.max(Duration::from_micros(1))))
    }))
    .expect("ticker");
    rx
}

/// Lateness p50 / p99 / max in ms.
fn report_lateness(out: &mut Out, workload: &str, mut l: Vec<u64>) {
    l.sort_unstable();
    out.add(workload, "lateness_p50", "ms", pct(&l, 0.5) as f64 / 1000.0);
    out.add(
        workload,
        "lateness_p99",
        "ms",
        pct(&l, 0.99) as f64 / 1000.0,
    );
    let max = *l.last().unwrap_or(&0) as f64 / 1000.0;
    out.add(workload, "lateness_max", "ms", max);
}

fn b7(out: &mut Out, quick: bool) {
    let secs = if quick { 0.5 } else { 2.0 };
    let vm = vm(1, 1000);
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..4 {
        let stop = stop.clone();
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            let mut x = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Step::Exit(int(0));
                }
                // One reduction ~ one BEAM function call's worth of work (~10 ns).
                for _ in 0..10 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
                cx.bump(1);
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
        }))
        .expect("spinner");
    }
    let rx = spawn_ticker(&vm, secs);
    let l = rx.recv().expect("b7 result");
    stop.store(true, Ordering::Relaxed);
    report_lateness(out, "B7", l);
}

// ------------------------------------------------------------------ B8

/// GC isolation: one process allocating garbage on its own heap as fast as it can
/// (holding ~8 MB of live data, so its major collections are real work), and a 10 ms
/// ticker, on one scheduler. Each process's heap is collected on its own between its
/// slices, so the ticker waits at most for one slice and one collection of the
/// allocator.
fn b8(out: &mut Out, quick: bool) {
    let secs = if quick { 0.5 } else { 2.0 };
    let vm = vm(1, 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let mut started = false;
    let garbage = Term::Tuple(vec![
        Term::atom("garbage"),
        Term::List((0..40).map(Term::Int).collect()),
        Term::binary(vec![7u8; 48]),
    ]);
    let alloc = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !started {
                started = true;
                // ~8 MB live: 100,000 two-word cons cells of small tuples.
                let live = Term::List(
                    (0..100_000)
                        .map(|i| Term::Tuple(vec![Term::Int(i), Term::Int(i)]))
                        .collect(),
                );
                let w = cx.heap().alloc_term(&live);
                cx.regs().push(w);
            }
            loop {
                if s2.load(Ordering::Relaxed) {
                    return Step::Exit(int(0));
                }
                cx.heap().alloc_term(&garbage);
                cx.bump(10);
                if cx.should_yield() {
                    return Step::Yield;
                }
            }
        }))
        .expect("allocator");
    let rx = spawn_ticker(&vm, secs);
    let l = rx.recv().expect("b8 result");
    let st = vm.statistics();
    if let Some(info) = vm.process_info(alloc) {
        out.add("B8", "allocator_major_gcs", "count", info.major_gcs as f64);
        out.add("B8", "allocator_heap_words", "words", info.heap_size as f64);
    }
    let longest = st.longest_slice.iter().max().copied().unwrap_or_default();
    out.add("B8", "longest_slice", "ms", longest.as_secs_f64() * 1e3);
    stop.store(true, Ordering::Relaxed);
    report_lateness(out, "B8", l);
    out.add("B8", "allocator_gcs", "count", st.gcs as f64);
}

// ------------------------------------------------------------------ TOP (issue 5)

fn top(out: &mut Out, quick: bool) {
    let n = if quick { 100_000 } else { 1_000_000 };
    let vm = vm(cores(), n + 100);
    spawn_idle(&vm, n);
    while vm.process_count() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    for by in ["message_queue_len", "memory", "reductions"] {
        let t = Instant::now();
        let r = vm.top(10, by).expect("top");
        assert_eq!(r.len(), 10);
        out.add(
            "TOP",
            &format!("top10_by_{by}_1M"),
            "ms",
            t.elapsed().as_secs_f64() * 1e3,
        );
    }
    let interval = Duration::from_millis(100);
    let t = Instant::now();
    vm.proc_window(10, "reductions", interval)
        .expect("proc_window");
    let walk = t.elapsed().saturating_sub(interval);
    out.add(
        "TOP",
        "proc_window10_1M_excluding_interval",
        "ms",
        walk.as_secs_f64() * 1e3,
    );
    let t = Instant::now();
    let m = vm.memory();
    assert!(m.processes > 0);
    out.add("TOP", "memory_1M", "ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let _ = vm.statistics();
    out.add("TOP", "statistics", "ms", t.elapsed().as_secs_f64() * 1e3);
}

// ------------------------------------------------------------------ issue 3

fn cascade(out: &mut Out, quick: bool) {
    let n = if quick { 10_000 } else { 100_000 };
    let vm = vm(cores(), n + 100);
    let (tx, rx) = mpsc::channel();
    let (dtx, drx) = mpsc::channel();
    let mut first = true;
    // Builder: a chain where each process spawn_links the next.
    struct Link {
        left: usize,
        done: mpsc::Sender<Pid>,
        started: bool,
    }
    impl vm_core::Body for Link {
        fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
            if !self.started {
                self.started = true;
                if self.left > 0 {
                    cx.spawn_link(Link {
                        left: self.left - 1,
                        done: self.done.clone(),
                        started: false,
                    })
                    .expect("spawn");
                } else {
                    self.done.send(cx.self_pid()).ok();
                }
            }
            while cx.recv().is_some() {}
            Step::Wait
        }
    }
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        if first {
            first = false;
            cx.trap_exit(true);
            cx.spawn_link(Link {
                left: n - 1,
                done: dtx.clone(),
                started: false,
            })
            .expect("chain");
        }
        if cx.recv().is_some() {
            tx.send(Instant::now()).ok();
            return Step::Exit(int(0));
        }
        Step::Wait
    }))
    .expect("root");
    let last = drx.recv().expect("chain built");
    let t0 = Instant::now();
    vm.exit(last, Fragment::from_term(&Term::atom("kill")));
    let end = rx.recv().expect("cascade done");
    out.add(
        "CASCADE",
        "exit_cascade_100k_links",
        "us/process",
        (end - t0).as_secs_f64() * 1e6 / n as f64,
    );
}

fn monitor_rt(out: &mut Out, quick: bool) {
    let n = if quick { 10_000 } else { 100_000 };
    let vm = vm(cores(), 1000);
    let (tx, rx) = mpsc::channel();
    let mut i = 0;
    let mut start = None;
    let mut pending: Option<Ref> = None;
    // spawn_monitor a process that exits at once, then wait for its DOWN.
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        let t0 = *start.get_or_insert_with(Instant::now);
        loop {
            if let Some(r) = pending {
                if cx.recv_keyed(Key::of_ref(r), |_| true).is_none() {
                    return Step::Wait;
                }
                pending = None;
            }
            if i == n {
                tx.send(t0.elapsed()).ok();
                return Step::Exit(int(0));
            }
            i += 1;
            let (_, r) = cx
                .spawn_monitor(|_: &mut Cx<'_>| Step::Exit(Fragment::from_term(&Term::atom("x"))))
                .expect("spawn_monitor");
            pending = Some(r);
            if cx.should_yield() {
                return Step::Yield;
            }
        }
    }))
    .expect("monitorer");
    let el = rx.recv().expect("monitor result");
    out.add(
        "MONITOR",
        "spawn_monitor_exit_down_round_trip",
        "ns",
        el.as_nanos() as f64 / n as f64,
    );
}

// ------------------------------------------------------------------ ECHO

/// B11 inside one VM: the native echo server (examples/common/echo_native.rs: an
/// acceptor, one process per connection in `{active, once}`) and 100 native client
/// processes, each keeping one 64-byte message in flight over loopback. Round trips
/// per second; the server and the clients share the cores (the schedulers poll)
/// (benches/b11.py measures the same server against the external load generator).
fn echo(out: &mut Out, quick: bool) {
    use vm_core::io::{parse_message, ActiveOpt, Addr, IoMessage, SetOpts, SocketOpts};
    use vm_core::term::Binary;
    let secs = if quick { 0.5 } else { 2.0 };
    let conns = 100;
    let vm = vm(cores(), 100_000);
    let port = echo_native::start(
        &vm.handle(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    assert!(port != 0, "echo server did not start");
    let trips = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let msg = vec![b'x'; 64];
    for _ in 0..conns {
        let (trips, stop, msg) = (trips.clone(), stop.clone(), msg.clone());
        let mut sock = None;
        let mut got = 0usize;
        vm.spawn(body(move |cx: &mut Cx<'_>| {
            let Ok(r) = cx.io() else {
                return Step::Exit(int(1));
            };
            let me = cx.self_pid();
            let s = match sock {
                Some(s) => s,
                None => {
                    let addr = Addr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
                    let s = r
                        .connect(me, &addr, SocketOpts::default())
                        .expect("connect");
                    sock = Some(s);
                    return Step::Wait;
                }
            };
            while let Some(m) = cx.recv() {
                match parse_message(m.view()) {
                    Some(IoMessage::Connected(_, Ok(()))) => {}
                    Some(IoMessage::Tcp(_, d)) => {
                        got += d.len();
                        if got < msg.len() {
                            let _ = r.setopts(s, SetOpts::active(ActiveOpt::Once));
                            continue;
                        }
                        got = 0;
                        trips.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        let _ = r.close(s);
                        return Step::Exit(int(0));
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    let _ = r.close(s);
                    return Step::Exit(int(0));
                }
                let _ = r.send(s, me, Binary::new(msg.clone()));
                let _ = r.setopts(s, SetOpts::active(ActiveOpt::Once));
            }
            Step::Wait
        }))
        .expect("client");
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let n0 = trips.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(secs));
    let n = trips.load(Ordering::Relaxed) - n0;
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    out.add("ECHO", "round_trips_per_s_100_conns", "1/s", n as f64 / el);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // benches/run.py passes quick mode as BEAMVM_BENCH_QUICK=1.
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("BEAMVM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut reps = 3;
    if let Some(i) = args.iter().position(|a| a == "--reps") {
        reps = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(3);
        args.drain(i..(i + 2).min(args.len()));
    }
    args.retain(|a| !a.starts_with("--"));
    let all = [
        "B1", "B1b", "B2", "B3", "B3W", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "CASCADE",
        "MONITOR", "TOP",
    ];
    let names: Vec<String> = if args.is_empty() {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        args
    };
    let mut out = Out {
        metrics: Vec::new(),
    };
    for name in &names {
        for _ in 0..reps {
            match name.as_str() {
                // RSS deltas are only meaningful in a fresh process (freed memory is
                // reused by later repetitions), so each repetition re-runs this
                // program for one B1 repetition.
                "B1" if reps > 1 => b1_fresh(&mut out, quick),
                "B1" => b1(&mut out, if quick { 100_000 } else { 1_000_000 }),
                "B1b" => b1b(&mut out),
                "B2" => b2(&mut out, quick),
                "B3" => b3(&mut out, quick, 0, "B3"),
                "B3W" => b3_after_wait(&mut out, quick),
                "B4" => {
                    b4(&mut out, quick, 1);
                    b4(&mut out, quick, cores());
                }
                "B5" => b5(&mut out, quick),
                "B6" => b6(&mut out),
                "B7" => b7(&mut out, quick),
                "B8" => b8(&mut out, quick),
                "B9" => b9(&mut out, quick),
                "B10" => b3(&mut out, quick, 100_000, "B10"),
                "CASCADE" => cascade(&mut out, quick),
                "MONITOR" => monitor_rt(&mut out, quick),
                "TOP" => top(&mut out, quick),
                "ECHO" => echo(&mut out, quick),
                other => {
                    // Skip it (and say so) rather than lose the workloads after it.
                    eprintln!("unknown workload {other}; known: {all:?} and ECHO");
                    break;
                }
            }
        }
        out.flush();
    }
}
