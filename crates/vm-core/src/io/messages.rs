//! The terms the reactor's events become in a process's mailbox, and their parser.
//!
//! Two kinds of message, as [`IoEvent`] has two kinds of variant:
//!
//! - **Active messages**, gen_tcp's: `{Tcp, S, Data}`, `{TcpClosed, S}`,
//!   `{TcpError, S, Reason}`, `{TcpPassive, S}`. The tag is the atom `tcp` (...) for
//!   native bodies ([`TagStyle::Atoms`]) or the Python binding's string form
//!   `{'$str', <<"tcp">>}` ([`TagStyle::Strings`]), so Python code matches
//!   `("tcp", s, data)` as the issue writes it. `Reason` is spelled as the tag is:
//!   an atom (`econnreset`, ...) for native bodies, a `str` for Python, so
//!   `("tcp_error", s, "econnreset")` matches there as `TcpError.reason` would.
//! - **Completions** of an operation a process is suspended in:
//!   `{'$tcp', S, Op, Result}` with `Op` one of `accept`, `connect`, `recv`, `send` and
//!   `Result` `{ok, Value}` or `{error, Reason}` (`Value`: the new socket for `accept`,
//!   the data for `recv`, `ok` otherwise). A watched socket's readiness
//!   ([`IoEvent::Ready`]) is `{'$tcp', S, ready, {ok, ok}}`. Their first element is an atom, so a
//!   receive for them is keyed (the mailbox index finds it without scanning).
//!
//! `S`, a socket in a term, is `{'$socket', Id}` (Id the [`SocketId`] as an integer):
//! Erlang's own socket backend represents sockets as tagged tuples too
//! (`{'$socket', Ref}`); it can be sent between processes and matched like any term.
//!
//! Invariant: every message is built with predefined atoms ([`Atoms`], and
//! [`IoError::reason_atom`]), so building one can never fail on a full atom table, and data above 64 bytes is shared
//! (refcounted), never copied again after the read.

use super::error::IoError;
use super::event::{IoEvent, SocketId};
use crate::term::{Atom, Binary, Fragment, FragmentBuilder, Kind, View};

/// How active messages spell their tag (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStyle {
    /// `tcp`, `tcp_closed`, ... as atoms (native bodies, Erlang's form).
    Atoms,
    /// `{'$str', <<"tcp">>}`: how the Python binding encodes a `str`.
    Strings,
}

/// The atoms of the message shapes, made once.
pub struct Atoms {
    /// `'$socket'`, the tag of a socket term.
    pub socket: Atom,
    /// `'$tcp'`, the tag of a completion.
    pub completion: Atom,
    /// `tcp`.
    pub tcp: Atom,
    /// `tcp_closed`.
    pub tcp_closed: Atom,
    /// `tcp_error`.
    pub tcp_error: Atom,
    /// `tcp_passive`.
    pub tcp_passive: Atom,
    /// `accept` (a completion's operation).
    pub accept: Atom,
    /// `connect`.
    pub connect: Atom,
    /// `recv`.
    pub recv: Atom,
    /// `send`.
    pub send: Atom,
    /// `ready` (a watched socket's readiness, see [`IoEvent::Ready`]).
    pub ready: Atom,
    /// `ok`.
    pub ok: Atom,
    /// `error`.
    pub error: Atom,
}

/// The message atoms: all predefined (term/atom.rs), so building or parsing a message
/// never interns one, whatever the state of the atom table.
static ATOMS: Atoms = Atoms {
    socket: Atom::SOCKET_TAG,
    completion: Atom::TCP_TAG,
    tcp: Atom::TCP,
    tcp_closed: Atom::TCP_CLOSED,
    tcp_error: Atom::TCP_ERROR,
    tcp_passive: Atom::TCP_PASSIVE,
    accept: Atom::ACCEPT,
    connect: Atom::CONNECT,
    recv: Atom::RECV,
    send: Atom::SEND,
    ready: Atom::READY,
    ok: Atom::OK,
    error: Atom::ERROR,
};

/// The message atoms (see [`ATOMS`]).
pub fn atoms() -> &'static Atoms {
    &ATOMS
}

/// Pushes `{'$socket', Id}`.
pub fn push_socket(b: &mut FragmentBuilder, id: SocketId) {
    b.atom(atoms().socket).int(id.0 as i64);
    let _ = b.tuple(2);
}

/// The socket a term names, if it is `{'$socket', Id}`.
pub fn socket_of(v: View<'_>) -> Option<SocketId> {
    if v.kind() != Kind::Tuple || v.tuple_len() != Some(2) {
        return None;
    }
    if v.tuple_get(0)?.as_atom()? != atoms().socket {
        return None;
    }
    let id = v.tuple_get(1)?.as_int()?;
    u64::try_from(id).ok().map(SocketId)
}

fn push_tag(b: &mut FragmentBuilder, style: TagStyle, tag: Atom) {
    match style {
        TagStyle::Atoms => {
            b.atom(tag);
        }
        TagStyle::Strings => {
            // Text (a Python str): vm-core's str term.
            b.str(tag.as_str());
        }
    }
}

