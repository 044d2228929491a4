//! Distribution glue: the VM's processes as a `vm_dist` node's [`Host`].
//!
//! vm-core knows nothing of distribution. The binding resolves a `Pid` to a
//! `PidTarget` in one place (types.rs); a pid of another node (`Foreign`) is routed
//! here when a node runs (`send`, `link`, `unlink`, `monitor`, `demonitor`, `exit/2`,
//! registered sends to `(name, node)`), and `vm_dist`'s driver hands what arrives for
//! our pids back through [`Host`]:
//!
//! * messages go in with `VmRef::send`;
//! * exit signals from remote processes with `VmRef::exit_from_remote` (vm-core's one
//!   hook: the `{'EXIT', From, Reason}` a trapping process sees names the remote pid);
//!   the links that cross nodes live in the driver's table, which decides whether a
//!   link exit still applies (an unlink that raced with it wins, as locally);
//! * DOWNs of remote monitors are plain messages built here;
//! * a local process with a remote relation (a remote process linked to it or
//!   monitoring it, or it linked to a remote one) is *watched*: a small native process
//!   monitors it and tells the driver its exit reason ([`Node::local_exited`]), which
//!   sends EXIT / MONITOR_P_EXIT to the other nodes. Watchers are not linked to
//!   anything, so they change no local semantics.
//!
//! Terms cross as owned values: wire term ↔ vm-core `Term` (below), the message
//! fragment built from that. Values Python has and vm-core has not (charlists,
//! improper lists, funs, ports, bitstrings) travel inside the VM as tagged tuples, as
//! `str` does (`{'$str', Bin}`); convert.rs turns them into `beamvm.Charlist`, ... .
//!
//! Connections are native processes on the VM's I/O reactor (`dist_conn.rs`), not
//! threads.
//! No scheduler thread waits on the network: the node runs with
//! `background_connect`, so the first send (link, monitor, exit) to a node queues the
//! message and a `dist-connect` thread sets the connection up (EPMD look-up and
//! handshake, bounded by the setup timeout), then sends what queued, in order; a
//! failed setup gives links and monitors `noconnection`. Exposed functions run in
//! processes of their own ([`dist_expose`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use vm_core::term::{Binary, ExternalPid, ExternalRef, RefcBin, MAX_REF_WORDS};
use vm_core::{Atom, Cx, Fragment, Pid, Ref, Step, Term, VmRef};
use vm_dist::control::ProcRef;
use vm_dist::cookie::Cookie;
use vm_dist::node::{Delivery, Host, Node, NodeConfig, NodeEvent, Reply};
use vm_dist::term as wire;

use crate::types::PyAtom;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deepest nesting converted between the two term forms (the codec bounds what
/// arrives at 512 levels; a Python value is bounded by convert.rs).
const MAX_DEPTH: usize = 2048;

/// Tags of the values vm-core has no term for (module docs).
pub(crate) struct Tags {
    pub(crate) charlist: Atom,
    pub(crate) improper: Atom,
    pub(crate) fun: Atom,
    pub(crate) port: Atom,
    pub(crate) bits: Atom,
    nodedown: Atom,
    noconnection: Atom,
}

/// The tags: all predefined (vm-core's term/atom.rs), so no conversion ever interns
/// one, whatever the state of the atom table.
static TAGS: Tags = Tags {
    charlist: Atom::CHARLIST_TAG,
    improper: Atom::IMPROPER_TAG,
    fun: Atom::FUN_TAG,
    port: Atom::PORT_TAG,
    bits: Atom::BITS_TAG,
    nodedown: Atom::NODEDOWN,
    noconnection: Atom::NOCONNECTION,
};

pub(crate) fn tags() -> &'static Tags {
    &TAGS
}

/// How terms cross between the wire and the VM for one node.
struct Wire {
    name: wire::Atom,
    core_name: Atom,
    creation: u32,
    utf8: bool,
}

/// Slots of each thread's cache of wire atoms already looked up in vm-core's table.
const ATOM_MEMO_SLOTS: usize = 64;

thread_local! {
    /// A connection's decoder hands out the same shared text for an atom it saw before
    /// (vm_dist's `AtomBudget`), so the text's address identifies the atom: a
    /// direct-mapped cache from it to vm-core's atom spares each received atom a
    /// look-up in the global table (a lock shared by every thread, and a hash of the
    /// text). Each entry holds its wire atom, so the address cannot be reused by
    /// another text while the entry lives.
    static ATOM_MEMO: RefCell<Vec<Option<(wire::Atom, Atom)>>> =
        RefCell::new(vec![None; ATOM_MEMO_SLOTS]);
}

/// vm-core's atom for a wire atom (see [`ATOM_MEMO`]).
fn core_atom(a: &wire::Atom) -> Result<Atom, String> {
    let text = a.as_str();
    let slot = (text.as_ptr() as usize >> 4) % ATOM_MEMO_SLOTS;
    let hit = ATOM_MEMO.with(|m| match &m.borrow()[slot] {
        Some((w, core)) if std::ptr::eq(w.as_str(), text) => Some(*core),
        _ => None,
    });
    if let Some(core) = hit {
        return Ok(core);
    }
    let core = Atom::try_new(text).map_err(|e| e.to_string())?;
    ATOM_MEMO.with(|m| m.borrow_mut()[slot] = Some((a.clone(), core)));
    Ok(core)
}

fn bad(what: &str) -> String {
    format!("{what} has no term form here")
}

impl Wire {
    fn is_ours(&self, node: &wire::Atom, creation: u32) -> bool {
        *node == self.name && (creation == self.creation || creation == 0)
    }

