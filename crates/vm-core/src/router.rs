//! Delivery: the one place where a signal finds its process.
//!
//! Everything that reaches a process from outside it — a send from another process or
//! from a plain thread, a link or exit signal, a timer firing, a dirty job finishing,
//! the watchdog's report — goes through [`Router::send`]: look the pid up in the
//! process table, push the signal onto its inbox, and if that push found it idle, put
//! it on a run queue ([`Router::enqueue`]). The router owns exactly those two things,
//! the table and the run queues, so the services that only deliver (timers, dirty
//! pools, the watchdog) depend on it alone and can be tested with a bare router and a
//! process in its table, no scheduler threads.
//!
//! ## What hooks in here next
//!
//! The destination is a pid or an alias. The next layers widen it here, and only here:
//!
//! * **process aliases** (a reference that routes to its creator while active): done,
//!   [`Router::send_alias`] resolves the alias to its creator's pid in the alias table
//!   and delivers a `Signal::AliasMessage`, which the creator queues only if the alias
//!   is still active (alias.rs);
//! * **an I/O reactor**: readiness of a socket becomes a signal to the process that
//!   registered interest, delivered through `send` like a timer's message, so it wakes
//!   the process through the same inbox and run state word;
//! * **distribution**: a remote pid is routed to the connection process of its node
//!   (which encodes and writes it), not looked up in the local table.
//!
//! Nothing upstream (`Cx`, `VmRef`, timers, dirty pools) needs to change for those:
//! they all call `send`.

use std::sync::Arc;

use crate::alias::AliasTable;
use crate::process::signal::Signal;
use crate::process::table::ProcessTable;
use crate::process::Process;
use crate::scheduler::Shared;
use crate::term::Pid;

/// The process table and the run queues: enough to deliver a signal and wake its
/// receiver.
pub(crate) struct Router {
    /// Every live process, by pid.
    pub(crate) table: ProcessTable,
    /// The run queues (and parked schedulers to wake).
    pub(crate) sched: Shared,
    /// Alias -> creator, for sends to an alias (alias.rs).
    pub(crate) aliases: AliasTable,
}

/// What became of a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// It reached a live process's inbox.
    pub(crate) delivered: bool,
    /// The receiver's inbox length before it (0 if not delivered): what a send costs.
    pub(crate) queue_len: usize,
}

impl Router {
    pub(crate) fn new(table: ProcessTable, sched: Shared) -> Router {
        Router {
            table,
            sched,
            aliases: AliasTable::default(),
        }
    }

    /// Delivers `msg` through `alias` to its creator; not delivered (dropped, not an
    /// error) when the alias routes nowhere: never created, deactivated, or its creator
    /// dead.
    pub(crate) fn send_alias(
        &self,
        alias: crate::term::Ref,
        msg: crate::term::Fragment,
    ) -> Delivery {
        match self.aliases.owner(alias) {
            Some(owner) => self.send(owner, Signal::AliasMessage { alias, msg }),
            None => Delivery {
                delivered: false,
                queue_len: 0,
            },
        }
    }

    /// Delivers `sig` to `to`. A signal to a process that is not alive is dropped
    /// (what it carries may be a dirty job's result, whose `Drop` is user code: a
    /// panic there is contained, since this may run on a pool or timer thread).
    pub(crate) fn send(&self, to: Pid, sig: Signal) -> Delivery {
        const REFUSED: Delivery = Delivery {
            delivered: false,
            queue_len: 0,
        };
        let Some(p) = self.table.get(to) else {
            crate::process::drop_guarded(sig);
            return REFUSED;
        };
        // The inbox's own count (on the line the push touches anyway) sizes the send
        // cost; the published mailbox length would be one more cache miss per send.
        let queue_len = p.inbox.len();
        // What it weighs while queued, for `memory()` (see `Inbox::bytes`).
        let bytes = sig.heap_bytes();
        match p.inbox.push_sized(sig, bytes) {
            Ok(true) => self.enqueue(p),
            Ok(false) => {}
            Err(refused) => {
                crate::process::drop_guarded(refused);
                return REFUSED;
            }
        }
        Delivery {
            delivered: true,
            queue_len,
        }
    }

    /// Makes `p` runnable. Only for a process its caller moved to QUEUED (a spawn, or
    /// a push that found it idle): a process is in at most one run queue.
    pub(crate) fn enqueue(&self, p: Arc<Process>) {
        self.sched.enqueue(p);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::process::{Priority, Step};
    use crate::term::{Fragment, Word};
    use crate::Cx;

    /// A router with one scheduler's queues and no threads.
    pub(crate) fn bare_router() -> Router {
        let (sched, _workers) = Shared::new(1, 1);
        Router::new(ProcessTable::new(16), sched)
    }

    /// Puts an idle process in `r`'s table (as if it had run and waited).
    pub(crate) fn idle_process(r: &Router) -> Arc<Process> {
        let p = r
            .table
            .insert(|pid| {
                Process::new(pid, Box::new(|_: &mut Cx<'_>| Step::Wait), Priority::Normal)
            })
            .expect("room");
        assert!(p.inbox.begin());
        assert!(p.inbox.park());
        p
    }

    fn msg(i: i64) -> Signal {
        Signal::Message(Fragment::immediate(Word::small_int(i).expect("small")))
    }

    #[test]
    fn the_first_signal_to_an_idle_process_enqueues_it_once() {
        let r = bare_router();
        let p = idle_process(&r);
        assert_eq!(r.sched.run_queue_lengths().1, 0);
        let d = r.send(p.pid, msg(1));
        assert_eq!(
            d,
            Delivery {
                delivered: true,
                queue_len: 0
            }
        );
        assert_eq!(r.send(p.pid, msg(2)).queue_len, 1);
        // From a thread that is not a scheduler: the global queue, once.
        assert_eq!(r.sched.run_queue_lengths().1, 1);
        assert_eq!(p.inbox.len(), 2);
    }

    #[test]
    fn a_signal_to_a_dead_or_unknown_pid_is_refused() {
        let r = bare_router();
        let p = idle_process(&r);
        let pid = p.pid;
        assert!(r.table.remove(pid));
        p.inbox.close(&mut Vec::new());
        assert!(!r.send(pid, msg(1)).delivered);
        let stranger = Pid::new(7, 3);
        assert!(!r.send(stranger, msg(1)).delivered);
        assert_eq!(r.sched.run_queue_lengths().1, 0);
    }
}
