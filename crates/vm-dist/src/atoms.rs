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

/// Counts the atoms a peer makes the node create, and refuses past a limit.
#[derive(Debug)]
pub struct AtomBudget<I> {
    table: I,
    created: u64,
    limit: u64,
}

impl<I: AtomInterner> AtomBudget<I> {
    /// A budget of `limit` new atoms over `table`.
    pub fn new(table: I, limit: u64) -> Self {
        AtomBudget {
            table,
            created: 0,
            limit,
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
    fn a_full_table_refuses_new_atoms() {
        let table = LocalAtoms::with_capacity(1);
        let mut budget = AtomBudget::new(table, 10);
        budget.admit("x").unwrap();
        assert_eq!(budget.admit("y"), Err(AtomRefusal::TableFull));
        budget.admit("x").unwrap();
    }
}