    fn pid_in(&self, p: &wire::Pid) -> Result<Term, String> {
        if self.is_ours(&p.node, p.creation) {
            return Ok(Term::Pid(Pid::new(p.id, p.serial)));
        }
        let node = core_atom(&p.node)?;
        Ok(Term::ExternalPid(ExternalPid::new(
            node,
            Pid::new(p.id, p.serial),
            p.creation,
        )))
    }

    fn local_pid(&self, pid: Pid) -> wire::Pid {
        wire::Pid {
            node: self.name.clone(),
            id: pid.index,
            serial: pid.serial,
            creation: self.creation,
        }
    }

    fn ext_pid(&self, e: &ExternalPid) -> wire::Pid {
        wire::Pid {
            node: wire::Atom::new(e.node.as_str()),
            id: e.id,
            serial: e.serial,
            creation: e.creation,
        }
    }

    /// A local reference's wire form: three words, as OTP's (18 + 32 + 14 bits used).
    fn local_ref(&self, r: Ref) -> wire::Ref {
        let n = r.0;
        wire::Ref {
            node: self.name.clone(),
            creation: self.creation,
            ids: vec![(n & 0x3ffff) as u32, (n >> 18) as u32, (n >> 50) as u32],
        }
    }

    fn ref_in(&self, r: &wire::Ref) -> Result<Term, String> {
        if self.is_ours(&r.node, r.creation)
            && r.ids.len() == 3
            && r.ids[0] <= 0x3ffff
            && r.ids[2] < (1 << 14)
        {
            let n = u64::from(r.ids[0]) | u64::from(r.ids[1]) << 18 | u64::from(r.ids[2]) << 50;
            return Ok(Term::Ref(Ref(n)));
        }
        let node = core_atom(&r.node)?;
        let words = &r.ids[..r.ids.len().min(MAX_REF_WORDS)];
        ExternalRef::new(node, r.creation, words)
            .map(Term::ExternalRef)
            .ok_or_else(|| bad("a reference without words"))
    }

    fn ext_ref(&self, r: &ExternalRef) -> wire::Ref {
        wire::Ref {
            node: wire::Atom::new(r.node().as_str()),
            creation: r.creation(),
            ids: r.words().to_vec(),
        }
    }

    /// Wire term → vm-core term, taking the wire term's buffers (a received binary
    /// becomes the VM's without a copy).
    fn term_in(&self, t: wire::Term, depth: usize) -> Result<Term, String> {
        if depth > MAX_DEPTH {
            return Err("term nested too deep".into());
        }
        let d = depth + 1;
        Ok(match t {
            wire::Term::Int(i) => Term::Int(i),
            wire::Term::BigInt(b) => Term::bigint(b),
            wire::Term::Float(f) => Term::Float(f),
            wire::Term::Atom(a) => Term::Atom(core_atom(&a)?),
            wire::Term::Binary(b) => {
                if self.utf8 && std::str::from_utf8(&b).is_ok() {
                    Term::Str(core_bin(b))
                } else {
                    Term::Binary(core_bin(b))
                }
            }
            wire::Term::BitBinary(b) => Term::Tuple(vec![
                Term::Atom(tags().bits),
                Term::binary(b.bytes().to_vec()),
                Term::Int(i64::from(b.last_bits())),
            ]),
            wire::Term::Tuple(v) => Term::Tuple(
                v.into_iter()
                    .map(|e| self.term_in(e, d))
                    .collect::<Result<_, _>>()?,
            ),
            wire::Term::Nil => Term::nil(),
            wire::Term::List { elems, tail } => {
                let elems: Vec<Term> = elems
                    .into_iter()
                    .map(|e| self.term_in(e, d))
                    .collect::<Result<_, _>>()?;
                if matches!(*tail, wire::Term::Nil) {
                    Term::List(elems)
                } else {
                    Term::Tuple(vec![
                        Term::Atom(tags().improper),
                        Term::List(elems),
                        self.term_in(*tail, d)?,
                    ])
                }
            }
            wire::Term::Charlist(b) => Term::Tuple(vec![
                Term::Atom(tags().charlist),
                Term::List(b.iter().map(|&c| Term::Int(i64::from(c))).collect()),
            ]),
            wire::Term::Map(pairs) => Term::map(
                pairs
                    .into_iter()
                    .map(|(k, v)| Ok((self.term_in(k, d)?, self.term_in(v, d)?)))
                    .collect::<Result<_, String>>()?,
            ),
            wire::Term::Pid(p) => self.pid_in(&p)?,
            wire::Term::Ref(r) => self.ref_in(&r)?,
            t @ (wire::Term::Port(_) | wire::Term::Fun(_)) => {
                let tag = if matches!(t, wire::Term::Port(_)) {
                    tags().port
                } else {
                    tags().fun
                };
                Term::Tuple(vec![
                    Term::Atom(tag),
                    Term::binary(vm_dist::etf::encode(&t).map_err(|e| e.to_string())?),
                ])
            }
        })
    }

