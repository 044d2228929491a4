//! The VM: process table, schedulers, timers, registry, and the operations that need
//! all of them (spawn, signal delivery, process exit).
//!
//! [`Vm`] owns the threads (dropping it shuts the VM down and joins them);
//! [`VmRef`] is a cheap handle for everything else — sending, spawning and
//! introspection from outside any process, or from a body.
//!
//! Process exit runs on the scheduler thread of the dying process, with its private
//! half locked: links, monitors, names and timers are all cleaned up there, in this
//! order — mark DONE, leave the table (no new lookups), close the inbox (no new
//! signals; the ones that raced in are answered: `noproc` to late links and monitors),
//! signal links and monitors, release the name, cancel timers, free heap and mailbox.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::VmConfig;
use crate::dirty::DirtyPools;
use crate::error::{Error, Result};
use crate::process::signal::Signal;
use crate::process::table::{ProcessTable, EXTERNAL_PID};
use crate::process::{Body, Priority, Private, Process, Relations, DONE, QUEUED};
use crate::registry::Registry;
use crate::scheduler::Shared as SchedShared;
use crate::term::Term;
use crate::term::{Atom, Fragment, Pid, Ref, Word};
use crate::timer::Timers;

static NEXT_VM_ID: AtomicU64 = AtomicU64::new(1);

/// Options for spawning.
#[derive(Clone, Copy, Debug)]
pub struct SpawnOpts {
    /// Link the new process to the spawner (atomically).
    pub link: bool,
    /// Monitor the new process from the spawner (atomically).
    pub monitor: bool,
    /// Initial priority.
    pub priority: Priority,
    /// Start with trap_exit set.
    pub trap_exit: bool,
}

impl Default for SpawnOpts {
    fn default() -> Self {
        SpawnOpts {
            link: false,
            monitor: false,
            priority: Priority::Normal,
            trap_exit: false,
        }
    }
}

/// Shared VM state. Reached through [`VmRef`] / [`Vm`].
pub struct VmInner {
    pub(crate) id: u64,
    pub(crate) config: VmConfig,
    pub(crate) table: ProcessTable,
    pub(crate) sched: SchedShared,
    pub(crate) timers: Timers,
    pub(crate) registry: Registry,
    pub(crate) stopping: AtomicBool,
    pub(crate) started: Instant,
    pub(crate) exits: AtomicU64,
    pub(crate) registered: Mutex<()>,
    pub(crate) dirty: DirtyPools,
    pub(crate) system_monitor: Mutex<Option<Pid>>,
    /// VM threads (schedulers, timer, watchdog) that have returned, for shutdown.
    pub(crate) exited: (Mutex<usize>, std::sync::Condvar),
}

impl VmInner {
    fn thread_exited(&self) {
        let mut n = self.exited.0.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        self.exited.1.notify_all();
    }
}

impl VmInner {
    /// Delivers a signal; returns (delivered, receiver's queue length before).
    pub(crate) fn send_signal(&self, to: Pid, sig: Signal) -> (bool, usize) {
        let Some(p) = self.table.get(to) else {
            return (false, 0);
        };
        // The inbox's own count (on the line the push touches anyway) sizes the send
        // cost; the published mailbox length would be one more cache miss per send.
        let qlen = p.inbox.len();
        if p.inbox.push(sig).is_err() {
            return (false, 0);
        }
        if p.notify() {
            self.sched.enqueue(self, p);
        }
        (true, qlen)
    }

