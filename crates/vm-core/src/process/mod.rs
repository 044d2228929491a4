//! Processes: what a process is ([`Body`], [`Step`], [`Priority`]), and inside the
//! crate its control block, run state and private state.
//!
//! A `Process` is shared (`Arc`) between the process table, run queues and whoever
//! holds it for a moment; it has two halves:
//!
//! * the **shared half** — pid, priority, the inbox with the run state, links and
//!   monitors (behind a lock their owner takes for one update at a time), and
//!   published counters — which any thread may read;
//! * the **private half** (`Private`: the body, the mailbox, heap, pending receive or
//!   dirty call, exit reason) behind a mutex that only the scheduler running the
//!   process takes, for the whole slice. Nothing else waits on it: introspection reads
//!   the shared half and only *tries* this lock (for the body's label).
//!
//! ## Run state
//!
//! Where a process stands (idle, queued, running, done) lives in the same atomic word
//! as its inbox: see `inbox.rs` for the state machine and why no wake-up is lost. The
//! rule that matters everywhere else: a process is in at most one run queue, put there
//! by whoever moved it to QUEUED (its spawner, or the sender whose push found it idle).
//!
//! The public part of this module is [`mailbox`] (the private message queue, its keyed
//! receive and the key policy) and the types re-exported at the crate root.

pub(crate) mod context;
pub(crate) mod inbox;
pub mod mailbox;
mod short_lock;
pub(crate) mod signal;
pub(crate) mod table;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::term::{Fragment, Heap, Pid, Word};
use context::Cx;
use inbox::{Inbox, RunState};
use mailbox::Mailbox;
use short_lock::ShortLock;
use signal::Signal;

/// Scheduling priority, as in Erlang.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// Runs before everything else.
    Max = 0,
    /// Runs before normal and low.
    High = 1,
    /// The default.
    Normal = 2,
    /// Runs when nothing else is runnable, and every few normal picks.
    Low = 3,
}

impl Priority {
    /// Every priority, highest first; a priority's [`index`](Priority::index) is its
    /// position here (and the index of its run queues).
    pub(crate) const ALL: [Priority; 4] = [
        Priority::Max,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];
    /// How many priorities there are.
    pub(crate) const COUNT: usize = Priority::ALL.len();

    /// The position of this priority in [`Priority::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_u8(v: u8) -> Priority {
        match v {
            0 => Priority::Max,
            1 => Priority::High,
            3 => Priority::Low,
            _ => Priority::Normal,
        }
    }

    /// Erlang's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Max => "max",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses Erlang's name.
    pub fn from_name(s: &str) -> Option<Priority> {
        Some(match s {
            "max" => Priority::Max,
            "high" => Priority::High,
            "normal" => Priority::Normal,
            "low" => Priority::Low,
            _ => return None,
        })
    }
}

/// What a body asks for when it hands the scheduler back.
pub enum Step {
    /// Budget spent or voluntary yield: go to the back of the run queue.
    Yield,
    /// Sleep until a signal arrives (or the receive timeout set with
    /// [`Cx::wait`] fires).
    Wait,
    /// End the process with this reason (`normal` for a clean end).
    Exit(Fragment),
}

/// Which kind of body a process has; the scheduler runs consecutive hooked slices
/// inside one [`SliceHook::batch`](crate::SliceHook::batch) call (the Python binding
/// holds the GIL across the batch instead of taking it per slice). Read once, at spawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyClass {
    /// Plain Rust: needs nothing around its slices.
    Native,
    /// Needs the VM's slice hook entered while it runs.
    Hooked,
}

