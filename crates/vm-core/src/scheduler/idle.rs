//! Parked schedulers, and waking one when work arrives.
//!
//! A scheduler with nothing to run or steal spins briefly (see the worker), then
//! parks: it sets its bit in the idle set, re-checks every queue, and only then calls
//! `std::thread::park()`. Whoever makes work available pushes it first and then looks
//! for an idle bit to clear and unpark ([`Idle::wake_one`]).
//!
//! ## Why no wake-up is lost
//!
//! Two threads, two locations: the parker writes its idle bit and reads the queues;
//! the waker writes a queue and reads the idle bits. That is the store-buffering
//! pattern, where each side may read the other's old value unless both put a SeqCst
//! fence between their write and their read. With the fences, the two fences are
//! ordered one way or the other in the single SeqCst order, and the side whose fence
//! comes second reads what the other wrote before its fence:
//!
//! * the waker's fence second: the waker sees the idle bit and unparks the parker (if
//!   the parker has not called `park` yet, the unpark token makes `park` return at
//!   once);
//! * the parker's fence second: the parker sees the pushed work and does not park.
//!
//! Either way the work is found. Waking needs no lock: the idle set is a bitmap of
//! atomic words, and the waker that clears a bit (a CAS) is the one that unparks its
//! scheduler, so a scheduler is woken once per park. `num_idle` lets the common case
//! (nobody parked) skip the bitmap with one load after the fence.
//!
//! Offline schedulers (beyond `schedulers_online`) park here too, and are never
//! picked by `wake_one`; changing the number online wakes everyone.
//!
//! ## Parking in epoll
//!
//! Once the VM has sockets, one idle scheduler at a time parks in the reactor's
//! `epoll_wait` instead of the futex (BEAM's check_io: the scheduler that would sleep
//! anyway waits for readiness, handles it, and runs the processes it woke on the same
//! core, with no thread between the socket and the process). It holds the reactor's
//! poller, notes itself in `in_epoll`, then joins the idle set exactly as above
//! (`park_in_poll`); its sleep is `epoll_wait`, and waking it is the reactor's waker
//! (an eventfd) as well as `unpark`. The waker reads `in_epoll` after clearing the
//! scheduler's bit: the parker wrote `in_epoll` before setting that bit with Release,
//! and the waker's clearing CAS (Acquire) reads that write or a later one, so it sees
//! `in_epoll` (or the parker's own reset, written only after `epoll_wait` returned).
//! A stale wake-up (the eventfd written for a sleep already over) only makes a later
//! `epoll_wait` return at once, as an unpark token does for `park`.

use std::io;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use crate::io::Reactor;

/// The idle set and the threads to unpark.
pub(crate) struct Idle {
    /// Bit `i % 64` of word `i / 64`: scheduler `i` is parked or about to park.
    bits: Box<[AtomicU64]>,
    /// Bits set in `bits` (an upper bound while a bit is being set or cleared).
    num_idle: AtomicUsize,
    threads: Vec<OnceLock<Thread>>,
    online: AtomicUsize,
    /// The scheduler parked (or parking) in the reactor's `epoll_wait`, plus one; 0
    /// when none. Written only by the holder of the reactor's poller.
    in_epoll: AtomicUsize,
    /// The VM's reactor, once it has one: what `in_epoll` sleeps in.
    reactor: OnceLock<Arc<Reactor>>,
}

impl Idle {
    pub(crate) fn new(n: usize, online: usize) -> Idle {
        Idle {
            bits: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            num_idle: AtomicUsize::new(0),
            threads: (0..n).map(|_| OnceLock::new()).collect(),
            online: AtomicUsize::new(online),
            in_epoll: AtomicUsize::new(0),
            reactor: OnceLock::new(),
        }
    }

    /// The VM's reactor was made: from now on an idle scheduler may park in it.
    /// Wakes everyone, so that a scheduler already asleep on its futex re-parks in
    /// epoll (nobody else would poll the new sockets).
    pub(crate) fn set_reactor(&self, r: Arc<Reactor>) {
        let _ = self.reactor.set(r);
        self.wake_all();
    }

    /// The reactor, if the VM has one.
    pub(crate) fn reactor(&self) -> Option<&Arc<Reactor>> {
        self.reactor.get()
    }

