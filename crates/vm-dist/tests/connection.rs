//! Control messages and the connection layer: every operation round-trips in both exit
//! styles, frames split anywhere reassemble, bad frames close only the connection, and
//! the tick timer keeps a quiet connection alive and declares a silent one down.

use std::time::{Duration, Instant};

use vm_dist::atoms::{LocalAtoms, TrustAll};
use vm_dist::connection::{ConnConfig, ConnError, Connection, Incoming, TimerAction, TICK};
use vm_dist::control::{op, Control, ControlError, DistMessage, ProcRef, Style};
use vm_dist::etf::{self, DecodeOptions};
use vm_dist::flags;
use vm_dist::handshake::PeerInfo;
use vm_dist::{Atom, Pid, Ref, Term};

fn pid(n: u32) -> Pid {
    Pid {
        node: Atom::new("a@h"),
        id: n,
        serial: 0,
        creation: 3,
    }
}

fn r(n: u32) -> Ref {
    Ref {
        node: Atom::new("a@h"),
        creation: 3,
        ids: vec![n, 1, 2],
    }
}

fn all_controls() -> Vec<Control> {
    let msg = Term::tuple(vec![Term::atom("hello"), Term::binary(b"x".to_vec())]);
    vec![
        Control::Link {
            from: pid(1),
            to: pid(2),
        },
        Control::Unlink {
            from: pid(1),
            to: pid(2),
        },
        Control::GroupLeader {
            from: pid(1),
            to: pid(2),
        },
        Control::Send {
            to: pid(2),
            message: msg.clone(),
        },
        Control::SendSender {
            from: pid(1),
            to: pid(2),
            message: msg.clone(),
        },
        Control::RegSend {
            from: pid(1),
            to_name: Atom::new("net_kernel"),
            message: msg.clone(),
        },
        Control::Exit {
            from: pid(1),
            to: pid(2),
            reason: Term::atom("boom"),
        },
        Control::Exit2 {
            from: pid(1),
            to: pid(2),
            reason: Term::atom("kill"),
        },
        Control::UnlinkId {
            id: 1 << 40,
            from: pid(1),
            to: pid(2),
        },
        Control::UnlinkIdAck {
            id: 5,
            from: pid(2),
            to: pid(1),
        },
        Control::MonitorP {
            from: pid(1),
            to: ProcRef::Pid(pid(2)),
            reference: r(1),
        },
        Control::MonitorP {
            from: pid(1),
            to: ProcRef::Name(Atom::new("rex")),
            reference: r(2),
        },
        Control::DemonitorP {
            from: pid(1),
            to: ProcRef::Name(Atom::new("rex")),
            reference: r(2),
        },
        Control::MonitorPExit {
            from: ProcRef::Pid(pid(2)),
            to: pid(1),
            reference: r(1),
            reason: Term::atom("noproc"),
        },
        Control::SpawnRequest {
            req_id: r(9),
            from: pid(1),
            group_leader: pid(0),
            module: Atom::new("erpc"),
            function: Atom::new("execute_call"),
            arity: 4,
            opts: Term::list(vec![Term::atom("monitor")]),
            // Not all small integers: that list would come back as a Charlist.
            args: Term::list(vec![
                Term::atom("m"),
                Term::atom("f"),
                Term::Nil,
                Term::Int(4),
            ]),
        },
        Control::SpawnReply {
            req_id: r(9),
            to: pid(1),
            flags: 2,
            result: Term::Pid(pid(7)),
        },
        Control::AliasSend {
            from: pid(1),
            alias: r(4),
            message: msg,
        },
    ]
}

#[test]
fn every_control_message_round_trips_in_both_styles_with_and_without_token() {
    for exit_payload in [true, false] {
        for token in [None, Some(Term::tuple(vec![Term::Int(1), Term::Int(2)]))] {
            for c in all_controls() {
                let m = DistMessage {
                    control: c,
                    token: token.clone(),
                };
                let traceable = !matches!(
                    m.control,
                    Control::Link { .. }
                        | Control::Unlink { .. }
                        | Control::GroupLeader { .. }
                        | Control::UnlinkId { .. }
                        | Control::UnlinkIdAck { .. }
                        | Control::MonitorP { .. }
                        | Control::DemonitorP { .. }
                        | Control::MonitorPExit { .. }
                );
                if m.token.is_some() && !traceable {
                    assert!(m.encode(Style { exit_payload }).is_err());
                    continue;
                }
                let bytes = m.encode(Style { exit_payload }).unwrap();
                let back =
                    DistMessage::decode(&bytes, &DecodeOptions::default(), &mut TrustAll).unwrap();
                assert_eq!(back, m, "payload={exit_payload}");
            }
        }
    }
}

