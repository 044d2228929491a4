//! A built-in EPMD, protocol-compatible with erl's, for machines without one.
//!
//! A pip-only install has no `epmd` binary; a beamvm node that finds nothing on the
//! EPMD port starts this server in its own process so that other beamvm nodes, and an
//! `erl` started later (which connects to whatever answers on the port), find each
//! other. It implements ALIVE2_REQ (ALIVE2_X_RESP toward version-6 nodes, ALIVE2_RESP
//! otherwise), PORT_PLEASE2_REQ, NAMES_REQ (the format `epmd -names` prints),
//! DUMP_REQ, and KILL_REQ (answered `NO` while nodes are registered, as erl's epmd
//! does); STOP_REQ is refused.
//!
//! Lifetime: erl's epmd is a daemon that outlives every node. This one lives in the
//! process that started it and ends with it ([`EpmdServer::stop`], or process exit).
//! Every node registered with it then sees its registration socket close; beamvm
//! nodes re-register (the first to notice starts a new built-in EPMD; see
//! `node::Node`), erl nodes stay reachable through their open connections but are no
//! longer listed. docs/distribution.md says when to prefer the system `epmd -daemon`.
//!
//! Invariants: a name is registered at most once, and exactly while the socket that
//! registered it is open; each client connection has its own thread (bounded by
//! [`MAX_CLIENTS`]) and a request timeout, so a silent client cannot wedge the server.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::proto::*;

/// Most client connections at once (registered nodes included). Each is a thread in
/// this phase; a node needs one, a look-up holds one for a moment.
pub const MAX_CLIENTS: usize = 1024;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Registered {
    entry: NodeEntry,
    /// The registering socket, to close it when the server stops.
    stream: TcpStream,
    /// Distinguishes this registration from a later one of the same name.
    serial: u64,
}

struct Shared {
    nodes: Mutex<HashMap<String, Registered>>,
    creation: Mutex<u32>,
    serial: Mutex<u64>,
    stopping: AtomicBool,
    clients: AtomicUsize,
    port: u16,
}

impl Shared {
    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registered>> {
        // Mutations are single inserts/removes: a poisoned map is still consistent.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_creation(&self) -> u32 {
        let mut c = self.creation.lock().unwrap_or_else(|e| e.into_inner());
        *c = c.wrapping_add(1);
        if *c == 0 {
            *c = 1;
        }
        *c
    }
}

