//! Allocation counts on the message hot path, with a counting global allocator
//! (its own test binary). Counts are per thread, so parallel tests don't mix.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vm_core::term::{Atom, Fragment, Heap, Pid, Term, Word};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwards the caller's layout contract to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCS.with(|c| c.get());
    let r = f();
    (ALLOCS.with(|c| c.get()) - before, r)
}

#[test]
fn fragment_is_small() {
    assert!(std::mem::size_of::<Fragment>() <= 32);
}

#[test]
fn immediates_allocate_nothing() {
    let terms = [
        Term::Int(42),
        Term::Atom(Atom::OK),
        Term::Pid(Pid::new(7, 1)),
        Term::nil(),
    ];
    for t in &terms {
        let (n, ()) = allocs(|| {
            let f = Fragment::from_term(t);
            let g = f.clone();
            let v = g.view();
            assert!(v.eq_term(t));
            let _ = v.as_int();
            let h = Fragment::copy_of(v);
            drop((f, g, h));
        });
        assert_eq!(n, 0, "{t}");
    }
    let (n, ()) = allocs(|| {
        let f = Fragment::immediate(Word::small_int(5).unwrap());
        assert_eq!(f.view().as_int(), Some(5));
        let mut h = Heap::new();
        let w = h.attach(f);
        assert_eq!(h.view(w).as_int(), Some(5));
        assert!(!h.needs_gc());
    });
    assert_eq!(n, 0, "Heap::new + attaching an immediate");
}

#[test]
fn small_tuple_is_one_allocation() {
    let pid = Pid::new(3, 0);
    let t = Term::tuple(vec![Term::Atom(Atom::OK), Term::Pid(pid), Term::Int(1)]);
    let (n, f) = allocs(|| Fragment::from_term(&t));
    assert_eq!(n, 1, "from_term");
    let (n, g) = allocs(|| f.clone());
    assert_eq!(n, 1, "clone");
    let (n, ()) = allocs(|| {
        let v = g.view();
        assert_eq!(v.tuple_get(1).and_then(|x| x.as_pid()), Some(pid));
        assert_eq!(v.tuple_get(2).and_then(|x| x.as_int()), Some(1));
    });
    assert_eq!(n, 0, "view + tuple_get");
    let (n, c) = allocs(|| Fragment::copy_of(g.view()));
    assert_eq!(n, 1, "copy_of");
    let mut h = Heap::new();
    let (n, w) = allocs(|| h.attach(c));
    assert_eq!(
        n, 1,
        "attach to an empty heap: the young generation's one reservation"
    );
    let (n, ()) = allocs(|| {
        let _ = h.attach(f);
        assert!(h.view(w).eq_term(&t));
    });
    assert_eq!(n, 0, "attach into reserved young space");
}
