//! The inbox and the run state of a process, in one atomic word.
//!
//! Every signal to a process lands here first, and the same word says whether the
//! process is waiting, queued, running or done. Any thread may push; only the owner (the
//! scheduler thread running the process) takes, and only the owner moves the state
//! between RUNNING and anything else.
//!
//! ## The word
//!
//! `word = head | state`: `head` is the newest node of an intrusive Treiber stack of
//! boxed nodes (nodes hold a pointer, so they are at least 4-aligned and the two low
//! bits are free), `state` one of [`RunState`]:
//!
//! ```text
//!          push (sender enqueues)          begin (picked)        park: inbox empty
//!   IDLE ─────────────────────────▶ QUEUED ──────────────▶ RUNNING ─────────────────▶ IDLE
//!                                      ▲                     │ yield, or park with
//!                                      └─────────────────────┘ signals pushed meanwhile
//!   RUNNING ──close (the process exits)──▶ DONE (terminal; pushes are refused)
//! ```
//!
//! * `push` CASes a node on top and, in the same CAS, moves IDLE to QUEUED; the pusher
//!   that made that move, and only it, enqueues the process (a process is in at most
//!   one run queue). Pushing to QUEUED or RUNNING leaves the state alone. A spawned
//!   process starts QUEUED and is enqueued by its spawner.
//! * `drain` (owner, RUNNING) swaps the head out, keeping the state, and relinks the
//!   detached chain in place into push order, handing the signals out as an iterator
//!   (no buffer to grow for a flood; `take_all` collects it into a `Vec`). The owner
//!   detaches the *whole* chain at once, so a node is never popped individually while
//!   others push: no ABA.
//! * `park` (owner, end of a slice that waits) CASes `null | RUNNING` to `null | IDLE`;
//!   if anything was pushed since the owner last looked, the CAS fails and the process
//!   is QUEUED again instead.
//! * `close` (owner, exit) swaps in `DONE` and hands back what was pushed before, so a
//!   signal is either delivered to the dying process's final drain or returned to its
//!   sender (`noproc`): never lost.
//!
//! ## Why no wake-up is lost
//!
//! The run state and the inbox are one memory location, and every transition is a
//! read-modify-write of it, so all of them are totally ordered (C++/Rust coherence of
//! RMWs; no fences, no SeqCst, no argument across two variables). A push either comes
//! before the owner's `park` in that order — then `park` sees a non-null head and
//! requeues — or after it — then the push sees IDLE and enqueues. (With the state in a
//! separate word, the sender's "push then read the state" against the owner's "write
//! RUNNING then read the inbox" is a store-buffering pattern that needs SeqCst on both
//! sides.) The loom models at the bottom check every interleaving.
//!
//! Orderings: a successful push releases the node it publishes, and `drain`,
//! `begin_drain` and `close` acquire the chain they detach. State changes publish nothing else (the private half
//! of a process is behind its own lock), so they need only coherence.
//!
//! Ordering of signals: pushes by one thread are linearised by their CASes in program
//! order, and a detached chain reversed is in CAS order, so signals from one sender
//! arrive in the order sent (Erlang's only ordering guarantee).
//!
//! `len` counts pushed-but-not-taken signals; it is advisory (introspection and the
//! send cost of a long queue) and may lag the chain by one in-flight push. `bytes`
//! likewise counts the heap bytes the queued signals hold (what their senders declared
//! with [`Inbox::push_sized`]; each node remembers its own), for `memory()`.

use std::marker::PhantomData;
use std::ptr;

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

struct Node<T> {
    next: *mut Node<T>,
    /// Heap bytes `value` holds (as declared by `push_sized`).
    bytes: usize,
    value: T,
}

/// Bytes of one queued node around a value of type `T` (for memory accounting).
pub(crate) const fn node_bytes<T>() -> usize {
    std::mem::size_of::<Node<T>>()
}

/// The bits of the word that hold the state.
const STATE_BITS: usize = 0b11;

// The head pointer's two low bits carry the state, so nodes must be 4-aligned; they
// contain a pointer, which is at least that on every target Rust supports with atomics.
const _: () = assert!(std::mem::align_of::<Node<()>>() > STATE_BITS);

