//! Atoms: interned names, compared and stored as a 32-bit index.
//!
//! Invariants:
//! - One index per distinct name for the life of the process; an index is never
//!   reused or freed (atoms are not garbage collected, exactly as in BEAM). This is
//!   why the table has a hard limit, [`MAX_ATOMS`], and why [`Atom::try_new`]
//!   returns [`TermError::AtomTableFull`] instead of growing without bound.
//! - Names are at most [`MAX_ATOM_CHARS`] Unicode characters (BEAM's limit).
//! - [`Atom::as_str`] never takes a lock. The table is append-only: names are leaked
//!   `&'static str`s stored in fixed-size chunks of `OnceLock` slots; a chunk is
//!   published once (an acquire/release `OnceLock`) and a slot is written once
//!   before the index is handed out, so a reader holding an `Atom` always finds its
//!   slot filled. Interning (name -> index) goes through an `RwLock<HashMap>`:
//!   lookups of existing names take the read side, only new names take the write
//!   side.
//! - The well-known atoms the runtime itself needs (`ok`, `'EXIT'`, `normal`, the I/O
//!   reactor's message tags and error reasons, the binding's distribution tags, ...)
//!   sit at fixed indices `0..PREDEFINED.len()` and are `pub const`s on [`Atom`];
//!   their names are served from a static array, so they work before the table is
//!   ever touched — and after it is full: the runtime never interns an atom itself
//!   (a crash reason, a system monitor event), so a full table makes only the user's
//!   own atom creation fail ([`Atom::try_new`]), never the VM.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};

use super::TermError;

/// Most atoms a node may hold: BEAM's default `+t` limit.
pub const MAX_ATOMS: usize = 1 << 20;
/// Longest atom name in characters (BEAM's limit since OTP 20).
pub const MAX_ATOM_CHARS: usize = 255;

/// Slots per chunk. 1024 keeps a chunk at ~24 KiB (one allocation per 1024 new
/// atoms) and the static chunk directory at 1024 entries.
const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_MASK: usize = CHUNK - 1;
const NCHUNKS: usize = MAX_ATOMS / CHUNK;

type Slot = OnceLock<&'static str>;

static CHUNKS: [OnceLock<Box<[Slot]>>; NCHUNKS] = [const { OnceLock::new() }; NCHUNKS];
/// Atoms interned at run time (the predefined ones are not counted here).
static DYNAMIC_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Bytes held by run-time atoms: names plus chunk slots plus index entries.
static DYNAMIC_BYTES: AtomicUsize = AtomicUsize::new(0);
static INDEX: OnceLock<RwLock<HashMap<&'static str, u32>>> = OnceLock::new();

macro_rules! predefined {
    ($($konst:ident = $idx:expr => $name:expr,)*) => {
        /// Names of the predefined atoms, by index.
        const PREDEFINED: &[&str] = &[$($name,)*];
        impl Atom {
            $(
                #[doc = concat!("The atom `", $name, "`.")]
                pub const $konst: Atom = Atom($idx);
            )*
        }
    };
}

