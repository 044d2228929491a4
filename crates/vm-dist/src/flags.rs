//! Distribution capability flags (dist.h) and the set this node advertises.
//!
//! OTP 25 made a set of flags mandatory (DFLAG_DIST_MANDATORY_25), OTP 26 two more
//! (V4_NC, UNLINK_ID); a peer that lacks any of them is refused with a message that
//! names what is missing. A peer may state the OTP 25 set with the single
//! MANDATORY_25_DIGEST bit (16#4000000 in dist.h; the handshake doc's `1 bsl 36` is
//! wrong), which stands for all of them.
//!
//! What we advertise is exactly what this crate implements: the mandatory sets, the
//! digest, PUBLISHED (unless hidden), DIST_MONITOR, DIST_MONITOR_NAME, SEND_SENDER,
//! EXIT_PAYLOAD, SPAWN and ALIAS. Not the atom cache (DIST_HDR_ATOM_CACHE) and not
//! FRAGMENTS: a peer then sends every message as one pass-through frame.

/// The node is visible in `nodes()` (a hidden node leaves this out).
pub const PUBLISHED: u64 = 0x01;
/// The old atom cache.
pub const ATOM_CACHE: u64 = 0x02;
/// Extended (3-word) references.
pub const EXTENDED_REFERENCES: u64 = 0x04;
/// Monitors of remote processes.
pub const DIST_MONITOR: u64 = 0x08;
/// FUN_EXT.
pub const FUN_TAGS: u64 = 0x10;
/// Monitors of remote registered names.
pub const DIST_MONITOR_NAME: u64 = 0x20;
/// Atom cache toward hidden nodes.
pub const HIDDEN_ATOM_CACHE: u64 = 0x40;
/// NEW_FUN_EXT.
pub const NEW_FUN_TAGS: u64 = 0x80;
/// Extended pids and ports.
pub const EXTENDED_PIDS_PORTS: u64 = 0x100;
/// EXPORT_EXT.
pub const EXPORT_PTR_TAG: u64 = 0x200;
/// BIT_BINARY_EXT.
pub const BIT_BINARIES: u64 = 0x400;
/// NEW_FLOAT_EXT.
pub const NEW_FLOATS: u64 = 0x800;
/// Unicode in the io protocol.
pub const UNICODE_IO: u64 = 0x1000;
/// The distribution header's atom cache.
pub const DIST_HDR_ATOM_CACHE: u64 = 0x2000;
/// SMALL_ATOM_EXT.
pub const SMALL_ATOM_TAGS: u64 = 0x4000;
/// UTF-8 atoms.
pub const UTF8_ATOMS: u64 = 0x10000;
/// MAP_EXT.
pub const MAP_TAG: u64 = 0x20000;
/// 32-bit creation.
pub const BIG_CREATION: u64 = 0x40000;
/// SEND_SENDER control messages.
pub const SEND_SENDER: u64 = 0x80000;
/// Large sequential-trace labels.
pub const BIG_SEQTRACE_LABELS: u64 = 0x100000;
/// PAYLOAD_EXIT and friends: exit reasons as a message after the control tuple.
pub const EXIT_PAYLOAD: u64 = 0x400000;
/// Fragmented messages.
pub const FRAGMENTS: u64 = 0x800000;
/// The OTP 23 handshake ('N' send-name, 64-bit flags, creation).
pub const HANDSHAKE_23: u64 = 0x1000000;
/// UNLINK_ID / UNLINK_ID_ACK.
pub const UNLINK_ID: u64 = 0x2000000;
/// Stands for every flag of [`MANDATORY_25`].
pub const MANDATORY_25_DIGEST: u64 = 0x4000000;
/// Multi-send.
pub const MULTISEND: u64 = 0x8000000;
/// SPAWN_REQUEST / SPAWN_REPLY.
pub const SPAWN: u64 = 1 << 32;
/// Dynamic node names.
pub const NAME_ME: u64 = 2 << 32;
/// 64-bit pids and ports (V4_PORT_EXT).
pub const V4_NC: u64 = 4 << 32;
/// ALIAS_SEND and process aliases.
pub const ALIAS: u64 = 8 << 32;