    /// vm-core term → wire term.
    fn term_out(&self, t: &Term, depth: usize) -> Result<wire::Term, String> {
        if depth > MAX_DEPTH {
            return Err("term nested too deep".into());
        }
        let d = depth + 1;
        Ok(match t {
            Term::Int(i) => wire::Term::Int(*i),
            Term::BigInt(b) => wire::Term::BigInt((**b).clone()),
            Term::Float(f) => wire::Term::Float(*f),
            Term::Atom(a) => wire::Term::Atom(wire::Atom::new(a.as_str())),
            // A str (text) goes on the wire as a UTF-8 binary.
            Term::Binary(b) | Term::Str(b) => wire::Term::Binary(wire_bin(b)),
            Term::Tuple(v) => {
                if let Some(w) = self.tagged_out(v, d)? {
                    return Ok(w);
                }
                wire::Term::Tuple(
                    v.iter()
                        .map(|e| self.term_out(e, d))
                        .collect::<Result<_, _>>()?,
                )
            }
            Term::List(v) => wire::Term::list(
                v.iter()
                    .map(|e| self.term_out(e, d))
                    .collect::<Result<_, _>>()?,
            ),
            Term::Map(pairs) => wire::Term::Map(
                pairs
                    .iter()
                    .map(|(k, v)| Ok((self.term_out(k, d)?, self.term_out(v, d)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Term::Pid(p) => wire::Term::Pid(self.local_pid(*p)),
            Term::Ref(r) => wire::Term::Ref(self.local_ref(*r)),
            Term::ExternalPid(e) => wire::Term::Pid(self.ext_pid(e)),
            Term::ExternalRef(r) => wire::Term::Ref(self.ext_ref(r)),
        })
    }

    /// The wire form of a tagged tuple (`{'$str', Bin}`, `{'$charlist', L}`, ...), or
    /// `None` for an ordinary tuple.
    fn tagged_out(&self, v: &[Term], d: usize) -> Result<Option<wire::Term>, String> {
        let Some(tag) = v.first().and_then(Term::as_atom) else {
            return Ok(None);
        };
        let tg = tags();
        Ok(Some(match (v, tag) {
            ([_, Term::List(items)], t) if t == tg.charlist => {
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|e| e.as_int().and_then(|i| u8::try_from(i).ok()))
                    .collect();
                match bytes {
                    Some(b) if !b.is_empty() => wire::Term::Charlist(b),
                    Some(_) => wire::Term::Nil,
                    None => wire::Term::list(
                        items
                            .iter()
                            .map(|e| self.term_out(e, d))
                            .collect::<Result<_, _>>()?,
                    ),
                }
            }
            ([_, Term::List(items), tail], t) if t == tg.improper => {
                let elems: Vec<wire::Term> = items
                    .iter()
                    .map(|e| self.term_out(e, d))
                    .collect::<Result<_, _>>()?;
                let tail = self.term_out(tail, d)?;
                if elems.is_empty() {
                    tail
                } else {
                    wire::Term::improper_list(elems, tail)
                }
            }
            ([_, Term::Binary(b)], t) if t == tg.fun || t == tg.port => {
                vm_dist::etf::decode(b.as_slice()).map_err(|e| e.to_string())?
            }
            ([_, Term::Binary(b), Term::Int(bits)], t) if t == tg.bits => {
                let bits = u8::try_from(*bits).map_err(|_| bad("a bitstring's bit count"))?;
                wire::BitBinary::new(b.as_slice().to_vec(), bits)
                    .map(wire::Term::BitBinary)
                    .ok_or_else(|| bad("a malformed bitstring"))?
            }
            _ => return Ok(None),
        }))
    }

    fn frag_in(&self, t: wire::Term) -> Result<Fragment, String> {
        Ok(Fragment::from_term(&self.term_in(t, 0)?))
    }
}

/// A received binary as the VM's without a copy: owned bytes move in, and a large
/// binary that is a range of its received frame ([`wire::Bytes`]) stays one, the
/// frame's buffer living as long as the binary does.
fn core_bin(b: wire::Bytes) -> Binary {
    match b.try_into_vec() {
        Ok(v) => Binary::new(v),
        Err(shared) => {
            let (ptr, len) = (shared.as_ptr(), shared.len());
            // SAFETY: `ptr`/`len` are `shared`'s bytes: a range of a buffer that
            // `shared` (the owner passed in) keeps alive by its refcount and that is
            // never written while shared (wire::SharedBuf's contract: a received frame
            // is only read once it is shared).
            Binary::Refc(unsafe { RefcBin::from_foreign(ptr, len, Box::new(shared)) })
        }
    }
}

/// A VM binary, as a buffer the wire encoder can share: sent binaries at least
/// [`vm_dist::etf::SPLICE_MIN`] long go to the socket from their own bytes.
struct CoreBin(RefcBin);

impl AsRef<[u8]> for CoreBin {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A VM binary on the wire: a large refcounted one shared (a refcount, no copy), a
/// smaller one copied.
fn wire_bin(b: &Binary) -> wire::Bytes {
    match b {
        Binary::Refc(r) if r.len() >= vm_dist::etf::SPLICE_MIN => {
            wire::Bytes::shared(Arc::new(CoreBin(r.clone())))
        }
        _ => wire::Bytes::from(b.as_slice()),
    }
}

/// The VM side of the node: what the driver calls (module docs).
struct VmHost {
    vm: VmRef,
    wire: OnceLock<Wire>,
    node: Mutex<Option<Node>>,
    /// Local processes with a watcher.
    watched: Mutex<HashSet<Pid>>,
    /// Monitors of `(name, node)`: the DOWN names the pair.
    name_monitors: Mutex<HashMap<Ref, (Atom, Atom)>>,
    /// `monitor_node(node, true)` callers, by node name.
    node_monitors: Mutex<HashMap<String, Vec<Pid>>>,
}

impl VmHost {
    fn wire(&self) -> Option<&Wire> {
        self.wire.get()
    }

    fn node(&self) -> Option<Node> {
        lock(&self.node).clone()
    }
}

impl Host for VmHost {
    fn deliver(&self, to: &wire::Pid, d: Delivery) -> bool {
        let Some(w) = self.wire() else { return false };
        let pid = Pid::new(to.id, to.serial);
        let result = (|| -> Result<bool, String> {
            Ok(match d {
                Delivery::Message { message, .. } => self.vm.send(pid, w.frag_in(message)?),
                Delivery::Exit {
                    from,
                    reason,
                    linked,
                } => self.vm.exit_from_remote(
                    pid,
                    Fragment::from_term(&w.pid_in(&from)?),
                    w.frag_in(reason)?,
                    linked,
                ),
                Delivery::Down {
                    reference,
                    process,
                    reason,
                } => {
                    let r = w.ref_in(&reference)?;
                    let who = match (&r, process) {
                        (Term::Ref(r), ProcRef::Name(_)) => {
                            match lock(&self.name_monitors).remove(r) {
                                Some((n, node)) => {
                                    Term::Tuple(vec![Term::Atom(n), Term::Atom(node)])
                                }
                                None => return Ok(false),
                            }
                        }
                        (_, ProcRef::Name(n)) => {
                            Term::Atom(Atom::try_new(n.as_str()).map_err(|e| e.to_string())?)
                        }
                        (_, ProcRef::Pid(p)) => w.pid_in(&p)?,
                    };
                    let msg = Term::Tuple(vec![
                        Term::Atom(Atom::DOWN),
                        r,
                        Term::Atom(Atom::PROCESS),
                        who,
                        w.term_in(reason, 0)?,
                    ]);
                    self.vm.send(pid, Fragment::from_term(&msg))
                }
            })
        })();
        match result {
            Ok(delivered) => delivered,
            Err(e) => {
                log::warn!("a message for {pid} from another node was dropped: {e}");
                false
            }
        }
    }

    fn whereis(&self, name: &str) -> Option<wire::Pid> {
        let w = self.wire()?;
        let pid = self.vm.whereis(Atom::existing(name)?)?;
        Some(w.local_pid(pid))
    }

    fn watch(&self, p: &wire::Pid) -> bool {
        watch(self, Pid::new(p.id, p.serial))
    }

    /// ALIAS_SEND to one of our references: the VM queues it only while the alias is
    /// active in its owner (alias.rs), so a reply after `unalias` (or after a call gave
    /// up) is dropped. A reference of another incarnation of this node, or one the
    /// VM never made (the driver's own), is no alias: dropped. The sender is not
    /// passed on, as with SEND_SENDER.
    fn deliver_alias(&self, _from: &wire::Pid, alias: &wire::Ref, message: wire::Term) -> bool {
        let Some(w) = self.wire() else { return false };
        let Ok(Term::Ref(r)) = w.ref_in(alias) else {
            return false;
        };
        match w.frag_in(message) {
            Ok(m) => self.vm.send_alias(r, m),
            Err(e) => {
                log::warn!("a message for alias {r:?} from another node was dropped: {e}");
                false
            }
        }
    }

    fn runs_connections(&self) -> bool {
        true
    }

    fn run_connection(&self, io: vm_dist::node::ConnIo) -> std::io::Result<()> {
        crate::dist_conn::run_connection(&self.vm, io)
    }
}

/// Distribution's watchers: left out of `beamvm.processes()`, as system processes
/// are. A watcher is added right after its spawn and removes itself when its DOWN
/// comes, which cannot be earlier: its monitor is set after the add.
static SYSTEM: RwLock<Option<HashSet<Pid>>> = RwLock::new(None);

pub(crate) fn system_add(pid: Pid) {
    SYSTEM
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pid);
}

pub(crate) fn system_remove(pid: Pid) {
    if let Some(s) = SYSTEM.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
        s.remove(&pid);
    }
}

/// Removes distribution's own processes from `pids` (see [`SYSTEM`]).
pub(crate) fn drop_system(pids: &mut Vec<Pid>) {
    let guard = SYSTEM.read().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = guard.as_ref().filter(|s| !s.is_empty()) {
        pids.retain(|p| !s.contains(p));
    }
}

/// Starts a watcher of `pid` unless one runs; `false` if `pid` is not alive.
fn watch(host: &VmHost, pid: Pid) -> bool {
    if !host.vm.is_alive(pid) {
        return false;
    }
    if !lock(&host.watched).insert(pid) {
        return true;
    }
    let Some(node) = host.node() else {
        return false;
    };
    let Some(w) = host.wire() else { return false };
    let me_wire = w.local_pid(pid);
    let glue = current();
    let body = move |cx: &mut Cx<'_>| -> Step {
        let me = cx.self_pid();
        while let Some(m) = cx.recv() {
            if let Term::Tuple(t) = m.to_term() {
                if t.len() == 5 && t[0] == Term::Atom(Atom::DOWN) {
                    if let Some(g) = &glue {
                        lock(&g.host.watched).remove(&pid);
                        let reason = g
                            .host
                            .wire()
                            .and_then(|w| w.term_out(&t[4], 0).ok())
                            .unwrap_or_else(|| wire::Term::atom("normal"));
                        node.local_exited(&me_wire, reason);
                    }
                    system_remove(me);
                    return Step::Exit(Fragment::from_term(&Term::Atom(Atom::NORMAL)));
                }
            }
        }
        cx.wait(None)
    };
    // The monitor is set before this returns (not when the watcher first runs), so an
    // exit right after a remote LINK or MONITOR_P still reports its own reason.
    let watcher = host.vm.spawn(body).ok();
    if let Some(w) = watcher {
        system_add(w);
    }
    match watcher.and_then(|w| host.vm.monitor_for(w, pid)) {
        Some(_) => true,
        None => {
            if let Some(w) = watcher {
                system_remove(w);
            }
            lock(&host.watched).remove(&pid);
            false
        }
    }
}

/// A running node and its host side.
pub(crate) struct Glue {
    host: Arc<VmHost>,
    node: Node,
    stop: Arc<AtomicBool>,
    events: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static GLUE: RwLock<Option<Arc<Glue>>> = RwLock::new(None);

/// The running node, if distribution is on.
pub(crate) fn current() -> Option<Arc<Glue>> {
    GLUE.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn not_distributed() -> PyErr {
    PyRuntimeError::new_err(
        "this VM is not a distributed node: start it with beamvm.run(main, node='name@host') \
         or beamvm.start(node='name@host') (or set BEAMVM_NODE)",
    )
}

fn err(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

impl Glue {
    fn wire(&self) -> &Wire {
        // Set before the glue is published.
        self.host.wire().expect("wire set at start")
    }

    fn out(&self, f: &Fragment) -> PyResult<wire::Term> {
        self.wire()
            .term_out(&f.to_term(), 0)
            .map_err(PyValueError::new_err)
    }

    /// Whether `node` is another node (this one's pids are handled locally).
    pub(crate) fn is_remote(&self, node: Atom) -> bool {
        node != self.wire().core_name
    }

    fn sender(&self, from: Option<Pid>) -> Option<wire::Pid> {
        from.map(|p| self.wire().local_pid(p))
    }

    /// `send(remote_pid, msg)`.
    pub(crate) fn send(&self, from: Option<Pid>, to: &ExternalPid, msg: &Fragment) -> PyResult<()> {
        let m = self.out(msg)?;
        let to = self.wire().ext_pid(to);
        if let Err(e) = self.node.send(self.sender(from).as_ref(), &to, m) {
            // As in Erlang, a send to an unreachable node is not an error for the sender.
            log::info!("send to {}: {e}", to.node);
        }
        Ok(())
    }

    /// `send((name, node), msg)`.
    pub(crate) fn reg_send(
        &self,
        from: Option<Pid>,
        name: Atom,
        node: Atom,
        msg: &Fragment,
    ) -> PyResult<()> {
        let m = self.out(msg)?;
        let from = match self.sender(from) {
            Some(f) => f,
            // REG_SEND needs a sender: code outside any process sends as net_kernel's
            // stand-in, as erl's shell-less sends do from a system process.
            None => self.wire().local_pid(vm_core::EXTERNAL_PID),
        };
        if let Err(e) = self.node.reg_send(&from, name.as_str(), node.as_str(), m) {
            log::info!("send to {{{name}, {node}}}: {e}");
        }
        Ok(())
    }

    /// `link(remote_pid)` from `from`; a node that cannot be reached gives
    /// `noconnection` at once, as Erlang does.
    pub(crate) fn link(&self, from: Pid, to: &ExternalPid) {
        let w = self.wire();
        let (f, t) = (w.local_pid(from), w.ext_pid(to));
        watch(&self.host, from);
        if self.node.link(&f, &t).is_err() {
            let _ = self.node.unlink(&f, &t);
            self.host.vm.exit_from_remote(
                from,
                Fragment::from_term(&Term::ExternalPid(*to)),
                Fragment::from_term(&Term::Atom(tags().noconnection)),
                true,
            );
        }
    }

    pub(crate) fn unlink(&self, from: Pid, to: &ExternalPid) {
        let w = self.wire();
        let _ = self.node.unlink(&w.local_pid(from), &w.ext_pid(to));
    }

    /// `monitor(remote_pid)` or `monitor((name, node))`: the reference is a local one,
    /// so the DOWN and `demonitor` use the value Python holds.
    pub(crate) fn monitor(&self, from: Pid, to: MonitorTarget) -> Ref {
        self.monitor_as(from, to, Ref::new())
    }

    /// [`Glue::monitor`] with the reference `r`, a fresh one (a remote `gen_server.call`
    /// gives its alias, so that the DOWN and the reply share it, as in gen.erl).
    pub(crate) fn monitor_as(&self, from: Pid, to: MonitorTarget, r: Ref) -> Ref {
        let w = self.wire();
        let wr = w.local_ref(r);
        let f = w.local_pid(from);
        match to {
            MonitorTarget::Pid(p) => {
                let t = w.ext_pid(&p);
                let node = t.node.as_str().to_owned();
                self.node.monitor_with(&f, &node, ProcRef::Pid(t), wr);
            }
            MonitorTarget::Name(n, node) => {
                lock(&self.host.name_monitors).insert(r, (n, node));
                self.node.monitor_with(
                    &f,
                    node.as_str(),
                    ProcRef::Name(wire::Atom::new(n.as_str())),
                    wr,
                );
            }
        }
        r
    }

    /// `demonitor(ref)` of a remote monitor; `false` if `r` is none (or no longer).
    pub(crate) fn demonitor(&self, from: Pid, r: Ref) -> bool {
        let w = self.wire();
        lock(&self.host.name_monitors).remove(&r);
        self.node.demonitor(&w.local_pid(from), &w.local_ref(r))
    }

    /// A send to another node's alias (ALIAS_SEND).
    pub(crate) fn alias_send(
        &self,
        from: Option<Pid>,
        alias: &ExternalRef,
        msg: &Fragment,
    ) -> PyResult<()> {
        let m = self.out(msg)?;
        let w = self.wire();
        let from = w.local_pid(from.unwrap_or(vm_core::EXTERNAL_PID));
        if let Err(e) = self.node.alias_send(&from, &w.ext_ref(alias), m) {
            log::info!("alias send to {}: {e}", alias.node());
        }
        Ok(())
    }

    /// `exit(remote_pid, reason)`.
    pub(crate) fn exit(
        &self,
        from: Option<Pid>,
        to: &ExternalPid,
        reason: &Fragment,
    ) -> PyResult<()> {
        let r = self.out(reason)?;
        let w = self.wire();
        let from = w.local_pid(from.unwrap_or(vm_core::EXTERNAL_PID));
        let _ = self.node.exit2(&from, &w.ext_pid(to), r);
        Ok(())
    }
}

/// What `monitor(target)` names on another node: a pid of a remote node or a
/// `(name, node)` pair whose node is not this one; `None` for everything local.
pub(crate) fn monitor_target(target: &Bound<'_, PyAny>) -> PyResult<Option<MonitorTarget>> {
    let Some(g) = current() else { return Ok(None) };
    if let Ok(p) = target.downcast::<crate::types::PyPid>() {
        if let crate::types::PidTarget::Foreign(e) = p.get().target() {
            if g.is_remote(e.node) {
                return Ok(Some(MonitorTarget::Pid(e)));
            }
        }
        return Ok(None);
    }
    if let Ok(t) = target.downcast_exact::<PyTuple>() {
        if t.len() == 2 {
            let name = crate::args::atom_of(&t.get_item(0)?, "the name in monitor((name, node))")?;
            let node = crate::args::atom_of(&t.get_item(1)?, "the node in monitor((name, node))")?;
            if g.is_remote(node) {
                return Ok(Some(MonitorTarget::Name(name, node)));
            }
        }
    }
    Ok(None)
}

/// What `monitor` watches on another node.
pub(crate) enum MonitorTarget {
    /// A pid.
    Pid(ExternalPid),
    /// A registered name on a node.
    Name(Atom, Atom),
}

/// Forwards node-down events to `monitor_node` callers.
fn node_events(glue: Arc<Glue>, rx: std::sync::mpsc::Receiver<NodeEvent>) {
    while !glue.stop.load(Ordering::Acquire) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(NodeEvent::Down(node, _)) => {
                let watchers = lock(&glue.host.node_monitors).remove(&node);
                if let Some(ws) = watchers {
                    let a = Atom::try_new(&node).unwrap_or(Atom::UNDEFINED);
                    let msg = Fragment::from_term(&Term::Tuple(vec![
                        Term::Atom(tags().nodedown),
                        Term::Atom(a),
                    ]));
                    for p in ws {
                        glue.host.vm.send(p, msg.clone());
                    }
                }
            }
            Ok(NodeEvent::Up(_)) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => return,
        }
    }
}

/// Starts distribution on the running VM (`beamvm.start(node=...)` calls this).
#[pyfunction]
#[pyo3(signature = (name, cookie=None, hidden=false, listen=None, net_ticktime=None, decode_binaries=None))]
pub(crate) fn _dist_start(
    py: Python<'_>,
    name: &str,
    cookie: Option<&str>,
    hidden: bool,
    listen: Option<&str>,
    net_ticktime: Option<f64>,
    decode_binaries: Option<&str>,
) -> PyResult<PyAtom> {
    let vm = crate::lifecycle::vm()?;
    if current().is_some() {
        return Err(PyRuntimeError::new_err("distribution is already started"));
    }
    let utf8 = match decode_binaries {
        None => false,
        Some("utf8") => true,
        Some(o) => {
            return Err(PyValueError::new_err(format!(
                "decode_binaries must be None or 'utf8', not {o:?}"
            )))
        }
    };
    let core_name = Atom::try_new(name)
        .map_err(|e| PyValueError::new_err(format!("node name {name:?}: {e}")))?;
    let mut cfg = NodeConfig::new(name);
    if let Some(c) = cookie {
        if c.is_empty() {
            return Err(PyValueError::new_err("the cookie must not be empty"));
        }
        cfg.cookie = Some(Cookie::new(c));
    }
    cfg.hidden = hidden;
    // Scheduler threads send, link and monitor: they must never wait on a handshake.
    cfg.background_connect = true;
    // Peers may fill at most a quarter of the VM's atom table, whatever they send and
    // however often they reconnect: the rest stays for this node's own code.
    cfg.peer_atoms = vm_core::term::MAX_ATOMS / 4;
    if let Some(l) = listen {
        cfg.listen = l.parse().map_err(|_| {
            PyValueError::new_err(format!("dist_listen {l:?} is not an IP address"))
        })?;
    }
    if let Some(t) = net_ticktime {
        if !(t.is_finite() && t >= 0.4) {
            return Err(PyValueError::new_err(
                "net_ticktime must be at least 0.4 seconds",
            ));
        }
        cfg.conn.net_ticktime = Duration::from_secs_f64(t);
    }
    let host = Arc::new(VmHost {
        vm: vm.clone(),
        wire: OnceLock::new(),
        node: Mutex::new(None),
        watched: Mutex::new(HashSet::new()),
        name_monitors: Mutex::new(HashMap::new()),
        node_monitors: Mutex::new(HashMap::new()),
    });
    let h: Arc<dyn Host> = host.clone();
    let node = py
        .allow_threads(|| Node::start_hosted(cfg, Some(h)))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start node {name}: {e}")))?;
    let _ = host.wire.set(Wire {
        name: wire::Atom::new(name),
        core_name,
        creation: node.creation(),
        utf8,
    });
    *lock(&host.node) = Some(node.clone());
    let rx = node.monitor_nodes();
    let glue = Arc::new(Glue {
        host,
        node,
        stop: Arc::new(AtomicBool::new(false)),
        events: Mutex::new(None),
    });
    let g2 = glue.clone();
    let t = std::thread::Builder::new()
        .name("dist-events".into())
        .spawn(move || node_events(g2, rx))
        .map_err(err)?;
    *lock(&glue.events) = Some(t);
    crate::lifecycle::set_local_node(core_name);
    *GLUE.write().unwrap_or_else(|e| e.into_inner()) = Some(glue);
    Ok(PyAtom(core_name))
}

/// Stops distribution (connections closed, EPMD registration dropped). Idempotent.
#[pyfunction]
pub(crate) fn _dist_stop(py: Python<'_>) {
    let glue = GLUE.write().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(g) = glue {
        g.stop.store(true, Ordering::Release);
        py.allow_threads(|| {
            g.node.stop();
            if let Some(t) = lock(&g.events).take() {
                let _ = t.join();
            }
        });
        lock(&g.host.node).take();
    }
    SYSTEM.write().unwrap_or_else(|e| e.into_inner()).take();
    crate::lifecycle::set_local_node(Atom::NONODE);
}

/// The term mapping of the running node, or of `nonode@nohost` when not distributed.
fn codec_wire() -> Wire {
    match current() {
        Some(g) => {
            let w = g.wire();
            Wire {
                name: w.name.clone(),
                core_name: w.core_name,
                creation: w.creation,
                utf8: w.utf8,
            }
        }
        None => Wire {
            name: wire::Atom::new(Atom::NONODE.as_str()),
            core_name: Atom::NONODE,
            creation: 0,
            utf8: false,
        },
    }
}

/// `erlang:term_to_binary(Value)`: the external term format of a Python value, as it
/// would go on the wire.
#[pyfunction]
pub(crate) fn term_to_binary<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let frag = crate::convert::to_fragment(value)?;
    let t = codec_wire()
        .term_out(&frag.to_term(), 0)
        .map_err(PyValueError::new_err)?;
    let bytes = vm_dist::etf::encode(&t).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(pyo3::types::PyBytes::new(py, &bytes))
}

/// `erlang:binary_to_term(Bytes)`: the Python value of an external term format
/// encoding; `ValueError` for malformed input.
#[pyfunction]
pub(crate) fn binary_to_term(py: Python<'_>, data: &[u8]) -> PyResult<PyObject> {
    let t = vm_dist::etf::decode(data)
        .map_err(|e| PyValueError::new_err(format!("not an external term: {e}")))?;
    let frag = codec_wire().frag_in(t).map_err(PyValueError::new_err)?;
    crate::convert::frag_to_py(py, &frag)
}

/// This node's name (`Atom('nonode@nohost')` when not distributed).
#[pyfunction]
pub(crate) fn node() -> PyAtom {
    PyAtom(crate::lifecycle::local_node())
}

/// The connected nodes, sorted: `kind` is `"visible"` (erlang:nodes()), `"hidden"`
/// (nodes(hidden)) or `"connected"` (both).
#[pyfunction]
#[pyo3(signature = (kind="visible"))]
pub(crate) fn nodes(kind: &str) -> PyResult<Vec<PyAtom>> {
    let which = match kind {
        "visible" => Some(true),
        "hidden" => Some(false),
        "connected" => None,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "nodes(kind={kind:?}): kind must be 'visible', 'hidden' or 'connected'"
            )))
        }
    };
    Ok(match current() {
        Some(g) => g
            .node
            .nodes_of(which)
            .iter()
            .filter_map(|n| Atom::try_new(n).ok())
            .map(PyAtom)
            .collect(),
        None => Vec::new(),
    })
}

