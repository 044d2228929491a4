//! The version-6 distribution handshake (erts/doc distribution_handshake, OTP 25's
//! dist_util.erl) as a sans-IO state machine: bytes in, bytes out, no socket inside.
//!
//! ```text
//!  initiator (A)                                   acceptor (B)
//!  'N' flags:64 creation:32 nlen:16 name   ---->
//!                                          <----   's' status   (ok | ok_simultaneous |
//!                                                                nok | not_allowed | alive)
//!  ('s' "true"|"false" after alive)        ---->
//!                                          <----   'N' flags:64 challenge:32 creation:32
//!                                                      nlen:16 name
//!  'r' challengeA:32 digest:16             ---->
//!                                          <----   'a' digest:16
//! ```
//!
//! Every message is framed by a 2-byte length. The driver feeds received bytes with
//! [`Handshake::receive`], calls [`Handshake::advance`] until it says what to do next,
//! and writes whatever [`Handshake::take_output`] returns. Two points need the node,
//! not the wire, and surface as [`Progress`] values:
//!
//! * the acceptor, once it knows the peer's name, asks whether a connection to that
//!   node is pending or up ([`Progress::PeerHello`] → [`Handshake::decide`]): a
//!   simultaneous connect is resolved by name order as net_kernel does (the node whose
//!   name is greater keeps its own attempt and answers `nok`; see [`simultaneous`]);
//! * the initiator, told `alive` (the acceptor believes an older connection from us is
//!   still up), answers whether that one is dead ([`Progress::AliveQuery`] →
//!   [`Handshake::answer_alive`]).
//!
//! Each side proves it knows the cookie by returning MD5(cookie ++ decimal challenge)
//! of the other's challenge; a wrong digest ends the handshake with
//! [`HandshakeError::BadCookie`] and nothing more is sent. A peer that lacks a
//! mandatory flag is refused with a message naming the flags ([`HandshakeError::MissingFlags`]).
//! Trailing bytes after the name in a send-name message are accepted and ignored, as
//! the protocol reserves them for extensions.

use std::fmt;

use crate::cookie::Cookie;
use crate::flags;

/// Longest node name, in bytes (an atom of up to 255 characters, UTF-8).
const MAX_NAME_BYTES: usize = 255 * 4;

/// Which side of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We connected.
    Initiator,
    /// The peer connected.
    Acceptor,
}

/// What the acceptor answers once it knows who connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No other connection to that node: go on.
    Ok,
    /// We were connecting to it too and lose the tie: go on with this one (the driver
    /// abandons its own attempt).
    OkSimultaneous,
    /// We were connecting to it too and win the tie: refuse this one.
    Nok,
    /// The node may not connect.
    NotAllowed,
    /// A connection to that node looks up: ask the peer whether it is stale.
    Alive,
}

/// How the acceptor should resolve a simultaneous connect, as net_kernel does:
/// `MyNode > Node` (atom order, which for these names is byte order) keeps our own
/// attempt.
pub fn simultaneous(our_name: &str, peer_name: &str) -> Decision {
    if our_name > peer_name {
        Decision::Nok
    } else {
        Decision::OkSimultaneous
    }
}

/// What the peer said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node name.
    pub name: String,
    /// Its flags, as sent (see [`flags::expand`]).
    pub flags: u64,
    /// Its creation (0 when it sent the old 'n' form and no complement yet).
    pub creation: u32,
}

/// A finished handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// The peer.
    pub peer: PeerInfo,
    /// Bytes that arrived after the handshake: the start of the connection's frames.
    pub leftover: Vec<u8>,
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Send what [`Handshake::take_output`] holds, then read more.
    NeedInput,
    /// (Acceptor) the peer introduced itself: call [`Handshake::decide`].
    PeerHello(PeerInfo),
    /// (Initiator) the peer answered `alive`: call [`Handshake::answer_alive`].
    AliveQuery,
    /// Done: send what output remains, then run the connection.
    Established(Established),
}

