//! Introspection: `process_info`, `processes`, `memory`, `system_info`, `statistics`.
//!
//! Everything here reads published atomics or walks the process table under epoch
//! guards: no query stops the world, blocks a scheduler or waits for a process.
//! `process_info` also reads a process's links and monitors, which sit behind a lock of
//! their own that their owner holds for one update at a time, never across a slice;
//! the body's label is read only if the process is between slices (`try_lock`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::process::inbox::node_bytes;
use crate::process::signal::Signal;
use crate::process::Process;
use crate::term::{atom_count, atom_table_bytes, binary_bytes, Atom, Pid};
use crate::vm::{VmInner, VmRef};

/// Bytes that process bodies hold outside the VM's own structures, as their embedder
/// declares them ([`add_body_bytes`]): a Python process's generator, frame and context
/// live on Python's heap. Counted in `memory().processes`, so every reader of
/// [`VmRef::memory`] (the web observer's page and metrics included) sees them.
static BODY_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Declares `n` more bytes held by process bodies outside the VM (see [`BODY_BYTES`]);
/// [`sub_body_bytes`] takes them off when the body is dropped.
pub fn add_body_bytes(n: usize) {
    BODY_BYTES.fetch_add(n, Ordering::Relaxed);
}

/// Takes off `n` bytes declared with [`add_body_bytes`].
pub fn sub_body_bytes(n: usize) {
    BODY_BYTES.fetch_sub(n, Ordering::Relaxed);
}

/// Bytes declared with [`add_body_bytes`] and not taken off.
pub fn body_bytes() -> usize {
    BODY_BYTES.load(Ordering::Relaxed)
}

/// The embedder's allocator probe: given the bytes the VM's counters put in the global
/// allocator, what the allocator holds beyond them (see [`Memory::allocator`]).
static ALLOCATOR_PROBE: std::sync::OnceLock<fn(usize) -> usize> = std::sync::OnceLock::new();

/// Sets the probe that measures [`Memory::allocator`] (once per process; later calls
/// are ignored). vm-core does not choose the global allocator, so it cannot measure it.
pub fn set_allocator_probe(probe: fn(usize) -> usize) {
    let _ = ALLOCATOR_PROBE.set(probe);
}

/// The embedder's idle hook (see [`set_idle_hook`]).
static IDLE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets a function every scheduler thread calls once when it has been idle for half a
/// second after running something (once per process; later calls are ignored). The
/// embedder chooses the global allocator, so it is the one that can ask it to return
/// the free pages an idle thread would otherwise keep (mimalloc purges only on threads
/// that allocate). It runs on the scheduler's thread, holding nothing of the VM's, so
/// it must not block for long; it must not panic.
pub fn set_idle_hook(hook: fn()) {
    let _ = IDLE_HOOK.set(hook);
}

/// The idle hook, if the embedder set one.
pub(crate) fn idle_hook() -> Option<fn()> {
    IDLE_HOOK.get().copied()
}

/// Bytes of a control block with no messages, heap or relations (the fixed cost of a
/// process, counted in `memory().processes`).
pub fn process_base_bytes() -> usize {
    std::mem::size_of::<Process>() + 2 * std::mem::size_of::<usize>()
}

/// Published bytes of a process: control block, heap, and its queued signals (the
/// inbox's, counted as they are pushed, and the mailbox's, published by its owner).
pub(crate) fn published_memory(p: &Process) -> usize {
    process_base_bytes()
        + p.heap_bytes.load(Ordering::Relaxed)
        + inbox_bytes(p)
        + p.queued_bytes.load(Ordering::Relaxed)
}

/// Bytes held by signals waiting in `p`'s inbox (nodes and what they carry).
fn inbox_bytes(p: &Process) -> usize {
    p.inbox.len() * node_bytes::<Signal>() + p.inbox.bytes()
}

