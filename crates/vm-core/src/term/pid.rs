//! Process identifiers and references.
//!
//! Invariants:
//! - A [`Pid`] is `(index, serial)`: `index` is a slot in the process table and fits
//!   [`PID_INDEX_BITS`] bits; `serial` counts reuses of that slot, so a pid is never
//!   reused while anything can still refer to it (BEAM's scheme). Pids whose index
//!   fits 28 bits are immediate words (see `word.rs`); larger ones (only possible
//!   when built by hand, e.g. from Python) are stored boxed, never truncated.
//! - A [`Ref`] is a 64-bit number from one global counter: unique for the life of
//!   the node (2^64 makes wrap-around moot).
//! - A pid or reference of another VM is *external*: [`ExternalPid`] and
//!   [`ExternalRef`] carry the node's name and the creation of the VM that made them
//!   (as Erlang's do: a VM started again on the same node has a new creation). A
//!   local [`Pid`] or [`Ref`] always means the current VM's; the binding turns a pid
//!   of a stopped VM (an earlier creation) or, later, of another node into an external
//!   one, so it never reaches a process of the current VM. Terms store them boxed
//!   (see `word.rs`); they never equal a local pid or ref, and order after them.

use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Atom;

/// Bits of a pid's table index that fit in an immediate word. 2^28 = 268M slots,
/// far above any `process_limit` we support (tens of millions).
pub const PID_INDEX_BITS: u32 = 28;
/// Largest pid index that encodes as an immediate word.
pub const MAX_PID_INDEX: u32 = (1 << PID_INDEX_BITS) - 1;

/// A process identifier, displayed `<0.INDEX.SERIAL>`.
#[derive(Copy, Clone, Eq, PartialEq, Hash, Ord, PartialOrd, Debug)]
pub struct Pid {
    /// The process table slot.
    pub index: u32,
    /// The slot's serial when the pid was made (tells its occupants apart).
    pub serial: u32,
}

impl Pid {
    /// The pid of slot `index` with `serial`.
    pub const fn new(index: u32, serial: u32) -> Pid {
        Pid { index, serial }
    }

    /// Whether the pid fits an immediate word (index within [`PID_INDEX_BITS`]).
    pub const fn is_compact(self) -> bool {
        self.index <= MAX_PID_INDEX
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<0.{}.{}>", self.index, self.serial)
    }
}

/// A unique reference (`make_ref()`), displayed `#Ref<0.N>`.
#[derive(Copy, Clone, Eq, PartialEq, Hash, Ord, PartialOrd, Debug)]
pub struct Ref(pub u64);

/// Next reference number; starts at 1 so that `Ref(0)` is never handed out.
static NEXT_REF: AtomicU64 = AtomicU64::new(1);

impl Ref {
    /// A fresh reference, unique on this node.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Ref {
        Ref(NEXT_REF.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Ref<0.{}>", self.0)
    }
}

/// A pid of another VM: another node's, or this node's from an earlier creation
/// (module docs). Displayed `<node.id.serial.creation>`.
#[derive(Copy, Clone, Eq, PartialEq, Hash, Debug)]
pub struct ExternalPid {
    /// The node the process lives (or lived) on.
    pub node: Atom,
    /// The process's id on that node (a local pid's `index`).
    pub id: u32,
    /// The id's serial (a local pid's `serial`).
    pub serial: u32,
    /// The creation of the VM that made the pid.
    pub creation: u32,
}

impl ExternalPid {
    /// The external form of `pid`, a pid of `node`'s VM of creation `creation`.
    pub const fn new(node: Atom, pid: Pid, creation: u32) -> ExternalPid {
        ExternalPid {
            node,
            id: pid.index,
            serial: pid.serial,
            creation,
        }
    }

    /// The `(id, serial)` part, as a local pid would hold it.
    pub const fn local_part(self) -> Pid {
        Pid::new(self.id, self.serial)
    }
}