fn push_data(b: &mut FragmentBuilder, data: Binary) {
    match data {
        Binary::Inline(v) => b.binary(&v),
        Binary::Refc(r) => b.refc_binary(r),
    };
}

fn push_reason(b: &mut FragmentBuilder, e: IoError) {
    // Reasons are predefined atoms: a full atom table cannot fail a delivery.
    b.atom(e.reason_atom());
}

fn push_result(
    b: &mut FragmentBuilder,
    r: Result<(), IoError>,
    value: impl FnOnce(&mut FragmentBuilder),
) {
    let a = atoms();
    match r {
        Ok(()) => {
            b.atom(a.ok);
            value(b);
        }
        Err(e) => {
            b.atom(a.error);
            push_reason(b, e);
        }
    }
    let _ = b.tuple(2);
}

/// The message `ev` becomes in its receiver's mailbox.
pub fn to_message(ev: IoEvent, style: TagStyle) -> Fragment {
    let a = atoms();
    let mut b = FragmentBuilder::with_capacity(12);
    let arity = match ev {
        IoEvent::Tcp { sock, data } => {
            push_tag(&mut b, style, a.tcp);
            push_socket(&mut b, sock);
            push_data(&mut b, data);
            3
        }
        IoEvent::TcpClosed { sock } => {
            push_tag(&mut b, style, a.tcp_closed);
            push_socket(&mut b, sock);
            2
        }
        IoEvent::TcpError { sock, reason } => {
            push_tag(&mut b, style, a.tcp_error);
            push_socket(&mut b, sock);
            // Spelled as the tag is: Python matches ("tcp_error", s, "econnreset").
            push_tag(&mut b, style, reason.reason_atom());
            3
        }
        IoEvent::TcpPassive { sock } => {
            push_tag(&mut b, style, a.tcp_passive);
            push_socket(&mut b, sock);
            2
        }
        IoEvent::Accepted { listener, result } => {
            b.atom(a.completion);
            push_socket(&mut b, listener);
            b.atom(a.accept);
            match result {
                Ok(s) => push_result(&mut b, Ok(()), |b| push_socket(b, s)),
                Err(e) => push_result(&mut b, Err(e), |_| {}),
            }
            4
        }
        IoEvent::Connected { sock, result } => {
            b.atom(a.completion);
            push_socket(&mut b, sock);
            b.atom(a.connect);
            push_result(&mut b, result, |b| {
                b.atom(a.ok);
            });
            4
        }
        IoEvent::Received { sock, result } => {
            b.atom(a.completion);
            push_socket(&mut b, sock);
            b.atom(a.recv);
            match result {
                Ok(d) => push_result(&mut b, Ok(()), |b| push_data(b, d)),
                Err(e) => push_result(&mut b, Err(e), |_| {}),
            }
            4
        }
        IoEvent::SendReady { sock, result } => {
            b.atom(a.completion);
            push_socket(&mut b, sock);
            b.atom(a.send);
            push_result(&mut b, result, |b| {
                b.atom(a.ok);
            });
            4
        }
        IoEvent::Ready { sock } => {
            b.atom(a.completion);
            push_socket(&mut b, sock);
            b.atom(a.ready);
            push_result(&mut b, Ok(()), |b| {
                b.atom(a.ok);
            });
            4
        }
    };
    let _ = b.tuple(arity);
    // Every push above is balanced by its tuple: the builder holds exactly one term.
    b.finish()
        .unwrap_or_else(|_| Fragment::immediate(crate::term::Word::atom(a.error)))
}

/// A message of the reactor, parsed back (for native bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoMessage {
    /// `{tcp, S, Data}`.
    Tcp(SocketId, Vec<u8>),
    /// `{tcp_closed, S}`.
    TcpClosed(SocketId),
    /// `{tcp_error, S, Reason}` (the reason's name).
    TcpError(SocketId, String),
    /// `{tcp_passive, S}`.
    TcpPassive(SocketId),
    /// `{'$tcp', S, accept, {ok, NewSocket}}`.
    Accepted(SocketId, Result<SocketId, String>),
    /// `{'$tcp', S, connect, Result}`.
    Connected(SocketId, Result<(), String>),
    /// `{'$tcp', S, recv, Result}`.
    Received(SocketId, Result<Vec<u8>, String>),
    /// `{'$tcp', S, send, Result}`.
    SendReady(SocketId, Result<(), String>),
    /// `{'$tcp', S, ready, {ok, ok}}`: a watched socket's readiness.
    Ready(SocketId),
}

fn tag_of(v: View<'_>) -> Option<Atom> {
    if let Some(a) = v.as_atom() {
        return Some(a);
    }
    // The string form: text "tcp" (a Python str).
    if let Some(s) = v.as_str() {
        // Only looked up: every tag is predefined, and parsing never interns.
        return Atom::existing(s);
    }
    None
}

fn reason_of(v: View<'_>) -> String {
    match v.as_atom() {
        Some(a) => a.as_str().to_owned(),
        // An active `tcp_error`'s reason in the string style.
        None => v.as_str().map(str::to_owned).unwrap_or_default(),
    }
}