/// A running built-in EPMD.
pub struct EpmdServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EpmdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpmdServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EpmdServer {
    /// Binds `addr` (port 0 picks a free one) and serves until stopped. Fails with
    /// `AddrInUse` when an EPMD already runs there.
    pub fn start(addr: SocketAddr) -> io::Result<EpmdServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        // New creations start at a random point, as erl's epmd does, so that a node
        // restarted under another EPMD is unlikely to reuse its old creation.
        let start = crate::random::u64() as u32;
        let shared = Arc::new(Shared {
            nodes: Mutex::new(HashMap::new()),
            creation: Mutex::new(start),
            serial: Mutex::new(0),
            stopping: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            port: addr.port(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("epmd-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        log::info!("built-in EPMD listening on {addr}");
        Ok(EpmdServer {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The names registered now, with their ports.
    pub fn names(&self) -> Vec<(String, u16)> {
        let mut v: Vec<_> = self
            .shared
            .nodes()
            .values()
            .map(|r| (r.entry.name.clone(), r.entry.port))
            .collect();
        v.sort();
        v
    }

    /// Whether the server has stopped (by [`EpmdServer::stop`] or an accepted KILL).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    /// Stops serving and closes every registration (their nodes see EOF).
    pub fn stop(&mut self) {
        stop_shared(&self.shared, self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EpmdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stop_shared(shared: &Shared, addr: SocketAddr) {
    if shared.stopping.swap(true, Ordering::AcqRel) {
        return;
    }
    // Wake the acceptor with a connection of our own.
    let wake = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    for r in shared.nodes().values() {
        let _ = r.stream.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = conn else { continue };
        if shared.clients.load(Ordering::Acquire) >= MAX_CLIENTS {
            log::warn!("built-in EPMD: {MAX_CLIENTS} clients already, refusing one");
            continue;
        }
        shared.clients.fetch_add(1, Ordering::AcqRel);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("epmd-client".into())
            .spawn(move || {
                let _ = serve(stream, &s);
                s.clients.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.clients.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve(mut s: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_nodelay(true)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)?;
    let Some((&code, rest)) = body.split_first() else {
        return Ok(());
    };
    match code {
        ALIVE2_REQ => alive(s, rest, shared),
        PORT_PLEASE2_REQ => {
            let name = String::from_utf8_lossy(rest);
            let reply = match shared.nodes().get(name.as_ref()) {
                Some(r) => {
                    let mut v = vec![PORT2_RESP, 0];
                    r.entry.encode_fields(&mut v);
                    v
                }
                None => vec![PORT2_RESP, 1],
            };
            s.write_all(&reply)
        }
        NAMES_REQ | DUMP_REQ => {
            let mut reply = u32::from(shared.port).to_be_bytes().to_vec();
            let mut entries: Vec<(String, u16)> = shared
                .nodes()
                .values()
                .map(|r| (r.entry.name.clone(), r.entry.port))
                .collect();
            entries.sort();
            for (name, port) in entries {
                let line = if code == NAMES_REQ {
                    format!("name {name} at port {port}\n")
                } else {
                    format!("active name     <{name}> at port {port}\n")
                };
                reply.extend_from_slice(line.as_bytes());
            }
            s.write_all(&reply)
        }
        KILL_REQ => {
            if shared.nodes().is_empty() {
                s.write_all(b"OK")?;
                let addr = s.local_addr()?;
                stop_shared(shared, addr);
                Ok(())
            } else {
                s.write_all(b"NO")
            }
        }
        // STOP_REQ and anything unknown: refused by closing, as erl's epmd does
        // without -relaxed_command_check.
        _ => Ok(()),
    }
}

fn alive(mut s: TcpStream, rest: &[u8], shared: &Arc<Shared>) -> io::Result<()> {
    let Some(entry) = NodeEntry::decode_fields(rest) else {
        return s.write_all(&[ALIVE2_RESP, 1, 0, 0]);
    };
    let extended = entry.highest_version >= 6;
    let name = entry.name.clone();
    let serial = {
        let mut n = shared.serial.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        *n
    };
    let accepted = {
        let mut nodes = shared.nodes();
        if nodes.contains_key(&name) || name.is_empty() {
            false
        } else {
            nodes.insert(
                name.clone(),
                Registered {
                    entry,
                    stream: s.try_clone()?,
                    serial,
                },
            );
            true
        }
    };
    if !accepted {
        let reply: &[u8] = if extended {
            &[ALIVE2_X_RESP, 1, 0, 0, 0, 0]
        } else {
            &[ALIVE2_RESP, 1, 0, 0]
        };
        return s.write_all(reply);
    }
    let creation = shared.next_creation();
    let reply = if extended {
        let mut v = vec![ALIVE2_X_RESP, 0];
        v.extend_from_slice(&creation.to_be_bytes());
        v
    } else {
        // Old nodes take creations 1..=3.
        let mut v = vec![ALIVE2_RESP, 0];
        v.extend_from_slice(&((creation % 3 + 1) as u16).to_be_bytes());
        v
    };
    let result = s.write_all(&reply);
    if result.is_ok() {
        log::debug!("built-in EPMD: registered {name}");
        // The node stays registered while this socket is open.
        let _ = s.set_read_timeout(None);
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || shared.stopping.load(Ordering::Acquire) {
                break;
            }
        }
    }
    let mut nodes = shared.nodes();
    if nodes.get(&name).is_some_and(|r| r.serial == serial) {
        nodes.remove(&name);
        log::debug!("built-in EPMD: unregistered {name}");
    }
    result
}