fn node_name(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    crate::args::atom_of(obj, "node").map(|a| a.as_str().to_owned())
}

/// `net_adm:ping(Node)`: True for pong. Blocks up to `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (node, timeout=5.0))]
pub(crate) fn dist_ping(py: Python<'_>, node: &Bound<'_, PyAny>, timeout: f64) -> PyResult<bool> {
    let g = current().ok_or_else(not_distributed)?;
    let n = node_name(node)?;
    let t = Duration::try_from_secs_f64(timeout.max(0.0))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(py.allow_threads(|| g.node.ping(&n, t)))
}

/// Makes `module:function` callable from other nodes (`rpc:call`, `erpc:call`).
///
/// Each call runs in a process of its own (as erpc runs it in a process spawned on
/// this node): the connection's reader thread spawns an [`RpcProcess`], which becomes
/// the Python process `runner(f, call)` (`beamvm.dist._run_exposed`) in its first
/// slice; the reader never waits for the GIL or for the function, so a slow call
/// stalls neither the connection nor other calls. The function's exception becomes the error the
/// caller sees (`{badrpc, {'EXIT', ...}}` from rpc:call); a call whose process dies
/// without answering fails with `killed`.
#[pyfunction]
pub(crate) fn dist_expose(
    module: &str,
    function: &str,
    f: PyObject,
    runner: PyObject,
) -> PyResult<()> {
    let g = current().ok_or_else(not_distributed)?;
    let host = g.host.clone();
    // Shared, not cloned per call: cloning a PyObject needs the GIL.
    let fr = Arc::new((f, runner));
    let handler = Arc::new(move |args: Vec<wire::Term>, reply: Reply| {
        let call = RpcCall {
            host: host.clone(),
            args: Mutex::new(Some(args)),
            reply: Mutex::new(Some(reply)),
        };
        let body = RpcProcess {
            pending: Some((fr.clone(), call)),
            body: None,
        };
        if let Err(e) = host
            .vm
            .spawn_opts(Box::new(body), vm_core::SpawnOpts::default())
        {
            // The call went with the body (its reply answers `killed` when dropped).
            log::warn!("rpc: cannot start a process for the call: {e}");
        }
    });
    g.node.expose_async(module, function, handler);
    Ok(())
}

