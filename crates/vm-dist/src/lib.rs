//! Erlang distribution for beamvm: a beamvm node joins an Erlang/Elixir cluster, and
//! beamvm nodes cluster with each other, on OTP's own protocol.
//!
//! * [`etf`]: the external term format, decoded into and encoded from [`Term`].
//! * [`atoms`]: the atom-table hook and the per-connection atom-flood bound.
//! * [`epmd`]: the EPMD client, and a protocol-compatible EPMD server used when none
//!   runs.
//! * [`handshake`]: the version-6 handshake as a sans-IO state machine, with
//!   [`flags`] and [`cookie`].
//! * [`control`] and [`connection`]: control messages as a typed enum, 4-byte framing,
//!   ticks and the net_ticktime timeout, sans-IO.
//! * [`node`]: a small blocking driver (threads and std::net) that lets Rust code act
//!   as a node; the VM's reactor replaces it when distribution is integrated.
//!
//! This crate does not depend on vm-core; docs/distribution.md's integration plan says
//! how its pieces map onto the VM.

pub mod atoms;
pub mod connection;
pub mod control;
pub mod cookie;
pub mod epmd;
pub mod etf;
pub mod flags;
pub mod handshake;
pub mod node;
mod random;
pub mod term;

pub use term::{Atom, BitBinary, Bytes, Fun, FunKind, Pid, Port, Ref, SharedBuf, Term};