/// Where a process stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum RunState {
    /// Waiting for a signal; in no run queue.
    Idle = 0,
    /// In exactly one run queue (or about to be put in one by whoever queued it).
    Queued = 1,
    /// A scheduler is running it.
    Running = 2,
    /// Exited; pushes are refused.
    Done = 3,
}

impl RunState {
    fn of(word: usize) -> RunState {
        match word & STATE_BITS {
            0 => RunState::Idle,
            1 => RunState::Queued,
            2 => RunState::Running,
            _ => RunState::Done,
        }
    }
}

fn head<T>(word: usize) -> *mut Node<T> {
    (word & !STATE_BITS) as *mut Node<T>
}

/// A multi-producer, single-consumer, closable signal queue that carries its owner's
/// run state (see the module docs).
pub struct Inbox<T> {
    word: AtomicUsize,
    len: AtomicU32,
    bytes: AtomicUsize,
    /// The inbox owns the nodes (and their `T`s) the word points to.
    _nodes: PhantomData<Box<Node<T>>>,
}

// SAFETY: the inbox owns the `T`s in its nodes and moves them between threads; that is
// sound exactly when `T: Send`. All shared mutation goes through atomics.
unsafe impl<T: Send> Send for Inbox<T> {}
// SAFETY: `push` may be called from many threads at once (atomic CAS on the word);
// `drain`, `begin_drain` and `close` detach the chain with one atomic RMW, so callers each
// get disjoint chains. No `&T` is ever handed out to other threads.
unsafe impl<T: Send> Sync for Inbox<T> {}

impl<T> Inbox<T> {
    /// An empty inbox in `state`. Allocates nothing.
    pub fn new(state: RunState) -> Self {
        Inbox {
            word: AtomicUsize::new(state as usize),
            len: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
            _nodes: PhantomData,
        }
    }

    /// Pushes `value`. `Ok(true)`: the process was idle and is now QUEUED, and the
    /// caller must enqueue it. `Err(value)`: the process is done.
    pub fn push(&self, value: T) -> Result<bool, T> {
        self.push_sized(value, 0)
    }