/// `process_info` of `p` from its published counters and its relations (never waits
/// for the process); `current` is what it runs, if known.
pub(crate) fn info_of(vm: &VmInner, p: &Process, current: Option<String>) -> ProcessInfo {
    let (links, monitors, monitored_by) = p
        .rel_if(|r| {
            (
                r.links.iter().copied().collect(),
                r.monitoring.values().copied().collect(),
                r.monitored_by.values().copied().collect(),
            )
        })
        .unwrap_or_default();
    let young = p.heap_words[0].load(Ordering::Relaxed) as usize;
    let old = p.heap_words[1].load(Ordering::Relaxed) as usize;
    ProcessInfo {
        pid: p.pid,
        status: p.status(),
        priority: p.priority().name(),
        reductions: p.reductions.load(Ordering::Relaxed),
        message_queue_len: p.message_queue_len(),
        memory: published_memory(p),
        heap_size: young + old,
        young_heap_size: young,
        old_heap_size: old,
        minor_gcs: u64::from(p.minor_gcs.load(Ordering::Relaxed)),
        major_gcs: u64::from(p.major_gcs.load(Ordering::Relaxed)),
        links,
        monitors,
        monitored_by,
        trap_exit: p.traps_exits(),
        registered_name: vm.registry.name_of(p.pid),
        current,
    }
}

/// The label of `p`'s body, if `p` is between slices (never waits).
fn label(p: &Process) -> Option<String> {
    let g = p.private.try_lock().ok()?;
    g.body.as_ref().map(|b| b.label())
}

/// A snapshot of one process.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// The pid.
    pub pid: Pid,
    /// waiting, runnable, running or exiting.
    pub status: &'static str,
    /// max, high, normal or low.
    pub priority: &'static str,
    /// Reductions executed so far.
    pub reductions: u64,
    /// Messages queued.
    pub message_queue_len: usize,
    /// Bytes: control block + heap + queued messages.
    pub memory: usize,
    /// Heap words (young + old).
    pub heap_size: usize,
    /// Young generation words.
    pub young_heap_size: usize,
    /// Old generation words.
    pub old_heap_size: usize,
    /// Minor collections.
    pub minor_gcs: u64,
    /// Major (fullsweep) collections.
    pub major_gcs: u64,
    /// Linked processes.
    pub links: Vec<Pid>,
    /// Processes this one monitors.
    pub monitors: Vec<Pid>,
    /// Processes monitoring this one.
    pub monitored_by: Vec<Pid>,
    /// trap_exit flag.
    pub trap_exit: bool,
    /// Registered name.
    pub registered_name: Option<Atom>,
    /// What the process runs (its body's label), or None while it is in a slice (its
    /// body is out of reach then).
    pub current: Option<String>,
}

/// What a `top` listing shows about a process, read without waiting for it.
#[derive(Debug, Clone)]
pub struct ProcessSummary {
    /// The pid.
    pub pid: Pid,
    /// waiting, runnable, running or exiting.
    pub status: &'static str,
    /// max, high, normal or low.
    pub priority: &'static str,
    /// Reductions executed so far.
    pub reductions: u64,
    /// Messages queued.
    pub message_queue_len: usize,
    /// Bytes: control block + heap (as `top(_, "memory")` ranks; queued messages not
    /// included, unlike `process_info`).
    pub memory: usize,
    /// Registered name.
    pub registered_name: Option<Atom>,
    /// The body's label, or None when the process is in a slice (its lock is taken).
    pub current: Option<String>,
}

/// `erlang:memory()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// processes + binary + atom + system + allocator.
    pub total: usize,
    /// Control blocks, heaps and mailboxes.
    pub processes: usize,
    /// Refcounted binaries (each counted once, however many holders).
    pub binary: usize,
    /// The atom table.
    pub atom: usize,
    /// The rest of the VM's bookkeeping (process table chunks, timers, queues).
    pub system: usize,
    /// What the global allocator holds beyond the VM's counted structures (caches it
    /// keeps for reuse, fragmentation), as the embedder's probe measures it
    /// ([`set_allocator_probe`]); 0 without a probe.
    pub allocator: usize,
}

/// `erlang:system_info/1` items.
#[derive(Debug, Clone)]
pub struct SystemInfo {
    /// Scheduler threads.
    pub schedulers: usize,
    /// Schedulers taking work.
    pub schedulers_online: usize,
    /// Dirty CPU pool size.
    pub dirty_cpu_schedulers: usize,
    /// Dirty IO pool size.
    pub dirty_io_schedulers: usize,
    /// `+P`.
    pub process_limit: usize,
    /// Live processes.
    pub process_count: usize,
    /// Reductions per slice.
    pub reductions_per_slice: u32,
    /// Atoms interned.
    pub atom_count: usize,
    /// Atom table limit.
    pub atom_limit: usize,
    /// Registered names.
    pub registered: usize,
    /// Live timers.
    pub timers: usize,
    /// Crate version.
    pub version: &'static str,
}

