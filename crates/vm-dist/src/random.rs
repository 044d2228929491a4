//! Unpredictable numbers for challenges and generated cookies, without a dependency.
//!
//! std's `RandomState` is seeded from the operating system's random source; hashing a
//! counter and the time with a fresh one yields SipHash output under a secret key,
//! which nobody without the key can predict. That is what a handshake challenge needs
//! (it must not repeat or be guessable, or a recorded reply could be replayed).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 unpredictable bits.
pub(crate) fn u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// 32 unpredictable bits: a handshake challenge.
pub(crate) fn challenge() -> u32 {
    (u64() >> 16) as u32
}
