//! [`Heap`]: a process's private heap — young and old generation, collected by a
//! copying generational GC, with the refcounted binaries it references kept in an
//! off-heap list per generation.
//!
//! ## Memory
//! Each generation is a `Vec<u64>` region (young = region 0, old = region 1, named
//! by the pointer's region bit, see `word.rs`) plus a `Vec<RefcBin>` whose entries
//! the region's REFC_BIN objects index. New data (`alloc_term`, `attach`) always goes
//! to the young generation. `Heap::new()` allocates nothing: regions are reserved on
//! first use, and the rarely used parts (old-generation refc list, GC counters and
//! limits) live behind one `Option<Box<_>>` created by the first GC. An idle heap is
//! 88 bytes.
//!
//! ## Invariants
//! - Terms are immutable, so data only ever points at older data. Young objects may
//!   point at young or old objects; old objects point only at old ones: a minor GC
//!   promotes *every* young survivor, so no old object is ever left pointing into
//!   the young generation and no remembered set is needed.
//! - Every region is parseable from offset 0 (see `word.rs`).
//! - A `Word` handed out by this heap is valid until the next `gc`, which rewrites the
//!   roots it is given; words not passed as roots are dangling afterwards (using one
//!   panics on a bounds check or reads another term; it is never UB).
//!
//! ## GC policy
//! - **Minor** (the default): Cheney-copy the young objects reachable from the roots
//!   to the end of the old generation (promote-all; BEAM instead ages objects once
//!   through a high-water mark, which saves promoting very young data — we trade
//!   that for a simpler collector and no aging bookkeeping), then empty the young
//!   generation. Cost is proportional to the young survivors only.
//! - **Major** (fullsweep): Cheney-copy everything reachable from both generations
//!   into a fresh old generation, dropping the old regions whole. [`Heap::gc`] does
//!   a major instead of a minor when the old generation has reached `old_limit`
//!   (the heap-size series value >= [`OLD_GROWTH`] times the live data after the
//!   last major, at least [`MIN_OLD_SIZE`]) — like BEAM, which goes fullsweep when
//!   the old heap is full — or after [`FULLSWEEP_AFTER`] minors in a row. Callers
//!   can force one with [`Heap::gc_major`] (`erlang:garbage_collect/0`).
//! - **Sizes**: the young generation's GC threshold follows BEAM's heap-size series
//!   (233, 376, 610, 987, ... : `a(n) = a(n-1) + a(n-2) + 1`, then +20% per step
//!   past ~1M words). After each GC it is set to the smallest size that holds
//!   [`YOUNG_GROWTH`] times the words that survived from the young generation, so a
//!   process with a big working set collects less often and a process whose data
//!   died shrinks back to [`MIN_HEAP_SIZE`]; the young vector's allocation is cut to
//!   the threshold so the memory returns to the allocator.
//! - **Refc binaries**: each collected generation's refc list is rebuilt from the
//!   REFC_BIN objects the GC copies; the old list is dropped, releasing the binaries
//!   that are no longer reachable (so `binary_bytes()` falls once the last holder
//!   collects). Dropping the heap releases everything.
//! - **Cost**: a GC reports `reductions = 1 + words copied / GC_WORDS_PER_REDUCTION`,
//!   which the scheduler charges to the process (BEAM charges GC work the same way).

use std::mem;

use super::encode;
use super::view::{Src, View};
use super::word::*;
use super::{Fragment, RefcBin, Term};

/// Smallest young-generation size in words (BEAM's minimum heap size).
pub const MIN_HEAP_SIZE: usize = 233;
/// Smallest old-generation limit in words before a major GC is considered.
pub const MIN_OLD_SIZE: usize = 4 * MIN_HEAP_SIZE;
/// Minors in a row after which the next GC is major. BEAM's default is 65535 and
/// leans on the old heap filling up; because we promote every survivor, dead data
/// reaches the old generation sooner, and old garbage keeps refc binaries alive
/// (BEAM's classic "binary leak", whose standard cure is a low `fullsweep_after`).
/// 16 bounds that retention to 16 collections while keeping majors to at most
/// one in 17 GCs. Only minors that promoted something count (see `gc_minor`).
pub const FULLSWEEP_AFTER: u32 = 16;
/// Words of GC copying charged as one reduction (a reduction is ~tens of ns of
/// work; copying 10 words with their scan is about that).
pub const GC_WORDS_PER_REDUCTION: usize = 10;
/// Young threshold after GC = heap size series value >= YOUNG_GROWTH * survivors.
pub const YOUNG_GROWTH: usize = 2;
/// Old limit after a major = heap size series value >= OLD_GROWTH * live words.
pub const OLD_GROWTH: usize = 2;
/// Past this size the heap-size series grows by 20% per step (as BEAM does), not
/// Fibonacci-like.
const SERIES_LINEAR_FROM: usize = 1 << 20;

