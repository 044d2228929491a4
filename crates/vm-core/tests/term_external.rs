//! Pids and references of another VM (another node, or this node's from an earlier
//! creation): stored boxed, never equal to a local pid or reference, ordered after
//! them, and kept intact through fragments, heaps, GC, the builder and copies.

mod term_util;

use std::cmp::Ordering;

use term_util::hash_of;
use vm_core::term::{
    Atom, ExternalPid, ExternalRef, Fragment, FragmentBuilder, Heap, Kind, Pid, Ref, Term,
};

fn ext_pid(node: &str, index: u32, serial: u32, creation: u32) -> ExternalPid {
    ExternalPid::new(Atom::new(node), Pid::new(index, serial), creation)
}

#[test]
fn external_pid_round_trips_and_views_as_a_pid() {
    let p = ext_pid("nonode@nohost", 7, 2, 3);
    let f = Fragment::from_term(&Term::ExternalPid(p));
    let v = f.view();
    assert_eq!(v.kind(), Kind::Pid, "an external pid is a pid (is_pid)");
    assert_eq!(v.as_external_pid(), Some(p));
    assert_eq!(v.as_pid(), None, "never read as a local pid");
    assert_eq!(f.to_term(), Term::ExternalPid(p));
    assert_eq!(v.to_string(), "<nonode@nohost.7.2.3>");
    assert_eq!(f.word_count(), 4);
}

#[test]
fn external_ref_words_pack_and_unpack_for_every_length() {
    for n in 1..=vm_core::term::MAX_REF_WORDS {
        let words: Vec<u32> = (0..n as u32).map(|i| 0xdead_0000 + i).collect();
        let r = ExternalRef::new(Atom::new("a@b"), 9, &words).expect("valid length");
        let f = Fragment::from_term(&Term::ExternalRef(r));
        let v = f.view();
        assert_eq!(v.kind(), Kind::Ref);
        assert_eq!(v.as_ref(), None, "never read as a local reference");
        let back = v.as_external_ref().expect("external ref");
        assert_eq!(back.words(), &words[..]);
        assert_eq!(back.node(), Atom::new("a@b"));
        assert_eq!(back.creation(), 9);
        assert_eq!(f.word_count(), 3 + n.div_ceil(2));
    }
}

#[test]
fn local_and_external_are_never_equal_and_local_orders_first() {
    let local = Term::Pid(Pid::new(7, 2));
    let stale = Term::ExternalPid(ext_pid("nonode@nohost", 7, 2, 1));
    assert_ne!(local, stale, "same id and serial, another VM");
    assert_eq!(local.cmp(&stale), Ordering::Less);
    assert_eq!(stale.cmp(&local), Ordering::Greater);
    // Against everything of another class, external pids sit where pids do.
    assert!(Term::Ref(Ref(1)) < stale && stale < Term::tuple(vec![]));
    let lref = Term::Ref(Ref(5));
    let xref = Term::ExternalRef(ExternalRef::new(Atom::NONODE, 1, &[5]).expect("ref"));
    assert_ne!(lref, xref);
    assert!(lref < xref && xref < local, "refs before pids");
    // Among external pids: node name, then creation, then id.
    let a = ext_pid("a@h", 9, 0, 5);
    let b1 = ext_pid("b@h", 1, 0, 1);
    let b2 = ext_pid("b@h", 1, 0, 2);
    assert!(Term::ExternalPid(a) < Term::ExternalPid(b1));
    assert!(Term::ExternalPid(b1) < Term::ExternalPid(b2));
    // Creation alone tells two pids apart.
    assert_ne!(Term::ExternalPid(b1), Term::ExternalPid(b2));
    assert_ne!(
        hash_of(&Term::ExternalPid(b1)),
        hash_of(&Term::ExternalPid(b2))
    );
}

#[test]
fn views_compare_and_hash_like_terms() {
    let t = Term::tuple(vec![
        Term::ExternalPid(ext_pid("x@y", 1, 2, 3)),
        Term::ExternalRef(ExternalRef::new(Atom::new("x@y"), 3, &[1, 2, 3]).expect("ref")),
        Term::Pid(Pid::new(1, 2)),
    ]);
    let f = Fragment::from_term(&t);
    assert!(f.view().eq_term(&t));
    assert_eq!(hash_of(&f.view()), hash_of(&t));
    assert_eq!(f.view().cmp_term(&t), Ordering::Equal);
    let mut b = FragmentBuilder::new();
    b.external_pid(&ext_pid("x@y", 1, 2, 3));
    b.external_ref(&ExternalRef::new(Atom::new("x@y"), 3, &[1, 2, 3]).expect("ref"));
    b.pid(Pid::new(1, 2));
    b.tuple(3).expect("three terms");
    assert_eq!(b.finish().expect("one term"), f);
}

#[test]
fn survive_heap_attach_gc_and_copies() {
    let mut heap = Heap::new();
    let mut roots = Vec::new();
    let mut kept = Vec::new();
    for i in 0..2_000u32 {
        let t = Term::list(vec![
            Term::ExternalPid(ext_pid("nonode@nohost", i, i % 3, i % 5)),
            Term::ExternalRef(
                ExternalRef::new(Atom::NONODE, i, &[i, i + 1, i + 2, i + 3]).expect("ref"),
            ),
        ]);
        let w = heap.attach(Fragment::from_term(&t));
        if i % 10 == 0 {
            roots.push(w);
            kept.push(t);
        }
        if heap.needs_gc() {
            heap.gc(&mut roots);
        }
    }
    heap.gc_major(&mut roots);
    for (w, t) in roots.iter().zip(&kept) {
        assert_eq!(heap.view(*w).to_term(), *t);
        assert_eq!(heap.to_fragment(*w).to_term(), *t);
        assert_eq!(Fragment::copy_of(heap.view(*w)).to_term(), *t);
    }
}