predefined! {
    OK = 0 => "ok",
    ERROR = 1 => "error",
    NORMAL = 2 => "normal",
    KILL = 3 => "kill",
    KILLED = 4 => "killed",
    NOPROC = 5 => "noproc",
    EXIT = 6 => "EXIT",
    DOWN = 7 => "DOWN",
    PROCESS = 8 => "process",
    TRUE = 9 => "true",
    FALSE = 10 => "false",
    UNDEFINED = 11 => "undefined",
    NIL = 12 => "nil",
    SYSTEM_LIMIT = 13 => "system_limit",
    BADARG = 14 => "badarg",
    TIMEOUT = 15 => "timeout",
    TRAP_EXIT = 16 => "trap_exit",
    NOCONNECTION = 17 => "noconnection",
    INFINITY = 18 => "infinity",
    SHUTDOWN = 19 => "shutdown",
    NONE = 20 => "none",
    BADARITH = 21 => "badarith",
    BADMATCH = 22 => "badmatch",
    FUNCTION_CLAUSE = 23 => "function_clause",
    CASE_CLAUSE = 24 => "case_clause",
    UNDEF = 25 => "undef",
    BADKEY = 26 => "badkey",
    BADMAP = 27 => "badmap",
    CALL = 28 => "call",
    CAST = 29 => "cast",
    REPLY = 30 => "reply",
    NOREPLY = 31 => "noreply",
    STOP = 32 => "stop",
    LINK = 33 => "link",
    MONITOR = 34 => "monitor",
    PRIORITY = 35 => "priority",
    LOW = 36 => "low",
    HIGH = 37 => "high",
    MAX = 38 => "max",
    MESSAGE_QUEUE_LEN = 39 => "message_queue_len",
    MEMORY = 40 => "memory",
    REDUCTIONS = 41 => "reductions",
    STATUS = 42 => "status",
    RUNNING = 43 => "running",
    RUNNABLE = 44 => "runnable",
    WAITING = 45 => "waiting",
    EXITING = 46 => "exiting",
    SUSPENDED = 47 => "suspended",
    REGISTERED_NAME = 48 => "registered_name",
    LINKS = 49 => "links",
    MONITORS = 50 => "monitors",
    HEAP_SIZE = 51 => "heap_size",
    TOTAL_HEAP_SIZE = 52 => "total_heap_size",
    GARBAGE_COLLECTION = 53 => "garbage_collection",
    BINARY = 54 => "binary",
    ATOM = 55 => "atom",
    PROCESSES = 56 => "processes",
    SYSTEM = 57 => "system",
    TOTAL = 58 => "total",
    NODEDOWN = 59 => "nodedown",
    NONODE = 60 => "nonode@nohost",
    MONITORED_BY = 61 => "monitored_by",
    CURRENT_FUNCTION = 62 => "current_function",
    TRAP = 63 => "trap",
    EXIT_LOWER = 64 => "exit",
    THROW = 65 => "throw",
    NOTALIVE = 66 => "notalive",
    NOT_FOUND = 67 => "not_found",
    PORT = 68 => "port",
    PANIC = 69 => "panic",
    IN = 70 => "in",
    LONG_SCHEDULE = 71 => "long_schedule",
    // The I/O reactor's messages (io/messages.rs) and error reasons (io/error.rs).
    SOCKET_TAG = 72 => "$socket",
    TCP_TAG = 73 => "$tcp",
    TCP = 74 => "tcp",
    TCP_CLOSED = 75 => "tcp_closed",
    TCP_ERROR = 76 => "tcp_error",
    TCP_PASSIVE = 77 => "tcp_passive",
    ACCEPT = 78 => "accept",
    CONNECT = 79 => "connect",
    RECV = 80 => "recv",
    SEND = 81 => "send",
    READY = 82 => "ready",
    CLOSED = 83 => "closed",
    NOT_OWNER = 84 => "not_owner",
    EALREADY = 85 => "ealready",
    EMSGSIZE = 86 => "emsgsize",
    EINVAL = 87 => "einval",
    ECONNREFUSED = 88 => "econnrefused",
    ECONNRESET = 89 => "econnreset",
    ECONNABORTED = 90 => "econnaborted",
    EADDRINUSE = 91 => "eaddrinuse",
    EADDRNOTAVAIL = 92 => "eaddrnotavail",
    EACCES = 93 => "eacces",
    EMFILE = 94 => "emfile",
    ENFILE = 95 => "enfile",
    ENOBUFS = 96 => "enobufs",
    ENOMEM = 97 => "enomem",
    ENOTCONN = 98 => "enotconn",
    ENOENT = 99 => "enoent",
    EHOSTUNREACH = 100 => "ehostunreach",
    ENETUNREACH = 101 => "enetunreach",
    ENETDOWN = 102 => "enetdown",
    ETIMEDOUT = 103 => "etimedout",
    EAFNOSUPPORT = 104 => "eafnosupport",
    UNKNOWN = 105 => "unknown",
    // Tags of the values only distribution carries (the Python binding's dist.rs).
    CHARLIST_TAG = 106 => "$charlist",
    IMPROPER_TAG = 107 => "$improper",
    FUN_TAG = 108 => "$fun",
    PORT_TAG = 109 => "$port",
    BITS_TAG = 110 => "$bits",
}

/// An interned atom. Equality and hashing are by index (O(1)); term order compares
/// names (see `order.rs`).
#[derive(Copy, Clone, Eq, PartialEq, Hash, Debug)]
pub struct Atom(u32);

impl Atom {
    /// Interns `name`. Panics when the name is invalid or the table is full: for
    /// names fixed in the program (tests, examples). Anything a user or the runtime
    /// supplies at run time goes through [`Atom::try_new`] or a predefined constant.
    pub fn new(name: &str) -> Atom {
        match Atom::try_new(name) {
            Ok(a) => a,
            Err(e) => panic!("Atom::new({name:?}): {e}"),
        }
    }

