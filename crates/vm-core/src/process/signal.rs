//! Signals and what they do: Erlang's signal semantics, in one place.
//!
//! Erlang orders *all* signals from one process to another — messages, links, exits,
//! monitors — as one stream. We get that by sending every kind of signal through the
//! same inbox; the receiver applies them in arrival order when it drains the inbox (at
//! the start of each slice and in every receive), with [`apply`]. Only the owner ever
//! changes its own links and monitors. When a process ends, [`exit_signals`] says what
//! it owes the others. Both work on a bare process (a [`Process`] and its [`Private`]
//! half), so the rules are tested here without a VM.
//!
//! The rules (docs/semantics.md lists them with the tests that check each):
//!
//! * `Exit` from a link (`linked = true`) only acts if the link still exists on the
//!   receiving side (an unlink that raced with the exit wins, as in Erlang).
//! * Exit reason `normal` from another process is ignored unless the receiver traps
//!   exits; `kill` sent with `exit/2` cannot be trapped and ends the receiver with
//!   `killed`; a linked process that died with `killed` propagates `killed`.
//! * A trapping receiver turns exits into `{'EXIT', From, Reason}` messages.
//! * `Down` becomes a `{'DOWN', Ref, process, Pid, Reason}` message only if the
//!   monitor is still active (so `demonitor` suppresses later DOWNs).
//! * A process that ends sends its reason to its links (`Exit`, linked) and its
//!   monitors (`Down`), removes the monitors it held on others (`Demonitor`), and
//!   answers the link and monitor requests that raced with its end with `noproc`.

use std::any::Any;

use super::{Private, Process, Relations};
use crate::term::{Atom, Fragment, FragmentBuilder, Pid, Ref, Word};

/// What a dirty job returns: any value (the Python binding returns Python objects), or
/// the panic message if it panicked. It travels back to the process as a signal.
pub type DirtyResult = Result<Box<dyn Any + Send>, String>;

/// A job for a dirty pool (see `crate::dirty`).
pub type DirtyJob = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// One signal in a process's inbox.
pub(crate) enum Signal {
    /// An ordinary message.
    Message(Fragment),
    /// A message sent through an alias of the receiver (see `alias.rs`): queued only
    /// if the alias is still active when the receiver handles it.
    AliasMessage {
        /// The alias it was sent to.
        alias: Ref,
        /// The message.
        msg: Fragment,
    },
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
    /// An exit signal from a process of another node (distribution, whose layer keeps
    /// the links that cross nodes and checked this one): applied as [`Signal::Exit`],
    /// with the sender shown as `from`, that process's term.
    RemoteExit {
        /// The sender's term (an external pid).
        from: Fragment,
        /// The exit reason.
        reason: Fragment,
        /// True when caused by a link.
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

impl Signal {
    /// Heap bytes the signal holds (its term's words; shared binaries are counted as
    /// binaries): what it weighs while queued.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Signal::Message(m) | Signal::AliasMessage { msg: m, .. } => m.byte_size(),
            Signal::Exit { reason, .. } | Signal::Down { reason, .. } => reason.byte_size(),
            _ => 0,
        }
    }
}