    pub(crate) fn spawn_with(
        &self,
        body: Box<dyn Body>,
        opts: SpawnOpts,
        parent: Option<Pid>,
    ) -> Result<(Pid, Option<Ref>)> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Error::NotRunning);
        }
        let mref = (opts.monitor && parent.is_some()).then(Ref::new);
        let proc = self
            .table
            .insert(|pid| {
                let p = Process::new(pid, body, opts.priority);
                {
                    let mut g = p.lock();
                    g.trap_exit = opts.trap_exit;
                    if let Some(parent) = parent {
                        if opts.link || mref.is_some() {
                            let mut rel = Relations::default();
                            if opts.link {
                                rel.links.insert(parent);
                            }
                            if let Some(r) = mref {
                                rel.monitored_by.insert(r.0, parent);
                            }
                            g.rel = Some(Box::new(rel));
                        }
                    }
                }
                p
            })
            .map_err(|_| Error::SystemLimit)?;
        let pid = proc.pid;
        proc.state.store(QUEUED, Ordering::Release);
        self.sched.enqueue(self, proc);
        Ok((pid, mref))
    }

    pub(crate) fn register(&self, name: Atom, pid: Pid) -> Result<()> {
        // Serialise register against exits releasing names, so a name is never left
        // pointing at a process that has already run its exit path.
        let _g = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if name == Atom::UNDEFINED {
            return Err(Error::BadArg("'undefined' cannot be registered".into()));
        }
        let alive = self.table.with(pid, |p| !p.is_done()).unwrap_or(false);
        if !alive {
            return Err(Error::BadArg(format!("{pid} is not alive")));
        }
        self.registry.register(name, pid)
    }

    /// Sends a long_schedule event to the system monitor, if one is set:
    /// `{monitor, Pid, long_schedule, [{timeout, Ms}, {in, Label}]}` (BEAM's shape).
    pub(crate) fn report_long_schedule(&self, pid: Pid, took: Duration, label: &str) {
        let Some(mon) = *self
            .system_monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        else {
            return;
        };
        let info = Term::List(vec![
            Term::Tuple(vec![
                Term::atom("timeout"),
                Term::Int(took.as_millis() as i64),
            ]),
            Term::Tuple(vec![
                Term::atom("in"),
                Term::binary(label.as_bytes().to_vec()),
            ]),
        ]);
        let msg = Term::Tuple(vec![
            Term::atom("monitor"),
            Term::Pid(pid),
            Term::atom("long_schedule"),
            info,
        ]);
        self.send_signal(mon, Signal::Message(Fragment::from_term(&msg)));
    }

    pub(crate) fn send_after(&self, after: Duration, to: Pid, msg: Fragment) -> Ref {
        let id = self.timers.send_at(Instant::now() + after, to, msg);
        self.table
            .with(to, |p| p.has_timers.store(true, Ordering::Relaxed));
        Ref(id)
    }

    /// Ends process `proc` (its private half locked in `g`) with `reason`.
    pub(crate) fn finish(
        &self,
        proc: &Arc<Process>,
        mut g: MutexGuard<'_, Private>,
        reason: Fragment,
    ) {
        let me = proc.pid;
        // Leave the table first: once a pid reads as not alive, its slot already
        // counts as free for the process limit.
        self.table.remove(me);
        proc.state.store(DONE, Ordering::Release);
        let mut late = Vec::new();
        proc.inbox.close(&mut late);
        let noproc = || Fragment::immediate(Word::atom(Atom::NOPROC));
        for s in late {
            match s {
                Signal::Link(from) => {
                    let exit = Signal::Exit {
                        from: me,
                        reason: noproc(),
                        linked: true,
                    };
                    self.send_signal(from, exit);
                }
                Signal::Monitor { from, mref } => {
                    let down = Signal::Down {
                        mref,
                        pid: me,
                        reason: noproc(),
                    };
                    self.send_signal(from, down);
                }
                _ => {}
            }
        }
        if let Some(rel) = g.rel.take() {
            for l in rel.links {
                let exit = Signal::Exit {
                    from: me,
                    reason: reason.clone(),
                    linked: true,
                };
                self.send_signal(l, exit);
            }
            for (mref, by) in rel.monitored_by {
                let down = Signal::Down {
                    mref: Ref(mref),
                    pid: me,
                    reason: reason.clone(),
                };
                self.send_signal(by, down);
            }
            for (mref, target) in rel.monitoring {
                self.send_signal(target, Signal::Demonitor(Ref(mref)));
            }
        }
        {
            let _r = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            self.registry.release(me);
        }
        if let Some(id) = g.pend.take().and_then(|w| w.wait_timer) {
            self.timers.cancel(id);
        }
        if proc.has_timers.load(Ordering::Relaxed) {
            self.timers.cancel_for(me);
        }
        g.mailbox.clear();
        g.mem = None;
        g.exiting = None;
        let body = g.body.take();
        drop(g);
        drop(body);
        proc.queued.store(0, Ordering::Relaxed);
        proc.heap_bytes.store(0, Ordering::Relaxed);
        self.exits.fetch_add(1, Ordering::Relaxed);
    }
}

/// A cheap, cloneable handle to a running VM.
#[derive(Clone)]
pub struct VmRef(pub(crate) Arc<VmInner>);

impl VmRef {
    /// Spawns a process from outside any process.
    pub fn spawn(&self, body: impl Body) -> Result<Pid> {
        self.0
            .spawn_with(Box::new(body), SpawnOpts::default(), None)
            .map(|(p, _)| p)
    }

    /// Spawns with options (link/monitor need a parent process and are ignored here).
    pub fn spawn_opts(&self, body: Box<dyn Body>, opts: SpawnOpts) -> Result<Pid> {
        self.0.spawn_with(body, opts, None).map(|(p, _)| p)
    }

