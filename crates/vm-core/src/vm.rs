//! The VM: the router (process table and run queues), schedulers, timers, dirty pools,
//! registry, and the operations that need several of them (spawn, registration,
//! process exit, start and shutdown).
//!
//! [`Vm`] owns the threads (dropping it shuts the VM down: see [`Vm::shutdown`] for
//! which threads are joined and which are left);
//! [`VmRef`] is a cheap handle for everything else — sending, spawning and
//! introspection from outside any process, or from a body.
//!
//! Process exit runs on the scheduler thread of the dying process, with its private
//! half locked: links, monitors, names and timers are all cleaned up there, in this
//! order — leave the table (no new lookups), close the inbox (the process is DONE: no
//! new signals; the ones that raced in are answered: `noproc` to late links and monitors),
//! signal links and monitors, release the name, cancel timers, free heap and mailbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::VmConfig;
use crate::dirty::{DirtyKind, DirtyPools};
use crate::error::{Error, Result};
use crate::process::drop_guarded;
use crate::process::signal::{self, Signal};
use crate::process::table::{ProcessTable, EXTERNAL_PID};
use crate::process::{Body, Priority, Private, Process, Relations};
use crate::registry::Registry;
use crate::router::Router;
use crate::scheduler::Shared;
use crate::term::Term;
use crate::term::{Atom, Fragment, Pid, Ref};
use crate::timer::Timers;

/// The next VM's creation: one per start in this OS process, never 0 (0 is what a
/// pid built by hand without one carries).
static NEXT_CREATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

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
pub(crate) struct VmInner {
    pub(crate) config: VmConfig,
    /// Delivery: the process table and the run queues.
    pub(crate) router: Router,
    pub(crate) timers: Timers,
    pub(crate) registry: Registry,
    pub(crate) stopping: AtomicBool,
    pub(crate) started: Instant,
    /// This VM's creation (see [`VmRef::creation`]).
    pub(crate) creation: u32,
    pub(crate) registered: Mutex<()>,
    pub(crate) dirty: DirtyPools,
    pub(crate) system_monitor: Mutex<Option<Pid>>,
    /// What observers read beyond the counters (crate::observe).
    pub(crate) observe: crate::observe::ObserveState,
    /// The I/O reactor, made with the first socket and polled by the schedulers
    /// (io/driver.rs).
    pub(crate) io: crate::io::IoState,
    /// VM threads (schedulers, timer, watchdog) that have returned or unwound from a
    /// panic ([`ExitCount`]), for shutdown.
    pub(crate) exited: (Mutex<usize>, std::sync::Condvar),
}

impl VmInner {
    fn thread_exited(&self) {
        let mut n = self.exited.0.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        self.exited.1.notify_all();
    }
}

/// Counts a VM thread out ([`VmInner::thread_exited`]) when dropped: held for the
/// whole of a thread's loop, so a panic that escapes the loop still counts the thread
/// out and shutdown, which waits for every thread's count, does not wait forever.
struct ExitCount<'a>(&'a VmInner);

impl Drop for ExitCount<'_> {
    fn drop(&mut self) {
        self.0.thread_exited();
    }
}

