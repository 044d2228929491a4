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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

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
}