    /// [`Inbox::push`] of a `value` that holds `bytes` of heap memory (counted in
    /// [`Inbox::bytes`] until it is taken).
    pub fn push_sized(&self, value: T, bytes: usize) -> Result<bool, T> {
        let node = Box::into_raw(Box::new(Node {
            next: ptr::null_mut(),
            bytes,
            value,
        }));
        // Counted before the node is published, so a take that detaches it never
        // subtracts bytes not yet added (the count may run ahead, never below zero).
        if bytes > 0 {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let state = RunState::of(cur);
            if state == RunState::Done {
                if bytes > 0 {
                    self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                }
                // SAFETY: `node` came from `Box::into_raw` above and was never shared.
                let node = unsafe { Box::from_raw(node) };
                return Err(node.value);
            }
            // SAFETY: `node` is still exclusively ours until the CAS publishes it.
            unsafe { (*node).next = head(cur) };
            let next = match state {
                RunState::Idle => RunState::Queued,
                s => s,
            };
            match self.word.compare_exchange_weak(
                cur,
                node as usize | next as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.len.fetch_add(1, Ordering::Relaxed);
                    return Ok(state == RunState::Idle);
                }
                Err(w) => cur = w,
            }
        }
    }

    /// QUEUED -> RUNNING, when a scheduler picks the process. False (and no change) if
    /// it is not QUEUED: a process that is DONE is not run.
    pub fn begin(&self) -> bool {
        self.set_state(RunState::Queued, RunState::Running)
    }

    /// [`Inbox::begin`] and [`Inbox::drain`] in one atomic step, as a slice starts:
    /// QUEUED -> RUNNING with the chain detached, so the owner pays one read-modify-write
    /// of the word instead of two (a slice of ping-pong is a few of them plus its
    /// work). `None` (and no change) if the process is not QUEUED.
    pub fn begin_drain(&self) -> Option<Drain<T>> {
        let running = RunState::Running as usize;
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if RunState::of(cur) != RunState::Queued {
                return None;
            }
            // Acquire: the chain detached here is read by the owner (as in `drain`).
            match self.word.compare_exchange_weak(
                cur,
                running,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.detached_drain(head(cur))),
                Err(w) => cur = w,
            }
        }
    }

    /// RUNNING -> QUEUED, when the slice ends with a yield: the caller requeues it.
    pub fn yielded(&self) {
        let ok = self.set_state(RunState::Running, RunState::Queued);
        debug_assert!(ok, "yielded from a process that was not running");
    }

    /// End of a slice that waits: RUNNING -> IDLE if nothing was pushed since the last
    /// `take_all`, and true. Otherwise RUNNING -> QUEUED and false: the caller requeues
    /// it (see the module docs: this is where no wake-up can be lost).
    pub fn park(&self) -> bool {
        let running = RunState::Running as usize;
        if self
            .word
            .compare_exchange(
                running,
                RunState::Idle as usize,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return true;
        }
        let ok = self.set_state(RunState::Running, RunState::Queued);
        debug_assert!(ok, "parked a process that was not running");
        false
    }

    /// Moves the state from `from` to `to`, keeping the head; false if it was not
    /// `from`.
    fn set_state(&self, from: RunState, to: RunState) -> bool {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if RunState::of(cur) != from {
                return false;
            }
            let next = (cur & !STATE_BITS) | to as usize;
            match self
                .word
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(w) => cur = w,
            }
        }
    }

    /// The run state now.
    pub fn state(&self) -> RunState {
        RunState::of(self.word.load(Ordering::Relaxed))
    }

    /// True once `close` has run, read in the single SeqCst order (for a Dekker pair
    /// with `close`; see `VmInner::send_after`).
    pub fn is_closed_seqcst(&self) -> bool {
        RunState::of(self.word.load(Ordering::SeqCst)) == RunState::Done
    }

    /// Detaches everything pushed so far, appending it to `out` in push order.
    /// Returns how many signals were appended. Only the owner calls it, while RUNNING.
    pub fn take_all(&self, out: &mut Vec<T>) -> usize {
        let start = out.len();
        out.extend(self.drain());
        out.len() - start
    }

    /// Detaches everything pushed so far and hands it out in push order as an
    /// iterator, without a buffer. The chain is reversed in place (no
    /// allocation: a drain of a flood used to grow a buffer of a million signals, and
    /// page in fresh memory for it, on every drain once the buffer gave memory back).
    /// Signals the iterator has not handed out when it is dropped are dropped with it.
    pub fn drain(&self) -> Drain<T> {
        let running = RunState::Running as usize;
        if self.word.load(Ordering::Relaxed) == running {
            return Drain::empty();
        }
        // While RUNNING only the owner changes the state, so the swap keeps it.
        let old = self.word.swap(running, Ordering::Acquire);
        debug_assert_eq!(RunState::of(old), RunState::Running);
        self.detached_drain(head(old))
    }

    /// Relinks a chain detached by an acquire RMW of the word (`drain`, `begin_drain`,
    /// `close`) into push order, takes it off the counters and hands it out as a
    /// [`Drain`].
    fn detached_drain(&self, newest: *mut Node<T>) -> Drain<T> {
        let mut cur = newest;
        let mut oldest = std::ptr::null_mut();
        let (mut n, mut bytes) = (0usize, 0usize);
        while !cur.is_null() {
            // SAFETY: the caller's acquire RMW detached this chain: every node in it was
            // created by `push` with `Box::into_raw` and published by a release CAS, and
            // no other thread can reach it any more, so this thread owns the nodes
            // exclusively and may relink them.
            unsafe {
                let next = (*cur).next;
                (*cur).next = oldest;
                bytes += (*cur).bytes;
                oldest = cur;
                cur = next;
            }
            n += 1;
        }
        self.len.fetch_sub(n as u32, Ordering::Relaxed);
        if bytes > 0 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        Drain {
            cur: oldest,
            _owns: PhantomData,
        }
    }

    /// Closes the inbox (DONE): later pushes fail. Returns what was pushed before, in
    /// order.
    pub fn close(&self, out: &mut Vec<T>) -> usize {
        // SeqCst: the exit path's Dekker pair with `send_after` (see `VmInner::finish`);
        // on x86 the same xchg as Acquire.
        let old = self.word.swap(RunState::Done as usize, Ordering::SeqCst);
        let start = out.len();
        out.extend(self.detached_drain(head(old)));
        out.len() - start
    }

    /// True when nothing is waiting (a racy hint for the owner).
    pub fn is_empty(&self) -> bool {
        head::<T>(self.word.load(Ordering::Relaxed)).is_null()
    }

    /// Signals pushed and not yet taken (advisory).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }

    /// Heap bytes held by the signals pushed and not yet taken (advisory, as `len`).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The signals detached by [`Inbox::drain`], oldest first. Owns the nodes it has not
