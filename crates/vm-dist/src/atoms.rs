//! Atom interning as seen from the wire, and the per-connection atom-flood bound.
//!
//! Atoms are never freed in the BEAM (nor in vm-core), so a peer that sends millions
//! of distinct atoms would fill the node's atom table for good. The decoder therefore
//! reports every atom it reads to an [`AtomInterner`] — the node's real table once
//! distribution is integrated with vm-core, [`LocalAtoms`] in this crate's own driver —
//! and a connection wraps that table in an [`AtomBudget`] that counts the atoms *this
//! peer caused to be created*. Past the budget the decode fails with
//! [`crate::etf::DecodeError::AtomLimit`] and the connection (only that one) is closed.
//! Atoms that already exist cost nothing, so a peer may send `ok` forever.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::term::Atom;

/// Default number of new atoms one connection may create before it is dropped.
///
/// OTP's whole atom table holds 1,048,576 atoms by default; one peer may use at most a
/// sixteenth of that over a connection's life, which no ordinary protocol needs (the
/// atoms a cluster uses are module, function, node and record names) and which leaves
/// the table usable after many such drops.
pub const DEFAULT_ATOM_BUDGET: u64 = 65_536;

/// The atom table is full: no atom can be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomTableFull;

/// The node's atom table, as the decoder needs it.
///
/// vm-core implements this over its own table when distribution is integrated; the
/// decoder reports every atom it reads (node names in pids too) through an
/// [`AtomBudget`] over it.
pub trait AtomInterner {
    /// Whether `name` is an atom already. Must not create it.
    fn exists(&self, name: &str) -> bool;

    /// Creates `name` (a no-op when another thread created it meanwhile).
    fn create(&mut self, name: &str) -> Result<(), AtomTableFull>;
}

/// A table that knows every atom already: nothing is ever counted as new. For decoding
/// data that does not come from a peer (tests, files this node wrote itself).
#[derive(Clone, Copy, Debug, Default)]
pub struct TrustAll;

impl AtomInterner for TrustAll {
    fn exists(&self, _name: &str) -> bool {
        true
    }

    fn create(&mut self, _name: &str) -> Result<(), AtomTableFull> {
        Ok(())
    }
}

/// What the decoder asks about each atom it reads.
pub trait AtomGate {
    /// Accepts or refuses `name`.
    fn admit(&mut self, name: &str) -> Result<(), AtomRefusal>;

    /// The atom `name`, admitted through [`AtomGate::admit`]. A gate may hand out an
    /// atom it made before (sharing its text) instead of a fresh one.
    fn atom(&mut self, name: &str) -> Result<Atom, AtomRefusal> {
        self.admit(name)?;
        Ok(Atom::new(name))
    }
}

impl AtomGate for TrustAll {
    fn admit(&mut self, _name: &str) -> Result<(), AtomRefusal> {
        Ok(())
    }
}

/// A shared, bounded atom set: this crate's stand-in for vm-core's atom table.
#[derive(Clone, Debug)]
pub struct LocalAtoms {
    inner: Arc<Mutex<HashSet<Arc<str>>>>,
    capacity: usize,
}

/// [`LocalAtoms`]' default capacity: OTP's default atom table size.
pub const DEFAULT_ATOM_TABLE_SIZE: usize = 1_048_576;

impl LocalAtoms {
    /// An empty table holding at most `capacity` atoms.
    pub fn with_capacity(capacity: usize) -> Self {
        LocalAtoms {
            inner: Arc::new(Mutex::new(HashSet::new())),
            capacity,
        }
    }

    /// How many atoms the table holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is in the table.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains(name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>>> {
        // A panic while holding this lock cannot leave the set half-updated (insert is
        // the only mutation), so a poisoned lock is still a consistent set.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for LocalAtoms {
    fn default() -> Self {
        LocalAtoms::with_capacity(DEFAULT_ATOM_TABLE_SIZE)
    }
}

impl AtomInterner for LocalAtoms {
    fn exists(&self, name: &str) -> bool {
        self.contains(name)
    }

    fn create(&mut self, name: &str) -> Result<(), AtomTableFull> {
        let mut set = self.lock();
        if set.contains(name) {
            return Ok(());
        }
        if set.len() >= self.capacity {
            return Err(AtomTableFull);
        }
        set.insert(Arc::from(name));
        Ok(())
    }
}

/// Why an atom could not be accepted from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomRefusal {
    /// The node's table is full.
    TableFull,
    /// This peer has created its allowance of new atoms.
    BudgetSpent {
        /// The allowance.
        limit: u64,
    },
}