    /// Sends a message from outside any process; false if `to` is not alive.
    pub fn send(&self, to: Pid, msg: Fragment) -> bool {
        self.0.send_signal(to, Signal::Message(msg)).0
    }

    /// Sends to a registered name.
    pub fn send_named(&self, name: Atom, msg: Fragment) -> Result<()> {
        let pid = self
            .0
            .registry
            .whereis(name)
            .ok_or_else(|| Error::BadArg(format!("no process is registered as {name:?}")))?;
        self.send(pid, msg);
        Ok(())
    }

    /// Sends an exit signal from outside any process (erlang:exit/2 from code that is
    /// not a process). The sender appears as [`EXTERNAL_PID`]: a trapping target gets
    /// `{'EXIT', EXTERNAL_PID, Reason}`; `kill` kills; `normal` is ignored by a
    /// process that does not trap exits.
    pub fn exit(&self, pid: Pid, reason: Fragment) -> bool {
        let sig = Signal::Exit {
            from: EXTERNAL_PID,
            reason,
            linked: false,
        };
        self.0.send_signal(pid, sig).0
    }

    /// Registers `pid` as `name`.
    pub fn register(&self, name: Atom, pid: Pid) -> Result<()> {
        self.0.register(name, pid)
    }

    /// Removes a registration.
    pub fn unregister(&self, name: Atom) -> Result<()> {
        self.0.registry.unregister(name).map(|_| ())
    }

    /// The pid registered as `name`.
    pub fn whereis(&self, name: Atom) -> Option<Pid> {
        self.0.registry.whereis(name)
    }

    /// Sends `msg` to `to` after `after`.
    pub fn send_after(&self, after: Duration, to: Pid, msg: Fragment) -> Ref {
        self.0.send_after(after, to, msg)
    }

    /// Cancels a timer: the time it had left, or None.
    pub fn cancel_timer(&self, r: Ref) -> Option<Duration> {
        self.0.timers.cancel(r.0)
    }

    /// Time left on a timer.
    pub fn read_timer(&self, r: Ref) -> Option<Duration> {
        self.0.timers.read(r.0)
    }

    /// True if `pid` is alive.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.0.table.with(pid, |p| !p.is_done()).unwrap_or(false)
    }

    /// Live process count.
    pub fn process_count(&self) -> usize {
        self.0.table.count()
    }

    /// The VM's configuration.
    pub fn config(&self) -> &VmConfig {
        &self.0.config
    }

    /// This VM's creation: a number that differs for each VM started in this OS
    /// process (a counter per start, as Erlang's creation differs per node
    /// incarnation). A pid that outlives its VM is told apart by it (see
    /// [`crate::term::ExternalPid`]).
    pub fn creation(&self) -> u32 {
        // The low 32 bits of the start counter: 2^32 starts in one process apart.
        self.0.id as u32
    }

    /// True while the VM runs.
    pub fn is_running(&self) -> bool {
        !self.0.stopping.load(Ordering::Acquire)
    }

    /// Sets (or clears) the process that receives system monitor events
    /// (`long_schedule`); returns the previous one. Like `erlang:system_monitor/2`.
    pub fn set_system_monitor(&self, pid: Option<Pid>) -> Option<Pid> {
        let mut g = self
            .0
            .system_monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, pid)
    }

    /// Sets the number of schedulers taking work (1..=schedulers); returns the old one.
    pub fn set_schedulers_online(&self, n: usize) -> Result<usize> {
        self.0.sched.set_online(n)
    }
}

/// A running VM. Dropping it (or calling [`Vm::shutdown`]) stops every scheduler,
/// joins every thread and frees every process.
pub struct Vm {
    handle: VmRef,
    threads: Vec<JoinHandle<()>>,
    dirty_threads: Vec<JoinHandle<()>>,
}

