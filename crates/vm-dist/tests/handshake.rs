//! The handshake state machines against each other and against hand-made peers.

use vm_dist::cookie::Cookie;
use vm_dist::flags;
use vm_dist::handshake::{
    simultaneous, Decision, Handshake, HandshakeConfig, HandshakeError, Progress,
};

fn cfg(name: &str, cookie: &str) -> HandshakeConfig {
    HandshakeConfig {
        name: name.into(),
        creation: 7,
        flags: flags::ours(false),
        cookie: Cookie::new(cookie),
    }
}

/// Runs both sides to the end, feeding bytes one at a time when `trickle` (a peer may
/// split messages anywhere). Returns each side's final result.
fn run(
    mut a: Handshake,
    mut b: Handshake,
    decision: Decision,
    trickle: bool,
) -> (
    Result<Progress, HandshakeError>,
    Result<Progress, HandshakeError>,
) {
    let mut ra = Ok(Progress::NeedInput);
    let mut rb = Ok(Progress::NeedInput);
    for _ in 0..100 {
        let out_a = a.take_output();
        let out_b = b.take_output();
        if trickle {
            for byte in &out_a {
                b.receive(std::slice::from_ref(byte));
                if !matches!(rb, Ok(Progress::Established(_)) | Err(_)) {
                    rb = b.advance();
                }
            }
        } else {
            b.receive(&out_a);
        }
        a.receive(&out_b);
        if !matches!(ra, Ok(Progress::Established(_)) | Err(_)) {
            ra = a.advance();
        }
        if !matches!(rb, Ok(Progress::Established(_)) | Err(_)) {
            rb = b.advance();
        }
        if let Ok(Progress::PeerHello(_)) = rb {
            if let Err(e) = b.decide(decision) {
                rb = Err(e);
            } else {
                rb = b.advance();
            }
        }
        let done = |r: &Result<Progress, HandshakeError>| {
            matches!(r, Ok(Progress::Established(_)) | Err(_))
        };
        if done(&ra) && done(&rb) {
            break;
        }
        if out_a.is_empty() && out_b.is_empty() && (done(&ra) || done(&rb)) {
            break;
        }
    }
    (ra, rb)
}

