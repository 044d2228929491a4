//! Background connection setup and asynchronous exposed functions (no Erlang needed):
//! a node with `background_connect` never makes its caller wait on a handshake, keeps
//! the order of what it queued meanwhile, and turns a failed setup into `noconnection`;
//! an exposed function that answers later holds up neither the connection nor other
//! calls, and one that never answers fails with `killed`.

mod common;

use common::Stopped;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, unique};
use vm_dist::cookie::Cookie;
use vm_dist::epmd;
use vm_dist::node::{Delivery, Node, NodeConfig, Reply, SETUP_TIMEOUT};
use vm_dist::{Pid, Term};

const COOKIE: &str = "background_test_cookie";

fn node(epmd: u16, background: bool) -> Stopped {
    let mut cfg = NodeConfig::new(&unique("bg"));
    cfg.cookie = Some(Cookie::new(COOKIE));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = epmd;
    cfg.background_connect = background;
    Stopped(Node::start(cfg).expect("node starts"))
}

/// A node EPMD knows whose port accepts connections (the kernel's backlog does) but
/// never says a word: a handshake with it lasts until the setup timeout.
struct Silent {
    name: String,
    _listener: TcpListener,
    _registration: epmd::Registration,
}

fn silent_node(epmd_port: u16) -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let name = unique("silent");
    let alive = name.split('@').next().unwrap_or("silent").to_owned();
    let registration = epmd::register(
        SocketAddr::from(([127, 0, 0, 1], epmd_port)),
        &alive,
        port,
        false,
    )
    .expect("register with EPMD");
    Silent {
        name,
        _listener: listener,
        _registration: registration,
    }
}

fn remote_pid(node: &str) -> Pid {
    Pid {
        node: vm_dist::Atom::new(node),
        id: 77,
        serial: 0,
        creation: 1,
    }
}

#[test]
fn sends_queued_while_connecting_arrive_in_order_and_callers_never_wait() {
    let port = free_port();
    let a = node(port, true);
    let b = node(port, false);
    let mut sink = b.0.mailbox();
    b.0.register("sink", &sink);
    let silent = silent_node(port);
    let sender = a.0.mailbox();

    // A handshake that cannot finish is in progress for `silent`...
    let t = Instant::now();
    sender
        .send(&remote_pid(&silent.name), Term::atom("lost"))
        .expect("queued");
    // ...and the first messages to `b` go out while its connection comes up.
    for i in 0..2000 {
        sender
            .send_named("sink", b.0.name(), Term::Int(i))
            .expect("queued or sent");
    }
    let spent = t.elapsed();
    assert!(
        spent < SETUP_TIMEOUT / 2,
        "the sender waited {spent:?} for a connection"
    );
    for i in 0..2000 {
        assert_eq!(
            sink.recv_message(Duration::from_secs(30)),
            Some(Term::Int(i)),
            "message {i} out of order or lost"
        );
    }
    assert_eq!(a.0.nodes(), vec![b.0.name().to_owned()]);
}

#[test]
fn a_failed_background_setup_gives_noconnection_to_links_monitors_and_on_fail() {
    let port = free_port();
    let a = node(port, true);
    let silent = silent_node(port);
    let mut m = a.0.mailbox();
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    let target = remote_pid(&silent.name);
    m.link(&target).expect("queued");
    let mref = m.monitor(&target).expect("queued");
    a.0.connect_background(&silent.name, Box::new(move || tx.send(()).unwrap_or(())))
        .expect("started");
    // A node EPMD does not know fails fast, alone.
    let ghost = unique("ghost");
    let ghost_pid = remote_pid(&ghost);
    let mut g = a.0.mailbox();
    g.link(&ghost_pid).expect("queued");
    match g.recv(Duration::from_secs(20)) {
        Some(Delivery::Exit { from, reason, .. }) => {
            assert_eq!(from, ghost_pid);
            assert_eq!(reason, Term::atom("noconnection"));
        }
        other => panic!("expected a noconnection exit, got {other:?}"),
    }
    assert!(
        t.elapsed() < SETUP_TIMEOUT,
        "the ghost waited for the silent node"
    );

    let bound = SETUP_TIMEOUT * 3;
    let mut exit = false;
    let mut down = false;
    while !(exit && down) {
        match m.recv(bound) {
            Some(Delivery::Exit { from, reason, .. }) => {
                assert_eq!((from, reason), (target.clone(), Term::atom("noconnection")));
                exit = true;
            }
            Some(Delivery::Down {
                reference, reason, ..
            }) => {
                assert_eq!(
                    (reference, reason),
                    (mref.clone(), Term::atom("noconnection"))
                );
                down = true;
            }
            other => panic!("expected noconnection, got {other:?}"),
        }
    }
    rx.recv_timeout(bound).expect("on_fail ran");
    assert!(a.0.nodes().is_empty());
}

