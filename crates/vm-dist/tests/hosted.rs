//! Host-run connections (`Host::runs_connections`, what the VM does on its reactor)
//! without a VM: a test host that runs each `ConnIo` from a `poll(2)` loop. No Erlang
//! needed. Checks that the driver starts no reader or writer thread for them, that
//! big messages go out whole and in order through non-blocking writes that the
//! socket only partly takes, and that a peer killed in the middle of a frame closes
//! its connection alone (links get `noconnection`), as with the driver's threads.

mod common;

use common::Stopped;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, unique};
use vm_dist::connection::{ConnConfig, Connection};
use vm_dist::control::{Control, DistMessage};
use vm_dist::cookie::Cookie;
use vm_dist::flags;
use vm_dist::handshake::PeerInfo;
use vm_dist::node::{ConnIo, Delivery, Host, Node, NodeConfig, Readiness};
use vm_dist::{Atom, Pid, Term};

const COOKIE: &str = "hosted_test_cookie";
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs each connection on a thread of its own named `test-conn`, polling its socket
/// for input (and every 2 ms, for what a full socket left to write).
struct PollHost;

impl Host for PollHost {
    fn deliver(&self, _: &Pid, _: Delivery) -> bool {
        false
    }
    fn whereis(&self, _: &str) -> Option<Pid> {
        None
    }
    fn watch(&self, _: &Pid) -> bool {
        false
    }
    fn runs_connections(&self) -> bool {
        true
    }
    fn run_connection(&self, mut io: ConnIo) -> std::io::Result<()> {
        let sock = io.socket()?;
        std::thread::Builder::new()
            .name("test-conn".into())
            .spawn(move || loop {
                match io.run() {
                    Readiness::Closed => return,
                    Readiness::More => continue,
                    Readiness::Idle => {
                        let mut p = libc::pollfd {
                            fd: sock.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd for the whole call; the descriptor
                        // is `sock`'s, open for the whole call.
                        unsafe { libc::poll(&mut p, 1, 2) };
                    }
                }
            })?;
        Ok(())
    }
}

fn node(epmd: u16) -> Stopped {
    let mut cfg = NodeConfig::new(&unique("hosted"));
    cfg.cookie = Some(Cookie::new(COOKIE));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = epmd;
    cfg.conn = ConnConfig {
        max_frame: 64 << 20,
        ..ConnConfig::default()
    };
    Stopped(Node::start_hosted(cfg, Some(Arc::new(PollHost))).expect("node starts"))
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn host_run_connections_have_no_threads_and_carry_big_messages_in_order() {
    let port = free_port();
    let a = node(port);
    let b = node(port);
    let c = node(port);
    assert!(a.0.ping(b.0.name(), PATIENCE));
    assert!(a.0.ping(c.0.name(), PATIENCE));
    assert!(b.0.ping(c.0.name(), PATIENCE));
    let names = thread_names();
    assert!(
        !names
            .iter()
            .any(|n| n == "dist-reader" || n == "dist-writer"),
        "{names:?}"
    );
    assert!(names.iter().filter(|n| *n == "test-conn").count() >= 6);

    // 4 MiB messages both ways at once: each write fills the socket, the rest goes
    // out when it drains; order and content hold.
    let ma = a.0.mailbox();
    let mut mb = b.0.mailbox();
    let mut ma2 = a.0.mailbox();
    let mb2 = b.0.mailbox();
    let (to_b, to_a) = (mb.pid().clone(), ma2.pid().clone());
    const N: u8 = 12;
    let big = |i: u8| Term::binary(vec![i; 4 << 20]);
    let t = std::thread::spawn(move || {
        for i in 0..N {
            mb2.send(&to_a, big(i)).unwrap();
        }
        mb2
    });
    for i in 0..N {
        ma.send(&to_b, big(i)).unwrap();
    }
    for i in 0..N {
        assert_eq!(mb.recv_message(PATIENCE), Some(big(i)), "message {i} to b");
    }
    for i in 0..N {
        assert_eq!(ma2.recv_message(PATIENCE), Some(big(i)), "message {i} to a");
    }
    drop(t.join().unwrap());
    // Small messages after the burst still arrive at once.
    ma.send(mb.pid(), Term::atom("after")).unwrap();
    assert_eq!(mb.recv_message(PATIENCE), Some(Term::atom("after")));
}

#[test]
fn a_peer_killed_mid_frame_closes_its_connection_alone() {
    let port = free_port();
    let a = node(port);
    let b = node(port);
    assert!(a.0.ping(b.0.name(), PATIENCE));
    for (round, reset) in [(0, false), (1, true)] {
        let name = format!("killed{round}@localhost");
        let mut mb = a.0.mailbox();
        let mut s = common::handshaken(&a.0, &name, COOKIE);
        let from = Pid {
            node: Atom::new(&name),
            id: 7,
            serial: 0,
            creation: 5,
        };
        let mut tx = Connection::new(
            PeerInfo {
                name: a.0.name().into(),
                flags: flags::ours(false),
                creation: a.0.creation(),
            },
            ConnConfig::default(),
            vm_dist::atoms::TrustAll,
            Instant::now(),
        );
        let mut wire = Vec::new();
        let link: DistMessage = Control::Link {
            from: from.clone(),
            to: mb.pid().clone(),
        }
        .into();
        tx.frame(&link, &mut wire, Instant::now()).unwrap();
        // Half of a 1 MiB frame, then the peer dies.
        wire.extend_from_slice(&(1u32 << 20).to_be_bytes());
        wire.extend_from_slice(&[112; 512 << 10]);
        s.write_all(&wire).unwrap();
        if reset {
            // SO_LINGER 0: the close is a reset, as a killed peer's kernel may send.
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid linger struct of the size passed, on `s`'s open socket.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&l as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0);
        }
        drop(s);
        match mb.recv(PATIENCE) {
            Some(Delivery::Exit {
                from: f, reason, ..
            }) => {
                assert_eq!(f, from);
                assert_eq!(reason, Term::atom("noconnection"));
            }
            other => panic!("round {round}: {other:?}"),
        }
        let deadline = Instant::now() + PATIENCE;
        while a.0.nodes().contains(&name) {
            assert!(Instant::now() < deadline, "{name} still connected");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The other connection never noticed.
        assert_eq!(a.0.nodes(), vec![b.0.name().to_owned()]);
        assert!(a.0.ping(b.0.name(), PATIENCE));
        assert!(b.0.ping(a.0.name(), PATIENCE));
    }
}