    /// Interns `name`, or says why it cannot be an atom.
    pub fn try_new(name: &str) -> Result<Atom, TermError> {
        // Bytes >= chars, so only long byte strings need counting.
        if name.len() > MAX_ATOM_CHARS {
            let chars = name.chars().count();
            if chars > MAX_ATOM_CHARS {
                return Err(TermError::AtomTooLong { chars });
            }
        }
        let index = index();
        {
            let map = index.read().unwrap_or_else(|e| e.into_inner());
            if let Some(&i) = map.get(name) {
                return Ok(Atom(i));
            }
        }
        let mut map = index.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&i) = map.get(name) {
            return Ok(Atom(i));
        }
        let n = PREDEFINED.len() + DYNAMIC_COUNT.load(Ordering::Relaxed);
        if n >= MAX_ATOMS {
            return Err(TermError::AtomTableFull);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let mut fresh_chunk = false;
        let chunk = CHUNKS[n >> CHUNK_BITS].get_or_init(|| {
            fresh_chunk = true;
            (0..CHUNK).map(|_| OnceLock::new()).collect()
        });
        // Only this thread (holding the write lock) ever fills slot `n`.
        let _ = chunk[n & CHUNK_MASK].set(leaked);
        map.insert(leaked, n as u32);
        let mut bytes = leaked.len() + std::mem::size_of::<(&str, u32)>();
        if fresh_chunk {
            bytes += CHUNK * std::mem::size_of::<Slot>();
        }
        DYNAMIC_BYTES.fetch_add(bytes, Ordering::Relaxed);
        DYNAMIC_COUNT.fetch_add(1, Ordering::Release);
        Ok(Atom(n as u32))
    }

    /// Looks `name` up without interning it.
    pub fn existing(name: &str) -> Option<Atom> {
        let map = index().read().unwrap_or_else(|e| e.into_inner());
        map.get(name).map(|&i| Atom(i))
    }

    /// The atom's name. Lock-free.
    pub fn as_str(self) -> &'static str {
        let i = self.0 as usize;
        if let Some(s) = PREDEFINED.get(i) {
            return s;
        }
        CHUNKS
            .get(i >> CHUNK_BITS)
            .and_then(|c| c.get())
            .and_then(|c| c[i & CHUNK_MASK].get())
            .copied()
            // Unreachable for atoms made by this module: their slot is set before
            // the index is returned.
            .unwrap_or("")
    }

    /// The table index (stable for the life of the process).
    pub const fn index(self) -> u32 {
        self.0
    }

    /// The atom at `index`, if one has been interned there.
    pub fn from_index(index: u32) -> Option<Atom> {
        ((index as usize) < atom_count()).then_some(Atom(index))
    }

    /// An atom from an index this module handed out (read back from a word).
    #[inline]
    pub(crate) const fn from_index_unchecked(index: u32) -> Atom {
        Atom(index)
    }

    /// `true` / `false` as atoms.
    pub fn from_bool(b: bool) -> Atom {
        if b {
            Atom::TRUE
        } else {
            Atom::FALSE
        }
    }

    /// Whether the name needs quotes in Erlang syntax.
    pub fn needs_quotes(self) -> bool {
        needs_quotes(self.as_str())
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        if !needs_quotes(s) {
            return f.write_str(s);
        }
        f.write_str("'")?;
        for c in s.chars() {
            match c {
                '\'' => f.write_str("\\'")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("'")
    }
}

const RESERVED: &[&str] = &[
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "else", "end", "fun", "if", "let", "maybe", "not", "of", "or",
    "orelse", "receive", "rem", "try", "when", "xor",
];

fn needs_quotes(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return true,
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@') {
        return true;
    }
    RESERVED.contains(&s)
}

fn index() -> &'static RwLock<HashMap<&'static str, u32>> {
    INDEX.get_or_init(|| {
        let map = PREDEFINED
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i as u32))
            .collect();
        RwLock::new(map)
    })
}

/// Atoms in the table, predefined ones included.
pub fn atom_count() -> usize {
    PREDEFINED.len() + DYNAMIC_COUNT.load(Ordering::Acquire)
}

/// Bytes the atom table holds (names, slots, index entries, the static directory).
pub fn atom_table_bytes() -> usize {
    let predefined: usize = PREDEFINED
        .iter()
        .map(|s| s.len() + std::mem::size_of::<(&str, u32)>())
        .sum();
    std::mem::size_of_val(&CHUNKS) + predefined + DYNAMIC_BYTES.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_atoms_are_interned_at_their_indices() {
        for (i, name) in PREDEFINED.iter().enumerate() {
            assert_eq!(Atom::new(name), Atom(i as u32), "{name}");
        }
        assert_eq!(Atom::EXIT.as_str(), "EXIT");
        assert_eq!(Atom::new("ok"), Atom::OK);
        let mut seen = std::collections::HashSet::new();
        assert!(PREDEFINED.iter().all(|n| seen.insert(*n)), "duplicate name");
    }

    #[test]
    fn quoting() {
        assert_eq!(Atom::OK.to_string(), "ok");
        assert_eq!(Atom::EXIT.to_string(), "'EXIT'");
        assert_eq!(Atom::NONODE.to_string(), "nonode@nohost");
        assert_eq!(Atom::new("hello world").to_string(), "'hello world'");
        assert_eq!(Atom::new("it's").to_string(), "'it\\'s'");
        assert_eq!(Atom::new("receive").to_string(), "'receive'");
        assert_eq!(Atom::new("").to_string(), "''");
    }
}