impl Vm {
    /// Starts a VM with `config`.
    pub fn start(config: VmConfig) -> Result<Vm> {
        config.validate()?;
        let (sched, workers) = SchedShared::new(config.schedulers, config.schedulers_online);
        let config_dirty = (config.dirty_cpu, config.dirty_io);
        let inner = Arc::new(VmInner {
            id: NEXT_VM_ID.fetch_add(1, Ordering::Relaxed),
            table: ProcessTable::new(config.process_limit),
            config,
            sched,
            timers: Timers::default(),
            registry: Registry::default(),
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            exits: AtomicU64::new(0),
            registered: Mutex::new(()),
            dirty: DirtyPools::new(config_dirty.0, config_dirty.1),
            system_monitor: Mutex::new(None),
            exited: (Mutex::new(0), std::sync::Condvar::new()),
        });
        let mut threads = Vec::new();
        let vm = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("beamvm-timer".into())
                .spawn(move || {
                    vm.timers.run(Arc::downgrade(&vm));
                    vm.thread_exited();
                })
                .map_err(|e| Error::BadArg(format!("cannot start timer thread: {e}")))?,
        );
        let vm = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("beamvm-watchdog".into())
                .spawn(move || {
                    crate::scheduler::watchdog::run(Arc::downgrade(&vm));
                    vm.thread_exited();
                })
                .map_err(|e| Error::BadArg(format!("cannot start watchdog thread: {e}")))?,
        );
        let dirty_threads = DirtyPools::start(&inner)
            .map_err(|e| Error::BadArg(format!("cannot start dirty pool threads: {e}")))?;
        for (i, w) in workers.into_iter().enumerate() {
            let vm = inner.clone();
            let t = std::thread::Builder::new()
                .name(format!("beamvm-sched-{i}"))
                .stack_size(crate::config::THREAD_STACK_SIZE)
                .spawn(move || {
                    crate::scheduler::run(vm.clone(), i, w);
                    vm.thread_exited();
                })
                .map_err(|e| Error::BadArg(format!("cannot start scheduler thread: {e}")))?;
            inner.sched.register_thread(i, t.thread().clone());
            threads.push(t);
        }
        inner.sched.all_registered();
        Ok(Vm {
            handle: VmRef(inner),
            threads,
            dirty_threads,
        })
    }

    /// Starts a VM with default settings.
    pub fn with_defaults() -> Result<Vm> {
        Vm::start(VmConfig::default())
    }

    /// A handle for sending, spawning and introspection.
    pub fn handle(&self) -> VmRef {
        self.handle.clone()
    }

    /// Stops the VM: schedulers finish their current slice and exit, every thread is
    /// joined, every remaining process is freed (bodies dropped, heaps and mailboxes
    /// freed; no exit signals are sent). Idempotent. Waits as long as it takes: see
    /// [`Vm::shutdown_within`] for a bounded wait.
    pub fn shutdown(&mut self) {
        self.shutdown_within(None);
    }

    /// Stops the VM like [`Vm::shutdown`], waiting at most `limit` for the VM's
    /// threads. A scheduler stuck in a slice that never ends (a native call that does
    /// not return, code that cannot be preempted) cannot be stopped; after `limit` such
    /// threads are left running, detached, with the process they run, and the number
    /// of them is returned (0 when everything stopped).
    pub fn shutdown_within(&mut self, limit: Option<Duration>) -> usize {
        let inner = self.handle.0.clone();
        inner.stopping.store(true, Ordering::Release);
        inner.sched.wake_all();
        inner.timers.stop();
        inner.dirty.stop();
        let want = self.threads.len();
        let all_exited = {
            let deadline = limit.map(|l| Instant::now() + l);
            let mut n = inner.exited.0.lock().unwrap_or_else(|e| e.into_inner());
            while *n < want {
                match deadline {
                    None => n = inner.exited.1.wait(n).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        n = inner
                            .exited
                            .1
                            .wait_timeout(n, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            *n >= want
        };
        let mut stuck = 0;
        for t in self.threads.drain(..) {
            // A thread that reported its exit is about to finish: join it. After a
            // timeout, the ones still running are detached (dropping the handle does
            // not stop them).
            if all_exited || t.is_finished() {
                let _ = t.join();
            } else {
                stuck += 1;
            }
        }
        // Dirty threads finish their current job first; a job that blocks for a long
        // time (a dirty IO call) must not hold up shutdown, so threads still running a
        // job are detached (they exit when it returns; its result is dropped).
        let busy = inner.dirty.cpu.running.load(Ordering::Acquire)
            + inner.dirty.io.running.load(Ordering::Acquire);
        for t in self.dirty_threads.drain(..) {
            if busy == 0 {
                let _ = t.join();
            }
        }
        for p in inner.table.drain() {
            p.state.store(DONE, Ordering::Release);
            let mut late = Vec::new();
            p.inbox.close(&mut late);
            drop(late);
            // A process whose lock is held belongs to a stuck scheduler: leave it.
            let Ok(mut g) = p.private.try_lock() else {
                continue;
            };
            let body = g.body.take();
            g.mailbox.clear();
            g.mem = None;
            g.pend = None;
            g.rel = None;
            drop(g);
            drop(body);
        }
        inner.sched.drain();
        stuck
    }
}

impl std::ops::Deref for Vm {
    type Target = VmRef;
    fn deref(&self) -> &VmRef {
        &self.handle
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}
