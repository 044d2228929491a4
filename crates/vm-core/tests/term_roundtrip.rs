//! Round trips of random terms through fragments, heaps, the builder and views.

mod term_util;

use term_util::{build, gen_term, hash_of, Rng};
use vm_core::term::{Fragment, FragmentBuilder, Heap, Kind, Term};

#[test]
fn term_fragment_term() {
    let mut r = Rng::new(1);
    for _ in 0..3000 {
        let t = gen_term(&mut r, 4);
        let f = Fragment::from_term(&t);
        assert_eq!(f.to_term(), t, "fragment round trip");
        let v = f.view();
        assert!(v.eq_term(&t));
        assert_eq!(v.cmp_term(&t), std::cmp::Ordering::Equal);
        assert_eq!(hash_of(&v), hash_of(&t), "view hash == term hash for {t}");
        assert_eq!(v.to_string(), t.to_string());
        let c = f.clone();
        assert_eq!(c.view(), v);
        assert_eq!(Fragment::copy_of(v).to_term(), t);
        assert_eq!(Fragment::copy_of(v).byte_size(), f.byte_size());
        assert_eq!(v.size_words() * 8, f.byte_size());
    }
}

#[test]
fn term_heap_fragment_term() {
    let mut r = Rng::new(2);
    let mut heap = Heap::new();
    let mut kept = Vec::new();
    for i in 0..2000 {
        let t = gen_term(&mut r, 4);
        let w = heap.alloc_term(&t);
        assert!(heap.view(w).eq_term(&t));
        let f = heap.to_fragment(w);
        assert_eq!(f.to_term(), t);
        // And back onto a heap by attaching.
        let w2 = heap.attach(f);
        assert_eq!(heap.view(w2).to_term(), t);
        assert_eq!(heap.view(w2), heap.view(w));
        let w3 = heap.alloc_view(Fragment::from_term(&t).view());
        assert!(heap.view(w3).eq_term(&t));
        if i % 7 == 0 {
            kept.push((t, w2));
        }
    }
    for (t, w) in &kept {
        assert_eq!(heap.view(*w).to_term(), *t);
    }
}

#[test]
fn builder_matches_from_term() {
    let mut r = Rng::new(3);
    for _ in 0..2000 {
        let t = gen_term(&mut r, 4);
        let mut b = FragmentBuilder::new();
        build(&mut b, &t);
        let f = b.finish().unwrap();
        assert_eq!(f.to_term(), t);
        assert_eq!(f.view(), Fragment::from_term(&t).view());
    }
}

#[test]
fn view_accessors() {
    let mut r = Rng::new(4);
    for _ in 0..2000 {
        let t = gen_term(&mut r, 3);
        let f = Fragment::from_term(&t);
        let v = f.view();
        match &t {
            Term::Int(i) => {
                assert_eq!(v.kind(), Kind::Int);
                assert_eq!(v.as_int(), Some(*i));
                assert_eq!(v.as_bigint(), Some((*i).into()));
            }
            Term::BigInt(b) => {
                assert_eq!(v.kind(), Kind::BigInt);
                assert_eq!(v.as_int(), None);
                assert_eq!(v.as_bigint().as_ref(), Some(&**b));
            }
            Term::Float(x) => assert_eq!(v.as_float().map(f64::to_bits), Some(x.to_bits())),
            Term::Atom(a) => assert_eq!(v.as_atom(), Some(*a)),
            Term::Pid(p) => assert_eq!(v.as_pid(), Some(*p)),
            Term::Ref(x) => assert_eq!(v.as_ref(), Some(*x)),
            Term::ExternalPid(p) => {
                assert_eq!(v.kind(), Kind::Pid);
                assert_eq!(v.as_external_pid(), Some(*p));
                assert_eq!(v.as_pid(), None);
            }
            Term::ExternalRef(x) => {
                assert_eq!(v.kind(), Kind::Ref);
                assert_eq!(v.as_external_ref(), Some(*x));
                assert_eq!(v.as_ref(), None);
            }
            Term::Binary(b) => {
                assert_eq!(v.kind(), Kind::Binary);
                assert_eq!(v.as_bytes(), Some(b.as_slice()));
                assert_eq!(v.as_refc_binary().is_some(), b.len() > 64);
            }
            Term::Str(b) => {
                assert_eq!(v.kind(), Kind::Str);
                assert_eq!(v.as_str_bytes(), Some(b.as_slice()));
                assert_eq!(v.as_bytes(), None);
            }
            Term::Tuple(xs) => {
                assert_eq!(v.tuple_len(), Some(xs.len()));
                for (i, x) in xs.iter().enumerate() {
                    assert!(v.tuple_get(i).unwrap().eq_term(x));
                }
                assert!(v.tuple_get(xs.len()).is_none());
            }
            Term::List(xs) => {
                assert_eq!(v.kind(), if xs.is_empty() { Kind::Nil } else { Kind::List });
                let got: Vec<Term> = v.list_iter().unwrap().map(|x| x.to_term()).collect();
                assert_eq!(&got, xs);
            }
            Term::Map(m) => {
                assert_eq!(v.map_len(), Some(m.len()));
                for (k, x) in m {
                    assert!(v.map_get(k).unwrap().eq_term(x), "map_get {k} in {t}");
                }
                assert!(v.map_get(&Term::atom("not_a_key_here")).is_none());
                let pairs: Vec<(Term, Term)> = v
                    .map_iter()
                    .unwrap()
                    .map(|(k, x)| (k.to_term(), x.to_term()))
                    .collect();
                assert_eq!(&pairs, m);
            }
        }
    }
}

#[test]
fn long_lists_do_not_recurse() {
    let t = Term::list((0..200_000).map(Term::Int).collect());
    let f = Fragment::from_term(&t);
    let g = Fragment::copy_of(f.view());
    assert_eq!(g.view().list_iter().unwrap().count(), 200_000);
    let mut h = Heap::new();
    let mut roots = [h.attach(g)];
    h.gc(&mut roots);
    assert!(h.view(roots[0]).eq_term(&t));
}

#[test]
fn unsorted_hand_built_map_is_normalised() {
    let t = Term::Map(vec![
        (Term::Int(2), Term::Int(20)),
        (Term::Int(1), Term::Int(10)),
    ]);
    let f = Fragment::from_term(&t);
    assert_eq!(
        f.view().map_get(&Term::Int(1)).and_then(|v| v.as_int()),
        Some(10)
    );
    assert_eq!(f.to_string(), "#{1 => 10,2 => 20}");
}