/// The process of one rpc call. The reader thread makes it without the GIL; its first
/// slice (on a scheduler, inside a GIL batch) builds the Python process
/// `runner(f, call)`, which it is from then on: one process per call, no hand-off.
struct RpcProcess {
    pending: Option<(Arc<(PyObject, PyObject)>, RpcCall)>,
    body: Option<crate::driver::PyProcess>,
}

impl vm_core::Body for RpcProcess {
    fn resume(&mut self, cx: &mut Cx<'_>) -> Step {
        // Frames of this slice (the spawn reply below, the answer of a quick call) are
        // written once, when it ends.
        let _dist = vm_dist::node::DeferWrites::begin();
        if self.body.is_none() {
            let Some((fr, call)) = self.pending.take() else {
                return Step::Exit(Fragment::from_term(&Term::Atom(Atom::NORMAL)));
            };
            if let Some(r) = lock(&call.reply).as_mut() {
                r.started();
            }
            let made = crate::driver::with_batch_gil(|py| {
                let (f, runner) = &*fr;
                let args = PyTuple::new(py, [f.clone_ref(py), Py::new(py, call)?.into_any()])?;
                crate::api::make_body(py, runner.bind(py), &args, None, None, false)
            });
            match made {
                Ok(b) => self.body = Some(b),
                Err(e) => {
                    // The call went with the error (its reply answers `killed`).
                    log::warn!("rpc: cannot start a process for the call: {e}");
                    return Step::Exit(Fragment::from_term(&Term::Atom(Atom::NORMAL)));
                }
            }
        }
        match self.body.as_mut() {
            Some(b) => b.resume(cx),
            None => Step::Exit(Fragment::from_term(&Term::Atom(Atom::NORMAL))),
        }
    }

