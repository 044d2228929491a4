//! `/metrics`: the VM's counters in Prometheus's text exposition format (0.0.4).
//!
//! Conventions followed (prometheus.io/docs/practices/naming): a `beamvm_` prefix;
//! base units in names (`_bytes`, `_seconds`); cumulative counters end in `_total`
//! and are typed `counter`, levels are `gauge`s; one metric per quantity with labels
//! for its parts (`kind` of memory, `scheduler` 1..N as Erlang numbers them, dirty
//! `pool` cpu/io) so that `sum()` over a label is meaningful. Utilisation is exported
//! as busy-seconds counters: `rate(beamvm_scheduler_busy_seconds_total[1m])` is each
//! scheduler's utilisation over the last minute (the `_ratio` gauge is since start).
//!
//! A scrape costs one census walk without tops (for memory and queued messages) plus
//! counters; `beamvm_scrape_duration_seconds` reports it.

use std::fmt::Write as _;

use vm_core::VmRef;

use crate::snapshot::secs;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per scheduler (label `scheduler`, 1-based).
    fn per_scheduler<T: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        values: impl IntoIterator<Item = T>,
    ) {
        self.family(name, kind, help);
        for (i, v) in values.into_iter().enumerate() {
            let id = (i + 1).to_string();
            self.sample(name, &[("scheduler", &id)], v);
        }
    }

    /// A family with one sample per dirty pool (label `pool`: cpu, io).
    fn per_pool<T: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        cpu: T,
        io: T,
    ) {
        self.family(name, kind, help);
        self.sample(name, &[("pool", "cpu")], cpu);
        self.sample(name, &[("pool", "io")], io);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for the VM `v` (or only `beamvm_up 0` when it is stopped).
pub fn render(v: Option<&VmRef>) -> String {
    let mut o = Out(String::with_capacity(8192));
    let Some(v) = v else {
        o.one(
            "beamvm_up",
            "gauge",
            "Whether the VM is running (1) or stopped (0).",
            0,
        );
        return o.0;
    };
    let t0 = std::time::Instant::now();
    let census = v.census(0);
    let s = v.statistics();
    let si = v.system_info();
    let m = &census.memory;
    o.one(
        "beamvm_up",
        "gauge",
        "Whether the VM is running (1) or stopped (0).",
        1,
    );
    let uptime = s
        .scheduler_wall_time
        .first()
        .map(|w| secs(w.1))
        .unwrap_or(0.0);
    o.one(
        "beamvm_uptime_seconds",
        "gauge",
        "Seconds since the VM started.",
        uptime,
    );
    o.one(
        "beamvm_processes",
        "gauge",
        "Live processes.",
        census.processes,
    );
    o.one(
        "beamvm_process_limit",
        "gauge",
        "The most processes that may be alive at once (+P).",
        si.process_limit,
    );
    o.one(
        "beamvm_processes_spawned_total",
        "counter",
        "Processes spawned since the VM started.",
        s.spawned,
    );
    o.one(
        "beamvm_processes_exited_total",
        "counter",
        "Processes exited since the VM started.",
        s.exited,
    );
    o.family(
        "beamvm_memory_bytes",
        "gauge",
        "Memory by kind: processes (control blocks, heaps, queued messages, process \
         frames), binary (shared binaries), atom (the atom table), system (process table, \
         timers, queues), allocator (what the allocator holds beyond those: caches, \
         fragmentation). Their sum is the total.",
    );
    for (kind, bytes) in [
        ("processes", m.processes),
        ("binary", m.binary),
        ("atom", m.atom),
        ("system", m.system),
        ("allocator", m.allocator),
    ] {
        o.sample("beamvm_memory_bytes", &[("kind", kind)], bytes);
    }
    o.one(
        "beamvm_schedulers",
        "gauge",
        "Scheduler threads.",
        si.schedulers,
    );
    o.one(
        "beamvm_schedulers_online",
        "gauge",
        "Schedulers taking work.",
        si.schedulers_online,
    );
    o.per_scheduler(
        "beamvm_scheduler_busy_seconds_total",
        "counter",
        "Seconds each scheduler spent not parked; rate() of it is the scheduler's utilisation.",
        s.scheduler_wall_time.iter().map(|w| secs(w.0)),
    );
    o.per_scheduler(
        "beamvm_scheduler_utilisation_ratio",
        "gauge",
        "Busy time over wall time of each scheduler since the VM started (0 to 1).",
        s.scheduler_utilisation(),
    );
    o.per_scheduler(
        "beamvm_run_queue_length",
        "gauge",
        "Processes waiting in each scheduler's run queues (all priorities).",
        s.run_queue_lengths.iter().copied(),
    );
    o.one(
        "beamvm_global_run_queue_length",
        "gauge",
        "Processes waiting in the shared (injector) run queues.",
        s.global_run_queue,
    );
    o.per_scheduler(
        "beamvm_slice_longest_seconds",
        "gauge",
        "The longest slice each scheduler ran (slices shorter than the watchdog tick are not timed).",
        s.longest_slice.iter().map(|d| secs(*d)),
    );
    o.one(
        "beamvm_reductions_total",
        "counter",
        "Reductions executed by all processes.",
        s.total_reductions,
    );
    o.one(
        "beamvm_context_switches_total",
        "counter",
        "Slices run by all schedulers.",
        s.context_switches,
    );
    o.one(
        "beamvm_messages_sent_total",
        "counter",
        "Messages sent by processes and from outside them.",
        s.messages_sent,
    );
    o.one(
        "beamvm_messages_queued",
        "gauge",
        "Messages waiting in all mailboxes.",
        census.messages_queued,
    );
    o.one(
        "beamvm_garbage_collections_total",
        "counter",
        "Garbage collections of process heaps.",
        s.gcs,
    );
    o.one(
        "beamvm_gc_reclaimed_bytes_total",
        "counter",
        "Bytes freed by garbage collections of process heaps.",
        s.gc_reclaimed_bytes,
    );
    o.one(
        "beamvm_long_schedules_total",
        "counter",
        "Slices that ran past the long_schedule threshold (10 ms).",
        s.long_schedules,
    );
    o.one(
        "beamvm_watchdog_takeovers_total",
        "counter",
        "Times the watchdog handed a stuck scheduler's work to the others.",
        s.watchdog_takeovers,
    );
    o.per_pool(
        "beamvm_dirty_threads",
        "gauge",
        "Threads of each dirty pool.",
        si.dirty_cpu_schedulers,
        si.dirty_io_schedulers,
    );
    o.per_pool(
        "beamvm_dirty_busy_seconds_total",
        "counter",
        "Thread-seconds each dirty pool spent running jobs (added when a job ends).",
        secs(s.dirty_cpu_wall_time.0),
        secs(s.dirty_io_wall_time.0),
    );
    o.per_pool(
        "beamvm_dirty_queued_jobs",
        "gauge",
        "Jobs waiting for a thread of each dirty pool.",
        s.dirty_queued.0,
        s.dirty_queued.1,
    );
    o.per_pool(
        "beamvm_dirty_jobs_completed_total",
        "counter",
        "Jobs finished by each dirty pool.",
        s.dirty_completed.0,
        s.dirty_completed.1,
    );
    o.one("beamvm_atoms", "gauge", "Atoms interned.", si.atom_count);
    o.one(
        "beamvm_atom_limit",
        "gauge",
        "The most atoms the table holds.",
        si.atom_limit,
    );
    o.one(
        "beamvm_registered_names",
        "gauge",
        "Registered process names.",
        si.registered,
    );
    o.one("beamvm_timers", "gauge", "Live timers.", si.timers);
    o.one(
        "beamvm_scrape_duration_seconds",
        "gauge",
        "VM work this scrape took (one walk of the process table and the counters).",
        secs(t0.elapsed()),
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_vm_says_so() {
        let text = render(None);
        assert!(
            text.contains("# TYPE beamvm_up gauge\nbeamvm_up 0\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
