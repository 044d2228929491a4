//! Refcounted binaries are shared, not copied, and released when the last holder
//! (fragment, heap, handle) drops or collects them. `binary_bytes()` is global to
//! the test process, so every test here takes `LOCK` and measures deltas.

use std::sync::Mutex;

use vm_core::term::{binary_bytes, Fragment, FragmentBuilder, Heap, RefcBin, Term, Word};

static LOCK: Mutex<()> = Mutex::new(());
const MB10: usize = 10 * 1024 * 1024;

#[test]
fn ten_holders_cost_one_buffer() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let base = binary_bytes();
    let bin = RefcBin::from_vec(vec![0xAB; MB10]);
    assert_eq!(binary_bytes() - base, MB10);
    let msg = Term::tuple(vec![Term::atom("data"), Term::refc_binary(bin.clone())]);

    let frags: Vec<Fragment> = (0..10).map(|_| Fragment::from_term(&msg)).collect();
    let clones: Vec<Fragment> = frags.to_vec();
    let mut heaps: Vec<(Heap, Word)> = (0..10)
        .map(|i| {
            let mut h = Heap::new();
            let w = h.attach(frags[i].clone());
            (h, w)
        })
        .collect();
    let mut b = FragmentBuilder::new();
    b.refc_binary(bin.clone());
    let built = b.finish().unwrap();
    assert_eq!(binary_bytes() - base, MB10, "shared, not copied");
    for f in frags.iter().chain(&clones) {
        assert!(f.byte_size() < 100, "fragment does not hold the bytes");
        let r = f.view().tuple_get(1).unwrap().as_refc_binary().unwrap();
        assert!(RefcBin::ptr_eq(&r, &bin));
    }
    for (h, w) in &mut heaps {
        let mut roots = [*w];
        h.gc(&mut roots);
        h.gc_major(&mut roots);
        *w = roots[0];
        let bytes = h.view(*w).tuple_get(1).unwrap().as_bytes().unwrap();
        assert!(
            std::ptr::eq(bytes.as_ptr(), bin.as_slice().as_ptr()),
            "zero copy"
        );
        assert_eq!(h.stats().refc_binaries, 1);
    }
    assert_eq!(binary_bytes() - base, MB10);

    drop((frags, clones, built, msg, bin));
    assert_eq!(binary_bytes() - base, MB10, "heaps still hold it");
    // A fullsweep with no roots releases each heap's reference (the data was
    // promoted to the old generation, which only a major collects).
    for (h, _) in &mut heaps {
        let rep = h.gc_major(&mut []);
        assert!(rep.reclaimed_words > 0);
        assert_eq!(h.stats().refc_binaries, 0);
    }
    assert_eq!(
        binary_bytes(),
        base,
        "back to baseline once all holders collected"
    );
    drop(heaps);
    assert_eq!(binary_bytes(), base);
}

#[test]
fn heap_drop_and_old_garbage_release_binaries() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let base = binary_bytes();
    {
        let mut h = Heap::new();
        let w = h.alloc_term(&Term::binary(vec![1; 1000]));
        let mut roots = [w];
        h.gc(&mut roots); // promoted to old with its binary
        assert_eq!(h.stats().old_words, 1);
        assert_eq!(binary_bytes() - base, 1000);
        // Unreachable now; a minor does not look at the old generation...
        h.gc(&mut []);
        assert_eq!(binary_bytes() - base, 1000);
        // ...a major does.
        h.gc_major(&mut []);
        assert_eq!(binary_bytes(), base);
        h.alloc_term(&Term::binary(vec![2; 500]));
        assert_eq!(binary_bytes() - base, 500);
    }
    assert_eq!(binary_bytes(), base, "dropping the heap frees its binaries");
    // Small binaries never touch the refc heap.
    let f = Fragment::from_term(&Term::binary(vec![3; 64]));
    assert_eq!(binary_bytes(), base);
    assert_eq!(f.view().as_bytes(), Some(&[3u8; 64][..]));
}
