//! A small blocking node: threads and std::net around the sans-IO pieces, so Rust code
//! (tests, benchmarks, tools) can act as an Erlang node.
//!
//! [`Node::start`] registers with EPMD (starting the built-in server when nothing
//! answers on the EPMD port), listens for connections, and from then on accepts
//! peers and connects to them on first use (auto-connect, as Erlang does). Each
//! connection has a reader thread (bytes → [`Connection`] → dispatch) and a writer
//! thread (a queue of whole frames, coalesced into one write when several are
//! waiting, so per-pair order is the order of sends); one ticker thread runs every
//! connection's timer. [`Mailbox`]es give Rust code pids; the node answers
//! net_kernel's `is_auth` (so `net_adm:ping` gets `pong`), `rex` calls and
//! `erpc`'s spawn requests for functions exposed with [`Node::expose`].
//!
//! This driver is a stepping stone: the VM's reactor (issue 11) replaces the threads
//! and vm-core processes replace mailboxes (docs/distribution.md, integration plan).
//! Its invariants are the ones the VM will keep: a connection's failure (bad frame,
//! atom flood, tick timeout, peer killed) closes that connection only, turns its links
//! into `noconnection` exits and its monitors into `noconnection` DOWNs, and is logged;
//! the node and every other connection go on.

mod conn;
mod mailbox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use mailbox::{Delivery, Mailbox};

use crate::atoms::LocalAtoms;
use crate::connection::ConnConfig;
use crate::control::{Control, DistMessage, ProcRef};
use crate::cookie::{Cookie, CookieError};
use crate::epmd::{self, EpmdServer, Registration};
use crate::etf::EncodeError;
use crate::flags;
use crate::handshake::HandshakeError;
use crate::term::{Atom, Pid, Ref, Term};

/// How long connection setup may take (erl's net_setuptime default: 7 s).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(7);

/// First pid number handed to mailboxes; the ones below are the node's own services.
const FIRST_MAILBOX_ID: u32 = 16;
/// Pid number of this node's net_kernel and rex stand-ins.
const SYSTEM_ID: u32 = 1;

/// A function callable from other nodes with `rpc:call(Node, Module, Function, Args)`:
/// `Ok(result)` or `Err(reason)` (the call then exits with `{error, Reason}` on the
/// caller's side, as an Erlang function raising an error would).
pub type Exposed = Arc<dyn Fn(Vec<Term>) -> Result<Term, Term> + Send + Sync>;

/// Settings of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `name@host`.
    pub name: String,
    /// The cookie; `None` reads or creates `~/.erlang.cookie` as erl does.
    pub cookie: Option<Cookie>,
    /// A hidden node (not in other nodes' `nodes()`).
    pub hidden: bool,
    /// Address to listen on for distribution (`dist_listen`): `127.0.0.1` keeps the
    /// node to this host.
    pub listen: IpAddr,
    /// EPMD port (`ERL_EPMD_PORT` or 4369 by default).
    pub epmd_port: u16,
    /// Start the built-in EPMD when none answers.
    pub start_epmd: bool,
    /// Connection settings (net_ticktime, bounds).
    pub conn: ConnConfig,
}

impl NodeConfig {
    /// Defaults for `name` (`name@host`): cookie from the home directory, visible,
    /// listening on all interfaces as erl does, the usual EPMD port.
    pub fn new(name: &str) -> Self {
        NodeConfig {
            name: name.to_owned(),
            cookie: None,
            hidden: false,
            listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            epmd_port: epmd::epmd_port(),
            start_epmd: true,
            conn: ConnConfig::default(),
        }
    }
}

/// What went wrong in the driver.
#[derive(Debug)]
pub enum DistError {
    /// A socket operation failed.
    Io(io::Error),
    /// The handshake failed (wrong cookie, missing flags, refused...).
    Handshake(HandshakeError),
    /// The node name is not `name@host`.
    BadName(String),
    /// The cookie could not be read.
    Cookie(CookieError),
    /// EPMD on the peer's host does not know it.
    UnknownNode(String),
    /// A term has no external form.
    Encode(EncodeError),
    /// No reply in time.
    Timeout,
    /// The node is stopping.
    Stopped,
}

impl fmt::Display for DistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistError::Io(e) => write!(f, "{e}"),
            DistError::Handshake(e) => write!(f, "{e}"),
            DistError::BadName(n) => write!(f, "node name {n:?} is not name@host"),
            DistError::Cookie(e) => write!(f, "{e}"),
            DistError::UnknownNode(n) => write!(f, "node {n} is not registered with EPMD"),
            DistError::Encode(e) => write!(f, "{e}"),
            DistError::Timeout => write!(f, "timed out"),
            DistError::Stopped => write!(f, "the node is stopped"),
        }
    }
}

