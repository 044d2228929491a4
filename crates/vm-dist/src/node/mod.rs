//! A small blocking node: threads and std::net around the sans-IO pieces, so Rust code
//! (tests, benchmarks, tools) can act as an Erlang node.
//!
//! [`Node::start`] registers with EPMD (starting the built-in server when nothing
//! answers on the EPMD port), listens for connections, and from then on accepts
//! peers and connects to them on first use (auto-connect, as Erlang does). Each
//! connection has a reader thread (bytes → [`Connection`] → dispatch) and an output
//! buffer of whole frames that one thread at a time writes, in order (per-pair order is
//! the order of sends): the sender itself while the batch is small (no thread hand-off
//! on a round trip), a writer thread for big batches; frames that pile up meanwhile
//! coalesce into one write, and past a busy limit a sender waits (boundedly) for the
//! writer. A Python slice defers its writes to its end (`DeferWrites`). With
//! [`NodeConfig::background_connect`], connections are set up on threads of their own
//! while what is sent to the node queues in order. One ticker thread runs every
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
mod conn_io;
mod mailbox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use conn::DeferWrites;
pub use conn_io::{ConnIo, Readiness, READS_PER_RUN};
pub use mailbox::{Delivery, Mailbox};

use crate::atoms::LocalAtoms;
use crate::connection::ConnConfig;
use crate::control::{Control, ProcRef};
use crate::cookie::{Cookie, CookieError};
use crate::epmd::{self, EpmdServer, Registration};
use crate::etf::EncodeError;
use crate::flags;
use crate::handshake::HandshakeError;
use crate::term::{Atom, Pid, Ref, Term};

/// Most background connection setups at once (one thread each); see
/// [`NodeConfig::background_connect`].
const MAX_CONNECTING: usize = 64;

/// How long connection setup may take (erl's net_setuptime default: 7 s).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(7);

/// First pid number handed to mailboxes; the ones below are the node's own services.
/// High in the 28-bit pid space, so that a [`Host`]'s processes (whose numbers are
/// process-table slots, allocated from 0 up) never meet them in practice.
const FIRST_MAILBOX_ID: u32 = 0x0FF0_0010;
/// Pid number of this node's net_kernel and rex stand-ins.
const SYSTEM_ID: u32 = 0x0FF0_0001;

/// The processes of a VM that embeds the driver (the Python binding's glue): the
/// driver hands it whatever arrives for a pid of this node that is not a [`Mailbox`]
/// or a name it does not know, and the host tells the driver when one of its processes
/// with links or monitors across the wire ends ([`Node::local_exited`]).
pub trait Host: Send + Sync + 'static {
    /// Delivers `d` to the local process `to`; `false` if no such process is alive.
    fn deliver(&self, to: &Pid, d: Delivery) -> bool;
    /// The local process registered as `name`.
    fn whereis(&self, name: &str) -> Option<Pid>;
    /// A remote process linked to or monitors `pid`: the host must call
    /// [`Node::local_exited`] when `pid` ends. `false` if it is not alive (the
    /// driver then answers `noproc`).
    fn watch(&self, pid: &Pid) -> bool;

    /// Delivers `message`, which a peer sent through `alias` (ALIAS_SEND, OTP 24), to
    /// the local process whose alias it is, if the alias is still active there; `false`
    /// if it is not (the message is dropped, as Erlang drops one to an inactive alias).
    /// `from` is the sender, as SEND_SENDER's. The default drops: a host that makes no
    /// aliases (and the standalone driver, whose mailboxes make none).
    fn deliver_alias(&self, from: &Pid, alias: &Ref, message: Term) -> bool {
        let _ = (from, alias, message);
        false
    }

    /// Whether the host runs established connections itself ([`Host::run_connection`])
    /// instead of the driver's reader and writer threads; asked once per connection.
    fn runs_connections(&self) -> bool {
        false
    }

    /// Runs an established connection (only when [`Host::runs_connections`]): poll
    /// [`ConnIo::socket`] for readiness and call [`ConnIo::run`] on it, re-arming
    /// first, until it says `Closed`. An `Err` means the host could not take it; the
    /// `ConnIo` was dropped with it, which closed the connection and reported it down.
    fn run_connection(&self, io: ConnIo) -> std::io::Result<()> {
        drop(io);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this host does not run connections",
        ))
    }
}