/// Applies `sig`, which arrived at `proc` (whose private half is `p`): what the
/// receiving side of each signal does. A signal that decides the process must end sets
/// `p.exiting` (the first reason wins); the scheduler ends it after the slice.
pub(crate) fn apply(proc: &Process, p: &mut Private, sig: Signal) {
    match sig {
        Signal::Message(m) => p.mailbox.push(m),
        // Handled by `Cx` (alias.rs), which checks the alias is still active; here only
        // when no `Cx` is at hand, and then it is dropped as for a deactivated alias.
        Signal::AliasMessage { .. } => {}
        Signal::Link(from) => {
            proc.rel(|r| r.links.insert(from));
        }
        Signal::Unlink(from) => {
            proc.rel_if(|r| r.links.remove(&from));
        }
        Signal::Exit {
            from,
            reason,
            linked,
        } => {
            if linked && proc.rel_if(|r| r.links.remove(&from)) != Some(true) {
                return; // unlinked meanwhile: Erlang ignores it
            }
            let r = reason.view().as_atom();
            if r == Some(Atom::KILL) && !linked {
                exiting(p, Fragment::immediate(Word::atom(Atom::KILLED)));
            } else if proc.traps_exits() {
                let msg = around_reason(3, &reason, |b| {
                    b.atom(Atom::EXIT).pid(from);
                });
                p.mailbox.push(msg);
            } else if r == Some(Atom::NORMAL) {
                // Only a process's own exit(self(), normal) ends it with normal.
                if from == proc.pid && !linked {
                    exiting(p, reason);
                }
            } else {
                exiting(p, reason);
            }
        }
        Signal::RemoteExit {
            from,
            reason,
            linked,
        } => {
            let r = reason.view().as_atom();
            if r == Some(Atom::KILL) && !linked {
                exiting(p, Fragment::immediate(Word::atom(Atom::KILLED)));
            } else if proc.traps_exits() {
                let msg = around_reason(3, &reason, |b| {
                    b.atom(Atom::EXIT).view(from.view());
                });
                p.mailbox.push(msg);
            } else if r != Some(Atom::NORMAL) {
                exiting(p, reason);
            }
        }
        Signal::Monitor { from, mref } => {
            proc.rel(|r| r.monitored_by.insert(mref.0, from));
        }
        Signal::Demonitor(mref) => {
            proc.rel_if(|r| r.monitored_by.remove(&mref.0));
        }
        Signal::Down { mref, pid, reason } => {
            let active = proc.rel_if(|r| r.monitoring.remove(&mref.0)).flatten();
            if active.is_some() {
                let msg = around_reason(5, &reason, |b| {
                    b.atom(Atom::DOWN)
                        .reference(mref)
                        .atom(Atom::PROCESS)
                        .pid(pid);
                });
                p.mailbox.push(msg);
            }
        }
        Signal::Timeout(generation) => {
            if let Some(w) = p.pend.as_deref_mut() {
                if generation == w.wait_gen && w.deadline.is_some() {
                    w.wait_timer = None;
                    w.timed_out = true;
                }
            }
        }
        Signal::Dirty { id, result } => {
            if let Some(w) = p.pend.as_deref_mut() {
                if w.dirty_pending == Some(id) {
                    w.dirty_pending = None;
                    w.dirty_result = Some(result);
                }
            }
        }
    }
}

/// `{Head..., Reason}` (an `'EXIT'` or `'DOWN'` message): `head` pushes the first
/// `arity - 1` elements; the reason is copied word by word, without recursion, since
/// a reason may be nested arbitrarily deep.
fn around_reason(
    arity: usize,
    reason: &Fragment,
    head: impl FnOnce(&mut FragmentBuilder),
) -> Fragment {
    let mut b = FragmentBuilder::with_capacity(arity + 8 + reason.word_count());
    head(&mut b);
    b.view(reason.view());
    // Cannot fail: exactly `arity` terms were pushed.
    let _ = b.tuple(arity);
    b.finish()
        .unwrap_or_else(|_| Fragment::copy_of(reason.view()))
}

/// Marks the process as ending with `reason`, unless a reason is set already.
fn exiting(p: &mut Private, reason: Fragment) {
    if p.exiting.is_none() {
        p.exiting = Some(reason);
    }
}

