//! Terms: the VM's values and the memory they live in.
//!
//! - [`Term`] (`owned.rs`): a convenient owned tree for building and inspecting
//!   terms, with Erlang's exact equality and term order.
//! - [`Word`] (`word.rs`): the tagged 64-bit word every stored term is made of.
//! - [`Fragment`] (`fragment.rs`): a self-contained term in one allocation of words;
//!   the form a message travels in. [`FragmentBuilder`] builds one directly.
//! - [`Heap`] (`heap.rs`): a process's heap, young + old generation, copying GC.
//! - [`View`] (`view.rs`): a borrowed read-only look at a term in a fragment or heap.
//! - [`Atom`] (`atom.rs`), [`Pid`]/[`Ref`] and their external forms
//!   [`ExternalPid`]/[`ExternalRef`] (`pid.rs`), [`RefcBin`] (`binary.rs`).
//!
//! Input that can come from users (names, builder calls) is checked and reported
//! as a [`TermError`]; nothing here panics on bad input.

mod atom;
mod binary;
mod builder;
mod encode;
mod fragment;
mod heap;
mod order;
mod owned;
mod pid;
mod view;
mod word;

pub use atom::{atom_count, atom_table_bytes, Atom, MAX_ATOMS, MAX_ATOM_CHARS};
pub use binary::{
    binary_bytes, foreign_binary_bytes, Binary, RefcBin, WeakRefcBin, HEAP_BINARY_MAX,
};
pub use builder::FragmentBuilder;
pub use fragment::Fragment;
pub use heap::{
    heap_size_at_least, GcReport, Heap, HeapStats, FULLSWEEP_AFTER, GC_WORDS_PER_REDUCTION,
    MIN_HEAP_SIZE, MIN_OLD_SIZE, OLD_GROWTH, YOUNG_GROWTH,
};
pub use owned::Term;
pub use pid::{ExternalPid, ExternalRef, Pid, Ref, MAX_PID_INDEX, MAX_REF_WORDS, PID_INDEX_BITS};
pub use view::{Kind, ListIter, MapIter, TupleIter, View};
pub use word::{Word, SMALL_INT_MAX, SMALL_INT_MIN};

use std::fmt;

/// Why a term could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermError {
    /// An atom name longer than [`MAX_ATOM_CHARS`] characters.
    AtomTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// The atom table holds [`MAX_ATOMS`] atoms already.
    AtomTableFull,
    /// A builder container asked for more subterms than were pushed.
    BuilderUnderflow {
        /// Subterms the container takes.
        needed: usize,
        /// Subterms that were on the builder.
        available: usize,
    },
    /// `finish` on a builder holding no term.
    BuilderEmpty,
    /// `finish` on a builder holding more than one term (a container is missing).
    BuilderIncomplete {
        /// Top-level terms on the builder.
        pending: usize,
    },
    /// A word that is not an immediate where only immediates are allowed.
    NotImmediate,
}

impl fmt::Display for TermError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TermError::AtomTooLong { chars } => write!(
                f,
                "atom name too long: {chars} characters (limit {MAX_ATOM_CHARS})"
            ),
            TermError::AtomTableFull => {
                write!(f, "system_limit: atom table full ({MAX_ATOMS} atoms)")
            }
            TermError::BuilderUnderflow { needed, available } => write!(
                f,
                "builder: container needs {needed} subterms but only {available} were pushed"
            ),
            TermError::BuilderEmpty => write!(f, "builder: finish with no term built"),
            TermError::BuilderIncomplete { pending } => write!(
                f,
                "builder: finish with {pending} top-level terms (expected exactly one)"
            ),
            TermError::NotImmediate => write!(f, "word is not an immediate term"),
        }
    }
}

impl std::error::Error for TermError {}
