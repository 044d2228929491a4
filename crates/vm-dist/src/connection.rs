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
//! * A big frame's binaries are not copied out of it: the input buffer that holds
//!   the frame becomes their shared buffer (see [`Connection::next`]), and the
//!   connection reads on into a new one. It is shared only while the frame is at least
//!   half of it, so a binary never keeps alive more than twice the frame.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::atoms::{AtomBudget, AtomInterner, DEFAULT_ATOM_BUDGET};
use crate::control::{ControlError, DistMessage, Style};
use crate::etf::{DecodeOptions, EncodeError, SPLICE_MIN};
use crate::handshake::PeerInfo;
use crate::term::SharedBuf;

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
    input: InBuf,
    last_read: Instant,
    last_write: Instant,
    failed: bool,
}

impl<I: AtomInterner> fmt::Debug for Connection<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer.name)
            .field("buffered", &self.input.avail().len())
            .field("failed", &self.failed)
            .finish()
    }
}

/// A connection's input bytes: `data[start..end]` are received and not yet consumed.
///
/// `data` stays initialized up to its length, so a reader reads the socket straight
/// into [`InBuf::spare`] (no copy through a buffer of its own, which was a third of a
/// bulk transfer's cost) without zeroing it again for each read.
#[derive(Debug, Default)]
pub struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The size of the incomplete frame at `start` (length word included), once its
    /// length is known: a read asks for all of it at once.
    want: usize,
}

/// Input buffer a connection keeps when it is empty: a burst's bigger buffer (a
/// 100 MB binary's) goes back to the allocator.
const INPUT_RETAIN: usize = 4 * 1024 * 1024;

/// Most room made ahead for the rest of an incomplete frame: a big frame is read in
/// few calls, but a peer that announces a huge frame and sends nothing more makes the
/// buffer grow only as its bytes really arrive (past this, by doubling).
const FRAME_AHEAD_MAX: usize = 8 * 1024 * 1024;