    fn terminate(&mut self, cx: &mut Cx<'_>, reason: &Fragment) {
        if let Some(b) = self.body.as_mut() {
            b.terminate(cx, reason);
        }
    }

    fn class(&self) -> vm_core::BodyClass {
        vm_core::BodyClass::Hooked
    }

    fn label(&self) -> String {
        match &self.body {
            Some(b) => b.label(),
            None => "rpc".into(),
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.body.as_ref().map(|b| b as &dyn std::any::Any)
    }
}

/// One call of an exposed function, handed to the process that runs it
/// (`beamvm.dist._run_exposed`): its arguments, converted in that process, and the
/// answer to send back. Dropped unanswered, the call fails with `killed`.
#[pyclass(module = "beamvm._native", name = "RpcCall", frozen)]
pub(crate) struct RpcCall {
    host: Arc<VmHost>,
    args: Mutex<Option<Vec<wire::Term>>>,
    reply: Mutex<Option<Reply>>,
}

impl RpcCall {
    fn answer(&self, r: Result<wire::Term, wire::Term>) -> bool {
        match lock(&self.reply).take() {
            Some(reply) => {
                reply.send(r);
                true
            }
            None => false,
        }
    }
}

#[pymethods]
impl RpcCall {
    /// The call's arguments as Python values (once: later calls give an empty tuple).
    fn args<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let Some(w) = self.host.wire() else {
            return PyTuple::new(py, Vec::<PyObject>::new());
        };
        let args = lock(&self.args).take().unwrap_or_default();
        let mut out = Vec::with_capacity(args.len());
        for a in args {
            let frag = w.frag_in(a).map_err(PyValueError::new_err)?;
            out.push(crate::convert::frag_to_py(py, &frag)?);
        }
        PyTuple::new(py, out)
    }