/// `erlang:statistics/1` items.
#[derive(Debug, Clone)]
pub struct Statistics {
    /// Per scheduler: (busy, total) wall time since start (scheduler_wall_time).
    pub scheduler_wall_time: Vec<(Duration, Duration)>,
    /// Per scheduler: slices run.
    pub slices: Vec<u64>,
    /// Per scheduler: run queue length.
    pub run_queue_lengths: Vec<usize>,
    /// Processes in the global (injector) queues.
    pub global_run_queue: usize,
    /// Reductions executed by all processes.
    pub total_reductions: u64,
    /// Context switches (slices).
    pub context_switches: u64,
    /// Processes spawned since start.
    pub spawned: usize,
    /// Processes exited since start.
    pub exited: u64,
    /// Longest slice seen per scheduler.
    pub longest_slice: Vec<Duration>,
    /// Slices longer than the long_schedule threshold, all schedulers.
    pub long_schedules: u64,
    /// Times the watchdog handed a stuck scheduler's work to the others.
    pub watchdog_takeovers: u64,
    /// Garbage collections, all processes.
    pub gcs: u64,
    /// Bytes reclaimed by garbage collection.
    pub gc_reclaimed_bytes: u64,
    /// Dirty CPU pool: (busy, total) thread time since start (total = threads × uptime).
    pub dirty_cpu_wall_time: (Duration, Duration),
    /// Dirty IO pool: (busy, total) thread time since start.
    pub dirty_io_wall_time: (Duration, Duration),
    /// Jobs waiting for a dirty CPU / IO thread.
    pub dirty_queued: (usize, usize),
    /// Jobs completed by the dirty CPU / IO pools.
    pub dirty_completed: (u64, u64),
    /// Messages sent, by processes and from outside them (timer deliveries and the
    /// VM's own system monitor events are not counted).
    pub messages_sent: u64,
}

impl Statistics {
    /// Utilisation of the dirty CPU and IO pools since start, busy / total, 0.0..=1.0.
    pub fn dirty_utilisation(&self) -> (f64, f64) {
        let r = |(b, t): (Duration, Duration)| {
            if t.is_zero() {
                0.0
            } else {
                (b.as_secs_f64() / t.as_secs_f64()).clamp(0.0, 1.0)
            }
        };
        (r(self.dirty_cpu_wall_time), r(self.dirty_io_wall_time))
    }

    /// Utilisation per scheduler, busy / total, 0.0..=1.0.
    pub fn scheduler_utilisation(&self) -> Vec<f64> {
        self.scheduler_wall_time
            .iter()
            .map(|(b, t)| {
                if t.is_zero() {
                    0.0
                } else {
                    b.as_secs_f64() / t.as_secs_f64()
                }
            })
            .collect()
    }
}

impl VmRef {
    /// Runs `f` on `pid`'s body if the process is alive and between slices; None
    /// otherwise. Never waits: a process in a slice (or exiting) is skipped, as the
    /// label of [`VmRef::process_info`] is. `f` runs under the process's lock: keep it
    /// short (the scheduler cannot run the process meanwhile).
    pub fn with_body<R>(&self, pid: Pid, f: impl FnOnce(&dyn crate::Body) -> R) -> Option<R> {
        let p = self.0.router.table.get(pid)?;
        let g = p.private.try_lock().ok()?;
        g.body.as_deref().map(f)
    }

