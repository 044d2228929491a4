//! Time slices for Python processes: a native timer raises a "yield now" flag that
//! compiled code reads in the comparison it already makes.
//!
//! Reductions stay the primary measure of a slice: compiled code decrements a frame
//! local at every loop back-edge and function entry and takes its slow path when the
//! count runs out. But a reduction can cost anything: `while True: sum(range(10**5))`
//! spends 2 ms per reduction, so a 4000-reduction slice would last 8 s. The BEAM charges
//! a NIF for the time it consumed; we cannot see inside a C call either, so a slice
//! also ends by time:
//!
//! * Compiled code's check is `if n <= Y:` where `Y` is a closure cell shared by every
//!   compiled function (`_compiler._Y`). It holds the int 0, so the check is the
//!   reduction test, at the cost of a `LOAD_DEREF` instead of a `LOAD_CONST` (measured
//!   within noise on tight loops).
//! * Each scheduler thread publishes a sequence number per Python slice ([`Mark`]):
//!   odd while a slice runs, a plain store at each end (no clock read per slice).
//! * A timer thread looks every [`TICK`] (half a millisecond). A thread seen in the same
//!   slice on two looks has run it for at least one tick: the timer records that slice
//!   as overdue and swaps
//!   the cell's contents to [`BIG`], so that the next check in *whatever* compiled frame
//!   runs (the one looping, or its caller once a long C call returns) takes the slow
//!   path. The slow path (`_runtime._refill`) asks [`_overdue`], which clears the flag
//!   and says whether the caller's own slice is the overdue one; if so the process
//!   yields, charged with the reductions it really used.
//!
//! So a compiled loop yields once its slice has run one to two ticks (plus the rest of
//! the call it is in), whatever its body calls, and code that never reaches a compiled check (one long C call, a property
//! getter that loops) is still bounded only by the vm-core watchdog (docs/preemption.md).
//!
//! The flag is global, not per thread: on GIL builds only the thread holding the GIL
//! runs compiled code, and that is nearly always the overdue one. When it is not (the
//! overdue thread is inside C code that released the GIL), the other thread's slow path
//! clears the flag and goes on; the timer raises it again on its next look while the
//! slice stays overdue, so the cost is at most one slow path per tick. Free-threaded
//! builds never raise the flag (their `LOAD_DEREF` takes references in a way a foreign
//! pointer swap would break): slices end by reductions only there.
//!
//! Writing the cell from the timer thread. The cell and both ints it may hold are kept
//! alive forever (strong references leaked on purpose, and one extra reference on each
//! int for the cell's own), so swapping the cell's `ob_ref` pointer without touching
//! reference counts never frees anything: whichever int the cell points at, the cell's
//! one counted reference is covered. The store is an atomic pointer store; CPython reads
//! the slot with a plain aligned load, which cannot tear.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyInt;

/// How often the timer looks at the scheduler threads: a slice is found overdue after
/// running one to two ticks, so a loop yields about 0.5-1 ms into its slice plus the
/// rest of the call it is in (the BEAM aims at about a millisecond per slice). A look
/// costs a few microseconds (a mutex and one load per scheduler thread): ~1% of a core
/// while Python slices run, nothing when they do not.
pub(crate) const TICK: Duration = Duration::from_micros(500);
/// Looks without any Python slice (~10 ms) before the timer parks until a slice starts.
/// Unparking costs the first slice after a pause one futex wake (a few µs); looking
/// costs a wake-up per tick. At 400 looks (0.2 s by the clock, ~0.45 s in real ticks) a
/// process ticking twice a second kept the timer looking ~800 times a second (~1% of a
/// core for an otherwise idle VM); at 20, a ticker every 100 ms costs ~200 looks a
/// second and an idle VM's timer sleeps.
const IDLE_LOOKS: u32 = 20;
/// The value the flag cell holds while a slice is overdue: at least any count a frame
/// can hold (budgets and the kill grace slice are far below it), and still a one-digit
/// ("compact") int on 3.11-3.13, so the comparison stays on CPython's fast int path.
pub(crate) const BIG: i64 = (1 << 30) - 1;

/// One scheduler thread's slice sequence (see the module docs).
struct Slot {
    /// Odd while a Python slice runs on the thread.
    seq: AtomicU64,
    /// The last slice the timer found overdue.
    overdue: AtomicU64,
    /// The sequence the timer saw at its previous look (written by the timer only).
    seen: AtomicU64,
    /// Looks in a row that found the same slice running (written by the timer only).
    age: AtomicU32,
    /// The slice granted more time because its first budget check came when it was
    /// already overdue (see [`_overdue`]), and how many looks it may then run.
    grace: AtomicU64,
    need: AtomicU32,
}