/// Smallest size in BEAM's heap-size series that is `>= words`.
pub fn heap_size_at_least(words: usize) -> usize {
    let (mut a, mut b) = (MIN_HEAP_SIZE, 376usize);
    while a < words {
        if a >= SERIES_LINEAR_FROM {
            a += a / 5;
        } else {
            (a, b) = (b, a + b + 1);
        }
    }
    a
}

/// What a collection did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// A fullsweep of both generations (else a minor of the young one).
    pub major: bool,
    /// Words copied (the live data of the collected generations).
    pub live_words: usize,
    /// Words freed.
    pub reclaimed_words: usize,
    /// Work done, in reductions, to charge to the process.
    pub reductions: usize,
}

/// Sizes and counters of a heap.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Words in use in the young generation.
    pub young_words: usize,
    /// Words allocated for the young generation.
    pub young_capacity_words: usize,
    /// Young-generation size at which `needs_gc` turns true.
    pub young_limit_words: usize,
    /// Words in use in the old generation.
    pub old_words: usize,
    /// Words allocated for the old generation.
    pub old_capacity_words: usize,
    /// Bytes the heap holds (allocations, struct included; refc buffers excluded).
    pub heap_bytes: usize,
    /// Minor collections run.
    pub minor_gcs: u64,
    /// Major (fullsweep) collections run.
    pub major_gcs: u64,
    /// Words reclaimed by all collections.
    pub reclaimed_words_total: u64,
    /// Refc binary handles held (both generations).
    pub refc_binaries: usize,
    /// Bytes of those binaries (shared buffers may also be counted by other heaps).
    pub refc_binary_bytes: usize,
}

struct Extra {
    old_bins: Vec<RefcBin>,
    old_limit: usize,
    minor_gcs: u64,
    major_gcs: u64,
    minors_since_major: u32,
    reclaimed_total: u64,
}

impl Extra {
    fn new() -> Box<Extra> {
        Box::new(Extra {
            old_bins: Vec::new(),
            old_limit: MIN_OLD_SIZE,
            minor_gcs: 0,
            major_gcs: 0,
            minors_since_major: 0,
            reclaimed_total: 0,
        })
    }
}

/// A process's heap.
pub struct Heap {
    young: Vec<u64>,
    old: Vec<u64>,
    young_bins: Vec<RefcBin>,
    young_limit: usize,
    extra: Option<Box<Extra>>,
}

impl Default for Heap {
    fn default() -> Self {
        Heap::new()
    }
}

impl Heap {
    /// An empty heap; allocates nothing.
    pub const fn new() -> Heap {
        Heap {
            young: Vec::new(),
            old: Vec::new(),
            young_bins: Vec::new(),
            young_limit: MIN_HEAP_SIZE,
            extra: None,
        }
    }

    /// Reserves the young generation up to its threshold on first use, so that
    /// building small terms does not reallocate word by word.
    #[inline]
    fn reserve_young(&mut self, words: usize) {
        if self.young.capacity() - self.young.len() < words {
            let want = words.max(self.young_limit.saturating_sub(self.young.len()));
            self.young.reserve(want);
        }
    }

    /// Builds `t` on the young generation.
    pub fn alloc_term(&mut self, t: &Term) -> Word {
        if let Some(w) = encode::immediate_of(t) {
            return w;
        }
        self.reserve_young(encode::words_needed(t));
        encode::write_term(&mut self.young, &mut self.young_bins, t)
    }

    /// Copies a view (from a fragment or another heap) onto the young generation.
    pub fn alloc_view(&mut self, v: View<'_>) -> Word {
        if v.word().is_immediate() {
            return v.word();
        }
        encode::copy_view(&mut self.young, &mut self.young_bins, v)
    }

    /// Moves a received message onto the young generation: one relocating pass over
    /// its words; its refc binaries move to the young refc list (no refcount
    /// traffic).
    pub fn attach(&mut self, f: Fragment) -> Word {
        let (root, words, bins) = f.into_parts();
        if words.is_empty() {
            return root;
        }
        self.reserve_young(words.len());
        let bin_base = self.young_bins.len();
        let w = encode::append_relocated(&mut self.young, &words, bin_base, root);
        self.young_bins.extend(bins);
        w
    }

