//! Signals: what travels between processes.
//!
//! Erlang orders *all* signals from one process to another — messages, links, exits,
//! monitors — as one stream. We get that by sending every kind of signal through the
//! same lock-free inbox; the receiver interprets them in arrival order when it drains
//! the inbox (at the start of each slice and in every receive). Only the owner ever
//! changes its own link and monitor tables, so they need no locks.
//!
//! Rules implemented by [`Process::handle_signal`](super::Process) (see
//! docs/semantics.md for the full list and the tests that check each):
//!
//! * `Exit` from a link (`linked = true`) only acts if the link still exists on the
//!   receiving side (an unlink that raced with the exit wins, as in Erlang).
//! * Exit reason `normal` from another process is ignored unless the receiver traps
//!   exits; `kill` sent with `exit/2` cannot be trapped and ends the receiver with
//!   `killed`; a linked process that died with `killed` propagates `killed`.
//! * A trapping receiver turns exits into `{'EXIT', From, Reason}` messages.
//! * `Down` becomes a `{'DOWN', Ref, process, Pid, Reason}` message only if the
//!   monitor is still active (so `demonitor` suppresses later DOWNs).

use std::any::Any;

use crate::term::{Fragment, Pid, Ref};

/// What a dirty job returns: any value (the Python binding returns Python objects), or
/// the panic message if it panicked. It travels back in a [`Signal::Dirty`].
pub type DirtyResult = Result<Box<dyn Any + Send>, String>;

/// A job for a dirty pool (see `crate::dirty`).
pub type DirtyJob = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// One signal in a process's inbox.
pub enum Signal {
    /// An ordinary message.
    Message(Fragment),
    /// `from` linked itself to us.
    Link(Pid),
    /// `from` removed its link to us.
    Unlink(Pid),
    /// An exit signal. `linked`: sent because a linked process ended.
    Exit {
        /// The sender (the dying process for link exits).
        from: Pid,
        /// The exit reason.
        reason: Fragment,
        /// True when caused by a link (acts only if the link still exists).
        linked: bool,
    },
    /// `from` monitors us under `mref`.
    Monitor {
        /// The monitoring process.
        from: Pid,
        /// The monitor's reference.
        mref: Ref,
    },
    /// The monitor `mref` on us was removed.
    Demonitor(Ref),
    /// A process we monitor under `mref` ended.
    Down {
        /// The monitor reference.
        mref: Ref,
        /// The process that ended.
        pid: Pid,
        /// Its exit reason.
        reason: Fragment,
    },
    /// A receive timeout fired for the wait numbered `generation`.
    Timeout(u64),
    /// A dirty-pool job of this process finished.
    Dirty {
        /// The job id returned when it was submitted.
        id: u64,
        /// Its result.
        result: DirtyResult,
    },
}
