//! The memory the VM holds on purpose or outside its counters: the allocator's caches,
//! and the Python objects of process frames.
//!
//! * **Allocator.** mimalloc (the global allocator of this module, so of every VM
//!   structure) keeps freed pages committed for a while to reuse them (its purge delay)
//!   and cannot hand back a page that still holds one live block; a thread that goes
//!   idle right after a burst does not purge at all until it allocates again.
//!   `memory()['allocator']` is what mimalloc holds resident ([`resident`]) beyond what
//!   the VM's counters account for (the mimalloc-allocated part of processes, binaries,
//!   atoms and system): its caches, fragmentation (a block is rounded up to its size
//!   class), and the few untracked structures. [`release`] returns the free pages at
//!   once (`mi_collect(true)`) and reports how much resident memory came back;
//!   [`on_idle`], vm-core's idle hook, does the same on a scheduler idle for half a
//!   second, so an idle VM does not keep a burst's pages.
//! * **Python processes.** A process's generator, frame, budget cell and context live on
//!   Python's heap, not mimalloc's; each process's size at spawn is declared to vm-core
//!   (`vm_core::add_body_bytes`, so `memory().processes` counts it for every reader)
//!   and taken off when the process is dropped. Objects that
//!   a process's locals point to are Python's own, not counted (a process holding a
//!   100 MB list is a Python-level matter).

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

/// A live Python process's share of `vm_core::body_bytes()`; dropping it takes the
/// share off.
pub(crate) struct Counted(usize);

impl Counted {
    /// Counts a process whose generator is `gen` (measured with `sys.getsizeof`: its
    /// frame is inside it), plus `fixed` bytes for what every process has alike (its
    /// budget cell, context and Rust body, measured once by the caller).
    pub(crate) fn new(gen: &Bound<'_, PyAny>, fixed: usize) -> Counted {
        let n = fixed + sizeof(gen.py(), gen);
        vm_core::add_body_bytes(n);
        Counted(n)
    }
}

/// `sys.getsizeof(obj)` (0 if it fails: the count is advisory). For a generator it
/// includes the frame (locals and stack), which is allocated inside it.
pub(crate) fn sizeof(py: Python<'_>, obj: &Bound<'_, PyAny>) -> usize {
    static GETSIZEOF: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    GETSIZEOF
        .get_or_try_init(py, || {
            py.import("sys")
                .and_then(|sys| sys.getattr("getsizeof"))
                .map(Bound::unbind)
        })
        .ok()
        .and_then(|f| f.call1(py, (obj,)).ok())
        .and_then(|v| v.extract::<usize>(py).ok())
        .unwrap_or(0)
}

impl Drop for Counted {
    fn drop(&mut self) {
        vm_core::sub_body_bytes(self.0);
    }
}

/// Bytes mimalloc has committed (the pages it holds readable and writable).
pub(crate) fn committed() -> usize {
    let mut commit = 0usize;
    // SAFETY: mi_process_info accepts NULL for every out-parameter it should not fill
    // and writes a usize through each non-NULL one.
    unsafe {
        libmimalloc_sys::mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut commit,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
    commit
}

/// Where mimalloc places its arenas on 64-bit Linux: it asks the OS for addresses from
/// 2 TiB up to 30 TiB (its `MI_HINT_BASE` / `MI_HINT_MAX`), away from the heap and
/// from other libraries' mappings.
const ARENA_HINTS: std::ops::Range<usize> = (2 << 40)..(30 << 40);

/// Bytes of mimalloc's memory that are resident now: the RSS of its arena mappings in
/// `/proc/self/smaps` (the mapping that holds a block it just allocated, and every
/// mapping in its address range). Its own `committed` counter is no measure of this:
/// purged pages stay "committed" on Linux (they are reset, not unmapped). Elsewhere,
/// the committed counter.
pub(crate) fn resident() -> usize {
    let probe = Box::new(0u64);
    let at = &*probe as *const u64 as usize;
    match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => arenas_rss(&smaps, at),
        Err(_) => committed(),
    }
}

