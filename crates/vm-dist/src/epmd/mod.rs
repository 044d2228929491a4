//! EPMD, the Erlang Port Mapper Daemon: where nodes on a host register their
//! distribution port under their name, and where peers look them up.
//!
//! * [`client`]: register (keeping the socket open for the node's life), look up
//!   (PORT_PLEASE2_REQ), list (NAMES_REQ).
//! * [`server`]: a built-in, protocol-compatible EPMD for hosts where none runs.
//! * [`proto`]: the wire format both share.

pub mod client;
pub mod proto;
pub mod server;

pub use client::{epmd_port, names, port_please, register, Registration};
pub use proto::{alive_name, NodeEntry};
pub use server::EpmdServer;