/// Mandatory since OTP 25 (dist.h's DFLAG_DIST_MANDATORY_25).
pub const MANDATORY_25: u64 = EXTENDED_REFERENCES
    | FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | UTF8_ATOMS
    | NEW_FUN_TAGS
    | BIG_CREATION
    | NEW_FLOATS
    | MAP_TAG
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | HANDSHAKE_23;

/// Added to the mandatory set in OTP 26 (DFLAG_DIST_MANDATORY_26).
pub const MANDATORY_26: u64 = V4_NC | UNLINK_ID;

/// Every flag a peer must have.
pub const MANDATORY: u64 = MANDATORY_25 | MANDATORY_26;

/// What this node advertises, `hidden` leaving out PUBLISHED.
pub fn ours(hidden: bool) -> u64 {
    let base = MANDATORY
        | MANDATORY_25_DIGEST
        | DIST_MONITOR
        | DIST_MONITOR_NAME
        | SEND_SENDER
        | EXIT_PAYLOAD
        | SPAWN
        | ALIAS;
    if hidden {
        base
    } else {
        base | PUBLISHED
    }
}

/// A peer's flags with the digest bit expanded into the flags it stands for.
pub fn expand(peer: u64) -> u64 {
    if peer & MANDATORY_25_DIGEST != 0 {
        peer | MANDATORY_25
    } else {
        peer
    }
}

/// The names of the mandatory flags `peer` lacks (after [`expand`]); empty when none.
pub fn missing_mandatory(peer: u64) -> Vec<&'static str> {
    let peer = expand(peer);
    NAMES
        .iter()
        .filter(|(bit, _)| MANDATORY & bit != 0 && peer & bit == 0)
        .map(|(_, name)| *name)
        .collect()
}

const NAMES: &[(u64, &str)] = &[
    (EXTENDED_REFERENCES, "EXTENDED_REFERENCES"),
    (FUN_TAGS, "FUN_TAGS"),
    (EXTENDED_PIDS_PORTS, "EXTENDED_PIDS_PORTS"),
    (UTF8_ATOMS, "UTF8_ATOMS"),
    (NEW_FUN_TAGS, "NEW_FUN_TAGS"),
    (BIG_CREATION, "BIG_CREATION"),
    (NEW_FLOATS, "NEW_FLOATS"),
    (MAP_TAG, "MAP_TAG"),
    (EXPORT_PTR_TAG, "EXPORT_PTR_TAG"),
    (BIT_BINARIES, "BIT_BINARIES"),
    (HANDSHAKE_23, "HANDSHAKE_23"),
    (V4_NC, "V4_NC"),
    (UNLINK_ID, "UNLINK_ID"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_dist_h_value_and_our_set_is_exact() {
        assert_eq!(MANDATORY_25_DIGEST, 0x4000000);
        let f = ours(false);
        assert_eq!(f & MANDATORY, MANDATORY);
        assert_ne!(f & PUBLISHED, 0);
        assert_eq!(ours(true) & PUBLISHED, 0);
        for absent in [
            ATOM_CACHE,
            DIST_HDR_ATOM_CACHE,
            HIDDEN_ATOM_CACHE,
            FRAGMENTS,
            NAME_ME,
        ] {
            assert_eq!(f & absent, 0, "{absent:#x} must not be advertised");
        }
        for present in [
            DIST_MONITOR,
            DIST_MONITOR_NAME,
            SEND_SENDER,
            EXIT_PAYLOAD,
            SPAWN,
            ALIAS,
        ] {
            assert_ne!(f & present, 0);
        }
        assert!(missing_mandatory(f).is_empty());
    }

    #[test]
    fn the_digest_stands_for_the_otp25_set_but_not_the_otp26_additions() {
        assert_eq!(
            missing_mandatory(MANDATORY_25_DIGEST),
            vec!["V4_NC", "UNLINK_ID"]
        );
        assert!(missing_mandatory(MANDATORY_25_DIGEST | MANDATORY_26).is_empty());
        let without_maps = MANDATORY & !MAP_TAG;
        assert_eq!(missing_mandatory(without_maps), vec!["MAP_TAG"]);
    }
}
