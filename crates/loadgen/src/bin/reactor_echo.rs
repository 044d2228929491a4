//! B11's "reactor alone" server: 64-byte echo on `vm_core::io::Reactor` with no
//! processes and no scheduler -- one thread polls, and the sink echoes and re-arms
//! each connection (active once) right inside the delivery. It measures the
//! reactor's own data path (readiness, framing, binaries, send queue) against
//! uvloop's, and so bounds from above what native processes can reach once phase 2
//! of issue 11 puts a scheduler between the event and the echo.
//!
//!     reactor_echo [--port N]     prints "READY <port> <pid>", serves until killed

use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use vm_core::io::{
    Accept, ActiveOpt, Addr, IoEvent, IoSink, ListenOpts, Reactor, SetOpts, SockName, SocketId,
};
use vm_core::Pid;

/// The pid standing for the acceptor; connections are owned by per-socket pids.
const ACCEPTOR: Pid = Pid::new(1, 0);

struct Echo {
    reactor: OnceLock<Weak<Reactor>>,
    listener: OnceLock<SocketId>,
    errors: Mutex<u64>,
}

impl Echo {
    fn adopt(&self, r: &Reactor, s: SocketId) {
        let owner = Pid::new(2 + (s.0 & 0x0fff_ffff) as u32, (s.0 >> 32) as u32);
        let ok = r.controlling_process(s, ACCEPTOR, owner).is_ok()
            && r.setopts(s, SetOpts::active(ActiveOpt::Once)).is_ok();
        if !ok {
            *self.errors.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let _ = r.close(s);
        }
    }

    /// Takes every waiting connection, then leaves one accept pending.
    fn accept_all(&self, r: &Reactor) {
        let Some(&l) = self.listener.get() else {
            return;
        };
        loop {
            match r.accept(l, ACCEPTOR) {
                Ok(Accept::Ready(s)) => self.adopt(r, s),
                Ok(Accept::Pending) => return,
                Err(e) => {
                    // emfile and friends: report and let the next edge retry.
                    eprintln!("reactor_echo: accept: {e}");
                    return;
                }
            }
        }
    }
}

impl IoSink for Echo {
    fn deliver(&self, to: Pid, event: IoEvent) -> bool {
        let Some(r) = self.reactor.get().and_then(Weak::upgrade) else {
            return false;
        };
        match event {
            IoEvent::Accepted { result: Ok(s), .. } => {
                self.adopt(&r, s);
                self.accept_all(&r);
            }
            IoEvent::Accepted { result: Err(e), .. } => {
                eprintln!("reactor_echo: accept: {e}");
                self.accept_all(&r);
            }
            IoEvent::Tcp { sock, data } => {
                if r.send(sock, to, data).is_err() {
                    let _ = r.close(sock);
                } else {
                    let _ = r.setopts(sock, SetOpts::active(ActiveOpt::Once));
                }
            }
            IoEvent::TcpClosed { sock } | IoEvent::TcpError { sock, .. } => {
                let _ = r.close(sock);
            }
            // A send above the watermark would be resumed here; 64-byte echoes never
            // reach it, and the next re-arm carries on either way.
            _ => {}
        }
        true
    }
}

fn main() -> ExitCode {
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|v| v.parse())) {
            ("--port", Some(Ok(p))) => port = p,
            _ => {
                eprintln!("usage: reactor_echo [--port N]");
                return ExitCode::from(2);
            }
        }
    }
    raise_nofile();
    let echo = Arc::new(Echo {
        reactor: OnceLock::new(),
        listener: OnceLock::new(),
        errors: Mutex::new(0),
    });
    let reactor = match Reactor::new(echo.clone()) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("reactor_echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = echo.reactor.set(Arc::downgrade(&reactor));
    let addr = Addr::Inet(([127, 0, 0, 1], port).into());
    let l = match reactor.listen(ACCEPTOR, &addr, ListenOpts::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("reactor_echo: listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = echo.listener.set(l);
    let Ok(SockName::Inet(bound)) = reactor.sockname(l) else {
        eprintln!("reactor_echo: no address for the listener");
        return ExitCode::FAILURE;
    };
    echo.accept_all(&reactor);
    println!("READY {} {}", bound.port(), std::process::id());
    loop {
        if let Err(e) = reactor.poll(None) {
            eprintln!("reactor_echo: poll: {e}");
            return ExitCode::FAILURE;
        }
    }
}

/// Soft RLIMIT_NOFILE up to the hard limit: 10,000 connections need it.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