/// Term order among external pids: node name, then creation, id, serial.
impl Ord for ExternalPid {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        cmp_node(self.node, other.node)
            .then(self.creation.cmp(&other.creation))
            .then(self.id.cmp(&other.id))
            .then(self.serial.cmp(&other.serial))
    }
}

impl PartialOrd for ExternalPid {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ExternalPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<{}.{}.{}.{}>",
            self.node.as_str(),
            self.id,
            self.serial,
            self.creation
        )
    }
}

/// Most 32-bit words an [`ExternalRef`] holds (Erlang's references have 3 to 5).
pub const MAX_REF_WORDS: usize = 5;

/// A reference made by another VM (module docs): its node, that VM's creation and 1
/// to [`MAX_REF_WORDS`] words of id. Displayed `#Ref<node.creation.w0.w1...>`.
#[derive(Copy, Clone, Eq, PartialEq, Hash, Debug)]
pub struct ExternalRef {
    node: Atom,
    creation: u32,
    len: u8,
    words: [u32; MAX_REF_WORDS],
}

impl ExternalRef {
    /// A reference of `node`'s VM of creation `creation`; `None` unless `words` holds 1
    /// to [`MAX_REF_WORDS`] words.
    pub fn new(node: Atom, creation: u32, words: &[u32]) -> Option<ExternalRef> {
        if words.is_empty() || words.len() > MAX_REF_WORDS {
            return None;
        }
        let mut w = [0; MAX_REF_WORDS];
        w[..words.len()].copy_from_slice(words);
        Some(ExternalRef {
            node,
            creation,
            len: words.len() as u8,
            words: w,
        })
    }

    /// The node that made it.
    pub const fn node(&self) -> Atom {
        self.node
    }

    /// The creation of the VM that made it.
    pub const fn creation(&self) -> u32 {
        self.creation
    }

    /// Its id words (1 to [`MAX_REF_WORDS`]).
    pub fn words(&self) -> &[u32] {
        &self.words[..self.len as usize]
    }
}

/// Term order among external references: node name, then creation, then the words.
impl Ord for ExternalRef {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        cmp_node(self.node, other.node)
            .then(self.creation.cmp(&other.creation))
            .then_with(|| self.words().cmp(other.words()))
    }
}

impl PartialOrd for ExternalRef {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ExternalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Ref<{}.{}", self.node.as_str(), self.creation)?;
        for w in self.words() {
            write!(f, ".{w}")?;
        }
        f.write_str(">")
    }
}

fn cmp_node(a: Atom, b: Atom) -> CmpOrdering {
    if a == b {
        CmpOrdering::Equal
    } else {
        a.as_str().cmp(b.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_uniqueness() {
        assert_eq!(Pid::new(5, 1).to_string(), "<0.5.1>");
        let a = Ref::new();
        let b = Ref::new();
        assert!(b.0 > a.0);
        assert_eq!(Ref(7).to_string(), "#Ref<0.7>");
        assert!(Pid::new(MAX_PID_INDEX, 0).is_compact());
        assert!(!Pid::new(MAX_PID_INDEX + 1, 0).is_compact());
    }

    #[test]
    fn external_identifiers() {
        let p = ExternalPid::new(Atom::NONODE, Pid::new(5, 1), 3);
        assert_eq!(p.to_string(), "<nonode@nohost.5.1.3>");
        assert_eq!(p.local_part(), Pid::new(5, 1));
        let later = ExternalPid { creation: 4, ..p };
        assert!(p < later && p != later);
        let r = ExternalRef::new(Atom::NONODE, 2, &[1, 2, 3]).expect("3 words");
        assert_eq!(r.words(), &[1, 2, 3]);
        assert_eq!(r.to_string(), "#Ref<nonode@nohost.2.1.2.3>");
        assert!(ExternalRef::new(Atom::NONODE, 2, &[]).is_none());
        assert!(ExternalRef::new(Atom::NONODE, 2, &[0; MAX_REF_WORDS + 1]).is_none());
        let shorter = ExternalRef::new(Atom::NONODE, 2, &[1, 2]).expect("2 words");
        assert!(shorter < r && shorter != r);
    }
}
