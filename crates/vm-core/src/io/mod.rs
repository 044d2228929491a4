//! Network I/O owned by processes: gen_tcp's data path on an epoll reactor.
//!
//! This module is self-contained: it knows the VM only through [`IoSink`] (where its
//! events go) and [`Pid`](crate::term::Pid) (who they are for). The VM's side -- turning
//! events into messages, suspending and resuming processes, calling
//! [`Reactor::owner_exited`] when a process dies, and polling -- is wired in by the
//! schedulers (docs/io.md says how: a scheduler about to park polls epoll, as BEAM's
//! check_io does).
//!
//! Map (one concern per file):
//! - [`reactor`]: the poller, the socket table and the operations (listen, accept,
//!   connect, send, recv, setopts, controlling_process, close, shutdown).
//! - [`conn`]: one connection's data path as a state machine over any byte stream:
//!   active modes, passive recv, backpressure, the send queue, EOF and errors.
//! - [`framing`]: packet modes raw, 1, 2, 4 and line, with the `packet_size` limit.
//! - [`active`]: the `{active, N}` counter (inet:setopts semantics).
//! - [`send_queue`]: bytes accepted by `send` but not yet taken by the kernel.
//! - [`stream`]: TCP (IPv4/IPv6) and Unix domain sockets behind one type.
//! - [`table`]: socket ids with generations; sockets by owner.
//! - [`event`], [`error`], [`options`]: the vocabulary.
//!
//! The guarantees, in Erlang's words: a socket belongs to one process (its owner);
//! data arrives in order as `('tcp', s, data)` only as far as the owner asked
//! (`active` true / once / N), and what it has not asked for stays in the kernel, so
//! the peer is slowed down instead of the mailbox growing; a process suspended in
//! accept, recv, connect or a send above the high watermark is always resumed, with
//! data or with a reason.

// The reactor was written before vm-core turned these lints on; its items get their
// docs when it is wired into the schedulers (issue 11, phase 2).
#![allow(missing_docs, unreachable_pub)]

pub mod active;
pub mod conn;
mod driver;
pub mod error;
pub mod event;
pub mod framing;
pub mod messages;
pub mod options;
pub mod reactor;
pub mod send_queue;
pub mod stream;
pub mod table;

pub use conn::SendStatus;
pub use error::IoError;
pub use event::{IoEvent, IoSink, SocketId};
pub(crate) use driver::IoState;
pub use messages::{parse as parse_message, IoMessage, TagStyle};
pub use options::{ActiveOpt, Packet, SetOpts, SocketOpts, MAX_PACKET_SIZE};
pub use reactor::{Accept, ListenOpts, Reactor, Recv};
pub use stream::{Addr, SockName};

#[cfg(test)]
mod tests;
