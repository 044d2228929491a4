//! `Cx`: what a running process can do. A body gets one per slice.
//!
//! Everything a process does to the world goes through here: sends, spawns, receives,
//! links, monitors, exits, timers, names, its heap. Costs are charged in reductions
//! against the slice budget, as in BEAM; a body checks [`Cx::should_yield`] and
//! returns [`Step::Yield`] when the budget is spent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbox::Drain;
use super::mailbox::Key;
use super::signal::Signal;
use super::signal::{self, DirtyJob, DirtyResult};
use super::{Body, Priority, Private, Process, Step};
use crate::dirty::DirtyKind;
use crate::error::{Error, Result};
use crate::term::{Atom, Fragment, Heap, Pid, Ref, Term, View, Word};
use crate::vm::{SpawnOpts, VmInner};

/// Reductions charged per send (BEAM charges one per BIF call plus queue work).
pub(crate) const SEND_COST: i64 = 1;
/// A send to a process with a long queue costs one more reduction per this many
/// queued messages, capped at a slice: producers flooding a slow consumer slow down
/// (BEAM's sender punishment).
pub(crate) const SEND_PUNISH_PER: usize = 256;
/// Reductions per spawn (a spawn allocates and initialises a control block).
pub(crate) const SPAWN_COST: i64 = 10;
/// Reductions per received message.
pub(crate) const RECV_COST: i64 = 1;

/// The running process's view of the VM. See the module docs.
pub struct Cx<'a> {
    pub(crate) vm: &'a Arc<VmInner>,
    pub(crate) proc: &'a Arc<Process>,
    pub(crate) p: &'a mut Private,
    pub(crate) budget: i64,
    /// Messages sent in this slice (the scheduler adds them to its counter).
    pub(crate) sent: u64,
    /// The scheduler running this slice (its index).
    pub(crate) sched: usize,
}

impl<'a> Cx<'a> {
    /// This process's pid.
    pub fn self_pid(&self) -> Pid {
        self.proc.pid
    }

    // ---------------------------------------------------------------- reductions

    /// Charges `n` reductions.
    #[inline]
    pub fn bump(&mut self, n: i64) {
        self.budget -= n;
    }

    /// Reductions left in this slice.
    #[inline]
    pub fn budget_left(&self) -> i64 {
        self.budget
    }

    /// True when the slice's budget is spent (or the process must exit): return
    /// [`Step::Yield`].
    #[inline]
    pub fn should_yield(&self) -> bool {
        self.budget <= 0 || self.p.exiting.is_some()
    }

    // ---------------------------------------------------------------- messages

    /// Sends `msg` to `to`. Like Erlang's `!`, sending to a dead process is not an
    /// error (the message is dropped); the result says whether it was delivered to a
    /// live process's inbox.
    pub fn send(&mut self, to: Pid, msg: Fragment) -> bool {
        let d = self.vm.router.send(to, Signal::Message(msg));
        self.sent += 1;
        self.budget -= SEND_COST + (d.queue_len / SEND_PUNISH_PER).min(4000) as i64;
        d.delivered
    }

    /// Sends to a registered name; `Err(BadArg)` if no process has it (as Erlang).
    pub fn send_named(&mut self, name: Atom, msg: Fragment) -> Result<()> {
        let pid = self
            .vm
            .registry
            .whereis(name)
            .ok_or_else(|| Error::BadArg(format!("no process is registered as {name}")))?;
        self.send(pid, msg);
        Ok(())
    }

    /// Moves arrived signals into the mailbox, handling non-message signals.
    pub(crate) fn drain(&mut self) {
        if self.proc.inbox.is_empty() {
            return;
        }
        let proc = self.proc;
        self.apply_drained(proc.inbox.drain());
    }

    /// Handles signals already detached from the inbox (the scheduler's fused start of
    /// a slice, `Inbox::begin_drain`), in order, as `drain` does.
    pub(crate) fn apply_drained(&mut self, chain: Drain<Signal>) {
        for s in chain {
            self.handle_signal(s);
        }
        self.publish_queue_len();
    }

    pub(crate) fn publish_queue_len(&self) {
        let mb = &self.p.mailbox;
        self.proc.queued.store(mb.len() as u32, Ordering::Relaxed);
        self.proc
            .queued_bytes
            .store(mb.heap_bytes(), Ordering::Relaxed);
    }

