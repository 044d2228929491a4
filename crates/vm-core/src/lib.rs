//! beamvm's core: a BEAM-class process virtual machine in pure Rust.
//!
//! The public surface:
//!
//! * [`Vm`] (start, shut down) and [`VmRef`] (send, spawn, names, timers, exit signals
//!   and introspection from outside any process), configured by [`VmConfig`].
//! * [`Body`]: a process's code, a state machine resumed one slice at a time with a
//!   [`Cx`] (everything a process can do) and returning a [`Step`]. Closures
//!   `FnMut(&mut Cx) -> Step` are bodies.
//! * [`term`]: terms, atoms, per-process heaps with generational GC, shared binaries;
//!   a message travels as a [`Fragment`].
//! * [`process::mailbox`]: the private message queue with selective and keyed receive.
//! * [`SliceHook`]: what an embedder (the Python binding) wraps around batches of its
//!   processes' slices.
//! * Introspection results: [`ProcessInfo`], [`Statistics`], [`Memory`], ...; and
//!   [`observe`]: what a live observer reads (one-walk census, long_schedule log, queue
//!   samples).
//! * [`io`]: the I/O reactor (sockets owned by processes, readiness, gen_tcp's data
//!   path).
//! * [`AliasMode`]: process aliases (a ref that routes to its creator while active).
//!
//! Everything else (process table, inboxes, run queues, schedulers, timers, dirty
//! pools, the router that delivers signals) is internal; docs/architecture.md maps it,
//! and docs/semantics.md states the guarantees and the tests that check them.

#![warn(
    missing_docs,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod alias;
pub mod config;
mod dirty;
mod error;
pub mod io;
pub mod observe;
pub mod process;
mod refmap;
mod registry;
mod router;
mod scheduler;
mod stats;
pub mod term;
mod timer;
mod vm;

pub use alias::AliasMode;
pub use config::VmConfig;
pub use dirty::DirtyKind;
pub use error::{Error, Result};
pub use observe::{Census, LongScheduleEvent, ProcessDetail};
pub use process::context::Cx;
pub use process::mailbox::Key;
pub use process::signal::{DirtyJob, DirtyResult};
pub use process::table::{EXTERNAL_PID, MAX_PROCESS_LIMIT};
pub use process::{Body, BodyClass, Priority, Step};
pub use scheduler::SliceHook;
pub use stats::{
    add_body_bytes, body_bytes, process_base_bytes, set_allocator_probe, set_idle_hook,
    sub_body_bytes, Memory, ProcessInfo, ProcessSummary, Statistics, SystemInfo,
};
pub use term::{Atom, Fragment, Pid, Ref, Term, View, Word};
pub use vm::{SpawnOpts, Vm, VmRef};

/// Internals exposed for the crate's own benchmarks (`benches/`), which are compiled
/// as a separate crate. Not part of the API: no stability promise.
#[doc(hidden)]
pub mod internals {
    pub use crate::process::inbox::{Inbox, RunState};
}
