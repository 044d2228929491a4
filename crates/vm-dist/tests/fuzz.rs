//! Seeded fuzzing inside `cargo test`: random bytes and mutated valid encodings
//! through the ETF decoder, the handshake state machines and the connection layer.
//! Nothing may panic; whatever decodes must re-encode and decode to the same term.
//!
//! Each target runs a fixed number of cases or until its time bound, whichever comes
//! first, so a slow machine runs fewer cases instead of failing. `VM_DIST_FUZZ_CASES`
//! raises the count for a longer local run; a failing case prints its seed.

use std::time::{Duration, Instant};

use num_bigint::BigInt;
use vm_dist::atoms::{AtomBudget, LocalAtoms, TrustAll};
use vm_dist::connection::{ConnConfig, Connection};
use vm_dist::control::{Control, DistMessage, Style};
use vm_dist::cookie::Cookie;
use vm_dist::etf::{self, DecodeOptions};
use vm_dist::flags;
use vm_dist::handshake::{Decision, Handshake, HandshakeConfig, PeerInfo, Progress};
use vm_dist::{Atom, BitBinary, Pid, Port, Ref, Term};

/// SplitMix64: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn cases(default: usize) -> usize {
    std::env::var("VM_DIST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per-target time bound.
const BUDGET: Duration = Duration::from_secs(10);

fn random_term(r: &mut Rng, depth: u32) -> Term {
    let node = Atom::new(["a@h", "b@host", "日本@h"][r.below(3)]);
    match r.below(if depth == 0 { 12 } else { 17 }) {
        0 => Term::Int(r.next() as i64 >> r.below(64)),
        1 => Term::int(BigInt::from(r.next()) * BigInt::from(r.next()) * BigInt::from(-1i8)),
        2 => Term::Float(f64::from(r.next() as u32) / 7.0 - 1e6),
        3 => Term::atom(["", "ok", "héllo", "日本語", "with space"][r.below(5)]),
        4 => {
            let n = r.below(20);
            Term::binary(r.bytes(n))
        }
        5 => {
            let n = 1 + r.below(5);
            let bits = 1 + r.below(7) as u8;
            Term::BitBinary(BitBinary::new(r.bytes(n), bits).expect("valid"))
        }
        6 => Term::Nil,
        7 => {
            let n = 1 + r.below(10);
            Term::Charlist(r.bytes(n))
        }
        8 => Term::Pid(Pid {
            node,
            id: r.next() as u32,
            serial: r.next() as u32,
            creation: r.next() as u32,
        }),
        9 => Term::Ref(Ref {
            node,
            creation: r.next() as u32,
            ids: (0..1 + r.below(5)).map(|_| r.next() as u32).collect(),
        }),
        10 => Term::Port(Port {
            node,
            id: r.next() >> r.below(64),
            creation: r.next() as u32,
        }),
        11 => Term::Fun(Box::new(
            vm_dist::Fun::export("lists", "map", 2).expect("fun"),
        )),
        12 => Term::tuple((0..r.below(5)).map(|_| random_term(r, depth - 1)).collect()),
        13 => Term::list(
            (0..1 + r.below(4))
                .map(|_| random_term(r, depth - 1))
                .collect(),
        ),
        14 => Term::improper_list(
            (0..1 + r.below(3))
                .map(|_| random_term(r, depth - 1))
                .collect(),
            Term::atom("tail"),
        ),
        15 => {
            // Distinct keys: integers by position.
            Term::Map(
                (0..r.below(5))
                    .map(|i| (Term::Int(i as i64), random_term(r, depth - 1)))
                    .collect(),
            )
        }
        _ => Term::tuple(vec![random_term(r, depth - 1), Term::Int(1)]),
    }
}

fn mutate(r: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + r.below(4) {
        if v.is_empty() {
            v.push(r.next() as u8);
            continue;
        }
        let i = r.below(v.len());
        match r.below(7) {
            0 => v[i] = r.next() as u8,
            1 => v[i] ^= 1 << r.below(8),
            2 => v.truncate(i),
            3 => {
                v.remove(i);
            }
            4 => v.insert(i, r.next() as u8),
            // Large lengths where lengths live.
            5 => {
                for b in v.iter_mut().skip(i).take(4) {
                    *b = 0xff;
                }
            }
            _ => {
                let tail = v[i..].to_vec();
                v.extend_from_slice(&tail[..tail.len().min(16)]);
            }
        }
    }
    v
}

/// Decodes; when that succeeds, the canonical re-encoding must decode to the same
/// term and re-encode to the same bytes.
fn check_decode(bytes: &[u8], seed: u64) {
    let opts = DecodeOptions {
        max_decompressed: 1 << 20,
        ..DecodeOptions::default()
    };
    let mut atoms = AtomBudget::new(LocalAtoms::with_capacity(100_000), 1_000);
    if let Ok(t) = etf::decode_with(bytes, &opts, &mut atoms) {
        let again = etf::encode(&t).unwrap_or_else(|e| panic!("seed {seed}: {e} for {t:?}"));
        let back = etf::decode(&again).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(etf::encode(&back).ok(), Some(again), "seed {seed}");
    }
}

#[test]
fn etf_decoder_never_panics_on_random_or_mutated_input() {
    let start = Instant::now();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut r = Rng(1);
    for _ in 0..200 {
        let t = random_term(&mut r, 4);
        let bytes = etf::encode(&t).expect("generated terms encode");
        assert_eq!(
            etf::decode(&bytes).map(|d| etf::encode(&d).ok()),
            Ok(Some(bytes.clone()))
        );
        corpus.push(bytes);
    }
    // A compressed one.
    corpus.push(vec![
        131, 80, 0, 0, 0, 103, 120, 156, 203, 102, 72, 97, 167, 3, 0, 0, 220, 254, 3, 140,
    ]);
    let n = cases(30_000);
    let mut done = 0;
    for seed in 0..n as u64 {
        if start.elapsed() > BUDGET {
            break;
        }
        let mut r = Rng(seed.wrapping_mul(7919) ^ 0xfeed);
        let input = match r.below(4) {
            0 => {
                let mut v = vec![131];
                let len = r.below(64);
                v.extend(r.bytes(len));
                v
            }
            1 => {
                let len = r.below(64);
                r.bytes(len)
            }
            _ => {
                let i = r.below(corpus.len());
                mutate(&mut r, &corpus[i])
            }
        };
        check_decode(&input, seed);
        done += 1;
    }
    assert!(done > 1000, "only {done} cases ran");
}

fn hs_cfg(name: &str) -> HandshakeConfig {
    HandshakeConfig {
        name: name.into(),
        creation: 1,
        flags: flags::ours(false),
        cookie: Cookie::new("c"),
    }
}

/// Drives a handshake with `input` in random-sized pieces, answering questions.
fn drive(hs: &mut Handshake, input: &[u8], r: &mut Rng) {
    let mut rest = input;
    while !rest.is_empty() {
        let n = 1 + r.below(rest.len());
        hs.receive(&rest[..n]);
        rest = &rest[n..];
        for _ in 0..4 {
            match hs.advance() {
                Ok(Progress::PeerHello(_)) => {
                    let d = [
                        Decision::Ok,
                        Decision::OkSimultaneous,
                        Decision::Alive,
                        Decision::Nok,
                    ][r.below(4)];
                    let _ = hs.decide(d);
                }
                Ok(Progress::AliveQuery) => {
                    let _ = hs.answer_alive(r.below(2) == 0);
                }
                Ok(Progress::NeedInput) | Ok(Progress::Established(_)) | Err(_) => break,
            }
        }
        let _ = hs.take_output();
    }
}

#[test]
fn handshake_machines_never_panic() {
    let start = Instant::now();
    // A valid transcript for each side to mutate.
    let mut a = Handshake::initiator_with_challenge(hs_cfg("a@h"), "b@h", 11);
    let mut b = Handshake::acceptor_with_challenge(hs_cfg("b@h"), 22);
    let mut to_b = Vec::new();
    let mut to_a = Vec::new();
    for _ in 0..6 {
        let out = a.take_output();
        to_b.extend_from_slice(&out);
        b.receive(&out);
        if let Ok(Progress::PeerHello(_)) = b.advance() {
            b.decide(Decision::Ok).expect("decide");
        }
        let out = b.take_output();
        to_a.extend_from_slice(&out);
        a.receive(&out);
        let _ = a.advance();
    }
    let n = cases(20_000);
    let mut done = 0;
    for seed in 0..n as u64 {
        if start.elapsed() > BUDGET {
            break;
        }
        let mut r = Rng(seed ^ 0xabcd);
        let acceptor = r.below(2) == 0;
        let base = if acceptor { &to_b } else { &to_a };
        let input = if r.below(4) == 0 {
            let len = r.below(80);
            r.bytes(len)
        } else {
            mutate(&mut r, base)
        };
        let mut hs = if acceptor {
            Handshake::acceptor_with_challenge(hs_cfg("b@h"), 22)
        } else {
            Handshake::initiator_with_challenge(hs_cfg("a@h"), "b@h", 11)
        };
        drive(&mut hs, &input, &mut r);
        done += 1;
    }
    assert!(done > 1000, "only {done} cases ran");
}

#[test]
fn connection_never_panics_and_fails_only_itself() {
    let start = Instant::now();
    let now = Instant::now();
    let peer = PeerInfo {
        name: "b@h".into(),
        flags: flags::ours(false),
        creation: 1,
    };
    let mut tx = Connection::new(peer.clone(), ConnConfig::default(), TrustAll, now);
    let mut valid = Vec::new();
    let mut r = Rng(99);
    for i in 0..50 {
        let to = Pid {
            node: Atom::new("a@h"),
            id: i,
            serial: 0,
            creation: 1,
        };
        let msg: DistMessage = match i % 3 {
            0 => Control::Send {
                to,
                message: random_term(&mut r, 3),
            }
            .into(),
            1 => Control::Exit {
                from: to.clone(),
                to,
                reason: random_term(&mut r, 2),
            }
            .into(),
            _ => Control::Link {
                from: to.clone(),
                to,
            }
            .into(),
        };
        tx.frame(&msg, &mut valid, now).expect("frame");
        assert!(msg
            .encode(Style {
                exit_payload: false
            })
            .is_ok());
    }
    let n = cases(5_000);
    let mut done = 0;
    for seed in 0..n as u64 {
        if start.elapsed() > BUDGET {
            break;
        }
        let mut r = Rng(seed ^ 0x5151);
        let cfg = ConnConfig {
            max_frame: 1 << 16,
            atom_budget: 100,
            ..ConnConfig::default()
        };
        let mut rx = Connection::new(peer.clone(), cfg, LocalAtoms::with_capacity(10_000), now);
        let input = mutate(&mut r, &valid);
        let mut rest = input.as_slice();
        'feed: while !rest.is_empty() {
            let k = 1 + r.below(rest.len().min(4096));
            rx.receive(&rest[..k], now);
            rest = &rest[k..];
            loop {
                match rx.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        done += 1;
    }
    assert!(done > 200, "only {done} cases ran");
}
