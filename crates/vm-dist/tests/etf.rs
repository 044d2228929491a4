//! The external term format against bytes OTP 25 wrote (`term_to_binary(T,
//! [{minor_version, 2}])`, the encoding used toward UTF8_ATOMS peers), and every
//! rejection the decoder owes a hostile peer.

use std::io::Write;

use num_bigint::BigInt;
use vm_dist::atoms::{AtomBudget, AtomRefusal, LocalAtoms, TrustAll};
use vm_dist::etf::{self, DecodeError, DecodeOptions};
use vm_dist::{Atom, FunKind, Pid, Port, Ref, Term};

/// (name, OTP's bytes) for terms whose value the test also builds by hand.
fn golden() -> Vec<(&'static str, Vec<u8>, Term)> {
    let node = Atom::new("gen11243@vm");
    vec![
        ("int0", vec![131, 97, 0], Term::Int(0)),
        ("int255", vec![131, 97, 255], Term::Int(255)),
        ("int256", vec![131, 98, 0, 0, 1, 0], Term::Int(256)),
        ("intm1", vec![131, 98, 255, 255, 255, 255], Term::Int(-1)),
        (
            "i32max",
            vec![131, 98, 127, 255, 255, 255],
            Term::Int(i32::MAX.into()),
        ),
        (
            "i32min",
            vec![131, 98, 128, 0, 0, 0],
            Term::Int(i32::MIN.into()),
        ),
        (
            "i2p31",
            vec![131, 110, 4, 0, 0, 0, 0, 128],
            Term::Int(1 << 31),
        ),
        (
            "neg2p63",
            vec![131, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128],
            Term::Int(i64::MIN),
        ),
        (
            "big2p64",
            vec![131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            Term::BigInt(BigInt::from(1u8) << 64),
        ),
        (
            "float",
            vec![131, 70, 63, 248, 0, 0, 0, 0, 0, 0],
            Term::Float(1.5),
        ),
        (
            "negzero",
            vec![131, 70, 128, 0, 0, 0, 0, 0, 0, 0],
            Term::Float(-0.0),
        ),
        (
            "atom",
            vec![131, 119, 5, 104, 101, 108, 108, 111],
            Term::atom("hello"),
        ),
        (
            "uatom",
            vec![131, 119, 6, 104, 195, 169, 108, 108, 111],
            Term::atom("héllo"),
        ),
        (
            "uatom2",
            vec![131, 119, 6, 230, 151, 165, 230, 156, 172],
            Term::atom("日本"),
        ),
        (
            "bin",
            vec![131, 109, 0, 0, 0, 3, 1, 2, 3],
            Term::binary(vec![1, 2, 3]),
        ),
        (
            "bits",
            vec![131, 77, 0, 0, 0, 3, 5, 1, 2, 24],
            Term::BitBinary(vm_dist::BitBinary::new(vec![1, 2, 24], 5).unwrap()),
        ),
        (
            "tuple",
            vec![131, 104, 2, 119, 1, 97, 97, 1],
            Term::tuple(vec![Term::atom("a"), Term::Int(1)]),
        ),
        ("nil", vec![131, 106], Term::Nil),
        (
            "str",
            vec![131, 107, 0, 3, 97, 98, 99],
            Term::Charlist(b"abc".to_vec()),
        ),
        (
            "list",
            vec![131, 108, 0, 0, 0, 2, 97, 1, 119, 1, 97, 106],
            Term::list(vec![Term::Int(1), Term::atom("a")]),
        ),
        (
            "improper",
            vec![131, 108, 0, 0, 0, 1, 97, 1, 97, 2],
            Term::improper_list(vec![Term::Int(1)], Term::Int(2)),
        ),
        (
            "strimproper",
            vec![131, 108, 0, 0, 0, 2, 97, 97, 97, 98, 119, 1, 99],
            Term::improper_list(vec![Term::Int(97), Term::Int(98)], Term::atom("c")),
        ),
        (
            "map",
            vec![131, 116, 0, 0, 0, 2, 97, 2, 119, 1, 98, 119, 1, 97, 97, 1],
            Term::Map(vec![
                (Term::Int(2), Term::atom("b")),
                (Term::atom("a"), Term::Int(1)),
            ]),
        ),
        (
            "pid",
            vec![
                131, 88, 119, 11, 103, 101, 110, 49, 49, 50, 52, 51, 64, 118, 109, 0, 0, 0, 42, 0,
                0, 0, 7, 107, 13, 174, 240,
            ],
            Term::Pid(Pid {
                node: node.clone(),
                id: 42,
                serial: 7,
                creation: 0x6b0daef0,
            }),
        ),
        (
            "ref",
            vec![
                131, 90, 0, 3, 119, 11, 103, 101, 110, 49, 49, 50, 52, 51, 64, 118, 109, 107, 13,
                174, 240, 0, 1, 65, 143, 39, 24, 0, 2, 195, 28, 135, 209,
            ],
            Term::Ref(Ref {
                node: node.clone(),
                creation: 0x6b0daef0,
                ids: vec![0x0001418f, 0x27180002, 0xc31c87d1],
            }),
        ),
        (
            "port",
            vec![
                131, 89, 119, 11, 103, 101, 110, 49, 49, 50, 52, 51, 64, 118, 109, 0, 0, 0, 0, 107,
                13, 174, 240,
            ],
            Term::Port(Port {
                node,
                id: 0,
                creation: 0x6b0daef0,
            }),
        ),
        (
            "bigport",
            vec![131, 120, 119, 1, 97, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 1],
            Term::Port(Port {
                node: Atom::new("a"),
                id: 1 << 28,
                creation: 1,
            }),
        ),
        (
            "bigport2",
            vec![131, 89, 119, 1, 97, 15, 255, 255, 255, 0, 0, 0, 1],
            Term::Port(Port {
                node: Atom::new("a"),
                id: (1 << 28) - 1,
                creation: 1,
            }),
        ),
    ]
}

#[test]
fn otp_bytes_decode_to_the_expected_terms_and_re_encode_identically() {
    for (name, bytes, term) in golden() {
        let decoded = etf::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, term, "{name}");
        assert_eq!(
            etf::encode(&term).unwrap(),
            bytes,
            "{name} encodes as OTP does"
        );
    }
}

