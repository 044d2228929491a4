//! Blocking EPMD client: register, look up, list.
//!
//! Registration keeps its socket open: EPMD forgets a node when that socket closes, so
//! [`Registration`] must live as long as the node is reachable (dropping it
//! unregisters). Look-ups and listings use a fresh connection each, closed by EPMD.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::proto::*;

/// How long an EPMD request may take before it is abandoned. EPMD answers from memory
/// on the same host; seconds mean it is hung.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The EPMD port: `ERL_EPMD_PORT` when set (as erl reads it), else 4369.
pub fn epmd_port() -> u16 {
    std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(4369)
}

fn connect(epmd: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&epmd, REQUEST_TIMEOUT)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("EPMD: {msg}"))
}

/// A node's registration; dropping it (closing the socket) unregisters the node.
#[derive(Debug)]
pub struct Registration {
    stream: TcpStream,
    creation: u32,
}

impl Registration {
    /// The creation EPMD assigned (the node's incarnation number).
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Blocks until EPMD closes the registration (it stopped or died). Used by a
    /// driver to notice and re-register.
    pub fn wait_closed(&self) {
        let mut s = &self.stream;
        let mut buf = [0u8; 64];
        // Registration is silent after the reply; any read return means EOF or error
        // (or, harmlessly, stray bytes, which are read past).
        let _ = s.set_read_timeout(None);
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    /// Closes the registration now.
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Registers `alive` (the part before `@`) with the distribution `port`.
pub fn register(
    epmd: SocketAddr,
    alive: &str,
    port: u16,
    hidden: bool,
) -> io::Result<Registration> {
    let entry = NodeEntry {
        name: alive.to_owned(),
        port,
        node_type: if hidden {
            NODE_TYPE_HIDDEN
        } else {
            NODE_TYPE_NORMAL
        },
        protocol: PROTOCOL_TCP,
        highest_version: DIST_VERSION,
        lowest_version: DIST_VERSION,
        extra: Vec::new(),
    };
    let mut body = vec![ALIVE2_REQ];
    entry.encode_fields(&mut body);
    let mut s = connect(epmd)?;
    s.write_all(&request(&body)?)?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    let creation = match head {
        [ALIVE2_X_RESP, 0] => {
            let mut c = [0u8; 4];
            s.read_exact(&mut c)?;
            u32::from_be_bytes(c)
        }
        [ALIVE2_RESP, 0] => {
            let mut c = [0u8; 2];
            s.read_exact(&mut c)?;
            u32::from(u16::from_be_bytes(c))
        }
        [ALIVE2_X_RESP | ALIVE2_RESP, _] => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("EPMD refused to register {alive}: the name is taken by a running node"),
            ))
        }
        _ => return Err(bad("unexpected reply to ALIVE2_REQ")),
    };
    Ok(Registration {
        stream: s,
        creation,
    })
}

/// Looks up `alive` (the part before `@`); `None` when it is not registered.
pub fn port_please(epmd: SocketAddr, alive: &str) -> io::Result<Option<NodeEntry>> {
    let mut body = vec![PORT_PLEASE2_REQ];
    body.extend_from_slice(alive.as_bytes());
    let mut s = connect(epmd)?;
    s.write_all(&request(&body)?)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    match reply.as_slice() {
        [PORT2_RESP, 0, rest @ ..] => NodeEntry::decode_fields(rest)
            .map(Some)
            .ok_or_else(|| bad("malformed PORT2_RESP")),
        [PORT2_RESP, _, ..] => Ok(None),
        _ => Err(bad("unexpected reply to PORT_PLEASE2_REQ")),
    }
}

/// Lists registered nodes as `(alive name, port)`, parsed from NAMES_REQ's text.
pub fn names(epmd: SocketAddr) -> io::Result<Vec<(String, u16)>> {
    let mut s = connect(epmd)?;
    s.write_all(&request(&[NAMES_REQ])?)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    if reply.len() < 4 {
        return Err(bad("short NAMES reply"));
    }
    let text = String::from_utf8_lossy(&reply[4..]);
    Ok(text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("name ")?;
            let (name, port) = rest.rsplit_once(" at port ")?;
            Some((name.to_owned(), port.trim().parse().ok()?))
        })
        .collect())
}