/// CPython's `PyCellObject` (cpython/cellobject.h, 3.11-3.13): the object header and
/// the pointer to the contents.
#[repr(C)]
struct CellObject {
    ob_base: ffi::PyObject,
    ob_ref: *mut ffi::PyObject,
}

struct Flag {
    cell: AtomicPtr<ffi::PyObject>,
    zero: AtomicPtr<ffi::PyObject>,
    big: AtomicPtr<ffi::PyObject>,
}

static FLAG: Flag = Flag {
    cell: AtomicPtr::new(std::ptr::null_mut()),
    zero: AtomicPtr::new(std::ptr::null_mut()),
    big: AtomicPtr::new(std::ptr::null_mut()),
};

static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());
/// The timer thread, once started; `PARKED` says it waits for the next slice.
static TIMER: OnceLock<Thread> = OnceLock::new();
static PARKED: AtomicBool = AtomicBool::new(false);
/// Set in the child of `os.fork()`: the timer thread did not survive, and it may have
/// held [`SLOTS`] at the fork, so the child never blocks on that lock (see
/// [`slots_registry`]).
static FORKED: AtomicBool = AtomicBool::new(false);

/// The registry of slots, or `None` in a forked child where its lock is held by a
/// thread that no longer exists (an exiting thread's slot is then simply not removed;
/// nothing looks at it: the child has no timer).
fn slots_registry() -> Option<std::sync::MutexGuard<'static, Vec<Arc<Slot>>>> {
    if FORKED.load(Ordering::Acquire) {
        return match SLOTS.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
    }
    Some(SLOTS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// In the child of `os.fork()` (lifecycle's `_after_fork`): forget the parent's timer.
/// Without this a child whose fork caught the timer inside its look deadlocked at exit
/// (a thread-local destructor took the registry's lock). The child's code runs without
/// time slices (a VM started in the child ends its slices by reductions only).
pub(crate) fn after_fork() {
    FORKED.store(true, Ordering::Release);
}

/// This thread's slot, registered for the timer while the thread lives.
struct Owned(Arc<Slot>);

impl Drop for Owned {
    fn drop(&mut self) {
        FAST.with(|c| c.set(std::ptr::null()));
        if let Some(mut slots) = slots_registry() {
            slots.retain(|s| !Arc::ptr_eq(s, &self.0));
        }
    }
}

thread_local! {
    static MINE: Owned = {
        let s = Arc::new(Slot {
            seq: AtomicU64::new(0),
            overdue: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            age: AtomicU32::new(0),
            grace: AtomicU64::new(0),
            need: AtomicU32::new(1),
        });
        if let Some(mut slots) = slots_registry() {
            slots.push(s.clone());
        }
        Owned(s)
    };
    /// `MINE`'s slot, once registered: a plain load per slice instead of the lazily
    /// initialised, destructor-carrying `MINE`. Null before registration and after
    /// `MINE` is destroyed at thread exit.
    static FAST: Cell<*const Slot> = const { Cell::new(std::ptr::null()) };
}

/// This thread's slot. The reference stays valid while the thread runs: `MINE` keeps
/// the `Arc` until the thread's destructors run, and `FAST` is cleared then.
fn my_slot() -> &'static Slot {
    let p = FAST.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: `p` points into the `Arc<Slot>` that `MINE` holds for this thread;
        // `FAST` is reset before `MINE`'s `Arc` is dropped, so a non-null `p` is live.
        return unsafe { &*p };
    }
    let p = MINE.with(|Owned(s)| Arc::as_ptr(s));
    FAST.with(|c| c.set(p));
    // SAFETY: as above; `MINE` was just initialised and holds the slot.
    unsafe { &*p }
}