/// A function callable from other nodes with `rpc:call(Node, Module, Function, Args)`:
/// `Ok(result)` or `Err(reason)` (the call then exits with `{error, Reason}` on the
/// caller's side, as an Erlang function raising an error would).
pub type Exposed = Arc<dyn Fn(Vec<Term>) -> Result<Term, Term> + Send + Sync>;

/// A function callable from other nodes that answers later, from any thread: it gets
/// the arguments and the [`Reply`] to complete. The connection's reader thread only
/// starts it, so a slow function stalls neither the connection nor other calls.
pub type ExposedAsync = Arc<dyn Fn(Vec<Term>, Reply) + Send + Sync>;

/// The pending answer of one call of an [`ExposedAsync`] function. Dropped without an
/// answer (the process running the call was killed, say), it answers
/// `Err(killed)`: the caller never waits forever.
pub struct Reply {
    send: Option<Answer>,
    started: Option<Started>,
}

/// Where a [`Reply`]'s result goes.
type Answer = Box<dyn FnOnce(Result<Term, Term>) + Send>;

/// What a [`Reply`] owes the caller once the call runs (see [`Reply::started`]).
type Started = Box<dyn FnOnce() + Send>;

impl Reply {
    /// A reply that hands the result to `f`.
    pub fn new(f: impl FnOnce(Result<Term, Term>) + Send + 'static) -> Self {
        Reply {
            send: Some(Box::new(f)),
            started: None,
        }
    }

    /// A reply that also owes the caller `started` once the call runs: the driver
    /// sends a remote spawn's SPAWN_REPLY this way, so that a call answered within its
    /// first slice has both frames written at once.
    pub(crate) fn with_start(
        f: impl FnOnce(Result<Term, Term>) + Send + 'static,
        started: impl FnOnce() + Send + 'static,
    ) -> Self {
        Reply {
            send: Some(Box::new(f)),
            started: Some(Box::new(started)),
        }
    }

    /// The call began running (the host calls this at the start of the process that
    /// runs it): what is owed then goes out now. Answering implies it, first.
    pub fn started(&mut self) {
        if let Some(f) = self.started.take() {
            f();
        }
    }

