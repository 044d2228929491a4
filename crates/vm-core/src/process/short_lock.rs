//! A lock for data held a few instructions at a time by one writer: a process's links
//! and monitors.
//!
//! The owner takes it for one insert or removal (never across a slice, never around
//! user code), and introspection takes it to copy the sets. `std::sync::Mutex` costs
//! two locked instructions per use — its unlock is a swap, to learn whether a waiter
//! must be woken — and links and monitors change on every spawn_link, monitor, DOWN and
//! exit (issue 8 measured the second one at 5-10% of an exit cascade). Here there is
//! nobody to wake: a contender (only ever introspection, or the owner against it)
//! spins, then yields, for the few instructions the holder needs. So taking is one
//! compare-and-swap and giving back is a plain release store.
//!
//! Correctness: `taken` is the lock. A successful acquire CAS (false -> true) gives its
//! thread exclusive access to `data` until the release store (false) that the next
//! acquire CAS reads from; acquire/release on that one flag orders the accesses to
//! `data` between holders. The guard gives back the lock when dropped, so a panic in
//! the critical section (an allocation failure) unlocks too.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// See the module docs.
pub(crate) struct ShortLock<T> {
    taken: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is only reached through `with`, which holds the lock (see the module
// docs), so sharing the lock between threads shares `T` with one thread at a time:
// sound exactly when `T` can move between threads.
unsafe impl<T: Send> Sync for ShortLock<T> {}

impl<T> ShortLock<T> {
    pub(crate) const fn new(value: T) -> ShortLock<T> {
        ShortLock {
            taken: AtomicBool::new(false),
            data: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the data, the lock held.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if self
            .taken
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.contended();
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.taken);
        // SAFETY: this thread holds the lock (the CAS above or in `contended`
        // succeeded) until `_release` drops after `f` returns, so no other reference
        // to `data` exists meanwhile.
        f(unsafe { &mut *self.data.get() })
    }

    #[cold]
    fn contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.taken.load(Ordering::Relaxed) {
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    // The holder was descheduled mid-update: let it run.
                    std::thread::yield_now();
                }
                spins = spins.saturating_add(1);
            }
            if self
                .taken
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// 4 threads x 100k increments of a plain (non-atomic) counter under the lock:
    /// none is lost, so each holder had it to itself.
    #[test]
    fn holders_exclude_each_other() {
        let lock = Arc::new(ShortLock::new(0u64));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        lock.with(|n| *n += 1);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(lock.with(|n| *n), 400_000);
    }

    #[test]
    fn a_panic_inside_releases_the_lock() {
        let lock = ShortLock::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.with(|_| panic!("inside"));
        }));
        assert!(r.is_err());
        assert_eq!(lock.with(|n| *n), 1);
    }
}
