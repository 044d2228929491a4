//! Socket options of the data path: packet framing, active mode, limits.
//!
//! Invariants: every value here has been validated (a bad one is an [`IoError::Einval`]
//! at `setopts`/`listen`/`connect`, never a panic later), and no option can make the
//! reactor allocate more than [`MAX_PACKET_SIZE`] bytes for one frame.

use super::error::IoError;

/// gen_tcp's `{packet, P}`: how the byte stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// No framing: whatever one read returned (or `recv(n)`'s exact n bytes).
    Raw,
    /// A big-endian length header of 1, 2 or 4 bytes before each frame; the header is
    /// stripped on receive and added on send.
    Len(u8),
    /// Frames end with `\n` (kept in the frame, as Erlang does).
    Line,
}

impl Packet {
    /// `1`, `2`, `4` as gen_tcp spells them; anything else is einval.
    pub fn length_prefixed(bytes: u32) -> Result<Packet, IoError> {
        match bytes {
            0 => Ok(Packet::Raw),
            1 | 2 | 4 => Ok(Packet::Len(bytes as u8)),
            _ => Err(IoError::Einval),
        }
    }

    /// Largest body a header of this size can announce.
    pub(crate) fn header_max(self) -> usize {
        match self {
            Packet::Len(1) => 0xff,
            Packet::Len(2) => 0xffff,
            _ => u32::MAX as usize,
        }
    }
}

/// The largest frame (or line, or `recv(n)`) any socket may ask for: 64 MiB, the
/// ceiling inet_drv puts on `packet_size`. A header announcing more is `emsgsize`
/// before a single byte of the body is buffered.
pub const MAX_PACKET_SIZE: usize = 64 << 20;

/// gen_tcp's `{active, A}` as passed to `setopts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveOpt {
    /// Passive: data is read only by `recv`.
    False,
    /// Every frame is delivered as a message.
    True,
    /// One frame is delivered, then the socket is passive again.
    Once,
    /// Added to the socket's count (inet:setopts' `{active, N}`, -32768..=32767).
    N(i32),
}

/// The range inet accepts for `{active, N}` and for the resulting count.
pub(super) const ACTIVE_N_MIN: i32 = -32768;
pub(super) const ACTIVE_N_MAX: i32 = 32767;

impl ActiveOpt {
    /// Checks the range of `N`; `einval` outside -32768..=32767.
    pub fn validate(self) -> Result<ActiveOpt, IoError> {
        match self {
            ActiveOpt::N(n) if !(ACTIVE_N_MIN..=ACTIVE_N_MAX).contains(&n) => Err(IoError::Einval),
            a => Ok(a),
        }
    }
}

/// Send-queue watermarks (inet's `high_watermark` / `low_watermark`): a `send` that
/// leaves more than `high` bytes queued tells its caller to suspend; it is woken
/// (`IoEvent::SendReady`) when the queue drains to `low` or less. inet's defaults.
pub(super) const HIGH_WATERMARK: usize = 8 * 1024;
pub(super) const LOW_WATERMARK: usize = 4 * 1024;

/// Options of one connected socket's data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOpts {
    /// How the byte stream is cut into messages.
    pub packet: Packet,
    /// Largest frame body (or line) accepted; 0 means [`MAX_PACKET_SIZE`].
    pub packet_size: usize,
    /// What is delivered without a `recv`.
    pub active: ActiveOpt,
    /// `TCP_NODELAY` (on by default: echo-style traffic wants no Nagle delay).
    pub nodelay: bool,
    /// Queued bytes above which `send` tells its caller to suspend.
    pub high_watermark: usize,
    /// Queued bytes at or below which a suspended sender is resumed.
    pub low_watermark: usize,
}

impl Default for SocketOpts {
    /// gen_tcp's defaults except `active`: passive, so nothing is read before the
    /// owner asks (the issue's `tcp.listen(..., active=False)`).
    fn default() -> Self {
        SocketOpts {
            packet: Packet::Raw,
            packet_size: 0,
            active: ActiveOpt::False,
            nodelay: true,
            high_watermark: HIGH_WATERMARK,
            low_watermark: LOW_WATERMARK,
        }
    }
}

impl SocketOpts {
    /// The effective frame limit: `packet_size` (0 = unlimited in Erlang) capped at
    /// [`MAX_PACKET_SIZE`].
    pub fn frame_limit(&self) -> usize {
        match self.packet_size {
            0 => MAX_PACKET_SIZE,
            n => n.min(MAX_PACKET_SIZE),
        }
    }

    /// Checks every value (`einval` for a bad one).
    pub fn validate(self) -> Result<SocketOpts, IoError> {
        self.active.validate()?;
        if let Packet::Len(n) = self.packet {
            Packet::length_prefixed(u32::from(n))?;
        }
        if self.packet_size > MAX_PACKET_SIZE || self.low_watermark > self.high_watermark {
            return Err(IoError::Einval);
        }
        Ok(self)
    }
}

/// A partial `setopts`: only the fields given change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOpts {
    /// New framing.
    pub packet: Option<Packet>,
    /// New frame limit.
    pub packet_size: Option<usize>,
    /// New active mode (`N` adds to the count).
    pub active: Option<ActiveOpt>,
    /// New `TCP_NODELAY`.
    pub nodelay: Option<bool>,
}

impl SetOpts {
    /// Only `active` changes.
    pub fn active(a: ActiveOpt) -> SetOpts {
        SetOpts {
            active: Some(a),
            ..SetOpts::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_einval() {
        assert_eq!(Packet::length_prefixed(3), Err(IoError::Einval));
        assert_eq!(Packet::length_prefixed(4), Ok(Packet::Len(4)));
        assert_eq!(ActiveOpt::N(40_000).validate(), Err(IoError::Einval));
        assert_eq!(ActiveOpt::N(-32768).validate(), Ok(ActiveOpt::N(-32768)));
        let big = SocketOpts {
            packet_size: MAX_PACKET_SIZE + 1,
            ..SocketOpts::default()
        };
        assert_eq!(big.validate(), Err(IoError::Einval));
        assert_eq!(SocketOpts::default().frame_limit(), MAX_PACKET_SIZE);
    }
}
