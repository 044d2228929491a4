//! Distribution control messages (erl_dist_protocol, "Protocol between connected
//! nodes") as a typed enum, parsed from and built into pass-through frames.
//!
//! A data frame (after the 4-byte length) is `112`, the control tuple as an external
//! term, and for some operations one more external term: the message of a send, the
//! reason of a PAYLOAD_EXIT, the argument list of a SPAWN_REQUEST. [`Control`] folds
//! that second term into the variant that needs it, and the `_TT` (trace token)
//! variants of each operation into [`DistMessage::token`]. Exit signals arrive in
//! either the old form (reason in the tuple) or the payload form; both parse to the
//! same variant, and [`Style`] says which to build (payload toward peers with
//! EXIT_PAYLOAD, which every OTP 25+ node has).
//!
//! Anything else — an unknown operation, a tuple of the wrong shape, bytes left over,
//! a payload missing — is a [`ControlError`]; the connection that sent it is closed.

use std::fmt;

use crate::atoms::AtomGate;
use crate::etf::{self, DecodeError, DecodeOptions, EncodeError};
use crate::flags;
use crate::term::{Atom, Pid, Ref, SharedBuf, Term};

/// The pass-through tag that starts every data frame we send and accept.
pub const PASS_THROUGH: u8 = 112;

/// Operation codes (dist.h's `enum dop`).
#[allow(missing_docs)]
pub mod op {
    pub const LINK: i64 = 1;
    pub const SEND: i64 = 2;
    pub const EXIT: i64 = 3;
    pub const UNLINK: i64 = 4;
    pub const REG_SEND: i64 = 6;
    pub const GROUP_LEADER: i64 = 7;
    pub const EXIT2: i64 = 8;
    pub const SEND_TT: i64 = 12;
    pub const EXIT_TT: i64 = 13;
    pub const REG_SEND_TT: i64 = 16;
    pub const EXIT2_TT: i64 = 18;
    pub const MONITOR_P: i64 = 19;
    pub const DEMONITOR_P: i64 = 20;
    pub const MONITOR_P_EXIT: i64 = 21;
    pub const SEND_SENDER: i64 = 22;
    pub const SEND_SENDER_TT: i64 = 23;
    pub const PAYLOAD_EXIT: i64 = 24;
    pub const PAYLOAD_EXIT_TT: i64 = 25;
    pub const PAYLOAD_EXIT2: i64 = 26;
    pub const PAYLOAD_EXIT2_TT: i64 = 27;
    pub const PAYLOAD_MONITOR_P_EXIT: i64 = 28;
    pub const SPAWN_REQUEST: i64 = 29;
    pub const SPAWN_REQUEST_TT: i64 = 30;
    pub const SPAWN_REPLY: i64 = 31;
    pub const SPAWN_REPLY_TT: i64 = 32;
    pub const ALIAS_SEND: i64 = 33;
    pub const ALIAS_SEND_TT: i64 = 34;
    pub const UNLINK_ID: i64 = 35;
    pub const UNLINK_ID_ACK: i64 = 36;
}

/// SPAWN_REPLY flag: the new process is linked to the requester.
pub const SPAWN_FLAG_LINK: u32 = 1;
/// SPAWN_REPLY flag: the requester monitors the new process.
pub const SPAWN_FLAG_MONITOR: u32 = 2;

/// A process named in a monitor: by pid, or by registered name on the receiving node.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcRef {
    /// A pid.
    Pid(Pid),
    /// A registered name.
    Name(Atom),
}

impl ProcRef {
    fn to_term(&self) -> Term {
        match self {
            ProcRef::Pid(p) => Term::Pid(p.clone()),
            ProcRef::Name(a) => Term::Atom(a.clone()),
        }
    }
}

