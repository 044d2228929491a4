//! Exact equality and Erlang's term order, on owned terms and on views.

mod term_util;

use std::cmp::Ordering;

use num_bigint::BigInt;
use term_util::{gen_term, hash_of, Rng};
use vm_core::term::{Fragment, Pid, Ref, Term};

fn big(s: &str) -> Term {
    Term::bigint(s.parse::<BigInt>().unwrap())
}

#[test]
fn exact_equality() {
    assert_ne!(Term::Int(1), Term::Float(1.0));
    assert_ne!(Term::Float(0.0), Term::Float(-0.0));
    assert_eq!(Term::Float(2.5), Term::Float(2.5));
    assert_eq!(Term::binary(vec![1; 100]), Term::binary(vec![1; 100]));
    // Same bytes, different representation: equal and same hash.
    let inline = Term::Binary(vm_core::term::Binary::Inline(vec![7; 10]));
    let refc = Term::refc_binary(vm_core::term::RefcBin::from_slice(&[7; 10]));
    assert_eq!(inline, refc);
    assert_eq!(hash_of(&inline), hash_of(&refc));
    assert_eq!(
        Term::bigint(BigInt::from(5)),
        Term::Int(5),
        "bigints normalise"
    );
    let f = Fragment::from_term(&Term::Int(1));
    assert!(!f.view().eq_term(&Term::Float(1.0)));
}

#[test]
fn order_across_types() {
    // number < atom < reference < pid < tuple < map < nil < list < binary
    let ascending = vec![
        Term::Int(5),
        Term::atom("a"),
        Term::Ref(Ref(1)),
        Term::Pid(Pid::new(1, 0)),
        Term::tuple(vec![]),
        Term::map(vec![]),
        Term::nil(),
        Term::list(vec![Term::Int(1)]),
        Term::binary(vec![]),
    ];
    for w in ascending.windows(2) {
        assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        let (a, b) = (Fragment::from_term(&w[0]), Fragment::from_term(&w[1]));
        assert_eq!(a.view().term_cmp(&b.view()), Ordering::Less);
    }
}

#[test]
fn order_within_types() {
    let lt = |a: Term, b: Term| {
        assert!(a < b, "{a} < {b}");
        assert_eq!(Fragment::from_term(&a).view().cmp_term(&b), Ordering::Less);
        assert_eq!(
            Fragment::from_term(&b).view().cmp_term(&a),
            Ordering::Greater
        );
    };
    // Numbers by value; int first on a tie.
    lt(Term::Int(1), Term::Float(1.0));
    lt(Term::Float(1.0), Term::Int(2));
    lt(Term::Float(0.5), Term::Int(1));
    lt(Term::Int(-1), Term::Float(-0.5));
    lt(Term::Float(-0.0), Term::Float(0.0));
    lt(big("-100000000000000000000"), Term::Int(i64::MIN));
    lt(Term::Int(i64::MAX), big("9223372036854775808"));
    lt(Term::Float(9.3e18), big("9300000000000000001"));
    lt(big("9300000000000000000"), Term::Float(9.3e18 + 4096.0));
    lt(big("9300000000000000000"), Term::Float(1e300));
    lt(Term::Float(-1e300), big("-9300000000000000000"));
    lt(big("100000000000000000000"), big("100000000000000000001"));
    lt(big("-100000000000000000001"), big("-100000000000000000000"));
    lt(Term::Int(i64::MAX), Term::Float(9.3e18));
    // Exact at 2^63: the integer 2^63 equals the float 2^63 in value.
    lt(
        big("9223372036854775808"),
        Term::Float(9_223_372_036_854_775_808.0),
    );
    lt(
        Term::Float(9_223_372_036_854_775_808.0),
        big("9223372036854775809"),
    );
    // Atoms by name, not by index.
    lt(Term::atom("zz_first_interned"), Term::atom("zz_second"));
    lt(Term::atom("b_later"), Term::atom("c"));
    lt(Term::atom("a"), Term::atom("b_later"));
    // Tuples by size, then elements.
    lt(
        Term::tuple(vec![Term::Int(9)]),
        Term::tuple(vec![Term::Int(1), Term::Int(1)]),
    );
    lt(
        Term::tuple(vec![Term::Int(1), Term::Int(1)]),
        Term::tuple(vec![Term::Int(1), Term::Int(2)]),
    );
    // Lists element-wise, prefix first.
    lt(
        Term::list(vec![Term::Int(1)]),
        Term::list(vec![Term::Int(1), Term::Int(0)]),
    );
    lt(
        Term::list(vec![Term::Int(1), Term::Int(5)]),
        Term::list(vec![Term::Int(2)]),
    );
    // Maps by size, then keys, then values.
    let m = |kv: Vec<(i64, i64)>| {
        Term::map(
            kv.into_iter()
                .map(|(k, v)| (Term::Int(k), Term::Int(v)))
                .collect(),
        )
    };
    lt(m(vec![(9, 9)]), m(vec![(1, 1), (2, 2)]));
    lt(m(vec![(1, 9), (2, 9)]), m(vec![(1, 0), (3, 0)]));
    lt(m(vec![(1, 0), (2, 9)]), m(vec![(1, 1), (2, 0)]));
    // Binaries byte-wise.
    lt(Term::binary(vec![1, 2]), Term::binary(vec![1, 2, 0]));
    lt(Term::binary(vec![1, 2, 3]), Term::binary(vec![1, 3]));
    lt(Term::Pid(Pid::new(1, 5)), Term::Pid(Pid::new(2, 0)));
}

#[test]
fn order_is_total_and_consistent_on_random_terms() {
    let mut r = Rng::new(20);
    let terms: Vec<Term> = (0..300).map(|_| gen_term(&mut r, 3)).collect();
    let frags: Vec<Fragment> = terms.iter().map(Fragment::from_term).collect();
    for (i, a) in terms.iter().enumerate() {
        for (j, b) in terms.iter().enumerate() {
            let o = a.cmp(b);
            assert_eq!(o, b.cmp(a).reverse());
            assert_eq!(o == Ordering::Equal, a == b);
            assert_eq!(frags[i].view().term_cmp(&frags[j].view()), o);
            assert_eq!(frags[i].view() == frags[j].view(), a == b);
            if a == b {
                assert_eq!(hash_of(a), hash_of(b));
            }
        }
    }
    let mut sorted = terms.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        assert!(w[0] <= w[1]);
    }
    // Transitivity over the sorted sequence against every term.
    for t in &terms {
        let pos = sorted.partition_point(|x| x < t);
        assert!(sorted[pos..].iter().all(|x| x >= t));
    }
}
