//! The lock-free inbox: where every signal to a process lands first.
//!
//! Any thread may push; only the owner (the scheduler thread currently running the
//! process) takes. The structure is an intrusive Treiber stack of boxed nodes:
//!
//! * `push` allocates a node and CASes it onto `head`. Senders never take a lock and
//!   never wait for each other beyond a failed CAS retry.
//! * `take_all` swaps `head` for null and reverses the detached chain, which yields the
//!   signals in push order. Because the owner detaches the *whole* chain at once, a node
//!   is never popped individually while others push, so the ABA problem of a Treiber
//!   pop cannot arise.
//! * `close` swaps in the `CLOSED` sentinel. A push that sees `CLOSED` fails and hands
//!   the signal back, which is how a sender learns that the process has exited
//!   (`noproc`). Everything pushed before the close is returned by `close` itself, so a
//!   signal is either delivered to the dying process's final drain or returned to its
//!   sender: never lost.
//!
//! Ordering: pushes by one thread are linearised by their CASes in program order, and a
//! detached chain reversed is in CAS order, so signals from one sender arrive in the
//! order sent (Erlang's only ordering guarantee).
//!
//! `len` counts pushed-but-not-taken signals; it is advisory (introspection and the
//! send cost of a long queue) and may lag the chain by one in-flight push. `bytes`
//! likewise counts the heap bytes the queued signals hold (what their senders declared
//! with [`Inbox::push_sized`]; each node remembers its own), for `memory()`.

use std::ptr;

#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

struct Node<T> {
    next: *mut Node<T>,
    /// Heap bytes `value` holds (as declared by `push_sized`).
    bytes: usize,
    value: T,
}

/// Bytes of one queued node around a value of type `T` (for memory accounting).
pub const fn node_bytes<T>() -> usize {
    std::mem::size_of::<Node<T>>()
}

/// The address used as the "closed" marker. It is never dereferenced.
fn closed<T>() -> *mut Node<T> {
    // A dangling, well-aligned, non-null address that no allocation can return.
    ptr::NonNull::<Node<T>>::dangling().as_ptr()
}

/// A multi-producer, single-consumer, closable signal queue.
pub struct Inbox<T> {
    head: AtomicPtr<Node<T>>,
    len: AtomicU32,
    bytes: AtomicUsize,
}

