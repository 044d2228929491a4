//! B11's load generator: C TCP connections, each sending a fixed-size message and
//! waiting for its echo, for a warm-up then a measured period; the same binary for
//! every server the benchmark compares.
//!
//! What it reports (one JSON object on stdout, a summary on stderr): round trips per
//! second, latency p50/p99/p99.9/max from an HDR histogram, errors by kind, and the
//! server's CPU time per 1,000 round trips read from `/proc/<pid>/stat` at the start
//! and the end of the measured period (the fairest figure when the server and the
//! generator share two cores), plus the generator's own CPU per 1,000 round trips.
//!
//! Invariants the figures rely on:
//! - Every connection has exactly one message in flight: a round trip is counted when
//!   all `size` bytes of its echo came back, byte for byte (a wrong byte counts as an
//!   error and drops the connection: a server that mixes streams cannot score).
//! - Only round trips that *complete* inside the measured window are counted and put
//!   in the histogram; round trips still in flight at the end are reported separately
//!   (`outstanding`, and the age of the oldest) so a server that stalls some
//!   connections cannot hide them.
//! - The generator is itself cheap: a few threads, each owning a share of the
//!   connections on its own mio `Poll` (epoll, edge-triggered), no allocation per
//!   round trip, one `Instant::now()` per completed echo.
//! - If the C connections cannot all be opened (descriptor limit, refused, port
//!   exhaustion), it exits non-zero before measuring, saying how many were opened and
//!   why: a run with fewer connections than asked is not a B11 figure.

mod args;
mod cpu;
mod limits;
mod worker;

use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::args::Args;
use crate::worker::{Errors, Opened, Schedule, WorkerResult};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    limits::ensure_nofile(args.connections)?;
    let threads = args.threads.clamp(1, args.connections.max(1));
    let (opened_tx, opened_rx) = mpsc::channel::<Opened>();
    let mut handles = Vec::with_capacity(threads);
    let mut schedules = Vec::with_capacity(threads);
    for i in 0..threads {
        // Spread the connections evenly: the first `connections % threads` get one more.
        let share = args.connections / threads + usize::from(i < args.connections % threads);
        let (sched_tx, sched_rx) = mpsc::channel::<Option<Schedule>>();
        schedules.push(sched_tx);
        let cfg = worker::Config {
            addr: args.addr,
            connections: share,
            first_id: i * (args.connections / threads + 1),
            size: args.size,
            connect_timeout: args.connect_timeout,
        };
        let tx = opened_tx.clone();
        let h = thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || worker::run(cfg, tx, sched_rx))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    drop(opened_tx);

    // Every worker reports how many connections it opened before anything is sent.
    let t_connect = Instant::now();
    let mut opened = 0usize;
    let mut failures = Vec::new();
    for _ in 0..threads {
        match opened_rx.recv() {
            Ok(o) => {
                opened += o.count;
                if let Some(e) = o.error {
                    failures.push(e);
                }
            }
            Err(_) => failures.push("a worker thread died while connecting".to_string()),
        }
    }
    if opened < args.connections || !failures.is_empty() {
        for s in &schedules {
            let _ = s.send(None);
        }
        for h in handles {
            let _ = h.join();
        }
        return Err(format!(
            "opened only {opened} of {} connections to {} in {:.1} s: {}",
            args.connections,
            args.addr,
            t_connect.elapsed().as_secs_f64(),
            failures.join("; ")
        ));
    }
    eprintln!(
        "loadgen: {} connections to {} open in {:.2} s ({} threads); warm-up {:?}, measuring {:?}",
        args.connections,
        args.addr,
        t_connect.elapsed().as_secs_f64(),
        threads,
        args.warmup,
        args.duration
    );

    let start = Instant::now();
    let schedule = Schedule {
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    for s in &schedules {
        s.send(Some(schedule))
            .map_err(|_| "a worker thread died before the run".to_string())?;
    }

    // Sample CPU times at the window's edges (ticks are 10 ms: fine over seconds).
    sleep_until(schedule.measure_from);
    let server0 = args.server_pid.map(cpu::process_cpu).transpose()?;
    let self0 = cpu::self_cpu();
    sleep_until(schedule.end);
    let server1 = args.server_pid.map(cpu::process_cpu).transpose()?;
    let self1 = cpu::self_cpu();

    let mut hist = worker::new_histogram();
    let mut total = WorkerResult::default();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a worker thread panicked".to_string())?;
        hist.add(&r.hist)
            .map_err(|e| format!("merging histograms: {e}"))?;
        total.merge(&r);
    }
    report(
        args,
        threads,
        &hist,
        &total,
        server0.zip(server1),
        self1 - self0,
    );
    Ok(())
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

fn report(
    args: &Args,
    threads: usize,
    hist: &Histogram<u64>,
    r: &WorkerResult,
    server: Option<(Duration, Duration)>,
    gen_cpu: Duration,
) {
    let secs = args.duration.as_secs_f64();
    let rtps = r.round_trips as f64 / secs;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let per_1k = |cpu: Duration| {
        if r.round_trips == 0 {
            f64::NAN
        } else {
            cpu.as_secs_f64() * 1000.0 / (r.round_trips as f64 / 1000.0)
        }
    };
    let server_cpu = server.map(|(a, b)| b.saturating_sub(a));
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "null".to_string()
        }
    };
    let Errors {
        read,
        write,
        eof,
        mismatch,
    } = r.errors;
    println!(
        concat!(
            "{{\"connections\": {}, \"threads\": {}, \"size\": {}, \"warmup_s\": {}, ",
            "\"duration_s\": {}, \"round_trips\": {}, \"round_trips_per_s\": {}, ",
            "\"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, ",
            "\"errors\": {}, \"errors_by_kind\": {{\"read\": {}, \"write\": {}, \"eof\": {}, ",
            "\"mismatch\": {}}}, \"outstanding\": {}, \"oldest_outstanding_ms\": {}, ",
            "\"server_cpu_ms\": {}, \"server_cpu_ms_per_1k\": {}, ",
            "\"loadgen_cpu_ms\": {}, \"loadgen_cpu_ms_per_1k\": {}}}"
        ),
        args.connections,
        threads,
        args.size,
        num(args.warmup.as_secs_f64()),
        num(secs),
        r.round_trips,
        num(rtps),
        num(us(0.5)),
        num(us(0.99)),
        num(us(0.999)),
        num(hist.max() as f64 / 1000.0),
        r.errors.total(),
        read,
        write,
        eof,
        mismatch,
        r.outstanding,
        num(r.oldest_outstanding.as_secs_f64() * 1000.0),
        server_cpu.map_or("null".into(), |c| num(c.as_secs_f64() * 1000.0)),
        server_cpu.map_or("null".into(), |c| num(per_1k(c))),
        num(gen_cpu.as_secs_f64() * 1000.0),
        num(per_1k(gen_cpu)),
    );
    eprintln!(
        "loadgen: C={} {:.0} round trips/s, p50 {:.1} us, p99 {:.1} us, errors {}, server CPU {} ms/1k, loadgen CPU {:.2} ms/1k",
        args.connections,
        rtps,
        us(0.5),
        us(0.99),
        r.errors.total(),
        server_cpu.map_or("?".into(), |c| format!("{:.2}", per_1k(c))),
        per_1k(gen_cpu),
    );
}
