//! The socket table: slots with generations, and an index of sockets by owner.
//!
//! Invariants:
//! - A [`SocketId`] names one socket for ever: freeing a slot bumps its generation, so
//!   a stale id finds nothing (the caller reports `closed`), never a newer socket.
//! - `by_owner` holds exactly the live sockets of each owner (kept in step by
//!   `insert`, `remove` and `set_owner`), so an exiting process's sockets are found
//!   without scanning the table.
//! - The table lock is held only to find, insert or remove; never while a socket's own
//!   lock is taken (the order is socket, then table, never the reverse).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::event::SocketId;
use crate::term::Pid;

struct Slot<T> {
    generation: u32,
    value: Option<Arc<T>>,
}

struct Inner<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    by_owner: HashMap<Pid, HashSet<SocketId>>,
}

pub(super) struct Table<T> {
    inner: Mutex<Inner<T>>,
    /// Live entries, written under the lock, read without it (a scheduler checks
    /// "any sockets at all?" on its hot path).
    live: AtomicUsize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table::new()
    }
}

impl<T> Table<T> {
    pub(super) fn new() -> Table<T> {
        Table {
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
                by_owner: HashMap::new(),
            }),
            live: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A panic elsewhere cannot leave the table half-updated (every update is a
        // few infallible assignments), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the socket built by `make(id)` and returns its id.
    pub(super) fn insert(
        &self,
        owner: Pid,
        make: impl FnOnce(SocketId) -> T,
    ) -> (SocketId, Arc<T>) {
        let mut t = self.lock();
        let index = match t.free.pop() {
            Some(i) => i,
            None => {
                t.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (t.slots.len() - 1) as u32
            }
        };
        let slot = &mut t.slots[index as usize];
        let id = SocketId::new(index, slot.generation);
        let value = Arc::new(make(id));
        slot.value = Some(value.clone());
        t.by_owner.entry(owner).or_default().insert(id);
        self.live.fetch_add(1, Ordering::Relaxed);
        (id, value)
    }

    pub(super) fn get(&self, id: SocketId) -> Option<Arc<T>> {
        let t = self.lock();
        let slot = t.slots.get(id.index())?;
        (slot.generation == id.generation())
            .then(|| slot.value.clone())
            .flatten()
    }

    /// Frees `id`'s slot; `None` if it was already gone.
    pub(super) fn remove(&self, id: SocketId, owner: Pid) -> Option<Arc<T>> {
        let mut t = self.lock();
        let slot = t.slots.get_mut(id.index())?;
        if slot.generation != id.generation() {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        t.free.push(id.index() as u32);
        self.live.fetch_sub(1, Ordering::Relaxed);
        if let Some(set) = t.by_owner.get_mut(&owner) {
            set.remove(&id);
            if set.is_empty() {
                t.by_owner.remove(&owner);
            }
        }
        Some(value)
    }

    pub(super) fn set_owner(&self, id: SocketId, from: Pid, to: Pid) {
        let mut t = self.lock();
        if let Some(set) = t.by_owner.get_mut(&from) {
            set.remove(&id);
            if set.is_empty() {
                t.by_owner.remove(&from);
            }
        }
        t.by_owner.entry(to).or_default().insert(id);
    }

    /// The sockets `owner` holds now.
    pub(super) fn owned_by(&self, owner: Pid) -> Vec<SocketId> {
        let t = self.lock();
        t.by_owner
            .get(&owner)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every live socket (shutdown closes them all).
    pub(super) fn ids(&self) -> Vec<SocketId> {
        let t = self.lock();
        t.by_owner
            .values()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_find_nothing_and_owners_are_indexed() {
        let t: Table<u32> = Table::new();
        let (a, pa) = (Pid::new(1, 0), Pid::new(2, 0));
        let (x, _) = t.insert(a, |_| 10);
        let (y, _) = t.insert(a, |_| 11);
        assert_eq!(t.len(), 2);
        let mut owned = t.owned_by(a);
        owned.sort();
        assert_eq!(owned, vec![x, y]);
        assert_eq!(t.remove(x, a).as_deref(), Some(&10));
        assert!(t.remove(x, a).is_none());
        let (z, _) = t.insert(pa, |_| 12);
        assert_eq!(z.index(), x.index(), "the slot is reused");
        assert_ne!(z, x, "with a new generation");
        assert!(t.get(x).is_none());
        assert_eq!(t.get(z).as_deref(), Some(&12));
        t.set_owner(y, a, pa);
        assert!(t.owned_by(a).is_empty());
        assert_eq!(t.owned_by(pa).len(), 2);
    }
}
