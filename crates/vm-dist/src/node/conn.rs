//! The driver's connections: handshakes over blocking sockets, dispatch of control
//! messages, the ticker, and who reads and writes an established connection.
//!
//! Two ways to run a connection, chosen when it is established:
//! - **Threads** (the standalone driver, and any host that does not run connections):
//!   a reader thread blocks in `read`, a writer thread writes the batches past
//!   [`INLINE_LIMIT`].
//! - **Host-run** ([`Host::runs_connections`]; the VM): no thread. The host polls the
//!   socket and calls [`ConnIo::run`](super::ConnIo::run) when it is ready, on its own
//!   thread (the VM: a native process woken by its reactor). Reads and writes use
//!   `MSG_DONTWAIT` per call, so the socket's file description stays blocking for the
//!   handshake and every other handle. A sender writes its batch itself whatever its
//!   size; what a full socket does not take stays in [`Out::rest`] (`handed`), and
//!   `ConnIo::run` writes it when the socket is writable again.
//!
//! In both, bytes go out in the order they were appended, one writer at a time.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::conn_io::{self, ConnIo};
use super::{
    lock, resolve, Delivery, DistError, Inner, NodeEvent, Reply, SETUP_TIMEOUT, SYSTEM_ID,
};
use crate::atoms::LocalAtoms;
use crate::connection::{ConnError, Connection, Incoming, TimerAction, TICK};
use crate::control::{Control, DistMessage, ProcRef, Style, SPAWN_FLAG_LINK, SPAWN_FLAG_MONITOR};
use crate::epmd;
use crate::etf::{Segments, Sink};
use crate::handshake::{
    simultaneous, Decision, Established, Handshake, HandshakeConfig, HandshakeError, PeerInfo,
    Progress,
};
use crate::term::{Atom, Pid, Ref, Term};

/// Read buffer size: large enough that a bulk transfer takes few system calls.
pub(super) const READ_CHUNK: usize = 256 * 1024;
/// A sender writes the pending bytes itself (no thread hand-off: the round trip's
/// latency) while they are at most this many; past it the writer thread takes them, so
/// a sender never blocks long in a write of a big batch (a scheduler thread, possibly
/// holding the GIL in the Python binding).
const INLINE_LIMIT: usize = 64 * 1024;
/// Largest output buffer a connection keeps between batches: a batch at the busy
/// limit plus a 1 MiB message fits, so a bulk stream alternates between two buffers;
/// a bigger burst's goes back.
const RETAIN_MAX: usize = 4 * 1024 * 1024;
/// Bytes waiting for the writer past which a sender waits for it to take them: erl's
/// default `dist_buf_busy_limit` (1 MiB).
const BUSY_LIMIT: usize = 1024 * 1024;
/// Longest a sender waits at the busy limit: a peer that stopped reading slows its
/// senders down but never holds a scheduler thread (and the GIL) for long; past this
/// the bytes queue as before and the tick timeout deals with the peer.
const BUSY_WAIT: Duration = Duration::from_millis(50);
/// Most handshakes in progress at once; connections past it are closed at once, so a
/// flood of idle connections cannot pile up threads (each gives up after
/// SETUP_TIMEOUT anyway).
const MAX_HANDSHAKES: usize = 64;
/// How often the ticker looks at the connections, at most (shorter tick intervals are
/// served at their own pace).
const TICKER_PERIOD: Duration = Duration::from_millis(250);

fn closed() -> DistError {
    DistError::Io(io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed",
    ))
}

/// Connections alive in this process. While there are none, [`DeferWrites::begin`]
/// costs one load: every Python slice begins and ends one, and the thread-local list
/// (two thread-local accesses through `__tls_get_addr` in a shared library, a
/// `RefCell` borrow each) showed in Python message passing on a VM that is no node.
static LIVE_CONNS: AtomicUsize = AtomicUsize::new(0);

/// Counts one connection in [`LIVE_CONNS`] for as long as it lives.
struct Live;

