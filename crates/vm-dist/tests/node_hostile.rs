//! The blocking node against hostile peers (no Erlang needed): garbage before the
//! handshake, silent connections, oversize frames, unknown control messages and atom
//! floods after a real handshake. Each closes only its own connection; the node keeps
//! serving its real peers.

mod common;

use common::Stopped;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::{free_port, unique};
use vm_dist::connection::{ConnConfig, Connection};
use vm_dist::control::{Control, DistMessage};
use vm_dist::cookie::Cookie;
use vm_dist::etf;
use vm_dist::flags;
use vm_dist::node::{Node, NodeConfig};
use vm_dist::{Atom, Pid, Term};

const COOKIE: &str = "hostile_test_cookie";

fn node(epmd: u16, atom_budget: u64) -> Stopped {
    let mut cfg = NodeConfig::new(&unique("rs"));
    cfg.cookie = Some(Cookie::new(COOKIE));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = epmd;
    cfg.conn = ConnConfig {
        atom_budget,
        max_frame: 1 << 20,
        ..ConnConfig::default()
    };
    Stopped(Node::start(cfg).expect("node starts"))
}

/// Connects to `target` and completes a real handshake as `evil@localhost`.
fn handshaken(target: &Node) -> TcpStream {
    common::handshaken(target, "evil@localhost", COOKIE)
}

/// Waits until the node closes `s` (reads EOF or a reset), skipping ticks; `false`
/// if the socket's read timeout passes first (the node kept it open).
fn closed_by_node(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn hostile_connections_close_alone_and_the_node_keeps_serving() {
    let port = free_port();
    let a = node(port, 100);
    let b = node(port, 100);
    assert!(a.0.ping(b.0.name(), Duration::from_secs(5)));

    // Garbage instead of a handshake.
    let mut g = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], a.0.port()))).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(&[0, 5, b'Z', 1, 2, 3, 4, 0xff, 0xff]).unwrap();
    assert!(closed_by_node(g));
    // A silent connection, held open meanwhile.
    let _silent = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], a.0.port()))).unwrap();

    // After a real handshake: an oversize length prefix.
    let mut s = handshaken(&a.0);
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 112]).unwrap();
    assert!(closed_by_node(s));

    // An unknown control message.
    let mut s = handshaken(&a.0);
    let mut body = vec![112];
    etf::encode_into(
        &mut body,
        &Term::tuple(vec![Term::Int(77), Term::atom("x")]),
    )
    .unwrap();
    s.write_all(&frame(&body)).unwrap();
    assert!(closed_by_node(s));

    // A truncated term inside a frame.
    let mut s = handshaken(&a.0);
    s.write_all(&frame(&[112, 131, 104, 3, 97])).unwrap();
    assert!(closed_by_node(s));

    // An atom flood: new atoms in messages to a registered name.
    let s = handshaken(&a.0);
    let s = flood(&a.0, s, 0..500);
    assert!(closed_by_node(s));

    // The hostile connections are gone (the node forgets each right after closing
    // it), and the real peer never noticed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a.0.nodes().len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a.0.nodes(), vec![b.0.name().to_owned()]);
    assert!(a.0.ping(b.0.name(), Duration::from_secs(5)));
    assert!(b.0.ping(a.0.name(), Duration::from_secs(5)));
}

/// Writes messages carrying the new atoms `flood_atom_{i}` for `i` in `range` to a
/// registered name on `target` over `s` (the node may close it meanwhile: that is
/// the point), and hands `s` back.
fn flood(target: &Node, mut s: TcpStream, range: std::ops::Range<u32>) -> TcpStream {
    let mut tx = Connection::new(
        vm_dist::handshake::PeerInfo {
            name: target.name().into(),
            flags: flags::ours(false),
            creation: target.creation(),
        },
        ConnConfig::default(),
        vm_dist::atoms::TrustAll,
        std::time::Instant::now(),
    );
    let from = Pid {
        node: Atom::new("evil@localhost"),
        id: 1,
        serial: 0,
        creation: 5,
    };
    let mut wire = Vec::new();
    for i in range {
        let m: DistMessage = Control::RegSend {
            from: from.clone(),
            to_name: Atom::new("nobody"),
            message: Term::atom(&format!("flood_atom_{i}")),
        }
        .into();
        tx.frame(&m, &mut wire, std::time::Instant::now()).unwrap();
    }
    let _ = s.write_all(&wire);
    s
}

