//! Errors the VM returns to callers (never panics on bad input).

use std::fmt;

use crate::term::TermError;

/// An error from a VM operation, named after the Erlang error it mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The process table is full (`system_limit`): raise `process_limit` or let
    /// processes exit.
    SystemLimit,
    /// The target process does not exist (`noproc`).
    NoProc,
    /// An argument was invalid (`badarg`), with an explanation.
    BadArg(String),
    /// The VM is shutting down or stopped.
    NotRunning,
    /// A term could not be built.
    Term(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SystemLimit => write!(
                f,
                "system_limit: the process table is full; raise process_limit or let \
                 processes exit"
            ),
            Error::NoProc => write!(f, "noproc: no such process"),
            Error::BadArg(why) => write!(f, "badarg: {why}"),
            Error::NotRunning => write!(f, "the VM is not running (stopped or stopping)"),
            Error::Term(why) => write!(f, "bad term: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<TermError> for Error {
    fn from(e: TermError) -> Self {
        Error::Term(e.to_string())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