/// handed out yet and frees them when dropped.
pub struct Drain<T> {
    cur: *mut Node<T>,
    _owns: PhantomData<Box<Node<T>>>,
}

impl<T> Drain<T> {
    fn empty() -> Self {
        Drain {
            cur: std::ptr::null_mut(),
            _owns: PhantomData,
        }
    }
}

impl<T> Iterator for Drain<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.cur.is_null() {
            return None;
        }
        // SAFETY: `cur` is a node of the chain `Inbox::drain` detached and relinked
        // (created by `push` with `Box::into_raw`, owned exclusively by this iterator);
        // each node is taken out of the chain and freed exactly once, here or in `drop`.
        let node = unsafe { Box::from_raw(self.cur) };
        self.cur = node.next;
        Some(node.value)
    }
}

impl<T> Drop for Drain<T> {
    fn drop(&mut self) {
        for _ in self.by_ref() {}
    }
}

// SAFETY: a `Drain` owns its nodes exclusively (no other thread can reach a detached
// chain) and hands out `T`s by value, as a `Vec<T>` would: it may move to another
// thread when `T` may.
unsafe impl<T: Send> Send for Drain<T> {}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let mut sink = Vec::new();
        self.close(&mut sink);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn running<T>() -> Inbox<T> {
        Inbox::new(RunState::Running)
    }

    #[test]
    fn fifo_and_close() {
        let ib = running();
        for i in 0..10 {
            assert_eq!(ib.push(i), Ok(false), "a running process is not enqueued");
        }
        assert_eq!(ib.len(), 10);
        let mut out = Vec::new();
        assert_eq!(ib.take_all(&mut out), 10);
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        assert_eq!(ib.state(), RunState::Running);
        ib.push(10).unwrap();
        let mut rest = Vec::new();
        assert_eq!(ib.close(&mut rest), 1);
        assert_eq!(rest, vec![10]);
        assert_eq!(ib.push(11), Err(11));
        assert_eq!(ib.state(), RunState::Done);
        assert!(!ib.begin(), "a done process is not run");
    }

    #[test]
    fn drain_hands_signals_out_in_push_order_and_frees_what_it_did_not_hand_out() {
        let ib = running();
        let token = Arc::new(());
        for i in 0..5 {
            ib.push_sized((i, token.clone()), 3).unwrap();
        }
        assert_eq!((ib.len(), ib.bytes()), (5, 15));
        let mut d = ib.drain();
        assert_eq!((ib.len(), ib.bytes()), (0, 0), "counters drop at detach");
        assert_eq!(d.next().map(|(i, _)| i), Some(0));
        assert_eq!(d.next().map(|(i, _)| i), Some(1));
        drop(d);
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "the 3 signals not handed out were freed"
        );
        assert!(ib.is_empty());
        assert_eq!(
            ib.drain().count(),
            0,
            "nothing pushed since: an empty drain"
        );
        ib.push((9, token.clone())).unwrap();
        assert_eq!(ib.drain().map(|(i, _)| i).collect::<Vec<_>>(), vec![9]);
        assert_eq!(
            ib.state(),
            RunState::Running,
            "draining keeps the owner running"
        );
    }

    #[test]
    fn begin_drain_starts_a_queued_process_with_its_signals_and_nothing_else() {
        let ib = Inbox::new(RunState::Idle);
        assert!(ib.begin_drain().is_none(), "an idle process is not started");
        assert_eq!(
            ib.push(1),
            Ok(true),
            "the push that finds it idle queues it"
        );
        assert_eq!(ib.push(2), Ok(false));
        let got: Vec<_> = ib.begin_drain().expect("queued").collect();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(ib.state(), RunState::Running);
        assert_eq!(ib.len(), 0);
        assert!(
            ib.begin_drain().is_none(),
            "a running process is not started again"
        );
        assert!(ib.park());
        let mut rest = Vec::new();
        ib.close(&mut rest);
        assert!(ib.begin_drain().is_none(), "a done process is not run");
    }

    #[test]
    fn the_push_that_finds_it_idle_enqueues_once() {
        let ib = Inbox::new(RunState::Queued);
        assert_eq!(ib.push(0), Ok(false), "already queued (spawned)");
        assert!(ib.begin());
        let mut out = Vec::new();
        ib.take_all(&mut out);
        assert!(ib.park(), "nothing new: it sleeps");
        assert_eq!(ib.state(), RunState::Idle);
        assert_eq!(ib.push(1), Ok(true), "the first push wakes it");
        assert_eq!(ib.push(2), Ok(false), "the next ones do not");
        assert!(ib.begin());
        ib.yielded();
        assert_eq!(ib.state(), RunState::Queued);
        assert!(ib.begin());
        assert!(!ib.park(), "signals came: it is requeued, not parked");
        assert_eq!(ib.state(), RunState::Queued);
        assert!(ib.begin());
        out.clear();
        ib.take_all(&mut out);
        assert_eq!(out, vec![1, 2]);
        assert!(ib.park());
    }

    #[test]
    fn drop_frees_pending() {
        let v = Arc::new(());
        let ib = running();
        for _ in 0..100 {
            ib.push(v.clone()).unwrap();
        }
        drop(ib);
        assert_eq!(Arc::strong_count(&v), 1);
    }

    /// 8 producers x 100k: each producer's sequence arrives in order, nothing lost,
    /// and pushes racing a close are either delivered or returned.
    #[test]
    fn stress_per_sender_order_and_close() {
        const P: usize = 8;
        const N: usize = 100_000;
        let ib = Arc::new(running::<(usize, usize)>());
        let mut hs = Vec::new();
        for p in 0..P {
            let ib = ib.clone();
            hs.push(std::thread::spawn(move || {
                let mut refused = 0;
                for i in 0..N {
                    if ib.push((p, i)).is_err() {
                        refused += 1;
                    }
                }
                refused
            }));
        }
        let mut next = [0usize; P];
        let mut got = 0;
        let mut buf = Vec::new();
        while got < P * N / 2 {
            buf.clear();
            ib.take_all(&mut buf);
            for &(p, i) in &buf {
                assert_eq!(i, next[p], "sender {p} out of order");
                next[p] += 1;
            }
            got += buf.len();
        }
        buf.clear();
        ib.close(&mut buf);
        for &(p, i) in &buf {
            assert_eq!(i, next[p]);
            next[p] += 1;
        }
        let refused: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let delivered: usize = next.iter().sum();
        assert_eq!(delivered + refused, P * N, "a signal was lost");
    }

    /// Senders against an owner that runs slices and parks: every value is taken, the
    /// process is never enqueued twice, and it ends idle with an empty inbox.
    #[test]
    fn stress_no_lost_wakeup_and_one_queue_entry() {
        use std::sync::atomic::AtomicUsize;
        const P: usize = 4;
        const N: usize = 50_000;
        let ib = Arc::new(Inbox::<usize>::new(RunState::Queued));
        let queued = Arc::new(AtomicUsize::new(1));
        let hs: Vec<_> = (0..P)
            .map(|_| {
                let (ib, queued) = (ib.clone(), queued.clone());
                std::thread::spawn(move || {
                    for i in 0..N {
                        if ib.push(i).unwrap() {
                            assert_eq!(queued.fetch_add(1, Ordering::AcqRel), 0);
                        }
                    }
                })
            })
            .collect();
        let mut got = 0;
        let mut buf = Vec::new();
        let slice = |buf: &mut Vec<usize>| {
            if queued.load(Ordering::Acquire) == 0 {
                return;
            }
            queued.fetch_sub(1, Ordering::AcqRel);
            assert!(ib.begin());
            ib.take_all(buf);
            if !ib.park() {
                assert_eq!(queued.fetch_add(1, Ordering::AcqRel), 0);
            }
        };
        while got < P * N {
            buf.clear();
            slice(&mut buf);
            got += buf.len();
            if hs.iter().all(|h| h.is_finished()) && queued.load(Ordering::Acquire) == 0 {
                break;
            }
        }
        for h in hs {
            h.join().unwrap();
        }
        while queued.load(Ordering::Acquire) > 0 {
            buf.clear();
            slice(&mut buf);
            got += buf.len();
        }
        assert_eq!(got, P * N, "a signal was left behind in an idle process");
        assert_eq!(ib.state(), RunState::Idle);
        assert!(ib.is_empty());
    }
}