/// Waits up to 5 s for `node`'s connected nodes to be `want`.
fn nodes_become(node: &Node, want: &[&str]) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.nodes() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    node.nodes() == want
}

#[test]
fn peers_share_one_atom_allowance_that_reconnecting_does_not_renew() {
    let port = free_port();
    let mut cfg = NodeConfig::new(&unique("rs"));
    cfg.cookie = Some(Cookie::new(COOKIE));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = port;
    cfg.conn.atom_budget = 1000;
    cfg.peer_atoms = 300;
    let a = Stopped(Node::start(cfg).expect("node starts"));
    // 200 new atoms: within this connection's budget and the node's allowance.
    let s = flood(&a.0, handshaken(&a.0), 0..200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        a.0.nodes(),
        vec!["evil@localhost".to_owned()],
        "not dropped"
    );
    drop(s);
    assert!(nodes_become(&a.0, &[]));
    // The same peer again, with 200 more: a fresh connection budget, but the node's
    // allowance is spent, so this connection is closed.
    let s = flood(&a.0, handshaken(&a.0), 200..400);
    assert!(closed_by_node(s));
    assert!(nodes_become(&a.0, &[]));
}

#[test]
fn a_wrong_cookie_is_refused_between_rust_nodes() {
    let port = free_port();
    let a = node(port, 1000);
    let mut cfg = NodeConfig::new(&unique("rs"));
    cfg.cookie = Some(Cookie::new("not_the_cookie"));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = port;
    let b = Stopped(Node::start(cfg).unwrap());
    assert!(!b.0.ping(a.0.name(), Duration::from_secs(5)));
    assert!(!a.0.ping(b.0.name(), Duration::from_secs(5)));
    assert!(a.0.nodes().is_empty());
    assert!(b.0.nodes().is_empty());
}

#[test]
fn simultaneous_connects_settle_on_one_connection() {
    let port = free_port();
    let _epmd_owner = node(port, 1000);
    for round in 0..10 {
        let a = node(port, 1000);
        let b = node(port, 1000);
        let (an, bn) = (a.0.name().to_owned(), b.0.name().to_owned());
        let (a2, b2) = (a.0.clone(), b.0.clone());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let bar2 = barrier.clone();
        let t1 = std::thread::spawn(move || {
            bar2.wait();
            a2.ping(&bn, Duration::from_secs(10))
        });
        barrier.wait();
        let r2 = b2.ping(&an, Duration::from_secs(10));
        let r1 = t1.join().unwrap();
        assert!(r1 && r2, "round {round}: {r1} {r2}");
        assert_eq!(a.0.nodes(), vec![b.0.name().to_owned()], "round {round}");
        assert_eq!(b.0.nodes(), vec![a.0.name().to_owned()], "round {round}");
        // And the one connection carries traffic both ways.
        assert!(a.0.ping(b.0.name(), Duration::from_secs(5)));
        assert!(b.0.ping(a.0.name(), Duration::from_secs(5)));
    }
}

#[test]
fn bad_node_names_are_refused_at_start() {
    for name in [
        "nohost",
        "@host",
        "name@",
        &format!("{}@h", "x".repeat(300)),
    ] {
        let mut cfg = NodeConfig::new(name);
        cfg.cookie = Some(Cookie::new(COOKIE));
        cfg.epmd_port = free_port();
        assert!(
            matches!(Node::start(cfg), Err(vm_dist::node::DistError::BadName(_))),
            "{name}"
        );
    }
}