    fn handle_signal(&mut self, s: Signal) {
        match s {
            Signal::AliasMessage { alias, msg } => self.alias_message(alias, msg),
            Signal::Down { mref, pid, reason } => {
                signal::apply(self.proc, self.p, Signal::Down { mref, pid, reason });
                // A monitor alias ends with its monitor (alias.rs).
                self.monitor_gone(mref);
            }
            s => signal::apply(self.proc, self.p, s),
        }
    }

    /// True when a signal has decided that this process ends (the body should return
    /// promptly; the scheduler ends it after this slice).
    pub fn is_exiting(&self) -> bool {
        self.p.exiting.is_some()
    }

    fn received(&mut self) {
        // The published queue length is refreshed when the inbox is drained and at the
        // end of the slice, not per message: senders read it on every send, and a
        // per-message store would bounce its cache line between the cores.
        self.budget -= RECV_COST;
        self.clear_wait();
    }

    /// The next message in arrival order, if any.
    pub fn recv(&mut self) -> Option<Fragment> {
        let m = if self.p.mailbox.is_empty() {
            // Fast path: the first arrived message goes straight to the caller without
            // passing through the private queue (the common case of a process that
            // keeps up with its mail). Signals handled on the way may have queued
            // messages of their own (a trapped EXIT, a DOWN, an alias message): then
            // the first of those is the next message.
            match self.take_first_arrival() {
                Some(m) => m,
                None => self.p.mailbox.pop_front()?,
            }
        } else {
            self.drain();
            self.p.mailbox.pop_front()?
        };
        self.received();
        Some(m)
    }

    /// With an empty mailbox: drains the inbox, handing back the first message and
    /// handling every other signal as `drain` does, in order.
    fn take_first_arrival(&mut self) -> Option<Fragment> {
        if self.proc.inbox.is_empty() {
            return None;
        }
        let proc = self.proc;
        let mut first = None;
        for s in proc.inbox.drain() {
            match s {
                Signal::Message(m) if first.is_none() && self.p.mailbox.is_empty() => {
                    first = Some(m);
                }
                other => self.handle_signal(other),
            }
        }
        self.publish_queue_len();
        first
    }

