//! The OS side of a socket: TCP over IPv4/IPv6 or a Unix domain stream socket, behind
//! one type each for listeners and connections so the rest of the reactor never asks
//! which.
//!
//! Invariants: every socket made here is non-blocking and close-on-exec (mio's
//! constructors and socket2's set both), a listener is bound with the caller's
//! backlog and `SO_REUSEADDR` choice, and nothing here registers with epoll (the
//! reactor does that once per socket).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

/// Where to listen or connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// IPv4 or IPv6 (`[::1]:port`); port 0 picks a free one when listening.
    Inet(SocketAddr),
    /// A Unix domain socket path (`tcp.listen(path=...)`).
    Unix(PathBuf),
}

/// A socket's own or peer address, as `sockname`/`peername` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockName {
    /// An IPv4 or IPv6 address.
    Inet(SocketAddr),
    /// Unnamed for the client end of a Unix connection.
    Unix(Option<PathBuf>),
}

pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    /// Starts a non-blocking connect; completion is a writable edge (then
    /// [`Stream::connect_result`]).
    pub(super) fn connect(addr: &Addr) -> io::Result<Stream> {
        match addr {
            Addr::Inet(a) => TcpStream::connect(*a).map(Stream::Tcp),
            Addr::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        }
    }

    /// After a writable edge on a connecting socket: `Ok(true)` connected,
    /// `Ok(false)` still in progress, `Err` the connect failed.
    pub(super) fn connect_result(&self) -> io::Result<bool> {
        if let Some(e) = each!(self, s => s.take_error())? {
            return Err(e);
        }
        match self.peer_name() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(super) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()), // no Nagle on Unix sockets
        }
    }

    pub(super) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        each!(self, s => s.shutdown(how))
    }

    pub(super) fn peer_name(&self) -> io::Result<SockName> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(SockName::Inet),
            Stream::Unix(s) => s
                .peer_addr()
                .map(|a| SockName::Unix(a.as_pathname().map(PathBuf::from))),
        }
    }

    pub(super) fn sock_name(&self) -> io::Result<SockName> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(SockName::Inet),
            Stream::Unix(s) => s
                .local_addr()
                .map(|a| SockName::Unix(a.as_pathname().map(PathBuf::from))),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => s.write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        each!(self, s => s.register(r, t, i))
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        each!(self, s => s.reregister(r, t, i))
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        each!(self, s => s.deregister(r))
    }
}

impl Listener {
    /// Binds and listens with `backlog` pending connections.
    pub(super) fn bind(addr: &Addr, backlog: u32, reuseaddr: bool) -> io::Result<Listener> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let (domain, sa) = match addr {
            Addr::Inet(a) => (Domain::for_address(*a), SockAddr::from(*a)),
            Addr::Unix(p) => (Domain::UNIX, SockAddr::unix(p)?),
        };
        // socket2 opens with SOCK_CLOEXEC on Linux.
        let sock = Socket::new(domain, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        if reuseaddr && domain != Domain::UNIX {
            sock.set_reuse_address(true)?;
        }
        sock.bind(&sa)?;
        sock.listen(backlog.min(i32::MAX as u32) as i32)?;
        Ok(match addr {
            Addr::Inet(_) => Listener::Tcp(TcpListener::from_std(sock.into())),
            Addr::Unix(_) => {
                let fd = std::os::fd::OwnedFd::from(sock);
                Listener::Unix(UnixListener::from_std(fd.into()))
            }
        })
    }

    /// One pending connection, non-blocking.
    pub(super) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    pub(super) fn sock_name(&self) -> io::Result<SockName> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(SockName::Inet),
            Listener::Unix(l) => l
                .local_addr()
                .map(|a| SockName::Unix(a.as_pathname().map(PathBuf::from))),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}
