//! Timers: `send_after`, `cancel_timer` and receive timeouts.
//!
//! One timer thread per VM keeps a binary heap of deadlines (not a thread per timer).
//! Entries live in a map by id; cancelling removes the map entry and leaves the heap
//! slot to be skipped when it surfaces (lazy deletion keeps cancel O(1)). The thread
//! sleeps on a condvar until the earliest deadline or until an earlier timer is added,
//! so an idle VM with no timers uses no CPU. Firing sends through the [`Router`] (the
//! ordinary send path, all a timer needs from the VM), outside the timer lock.
//!
//! Timers are kept per destination pid as well, so a process's exit cancels every
//! timer aimed at it (Erlang cancels BIF timers whose destination dies) and nothing
//! lingers until its deadline. A timer aimed at a registered *name*
//! (`erlang:send_after/3` with an atom) resolves the name when it fires and is
//! dropped if no process has it then; it belongs to no process, so it is indexed
//! under [`EXTERNAL_PID`], which never exits.
//!
//! A delay too long for the clock (`Instant::now() + delay` overflows) means never: the
//! timer is kept (it can be read and cancelled, and reads `Duration::MAX` left) but is
//! not in the heap. A receive timeout that long is no timeout at all.
//!
//! Resolution: the condvar wait wakes within tens of microseconds of the deadline on
//! Linux, finer than BEAM's 1 ms timer resolution.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::process::signal::Signal;
use crate::process::table::EXTERNAL_PID;
use crate::refmap::RefMap;
use crate::registry::Registry;
use crate::router::Router;
use crate::term::{Atom, Fragment, Pid, Ref};

/// Slots or map capacity below which the timer service never compacts or shrinks:
/// the few KB a working set of timers needs are kept.
const TIDY_FROM: usize = 1024;

enum Action {
    Send(Fragment),
    /// Send to whoever holds the name when the timer fires (nobody: dropped).
    SendNamed(Atom, Fragment),
    Timeout(u64),
}

impl Action {
    /// Whether the timer is indexed by its destination pid (cancelled when that process
    /// exits): sends to a pid only.
    fn indexed(&self) -> bool {
        matches!(self, Action::Send(_))
    }

    /// Bytes of the message held (refcounted binaries are counted as binaries).
    fn bytes(&self) -> usize {
        match self {
            Action::Send(m) | Action::SendNamed(_, m) => m.byte_size(),
            Action::Timeout(_) => 0,
        }
    }
}

struct Entry {
    /// None: never (a delay too long for the clock).
    at: Option<Instant>,
    to: Pid,
    action: Action,
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// By timer id: ids come from `Ref::new` (dense, never chosen by a user), so the
    /// reference hasher serves (SipHash here was a visible part of every
    /// `gen_server.call`, which sets and cancels its 5 s timeout).
    entries: RefMap<Entry>,
    /// Timer ids by destination (a set: cancelling one of a process's 100,000 timers
    /// is O(1), not a scan).
    by_pid: HashMap<Pid, HashSet<u64>>,
    /// Bytes of the messages the timers hold (their fragments' words).
    msg_bytes: usize,
    stop: bool,
}

/// When a timer set `after` from now fires: None when that is past what the clock can
/// represent (`Duration::MAX`, `sleep(None)` from Python): such a timer never fires.
pub(crate) fn deadline(after: Duration) -> Option<Instant> {
    Instant::now().checked_add(after)
}

/// Time left until `at` (`Duration::MAX` for never).
fn time_left(at: Option<Instant>) -> Duration {
    at.map_or(Duration::MAX, |at| {
        at.saturating_duration_since(Instant::now())
    })
}

/// The timer service of one VM.
#[derive(Default)]
pub(crate) struct Timers {
    state: Mutex<State>,
    cv: Condvar,
}

