//! Shared helpers for the term tests: a small deterministic random term generator.
#![allow(dead_code)]

use num_bigint::{BigInt, Sign};
use vm_core::term::{
    Atom, ExternalPid, ExternalRef, FragmentBuilder, Pid, Ref, Term, HEAP_BINARY_MAX, MAX_REF_WORDS,
};

/// xorshift64* — deterministic, no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ATOMS: &[&str] = &[
    "ok",
    "error",
    "a",
    "b",
    "zeta",
    "EXIT",
    "hello world",
    "x@y",
    "",
    "undefined",
    "Ünïcødé",
];

pub fn gen_int(r: &mut Rng) -> Term {
    match r.below(6) {
        0 => Term::Int(r.below(200) as i64 - 100),
        1 => Term::Int(r.next() as i64),
        2 => Term::Int((1 << 62) - 2 + r.below(4) as i64),
        3 => Term::Int(-(1 << 62) - 2 + r.below(4) as i64),
        4 => Term::Int(if r.chance(50) { i64::MIN } else { i64::MAX }),
        _ => {
            let limbs: Vec<u32> = (0..2 + r.below(6)).map(|_| r.next() as u32).collect();
            let sign = if r.chance(50) {
                Sign::Minus
            } else {
                Sign::Plus
            };
            Term::bigint(BigInt::new(sign, limbs))
        }
    }
}

/// A pid or reference of another VM (another node, or an earlier creation).
pub fn gen_external(r: &mut Rng) -> Term {
    let node = Atom::new(["nonode@nohost", "a@host", "b@other"][r.below(3) as usize]);
    let creation = r.below(4) as u32;
    if r.chance(50) {
        let pid = Pid::new(r.below(1 << 20) as u32, r.below(3) as u32);
        Term::ExternalPid(ExternalPid::new(node, pid, creation))
    } else {
        let n = 1 + r.below(MAX_REF_WORDS as u64) as usize;
        let words: Vec<u32> = (0..n).map(|_| r.next() as u32).collect();
        Term::ExternalRef(ExternalRef::new(node, creation, &words).expect("1..=5 words"))
    }
}

pub fn gen_leaf(r: &mut Rng) -> Term {
    match r.below(11) {
        0 | 1 => gen_int(r),
        2 => Term::Float(match r.below(5) {
            0 => -0.0,
            1 => 1e300,
            2 => r.below(1000) as f64,
            _ => f64::from_bits(r.next() >> 2) - 1.0,
        }),
        3 => Term::Atom(Atom::new(ATOMS[r.below(ATOMS.len() as u64) as usize])),
        4 => {
            let len = r.below(HEAP_BINARY_MAX as u64 + 2) as usize;
            Term::binary((0..len).map(|_| r.next() as u8).collect())
        }
        5 => {
            let len = HEAP_BINARY_MAX + r.below(300) as usize;
            Term::binary((0..len).map(|_| r.next() as u8).collect())
        }
        6 => Term::Pid(Pid::new(
            if r.chance(80) {
                r.below(1 << 20) as u32
            } else {
                r.next() as u32
            },
            r.next() as u32,
        )),
        7 => Term::Ref(Ref(r.next())),
        8 => gen_external(r),
        9 => {
            // Text, inline or refcounted, ASCII or not.
            let len = r.below(2 * HEAP_BINARY_MAX as u64) as usize;
            let s: String = (0..len)
                .map(|_| ['a', 'é', '☃', '"', 'z'][r.below(5) as usize])
                .collect();
            Term::str(&s)
        }
        _ => Term::nil(),
    }
}

pub fn gen_term(r: &mut Rng, depth: u32) -> Term {
    if depth == 0 || r.chance(35) {
        return gen_leaf(r);
    }
    let n = r.below(6) as usize;
    match r.below(3) {
        0 => Term::tuple((0..n).map(|_| gen_term(r, depth - 1)).collect()),
        1 => Term::list((0..n).map(|_| gen_term(r, depth - 1)).collect()),
        _ => Term::map(
            (0..n)
                .map(|_| (gen_term(r, depth - 1), gen_term(r, depth - 1)))
                .collect(),
        ),
    }
}

/// Feeds `t` to a builder in postfix order.
pub fn build(b: &mut FragmentBuilder, t: &Term) {
    match t {
        Term::Int(i) => {
            b.int(*i);
        }
        Term::BigInt(v) => {
            b.bigint(v);
        }
        Term::Float(f) => {
            b.float(*f);
        }
        Term::Atom(a) => {
            b.atom(*a);
        }
        Term::Binary(vm_core::term::Binary::Refc(r)) => {
            b.refc_binary(r.clone());
        }
        Term::Binary(bin) => {
            b.binary(bin.as_slice());
        }
        Term::Str(bin) => {
            b.str(std::str::from_utf8(bin.as_slice()).unwrap());
        }
        Term::Pid(p) => {
            b.pid(*p);
        }
        Term::Ref(x) => {
            b.reference(*x);
        }
        Term::ExternalPid(p) => {
            b.external_pid(p);
        }
        Term::ExternalRef(x) => {
            b.external_ref(x);
        }
        Term::Tuple(v) => {
            v.iter().for_each(|e| build(b, e));
            b.tuple(v.len()).unwrap();
        }
        Term::List(v) => {
            v.iter().for_each(|e| build(b, e));
            b.list(v.len()).unwrap();
        }
        Term::Map(m) => {
            for (k, v) in m {
                build(b, k);
                build(b, v);
            }
            b.map(m.len()).unwrap();
        }
    }
}

pub fn hash_of<T: std::hash::Hash + ?Sized>(t: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(t)
}