/// Model checks of the real `Inbox` code under loom (`RUSTFLAGS="--cfg loom" cargo test
/// -p vm-core --lib loom`).
#[cfg(loom)]
mod loom_tests {
    use super::{Inbox, RunState};
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;

    /// Two producers with a consumer that drains and then closes. Each value is
    /// delivered exactly once or handed back to its producer, and each producer's
    /// values arrive in order.
    #[test]
    fn loom_two_producers_take_and_close() {
        loom::model(|| {
            let ib = Arc::new(Inbox::<(u8, u8)>::new(RunState::Running));
            let producers: Vec<_> = (0..2u8)
                .map(|p| {
                    let ib = ib.clone();
                    loom::thread::spawn(move || {
                        let mut refused = Vec::new();
                        for i in 0..2u8 {
                            if let Err(v) = ib.push((p, i)) {
                                refused.push(v);
                            }
                        }
                        refused
                    })
                })
                .collect();
            let mut got = Vec::new();
            ib.take_all(&mut got);
            ib.close(&mut got);
            let mut refused = Vec::new();
            for h in producers {
                refused.extend(h.join().unwrap());
            }
            for p in 0..2u8 {
                let seq: Vec<u8> = got.iter().filter(|v| v.0 == p).map(|v| v.1).collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]), "order broken: {seq:?}");
            }
            let mut all: Vec<_> = got.iter().chain(refused.iter()).copied().collect();
            all.sort();
            assert_eq!(
                all,
                vec![(0, 0), (0, 1), (1, 0), (1, 1)],
                "lost or duplicated"
            );
            // A refused value is never also delivered, and refusals come after the close:
            // once a producer is refused, its later values are refused too.
            for p in 0..2u8 {
                let r: Vec<u8> = refused.iter().filter(|v| v.0 == p).map(|v| v.1).collect();
                if let Some(&first) = r.first() {
                    assert!(got.iter().all(|v| v.0 != p || v.1 < first));
                }
            }
        });
    }

    /// The run state machine (issue 8, fault 7): a spawned (QUEUED) process whose owner
    /// runs slices (begin, take_all, park or yield) while two senders push and enqueue
    /// it when told to. In every interleaving: the process is in at most one run queue,
    /// every value is taken exactly once, and once everyone is done it is IDLE with an
    /// empty inbox — a push that found it running or queued was never left behind.
    #[test]
    fn loom_notify_park_no_lost_wakeup() {
        loom::model(|| {
            let ib = Arc::new(Inbox::<u8>::new(RunState::Queued));
            // Run queue entries of this process: the spawner's, then the senders'.
            let queued = Arc::new(AtomicUsize::new(1));
            let senders: Vec<_> = (0..2u8)
                .map(|s| {
                    let (ib, queued) = (ib.clone(), queued.clone());
                    loom::thread::spawn(move || {
                        if ib.push(s).expect("never closed here") {
                            assert_eq!(queued.fetch_add(1, Ordering::AcqRel), 0, "queued twice");
                        }
                    })
                })
                .collect();
            let mut got = Vec::new();
            // One slice of the owner, if the process is in a queue: `yield_first`
            // makes it yield once before it waits.
            let slice = |got: &mut Vec<u8>, yield_first: bool| {
                if queued.load(Ordering::Acquire) == 0 {
                    return;
                }
                queued.fetch_sub(1, Ordering::AcqRel);
                if yield_first {
                    // The scheduler's fused start of a slice.
                    got.extend(ib.begin_drain().expect("a queued process is QUEUED"));
                } else {
                    assert!(ib.begin(), "a queued process is QUEUED");
                    ib.take_all(got);
                }
                if yield_first {
                    ib.yielded();
                    assert_eq!(queued.fetch_add(1, Ordering::AcqRel), 0, "queued twice");
                } else if !ib.park() {
                    assert_eq!(queued.fetch_add(1, Ordering::AcqRel), 0, "queued twice");
                }
            };
            slice(&mut got, true);
            slice(&mut got, false);
            for s in senders {
                s.join().unwrap();
            }
            while queued.load(Ordering::Acquire) > 0 {
                slice(&mut got, false);
            }
            got.sort();
            assert_eq!(got, vec![0, 1], "lost or duplicated");
            assert_eq!(ib.state(), RunState::Idle);
            assert!(ib.is_empty(), "a wake-up was lost");
        });
    }
}
