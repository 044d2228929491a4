//! Process aliases (OTP 24's `alias/0,1`, `unalias/1` and
//! `monitor(process, Pid, [{alias, Mode}])`): a reference that routes messages to the
//! process that created it while the alias is active, and drops them afterwards.
//!
//! A request/reply protocol uses one so that a reply that arrives after the caller gave
//! up never reaches its mailbox: the caller deactivates the alias when it stops waiting,
//! and the VM drops whatever is still sent to it.
//!
//! ## How a message reaches an alias
//!
//! Two tables, each with one job:
//!
//! * the router's [`AliasTable`] (sharded, locked per shard) maps an alias to its creator's
//!   pid. It is only a *router*: a sender looks the owner up and pushes a
//!   [`Signal::AliasMessage`] into the owner's inbox, like any other signal (so
//!   per-pair ordering holds for alias messages too). An alias not in the table (never
//!   created, deactivated, or its owner dead) drops the message: sending to a stale
//!   alias is not an error, as `Alias ! Msg` in Erlang.
//! * the owner's own set of active aliases (`Relations::aliases`, under the process's
//!   short relations lock) is the *authority*: an alias message is queued only if its alias is still active
//!   when the owner handles the signal. A message that was in flight when the owner
//!   called `unalias` (or demonitored, or gave up a call) is therefore dropped too,
//!   which the router alone could not guarantee.
//!
//! Invariants:
//!
//! * An alias is in the router iff it is in its owner's active set, except in the
//!   window where the owner is deactivating it (set first, router second) — a message
//!   routed in that window is dropped by the owner's check.
//! * A dying process removes all its aliases from the router in its exit path
//!   (`VmInner::finish`), so the router never grows with dead
//!   processes' aliases and a stale alias never reaches a process that reuses the slot
//!   (pids carry a serial besides).
//! * Monitor aliases (`Demonitor`, `ReplyDemonitor`) are deactivated when the monitor
//!   goes: `demonitor`, or the DOWN message being delivered. `Reply` and
//!   `ReplyDemonitor` are deactivated by the first message that arrives through them
//!   (`ReplyDemonitor` also removes its monitor then, so no DOWN follows).

use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use crate::process::context::{Cx, SEND_COST};
use crate::process::signal::Signal;
use crate::process::Relations;
use crate::refmap::RefMap;
use crate::term::{Fragment, Pid, Ref};
use crate::vm::{VmInner, VmRef};

/// Shards of the router. Each call of `gen_server.call` inserts and removes one alias,
/// from every scheduler at once; 64 shards keep two schedulers off the same lock
/// almost always, at 64 small maps of fixed cost per VM.
pub(crate) const ALIAS_SHARDS: usize = 64;

/// When an alias stops routing messages on its own (OTP's alias options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AliasMode {
    /// Active until `unalias` (or the owner's exit): `alias()`, `{alias, explicit_unalias}`.
    Explicit,
    /// Deactivated by the first message received through it: `alias([reply])`.
    Reply,
    /// A monitor's alias, deactivated when the monitor is removed (`demonitor`, or
    /// its DOWN delivered): `{alias, demonitor}`.
    Demonitor,
    /// As `Demonitor`, and also deactivated — with the monitor removed — by the first
    /// message received through it: `{alias, reply_demonitor}`.
    ReplyDemonitor,
}

impl AliasMode {
    /// Parses OTP's option name (`explicit_unalias`, `reply`, `demonitor`,
    /// `reply_demonitor`).
    pub fn from_name(s: &str) -> Option<AliasMode> {
        Some(match s {
            "explicit_unalias" => AliasMode::Explicit,
            "reply" => AliasMode::Reply,
            "demonitor" => AliasMode::Demonitor,
            "reply_demonitor" => AliasMode::ReplyDemonitor,
            _ => return None,
        })
    }

    fn is_monitor(self) -> bool {
        matches!(self, AliasMode::Demonitor | AliasMode::ReplyDemonitor)
    }
}

/// One shard of the router: alias number -> owner.
type Shard = CachePadded<Mutex<RefMap<Pid>>>;

/// The VM's alias router: alias -> owner. See the module docs.
pub(crate) struct AliasTable {
    shards: Box<[Shard]>,
}

impl Default for AliasTable {
    fn default() -> Self {
        AliasTable {
            shards: (0..ALIAS_SHARDS)
                .map(|_| CachePadded::new(Mutex::new(RefMap::default())))
                .collect(),
        }
    }
}

impl AliasTable {
    fn shard(&self, r: u64) -> MutexGuard<'_, RefMap<Pid>> {
        // References are consecutive numbers: the low bits spread them evenly.
        self.shards[(r as usize) % ALIAS_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, r: Ref, owner: Pid) {
        self.shard(r.0).insert(r.0, owner);
    }

    pub(crate) fn remove(&self, r: u64) {
        self.shard(r).remove(&r);
    }

    pub(crate) fn owner(&self, r: Ref) -> Option<Pid> {
        self.shard(r.0).get(&r.0).copied()
    }

    /// Aliases routed, all processes together.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Under the relations lock: deactivates a monitor alias on `mref` (one that ends
/// with its monitor), if any. True if it did: the caller then removes it from the
/// router, after the lock.
pub(crate) fn end_monitor_alias(rel: &mut Relations, mref: Ref) -> bool {
    if rel.aliases.get(&mref.0).is_some_and(|m| m.is_monitor()) {
        rel.aliases.remove(&mref.0);
        true
    } else {
        false
    }
}

impl VmInner {
    /// Exit path: the dying process's aliases stop routing.
    pub(crate) fn release_aliases(&self, aliases: &RefMap<AliasMode>) {
        for r in aliases.keys() {
            self.router.aliases.remove(*r);
        }
    }
}

impl Cx<'_> {
    /// Creates an alias of this process (`alias/0,1`): messages sent to it with
    /// [`Cx::send_alias`] or [`VmRef::send_alias`] reach this process while it is
    /// active. `mode` is [`AliasMode::Explicit`] or [`AliasMode::Reply`] (monitor
    /// aliases come from [`Cx::monitor_alias`]; given here they act as `Explicit`).
    pub fn alias(&mut self, mode: AliasMode) -> Ref {
        let r = Ref::new();
        let mode = if mode.is_monitor() {
            AliasMode::Explicit
        } else {
            mode
        };
        self.activate_alias(r, mode);
        r
    }

