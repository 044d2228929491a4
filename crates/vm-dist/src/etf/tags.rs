//! Tag bytes of the external term format (erl_ext_dist, external.h).

/// A compressed term: 4-byte uncompressed size, then a zlib stream.
pub const COMPRESSED: u8 = 80;
/// Atom-cache reference (only with the distribution header's atom cache).
pub const ATOM_CACHE_REF: u8 = 82;
/// A term with a local (node-internal) encoding; never valid from a peer.
pub const LOCAL_EXT: u8 = 121;
/// 8-byte IEEE float.
pub const NEW_FLOAT_EXT: u8 = 70;
/// Bitstring: 4-byte length, bits used in the last byte, data.
pub const BIT_BINARY_EXT: u8 = 77;
/// Pid with 32-bit creation.
pub const NEW_PID_EXT: u8 = 88;
/// Port with 32-bit number and creation.
pub const NEW_PORT_EXT: u8 = 89;
/// Reference with 32-bit creation.
pub const NEWER_REFERENCE_EXT: u8 = 90;
/// Integer 0..=255.
pub const SMALL_INTEGER_EXT: u8 = 97;
/// 32-bit signed integer.
pub const INTEGER_EXT: u8 = 98;
/// Float as a 31-byte "%.20e" string (decoded only).
pub const FLOAT_EXT: u8 = 99;
/// Latin-1 atom, 2-byte length (decoded only).
pub const ATOM_EXT: u8 = 100;
/// Old reference with one word and 8-bit creation (decoded only).
pub const REFERENCE_EXT: u8 = 101;
/// Old port with 8-bit creation (decoded only).
pub const PORT_EXT: u8 = 102;
/// Old pid with 8-bit creation (decoded only).
pub const PID_EXT: u8 = 103;
/// Tuple of arity up to 255.
pub const SMALL_TUPLE_EXT: u8 = 104;
/// Tuple with a 4-byte arity.
pub const LARGE_TUPLE_EXT: u8 = 105;
/// The empty list.
pub const NIL_EXT: u8 = 106;
/// A list of up to 65535 bytes.
pub const STRING_EXT: u8 = 107;
/// A list: 4-byte length, elements, tail.
pub const LIST_EXT: u8 = 108;
/// A binary: 4-byte length, data.
pub const BINARY_EXT: u8 = 109;
/// Bignum with up to 255 bytes.
pub const SMALL_BIG_EXT: u8 = 110;
/// Bignum with a 4-byte byte count.
pub const LARGE_BIG_EXT: u8 = 111;
/// A closure.
pub const NEW_FUN_EXT: u8 = 112;
/// `fun M:F/A`.
pub const EXPORT_EXT: u8 = 113;
/// Old reference with 8-bit creation (decoded only).
pub const NEW_REFERENCE_EXT: u8 = 114;
/// Latin-1 atom, 1-byte length (decoded only).
pub const SMALL_ATOM_EXT: u8 = 115;
/// A map: 4-byte pair count, keys and values alternating.
pub const MAP_EXT: u8 = 116;
/// Old closure format, removed in OTP 23 (refused).
pub const FUN_EXT: u8 = 117;
/// UTF-8 atom, 2-byte length.
pub const ATOM_UTF8_EXT: u8 = 118;
/// UTF-8 atom, 1-byte length.
pub const SMALL_ATOM_UTF8_EXT: u8 = 119;
/// Port with 64-bit number.
pub const V4_PORT_EXT: u8 = 120;
