//! Maps keyed by reference numbers (monitors, aliases), with a hasher made for them.
//!
//! References come from one global counter (`Ref::new`), never from user input, so the
//! keys are distinct, dense and not chosen by an adversary: SipHash's protection against
//! hash flooding buys nothing here, and it was ~3% of a `gen_server.call` (a call
//! inserts and removes a monitor on both sides and an alias in the router). A Fibonacci
//! multiply spreads consecutive numbers over the table's high bits, which hashbrown uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one `u64` (a reference number) by a multiply; see the module docs.
#[derive(Default, Clone, Copy)]
pub(crate) struct RefHasher(u64);

impl Hasher for RefHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else in byte by byte.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map from reference numbers to `V`.
pub(crate) type RefMap<V> = HashMap<u64, V, BuildHasherDefault<RefHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_refs_spread_and_round_trip() {
        let mut m: RefMap<u64> = RefMap::default();
        for i in 0..10_000u64 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000u64).all(|i| m.get(&i) == Some(&(i * 2))));
        let mut top = std::collections::HashSet::new();
        for i in 0..256u64 {
            let mut h = RefHasher::default();
            h.write_u64(i);
            top.insert(h.finish() >> 56);
        }
        assert!(top.len() > 128, "high bits poorly spread: {}", top.len());
    }
}
