//! Registered names: `register`, `unregister`, `whereis`.
//!
//! One read-mostly map under an `RwLock`: a named send takes the read lock for a hash
//! lookup (tens of ns); pid sends, the hot path, never touch it. Each process records
//! whether it holds a name (an atomic flag in the table would do as well; we keep a
//! reverse map) so that exit releases the name without scanning.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::term::{Atom, Pid};

#[derive(Default)]
struct Maps {
    by_name: HashMap<Atom, Pid>,
    by_pid: HashMap<Pid, Atom>,
}

/// The name registry of one VM.
#[derive(Default)]
pub(crate) struct Registry {
    maps: RwLock<Maps>,
}

impl Registry {
    /// Registers `pid` as `name`. Errors (badarg, as Erlang) if the name is taken or
    /// the process already has a name. The caller checks that `pid` is alive.
    pub(crate) fn register(&self, name: Atom, pid: Pid) -> Result<()> {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = m.by_name.get(&name) {
            return Err(Error::BadArg(format!(
                "the name {name} is already registered to {other}"
            )));
        }
        if let Some(old) = m.by_pid.get(&pid) {
            return Err(Error::BadArg(format!(
                "{pid} is already registered as {old}; unregister it first"
            )));
        }
        m.by_name.insert(name, pid);
        m.by_pid.insert(pid, name);
        Ok(())
    }

    /// Removes `name`; returns the pid it named.
    pub(crate) fn unregister(&self, name: Atom) -> Result<Pid> {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let pid = m
            .by_name
            .remove(&name)
            .ok_or_else(|| Error::BadArg(format!("the name {name} is not registered")))?;
        m.by_pid.remove(&pid);
        Ok(pid)
    }

    /// The pid registered as `name`.
    pub(crate) fn whereis(&self, name: Atom) -> Option<Pid> {
        let m = self.maps.read().unwrap_or_else(|e| e.into_inner());
        m.by_name.get(&name).copied()
    }

    /// The name of `pid`, if it has one.
    pub(crate) fn name_of(&self, pid: Pid) -> Option<Atom> {
        let m = self.maps.read().unwrap_or_else(|e| e.into_inner());
        m.by_pid.get(&pid).copied()
    }

    /// Releases whatever name `pid` holds (process exit).
    pub(crate) fn release(&self, pid: Pid) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = m.by_pid.remove(&pid) {
            m.by_name.remove(&name);
        }
    }

    /// All registered names.
    pub(crate) fn names(&self) -> Vec<Atom> {
        let m = self.maps.read().unwrap_or_else(|e| e.into_inner());
        m.by_name.keys().copied().collect()
    }
}
