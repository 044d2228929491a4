//! A TCP echo server of native (Rust) processes on vm-core's reactor, shared by the
//! `echo_server` example (B11's beamvm-native server) and the workloads runner's ECHO
//! workload: one acceptor process, one process per connection in `{active, once}`,
//! exactly the shape of the Python and Erlang servers it is compared with.

#![allow(dead_code)] // each example uses part of it

use std::net::SocketAddr;
use std::sync::mpsc;

use vm_core::io::{
    parse_message, Accept, ActiveOpt, Addr, IoMessage, ListenOpts, SendStatus, SetOpts, SocketId,
};
use vm_core::term::Binary;
use vm_core::{Atom, Cx, Fragment, Step, VmRef};

fn normal() -> Step {
    Step::Exit(Fragment::immediate(vm_core::Word::atom(Atom::new(
        "normal",
    ))))
}

/// One connection's process: echo what arrives, re-arm `active once` after each frame.
pub fn connection(sock: SocketId) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    let mut waiting_send = false;
    move |cx: &mut Cx<'_>| {
        let Ok(r) = cx.io() else { return normal() };
        let me = cx.self_pid();
        while let Some(m) = cx.recv() {
            match parse_message(m.view()) {
                Some(IoMessage::Tcp(s, data)) => {
                    match r.send(s, me, Binary::new(data)) {
                        Ok(SendStatus::Sent) => {}
                        Ok(SendStatus::Suspend) => waiting_send = true,
                        Err(_) => return normal(),
                    }
                    if !waiting_send && r.setopts(s, SetOpts::active(ActiveOpt::Once)).is_err() {
                        return normal();
                    }
                }
                Some(IoMessage::SendReady(s, Ok(()))) => {
                    waiting_send = false;
                    if r.setopts(s, SetOpts::active(ActiveOpt::Once)).is_err() {
                        return normal();
                    }
                }
                Some(IoMessage::TcpClosed(_))
                | Some(IoMessage::TcpError(..))
                | Some(IoMessage::SendReady(_, Err(_))) => {
                    let _ = r.close(sock);
                    return normal();
                }
                _ => {}
            }
            if cx.should_yield() {
                return Step::Yield;
            }
        }
        Step::Wait
    }
}

/// The acceptor: listens on `addr` (reports the port on `ready`), accepts forever and
/// hands each connection to a new [`connection`] process.
pub fn acceptor(
    addr: SocketAddr,
    ready: mpsc::Sender<u16>,
) -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    let mut ls: Option<SocketId> = None;
    move |cx: &mut Cx<'_>| {
        let Ok(r) = cx.io() else { return normal() };
        let me = cx.self_pid();
        let l = match ls {
            Some(l) => l,
            None => {
                let opts = ListenOpts {
                    backlog: 4096,
                    ..ListenOpts::default()
                };
                let Ok(l) = r.listen(me, &Addr::Inet(addr), opts) else {
                    let _ = ready.send(0);
                    return normal();
                };
                let port = match r.sockname(l) {
                    Ok(vm_core::io::SockName::Inet(a)) => a.port(),
                    _ => 0,
                };
                let _ = ready.send(port);
                ls = Some(l);
                l
            }
        };
        // Completions of a pending accept.
        let mut pending = false;
        while let Some(m) = cx.recv() {
            if let Some(IoMessage::Accepted(_, Ok(s))) = parse_message(m.view()) {
                hand_over(cx, s);
            }
        }
        loop {
            match r.accept(l, me) {
                Ok(Accept::Ready(s)) => hand_over(cx, s),
                Ok(Accept::Pending) => {
                    pending = true;
                    break;
                }
                // emfile and the like: wait for the next connection attempt.
                Err(_) => break,
            }
            if cx.should_yield() {
                return Step::Yield;
            }
        }
        let _ = pending;
        Step::Wait
    }
}

fn hand_over(cx: &mut Cx<'_>, s: SocketId) {
    let Ok(r) = cx.io() else { return };
    let me = cx.self_pid();
    match cx.spawn(connection(s)) {
        Ok(pid) => {
            if r.controlling_process(s, me, pid).is_ok() {
                let _ = r.setopts(s, SetOpts::active(ActiveOpt::Once));
            } else {
                let _ = r.close(s);
            }
        }
        Err(_) => {
            let _ = r.close(s);
        }
    }
}

/// Starts the server on `vm`; returns its port.
pub fn start(vm: &VmRef, addr: SocketAddr) -> u16 {
    let (tx, rx) = mpsc::channel();
    vm.spawn(acceptor(addr, tx)).expect("acceptor");
    rx.recv().unwrap_or(0)
}

/// One CPU-bound native process that never waits (B11's hog variant).
pub fn hog() -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    let mut x = 0u64;
    move |cx: &mut Cx<'_>| loop {
        for _ in 0..10 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        cx.bump(1);
        if cx.should_yield() {
            return Step::Yield;
        }
    }
}
