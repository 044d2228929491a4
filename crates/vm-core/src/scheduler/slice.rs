//! One slice: the perimeter around it, and the accounting and GC that close it.
//!
//! A slice is: mark the process RUNNING, drain its inbox, resume its body with a
//! reduction budget, then (unless it ended) collect its heap if due, publish its
//! counters, and hand it back — requeued if it yielded, parked if it waits (requeued
//! instead if signals came meanwhile), or through the exit path if it ended.
//!
//! ## The perimeter
//!
//! Everything from the drain to the hand-back runs inside one `catch_unwind`. A panic
//! in the body's `resume` is the process's exit reason, `{panic, Message}` (it has a
//! perimeter of its own, so the slice goes on to end the process normally). A panic
//! anywhere else — the drain (a dirty result's `Drop`), GC, a body's `label`, the exit
//! path (a body's `Drop`, guarded there too) — is caught by the outer perimeter, which
//! ends the process the same way and leaves the scheduler as it is between slices:
//! the exit path is idempotent (each step takes what it releases), so it completes
//! whatever an interrupted one left; the slice is closed for the watchdog; the drain
//! buffer is emptied. The body is held outside the perimeter while it is out of the
//! process, so unwinding never drops it (a `Drop` that panicked while unwinding would
//! abort the program).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::worker::Sched;
use super::{bump, watchdog};
use crate::process::context::Cx;
use crate::process::inbox::Drain;
use crate::process::signal::Signal;
use crate::process::{Body, Priority, Process, Step};
use crate::term::{Atom, Fragment, Term};