    #[inline]
    /// A read-only view of the term `w` on this heap.
    pub fn view(&self, w: Word) -> View<'_> {
        View::new(w, Src::Heap(self))
    }

    /// Copies the term out, for a send.
    pub fn to_fragment(&self, w: Word) -> Fragment {
        Fragment::copy_of(self.view(w))
    }

    /// Whether the young generation has reached its size.
    #[inline]
    pub fn needs_gc(&self) -> bool {
        self.young.len() >= self.young_limit
    }

    /// Collects: a minor, or a major when the policy (module docs) says so. `roots`
    /// are the live words; they are rewritten in place.
    pub fn gc(&mut self, roots: &mut [Word]) -> GcReport {
        let extra = self.extra.get_or_insert_with(Extra::new);
        let major =
            extra.minors_since_major >= FULLSWEEP_AFTER || self.old.len() >= extra.old_limit;
        if major {
            self.gc_major(roots)
        } else {
            self.gc_minor(roots)
        }
    }

    /// A minor collection: promote the young survivors to the old generation.
    pub fn gc_minor(&mut self, roots: &mut [Word]) -> GcReport {
        let extra = self.extra.get_or_insert_with(Extra::new);
        let young_before = self.young.len();
        let old_start = self.old.len();
        let mut ev = Evac {
            young: &mut self.young,
            old: None,
            young_bins: &self.young_bins,
            old_bins: &[],
            to: &mut self.old,
            to_bins: &mut extra.old_bins,
            from_young: 0,
        };
        for r in roots.iter_mut() {
            *r = ev.evac(*r);
        }
        ev.scan(old_start);
        let promoted = ev.from_young;
        let reclaimed = young_before - promoted;
        extra.minor_gcs += 1;
        // Only a minor that promoted something can have put (future) garbage in the old
        // generation; one that promoted nothing leaves the old generation as the last
        // major left it, so it does not bring the next major closer. (A process that
        // makes only short-lived garbage beside a large live set then never pays for
        // copying that set again: B8's lateness p99 was dominated by such majors.)
        if promoted > 0 {
            extra.minors_since_major += 1;
        }
        extra.reclaimed_total += reclaimed as u64;
        self.reset_young(promoted);
        GcReport {
            major: false,
            live_words: promoted,
            reclaimed_words: reclaimed,
            reductions: 1 + promoted / GC_WORDS_PER_REDUCTION,
        }
    }

    /// A major collection (fullsweep): compact everything live into a fresh old
    /// generation.
    pub fn gc_major(&mut self, roots: &mut [Word]) -> GcReport {
        let extra = self.extra.get_or_insert_with(Extra::new);
        let before = self.young.len() + self.old.len();
        let mut to = Vec::new();
        let mut to_bins = Vec::new();
        let mut ev = Evac {
            young: &mut self.young,
            old: Some(&mut self.old),
            young_bins: &self.young_bins,
            old_bins: &extra.old_bins,
            to: &mut to,
            to_bins: &mut to_bins,
            from_young: 0,
        };
        for r in roots.iter_mut() {
            *r = ev.evac(*r);
        }
        ev.scan(0);
        let from_young = ev.from_young;
        let live = to.len();
        let reclaimed = before - live;
        extra.old_limit = heap_size_at_least((live * OLD_GROWTH).max(MIN_OLD_SIZE));
        to.shrink_to(extra.old_limit);
        to_bins.shrink_to_fit();
        self.old = to;
        extra.old_bins = to_bins; // drops the unreachable old refc handles
        extra.major_gcs += 1;
        extra.minors_since_major = 0;
        extra.reclaimed_total += reclaimed as u64;
        self.reset_young(from_young);
        GcReport {
            major: true,
            live_words: live,
            reclaimed_words: reclaimed,
            reductions: 1 + live / GC_WORDS_PER_REDUCTION,
        }
    }

    /// Empties the young generation after a GC and resizes it for `survivors`.
    fn reset_young(&mut self, survivors: usize) {
        self.young.clear();
        self.young_bins.clear(); // drops the unreachable young refc handles
        self.young_limit = heap_size_at_least((survivors * YOUNG_GROWTH).max(MIN_HEAP_SIZE));
        if self.young.capacity() > self.young_limit {
            self.young.shrink_to(self.young_limit);
        }
        if self.young_bins.capacity() > 16 {
            self.young_bins = Vec::new();
        }
    }

    /// Sizes and counters of this heap (walks its binary handles: for introspection, not for every slice).
    pub fn stats(&self) -> HeapStats {
        let (minor, major, reclaimed, old_bins) = match &self.extra {
            Some(e) => (e.minor_gcs, e.major_gcs, e.reclaimed_total, &e.old_bins[..]),
            None => (0, 0, 0, &[][..]),
        };
        let bins = self.young_bins.iter().chain(old_bins);
        HeapStats {
            young_words: self.young.len(),
            young_capacity_words: self.young.capacity(),
            young_limit_words: self.young_limit,
            old_words: self.old.len(),
            old_capacity_words: self.old.capacity(),
            heap_bytes: self.byte_size(),
            minor_gcs: minor,
            major_gcs: major,
            reclaimed_words_total: reclaimed,
            refc_binaries: self.young_bins.len() + old_bins.len(),
            refc_binary_bytes: bins.map(|b| b.len()).sum(),
        }
    }

    /// Bytes this heap holds: its struct, its word and refc-list allocations (the
    /// refc buffers themselves are counted in `binary_bytes()`).
    pub fn byte_size(&self) -> usize {
        let bin = mem::size_of::<RefcBin>();
        let mut n = mem::size_of::<Heap>()
            + 8 * (self.young.capacity() + self.old.capacity())
            + bin * self.young_bins.capacity();
        if let Some(e) = &self.extra {
            n += mem::size_of::<Extra>() + bin * e.old_bins.capacity();
        }
        n
    }

    #[inline]
    pub(crate) fn region(&self, old: bool) -> &[u64] {
        if old {
            &self.old
        } else {
            &self.young
        }
    }

    #[inline]
    pub(crate) fn region_bins(&self, old: bool) -> &[RefcBin] {
        if !old {
            &self.young_bins
        } else {
            match &self.extra {
                Some(e) => &e.old_bins,
                None => &[],
            }
        }
    }
}

