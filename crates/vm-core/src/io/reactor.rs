//! The reactor: one epoll instance (through mio), the socket table, and the
//! operations processes call; events go out through an [`IoSink`].
//!
//! Invariants:
//! - **Registered once.** A socket is registered when it is created, for reading and
//!   writing, edge-triggered, and deregistered only when it closes: arming and
//!   disarming a socket (active once, passive) changes our state, never epoll's, so
//!   re-arming costs no syscall unless data is waiting.
//! - **One poller at a time.** [`Reactor::poll`] takes the poller with a `try_lock`: a
//!   second thread that calls it while another polls returns at once (BEAM's
//!   check_io: one scheduler polls, the others run processes). Any thread may
//!   perform operations meanwhile: each socket has its own lock.
//! - **No lock is held while the sink runs.** Events are collected under the socket's
//!   lock and delivered after it is released, so a sink may call straight back into
//!   the reactor (an echo handler that sends and re-arms from `deliver` works).
//! - **Sockets never outlive their owner's interest.** `owner_exited` closes every
//!   socket the process owns (the peer sees EOF); an accepted or connected socket
//!   whose new owner died before the event reached it is closed too, and
//!   `controlling_process` refuses a dead target (`badarg`) and closes a socket
//!   whose new owner died during the hand-over.
//! - **Bounded work per socket per poll.** A socket reads at most `READS_PER_TURN`
//!   times per turn; one with more waiting is queued (`again`) and served at the next
//!   poll, which then does not sleep: a flooding peer cannot hold a scheduler.
//! - **Bounded memory per socket.** An idle connected socket holds its entry and
//!   nothing else: no read buffer, no queue.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::conn::{ConnState, Out, Ready, SendStatus, Transport, READ_CHUNK};
use super::defer;
use super::error::IoError;
use super::event::{IoEvent, IoSink, SocketId};
use super::options::{SetOpts, SocketOpts};
use super::stream::{Addr, Listener, SockName, Stream};
use super::table::Table;
use crate::term::{Binary, Pid};

/// Readiness events taken per `epoll_wait`: enough for a busy scheduler's turn
/// without making one poll's processing long (each event is a few µs of work).
const EVENTS_PER_POLL: usize = 1024;
/// The waker's token; socket tokens are ids, whose generation half never reaches it.
const WAKE: Token = Token(usize::MAX);

/// Options of `listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOpts {
    /// Pending connections the kernel keeps (`backlog`).
    pub backlog: u32,
    /// `SO_REUSEADDR` (default on: a restarted server rebinds at once).
    pub reuseaddr: bool,
    /// What each accepted socket starts with (they inherit the listener's options).
    pub socket: SocketOpts,
}

impl Default for ListenOpts {
    fn default() -> Self {
        ListenOpts {
            backlog: 1024,
            reuseaddr: true,
            socket: SocketOpts::default(),
        }
    }
}

/// Outcome of `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A connection was waiting: the new socket, owned by the caller.
    Ready(SocketId),
    /// Suspend until [`IoEvent::Accepted`].
    Pending,
}

/// Outcome of `recv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv {
    /// Data was buffered or readable: here it is.
    Data(Binary),
    /// Suspend until [`IoEvent::Received`].
    Pending,
}

struct ListenState {
    owner: Pid,
    listener: Listener,
    accept_opts: SocketOpts,
    /// Processes suspended in `accept`, served in arrival order.
    waiters: VecDeque<Pid>,
}

enum Entry {
    Conn {
        io: Stream,
        st: ConnState,
        /// The process waiting for a non-blocking connect to complete.
        connecting: Option<Pid>,
    },
    Listen(ListenState),
    /// A socket its owner reads and writes itself ([`Reactor::watch`]): the reactor
    /// only tells it of readiness, once per arming.
    Watch {
        io: mio::net::TcpStream,
        owner: Pid,
        /// The next readiness is told to the owner (cleared when it is).
        armed: bool,
    },
    /// Closed by EOF or error; the id stays `closed` until its owner closes it or exits.
    Closed {
        owner: Pid,
    },
}