/// One control operation, with the term that follows it where it has one.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// `{1, From, To}`.
    Link {
        /// Linking process.
        from: Pid,
        /// Linked process.
        to: Pid,
    },
    /// `{2, '', To}` + message: a send without the sender.
    Send {
        /// Receiver.
        to: Pid,
        /// The message.
        message: Term,
    },
    /// `{22, From, To}` + message.
    SendSender {
        /// Sender.
        from: Pid,
        /// Receiver.
        to: Pid,
        /// The message.
        message: Term,
    },
    /// `{6, From, '', ToName}` + message.
    RegSend {
        /// Sender.
        from: Pid,
        /// Registered name on the receiving node.
        to_name: Atom,
        /// The message.
        message: Term,
    },
    /// An exit signal along a link: `{3, From, To, Reason}` or `{24, From, To}` + reason.
    Exit {
        /// The process that exited.
        from: Pid,
        /// The linked process.
        to: Pid,
        /// Exit reason.
        reason: Term,
    },
    /// `exit/2`: `{8, From, To, Reason}` or `{26, From, To}` + reason.
    Exit2 {
        /// Sender of the signal.
        from: Pid,
        /// Target.
        to: Pid,
        /// Exit reason.
        reason: Term,
    },
    /// `{4, From, To}` (pre-UNLINK_ID; parsed, never built by us).
    Unlink {
        /// Unlinking process.
        from: Pid,
        /// Unlinked process.
        to: Pid,
    },
    /// `{35, Id, From, To}`.
    UnlinkId {
        /// Unlink id, echoed by the ack.
        id: u64,
        /// Unlinking process.
        from: Pid,
        /// Unlinked process.
        to: Pid,
    },
    /// `{36, Id, From, To}`.
    UnlinkIdAck {
        /// The id of the UNLINK_ID acknowledged.
        id: u64,
        /// Acknowledging process.
        from: Pid,
        /// The process that unlinked.
        to: Pid,
    },
    /// `{7, From, To}`.
    GroupLeader {
        /// The new group leader.
        from: Pid,
        /// The process whose leader changes.
        to: Pid,
    },
    /// `{19, From, To, Ref}`: `From` monitors `To`.
    MonitorP {
        /// Monitoring process.
        from: Pid,
        /// Monitored process or name.
        to: ProcRef,
        /// Monitor reference.
        reference: Ref,
    },
    /// `{20, From, To, Ref}`.
    DemonitorP {
        /// Monitoring process.
        from: Pid,
        /// Monitored process or name.
        to: ProcRef,
        /// Monitor reference.
        reference: Ref,
    },
    /// A monitored process ended: `{21, From, To, Ref, Reason}` or `{28, From, To, Ref}`
    /// + reason.
    MonitorPExit {
        /// The monitored process or name.
        from: ProcRef,
        /// The monitoring process.
        to: Pid,
        /// Monitor reference.
        reference: Ref,
        /// Exit reason.
        reason: Term,
    },
    /// `{29, ReqId, From, GroupLeader, {M, F, A}, Opts}` + argument list.
    SpawnRequest {
        /// Request id, echoed by the reply.
        req_id: Ref,
        /// Requesting process.
        from: Pid,
        /// Group leader for the new process.
        group_leader: Pid,
        /// Module.
        module: Atom,
        /// Function.
        function: Atom,
        /// Arity (the length of `args`).
        arity: u32,
        /// Spawn options list.
        opts: Term,
        /// Argument list.
        args: Term,
    },
    /// `{31, ReqId, To, Flags, Result}`: Result is the new pid or an error atom.
    SpawnReply {
        /// The request's id.
        req_id: Ref,
        /// The requester.
        to: Pid,
        /// [`SPAWN_FLAG_LINK`] | [`SPAWN_FLAG_MONITOR`].
        flags: u32,
        /// New pid, or error reason.
        result: Term,
    },
    /// `{33, From, Alias}` + message.
    AliasSend {
        /// Sender.
        from: Pid,
        /// The alias (a reference).
        alias: Ref,
        /// The message.
        message: Term,
    },
}

/// A control operation with its optional sequential-trace token.
#[derive(Clone, Debug, PartialEq)]
pub struct DistMessage {
    /// The operation.
    pub control: Control,
    /// Trace token (the `_TT` forms); `None` for ordinary messages.
    pub token: Option<Term>,
}

