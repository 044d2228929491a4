//! A connection run by its host instead of threads: [`ConnIo`], and the non-blocking
//! socket calls it and host-run writers use.
//!
//! The host (the VM: a native process woken by its I/O reactor) tells the socket's
//! readiness and calls [`ConnIo::run`], which does the same work as the reader thread
//! (read into the connection's input buffer, decode and dispatch every complete
//! frame; the same functions) and also writes what a full socket left. Invariants:
//!
//! - **Nothing blocks.** Reads and writes pass `MSG_DONTWAIT` per call and leave the
//!   file description blocking, so the handshake's code and the other handles of the
//!   socket are unaffected; `run` returns [`Readiness::Idle`] when the socket has
//!   nothing more to give.
//! - **Bounded work per call.** At most [`READS_PER_RUN`] reads, then
//!   [`Readiness::More`]: a flooding peer cannot hold the host's thread (a scheduler);
//!   the host calls again soon without waiting for readiness.
//! - **No lost readiness.** The host re-arms its readiness notification *before*
//!   calling `run`; `run` reads until the kernel has nothing (a short read or
//!   `EAGAIN`), so bytes arriving during it are told again.
//! - **Closing is exactly the reader thread's.** EOF, a read error or a bad frame
//!   closes the connection with the same `conn_down` (noconnection to links and
//!   monitors, nodedown); so does dropping the `ConnIo` (its process was killed, the
//!   VM stopped) while the connection was up. A connection closed elsewhere (tick
//!   timeout, replaced, node stopped) is shut down, which the host sees as readiness,
//!   and `run` then reads EOF.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::conn::{drain_logged, fill, Conn};
use super::Inner;
use crate::etf::Segments;

/// Reads per [`ConnIo::run`] at most (each up to 256 KiB, more when a big frame's
/// length is known): a bulk transfer gets a few MiB per turn, then other processes
/// run.
pub const READS_PER_RUN: usize = 16;

/// What [`ConnIo::run`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Everything the socket had was read and dispatched: wait for readiness.
    Idle,
    /// More may be waiting (the turn's reads ran out): call again soon, without
    /// waiting for readiness.
    More,
    /// The connection is closed (and was reported down): drop the `ConnIo`.
    Closed,
}

/// An established connection whose I/O the host runs (see the module docs).
pub struct ConnIo {
    inner: Arc<Inner>,
    conn: Arc<Conn>,
    stream: TcpStream,
    done: bool,
}

impl std::fmt::Debug for ConnIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnIo")
            .field("peer", &self.conn.peer.name)
            .field("done", &self.done)
            .finish()
    }
}

impl ConnIo {
    pub(super) fn new(inner: Arc<Inner>, conn: Arc<Conn>, stream: TcpStream) -> Self {
        ConnIo {
            inner,
            conn,
            stream,
            done: false,
        }
    }

    /// The peer's node name.
    pub fn peer(&self) -> &str {
        &self.conn.peer.name
    }