// SAFETY: the inbox owns the `T`s in its nodes and moves them between threads; that is
// sound exactly when `T: Send`. All shared mutation goes through atomics.
unsafe impl<T: Send> Send for Inbox<T> {}
// SAFETY: `push` may be called from many threads at once (atomic CAS on `head`);
// `take_all`/`close` detach the chain with an atomic swap, so concurrent callers each
// get disjoint chains. No `&T` is ever handed out to other threads.
unsafe impl<T: Send> Sync for Inbox<T> {}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Inbox<T> {
    /// An empty, open inbox. Allocates nothing.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Inbox {
            head: AtomicPtr::new(ptr::null_mut()),
            len: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// An empty, open inbox (loom build: loom's atomics are not const).
    #[cfg(loom)]
    pub fn new() -> Self {
        Inbox {
            head: AtomicPtr::new(ptr::null_mut()),
            len: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Pushes `value`; returns it back if the inbox is closed.
    pub fn push(&self, value: T) -> Result<(), T> {
        self.push_sized(value, 0)
    }

    /// Pushes `value`, which holds `bytes` of heap memory (counted in [`Inbox::bytes`]
    /// until it is taken); returns it back if the inbox is closed.
    pub fn push_sized(&self, value: T, bytes: usize) -> Result<(), T> {
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
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            if head == closed() {
                if bytes > 0 {
                    self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                }
                // SAFETY: `node` came from `Box::into_raw` above and was never shared.
                let node = unsafe { Box::from_raw(node) };
                return Err(node.value);
            }
            // SAFETY: `node` is still exclusively ours until the CAS publishes it.
            unsafe { (*node).next = head };
            match self
                .head
                .compare_exchange_weak(head, node, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.len.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(h) => head = h,
            }
        }
    }

    /// Detaches everything pushed so far, appending it to `out` in push order.
    /// Returns how many signals were appended. Does nothing on a closed inbox.
    pub fn take_all(&self, out: &mut Vec<T>) -> usize {
        if self.head.load(Ordering::Relaxed).is_null() {
            return 0;
        }
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            if head.is_null() || head == closed() {
                return 0;
            }
            match self.head.compare_exchange_weak(
                head,
                ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        self.detached(head, out)
    }

    /// Closes the inbox: later pushes fail. Returns what was pushed before, in order.
    pub fn close(&self, out: &mut Vec<T>) -> usize {
        let head = self.head.swap(closed(), Ordering::AcqRel);
        if head.is_null() || head == closed() {
            return 0;
        }
        self.detached(head, out)
    }

    /// Moves a detached chain into `out` and takes it off the counters.
    fn detached(&self, head: *mut Node<T>, out: &mut Vec<T>) -> usize {
        let (n, bytes) = Self::drain_chain(head, out);
        self.len.fetch_sub(n as u32, Ordering::Relaxed);
        if bytes > 0 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        n
    }

    /// True once `close` has run.
    pub fn is_closed(&self) -> bool {
        self.head.load(Ordering::Acquire) == closed()
    }

    /// True when nothing is waiting (a racy hint for the owner).
    pub fn is_empty(&self) -> bool {
        let h = self.head.load(Ordering::Acquire);
        h.is_null() || h == closed()
    }

    /// Signals pushed and not yet taken (advisory).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }

    /// Heap bytes held by the signals pushed and not yet taken (advisory, as `len`).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Returns (signals, their declared bytes).
    fn drain_chain(mut cur: *mut Node<T>, out: &mut Vec<T>) -> (usize, usize) {
        // The chain is newest-first; collect then reverse the appended part.
        let start = out.len();
        let mut bytes = 0;
        while !cur.is_null() {
            // SAFETY: every node in a detached chain was created by `push` with
            // `Box::into_raw`, published once, and detached by exactly one swap/CAS, so
            // this thread now owns it exclusively; each node is freed exactly once here.
            let node = unsafe { Box::from_raw(cur) };
            cur = node.next;
            bytes += node.bytes;
            out.push(node.value);
        }
        out[start..].reverse();
        (out.len() - start, bytes)
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let mut sink = Vec::new();
        self.close(&mut sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_and_close() {
        let ib = Inbox::new();
        for i in 0..10 {
            ib.push(i).unwrap();
        }
        assert_eq!(ib.len(), 10);
        let mut out = Vec::new();
        assert_eq!(ib.take_all(&mut out), 10);
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        ib.push(10).unwrap();
        let mut rest = Vec::new();
        assert_eq!(ib.close(&mut rest), 1);
        assert_eq!(rest, vec![10]);
        assert_eq!(ib.push(11), Err(11));
        assert!(ib.is_closed());
        assert_eq!(ib.take_all(&mut rest), 0);
    }

    #[test]
    fn drop_frees_pending() {
        let v = Arc::new(());
        let ib = Inbox::new();
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
        let ib = Arc::new(Inbox::<(usize, usize)>::new());
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
}

/// Model checks of the real `Inbox` code under loom (`RUSTFLAGS="--cfg loom" cargo test
/// -p vm-core --lib loom`): every interleaving of two producers with a consumer that
/// drains and then closes. Each value is delivered exactly once or handed back to its
/// producer, and each producer's values arrive in order.
#[cfg(loom)]
mod loom_tests {
    use super::Inbox;
    use loom::sync::Arc;

    #[test]
    fn loom_two_producers_take_and_close() {
        loom::model(|| {
            let ib = Arc::new(Inbox::<(u8, u8)>::new());
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
}