impl Timers {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, at: Option<Instant>, to: Pid, action: Action) -> u64 {
        let id = Ref::new().0;
        let mut s = self.lock();
        let wake = at.is_some_and(|at| s.heap.peek().is_none_or(|Reverse((first, _))| at < *first));
        if let Some(at) = at {
            s.heap.push(Reverse((at, id)));
        }
        s.msg_bytes += action.bytes();
        // A receive timeout is not indexed by pid: its process cancels it when the
        // receive ends, and at exit (`Vm::exit`, through the pending wait's timer id).
        // A timer to a name belongs to no process.
        let indexed = action.indexed();
        s.entries.insert(id, Entry { at, to, action });
        if indexed {
            s.by_pid.entry(to).or_default().insert(id);
        }
        drop(s);
        if wake {
            self.cv.notify_one();
        }
        id
    }

    /// Schedules `msg` to `to` at `at` (None: never, but it can still be read and
    /// cancelled); returns the timer id.
    pub(crate) fn send_at(&self, at: Option<Instant>, to: Pid, msg: Fragment) -> u64 {
        self.add(at, to, Action::Send(msg))
    }

    /// Schedules `msg` to the process registered as `name` when the timer fires;
    /// returns the timer id.
    pub(crate) fn send_named_at(&self, at: Option<Instant>, name: Atom, msg: Fragment) -> u64 {
        self.add(at, EXTERNAL_PID, Action::SendNamed(name, msg))
    }

    /// Schedules a receive timeout for `pid`'s wait number `generation`.
    pub(crate) fn receive_timeout(&self, at: Instant, pid: Pid, generation: u64) -> u64 {
        self.add(Some(at), pid, Action::Timeout(generation))
    }

    /// Removes entry `id` (its message's bytes leave the count).
    fn take(s: &mut State, id: u64) -> Option<Entry> {
        let e = s.entries.remove(&id)?;
        s.msg_bytes -= e.action.bytes();
        Some(e)
    }

    fn unindex(s: &mut State, id: u64, to: Pid) {
        if let Some(v) = s.by_pid.get_mut(&to) {
            v.remove(&id);
            if v.is_empty() {
                s.by_pid.remove(&to);
            } else if v.capacity() > TIDY_FROM && v.capacity() > 4 * v.len() {
                v.shrink_to(2 * v.len());
            }
        }
    }

    /// Cancels timer `id`; returns the time it had left, None if it already fired or
    /// does not exist.
    pub(crate) fn cancel(&self, id: u64) -> Option<Duration> {
        self.remove(id).map(time_left)
    }

    /// Cancels timer `id` without reading the clock (a receive that ended: nobody asks
    /// for the time left); returns its deadline if it was live.
    pub(crate) fn remove(&self, id: u64) -> Option<Option<Instant>> {
        let mut s = self.lock();
        let e = Self::take(&mut s, id)?;
        if e.action.indexed() {
            Self::unindex(&mut s, id, e.to);
        }
        Self::tidy(&mut s);
        Some(e.at)
    }

    /// Gives memory back once cancelled timers dominate: drops the heap slots of
    /// cancelled timers (lazy deletion would keep them until their deadlines, an hour
    /// away for a typical `send_after` that is then cancelled, and wake the timer thread
    /// at each: a 5 s call timeout per `gen_server.call`, hundreds of thousands a
    /// second) and shrinks the maps that emptied. Each compaction is O(slots) and happens only when at least three
    /// quarters of the slots are dead, so cancelling costs O(1) amortised.
    fn tidy(s: &mut State) {
        if s.heap.len() > TIDY_FROM && s.heap.len() > 4 * s.entries.len() {
            let entries = &s.entries;
            let kept: Vec<_> = s
                .heap
                .iter()
                .filter(|Reverse((_, id))| entries.contains_key(id))
                .copied()
                .collect();
            s.heap = kept.into();
        }
        if s.heap.capacity() > TIDY_FROM && s.heap.capacity() > 4 * s.heap.len() {
            s.heap.shrink_to(2 * s.heap.len());
        }
        if s.entries.capacity() > TIDY_FROM && s.entries.capacity() > 4 * s.entries.len() {
            s.entries.shrink_to(2 * s.entries.len());
        }
        if s.by_pid.capacity() > TIDY_FROM && s.by_pid.capacity() > 4 * s.by_pid.len() {
            s.by_pid.shrink_to(2 * s.by_pid.len());
        }
    }

    /// Time left on timer `id`.
    pub(crate) fn read(&self, id: u64) -> Option<Duration> {
        let s = self.lock();
        s.entries.get(&id).map(|e| time_left(e.at))
    }

    /// Cancels every timer aimed at `pid` (it exited).
    pub(crate) fn cancel_for(&self, pid: Pid) {
        let mut s = self.lock();
        if let Some(ids) = s.by_pid.remove(&pid) {
            for id in ids {
                Self::take(&mut s, id);
            }
        }
        Self::tidy(&mut s);
    }

    /// Live timers.
    pub(crate) fn count(&self) -> usize {
        self.lock().entries.len()
    }

    /// Approximate bytes used by timers: the bookkeeping (heap slots, entries, the
    /// per-process index, at their allocated capacities) and the messages they hold.
    pub(crate) fn bytes(&self) -> usize {
        let s = self.lock();
        let ids: usize = s.by_pid.values().map(|v| v.capacity() * 16).sum();
        s.heap.capacity() * std::mem::size_of::<Reverse<(Instant, u64)>>()
            + s.entries.capacity() * (std::mem::size_of::<(u64, Entry)>() + 1)
            + s.by_pid.capacity() * (std::mem::size_of::<(Pid, HashSet<u64>)>() + 1)
            + ids
            + s.msg_bytes
    }

    /// Stops the timer thread.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    /// The timer thread's loop: fires due timers through `router` until stopped; a
    /// timer aimed at a name resolves it in `names` when it fires.
    pub(crate) fn run(&self, router: &Router, names: &Registry) {
        let mut due: Vec<(Pid, Action)> = Vec::new();
        loop {
            {
                let mut s = self.lock();
                loop {
                    if s.stop {
                        return;
                    }
                    let now = Instant::now();
                    while let Some(&Reverse((at, id))) = s.heap.peek() {
                        if at > now {
                            break;
                        }
                        s.heap.pop();
                        if let Some(e) = Self::take(&mut s, id) {
                            if e.action.indexed() {
                                Self::unindex(&mut s, id, e.to);
                            }
                            due.push((e.to, e.action));
                        }
                    }
                    if !due.is_empty() {
                        break;
                    }
                    s = match s.heap.peek() {
                        Some(&Reverse((at, _))) => {
                            let wait = at.saturating_duration_since(now);
                            self.cv
                                .wait_timeout(s, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                        None => self.cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                    };
                }
            }
            for (to, action) in due.drain(..) {
                let (to, sig) = match action {
                    Action::Send(m) => (to, Signal::Message(m)),
                    Action::SendNamed(name, m) => match names.whereis(name) {
                        Some(pid) => (pid, Signal::Message(m)),
                        None => continue,
                    },
                    Action::Timeout(g) => (to, Signal::Timeout(g)),
                };
                router.send(to, sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::{bare_router, idle_process};
    use crate::term::Word;

    /// Timers fire through a bare router (no VM, no scheduler threads): in deadline
    /// order, a receive timeout as a Timeout signal, a cancelled one never; the first
    /// wakes the idle process (it is put on the global run queue).
    #[test]
    fn due_timers_are_delivered_in_order_and_cancelled_ones_not() {
        let router = bare_router();
        let p = idle_process(&router);
        let timers = Timers::default();
        let now = Instant::now();
        let msg = |i| Fragment::immediate(Word::small_int(i).expect("small"));
        timers.send_at(Some(now + Duration::from_millis(20)), p.pid, msg(2));
        timers.send_at(Some(now + Duration::from_millis(5)), p.pid, msg(1));
        let gone = timers.send_at(Some(now + Duration::from_millis(10)), p.pid, msg(9));
        timers.receive_timeout(now + Duration::from_millis(30), p.pid, 4);
        timers.send_at(None, p.pid, msg(8));
        assert!(timers.cancel(gone).is_some());
        std::thread::scope(|s| {
            s.spawn(|| timers.run(&router, &Registry::default()));
            let end = Instant::now() + Duration::from_secs(5);
            while p.inbox.len() < 3 && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            timers.stop();
        });
        assert_eq!(router.sched.run_queue_lengths().1, 1, "woken once");
        assert_eq!(timers.count(), 1, "the one that never fires");
        assert!(p.inbox.begin());
        let mut sigs = Vec::new();
        p.inbox.take_all(&mut sigs);
        let got: Vec<String> = sigs
            .iter()
            .map(|s| match s {
                Signal::Message(m) => m.to_term().to_string(),
                Signal::Timeout(g) => format!("timeout {g}"),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(got, ["1", "2", "timeout 4"]);
    }

    /// A call's receive timeout is set and cancelled at every call: the cancelled
    /// slots are dropped as they pile up (memory stays bounded, the timer thread is
    /// not woken at each stale deadline), receive timeouts are not indexed by pid, and
    /// a live timer survives every compaction.
    #[test]
    fn cancelled_receive_timeouts_do_not_pile_up() {
        let timers = Timers::default();
        let pid = Pid::new(1, 1);
        let far = Instant::now() + Duration::from_secs(5);
        let live = timers.send_at(
            Some(far),
            pid,
            Fragment::immediate(Word::atom(crate::Atom::OK)),
        );
        for g in 0..20_000u64 {
            let id = timers.receive_timeout(far, pid, g);
            assert_eq!(timers.remove(id), Some(Some(far)));
            assert_eq!(timers.remove(id), None, "removed once");
        }
        let s = timers.lock();
        assert!(
            s.heap.len() <= TIDY_FROM + 1,
            "heap kept {} slots",
            s.heap.len()
        );
        assert_eq!(
            s.by_pid.get(&pid).map(HashSet::len),
            Some(1),
            "only the send_after"
        );
        drop(s);
        assert_eq!(timers.count(), 1);
        assert!(timers.cancel(live).is_some());
        assert_eq!(timers.count(), 0);
    }
}
