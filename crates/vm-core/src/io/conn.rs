//! One connected socket's data path: framing, active mode, passive `recv`, the send
//! queue, end of stream and errors -- a state machine over any `Read + Write`, so it
//! is tested without a kernel and driven by the reactor with a real socket.
//!
//! Invariants:
//! - **Backpressure.** The socket is read only while someone wants data: the owner
//!   has active credit, or a passive `recv` waits. Otherwise the bytes stay in the
//!   kernel, the receive window fills and the peer's writes block. What was read but
//!   not delivered is bounded by one read ([`READ_CHUNK`]) plus one partial frame.
//! - **Edge-triggered readiness is cached.** `readable`/`writable` record that the
//!   kernel may have data / room: set by an edge, cleared only by `WouldBlock` (or a
//!   short read, which on Linux means the queue was drained; any later arrival raises
//!   a new edge). `writable` starts true (a new connection's buffer is empty). A socket re-armed by `setopts` with `readable` set is read at once,
//!   since no new edge may ever come for bytes already waiting.
//! - **Order.** Frames go out in stream order; `tcp_passive` right after the message
//!   that used up the count; `tcp_error` before `tcp_closed`; nothing after it.
//! - **Closing** (EOF under exit_on_close, an error, `close`) wakes every process
//!   suspended on the socket with `closed` (or the error), so nobody waits forever.

use std::io::{self, ErrorKind, Read, Write};

use super::active::{ActiveState, Notice};
use super::error::IoError;
use super::event::{IoEvent, SocketId};
use super::framing::{header, Framer};
use super::options::{Packet, SetOpts, SocketOpts, MAX_PACKET_SIZE};
use super::send_queue::{Flush, SendQueue};
use crate::term::{Binary, Pid};

/// Bytes read per `read` call (the scratch buffer's size). 64 KiB: one loopback TCP
/// segment train; large enough that bulk transfers are few syscalls, and the bound on
/// what a non-re-armed socket can hold in user space beyond one partial frame.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// A byte stream that can also be half-closed (a socket; a mock in tests).
pub(super) trait Transport: Read + Write {
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// Reads one socket may do per turn before it yields to the others: 16 x 64 KiB =
/// 1 MiB. A peer that floods an `{active, true}` socket must not keep a scheduler in
/// one socket's loop; the socket is queued for another turn instead (its readiness is
/// cached, so no edge is lost).
pub(super) const READS_PER_TURN: usize = 16;

/// Events produced by one step, in order, each with its recipient.
pub(super) type Out = Vec<(Pid, IoEvent)>;

/// One readiness edge, as the poller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN or an error (EPOLLRDHUP / EPOLLHUP / EPOLLERR).
    pub hup: bool,
}

impl Ready {
    #[cfg_attr(not(test), allow(dead_code))] // used by tests
    pub(super) const READ: Ready = Ready {
        readable: true,
        writable: false,
        hup: false,
    };
    #[cfg_attr(not(test), allow(dead_code))] // used by tests
    pub(super) const WRITE: Ready = Ready {
        readable: false,
        writable: true,
        hup: false,
    };
}

/// A process suspended on the send queue (see `ConnState::send_waiters`).
#[derive(Debug, Clone, Copy)]
struct SendWaiter {
    pid: Pid,
    /// A `close` (woken when the queue is empty), not a `send` (at the low watermark).
    until_empty: bool,
}

/// What the reactor must do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum After {
    Keep,
    /// The socket is finished: deregister and drop the OS socket.
    Close,
}

/// Outcome of a `send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued at or below the high watermark (or written): `send` returns `ok`.
    Sent,
    /// Accepted, but the queue is above the high watermark: the sender suspends until
    /// [`IoEvent::SendReady`].
    Suspend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecvWaiter {
    pid: Pid,
    length: usize,
}

#[derive(Debug)]
pub(super) struct ConnState {
    pub id: SocketId,
    pub owner: Pid,
    opts: SocketOpts,
    active: ActiveState,
    framer: Framer,
    sendq: SendQueue,
    readable: bool,
    writable: bool,
    /// The last pump stopped at [`READS_PER_TURN`] with data still wanted and waiting.
    wants_turn: bool,
    /// The poller saw the peer's FIN (EPOLLRDHUP): read until EOF even after a short
    /// read, since data and FIN can share one edge and no further edge will come.
    peer_closed: bool,
    recv_waiter: Option<RecvWaiter>,
    /// Processes suspended on the send queue (any process may send, so several may
    /// wait at once, as on a busy inet port): senders until it drains to the low
    /// watermark, a `close` until it is empty (inet's close waits for pending output).
    /// One list for both keeps an idle entry small.
    send_waiters: Vec<SendWaiter>,
    /// `shutdown(write)` asked while bytes were queued: done once they are written.
    shutdown_pending: bool,
    /// A deferred send left bytes for the end of its batch (`io::defer`), and the
    /// socket is noted there: later deferred sends need not note it again.
    flush_due: bool,
    write_closed: bool,
    closed: bool,
}

