//! Text (a Python `str`): a kind of term of its own, never equal to a binary with the
//! same bytes, kept as text through fragments, heaps, copies and collections, and
//! indexed like an atom when it tags a message.

mod term_util;

use std::cmp::Ordering;

use term_util::hash_of;
use vm_core::process::mailbox::{keys_of, KeyElem};
use vm_core::term::{Binary, Fragment, FragmentBuilder, Heap, Kind, Term, HEAP_BINARY_MAX};
use vm_core::{Atom, Key};

fn texts() -> Vec<String> {
    vec![
        String::new(),
        "ok".into(),
        "héllo ☃".into(),
        "x".repeat(HEAP_BINARY_MAX),
        "y".repeat(HEAP_BINARY_MAX + 1),
        "é".repeat(500),
    ]
}

#[test]
fn text_is_never_equal_to_a_binary_with_the_same_bytes() {
    for s in texts() {
        let text = Term::str(&s);
        let bin = Term::binary(s.as_bytes().to_vec());
        assert_ne!(text, bin, "{s:?}");
        assert_ne!(Fragment::from_term(&text), Fragment::from_term(&bin));
        assert_eq!(text.as_str(), Some(s.as_str()));
        assert_eq!(bin.as_str(), None);
        // A tuple that spelled text before (the old `{'$str', Bytes}` encoding) is a tuple.
        let forged = Term::Tuple(vec![Term::atom("$str"), bin.clone()]);
        assert_ne!(forged, text);
    }
}

#[test]
fn text_sorts_after_every_binary_and_by_code_point() {
    let big_bin = Term::binary(vec![0xff; 100]);
    let small_text = Term::str("");
    assert_eq!(big_bin.cmp(&small_text), Ordering::Less);
    assert_eq!(Term::str("a").cmp(&Term::str("b")), Ordering::Less);
    assert_eq!(Term::str("z").cmp(&Term::str("é")), Ordering::Less);
    assert_eq!(Term::str("ab").cmp(&Term::str("a")), Ordering::Greater);
    let mut v = vec![Term::str("b"), Term::binary(b"z".to_vec()), Term::str("a")];
    v.sort();
    assert_eq!(
        v,
        vec![Term::binary(b"z".to_vec()), Term::str("a"), Term::str("b")]
    );
}

#[test]
fn inline_and_refcounted_text_are_equal_and_hash_alike() {
    let s = "é".repeat(10);
    let inline = Term::Str(Binary::Inline(s.as_bytes().to_vec()));
    let refc = Term::Str(Binary::Refc(vm_core::term::RefcBin::from_slice(
        s.as_bytes(),
    )));
    assert_eq!(inline, refc);
    assert_eq!(hash_of(&inline), hash_of(&refc));
    let f = Fragment::from_term(&refc);
    assert_eq!(hash_of(&f.view()), hash_of(&inline));
}

#[test]
fn views_see_text_as_text() {
    for s in texts() {
        let f = Fragment::from_term(&Term::str(&s));
        let v = f.view();
        assert_eq!(v.kind(), Kind::Str);
        assert_eq!(v.as_str(), Some(s.as_str()));
        assert_eq!(v.as_str_bytes(), Some(s.as_bytes()));
        assert_eq!(v.as_bytes(), None, "text is not a binary");
        assert_eq!(v.as_refc_binary().map(|_| ()), None);
        assert_eq!(f.to_term(), Term::str(&s));
        let mut b = FragmentBuilder::new();
        b.str(&s);
        assert_eq!(b.finish().unwrap(), f);
    }
}

#[test]
fn large_text_is_shared_not_copied() {
    let s = "z".repeat(10_000);
    let f = Fragment::from_term(&Term::str(&s));
    let copy = Fragment::copy_of(f.view());
    let p1 = f.view().as_str_bytes().unwrap().as_ptr();
    let p2 = copy.view().as_str_bytes().unwrap().as_ptr();
    assert_eq!(p1, p2);
    assert_eq!(copy.view().kind(), Kind::Str);
}

#[test]
fn text_survives_heaps_and_collections() {
    let mut h = Heap::new();
    let msg = Term::Tuple(vec![
        Term::str("small"),
        Term::str(&"big".repeat(100)),
        Term::binary(b"small".to_vec()),
        Term::binary(vec![1; 200]),
    ]);
    let w = h.attach(Fragment::from_term(&msg));
    let mut roots = vec![w];
    h.gc_minor(&mut roots);
    assert_eq!(h.view(roots[0]).to_term(), msg);
    h.gc_major(&mut roots);
    let v = h.view(roots[0]);
    assert_eq!(v.to_term(), msg);
    let kinds: Vec<Kind> = v.tuple_iter().unwrap().map(|e| e.kind()).collect();
    assert_eq!(kinds, [Kind::Str, Kind::Str, Kind::Binary, Kind::Binary]);
    assert_eq!(h.to_fragment(roots[0]).to_term(), msg);
}

#[test]
fn text_prints_as_an_erlang_utf8_binary() {
    assert_eq!(Term::str("hé\"").to_string(), "<<\"hé\\\"\"/utf8>>");
    assert_eq!(Term::str("a\nb").to_string(), "<<\"a\\x{a}b\"/utf8>>");
}

#[test]
fn a_text_tag_is_an_index_key_and_patterns_use_the_same_policy() {
    let msg = Fragment::from_term(&Term::Tuple(vec![Term::str("job"), Term::Int(1)]));
    let mut keys = Vec::new();
    keys_of(msg.view(), |k| keys.push(k));
    let pattern = [Term::str("job")];
    let want = Key::for_pattern(pattern.iter().map(KeyElem::of_term));
    assert!(want.is_some() && matches!(want, Some(Key::Str(_))));
    assert_eq!(keys, vec![want.unwrap()]);
    // Same text, other representation: same key.
    let refc = Term::Str(Binary::Refc(vm_core::term::RefcBin::from_slice(b"job")));
    assert_eq!(Key::for_pattern([KeyElem::of_term(&refc)]), want);
    // Not a tag: a text in second place, or a binary tag.
    assert_eq!(
        Key::for_pattern([KeyElem::Other, KeyElem::of_term(&Term::str("job"))]),
        None
    );
    assert_eq!(
        Key::for_pattern([KeyElem::of_term(&Term::binary(b"job".to_vec()))]),
        None
    );
    // A reference in the first three elements wins over the tag.
    let r = vm_core::Ref::new();
    let rt = Term::Ref(r);
    assert_eq!(
        Key::for_pattern([
            KeyElem::of_term(&Term::Atom(Atom::OK)),
            KeyElem::Other,
            KeyElem::of_term(&rt)
        ]),
        Some(Key::of_ref(r))
    );
}