impl std::error::Error for DistError {}

impl From<io::Error> for DistError {
    fn from(e: io::Error) -> Self {
        DistError::Io(e)
    }
}

impl From<EncodeError> for DistError {
    fn from(e: EncodeError) -> Self {
        DistError::Encode(e)
    }
}

/// A change in the set of connected nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A connection is up.
    Up(String),
    /// A connection is gone, with why.
    Down(String, String),
}

#[derive(Default)]
struct Tables {
    conns: HashMap<String, Arc<conn::Conn>>,
    /// Outgoing handshakes in progress (for simultaneous connects).
    pending: HashSet<String>,
    mailboxes: HashMap<u32, Sender<Delivery>>,
    names: HashMap<String, u32>,
    /// (local mailbox id, remote pid).
    links: HashSet<(u32, Pid)>,
    /// Monitors we hold on remote processes: ref → (local id, remote, its node).
    monitors_out: HashMap<Ref, (u32, ProcRef, String)>,
    /// Monitors remote processes hold on our mailboxes: ref words → (local id, watcher).
    monitors_in: HashMap<Ref, (u32, Pid)>,
    node_watchers: Vec<Sender<NodeEvent>>,
    exposed: HashMap<(String, String), Exposed>,
}

pub(crate) struct Inner {
    name: Atom,
    creation: u32,
    flags: u64,
    cookie: Cookie,
    cfg: NodeConfig,
    port: u16,
    atoms: LocalAtoms,
    tables: Mutex<Tables>,
    next_id: AtomicU32,
    next_ref: AtomicU64,
    next_conn: AtomicU64,
    stopping: AtomicBool,
    /// Wakes the ticker at once when the node stops.
    stop_signal: (Mutex<bool>, std::sync::Condvar),
    registration: Mutex<Option<Arc<Registration>>>,
    epmd_server: Mutex<Option<EpmdServer>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("port", &self.inner.port)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the tables consistent before anything that can
    // panic; a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers with EPMD at `addr`, starting the built-in server there when nothing
/// answers (and `start` allows). Returns the registration and the server if we
/// started one.
fn register_with_epmd(
    epmd_port: u16,
    alive: &str,
    port: u16,
    hidden: bool,
    start: bool,
) -> Result<(Registration, Option<EpmdServer>), DistError> {
    let local = SocketAddr::from(([127, 0, 0, 1], epmd_port));
    let mut last_err = None;
    for _ in 0..3 {
        match epmd::register(local, alive, port, hidden) {
            Ok(r) => return Ok((r, None)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && start => {
                // Nobody on the port: serve it ourselves. Bound to all interfaces, as
                // erl's epmd is, so peers on other hosts can look us up.
                match EpmdServer::start(SocketAddr::from(([0, 0, 0, 0], epmd_port))) {
                    Ok(server) => {
                        let r = epmd::register(local, alive, port, hidden)?;
                        return Ok((r, Some(server)));
                    }
                    // Another node started one meanwhile: register with it.
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::other("EPMD registration failed"))
        .into())
}

impl Node {
    /// Starts a node: listens, registers with EPMD, accepts connections.
    pub fn start(cfg: NodeConfig) -> Result<Node, DistError> {
        let Some((alive, host)) = cfg.name.split_once('@') else {
            return Err(DistError::BadName(cfg.name.clone()));
        };
        // A node name is an atom: at most 255 characters.
        if alive.is_empty() || host.is_empty() || cfg.name.chars().count() > 255 {
            return Err(DistError::BadName(cfg.name.clone()));
        }
        let cookie = match &cfg.cookie {
            Some(c) => c.clone(),
            None => Cookie::from_home().map_err(DistError::Cookie)?,
        };
        let listener = TcpListener::bind(SocketAddr::new(cfg.listen, 0))?;
        let port = listener.local_addr()?.port();
        let (registration, server) =
            register_with_epmd(cfg.epmd_port, alive, port, cfg.hidden, cfg.start_epmd)?;
        let inner = Arc::new(Inner {
            name: Atom::new(&cfg.name),
            creation: registration.creation(),
            flags: flags::ours(cfg.hidden),
            cookie,
            port,
            atoms: LocalAtoms::default(),
            tables: Mutex::new(Tables::default()),
            next_id: AtomicU32::new(FIRST_MAILBOX_ID),
            next_ref: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stop_signal: (Mutex::new(false), std::sync::Condvar::new()),
            registration: Mutex::new(Some(Arc::new(registration))),
            epmd_server: Mutex::new(server),
            threads: Mutex::new(Vec::new()),
            cfg,
        });
        let node = Node { inner };
        node.spawn("dist-accept", {
            let inner = node.inner.clone();
            move || conn::accept_loop(inner, listener)
        })?;
        node.spawn("dist-ticker", {
            let inner = node.inner.clone();
            move || conn::ticker(inner)
        })?;
        node.spawn("dist-epmd-keeper", {
            let inner = node.inner.clone();
            move || epmd_keeper(inner)
        })?;
        Ok(node)
    }

    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let t = std::thread::Builder::new().name(name.into()).spawn(f)?;
        lock(&self.inner.threads).push(t);
        Ok(())
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// This node's creation.
    pub fn creation(&self) -> u32 {
        self.inner.creation
    }

    /// The distribution port.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Whether this node runs the built-in EPMD.
    pub fn runs_builtin_epmd(&self) -> bool {
        lock(&self.inner.epmd_server).is_some()
    }

    /// A new mailbox (a pid of this node).
    pub fn mailbox(&self) -> Mailbox {
        self.inner.new_mailbox()
    }

    /// Registers `mailbox` under `name` (replacing any earlier holder).
    pub fn register(&self, name: &str, mailbox: &Mailbox) {
        lock(&self.inner.tables)
            .names
            .insert(name.to_owned(), mailbox.pid.id);
    }

    /// Makes `module:function/arity` callable from other nodes by `rpc:call` (erpc's
    /// spawn request) and by the old `rex` server protocol.
    pub fn expose(&self, module: &str, function: &str, f: Exposed) {
        lock(&self.inner.tables)
            .exposed
            .insert((module.to_owned(), function.to_owned()), f);
    }

    /// Connected nodes.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.tables).conns.keys().cloned().collect();
        v.sort();
        v
    }

    /// Subscribes to node up/down events.
    pub fn monitor_nodes(&self) -> std::sync::mpsc::Receiver<NodeEvent> {
        let (tx, rx) = channel();
        lock(&self.inner.tables).node_watchers.push(tx);
        rx
    }

    /// Connects to `node` unless connected.
    pub fn connect(&self, node: &str) -> Result<(), DistError> {
        self.inner.connect(node).map(|_| ())
    }

    /// `net_adm:ping(Node)`: `true` for pong (always for this node itself).
    pub fn ping(&self, node: &str, timeout: Duration) -> bool {
        if node == self.name() {
            return true;
        }
        let mut mb = self.mailbox();
        let req = Term::tuple(vec![
            Term::atom("is_auth"),
            Term::Atom(self.inner.name.clone()),
        ]);
        matches!(mb.gen_call("net_kernel", node, req, timeout), Ok(Term::Atom(a)) if a.as_str() == "yes")
    }

    /// Closes the connection to `node`.
    pub fn disconnect(&self, node: &str) {
        let c = lock(&self.inner.tables).conns.get(node).cloned();
        if let Some(c) = c {
            c.close();
        }
    }

    /// Sends from `from` (a mailbox pid, or none) to `to`.
    pub fn send(&self, from: Option<&Pid>, to: &Pid, message: Term) -> Result<(), DistError> {
        self.inner.send(from, to, message)
    }

    /// Stops the node: closes connections, unregisters, stops the built-in EPMD if it
    /// runs one, joins the threads.
    pub fn stop(&self) {
        self.inner.stop();
        let threads: Vec<_> = lock(&self.inner.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn pid(&self, id: u32) -> Pid {
        Pid {
            node: self.name.clone(),
            id,
            serial: 0,
            creation: self.creation,
        }
    }

    fn system_pid(&self) -> Pid {
        self.pid(SYSTEM_ID)
    }

    fn is_local(&self, p: &Pid) -> bool {
        p.node == self.name && (p.creation == self.creation || p.creation == 0)
    }

    pub(crate) fn make_ref(&self) -> Ref {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        Ref {
            node: self.name.clone(),
            creation: self.creation,
            ids: vec![n as u32 & 0x3ffff, (n >> 18) as u32, (n >> 50) as u32],
        }
    }

    fn new_mailbox(self: &Arc<Self>) -> Mailbox {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        lock(&self.tables).mailboxes.insert(id, tx);
        Mailbox {
            pid: self.pid(id),
            rx,
            saved: VecDeque::new(),
            node: self.clone(),
        }
    }

    fn deliver(&self, id: u32, d: Delivery) -> bool {
        let tx = lock(&self.tables).mailboxes.get(&id).cloned();
        tx.is_some_and(|tx| tx.send(d).is_ok())
    }

    /// A mailbox was dropped: its links and monitors end as a process exit with
    /// reason `normal` would end them.
    fn mailbox_gone(self: &Arc<Self>, pid: &Pid) {
        let (links, watchers) = {
            let mut t = lock(&self.tables);
            t.mailboxes.remove(&pid.id);
            t.names.retain(|_, id| *id != pid.id);
            let links: Vec<Pid> = t
                .links
                .iter()
                .filter(|(l, _)| *l == pid.id)
                .map(|(_, r)| r.clone())
                .collect();
            t.links.retain(|(l, _)| *l != pid.id);
            let mut watchers = Vec::new();
            t.monitors_in.retain(|r, (l, w)| {
                if *l == pid.id {
                    watchers.push((r.clone(), w.clone()));
                    false
                } else {
                    true
                }
            });
            t.monitors_out.retain(|_, (l, _, _)| *l != pid.id);
            (links, watchers)
        };
        for remote in links {
            let _ = self.send_control(
                remote.node.as_str(),
                Control::Exit {
                    from: pid.clone(),
                    to: remote.clone(),
                    reason: Term::atom("normal"),
                },
            );
        }
        for (reference, watcher) in watchers {
            let _ = self.send_control(
                watcher.node.as_str(),
                Control::MonitorPExit {
                    from: ProcRef::Pid(pid.clone()),
                    to: watcher.clone(),
                    reference,
                    reason: Term::atom("normal"),
                },
            );
        }
    }

    /// The connection to `node`, set up on first use.
    fn connect(self: &Arc<Self>, node: &str) -> Result<Arc<conn::Conn>, DistError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(DistError::Stopped);
        }
        if node == self.name.as_str() {
            // Never a connection to ourselves (callers deliver locally).
            return Err(DistError::BadName(node.to_owned()));
        }
        if let Some(c) = lock(&self.tables).conns.get(node) {
            return Ok(c.clone());
        }
        let result = conn::connect(self, node);
        match result {
            Ok(c) => Ok(c),
            Err(e) => {
                // Lost a simultaneous connect: the peer's own attempt is the one.
                let deadline = Instant::now() + SETUP_TIMEOUT;
                while Instant::now() < deadline {
                    if let Some(c) = lock(&self.tables).conns.get(node) {
                        return Ok(c.clone());
                    }
                    if !matches!(&e, DistError::Handshake(HandshakeError::Refused(s)) if s == "nok")
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e)
            }
        }
    }

    fn send_control(self: &Arc<Self>, node: &str, control: Control) -> Result<(), DistError> {
        let c = self.connect(node)?;
        c.send(&DistMessage::from(control))
    }

    fn send(
        self: &Arc<Self>,
        from: Option<&Pid>,
        to: &Pid,
        message: Term,
    ) -> Result<(), DistError> {
        if self.is_local(to) {
            self.deliver(
                to.id,
                Delivery::Message {
                    from: from.cloned(),
                    message,
                },
            );
            return Ok(());
        }
        let c = self.connect(to.node.as_str())?;
        let control = match from {
            Some(f) if c.peer.flags & flags::SEND_SENDER != 0 => Control::SendSender {
                from: f.clone(),
                to: to.clone(),
                message,
            },
            _ => Control::Send {
                to: to.clone(),
                message,
            },
        };
        c.send(&control.into())
    }

    fn reg_send(
        self: &Arc<Self>,
        from: &Pid,
        name: &str,
        node: &str,
        message: Term,
    ) -> Result<(), DistError> {
        if node == self.name.as_str() {
            let id = lock(&self.tables).names.get(name).copied();
            if let Some(id) = id {
                self.deliver(
                    id,
                    Delivery::Message {
                        from: Some(from.clone()),
                        message,
                    },
                );
            }
            return Ok(());
        }
        self.send_control(
            node,
            Control::RegSend {
                from: from.clone(),
                to_name: Atom::new(name),
                message,
            },
        )
    }

    fn link(self: &Arc<Self>, from: &Pid, to: &Pid) -> Result<(), DistError> {
        lock(&self.tables).links.insert((from.id, to.clone()));
        self.send_control(
            to.node.as_str(),
            Control::Link {
                from: from.clone(),
                to: to.clone(),
            },
        )
    }

    fn monitor(self: &Arc<Self>, from: &Pid, to: &Pid) -> Result<Ref, DistError> {
        let r = self.make_ref();
        lock(&self.tables).monitors_out.insert(
            r.clone(),
            (
                from.id,
                ProcRef::Pid(to.clone()),
                to.node.as_str().to_owned(),
            ),
        );
        self.send_control(
            to.node.as_str(),
            Control::MonitorP {
                from: from.clone(),
                to: ProcRef::Pid(to.clone()),
                reference: r.clone(),
            },
        )?;
        Ok(r)
    }

    fn exit2(self: &Arc<Self>, from: &Pid, to: &Pid, reason: Term) -> Result<(), DistError> {
        self.send_control(
            to.node.as_str(),
            Control::Exit2 {
                from: from.clone(),
                to: to.clone(),
                reason,
            },
        )
    }

    /// Sleeps up to `d`, returning early (with `true`) once the node is stopping.
    fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let guard = lock(&self.stop_signal.0);
        let (guard, _) = self
            .stop_signal
            .1
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    fn notify(&self, ev: NodeEvent) {
        let mut t = lock(&self.tables);
        t.node_watchers.retain(|w| w.send(ev.clone()).is_ok());
    }

    /// A connection ended: links give `noconnection` exits, monitors DOWNs, and the
    /// watchers hear of it.
    fn conn_down(&self, c: &conn::Conn, why: &str) {
        let node = c.peer.name.clone();
        let (exits, downs) = {
            let mut t = lock(&self.tables);
            match t.conns.get(&node) {
                Some(cur) if cur.id == c.id => {
                    t.conns.remove(&node);
                }
                _ => return,
            }
            let mut exits = Vec::new();
            t.links.retain(|(l, r)| {
                if r.node.as_str() == node {
                    exits.push((*l, r.clone()));
                    false
                } else {
                    true
                }
            });
            let mut downs = Vec::new();
            t.monitors_out.retain(|r, (l, p, n)| {
                if *n == node {
                    downs.push((*l, r.clone(), p.clone()));
                    false
                } else {
                    true
                }
            });
            t.monitors_in.retain(|_, (_, w)| w.node.as_str() != node);
            (exits, downs)
        };
        let noconnection = Term::atom("noconnection");
        for (l, r) in exits {
            self.deliver(
                l,
                Delivery::Exit {
                    from: r,
                    reason: noconnection.clone(),
                    linked: true,
                },
            );
        }
        for (l, reference, p) in downs {
            self.deliver(
                l,
                Delivery::Down {
                    reference,
                    process: p,
                    reason: noconnection.clone(),
                },
            );
        }
        log::info!("{}: connection to {node} closed: {why}", self.name);
        self.notify(NodeEvent::Down(node, why.to_owned()));
    }

    fn stop(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        *lock(&self.stop_signal.0) = true;
        self.stop_signal.1.notify_all();
        if let Some(r) = lock(&self.registration).take() {
            r.close();
        }
        // Wake the acceptor.
        let wake = if self.cfg.listen.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.cfg.listen
        };
        let _ =
            TcpStream::connect_timeout(&SocketAddr::new(wake, self.port), Duration::from_secs(1));
        let conns: Vec<_> = lock(&self.tables).conns.values().cloned().collect();
        for c in conns {
            c.close();
        }
        if let Some(mut s) = lock(&self.epmd_server).take() {
            s.stop();
        }
    }
}

/// Keeps the node registered: when the EPMD it registered with goes away (the process
/// running the built-in one exited, or someone restarted epmd), registers again,
/// starting the built-in EPMD when nothing answers. Existing connections are not
/// affected; only look-ups of this node failed meanwhile.
fn epmd_keeper(inner: Arc<Inner>) {
    let Some((alive, _)) = inner.cfg.name.split_once('@') else {
        return;
    };
    let alive = alive.to_owned();
    loop {
        let reg = lock(&inner.registration).clone();
        let Some(reg) = reg else { return };
        reg.wait_closed();
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        log::warn!("{}: EPMD registration lost; registering again", inner.name);
        let mut delay = Duration::from_millis(50);
        loop {
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            // The old server (if ours) is gone or stopping; drop it first.
            lock(&inner.epmd_server).take();
            match register_with_epmd(
                inner.cfg.epmd_port,
                &alive,
                inner.port,
                inner.cfg.hidden,
                inner.cfg.start_epmd,
            ) {
                Ok((r, server)) => {
                    *lock(&inner.registration) = Some(Arc::new(r));
                    *lock(&inner.epmd_server) = server;
                    break;
                }
                Err(e) => {
                    log::warn!("{}: EPMD registration failed: {e}", inner.name);
                    if inner.sleep_unless_stopped(delay) {
                        return;
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Resolves `host` for connecting to a peer's EPMD and distribution port.
fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve {host}")))
}