/// Parses a reactor message; `None` for any other term.
pub fn parse(v: View<'_>) -> Option<IoMessage> {
    if v.kind() != Kind::Tuple {
        return None;
    }
    let a = atoms();
    let n = v.tuple_len()?;
    let tag = tag_of(v.tuple_get(0)?)?;
    let sock = socket_of(v.tuple_get(1)?)?;
    if tag == a.completion && n == 4 {
        let op = v.tuple_get(2)?.as_atom()?;
        let res = v.tuple_get(3)?;
        let ok = res.tuple_get(0)?.as_atom()? == a.ok;
        let val = res.tuple_get(1)?;
        let err = || reason_of(val);
        return Some(if op == a.accept {
            IoMessage::Accepted(
                sock,
                if ok {
                    socket_of(val).ok_or_else(err)
                } else {
                    Err(err())
                },
            )
        } else if op == a.connect {
            IoMessage::Connected(sock, if ok { Ok(()) } else { Err(err()) })
        } else if op == a.recv {
            IoMessage::Received(
                sock,
                if ok {
                    Ok(val.as_bytes()?.to_vec())
                } else {
                    Err(err())
                },
            )
        } else if op == a.send {
            IoMessage::SendReady(sock, if ok { Ok(()) } else { Err(err()) })
        } else if op == a.ready {
            IoMessage::Ready(sock)
        } else {
            return None;
        });
    }
    match n {
        3 if tag == a.tcp => Some(IoMessage::Tcp(sock, v.tuple_get(2)?.as_bytes()?.to_vec())),
        3 if tag == a.tcp_error => Some(IoMessage::TcpError(sock, reason_of(v.tuple_get(2)?))),
        2 if tag == a.tcp_closed => Some(IoMessage::TcpClosed(sock)),
        2 if tag == a.tcp_passive => Some(IoMessage::TcpPassive(sock)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_through_its_message_in_both_styles() {
        let s = SocketId::new(3, 7);
        let t = SocketId::new(4, 0);
        let big = vec![9u8; 100];
        for style in [TagStyle::Atoms, TagStyle::Strings] {
            let cases = vec![
                (
                    IoEvent::Tcp {
                        sock: s,
                        data: Binary::new(b"hi".to_vec()),
                    },
                    IoMessage::Tcp(s, b"hi".to_vec()),
                ),
                (
                    IoEvent::Tcp {
                        sock: s,
                        data: Binary::new(big.clone()),
                    },
                    IoMessage::Tcp(s, big.clone()),
                ),
                (IoEvent::TcpClosed { sock: s }, IoMessage::TcpClosed(s)),
                (
                    IoEvent::TcpError {
                        sock: s,
                        reason: IoError::Econnreset,
                    },
                    IoMessage::TcpError(s, "econnreset".into()),
                ),
                (IoEvent::TcpPassive { sock: s }, IoMessage::TcpPassive(s)),
                (
                    IoEvent::Accepted {
                        listener: s,
                        result: Ok(t),
                    },
                    IoMessage::Accepted(s, Ok(t)),
                ),
                (
                    IoEvent::Accepted {
                        listener: s,
                        result: Err(IoError::Emfile),
                    },
                    IoMessage::Accepted(s, Err("emfile".into())),
                ),
                (
                    IoEvent::Connected {
                        sock: s,
                        result: Err(IoError::Econnrefused),
                    },
                    IoMessage::Connected(s, Err("econnrefused".into())),
                ),
                (
                    IoEvent::Received {
                        sock: s,
                        result: Ok(Binary::new(b"x".to_vec())),
                    },
                    IoMessage::Received(s, Ok(b"x".to_vec())),
                ),
                (
                    IoEvent::SendReady {
                        sock: s,
                        result: Ok(()),
                    },
                    IoMessage::SendReady(s, Ok(())),
                ),
                (IoEvent::Ready { sock: s }, IoMessage::Ready(s)),
            ];
            for (ev, want) in cases {
                let m = to_message(ev, style);
                assert_eq!(parse(m.view()), Some(want));
            }
            // An active error's reason is spelled as its tag: text for Python.
            let m = to_message(
                IoEvent::TcpError {
                    sock: s,
                    reason: IoError::Econnreset,
                },
                style,
            );
            let reason = m.view().tuple_get(2).unwrap();
            match style {
                TagStyle::Atoms => assert_eq!(reason.as_atom(), Some(Atom::ECONNRESET)),
                TagStyle::Strings => assert_eq!(reason.as_str(), Some("econnreset")),
            }
        }
        let m = to_message(
            IoEvent::Tcp {
                sock: s,
                data: Binary::new(big),
            },
            TagStyle::Atoms,
        );
        assert_eq!(
            m.refc_binaries().len(),
            1,
            "large data is shared, not copied"
        );
        let other = Fragment::from_term(&crate::term::Term::tuple(vec![crate::term::Term::atom(
            "tcp",
        )]));
        assert_eq!(parse(other.view()), None);
    }
}
