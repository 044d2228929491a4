//! EPMD's wire format (erts/doc erl_dist_protocol, "EPMD Protocol").
//!
//! Every request is a 2-byte length and a body whose first byte is the request code.
//! Replies have no length prefix; their shape depends on the request.

use std::io;

/// ALIVE2_REQ: register a node.
pub const ALIVE2_REQ: u8 = 120;
/// ALIVE2_RESP: registration result with a 16-bit creation (old nodes).
pub const ALIVE2_RESP: u8 = 121;
/// ALIVE2_X_RESP: registration result with a 32-bit creation.
pub const ALIVE2_X_RESP: u8 = 118;
/// PORT_PLEASE2_REQ: look a node up.
pub const PORT_PLEASE2_REQ: u8 = 122;
/// PORT2_RESP: look-up result.
pub const PORT2_RESP: u8 = 119;
/// NAMES_REQ: list registered nodes.
pub const NAMES_REQ: u8 = 110;
/// DUMP_REQ: list nodes with details (debugging).
pub const DUMP_REQ: u8 = 100;
/// KILL_REQ: stop EPMD (refused while nodes are registered).
pub const KILL_REQ: u8 = 107;
/// STOP_REQ: unregister a node by name (refused, as by erl's epmd without -relaxed_command_check).
pub const STOP_REQ: u8 = 115;

/// Node type of a normal (visible) node.
pub const NODE_TYPE_NORMAL: u8 = 77;
/// Node type of a hidden node.
pub const NODE_TYPE_HIDDEN: u8 = 72;
/// Protocol: TCP/IPv4.
pub const PROTOCOL_TCP: u8 = 0;
/// Distribution protocol version we speak (lowest and highest).
pub const DIST_VERSION: u16 = 6;

/// A registered node as EPMD knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The alive name (the part of the node name before `@`).
    pub name: String,
    /// The node's distribution port.
    pub port: u16,
    /// [`NODE_TYPE_NORMAL`] or [`NODE_TYPE_HIDDEN`].
    pub node_type: u8,
    /// [`PROTOCOL_TCP`].
    pub protocol: u8,
    /// Highest distribution version.
    pub highest_version: u16,
    /// Lowest distribution version.
    pub lowest_version: u16,
    /// Extra bytes the node registered with.
    pub extra: Vec<u8>,
}

impl NodeEntry {
    /// The fields ALIVE2_REQ and PORT2_RESP share, after their first byte(s).
    pub(crate) fn encode_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.node_type);
        out.push(self.protocol);
        out.extend_from_slice(&self.highest_version.to_be_bytes());
        out.extend_from_slice(&self.lowest_version.to_be_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.extra.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.extra);
    }

    /// Parses the shared fields; `None` when the bytes are short or inconsistent.
    pub(crate) fn decode_fields(b: &[u8]) -> Option<NodeEntry> {
        let port = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
        let node_type = *b.get(2)?;
        let protocol = *b.get(3)?;
        let highest_version = u16::from_be_bytes([*b.get(4)?, *b.get(5)?]);
        let lowest_version = u16::from_be_bytes([*b.get(6)?, *b.get(7)?]);
        let nlen = usize::from(u16::from_be_bytes([*b.get(8)?, *b.get(9)?]));
        let name = b.get(10..10 + nlen)?;
        let rest = &b[10 + nlen..];
        let elen = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        let extra = rest.get(2..2 + elen)?.to_vec();
        Some(NodeEntry {
            name: String::from_utf8(name.to_vec()).ok()?,
            port,
            node_type,
            protocol,
            highest_version,
            lowest_version,
            extra,
        })
    }
}

/// A request with its 2-byte length.
pub(crate) fn request(body: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "EPMD request too long"))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    Ok(out)
}

/// The alive part of `name@host` (EPMD registers and looks up that part).
pub fn alive_name(node: &str) -> &str {
    node.split_once('@').map_or(node, |(alive, _)| alive)
}