    pub(crate) fn register_thread(&self, i: usize, t: Thread) {
        let _ = self.threads[i].set(t);
    }

    /// Schedulers taking work.
    pub(crate) fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    /// Sets the number of schedulers online; returns the old one.
    pub(crate) fn set_online(&self, n: usize) -> usize {
        self.online.swap(n, Ordering::AcqRel)
    }

    /// Call after making work available: wakes one parked online scheduler, if any.
    /// Whether every scheduler is parked (or about to park), by the idle count (an
    /// upper bound while a bit changes: good enough for the watchdog's idle sleep,
    /// which a waking scheduler interrupts anyway).
    pub(crate) fn all_parked(&self) -> bool {
        self.num_idle.load(Ordering::SeqCst) >= self.threads.len()
    }

    pub(crate) fn wake_one(&self) {
        // Paired with the fence in `park` (see the module docs).
        fence(Ordering::SeqCst);
        if self.num_idle.load(Ordering::Relaxed) == 0 {
            return;
        }
        let online = self.online();
        for (w, word) in self.bits.iter().enumerate() {
            let mask = online_mask(w, online);
            let mut v = word.load(Ordering::Relaxed);
            while v & mask != 0 {
                let bit = (v & mask).trailing_zeros() as usize;
                match word.compare_exchange_weak(
                    v,
                    v & !(1 << bit),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.num_idle.fetch_sub(1, Ordering::Relaxed);
                        self.unpark(w * 64 + bit);
                        return;
                    }
                    Err(now) => v = now,
                }
            }
        }
    }

    /// Unparks every scheduler (shutdown, a change of schedulers online).
    pub(crate) fn wake_all(&self) {
        for t in self.threads.iter().filter_map(|t| t.get()) {
            t.unpark();
        }
        if let Some(r) = self.reactor.get() {
            let _ = r.wake();
        }
    }

    /// Parks scheduler `i` (on its own thread) unless `keep_running` says, after it
    /// registered as idle, that there is a reason not to (work, stopping). Returns when
    /// woken (or at once), or after `timeout` if one is given.
    pub(crate) fn park(
        &self,
        i: usize,
        timeout: Option<Duration>,
        keep_running: impl FnOnce() -> bool,
    ) {
        if self.enter(i, keep_running) {
            match timeout {
                Some(t) => std::thread::park_timeout(t),
                None => std::thread::park(),
            }
        }
        self.leave(i);
    }

    /// Parks scheduler `i` in the reactor's `epoll_wait` (at most `timeout`) unless
    /// `keep_running` says not to, then handles the readiness it found (waking
    /// processes, which go to this scheduler's queues). `None` at once, without
    /// parking, if there is no reactor or another thread holds its poller: the
    /// caller parks on its futex instead. `woke` runs when the sleep ends, before the
    /// events are handled.
    pub(crate) fn park_in_poll(
        &self,
        i: usize,
        timeout: Duration,
        keep_running: impl FnOnce() -> bool,
        woke: impl FnOnce(),
    ) -> Option<io::Result<usize>> {
        let r = self.reactor.get()?;
        r.try_poll(
            Some(timeout),
            || {
                self.in_epoll.store(i + 1, Ordering::Relaxed);
                self.enter(i, keep_running)
            },
            || {
                self.in_epoll.store(0, Ordering::Relaxed);
                self.leave(i);
                woke();
            },
        )
    }

    /// Joins the idle set; true if the scheduler may sleep (`keep_running` said no
    /// after the fence).
    fn enter(&self, i: usize, keep_running: impl FnOnce() -> bool) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        // Release: a waker that clears this bit sees `in_epoll` (module docs).
        self.bits[w].fetch_or(bit, Ordering::Release);
        self.num_idle.fetch_add(1, Ordering::Relaxed);
        // Paired with the fence in `wake_one` (see the module docs).
        fence(Ordering::SeqCst);
        !keep_running()
    }

    /// Leaves the idle set after a sleep (or none).
    fn leave(&self, i: usize) {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        // Woken by `wake_one` (which cleared the bit), or by `wake_all`, a spurious
        // unpark or the re-check (the bit is still ours to clear).
        if self.bits[w].fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
            self.num_idle.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn unpark(&self, i: usize) {
        if let Some(t) = self.threads[i].get() {
            t.unpark();
        }
        if self.in_epoll.load(Ordering::Relaxed) == i + 1 {
            if let Some(r) = self.reactor.get() {
                let _ = r.wake();
            }
        }
    }
}