/// Sums the `Rss:` of the mappings in `smaps` that are mimalloc's (see [`resident`]).
fn arenas_rss(smaps: &str, probe: usize) -> usize {
    let mut total = 0;
    let mut ours = false;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            if ours {
                let kb: usize = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                total += kb * 1024;
            }
            continue;
        }
        // A mapping's header: "start-end perms offset dev inode [path]".
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) {
            ours = ARENA_HINTS.contains(&start) || (start..end).contains(&probe);
        }
    }
    total
}

/// What mimalloc holds resident beyond `accounted` bytes of VM structures it
/// allocated.
pub(crate) fn cached(accounted: usize) -> usize {
    resident().saturating_sub(accounted)
}

/// Returns the allocators' free memory to the OS now; the bytes that came back.
///
/// mimalloc's (the VM's structures) first, then the C library's: Python allocates its
/// large objects (a 1 MB `bytes`) and its object arenas with `malloc`, and glibc keeps
/// what was freed in the middle of its heaps resident for reuse; after a burst of
/// Python-side garbage that is often the larger part. `malloc_trim(0)` hands those free
/// pages back (glibc only; elsewhere only mimalloc's part is returned).
pub(crate) fn release() -> usize {
    let before = resident();
    // SAFETY: mi_collect is thread-safe; `force` frees what every thread's heap and the
    // abandoned pages hold free, and purges the freed pages at once.
    unsafe { libmimalloc_sys::mi_collect(true) };
    before.saturating_sub(resident()) + trim_libc()
}

/// A scheduler thread went idle (vm-core's idle hook, half a second after it last ran
/// something, or every 5 s while it parks): mimalloc purges freed pages only on threads
/// that allocate, so this thread's heap would keep a burst's pages forever.
/// `mi_collect(true)` frees what its heap holds free and purges at once; then glibc's
/// heaps are trimmed (a walk of its arenas: well under a millisecond when there is
/// little to return, and no more often than the hook runs).
pub(crate) fn on_idle() {
    // SAFETY: as in `release`; called on a scheduler thread outside any VM lock.
    unsafe { libmimalloc_sys::mi_collect(true) };
    malloc_trim();
}

/// glibc's `malloc_trim(0)`: returns the free pages of every arena to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() {
    // SAFETY: malloc_trim takes each arena's lock itself and only returns free pages;
    // it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() {}

/// [`malloc_trim`]; the resident bytes it gave back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_libc() -> usize {
    let before = process_rss();
    malloc_trim();
    before.saturating_sub(process_rss())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_libc() -> usize {
    0
}

/// The process's resident set (`/proc/self/statm`'s second field), 0 if unreadable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn process_rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * page_size())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported on Linux.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_rss_counts_only_mimallocs_mappings() {
        let smaps = "\
20000000000-20040000000 rw-p 00000000 00:00 0
Size:            1048576 kB
Rss:                2048 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                1024 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 512 kB
";
        assert_eq!(arenas_rss(smaps, 0x1000), 2048 * 1024);
        assert_eq!(arenas_rss(smaps, 0x7f0000200010), (2048 + 512) * 1024);
    }
}

/// mimalloc's own statistics as JSON (`mi_stats_get_json`), for diagnosis.
#[pyfunction]
pub(crate) fn _allocator_stats() -> PyResult<String> {
    // SAFETY: with a NULL buffer mi_stats_get_json allocates one (with mimalloc) and
    // returns it NUL-terminated, or NULL on failure; we copy it out and free it with
    // mi_free, as its documentation asks.
    unsafe {
        let p = libmimalloc_sys::mi_stats_get_json(0, std::ptr::null_mut());
        if p.is_null() {
            return Err(pyo3::exceptions::PyMemoryError::new_err(
                "mimalloc could not format its statistics",
            ));
        }
        let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        libmimalloc_sys::mi_free(p.cast());
        Ok(s)
    }
}
