//! Socket errors, named by the reasons gen_tcp returns (`{error, Reason}`).
//!
//! Invariant: every OS error maps to one [`IoError`] whose [`IoError::reason`] is the
//! atom Erlang would return (`econnrefused`, `emfile`, ...), so phase 2 can raise a
//! Python exception carrying the same word an Erlang programmer knows. Errors that
//! Erlang reports as `closed` (EPIPE, a socket we closed, EOF under `exit_on_close`)
//! are folded into [`IoError::Closed`].

use std::fmt;
use std::io;

use crate::term::Atom;

/// Why a socket operation failed, as gen_tcp names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoError {
    /// The socket is closed (by us, by the peer under exit_on_close, or EPIPE).
    Closed,
    /// A timed operation ran out of time (set by the caller's timer in phase 2).
    Timeout,
    /// Only the controlling process may do this (`controlling_process`).
    NotOwner,
    /// A bad argument where Erlang says `badarg` (`controlling_process` to a process
    /// that does not exist).
    Badarg,
    /// A second `recv`/`accept` while one is pending on the same socket.
    Ealready,
    /// A frame or line longer than `packet_size`, or a bad length header.
    Emsgsize,
    /// An invalid argument (a bad option value, `recv` in active mode...).
    Einval,
    /// The peer refused the connection (ECONNREFUSED).
    Econnrefused,
    /// The peer reset the connection (ECONNRESET).
    Econnreset,
    /// The connection was aborted (ECONNABORTED).
    Econnaborted,
    /// The address is in use (EADDRINUSE).
    Eaddrinuse,
    /// The address is not available here (EADDRNOTAVAIL).
    Eaddrnotavail,
    /// Permission denied (EACCES, EPERM).
    Eacces,
    /// This process is out of file descriptors (EMFILE).
    Emfile,
    /// The system is out of file descriptors (ENFILE).
    Enfile,
    /// No buffer space (ENOBUFS).
    Enobufs,
    /// Out of memory (ENOMEM).
    Enomem,
    /// Not connected (ENOTCONN; or connect still in progress).
    Enotconn,
    /// No such file (a Unix socket path, ENOENT).
    Enoent,
    /// No route to the host (EHOSTUNREACH).
    Ehostunreach,
    /// The network is unreachable (ENETUNREACH).
    Enetunreach,
    /// The network is down (ENETDOWN).
    Enetdown,
    /// The kernel timed the connection out (ETIMEDOUT).
    Etimedout,
    /// Address family not supported (EAFNOSUPPORT, e.g. no IPv6).
    Eafnosupport,
    /// An OS error with no name of its own here; the errno is kept.
    Posix(i32),
}

impl IoError {
    /// The Erlang reason atom's text.
    pub fn reason(&self) -> &'static str {
        self.reason_atom().as_str()
    }

    /// The Erlang reason atom: predefined (term/atom.rs), so a message carrying it can
    /// be built with the atom table full.
    pub fn reason_atom(&self) -> Atom {
        match self {
            IoError::Closed => Atom::CLOSED,
            IoError::Timeout => Atom::TIMEOUT,
            IoError::NotOwner => Atom::NOT_OWNER,
            IoError::Badarg => Atom::BADARG,
            IoError::Ealready => Atom::EALREADY,
            IoError::Emsgsize => Atom::EMSGSIZE,
            IoError::Einval => Atom::EINVAL,
            IoError::Econnrefused => Atom::ECONNREFUSED,
            IoError::Econnreset => Atom::ECONNRESET,
            IoError::Econnaborted => Atom::ECONNABORTED,
            IoError::Eaddrinuse => Atom::EADDRINUSE,
            IoError::Eaddrnotavail => Atom::EADDRNOTAVAIL,
            IoError::Eacces => Atom::EACCES,
            IoError::Emfile => Atom::EMFILE,
            IoError::Enfile => Atom::ENFILE,
            IoError::Enobufs => Atom::ENOBUFS,
            IoError::Enomem => Atom::ENOMEM,
            IoError::Enotconn => Atom::ENOTCONN,
            IoError::Enoent => Atom::ENOENT,
            IoError::Ehostunreach => Atom::EHOSTUNREACH,
            IoError::Enetunreach => Atom::ENETUNREACH,
            IoError::Enetdown => Atom::ENETDOWN,
            IoError::Etimedout => Atom::ETIMEDOUT,
            IoError::Eafnosupport => Atom::EAFNOSUPPORT,
            IoError::Posix(_) => Atom::UNKNOWN,
        }
    }

    /// Whether this error means "out of descriptors" (acceptors back off on it).
    pub fn is_fd_exhaustion(&self) -> bool {
        matches!(self, IoError::Emfile | IoError::Enfile)
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Posix(errno) => write!(
                f,
                "os error {errno}: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            e => f.write_str(e.reason()),
        }
    }
}

impl std::error::Error for IoError {}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        let Some(errno) = e.raw_os_error() else {
            return match e.kind() {
                io::ErrorKind::TimedOut => IoError::Timeout,
                io::ErrorKind::InvalidInput => IoError::Einval,
                io::ErrorKind::NotConnected => IoError::Enotconn,
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::WriteZero => IoError::Closed,
                _ => IoError::Einval,
            };
        };
        from_errno(errno)
    }
}

fn from_errno(errno: i32) -> IoError {
    match errno {
        libc::EPIPE | libc::ESHUTDOWN | libc::EBADF => IoError::Closed,
        libc::ECONNREFUSED => IoError::Econnrefused,
        libc::ECONNRESET => IoError::Econnreset,
        libc::ECONNABORTED => IoError::Econnaborted,
        libc::EADDRINUSE => IoError::Eaddrinuse,
        libc::EADDRNOTAVAIL => IoError::Eaddrnotavail,
        libc::EACCES | libc::EPERM => IoError::Eacces,
        libc::EMFILE => IoError::Emfile,
        libc::ENFILE => IoError::Enfile,
        libc::ENOBUFS => IoError::Enobufs,
        libc::ENOMEM => IoError::Enomem,
        libc::ENOTCONN => IoError::Enotconn,
        libc::ENOENT => IoError::Enoent,
        libc::EHOSTUNREACH => IoError::Ehostunreach,
        libc::ENETUNREACH => IoError::Enetunreach,
        libc::ENETDOWN => IoError::Enetdown,
        libc::ETIMEDOUT => IoError::Etimedout,
        libc::EAFNOSUPPORT => IoError::Eafnosupport,
        libc::EINVAL => IoError::Einval,
        libc::EMSGSIZE => IoError::Emsgsize,
        other => IoError::Posix(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_erlang_reasons() {
        let r = |errno| IoError::from(io::Error::from_raw_os_error(errno)).reason();
        assert_eq!(r(libc::ECONNREFUSED), "econnrefused");
        assert_eq!(r(libc::EADDRINUSE), "eaddrinuse");
        assert_eq!(r(libc::EMFILE), "emfile");
        assert_eq!(r(libc::ENOTCONN), "enotconn");
        assert_eq!(r(libc::EPIPE), "closed");
        assert_eq!(r(libc::ECONNRESET), "econnreset");
        let odd = IoError::from(io::Error::from_raw_os_error(libc::EXDEV));
        assert_eq!(odd, IoError::Posix(libc::EXDEV));
        assert!(odd.to_string().contains("os error"));
        assert!(IoError::Emfile.is_fd_exhaustion() && !IoError::Closed.is_fd_exhaustion());
    }
}
