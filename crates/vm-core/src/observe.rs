//! What a live observer reads from the core: one walk for everything a refresh needs
//! ([`VmRef::census`]), the recent long_schedule events, the message counter for
//! sends from outside any process, and a process's details with a sample of its
//! queue ([`VmRef::process_detail`]).
//!
//! Invariants:
//! * Nothing here stops the world or waits on a process without a deadline. The
//!   census walks the table lock-free (as `top` and `memory` do) but once, instead of
//!   once per question: a web observer's refresh at a million processes costs one
//!   walk (~10-20 ms of one thread), not four.
//! * `process_detail` reads the private half only if it can take the process's lock
//!   within the caller's deadline (a process in a long slice keeps it); otherwise it
//!   answers from the published counters and says so (`locked == false`).
//! * The event log is bounded ([`LONG_SCHEDULE_LOG`] entries, oldest dropped) and its
//!   lock is taken only when a slice overran the long_schedule threshold (rare by
//!   definition) and by readers; the hot path never touches it.
//! * Counting messages costs nothing on the send path of a process: a slice counts
//!   its sends in its `Cx` and the scheduler adds them to its own counter when the
//!   slice ends (single writer, no atomic read-modify-write). Sends from outside any
//!   process (rare: the main thread, timers' owners) add to one shared atomic here.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::{published_memory, push_top, sorted_top, ProcessInfo, ProcessSummary};
use crate::term::{Pid, View};
use crate::vm::VmRef;
use crate::Memory;

/// Long_schedule events kept for observers: enough for an operator to see the
/// offenders of the last minutes without the log ever growing with a noisy system.
pub const LONG_SCHEDULE_LOG: usize = 64;

/// One slice that ran past the long_schedule threshold.
#[derive(Debug, Clone)]
pub struct LongScheduleEvent {
    /// The process that ran the slice.
    pub pid: Pid,
    /// How long the slice ran.
    pub took: Duration,
    /// What it runs (a Python process's function `__qualname__`).
    pub label: String,
    /// When the slice ended, as time since the VM started.
    pub at: Duration,
}

/// Observer state owned by the VM (see the module docs).
#[derive(Default)]
pub struct ObserveState {
    /// Messages sent from outside any process (`VmRef::send`).
    pub(crate) external_sends: AtomicU64,
    long_schedules: Mutex<VecDeque<LongScheduleEvent>>,
}

impl ObserveState {
    /// Records a long_schedule event, dropping the oldest past [`LONG_SCHEDULE_LOG`].
    pub(crate) fn record_long_schedule(&self, ev: LongScheduleEvent) {
        let mut log = self
            .long_schedules
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if log.len() >= LONG_SCHEDULE_LOG {
            log.pop_front();
        }
        log.push_back(ev);
    }
}

/// What one walk of the process table found (see [`VmRef::census`]).
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// Processes the walk saw.
    pub processes: usize,
    /// By run status: waiting, runnable, running, exiting.
    pub waiting: usize,
    /// Processes in a run queue.
    pub runnable: usize,
    /// Processes in a slice.
    pub running: usize,
    /// Messages queued in all processes.
    pub messages_queued: u64,
    /// `memory()`, with `processes` summed by this walk.
    pub memory: Memory,
    /// The `n` largest by message_queue_len, memory and reductions (as `top`).
    pub top_message_queue_len: Vec<(Pid, u64)>,
    /// The `n` largest by memory (bytes: control block + heap).
    pub top_memory: Vec<(Pid, u64)>,
    /// The `n` largest by reductions since the process started.
    pub top_reductions: Vec<(Pid, u64)>,
    /// How long the walk took.
    pub took: Duration,
}

/// A process's details for an observer's process page.
#[derive(Debug, Clone)]
pub struct ProcessDetail {
    /// The published counters (always there).
    pub summary: ProcessSummary,
    /// `process_info`, when the process's lock was taken within the deadline.
    pub info: Option<ProcessInfo>,
    /// The first queued messages, as the caller's renderer wrote them; empty when the
    /// lock was not taken.
    pub queue_sample: Vec<String>,
    /// Messages that arrived but are not yet moved to the private queue (not sampled).
    pub in_transit: usize,
}

impl VmRef {
    /// One lock-free walk of the process table answering everything a refresh shows:
    /// counts by status, memory by category, and the `n` largest processes by
    /// mailbox, memory and reductions. Equivalent to `memory()` and three `top(n, _)`
    /// calls, at the cost of one.
    pub fn census(&self, n: usize) -> Census {
        let t0 = Instant::now();
        let mut c = Census::default();
        let (mut by_q, mut by_mem, mut by_reds) = Default::default();
        let mut processes_bytes = 0usize;
        self.0.router.table.for_each(|p| {
            c.processes += 1;
            match p.status() {
                "waiting" => c.waiting += 1,
                "runnable" => c.runnable += 1,
                "running" => c.running += 1,
                _ => {}
            }
            let q = p.message_queue_len() as u64;
            let mem = published_memory(p);
            c.messages_queued += q;
            processes_bytes += mem;
            if n > 0 {
                push_top(&mut by_q, n, q, p.pid);
                push_top(&mut by_mem, n, mem as u64, p.pid);
                push_top(&mut by_reds, n, p.reductions.load(Ordering::Relaxed), p.pid);
            }
        });
        c.memory = self.memory_with(processes_bytes);
        c.top_message_queue_len = sorted_top(by_q);
        c.top_memory = sorted_top(by_mem);
        c.top_reductions = sorted_top(by_reds);
        c.took = t0.elapsed();
        c
    }