#[test]
fn the_wire_forms_are_otps() {
    // SEND_SENDER: {22, From, To} + Msg.
    let m: DistMessage = Control::SendSender {
        from: pid(1),
        to: pid(2),
        message: Term::Int(5),
    }
    .into();
    let bytes = m.encode(Style { exit_payload: true }).unwrap();
    assert_eq!(bytes[0], 112);
    let (ctl, used) =
        etf::decode_prefix(&bytes[1..], &DecodeOptions::default(), &mut TrustAll).unwrap();
    assert_eq!(
        ctl,
        Term::tuple(vec![
            Term::Int(op::SEND_SENDER),
            Term::Pid(pid(1)),
            Term::Pid(pid(2))
        ])
    );
    assert_eq!(&bytes[1 + used..], &[131, 97, 5]);
    // REG_SEND's unused field is the empty atom.
    let m: DistMessage = Control::RegSend {
        from: pid(1),
        to_name: Atom::new("x"),
        message: Term::Nil,
    }
    .into();
    let bytes = m.encode(Style { exit_payload: true }).unwrap();
    let (ctl, _) =
        etf::decode_prefix(&bytes[1..], &DecodeOptions::default(), &mut TrustAll).unwrap();
    assert_eq!(ctl.as_tuple().unwrap()[2], Term::atom(""));
    // Exit without payload: {3, From, To, Reason}; with: {24, From, To} + Reason.
    let exit: DistMessage = Control::Exit {
        from: pid(1),
        to: pid(2),
        reason: Term::atom("x"),
    }
    .into();
    let old = exit
        .encode(Style {
            exit_payload: false,
        })
        .unwrap();
    let (ctl, used) =
        etf::decode_prefix(&old[1..], &DecodeOptions::default(), &mut TrustAll).unwrap();
    assert_eq!(ctl.as_tuple().unwrap().len(), 4);
    assert_eq!(used, old.len() - 1);
    let new = exit.encode(Style { exit_payload: true }).unwrap();
    let (ctl, _) = etf::decode_prefix(&new[1..], &DecodeOptions::default(), &mut TrustAll).unwrap();
    assert_eq!(ctl.as_tuple().unwrap()[0], Term::Int(op::PAYLOAD_EXIT));
}

fn frame_of(ctl: &Term, payload: Option<&Term>) -> Vec<u8> {
    let mut body = vec![112];
    etf::encode_into(&mut body, ctl).unwrap();
    if let Some(p) = payload {
        etf::encode_into(&mut body, p).unwrap();
    }
    body
}

#[test]
fn malformed_control_messages_are_errors() {
    let opts = DecodeOptions::default();
    let cases = vec![
        (
            "unknown op",
            frame_of(&Term::tuple(vec![Term::Int(99)]), None),
        ),
        (
            "op not an integer",
            frame_of(&Term::tuple(vec![Term::atom("x")]), None),
        ),
        ("not a tuple", frame_of(&Term::Int(2), None)),
        (
            "send without payload",
            frame_of(
                &Term::tuple(vec![Term::Int(2), Term::atom(""), Term::Pid(pid(1))]),
                None,
            ),
        ),
        (
            "link with trailing payload",
            frame_of(
                &Term::tuple(vec![Term::Int(1), Term::Pid(pid(1)), Term::Pid(pid(2))]),
                Some(&Term::Int(1)),
            ),
        ),
        (
            "link with atom pid",
            frame_of(
                &Term::tuple(vec![Term::Int(1), Term::atom("p"), Term::Pid(pid(2))]),
                None,
            ),
        ),
        (
            "unlink_id with negative id",
            frame_of(
                &Term::tuple(vec![
                    Term::Int(35),
                    Term::Int(-1),
                    Term::Pid(pid(1)),
                    Term::Pid(pid(2)),
                ]),
                None,
            ),
        ),
        ("atom cache header", vec![68, 0]),
        ("empty", vec![]),
    ];
    for (name, bytes) in cases {
        assert!(
            DistMessage::decode(&bytes, &opts, &mut TrustAll).is_err(),
            "{name}"
        );
    }
    assert!(matches!(
        DistMessage::decode(
            &frame_of(&Term::tuple(vec![Term::Int(99)]), None),
            &opts,
            &mut TrustAll
        ),
        Err(ControlError::UnknownOp(_))
    ));
}

fn peer() -> PeerInfo {
    PeerInfo {
        name: "b@h".into(),
        flags: flags::ours(false),
        creation: 1,
    }
}

fn conn(cfg: ConnConfig, now: Instant) -> Connection<LocalAtoms> {
    Connection::new(peer(), cfg, LocalAtoms::default(), now)
}

