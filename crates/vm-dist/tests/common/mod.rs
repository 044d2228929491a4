//! Helpers for tests against a real Erlang: find `erl`, start nodes that are always
//! stopped, talk to them through a tiny eval loop on their stdin.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

#[path = "../../examples/support/erl.rs"]
mod erl;
pub use erl::Erl;

/// Whether `erl` can be run. Missing `erl` skips the test with a message, unless
/// `VM_DIST_REQUIRE_ERL` is set (scripts/test.sh sets it once it has installed
/// erlang-base), where it fails.
pub fn have_erl() -> bool {
    let ok = Command::new("erl")
        .args(["-noshell", "-eval", "halt()."])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("VM_DIST_REQUIRE_ERL").is_some() {
            panic!("erl is required (VM_DIST_REQUIRE_ERL is set) but cannot be run");
        }
        eprintln!(
            "SKIPPED: erl is not installed (apt-get install erlang-base); real-Erlang test not run"
        );
    }
    ok
}

/// A node that is stopped when the test lets go of it (even when an assertion fails).
pub struct Stopped(pub vm_dist::node::Node);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A node name unique to this test run: `prefix_PID_N@localhost`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}@localhost",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects to `target` and completes a real handshake as `name` (flags of a hidden
/// node, creation 5) with `cookie`: a raw peer for hostile tests.
pub fn handshaken(target: &vm_dist::node::Node, name: &str, cookie: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    use vm_dist::handshake::{Handshake, HandshakeConfig, Progress};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], target.port()));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut hs = Handshake::initiator(
        HandshakeConfig {
            name: name.into(),
            creation: 5,
            flags: vm_dist::flags::ours(true),
            cookie: vm_dist::cookie::Cookie::new(cookie),
        },
        target.name(),
    );
    let mut buf = [0u8; 1024];
    loop {
        let progress = hs.advance().unwrap();
        s.write_all(&hs.take_output()).unwrap();
        match progress {
            Progress::Established(_) => return s,
            // The node may not have noticed yet that our previous connection died.
            Progress::AliveQuery => {
                hs.answer_alive(true).unwrap();
                s.write_all(&hs.take_output()).unwrap();
            }
            Progress::NeedInput => {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed during the handshake");
                hs.receive(&buf[..n]);
            }
            other => panic!("{other:?}"),
        }
    }
}