    /// The most recent long_schedule events, oldest first (at most
    /// [`LONG_SCHEDULE_LOG`]). Recorded whether or not a system monitor is set.
    pub fn long_schedule_events(&self) -> Vec<LongScheduleEvent> {
        let log = self
            .0
            .observe
            .long_schedules
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    /// `pid`'s details with up to `sample` of its queued messages, or None if it is
    /// not alive. Tries the process's lock until `wait` has passed; a process holding
    /// it longer (in a long slice) is described by its published counters only.
    /// Messages are rendered by `render` (e.g. [`render_bounded`] of the view, the
    /// Erlang form), under the process's lock: keep it bounded.
    pub fn process_detail(
        &self,
        pid: Pid,
        sample: usize,
        wait: Duration,
        render: &dyn Fn(View<'_>) -> String,
    ) -> Option<ProcessDetail> {
        let summary = self.process_summary(pid)?;
        let p = self.0.router.table.get(pid)?;
        let deadline = Instant::now() + wait;
        let guard = loop {
            match p.private.try_lock() {
                Ok(g) => break Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => break Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(std::sync::TryLockError::WouldBlock) => break None,
            }
        };
        let in_transit = p.inbox.len();
        let Some(g) = guard else {
            return Some(ProcessDetail {
                summary,
                info: None,
                queue_sample: Vec::new(),
                in_transit,
            });
        };
        if p.is_done() {
            return None;
        }
        let mut info = self.process_info(pid);
        if let Some(i) = info.as_mut() {
            // process_info reads the label only when the lock is free; we hold it.
            i.current = g.body.as_ref().map(|b| b.label());
        }
        let queue_sample = g
            .mailbox
            .iter()
            .take(sample)
            .map(|m| render(m.view()))
            .collect();
        Some(ProcessDetail {
            summary,
            info,
            queue_sample,
            in_transit,
        })
    }

    /// Messages sent since the VM started, by processes and from outside them.
    pub(crate) fn messages_sent(&self) -> u64 {
        let by_procs: u64 = self
            .0
            .router
            .sched
            .stats
            .iter()
            .map(|s| s.messages_sent.load(Ordering::Relaxed))
            .sum();
        by_procs + self.0.observe.external_sends.load(Ordering::Relaxed)
    }
}

/// A `fmt::Write` that keeps at most a byte budget and then fails, so that formatting
/// stops as soon as the budget is spent: rendering a huge term costs the budget, not
/// its size.
pub struct Bounded {
    out: String,
    left: usize,
}

impl Bounded {
    /// A writer that keeps at most `max` bytes.
    pub fn new(max: usize) -> Bounded {
        Bounded {
            out: String::new(),
            left: max,
        }
    }

    /// The text written; "..." appended when `cut` (the write that ran out failed).
    pub fn finish(mut self, cut: bool) -> String {
        if cut {
            self.out.push_str("...");
        }
        self.out
    }
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() <= self.left {
            self.out.push_str(s);
            self.left -= s.len();
            return Ok(());
        }
        let mut cut = self.left;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.out.push_str(&s[..cut]);
        self.left = 0;
        Err(fmt::Error)
    }
}

/// `x`'s display form cut at `max` bytes (on a char boundary) with "..." appended.
pub fn render_bounded(x: &dyn fmt::Display, max: usize) -> String {
    let mut b = Bounded::new(max);
    let cut = write!(b, "{x}").is_err();
    b.finish(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_bounded_cuts_on_char_boundaries() {
        assert_eq!(render_bounded(&"short", 10), "short");
        assert_eq!(render_bounded(&"exactly10!", 10), "exactly10!");
        assert_eq!(render_bounded(&"0123456789abc", 10), "0123456789...");
        // "é" is two bytes: a cut in its middle moves back to before it.
        assert_eq!(render_bounded(&"aaaaaaaaaé", 10), "aaaaaaaaa...");
    }

    #[test]
    fn the_event_log_is_bounded_and_keeps_the_newest() {
        let s = ObserveState::default();
        for i in 0..(LONG_SCHEDULE_LOG as u32 + 10) {
            s.record_long_schedule(LongScheduleEvent {
                pid: Pid::new(i, 0),
                took: Duration::from_millis(11),
                label: format!("f{i}"),
                at: Duration::from_secs(u64::from(i)),
            });
        }
        let log = s.long_schedules.lock().unwrap();
        assert_eq!(log.len(), LONG_SCHEDULE_LOG);
        assert_eq!(log.front().map(|e| e.pid.index), Some(10));
        assert_eq!(
            log.back().map(|e| e.label.clone()),
            Some(format!("f{}", LONG_SCHEDULE_LOG + 9))
        );
    }
}
