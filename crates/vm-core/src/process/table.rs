//! The process table: pid -> process, with a hard limit and stale-pid safety.
//!
//! Slots live in chunks of [`CHUNK`] allocated on first use, so a table sized for tens
//! of millions of processes costs nothing until they exist. A slot holds a raw pointer
//! made with `Arc::into_raw`; readers (every send) never lock: they pin a
//! crossbeam-epoch guard, load the pointer and use the process while pinned. Removal
//! swaps the pointer out and defers the `Arc` drop until every guard that might have
//! seen it is gone.
//!
//! Pids carry the slot's serial, bumped each time the slot is freed, and a lookup
//! compares the whole pid, so a stale pid (an old process's) never reaches the slot's
//! new occupant. Freed indices go to the back of a FIFO free list, which maximises the
//! time before an index is reused.
//!
//! The limit: `live` is reserved before an index is taken and released after the index
//! is back on the free list, so whenever a reservation succeeds an index is available
//! (fresh or free) — spawning past the limit fails cleanly with `system_limit`, and
//! nothing else is disturbed.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_deque::{Injector, Steal};
use crossbeam_epoch::{self as epoch, Guard};

use super::Process;
use crate::term::Pid;

/// Slots per chunk: 4096 × 12 bytes ≈ 48 KiB, small enough to allocate on demand and
/// large enough that the chunk directory for 2^28 processes stays under 1 MiB.
pub(crate) const CHUNK: usize = 4096;

/// The largest process limit: pid indices have 28 bits, and the top index is kept for
/// [`EXTERNAL_PID`].
pub const MAX_PROCESS_LIMIT: usize = (1 << 28) - 1;

/// The pid that stands for code outside the VM (a Rust thread or the Python main
/// thread) when it sends an exit signal; no process ever has it.
pub const EXTERNAL_PID: Pid = Pid {
    index: (1 << 28) - 1,
    serial: 0,
};

#[derive(Default)]
struct Slot {
    ptr: AtomicPtr<Process>,
    serial: AtomicU32,
}

/// See the module docs.
pub(crate) struct ProcessTable {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    limit: usize,
    live: AtomicUsize,
    next_fresh: AtomicUsize,
    free: Injector<u32>,
    spawned: AtomicUsize,
}

/// Spawning failed because the table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SystemLimit;