#[test]
fn frames_split_anywhere_reassemble_and_ticks_are_seen() {
    let now = Instant::now();
    let mut tx = conn(ConnConfig::default(), now);
    let mut rx = conn(ConnConfig::default(), now);
    let mut wire = TICK.to_vec();
    let msgs: Vec<DistMessage> = all_controls().into_iter().map(DistMessage::from).collect();
    for m in &msgs {
        tx.frame(m, &mut wire, now).unwrap();
    }
    wire.extend_from_slice(&TICK);
    let mut got = Vec::new();
    for chunk in wire.chunks(3) {
        rx.receive(chunk, now);
        while let Some(i) = rx.next().unwrap() {
            got.push(i);
        }
    }
    assert_eq!(got.len(), msgs.len() + 2);
    assert_eq!(got[0], Incoming::Tick);
    assert_eq!(*got.last().unwrap(), Incoming::Tick);
    for (g, m) in got[1..got.len() - 1].iter().zip(&msgs) {
        assert_eq!(*g, Incoming::Message(m.clone()));
    }
}

#[test]
fn an_oversize_length_prefix_fails_at_once_without_allocating() {
    let now = Instant::now();
    let cfg = ConnConfig {
        max_frame: 1 << 20,
        ..ConnConfig::default()
    };
    let mut rx = conn(cfg, now);
    rx.receive(&[0xff, 0xff, 0xff, 0xff, 112], now);
    assert!(matches!(
        rx.next(),
        Err(ConnError::FrameTooLarge {
            len: 0xffff_ffff,
            ..
        })
    ));
    assert_eq!(
        rx.next(),
        Err(ConnError::Failed),
        "a failed connection stays failed"
    );
    // Under the bound, a large declared length waits for its bytes.
    let mut rx = conn(ConnConfig::default(), now);
    rx.receive(&[0x10, 0, 0, 0, 112], now);
    assert_eq!(rx.next(), Ok(None));
}

#[test]
fn a_truncated_or_garbage_frame_closes_only_this_connection() {
    let now = Instant::now();
    let mut rx = conn(ConnConfig::default(), now);
    rx.receive(&[0, 0, 0, 3, 112, 131, 200], now);
    assert!(matches!(rx.next(), Err(ConnError::Control(_))));
    // Another connection decoding valid frames is unaffected.
    let mut other = conn(ConnConfig::default(), now);
    let mut tx = conn(ConnConfig::default(), now);
    let mut wire = Vec::new();
    tx.frame(&all_controls()[0].clone().into(), &mut wire, now)
        .unwrap();
    other.receive(&wire, now);
    assert!(matches!(other.next(), Ok(Some(Incoming::Message(_)))));
}

#[test]
fn an_atom_flood_drops_the_connection() {
    let now = Instant::now();
    let cfg = ConnConfig {
        atom_budget: 50,
        ..ConnConfig::default()
    };
    let table = LocalAtoms::default();
    let mut rx = Connection::new(peer(), cfg, table.clone(), now);
    let mut tx = conn(ConnConfig::default(), now);
    let mut wire = Vec::new();
    for i in 0..100 {
        let m: DistMessage = Control::Send {
            to: pid(1),
            message: Term::atom(&format!("flood{i}")),
        }
        .into();
        tx.frame(&m, &mut wire, now).unwrap();
    }
    rx.receive(&wire, now);
    let mut delivered = 0;
    let err = loop {
        match rx.next() {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("the flood was not stopped"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, ConnError::Control(ControlError::Term(_))),
        "{err:?}"
    );
    // The first messages bring a@h (pid node), '' is not used by SEND... each new
    // atom counts; the connection dies once the allowance is spent.
    assert!(delivered < 50, "{delivered}");
    assert!(table.len() <= 50);
}

#[test]
fn ticks_go_out_each_quarter_and_silence_for_net_ticktime_is_down() {
    let t0 = Instant::now();
    let cfg = ConnConfig {
        net_ticktime: Duration::from_secs(4),
        ..ConnConfig::default()
    };
    let mut c = conn(cfg, t0);
    assert_eq!(c.tick_interval(), Duration::from_secs(1));
    assert_eq!(
        c.on_timer(t0 + Duration::from_millis(500)),
        TimerAction::None
    );
    assert_eq!(
        c.on_timer(t0 + Duration::from_secs(1)),
        TimerAction::SendTick(TICK.to_vec())
    );
    assert_eq!(
        c.on_timer(t0 + Duration::from_millis(1500)),
        TimerAction::None
    );
    // The peer ticks: it stays up through three more periods.
    for s in 2..=7u64 {
        c.receive(&TICK, t0 + Duration::from_secs(s));
        assert_eq!(c.next(), Ok(Some(Incoming::Tick)));
        assert!(matches!(
            c.on_timer(t0 + Duration::from_secs(s)),
            TimerAction::SendTick(_) | TimerAction::None
        ));
    }
    // Then silence: down once net_ticktime has passed since the last byte.
    assert_ne!(
        c.on_timer(t0 + Duration::from_millis(10_900)),
        TimerAction::PeerDown
    );
    assert_eq!(
        c.on_timer(t0 + Duration::from_secs(11)),
        TimerAction::PeerDown
    );
}
