//! Costs of the term layer on the message hot path.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use vm_core::term::{Atom, Fragment, FragmentBuilder, Heap, Pid, Term, Word};

fn small_tuple() -> Term {
    Term::tuple(vec![
        Term::Atom(Atom::OK),
        Term::Pid(Pid::new(3, 1)),
        Term::Int(12345),
    ])
}

fn fragments(c: &mut Criterion) {
    let t = small_tuple();
    let f = Fragment::from_term(&t);
    let int = Term::Int(7);
    c.bench_function("fragment_immediate", |b| {
        b.iter(|| Fragment::immediate(black_box(Word::small_int(7).unwrap())))
    });
    c.bench_function("fragment_from_term_int", |b| {
        b.iter(|| Fragment::from_term(black_box(&int)))
    });
    c.bench_function("fragment_from_term_3tuple", |b| {
        b.iter(|| Fragment::from_term(black_box(&t)))
    });
    c.bench_function("fragment_clone_3tuple", |b| {
        b.iter(|| black_box(&f).clone())
    });
    c.bench_function("view_tuple_get_as_int", |b| {
        b.iter(|| black_box(&f).view().tuple_get(2).and_then(|v| v.as_int()))
    });
    c.bench_function("view_eq_term_3tuple", |b| {
        b.iter(|| black_box(&f).view().eq_term(black_box(&t)))
    });
    c.bench_function("builder_3tuple", |b| {
        b.iter(|| {
            let mut fb = FragmentBuilder::new();
            fb.atom(Atom::OK).pid(Pid::new(3, 1)).int(12345);
            fb.tuple(3).unwrap();
            fb.finish().unwrap()
        })
    });
    c.bench_function("fragment_to_term_3tuple", |b| {
        b.iter(|| black_box(&f).to_term())
    });
}

fn heaps(c: &mut Criterion) {
    let t = small_tuple();
    let f = Fragment::from_term(&t);
    c.bench_function("heap_attach_3tuple", |b| {
        let mut h = Heap::new();
        b.iter(|| {
            let w = h.attach(black_box(&f).clone());
            if h.needs_gc() {
                h.gc(&mut []);
            }
            w
        })
    });
    c.bench_function("heap_to_fragment_3tuple", |b| {
        let mut h = Heap::new();
        let w = h.alloc_term(&t);
        b.iter(|| h.to_fragment(black_box(w)))
    });
    let live = Term::list((0..1000).map(Term::Int).collect());
    c.bench_function("heap_minor_gc_1000_live_2000_garbage", |b| {
        b.iter_batched(
            || {
                let mut h = Heap::new();
                for _ in 0..1000 {
                    h.alloc_term(&Term::tuple(vec![Term::Int(1)]));
                }
                let w = h.alloc_term(&live);
                (h, [w])
            },
            |(mut h, mut roots)| h.gc_minor(&mut roots),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, fragments, heaps);
criterion_main!(benches);