impl ProcessTable {
    /// A table for at most `limit` live processes (clamped to [1, MAX_PROCESS_LIMIT]).
    pub(crate) fn new(limit: usize) -> ProcessTable {
        let limit = limit.clamp(1, MAX_PROCESS_LIMIT);
        let n = limit.div_ceil(CHUNK);
        ProcessTable {
            chunks: (0..n).map(|_| OnceLock::new()).collect(),
            limit,
            live: AtomicUsize::new(0),
            next_fresh: AtomicUsize::new(0),
            free: Injector::new(),
            spawned: AtomicUsize::new(0),
        }
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Live processes.
    pub(crate) fn count(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Processes ever spawned.
    pub(crate) fn spawned(&self) -> usize {
        self.spawned.load(Ordering::Relaxed)
    }

    fn slot(&self, index: u32) -> Option<&Slot> {
        let i = index as usize;
        let chunk = self.chunks.get(i / CHUNK)?.get()?;
        chunk.get(i % CHUNK)
    }

    fn slot_or_alloc(&self, index: usize) -> &Slot {
        let chunk = self.chunks[index / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| Slot::default()).collect());
        &chunk[index % CHUNK]
    }

    /// Inserts a process built by `make` for the pid it is given.
    pub(crate) fn insert(
        &self,
        make: impl FnOnce(Pid) -> Process,
    ) -> Result<Arc<Process>, SystemLimit> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(SystemLimit);
        }
        let index = loop {
            match self.free.steal() {
                Steal::Success(i) => break i as usize,
                Steal::Retry => continue,
                Steal::Empty => {}
            }
            let i = self.next_fresh.fetch_add(1, Ordering::AcqRel);
            if i < self.limit {
                break i;
            }
            // Fresh indices are exhausted: a reservation succeeded, so an index is on
            // its way to the free list (pushed before `live` is released). Undo the
            // overshoot and retry.
            self.next_fresh.fetch_sub(1, Ordering::AcqRel);
            std::hint::spin_loop();
        };
        let slot = self.slot_or_alloc(index);
        let pid = Pid {
            index: index as u32,
            serial: slot.serial.load(Ordering::Acquire),
        };
        let proc = Arc::new(make(pid));
        let raw = Arc::into_raw(proc.clone()) as *mut Process;
        slot.ptr.store(raw, Ordering::Release);
        self.spawned.fetch_add(1, Ordering::Relaxed);
        Ok(proc)
    }

    /// Runs `f` on the live process `pid`, if any, without taking a reference count.
    pub(crate) fn with<R>(&self, pid: Pid, f: impl FnOnce(&Process) -> R) -> Option<R> {
        let guard = epoch::pin();
        let p = self.lookup(pid, &guard)?;
        Some(f(p))
    }

    fn lookup<'g>(&self, pid: Pid, _guard: &'g Guard) -> Option<&'g Process> {
        let slot = self.slot(pid.index)?;
        let raw = slot.ptr.load(Ordering::Acquire);
        if raw.is_null() {
            return None;
        }
        // SAFETY: a non-null slot pointer came from `Arc::into_raw` in `insert` and the
        // table's strong reference it represents is only released by `remove` through
        // `defer_unchecked`, which runs after every guard pinned before the removal
        // (including `_guard`, which outlives the returned borrow 'g) is dropped.
        let p = unsafe { &*raw };
        (p.pid == pid).then_some(p)
    }

    /// A counted reference to the live process `pid`.
    pub(crate) fn get(&self, pid: Pid) -> Option<Arc<Process>> {
        let guard = epoch::pin();
        let p = self.lookup(pid, &guard)?;
        let raw = p as *const Process;
        // SAFETY: `raw` is the pointer stored by `insert` (from `Arc::into_raw`) and is
        // kept alive by the table's reference while `guard` is pinned (see `lookup`), so
        // adding a strong count and rebuilding an `Arc` from it is sound.
        unsafe {
            Arc::increment_strong_count(raw);
            Some(Arc::from_raw(raw))
        }
    }

    /// Removes `pid`'s process; its slot becomes reusable with a new serial.
    pub(crate) fn remove(&self, pid: Pid) -> bool {
        let Some(slot) = self.slot(pid.index) else {
            return false;
        };
        let guard = epoch::pin();
        let raw = slot.ptr.load(Ordering::Acquire);
        if raw.is_null() {
            return false;
        }
        // SAFETY: as in `lookup`: the pointer is valid while `guard` is pinned.
        if unsafe { &*raw }.pid != pid {
            return false;
        }
        if slot
            .ptr
            .compare_exchange(raw, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        slot.serial.fetch_add(1, Ordering::AcqRel);
        let addr = raw as usize;
        // SAFETY: we won the CAS, so this is the only removal of this pointer; the
        // deferred closure releases the table's strong reference exactly once, after
        // all guards that could still hold a borrow from `lookup` are unpinned.
        unsafe {
            guard.defer_unchecked(move || drop(Arc::from_raw(addr as *const Process)));
        }
        self.free.push(pid.index);
        self.live.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// Pids of every live process (a snapshot; processes may come and go meanwhile).
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let mut out = Vec::with_capacity(self.count());
        self.for_each(|p| out.push(p.pid));
        out
    }

    /// Calls `f` on every live process. Never blocks a process: it reads the table
    /// under an epoch guard, re-pinned every chunk so that reclamation keeps going.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Process)) {
        let hi = self.next_fresh.load(Ordering::Acquire).min(self.limit);
        for c in 0..hi.div_ceil(CHUNK) {
            let Some(chunk) = self.chunks[c].get() else {
                continue;
            };
            let guard = epoch::pin();
            for slot in chunk.iter() {
                let raw = slot.ptr.load(Ordering::Acquire);
                if !raw.is_null() {
                    // SAFETY: as in `lookup`, valid while `guard` is pinned.
                    f(unsafe { &*raw });
                }
            }
            drop(guard);
        }
    }

    /// Removes every process (VM shutdown); returns them for the caller to tear down.
    pub(crate) fn drain(&self) -> Vec<Arc<Process>> {
        let mut out = Vec::new();
        for p in self.pids() {
            if let Some(a) = self.get(p) {
                self.remove(p);
                out.push(a);
            }
        }
        out
    }
}

impl Drop for ProcessTable {
    fn drop(&mut self) {
        for chunk in self.chunks.iter().filter_map(|c| c.get()) {
            for slot in chunk.iter() {
                let raw = slot.ptr.swap(ptr::null_mut(), Ordering::AcqRel);
                if !raw.is_null() {
                    // SAFETY: we have `&mut self`, so no reader holds a borrow; the
                    // pointer is the table's own strong reference from `insert`.
                    drop(unsafe { Arc::from_raw(raw as *const Process) });
                }
            }
        }
    }
}
