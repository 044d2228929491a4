//! The private message queue of a process: arrival order, selective receive with a
//! save position, and an index that makes keyed receives independent of queue length.
//!
//! Only the process's owner touches a `Mailbox` (it lives in the process's private
//! state), so nothing here is synchronised. Messages move here from the lock-free
//! [`Inbox`](super::inbox::Inbox) when the owner drains it.
//!
//! Invariants:
//!
//! * Every message gets a sequence number at arrival; numbers increase strictly, so the
//!   queue (`q`) is sorted by sequence and a message can be found by binary search even
//!   after compaction removed the slots of taken messages.
//! * A taken message leaves a tombstone (`None`) until the front is popped past it or
//!   the queue is compacted (when tombstones outnumber live messages). Removing from
//!   the middle is therefore O(1) amortised, never an O(n) shift.
//! * `save` is the sequence number from which the *pending* selective receive resumes:
//!   messages before it were already rejected by that receive and are not rescanned.
//!   It resets to the front when a receive takes a message, times out, or is cancelled
//!   (Erlang's save pointer has the same life cycle).
//! * The index maps keys (a reference found in the first elements of a tuple, or the
//!   tuple's tag — its first element when that is an atom, small integer or text;
//!   the policy is [`Key::of_elem`], which receive patterns use too) to the
//!   sequence numbers of messages carrying them. It exists only while the queue is long
//!   (`INDEX_THRESHOLD`) *and* the process receives by key: a process that only takes
//!   messages in arrival order (a fan-in sink, a worker) never pays for it. The first
//!   keyed receive on a long queue indexes the queue once; from then on arrivals are
//!   indexed as they come, and when the queue next grows long, arrivals from the
//!   threshold on are indexed and the few older messages are scanned. Entries of
//!   messages taken by other receives go stale and are skipped and dropped lazily; the
//!   index is rebuilt when stale entries dominate a keyed take, dropped when stale
//!   entries dominate arrival-order takes (the process has gone back to plain
//!   receives: the next keyed receive indexes again) and when the queue empties. A
//!   keyed receive thus costs a hash lookup plus a scan of at most `INDEX_THRESHOLD`
//!   unindexed messages, whatever the queue length (amortised: the first one on a long
//!   queue examines it once) — BEAM gets this only for references created after a
//!   receive marker; we get it for tags too.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use crate::term::{Atom, Fragment, Kind, Ref, Term, View};

/// Queue length from which arrivals are indexed. Below it a linear scan of a few
/// dozen messages (a few ns each) is cheaper than maintaining a hash index on every
/// arrival, which would tax the common short-queue message path.
pub const INDEX_THRESHOLD: usize = 32;

/// Queue slots a mailbox keeps allocated when it empties: a flood that was drained
/// gives its memory back (a VecDeque keeps its capacity otherwise: 40 bytes per slot,
/// 42 MB after a million messages), while a mailbox that just handles steady traffic
/// keeps its small buffer.
pub const KEEP_SLOTS: usize = 1024;

/// How many leading tuple elements are searched for references when indexing
/// (covers `{reply, Ref, Value}`, `{Ref, Value}` and `{'DOWN', Ref, process, Pid, R}`).
pub const REF_SCAN_ELEMS: usize = 3;

/// What a keyed receive looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A reference among the first [`REF_SCAN_ELEMS`] elements of a tuple message.
    Ref(u64),
    /// The first element of a tuple message, an atom.
    Atom(u32),
    /// The first element of a tuple message, a small integer.
    Int(i64),
    /// The first element of a tuple message, a text (a hash of its UTF-8 bytes; the
    /// receive's own match settles collisions).
    Str(u64),
    /// A message that is not a tuple: an atom, small integer or text itself (a hash of
    /// its kind and value; the receive's own match settles collisions). Apart from the
    /// tag keys, so a bare `stop` is not looked for among `{stop, ...}` tuples.
    Bare(u64),
}

/// One element of a tuple, as the index sees it: what a message holds there, or what
/// a receive pattern fixes there (`Other` for anything else, a wildcard included).
#[derive(Clone, Copy, Debug)]
pub enum KeyElem<'a> {
    /// A reference.
    Ref(Ref),
    /// An atom.
    Atom(Atom),
    /// A small integer.
    Int(i64),
    /// A text's UTF-8 bytes.
    Str(&'a [u8]),
    /// Anything else (no key).
    Other,
}