    /// Answers the call with `value`; False if it was answered already. A value with
    /// no term form fails the call (and raises here).
    fn done(&self, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let converted = crate::convert::to_fragment(value).and_then(|frag| {
            let w = self.host.wire().ok_or_else(not_distributed)?;
            w.term_out(&frag.to_term(), 0)
                .map_err(PyValueError::new_err)
        });
        match converted {
            Ok(t) => Ok(self.answer(Ok(t))),
            Err(e) => {
                self.answer(Err(error_term(value.py(), &e)));
                Err(e)
            }
        }
    }

    /// Fails the call with the exception `exc` (`{error, 'Type', <<"message">>}` on
    /// the caller's side); False if it was answered already.
    fn fail(&self, exc: &Bound<'_, PyAny>) -> bool {
        let e = PyErr::from_value(exc.clone());
        self.answer(Err(error_term(exc.py(), &e)))
    }
}

/// `{error, 'Type', <<"message">>}`: how a Python exception reads on the Erlang side.
fn error_term(py: Python<'_>, e: &PyErr) -> wire::Term {
    let tn = e
        .get_type(py)
        .qualname()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let msg = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    wire::Term::tuple(vec![
        wire::Term::atom("error"),
        wire::Term::atom(&tn),
        wire::Term::binary(msg.into_bytes()),
    ])
}

