//! With the atom table full (its own test binary: the table is process-global), the
//! I/O reactor still works: its messages (`{'$tcp', S, connect, ...}`, the socket
//! terms, error reasons) are built from predefined atoms only, so a TCP round trip
//! between two processes, and a refused connect, complete; the VM stays alive and
//! shuts down.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use vm_core::io::{parse_message, Accept, Addr, IoMessage, ListenOpts, Recv, SockName, SocketId};
use vm_core::term::{atom_count, Atom, Binary, TermError, MAX_ATOMS};
use vm_core::{Cx, Step, Term};

const LONG: Duration = Duration::from_secs(30);

fn local(port: u16) -> Addr {
    Addr::Inet(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn done() -> Step {
    Step::Exit(term(Term::Atom(Atom::NORMAL)))
}

/// Listens, reports its port, accepts one connection, echoes what one `recv` returns
/// and reports what it echoed.
fn server(
    port_tx: mpsc::Sender<u16>,
    report: mpsc::Sender<Vec<u8>>,
) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    let mut listener = None;
    let mut conn: Option<SocketId> = None;
    let mut asked = false;
    move |cx: &mut Cx<'_>| {
        let r = cx.io().expect("io");
        let me = cx.self_pid();
        let l = *listener.get_or_insert_with(|| {
            let l = r
                .listen(me, &local(0), ListenOpts::default())
                .expect("listen");
            let Ok(SockName::Inet(a)) = r.sockname(l) else {
                panic!("sockname")
            };
            port_tx.send(a.port()).expect("port");
            if let Accept::Ready(s) = r.accept(l, me).expect("accept") {
                conn = Some(s);
            }
            l
        });
        let mut data = None;
        while let Some(m) = cx.recv() {
            match parse_message(m.view()) {
                Some(IoMessage::Accepted(s, Ok(c))) if s == l => conn = Some(c),
                Some(IoMessage::Received(_, Ok(d))) => data = Some(d),
                other => panic!("server got {other:?}"),
            }
        }
        let Some(c) = conn else { return Step::Wait };
        if data.is_none() && !asked {
            asked = true;
            if let Recv::Data(d) = r.recv(c, me, 0).expect("recv") {
                data = Some(d.as_slice().to_vec());
            }
        }
        let Some(d) = data else { return Step::Wait };
        r.send(c, me, Binary::new(d.clone())).expect("send");
        report.send(d).expect("report");
        done()
    }
}

/// Connects to `port`, sends `ping`, reports the answer of one `recv` (or the
/// connect's error reason, `Err`).
fn client(
    port: u16,
    report: mpsc::Sender<Result<Vec<u8>, String>>,
) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    let mut sock = None;
    let mut asked = false;
    move |cx: &mut Cx<'_>| {
        let r = cx.io().expect("io");
        let me = cx.self_pid();
        let s = *sock.get_or_insert_with(|| {
            r.connect(me, &local(port), Default::default())
                .expect("connect")
        });
        let mut answer = None;
        while let Some(m) = cx.recv() {
            match parse_message(m.view()) {
                Some(IoMessage::Connected(_, Ok(()))) => {
                    r.send(s, me, Binary::new(b"ping".to_vec())).expect("send");
                    asked = true;
                    if let Recv::Data(d) = r.recv(s, me, 0).expect("recv") {
                        answer = Some(d.as_slice().to_vec());
                    }
                }
                Some(IoMessage::Connected(_, Err(reason))) => {
                    report.send(Err(reason)).expect("report");
                    return done();
                }
                Some(IoMessage::Received(_, Ok(d))) if asked => answer = Some(d),
                other => panic!("client got {other:?}"),
            }
        }
        match answer {
            Some(d) => {
                report.send(Ok(d)).expect("report");
                done()
            }
            None => Step::Wait,
        }
    }
}

#[test]
fn a_full_atom_table_does_not_stop_the_io_reactor() {
    let mut i = 0u64;
    while atom_count() < MAX_ATOMS {
        Atom::try_new(&format!("filler_{i}")).expect("room left");
        i += 1;
    }
    assert_eq!(Atom::try_new("one_more"), Err(TermError::AtomTableFull));
    let mut vm = vm(2);

    // A round trip: listen, accept, connect, send, recv, each completion a message.
    let (ptx, prx) = mpsc::channel();
    let (stx, srx) = mpsc::channel();
    vm.spawn(server(ptx, stx)).expect("spawn server");
    let port = prx.recv_timeout(LONG).expect("port");
    let (ctx, crx) = mpsc::channel();
    vm.spawn(client(port, ctx.clone())).expect("spawn client");
    assert_eq!(srx.recv_timeout(LONG).expect("server"), b"ping");
    assert_eq!(
        crx.recv_timeout(LONG).expect("client"),
        Ok(b"ping".to_vec())
    );

    // A refused connect: its reason is an atom too. (A port just freed; should
    // another program take it meanwhile, the connect succeeds and says nothing here.)
    let free = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    vm.spawn(client(free, ctx)).expect("spawn client");
    if let Ok(Err(reason)) = crx.recv_timeout(LONG) {
        assert_eq!(reason, "econnrefused");
    }

    // Still running, and it stops.
    let (tx, rx) = mpsc::channel();
    let sink = vm.spawn(forwarder(tx)).expect("spawn");
    vm.send(sink, int(7));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(7));
    assert_eq!(Term::try_atom("yet_another"), Err(TermError::AtomTableFull));
    assert_eq!(vm.shutdown_within(Some(Duration::from_secs(5))), 0);
}