    /// A handle of the socket for the host's poller (`try_clone`): to register for
    /// readiness only; the host must not read from or write to it.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Does what the socket is ready for: writes what a full socket left, then reads
    /// and dispatches what arrived, at most [`READS_PER_RUN`] reads. Re-arm the
    /// readiness notification before calling it.
    pub fn run(&mut self) -> Readiness {
        if self.done {
            return Readiness::Closed;
        }
        if self.conn.write_pending().is_err() {
            return self.finish("connection closed while writing");
        }
        let mut reads = 0;
        loop {
            // Frames that arrived with the handshake's last bytes, or just now.
            if let Err(why) = drain_logged(&self.inner, &self.conn) {
                return self.finish(&why);
            }
            if reads == READS_PER_RUN {
                return Readiness::More;
            }
            reads += 1;
            match fill(&self.conn, |b| recv_some(&self.stream, b)) {
                Ok((0, _)) => return self.finish("connection closed"),
                // A short read took everything the kernel had (a TCP socket's recv
                // returns all that is buffered, up to the room): what comes later is
                // new readiness. Dispatch what came, then wait.
                Ok((n, room)) if n < room => {
                    return match drain_logged(&self.inner, &self.conn) {
                        Ok(()) => Readiness::Idle,
                        Err(why) => self.finish(&why),
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Readiness::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.finish(&e.to_string()),
            }
        }
    }

    /// Closes the connection and reports it down (once).
    fn finish(&mut self, why: &str) -> Readiness {
        if !self.done {
            self.done = true;
            self.conn.close();
            self.inner.conn_down(&self.conn, why);
        }
        Readiness::Closed
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        // The host gave the connection up (its process ended, the VM stopped):
        // nobody reads it any more, so it is down.
        self.finish("the connection's process ended");
    }
}

/// One `recv` that does not block (`MSG_DONTWAIT`), whatever the socket's mode.
pub(super) fn recv_some(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and
    // the descriptor belongs to `s`, borrowed (open) for the whole call.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Non-negative and at most buf.len(): fits.
    Ok(n as usize)
}

/// Waits until `s` can take more bytes, at most `timeout` (`poll` for `POLLOUT`;
/// an error or a closed peer counts as ready: the next send says what it is).
pub(super) fn wait_writable(s: &TcpStream, timeout: std::time::Duration) {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // Whole milliseconds, at least 1: a shorter wait would spin.
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the whole call; the descriptor is `s`'s, borrowed
    // (open) for the whole call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Most slices handed to one vectored write (well under every system's IOV_MAX,
/// 1024 on Linux); a batch with more is written in several calls.
const MAX_IOV: usize = 64;

/// Writes all of `out` to `s` (blocking) with vectored writes: the big shared binaries
/// it holds go from their own buffers, not through a copy. A partial write resumes
/// where it stopped.
pub(super) fn write_all_segments(mut s: &TcpStream, out: &Segments) -> io::Result<()> {
    let mut at = 0;
    let mut slices = Vec::with_capacity(MAX_IOV);
    while at < out.len() {
        slices.clear();
        out.io_slices(at, &mut slices, MAX_IOV);
        match s.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Vectored `send`s (`sendmsg`) of `out` from position `from` that do not block
/// (`MSG_DONTWAIT`, and `MSG_NOSIGNAL`: a closed peer is an error, not a signal) until
/// it is all written or the socket is full: the bytes written from `from` (fewer than
/// the rest when full). The big shared binaries `out` holds go from their own
/// buffers.
pub(super) fn send_segments(s: &TcpStream, out: &Segments, from: usize) -> io::Result<usize> {
    let mut at = from;
    let mut slices = Vec::with_capacity(MAX_IOV);
    while at < out.len() {
        slices.clear();
        out.io_slices(at, &mut slices, MAX_IOV);
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix (std's documented guarantee);
        // sendmsg only reads the array and the buffers it points to.
        msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = slices.len() as _;
        // SAFETY: `msg` points to `slices.len()` iovecs, each valid for reads of its
        // length for the whole call (borrowed from `out`, alive until after it), and
        // the descriptor belongs to `s`, borrowed (open) for the whole call.
        let n =
            unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(at - from),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        // Non-negative and at most the slices' total.
        at += n as usize;
    }
    Ok(at - from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (c, l.accept().unwrap().0)
    }

    #[test]
    fn recv_some_does_not_block_on_a_blocking_socket() {
        let (a, mut b) = pair();
        let mut buf = [0u8; 8];
        let e = recv_some(&a, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        b.write_all(b"hi").unwrap();
        // Loopback delivers at once, but give the kernel a moment anyway.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let n = loop {
            match recv_some(&a, &mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..n], b"hi");
        drop(b);
        assert_eq!(recv_some(&a, &mut buf).unwrap(), 0);
    }

    /// A batch of owned bytes and big shared binaries (64 MiB in all) fills a socket
    /// whose peer does not read: the send stops part-way, possibly inside a binary,
    /// and resuming from where it stopped delivers exactly the contiguous stream.
    #[test]
    fn send_segments_stops_at_a_full_socket_and_the_rest_goes_later() {
        use crate::etf::Sink;
        use crate::term::{Bytes, SharedBuf};
        let (a, mut b) = pair();
        let mut out = Segments::new();
        let mut expect = Vec::new();
        for i in 0..16u8 {
            let head = vec![i; 1000 + usize::from(i)];
            out.extend_from_slice(&head);
            expect.extend_from_slice(&head);
            let body: Vec<u8> = (0..4 << 20).map(|k: usize| (k as u8) ^ i).collect();
            expect.extend_from_slice(&body);
            let owner: SharedBuf = Arc::new(body);
            out.binary(&Bytes::shared(owner));
        }
        assert_eq!(out.splice_count(), 16);
        assert_eq!(out.to_vec(), expect);
        let total = expect.len();
        let n = send_segments(&a, &out, 0).unwrap();
        assert!(n < total, "a peer that does not read fills the socket");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(total);
            let mut buf = vec![0u8; 1 << 20];
            while got.len() < total {
                let k = b.read(&mut buf).unwrap();
                assert!(k > 0);
                got.extend_from_slice(&buf[..k]);
            }
            got
        });
        let mut at = n;
        while at < total {
            at += send_segments(&a, &out, at).unwrap();
            std::thread::yield_now();
        }
        assert_eq!(send_segments(&a, &out, total).unwrap(), 0);
        assert!(reader.join().unwrap() == expect, "the stream arrives whole");
    }

    /// The blocking writer's vectored writes deliver the same stream.
    #[test]
    fn write_all_segments_writes_the_whole_stream() {
        use crate::etf::Sink;
        use crate::term::{Bytes, SharedBuf};
        let (a, mut b) = pair();
        let mut out = Segments::new();
        for i in 0..200u8 {
            out.extend_from_slice(&[i; 3]);
            let owner: SharedBuf = Arc::new(vec![i; 70_000]);
            out.binary(&Bytes::shared(owner));
        }
        let expect = out.to_vec();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        write_all_segments(&a, &out).unwrap();
        drop(a);
        assert!(reader.join().unwrap() == expect);
    }
}