impl From<Control> for DistMessage {
    fn from(control: Control) -> Self {
        DistMessage {
            control,
            token: None,
        }
    }
}

/// How to build frames toward a peer, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Exit reasons as a payload (PAYLOAD_EXIT...).
    pub exit_payload: bool,
}

impl Style {
    /// The style a peer with `peer_flags` understands.
    pub fn for_peer(peer_flags: u64) -> Self {
        Style {
            exit_payload: peer_flags & flags::EXIT_PAYLOAD != 0,
        }
    }
}

/// Why a frame is not a valid control message.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlError {
    /// The frame does not start with 112 (an atom-cache header or garbage).
    NotPassThrough(u8),
    /// The frame is empty.
    Empty,
    /// A term in the frame does not decode.
    Term(DecodeError),
    /// An operation code we do not know.
    UnknownOp(Term),
    /// The control tuple does not have the shape its operation requires.
    Malformed(&'static str),
    /// The operation requires a second term and there is none.
    MissingPayload(&'static str),
    /// Bytes after the last term.
    Trailing(usize),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotPassThrough(b) => {
                write!(f, "data frame starts with {b}, not pass-through 112")
            }
            ControlError::Empty => write!(f, "empty data frame"),
            ControlError::Term(e) => write!(f, "control message: {e}"),
            ControlError::UnknownOp(t) => write!(f, "unknown control message {t:?}"),
            ControlError::Malformed(what) => write!(f, "malformed {what} control message"),
            ControlError::MissingPayload(what) => write!(f, "{what} without its payload"),
            ControlError::Trailing(n) => write!(f, "{n} bytes after the control message"),
        }
    }
}

impl std::error::Error for ControlError {}

impl From<DecodeError> for ControlError {
    fn from(e: DecodeError) -> Self {
        ControlError::Term(e)
    }
}

fn pid(t: &Term, what: &'static str) -> Result<Pid, ControlError> {
    match t {
        Term::Pid(p) => Ok(p.clone()),
        _ => Err(ControlError::Malformed(what)),
    }
}

fn reference(t: &Term, what: &'static str) -> Result<Ref, ControlError> {
    match t {
        Term::Ref(r) => Ok(r.clone()),
        _ => Err(ControlError::Malformed(what)),
    }
}

fn atom(t: &Term, what: &'static str) -> Result<Atom, ControlError> {
    match t {
        Term::Atom(a) => Ok(a.clone()),
        _ => Err(ControlError::Malformed(what)),
    }
}

fn proc_ref(t: &Term, what: &'static str) -> Result<ProcRef, ControlError> {
    match t {
        Term::Pid(p) => Ok(ProcRef::Pid(p.clone())),
        Term::Atom(a) => Ok(ProcRef::Name(a.clone())),
        _ => Err(ControlError::Malformed(what)),
    }
}

fn uint(t: &Term, what: &'static str) -> Result<u64, ControlError> {
    match t {
        Term::Int(i) => u64::try_from(*i).map_err(|_| ControlError::Malformed(what)),
        Term::BigInt(b) => u64::try_from(b).map_err(|_| ControlError::Malformed(what)),
        _ => Err(ControlError::Malformed(what)),
    }
}

/// Takes the tuple's elements when it has `n` of them.
fn fields(t: Term, n: usize, what: &'static str) -> Result<Vec<Term>, ControlError> {
    match t {
        Term::Tuple(v) if v.len() == n => Ok(v),
        _ => Err(ControlError::Malformed(what)),
    }
}

impl DistMessage {
    /// Parses a data frame's body (after the 4-byte length), decoding atoms through
    /// `atoms` (the connection's flood bound).
    pub fn decode(
        frame: &[u8],
        opts: &DecodeOptions,
        atoms: &mut dyn AtomGate,
    ) -> Result<DistMessage, ControlError> {
        DistMessage::decode_shared(frame, opts, atoms, None)
    }