/// What process `me`, ending with `reason`, owes the others: its reason to its links
/// and monitors, the removal of the monitors it held, and `noproc` to the link and
/// monitor requests in `late` (signals that arrived after its last drain; the others
/// among them are dropped, user code in their `Drop` contained). Calls `out(to,
/// signal)` for each.
pub(crate) fn exit_signals(
    me: Pid,
    reason: &Fragment,
    rel: Option<Box<Relations>>,
    late: Vec<Signal>,
    mut out: impl FnMut(Pid, Signal),
) {
    let noproc = || Fragment::immediate(Word::atom(Atom::NOPROC));
    for s in late {
        match s {
            Signal::Link(from) => out(
                from,
                Signal::Exit {
                    from: me,
                    reason: noproc(),
                    linked: true,
                },
            ),
            Signal::Monitor { from, mref } => out(
                from,
                Signal::Down {
                    mref,
                    pid: me,
                    reason: noproc(),
                },
            ),
            other => super::drop_guarded(other),
        }
    }
    let Some(rel) = rel else { return };
    for l in rel.links {
        let exit = Signal::Exit {
            from: me,
            reason: reason.clone(),
            linked: true,
        };
        out(l, exit);
    }
    for (mref, by) in rel.monitored_by {
        let down = Signal::Down {
            mref: Ref(mref),
            pid: me,
            reason: reason.clone(),
        };
        out(by, down);
    }
    for (mref, target) in rel.monitoring {
        out(target, Signal::Demonitor(Ref(mref)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Priority, Step};
    use crate::term::Term;
    use crate::Cx;

    /// A bare process (no VM): its control block and private half.
    fn bare(pid: Pid) -> Process {
        Process::new(pid, Box::new(|_: &mut Cx<'_>| Step::Wait), Priority::Normal)
    }

    fn pid(i: u32) -> Pid {
        Pid::new(i, 0)
    }

    fn atom(a: Atom) -> Fragment {
        Fragment::immediate(Word::atom(a))
    }

    fn exit(from: Pid, reason: Atom, linked: bool) -> Signal {
        Signal::Exit {
            from,
            reason: atom(reason),
            linked,
        }
    }

    /// The reason the process is now ending with, and its queued messages.
    fn state(p: &mut Private) -> (Option<Term>, Vec<Term>) {
        let mut msgs = Vec::new();
        while let Some(m) = p.mailbox.pop_front() {
            msgs.push(m.to_term());
        }
        (p.exiting.take().map(|r| r.to_term()), msgs)
    }

    #[test]
    fn exit_signals_follow_erlangs_rules() {
        let me = bare(pid(1));
        let mut p = me.lock();
        let other = pid(2);
        // normal from another process: ignored; any other reason: ends it.
        apply(&me, &mut p, exit(other, Atom::NORMAL, false));
        assert_eq!(state(&mut p), (None, vec![]));
        apply(&me, &mut p, exit(other, Atom::SHUTDOWN, false));
        assert_eq!(state(&mut p), (Some(Term::Atom(Atom::SHUTDOWN)), vec![]));
        // The first reason wins.
        apply(&me, &mut p, exit(other, Atom::SHUTDOWN, false));
        apply(&me, &mut p, exit(other, Atom::KILL, false));
        assert_eq!(state(&mut p).0, Some(Term::Atom(Atom::SHUTDOWN)));
        // kill: killed, even when trapping; normal to oneself ends it.
        me.trap_exit
            .store(true, std::sync::atomic::Ordering::Relaxed);
        apply(&me, &mut p, exit(other, Atom::KILL, false));
        assert_eq!(state(&mut p), (Some(Term::Atom(Atom::KILLED)), vec![]));
        // Trapping: exits become messages, normal included.
        apply(&me, &mut p, exit(other, Atom::NORMAL, false));
        let want = Term::Tuple(vec![
            Term::Atom(Atom::EXIT),
            Term::Pid(other),
            Term::Atom(Atom::NORMAL),
        ]);
        assert_eq!(state(&mut p), (None, vec![want]));
        me.trap_exit
            .store(false, std::sync::atomic::Ordering::Relaxed);
        apply(&me, &mut p, exit(me.pid, Atom::NORMAL, false));
        assert_eq!(state(&mut p).0, Some(Term::Atom(Atom::NORMAL)));
    }

    #[test]
    fn a_link_exit_acts_only_while_the_link_exists() {
        let me = bare(pid(1));
        let mut p = me.lock();
        let (a, b) = (pid(2), pid(3));
        apply(&me, &mut p, Signal::Link(a));
        apply(&me, &mut p, Signal::Link(b));
        apply(&me, &mut p, Signal::Unlink(b));
        // b unlinked before its exit arrived: ignored. a died `killed`: that reason
        // travels along the link and ends this process with it.
        apply(&me, &mut p, exit(b, Atom::SHUTDOWN, true));
        assert_eq!(state(&mut p), (None, vec![]));
        apply(&me, &mut p, exit(a, Atom::KILLED, true));
        assert_eq!(state(&mut p).0, Some(Term::Atom(Atom::KILLED)));
        assert_eq!(me.rel_if(|r| r.links.len()), Some(0), "the link is gone");
        // A second exit from a (no link any more) is ignored.
        apply(&me, &mut p, exit(a, Atom::SHUTDOWN, true));
        assert_eq!(state(&mut p).0, None);
    }

    #[test]
    fn down_arrives_only_for_an_active_monitor() {
        let me = bare(pid(1));
        let mut p = me.lock();
        let target = pid(2);
        let (live, gone) = (Ref::new(), Ref::new());
        me.rel(|r| r.monitoring.insert(live.0, target));
        let down = |mref| Signal::Down {
            mref,
            pid: target,
            reason: atom(Atom::NORMAL),
        };
        apply(&me, &mut p, down(gone));
        assert_eq!(state(&mut p), (None, vec![]), "demonitored: no DOWN");
        apply(&me, &mut p, down(live));
        let want = Term::Tuple(vec![
            Term::Atom(Atom::DOWN),
            Term::Ref(live),
            Term::Atom(Atom::PROCESS),
            Term::Pid(target),
            Term::Atom(Atom::NORMAL),
        ]);
        assert_eq!(state(&mut p), (None, vec![want]));
        apply(&me, &mut p, down(live));
        assert_eq!(state(&mut p), (None, vec![]), "exactly one DOWN");
    }

    #[test]
    fn an_ending_process_signals_links_monitors_and_late_requests() {
        let me = bare(pid(1));
        let (link, watcher, watched, late_link, late_mon) =
            (pid(2), pid(3), pid(4), pid(5), pid(6));
        let (by, on, late_ref) = (Ref::new(), Ref::new(), Ref::new());
        me.rel(|r| {
            r.links.insert(link);
            r.monitored_by.insert(by.0, watcher);
            r.monitoring.insert(on.0, watched);
        });
        let late = vec![
            Signal::Link(late_link),
            Signal::Monitor {
                from: late_mon,
                mref: late_ref,
            },
            Signal::Message(atom(Atom::OK)),
        ];
        let mut out = Vec::new();
        exit_signals(
            me.pid,
            &atom(Atom::SHUTDOWN),
            me.take_rel(),
            late,
            |to, s| out.push((to, s)),
        );
        let got: Vec<(Pid, String)> = out
            .into_iter()
            .map(|(to, s)| {
                let what = match s {
                    Signal::Exit {
                        from,
                        reason,
                        linked,
                    } => {
                        format!("exit {from} {} {linked}", reason.to_term())
                    }
                    Signal::Down { mref, pid, reason } => {
                        format!(
                            "down {} {pid} {}",
                            mref == by || mref == late_ref,
                            reason.to_term()
                        )
                    }
                    Signal::Demonitor(r) => format!("demonitor {}", r == on),
                    _ => "other".into(),
                };
                (to, what)
            })
            .collect();
        let me = me.pid;
        assert_eq!(
            got,
            vec![
                (late_link, format!("exit {me} noproc true")),
                (late_mon, format!("down true {me} noproc")),
                (link, format!("exit {me} shutdown true")),
                (watcher, format!("down true {me} shutdown")),
                (watched, "demonitor true".to_string()),
            ]
        );
    }
}