impl Live {
    fn new() -> Live {
        LIVE_CONNS.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_CONNS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One live connection.
pub(crate) struct Conn {
    _live: Live,
    pub(crate) id: u64,
    pub(crate) peer: PeerInfo,
    style: Style,
    out: Mutex<Out>,
    /// Wakes the writer thread when a batch is handed to it.
    wake: Condvar,
    /// Wakes senders waiting past [`BUSY_LIMIT`] when a batch is taken to be written.
    drained: Condvar,
    stream: TcpStream,
    state: Mutex<Connection<LocalAtoms>>,
    /// Run by the host (no threads; non-blocking writes), see the module docs.
    hosted: bool,
}

/// The bytes waiting to be written, and who writes them. Exactly one thread writes at a
/// time (`flushing`), and it takes the whole buffer each time, so bytes go out in the
/// order they were appended: per-pair order is the order of sends. Several senders'
/// frames coalesce into one write when they pile up while one is being written.
///
/// A batch is a [`Segments`]: a big shared binary (a Python `bytes` sent, a binary
/// received and passed on) is not copied into it but written from its own buffer by
/// a vectored write; the batch holds a refcount until the bytes are out.
#[derive(Default)]
struct Out {
    buf: Segments,
    /// The buffer of the batch written before, emptied: the next batch's `buf`, so a
    /// stream of big messages alternates between two buffers (see [`reuse`]).
    spare: Segments,
    /// A thread (a sender or the writer) is writing; appenders leave the bytes to it.
    flushing: bool,
    /// The batch is the writer thread's to write (host-run: [`ConnIo::run`] writes
    /// `rest`, then `buf`, when the socket is writable again).
    handed: bool,
    closed: bool,
    /// Host-run only: the part of a batch a full socket did not take, from `rest_at`.
    rest: Segments,
    rest_at: usize,
}

thread_local! {
    /// Connections this thread appended bytes to while deferring writes (see
    /// [`DeferWrites`]); `None` when it is not deferring.
    static DEFERRED: RefCell<Option<Vec<Arc<Conn>>>> = const { RefCell::new(None) };
}

/// While one lives on a thread, that thread's sends append their frames to the
/// connections' output buffers without writing them; dropping the (outermost) guard
/// writes each touched connection's buffer once. The VM's driver holds one across
/// each slice of a Python process: a process that sends many messages in a slice
/// makes one system call per connection instead of one per message, and a process
/// that sends and then waits (a round trip) has its frame written when its slice ends,
/// with no hand-off to another thread. A batch past 64 KiB is handed to the
/// writer thread at once, and the ticker writes whatever a guard left (a slice that
/// blocked in foreign code), so bytes never wait long.
#[derive(Debug)]
pub struct DeferWrites {
    outer: bool,
    // Thread-bound: the guard flushes the thread's own list.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl DeferWrites {
    /// Starts deferring this thread's writes (nested guards defer to the outermost).
    /// With no connection alive it defers nothing (a connection made during the guard's
    /// life then writes its frames at once, as without a guard).
    pub fn begin() -> Self {
        if LIVE_CONNS.load(Ordering::Relaxed) == 0 {
            return DeferWrites {
                outer: false,
                _not_send: std::marker::PhantomData,
            };
        }
        let outer = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(Vec::new());
                true
            } else {
                false
            }
        });
        DeferWrites {
            outer,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for DeferWrites {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let conns = DEFERRED
            .try_with(|d| d.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_default();
        for c in conns {
            let _ = c.flush();
        }
    }
}

impl Conn {
    /// Frames `msg` straight into the output buffer (no frame of its own: a fresh
    /// buffer per big message costs the kernel's zeroing of its pages, which was most
    /// of a 1 MiB send; a big shared binary is kept by reference, not copied), then
    /// goes on as [`Conn::write`].
    pub(crate) fn send(self: &Arc<Self>, msg: &DistMessage) -> Result<(), DistError> {
        lock(&self.state).wrote(Instant::now());
        let mut o = lock(&self.out);
        if o.closed {
            return Err(closed());
        }
        let at = o.buf.mark();
        o.buf.extend_from_slice(&[0; 4]);
        let encoded = msg.encode_into(&mut o.buf, self.style);
        let len = u32::try_from(o.buf.len_since(at) - 4);
        match (encoded, len) {
            (Ok(()), Ok(len)) => {
                // The length word was appended as owned bytes at `at`: always there.
                o.buf.patch_u32(at, len);
            }
            (Err(e), _) => {
                o.buf.truncate(at);
                return Err(e.into());
            }
            (_, Err(_)) => {
                o.buf.truncate(at);
                return Err(DistError::Encode(crate::etf::EncodeError::TooLarge(
                    "message",
                )));
            }
        }
        self.appended(o)
    }

    /// Appends `bytes` to what goes out; writes them at once when nobody else is
    /// writing, the batch is small and this thread does not defer its writes (see
    /// [`Out`] and [`DeferWrites`]).
    fn write(self: &Arc<Self>, bytes: &[u8]) -> Result<(), DistError> {
        let mut o = lock(&self.out);
        if o.closed {
            return Err(closed());
        }
        o.buf.extend_from_slice(bytes);
        self.appended(o)
    }

    /// After an append: who writes the buffer ([`Conn::write`]).
    fn appended<'a>(self: &'a Arc<Self>, mut o: MutexGuard<'a, Out>) -> Result<(), DistError> {
        if o.flushing {
            // Another thread writes; past the busy limit the sender waits (boundedly)
            // until that thread takes the batch, as erl suspends a sender on a busy
            // distribution port: the buffer stays near the limit instead of growing
            // (and being copied as it grows) by tens of MiB in a bulk send.
            if o.buf.len() > BUSY_LIMIT && self.hosted {
                return self.busy_hosted(o);
            }
            if o.buf.len() > BUSY_LIMIT {
                let deadline = Instant::now() + BUSY_WAIT;
                while o.flushing && !o.closed && o.buf.len() > BUSY_LIMIT {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    o = self
                        .drained
                        .wait_timeout(o, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
            return Ok(());
        }
        if o.buf.len() <= INLINE_LIMIT && self.defer() {
            return Ok(());
        }
        self.write_out(o)
    }

    /// Notes this connection on the thread's deferred list; `false` if the thread does
    /// not defer.
    fn defer(self: &Arc<Self>) -> bool {
        DEFERRED
            .try_with(|d| match &mut *d.borrow_mut() {
                Some(v) => {
                    if !v.iter().any(|c| Arc::ptr_eq(c, self)) {
                        v.push(self.clone());
                    }
                    true
                }
                None => false,
            })
            .unwrap_or(false)
    }

    /// Writes what is buffered unless another thread is writing it already.
    pub(crate) fn flush(&self) -> Result<(), DistError> {
        let o = lock(&self.out);
        if o.closed || o.flushing || o.buf.is_empty() {
            return Ok(());
        }
        self.write_out(o)
    }

    /// Becomes the writer (`flushing`) and writes batches until the buffer stays
    /// empty, handing a big batch to the writer thread instead (host-run: handing
    /// what the socket does not take now to [`ConnIo::run`]).
    fn write_out<'a>(&'a self, mut o: MutexGuard<'a, Out>) -> Result<(), DistError> {
        o.flushing = true;
        if self.hosted {
            return self.write_nonblocking(o);
        }
        loop {
            if o.buf.len() > INLINE_LIMIT {
                o.handed = true;
                drop(o);
                self.wake.notify_one();
                return Ok(());
            }
            let next = std::mem::take(&mut o.spare);
            let batch = std::mem::replace(&mut o.buf, next);
            drop(o);
            self.drained.notify_all();
            let r = conn_io::write_all_segments(&self.stream, &batch);
            o = lock(&self.out);
            if r.is_err() {
                o.closed = true;
                o.flushing = false;
                drop(o);
                self.close();
                return Err(closed());
            }
            if o.buf.is_empty() {
                o.buf = reuse(batch);
                o.flushing = false;
                return Ok(());
            }
            o.spare = reuse(batch);
        }
    }

    /// Host-run writing: batches go out with non-blocking sends until the buffer stays
    /// empty or the socket is full; then the rest waits in `rest` (`handed`), for
    /// [`Conn::write_pending`] when the socket is writable again. Called by a sender
    /// (`flushing` just set) or by `write_pending` (`handed`).
    ///
    /// No readiness is lost: the last `EAGAIN` that leaves bytes in `rest` is seen
    /// with `handed` set and the lock held. The host re-arms its readiness before it
    /// calls `write_pending`, which looks at `handed` under this lock: either it looks
    /// after that `EAGAIN` (and writes), or before it, and then the socket's next
    /// writability comes after its re-arming and wakes it again.
    fn write_nonblocking<'a>(&'a self, mut o: MutexGuard<'a, Out>) -> Result<(), DistError> {
        // Claimed: this thread writes now (no other takes `rest` meanwhile).
        o.handed = false;
        loop {
            let (batch, at) = if !o.rest.is_empty() {
                (std::mem::take(&mut o.rest), o.rest_at)
            } else if !o.buf.is_empty() {
                let next = std::mem::take(&mut o.spare);
                (std::mem::replace(&mut o.buf, next), 0)
            } else {
                o.handed = false;
                o.flushing = false;
                return Ok(());
            };
            drop(o);
            self.drained.notify_all();
            let mut r = conn_io::send_segments(&self.stream, &batch, at);
            o = lock(&self.out);
            if let Ok(n) = r {
                if at + n < batch.len() && !o.closed {
                    // Full: try once more with `handed` set under the lock (the doc
                    // comment's argument); what it does not take waits.
                    o.handed = true;
                    let more = conn_io::send_segments(&self.stream, &batch, at + n);
                    r = more.map(|m| n + m);
                    if matches!(r, Ok(m) if at + m == batch.len()) {
                        o.handed = false;
                    }
                }
            }
            match r {
                Err(_) => {
                    o.closed = true;
                    o.flushing = false;
                    o.rest = Segments::new();
                    drop(o);
                    self.close();
                    return Err(closed());
                }
                Ok(n) if at + n < batch.len() => {
                    o.rest = batch;
                    o.rest_at = at + n;
                    o.handed = true;
                    return Ok(());
                }
                Ok(_) => {
                    o.rest_at = 0;
                    if o.buf.is_empty() {
                        o.buf = reuse(batch);
                    } else {
                        o.spare = reuse(batch);
                    }
                }
            }
        }
    }

    /// Host-run: a sender past [`BUSY_LIMIT`] waits (at most [`BUSY_WAIT`]) as with
    /// the writer thread, but writes while it waits instead of waiting for the host
    /// to run the connection: the host's thread may be the one this sender holds (a
    /// scheduler running it), so waiting for it could only time out. It writes what
    /// waits when nobody else is writing, and otherwise waits for the socket to take
    /// more or for the writer to take the batch.
    fn busy_hosted<'a>(&'a self, mut o: MutexGuard<'a, Out>) -> Result<(), DistError> {
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            if !o.flushing || o.closed || o.buf.len() <= BUSY_LIMIT {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if o.handed {
                self.write_nonblocking(o)?;
                conn_io::wait_writable(&self.stream, left);
                o = lock(&self.out);
            } else {
                o = self
                    .drained
                    .wait_timeout(o, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
    }

    /// Host-run: writes what a full socket left (see [`Conn::write_nonblocking`]).
    pub(super) fn write_pending(&self) -> Result<(), DistError> {
        let o = lock(&self.out);
        if !o.handed || o.closed {
            return Ok(());
        }
        self.write_nonblocking(o)
    }

    pub(crate) fn close(&self) {
        lock(&self.out).closed = true;
        self.wake.notify_one();
        self.drained.notify_all();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn hs_config(inner: &Inner) -> HandshakeConfig {
    HandshakeConfig {
        name: inner.name.as_str().to_owned(),
        creation: inner.creation,
        flags: inner.flags,
        cookie: inner.cookie.clone(),
    }
}

/// Reads and writes until the handshake ends. `decide` answers the acceptor's
/// question about the peer.
fn drive(
    stream: &mut TcpStream,
    mut hs: Handshake,
    mut decide: impl FnMut(&PeerInfo) -> Decision,
    mut alive: impl FnMut() -> bool,
) -> Result<Established, DistError> {
    let mut buf = [0u8; 4096];
    loop {
        let out = hs.take_output();
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
        let progress = hs.advance();
        let out = hs.take_output();
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
        match progress.map_err(DistError::Handshake)? {
            Progress::Established(e) => {
                let out = hs.take_output();
                stream.write_all(&out)?;
                return Ok(e);
            }
            Progress::PeerHello(peer) => {
                let d = decide(&peer);
                let r = hs.decide(d);
                let out = hs.take_output();
                stream.write_all(&out)?;
                r.map_err(DistError::Handshake)?;
            }
            Progress::AliveQuery => {
                let r = hs.answer_alive(alive());
                let out = hs.take_output();
                stream.write_all(&out)?;
                r.map_err(DistError::Handshake)?;
            }
            Progress::NeedInput => {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Err(DistError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the handshake",
                    )));
                }
                hs.receive(&buf[..n]);
            }
        }
    }
}

pub(super) fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let in_progress = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if in_progress.load(Ordering::Acquire) >= MAX_HANDSHAKES {
            log::warn!(
                "{}: {MAX_HANDSHAKES} handshakes in progress, refusing a connection",
                inner.name
            );
            continue;
        }
        in_progress.fetch_add(1, Ordering::AcqRel);
        let inner2 = inner.clone();
        let counter = in_progress.clone();
        let spawned = std::thread::Builder::new()
            .name("dist-handshake".into())
            .spawn(move || {
                let result = accept(&inner2, stream);
                counter.fetch_sub(1, Ordering::AcqRel);
                if let Err(e) = result {
                    match e {
                        DistError::Handshake(HandshakeError::BadCookie { peer }) => log::error!(
                            "{}: connection attempt from {peer} refused: wrong cookie",
                            inner2.name
                        ),
                        e => log::warn!("{}: incoming connection failed: {e}", inner2.name),
                    }
                }
            });
        if spawned.is_err() {
            in_progress.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn accept(inner: &Arc<Inner>, mut stream: TcpStream) -> Result<(), DistError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
    let hs = Handshake::acceptor(hs_config(inner));
    let our_name = inner.name.as_str().to_owned();
    let mut was_alive = false;
    let est = drive(
        &mut stream,
        hs,
        |peer| {
            let t = lock(&inner.tables);
            if t.conns.contains_key(&peer.name) {
                was_alive = true;
                Decision::Alive
            } else if t.pending.contains(&peer.name) {
                simultaneous(&our_name, &peer.name)
            } else {
                Decision::Ok
            }
        },
        || false,
    )?;
    if was_alive {
        // The peer says our old connection to it is dead: drop it.
        let old = lock(&inner.tables).conns.get(&est.peer.name).cloned();
        if let Some(old) = old {
            old.close();
            inner.conn_down(&old, "replaced by a new connection from the same node");
        }
    }
    start_conn(inner, stream, est)?;
    Ok(())
}

/// Connects to `node` (the caller checked there is no connection yet).
pub(super) fn connect(inner: &Arc<Inner>, node: &str) -> Result<Arc<Conn>, DistError> {
    let Some((alive, host)) = node.split_once('@') else {
        return Err(DistError::BadName(node.to_owned()));
    };
    {
        let mut t = lock(&inner.tables);
        if let Some(c) = t.conns.get(node) {
            return Ok(c.clone());
        }
        t.pending.insert(node.to_owned());
    }
    let result = (|| {
        let epmd_addr = resolve(host, inner.cfg.epmd_port)?;
        let entry = epmd::port_please(epmd_addr, alive)?
            .ok_or_else(|| DistError::UnknownNode(node.to_owned()))?;
        let addr = std::net::SocketAddr::new(epmd_addr.ip(), entry.port);
        let mut stream = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
        let hs = Handshake::initiator(hs_config(inner), node);
        let est = drive(
            &mut stream,
            hs,
            |_| Decision::NotAllowed,
            || !lock(&inner.tables).conns.contains_key(node),
        )?;
        start_conn(inner, stream, est)
    })();
    lock(&inner.tables).pending.remove(node);
    if let Err(DistError::Handshake(HandshakeError::BadCookie { peer })) = &result {
        log::error!("{}: connection to {peer} refused: wrong cookie", inner.name);
    }
    result
}

fn start_conn(
    inner: &Arc<Inner>,
    stream: TcpStream,
    est: Established,
) -> Result<Arc<Conn>, DistError> {
    stream.set_read_timeout(None)?;
    let now = Instant::now();
    let mut state = Connection::new(
        est.peer.clone(),
        inner.cfg.conn.clone(),
        inner.atoms.clone(),
        now,
    );
    state.receive(&est.leftover, now);
    let conn = Arc::new(Conn {
        _live: Live::new(),
        id: inner.next_conn.fetch_add(1, Ordering::Relaxed),
        style: state.style(),
        peer: est.peer.clone(),
        out: Mutex::new(Out::default()),
        wake: Condvar::new(),
        drained: Condvar::new(),
        stream: stream.try_clone()?,
        state: Mutex::new(state),
        hosted: inner.host.as_ref().is_some_and(|h| h.runs_connections()),
    });
    {
        let mut t = lock(&inner.tables);
        if let Some(old) = t.conns.insert(est.peer.name.clone(), conn.clone()) {
            old.close();
        }
    }
    if conn.hosted {
        let io = ConnIo::new(inner.clone(), conn.clone(), stream);
        let adopted = inner.host.as_ref().map(|h| h.run_connection(io));
        if let Some(Err(e)) = adopted {
            // The ConnIo was dropped with the error: the connection is down already.
            return Err(DistError::Io(e));
        }
        log::info!("{}: connected to {}", inner.name, est.peer.name);
        inner.notify(NodeEvent::Up(est.peer.name));
        return Ok(conn);
    }
    let c = conn.clone();
    std::thread::Builder::new()
        .name("dist-writer".into())
        .spawn(move || writer(c))?;
    let (inner2, c) = (inner.clone(), conn.clone());
    std::thread::Builder::new()
        .name("dist-reader".into())
        .spawn(move || reader(inner2, stream, c))?;
    log::info!("{}: connected to {}", inner.name, est.peer.name);
    inner.notify(NodeEvent::Up(est.peer.name));
    Ok(conn)
}

/// Writes the batches senders hand over (big ones: see [`Out`]) until the connection
/// closes.
fn writer(conn: Arc<Conn>) {
    let mut o = lock(&conn.out);
    loop {
        while !o.handed && !o.closed {
            o = conn.wake.wait(o).unwrap_or_else(|e| e.into_inner());
        }
        if o.closed {
            return;
        }
        let next = std::mem::take(&mut o.spare);
        let batch = std::mem::replace(&mut o.buf, next);
        drop(o);
        conn.drained.notify_all();
        let r = conn_io::write_all_segments(&conn.stream, &batch);
        o = lock(&conn.out);
        if r.is_err() {
            o.closed = true;
            o.flushing = false;
            drop(o);
            conn.close();
            return;
        }
        if o.buf.is_empty() {
            o.buf = reuse(batch);
            o.handed = false;
            o.flushing = false;
        } else {
            o.spare = reuse(batch);
        }
    }
}

/// A written batch's buffer, emptied, to be the next one: bulk sends reuse one buffer
/// instead of each getting fresh pages. One past [`RETAIN_MAX`] is let go, so an idle
/// connection gives back what a burst took.
fn reuse(mut batch: Segments) -> Segments {
    if batch.capacity() > RETAIN_MAX {
        return Segments::new();
    }
    batch.clear();
    batch
}

fn reader(inner: Arc<Inner>, mut stream: TcpStream, conn: Arc<Conn>) {
    let why = loop {
        // Frames that arrived with the handshake's last bytes.
        if let Err(why) = drain_logged(&inner, &conn) {
            break why;
        }
        match fill(&conn, |b| stream.read(b)) {
            Ok((0, _)) => break "connection closed".to_owned(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break e.to_string(),
        }
    };
    conn.close();
    inner.conn_down(&conn, &why);
}

/// Reads once with `read` straight into the connection's input buffer (lent out
/// meanwhile: the lock is not held across the read, so senders and the ticker go
/// on): the bytes read and the room there was.
pub(super) fn fill(
    conn: &Conn,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<(usize, usize)> {
    let mut input = lock(&conn.state).take_input();
    let spare = input.spare(READ_CHUNK);
    let room = spare.len();
    let read = read(spare);
    if let Ok(n) = read {
        input.filled(n);
    }
    let fresh = *read.as_ref().unwrap_or(&0);
    lock(&conn.state).restore_input(input, fresh, Instant::now());
    read.map(|n| (n, room))
}

/// [`drain`], logging why it failed: the reason to close the connection with.
pub(super) fn drain_logged(inner: &Arc<Inner>, conn: &Arc<Conn>) -> Result<(), String> {
    drain(inner, conn).map_err(|e| {
        log::error!(
            "{}: closing connection to {}: {e}",
            inner.name,
            conn.peer.name
        );
        e.to_string()
    })
}

fn drain(inner: &Arc<Inner>, conn: &Arc<Conn>) -> Result<(), ConnError> {
    loop {
        let next = lock(&conn.state).next()?;
        match next {
            None => return Ok(()),
            Some(Incoming::Tick) => {}
            Some(Incoming::Message(m)) => dispatch(inner, conn, m),
        }
    }
}

/// Replies to a gen call's `From` (`{Pid, Tag}`): through the alias when the tag is
/// `[alias | Ref]` (gen:call since OTP 24), to the pid otherwise.
fn gen_reply(inner: &Arc<Inner>, conn: &Arc<Conn>, from: &Term, reply: Term) {
    let Some([Term::Pid(to), tag]) = from.as_tuple() else {
        return;
    };
    let msg = Term::tuple(vec![tag.clone(), reply]);
    let alias = match &tag {
        Term::List { elems, tail } if elems.len() == 1 && elems[0].as_atom() == Some("alias") => {
            match tail.as_ref() {
                Term::Ref(r) => Some(r.clone()),
                _ => None,
            }
        }
        _ => None,
    };
    let control = match alias {
        Some(alias) => Control::AliasSend {
            from: inner.system_pid(),
            alias,
            message: msg,
        },
        None => Control::SendSender {
            from: inner.system_pid(),
            to: to.clone(),
            message: msg,
        },
    };
    let _ = conn.send(&control.into());
}

/// Starts an exposed function, which answers through `reply` (`Err` is the reason
/// the call fails with), now or later from another thread: the reader goes on at once.
fn call_exposed(inner: &Inner, module: &Term, function: &Term, args: &Term, reply: Reply) {
    let (Some(m), Some(f)) = (module.as_atom(), function.as_atom()) else {
        return reply.send(Err(Term::atom("badarg")));
    };
    let handler = lock(&inner.tables)
        .exposed
        .get(&(m.to_owned(), f.to_owned()))
        .cloned();
    let Some(args) = list_elems(args) else {
        return reply.send(Err(Term::atom("badarg")));
    };
    match handler {
        Some(h) => h(args, reply),
        None => reply.send(Err(Term::atom("undef"))),
    }
}

fn list_elems(t: &Term) -> Option<Vec<Term>> {
    match t {
        Term::Nil => Some(Vec::new()),
        Term::List { elems, tail } if matches!(**tail, Term::Nil) => Some(elems.clone()),
        Term::Charlist(b) => Some(b.iter().map(|&x| Term::Int(i64::from(x))).collect()),
        _ => None,
    }
}

/// The local process `to` names, if alive; it is watched from now on (a remote
/// process has a relation with it).
fn watched(inner: &Inner, to: &ProcRef) -> Option<Pid> {
    let p = match to {
        ProcRef::Pid(p) if inner.is_local(p) => p.clone(),
        ProcRef::Pid(_) => return None,
        ProcRef::Name(n) => inner.whereis(n.as_str())?,
    };
    inner.watch(&p).then_some(p)
}

fn dispatch(inner: &Arc<Inner>, conn: &Arc<Conn>, m: DistMessage) {
    match m.control {
        Control::Send { to, message } => {
            if inner.is_local(&to) {
                inner.deliver(
                    &to,
                    Delivery::Message {
                        from: None,
                        message,
                    },
                );
            }
        }
        Control::SendSender { from, to, message } => {
            if inner.is_local(&to) {
                inner.deliver(
                    &to,
                    Delivery::Message {
                        from: Some(from),
                        message,
                    },
                );
            }
        }
        Control::AliasSend {
            from,
            alias,
            message,
        } => {
            // Mailboxes make no aliases: only a host's processes have them, and the
            // host drops a message to an inactive alias, as Erlang does.
            if !inner.deliver_alias(&from, &alias, message) {
                log::debug!(
                    "{}: alias send from {from:?} to {alias:?} dropped",
                    inner.name
                );
            }
        }
        Control::RegSend {
            from,
            to_name,
            message,
        } => match to_name.as_str() {
            "net_kernel" => net_kernel(inner, conn, message),
            "rex" if inner.whereis("rex").is_none() => rex(inner, conn, message),
            name => {
                if let Some(to) = inner.whereis(name) {
                    inner.deliver(
                        &to,
                        Delivery::Message {
                            from: Some(from),
                            message,
                        },
                    );
                }
            }
        },
        Control::Link { from, to } => {
            if inner.is_local(&to) && inner.watch(&to) {
                lock(&inner.tables).links.insert((to, from));
            } else {
                let _ = conn.send(
                    &Control::Exit {
                        from: to,
                        to: from,
                        reason: Term::atom("noproc"),
                    }
                    .into(),
                );
            }
        }
        Control::Unlink { from, to } => {
            lock(&inner.tables).links.remove(&(to, from));
        }
        Control::UnlinkId { id, from, to } => {
            lock(&inner.tables)
                .links
                .remove(&(to.clone(), from.clone()));
            let _ = conn.send(
                &Control::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                }
                .into(),
            );
        }
        Control::UnlinkIdAck { .. } | Control::GroupLeader { .. } => {}
        Control::Exit { from, to, reason } => {
            let linked = lock(&inner.tables)
                .links
                .remove(&(to.clone(), from.clone()));
            if linked && inner.is_local(&to) {
                inner.deliver(
                    &to,
                    Delivery::Exit {
                        from,
                        reason,
                        linked: true,
                    },
                );
            }
        }
        Control::Exit2 { from, to, reason } => {
            if inner.is_local(&to) {
                inner.deliver(
                    &to,
                    Delivery::Exit {
                        from,
                        reason,
                        linked: false,
                    },
                );
            }
        }
        Control::MonitorP {
            from,
            to,
            reference,
        } => {
            let system = matches!(&to, ProcRef::Name(n) if n.as_str() == "net_kernel" || n.as_str() == "rex")
                || matches!(&to, ProcRef::Pid(p) if inner.is_local(p) && p.id == SYSTEM_ID);
            if system {
                // The node's own services never end while the node runs.
            } else if let Some(p) = watched(inner, &to) {
                lock(&inner.tables)
                    .monitors_in
                    .insert(reference.clone(), (p, from, to));
            } else {
                let _ = conn.send(
                    &Control::MonitorPExit {
                        from: to,
                        to: from,
                        reference,
                        reason: Term::atom("noproc"),
                    }
                    .into(),
                );
            }
        }
        Control::DemonitorP { reference, .. } => {
            lock(&inner.tables).monitors_in.remove(&reference);
        }
        Control::MonitorPExit {
            from,
            reference,
            reason,
            ..
        } => {
            let entry = lock(&inner.tables).monitors_out.remove(&reference);
            if let Some((p, _, _)) = entry {
                inner.deliver(
                    &p,
                    Delivery::Down {
                        reference,
                        process: from,
                        reason,
                    },
                );
            }
        }
        Control::SpawnRequest {
            req_id,
            from,
            module,
            function,
            opts,
            args,
            ..
        } => spawn_request(inner, conn, req_id, from, module, function, opts, args),
        Control::SpawnReply { .. } => {}
    }
}

/// net_kernel's part that peers use: `is_auth` (net_adm:ping).
fn net_kernel(inner: &Arc<Inner>, conn: &Arc<Conn>, message: Term) {
    let Some(t) = message.as_tuple() else { return };
    if t.len() == 3 && t[0].as_atom() == Some("$gen_call") {
        let is_auth =
            matches!(t[2].as_tuple(), Some(r) if r.len() == 2 && r[0].as_atom() == Some("is_auth"));
        let reply = if is_auth {
            Term::atom("yes")
        } else {
            Term::atom("error")
        };
        gen_reply(inner, conn, &t[1], reply);
    }
}

/// The old rpc server: `{'$gen_call', From, {call, M, F, A, GroupLeader}}`.
fn rex(inner: &Arc<Inner>, conn: &Arc<Conn>, message: Term) {
    let Some(t) = message.as_tuple() else { return };
    if t.len() != 3 || t[0].as_atom() != Some("$gen_call") {
        return;
    }
    match t[2].as_tuple() {
        Some(c) if c.len() >= 4 && c[0].as_atom() == Some("call") => {
            let (inner2, conn2, from) = (inner.clone(), conn.clone(), t[1].clone());
            let reply = Reply::new(move |r| {
                let answer = match r {
                    Ok(v) => v,
                    Err(reason) => Term::tuple(vec![
                        Term::atom("badrpc"),
                        Term::tuple(vec![Term::atom("EXIT"), reason]),
                    ]),
                };
                gen_reply(&inner2, &conn2, &from, answer);
            });
            call_exposed(inner, &c[1], &c[2], &c[3], reply);
        }
        _ => {
            let answer = Term::tuple(vec![Term::atom("badrpc"), Term::atom("badarg")]);
            gen_reply(inner, conn, &t[1], answer);
        }
    }
}

/// SPAWN_REQUEST of an exposed function: `erpc:execute_call(Ref, M, F, A)` (what
/// `rpc:call` and `erpc:call` send) or `M:F(A...)` itself (`spawn(Node, M, F, A)`,
/// `spawn_request`). SPAWN_REPLY with a fresh pid goes when the call starts; the
/// function runs as the exposer arranged (a process, in the VM). The spawned process
/// "exits" when the function answers: for execute_call with `{Ref, return, Result}` (or
/// `{Ref, error, Reason, []}`), as erpc's execute_call exits; for a direct call with
/// `normal`, or the failure's reason (`undef` for a function nobody exposed). That exit
/// goes to the caller as a MONITOR_P_EXIT if it asked for `monitor`, and as an EXIT if
/// it asked for `link` (a link the caller breaks does not stop a call already running:
/// exposed functions are not cancellable).
#[allow(clippy::too_many_arguments)]
fn spawn_request(
    inner: &Arc<Inner>,
    conn: &Arc<Conn>,
    req_id: Ref,
    from: Pid,
    module: Atom,
    function: Atom,
    opts: Term,
    args: Term,
) {
    let opts = list_elems(&opts).unwrap_or_default();
    let monitor = opts.iter().any(|o| o.as_atom() == Some("monitor"));
    let link = opts.iter().any(|o| o.as_atom() == Some("link"));
    let parts = list_elems(&args);
    // erpc's wrapper: `{Tag, ...}` exit reasons; anything else is the function itself.
    let (tag, m, f, a) = match ((module.as_str(), function.as_str()), parts.as_deref()) {
        (("erpc", "execute_call"), Some([r, m, f, a])) => {
            (Some(r.clone()), m.clone(), f.clone(), a.clone())
        }
        _ if parts.is_some() => (None, Term::Atom(module), Term::Atom(function), args),
        _ => {
            // An improper argument list: erlang:spawn_request/5 raises badarg here too.
            let _ = conn.send(
                &Control::SpawnReply {
                    req_id,
                    to: from,
                    flags: 0,
                    result: Term::atom("badarg"),
                }
                .into(),
            );
            return;
        }
    };
    let pid = inner.pid(inner.next_id.fetch_add(1, Ordering::Relaxed));
    let flags =
        (if monitor { SPAWN_FLAG_MONITOR } else { 0 }) | (if link { SPAWN_FLAG_LINK } else { 0 });
    // The SPAWN_REPLY goes out when the call starts running (Reply::started), not
    // from here: a call answered in its first slice then has its reply and its result
    // written together, one write and one wake-up of the caller's node fewer per rpc.
    // It always precedes the result (Reply::send starts first).
    let spawn_reply: DistMessage = Control::SpawnReply {
        req_id: req_id.clone(),
        to: from.clone(),
        flags,
        result: Term::Pid(pid.clone()),
    }
    .into();
    let conn1 = conn.clone();
    let started = move || {
        let _ = conn1.send(&spawn_reply);
    };
    let conn2 = conn.clone();
    let reply = Reply::with_start(
        move |result| {
            let reason = match (tag, result) {
                (Some(tag), Ok(v)) => Term::tuple(vec![tag, Term::atom("return"), v]),
                (Some(tag), Err(e)) => Term::tuple(vec![tag, Term::atom("error"), e, Term::Nil]),
                (None, Ok(_)) => Term::atom("normal"),
                (None, Err(e)) => e,
            };
            if link {
                let _ = conn2.send(
                    &Control::Exit {
                        from: pid.clone(),
                        to: from.clone(),
                        reason: reason.clone(),
                    }
                    .into(),
                );
            }
            if monitor {
                let _ = conn2.send(
                    &Control::MonitorPExit {
                        from: ProcRef::Pid(pid),
                        to: from,
                        reference: req_id,
                        reason,
                    }
                    .into(),
                );
            }
        },
        started,
    );
    call_exposed(inner, &m, &f, &a, reply);
}

pub(super) fn ticker(inner: Arc<Inner>) {
    let period = (inner.cfg.conn.net_ticktime / 4).min(TICKER_PERIOD);
    while !inner.stopping.load(Ordering::Acquire) {
        if inner.sleep_unless_stopped(period) {
            return;
        }
        let conns: Vec<Arc<Conn>> = lock(&inner.tables).conns.values().cloned().collect();
        let now = Instant::now();
        for c in conns {
            // Bytes a deferring thread left (its slice blocked in foreign code).
            let _ = c.flush();
            let action = lock(&c.state).on_timer(now);
            match action {
                TimerAction::None => {}
                TimerAction::SendTick(_) => {
                    let _ = c.write(&TICK);
                }
                TimerAction::PeerDown => {
                    log::error!(
                        "{}: node {} not responding, removing (timed out) connection",
                        inner.name,
                        c.peer.name
                    );
                    c.close();
                    inner.conn_down(&c, "net_tick_timeout");
                }
            }
        }
    }
}