/// A process body: a resumable state machine the scheduler drives one slice at a time.
///
/// Native bodies are Rust state machines rather than futures or threads: a slice is one
/// call of `resume`, which must return within its reduction budget (check
/// [`Cx::should_yield`] in loops and return [`Step::Yield`]). This is the same protocol
/// the Python driver implements with generators, so both kinds are scheduled by the
/// same code, and a waiting process costs only its control block (no stack).
pub trait Body: Send + 'static {
    /// Runs one slice.
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step;

    /// Called once when the process is being killed by a signal while suspended, before
    /// the body is dropped, so that cleanup code (Python `finally` blocks) can run.
    fn terminate(&mut self, _cx: &mut Cx<'_>, _reason: &Fragment) {}

    /// The class of this body (see [`BodyClass`]).
    fn class(&self) -> BodyClass {
        BodyClass::Native
    }

    /// A short description of what the process runs (for process_info).
    fn label(&self) -> String {
        String::from("native")
    }

    /// The body as `Any`, for an embedder that inspects its own body type between
    /// slices (the Python binding reads a process's stack from its generator); see
    /// [`crate::VmRef::with_body`].
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

impl<F> Body for F
where
    F: FnMut(&mut Cx<'_>) -> Step + Send + 'static,
{
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        self(cx)
    }
}

/// Links and monitors, boxed because most processes have none.
#[derive(Default)]
pub(crate) struct Relations {
    pub links: HashSet<Pid>,
    /// Monitors this process holds on others: ref -> target.
    pub monitoring: crate::refmap::RefMap<Pid>,
    /// Monitors others hold on this process: ref -> monitoring process.
    pub monitored_by: crate::refmap::RefMap<Pid>,
    /// This process's active aliases: ref -> how the alias ends (see `alias.rs`).
    pub aliases: crate::refmap::RefMap<crate::alias::AliasMode>,
}

/// A process's term heap and its registers (the GC roots), allocated on first use:
/// Python processes and most native ones never build terms on the heap.
#[derive(Default)]
pub(crate) struct ProcHeap {
    pub heap: Heap,
    pub regs: Vec<Word>,
}

/// State of a pending timed receive or dirty call, allocated on first use.
#[derive(Default)]
pub(crate) struct Pending {
    /// Generation of the current timed wait, its timer id and deadline.
    pub wait_gen: u64,
    pub wait_timer: Option<u64>,
    /// The scheduler whose list holds this wait's note while its timer is not armed
    /// (scheduler/deferred.rs).
    pub note: Option<usize>,
    pub deadline: Option<Instant>,
    pub timed_out: bool,
    /// `Cx::timed_out` moved messages into the mailbox that the body has not looked
    /// at (it checked before they came): the next `Cx::wait` must not sleep.
    pub unseen: bool,
    /// The dirty job this process waits for, and its result once it came.
    pub dirty_pending: Option<u64>,
    pub dirty_result: Option<signal::DirtyResult>,
}

/// The private half of a process (see the module docs). Rarely used parts are boxed
/// on first use so that an idle process stays small (B1 counts every byte).
pub(crate) struct Private {
    pub(crate) body: Option<Box<dyn Body>>,
    pub(crate) mailbox: Mailbox,
    pub(crate) mem: Option<Box<ProcHeap>>,
    pub(crate) pend: Option<Box<Pending>>,
    /// Set when a signal decided this process must end, with the reason.
    pub(crate) exiting: Option<Fragment>,
}

impl Private {
    pub(crate) fn new(body: Box<dyn Body>) -> Private {
        Private {
            body: Some(body),
            mailbox: Mailbox::default(),
            mem: None,
            pend: None,
            exiting: None,
        }
    }

    pub(crate) fn mem(&mut self) -> &mut ProcHeap {
        self.mem.get_or_insert_with(Default::default)
    }

    pub(crate) fn pend(&mut self) -> &mut Pending {
        self.pend.get_or_insert_with(Default::default)
    }
}

/// What a released process still owns whose `Drop` is user code (see
/// [`Process::release`]).
pub(crate) struct Leftovers {
    _body: Option<Box<dyn Body>>,
    _pend: Option<Box<Pending>>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        // One at a time: a panic in the first must not leave the second to be dropped
        // while unwinding (a second panic would abort).
        drop_guarded(self._body.take());
        drop_guarded(self._pend.take());
    }
}

/// Drops `x`, which may run user code (a body's `Drop`, a dirty job's result), catching
/// a panic there: it must not unwind through the exit path or a VM thread.
pub(crate) fn drop_guarded<T>(x: T) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(x)));
}

/// Aligns its content to one 64-byte cache line. (crossbeam's `CachePadded` uses 128
/// bytes on x86_64 to defeat the adjacent-line prefetcher; inside an `Arc` that
/// alignment costs 112 bytes of padding per process, a sixth of an idle process.)
#[repr(align(64))]
pub(crate) struct LinePadded<T>(pub T);

