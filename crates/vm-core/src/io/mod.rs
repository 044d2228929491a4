//! Network I/O owned by processes: gen_tcp's data path on an epoll reactor.
//!
//! The reactor knows the VM only through [`IoSink`] (where its events go) and
//! [`Pid`](crate::term::Pid) (who they are for). The VM's side is `driver`: events
//! become messages pushed through the router (so a readiness event wakes its process
//! like any send), the schedulers poll the reactor once the VM has its first socket,
//! a process's exit closes its sockets, and shutdown closes them all. Native bodies
//! call the operations on [`Cx::io`](crate::Cx::io) with their pid; results that
//! cannot be immediate arrive as messages ([`messages`]).
//!
//! Map (one concern per file):
//! - `reactor`: the poller, the socket table and the operations (listen, accept,
//!   connect, send, recv, setopts, controlling_process, close, shutdown).
//! - `conn`: one connection's data path as a state machine over any byte stream:
//!   active modes, passive recv, backpressure, the send queue, EOF and errors.
//! - `framing`: packet modes raw, 1, 2, 4 and line, with the `packet_size` limit.
//! - `active`: the `{active, N}` counter (inet:setopts semantics).
//! - `send_queue`: bytes accepted by `send` but not yet taken by the kernel.
//! - `defer`: sends a scheduler's batch leaves for its end (written outside the GIL).
//! - `stream`: TCP (IPv4/IPv6) and Unix domain sockets behind one type.
//! - `table`: socket ids with generations; sockets by owner.
//! - `event`, `error`, `options`: the vocabulary.
//! - `driver`: the VM's side (sink, handing the reactor to the schedulers, owner
//!   exit, shutdown).
//! - [`messages`]: the terms events become, and their parser for native bodies.
//!
//! The guarantees, in Erlang's words: a socket belongs to one process (its owner);
//! data arrives in order as `('tcp', s, data)` only as far as the owner asked
//! (`active` true / once / N), and what it has not asked for stays in the kernel, so
//! the peer is slowed down instead of the mailbox growing; a process suspended in
//! accept, recv, connect or a send above the high watermark is always resumed, with
//! data or with a reason.

// The reactor was written before vm-core turned these lints on; its items get their
// docs when it is wired into the schedulers (issue 11, phase 2).

mod active;
mod conn;
pub(crate) mod defer;
mod driver;
mod error;
mod event;
mod framing;
pub mod messages;
mod options;
mod reactor;
mod send_queue;
mod stream;
mod table;

pub use conn::SendStatus;
pub(crate) use driver::IoState;
pub use error::IoError;
pub use event::{IoEvent, IoSink, SocketId};
pub use messages::{parse as parse_message, IoMessage, TagStyle};
pub use options::{ActiveOpt, Packet, SetOpts, SocketOpts, MAX_PACKET_SIZE};
pub use reactor::{Accept, ListenOpts, Reactor, Recv};
pub use stream::{Addr, SockName};

#[cfg(test)]
mod tests;
