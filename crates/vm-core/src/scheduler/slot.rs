//! The LIFO hand-off slot of one scheduler (see the scheduler module docs).
//!
//! Its owner puts and takes; the watchdog may take from a scheduler stuck in a long
//! slice, so the slot is an atomic pointer rather than a `Cell`. Every non-null
//! pointer in it came from `Arc::into_raw` and is owned by the slot: whoever swaps it
//! out owns that reference and turns it back into an `Arc` exactly once.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use crate::process::Process;

/// A single-entry, swap-based slot holding at most one process.
pub(crate) struct LifoSlot {
    ptr: AtomicPtr<Process>,
}

impl Default for LifoSlot {
    fn default() -> Self {
        LifoSlot {
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl LifoSlot {
    /// Puts `p` in the slot, returning what was there.
    pub(crate) fn put(&self, p: Arc<Process>) -> Option<Arc<Process>> {
        let raw = Arc::into_raw(p) as *mut Process;
        let old = self.ptr.swap(raw, Ordering::AcqRel);
        Self::own(old)
    }

    /// Takes what is in the slot.
    pub(crate) fn take(&self) -> Option<Arc<Process>> {
        if self.ptr.load(Ordering::Relaxed).is_null() {
            return None;
        }
        Self::own(self.ptr.swap(ptr::null_mut(), Ordering::AcqRel))
    }

    /// True if the slot holds a process (racy hint).
    #[cfg(test)]
    pub(crate) fn is_occupied(&self) -> bool {
        !self.ptr.load(Ordering::Relaxed).is_null()
    }

    fn own(raw: *mut Process) -> Option<Arc<Process>> {
        if raw.is_null() {
            return None;
        }
        // SAFETY: every non-null pointer stored in the slot came from `Arc::into_raw` in
        // `put`, and the atomic swap that removed it gave this caller the only copy, so
        // rebuilding the `Arc` reclaims exactly the reference `put` leaked.
        Some(unsafe { Arc::from_raw(raw) })
    }
}

impl Drop for LifoSlot {
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Priority, Step};
    use crate::term::Pid;

    fn proc() -> Arc<Process> {
        let body = |_: &mut crate::Cx<'_>| Step::Wait;
        Arc::new(Process::new(
            Pid {
                index: 1,
                serial: 0,
            },
            Box::new(body),
            Priority::Normal,
        ))
    }

    #[test]
    fn put_take_and_concurrent_take_never_duplicate() {
        let s = Arc::new(LifoSlot::default());
        let p = proc();
        assert!(s.put(p.clone()).is_none());
        assert!(s.is_occupied());
        let q = proc();
        let back = s.put(q.clone()).unwrap();
        assert!(Arc::ptr_eq(&back, &p));
        drop(back);
        // Many threads race to take: exactly one gets it.
        let got: usize = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || usize::from(s.take().is_some()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(got, 1);
        assert_eq!(Arc::strong_count(&q), 1);
        assert_eq!(Arc::strong_count(&p), 1);
    }
}