    /// Answers the call.
    pub fn send(mut self, result: Result<Term, Term>) {
        self.started();
        if let Some(f) = self.send.take() {
            f(result);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.started();
        if let Some(f) = self.send.take() {
            f(Err(Term::atom("killed")));
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("answered", &self.send.is_none())
            .finish()
    }
}

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
    /// Set connections up on a thread of their own: a send, link, monitor or exit
    /// to a node not yet connected is queued (in order) while the connection comes
    /// up, and the caller returns at once, as BEAM queues on a pending connection.
    /// Off, the caller sets the connection up itself (and sees its error). A VM
    /// embedding the driver turns it on, so no scheduler thread waits on a handshake.
    pub background_connect: bool,
    /// Atoms all peers together may create in this node's table (each connection also
    /// within its own `conn.atom_budget`): reconnecting does not renew it. OTP's whole
    /// table by default; a node embedded in a VM whose own code needs atoms too gives
    /// peers a share of it.
    pub peer_atoms: usize,
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
            background_connect: false,
            peer_atoms: crate::atoms::DEFAULT_ATOM_TABLE_SIZE,
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
    /// (local pid, remote pid).
    links: HashSet<(Pid, Pid)>,
    /// Monitors we hold on remote processes: ref → (local pid, remote, its node).
    monitors_out: HashMap<Ref, (Pid, ProcRef, String)>,
    /// Monitors remote processes hold on our processes: ref → (local pid, watcher, the
    /// process as the watcher named it: a monitor of a registered name is owed a
    /// MONITOR_P_EXIT from that name, so erl's DOWN says `{Name, Node}`).
    monitors_in: HashMap<Ref, (Pid, Pid, ProcRef)>,
    node_watchers: Vec<Sender<NodeEvent>>,
    exposed: HashMap<(String, String), ExposedAsync>,
    /// What waits for a connection being set up in the background, by node.
    outbox: HashMap<String, Outbox>,
}

/// Called when a background connection attempt fails.
pub type OnFail = Box<dyn FnOnce() + Send>;

/// Control messages for a node whose connection a background thread is setting up
/// ([`NodeConfig::background_connect`]). While an outbox exists for a node, every
/// control message to it joins the queue (even once the connection is up, until the
/// queue is flushed), so messages go out in the order they were sent.
#[derive(Default)]
struct Outbox {
    queue: Vec<Control>,
    on_fail: Vec<OnFail>,
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
    host: Option<Arc<dyn Host>>,
    next_unlink: AtomicU64,
    /// Background connection setups in progress (bounded by [`MAX_CONNECTING`]).
    connecting: AtomicUsize,
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

/// The address the built-in EPMD listens on: loopback for a node that listens on
/// loopback only (`dist_listen="127.0.0.1"`: nothing of such a node is reachable from
/// other hosts, its name service included), all interfaces (as erl's epmd) otherwise.
/// Nodes started later on this host register with it through loopback either way.
fn epmd_address(listen: IpAddr) -> IpAddr {
    if listen.is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
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
    listen: IpAddr,
) -> Result<(Registration, Option<EpmdServer>), DistError> {
    let local = SocketAddr::from(([127, 0, 0, 1], epmd_port));
    let mut last_err = None;
    for _ in 0..3 {
        match epmd::register(local, alive, port, hidden) {
            Ok(r) => return Ok((r, None)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && start => {
                // Nobody on the port: serve it ourselves, where `epmd_address` says.
                match EpmdServer::start(SocketAddr::new(epmd_address(listen), epmd_port)) {
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
        Node::start_hosted(cfg, None)
    }

    /// Starts a node whose pids are also `host`'s processes (see [`Host`]).
    pub fn start_hosted(
        cfg: NodeConfig,
        embedder: Option<Arc<dyn Host>>,
    ) -> Result<Node, DistError> {
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
        let (registration, server) = register_with_epmd(
            cfg.epmd_port,
            alive,
            port,
            cfg.hidden,
            cfg.start_epmd,
            cfg.listen,
        )?;
        let inner = Arc::new(Inner {
            name: Atom::new(&cfg.name),
            creation: registration.creation(),
            flags: flags::ours(cfg.hidden),
            cookie,
            port,
            atoms: LocalAtoms::with_capacity(cfg.peer_atoms),
            tables: Mutex::new(Tables::default()),
            next_id: AtomicU32::new(FIRST_MAILBOX_ID),
            next_ref: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stop_signal: (Mutex::new(false), std::sync::Condvar::new()),
            registration: Mutex::new(Some(Arc::new(registration))),
            epmd_server: Mutex::new(server),
            threads: Mutex::new(Vec::new()),
            host: embedder,
            next_unlink: AtomicU64::new(1),
            connecting: AtomicUsize::new(0),
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
        self.expose_async(
            module,
            function,
            Arc::new(move |args, reply| reply.send(f(args))),
        );
    }

    /// [`Node::expose`] for a function that answers later ([`ExposedAsync`]).
    pub fn expose_async(&self, module: &str, function: &str, f: ExposedAsync) {
        lock(&self.inner.tables)
            .exposed
            .insert((module.to_owned(), function.to_owned()), f);
    }

    /// Connected nodes, sorted: every one (`None`), or those whose connection is
    /// visible (`Some(true)`: erlang:nodes(), both sides published) or hidden
    /// (`Some(false)`: erlang:nodes(hidden); a hidden node's connections are all
    /// hidden, as are those to a peer that did not publish itself).
    pub fn nodes_of(&self, visible: Option<bool>) -> Vec<String> {
        let ours = !self.inner.cfg.hidden;
        let mut v: Vec<String> = lock(&self.inner.tables)
            .conns
            .iter()
            .filter(|(_, c)| {
                let vis = ours && c.peer.flags & crate::flags::PUBLISHED != 0;
                visible.is_none_or(|want| want == vis)
            })
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Every connected node, visible or hidden, sorted ([`Node::nodes_of`]).
    pub fn nodes(&self) -> Vec<String> {
        self.nodes_of(None)
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

    /// Starts connecting to `node` on a background thread unless connected or
    /// connecting, and returns at once; `on_fail` runs if that attempt fails (it is
    /// dropped unrun when the node is connected already or the attempt succeeds).
    pub fn connect_background(&self, node: &str, on_fail: OnFail) -> Result<(), DistError> {
        self.inner.route(node, None, Some(on_fail))
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

    /// A pid of this node for the host's process `(id, serial)`.
    pub fn local_pid(&self, id: u32, serial: u32) -> Pid {
        Pid {
            node: self.inner.name.clone(),
            id,
            serial,
            creation: self.inner.creation,
        }
    }

    /// Whether `p` names a process of this node (this incarnation, or creation 0).
    pub fn is_local(&self, p: &Pid) -> bool {
        self.inner.is_local(p)
    }

    /// A fresh reference of this node.
    pub fn make_ref(&self) -> Ref {
        self.inner.make_ref()
    }

    /// Sends `message` from `from` to the process registered as `name` on `node`
    /// (REG_SEND; dropped by the peer if the name is unknown, as in Erlang).
    pub fn reg_send(
        &self,
        from: &Pid,
        name: &str,
        node: &str,
        message: Term,
    ) -> Result<(), DistError> {
        self.inner.reg_send(from, name, node, message)
    }

    /// Sends `message` from `from` through `alias`, a reference of another node
    /// (ALIAS_SEND: delivered only while the alias is active there).
    pub fn alias_send(&self, from: &Pid, alias: &Ref, message: Term) -> Result<(), DistError> {
        self.inner.send_control(
            alias.node.as_str(),
            Control::AliasSend {
                from: from.clone(),
                alias: alias.clone(),
                message,
            },
        )
    }

    /// Links the local process `from` to the remote process `to` (LINK).
    pub fn link(&self, from: &Pid, to: &Pid) -> Result<(), DistError> {
        self.inner.link(from, to)
    }

    /// Removes the link between `from` (local) and `to` (remote): UNLINK_ID with a
    /// fresh id; the peer answers UNLINK_ID_ACK.
    pub fn unlink(&self, from: &Pid, to: &Pid) -> Result<(), DistError> {
        if !lock(&self.inner.tables)
            .links
            .remove(&(from.clone(), to.clone()))
        {
            return Ok(());
        }
        let id = self.inner.next_unlink.fetch_add(1, Ordering::Relaxed);
        self.inner.send_control(
            to.node.as_str(),
            Control::UnlinkId {
                id,
                from: from.clone(),
                to: to.clone(),
            },
        )
    }

    /// The local process `from` monitors `to` (a pid, or a name on `node`): MONITOR_P.
    /// A [`Delivery::Down`] with the returned reference comes when it ends, when its
    /// node goes away (`noconnection`), or at once when the node cannot be reached.
    pub fn monitor(&self, from: &Pid, node: &str, to: ProcRef) -> Result<Ref, DistError> {
        let r = self.inner.make_ref();
        self.inner.monitor(from, node, to, r.clone());
        Ok(r)
    }

    /// [`Node::monitor`] under a reference the caller made (a host's own reference,
    /// in this node's name).
    pub fn monitor_with(&self, from: &Pid, node: &str, to: ProcRef, reference: Ref) {
        self.inner.monitor(from, node, to, reference)
    }

    /// Removes a monitor made with [`Node::monitor`] (DEMONITOR_P); `false` if it was
    /// not active.
    pub fn demonitor(&self, from: &Pid, reference: &Ref) -> bool {
        let entry = lock(&self.inner.tables).monitors_out.remove(reference);
        let Some((_, to, node)) = entry else {
            return false;
        };
        let _ = self.inner.send_control(
            &node,
            Control::DemonitorP {
                from: from.clone(),
                to,
                reference: reference.clone(),
            },
        );
        true
    }

    /// Sends an exit signal from `from` to the remote process `to` (`exit/2`, EXIT2).
    pub fn exit2(&self, from: &Pid, to: &Pid, reason: Term) -> Result<(), DistError> {
        self.inner.exit2(from, to, reason)
    }

    /// The host's process `pid` ended with `reason`: its remote links get the exit
    /// signal and its remote monitors the DOWN; what it monitored is forgotten.
    pub fn local_exited(&self, pid: &Pid, reason: Term) {
        self.inner.local_exited(pid, reason)
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
            // The top bit of the last word marks the driver's own references, so that
            // a host's references in this node's name (whose last word stays below
            // 2^14) never equal one of them.
            ids: vec![
                n as u32 & 0x3ffff,
                (n >> 18) as u32,
                (n >> 50) as u32 | 0x8000_0000,
            ],
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

    /// Whether `p` is one of the driver's own mailboxes.
    fn is_mailbox(&self, p: &Pid) -> bool {
        p.serial == 0 && lock(&self.tables).mailboxes.contains_key(&p.id)
    }

    /// Delivers to a local pid: a mailbox, or else the host's process.
    fn deliver(&self, to: &Pid, d: Delivery) -> bool {
        if to.serial == 0 {
            let tx = lock(&self.tables).mailboxes.get(&to.id).cloned();
            if let Some(tx) = tx {
                return tx.send(d).is_ok();
            }
        }
        match &self.host {
            Some(h) => h.deliver(to, d),
            None => false,
        }
    }

    /// A message a peer sent through `alias` (ALIAS_SEND): to the host, the only one
    /// that makes aliases; dropped if the alias is not one of this node's.
    fn deliver_alias(&self, from: &Pid, alias: &Ref, message: Term) -> bool {
        match &self.host {
            Some(h) if alias.node == self.name => h.deliver_alias(from, alias, message),
            _ => false,
        }
    }

    /// The local process registered as `name`: a mailbox's name, or the host's.
    fn whereis(&self, name: &str) -> Option<Pid> {
        let id = lock(&self.tables).names.get(name).copied();
        match id {
            Some(id) => Some(self.pid(id)),
            None => self.host.as_ref().and_then(|h| h.whereis(name)),
        }
    }

    /// Whether the local process `p` is alive; a host's process is watched from now
    /// on (it has a remote relation).
    fn watch(&self, p: &Pid) -> bool {
        if self.is_mailbox(p) {
            return true;
        }
        match &self.host {
            Some(h) => h.watch(p),
            None => false,
        }
    }

    /// A mailbox was dropped: its links and monitors end as a process exit with
    /// reason `normal` would end them.
    fn mailbox_gone(self: &Arc<Self>, pid: &Pid) {
        {
            let mut t = lock(&self.tables);
            t.mailboxes.remove(&pid.id);
            t.names.retain(|_, id| *id != pid.id);
        }
        self.local_exited(pid, Term::atom("normal"));
    }

    /// A local process ended: what its remote links and monitors are owed.
    fn local_exited(self: &Arc<Self>, pid: &Pid, reason: Term) {
        let (links, watchers) = {
            let mut t = lock(&self.tables);
            let links: Vec<Pid> = t
                .links
                .iter()
                .filter(|(l, _)| l == pid)
                .map(|(_, r)| r.clone())
                .collect();
            t.links.retain(|(l, _)| l != pid);
            let mut watchers = Vec::new();
            t.monitors_in.retain(|r, (l, w, named)| {
                if l == pid {
                    watchers.push((r.clone(), w.clone(), named.clone()));
                    false
                } else {
                    true
                }
            });
            t.monitors_out.retain(|_, (l, _, _)| l != pid);
            (links, watchers)
        };
        for remote in links {
            let _ = self.send_control(
                remote.node.as_str(),
                Control::Exit {
                    from: pid.clone(),
                    to: remote.clone(),
                    reason: reason.clone(),
                },
            );
        }
        for (reference, watcher, named) in watchers {
            let _ = self.send_control(
                watcher.node.as_str(),
                Control::MonitorPExit {
                    from: named,
                    to: watcher.clone(),
                    reference,
                    reason: reason.clone(),
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
        if self.cfg.background_connect {
            return self.route(node, Some(control), None);
        }
        let c = self.connect(node)?;
        c.send(&for_peer(control, c.peer.flags).into())
    }

    /// Sends `control` to `node` without waiting for a connection: at once when one is
    /// up and nothing is queued, else into the node's [`Outbox`], which a
    /// `dist-connect` thread (started here for the first message) flushes once the
    /// connection is up, or fails (links and monitors then get `noconnection`).
    fn route(
        self: &Arc<Self>,
        node: &str,
        control: Option<Control>,
        on_fail: Option<OnFail>,
    ) -> Result<(), DistError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(DistError::Stopped);
        }
        if node == self.name.as_str() || !node.contains('@') {
            return Err(DistError::BadName(node.to_owned()));
        }
        let conn = {
            let mut t = lock(&self.tables);
            if let Some(o) = t.outbox.get_mut(node) {
                o.queue.extend(control);
                o.on_fail.extend(on_fail);
                return Ok(());
            }
            match t.conns.get(node) {
                Some(c) => c.clone(),
                None => {
                    t.outbox.insert(
                        node.to_owned(),
                        Outbox {
                            queue: control.into_iter().collect(),
                            on_fail: on_fail.into_iter().collect(),
                        },
                    );
                    drop(t);
                    if self.connecting.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTING {
                        // Sends to thousands of unknown nodes at once must not make
                        // thousands of threads: past the bound, this attempt fails at
                        // once, as an unreachable node's would.
                        self.connecting.fetch_sub(1, Ordering::AcqRel);
                        log::warn!(
                            "{}: {MAX_CONNECTING} connection setups in progress, not connecting to {node}",
                            self.name
                        );
                        self.fail_outbox(node);
                        return Ok(());
                    }
                    let (inner, n) = (self.clone(), node.to_owned());
                    let started = std::thread::Builder::new()
                        .name("dist-connect".into())
                        .spawn(move || {
                            inner.connect_and_flush(&n);
                            inner.connecting.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = started {
                        self.connecting.fetch_sub(1, Ordering::AcqRel);
                        log::error!("{}: cannot start a connect thread: {e}", self.name);
                        self.fail_outbox(node);
                    }
                    return Ok(());
                }
            }
        };
        match control {
            Some(c) => conn.send(&for_peer(c, conn.peer.flags).into()),
            None => Ok(()),
        }
    }

    /// A `dist-connect` thread: sets the connection to `node` up, then sends what
    /// queued meanwhile, batch by batch until the queue stays empty (the outbox goes
    /// in the same critical section that finds it empty, so no message is left
    /// behind or overtaken).
    fn connect_and_flush(self: &Arc<Self>, node: &str) {
        let conn = match self.connect(node) {
            Ok(c) => c,
            Err(e) => {
                match &e {
                    DistError::Handshake(HandshakeError::BadCookie { .. }) => {}
                    e => log::warn!("{}: cannot connect to {node}: {e}", self.name),
                }
                self.fail_outbox(node);
                return;
            }
        };
        loop {
            let batch = {
                let mut t = lock(&self.tables);
                match t.outbox.get_mut(node) {
                    Some(o) if !o.queue.is_empty() => std::mem::take(&mut o.queue),
                    _ => {
                        t.outbox.remove(node);
                        return;
                    }
                }
            };
            for control in batch {
                if let Err(e) = conn.send(&for_peer(control, conn.peer.flags).into()) {
                    // The connection closed under us: conn_down turned its links and
                    // monitors into noconnection; the rest is lost, as on a dead link.
                    log::info!("{}: send to {node} failed: {e}", self.name);
                }
            }
        }
    }

    /// The background connection to `node` failed: what waited for it is owed what a
    /// lost connection gives (`noconnection` for links and monitors; sends are lost).
    fn fail_outbox(&self, node: &str) {
        let Some(o) = lock(&self.tables).outbox.remove(node) else {
            return;
        };
        let noconnection = Term::atom("noconnection");
        for control in o.queue {
            match control {
                Control::Link { from, to } => {
                    let linked = lock(&self.tables).links.remove(&(from.clone(), to.clone()));
                    if linked {
                        self.deliver(
                            &from,
                            Delivery::Exit {
                                from: to,
                                reason: noconnection.clone(),
                                linked: true,
                            },
                        );
                    }
                }
                Control::MonitorP {
                    from,
                    to,
                    reference,
                } => {
                    let active = lock(&self.tables).monitors_out.remove(&reference);
                    if active.is_some() {
                        self.deliver(
                            &from,
                            Delivery::Down {
                                reference,
                                process: to,
                                reason: noconnection.clone(),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        for f in o.on_fail {
            f();
        }
    }

    fn send(
        self: &Arc<Self>,
        from: Option<&Pid>,
        to: &Pid,
        message: Term,
    ) -> Result<(), DistError> {
        if self.is_local(to) {
            self.deliver(
                to,
                Delivery::Message {
                    from: from.cloned(),
                    message,
                },
            );
            return Ok(());
        }
        let control = match from {
            Some(f) => Control::SendSender {
                from: f.clone(),
                to: to.clone(),
                message,
            },
            None => Control::Send {
                to: to.clone(),
                message,
            },
        };
        self.send_control(to.node.as_str(), control)
    }

    fn reg_send(
        self: &Arc<Self>,
        from: &Pid,
        name: &str,
        node: &str,
        message: Term,
    ) -> Result<(), DistError> {
        if node == self.name.as_str() {
            if let Some(to) = self.whereis(name) {
                self.deliver(
                    &to,
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
        lock(&self.tables).links.insert((from.clone(), to.clone()));
        self.send_control(
            to.node.as_str(),
            Control::Link {
                from: from.clone(),
                to: to.clone(),
            },
        )
    }

    fn monitor(self: &Arc<Self>, from: &Pid, node: &str, to: ProcRef, r: Ref) {
        lock(&self.tables)
            .monitors_out
            .insert(r.clone(), (from.clone(), to.clone(), node.to_owned()));
        let sent = self.send_control(
            node,
            Control::MonitorP {
                from: from.clone(),
                to: to.clone(),
                reference: r.clone(),
            },
        );
        if let Err(e) = sent {
            // No connection: the DOWN comes at once, as erlang:monitor/2 gives.
            let entry = lock(&self.tables).monitors_out.remove(&r);
            if entry.is_some() {
                self.deliver(
                    from,
                    Delivery::Down {
                        reference: r.clone(),
                        process: to,
                        reason: Term::atom("noconnection"),
                    },
                );
            }
            log::debug!("{}: monitor of a process on {node} failed: {e}", self.name);
        }
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
                    exits.push((l.clone(), r.clone()));
                    false
                } else {
                    true
                }
            });
            let mut downs = Vec::new();
            t.monitors_out.retain(|r, (l, p, n)| {
                if *n == node {
                    downs.push((l.clone(), r.clone(), p.clone()));
                    false
                } else {
                    true
                }
            });
            t.monitors_in.retain(|_, (_, w, _)| w.node.as_str() != node);
            (exits, downs)
        };
        let noconnection = Term::atom("noconnection");
        for (l, r) in exits {
            self.deliver(
                &l,
                Delivery::Exit {
                    from: r,
                    reason: noconnection.clone(),
                    linked: true,
                },
            );
        }
        for (l, reference, p) in downs {
            self.deliver(
                &l,
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

/// `control` as a peer with `peer_flags` takes it: SEND_SENDER becomes SEND for a
/// peer without the flag.
fn for_peer(control: Control, peer_flags: u64) -> Control {
    match control {
        Control::SendSender { to, message, .. } if peer_flags & flags::SEND_SENDER == 0 => {
            Control::Send { to, message }
        }
        c => c,
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
                inner.cfg.listen,
            ) {
                Ok((r, server)) => {
                    // Under the registration's lock, so that `stop` (which sets
                    // `stopping` first, then takes the registration and the server)
                    // either finds both or we see it stopping: a registration made
                    // while stopping would never be closed (and `stop`'s join would
                    // wait for this thread forever).
                    let mut reg = lock(&inner.registration);
                    if inner.stopping.load(Ordering::Acquire) {
                        drop(reg);
                        r.close();
                        if let Some(mut s) = server {
                            s.stop();
                        }
                        return;
                    }
                    *lock(&inner.epmd_server) = server;
                    *reg = Some(Arc::new(r));
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