    /// [`DistMessage::decode`] of a frame that lies in `share` (the connection's input
    /// buffer, made shareable): large binaries become ranges of it instead of copies
    /// (see [`etf::decode_prefix_shared`]).
    pub fn decode_shared(
        frame: &[u8],
        opts: &DecodeOptions,
        atoms: &mut dyn AtomGate,
        share: Option<&SharedBuf>,
    ) -> Result<DistMessage, ControlError> {
        let (&first, rest) = frame.split_first().ok_or(ControlError::Empty)?;
        if first != PASS_THROUGH {
            return Err(ControlError::NotPassThrough(first));
        }
        let (ctl, used) = etf::decode_prefix_shared(rest, opts, atoms, share)?;
        let rest = &rest[used..];
        let mut payload = |what: &'static str| -> Result<Term, ControlError> {
            if rest.is_empty() {
                return Err(ControlError::MissingPayload(what));
            }
            Ok(etf::decode_with_shared(rest, opts, atoms, share)?)
        };
        let code = match &ctl {
            Term::Tuple(v) if !v.is_empty() => v[0].as_int(),
            _ => None,
        };
        let Some(code) = code else {
            return Err(ControlError::UnknownOp(ctl));
        };
        let has_payload = matches!(
            code,
            op::SEND
                | op::SEND_TT
                | op::REG_SEND
                | op::REG_SEND_TT
                | op::SEND_SENDER
                | op::SEND_SENDER_TT
                | op::PAYLOAD_EXIT
                | op::PAYLOAD_EXIT_TT
                | op::PAYLOAD_EXIT2
                | op::PAYLOAD_EXIT2_TT
                | op::PAYLOAD_MONITOR_P_EXIT
                | op::SPAWN_REQUEST
                | op::SPAWN_REQUEST_TT
                | op::ALIAS_SEND
                | op::ALIAS_SEND_TT
        );
        if !has_payload && !rest.is_empty() {
            return Err(ControlError::Trailing(rest.len()));
        }
        let mut token = None;
        let control = match code {
            op::LINK | op::UNLINK | op::GROUP_LEADER => {
                let f = fields(ctl, 3, "LINK/UNLINK/GROUP_LEADER")?;
                let (from, to) = (pid(&f[1], "LINK")?, pid(&f[2], "LINK")?);
                match code {
                    op::LINK => Control::Link { from, to },
                    op::UNLINK => Control::Unlink { from, to },
                    _ => Control::GroupLeader { from, to },
                }
            }
            op::SEND | op::SEND_TT => {
                let n = if code == op::SEND { 3 } else { 4 };
                let mut f = fields(ctl, n, "SEND")?;
                if code == op::SEND_TT {
                    token = f.pop();
                }
                Control::Send {
                    to: pid(&f[2], "SEND")?,
                    message: payload("SEND")?,
                }
            }
            op::SEND_SENDER | op::SEND_SENDER_TT => {
                let n = if code == op::SEND_SENDER { 3 } else { 4 };
                let mut f = fields(ctl, n, "SEND_SENDER")?;
                if code == op::SEND_SENDER_TT {
                    token = f.pop();
                }
                Control::SendSender {
                    from: pid(&f[1], "SEND_SENDER")?,
                    to: pid(&f[2], "SEND_SENDER")?,
                    message: payload("SEND_SENDER")?,
                }
            }
            op::REG_SEND | op::REG_SEND_TT => {
                let n = if code == op::REG_SEND { 4 } else { 5 };
                let mut f = fields(ctl, n, "REG_SEND")?;
                if code == op::REG_SEND_TT {
                    token = f.pop();
                }
                Control::RegSend {
                    from: pid(&f[1], "REG_SEND")?,
                    to_name: atom(&f[3], "REG_SEND")?,
                    message: payload("REG_SEND")?,
                }
            }
            op::EXIT | op::EXIT_TT | op::EXIT2 | op::EXIT2_TT => {
                let tt = code == op::EXIT_TT || code == op::EXIT2_TT;
                let mut f = fields(ctl, if tt { 5 } else { 4 }, "EXIT")?;
                let reason = f.pop().unwrap_or(Term::Nil);
                if tt {
                    token = f.pop();
                }
                let (from, to) = (pid(&f[1], "EXIT")?, pid(&f[2], "EXIT")?);
                if code == op::EXIT || code == op::EXIT_TT {
                    Control::Exit { from, to, reason }
                } else {
                    Control::Exit2 { from, to, reason }
                }
            }
            op::PAYLOAD_EXIT | op::PAYLOAD_EXIT_TT | op::PAYLOAD_EXIT2 | op::PAYLOAD_EXIT2_TT => {
                let tt = code == op::PAYLOAD_EXIT_TT || code == op::PAYLOAD_EXIT2_TT;
                let mut f = fields(ctl, if tt { 4 } else { 3 }, "PAYLOAD_EXIT")?;
                if tt {
                    token = f.pop();
                }
                let (from, to) = (pid(&f[1], "PAYLOAD_EXIT")?, pid(&f[2], "PAYLOAD_EXIT")?);
                let reason = payload("PAYLOAD_EXIT")?;
                if code == op::PAYLOAD_EXIT || code == op::PAYLOAD_EXIT_TT {
                    Control::Exit { from, to, reason }
                } else {
                    Control::Exit2 { from, to, reason }
                }
            }
            op::UNLINK_ID | op::UNLINK_ID_ACK => {
                let f = fields(ctl, 4, "UNLINK_ID")?;
                let id = uint(&f[1], "UNLINK_ID")?;
                let (from, to) = (pid(&f[2], "UNLINK_ID")?, pid(&f[3], "UNLINK_ID")?);
                if code == op::UNLINK_ID {
                    Control::UnlinkId { id, from, to }
                } else {
                    Control::UnlinkIdAck { id, from, to }
                }
            }
            op::MONITOR_P | op::DEMONITOR_P => {
                let f = fields(ctl, 4, "MONITOR_P")?;
                let from = pid(&f[1], "MONITOR_P")?;
                let to = proc_ref(&f[2], "MONITOR_P")?;
                let reference = reference(&f[3], "MONITOR_P")?;
                if code == op::MONITOR_P {
                    Control::MonitorP {
                        from,
                        to,
                        reference,
                    }
                } else {
                    Control::DemonitorP {
                        from,
                        to,
                        reference,
                    }
                }
            }
            op::MONITOR_P_EXIT => {
                let f = fields(ctl, 5, "MONITOR_P_EXIT")?;
                Control::MonitorPExit {
                    from: proc_ref(&f[1], "MONITOR_P_EXIT")?,
                    to: pid(&f[2], "MONITOR_P_EXIT")?,
                    reference: reference(&f[3], "MONITOR_P_EXIT")?,
                    reason: f[4].clone(),
                }
            }
            op::PAYLOAD_MONITOR_P_EXIT => {
                let f = fields(ctl, 4, "PAYLOAD_MONITOR_P_EXIT")?;
                Control::MonitorPExit {
                    from: proc_ref(&f[1], "PAYLOAD_MONITOR_P_EXIT")?,
                    to: pid(&f[2], "PAYLOAD_MONITOR_P_EXIT")?,
                    reference: reference(&f[3], "PAYLOAD_MONITOR_P_EXIT")?,
                    reason: payload("PAYLOAD_MONITOR_P_EXIT")?,
                }
            }
            op::SPAWN_REQUEST | op::SPAWN_REQUEST_TT => {
                let tt = code == op::SPAWN_REQUEST_TT;
                let mut f = fields(ctl, if tt { 7 } else { 6 }, "SPAWN_REQUEST")?;
                if tt {
                    token = f.pop();
                }
                let opts = f.pop().unwrap_or(Term::Nil);
                let mfa = match &f[4] {
                    Term::Tuple(m) if m.len() == 3 => m,
                    _ => return Err(ControlError::Malformed("SPAWN_REQUEST")),
                };
                let arity = uint(&mfa[2], "SPAWN_REQUEST")?;
                Control::SpawnRequest {
                    req_id: reference(&f[1], "SPAWN_REQUEST")?,
                    from: pid(&f[2], "SPAWN_REQUEST")?,
                    group_leader: pid(&f[3], "SPAWN_REQUEST")?,
                    module: atom(&mfa[0], "SPAWN_REQUEST")?,
                    function: atom(&mfa[1], "SPAWN_REQUEST")?,
                    arity: u32::try_from(arity)
                        .map_err(|_| ControlError::Malformed("SPAWN_REQUEST"))?,
                    opts,
                    args: payload("SPAWN_REQUEST")?,
                }
            }
            op::SPAWN_REPLY | op::SPAWN_REPLY_TT => {
                let tt = code == op::SPAWN_REPLY_TT;
                let mut f = fields(ctl, if tt { 6 } else { 5 }, "SPAWN_REPLY")?;
                if tt {
                    token = f.pop();
                }
                let flags = uint(&f[3], "SPAWN_REPLY")?;
                Control::SpawnReply {
                    req_id: reference(&f[1], "SPAWN_REPLY")?,
                    to: pid(&f[2], "SPAWN_REPLY")?,
                    flags: u32::try_from(flags)
                        .map_err(|_| ControlError::Malformed("SPAWN_REPLY"))?,
                    result: f[4].clone(),
                }
            }
            op::ALIAS_SEND | op::ALIAS_SEND_TT => {
                let tt = code == op::ALIAS_SEND_TT;
                let mut f = fields(ctl, if tt { 4 } else { 3 }, "ALIAS_SEND")?;
                if tt {
                    token = f.pop();
                }
                Control::AliasSend {
                    from: pid(&f[1], "ALIAS_SEND")?,
                    alias: reference(&f[2], "ALIAS_SEND")?,
                    message: payload("ALIAS_SEND")?,
                }
            }
            _ => return Err(ControlError::UnknownOp(ctl)),
        };
        Ok(DistMessage { control, token })
    }

    /// Appends the frame body (112, control term, payload) to `out`. Into a [`etf::Segments`], large shared binaries stay references (written from
    /// their own buffers); into a `Vec<u8>`, everything is copied.
    pub fn encode_into<S: etf::Sink>(&self, out: &mut S, style: Style) -> Result<(), EncodeError> {
        let tt = self.token.is_some();
        if tt
            && matches!(
                self.control,
                Control::Link { .. }
                    | Control::Unlink { .. }
                    | Control::GroupLeader { .. }
                    | Control::UnlinkId { .. }
                    | Control::UnlinkIdAck { .. }
                    | Control::MonitorP { .. }
                    | Control::DemonitorP { .. }
                    | Control::MonitorPExit { .. }
            )
        {
            return Err(EncodeError::NoTraceForm);
        }
        let int = Term::Int;
        let empty = || Term::atom("");
        let (code, mut elems, payload): (i64, Vec<Term>, Option<&Term>) = match &self.control {
            Control::Link { from, to } => {
                (op::LINK, vec![from.clone().into(), to.clone().into()], None)
            }
            Control::Unlink { from, to } => (
                op::UNLINK,
                vec![from.clone().into(), to.clone().into()],
                None,
            ),
            Control::GroupLeader { from, to } => (
                op::GROUP_LEADER,
                vec![from.clone().into(), to.clone().into()],
                None,
            ),
            Control::Send { to, message } => (
                if tt { op::SEND_TT } else { op::SEND },
                vec![empty(), to.clone().into()],
                Some(message),
            ),
            Control::SendSender { from, to, message } => (
                if tt {
                    op::SEND_SENDER_TT
                } else {
                    op::SEND_SENDER
                },
                vec![from.clone().into(), to.clone().into()],
                Some(message),
            ),
            Control::RegSend {
                from,
                to_name,
                message,
            } => (
                if tt { op::REG_SEND_TT } else { op::REG_SEND },
                vec![from.clone().into(), empty(), to_name.clone().into()],
                Some(message),
            ),
            Control::Exit { from, to, reason } | Control::Exit2 { from, to, reason } => {
                let exit2 = matches!(self.control, Control::Exit2 { .. });
                let base = vec![from.clone().into(), to.clone().into()];
                if style.exit_payload {
                    let code = match (exit2, tt) {
                        (false, false) => op::PAYLOAD_EXIT,
                        (false, true) => op::PAYLOAD_EXIT_TT,
                        (true, false) => op::PAYLOAD_EXIT2,
                        (true, true) => op::PAYLOAD_EXIT2_TT,
                    };
                    (code, base, Some(reason))
                } else {
                    let code = match (exit2, tt) {
                        (false, false) => op::EXIT,
                        (false, true) => op::EXIT_TT,
                        (true, false) => op::EXIT2,
                        (true, true) => op::EXIT2_TT,
                    };
                    // The reason comes after the token in the old form.
                    let mut e = base;
                    if let Some(t) = &self.token {
                        e.push(t.clone());
                    }
                    e.push(reason.clone());
                    return finish(out, code, e, None);
                }
            }
            Control::UnlinkId { id, from, to } => (
                op::UNLINK_ID,
                vec![Term::int(*id), from.clone().into(), to.clone().into()],
                None,
            ),
            Control::UnlinkIdAck { id, from, to } => (
                op::UNLINK_ID_ACK,
                vec![Term::int(*id), from.clone().into(), to.clone().into()],
                None,
            ),
            Control::MonitorP {
                from,
                to,
                reference,
            } => (
                op::MONITOR_P,
                vec![from.clone().into(), to.to_term(), reference.clone().into()],
                None,
            ),
            Control::DemonitorP {
                from,
                to,
                reference,
            } => (
                op::DEMONITOR_P,
                vec![from.clone().into(), to.to_term(), reference.clone().into()],
                None,
            ),
            Control::MonitorPExit {
                from,
                to,
                reference,
                reason,
            } => {
                let base = vec![from.to_term(), to.clone().into(), reference.clone().into()];
                if style.exit_payload {
                    (op::PAYLOAD_MONITOR_P_EXIT, base, Some(reason))
                } else {
                    let mut e = base;
                    e.push(reason.clone());
                    (op::MONITOR_P_EXIT, e, None)
                }
            }
            Control::SpawnRequest {
                req_id,
                from,
                group_leader,
                module,
                function,
                arity,
                opts,
                args,
            } => (
                if tt {
                    op::SPAWN_REQUEST_TT
                } else {
                    op::SPAWN_REQUEST
                },
                vec![
                    req_id.clone().into(),
                    from.clone().into(),
                    group_leader.clone().into(),
                    Term::tuple(vec![
                        module.clone().into(),
                        function.clone().into(),
                        int(i64::from(*arity)),
                    ]),
                    opts.clone(),
                ],
                Some(args),
            ),
            Control::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => (
                if tt {
                    op::SPAWN_REPLY_TT
                } else {
                    op::SPAWN_REPLY
                },
                vec![
                    req_id.clone().into(),
                    to.clone().into(),
                    int(i64::from(*flags)),
                    result.clone(),
                ],
                None,
            ),
            Control::AliasSend {
                from,
                alias,
                message,
            } => (
                if tt {
                    op::ALIAS_SEND_TT
                } else {
                    op::ALIAS_SEND
                },
                vec![from.clone().into(), alias.clone().into()],
                Some(message),
            ),
        };
        if let Some(t) = &self.token {
            elems.push(t.clone());
        }
        finish(out, code, elems, payload)
    }

    /// The frame body as a new buffer.
    pub fn encode(&self, style: Style) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out, style)?;
        Ok(out)
    }
}

fn finish<S: etf::Sink>(
    out: &mut S,
    code: i64,
    elems: Vec<Term>,
    payload: Option<&Term>,
) -> Result<(), EncodeError> {
    out.push(PASS_THROUGH);
    let mut tuple = Vec::with_capacity(elems.len() + 1);
    tuple.push(Term::Int(code));
    tuple.extend(elems);
    etf::encode_into(out, &Term::Tuple(tuple))?;
    if let Some(p) = payload {
        etf::encode_into(out, p)?;
    }
    Ok(())
}
