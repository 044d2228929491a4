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
//! - A buffer's bytes are either owned (a `Vec<u8>`) or *foreign*: memory that
//!   another owner keeps alive and never changes (a Python `bytes` object, shared
//!   without a copy: [`RefcBin::from_foreign`]). The owner is dropped with the last
//!   holder, on whatever thread that is; it must be safe to drop anywhere (a Python
//!   owner defers its decref to a thread holding the GIL).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Largest binary stored inline in a term; larger ones are refcounted and shared.
/// 64 bytes is BEAM's `ERL_ONHEAP_BIN_LIMIT`: below it a copy is cheaper than a
/// refcount and an allocation.
pub const HEAP_BINARY_MAX: usize = 64;

static BINARY_BYTES: AtomicUsize = AtomicUsize::new(0);
static FOREIGN_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held by all live refcounted binaries in this process.
pub fn binary_bytes() -> usize {
    BINARY_BYTES.load(Ordering::Relaxed)
}

/// The part of [`binary_bytes`] in foreign buffers (memory another owner allocated,
/// such as Python `bytes` objects shared without a copy).
pub fn foreign_binary_bytes() -> usize {
    FOREIGN_BYTES.load(Ordering::Relaxed)
}

enum Buffer {
    Owned(Vec<u8>),
    /// Bytes owned by `_owner`, which keeps them alive and unchanged until dropped.
    Foreign {
        ptr: *const u8,
        len: usize,
        _owner: Box<dyn Send + Sync>,
    },
}

// SAFETY: an owned buffer is a Vec<u8>. A foreign one is a pointer to immutable bytes
// kept alive by `_owner` (the `from_foreign` contract: valid for `len` bytes, never
// written, for as long as the owner lives), and the owner itself is Send + Sync; the
// bytes are only ever read, so sharing and sending the pointer across threads is as
// sound as sharing a `&[u8]`.
unsafe impl Send for Buffer {}
// SAFETY: see `Send`: nothing in a buffer is ever mutated after construction.
unsafe impl Sync for Buffer {}

impl Buffer {
    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Owned(v) => v,
            // SAFETY: `from_foreign`'s contract: `ptr` is valid for reads of `len` bytes
            // that never change while the owner (dropped with this buffer) lives.
            Buffer::Foreign { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let len = self.bytes().len();
        BINARY_BYTES.fetch_sub(len, Ordering::Relaxed);
        if let Buffer::Foreign { .. } = self {
            FOREIGN_BYTES.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

/// A refcounted, immutable, shared byte buffer. Cloning bumps a refcount.
#[derive(Clone)]
pub struct RefcBin(Arc<Buffer>);

impl RefcBin {
    /// Takes ownership of `bytes` without copying them.
    pub fn from_vec(bytes: Vec<u8>) -> RefcBin {
        BINARY_BYTES.fetch_add(bytes.len(), Ordering::Relaxed);
        RefcBin(Arc::new(Buffer::Owned(bytes)))
    }

    /// Shares `len` bytes at `ptr` that `owner` keeps alive, without copying them;
    /// `owner` is dropped with the last holder, on whatever thread that is.
    ///
    /// # Safety
    /// `ptr` must be valid for reads of `len` bytes for as long as `owner` lives, and
    /// nothing may write those bytes meanwhile (e.g. the data of an immutable Python
    /// `bytes` object that `owner` holds a reference to).
    pub unsafe fn from_foreign(ptr: *const u8, len: usize, owner: Box<dyn Send + Sync>) -> RefcBin {
        BINARY_BYTES.fetch_add(len, Ordering::Relaxed);
        FOREIGN_BYTES.fetch_add(len, Ordering::Relaxed);
        RefcBin(Arc::new(Buffer::Foreign {
            ptr,
            len,
            _owner: owner,
        }))
    }

    /// Copies `bytes` into a new buffer.
    pub fn from_slice(bytes: &[u8]) -> RefcBin {
        RefcBin::from_vec(bytes.to_vec())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.0.bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.bytes().len()
    }

    /// True for an empty binary.
    pub fn is_empty(&self) -> bool {
        self.0.bytes().is_empty()
    }

    /// A weak handle: does not keep the buffer alive; [`WeakRefcBin::upgrade`] gives the
    /// buffer back while some holder still has it.
    pub fn downgrade(&self) -> WeakRefcBin {
        WeakRefcBin(Arc::downgrade(&self.0))
    }

    /// Whether the bytes belong to a foreign owner (shared, not copied, at creation).
    pub fn is_foreign(&self) -> bool {
        matches!(*self.0, Buffer::Foreign { .. })
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

/// A weak handle to a [`RefcBin`]'s buffer (see [`RefcBin::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakRefcBin(std::sync::Weak<Buffer>);

impl WeakRefcBin {
    /// The buffer, if a holder still has it.
    pub fn upgrade(&self) -> Option<RefcBin> {
        self.0.upgrade().map(RefcBin)
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} bytes)", self.bytes().len())
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

    #[test]
    fn foreign_bytes_are_shared_and_their_owner_dropped_with_the_last_holder() {
        struct Owner(#[allow(dead_code)] Arc<Vec<u8>>, Arc<AtomicUsize>);
        impl Drop for Owner {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        let data = Arc::new(vec![9u8; 1000]);
        let dropped = Arc::new(AtomicUsize::new(0));
        let owner = Box::new(Owner(data.clone(), dropped.clone()));
        // SAFETY: `data` is kept alive by the owner and never written.
        let a = unsafe { RefcBin::from_foreign(data.as_ptr(), data.len(), owner) };
        assert!(a.is_foreign());
        assert_eq!(a.as_slice().as_ptr(), data.as_ptr(), "no copy");
        let b = a.clone();
        let t = std::thread::spawn(move || b.len());
        assert_eq!(t.join().unwrap(), 1000);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(a);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "owner dropped with the last holder"
        );
    }
}