impl<T> std::ops::Deref for LinePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A process control block. See the module docs.
///
/// The layout is fixed (`repr(C)`), by who touches what: the inbox word alone on the
/// first line (every sender CASes it; the owner's bookkeeping on the same line would
/// make each cross-core send pay for it); then one line with the pid and every
/// published counter, so a walk of the table for `top` or `memory` reads one line per
/// process besides the inbox's length; then the links and monitors and the private
/// half.
#[repr(C)]
pub(crate) struct Process {
    /// The inbox and the run state (one word), on a cache line of its own.
    pub(crate) inbox: LinePadded<Inbox<Signal>>,
    /// This process's identifier.
    pub(crate) pid: Pid,
    /// Published counters, readable without stopping the process.
    pub(crate) reductions: AtomicU64,
    pub(crate) heap_bytes: AtomicUsize,
    /// Bytes the private mailbox holds (its messages, the queue's storage and the
    /// index: `Mailbox::heap_bytes`), published with `queued`.
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) queued: AtomicU32,
    /// Young and old heap words in use, published at the end of each slice.
    pub(crate) heap_words: [AtomicU32; 2],
    pub(crate) minor_gcs: AtomicU32,
    pub(crate) major_gcs: AtomicU32,
    pub(crate) priority: AtomicU8,
    pub(crate) has_timers: AtomicBool,
    /// Set (for good) once a name was registered for this process, so that its exit
    /// releases names only if it may hold one (see `VmInner::register`).
    pub(crate) named: AtomicBool,
    /// The trap_exit flag: written by the process itself, read by introspection.
    pub(crate) trap_exit: AtomicBool,
    /// The body's class is [`BodyClass::Hooked`] (fixed at spawn: a body's class never
    /// changes), so the scheduler can batch the slice under the hook without taking
    /// the private lock first.
    pub(crate) hooked: bool,
    /// Its last slice ended in `Step::Yield` (it used its whole budget: CPU-bound).
    /// Written by the scheduler that ran it; read when a batch is about to start with
    /// it (see `scheduler::batch`).
    pub(crate) cpu_bound: AtomicBool,
    /// Links and monitors. Written only by the process itself (or at spawn, before it
    /// is published); behind a lock of their own, held for one update or one read and
    /// never across a slice, so introspection reads them without waiting for a slice.
    pub(crate) rel: ShortLock<Option<Box<Relations>>>,
    pub(crate) private: Mutex<Private>,
}

impl Process {
    /// A new process, already QUEUED: spawn publishes it in the table before it
    /// enqueues it, and a sender that finds it in between must not enqueue it too.
    #[cfg(test)]
    pub(crate) fn new(pid: Pid, body: Box<dyn Body>, priority: Priority) -> Process {
        Process::with_relations(pid, body, priority, None)
    }

    /// A new process (QUEUED, as [`Process::new`]) born with links and monitors (a
    /// `spawn_link`/`spawn_monitor` child): set before anyone can see it, so spawn
    /// needs no lock for them.
    pub(crate) fn with_relations(
        pid: Pid,
        body: Box<dyn Body>,
        priority: Priority,
        rel: Option<Box<Relations>>,
    ) -> Process {
        let hooked = body.class() == BodyClass::Hooked;
        Process {
            pid,
            priority: AtomicU8::new(priority as u8),
            inbox: LinePadded(Inbox::new(RunState::Queued)),
            reductions: AtomicU64::new(0),
            queued: AtomicU32::new(0),
            heap_bytes: AtomicUsize::new(0),
            minor_gcs: AtomicU32::new(0),
            major_gcs: AtomicU32::new(0),
            has_timers: AtomicBool::new(false),
            named: AtomicBool::new(false),
            trap_exit: AtomicBool::new(false),
            rel: ShortLock::new(rel),
            heap_words: [AtomicU32::new(0), AtomicU32::new(0)],
            queued_bytes: AtomicUsize::new(0),
            hooked,
            cpu_bound: AtomicBool::new(false),
            private: Mutex::new(Private::new(body)),
        }
    }

    /// Locks the private half. A poisoned lock (a panic escaped while it was held,
    /// which the scheduler's catch_unwind prevents) is recovered: the data is still
    /// structurally valid, and the process will be ended by its exit path.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Private> {
        self.private.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on this process's links and monitors, allocated on first use.
    pub(crate) fn rel<R>(&self, f: impl FnOnce(&mut Relations) -> R) -> R {
        self.rel.with(|r| f(r.get_or_insert_with(Default::default)))
    }