impl<'a> KeyElem<'a> {
    /// What a message's element is, for the index.
    pub fn of_view(e: View<'a>) -> KeyElem<'a> {
        match e.kind() {
            Kind::Ref => e.as_ref().map_or(KeyElem::Other, KeyElem::Ref),
            Kind::Atom => e.as_atom().map_or(KeyElem::Other, KeyElem::Atom),
            Kind::Int => e.as_int().map_or(KeyElem::Other, KeyElem::Int),
            Kind::Str => e.as_str_bytes().map_or(KeyElem::Other, KeyElem::Str),
            _ => KeyElem::Other,
        }
    }

    /// What a literal in a pattern is, for the index.
    pub fn of_term(t: &'a Term) -> KeyElem<'a> {
        match t {
            Term::Ref(r) => KeyElem::Ref(*r),
            Term::Atom(a) => KeyElem::Atom(*a),
            Term::Int(i) => KeyElem::Int(*i),
            Term::Str(b) => KeyElem::Str(b.as_slice()),
            _ => KeyElem::Other,
        }
    }
}

impl Key {
    /// The key for a reference.
    pub fn of_ref(r: Ref) -> Key {
        Key::Ref(r.0)
    }

    /// The index policy, in one place: the key that element `i` of a tuple message
    /// is found by, if any. A reference among the first [`REF_SCAN_ELEMS`] elements;
    /// the tag (element 0) when it is an atom, a small integer or a text.
    pub fn of_elem(i: usize, e: KeyElem<'_>) -> Option<Key> {
        match e {
            KeyElem::Ref(r) if i < REF_SCAN_ELEMS => Some(Key::of_ref(r)),
            KeyElem::Atom(a) if i == 0 => Some(Key::Atom(a.index())),
            KeyElem::Int(x) if i == 0 => Some(Key::Int(x)),
            KeyElem::Str(b) if i == 0 => Some(Key::Str(str_hash(b))),
            _ => None,
        }
    }

    /// The key of a message that is not a tuple (or of a pattern that is such a
    /// literal): a reference's own key, else [`Key::Bare`] for an atom, small integer or
    /// text. A text message such as a Python `"stop"` is then received by key, as its
    /// old `('$str', ...)` tuple form was by its tag.
    pub fn of_bare(e: KeyElem<'_>) -> Option<Key> {
        let h = match e {
            KeyElem::Ref(r) => return Some(Key::of_ref(r)),
            KeyElem::Atom(a) => str_hash(&a.index().to_le_bytes()),
            KeyElem::Int(x) => str_hash(&x.to_le_bytes()) ^ 1,
            KeyElem::Str(b) => str_hash(b) ^ 2,
            KeyElem::Other => return None,
        };
        Some(Key::Bare(h))
    }

    /// The key a receive for a tuple pattern can use, from what the pattern fixes in
    /// its leading elements (see [`Key::of_elem`]): every message the pattern matches
    /// carries it. A reference wins over a tag (it is the more selective).
    pub fn for_pattern<'a>(elems: impl IntoIterator<Item = KeyElem<'a>>) -> Option<Key> {
        let mut tag = None;
        for (i, e) in elems.into_iter().take(REF_SCAN_ELEMS).enumerate() {
            match Key::of_elem(i, e) {
                Some(k @ Key::Ref(_)) => return Some(k),
                Some(k) => tag = tag.or(Some(k)),
                None => {}
            }
        }
        tag
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word per key: the variant in the top bits' stead (an odd multiple per
        // variant), the value below. Equality still compares variants.
        let (tag, v) = match *self {
            Key::Ref(r) => (0u64, r),
            Key::Atom(a) => (1, u64::from(a)),
            Key::Int(i) => (2, i as u64),
            Key::Str(h) => (3, h),
            Key::Bare(h) => (4, h),
        };
        state.write_u64(v ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}

/// The index's hasher: one folded multiply of the key's word with a per-run random
/// seed. Keys are single words (see `impl Hash for Key`), and text keys are FNV values
/// of what senders chose, so the seed is what keeps a sender from aiming many keys at
/// one bucket; SipHash (the standard map's default) cost ~20 ns per arrival of an
/// indexed mailbox, which a fan-in to a keyed receiver pays on every message.
#[derive(Clone, Copy)]
struct KeyHasher {
    seed: u64,
    h: u64,
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Key`; fold anything else in word by word.
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        let p = u128::from(n ^ self.h ^ self.seed) * 0x5851_F42D_4C95_7F2D_u128;
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// Builds [`KeyHasher`]s with the run's seed.
#[derive(Clone, Copy)]
struct KeyHashBuilder(u64);

impl Default for KeyHashBuilder {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        KeyHashBuilder(*SEED.get_or_init(|| {
            // The standard library's per-process random keys, drawn once.
            std::collections::hash_map::RandomState::new().hash_one(0x6b65_7973_u64) | 1
        }))
    }
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { seed: self.0, h: 0 }
    }
}

/// FNV-1a over a text's bytes (or another value's: see [`Key::of_bare`]): a key for the index, equal for equal texts in any
/// representation (inline, refcounted, owned).
fn str_hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Calls `f` for each key a message can be found by: a tuple's (see [`Key::of_elem`]),
/// or, for a message that is not a tuple, the key it would have as a tuple's tag (a
/// bare `stop` atom or `"stop"` text is found as a `{stop, ...}` tag is; see
/// [`Key::of_bare`]).
pub fn keys_of(v: View<'_>, mut f: impl FnMut(Key)) {
    let Some(n) = v.tuple_len() else {
        if let Some(k) = Key::of_bare(KeyElem::of_view(v)) {
            f(k);
        }
        return;
    };
    for i in 0..n.min(REF_SCAN_ELEMS) {
        let Some(e) = v.tuple_get(i) else { break };
        if let Some(k) = Key::of_elem(i, KeyElem::of_view(e)) {
            f(k);
        }
    }
}

fn has_key(v: View<'_>, key: Key) -> bool {
    let mut found = false;
    keys_of(v, |k| found |= k == key);
    found
}

#[derive(Default)]
struct Index {
    /// Sequence numbers per key, ascending.
    by_key: HashMap<Key, VecDeque<u64>, KeyHashBuilder>,
    /// First sequence number that was indexed; older messages are scanned.
    start: u64,
    /// Total entries (live + stale), to decide when to rebuild.
    entries: usize,
    /// Messages examined by receives since indexing began (see
    /// [`Mailbox::examined`]).
    examined: u64,
}

/// A process's private queue. See the module docs for the invariants.
#[derive(Default)]
pub struct Mailbox {
    q: VecDeque<(u64, Option<Fragment>)>,
    next_seq: u64,
    live: usize,
    bytes: usize,
    save: u64,
    index: Option<Box<Index>>,
    /// A keyed receive was made and the index has not been dropped since: a long queue
    /// is indexed as it grows. False for a process that takes messages in arrival order.
    keyed: bool,
}

impl Mailbox {
    /// Messages queued (not yet received).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no message is queued.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes held by queued messages (their fragments).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes the mailbox holds in all: the messages, the queue's storage (at its
    /// capacity) and the index.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(u64, Option<Fragment>)>();
        // Each key's deque holds at least 4 sequence numbers once it has one (the
        // standard library's smallest non-empty VecDeque).
        let index = self.index.as_deref().map_or(0, |ix| {
            std::mem::size_of::<Index>()
                + ix.by_key.capacity() * (std::mem::size_of::<(Key, VecDeque<u64>)>() + 1)
                + 8 * ix.entries.max(4 * ix.by_key.len())
        });
        self.bytes + self.q.capacity() * slot + index
    }

    /// Queued messages in arrival order (for introspection; receiving takes them).
    pub fn iter(&self) -> impl Iterator<Item = &Fragment> {
        self.q.iter().filter_map(|(_, m)| m.as_ref())
    }

    /// Messages that selective and keyed receives have examined (matched against a
    /// key or a pattern) since the queue grew long enough to be indexed; 0 while it is
    /// short. The work the index saves shows here: a keyed receive in a queue of 50,000
    /// examines a few, a selective receive that has to scan examines them all.
    pub fn examined(&self) -> u64 {
        self.index.as_deref().map_or(0, |ix| ix.examined)
    }

    /// True while the queue is indexed for keyed receives (see the module docs: only
    /// a long queue of a process that receives by key is).
    pub fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    fn count_examined(&mut self, n: u64) {
        if let Some(ix) = self.index.as_deref_mut() {
            ix.examined += n;
        }
    }

    /// Appends an arrived message.
    pub fn push(&mut self, m: Fragment) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += m.byte_size();
        if self.keyed && self.index.is_none() && self.live >= INDEX_THRESHOLD {
            // Only at the threshold: `keyed` is cleared whenever the index is dropped
            // from a long queue, and a keyed receive on a long queue indexes it whole.
            self.index = Some(Box::new(Index {
                start: seq,
                ..Index::default()
            }));
        }
        if let Some(ix) = self.index.as_deref_mut() {
            keys_of(m.view(), |k| {
                ix.by_key.entry(k).or_default().push_back(seq);
                ix.entries += 1;
            });
        }
        self.q.push_back((seq, Some(m)));
        self.live += 1;
    }

    /// Takes the first message in arrival order.
    pub fn pop_front(&mut self) -> Option<Fragment> {
        while let Some((_, slot)) = self.q.pop_front() {
            if let Some(m) = slot {
                self.after_take(&m);
                if self.index_mostly_stale() {
                    // Arrival-order takes leave their entries stale: the process has gone
                    // back to plain receives. Stop indexing until it receives by key again.
                    self.index = None;
                    self.keyed = false;
                }
                if self.q.is_empty() {
                    self.release_storage();
                }
                return Some(m);
            }
        }
        None
    }

    /// Gives back the queue's storage past [`KEEP_SLOTS`] when it holds far fewer
    /// messages than it has room for (after a flood drained).
    fn release_storage(&mut self) {
        let cap = self.q.capacity();
        if cap > KEEP_SLOTS && cap > 4 * self.q.len() {
            self.q.shrink_to((2 * self.q.len()).max(KEEP_SLOTS));
        }
    }

    /// Selective receive: the first message at or after the save position that
    /// `pred` accepts. When none does, the save position moves to the end so the next
    /// call (after more arrivals) scans only the new messages.
    pub fn take_where(&mut self, pred: &mut dyn FnMut(View<'_>) -> bool) -> Option<Fragment> {
        let start = self.pos_of(self.save);
        let mut examined = 0;
        for i in start..self.q.len() {
            let hit = match &self.q[i].1 {
                Some(m) => {
                    examined += 1;
                    pred(m.view())
                }
                None => false,
            };
            if hit {
                self.count_examined(examined);
                return self.take_at(i);
            }
        }
        self.count_examined(examined);
        self.save = self.next_seq;
        None
    }

    /// Keyed receive: the first message carrying `key` that `pred` accepts. Does not
    /// use or move the save position (it does not scan unrelated messages at all).
    pub fn take_keyed(
        &mut self,
        key: Key,
        pred: &mut dyn FnMut(View<'_>) -> bool,
    ) -> Option<Fragment> {
        self.take_keyed_any(&[key], pred)
    }

    /// Keyed receive with several keys (a receive with several patterns, each keyed):
    /// the first message in arrival order that carries one of `keys` and that `pred`
    /// accepts. Like [`Mailbox::take_keyed`], its cost depends on the messages
    /// carrying these keys (and the few unindexed ones), not on the queue length.
    pub fn take_keyed_any(
        &mut self,
        keys: &[Key],
        pred: &mut dyn FnMut(View<'_>) -> bool,
    ) -> Option<Fragment> {
        if !self.keyed {
            self.keyed = true;
            if self.index.is_none() && self.live > INDEX_THRESHOLD {
                // The first keyed receive on a long queue: index it once, whole.
                self.rebuild_index();
            }
        }
        let unindexed_end = match self.index.as_deref() {
            None => self.next_seq,
            Some(ix) => ix.start,
        };
        // Messages that arrived before indexing began: at most INDEX_THRESHOLD of them.
        let mut examined = 0;
        for i in 0..self.q.len() {
            let (seq, slot) = &self.q[i];
            if *seq >= unindexed_end {
                break;
            }
            if let Some(m) = slot {
                examined += 1;
                let v = m.view();
                if keys.iter().any(|k| has_key(v, *k)) && pred(v) {
                    self.count_examined(examined);
                    return self.take_at(i);
                }
            }
        }
        self.count_examined(examined);
        // Indexed messages: the earliest accepted one over every key's list (each list
        // is in arrival order, so the first accepted entry of each list is a candidate).
        let ix = self.index.as_deref_mut()?;
        let mut best: Option<(u64, Key, usize)> = None;
        for (n, key) in keys.iter().enumerate() {
            if keys[..n].contains(key) {
                continue; // the same key twice
            }
            let Some(seqs) = ix.by_key.get_mut(key) else {
                continue;
            };
            let mut k = 0;
            while k < seqs.len() {
                let seq = seqs[k];
                if best.is_some_and(|(b, _, _)| seq >= b) {
                    break; // later than a candidate already found
                }
                let pos = match self.q.binary_search_by_key(&seq, |e| e.0) {
                    Ok(p) if self.q[p].1.is_some() => p,
                    _ => {
                        // Stale: taken by another receive. Drop the entry.
                        seqs.remove(k);
                        ix.entries -= 1;
                        continue;
                    }
                };
                ix.examined += 1;
                if matches!(&self.q[pos].1, Some(m) if pred(m.view())) {
                    best = Some((seq, *key, k));
                    break;
                }
                k += 1;
            }
        }
        let (seq, key, k) = best?;
        if let Some(seqs) = ix.by_key.get_mut(&key) {
            seqs.remove(k);
            ix.entries -= 1;
            if seqs.is_empty() {
                ix.by_key.remove(&key);
            }
        }
        let pos = self.q.binary_search_by_key(&seq, |e| e.0).ok()?;
        self.take_at(pos)
    }

    /// Forgets the pending receive's save position (it timed out or was abandoned).
    pub fn reset_save(&mut self) {
        self.save = 0;
    }

    /// Removes every queued message `pred` accepts (used by `demonitor(flush)`).
    pub fn remove_all(&mut self, pred: &mut dyn FnMut(View<'_>) -> bool) -> usize {
        let mut n = 0;
        for i in 0..self.q.len() {
            let hit = matches!(&self.q[i].1, Some(m) if pred(m.view()));
            if hit {
                if let Some(m) = self.q[i].1.take() {
                    self.after_take(&m);
                    n += 1;
                }
            }
        }
        self.tidy();
        n
    }

    /// Drops every queued message and the queue's storage (process exit: the control
    /// block itself may be freed later, when the process table's epoch reclaims it).
    pub fn clear(&mut self) {
        self.q = VecDeque::new();
        self.index = None;
        self.keyed = false;
        self.live = 0;
        self.bytes = 0;
        self.save = 0;
    }

    fn pos_of(&self, seq: u64) -> usize {
        match self.q.binary_search_by_key(&seq, |e| e.0) {
            Ok(p) | Err(p) => p,
        }
    }

    fn take_at(&mut self, i: usize) -> Option<Fragment> {
        let m = self.q[i].1.take()?;
        self.after_take(&m);
        self.save = 0;
        self.tidy();
        Some(m)
    }

    fn after_take(&mut self, m: &Fragment) {
        self.live -= 1;
        self.bytes -= m.byte_size();
        if self.live == 0 {
            self.index = None;
            self.save = 0;
        }
    }

    /// Pops leading tombstones; compacts when tombstones dominate; rebuilds the index
    /// when stale entries dominate it.
    fn tidy(&mut self) {
        while matches!(self.q.front(), Some((_, None))) {
            self.q.pop_front();
        }
        let dead = self.q.len() - self.live;
        if dead > 64 && dead > self.live {
            self.q.retain(|e| e.1.is_some());
        }
        self.release_storage();
        if self.index_mostly_stale() {
            self.rebuild_index();
        }
    }

    /// True when stale entries (of messages taken since they were indexed) dominate
    /// the index: a keyed take rebuilds it then, an arrival-order take drops it.
    fn index_mostly_stale(&self) -> bool {
        self.index
            .as_deref()
            .is_some_and(|ix| ix.entries > 2 * self.live + 2 * INDEX_THRESHOLD)
    }

    fn rebuild_index(&mut self) {
        let mut ix = Index {
            start: self.q.front().map(|e| e.0).unwrap_or(self.next_seq),
            examined: self.examined(),
            ..Index::default()
        };
        for (seq, slot) in &self.q {
            if let Some(m) = slot {
                keys_of(m.view(), |k| {
                    ix.by_key.entry(k).or_default().push_back(*seq);
                    ix.entries += 1;
                });
            }
        }
        self.index = Some(Box::new(ix));
    }
}