/// Slots of [`AtomBudget`]'s cache of admitted atoms: a connection's traffic uses a
/// handful of atoms over and over (the node names in pids, the registered names, the
/// tags of the messages), and 256 slots of 8 bytes hold them with few collisions.
const ATOM_CACHE_SLOTS: usize = 256;

/// Counts the atoms a peer makes the node create, and refuses past a limit.
///
/// It also remembers the atoms it admitted (a direct-mapped cache keyed by a hash of
/// the text): a hit hands out the same shared text again, with no lock of the table,
/// no hashing of it and no allocation — most of a small message's decoding cost was
/// its atoms. Atoms are never removed from the table, so an atom admitted once is
/// admitted forever, and a hit needs no new look.
#[derive(Debug)]
pub struct AtomBudget<I> {
    table: I,
    created: u64,
    limit: u64,
    cache: Box<[Option<Atom>]>,
}

impl<I: AtomInterner> AtomBudget<I> {
    /// A budget of `limit` new atoms over `table`.
    pub fn new(table: I, limit: u64) -> Self {
        AtomBudget {
            table,
            created: 0,
            limit,
            cache: vec![None; ATOM_CACHE_SLOTS].into_boxed_slice(),
        }
    }

    /// How many new atoms this budget has let through.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl<I: AtomInterner> AtomGate for AtomBudget<I> {
    /// Accepts `name`: free when the atom exists, counted when it must be created,
    /// refused (without creating it) once this peer's allowance is spent.
    fn admit(&mut self, name: &str) -> Result<(), AtomRefusal> {
        if self.table.exists(name) {
            return Ok(());
        }
        if self.created >= self.limit {
            return Err(AtomRefusal::BudgetSpent { limit: self.limit });
        }
        self.table
            .create(name)
            .map_err(|AtomTableFull| AtomRefusal::TableFull)?;
        self.created += 1;
        Ok(())
    }

    fn atom(&mut self, name: &str) -> Result<Atom, AtomRefusal> {
        let slot = cache_slot(name);
        if let Some(a) = &self.cache[slot] {
            if a.as_str() == name {
                return Ok(a.clone());
            }
        }
        self.admit(name)?;
        let a = Atom::new(name);
        self.cache[slot] = Some(a.clone());
        Ok(a)
    }
}

/// The cache slot of `name`: FNV-1a over its bytes (atoms are short), folded to the
/// slot count.
fn cache_slot(name: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name.as_bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as usize % ATOM_CACHE_SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_atoms_are_free_and_new_ones_are_counted_up_to_the_limit() {
        let mut table = LocalAtoms::with_capacity(100);
        table.create("ok").unwrap();
        let mut budget = AtomBudget::new(table.clone(), 2);
        for _ in 0..1000 {
            budget.admit("ok").unwrap();
        }
        budget.admit("a").unwrap();
        budget.admit("b").unwrap();
        budget.admit("a").unwrap();
        assert_eq!(budget.created(), 2);
        assert_eq!(
            budget.admit("c"),
            Err(AtomRefusal::BudgetSpent { limit: 2 })
        );
        assert!(!table.contains("c"), "a refused atom is not created");
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn cached_atoms_share_their_text_and_new_ones_still_count() {
        let table = LocalAtoms::with_capacity(1000);
        let mut budget = AtomBudget::new(table.clone(), 301);
        let a = budget.atom("sink").unwrap();
        let b = budget.atom("sink").unwrap();
        assert_eq!(a, b);
        assert!(
            std::ptr::eq(a.as_str(), b.as_str()),
            "a hit hands out the same text"
        );
        assert_eq!(budget.created(), 1);
        // Many distinct atoms: collisions evict, and each is counted exactly once.
        for i in 0..300 {
            let name = format!("atom{i}");
            assert_eq!(budget.atom(&name).unwrap().as_str(), name);
        }
        assert_eq!(budget.created(), 301);
        for i in 0..300 {
            let name = format!("atom{i}");
            assert_eq!(budget.atom(&name).unwrap().as_str(), name, "no stale slot");
        }
        assert_eq!(
            budget.created(),
            301,
            "existing atoms cost nothing, cached or not"
        );
        assert_eq!(
            budget.atom("one_too_many"),
            Err(AtomRefusal::BudgetSpent { limit: 301 })
        );
        assert!(!table.contains("one_too_many"));
    }

    #[test]
    fn a_full_table_refuses_new_atoms() {
        let table = LocalAtoms::with_capacity(1);
        let mut budget = AtomBudget::new(table, 10);
        budget.admit("x").unwrap();
        assert_eq!(budget.admit("y"), Err(AtomRefusal::TableFull));
        budget.admit("x").unwrap();
    }
}