impl VmInner {
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
            .router
            .table
            .insert(|pid| {
                let rel = parent
                    .filter(|_| opts.link || mref.is_some())
                    .map(|parent| {
                        let mut rel = Relations::default();
                        if opts.link {
                            rel.links.insert(parent);
                        }
                        if let Some(r) = mref {
                            rel.monitored_by.insert(r.0, parent);
                        }
                        Box::new(rel)
                    });
                let p = Process::with_relations(pid, body, opts.priority, rel);
                p.trap_exit.store(opts.trap_exit, Ordering::Relaxed);
                p
            })
            .map_err(|_| Error::SystemLimit)?;
        let pid = proc.pid;
        // Created QUEUED (see `Process::with_relations`): only this enqueue puts it in
        // a queue.
        self.router.enqueue(proc);
        Ok((pid, mref))
    }

    pub(crate) fn register(&self, name: Atom, pid: Pid) -> Result<()> {
        // A name is never left pointing at a process that has run its exit path: flag
        // the process (SeqCst), then check it is alive (its inbox not closed, SeqCst),
        // while `finish` closes the inbox and then reads the flag — one of the two sees
        // the other. An exit that sees the flag releases names under `registered`,
        // which this holds until the name is in, so it releases this one too.
        let _g = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if name == Atom::UNDEFINED {
            return Err(Error::BadArg("'undefined' cannot be registered".into()));
        }
        let alive = self
            .router
            .table
            .with(pid, |p| {
                p.named.store(true, Ordering::SeqCst);
                !p.inbox.is_closed_seqcst()
            })
            .unwrap_or(false);
        if !alive {
            return Err(Error::BadArg(format!("{pid} is not alive")));
        }
        self.registry.register(name, pid)
    }

    /// Sends a long_schedule event to the system monitor, if one is set:
    /// `{monitor, Pid, long_schedule, [{timeout, Ms}, {in, Label}]}` (BEAM's shape).
    pub(crate) fn report_long_schedule(&self, pid: Pid, took: Duration, label: &str) {
        self.observe
            .record_long_schedule(crate::observe::LongScheduleEvent {
                pid,
                took,
                label: label.to_owned(),
                at: self.started.elapsed(),
            });
        let Some(mon) = *self
            .system_monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        else {
            return;
        };
        // Predefined atoms only: this runs on a scheduler thread, and the atom table
        // may be full.
        let info = Term::List(vec![
            Term::Tuple(vec![
                Term::Atom(Atom::TIMEOUT),
                Term::Int(took.as_millis() as i64),
            ]),
            Term::Tuple(vec![
                Term::Atom(Atom::IN),
                Term::binary(label.as_bytes().to_vec()),
            ]),
        ]);
        let msg = Term::Tuple(vec![
            Term::Atom(Atom::MONITOR),
            Term::Pid(pid),
            Term::Atom(Atom::LONG_SCHEDULE),
            info,
        ]);
        self.router
            .send(mon, Signal::Message(Fragment::from_term(&msg)));
    }

    /// A timer for `to`, cancelled when `to` exits. Flag, add, then check liveness,
    /// while `finish` closes the inbox (DONE) and then reads the flag: all four
    /// accesses are SeqCst, so either the exit sees the flag (and cancels the timer,
    /// or this check sees the exit) or this check sees the exit — a timer never
    /// outlives its process until the deadline. (On x86 only the flag's store costs a
    /// locked instruction, on this rare path; the exit path's are the xchg it does
    /// anyway and a plain load.)
    pub(crate) fn send_after(&self, after: Duration, to: Pid, msg: Fragment) -> Ref {
        let flagged = self
            .router
            .table
            .with(to, |p| p.has_timers.store(true, Ordering::SeqCst))
            .is_some();
        let id = self.timers.send_at(crate::timer::deadline(after), to, msg);
        let alive = flagged
            && self
                .router
                .table
                .with(to, |p| !p.inbox.is_closed_seqcst())
                .unwrap_or(false);
        if !alive {
            self.timers.cancel(id);
        }
        Ref(id)
    }

    /// Ends process `proc` (its private half locked in `g`) with `reason`. Runs on
    /// the scheduler thread that ran its last slice (which counts the exit).
    pub(crate) fn finish(
        &self,
        proc: &Arc<Process>,
        mut g: MutexGuard<'_, Private>,
        reason: Fragment,
    ) {
        let me = proc.pid;
        // Leave the table first: once a pid reads as not alive, its slot already
        // counts as free for the process limit.
        self.router.table.remove(me);
        let mut late = Vec::new();
        proc.inbox.close(&mut late);
        let rel = proc.take_rel();
        if let Some(r) = rel.as_deref() {
            // Its aliases stop routing (alias.rs).
            self.release_aliases(&r.aliases);
        }
        signal::exit_signals(me, &reason, rel, late, |to, sig| {
            self.router.send(to, sig);
        });
        // Paired with `register` (see there): the inbox was closed with SeqCst. Most
        // processes never had a name and skip both locks.
        if proc.named.load(Ordering::SeqCst) {
            let _r = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            self.registry.release(me);
        }
        if let Some(id) = g.pend.as_ref().and_then(|w| w.wait_timer) {
            self.timers.cancel(id);
        }
        // Paired with `send_after` (see there): the inbox was closed with SeqCst.
        if proc.has_timers.load(Ordering::SeqCst) {
            self.timers.cancel_for(me);
        }
        // Its sockets close (peers see EOF) before its pid's slot can be reused.
        self.io.owner_exited(me);
        let leftovers = proc.release(&mut g);
        drop(g);
        drop_guarded(leftovers);
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
        self.0
            .observe
            .external_sends
            .fetch_add(1, Ordering::Relaxed);
        self.0.router.send(to, Signal::Message(msg)).delivered
    }

    /// Sends to a registered name.
    pub fn send_named(&self, name: Atom, msg: Fragment) -> Result<()> {
        let pid = self
            .0
            .registry
            .whereis(name)
            .ok_or_else(|| Error::BadArg(format!("no process is registered as {name}")))?;
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
        self.0.router.send(pid, sig).delivered
    }

    /// Delivers an exit signal from a process of another node (the distribution
    /// layer, which keeps the links that cross nodes, calls this): as [`VmRef::exit`],
    /// but a trapping target sees `{'EXIT', From, Reason}` with `from` (the remote
    /// pid's term), and with `linked` the reason `kill` is an ordinary reason, as for
    /// a link. `false` if `pid` is not alive.
    pub fn exit_from_remote(
        &self,
        pid: Pid,
        from: Fragment,
        reason: Fragment,
        linked: bool,
    ) -> bool {
        let sig = Signal::RemoteExit {
            from,
            reason,
            linked,
        };
        self.0.router.send(pid, sig).delivered
    }

    /// Makes `watcher` monitor `target` now, from outside both, exactly as if `watcher`
    /// had called `Cx::monitor(target)`: no exit of `target` after this call is missed
    /// (the distribution layer watches a process from the moment a remote node links to
    /// it, before the watcher has run). A `target` that is not alive gives `watcher` the
    /// DOWN with `noproc`. `None` if `watcher` is not alive.
    pub fn monitor_for(&self, watcher: Pid, target: Pid) -> Option<Ref> {
        let w = self.0.router.table.get(watcher)?;
        let mref = Ref::new();
        w.rel(|r| r.monitoring.insert(mref.0, target));
        let sig = Signal::Monitor {
            from: watcher,
            mref,
        };
        if !self.0.router.send(target, sig).delivered {
            let down = Signal::Down {
                mref,
                pid: target,
                reason: Fragment::immediate(crate::term::Word::atom(Atom::NOPROC)),
            };
            self.0.router.send(watcher, down);
        }
        Some(mref)
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

    /// Sends `msg` after `after` to the process registered as `name` at that time
    /// (`erlang:send_after/3` with an atom): never an error; dropped if no process
    /// has the name when the timer fires.
    pub fn send_after_named(&self, after: Duration, name: Atom, msg: Fragment) -> Ref {
        Ref(self
            .0
            .timers
            .send_named_at(crate::timer::deadline(after), name, msg))
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
        self.0
            .router
            .table
            .with(pid, |p| !p.is_done())
            .unwrap_or(false)
    }

    /// Live process count.
    pub fn process_count(&self) -> usize {
        self.0.router.table.count()
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
        self.0.creation
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

    /// The VM's I/O reactor (made on first use; the schedulers poll it): the socket
    /// operations of native bodies and of bindings (see `crate::io`).
    pub fn io(&self) -> std::result::Result<Arc<crate::io::Reactor>, crate::io::IoError> {
        self.0.io.reactor(&self.0)
    }

    /// How active socket messages spell their tag (before the first socket only; the
    /// Python binding asks for its string form).
    pub fn set_io_tag_style(&self, style: crate::io::TagStyle) {
        self.0.io.set_style(style);
    }

    /// Open sockets (0 while the reactor was never used).
    pub fn socket_count(&self) -> usize {
        self.0.io.get().map_or(0, |r| r.socket_count())
    }

    /// Sets the number of schedulers taking work (1..=schedulers); returns the old one.
    pub fn set_schedulers_online(&self, n: usize) -> Result<usize> {
        self.0.router.sched.set_online(n)
    }
}

/// A running VM. Dropping it (or calling [`Vm::shutdown`]) stops it: every scheduler,
/// the timer and the watchdog are joined, idle dirty pool threads too, and every
/// process is freed. A dirty pool thread still inside a job (a blocking call) is left
/// to finish it, detached.
pub struct Vm {
    handle: VmRef,
    threads: Vec<JoinHandle<()>>,
    dirty_threads: Vec<JoinHandle<()>>,
}

impl Vm {
    /// Starts a VM with `config`. If a thread cannot be started, the ones that were
    /// are stopped and joined before the error is returned.
    pub fn start(config: VmConfig) -> Result<Vm> {
        config.validate()?;
        let (sched, workers) = Shared::new(config.schedulers, config.schedulers_online);
        let inner = Arc::new(VmInner {
            router: Router::new(ProcessTable::new(config.process_limit), sched),
            timers: Timers::default(),
            registry: Registry::default(),
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            creation: NEXT_CREATION.fetch_add(1, Ordering::Relaxed),
            registered: Mutex::new(()),
            dirty: DirtyPools::new(config.dirty_cpu, config.dirty_io),
            system_monitor: Mutex::new(None),
            observe: Default::default(),
            io: Default::default(),
            exited: (Mutex::new(0), std::sync::Condvar::new()),
            config,
        });
        #[cfg(test)]
        tests::LAST_VM.with(|c| c.replace(Some(Arc::downgrade(&inner))));
        // Each thread joins `vm` as it starts: if the next one cannot start, dropping
        // `vm` (the `?`) shuts down and joins those that did.
        let mut vm = Vm {
            handle: VmRef(inner.clone()),
            threads: Vec::new(),
            dirty_threads: Vec::new(),
        };
        let v = inner.clone();
        vm.threads
            .push(spawn_thread("beamvm-timer".into(), None, move || {
                let _count = ExitCount(&v);
                v.timers.run(&v.router, &v.registry);
            })?);
        let v = inner.clone();
        vm.threads
            .push(spawn_thread("beamvm-watchdog".into(), None, move || {
                let _count = ExitCount(&v);
                let long = v.config.long_schedule;
                crate::scheduler::watchdog::run(&v.router.sched, v.started, long, &v.stopping);
            })?);
        for kind in [DirtyKind::Cpu, DirtyKind::Io] {
            for i in 0..inner.dirty.pool(kind).size() {
                let name = match kind {
                    DirtyKind::Cpu => format!("beamvm-dcpu-{i}"),
                    DirtyKind::Io => format!("beamvm-dio-{i}"),
                };
                let v = inner.clone();
                let stack = Some(crate::config::THREAD_STACK_SIZE);
                vm.dirty_threads.push(spawn_thread(name, stack, move || {
                    v.dirty.pool(kind).run(&v.router);
                })?);
            }
        }
        for (i, w) in workers.into_iter().enumerate() {
            let v = inner.clone();
            let stack = Some(crate::config::THREAD_STACK_SIZE);
            let t = spawn_thread(format!("beamvm-sched-{i}"), stack, move || {
                let _count = ExitCount(&v);
                crate::scheduler::run(v.clone(), i, w);
            })?;
            inner.router.sched.register_thread(i, t.thread().clone());
            vm.threads.push(t);
        }
        inner.router.sched.all_registered();
        Ok(vm)
    }

    /// Starts a VM with default settings.
    pub fn with_defaults() -> Result<Vm> {
        Vm::start(VmConfig::default())
    }

    /// A handle for sending, spawning and introspection.
    pub fn handle(&self) -> VmRef {
        self.handle.clone()
    }

    /// Stops the VM: schedulers finish their current slice and exit; they, the timer
    /// and the watchdog are joined, and so are the dirty pool threads that are idle
    /// (one still running a job — a blocking call of any length — is detached and
    /// exits when the job returns; the result is dropped). Every remaining process is
    /// freed (bodies dropped, heaps and mailboxes freed; no exit signals are sent).
    /// Idempotent. Waits as long as a slice takes to end: see [`Vm::shutdown_within`]
    /// for a bounded wait.
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
        inner.router.sched.wake_all();
        inner.timers.stop();
        inner.dirty.stop();
        inner.io.stop();
        let want = self.threads.len();
        let all_exited = {
            // A limit too long for the clock is no limit.
            let deadline = limit.and_then(crate::timer::deadline);
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
        self.join_dirty_threads();
        // No exit signals (every process goes): close, free, drop.
        for p in inner.router.table.drain() {
            let mut late = Vec::new();
            p.inbox.close(&mut late);
            drop_guarded(late);
            drop(p.take_rel());
            // A process whose lock is held belongs to a stuck scheduler: leave it.
            let Ok(mut g) = p.private.try_lock() else {
                continue;
            };
            let leftovers = p.release(&mut g);
            drop(g);
            drop_guarded(leftovers);
        }
        inner.router.sched.drain();
        stuck
    }
}

impl Vm {
    /// Joins the dirty pool threads that are idle (they return as soon as the pools
    /// are stopped) and detaches the ones still running a job: a job that blocks for a
    /// long time (a dirty IO call) must not hold up shutdown; such a thread exits when
    /// its job returns, and the result is dropped.
    fn join_dirty_threads(&mut self) {
        let dirty = &self.handle.0.dirty;
        let end = Instant::now() + DIRTY_EXIT_GRACE;
        // Idle threads leave within microseconds; a thread that finishes its job now
        // leaves too. Wait until the threads left are the ones running a job.
        while self
            .dirty_threads
            .iter()
            .filter(|t| !t.is_finished())
            .count()
            > dirty.running()
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        for t in self.dirty_threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// How long shutdown waits for idle dirty pool threads to leave (they leave within
/// microseconds; this bounds a pathological wait, after which they are detached).
const DIRTY_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Starts a VM thread. (Tests can make the n-th start on this thread fail.)
fn spawn_thread(
    name: String,
    stack: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    #[cfg(test)]
    if tests::FAIL_SPAWN.with(|c| {
        let n = c.get();
        c.set(n.map(|n| n.wrapping_sub(1)));
        n == Some(0)
    }) {
        return Err(Error::BadArg(format!(
            "cannot start thread {name}: injected"
        )));
    }
    let mut b = std::thread::Builder::new().name(name.clone());
    if let Some(s) = stack {
        b = b.stack_size(s);
    }
    b.spawn(f)
        .map_err(|e| Error::BadArg(format!("cannot start thread {name}: {e}")))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::sync::Weak;

    thread_local! {
        /// Makes the n-th VM thread start on this thread fail (0: the next).
        pub(crate) static FAIL_SPAWN: Cell<Option<usize>> = const { Cell::new(None) };
        /// The VM most recently started on this thread.
        pub(crate) static LAST_VM: RefCell<Option<Weak<VmInner>>> = const { RefCell::new(None) };
    }

    /// A failure to start any one of the VM's threads returns an error, and every
    /// thread started before it is stopped and joined (issue 8, fault 9: the old start
    /// returned with `?` and left them running, each holding the VM alive).
    #[test]
    fn a_thread_that_cannot_start_leaves_no_thread_behind() {
        let config = VmConfig {
            schedulers: 2,
            schedulers_online: 2,
            dirty_cpu: 1,
            dirty_io: 2,
            ..VmConfig::default()
        };
        // timer, watchdog, 3 dirty, 2 schedulers.
        for n in 0..7 {
            FAIL_SPAWN.with(|c| c.set(Some(n)));
            let r = Vm::start(config.clone());
            FAIL_SPAWN.with(|c| c.set(None));
            assert!(r.is_err(), "thread {n} failed to start");
            let weak = LAST_VM
                .with(|c| c.borrow_mut().take())
                .expect("a VM was made");
            assert!(
                weak.upgrade().is_none(),
                "thread {n}: the threads started before it still hold the VM"
            );
        }
        let mut vm = Vm::start(config).expect("starts when nothing fails");
        assert_eq!(vm.shutdown_within(Some(Duration::from_secs(5))), 0);
    }
}