/// One Cheney evacuation: from the young region (and the old one, for a major) to
/// `to`. A moved object's first word becomes a FWD header holding its new offset;
/// cons cells have no header, but their head is a term, never a header, so the
/// marker is unambiguous.
struct Evac<'h> {
    young: &'h mut [u64],
    /// `Some` in a major collection; in a minor, old pointers are left alone.
    old: Option<&'h mut [u64]>,
    young_bins: &'h [RefcBin],
    old_bins: &'h [RefcBin],
    to: &'h mut Vec<u64>,
    to_bins: &'h mut Vec<RefcBin>,
    /// Words copied out of the young region.
    from_young: usize,
}

impl Evac<'_> {
    fn evac(&mut self, w: Word) -> Word {
        if !w.is_pointer() {
            return w;
        }
        let from_old = w.is_old();
        let (mem, bins) = if from_old {
            match self.old.as_deref_mut() {
                Some(m) => (m, self.old_bins),
                None => return w, // minor: old data stays
            }
        } else {
            (&mut *self.young, self.young_bins)
        };
        let off = w.offset();
        let first = mem[off];
        if is_header(first) && subtag(first) == SUB_FWD {
            return Word::ptr(w.is_cons(), OLD, payload(first) as usize);
        }
        let new = self.to.len();
        if w.is_cons() {
            self.to.extend_from_slice(&mem[off..off + 2]);
        } else if is_refc(subtag(first)) {
            let bin = bins[payload(first) as usize].clone();
            self.to
                .push(header(subtag(first), self.to_bins.len() as u64));
            self.to_bins.push(bin);
        } else {
            self.to
                .extend_from_slice(&mem[off..off + object_words(first)]);
        }
        mem[off] = header(SUB_FWD, new as u64);
        if !from_old {
            self.from_young += self.to.len() - new;
        }
        Word::ptr(w.is_cons(), OLD, new)
    }

    /// Scans `to` from `start`, evacuating what every term word points at.
    fn scan(&mut self, start: usize) {
        let mut i = start;
        while i < self.to.len() {
            let x = self.to[i];
            if is_header(x) {
                i += 1 + raw_words(x);
            } else {
                let w = Word(x);
                if w.is_pointer() {
                    let moved = self.evac(w);
                    self.to[i] = moved.to_bits();
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_size() {
        assert_eq!(heap_size_at_least(0), 233);
        assert_eq!(heap_size_at_least(234), 376);
        assert_eq!(heap_size_at_least(377), 610);
        assert_eq!(heap_size_at_least(611), 987);
        assert!(mem::size_of::<Heap>() <= 96);
        let h = Heap::new();
        assert_eq!(h.young.capacity(), 0);
    }
}
