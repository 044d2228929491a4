//! The data behind one refresh of the page: `/api/snapshot`.
//!
//! A snapshot is what `beamvm.observer.snapshot_json()` sends over the observer socket
//! (same keys, same units: seconds as floats, pids as `"<0.5.0>"`) plus what the page
//! adds: `processes_by_status`, `messages_queued`, `long_schedule_events`. Counters
//! are cumulative; the page turns two snapshots into rates (utilisation = Δbusy /
//! Δtotal per scheduler, reductions/s, messages/s), so the server keeps no history.
//!
//! Cost: one census walk of the process table (memory, status counts, three tops)
//! plus counters and the summaries of at most 3·n listed processes. `took` is that VM
//! work in wall time, `took_cpu` in CPU time of the serving thread (the same on an idle
//! machine; on a loaded one wall time also counts waiting for a core): the figures
//! docs/observer.md quotes at a million processes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use vm_core::{Census, Pid, Statistics, VmRef};

/// What `top` ranks by, in the order the page shows them.
pub const BY: [&str; 3] = ["message_queue_len", "memory", "reductions"];

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// CPU time the calling thread has used: the cost of a refresh however busy the machine
/// is (wall time also counts the time the thread waited for a core).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid, exclusively
    // borrowed local; CLOCK_THREAD_CPUTIME_ID exists on every Unix we build for, and on
    // failure (rc != 0) `ts` is not read.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `statistics_full()`'s dict as JSON (the same keys; pairs as 2-element arrays).
pub fn statistics_json(s: &Statistics) -> Value {
    let pair = |(b, t): (Duration, Duration)| json!([secs(b), secs(t)]);
    let uptime = s
        .scheduler_wall_time
        .first()
        .map(|(_, t)| secs(*t))
        .unwrap_or(0.0);
    json!({
        "uptime": uptime,
        "scheduler_wall_time": s.scheduler_wall_time.iter().map(|w| pair(*w)).collect::<Vec<_>>(),
        "scheduler_utilisation": s.scheduler_utilisation(),
        "slices": s.slices,
        "run_queue_lengths": s.run_queue_lengths,
        "global_run_queue": s.global_run_queue,
        "total_reductions": s.total_reductions,
        "context_switches": s.context_switches,
        "spawned": s.spawned,
        "exited": s.exited,
        "longest_slice": s.longest_slice.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "long_schedules": s.long_schedules,
        "watchdog_takeovers": s.watchdog_takeovers,
        "gcs": s.gcs,
        "gc_reclaimed_bytes": s.gc_reclaimed_bytes,
        "dirty_cpu_wall_time": pair(s.dirty_cpu_wall_time),
        "dirty_io_wall_time": pair(s.dirty_io_wall_time),
        "dirty_cpu_utilisation": s.dirty_utilisation().0,
        "dirty_io_utilisation": s.dirty_utilisation().1,
        "dirty_cpu_queued": s.dirty_queued.0,
        "dirty_io_queued": s.dirty_queued.1,
        "dirty_cpu_completed": s.dirty_completed.0,
        "dirty_io_completed": s.dirty_completed.1,
        "messages_sent": s.messages_sent,
    })
}

/// `system_info()` as JSON.
pub fn system_info_json(s: &vm_core::SystemInfo) -> Value {
    json!({
        "schedulers": s.schedulers,
        "schedulers_online": s.schedulers_online,
        "dirty_cpu_schedulers": s.dirty_cpu_schedulers,
        "dirty_io_schedulers": s.dirty_io_schedulers,
        "process_limit": s.process_limit,
        "process_count": s.process_count,
        "reductions_per_slice": s.reductions_per_slice,
        "atom_count": s.atom_count,
        "atom_limit": s.atom_limit,
        "registered": s.registered,
        "timers": s.timers,
        "version": s.version,
    })
}

/// `memory()` as JSON.
pub fn memory_json(m: &vm_core::Memory) -> Value {
    json!({
        "total": m.total,
        "processes": m.processes,
        "binary": m.binary,
        "atom": m.atom,
        "system": m.system,
        "allocator": m.allocator,
    })
}

fn top_rows(v: &VmRef, list: &[(Pid, u64)]) -> Value {
    let rows = list
        .iter()
        .map(|(pid, value)| {
            let mut row = Map::new();
            row.insert("pid".into(), json!(pid.to_string()));
            row.insert("value".into(), json!(value));
            if let Some(i) = v.process_summary(*pid) {
                row.insert(
                    "name".into(),
                    json!(i.registered_name.map(|a| a.as_str().to_owned())),
                );
                row.insert("current".into(), json!(i.current));
                row.insert("priority".into(), json!(i.priority));
                row.insert("status".into(), json!(i.status));
                row.insert("message_queue_len".into(), json!(i.message_queue_len));
                row.insert("memory".into(), json!(i.memory));
                row.insert("reductions".into(), json!(i.reductions));
            }
            Value::Object(row)
        })
        .collect();
    Value::Array(rows)
}

/// One snapshot with the `n` largest processes per category (see the module docs).
pub fn snapshot(v: &VmRef, n: usize) -> Value {
    let t0 = std::time::Instant::now();
    let cpu0 = thread_cpu_time();
    let census: Census = v.census(n);
    let stats = v.statistics();
    let system = v.system_info();
    let top = json!({
        "message_queue_len": top_rows(v, &census.top_message_queue_len),
        "memory": top_rows(v, &census.top_memory),
        "reductions": top_rows(v, &census.top_reductions),
    });
    let events: Vec<Value> = v
        .long_schedule_events()
        .iter()
        .rev()
        .map(|e| {
            json!({
                "pid": e.pid.to_string(),
                "took": secs(e.took),
                "label": e.label,
                "at": secs(e.at),
            })
        })
        .collect();
    let took = t0.elapsed();
    let took_cpu = thread_cpu_time().saturating_sub(cpu0);
    json!({
        "running": true,
        "time": unix_now(),
        "os_pid": std::process::id(),
        "system_info": system_info_json(&system),
        "memory": memory_json(&census.memory),
        "statistics": statistics_json(&stats),
        "process_count": census.processes,
        "processes_by_status": {
            "waiting": census.waiting,
            "runnable": census.runnable,
            "running": census.running,
        },
        "messages_queued": census.messages_queued,
        "top": top,
        "long_schedule_events": events,
        "took": secs(took),
        "took_cpu": secs(took_cpu),
        "census_took": secs(census.took),
    })
}

/// The snapshot of a stopped VM (what the socket observer sends too).
pub fn not_running() -> Value {
    json!({ "running": false, "time": unix_now(), "os_pid": std::process::id() })
}