impl ConnState {
    /// A connected socket with validated options ([`SocketOpts::validate`]);
    /// `readable` starts false until the first edge, `writable` true.
    pub(super) fn new(id: SocketId, owner: Pid, opts: SocketOpts) -> ConnState {
        let mut active = ActiveState::passive();
        // Validated options cannot fail here, and a fresh socket has no count to run
        // out: `{active, 0}` at open is simply passive, with no notice to send.
        let _ = active.set(opts.active);
        ConnState {
            id,
            owner,
            opts,
            active,
            framer: Framer::new(),
            sendq: SendQueue::new(),
            readable: false,
            // A connected socket's send buffer starts empty: write at once rather than
            // wait for the poller's first edge. Until a scheduler polled, a process
            // that sent and then exited (or closed) had its bytes dropped by `close`,
            // which only writes a socket known to be writable
            // (tests/io_deferred_sends.rs). The first `WouldBlock` clears the flag.
            writable: true,
            peer_closed: false,
            wants_turn: false,
            recv_waiter: None,
            send_waiters: Vec::new(),
            shutdown_pending: false,
            flush_due: false,
            write_closed: false,
            closed: false,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(super) fn opts(&self) -> SocketOpts {
        SocketOpts {
            active: self.active.current(),
            ..self.opts
        }
    }

    /// Hands the socket to another process (`controlling_process`).
    pub(super) fn set_owner(&mut self, owner: Pid) {
        self.owner = owner;
    }

    /// Bytes this socket holds in user space (framer + send queue).
    #[cfg_attr(not(test), allow(dead_code))] // used by tests
    pub(super) fn buffered(&self) -> (usize, usize) {
        (self.framer.buffered(), self.sendq.queued())
    }

    /// Whether the socket must be given another turn (see [`READS_PER_TURN`]); reading
    /// the flag clears it.
    pub(super) fn take_turn_request(&mut self) -> bool {
        std::mem::take(&mut self.wants_turn)
    }

    fn wants_data(&self) -> bool {
        self.recv_waiter.is_some() || self.active.may_deliver()
    }

    /// A readiness edge from the poller (`hup`: the peer closed its side).
    pub(super) fn on_ready<S: Transport>(
        &mut self,
        io: &mut S,
        ready: Ready,
        scratch: &mut [u8],
        out: &mut Out,
    ) -> After {
        if self.closed {
            return After::Close;
        }
        let Ready {
            readable,
            writable,
            hup,
        } = ready;
        self.readable |= readable || hup;
        self.peer_closed |= hup;
        if writable {
            self.writable = true;
            if let Err(e) = self.flush(io, out) {
                return self.fail(e, out);
            }
        }
        self.pump(io, scratch, out)
    }

    /// Delivers what may be delivered: buffered frames first, then reads while the
    /// kernel may have data and someone wants it.
    pub(super) fn pump<S: Read>(&mut self, io: &mut S, scratch: &mut [u8], out: &mut Out) -> After {
        let mut reads = 0;
        self.wants_turn = false;
        loop {
            if self.closed {
                return After::Close;
            }
            match self.deliver_buffered(out) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return self.fail(e, out),
            }
            if !self.wants_data() || !self.readable {
                return After::Keep;
            }
            if reads == READS_PER_TURN {
                self.wants_turn = true;
                return After::Keep;
            }
            reads += 1;
            match io.read(scratch) {
                Ok(0) => return self.eof(out),
                Ok(n) => {
                    self.framer.push(&scratch[..n]);
                    if n < scratch.len() && !self.peer_closed {
                        self.readable = false; // drained; see the module's invariants
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return After::Keep;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.fail(e.into(), out),
            }
        }
    }

    /// One frame from the buffer to whoever may take it; `Ok(false)` if none.
    fn deliver_buffered(&mut self, out: &mut Out) -> Result<bool, IoError> {
        let limit = self.opts.frame_limit();
        if let Some(w) = self.recv_waiter {
            let frame = if w.length > 0 {
                self.framer.take_exact(w.length)
            } else {
                self.framer.next_frame(self.opts.packet, limit)?
            };
            let Some(data) = frame else {
                return Ok(false);
            };
            self.recv_waiter = None;
            let ev = IoEvent::Received {
                sock: self.id,
                result: Ok(data),
            };
            out.push((w.pid, ev));
            return Ok(true);
        }
        if !self.active.may_deliver() {
            return Ok(false);
        }
        let Some(data) = self.framer.next_frame(self.opts.packet, limit)? else {
            return Ok(false);
        };
        out.push((
            self.owner,
            IoEvent::Tcp {
                sock: self.id,
                data,
            },
        ));
        if self.active.delivered() == Notice::Passive {
            out.push((self.owner, IoEvent::TcpPassive { sock: self.id }));
        }
        Ok(true)
    }

    /// End of stream (exit_on_close): a partial frame is dropped, as inet does.
    fn eof(&mut self, out: &mut Out) -> After {
        self.fail(IoError::Closed, out)
    }

    /// The socket ends with `reason`: a waiting `recv` gets it; otherwise an active
    /// owner gets `tcp_error` (unless the reason is a plain close) then `tcp_closed`.
    fn fail(&mut self, reason: IoError, out: &mut Out) -> After {
        if self.recv_waiter.is_none() && self.active.may_deliver() {
            let sock = self.id;
            if reason != IoError::Closed {
                out.push((self.owner, IoEvent::TcpError { sock, reason }));
            }
            out.push((self.owner, IoEvent::TcpClosed { sock }));
        }
        self.finish(reason, out)
    }

    /// Marks the socket closed and releases anyone suspended on it.
    fn finish(&mut self, reason: IoError, out: &mut Out) -> After {
        self.closed = true;
        if let Some(w) = self.recv_waiter.take() {
            let result = Err(reason);
            out.push((
                w.pid,
                IoEvent::Received {
                    sock: self.id,
                    result,
                },
            ));
        }
        for SendWaiter { pid, .. } in std::mem::take(&mut self.send_waiters) {
            let result = Err(reason);
            out.push((
                pid,
                IoEvent::SendReady {
                    sock: self.id,
                    result,
                },
            ));
        }
        self.sendq.clear();
        self.framer = Framer::new();
        After::Close
    }

    /// `close` by a process: best-effort flush of what is queued, then closed.
    pub(super) fn close<S: Transport>(&mut self, io: &mut S, out: &mut Out) -> After {
        if !self.closed && self.writable {
            let _ = self.sendq.flush(io);
        }
        self.finish(IoError::Closed, out)
    }

    /// The first half of a `close` by `caller`: the bytes still queued (0: close now).
    /// Otherwise `caller` is told with `SendReady` when they are written (or the socket
    /// fails), and the queue keeps flushing meanwhile. Bytes `send` queued are bytes the
    /// caller was told were sent, so `close` must not drop them.
    pub(super) fn drain<S: Transport>(&mut self, io: &mut S, caller: Pid, out: &mut Out) -> usize {
        if self.closed {
            return 0;
        }
        if let Err(e) = self.flush(io, out) {
            let _ = self.fail(e, out);
            return 0;
        }
        if self.sendq.is_empty() {
            return 0;
        }
        self.wait_on_sendq(caller, true);
        self.sendq.queued()
    }

    fn wait_on_sendq(&mut self, pid: Pid, until_empty: bool) {
        match self.send_waiters.iter_mut().find(|w| w.pid == pid) {
            Some(w) => w.until_empty = until_empty,
            None => self.send_waiters.push(SendWaiter { pid, until_empty }),
        }
    }

    /// `send(data)` by `caller` (any process may send, as in Erlang), written at once.
    #[cfg_attr(not(test), allow(dead_code))] // used by tests
    pub(super) fn send<S: Transport>(
        &mut self,
        io: &mut S,
        caller: Pid,
        data: Binary,
        out: &mut Out,
    ) -> Result<SendStatus, IoError> {
        self.send_or_defer(io, caller, data, false, out)
            .map(|(s, _)| s)
    }

    /// `send(data)` by `caller`. With `defer`
    /// (the caller's thread writes deferred sockets later, `io::defer`), bytes that
    /// keep the queue at or below the high watermark are only queued; the result says
    /// whether the socket must be noted for that later write (it was not yet).
    pub(super) fn send_or_defer<S: Transport>(
        &mut self,
        io: &mut S,
        caller: Pid,
        data: Binary,
        defer: bool,
        out: &mut Out,
    ) -> Result<(SendStatus, bool), IoError> {
        if self.closed || self.write_closed || self.shutdown_pending {
            return Err(IoError::Closed);
        }
        let (hdr, n) = header(self.opts.packet, data.len())?;
        self.sendq.push(&hdr[..n], data);
        if defer && self.sendq.queued() <= self.opts.high_watermark {
            let note = !std::mem::replace(&mut self.flush_due, true);
            return Ok((SendStatus::Sent, note));
        }
        self.send_now(io, caller, out).map(|s| (s, false))
    }

    /// The write half of [`ConnState::send`]: what is queued goes to the kernel now.
    fn send_now<S: Transport>(
        &mut self,
        io: &mut S,
        caller: Pid,
        out: &mut Out,
    ) -> Result<SendStatus, IoError> {
        if let Err(e) = self.flush(io, out) {
            let _ = self.fail(e, out);
            return Err(e);
        }
        if self.sendq.queued() > self.opts.high_watermark {
            self.wait_on_sendq(caller, false);
            return Ok(SendStatus::Suspend);
        }
        Ok(SendStatus::Sent)
    }

    /// The end of the batch that deferred a send here (`io::defer`): writes what is
    /// queued (a later send, an edge or `close` may have written it already).
    pub(super) fn flush_deferred<S: Transport>(&mut self, io: &mut S, out: &mut Out) -> After {
        self.flush_due = false;
        if self.closed {
            return After::Close;
        }
        match self.flush(io, out) {
            Ok(()) => After::Keep,
            Err(e) => self.fail(e, out),
        }
    }

    fn flush<S: Transport>(&mut self, io: &mut S, out: &mut Out) -> Result<(), IoError> {
        if self.writable && !self.sendq.is_empty() && self.sendq.flush(io)? == Flush::WouldBlock {
            self.writable = false;
        }
        if !self.send_waiters.is_empty() && self.sendq.queued() <= self.opts.low_watermark {
            let empty = self.sendq.is_empty();
            let sock = self.id;
            self.send_waiters.retain(|w| {
                let go = empty || !w.until_empty;
                if go {
                    let result = Ok(());
                    out.push((w.pid, IoEvent::SendReady { sock, result }));
                }
                !go
            });
        }
        if self.shutdown_pending && self.sendq.is_empty() {
            self.shutdown_pending = false;
            self.write_closed = true;
            io.shutdown_write()?;
        }
        Ok(())
    }

    /// A passive `recv(length)` by `caller`: `Some(result)` at once, or `None` if the
    /// caller must suspend until [`IoEvent::Received`].
    pub(super) fn recv<S: Read>(
        &mut self,
        io: &mut S,
        caller: Pid,
        length: usize,
        scratch: &mut [u8],
        out: &mut Out,
    ) -> Result<Option<Binary>, IoError> {
        if self.closed {
            return Err(IoError::Closed);
        }
        if self.active.may_deliver() || length > MAX_PACKET_SIZE {
            return Err(IoError::Einval);
        }
        if length > 0 && self.opts.packet != Packet::Raw {
            return Err(IoError::Einval);
        }
        if self.recv_waiter.is_some() {
            return Err(IoError::Ealready);
        }
        self.recv_waiter = Some(RecvWaiter {
            pid: caller,
            length,
        });
        let mark = out.len();
        let _ = self.pump(io, scratch, out);
        // Completed in this call: hand the result back instead of an event.
        let pos = out[mark..]
            .iter()
            .position(|(pid, ev)| *pid == caller && matches!(ev, IoEvent::Received { .. }));
        match pos.map(|i| out.remove(mark + i)) {
            Some((_, IoEvent::Received { result, .. })) => result.map(Some),
            _ => Ok(None),
        }
    }

    /// Forgets `caller` as a waiter (its `recv` timed out, or it died while suspended
    /// in `recv` or `send`); `true` if it was waiting, `false` if its operation had
    /// completed already (the result is on its way).
    pub(super) fn cancel(&mut self, caller: Pid) -> bool {
        let mut found = false;
        if self.recv_waiter.is_some_and(|w| w.pid == caller) {
            self.recv_waiter = None;
            found = true;
        }
        let before = self.send_waiters.len();
        self.send_waiters.retain(|w| w.pid != caller);
        found |= self.send_waiters.len() != before;
        found
    }

    /// Applies `setopts`; a re-armed socket delivers what it can at once.
    pub(super) fn setopts<S: Transport>(
        &mut self,
        io: &mut S,
        set: SetOpts,
        scratch: &mut [u8],
        out: &mut Out,
    ) -> Result<After, IoError> {
        if self.closed {
            return Err(IoError::Closed);
        }
        let mut opts = self.opts;
        if let Some(p) = set.packet {
            opts.packet = p;
        }
        if let Some(n) = set.packet_size {
            opts.packet_size = n;
        }
        if let Some(a) = set.active {
            opts.active = a;
        }
        let opts = opts.validate()?;
        if let Some(a) = set.active {
            if self.active.set(a)? == Notice::Passive {
                out.push((self.owner, IoEvent::TcpPassive { sock: self.id }));
            }
        }
        self.opts = opts;
        Ok(self.pump(io, scratch, out))
    }

    /// `shutdown(write)`: the peer sees EOF once everything queued is written (now,
    /// if nothing is). Reading goes on.
    pub(super) fn shutdown_write<S: Transport>(
        &mut self,
        io: &mut S,
        out: &mut Out,
    ) -> Result<(), IoError> {
        if self.closed {
            return Err(IoError::Closed);
        }
        if self.write_closed || self.shutdown_pending {
            return Ok(());
        }
        self.shutdown_pending = true;
        if let Err(e) = self.flush(io, out) {
            let _ = self.fail(e, out);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