    /// Monitors `pid` with the monitor's reference also an alias of this process
    /// (`monitor(process, Pid, [{alias, Mode}])`). With `Demonitor`/`ReplyDemonitor`
    /// the alias ends with the monitor; if `pid` is already dead the `noproc` DOWN is
    /// queued at once and such an alias is not active at all.
    pub fn monitor_alias(&mut self, pid: Pid, mode: AliasMode) -> Ref {
        self.budget -= SEND_COST;
        let me = self.proc.pid;
        let mref = Ref::new();
        // The monitor and its alias under one relations lock (a call's monitor costs
        // one lock, not three), and in the router before the Monitor signal goes.
        self.proc.rel(|r| {
            r.monitoring.insert(mref.0, pid);
            r.aliases.insert(mref.0, mode);
        });
        self.vm.router.aliases.insert(mref, me);
        if !self
            .vm
            .router
            .send(pid, Signal::Monitor { from: me, mref })
            .delivered
        {
            // Not alive: the noproc DOWN is queued at once, and handling it ends a
            // monitor alias with the monitor (`monitor_gone`), so that such an alias
            // is never active; an explicit or reply alias stays.
            self.monitor_noproc(mref, pid);
        }
        mref
    }

    fn activate_alias(&mut self, r: Ref, mode: AliasMode) {
        self.proc.rel(|rel| rel.aliases.insert(r.0, mode));
        self.vm.router.aliases.insert(r, self.proc.pid);
    }

    /// Deactivates an alias of this process (`unalias/1`); true if it was active.
    /// Messages sent to it afterwards — and those still in flight — are dropped.
    pub fn unalias(&mut self, r: Ref) -> bool {
        let had = self
            .proc
            .rel_if(|rel| rel.aliases.remove(&r.0))
            .flatten()
            .is_some();
        if had {
            self.vm.router.aliases.remove(r.0);
        }
        had
    }

    /// Sends `msg` through `alias` (`Alias ! Msg`). A stale alias drops the message;
    /// the result says whether it was routed to a live process (which may still drop
    /// it, if it deactivated the alias meanwhile).
    pub fn send_alias(&mut self, alias: Ref, msg: Fragment) -> bool {
        let d = self.vm.router.send_alias(alias, msg);
        self.sent += 1;
        self.budget -=
            SEND_COST + (d.queue_len / crate::process::context::SEND_PUNISH_PER).min(4000) as i64;
        d.delivered
    }

    /// The active aliases of this process.
    pub fn aliases(&self) -> Vec<Ref> {
        self.proc
            .rel_if(|r| r.aliases.keys().map(|k| Ref(*k)).collect())
            .unwrap_or_default()
    }

    /// Signal handling: a message that came through `alias` is queued only if the
    /// alias is still active here (see the module docs).
    pub(crate) fn alias_message(&mut self, alias: Ref, msg: Fragment) {
        // Decide under the relations lock; send and queue after it.
        let verdict = self.proc.rel_if(|rel| {
            let mode = rel.aliases.get(&alias.0).copied()?;
            let demonitor = match mode {
                AliasMode::Explicit | AliasMode::Demonitor => None,
                AliasMode::Reply => {
                    rel.aliases.remove(&alias.0);
                    None
                }
                AliasMode::ReplyDemonitor => {
                    rel.aliases.remove(&alias.0);
                    rel.monitoring.remove(&alias.0)
                }
            };
            Some((mode, demonitor))
        });
        let Some(Some((mode, demonitor))) = verdict else {
            return; // deactivated: dropped, never seen by the process
        };
        if matches!(mode, AliasMode::Reply | AliasMode::ReplyDemonitor) {
            self.vm.router.aliases.remove(alias.0);
        }
        if let Some(t) = demonitor {
            self.vm.router.send(t, Signal::Demonitor(alias));
        }
        self.p.mailbox.push(msg);
    }

    /// The monitor `mref` was removed (demonitored, or its DOWN delivered): a monitor
    /// alias on it is deactivated.
    pub(crate) fn monitor_gone(&mut self, mref: Ref) {
        let gone = self
            .proc
            .rel_if(|rel| end_monitor_alias(rel, mref))
            .unwrap_or(false);
        if gone {
            self.vm.router.aliases.remove(mref.0);
        }
    }
}

impl VmRef {
    /// Sends `msg` through `alias` from outside any process. A stale alias drops it;
    /// the result says whether it was routed to a live process.
    pub fn send_alias(&self, alias: Ref, msg: Fragment) -> bool {
        self.0.router.send_alias(alias, msg).delivered
    }

    /// Aliases currently routed, all processes together (a leak check: a process
    /// that makes calls holds none between them).
    pub fn alias_count(&self) -> usize {
        self.0.router.aliases.len()
    }

    /// The number of active aliases of `pid`, or None if it is not alive. Never waits
    /// for the process (the relations lock is held only for single updates).
    pub fn aliases_of(&self, pid: Pid) -> Option<usize> {
        let p = self.0.router.table.get(pid)?;
        Some(p.rel_if(|r| r.aliases.len()).unwrap_or(0))
    }
}