/// Why a handshake failed. The driver closes the socket after sending any output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// A message that is not what the protocol allows at this point.
    Protocol(String),
    /// The peer's digest is wrong: it does not know our cookie (or we not its).
    BadCookie {
        /// The peer, as it named itself.
        peer: String,
    },
    /// The peer lacks flags every node must have.
    MissingFlags {
        /// The peer.
        peer: String,
        /// The flags' names.
        missing: Vec<&'static str>,
    },
    /// The peer refused us with this status (`nok`, `not_allowed`...).
    Refused(String),
    /// We refused the peer ([`Decision::Nok`], [`Decision::NotAllowed`], or `alive`
    /// answered `false`).
    Declined,
    /// The challenge came from another node than the one we called.
    WrongNode {
        /// Whom we called.
        expected: String,
        /// Who answered.
        got: String,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Protocol(m) => write!(f, "handshake protocol error: {m}"),
            HandshakeError::BadCookie { peer } => write!(
                f,
                "connection from or to {peer} refused: wrong cookie (both nodes must share one)"
            ),
            HandshakeError::MissingFlags { peer, missing } => write!(
                f,
                "node {peer} refused: it lacks mandatory distribution flags {} (OTP 26 or later, or 25 with V4_NC and UNLINK_ID, is required)",
                missing.join(", ")
            ),
            HandshakeError::Refused(s) => write!(f, "peer refused the connection: {s}"),
            HandshakeError::Declined => write!(f, "connection declined by this node"),
            HandshakeError::WrongNode { expected, got } => {
                write!(f, "connected to {got}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// What this node brings to a handshake.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// Our node name (`name@host`).
    pub name: String,
    /// Our creation (from EPMD).
    pub creation: u32,
    /// The flags we advertise ([`flags::ours`]).
    pub flags: u64,
    /// The cookie to prove and check.
    pub cookie: Cookie,
}

#[derive(Debug)]
enum State {
    // Initiator.
    AwaitStatus,
    AwaitAliveAnswer,
    AwaitChallenge,
    AwaitAck {
        our_challenge: u32,
        peer: PeerInfo,
    },
    // Acceptor.
    AwaitName,
    AwaitDecision {
        peer: PeerInfo,
        old_style: bool,
    },
    AwaitAliveReply {
        peer: PeerInfo,
        old_style: bool,
    },
    AwaitReply {
        peer: PeerInfo,
        our_challenge: u32,
        old_style: bool,
    },
    // Both.
    Done,
    Failed,
}

/// One handshake, either side.
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    cfg: HandshakeConfig,
    /// Whom the initiator called.
    expected_peer: Option<String>,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    challenge: u32,
}

/// A node name is `alive@host`, both parts non-empty.
fn valid_node_name(name: &str) -> bool {
    match name.split_once('@') {
        Some((alive, host)) => {
            !alive.is_empty() && !host.is_empty() && name.len() <= MAX_NAME_BYTES
        }
        None => false,
    }
}

fn put_frame(out: &mut Vec<u8>, body: &[u8]) {
    // Handshake messages are all far below 64 KiB (a name is at most 1020 bytes).
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

fn proto<T>(msg: impl Into<String>) -> Result<T, HandshakeError> {
    Err(HandshakeError::Protocol(msg.into()))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl Handshake {
    /// We connect to `peer_name`; the send-name message is ready in the output.
    pub fn initiator(cfg: HandshakeConfig, peer_name: &str) -> Self {
        Handshake::initiator_with_challenge(cfg, peer_name, crate::random::challenge())
    }

    /// As [`Handshake::initiator`] with a given challenge (tests).
    pub fn initiator_with_challenge(cfg: HandshakeConfig, peer_name: &str, challenge: u32) -> Self {
        let mut body = vec![b'N'];
        body.extend_from_slice(&cfg.flags.to_be_bytes());
        body.extend_from_slice(&cfg.creation.to_be_bytes());
        body.extend_from_slice(&(cfg.name.len() as u16).to_be_bytes());
        body.extend_from_slice(cfg.name.as_bytes());
        let mut output = Vec::new();
        put_frame(&mut output, &body);
        Handshake {
            role: Role::Initiator,
            cfg,
            expected_peer: Some(peer_name.to_owned()),
            state: State::AwaitStatus,
            input: Vec::new(),
            output,
            challenge,
        }
    }

    /// A peer connected to us.
    pub fn acceptor(cfg: HandshakeConfig) -> Self {
        Handshake::acceptor_with_challenge(cfg, crate::random::challenge())
    }

    /// As [`Handshake::acceptor`] with a given challenge (tests).
    pub fn acceptor_with_challenge(cfg: HandshakeConfig, challenge: u32) -> Self {
        Handshake {
            role: Role::Acceptor,
            cfg,
            expected_peer: None,
            state: State::AwaitName,
            input: Vec::new(),
            output: Vec::new(),
            challenge,
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Bytes read from the socket.
    pub fn receive(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// Bytes to write to the socket (empty when none).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// One complete handshake message from the input, if there is one.
    fn next_message(&mut self) -> Option<Vec<u8>> {
        if self.input.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.input[0], self.input[1]]));
        if self.input.len() < 2 + len {
            return None;
        }
        let msg = self.input[2..2 + len].to_vec();
        self.input.drain(..2 + len);
        Some(msg)
    }

    fn send(&mut self, body: &[u8]) {
        put_frame(&mut self.output, body);
    }

    fn send_status(&mut self, status: &str) {
        let mut body = vec![b's'];
        body.extend_from_slice(status.as_bytes());
        self.send(&body);
    }

    fn send_challenge(&mut self) {
        let mut body = vec![b'N'];
        body.extend_from_slice(&self.cfg.flags.to_be_bytes());
        body.extend_from_slice(&self.challenge.to_be_bytes());
        body.extend_from_slice(&self.cfg.creation.to_be_bytes());
        body.extend_from_slice(&(self.cfg.name.len() as u16).to_be_bytes());
        body.extend_from_slice(self.cfg.name.as_bytes());
        self.send(&body);
    }

    fn fail<T>(&mut self, e: HandshakeError) -> Result<T, HandshakeError> {
        self.state = State::Failed;
        Err(e)
    }

    /// Processes what has been received. Call again after each [`Handshake::receive`]
    /// and after [`Handshake::decide`] / [`Handshake::answer_alive`].
    pub fn advance(&mut self) -> Result<Progress, HandshakeError> {
        loop {
            match &self.state {
                State::Done => return proto("handshake already finished"),
                State::Failed => return proto("handshake already failed"),
                State::AwaitDecision { peer, .. } => return Ok(Progress::PeerHello(peer.clone())),
                State::AwaitAliveAnswer => return Ok(Progress::AliveQuery),
                _ => {}
            }
            let Some(msg) = self.next_message() else {
                return Ok(Progress::NeedInput);
            };
            let result = self.on_message(&msg);
            match result {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => continue,
                Err(e) => return self.fail(e),
            }
        }
    }

    fn on_message(&mut self, msg: &[u8]) -> Result<Option<Progress>, HandshakeError> {
        let Some((&tag, body)) = msg.split_first() else {
            return proto("empty handshake message");
        };
        match std::mem::replace(&mut self.state, State::Failed) {
            State::AwaitStatus => {
                if tag != b's' {
                    return proto(format!("expected status, got tag {tag}"));
                }
                match body {
                    b"ok" | b"ok_simultaneous" => {
                        self.state = State::AwaitChallenge;
                        Ok(None)
                    }
                    b"alive" => {
                        self.state = State::AwaitAliveAnswer;
                        Ok(Some(Progress::AliveQuery))
                    }
                    other => Err(HandshakeError::Refused(
                        String::from_utf8_lossy(other).into_owned(),
                    )),
                }
            }
            State::AwaitChallenge => {
                if tag != b'N' {
                    return proto(format!("expected challenge 'N', got tag {tag}"));
                }
                if body.len() < 8 + 4 + 4 + 2 {
                    return proto("short challenge");
                }
                let peer_flags = be_u64(&body[0..8]);
                let challenge = be_u32(&body[8..12]);
                let creation = be_u32(&body[12..16]);
                let nlen = usize::from(u16::from_be_bytes([body[16], body[17]]));
                let Some(name) = body.get(18..18 + nlen) else {
                    return proto("challenge name past the message end");
                };
                let name = std::str::from_utf8(name)
                    .map_err(|_| HandshakeError::Protocol("node name is not UTF-8".into()))?
                    .to_owned();
                if let Some(expected) = &self.expected_peer {
                    if *expected != name {
                        return Err(HandshakeError::WrongNode {
                            expected: expected.clone(),
                            got: name,
                        });
                    }
                }
                let missing = flags::missing_mandatory(peer_flags);
                if !missing.is_empty() {
                    return Err(HandshakeError::MissingFlags {
                        peer: name,
                        missing,
                    });
                }
                let digest = self.cfg.cookie.digest(challenge);
                let mut reply = vec![b'r'];
                reply.extend_from_slice(&self.challenge.to_be_bytes());
                reply.extend_from_slice(&digest);
                self.send(&reply);
                self.state = State::AwaitAck {
                    our_challenge: self.challenge,
                    peer: PeerInfo {
                        name,
                        flags: peer_flags,
                        creation,
                    },
                };
                Ok(None)
            }
            State::AwaitAck {
                our_challenge,
                peer,
            } => {
                if tag != b'a' || body.len() != 16 {
                    return proto(format!("expected challenge ack, got tag {tag}"));
                }
                if body != self.cfg.cookie.digest(our_challenge) {
                    return Err(HandshakeError::BadCookie { peer: peer.name });
                }
                self.state = State::Done;
                Ok(Some(Progress::Established(Established {
                    peer,
                    leftover: std::mem::take(&mut self.input),
                })))
            }
            State::AwaitName => {
                let (peer, old_style) = match tag {
                    b'N' => {
                        if body.len() < 8 + 4 + 2 {
                            return proto("short send-name");
                        }
                        let f = be_u64(&body[0..8]);
                        let creation = be_u32(&body[8..12]);
                        let nlen = usize::from(u16::from_be_bytes([body[12], body[13]]));
                        // Anything after the name is reserved for extensions: ignored.
                        let Some(name) = body.get(14..14 + nlen) else {
                            return proto("send-name name past the message end");
                        };
                        (
                            PeerInfo {
                                name: String::from_utf8_lossy(name).into_owned(),
                                flags: f,
                                creation,
                            },
                            false,
                        )
                    }
                    b'n' => {
                        // Old form: version:16 flags:32 name (rest of the message).
                        if body.len() < 2 + 4 {
                            return proto("short old send-name");
                        }
                        let f = u64::from(be_u32(&body[2..6]));
                        (
                            PeerInfo {
                                name: String::from_utf8_lossy(&body[6..]).into_owned(),
                                flags: f,
                                creation: 0,
                            },
                            true,
                        )
                    }
                    _ => return proto(format!("expected send-name, got tag {tag}")),
                };
                if !valid_node_name(&peer.name) {
                    return proto(format!("bad node name {:?}", peer.name));
                }
                // The old form carries only the low 32 flag bits; the high ones come in
                // the complement and are checked when it has arrived.
                let high_later = if old_style {
                    flags::MANDATORY & !0xffff_ffff
                } else {
                    0
                };
                let missing = flags::missing_mandatory(peer.flags | high_later);
                if !missing.is_empty() {
                    self.send_status("not_allowed");
                    return Err(HandshakeError::MissingFlags {
                        peer: peer.name,
                        missing,
                    });
                }
                self.state = State::AwaitDecision {
                    peer: peer.clone(),
                    old_style,
                };
                Ok(Some(Progress::PeerHello(peer)))
            }
            State::AwaitAliveReply { peer, old_style } => {
                if tag != b's' {
                    return proto(format!("expected alive answer, got tag {tag}"));
                }
                match body {
                    b"true" => {
                        self.send_challenge();
                        self.state = State::AwaitReply {
                            peer,
                            our_challenge: self.challenge,
                            old_style,
                        };
                        Ok(None)
                    }
                    b"false" => Err(HandshakeError::Declined),
                    _ => proto("alive answer is neither true nor false"),
                }
            }
            State::AwaitReply {
                mut peer,
                our_challenge,
                old_style,
            } => {
                if tag == b'c' && old_style {
                    // Complement: the high flag word and the creation an old-style
                    // send-name could not carry.
                    if body.len() < 8 {
                        return proto("short complement");
                    }
                    peer.flags |= u64::from(be_u32(&body[0..4])) << 32;
                    peer.creation = be_u32(&body[4..8]);
                    self.state = State::AwaitReply {
                        peer,
                        our_challenge,
                        old_style: false,
                    };
                    return Ok(None);
                }
                if tag != b'r' || body.len() != 4 + 16 {
                    return proto(format!("expected challenge reply, got tag {tag}"));
                }
                if old_style {
                    // No complement came: the high flag bits are missing.
                    return Err(HandshakeError::MissingFlags {
                        missing: flags::missing_mandatory(peer.flags),
                        peer: peer.name,
                    });
                }
                let peer_challenge = be_u32(&body[0..4]);
                if body[4..] != self.cfg.cookie.digest(our_challenge) {
                    return Err(HandshakeError::BadCookie { peer: peer.name });
                }
                let mut ack = vec![b'a'];
                ack.extend_from_slice(&self.cfg.cookie.digest(peer_challenge));
                self.send(&ack);
                self.state = State::Done;
                Ok(Some(Progress::Established(Established {
                    peer,
                    leftover: std::mem::take(&mut self.input),
                })))
            }
            State::AwaitDecision { .. } | State::AwaitAliveAnswer | State::Done | State::Failed => {
                proto("message arrived when none was expected")
            }
        }
    }

    /// (Acceptor) answers a [`Progress::PeerHello`]. Then call [`Handshake::advance`].
    pub fn decide(&mut self, decision: Decision) -> Result<(), HandshakeError> {
        let State::AwaitDecision { peer, old_style } =
            std::mem::replace(&mut self.state, State::Failed)
        else {
            return self.fail(HandshakeError::Protocol("no decision is pending".into()));
        };
        match decision {
            Decision::Ok | Decision::OkSimultaneous => {
                self.send_status(if decision == Decision::Ok {
                    "ok"
                } else {
                    "ok_simultaneous"
                });
                self.send_challenge();
                self.state = State::AwaitReply {
                    peer,
                    our_challenge: self.challenge,
                    old_style,
                };
                Ok(())
            }
            Decision::Alive => {
                self.send_status("alive");
                self.state = State::AwaitAliveReply { peer, old_style };
                Ok(())
            }
            Decision::Nok => {
                self.send_status("nok");
                self.fail(HandshakeError::Declined)
            }
            Decision::NotAllowed => {
                self.send_status("not_allowed");
                self.fail(HandshakeError::Declined)
            }
        }
    }

    /// (Initiator) answers `alive`: `true` when our old connection to the peer is gone
    /// (the handshake goes on), `false` to give up.
    pub fn answer_alive(&mut self, old_connection_dead: bool) -> Result<(), HandshakeError> {
        if !matches!(self.state, State::AwaitAliveAnswer) {
            return self.fail(HandshakeError::Protocol(
                "no alive question is pending".into(),
            ));
        }
        if old_connection_dead {
            self.send_status("true");
            self.state = State::AwaitChallenge;
            Ok(())
        } else {
            self.send_status("false");
            self.fail(HandshakeError::Declined)
        }
    }
}
