//! The active-mode counter of one socket: how many data messages its owner may still
//! be sent before the socket goes passive.
//!
//! Invariants (inet:setopts' documented semantics):
//! - `once` allows one message, then the socket is passive with no notice.
//! - `{active, N}` *adds* N to the count if the socket is already counting, else sets
//!   it; a result above 32767 is einval (nothing changes); a result of 0 or less makes
//!   the socket passive and the owner is sent `tcp_passive`, whether the count ran out
//!   by deliveries or by setopts.
//! - `true` allows every message; `false` none (a pending `recv` is served instead).
//! - The reactor reads from the kernel only while [`ActiveState::may_deliver`] holds
//!   (or a passive `recv` waits): a socket nobody re-arms is not read, which is what
//!   pushes back on the peer.

use super::error::IoError;
use super::options::{ActiveOpt, ACTIVE_N_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Passive,
    Always,
    Once,
    Count(u16),
}

/// What a `set` or a delivery asks the caller to tell the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum Notice {
    None,
    /// Send `('tcp_passive', s)` to the owner.
    Passive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ActiveState {
    mode: Mode,
}

impl ActiveState {
    pub(super) fn passive() -> ActiveState {
        ActiveState {
            mode: Mode::Passive,
        }
    }

    /// Applies `setopts([{active, opt}])`.
    pub(super) fn set(&mut self, opt: ActiveOpt) -> Result<Notice, IoError> {
        let opt = opt.validate()?;
        self.mode = match opt {
            ActiveOpt::False => Mode::Passive,
            ActiveOpt::True => Mode::Always,
            ActiveOpt::Once => Mode::Once,
            ActiveOpt::N(n) => {
                let base = match self.mode {
                    Mode::Count(c) => i32::from(c),
                    _ => 0,
                };
                let count = base + n;
                if count > ACTIVE_N_MAX {
                    return Err(IoError::Einval);
                }
                if count <= 0 {
                    self.mode = Mode::Passive;
                    return Ok(Notice::Passive);
                }
                Mode::Count(count as u16)
            }
        };
        Ok(Notice::None)
    }

    /// Whether a data message may be sent to the owner now.
    pub(super) fn may_deliver(&self) -> bool {
        self.mode != Mode::Passive
    }

    /// Counts one data message sent to the owner.
    pub(super) fn delivered(&mut self) -> Notice {
        match self.mode {
            Mode::Once => {
                self.mode = Mode::Passive;
                Notice::None
            }
            Mode::Count(1) => {
                self.mode = Mode::Passive;
                Notice::Passive
            }
            Mode::Count(c) => {
                self.mode = Mode::Count(c - 1);
                Notice::None
            }
            Mode::Always | Mode::Passive => Notice::None,
        }
    }

    /// The mode as `getopts` would report it.
    pub(super) fn current(&self) -> ActiveOpt {
        match self.mode {
            Mode::Passive => ActiveOpt::False,
            Mode::Always => ActiveOpt::True,
            Mode::Once => ActiveOpt::Once,
            Mode::Count(c) => ActiveOpt::N(i32::from(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers until the state refuses; returns (messages, passive notices).
    fn drain(a: &mut ActiveState) -> (u32, u32) {
        let (mut msgs, mut notices) = (0, 0);
        while a.may_deliver() && msgs < 100_000 {
            msgs += 1;
            if a.delivered() == Notice::Passive {
                notices += 1;
            }
        }
        (msgs, notices)
    }

    #[test]
    fn active_5_delivers_exactly_5_then_one_passive_notice() {
        let mut a = ActiveState::passive();
        assert_eq!(a.set(ActiveOpt::N(5)), Ok(Notice::None));
        assert_eq!(drain(&mut a), (5, 1));
        assert_eq!(a.current(), ActiveOpt::False);
    }

    #[test]
    fn n_accumulates_while_counting_and_resets_otherwise() {
        let mut a = ActiveState::passive();
        assert_eq!(a.set(ActiveOpt::N(3)), Ok(Notice::None));
        assert_eq!(a.set(ActiveOpt::N(4)), Ok(Notice::None));
        assert_eq!(a.current(), ActiveOpt::N(7));
        let _ = a.delivered();
        assert_eq!(a.current(), ActiveOpt::N(6));
        // From `true` a count starts afresh.
        assert_eq!(a.set(ActiveOpt::True), Ok(Notice::None));
        assert_eq!(a.set(ActiveOpt::N(2)), Ok(Notice::None));
        assert_eq!(drain(&mut a), (2, 1));
    }

    #[test]
    fn a_count_set_to_zero_or_below_goes_passive_with_a_notice() {
        let mut a = ActiveState::passive();
        assert_eq!(a.set(ActiveOpt::N(3)), Ok(Notice::None));
        assert_eq!(a.set(ActiveOpt::N(-10)), Ok(Notice::Passive));
        assert!(!a.may_deliver());
        assert_eq!(a.set(ActiveOpt::N(0)), Ok(Notice::Passive));
    }

    #[test]
    fn overflowing_the_count_is_einval_and_changes_nothing() {
        let mut a = ActiveState::passive();
        assert_eq!(a.set(ActiveOpt::N(30_000)), Ok(Notice::None));
        assert_eq!(a.set(ActiveOpt::N(3_000)), Err(IoError::Einval));
        assert_eq!(a.current(), ActiveOpt::N(30_000));
        assert_eq!(a.set(ActiveOpt::N(70_000)), Err(IoError::Einval));
    }

    #[test]
    fn once_true_and_false() {
        let mut a = ActiveState::passive();
        assert!(!a.may_deliver());
        assert_eq!(a.set(ActiveOpt::Once), Ok(Notice::None));
        assert_eq!(drain(&mut a), (1, 0), "once sends no tcp_passive");
        assert_eq!(a.set(ActiveOpt::True), Ok(Notice::None));
        for _ in 0..1000 {
            assert_eq!(a.delivered(), Notice::None);
        }
        assert!(a.may_deliver());
        assert_eq!(a.set(ActiveOpt::False), Ok(Notice::None));
        assert!(!a.may_deliver());
    }
}
