//! The generational GC: live data survives, garbage is reclaimed, counts and sizes
//! move as documented in heap.rs.

mod term_util;

use term_util::{gen_term, Rng};
use vm_core::term::{
    heap_size_at_least, Fragment, Heap, Term, Word, FULLSWEEP_AFTER, MIN_HEAP_SIZE, MIN_OLD_SIZE,
};

fn garbage(h: &mut Heap, r: &mut Rng, n: usize) {
    for _ in 0..n {
        let t = gen_term(r, 3);
        h.alloc_term(&t);
    }
}

#[test]
fn live_roots_survive_minor_and_major() {
    let mut r = Rng::new(10);
    let mut h = Heap::new();
    let live: Vec<Term> = (0..20).map(|_| gen_term(&mut r, 4)).collect();
    let mut roots: Vec<Word> = Vec::new();
    for t in &live {
        garbage(&mut h, &mut r, 20);
        roots.push(h.alloc_term(t));
    }
    garbage(&mut h, &mut r, 50);
    assert!(h.needs_gc());
    let before = h.stats().young_words;

    let rep = h.gc(&mut roots);
    assert!(!rep.major, "first GC with an empty old generation is minor");
    assert!(rep.reclaimed_words > 0);
    assert_eq!(rep.live_words + rep.reclaimed_words, before);
    assert!(rep.reductions >= 1);
    for (t, w) in live.iter().zip(&roots) {
        assert!(h.view(*w).eq_term(t), "root survived minor: {t}");
    }
    let s = h.stats();
    assert_eq!((s.minor_gcs, s.major_gcs), (1, 0));
    assert_eq!(s.young_words, 0);
    assert_eq!(s.old_words, rep.live_words);
    assert_eq!(s.reclaimed_words_total, rep.reclaimed_words as u64);

    // Drop half the roots, make more garbage: a forced major compacts the old
    // generation down to what is still reachable.
    roots.truncate(10);
    garbage(&mut h, &mut r, 100);
    let old_before = h.stats().old_words;
    let rep = h.gc_major(&mut roots);
    assert!(rep.major);
    assert!(
        h.stats().old_words < old_before,
        "major reclaimed old garbage"
    );
    for (t, w) in live.iter().zip(&roots) {
        assert!(h.view(*w).eq_term(t), "root survived major: {t}");
    }
    let s = h.stats();
    assert_eq!((s.minor_gcs, s.major_gcs), (1, 1));
    assert_eq!(s.old_words, rep.live_words);
}

#[test]
fn major_when_old_generation_is_full() {
    let mut r = Rng::new(11);
    let mut h = Heap::new();
    let mut roots: Vec<Word> = Vec::new();
    let mut live = Vec::new();
    // Keep adding live data; minors promote it until the old generation reaches
    // its limit, then gc() goes major.
    let mut majors_at = None;
    for round in 0..100 {
        let t = Term::list((0..50).map(Term::Int).collect());
        roots.push(h.alloc_term(&t));
        live.push(t);
        garbage(&mut h, &mut r, 10);
        let old = h.stats().old_words;
        let rep = h.gc(&mut roots);
        if rep.major {
            assert!(old >= MIN_OLD_SIZE, "major only once old reached its limit");
            majors_at = Some(round);
            break;
        }
    }
    let round = majors_at.expect("a major happened");
    assert!(round >= 1);
    let s = h.stats();
    assert_eq!(s.major_gcs, 1);
    assert_eq!(s.minor_gcs, round as u64);
    for (t, w) in live.iter().zip(&roots) {
        assert!(h.view(*w).eq_term(t));
    }
}