#[test]
fn big_integers_use_large_big_past_255_bytes() {
    let big: BigInt = BigInt::from(1u8) << 2100;
    let bytes = etf::encode(&Term::int(big.clone())).unwrap();
    assert_eq!(&bytes[..6], &[131, 111, 0, 0, 1, 7]);
    assert_eq!(bytes[6], 0, "sign");
    assert_eq!(*bytes.last().unwrap(), 16);
    assert_eq!(etf::decode(&bytes).unwrap(), Term::BigInt(big.clone()));
    let neg = -big;
    assert_eq!(
        etf::decode(&etf::encode(&Term::int(neg.clone())).unwrap()).unwrap(),
        Term::BigInt(neg)
    );
    // A bignum that fits in i64 is normalised to Int.
    assert_eq!(
        etf::decode(&[131, 110, 2, 1, 1, 1]).unwrap(),
        Term::Int(-257)
    );
}

#[test]
fn funs_are_opaque_and_re_encode_byte_for_byte() {
    let export = vec![
        131, 113, 119, 5, 108, 105, 115, 116, 115, 119, 3, 109, 97, 112, 97, 2,
    ];
    let t = etf::decode(&export).unwrap();
    match &t {
        Term::Fun(f) => assert_eq!(
            f.kind,
            FunKind::Export {
                module: Atom::new("lists"),
                function: Atom::new("map"),
                arity: 2
            }
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(etf::encode(&t).unwrap(), export);
    let built = vm_dist::Fun::export("lists", "map", 2).unwrap();
    assert_eq!(etf::encode(&Term::Fun(Box::new(built))).unwrap(), export);

    let local = vec![
        131, 112, 0, 0, 0, 70, 1, 164, 96, 83, 63, 24, 94, 246, 52, 106, 139, 195, 27, 21, 196, 72,
        185, 0, 0, 0, 0, 0, 0, 0, 0, 119, 6, 101, 116, 102, 103, 101, 110, 97, 0, 98, 5, 35, 2,
        153, 88, 119, 11, 103, 101, 110, 49, 49, 50, 52, 51, 64, 118, 109, 0, 0, 0, 9, 0, 0, 0, 0,
        107, 13, 174, 240,
    ];
    let t = etf::decode(&local).unwrap();
    match &t {
        Term::Fun(f) => match &f.kind {
            FunKind::Local { module, arity, .. } => {
                assert_eq!(module.as_str(), "etfgen");
                assert_eq!(*arity, 1);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(etf::encode(&t).unwrap(), local);
    // A fun inside a tuple keeps its bytes too.
    let tuple = Term::tuple(vec![t.clone(), Term::Int(1)]);
    assert_eq!(etf::decode(&etf::encode(&tuple).unwrap()).unwrap(), tuple);
    // A wrong Size field is an error.
    let mut bad = local.clone();
    bad[5] = 71;
    assert!(etf::decode(&bad).is_err());
}

#[test]
fn old_forms_decode_latin1_atoms_float_ext_pid_ref_port() {
    // ATOM_EXT "é" in Latin-1 (one byte 0xe9).
    assert_eq!(
        etf::decode(&[131, 100, 0, 1, 0xe9]).unwrap(),
        Term::atom("é")
    );
    assert_eq!(
        etf::decode(&[131, 115, 2, b'o', b'k']).unwrap(),
        Term::atom("ok")
    );
    // FLOAT_EXT: "%.20e" padded with NULs to 31 bytes.
    let mut f = vec![131, 99];
    let text = format!("{:.20e}", 1.5f64);
    let mut field = text.into_bytes();
    field.resize(31, 0);
    f.extend_from_slice(&field);
    assert_eq!(etf::decode(&f).unwrap(), Term::Float(1.5));
    // PID_EXT with 8-bit creation.
    let pid = etf::decode(&[131, 103, 115, 1, b'n', 0, 0, 0, 5, 0, 0, 0, 1, 3]).unwrap();
    assert_eq!(
        pid,
        Term::Pid(Pid {
            node: Atom::new("n"),
            id: 5,
            serial: 1,
            creation: 3
        })
    );
    // NEW_REFERENCE_EXT and REFERENCE_EXT.
    let r = etf::decode(&[131, 114, 0, 1, 115, 1, b'n', 2, 0, 0, 0, 9]).unwrap();
    assert_eq!(
        r,
        Term::Ref(Ref {
            node: Atom::new("n"),
            creation: 2,
            ids: vec![9]
        })
    );
    let r = etf::decode(&[131, 101, 115, 1, b'n', 0, 0, 0, 9, 2]).unwrap();
    assert!(matches!(r, Term::Ref(_)));
    // PORT_EXT.
    let p = etf::decode(&[131, 102, 115, 1, b'n', 0, 0, 0, 9, 2]).unwrap();
    assert_eq!(
        p,
        Term::Port(Port {
            node: Atom::new("n"),
            id: 9,
            creation: 2
        })
    );
    // Re-encoding uses the new forms.
    assert_eq!(etf::encode(&pid).unwrap()[1], 88);
}

#[test]
fn lists_are_canonical_whatever_form_holds_them() {
    // A List of small integers encodes as STRING_EXT, as OTP does.
    let l = Term::list(vec![Term::Int(97), Term::Int(98)]);
    assert_eq!(etf::encode(&l).unwrap(), vec![131, 107, 0, 2, 97, 98]);
    // A list whose tail is another list is one list.
    let nested = Term::improper_list(vec![Term::Int(1)], Term::list(vec![Term::atom("x")]));
    assert_eq!(
        etf::encode(&nested).unwrap(),
        etf::encode(&Term::list(vec![Term::Int(1), Term::atom("x")])).unwrap()
    );
    // LIST_EXT whose tail is LIST_EXT decodes as one list.
    let chained = [131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 106];
    assert_eq!(
        etf::decode(&chained).unwrap(),
        Term::list(vec![Term::Int(1), Term::Int(2)])
    );
    // More than 65535 bytes: LIST_EXT of small integers.
    let long = Term::Charlist(vec![7; 70_000]);
    let bytes = etf::encode(&long).unwrap();
    assert_eq!(&bytes[..6], &[131, 108, 0, 1, 0x11, 0x70]);
    assert_eq!(
        etf::decode(&bytes).unwrap(),
        Term::list(vec![Term::Int(7); 70_000])
    );
    // Compressed, as term_to_binary(lists:duplicate(100, 7), [compressed]) wrote it.
    let z = [
        131, 80, 0, 0, 0, 103, 120, 156, 203, 102, 72, 97, 167, 3, 0, 0, 220, 254, 3, 140,
    ];
    assert_eq!(etf::decode(&z).unwrap(), Term::Charlist(vec![7; 100]));
}

fn compressed(inner: &[u8], stated: u32) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(inner).unwrap();
    let z = enc.finish().unwrap();
    let mut out = vec![131, 80];
    out.extend_from_slice(&stated.to_be_bytes());
    out.extend_from_slice(&z);
    out
}

#[test]
fn compressed_terms_must_inflate_to_their_stated_size() {
    let inner = etf::encode(&Term::binary(vec![0u8; 100_000])).unwrap();
    let body = &inner[1..];
    let ok = compressed(body, body.len() as u32);
    assert_eq!(etf::decode(&ok).unwrap(), Term::binary(vec![0u8; 100_000]));
    // Stated too small or too large.
    assert!(matches!(
        etf::decode(&compressed(body, body.len() as u32 - 1)),
        Err(DecodeError::BadCompression(_))
    ));
    assert!(matches!(
        etf::decode(&compressed(body, body.len() as u32 + 1)),
        Err(DecodeError::BadCompression(_))
    ));
    // A stated size of 4 GiB is refused before anything is allocated.
    assert!(etf::decode(&compressed(body, u32::MAX)).is_err());
    // A prefix decode reports how much input the compressed term took.
    let mut two = ok.clone();
    two.extend_from_slice(&[131, 97, 5]);
    let (t, used) = etf::decode_prefix(&two, &DecodeOptions::default(), &mut TrustAll).unwrap();
    assert_eq!(t, Term::binary(vec![0u8; 100_000]));
    assert_eq!(used, ok.len());
    // Truncated stream.
    assert!(etf::decode(&ok[..ok.len() - 3]).is_err());
    // A large one (16 MiB from a few KiB of zlib) inflates whole.
    let big = etf::encode(&Term::binary(vec![9u8; 16 << 20])).unwrap();
    let z = compressed(&big[1..], (big.len() - 1) as u32);
    assert!(z.len() < 100_000);
    assert_eq!(etf::decode(&z).unwrap(), Term::binary(vec![9u8; 16 << 20]));
}

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("no version", vec![97, 1]),
        ("truncated int", vec![131, 98, 0, 0]),
        ("trailing", vec![131, 97, 1, 0]),
        ("local ext", vec![131, 121, 0, 0]),
        ("atom cache ref", vec![131, 82, 0]),
        ("old fun", vec![131, 117, 0, 0, 0, 0]),
        ("unknown tag", vec![131, 200]),
        (
            "binary len 2^32-1",
            vec![131, 109, 255, 255, 255, 255, 1, 2],
        ),
        (
            "list len 2^32-1",
            vec![131, 108, 255, 255, 255, 255, 97, 1, 106],
        ),
        (
            "tuple len 2^32-1",
            vec![131, 105, 255, 255, 255, 255, 97, 1],
        ),
        (
            "map len 2^32-1",
            vec![131, 116, 255, 255, 255, 255, 97, 1, 97, 2],
        ),
        ("big len 2^32-1", vec![131, 111, 255, 255, 255, 255, 0, 1]),
        ("nan", vec![131, 70, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]),
        ("inf", vec![131, 70, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0]),
        ("bad utf8 atom", vec![131, 119, 1, 0xff]),
        ("bit binary bits 0", vec![131, 77, 0, 0, 0, 1, 0, 1]),
        ("bit binary bits 9", vec![131, 77, 0, 0, 0, 1, 9, 1]),
        ("bignum sign 2", vec![131, 110, 1, 2, 1]),
        (
            "pid with integer node",
            vec![131, 88, 97, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            "ref with 0 words",
            vec![131, 90, 0, 0, 119, 1, b'n', 0, 0, 0, 0],
        ),
        (
            "ref with 6 words",
            vec![131, 90, 0, 6, 119, 1, b'n', 0, 0, 0, 0],
        ),
        (
            "duplicate map key",
            vec![131, 116, 0, 0, 0, 2, 97, 1, 97, 1, 97, 1, 97, 2],
        ),
        (
            "duplicate map key in two forms",
            vec![131, 116, 0, 0, 0, 2, 97, 1, 97, 1, 98, 0, 0, 0, 1, 97, 2],
        ),
        ("export fun arity as INTEGER_EXT", {
            let mut v = vec![131, 113, 119, 1, b'm', 119, 1, b'f', 98, 0, 0, 0, 1];
            v.truncate(13);
            v
        }),
        ("new fun size 0", vec![131, 112, 0, 0, 0, 0]),
        ("new fun size 2^32-1", vec![131, 112, 255, 255, 255, 255, 1]),
    ];
    for (name, bytes) in cases {
        assert!(etf::decode(&bytes).is_err(), "{name} must be refused");
    }
    // Long atoms.
    let mut long = vec![131, 118, 1, 0];
    long.extend(std::iter::repeat_n(b'a', 256));
    assert!(matches!(etf::decode(&long), Err(DecodeError::BadAtom(_))));
    let mut ok = vec![131, 118, 0, 255];
    ok.extend(std::iter::repeat_n(b'a', 255));
    assert!(etf::decode(&ok).is_ok());
}

#[test]
fn nesting_is_bounded_and_the_bound_is_safe_on_a_small_stack() {
    fn nested(depth: usize) -> Vec<u8> {
        let mut v = vec![131];
        for _ in 0..depth {
            v.extend_from_slice(&[104, 1]);
        }
        v.push(106);
        v
    }
    let limit = vm_dist::etf::DEFAULT_MAX_DEPTH;
    // At the limit, on a 2 MiB thread (Rust's default for spawned threads): decode,
    // encode, compare and drop all recurse.
    let ok = nested(limit);
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let t = etf::decode(&ok).unwrap();
            let again = etf::encode(&t).unwrap();
            assert_eq!(again, ok);
            assert_eq!(etf::decode(&again).unwrap(), t);
        })
        .unwrap();
    handle.join().unwrap();
    assert_eq!(etf::decode(&nested(limit + 1)), Err(DecodeError::TooDeep));
    // A depth bomb far past the limit is refused quickly.
    assert_eq!(etf::decode(&nested(1_000_000)), Err(DecodeError::TooDeep));
}

#[test]
fn atom_budget_drops_a_flooding_peer_but_not_known_atoms() {
    let table = LocalAtoms::with_capacity(1_000_000);
    let mut budget = AtomBudget::new(table.clone(), 100);
    let opts = DecodeOptions::default();
    let mut list = Vec::new();
    for i in 0..150 {
        list.push(Term::atom(&format!("flood_{i}")));
    }
    let bytes = etf::encode(&Term::list(list)).unwrap();
    assert_eq!(
        etf::decode_with(&bytes, &opts, &mut budget),
        Err(DecodeError::AtomLimit(AtomRefusal::BudgetSpent {
            limit: 100
        }))
    );
    assert_eq!(table.len(), 100, "atoms past the budget are never created");
    // The same atoms again cost nothing: they exist.
    let first: Vec<Term> = (0..100)
        .map(|i| Term::atom(&format!("flood_{i}")))
        .collect();
    let bytes = etf::encode(&Term::list(first)).unwrap();
    assert!(etf::decode_with(&bytes, &opts, &mut budget).is_ok());
}

#[test]
fn encode_refuses_what_erlang_cannot_hold() {
    assert!(etf::encode(&Term::Float(f64::NAN)).is_err());
    assert!(etf::encode(&Term::atom(&"x".repeat(256))).is_err());
    assert!(etf::encode(&Term::atom(&"é".repeat(255))).is_ok());
    assert!(etf::encode(&Term::Ref(Ref {
        node: Atom::new("n"),
        creation: 1,
        ids: vec![]
    }))
    .is_err());
}
