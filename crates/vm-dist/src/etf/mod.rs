//! The external term format (erts/doc erl_ext_dist): [`decode`] and [`encode`].
//!
//! Decoding is defensive: every length on the wire is checked against the bytes that
//! are actually there before anything is allocated (a 4-byte length of 2^32 with ten
//! bytes behind it is an error, not a 4 GB `Vec`); nesting is bounded by
//! [`DecodeOptions::max_depth`]; compressed terms inflate incrementally and never past
//! their declared size nor [`DecodeOptions::max_decompressed`]; every atom passes an
//! [`AtomGate`] (the per-connection flood bound). Anything malformed — an unknown tag,
//! LOCAL_EXT, an atom-cache reference (we never negotiate the cache), a non-finite
//! float, a map with a duplicate key, bytes left over — is a [`DecodeError`]; the
//! decoder never panics (tests/fuzz.rs drives it with random and mutated input).
//!
//! Encoding is canonical as OTP 25/26 encode for distribution (UTF-8 atoms,
//! NEW_FLOAT_EXT, the smallest integer form, STRING_EXT for short lists of bytes,
//! NEW_PID_EXT, NEWER_REFERENCE_EXT, NEW_PORT_EXT or V4_PORT_EXT by size), so a term
//! that came from OTP re-encodes to the same bytes (tests/etf_erl.rs checks this
//! against a real `erl`).

mod decode;
mod encode;
mod segments;
pub mod tags;

pub use decode::{
    decode, decode_prefix, decode_prefix_shared, decode_with, decode_with_shared, DecodeError,
    DecodeOptions, DEFAULT_MAX_DECOMPRESSED, DEFAULT_MAX_DEPTH,
};
pub(crate) use encode::encode_atom_into;
pub use encode::{encode, encode_into, encode_term_into, EncodeError, Sink};
pub use segments::{Mark, Segments, SPLICE_MIN};

/// The version byte every external term starts with.
pub const VERSION: u8 = 131;

/// The longest atom in characters (OTP's MAX_ATOM_CHARACTERS).
pub const MAX_ATOM_CHARS: usize = 255;