impl Entry {
    fn owner(&self) -> Pid {
        match self {
            Entry::Conn { st, .. } => st.owner,
            Entry::Listen(l) => l.owner,
            Entry::Watch { owner, .. } | Entry::Closed { owner } => *owner,
        }
    }
}

impl Transport for Stream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

struct Poller {
    poll: Poll,
    events: Events,
}

/// The I/O reactor. Share it (`Arc`) between the threads that poll and operate.
pub struct Reactor {
    poller: Mutex<Poller>,
    registry: Registry,
    waker: Waker,
    table: Table<Mutex<Entry>>,
    sink: Arc<dyn IoSink>,
    /// Sockets that used up their turn with data still waiting (`READS_PER_TURN`):
    /// served at the next `poll`, after its new events.
    again: Mutex<Vec<SocketId>>,
}

thread_local! {
    /// Each thread's read buffer: reads land here, only undelivered bytes are kept
    /// per socket.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.is_empty() {
                buf.resize(READ_CHUNK, 0);
            }
            f(&mut buf)
        }
        // Re-entered from inside a read (cannot happen today): use a fresh buffer.
        Err(_) => f(&mut vec![0u8; READ_CHUNK]),
    })
}

fn lock(e: &Mutex<Entry>) -> MutexGuard<'_, Entry> {
    // Socket operations do not panic; if one did, the entry is still a valid state
    // (each step assigns whole fields), so keep serving it rather than poison it all.
    e.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reactor {
    /// A reactor whose events go to `sink` (one epoll instance and its waker).
    pub fn new(sink: Arc<dyn IoSink>) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        Ok(Reactor {
            poller: Mutex::new(Poller {
                poll,
                events: Events::with_capacity(EVENTS_PER_POLL),
            }),
            registry,
            waker,
            table: Table::new(),
            sink,
            again: Mutex::new(Vec::new()),
        })
    }

    /// Open sockets and listeners (closed-but-not-yet-released ids included). One
    /// relaxed atomic load, no lock: a busy scheduler can skip polling while it is 0.
    pub fn socket_count(&self) -> usize {
        self.table.len()
    }

    /// Waits up to `timeout` (`None`: until an event or [`Reactor::wake`]) for
    /// readiness and handles it. Returns the number of socket events handled; 0 at
    /// once if another thread is polling.
    pub fn poll(&self, timeout: Option<Duration>) -> io::Result<usize> {
        self.try_poll(timeout, || true, || {}).unwrap_or(Ok(0))
    }

    /// [`Reactor::poll`] for a thread that has other things to do when another one
    /// polls: `None` at once if the poller is taken. With the poller held, `sleep`
    /// says whether it may wait for `timeout` (false: only look); `woke` runs after
    /// `epoll_wait` returns and before any event is handled. A scheduler parking in
    /// epoll joins the idle set and re-checks its queues in `sleep`, and leaves the
    /// set in `woke`, so the processes its own events wake are not reported to a
    /// scheduler that is no longer asleep (scheduler/idle.rs).
    pub fn try_poll(
        &self,
        timeout: Option<Duration>,
        sleep: impl FnOnce() -> bool,
        woke: impl FnOnce(),
    ) -> Option<io::Result<usize>> {
        let Ok(mut p) = self.poller.try_lock() else {
            return None;
        };
        let Poller { poll, events } = &mut *p;
        let again = std::mem::take(&mut *self.again.lock().unwrap_or_else(|e| e.into_inner()));
        // Sockets waiting for another turn: look for new events, but do not sleep.
        let timeout = if again.is_empty() && sleep() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let waited = poll.poll(events, timeout);
        woke();
        match waited {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                self.requeue(again);
                return Some(Ok(0));
            }
            Err(e) => {
                self.requeue(again);
                return Some(Err(e));
            }
        }
        let mut handled = 0;
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            handled += 1;
            let ready = Ready {
                readable: ev.is_readable(),
                writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                hup: ev.is_read_closed() || ev.is_error(),
            };
            self.on_ready(SocketId(ev.token().0 as u64), ready);
        }
        for id in again {
            handled += 1;
            self.on_ready(id, Ready::default());
        }
        Some(Ok(handled))
    }

    /// Puts back sockets whose extra turn a failed `epoll_wait` did not serve.
    fn requeue(&self, again: Vec<SocketId>) {
        if !again.is_empty() {
            self.again
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(again);
        }
    }

    /// Interrupts a blocked [`Reactor::poll`] (a scheduler parked in epoll has work).
    pub fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }

    fn on_ready(&self, id: SocketId, ready: Ready) {
        let _ = self.with_entry(id, |this, entry, out| {
            match entry {
                Entry::Conn { io, st, connecting } => {
                    if let Some(pid) = *connecting {
                        if !ready.writable {
                            return Ok(());
                        }
                        match io.connect_result() {
                            Ok(false) => return Ok(()),
                            Ok(true) => {
                                *connecting = None;
                                let _ = io.set_nodelay(st.opts().nodelay);
                                out.push((
                                    pid,
                                    IoEvent::Connected {
                                        sock: id,
                                        result: Ok(()),
                                    },
                                ));
                            }
                            Err(e) => {
                                *connecting = None;
                                let result = Err(IoError::from(e));
                                out.push((pid, IoEvent::Connected { sock: id, result }));
                                let _ = st.close(io, out);
                                return Ok(());
                            }
                        }
                    }
                    with_scratch(|s| {
                        let _ = st.on_ready(io, ready, s, out);
                    });
                }
                Entry::Listen(l) => {
                    if ready.readable || ready.hup {
                        this.serve_acceptors(id, l, out);
                    }
                }
                Entry::Watch { owner, armed, .. } => {
                    if std::mem::take(armed) {
                        out.push((*owner, IoEvent::Ready { sock: id }));
                    }
                }
                Entry::Closed { .. } => {}
            }
            Ok(())
        });
    }

    /// Runs `f` on `id`'s entry under its lock, tears down an entry that closed,
    /// then delivers the events `f` produced.
    fn with_entry<R>(
        &self,
        id: SocketId,
        f: impl FnOnce(&Reactor, &mut Entry, &mut Out) -> Result<R, IoError>,
    ) -> Result<R, IoError> {
        let cell = self.table.get(id).ok_or(IoError::Closed)?;
        let mut out = Out::new();
        let result = {
            let mut entry = lock(&cell);
            let r = f(self, &mut entry, &mut out);
            if let Entry::Conn { st, .. } = &mut *entry {
                if st.is_closed() {
                    self.release_os(&mut entry);
                } else if st.take_turn_request() {
                    self.again
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(id);
                    // The poller may be asleep with no edge to come for this socket.
                    let _ = self.waker.wake();
                }
            }
            r
        };
        self.deliver(out);
        result
    }

    /// Deregisters and closes the OS socket; the entry becomes `Closed`.
    fn release_os(&self, entry: &mut Entry) {
        let owner = entry.owner();
        match std::mem::replace(entry, Entry::Closed { owner }) {
            Entry::Conn { mut io, .. } => {
                let _ = self.registry.deregister(&mut io);
            }
            Entry::Listen(mut l) => {
                let _ = self.registry.deregister(&mut l.listener);
            }
            Entry::Watch { mut io, .. } => {
                let _ = self.registry.deregister(&mut io);
            }
            Entry::Closed { .. } => {}
        }
    }

    fn deliver(&self, out: Out) {
        for (pid, ev) in out {
            let handed = match &ev {
                IoEvent::Accepted { result: Ok(s), .. } => Some(*s),
                IoEvent::Connected {
                    sock,
                    result: Ok(()),
                } => Some(*sock),
                _ => None,
            };
            if !self.sink.deliver(pid, ev) {
                if let Some(s) = handed {
                    // The new owner died meanwhile: nobody may hold this socket.
                    let _ = self.close(s);
                }
            }
        }
    }

    fn register(
        &self,
        owner: Pid,
        make: impl FnOnce(SocketId) -> Entry,
    ) -> Result<SocketId, IoError> {
        let (id, cell) = self.table.insert(owner, |id| Mutex::new(make(id)));
        let token = Token(id.0 as usize);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let r = match &mut *lock(&cell) {
            Entry::Conn { io, .. } => self.registry.register(io, token, interest),
            Entry::Watch { io, .. } => self.registry.register(io, token, interest),
            Entry::Listen(l) => self
                .registry
                .register(&mut l.listener, token, Interest::READABLE),
            Entry::Closed { .. } => Ok(()),
        };
        if let Err(e) = r {
            self.table.remove(id, owner);
            return Err(e.into());
        }
        Ok(id)
    }

    fn adopt(
        &self,
        io: Stream,
        owner: Pid,
        opts: SocketOpts,
        connecting: Option<Pid>,
    ) -> Result<SocketId, IoError> {
        if connecting.is_none() {
            io.set_nodelay(opts.nodelay)?;
        }
        self.register(owner, |id| Entry::Conn {
            io,
            st: ConnState::new(id, owner, opts),
            connecting,
        })
    }

    // ------------------------------------------------------------ operations

    /// `listen`: a listening socket owned by `owner`.
    pub fn listen(&self, owner: Pid, addr: &Addr, opts: ListenOpts) -> Result<SocketId, IoError> {
        let accept_opts = opts.socket.validate()?;
        let listener = Listener::bind(addr, opts.backlog, opts.reuseaddr)?;
        self.register(owner, |_| {
            Entry::Listen(ListenState {
                owner,
                listener,
                accept_opts,
                waiters: VecDeque::new(),
            })
        })
    }

    /// `accept` by `caller`: a waiting connection now, or `Pending`.
    pub fn accept(&self, listener: SocketId, caller: Pid) -> Result<Accept, IoError> {
        self.with_entry(listener, |this, entry, out| {
            let Entry::Listen(l) = entry else {
                return Err(IoError::Einval);
            };
            if l.waiters.is_empty() {
                if let Some(id) = this.try_accept(l, caller)? {
                    return Ok(Accept::Ready(id));
                }
                l.waiters.push_back(caller);
            } else {
                // Others wait already: queue behind them, then serve the queue from
                // what the kernel holds now. Readiness is edge-triggered, so
                // connections left in the backlog (an acceptor backed off on emfile
                // and retries) would otherwise wait for the next connection's edge.
                l.waiters.push_back(caller);
                this.serve_acceptors(listener, l, out);
            }
            Ok(Accept::Pending)
        })
    }

    fn try_accept(&self, l: &mut ListenState, owner: Pid) -> Result<Option<SocketId>, IoError> {
        loop {
            match l.listener.accept() {
                Ok(io) => return self.adopt(io, owner, l.accept_opts, None).map(Some),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The client gave up before we took it: take the next one.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A readable listener: hands waiting connections to waiting acceptors.
    fn serve_acceptors(&self, id: SocketId, l: &mut ListenState, out: &mut Out) {
        while let Some(&pid) = l.waiters.front() {
            match self.try_accept(l, pid) {
                Ok(None) => break,
                Ok(Some(s)) => {
                    l.waiters.pop_front();
                    out.push((
                        pid,
                        IoEvent::Accepted {
                            listener: id,
                            result: Ok(s),
                        },
                    ));
                }
                Err(e) => {
                    // emfile and the like: this acceptor learns it (and backs off, in
                    // phase 2); the others keep waiting for the next edge or retry.
                    l.waiters.pop_front();
                    out.push((
                        pid,
                        IoEvent::Accepted {
                            listener: id,
                            result: Err(e),
                        },
                    ));
                    if e.is_fd_exhaustion() {
                        break;
                    }
                }
            }
        }
    }

    /// `connect`: the socket exists at once (owned by `owner`); the outcome arrives
    /// as [`IoEvent::Connected`] (on failure the socket is closed and must still be
    /// `close`d to release its id, or goes with its owner).
    pub fn connect(&self, owner: Pid, addr: &Addr, opts: SocketOpts) -> Result<SocketId, IoError> {
        let opts = opts.validate()?;
        let io = Stream::connect(addr)?;
        self.adopt(io, owner, opts, Some(owner))
    }

    /// Adopts a connected TCP socket that `owner` reads and writes itself, on its own
    /// handle of it (a `try_clone`), without blocking (`MSG_DONTWAIT`): the reactor
    /// does no I/O on it and only tells the owner, with [`IoEvent::Ready`], that the
    /// socket may have become readable or writable or was closed by the peer. It
    /// tells it once, then not again until the owner calls [`Reactor::rearm`]; the
    /// owner re-arms *before* doing its I/O, so readiness that comes during that I/O is
    /// told again and none is lost (readiness is edge-triggered). The socket starts
    /// armed, and epoll reports at registration what is ready then. The file
    /// description's blocking mode is left as it is, so other handles of it keep
    /// their blocking reads and writes. `close` (or the owner's exit) deregisters it
    /// and drops the reactor's handle; the connection itself lives as long as other
    /// handles of it do. This is how a protocol with its own buffers (Erlang
    /// distribution) runs on the reactor without a copy through active messages.
    pub fn watch(&self, owner: Pid, stream: std::net::TcpStream) -> Result<SocketId, IoError> {
        let io = mio::net::TcpStream::from_std(stream);
        self.register(owner, |_| Entry::Watch {
            io,
            owner,
            armed: true,
        })
    }

    /// Arms a watched socket again (see [`Reactor::watch`]).
    pub fn rearm(&self, sock: SocketId) -> Result<(), IoError> {
        self.with_entry(sock, |_, entry, _| match entry {
            Entry::Watch { armed, .. } => {
                *armed = true;
                Ok(())
            }
            Entry::Closed { .. } => Err(IoError::Closed),
            _ => Err(IoError::Einval),
        })
    }

    /// `send` by `caller`. On a thread that defers its sends (a scheduler running a
    /// batch, `io::defer`) small sends are queued and written when the batch ends.
    pub fn send(&self, sock: SocketId, caller: Pid, data: Binary) -> Result<SendStatus, IoError> {
        let defer = defer::active();
        let (status, note) = self.with_entry(sock, |_, entry, out| match entry {
            Entry::Conn {
                io,
                st,
                connecting: None,
            } => st.send_or_defer(io, caller, data, defer, out),
            Entry::Conn { .. } | Entry::Listen(_) => Err(IoError::Enotconn),
            Entry::Watch { .. } => Err(IoError::Einval),
            Entry::Closed { .. } => Err(IoError::Closed),
        })?;
        if note {
            defer::note(sock);
        }
        Ok(status)
    }

    /// Writes what deferred sends left queued on `socks` (the end of a batch,
    /// `io::defer`); closed sockets are skipped.
    pub(crate) fn flush_deferred(&self, socks: &[SocketId]) {
        for &id in socks {
            let _ = self.with_entry(id, |_, entry, out| {
                if let Entry::Conn {
                    io,
                    st,
                    connecting: None,
                } = entry
                {
                    let _ = st.flush_deferred(io, out);
                }
                Ok(())
            });
        }
    }

    /// Passive `recv(length)` by `caller`.
    pub fn recv(&self, sock: SocketId, caller: Pid, length: usize) -> Result<Recv, IoError> {
        self.with_entry(sock, |_, entry, out| match entry {
            Entry::Conn {
                io,
                st,
                connecting: None,
            } => with_scratch(|s| st.recv(io, caller, length, s, out)).map(|d| match d {
                Some(d) => Recv::Data(d),
                None => Recv::Pending,
            }),
            Entry::Conn { .. } | Entry::Listen(_) => Err(IoError::Enotconn),
            Entry::Watch { .. } => Err(IoError::Einval),
            Entry::Closed { .. } => Err(IoError::Closed),
        })
    }

    /// `setopts`. On a listener it sets what accepted sockets will start with.
    pub fn setopts(&self, sock: SocketId, set: SetOpts) -> Result<(), IoError> {
        self.with_entry(sock, |_, entry, out| match entry {
            Entry::Conn { io, st, .. } => {
                if let Some(on) = set.nodelay {
                    io.set_nodelay(on)?;
                }
                with_scratch(|s| st.setopts(io, set, s, out)).map(|_| ())
            }
            Entry::Listen(l) => {
                let mut o = l.accept_opts;
                o.packet = set.packet.unwrap_or(o.packet);
                o.packet_size = set.packet_size.unwrap_or(o.packet_size);
                o.active = set.active.unwrap_or(o.active);
                o.nodelay = set.nodelay.unwrap_or(o.nodelay);
                l.accept_opts = o.validate()?;
                Ok(())
            }
            Entry::Watch { .. } => Err(IoError::Einval),
            Entry::Closed { .. } => Err(IoError::Closed),
        })
    }

    /// The options a socket has now (`getopts`).
    pub fn getopts(&self, sock: SocketId) -> Result<SocketOpts, IoError> {
        self.with_entry(sock, |_, entry, _| match entry {
            Entry::Conn { st, .. } => Ok(st.opts()),
            Entry::Listen(l) => Ok(l.accept_opts),
            Entry::Watch { .. } => Err(IoError::Einval),
            Entry::Closed { .. } => Err(IoError::Closed),
        })
    }

    /// `controlling_process`: only the owner may hand a socket over, and only to a
    /// live process: a target that does not exist (it exited, and its exit already
    /// closed what it owned) is refused with `badarg`, as gen_tcp returns, and the
    /// socket stays the caller's. A target that dies while the socket is handed over
    /// gets it closed, as its exit would have: the liveness check after the owner
    /// index is updated pairs with `owner_exited`, which runs after the process left
    /// the process table, so one of the two always sees the other.
    pub fn controlling_process(&self, sock: SocketId, caller: Pid, to: Pid) -> Result<(), IoError> {
        // Asked before the socket's lock is taken (the sink never runs under one).
        let alive = to == caller || self.sink.is_alive(to);
        let from = self.with_entry(sock, |_, entry, _| {
            let owner = entry.owner();
            if owner != caller {
                return Err(IoError::NotOwner);
            }
            if !alive {
                return Err(IoError::Badarg);
            }
            match entry {
                Entry::Conn { st, .. } => st.set_owner(to),
                Entry::Listen(l) => l.owner = to,
                Entry::Watch { owner, .. } | Entry::Closed { owner } => *owner = to,
            }
            Ok(owner)
        })?;
        self.table.set_owner(sock, from, to);
        if to != caller && !self.sink.is_alive(to) {
            // `to` exited after the check above; its exit may have looked for its
            // sockets before this one was indexed under it.
            let _ = self.close(sock);
        }
        Ok(())
    }

    /// The first half of a `close` by `caller` that keeps what `send` queued: the bytes
    /// still queued, 0 when the socket may be closed now. Otherwise `caller` gets
    /// [`IoEvent::SendReady`] once they are written or the socket fails (or withdraws
    /// with [`Reactor::cancel`]), and then calls [`Reactor::close`].
    pub fn drain(&self, sock: SocketId, caller: Pid) -> usize {
        self.with_entry(sock, |_, entry, out| {
            Ok(match entry {
                Entry::Conn {
                    io,
                    st,
                    connecting: None,
                } => st.drain(io, caller, out),
                _ => 0,
            })
        })
        .unwrap_or(0)
    }

    /// `close`: idempotent (closing a closed or stale id is `Ok`). Processes suspended
    /// on the socket are released with `closed`.
    pub fn close(&self, sock: SocketId) -> Result<(), IoError> {
        let Some(cell) = self.table.get(sock) else {
            return Ok(());
        };
        let mut out = Out::new();
        let owner = {
            let mut entry = lock(&cell);
            match &mut *entry {
                Entry::Conn { io, st, connecting } => {
                    if let Some(pid) = connecting.take() {
                        let result = Err(IoError::Closed);
                        out.push((pid, IoEvent::Connected { sock, result }));
                    }
                    let _ = st.close(io, &mut out);
                }
                Entry::Listen(l) => {
                    for pid in l.waiters.drain(..) {
                        let result = Err(IoError::Closed);
                        out.push((
                            pid,
                            IoEvent::Accepted {
                                listener: sock,
                                result,
                            },
                        ));
                    }
                }
                Entry::Watch { .. } | Entry::Closed { .. } => {}
            }
            self.release_os(&mut entry);
            entry.owner()
        };
        self.table.remove(sock, owner);
        self.deliver(out);
        Ok(())
    }

    /// `shutdown(how)`: `Write` waits for queued bytes, then the peer sees EOF.
    pub fn shutdown(&self, sock: SocketId, how: Shutdown) -> Result<(), IoError> {
        self.with_entry(sock, |_, entry, out| match entry {
            Entry::Conn {
                io,
                st,
                connecting: None,
            } => match how {
                Shutdown::Write => st.shutdown_write(io, out),
                Shutdown::Read | Shutdown::Both => {
                    if how == Shutdown::Both {
                        st.shutdown_write(io, out)?;
                    }
                    io.shutdown(Shutdown::Read).map_err(IoError::from)
                }
            },
            Entry::Conn { .. } | Entry::Listen(_) => Err(IoError::Enotconn),
            Entry::Watch { .. } => Err(IoError::Einval),
            Entry::Closed { .. } => Err(IoError::Closed),
        })
    }

    /// Withdraws `caller` from whatever it waits for on `sock` (a timeout fired, or it
    /// is exiting while suspended): `true` if it was waiting, `false` if the result had
    /// already been sent to it.
    pub fn cancel(&self, sock: SocketId, caller: Pid) -> bool {
        self.with_entry(sock, |_, entry, _| {
            Ok(match entry {
                Entry::Conn { st, .. } => st.cancel(caller),
                Entry::Listen(l) => {
                    let before = l.waiters.len();
                    l.waiters.retain(|p| *p != caller);
                    l.waiters.len() != before
                }
                Entry::Watch { .. } | Entry::Closed { .. } => false,
            })
        })
        .unwrap_or(false)
    }

    /// The owner exited: close everything it owned (peers see EOF).
    pub fn owner_exited(&self, owner: Pid) {
        for id in self.table.owned_by(owner) {
            let _ = self.close(id);
        }
    }

    /// Closes every socket (the VM is shutting down): peers see EOF, suspended
    /// callers get `closed`.
    pub fn close_all(&self) {
        for id in self.table.ids() {
            let _ = self.close(id);
        }
    }

    /// The peer's address (`enotconn` for a listener).
    pub fn peername(&self, sock: SocketId) -> Result<SockName, IoError> {
        self.with_entry(sock, |_, entry, _| match entry {
            Entry::Conn { io, .. } => io.peer_name().map_err(IoError::from),
            Entry::Watch { io, .. } => io.peer_addr().map(SockName::Inet).map_err(IoError::from),
            Entry::Listen(_) => Err(IoError::Enotconn),
            Entry::Closed { .. } => Err(IoError::Closed),
        })
    }

    /// This end's address (a listener bound to port 0 tells its port).
    pub fn sockname(&self, sock: SocketId) -> Result<SockName, IoError> {
        self.with_entry(sock, |_, entry, _| match entry {
            Entry::Conn { io, .. } => io.sock_name().map_err(IoError::from),
            Entry::Listen(l) => l.listener.sock_name().map_err(IoError::from),
            Entry::Watch { io, .. } => io.local_addr().map(SockName::Inet).map_err(IoError::from),
            Entry::Closed { .. } => Err(IoError::Closed),
        })
    }

    /// The owner of `sock`, if it is open.
    pub fn owner(&self, sock: SocketId) -> Option<Pid> {
        self.with_entry(sock, |_, entry, _| Ok(entry.owner())).ok()
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// An idle connection costs its entry (plus a table slot and an owner-index
    /// entry, and the kernel's socket): no buffers. 10,000 idle connections hold
    /// ~2.5 MB here; the limit keeps it from creeping up unnoticed.
    #[test]
    fn an_idle_connection_entry_stays_small() {
        let size = std::mem::size_of::<Mutex<Entry>>();
        assert!(size <= 256, "an idle connection entry is {size} bytes");
        assert_eq!(super::super::framing::Framer::new().capacity(), 0);
    }
}
