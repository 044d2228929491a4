//! The built-in EPMD with our client and with raw requests: registration lives exactly
//! as long as its socket, names are unique, old nodes get ALIVE2_RESP, KILL is refused
//! while nodes are registered, bad requests do not disturb it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vm_dist::epmd::{self, EpmdServer};

fn server() -> EpmdServer {
    EpmdServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("server starts")
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn raw(addr: SocketAddr, body: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = (body.len() as u16).to_be_bytes().to_vec();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn registration_lives_as_long_as_its_socket_and_names_are_unique() {
    let srv = server();
    let addr = srv.local_addr();
    let reg = epmd::register(addr, "alpha", 4321, false).unwrap();
    assert_ne!(reg.creation(), 0);
    let entry = epmd::port_please(addr, "alpha").unwrap().unwrap();
    assert_eq!(
        (entry.port, entry.node_type, entry.highest_version),
        (4321, 77, 6)
    );
    assert_eq!(epmd::names(addr).unwrap(), vec![("alpha".to_owned(), 4321)]);
    // The same name again is refused while the first holds it.
    let dup = epmd::register(addr, "alpha", 9999, false);
    assert!(matches!(dup, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse));
    // A hidden node registers with type 72; creations differ.
    let h = epmd::register(addr, "beta", 1234, true).unwrap();
    assert_eq!(
        epmd::port_please(addr, "beta").unwrap().unwrap().node_type,
        72
    );
    assert_ne!(h.creation(), reg.creation());
    assert_eq!(epmd::port_please(addr, "nobody").unwrap(), None);
    // Closing the registration unregisters; the name is free again.
    drop(reg);
    assert!(wait_until(|| epmd::port_please(addr, "alpha")
        .unwrap()
        .is_none()));
    let again = epmd::register(addr, "alpha", 5555, false).unwrap();
    assert_eq!(
        epmd::port_please(addr, "alpha").unwrap().unwrap().port,
        5555
    );
    drop(again);
    drop(h);
}

#[test]
fn old_nodes_get_alive2_resp_and_kill_is_refused_while_nodes_live() {
    let mut srv = server();
    let addr = srv.local_addr();
    // ALIVE2_REQ with versions 5..5: the reply is ALIVE2_RESP with a 16-bit creation.
    let mut body = vec![120, 0x10, 0x00, 77, 0, 0, 5, 0, 5, 0, 3];
    body.extend_from_slice(b"old");
    body.extend_from_slice(&[0, 0]);
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = (body.len() as u16).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..2], &[121, 0]);
    assert!((1..=3).contains(&u16::from_be_bytes([reply[2], reply[3]])));
    // KILL_REQ while "old" is registered: NO.
    assert_eq!(raw(addr, &[107]), b"NO");
    assert!(!srv.is_stopped());
    // NAMES and DUMP list it, after the EPMD port.
    let names = raw(addr, &[110]);
    assert_eq!(&names[..4], &u32::from(addr.port()).to_be_bytes());
    assert!(String::from_utf8_lossy(&names[4..]).contains("name old at port 4096"));
    let dump = raw(addr, &[100]);
    assert!(String::from_utf8_lossy(&dump[4..]).contains("<old> at port 4096"));
    // Unregister, then KILL: OK, and the server stops.
    drop(s);
    assert!(wait_until(|| srv.names().is_empty()));
    assert_eq!(raw(addr, &[107]), b"OK");
    assert!(wait_until(|| srv.is_stopped()));
    srv.stop();
}

#[test]
fn bad_requests_are_closed_and_the_server_goes_on() {
    let mut srv = server();
    let addr = srv.local_addr();
    for body in [
        vec![],
        vec![99],
        vec![120, 1],
        vec![115, b'x'],
        vec![120, 0, 1, 77, 0, 0, 6, 0, 6, 0xff, 0xff],
    ] {
        let _ = raw(addr, &body);
    }
    // A client that sends half a request and waits is dropped after the timeout; the
    // others are served meanwhile.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(&[0, 10, 120]).unwrap();
    let reg = epmd::register(addr, "gamma", 77, false).unwrap();
    assert_eq!(epmd::names(addr).unwrap(), vec![("gamma".to_owned(), 77)]);
    // Stopping closes registrations: the node sees it.
    let waiter = std::thread::spawn(move || {
        reg.wait_closed();
    });
    srv.stop();
    waiter.join().unwrap();
    assert!(epmd::names(addr).is_err() || epmd::names(addr).unwrap().is_empty());
}