fn rex_call(mb: &mut vm_dist::node::Mailbox, node: &str, f: &str) -> Term {
    let req = Term::tuple(vec![
        Term::atom("call"),
        Term::atom("m"),
        Term::atom(f),
        Term::Nil,
        Term::Pid(mb.pid().clone()),
    ]);
    mb.gen_call("rex", node, req, Duration::from_secs(30))
        .expect("an answer")
}

#[test]
fn a_slow_exposed_function_holds_up_neither_the_connection_nor_other_calls() {
    let port = free_port();
    let a = node(port, false);
    let b = node(port, true);
    let parked: Arc<Mutex<Option<Reply>>> = Arc::new(Mutex::new(None));
    let (started_tx, started_rx) = mpsc::channel();
    let p2 = parked.clone();
    // `slow` answers only when the test says so.
    b.0.expose_async(
        "m",
        "slow",
        Arc::new(move |_args, reply| {
            *p2.lock().unwrap() = Some(reply);
            started_tx.send(()).unwrap_or(());
        }),
    );
    b.0.expose("m", "fast", Arc::new(|_| Ok(Term::atom("quick"))));
    // `lost` drops its reply, as a process killed before answering does.
    b.0.expose_async("m", "lost", Arc::new(|_args, reply| drop(reply)));

    let bn = b.0.name().to_owned();
    let mut slow_caller = a.0.mailbox();
    let bn2 = bn.clone();
    let slow = std::thread::spawn(move || rex_call(&mut slow_caller, &bn2, "slow"));
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the slow call started");

    // While `slow` is pending, the same connection serves other calls and pings.
    let mut m = a.0.mailbox();
    assert_eq!(rex_call(&mut m, &bn, "fast"), Term::atom("quick"));
    assert!(a.0.ping(&bn, Duration::from_secs(10)));
    let killed = rex_call(&mut m, &bn, "lost");
    assert_eq!(
        killed,
        Term::tuple(vec![
            Term::atom("badrpc"),
            Term::tuple(vec![Term::atom("EXIT"), Term::atom("killed")]),
        ])
    );
    assert!(!slow.is_finished(), "slow answered before it was let go");

    let reply = parked.lock().unwrap().take().expect("slow's reply");
    reply.send(Ok(Term::Int(42)));
    assert_eq!(slow.join().expect("slow caller"), Term::Int(42));
}

#[test]
fn links_to_hundreds_of_unknown_nodes_at_once_all_get_noconnection() {
    let port = free_port();
    let a = node(port, true);
    let mut m = a.0.mailbox();
    let targets: Vec<Pid> = (0..300).map(|_| remote_pid(&unique("nobody"))).collect();
    for t in &targets {
        m.link(t).expect("queued");
    }
    // Past the bound on setups in progress an attempt fails at once; either way
    // every link is answered.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < targets.len() {
        match m.recv(Duration::from_secs(60)) {
            Some(Delivery::Exit { from, reason, .. }) => {
                assert_eq!(reason, Term::atom("noconnection"));
                assert!(seen.insert(from), "two exits for one link");
            }
            other => panic!("expected noconnection for every link, got {other:?}"),
        }
    }
}