/// Marks a Python slice on this thread for the timer, from creation to drop.
pub(crate) struct Mark(&'static Slot);

impl Mark {
    /// Call when a Python slice starts (the driver's `resume`).
    pub(crate) fn begin() -> Mark {
        let s = my_slot();
        let v = s.seq.load(Ordering::Relaxed);
        // Single writer: this thread. Even -> odd.
        s.seq.store(v | 1, Ordering::Release);
        if PARKED.load(Ordering::Relaxed) || TIMER.get().is_none() {
            wake_timer();
        }
        Mark(s)
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        let v = self.0.seq.load(Ordering::Relaxed);
        self.0.seq.store((v | 1) + 1, Ordering::Release);
    }
}

#[cold]
fn wake_timer() {
    if FLAG.cell.load(Ordering::Acquire).is_null() {
        return; // not set up: nothing to flag
    }
    let t = TIMER.get_or_init(|| {
        std::thread::Builder::new()
            .name("beamvm-timeslice".into())
            .spawn(timer)
            .map(|h| h.thread().clone())
            .unwrap_or_else(|_| std::thread::current())
    });
    if PARKED.swap(false, Ordering::AcqRel) {
        t.unpark();
    }
}

fn timer() {
    let mut idle = 0u32;
    loop {
        std::thread::sleep(TICK);
        let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let mut busy = false;
        for s in slots.iter() {
            let seq = s.seq.load(Ordering::Acquire);
            if seq % 2 == 0 {
                continue;
            }
            busy = true;
            if s.seen.swap(seq, Ordering::Relaxed) != seq {
                s.age.store(0, Ordering::Relaxed);
                continue;
            }
            let age = s.age.load(Ordering::Relaxed) + 1;
            s.age.store(age, Ordering::Relaxed);
            let need = if s.grace.load(Ordering::Acquire) == seq {
                s.need.load(Ordering::Acquire)
            } else {
                1
            };
            if age >= need {
                s.overdue.store(seq, Ordering::Release);
                raise_flag();
            }
        }
        drop(slots);
        if busy {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle >= IDLE_LOOKS {
                // `idle` stays at the limit: after the park's timeout one look with no
                // slice parks again (an idle VM's timer wakes twice a second, not 400
                // times per 0.7 s as when every park was followed by 0.2 s of looks).
                PARKED.store(true, Ordering::Release);
                // A slice that started between the look and the store finds PARKED
                // set and unparks us; park returns at once if it already did.
                std::thread::park_timeout(Duration::from_millis(500));
                PARKED.store(false, Ordering::Release);
            }
        }
    }
}

fn set_cell(v: *mut ffi::PyObject) {
    let cell = FLAG.cell.load(Ordering::Acquire);
    if cell.is_null() || v.is_null() {
        return;
    }
    // SAFETY: `cell` is a live cell object (a strong reference is leaked in
    // `_timeslice_setup`, so it is never freed), laid out as `CellObject`; `ob_ref` is an
    // aligned pointer field, written here atomically. The ints stored are kept alive
    // forever with one extra reference covering the cell's own (module docs).
    unsafe {
        let slot = std::ptr::addr_of_mut!((*(cell as *mut CellObject)).ob_ref);
        AtomicPtr::from_ptr(slot).store(v, Ordering::Release);
    }
}

fn raise_flag() {
    set_cell(FLAG.big.load(Ordering::Acquire));
}

/// Installs the flag cell (called once by `beamvm/__init__.py` with `_compiler`'s cell,
/// which must hold the int 0).
#[pyfunction]
pub(crate) fn _timeslice_setup(py: Python<'_>, cell: &Bound<'_, PyAny>) -> PyResult<()> {
    let t = cell.get_type();
    if t.qualname()? != "cell" || t.module()? != "builtins" {
        return Err(PyTypeError::new_err("_timeslice_setup expects a cell"));
    }
    if !FLAG.cell.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    let sys = py.import("sys")?;
    if let Ok(gil_enabled) = sys.getattr("_is_gil_enabled") {
        if !gil_enabled.call0()?.is_truthy()? {
            return Ok(()); // free-threaded: slices end by reductions only (module docs)
        }
    }
    // SAFETY: `cell` is a cell (checked above); reading its contents with the GIL held.
    let contents = unsafe { (*(cell.as_ptr() as *mut CellObject)).ob_ref };
    let zero = 0i64.into_pyobject(py)?;
    if contents != zero.as_ptr() {
        return Err(PyTypeError::new_err("the flag cell must hold the int 0"));
    }
    let big = BIG.into_pyobject(py)?;
    // Leaked on purpose, each with one extra reference for the cell (module docs).
    let leak = |o: Bound<'_, PyInt>| {
        let p = o.into_ptr();
        // SAFETY: `p` is a live object we own a reference to; adding one more.
        unsafe { ffi::Py_INCREF(p) };
        p
    };
    FLAG.zero.store(leak(zero), Ordering::Release);
    FLAG.big.store(leak(big), Ordering::Release);
    FLAG.cell.store(cell.clone().into_ptr(), Ordering::Release);
    Ok(())
}