impl Sched<'_> {
    /// Runs one slice of `p` inside the perimeter: a panic anywhere in it — the body
    /// (its `resume` has a perimeter of its own that turns the panic into the exit
    /// reason), the drain of its signals, GC, the accounting (a body's `label`), the
    /// exit path (a body's `Drop`) — ends that process with `{panic, Message}` and
    /// leaves this scheduler as it was between slices. The body is held outside the
    /// perimeter while it is out of the process, so unwinding never drops it (a `Drop`
    /// that panicked during unwinding would abort).
    pub(super) fn run_one(&mut self, p: Arc<Process>, prio: Priority) {
        self.shared().queues.count_out(prio);
        self.yielded = false;
        let Some(arrived) = p.inbox.begin_drain() else {
            // Not QUEUED: it exited (shutdown race); nothing to run.
            return;
        };
        self.seq += 2;
        let seq = self.seq + 1; // odd: in a slice
        self.vm.router.sched.stats[self.index]
            .slice_seq
            .store(seq, Ordering::Release);
        let mut body = None;
        let slice = catch_unwind(AssertUnwindSafe(|| self.slice(&p, seq, &mut body, arrived)));
        if let Err(e) = slice {
            self.recover(&p, seq, body, panic_reason(e));
        }
        // Receive timeouts whose waits outlived `ARM_AFTER` get their timers (one load
        // when there are none). Outside the perimeter: arming takes locks, runs no
        // process code, and cannot panic on a user's input.
        super::deferred::arm_old(self.vm, &self.shared().deferred[self.index], Some(self.seq));
    }

    /// Ends `p` after a panic escaped its slice, and closes the slice. The exit path
    /// is idempotent (each step takes what it releases), so it completes whatever an
    /// interrupted exit left.
    fn recover(
        &mut self,
        p: &Arc<Process>,
        seq: u64,
        body: Option<Box<dyn Body>>,
        reason: Fragment,
    ) {
        let (vm, index) = (self.vm, self.index);
        let done = catch_unwind(AssertUnwindSafe(|| {
            let mut g = p.lock();
            if body.is_some() {
                g.body = body;
            }
            vm.finish(p, g, reason);
            bump(&vm.router.sched.stats[index].exits, 1);
        }));
        debug_assert!(done.is_ok(), "the exit path panicked twice");
        self.vm.router.sched.stats[self.index]
            .slice_seq
            .store(seq + 1, Ordering::Release);
    }

    /// Ends `p` (the exit path, `VmInner::finish`) and counts the exit here.
    fn end(
        &self,
        p: &Arc<Process>,
        g: std::sync::MutexGuard<'_, crate::process::Private>,
        reason: Fragment,
    ) {
        self.vm.finish(p, g, reason);
        bump(&self.shared().stats[self.index].exits, 1);
    }

    /// One slice of `p` (see [`run_one`](Self::run_one)); `slot` holds the body while
    /// it is out of the process.
    fn slice(
        &mut self,
        p: &Arc<Process>,
        seq: u64,
        slot: &mut Option<Box<dyn Body>>,
        arrived: Drain<Signal>,
    ) {
        let mut g = p.lock();
        *slot = g.body.take();
        let Some(body) = slot.as_mut() else {
            // Already finished (shutdown race); nothing to run.
            return;
        };
        let mut budget = i64::from(self.vm.config.reductions);
        if self.contended && p.hooked {
            budget = (budget / i64::from(super::batch::CONTENDED_DIVISOR)).max(1);
        }
        let mut cx = Cx {
            vm: self.vm,
            proc: p,
            p: &mut g,
            budget,
            sent: 0,
            sched: self.index,
        };
        cx.apply_drained(arrived);
        let step = if cx.p.exiting.is_some() {
            None
        } else {
            match catch_unwind(AssertUnwindSafe(|| body.resume(&mut cx))) {
                Ok(s) => Some(s),
                Err(e) => Some(Step::Exit(panic_reason(e))),
            }
        };
        let mut used = (budget - cx.budget).max(1) as u64;
        super::bump(
            &self.vm.router.sched.stats[self.index].messages_sent,
            cx.sent,
        );
        cx.publish_queue_len();
        let exiting = cx.p.exiting.take();
        if let Some(reason) = exiting {
            // Killed by a signal: let the body clean up, then end it.
            let _ = catch_unwind(AssertUnwindSafe(|| body.terminate(&mut cx, &reason)));
            self.account(p, used, seq, &**body);
            g.body = slot.take();
            self.end(p, g, reason);
            return;
        }
        if let Some(m) = g.mem.as_deref_mut().filter(|m| m.heap.needs_gc()) {
            let report = m.heap.gc(&mut m.regs);
            used += report.reductions as u64;
            let st = &self.vm.router.sched.stats[self.index];
            st.gcs.fetch_add(1, Ordering::Relaxed);
            st.reclaimed_bytes
                .fetch_add(report.reclaimed_words as u64 * 8, Ordering::Relaxed);
            if report.major {
                p.major_gcs.fetch_add(1, Ordering::Relaxed);
            } else {
                p.minor_gcs.fetch_add(1, Ordering::Relaxed);
            }
        }
        p.publish_heap(&g);
        self.account(p, used, seq, &**body);
        g.body = slot.take();
        self.yielded = matches!(step, Some(Step::Yield));
        // Written only when it changes: a store per slice would dirty the line.
        if p.hooked && p.cpu_bound.load(Ordering::Relaxed) != self.yielded {
            p.cpu_bound.store(self.yielded, Ordering::Relaxed);
        }
        match step {
            Some(Step::Exit(reason)) => self.end(p, g, reason),
            Some(Step::Yield) | None => {
                drop(g);
                p.inbox.yielded();
                self.requeue(p.clone());
            }
            Some(Step::Wait) => {
                drop(g);
                if !p.inbox.park() {
                    // Signals arrived since the body last looked: run it again.
                    self.requeue(p.clone());
                }
            }
        }
    }

    fn account(&self, p: &Process, used: u64, seq: u64, body: &dyn Body) {
        // Single-writer counters (the process's, while it runs here; this scheduler's
        // own): a load and a store, no locked read-modify-write.
        bump(&p.reductions, used);
        let st = &self.vm.router.sched.stats[self.index];
        st.slice_seq.store(seq + 1, Ordering::Release);
        bump(&st.slices, 1);
        bump(&st.reductions, used);
        if st.long_seq.load(Ordering::Acquire) == seq {
            // The watchdog saw this slice running past the threshold.
            let seen = Duration::from_nanos(st.long_seen_ns.load(Ordering::Acquire));
            let el = self.vm.started.elapsed().saturating_sub(seen) + watchdog::TICK;
            let ns = el.as_nanos() as u64;
            if ns > st.longest_slice_ns.load(Ordering::Relaxed) {
                st.longest_slice_ns.store(ns, Ordering::Relaxed);
            }
            if el >= self.vm.config.long_schedule {
                st.long_schedules.fetch_add(1, Ordering::Relaxed);
                // The label is the body's code: a panic there gives a placeholder.
                let label = catch_unwind(AssertUnwindSafe(|| body.label()))
                    .unwrap_or_else(|_| String::from("(label panicked)"));
                self.vm.report_long_schedule(p.pid, el, &label);
            }
        }
    }
}

fn panic_reason(e: Box<dyn std::any::Any + Send>) -> Fragment {
    let msg = if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    };
    Fragment::from_term(&Term::Tuple(vec![
        Term::Atom(Atom::PANIC),
        Term::binary(msg.into_bytes()),
    ]))
}
