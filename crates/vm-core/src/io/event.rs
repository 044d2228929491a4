//! What the reactor tells the VM, and the one trait through which it tells it.
//!
//! The reactor never touches a process, a mailbox or a scheduler: every outcome is an
//! [`IoEvent`] handed to an [`IoSink`] with the pid it is for. The first four variants
//! are gen_tcp's active-mode messages (phase 2 turns them into mailbox messages:
//! `('tcp', s, data)`, ...); the last four complete an operation a process is
//! suspended in (phase 2 resumes it with the result).

use super::error::IoError;
use crate::term::{Binary, Pid};

/// A socket's identity: a slot index and the slot's generation, so an id that
/// outlived its socket is `closed`, never another socket (like pids, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

impl SocketId {
    pub(crate) fn new(index: u32, generation: u32) -> SocketId {
        SocketId(u64::from(generation) << 32 | u64::from(index))
    }
    pub(crate) fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// What happened on a socket, for one process (see the module docs).
pub enum IoEvent {
    /// `('tcp', s, data)`: one frame for the owner in active mode.
    Tcp {
        /// The socket.
        sock: SocketId,
        /// One frame (or what one read returned, for `raw`).
        data: Binary,
    },
    /// `('tcp_closed', s)`: the peer closed (the socket is closed now).
    TcpClosed {
        /// The socket.
        sock: SocketId,
    },
    /// `('tcp_error', s, reason)`: followed by `TcpClosed`.
    TcpError {
        /// The socket.
        sock: SocketId,
        /// Why it failed.
        reason: IoError,
    },
    /// `('tcp_passive', s)`: an `{active, N}` count ran out.
    TcpPassive {
        /// The socket.
        sock: SocketId,
    },
    /// A suspended `accept` completed: the new socket is owned by the receiver.
    Accepted {
        /// The listening socket.
        listener: SocketId,
        /// The accepted socket (owned by the receiver), or why not.
        result: Result<SocketId, IoError>,
    },
    /// A suspended `connect` completed.
    Connected {
        /// The socket.
        sock: SocketId,
        /// Connected, or why not.
        result: Result<(), IoError>,
    },
    /// A suspended passive `recv` completed.
    Received {
        /// The socket.
        sock: SocketId,
        /// The data, or why none.
        result: Result<Binary, IoError>,
    },
    /// A `send` that was told to suspend may return: its data is queued below the low
    /// watermark (or the socket failed).
    SendReady {
        /// The socket.
        sock: SocketId,
        /// Queued below the low watermark, or the socket failed.
        result: Result<(), IoError>,
    },
    /// A socket adopted with [`Reactor::watch`](super::Reactor::watch) may have become
    /// readable or writable (or closed): its owner does its own I/O now, then re-arms
    /// it ([`Reactor::rearm`](super::Reactor::rearm)).
    Ready {
        /// The socket.
        sock: SocketId,
    },
}

/// Where the reactor's events go: the only thing the reactor knows of the VM.
///
/// `deliver` is called without any reactor lock held, from whichever thread polled or
/// operated on the socket, and must not block for long (phase 2: a lock-free mailbox
/// push and perhaps a wake-up). It returns `false` when `to` no longer exists; the
/// reactor then closes a socket the event would have handed over (an accepted or
/// connected socket whose new owner died meanwhile), so no socket is ever owned by
/// a dead process.
pub trait IoSink: Send + Sync + 'static {
    /// Hands `event` to process `to`; `false` if `to` does not exist.
    fn deliver(&self, to: Pid, event: IoEvent) -> bool;

    /// Whether process `pid` exists (`controlling_process` hands a socket only to a
    /// live process). Once it returns `false` for a pid, it must never return `true`
    /// for it again, and a process must read as dead before its exit calls
    /// [`Reactor::owner_exited`](super::Reactor::owner_exited). The default says
    /// `true` (for sinks whose pids never exit): hand-overs are then unchecked.
    fn is_alive(&self, pid: Pid) -> bool {
        let _ = pid;
        true
    }
}