#[test]
fn fullsweep_after_n_promoting_minors() {
    let mut h = Heap::new();
    let t = Term::tuple(vec![Term::Int(1), Term::Float(2.5)]);
    let mut roots = [h.alloc_term(&t), Word::NIL];
    for i in 0..FULLSWEEP_AFTER {
        // Something new and live in the young generation each time: every minor
        // promotes, so each one brings the fullsweep closer.
        roots[1] = h.alloc_term(&Term::tuple(vec![Term::Int(i as i64)]));
        let rep = h.gc(&mut roots);
        assert!(!rep.major, "gc {i} is minor");
    }
    roots[1] = h.alloc_term(&Term::tuple(vec![Term::Int(-1)]));
    let rep = h.gc(&mut roots);
    assert!(
        rep.major,
        "gc after FULLSWEEP_AFTER promoting minors is major"
    );
    assert!(h.view(roots[0]).eq_term(&t));
    assert_eq!(h.stats().major_gcs, 1);
    assert_eq!(h.stats().minor_gcs, FULLSWEEP_AFTER as u64);
}

#[test]
fn minors_that_promote_nothing_never_force_a_major() {
    // A large live set and only short-lived garbage: after the first promotion the
    // live set is old, later minors find nothing young alive, and no fullsweep copies
    // the live set again.
    let mut h = Heap::new();
    let live = Term::List((0..1000).map(Term::Int).collect());
    let mut roots = [h.alloc_term(&live)];
    // Settle: the live set moves to the old generation and sizes its limit.
    h.gc_major(&mut roots);
    let majors = h.stats().major_gcs;
    for _ in 0..10 * FULLSWEEP_AFTER {
        for i in 0..100 {
            h.alloc_term(&Term::tuple(vec![Term::Int(i), Term::atom("garbage")]));
        }
        let rep = h.gc(&mut roots);
        assert!(!rep.major);
        assert_eq!(rep.live_words, 0);
    }
    assert_eq!(h.stats().major_gcs, majors);
    assert!(h.view(roots[0]).eq_term(&live));
}

#[test]
fn young_generation_grows_and_shrinks() {
    let mut h = Heap::new();
    assert_eq!(
        h.stats().young_capacity_words,
        0,
        "new heap allocates nothing"
    );
    // A big live structure: the young size grows along the series.
    let big = Term::list((0..5000).map(Term::Int).collect());
    let mut roots = [h.alloc_term(&big)];
    h.gc(&mut roots);
    let grown = h.stats().young_limit_words;
    assert_eq!(grown, heap_size_at_least(2 * 10_000));
    // Then lots of garbage with almost nothing live: it shrinks back and the
    // young allocation is given back.
    let mut r = Rng::new(12);
    garbage(&mut h, &mut r, 3000);
    assert!(h.stats().young_capacity_words > 20_000);
    let mut roots = [Word::NIL];
    let rep = h.gc(&mut roots);
    assert!(rep.reclaimed_words > 20_000);
    let s = h.stats();
    assert_eq!(s.young_limit_words, MIN_HEAP_SIZE);
    assert!(s.young_capacity_words <= MIN_HEAP_SIZE, "{s:?}");
}

#[test]
fn shared_subterms_and_fragments_survive() {
    let mut h = Heap::new();
    let inner = Term::tuple(vec![Term::atom("x"), Term::binary(vec![9; 100])]);
    let w_inner = h.alloc_term(&inner);
    // Build a term that references `inner` twice (a DAG) by attaching a fragment
    // of a list, then another with the same root.
    let f = Fragment::from_term(&Term::list(vec![inner.clone(), inner.clone()]));
    let w_list = h.attach(f);
    let mut roots = [w_inner, w_list, w_inner];
    h.gc(&mut roots);
    assert_eq!(roots[0], roots[2], "one copy for one object");
    assert!(h.view(roots[0]).eq_term(&inner));
    h.gc_major(&mut roots);
    assert!(h
        .view(roots[1])
        .eq_term(&Term::list(vec![inner.clone(), inner.clone()])));
    assert!(h.view(roots[2]).eq_term(&inner));
}

#[test]
fn heap_struct_is_small() {
    assert!(std::mem::size_of::<Heap>() <= 96);
    let h = Heap::new();
    assert_eq!(h.byte_size(), std::mem::size_of::<Heap>());
}
