//! Binaries: small ones inline in terms, large ones on the shared refcounted heap.
//!
//! Invariants:
//! - A binary of at most [`HEAP_BINARY_MAX`] bytes is a *heap binary*: its bytes are
//!   copied into the term (a fragment's or heap's words), like any other data.
//! - A larger one is a [`RefcBin`]: one immutable buffer behind an `Arc`, shared by
//!   every fragment, heap and Python object that holds it. Sending it copies a
//!   pointer, never the bytes.
//! - [`binary_bytes`] is the sum of the lengths of all live `RefcBin` buffers: a
//!   buffer's length is added when it is created and subtracted when its last
//!   holder drops it. It feeds `memory()[binary]`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Largest binary stored inline in a term; larger ones are refcounted and shared.
/// 64 bytes is BEAM's `ERL_ONHEAP_BIN_LIMIT`: below it a copy is cheaper than a
/// refcount and an allocation.
pub const HEAP_BINARY_MAX: usize = 64;

static BINARY_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held by all live refcounted binaries in this process.
pub fn binary_bytes() -> usize {
    BINARY_BYTES.load(Ordering::Relaxed)
}

struct Buffer {
    bytes: Vec<u8>,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        BINARY_BYTES.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

/// A refcounted, immutable, shared byte buffer. Cloning bumps a refcount.
#[derive(Clone)]
pub struct RefcBin(Arc<Buffer>);

impl RefcBin {
    /// Takes ownership of `bytes` without copying them.
    pub fn from_vec(bytes: Vec<u8>) -> RefcBin {
        BINARY_BYTES.fetch_add(bytes.len(), Ordering::Relaxed);
        RefcBin(Arc::new(Buffer { bytes }))
    }

    /// Copies `bytes` into a new buffer.
    pub fn from_slice(bytes: &[u8]) -> RefcBin {
        RefcBin::from_vec(bytes.to_vec())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.bytes.len()
    }

    /// True for an empty binary.
    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }

    /// Whether both share one buffer.
    pub fn ptr_eq(a: &RefcBin, b: &RefcBin) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// Holders of this buffer (fragments, heaps, handles).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl AsRef<[u8]> for RefcBin {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for RefcBin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefcBin({} bytes)", self.len())
    }
}

impl PartialEq for RefcBin {
    fn eq(&self, other: &Self) -> bool {
        RefcBin::ptr_eq(self, other) || self.as_slice() == other.as_slice()
    }
}
impl Eq for RefcBin {}

/// A binary in owned form: inline bytes or a shared refcounted buffer. Equality,
/// hashing and order are by content, whichever the representation.
#[derive(Clone, Debug)]
pub enum Binary {
    /// Bytes stored in the term itself (small binaries).
    Inline(Vec<u8>),
    /// A shared, reference-counted buffer (binaries over [`HEAP_BINARY_MAX`](super::HEAP_BINARY_MAX) bytes).
    Refc(RefcBin),
}

impl Binary {
    /// Picks the representation by size: inline up to [`HEAP_BINARY_MAX`] bytes.
    pub fn new(bytes: Vec<u8>) -> Binary {
        if bytes.len() <= HEAP_BINARY_MAX {
            Binary::Inline(bytes)
        } else {
            Binary::Refc(RefcBin::from_vec(bytes))
        }
    }

    /// A binary holding a copy of `bytes` (shared when large).
    pub fn from_slice(bytes: &[u8]) -> Binary {
        Binary::new(bytes.to_vec())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Binary::Inline(v) => v,
            Binary::Refc(r) => r.as_slice(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True for an empty binary.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl PartialEq for Binary {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for Binary {}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn refc_is_shared_and_send() {
        assert_send_sync::<RefcBin>();
        let v = vec![7u8; 100];
        let p = v.as_ptr();
        let a = RefcBin::from_vec(v);
        assert_eq!(a.as_slice().as_ptr(), p, "no copy");
        let b = a.clone();
        assert!(RefcBin::ptr_eq(&a, &b));
        assert_eq!(a.ref_count(), 2);
        assert!(matches!(Binary::new(vec![1; 64]), Binary::Inline(_)));
        assert!(matches!(Binary::new(vec![1; 65]), Binary::Refc(_)));
    }
}
