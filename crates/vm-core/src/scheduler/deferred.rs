//! Receive timeouts armed late: most timed waits end long before their timer would.
//!
//! A `gen_server.call` waits for its reply with a 5 s timeout, and the reply comes in
//! microseconds. Arming a timer for each wait (the timer service's lock, its heap and
//! map, then removing it when the reply comes) was ~4% of a call round trip between
//! two Python processes, and every scheduler of a busy VM took the timer lock twice
//! per call. So a wait whose timeout is at least [`DEFER_FROM`] only computes its
//! deadline and leaves a note on its scheduler's list ([`Deferred`]); the scheduler
//! arms the notes that are still waiting once they are [`ARM_AFTER`] old. A wait that
//! ends before that withdraws its note: a push and a pop on an uncontended list, no
//! clock read beyond the deadline's.
//!
//! ## Invariants
//!
//! - The deadline is computed when the wait starts, so arming late never makes a
//!   timeout fire late as long as the note is armed before its deadline; armed after
//!   it, the timer fires at once. Notes are armed within about [`ARM_AFTER`] plus one
//!   slice of their scheduler: at the end of each slice that finds old notes, and all
//!   of them before the scheduler parks. [`DEFER_FROM`] is far above that.
//! - A scheduler stuck in a long slice cannot arm its notes. The watchdog wakes an
//!   idle scheduler when it hands a stuck one's work over, and a scheduler about to
//!   park arms every other scheduler's notes older than [`ARM_AFTER`] as well.
//! - A note names the process, the wait's generation and the deadline. Arming takes
//!   the process's lock without waiting: if the process is still in that same wait,
//!   the timer id is recorded in it (so the end of the wait removes the timer); if the
//!   wait ended, the note is dropped. If the lock is busy (the process is running),
//!   the timer is armed without being recorded: a `Timeout` signal whose generation is
//!   no longer the process's is ignored (`signal::apply`), so a timer the wait did not
//!   need only fires later, to no effect.
//! - A wait that ends withdraws its note when it is among its list's newest; one that
//!   is not, and the note of a process that exits waiting, is dropped when armed (the
//!   wait is over, or there is no process) or fires to nobody.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::term::Pid;
use crate::vm::VmInner;

/// Timeouts at least this long are armed late. Far above the arming delay (about
/// [`ARM_AFTER`] plus a slice), so that they are armed before their deadline; short
/// timeouts (a poll with `after 0` or a few milliseconds) are armed at once.
pub(crate) const DEFER_FROM: Duration = Duration::from_millis(20);
/// A note is armed once it is this old. A reply from a process on the same or another
/// running scheduler comes within microseconds; one that takes longer than this is
/// slow enough that its timer's cost does not matter.
pub(crate) const ARM_AFTER: Duration = Duration::from_millis(1);

/// A timed wait whose timer is not armed yet.
#[derive(Clone, Copy)]
struct Note {
    pid: Pid,
    generation: u64,
    deadline: Instant,
    /// When the wait began (notes are in this order on a list).
    at: Instant,
    /// The scheduler's slice sequence number then: a note younger than
    /// [`YOUNG_SLICES`] slices is not looked at by the clock.
    seq: u64,
}

/// Notes armed at most at one slice end (the rest at the next ones, or all of them
/// before the scheduler parks): a burst of a million timed waits does not stall a
/// busy scheduler between two slices for the ~0.2 s arming them all takes.
const ARM_BATCH: usize = 256;

/// How many of a list's newest notes a wait that ended looks through for its own.
const WITHDRAW_SCAN: usize = 16;

/// A note is compared with the clock only once its scheduler has ended this many
/// slices since: a call's note lives one or two slices (the server's, then the
/// caller's own, which removes it), so the common slice end reads no clock.
const YOUNG_SLICES: u64 = 8;

/// One scheduler's notes.
pub(crate) struct Deferred {
    notes: Mutex<Vec<Note>>,
    /// The oldest note's `seq` (`u64::MAX` when none): written under the lock, read
    /// without it at slice ends, for the common "nothing to arm" check and, while
    /// every note is young (a call's note, during the server's slice), to need no
    /// lock either.
    oldest_seq: AtomicU64,
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred {
            notes: Mutex::default(),
            oldest_seq: AtomicU64::new(u64::MAX),
        }
    }
}

impl Deferred {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Note>> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the list's oldest `seq` (call with the lock held).
    fn publish(&self, n: &[Note]) {
        self.oldest_seq
            .store(n.first().map_or(u64::MAX, |x| x.seq), Ordering::Release);
    }

    /// Leaves a note for `pid`'s wait number `generation`, which began `at` (during
    /// slice `seq` of this list's scheduler) and ends at `deadline`.
    pub(crate) fn push(&self, pid: Pid, generation: u64, at: Instant, deadline: Instant, seq: u64) {
        let mut n = self.lock();
        n.push(Note {
            pid,
            generation,
            deadline,
            at,
            seq,
        });
        self.publish(&n);
    }

