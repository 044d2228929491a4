//! beamvm's core: a BEAM-class process virtual machine in pure Rust.
//!
//! * [`term`]: terms, atoms, per-process heaps with generational GC, shared binaries.
//! * [`process`]: control blocks, the lock-free inbox, mailboxes with selective
//!   receive, signals (links, monitors, exits), the [`Cx`] a body runs with.
//! * [`scheduler`]: scheduler threads, priority run queues, stealing, parking.
//! * [`dirty`]: the dirty CPU and IO pools for blocking or long calls; the scheduler's
//!   watchdog hands a stuck scheduler's work to the others and reports long slices.
//! * [`timer`], [`registry`], [`stats`]: timers, names, introspection.
//!
//! Start a [`Vm`], spawn [`Body`]s (closures `FnMut(&mut Cx) -> Step` work), send
//! [`Fragment`]s. docs/semantics.md states the guarantees and the tests that check them.

pub mod config;
pub mod dirty;
pub mod error;
pub mod process;
pub mod registry;
mod router;
pub mod scheduler;
pub mod stats;
pub mod term;
pub mod timer;
pub mod vm;

pub use config::VmConfig;
pub use dirty::DirtyKind;
pub use error::{Error, Result};
pub use process::context::Cx;
pub use process::mailbox::Key;
pub use process::signal::{DirtyJob, DirtyResult};
pub use process::table::EXTERNAL_PID;
pub use process::{Body, BodyClass, Priority, Step};
pub use scheduler::SliceHook;
pub use stats::{Memory, ProcessInfo, ProcessSummary, Statistics, SystemInfo};
pub use term::{Atom, Fragment, Pid, Ref, Term, View, Word};
pub use vm::{SpawnOpts, Vm, VmRef};
