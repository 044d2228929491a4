//! Mailboxes: the driver's stand-in for processes, so Rust code can have pids.
//!
//! A [`Mailbox`] owns a pid of its node and receives [`Delivery`] values: messages,
//! exit signals from linked remote processes (`noconnection` when the connection is
//! lost), monitor DOWNs. Selective receive keeps what it skips, in order, for later
//! receives (like an Erlang mailbox's save queue). When the VM integrates
//! distribution, real processes replace mailboxes; the signal mapping is described in
//! docs/distribution.md.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inner;
use crate::control::ProcRef;
use crate::term::{Pid, Ref, Term};

/// What arrives at a mailbox.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// A message; `from` is known when the peer sent it with SEND_SENDER.
    Message {
        /// Sender, when known.
        from: Option<Pid>,
        /// The message.
        message: Term,
    },
    /// An exit signal: from a linked process that ended (or `noconnection`), or an
    /// `exit/2` from anyone.
    Exit {
        /// The process the signal is from.
        from: Pid,
        /// The reason.
        reason: Term,
        /// Whether it came along a link (`false`: `exit/2`).
        linked: bool,
    },
    /// A monitored process ended (or its node went away: `noconnection`).
    Down {
        /// The monitor reference.
        reference: Ref,
        /// What was monitored.
        process: ProcRef,
        /// The reason.
        reason: Term,
    },
}

impl Delivery {
    /// The message, when this is one.
    pub fn message(&self) -> Option<&Term> {
        match self {
            Delivery::Message { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// A pid of this node with a queue of deliveries.
pub struct Mailbox {
    pub(super) pid: Pid,
    pub(super) rx: Receiver<Delivery>,
    pub(super) saved: VecDeque<Delivery>,
    pub(super) node: Arc<Inner>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("pid", &self.pid).finish()
    }
}

impl Mailbox {
    /// This mailbox's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next delivery, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Delivery> {
        self.recv_matching(timeout, |_| true)
    }

    /// The next message's term (skipping nothing: signals come back as `None` after
    /// being kept for [`Mailbox::recv`]).
    pub fn recv_message(&mut self, timeout: Duration) -> Option<Term> {
        match self.recv_matching(timeout, |d| matches!(d, Delivery::Message { .. }))? {
            Delivery::Message { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The first delivery `pred` accepts, waiting up to `timeout`; the others stay
    /// queued in order.
    pub fn recv_matching(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Delivery) -> bool,
    ) -> Option<Delivery> {
        if let Some(i) = self.saved.iter().position(&mut pred) {
            return self.saved.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(d) if pred(&d) => return Some(d),
                Ok(d) => self.saved.push_back(d),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Sends `message` to `to` (local or remote) from this mailbox.
    pub fn send(&self, to: &Pid, message: Term) -> Result<(), super::DistError> {
        self.node.send(Some(&self.pid), to, message)
    }

    /// Sends `message` to the process registered as `name` on `node`.
    pub fn send_named(
        &self,
        name: &str,
        node: &str,
        message: Term,
    ) -> Result<(), super::DistError> {
        self.node.reg_send(&self.pid, name, node, message)
    }

    /// Links this mailbox to the remote process `to`.
    pub fn link(&self, to: &Pid) -> Result<(), super::DistError> {
        self.node.link(&self.pid, to)
    }

    /// Monitors the remote process `to`; a [`Delivery::Down`] with the returned
    /// reference arrives when it ends or its node goes away.
    pub fn monitor(&self, to: &Pid) -> Result<Ref, super::DistError> {
        let r = self.node.make_ref();
        self.node.monitor(
            &self.pid,
            to.node.as_str(),
            ProcRef::Pid(to.clone()),
            r.clone(),
        );
        Ok(r)
    }

    /// Sends an exit signal to `to` (`exit(To, Reason)`).
    pub fn exit(&self, to: &Pid, reason: Term) -> Result<(), super::DistError> {
        self.node.exit2(&self.pid, to, reason)
    }

    /// A gen_server-style call: sends `{'$gen_call', {Self, Ref}, request}` to `name`
    /// on `node` and waits for `{Ref, Reply}`.
    pub fn gen_call(
        &mut self,
        name: &str,
        node: &str,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, super::DistError> {
        let tag = self.node.make_ref();
        let msg = Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![Term::Pid(self.pid.clone()), Term::Ref(tag.clone())]),
            request,
        ]);
        self.send_named(name, node, msg)?;
        let want = Term::Ref(tag);
        let reply = self.recv_matching(timeout, |d| match d.message() {
            Some(Term::Tuple(t)) => t.len() == 2 && t[0] == want,
            _ => false,
        });
        match reply {
            Some(Delivery::Message {
                message: Term::Tuple(mut t),
                ..
            }) => Ok(t.pop().unwrap_or(Term::Nil)),
            _ => Err(super::DistError::Timeout),
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.node.mailbox_gone(&self.pid);
    }
}
