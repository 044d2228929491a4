//! The reactor wired into the VM (issue 11 phase 2): events reach processes as
//! messages, owners' exits close sockets, controlling_process moves delivery, active N
//! counts, and native processes serve TCP (the echo server of the examples).

#[path = "../examples/common/echo_native.rs"]
mod echo_native;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use vm_core::io::{
    parse_message, Accept, ActiveOpt, Addr, IoMessage, ListenOpts, SetOpts, SockName, SocketId,
};
use vm_core::{Cx, Step, Vm, VmConfig};

const LONG: Duration = Duration::from_secs(30);

fn vm() -> Vm {
    Vm::start(VmConfig {
        schedulers: 2,
        schedulers_online: 2,
        ..VmConfig::default()
    })
    .expect("vm")
}

fn local() -> Addr {
    Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn port_of(r: &vm_core::io::Reactor, s: SocketId) -> u16 {
    match r.sockname(s) {
        Ok(SockName::Inet(a)) => a.port(),
        other => panic!("sockname: {other:?}"),
    }
}

fn exit() -> Step {
    Step::Exit(vm_core::Fragment::from_term(&vm_core::Term::atom("normal")))
}

/// A process that listens, accepts one connection with `opts` and reports every reactor
/// message it gets on `tx` (after a `TcpPassive` for the made-up id `u64::MAX` that
/// says "accepted and armed").
fn collector(
    active: ActiveOpt,
    port_tx: mpsc::Sender<u16>,
    tx: mpsc::Sender<IoMessage>,
) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    let mut ls = None;
    let mut sock = None;
    let mut armed = false;
    move |cx: &mut Cx<'_>| {
        let r = cx.io().expect("io");
        let me = cx.self_pid();
        let l = *ls.get_or_insert_with(|| {
            let l = r
                .listen(me, &local(), ListenOpts::default())
                .expect("listen");
            port_tx.send(port_of(&r, l)).expect("port");
            l
        });
        if sock.is_none() && !armed {
            match r.accept(l, me).expect("accept") {
                Accept::Ready(s) => sock = Some(s),
                Accept::Pending => {}
            }
        }
        while let Some(m) = cx.recv() {
            let Some(m) = parse_message(m.view()) else {
                continue;
            };
            if let IoMessage::Accepted(_, Ok(s)) = m {
                sock = Some(s);
            } else {
                let _ = tx.send(m);
            }
        }
        if let (Some(s), false) = (sock, armed) {
            armed = true;
            r.setopts(s, SetOpts::active(active)).expect("setopts");
            let _ = tx.send(IoMessage::TcpPassive(SocketId(u64::MAX))); // "accepted"
        }
        Step::Wait
    }
}