    /// Withdraws the note of `pid`'s wait `generation`, which ended (looked for among
    /// the last [`WITHDRAW_SCAN`] notes: a wait that ends soon is near the end; one
    /// not found there is dropped when armed).
    pub(crate) fn withdraw(&self, pid: Pid, generation: u64) {
        let mut n = self.lock();
        let len = n.len();
        let from = len.saturating_sub(WITHDRAW_SCAN);
        if let Some(k) = n[from..]
            .iter()
            .rposition(|x| x.pid == pid && x.generation == generation)
        {
            n.remove(from + k);
            self.publish(&n);
        }
    }

    /// Whether any note waits (no lock).
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        self.oldest_seq.load(Ordering::Acquire) != u64::MAX
    }

    /// Takes the notes left at or before `before` (all of them for `None`), at most
    /// `max` of them (the oldest).
    fn take(&self, before: Option<Instant>, max: usize) -> Vec<Note> {
        let mut n = self.lock();
        let k = match before {
            None => n.len(),
            Some(b) => n.partition_point(|x| x.at <= b),
        }
        .min(max);
        let out = if k == n.len() {
            std::mem::take(&mut *n)
        } else {
            n.drain(..k).collect()
        };
        self.publish(&n);
        out
    }
}

/// Arms the timers of the notes of `list` left at or before `before` (all for `None`)
/// whose wait is still on, at most `max` of them.
pub(crate) fn arm(vm: &VmInner, list: &Deferred, before: Option<Instant>, max: usize) {
    if !list.pending() {
        return;
    }
    for note in list.take(before, max) {
        arm_one(vm, note);
    }
}

fn arm_one(vm: &VmInner, note: Note) {
    let Some(p) = vm.router.table.get(note.pid) else {
        return; // it exited
    };
    let mut g = match p.private.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            // Running (or being signalled): armed unrecorded (see the module docs).
            vm.timers
                .receive_timeout(note.deadline, note.pid, note.generation);
            return;
        }
    };
    if let Some(w) = g.pend.as_deref_mut() {
        if w.wait_gen == note.generation
            && w.deadline == Some(note.deadline)
            && w.wait_timer.is_none()
            && !w.timed_out
        {
            w.wait_timer = Some(vm.timers.receive_timeout(
                note.deadline,
                note.pid,
                note.generation,
            ));
            w.note = None;
        }
    }
}

/// Arms the notes of `list` older than [`ARM_AFTER`] (none if the clock cannot go
/// back that far). `seq`: the list's scheduler's slice sequence number now (`None`:
/// read the clock whatever the notes' age in slices).
#[inline(always)]
pub(crate) fn arm_old(vm: &VmInner, list: &Deferred, seq: Option<u64>) {
    // One load at every slice end: the rest is out of line.
    if list.pending() {
        arm_old_notes(vm, list, seq);
    }
}

#[cold]
#[inline(never)]
fn arm_old_notes(vm: &VmInner, list: &Deferred, seq: Option<u64>) {
    if let Some(seq) = seq {
        let oldest = list.oldest_seq.load(Ordering::Acquire);
        // Sequence numbers advance by two per slice.
        if seq < oldest.saturating_add(2 * YOUNG_SLICES) {
            return;
        }
    }
    if let Some(before) = Instant::now().checked_sub(ARM_AFTER) {
        arm(vm, list, Some(before), ARM_BATCH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(i: u32) -> Pid {
        Pid::new(i, 0)
    }

    #[test]
    fn a_wait_that_ends_withdraws_its_note_and_old_notes_come_out_in_order() {
        let d = Deferred::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert!(!d.pending());
        for i in 0..4u32 {
            d.push(pid(i), 1, t0 + ms(u64::from(i)), t0 + ms(5_000), 0);
        }
        d.withdraw(pid(3), 1); // the newest: a call's reply came
        d.withdraw(pid(1), 1); // one further back
        d.withdraw(pid(0), 2); // another wait of that process: not this note
        assert_eq!(d.lock().len(), 2);
        let old = d.take(Some(t0 + ms(1)), usize::MAX);
        assert_eq!(old.iter().map(|n| n.pid).collect::<Vec<_>>(), [pid(0)]);
        assert!(d.pending(), "pid 2's note is younger");
        assert!(d.take(None, 0).is_empty(), "at most 0");
        let rest = d.take(None, usize::MAX);
        assert_eq!(rest.iter().map(|n| n.pid).collect::<Vec<_>>(), [pid(2)]);
        assert!(!d.pending());
    }

    #[test]
    fn a_note_past_the_scan_window_stays_until_armed() {
        let d = Deferred::default();
        let t0 = Instant::now();
        for i in 0..(WITHDRAW_SCAN as u32 + 4) {
            d.push(pid(i), 1, t0, t0, 0);
        }
        d.withdraw(pid(0), 1); // too far back: left for the sweep, which drops it
        assert_eq!(d.lock().len(), WITHDRAW_SCAN + 4);
    }
}
