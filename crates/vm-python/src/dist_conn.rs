//! A distribution connection as a native process on the VM's I/O reactor.
//!
//! The driver (`vm_dist::node`) hands each established connection to the host as a
//! [`ConnIo`] ([`Host::run_connection`](vm_dist::node::Host::run_connection)); here
//! it becomes a native process that owns a *watched* socket of the reactor
//! ([`Reactor::watch`]): the reactor tells it the socket is ready (a message), the
//! process re-arms the notice and calls [`ConnIo::run`], which reads into the
//! connection's input buffer, dispatches every complete frame (the driver's own code,
//! as its reader thread runs it) and writes what a full socket left. So a connection
//! costs no thread: the scheduler that polls the reactor runs it, and the Python
//! processes its messages wake run on that scheduler's queues.
//!
//! Invariants:
//! - The process re-arms before `run` (no lost readiness, see `ConnIo`), and yields
//!   instead of waiting when `run` says `More` (bounded work per slice).
//! - Its slices run under `DeferWrites`: replies the dispatch makes (`is_auth`,
//!   UNLINK_ID_ACK, a quick rpc's answer) are written once, when the slice ends.
//! - Its end is the connection's: when the connection closes, `run` reports it down
//!   and the process exits; when the process ends any other way (the VM stops), the
//!   dropped `ConnIo` closes the connection and reports it down. Its socket handle in
//!   the reactor goes with it (owner exit).
//! - It is a system process: left out of `beamvm.processes()`, as watchers are.

use std::io;
use std::sync::Arc;

use vm_core::io::{Reactor, SocketId};
use vm_core::{Atom, Body, Cx, Fragment, Pid, Step, Term, VmRef};
use vm_dist::node::{ConnIo, DeferWrites, Readiness};

struct ConnProcess {
    io: ConnIo,
    reactor: Arc<Reactor>,
    /// The socket handle to watch, until the first slice registers it as `sock`.
    socket: Option<std::net::TcpStream>,
    sock: Option<SocketId>,
    me: Option<Pid>,
}

fn normal() -> Step {
    Step::Exit(Fragment::from_term(&Term::Atom(Atom::NORMAL)))
}

impl Body for ConnProcess {
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        let _defer = DeferWrites::begin();
        let sock = match self.sock {
            Some(s) => s,
            None => {
                let me = cx.self_pid();
                super::dist::system_add(me);
                self.me = Some(me);
                let Some(socket) = self.socket.take() else {
                    return normal();
                };
                match self.reactor.watch(me, socket) {
                    Ok(s) => {
                        self.sock = Some(s);
                        s
                    }
                    Err(e) => {
                        log::error!(
                            "distribution: cannot watch the connection to {}: {e}",
                            self.io.peer()
                        );
                        return normal();
                    }
                }
            }
        };
        // Readiness notices: what they announce is read from the socket below.
        while cx.recv().is_some() {}
        if self.reactor.rearm(sock).is_err() {
            // The reactor closed it (the VM stops): no notice will come again.
            self.io.run();
            return normal();
        }
        match self.io.run() {
            Readiness::Idle => cx.wait(None),
            Readiness::More => Step::Yield,
            Readiness::Closed => normal(),
        }
    }

    fn label(&self) -> String {
        format!("distribution connection to {}", self.io.peer())
    }
}

impl Drop for ConnProcess {
    fn drop(&mut self) {
        if let Some(s) = self.sock {
            let _ = self.reactor.close(s);
        }
        if let Some(me) = self.me {
            super::dist::system_remove(me);
        }
    }
}

/// Starts the process that runs `io` (see the module docs). On an error `io` is
/// dropped, which closed the connection and reported it down.
pub(crate) fn run_connection(vm: &VmRef, io: ConnIo) -> io::Result<()> {
    let socket = io.socket()?;
    let reactor = vm
        .io()
        .map_err(|e| io::Error::other(format!("the VM's reactor: {e}")))?;
    let body = ConnProcess {
        io,
        reactor,
        socket: Some(socket),
        sock: None,
        me: None,
    };
    vm.spawn(body)
        .map(|_| ())
        .map_err(|e| io::Error::other(format!("cannot start a connection process: {e}")))
}