    /// Runs `f` on this process's links and monitors if it has any.
    pub(crate) fn rel_if<R>(&self, f: impl FnOnce(&mut Relations) -> R) -> Option<R> {
        self.rel.with(|r| r.as_deref_mut().map(f))
    }

    /// Takes the links and monitors away (exit).
    pub(crate) fn take_rel(&self) -> Option<Box<Relations>> {
        self.rel.with(|r| r.take())
    }

    /// The trap_exit flag.
    pub(crate) fn traps_exits(&self) -> bool {
        self.trap_exit.load(Ordering::Relaxed)
    }

    /// Frees what the process holds — mailbox, heap, pending receive or dirty call,
    /// exit reason — and publishes it as empty: the one teardown, shared by the exit
    /// path and shutdown. Returns what may run user code when dropped (the body, a
    /// dirty job's result), for the caller to drop outside the lock with
    /// [`drop_guarded`].
    pub(crate) fn release(&self, p: &mut Private) -> Leftovers {
        p.mailbox.clear();
        p.mem = None;
        p.exiting = None;
        self.publish_heap(p);
        self.queued.store(0, Ordering::Relaxed);
        self.queued_bytes.store(0, Ordering::Relaxed);
        Leftovers {
            _body: p.body.take(),
            _pend: p.pend.take(),
        }
    }

    /// Publishes the heap's size for introspection (end of a slice).
    pub(crate) fn publish_heap(&self, p: &Private) {
        let (bytes, young, old) = p.mem.as_deref().map_or((0, 0, 0), |m| {
            let h = &m.heap;
            (h.byte_size(), h.region(false).len(), h.region(true).len())
        });
        let w = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.heap_bytes.store(bytes, Ordering::Relaxed);
        self.heap_words[0].store(w(young), Ordering::Relaxed);
        self.heap_words[1].store(w(old), Ordering::Relaxed);
    }

    /// Current priority.
    pub(crate) fn priority(&self) -> Priority {
        Priority::from_u8(self.priority.load(Ordering::Relaxed))
    }

    /// True once the process has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.inbox.state() == RunState::Done
    }

    /// Messages waiting (inbox + private queue), as last published.
    pub(crate) fn message_queue_len(&self) -> usize {
        self.inbox.len() + self.queued.load(Ordering::Relaxed) as usize
    }

    /// Human-readable run status, Erlang's vocabulary.
    pub(crate) fn status(&self) -> &'static str {
        match self.inbox.state() {
            RunState::Idle => "waiting",
            RunState::Queued => "runnable",
            RunState::Running => "running",
            RunState::Done => "exiting",
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The fixed cost of a process is what B1 measures per idle process; keep it in
    /// sight (BEAM: ~2.6 KB; our target: under 1,000 bytes including the table slot
    /// and allocator overhead).
    #[test]
    fn control_block_stays_small() {
        let p = std::mem::size_of::<Process>();
        let private = std::mem::size_of::<Private>();
        eprintln!(
            "Process {p} B (Private {private} B, Mailbox {} B, Heap {} B)",
            std::mem::size_of::<Mailbox>(),
            std::mem::size_of::<Heap>()
        );
        assert!(p <= 640, "Process grew to {p} bytes");
    }
}

#[cfg(test)]
mod layout_tests {
    use super::Process;
    use std::mem::offset_of;

    /// The pid and the published counters share the line after the inbox's.
    #[test]
    fn counters_share_the_pids_line() {
        let line = |off: usize| off / 64;
        assert_eq!(line(offset_of!(Process, inbox)), 0);
        let pid = line(offset_of!(Process, pid));
        assert_eq!(pid, 1);
        for off in [
            offset_of!(Process, reductions),
            offset_of!(Process, heap_bytes),
            offset_of!(Process, queued_bytes),
            offset_of!(Process, queued),
            offset_of!(Process, heap_words),
            offset_of!(Process, minor_gcs),
            offset_of!(Process, major_gcs),
            offset_of!(Process, priority),
            offset_of!(Process, trap_exit),
        ] {
            assert_eq!(line(off), pid, "offset {off}");
        }
    }
}