    /// A snapshot of `pid`, or None if it is not alive. Never waits for the process:
    /// everything comes from its published counters and its links and monitors (their
    /// own lock, held only for one update), so it is safe on a running process, from
    /// inside a process, and on the caller itself. Only the body's label needs the
    /// process between slices: `current` is None while it runs.
    pub fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        let p = self.0.router.table.get(pid)?;
        Some(info_of(&self.0, &p, label(&p)))
    }

    /// A summary of `pid` from its published counters, or None if it is not alive.
    /// Never waits: unlike `process_info` it only *tries* the process's lock (for the
    /// label), so it is safe on a process that is running, even the caller itself.
    pub fn process_summary(&self, pid: Pid) -> Option<ProcessSummary> {
        let p = self.0.router.table.get(pid)?;
        let current = label(&p);
        Some(ProcessSummary {
            pid,
            status: p.status(),
            priority: p.priority().name(),
            reductions: p.reductions.load(Ordering::Relaxed),
            message_queue_len: p.message_queue_len(),
            memory: published_memory(&p),
            registered_name: self.0.registry.name_of(pid),
            current,
        })
    }

    /// Pids of all live processes.
    pub fn processes(&self) -> Vec<Pid> {
        self.0.router.table.pids()
    }

    /// Memory by category.
    pub fn memory(&self) -> Memory {
        let mut processes = 0;
        self.0.router.table.for_each(|p| {
            processes += published_memory(p);
        });
        self.memory_with(processes)
    }

    /// Memory by category, given the processes' bytes (summed by a table walk).
    pub(crate) fn memory_with(&self, processes: usize) -> Memory {
        let processes = processes + body_bytes();
        let binary = binary_bytes();
        let atom = atom_table_bytes();
        let limit = self.0.router.table.limit();
        let system = limit.div_ceil(crate::process::table::CHUNK) * 16
            + self.0.router.table.count().next_power_of_two().min(limit) * 12
            + self.0.timers.bytes();
        // What the VM's counters put in the global allocator: all but the binaries
        // owned elsewhere (Python `bytes` shared in place) and the bodies' own bytes.
        let counted = (processes - body_bytes().min(processes))
            + (binary - crate::term::foreign_binary_bytes().min(binary))
            + atom
            + system;
        let allocator = ALLOCATOR_PROBE.get().map_or(0, |probe| probe(counted));
        Memory {
            total: processes + binary + atom + system + allocator,
            processes,
            binary,
            atom,
            system,
            allocator,
        }
    }

    /// System facts.
    pub fn system_info(&self) -> SystemInfo {
        let c = &self.0.config;
        SystemInfo {
            schedulers: self.0.router.sched.count(),
            schedulers_online: self.0.router.sched.online(),
            dirty_cpu_schedulers: c.dirty_cpu,
            dirty_io_schedulers: c.dirty_io,
            process_limit: self.0.router.table.limit(),
            process_count: self.0.router.table.count(),
            reductions_per_slice: c.reductions,
            atom_count: atom_count(),
            atom_limit: crate::term::MAX_ATOMS,
            registered: self.0.registry.names().len(),
            timers: self.0.timers.count(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Scheduler and process statistics.
    pub fn statistics(&self) -> Statistics {
        let sh = &self.0.router.sched;
        let up = self.0.started.elapsed();
        let (rq, global) = sh.run_queue_lengths();
        let mut total_reductions = 0;
        let mut switches = 0;
        let mut wall = Vec::new();
        let mut slices = Vec::new();
        let mut longest = Vec::new();
        let (mut long_schedules, mut takeovers, mut gcs, mut reclaimed) = (0, 0, 0, 0);
        for s in &sh.stats {
            long_schedules += s.long_schedules.load(Ordering::Relaxed);
            takeovers += s.takeovers.load(Ordering::Relaxed);
            gcs += s.gcs.load(Ordering::Relaxed);
            reclaimed += s.reclaimed_bytes.load(Ordering::Relaxed);
            let r = s.reductions.load(Ordering::Relaxed);
            let n = s.slices.load(Ordering::Relaxed);
            total_reductions += r;
            switches += n;
            slices.push(n);
            wall.push((Duration::from_nanos(busy_ns(s, up)).min(up), up));
            longest.push(Duration::from_nanos(
                s.longest_slice_ns.load(Ordering::Relaxed),
            ));
        }
        Statistics {
            scheduler_wall_time: wall,
            slices,
            run_queue_lengths: rq,
            global_run_queue: global,
            total_reductions,
            context_switches: switches,
            spawned: self.0.router.table.spawned(),
            exited: sh
                .stats
                .iter()
                .map(|s| s.exits.load(Ordering::Relaxed))
                .sum(),
            longest_slice: longest,
            long_schedules,
            watchdog_takeovers: takeovers,
            gcs,
            gc_reclaimed_bytes: reclaimed,
            dirty_cpu_wall_time: pool_wall(&self.0.dirty.cpu, up),
            dirty_io_wall_time: pool_wall(&self.0.dirty.io, up),
            dirty_queued: (self.0.dirty.cpu.queued(), self.0.dirty.io.queued()),
            dirty_completed: (
                self.0.dirty.cpu.completed.load(Ordering::Relaxed),
                self.0.dirty.io.completed.load(Ordering::Relaxed),
            ),
            messages_sent: self.messages_sent(),
        }
    }

    /// recon's `proc_window`: the `n` processes whose `by` ("reductions" or
    /// "message_queue_len" growth, or "memory" growth) grew most over `interval`.
    /// Two lock-free walks of the table, `interval` apart; processes born in between
    /// count from zero. Blocks the caller for `interval`, no process.
    pub fn proc_window(
        &self,
        n: usize,
        by: &str,
        interval: Duration,
    ) -> crate::Result<Vec<(Pid, u64)>> {
        let key = top_key(by)?;
        let mut before = std::collections::HashMap::with_capacity(self.0.router.table.count());
        self.0.router.table.for_each(|p| {
            before.insert(p.pid, key(p));
        });
        std::thread::sleep(interval);
        let mut heap = std::collections::BinaryHeap::new();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.0.router.table.for_each(|p| {
            let v = key(p).saturating_sub(before.get(&p.pid).copied().unwrap_or(0));
            push_top(&mut heap, n, v, p.pid);
        });
        Ok(sorted_top(heap))
    }

    /// The `n` processes with the largest value of `by` ("message_queue_len",
    /// "memory" or "reductions"), largest first. Walks the table without stopping any
    /// process, keeping a bounded heap of the best `n`.
    pub fn top(&self, n: usize, by: &str) -> crate::Result<Vec<(Pid, u64)>> {
        let key = top_key(by)?;
        let mut heap = std::collections::BinaryHeap::new();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.0
            .router
            .table
            .for_each(|p| push_top(&mut heap, n, key(p), p.pid));
        Ok(sorted_top(heap))
    }
}

pub(crate) type TopHeap = std::collections::BinaryHeap<std::cmp::Reverse<(u64, Pid)>>;

fn top_key(by: &str) -> crate::Result<fn(&Process) -> u64> {
    Ok(match by {
        "message_queue_len" => |p| p.message_queue_len() as u64,
        "memory" => |p| published_memory(p) as u64,
        "reductions" => |p| p.reductions.load(Ordering::Relaxed),
        other => {
            return Err(crate::Error::BadArg(format!(
                "by={other:?}: expected message_queue_len, memory or reductions"
            )))
        }
    })
}

pub(crate) fn push_top(heap: &mut TopHeap, n: usize, v: u64, pid: Pid) {
    if heap.len() < n {
        heap.push(std::cmp::Reverse((v, pid)));
    } else if let Some(std::cmp::Reverse((min, _))) = heap.peek() {
        if v > *min {
            heap.pop();
            heap.push(std::cmp::Reverse((v, pid)));
        }
    }
}

pub(crate) fn sorted_top(heap: TopHeap) -> Vec<(Pid, u64)> {
    let mut out: Vec<(Pid, u64)> = heap
        .into_iter()
        .map(|std::cmp::Reverse((v, p))| (p, v))
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    out
}

/// A scheduler's busy time up to `up` (ns): the closed periods plus the one in
/// progress. A park between the loads changes `busy_start_ns` (it is zeroed before the
/// period is added), so an unchanged start means `busy_ns` was read consistently.
fn busy_ns(s: &crate::scheduler::SchedStats, up: Duration) -> u64 {
    let up = up.as_nanos() as u64 + 1;
    loop {
        let start = s.busy_start_ns.load(Ordering::Acquire);
        let closed = s.busy_ns.load(Ordering::Acquire);
        if s.busy_start_ns.load(Ordering::Acquire) == start {
            let open = if start == 0 {
                0
            } else {
                up.saturating_sub(start)
            };
            return closed + open;
        }
    }
}

fn pool_wall(pool: &crate::dirty::Pool, up: Duration) -> (Duration, Duration) {
    let total = up * pool.size() as u32;
    (
        Duration::from_nanos(pool.busy_ns.load(Ordering::Relaxed)).min(total),
        total,
    )
}