/// The bits of word `w` that belong to online schedulers.
fn online_mask(w: usize, online: usize) -> u64 {
    let first = w * 64;
    if online >= first + 64 {
        u64::MAX
    } else if online <= first {
        0
    } else {
        (1u64 << (online - first)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn online_masks() {
        assert_eq!(online_mask(0, 1), 1);
        assert_eq!(online_mask(0, 64), u64::MAX);
        assert_eq!(online_mask(1, 64), 0);
        assert_eq!(online_mask(1, 66), 0b11);
        assert_eq!(online_mask(2, 1024), u64::MAX);
    }

    /// A parked scheduler is woken once by `wake_one` (its bit cleared by the waker);
    /// one that finds work on its re-check does not park; offline ones are not woken.
    #[test]
    fn wake_one_unparks_a_parked_online_scheduler() {
        let idle = Arc::new(Idle::new(70, 70));
        let work = Arc::new(AtomicBool::new(false));
        let parked = {
            let (idle, work) = (idle.clone(), work.clone());
            std::thread::spawn(move || {
                idle.park(66, None, || work.load(Ordering::SeqCst));
                work.load(Ordering::SeqCst)
            })
        };
        idle.register_thread(66, parked.thread().clone());
        while idle.num_idle.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        work.store(true, Ordering::SeqCst);
        idle.wake_one();
        assert!(parked.join().unwrap(), "woke with the work visible");
        assert_eq!(idle.num_idle.load(Ordering::SeqCst), 0);
        assert!(idle.bits.iter().all(|w| w.load(Ordering::SeqCst) == 0));
        // Re-check finds work: no park, bit cleared.
        idle.park(3, None, || true);
        assert_eq!(idle.num_idle.load(Ordering::SeqCst), 0);
        // Offline: scheduler 5 with 2 online is not picked.
        idle.set_online(2);
        idle.bits[0].fetch_or(1 << 5, Ordering::SeqCst);
        idle.num_idle.fetch_add(1, Ordering::SeqCst);
        idle.wake_one();
        assert_eq!(idle.bits[0].load(Ordering::SeqCst), 1 << 5);
        std::thread::sleep(Duration::from_millis(1));
    }

    struct NoSink;
    impl crate::io::IoSink for NoSink {
        fn deliver(&self, _: crate::term::Pid, _: crate::io::IoEvent) -> bool {
            false
        }
    }

    /// A scheduler parked in epoll is woken by `wake_one` (through the reactor's
    /// waker, since `unpark` does not reach `epoll_wait`), leaves the idle set, and
    /// only one thread at a time can park there (the second gets `None`).
    #[test]
    fn wake_one_reaches_a_scheduler_parked_in_epoll() {
        let idle = Arc::new(Idle::new(2, 2));
        let reactor = Arc::new(Reactor::new(Arc::new(NoSink)).unwrap());
        idle.set_reactor(reactor.clone());
        // `set_reactor` woke everyone: take that wake-up, so the park below can only
        // end by the one under test.
        reactor.poll(Some(Duration::ZERO)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let parked = {
            let idle = idle.clone();
            std::thread::spawn(move || {
                // Far longer than the test may take: only a wake-up ends it.
                let r = idle.park_in_poll(0, Duration::from_secs(600), || false, || {});
                tx.send(r.map(|r| r.is_ok())).unwrap();
            })
        };
        idle.register_thread(0, parked.thread().clone());
        while idle.in_epoll.load(Ordering::SeqCst) != 1 || idle.num_idle.load(Ordering::SeqCst) == 0
        {
            std::thread::yield_now();
        }
        // The poller is taken: another thread cannot park in epoll.
        assert!(idle
            .park_in_poll(1, Duration::ZERO, || true, || {})
            .is_none());
        idle.wake_one();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Ok(Some(true)),
            "woken out of epoll_wait"
        );
        parked.join().unwrap();
        assert_eq!(idle.num_idle.load(Ordering::SeqCst), 0);
        assert_eq!(idle.in_epoll.load(Ordering::SeqCst), 0);
        // The poller is free again.
        assert!(idle
            .park_in_poll(1, Duration::ZERO, || true, || {})
            .is_some());
    }
}