#[test]
fn both_sides_establish_with_the_same_cookie_whole_or_trickled() {
    for trickle in [false, true] {
        let a = Handshake::initiator(cfg("a@h", "c"), "b@h");
        let b = Handshake::acceptor(cfg("b@h", "c"));
        let (ra, rb) = run(a, b, Decision::Ok, trickle);
        match (ra, rb) {
            (Ok(Progress::Established(ea)), Ok(Progress::Established(eb))) => {
                assert_eq!(ea.peer.name, "b@h");
                assert_eq!(eb.peer.name, "a@h");
                assert_eq!(ea.peer.creation, 7);
                assert_eq!(ea.peer.flags, flags::ours(false));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_wrong_cookie_is_refused_on_both_sides() {
    let a = Handshake::initiator(cfg("a@h", "right"), "b@h");
    let b = Handshake::acceptor(cfg("b@h", "wrong"));
    let (ra, rb) = run(a, b, Decision::Ok, false);
    assert_eq!(rb, Err(HandshakeError::BadCookie { peer: "a@h".into() }));
    // The acceptor sends no ack, so the initiator never establishes.
    assert!(!matches!(ra, Ok(Progress::Established(_))), "{ra:?}");
}

#[test]
fn nok_and_not_allowed_refuse_the_initiator() {
    for (d, status) in [
        (Decision::Nok, "nok"),
        (Decision::NotAllowed, "not_allowed"),
    ] {
        let a = Handshake::initiator(cfg("a@h", "c"), "b@h");
        let b = Handshake::acceptor(cfg("b@h", "c"));
        let (ra, rb) = run(a, b, d, false);
        assert_eq!(ra, Err(HandshakeError::Refused(status.into())));
        assert_eq!(rb, Err(HandshakeError::Declined));
    }
}

#[test]
fn ok_simultaneous_goes_on_and_the_tie_is_broken_by_name_order() {
    let a = Handshake::initiator(cfg("a@h", "c"), "b@h");
    let b = Handshake::acceptor(cfg("b@h", "c"));
    let (ra, rb) = run(a, b, Decision::OkSimultaneous, false);
    assert!(matches!(ra, Ok(Progress::Established(_))));
    assert!(matches!(rb, Ok(Progress::Established(_))));
    // b@h accepting from a@h while also connecting to it: b > a, so b keeps its own.
    assert_eq!(simultaneous("b@h", "a@h"), Decision::Nok);
    assert_eq!(simultaneous("a@h", "b@h"), Decision::OkSimultaneous);
}

#[test]
fn alive_is_asked_and_answered() {
    let mut a = Handshake::initiator(cfg("a@h", "c"), "b@h");
    let mut b = Handshake::acceptor(cfg("b@h", "c"));
    b.receive(&a.take_output());
    assert!(matches!(b.advance(), Ok(Progress::PeerHello(_))));
    b.decide(Decision::Alive).unwrap();
    a.receive(&b.take_output());
    assert_eq!(a.advance(), Ok(Progress::AliveQuery));
    a.answer_alive(true).unwrap();
    b.receive(&a.take_output());
    assert_eq!(b.advance(), Ok(Progress::NeedInput));
    a.receive(&b.take_output());
    assert_eq!(a.advance(), Ok(Progress::NeedInput));
    b.receive(&a.take_output());
    assert!(matches!(b.advance(), Ok(Progress::Established(_))));
    a.receive(&b.take_output());
    assert!(matches!(a.advance(), Ok(Progress::Established(_))));

    // Answering false ends it on both sides.
    let mut a = Handshake::initiator(cfg("a@h", "c"), "b@h");
    let mut b = Handshake::acceptor(cfg("b@h", "c"));
    b.receive(&a.take_output());
    b.advance().unwrap();
    b.decide(Decision::Alive).unwrap();
    a.receive(&b.take_output());
    a.advance().unwrap();
    assert_eq!(a.answer_alive(false), Err(HandshakeError::Declined));
    b.receive(&a.take_output());
    assert_eq!(b.advance(), Err(HandshakeError::Declined));
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn send_name(flags: u64, name: &str, trailing: &[u8]) -> Vec<u8> {
    let mut body = vec![b'N'];
    body.extend_from_slice(&flags.to_be_bytes());
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(trailing);
    frame(&body)
}

#[test]
fn trailing_data_after_the_name_is_ignored() {
    let mut b = Handshake::acceptor(cfg("b@h", "c"));
    b.receive(&send_name(flags::ours(false), "x@h", b"future extension"));
    match b.advance() {
        Ok(Progress::PeerHello(p)) => {
            assert_eq!(p.name, "x@h");
            assert_eq!(p.creation, 9);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_peer_missing_mandatory_flags_is_refused_with_their_names() {
    let mut b = Handshake::acceptor(cfg("b@h", "c"));
    // An OTP 25 node without the OTP 26 additions.
    let otp25 = flags::MANDATORY_25_DIGEST | flags::PUBLISHED;
    b.receive(&send_name(otp25, "old@h", b""));
    match b.advance() {
        Err(HandshakeError::MissingFlags { peer, missing }) => {
            assert_eq!(peer, "old@h");
            assert_eq!(missing, vec!["V4_NC", "UNLINK_ID"]);
            let e = HandshakeError::MissingFlags { peer, missing };
            assert!(e.to_string().contains("V4_NC, UNLINK_ID"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.take_output(), frame(b"snot_allowed"));
    // As initiator, a challenge from such a peer is refused too.
    let mut a = Handshake::initiator(cfg("a@h", "c"), "old@h");
    a.take_output();
    a.receive(&frame(b"sok"));
    let mut ch = vec![b'N'];
    ch.extend_from_slice(&otp25.to_be_bytes());
    ch.extend_from_slice(&1u32.to_be_bytes());
    ch.extend_from_slice(&1u32.to_be_bytes());
    ch.extend_from_slice(&5u16.to_be_bytes());
    ch.extend_from_slice(b"old@h");
    a.receive(&frame(&ch));
    assert!(matches!(
        a.advance(),
        Err(HandshakeError::MissingFlags { .. })
    ));
}

#[test]
fn old_style_send_name_with_complement_is_accepted() {
    let mut b = Handshake::acceptor_with_challenge(cfg("b@h", "c"), 1234);
    let mut body = vec![b'n', 0, 6];
    let full = flags::ours(false);
    body.extend_from_slice(&(full as u32).to_be_bytes());
    body.extend_from_slice(b"x@h");
    b.receive(&frame(&body));
    match b.advance() {
        Ok(Progress::PeerHello(p)) => assert_eq!(p.flags, full & 0xffff_ffff),
        other => panic!("{other:?}"),
    }
    b.decide(Decision::Ok).unwrap();
    let _ = b.take_output();
    let mut c = vec![b'c'];
    c.extend_from_slice(&((full >> 32) as u32).to_be_bytes());
    c.extend_from_slice(&77u32.to_be_bytes());
    b.receive(&frame(&c));
    let mut r = vec![b'r'];
    r.extend_from_slice(&99u32.to_be_bytes());
    r.extend_from_slice(&Cookie::new("c").digest(1234));
    b.receive(&frame(&r));
    match b.advance() {
        Ok(Progress::Established(e)) => {
            assert_eq!(e.peer.flags, full);
            assert_eq!(e.peer.creation, 77);
        }
        other => panic!("{other:?}"),
    }
    let mut ack = vec![b'a'];
    ack.extend_from_slice(&Cookie::new("c").digest(99));
    assert!(b.take_output().ends_with(&ack));
}

#[test]
fn bytes_after_the_handshake_are_handed_to_the_connection() {
    let mut a = Handshake::initiator(cfg("a@h", "c"), "b@h");
    let mut b = Handshake::acceptor(cfg("b@h", "c"));
    b.receive(&a.take_output());
    b.advance().unwrap();
    b.decide(Decision::Ok).unwrap();
    a.receive(&b.take_output());
    a.advance().unwrap();
    let mut reply = a.take_output();
    reply.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, 112]);
    b.receive(&reply);
    match b.advance() {
        Ok(Progress::Established(e)) => assert_eq!(e.leftover, vec![0, 0, 0, 0, 0, 0, 0, 3, 112]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_and_misplaced_messages_are_protocol_errors() {
    for bytes in [
        frame(b""),
        frame(b"Z"),
        frame(b"N\x00"),
        frame(b"n\x00\x06\xff\xff\xff\xffnoatsign"),
        send_name(flags::ours(false), "@h", b""),
        send_name(flags::ours(false), "x@", b""),
        frame(b"r0123456789012345678901"),
    ] {
        let mut b = Handshake::acceptor(cfg("b@h", "c"));
        b.receive(&bytes);
        assert!(b.advance().is_err(), "{bytes:?}");
        assert!(b.advance().is_err(), "a failed handshake stays failed");
    }
    // A challenge from another node than the one called.
    let mut a = Handshake::initiator(cfg("a@h", "c"), "b@h");
    a.receive(&frame(b"sok"));
    let mut ch = vec![b'N'];
    ch.extend_from_slice(&flags::ours(false).to_be_bytes());
    ch.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 3]);
    ch.extend_from_slice(b"z@h");
    a.receive(&frame(&ch));
    assert!(matches!(a.advance(), Err(HandshakeError::WrongNode { .. })));
}
