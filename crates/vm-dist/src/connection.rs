//! A connection after the handshake, sans-IO: 4-byte framing, control messages, ticks
//! and the net_ticktime timeout.
//!
//! The driver feeds received bytes ([`Connection::receive`]) and pulls what they hold
//! ([`Connection::next`]): [`Incoming::Tick`] for an empty frame (a keep-alive),
//! [`Incoming::Message`] for a control message. It frames what it sends with
//! [`Connection::frame`] and calls [`Connection::on_timer`] every
//! [`Connection::tick_interval`], which says whether to send a tick (nothing was
//! written for a tick interval) or that the peer is down (nothing was read for
//! net_ticktime), as dist_util's con_loop does with net_kernel's ticks.
//!
//! Invariants:
//!
//! * A length prefix above [`ConnConfig::max_frame`] is an error at once: nothing is
//!   allocated for it. Below the bound, the buffer grows only as bytes really arrive.
//! * Every error ([`ConnError`]) concerns this connection only; the driver closes it
//!   and the node lives on. After an error the connection stays failed.
//! * Atoms decoded from this peer pass its [`AtomBudget`], whose allowance spans the
//!   connection's life.

use std::fmt;
use std::time::{Duration, Instant};

use crate::atoms::{AtomBudget, AtomInterner, DEFAULT_ATOM_BUDGET};
use crate::control::{ControlError, DistMessage, Style};
use crate::etf::{DecodeOptions, EncodeError};
use crate::handshake::PeerInfo;

/// Default net_ticktime, as erl's: 60 seconds.
pub const DEFAULT_NET_TICKTIME: Duration = Duration::from_secs(60);

/// Default bound on one frame: 1 GiB.
///
/// OTP sets no bound, and a peer that knows the cookie is trusted with much more than
/// memory; the bound only stops a corrupt or hostile length prefix from being taken at
/// its word. A message this large would also take seconds on the wire, longer than a
/// short net_ticktime allows.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// Settings of one connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// A peer silent this long is down; ticks go out every quarter of it.
    pub net_ticktime: Duration,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// New atoms this peer may make the node create.
    pub atom_budget: u64,
    /// Limits for decoding terms.
    pub decode: DecodeOptions,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            net_ticktime: DEFAULT_NET_TICKTIME,
            max_frame: DEFAULT_MAX_FRAME,
            atom_budget: DEFAULT_ATOM_BUDGET,
            decode: DecodeOptions::default(),
        }
    }
}

/// What arrived.
#[derive(Clone, Debug, PartialEq)]
// Returned by value and consumed at once; boxing would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum Incoming {
    /// An empty frame: the peer is alive.
    Tick,
    /// A control message.
    Message(DistMessage),
}

/// What the timer asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing.
    None,
    /// Write these bytes (a tick).
    SendTick(Vec<u8>),
    /// Nothing came from the peer for net_ticktime: close, the node is down.
    PeerDown,
}

/// Why the connection must close.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnError {
    /// A length prefix above the bound.
    FrameTooLarge {
        /// The stated length.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// A frame that is not a valid control message (including an atom flood).
    Control(ControlError),
    /// The connection failed earlier.
    Failed,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte bound")
            }
            ConnError::Control(e) => write!(f, "{e}"),
            ConnError::Failed => write!(f, "connection already failed"),
        }
    }
}

impl std::error::Error for ConnError {}

/// One established connection.
pub struct Connection<I: AtomInterner> {
    peer: PeerInfo,
    style: Style,
    cfg: ConnConfig,
    atoms: AtomBudget<I>,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    last_read: Instant,
    last_write: Instant,
    failed: bool,
}

impl<I: AtomInterner> fmt::Debug for Connection<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer.name)
            .field("buffered", &(self.buf.len() - self.start))
            .field("failed", &self.failed)
            .finish()
    }
}

/// The tick frame: a zero length.
pub const TICK: [u8; 4] = [0, 0, 0, 0];

impl<I: AtomInterner> Connection<I> {
    /// A connection to `peer`, established at `now`, decoding atoms into `atoms`.
    pub fn new(peer: PeerInfo, cfg: ConnConfig, atoms: I, now: Instant) -> Self {
        Connection {
            style: Style::for_peer(peer.flags),
            atoms: AtomBudget::new(atoms, cfg.atom_budget),
            peer,
            cfg,
            buf: Vec::new(),
            start: 0,
            last_read: now,
            last_write: now,
            failed: false,
        }
    }

    /// The peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// How frames toward this peer are built.
    pub fn style(&self) -> Style {
        self.style
    }

    /// How often [`Connection::on_timer`] should run: a quarter of net_ticktime.
    pub fn tick_interval(&self) -> Duration {
        self.cfg.net_ticktime / 4
    }

    /// How many new atoms this peer has created so far.
    pub fn atoms_created(&self) -> u64 {
        self.atoms.created()
    }

    /// Bytes read from the socket at `now`.
    pub fn receive(&mut self, data: &[u8], now: Instant) {
        if !data.is_empty() {
            self.last_read = now;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame's meaning, `Ok(None)` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Incoming>, ConnError> {
        if self.failed {
            return Err(ConnError::Failed);
        }
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as u64;
        if len > self.cfg.max_frame as u64 {
            self.failed = true;
            return Err(ConnError::FrameTooLarge {
                len,
                max: self.cfg.max_frame,
            });
        }
        let len = len as usize;
        if avail.len() < 4 + len {
            // Nothing is reserved on the length's word: the buffer grows (doubling) as
            // bytes arrive, so memory follows what the peer really sent.
            return Ok(None);
        }
        let frame_start = self.start + 4;
        self.start = frame_start + len;
        if len == 0 {
            self.compact();
            return Ok(Some(Incoming::Tick));
        }
        let result = DistMessage::decode(
            &self.buf[frame_start..frame_start + len],
            &self.cfg.decode,
            &mut self.atoms,
        );
        self.compact();
        match result {
            Ok(m) => Ok(Some(Incoming::Message(m))),
            Err(e) => {
                self.failed = true;
                Err(ConnError::Control(e))
            }
        }
    }

    /// Drops consumed bytes once they are most of the buffer.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends `msg` as a complete frame (length prefix included) to `out`, noting a
    /// write at `now`.
    pub fn frame(
        &mut self,
        msg: &DistMessage,
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Result<(), EncodeError> {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        if let Err(e) = msg.encode_into(out, self.style) {
            out.truncate(at);
            return Err(e);
        }
        let len = out.len() - at - 4;
        let Ok(len32) = u32::try_from(len) else {
            out.truncate(at);
            return Err(EncodeError::TooLarge("message"));
        };
        out[at..at + 4].copy_from_slice(&len32.to_be_bytes());
        self.last_write = now;
        Ok(())
    }

    /// Notes that bytes were written at `now` outside [`Connection::frame`].
    pub fn wrote(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// Runs the tick logic at `now`.
    pub fn on_timer(&mut self, now: Instant) -> TimerAction {
        if now.saturating_duration_since(self.last_read) >= self.cfg.net_ticktime {
            return TimerAction::PeerDown;
        }
        if now.saturating_duration_since(self.last_write) >= self.tick_interval() {
            self.last_write = now;
            return TimerAction::SendTick(TICK.to_vec());
        }
        TimerAction::None
    }
}