impl InBuf {
    /// The bytes received and not yet consumed.
    pub fn avail(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.want = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for at least `min` more bytes, and for the rest of the incomplete frame:
    /// write into it, then call [`InBuf::filled`] with the count.
    ///
    /// While a big frame (at least [`SPLICE_MIN`]) is incomplete, the room ends where
    /// it ends (or `min` bytes on, if further): a read then stops at the frame's end,
    /// so the buffer can be given to the frame's binaries whole, with no bytes of the
    /// next frame to move out of it.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > INPUT_RETAIN {
                self.data = Vec::new();
            }
        }
        let rest = self.want.saturating_sub(self.end - self.start);
        let need = min.max(rest.min(FRAME_AHEAD_MAX));
        if self.data.len() - self.end < need {
            // Move the incomplete frame to the front (consumed bytes are dropped),
            // then grow if that is not room enough (doubling: a frame arriving in
            // pieces is not copied once per piece).
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            let size = self.end + need;
            if self.data.len() < size {
                self.data.resize(size.max(self.data.len() * 2), 0);
            }
        }
        let room = if self.want >= SPLICE_MIN && rest > 0 {
            (self.end + rest.max(min)).min(self.data.len())
        } else {
            self.data.len()
        };
        &mut self.data[self.end..room]
    }

    /// `n` bytes were written at the front of [`InBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
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
            input: InBuf::default(),
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
        self.input.spare(data.len())[..data.len()].copy_from_slice(data);
        self.input.filled(data.len());
    }

    /// Lends the input buffer out, so that a reader can read the socket straight into
    /// it ([`InBuf::spare`]) without holding the connection; give it back with
    /// [`Connection::restore_input`] before the next [`Connection::next`] (which sees
    /// no bytes meanwhile).
    pub fn take_input(&mut self) -> InBuf {
        std::mem::take(&mut self.input)
    }

    /// Takes back the buffer [`Connection::take_input`] lent, with `fresh` bytes read
    /// into it at `now`.
    pub fn restore_input(&mut self, input: InBuf, fresh: usize, now: Instant) {
        if fresh > 0 {
            self.last_read = now;
        }
        self.input = input;
    }

    /// The next complete frame's meaning, `Ok(None)` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Incoming>, ConnError> {
        if self.failed {
            return Err(ConnError::Failed);
        }
        let avail = self.input.avail();
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
            // Nothing is reserved on the length's word: the buffer grows as bytes
            // arrive, so memory follows what the peer really sent.
            self.input.want = 4 + len;
            return Ok(None);
        }
        if len == 0 {
            self.input.consume(4);
            return Ok(Some(Incoming::Tick));
        }
        let result = if len >= SPLICE_MIN && 2 * (4 + len) >= self.input.data.capacity() {
            self.decode_shared(len)
        } else {
            let r = DistMessage::decode(&avail[4..4 + len], &self.cfg.decode, &mut self.atoms);
            self.input.consume(4 + len);
            r
        };
        match result {
            Ok(m) => Ok(Some(Incoming::Message(m))),
            Err(e) => {
                self.failed = true;
                Err(ConnError::Control(e))
            }
        }
    }

    /// Decodes the complete frame of `len` bytes at the input's start with the input
    /// buffer as its binaries' shared buffer, and consumes it. The buffer comes back
    /// when no binary kept it; otherwise the input goes on in a new buffer of the same
    /// size (the next frame of a bulk stream is likely as big), with the bytes after
    /// the frame moved there (none, usually: [`InBuf::spare`] stops a read at a big
    /// frame's end).
    fn decode_shared(&mut self, len: usize) -> Result<DistMessage, ControlError> {
        let data = Arc::new(std::mem::take(&mut self.input.data));
        let (start, end) = (self.input.start, self.input.end);
        let frame_end = start + 4 + len;
        let result = {
            let share: SharedBuf = data.clone();
            DistMessage::decode_shared(
                &data[start + 4..frame_end],
                &self.cfg.decode,
                &mut self.atoms,
                Some(&share),
            )
        };
        match Arc::try_unwrap(data) {
            Ok(data) => {
                self.input.data = data;
                self.input.consume(4 + len);
            }
            Err(shared) => {
                let tail = &shared[frame_end..end];
                let mut fresh = vec![0u8; shared.len().max(tail.len())];
                fresh[..tail.len()].copy_from_slice(tail);
                self.input = InBuf {
                    data: fresh,
                    start: 0,
                    end: tail.len(),
                    want: 0,
                };
            }
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atoms::TrustAll;
    use crate::control::Control;
    use crate::flags;
    use crate::term::{Atom, Pid, Term};

    fn conn(now: Instant) -> Connection<TrustAll> {
        let peer = PeerInfo {
            name: "b@h".into(),
            flags: flags::ours(false),
            creation: 1,
        };
        Connection::new(peer, ConnConfig::default(), TrustAll, now)
    }

    fn send(i: u32, message: Term) -> DistMessage {
        Control::Send {
            to: Pid {
                node: Atom::new("a@h"),
                id: i,
                serial: 0,
                creation: 1,
            },
            message,
        }
        .into()
    }

    /// Frames read in pieces of every size straight into the lent buffer come out
    /// whole and in order, ticks included, and a big frame's buffer is given back once
    /// it is consumed.
    #[test]
    fn reads_into_the_lent_buffer_keep_frames_whole_and_in_order() {
        let now = Instant::now();
        let mut tx = conn(now);
        let mut rx = conn(now);
        let sizes = [0usize, 3, 300_000, 10, 9 * 1024 * 1024, 1, 70_000, 2];
        let mut wire = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
            tx.frame(&send(i as u32, Term::binary(bytes)), &mut wire, now)
                .expect("frame");
            wire.extend_from_slice(&TICK);
        }
        let mut got = Vec::new();
        let mut ticks = 0;
        let mut rest = wire.as_slice();
        let mut step = 1usize;
        let mut peak = 0;
        while !rest.is_empty() {
            let mut input = rx.take_input();
            let room = input.spare(64);
            step = (step * 31 + 17) % 200_000 + 1;
            let k = step.min(rest.len()).min(room.len());
            room[..k].copy_from_slice(&rest[..k]);
            input.filled(k);
            peak = peak.max(input.data.len());
            rx.restore_input(input, k, now);
            rest = &rest[k..];
            while let Some(inc) = rx.next().expect("valid frames") {
                match inc {
                    Incoming::Tick => ticks += 1,
                    Incoming::Message(m) => got.push(m),
                }
            }
        }
        assert_eq!(ticks, sizes.len());
        assert_eq!(got.len(), sizes.len());
        for (i, (m, &n)) in got.iter().zip(&sizes).enumerate() {
            let expect: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
            match &m.control {
                Control::Send { to, message } => {
                    assert_eq!(to.id, i as u32);
                    assert_eq!(message, &Term::binary(expect), "frame {i}");
                }
                other => panic!("frame {i} became {other:?}"),
            }
        }
        assert!(peak >= 9 * 1024 * 1024, "the big frame was buffered whole");
        let mut input = rx.take_input();
        assert!(input.avail().is_empty());
        input.spare(1);
        assert!(
            input.data.len() <= INPUT_RETAIN,
            "a burst's buffer goes back ({} bytes kept)",
            input.data.len()
        );
    }

    /// A stream of big frames read as a reader does (room as `spare` gives it, which
    /// stops at a big frame's end): each frame's binary is a range of the buffer it
    /// was read into, not a copy, and stays intact while later frames are read into
    /// new buffers; small binaries are copied.
    #[test]
    fn big_binaries_share_the_frame_they_arrived_in() {
        let now = Instant::now();
        let mut tx = conn(now);
        let mut rx = conn(now);
        let sizes = [
            1usize << 20,
            100,
            1 << 20,
            SPLICE_MIN,
            SPLICE_MIN - 1,
            3 << 20,
            1 << 20,
        ];
        let mut wire = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..n).map(|k| (k * 13 + i) as u8).collect();
            tx.frame(&send(i as u32, Term::binary(bytes)), &mut wire, now)
                .expect("frame");
        }
        let mut got = Vec::new();
        let mut rest = wire.as_slice();
        while !rest.is_empty() {
            let mut input = rx.take_input();
            let room = input.spare(256 * 1024);
            let k = room.len().min(rest.len());
            room[..k].copy_from_slice(&rest[..k]);
            input.filled(k);
            rx.restore_input(input, k, now);
            rest = &rest[k..];
            while let Some(inc) = rx.next().expect("valid frames") {
                if let Incoming::Message(m) = inc {
                    got.push(m);
                }
            }
        }
        assert_eq!(got.len(), sizes.len());
        for (i, (m, &n)) in got.iter().zip(&sizes).enumerate() {
            let Control::Send { message, .. } = &m.control else {
                panic!("frame {i} became {m:?}");
            };
            let Term::Binary(b) = message else {
                panic!("frame {i} is not a binary");
            };
            let expect: Vec<u8> = (0..n).map(|k| (k * 13 + i) as u8).collect();
            assert!(b.as_slice() == expect.as_slice(), "frame {i} intact");
            // A 64 KiB frame read into the 1 MiB buffer left by the one before is
            // copied (it would keep 16 times its size alive); the others are read
            // into a buffer they fill at least half of.
            if n >= 1 << 20 {
                assert!(b.is_shared(), "frame {i} ({n} bytes) shared");
            }
            if n < SPLICE_MIN {
                assert!(!b.is_shared(), "frame {i} ({n} bytes) copied");
            }
        }
    }

    /// A peer announcing a huge frame and sending nothing more gets a bounded buffer.
    #[test]
    fn an_announced_frame_reserves_boundedly() {
        let now = Instant::now();
        let mut rx = conn(now);
        rx.receive(&(DEFAULT_MAX_FRAME as u32).to_be_bytes(), now);
        assert!(rx.next().expect("within the bound").is_none());
        let mut input = rx.take_input();
        input.spare(64);
        assert!(input.data.len() <= FRAME_AHEAD_MAX + 1024 * 1024);
    }
}