    /// Selective receive: the first message `pred` accepts, scanning only messages this
    /// pending receive has not rejected before (the save position).
    pub fn recv_where(&mut self, mut pred: impl FnMut(View<'_>) -> bool) -> Option<Fragment> {
        self.drain();
        // Each message examined costs a reduction (BEAM's loop_rec), so a long scan
        // counts as the work it is and is preempted like any other.
        let mut examined = 0;
        let m = self.p.mailbox.take_where(&mut |v| {
            examined += 1;
            pred(v)
        });
        self.budget -= examined;
        let m = m?;
        self.received();
        Some(m)
    }

    /// Keyed selective receive: the first message carrying `key` (a reference among
    /// its first tuple elements, or its tag) that `pred` accepts. Its cost does not
    /// depend on how many unrelated messages are queued.
    pub fn recv_keyed(&mut self, key: Key, pred: impl FnMut(View<'_>) -> bool) -> Option<Fragment> {
        self.recv_keyed_any(&[key], pred)
    }

    /// Keyed selective receive with several keys (a receive with several patterns,
    /// each keyed): the first message in arrival order that carries one of `keys` and
    /// that `pred` accepts, at a cost independent of unrelated queued messages.
    pub fn recv_keyed_any(
        &mut self,
        keys: &[Key],
        pred: impl FnMut(View<'_>) -> bool,
    ) -> Option<Fragment> {
        self.drain();
        let mut examined = 0;
        let mut pred = pred;
        let m = self.p.mailbox.take_keyed_any(keys, &mut |v| {
            examined += 1;
            pred(v)
        });
        self.budget -= examined;
        let m = m?;
        self.received();
        Some(m)
    }

    /// Messages queued for this process.
    pub fn message_queue_len(&mut self) -> usize {
        self.drain();
        self.p.mailbox.len()
    }

    /// Returns the step that suspends this process until a signal arrives; with a
    /// timeout, also until the timeout (counted from the first `wait` of the pending
    /// receive, so spurious wake-ups do not extend it). A zero timeout times out at
    /// once. After waking, check [`Cx::timed_out`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> Step {
        if let Some(w) = self.p.pend.as_deref_mut() {
            if std::mem::take(&mut w.unseen) {
                // `timed_out` drained messages the body has not looked at yet: the inbox
                // is empty, so sleeping now would sleep on them. Look again first.
                return Step::Yield;
            }
        }
        if let Some(t) = timeout {
            let pid = self.proc.pid;
            let timers = &self.vm.timers;
            let w = self.p.pend();
            if w.deadline.is_none() {
                if t.is_zero() {
                    w.timed_out = true;
                    return Step::Yield;
                }
                let Some(at) = crate::timer::deadline(t) else {
                    // Longer than the clock can count: no timeout.
                    return Step::Wait;
                };
                w.deadline = Some(at);
                w.wait_gen += 1;
                // A long timeout is armed by the scheduler only if the wait outlives
                // `ARM_AFTER` (most end in microseconds): see scheduler/deferred.rs.
                let sh = &self.vm.router.sched;
                match sh.deferred.get(self.sched) {
                    Some(list) if t >= crate::scheduler::deferred::DEFER_FROM => {
                        w.wait_timer = None;
                        w.note = Some(self.sched);
                        let seq = sh.stats[self.sched].slice_seq.load(Ordering::Relaxed);
                        list.push(pid, w.wait_gen, at - t, at, seq);
                    }
                    _ => w.wait_timer = Some(timers.receive_timeout(at, pid, w.wait_gen)),
                }
            }
        }
        Step::Wait
    }

    /// True (once) when the pending receive's timeout has passed; resets the receive.
    pub fn timed_out(&mut self) -> bool {
        let before = self.p.mailbox.len();
        self.drain();
        let grew = self.p.mailbox.len() > before;
        let expired = self
            .p
            .pend
            .as_deref()
            .is_some_and(|w| w.timed_out || w.deadline.is_some_and(|d| Instant::now() >= d));
        if expired {
            self.clear_wait();
        } else if grew {
            self.p.pend().unseen = true;
        }
        expired
    }

    /// Abandons the pending receive (its save position and timeout).
    pub fn cancel_receive(&mut self) {
        self.clear_wait();
    }

    fn clear_wait(&mut self) {
        self.p.mailbox.reset_save();
        if let Some(w) = self.p.pend.as_deref_mut() {
            w.timed_out = false;
            if w.deadline.take().is_some() {
                if let Some(id) = w.wait_timer.take() {
                    self.vm.timers.remove(id);
                }
                if let Some(i) = w.note.take() {
                    if let Some(list) = self.vm.router.sched.deferred.get(i) {
                        list.withdraw(self.proc.pid, w.wait_gen);
                    }
                }
                w.wait_gen += 1;
            }
        }
    }

    // ---------------------------------------------------------------- processes

    /// Spawns a process.
    pub fn spawn(&mut self, body: impl Body) -> Result<Pid> {
        self.spawn_opts(Box::new(body), SpawnOpts::default())
            .map(|(p, _)| p)
    }

    /// Spawns a process linked to this one, atomically.
    pub fn spawn_link(&mut self, body: impl Body) -> Result<Pid> {
        let opts = SpawnOpts {
            link: true,
            ..SpawnOpts::default()
        };
        self.spawn_opts(Box::new(body), opts).map(|(p, _)| p)
    }

    /// Spawns a process monitored by this one, atomically; returns the monitor ref.
    pub fn spawn_monitor(&mut self, body: impl Body) -> Result<(Pid, Ref)> {
        let opts = SpawnOpts {
            monitor: true,
            ..SpawnOpts::default()
        };
        let (pid, r) = self.spawn_opts(Box::new(body), opts)?;
        r.map(|r| (pid, r))
            .ok_or_else(|| Error::BadArg("monitor was not created".into()))
    }

    /// Spawns with options; returns the pid and the monitor ref when asked for.
    pub fn spawn_opts(
        &mut self,
        body: Box<dyn Body>,
        opts: SpawnOpts,
    ) -> Result<(Pid, Option<Ref>)> {
        self.budget -= SPAWN_COST;
        let me = self.proc.pid;
        let (pid, mref) = self.vm.spawn_with(body, opts, Some(me))?;
        if opts.link || mref.is_some() {
            self.proc.rel(|rel| {
                if opts.link {
                    rel.links.insert(pid);
                }
                if let Some(r) = mref {
                    rel.monitoring.insert(r.0, pid);
                }
            });
        }
        Ok((pid, mref))
    }

    /// Links this process to `pid` (bidirectional, idempotent). If `pid` does not
    /// exist: a process trapping exits gets `{'EXIT', Pid, noproc}` and `Ok`; one that
    /// does not gets `Err(NoProc)`, as erlang:link/1.
    pub fn link(&mut self, pid: Pid) -> Result<()> {
        let me = self.proc.pid;
        if pid == me {
            return Ok(());
        }
        self.budget -= SEND_COST;
        if !self.proc.rel(|r| r.links.insert(pid)) {
            return Ok(()); // already linked
        }
        if self.vm.router.send(pid, Signal::Link(me)).delivered {
            return Ok(());
        }
        self.proc.rel(|r| r.links.remove(&pid));
        if self.proc.traps_exits() {
            let msg = Term::Tuple(vec![
                Term::Atom(Atom::EXIT),
                Term::Pid(pid),
                Term::Atom(Atom::NOPROC),
            ]);
            self.p.mailbox.push(Fragment::from_term(&msg));
            self.publish_queue_len();
            Ok(())
        } else {
            Err(Error::NoProc)
        }
    }

    /// Removes the link to `pid`, if any (idempotent).
    pub fn unlink(&mut self, pid: Pid) {
        let me = self.proc.pid;
        let had = self.proc.rel_if(|r| r.links.remove(&pid)) == Some(true);
        if had {
            self.vm.router.send(pid, Signal::Unlink(me));
        }
    }

    /// Monitors `pid`: exactly one `{'DOWN', Ref, process, Pid, Reason}` will arrive
    /// (`noproc` at once if it is not alive), unless demonitored first.
    pub fn monitor(&mut self, pid: Pid) -> Ref {
        self.budget -= SEND_COST;
        let me = self.proc.pid;
        let mref = Ref::new();
        self.proc.rel(|r| r.monitoring.insert(mref.0, pid));
        let sig = Signal::Monitor { from: me, mref };
        if !self.vm.router.send(pid, sig).delivered {
            self.monitor_noproc(mref, pid);
        }
        mref
    }

    /// A monitor of `pid` found it not alive: its `noproc` DOWN, at once.
    pub(crate) fn monitor_noproc(&mut self, mref: Ref, pid: Pid) {
        let down = Signal::Down {
            mref,
            pid,
            reason: Fragment::immediate(Word::atom(Atom::NOPROC)),
        };
        self.handle_signal(down);
        self.publish_queue_len();
    }

    /// Removes a monitor. With `flush`, also removes its DOWN message if one already
    /// arrived. Returns true if the monitor was still active.
    pub fn demonitor(&mut self, mref: Ref, flush: bool) -> bool {
        // The monitor and a monitor alias on it go under one relations lock (a call's
        // demonitor: one lock, not two).
        let (target, alias_gone) = self
            .proc
            .rel_if(|r| match r.monitoring.remove(&mref.0) {
                Some(t) => (Some(t), crate::alias::end_monitor_alias(r, mref)),
                None => (None, false),
            })
            .unwrap_or((None, false));
        if let Some(t) = target {
            self.vm.router.send(t, Signal::Demonitor(mref));
        }
        if alias_gone {
            self.vm.router.aliases.remove(mref.0);
        }
        if flush {
            self.drain();
            // Found by the ref's index entry, not by a scan: a call's demonitor costs
            // the same with 50,000 unrelated messages queued (gen_server's flush).
            let mut is_down = |v: View<'_>| {
                v.tuple_len() == Some(5)
                    && v.tuple_get(0).and_then(|e| e.as_atom()) == Some(Atom::DOWN)
                    && v.tuple_get(1).and_then(|e| e.as_ref()) == Some(mref)
            };
            while self
                .p
                .mailbox
                .take_keyed(Key::of_ref(mref), &mut is_down)
                .is_some()
            {}
            self.publish_queue_len();
        }
        target.is_some()
    }

    /// Sends an exit signal to `pid` (erlang:exit/2). To oneself it takes effect at
    /// the next receive or slice boundary.
    pub fn exit(&mut self, pid: Pid, reason: Fragment) {
        self.budget -= SEND_COST;
        let me = self.proc.pid;
        let sig = Signal::Exit {
            from: me,
            reason,
            linked: false,
        };
        if pid == me {
            self.handle_signal(sig);
        } else {
            self.vm.router.send(pid, sig);
        }
    }

    /// Sets trap_exit; returns the old value.
    pub fn trap_exit(&mut self, on: bool) -> bool {
        self.proc.trap_exit.swap(on, Ordering::Relaxed)
    }

    /// Sets this process's priority; returns the old one.
    pub fn set_priority(&mut self, prio: Priority) -> Priority {
        Priority::from_u8(self.proc.priority.swap(prio as u8, Ordering::Relaxed))
    }

    /// `process_info` of this process, its counters brought up to date first (its
    /// queue and heap as they are now, not as of its last slice); `current` is what it
    /// runs (its body is out of the process table's reach while it runs).
    pub fn process_info(&mut self, current: String) -> crate::ProcessInfo {
        self.drain();
        self.proc.publish_heap(self.p);
        crate::stats::info_of(self.vm, self.proc, Some(current))
    }

    /// Processes linked to this one.
    pub fn links(&self) -> Vec<Pid> {
        self.proc
            .rel_if(|r| r.links.iter().copied().collect())
            .unwrap_or_default()
    }

    // ---------------------------------------------------------------- names, timers

    /// Registers this process (or another) under `name`.
    pub fn register(&mut self, name: Atom, pid: Pid) -> Result<()> {
        self.vm.register(name, pid)
    }

    /// Removes a registration.
    pub fn unregister(&mut self, name: Atom) -> Result<()> {
        self.vm.registry.unregister(name).map(|_| ())
    }

    /// The pid registered as `name`.
    pub fn whereis(&self, name: Atom) -> Option<Pid> {
        self.vm.registry.whereis(name)
    }

    /// Sends `msg` to `to` after `after`; the returned ref cancels it.
    pub fn send_after(&mut self, after: Duration, to: Pid, msg: Fragment) -> Ref {
        self.budget -= SEND_COST;
        self.vm.send_after(after, to, msg)
    }

    /// Sends `msg` after `after` to the process registered as `name` when the timer
    /// fires (see [`crate::VmRef::send_after_named`]).
    pub fn send_after_named(&mut self, after: Duration, name: Atom, msg: Fragment) -> Ref {
        self.budget -= SEND_COST;
        self.vm().send_after_named(after, name, msg)
    }

    /// Cancels a timer; the time it had left, or None if it already fired or never
    /// existed.
    pub fn cancel_timer(&mut self, r: Ref) -> Option<Duration> {
        self.vm.timers.cancel(r.0)
    }

    // ---------------------------------------------------------------- dirty pools

    /// Runs `job` on a dirty pool and suspends this process until it finishes (return
    /// the step this gives). Other processes keep running meanwhile. After waking, take
    /// the outcome with [`Cx::dirty_result`] (None while the job still runs: wait
    /// again). One dirty job per process at a time: `Err(BadArg)` otherwise.
    pub fn dirty(&mut self, kind: DirtyKind, job: DirtyJob) -> Result<Step> {
        if self
            .p
            .pend
            .as_deref()
            .is_some_and(|w| w.dirty_pending.is_some())
        {
            return Err(Error::BadArg(
                "this process already waits for a dirty job".into(),
            ));
        }
        let id = self.vm.dirty.submit(kind, self.proc.pid, job);
        self.p.pend().dirty_pending = Some(id);
        Ok(Step::Wait)
    }

    /// The outcome of this process's dirty job, once it finished.
    pub fn dirty_result(&mut self) -> Option<DirtyResult> {
        self.drain();
        self.p
            .pend
            .as_deref_mut()
            .and_then(|w| w.dirty_result.take())
    }

    /// True while a dirty job of this process runs.
    pub fn dirty_pending(&self) -> bool {
        self.p
            .pend
            .as_deref()
            .is_some_and(|w| w.dirty_pending.is_some())
    }

    // ---------------------------------------------------------------- heap

    /// This process's heap (for terms a native body keeps between slices).
    pub fn heap(&mut self) -> &mut Heap {
        &mut self.p.mem().heap
    }

    /// The process's registers: the GC roots. Words that must survive a GC (which
    /// runs between slices) must live here; they are updated in place.
    pub fn regs(&mut self) -> &mut Vec<Word> {
        &mut self.p.mem().regs
    }

    /// The VM's I/O reactor, for this process's socket operations (pass
    /// [`Cx::self_pid`] as the caller; results that cannot be immediate arrive as
    /// messages, see `crate::io::messages`).
    pub fn io(&self) -> std::result::Result<Arc<crate::io::Reactor>, crate::io::IoError> {
        self.vm.io.reactor(self.vm)
    }

    /// The VM this process runs in.
    pub fn vm(&self) -> crate::VmRef {
        crate::VmRef(self.vm.clone())
    }
}