#[test]
fn active_n_delivers_n_messages_then_tcp_passive() {
    let vm = vm();
    let (ptx, prx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    vm.spawn(collector(ActiveOpt::N(3), ptx, tx))
        .expect("spawn");
    let port = prx.recv_timeout(LONG).expect("port");
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    assert!(matches!(
        rx.recv_timeout(LONG),
        Ok(IoMessage::TcpPassive(SocketId(u64::MAX)))
    ));
    let mut got = Vec::new();
    for i in 0..6u8 {
        c.write_all(&[b'a' + i]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        match rx.recv_timeout(LONG).expect("message") {
            IoMessage::Tcp(_, d) => got.extend(d),
            IoMessage::TcpPassive(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Three messages (each holds what one read returned), then passive: nothing more.
    assert!(got.len() >= 3 && b"abcdef".starts_with(&got), "{got:?}");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn owner_exit_closes_its_socket_and_the_peer_sees_eof() {
    let vm = vm();
    let (tx, rx) = mpsc::channel();
    vm.spawn(move |cx: &mut Cx<'_>| {
        let r = cx.io().expect("io");
        let l = r
            .listen(cx.self_pid(), &local(), ListenOpts::default())
            .expect("listen");
        tx.send(port_of(&r, l)).expect("port");
        // Exit at once: the listener goes with its owner.
        exit()
    })
    .expect("spawn");
    let port = rx.recv_timeout(LONG).expect("port");
    // Once the owner is gone, nothing listens on the port any more.
    let deadline = std::time::Instant::now() + LONG;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener outlived its owner"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A connection's owner: the echo server's connection processes end on EOF; here
    // the native server is stopped by killing the VM's processes through shutdown.
    let port = echo_native::start(&vm.handle(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(LONG)).expect("timeout");
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
    let mut vm = vm;
    vm.shutdown();
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).expect("eof"),
        0,
        "EOF after the VM stopped"
    );
}

#[test]
fn controlling_process_moves_delivery_to_the_new_owner() {
    let vm = vm();
    let (tx, rx) = mpsc::channel::<(&'static str, IoMessage)>();
    let tx2 = tx.clone();
    // The new owner: reports what it gets.
    let new_owner = vm
        .spawn(move |cx: &mut Cx<'_>| {
            while let Some(m) = cx.recv() {
                if let Some(m) = parse_message(m.view()) {
                    let _ = tx2.send(("new", m));
                }
            }
            Step::Wait
        })
        .expect("spawn");
    let (ptx, prx) = mpsc::channel();
    let mut listening = false;
    vm.spawn(move |cx: &mut Cx<'_>| {
        let r = cx.io().expect("io");
        let me = cx.self_pid();
        let hand_over = |s: SocketId| {
            // Not the owner: refused.
            assert!(r.controlling_process(s, new_owner, new_owner).is_err());
            r.controlling_process(s, me, new_owner).expect("hand over");
            r.setopts(s, SetOpts::active(ActiveOpt::True))
                .expect("active");
        };
        if !listening {
            listening = true;
            let l = r
                .listen(me, &local(), ListenOpts::default())
                .expect("listen");
            ptx.send(port_of(&r, l)).expect("port");
            if let Accept::Ready(s) = r.accept(l, me).expect("accept") {
                hand_over(s);
            }
        }
        while let Some(m) = cx.recv() {
            match parse_message(m.view()) {
                Some(IoMessage::Accepted(_, Ok(s))) => hand_over(s),
                Some(m) => {
                    let _ = tx.send(("old", m));
                }
                None => {}
            }
        }
        Step::Wait
    })
    .expect("spawn");
    let port = prx.recv_timeout(LONG).expect("port");
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(b"to the new owner").expect("write");
    let mut got = Vec::new();
    while got.len() < 16 {
        match rx.recv_timeout(LONG).expect("message") {
            ("new", IoMessage::Tcp(_, d)) => got.extend(d),
            other => panic!("delivered to the wrong process: {other:?}"),
        }
    }
    assert_eq!(got, b"to the new owner");
    drop(c);
    assert!(matches!(
        rx.recv_timeout(LONG),
        Ok(("new", IoMessage::TcpClosed(_)))
    ));
}

#[test]
fn native_echo_server_serves_many_connections() {
    let vm = vm();
    let port = echo_native::start(&vm.handle(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for round in 0..5u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("{i:04}:{round}").as_bytes())
                .expect("write");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(LONG)).expect("timeout");
            let mut buf = [0u8; 6];
            c.read_exact(&mut buf).expect("echo");
            assert_eq!(&buf, format!("{i:04}:{round}").as_bytes());
        }
    }
    drop(clients);
    // Every connection process ends with its peer; only the listener stays open.
    let deadline = std::time::Instant::now() + LONG;
    while vm.socket_count() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} sockets left",
            vm.socket_count()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process that forwards every reactor message it gets to `tx`.
fn forwarder(tx: mpsc::Sender<IoMessage>) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    move |cx: &mut Cx<'_>| {
        while let Some(m) = cx.recv() {
            if let Some(m) = parse_message(m.view()) {
                let _ = tx.send(m);
            }
        }
        Step::Wait
    }
}

/// The schedulers poll the reactor (no poll thread): a VM whose first socket is made
/// from outside any process, while every scheduler sleeps on its futex, still sees
/// that socket's readiness (making the reactor wakes them, and one re-parks in epoll).
#[test]
fn a_first_socket_made_outside_any_process_is_polled() {
    let vm = vm();
    let (tx, rx) = mpsc::channel();
    let waiter = vm.spawn(forwarder(tx)).expect("spawn");
    // Let both schedulers run out of work and park (no reactor exists yet).
    std::thread::sleep(Duration::from_millis(200));
    let r = vm.handle().io().expect("io");
    let l = r
        .listen(waiter, &local(), ListenOpts::default())
        .expect("listen");
    assert_eq!(r.accept(l, waiter).expect("accept"), Accept::Pending);
    let port = port_of(&r, l);
    let _c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    match rx.recv_timeout(LONG) {
        Ok(IoMessage::Accepted(s, Ok(_))) => assert_eq!(s, l),
        other => panic!("the accept was never completed: {other:?}"),
    }
}

/// Busy schedulers poll too: with every scheduler running a process that never waits,
/// nobody parks in epoll, and the echo server is still served (each busy scheduler
/// looks for readiness every few picks).
#[test]
fn echo_is_served_while_every_scheduler_runs_a_spinning_process() {
    let vm = vm();
    let port = echo_native::start(&vm.handle(), SocketAddr::from(([127, 0, 0, 1], 0)));
    for _ in 0..2 {
        vm.spawn(echo_native::hog()).expect("hog");
    }
    let mut clients: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for round in 0..20u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("{i:02}:{round:02}").as_bytes())
                .expect("write");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(LONG)).expect("timeout");
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).expect("echo");
            assert_eq!(&buf, format!("{i:02}:{round:02}").as_bytes());
        }
    }
}

/// A VM with one scheduler: it alone runs processes and polls, alternating between
/// the two (it parks in epoll when idle, polls between picks when busy).
#[test]
fn one_scheduler_runs_processes_and_polls() {
    let vm = Vm::start(VmConfig {
        schedulers: 1,
        schedulers_online: 1,
        ..VmConfig::default()
    })
    .expect("vm");
    let port = echo_native::start(&vm.handle(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(LONG)).expect("timeout");
    for round in 0..50u32 {
        // Idle between round trips (parked in epoll), then with a spinner (busy).
        if round == 25 {
            vm.spawn(echo_native::hog()).expect("hog");
        }
        let msg = format!("{round:03}");
        c.write_all(msg.as_bytes()).expect("write");
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).expect("echo");
        assert_eq!(&buf, msg.as_bytes());
    }
}