/// Called by compiled code's slow path when the flag was seen: clears it and returns
/// whether the calling thread's current Python slice is the one found overdue.
///
/// Progress. `first_check` says the caller is at its slice's first budget check: all
/// the slice's time went into getting there, which is resuming the process (a deep
/// chain of compiled frames resumes level by level: 20,000 levels take longer than a
/// tick) or one long call right after it. Yielding then would make no progress, and a
/// chain whose resume outlasts a tick would never advance (a livelock, seen with a
/// 20,000-deep recursion). Such a slice gets, once, one more look than it has run: it
/// advances by about what resuming it cost, so deep recursion costs a constant factor
/// (about 2), and a loop around one long C call yields after its second call instead
/// of its first.
#[pyfunction]
#[pyo3(signature = (first_check = false))]
pub(crate) fn _overdue(first_check: bool) -> bool {
    set_cell(FLAG.zero.load(Ordering::Acquire));
    let s = my_slot();
    let seq = s.seq.load(Ordering::Relaxed);
    if seq.is_multiple_of(2) || s.overdue.load(Ordering::Acquire) != seq {
        return false;
    }
    if first_check && s.grace.load(Ordering::Acquire) != seq {
        let age = s.age.load(Ordering::Relaxed);
        s.need.store(age + 1, Ordering::Release);
        s.grace.store(seq, Ordering::Release);
        s.overdue.store(0, Ordering::Release);
        return false;
    }
    true
}

/// Called by compiled code right after a budget-check yield resumes it: the slice's
/// clock starts again here. Resuming a process is not its work: a chain of 20,000
/// compiled frames resumes level by level and can take longer than a tick, so a slice
/// timed from its start would be found overdue at its first check every time and the
/// process would never advance. A new sequence number makes the timer see a new slice
/// (its age restarts, an overdue mark for the resume no longer matches), and the slice
/// gets no first-check grace from [`_overdue`]: its first check comes after real work.
/// Slices that resume elsewhere (a receive, a call's reply) keep the grace.
///
/// The new slice may run as many looks as the resume took (at least one): with a
/// fixed slice, a chain of depth d resumes in O(d) for O(1) work, so a recursion d deep
/// cost O(d^2) (500,000 levels through `map` ran for minutes on 3.12, where nothing
/// caps the depth); with work matched to the resume, at most half of the time goes to
/// resuming and deep recursion stays linear. Such a process's slices last about twice
/// its resume: the price of the depth it chose, paid by its scheduler's other processes.
#[pyfunction]
pub(crate) fn _resumed() {
    let s = my_slot();
    let v = s.seq.load(Ordering::Relaxed);
    if v % 2 == 1 {
        // Looks the timer made during the resume (its age is this slice's only if the
        // timer has seen this sequence; otherwise the resume took less than a look).
        let resume_looks = if s.seen.load(Ordering::Relaxed) == v {
            s.age.load(Ordering::Relaxed)
        } else {
            0
        };
        // Single writer of `seq`: this thread (see `Mark`). Odd stays odd.
        let next = v + 2;
        s.need.store(resume_looks.max(1), Ordering::Release);
        s.grace.store(next, Ordering::Release);
        s.seq.store(next, Ordering::Release);
    }
}

/// Whether the calling thread's slice is in the grace [`_resumed`] gave it (its resume
/// took more than a look) and not yet overdue: compiled code whose reductions ran out
/// then gets more instead of yielding, so the slice's work matches its resume's cost
/// (a reduction budget alone would end it after a fixed amount of work).
#[pyfunction]
pub(crate) fn _resume_grace() -> bool {
    let s = my_slot();
    let seq = s.seq.load(Ordering::Relaxed);
    seq % 2 == 1
        && s.grace.load(Ordering::Acquire) == seq
        && s.need.load(Ordering::Acquire) > 1
        && s.overdue.load(Ordering::Acquire) != seq
}

/// Raises the flag now, as the timer does (tests: a deterministic way to exercise the
/// slow path). With `overdue`, the calling thread's current slice is also marked as the
/// overdue one, so compiled code yields at its next check.
#[pyfunction]
#[pyo3(signature = (overdue = false))]
pub(crate) fn _raise_yield_flag(overdue: bool) {
    if overdue {
        let s = my_slot();
        let seq = s.seq.load(Ordering::Relaxed);
        if seq % 2 == 1 {
            s.overdue.store(seq, Ordering::Release);
        }
    }
    raise_flag();
}