/// `monitor_node(node, flag)`: with True, a `('nodedown', node)` message comes when
/// the connection to `node` is lost (at once if it cannot be made).
#[pyfunction]
pub(crate) fn dist_monitor_node(node: &Bound<'_, PyAny>, flag: bool) -> PyResult<bool> {
    let g = current().ok_or_else(not_distributed)?;
    let n = node_name(node)?;
    let me = crate::driver::with_cx(|cx| cx.self_pid())
        .ok_or_else(|| crate::errors::outside("monitor_node"))?;
    if !flag {
        if let Some(v) = lock(&g.host.node_monitors).get_mut(&n) {
            if let Some(i) = v.iter().position(|p| *p == me) {
                v.remove(i);
            }
        }
        return Ok(true);
    }
    let a = Atom::try_new(&n).map_err(err)?;
    let nodedown = Fragment::from_term(&Term::Tuple(vec![
        Term::Atom(tags().nodedown),
        Term::Atom(a),
    ]));
    // Registered first: a connection that comes up and goes down at once still
    // reports. The connection is set up in the background (the caller's scheduler
    // does not wait on a handshake); if that fails, `nodedown` comes then.
    lock(&g.host.node_monitors)
        .entry(n.clone())
        .or_default()
        .push(me);
    let host = g.host.clone();
    let (n2, msg) = (n.clone(), nodedown.clone());
    let on_fail = Box::new(move || {
        let was = match lock(&host.node_monitors).get_mut(&n2) {
            Some(v) => v
                .iter()
                .position(|p| *p == me)
                .map(|i| v.remove(i))
                .is_some(),
            None => false,
        };
        if was {
            host.vm.send(me, msg);
        }
    });
    if g.node.connect_background(&n, on_fail).is_err() {
        if let Some(v) = lock(&g.host.node_monitors).get_mut(&n) {
            v.retain(|p| *p != me);
        }
        g.host.vm.send(me, nodedown);
    }
    Ok(true)
}
