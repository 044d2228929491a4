//! The reactor against real loopback sockets (IPv4, IPv6, Unix), with a mock sink
//! standing in for the VM.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::term::{Binary, Pid};

/// Records every event; pids in `dead` are "no such process". A pid in `dies_after`
/// reads as alive that many more times, then joins `dead`.
#[derive(Default)]
struct Sink {
    events: Mutex<Vec<(Pid, IoEvent)>>,
    dead: Mutex<HashSet<Pid>>,
    dies_after: Mutex<Vec<(Pid, usize)>>,
}

impl IoSink for Sink {
    fn deliver(&self, to: Pid, event: IoEvent) -> bool {
        if self.dead.lock().unwrap().contains(&to) {
            return false;
        }
        self.events.lock().unwrap().push((to, event));
        true
    }

    fn is_alive(&self, pid: Pid) -> bool {
        let mut dying = self.dies_after.lock().unwrap();
        if let Some(i) = dying.iter().position(|(p, _)| *p == pid) {
            if dying[i].1 == 0 {
                dying.remove(i);
                self.dead.lock().unwrap().insert(pid);
            } else {
                dying[i].1 -= 1;
            }
        }
        !self.dead.lock().unwrap().contains(&pid)
    }
}

impl Sink {
    fn take(&self) -> Vec<(Pid, IoEvent)> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

const A: Pid = Pid::new(1, 0);
const B: Pid = Pid::new(2, 0);
/// Generous: these bound a wait for loopback events, never a speed.
const PATIENCE: Duration = Duration::from_secs(20);

fn setup() -> (Arc<Reactor>, Arc<Sink>) {
    let sink = Arc::new(Sink::default());
    (Arc::new(Reactor::new(sink.clone()).unwrap()), sink)
}

/// Polls until `pred` holds on the events seen so far (which it returns).
fn poll_until(
    r: &Reactor,
    sink: &Sink,
    pred: impl Fn(&[(Pid, IoEvent)]) -> bool,
) -> Vec<(Pid, IoEvent)> {
    let end = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        seen.extend(sink.take());
        if pred(&seen) {
            return seen;
        }
        assert!(Instant::now() < end, "timed out; events so far: {seen:?}");
        r.poll(Some(Duration::from_millis(5))).unwrap();
    }
}

/// Polls for `d` and returns what arrived.
fn poll_for(r: &Reactor, sink: &Sink, d: Duration) -> Vec<(Pid, IoEvent)> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        r.poll(Some(Duration::from_millis(5))).unwrap();
    }
    sink.take()
}

fn listen(r: &Reactor, owner: Pid, socket: SocketOpts) -> (SocketId, SocketAddr) {
    let addr = Addr::Inet("127.0.0.1:0".parse().unwrap());
    let opts = ListenOpts {
        socket,
        ..ListenOpts::default()
    };
    let l = r.listen(owner, &addr, opts).unwrap();
    let SockName::Inet(a) = r.sockname(l).unwrap() else {
        panic!("an inet listener has an inet name")
    };
    (l, a)
}

/// A std client connected to `addr` and the reactor's accepted end (owned by `owner`).
fn pair(r: &Reactor, sink: &Sink, owner: Pid, opts: SocketOpts) -> (TcpStream, SocketId) {
    let (l, addr) = listen(r, owner, opts);
    let client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    let s = match r.accept(l, owner).unwrap() {
        Accept::Ready(s) => s,
        Accept::Pending => {
            let ev = poll_until(r, sink, |e| !e.is_empty());
            match &ev[0].1 {
                IoEvent::Accepted { result: Ok(s), .. } => *s,
                other => panic!("expected an accepted socket, got {other:?}"),
            }
        }
    };
    r.close(l).unwrap();
    (client, s)
}

/// A passive `recv` by `pid`: at once, or by polling until `Received` arrives.
fn recv(r: &Reactor, sink: &Sink, s: SocketId, pid: Pid) -> Binary {
    match r.recv(s, pid, 0).unwrap() {
        Recv::Data(d) => d,
        Recv::Pending => match &poll_until(r, sink, |e| !e.is_empty())[0] {
            (to, IoEvent::Received { result: Ok(d), .. }) if *to == pid => d.clone(),
            other => panic!("expected data for {pid}, got {other:?}"),
        },
    }
}

fn opts(packet: Packet, active: ActiveOpt) -> SocketOpts {
    SocketOpts {
        packet,
        active,
        ..SocketOpts::default()
    }
}

fn frame4(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

fn data_of(ev: &[(Pid, IoEvent)]) -> Vec<Vec<u8>> {
    ev.iter()
        .filter_map(|(_, e)| match e {
            IoEvent::Tcp { data, .. } => Some(data.as_slice().to_vec()),
            _ => None,
        })
        .collect()
}

fn count(ev: &[(Pid, IoEvent)], f: impl Fn(&IoEvent) -> bool) -> usize {
    ev.iter().filter(|(_, e)| f(e)).count()
}

#[test]
fn packet_4_framing_survives_1_byte_writes_on_a_real_socket() {
    let (r, sink) = setup();
    let (mut client, _s) = pair(&r, &sink, A, opts(Packet::Len(4), ActiveOpt::True));
    let bodies: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![9u8; 200], vec![], b"four".to_vec()];
    let stream: Vec<u8> = bodies.iter().flat_map(|b| frame4(b)).collect();
    for (i, byte) in stream.iter().enumerate() {
        client.write_all(std::slice::from_ref(byte)).unwrap();
        if i % 7 == 0 {
            // Let some bytes arrive alone so reads really see 1-byte pieces.
            r.poll(Some(Duration::from_millis(1))).unwrap();
        }
    }
    let ev = poll_until(&r, &sink, |e| data_of(e).len() == 4);
    assert_eq!(data_of(&ev), bodies);
    assert!(ev.iter().all(|(pid, _)| *pid == A));
}

#[test]
fn an_oversize_frame_is_rejected_with_emsgsize_and_the_peer_sees_the_close() {
    let (r, sink) = setup();
    let o = SocketOpts {
        packet_size: 1000,
        ..opts(Packet::Len(4), ActiveOpt::True)
    };
    let (mut client, s) = pair(&r, &sink, A, o);
    // Announce 2 GiB: rejected on the header, nothing of that size is allocated.
    client.write_all(&(2u32 << 30).to_be_bytes()).unwrap();
    let ev = poll_until(&r, &sink, |e| {
        count(e, |x| matches!(x, IoEvent::TcpClosed { .. })) == 1
    });
    let reasons: Vec<_> = ev
        .iter()
        .filter_map(|(_, e)| match e {
            IoEvent::TcpError { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![IoError::Emsgsize]);
    assert_eq!(r.send(s, A, Binary::from_slice(b"x")), Err(IoError::Closed));
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut b = [0u8; 8];
    let n = client.read(&mut b);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "the peer sees the close: {n:?}"
    );
}

#[test]
fn active_5_delivers_exactly_5_messages_then_tcp_passive() {
    let (r, sink) = setup();
    let (mut client, s) = pair(&r, &sink, A, opts(Packet::Len(4), ActiveOpt::N(5)));
    for i in 0..12u8 {
        client.write_all(&frame4(&[i])).unwrap();
    }
    let ev = poll_until(&r, &sink, |e| {
        count(e, |x| matches!(x, IoEvent::TcpPassive { .. })) == 1
    });
    let ev = [ev, poll_for(&r, &sink, Duration::from_millis(100))].concat();
    assert_eq!(data_of(&ev), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(matches!(ev.last().unwrap().1, IoEvent::TcpPassive { .. }));
    assert_eq!(r.getopts(s).unwrap().active, ActiveOpt::False);
    // Each new count is spent at once on the frames waiting: 3, passive, 4, passive.
    r.setopts(s, SetOpts::active(ActiveOpt::N(3))).unwrap();
    r.setopts(s, SetOpts::active(ActiveOpt::N(4))).unwrap();
    let ev = [sink.take(), poll_for(&r, &sink, Duration::from_millis(100))].concat();
    assert_eq!(data_of(&ev), (5..12u8).map(|i| vec![i]).collect::<Vec<_>>());
    let kinds: Vec<bool> = ev
        .iter()
        .map(|(_, e)| matches!(e, IoEvent::TcpPassive { .. }))
        .collect();
    let mut want = vec![false; 3];
    want.push(true);
    want.extend([false; 4]);
    want.push(true);
    assert_eq!(kinds, want);
}

#[test]
fn a_receiver_that_never_rearms_makes_the_senders_writes_block() {
    let (r, sink) = setup();
    let (mut client, s) = pair(&r, &sink, A, opts(Packet::Raw, ActiveOpt::Once));
    client.set_nonblocking(true).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0usize;
    let end = Instant::now() + PATIENCE;
    // Write until the kernel pushes back, polling the reactor all along.
    let mut blocked_rounds = 0;
    while blocked_rounds < 20 {
        assert!(
            Instant::now() < end,
            "the sender never blocked ({written} bytes)"
        );
        match client.write(&chunk) {
            Ok(n) => {
                written += n;
                blocked_rounds = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => blocked_rounds += 1,
            Err(e) => panic!("{e}"),
        }
        r.poll(Some(Duration::from_millis(2))).unwrap();
    }
    let ev = sink.take();
    assert_eq!(
        count(&ev, |x| matches!(x, IoEvent::Tcp { .. })),
        1,
        "once: one message"
    );
    let delivered: usize = data_of(&ev).iter().map(Vec::len).sum();
    // The socket buffers far less than the peer managed to write; the rest is in
    // the kernel, and the sender is blocked.
    assert!(written < 64 << 20, "kernel buffers are bounded: {written}");
    assert!(delivered <= conn::READ_CHUNK);
    // Re-arming reads more at once, without a new edge from the peer.
    r.setopts(s, SetOpts::active(ActiveOpt::Once)).unwrap();
    assert_eq!(count(&sink.take(), |x| matches!(x, IoEvent::Tcp { .. })), 1);
}

#[test]
fn send_suspends_while_the_peer_does_not_read_and_resumes_when_it_does() {
    let (r, sink) = setup();
    let (mut client, s) = pair(&r, &sink, A, opts(Packet::Raw, ActiveOpt::False));
    poll_for(&r, &sink, Duration::from_millis(20)); // the writable edge
    let chunk = Binary::new(vec![1u8; 64 * 1024]);
    let mut sent = 0usize;
    while let SendStatus::Sent = r.send(s, B, chunk.clone()).unwrap() {
        sent += chunk.len();
        assert!(sent < 256 << 20, "send never suspended");
        r.poll(Some(Duration::ZERO)).unwrap();
    }
    sent += chunk.len();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while got < sent {
            got += client.read(&mut buf).unwrap();
        }
        got
    });
    let ev = poll_until(&r, &sink, |e| {
        e.iter()
            .any(|(pid, x)| *pid == B && matches!(x, IoEvent::SendReady { result: Ok(()), .. }))
    });
    assert_eq!(ev.len(), 1, "only the suspended sender hears of it: {ev:?}");
    r.close(s).unwrap();
    assert_eq!(reader.join().unwrap(), sent);
}

#[test]
fn owner_exit_closes_its_sockets_and_the_peer_sees_eof() {
    let (r, sink) = setup();
    let (mut c1, _) = pair(&r, &sink, A, SocketOpts::default());
    let (mut c2, _) = pair(&r, &sink, A, SocketOpts::default());
    let (mut c3, s3) = pair(&r, &sink, B, SocketOpts::default());
    assert_eq!(r.socket_count(), 3);
    r.owner_exited(A);
    assert_eq!(r.socket_count(), 1);
    for c in [&mut c1, &mut c2] {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        assert_eq!(c.read(&mut [0u8; 4]).unwrap(), 0, "EOF");
    }
    // B's socket is untouched.
    c3.write_all(b"still here").unwrap();
    let got = recv(&r, &sink, s3, B);
    assert_eq!(got.as_slice(), b"still here");
}

#[test]
fn controlling_process_moves_delivery_and_only_the_owner_may_do_it() {
    let (r, sink) = setup();
    let (mut client, s) = pair(&r, &sink, A, opts(Packet::Raw, ActiveOpt::False));
    assert_eq!(r.controlling_process(s, B, B), Err(IoError::NotOwner));
    r.controlling_process(s, A, B).unwrap();
    assert_eq!(r.owner(s), Some(B));
    r.setopts(s, SetOpts::active(ActiveOpt::True)).unwrap();
    client.write_all(b"hi").unwrap();
    let ev = poll_until(&r, &sink, |e| !data_of(e).is_empty());
    assert!(ev.iter().all(|(pid, _)| *pid == B));
    r.owner_exited(A);
    assert_eq!(
        r.owner(s),
        Some(B),
        "the old owner's exit no longer closes it"
    );
    r.owner_exited(B);
    assert_eq!(r.owner(s), None);
}

#[test]
fn controlling_process_to_a_dead_process_is_badarg_and_the_socket_stays() {
    let (r, sink) = setup();
    let (mut client, s) = pair(&r, &sink, A, opts(Packet::Raw, ActiveOpt::False));
    sink.dead.lock().unwrap().insert(B);
    // Not the owner comes first, as in gen_tcp.
    assert_eq!(r.controlling_process(s, B, B), Err(IoError::NotOwner));
    assert_eq!(r.controlling_process(s, A, B), Err(IoError::Badarg));
    assert_eq!(r.owner(s), Some(A), "still the caller's");
    r.send(s, A, Binary::from_slice(b"ok")).unwrap();
    let mut buf = [0u8; 2];
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
    r.owner_exited(A);
    assert_eq!(r.socket_count(), 0, "the caller's exit closes it");
}

#[test]
fn a_new_owner_that_dies_during_the_hand_over_gets_its_socket_closed() {
    let (r, sink) = setup();
    let (mut client, s) = pair(&r, &sink, A, opts(Packet::Raw, ActiveOpt::False));
    // B is alive at the check, then exits (its exit finds nothing of its own yet)
    // before the owner index names it.
    sink.dies_after.lock().unwrap().push((B, 1));
    r.controlling_process(s, A, B).unwrap();
    assert_eq!(r.owner(s), None, "closed, as B's exit would have");
    assert_eq!(r.socket_count(), 0);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(client.read(&mut [0u8; 4]).unwrap(), 0, "the peer sees EOF");
}

#[test]
fn errors_carry_erlang_reasons() {
    let (r, sink) = setup();
    // econnrefused: nobody listens on a port we just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = r
        .connect(A, &Addr::Inet(free), SocketOpts::default())
        .unwrap();
    let ev = poll_until(&r, &sink, |e| !e.is_empty());
    assert_eq!(
        ev[0].1,
        IoEvent::Connected {
            sock: c,
            result: Err(IoError::Econnrefused)
        }
    );
    r.close(c).unwrap();
    // eaddrinuse: a second listener on a listening port.
    let (l, addr) = listen(&r, A, SocketOpts::default());
    let again = r.listen(A, &Addr::Inet(addr), ListenOpts::default());
    assert_eq!(again, Err(IoError::Eaddrinuse));
    assert_eq!(
        r.send(l, A, Binary::from_slice(b"x")),
        Err(IoError::Enotconn)
    );
    r.close(l).unwrap();
    // A closed id is `closed` for ever, and closing it again is fine.
    assert_eq!(r.send(l, A, Binary::from_slice(b"x")), Err(IoError::Closed));
    assert_eq!(r.close(l), Ok(()));
    let (_client, s) = pair(&r, &sink, A, opts(Packet::Raw, ActiveOpt::True));
    assert_eq!(
        r.recv(s, A, 0),
        Err(IoError::Einval),
        "recv on an active socket"
    );
    assert_eq!(
        r.setopts(s, SetOpts::active(ActiveOpt::N(40_000))),
        Err(IoError::Einval)
    );
    let bad = SetOpts {
        packet_size: Some(MAX_PACKET_SIZE + 1),
        ..SetOpts::default()
    };
    assert_eq!(r.setopts(s, bad), Err(IoError::Einval));
}

/// Listen, connect and accept within the reactor, exchange a frame each way.
fn round_trip_within(addr: Addr) {
    let (r, sink) = setup();
    let o = opts(Packet::Len(2), ActiveOpt::False);
    let l = r
        .listen(
            A,
            &addr,
            ListenOpts {
                socket: o,
                ..ListenOpts::default()
            },
        )
        .unwrap();
    let bound = match r.sockname(l).unwrap() {
        SockName::Inet(a) => Addr::Inet(a),
        SockName::Unix(Some(p)) => Addr::Unix(p),
        other => panic!("{other:?}"),
    };
    assert_eq!(r.accept(l, A).unwrap(), Accept::Pending);
    let c = r.connect(B, &bound, o).unwrap();
    let ev = poll_until(&r, &sink, |e| e.len() >= 2);
    let mut server = None;
    for (pid, e) in &ev {
        match e {
            IoEvent::Accepted { result: Ok(s), .. } if *pid == A => server = Some(*s),
            IoEvent::Connected {
                result: Ok(()),
                sock,
            } if *pid == B => assert_eq!(*sock, c),
            other => panic!("unexpected {other:?}"),
        }
    }
    let s = server.unwrap();
    assert_eq!(
        r.send(c, B, Binary::from_slice(b"ping")),
        Ok(SendStatus::Sent)
    );
    let got = recv(&r, &sink, s, A);
    assert_eq!(got.as_slice(), b"ping", "the 2-byte header was stripped");
    assert!(r.peername(s).is_ok());
    r.send(s, A, Binary::from_slice(b"pong")).unwrap();
    r.shutdown(s, Shutdown::Write).unwrap();
    r.setopts(c, SetOpts::active(ActiveOpt::True)).unwrap();
    let ev = poll_until(&r, &sink, |e| {
        count(e, |x| matches!(x, IoEvent::TcpClosed { .. })) == 1
    });
    assert_eq!(data_of(&ev), vec![b"pong".to_vec()]);
    assert!(ev.iter().all(|(pid, _)| *pid == B));
}

#[test]
fn ipv6_loopback_through_the_same_api() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    round_trip_within(Addr::Inet("[::1]:0".parse().unwrap()));
}

#[test]
fn unix_domain_sockets_through_the_same_api() {
    let dir = std::env::temp_dir().join(format!("beamvm-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let _ = std::fs::remove_file(&path);
    round_trip_within(Addr::Unix(path.clone()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_connection_accepted_for_a_dead_acceptor_is_closed() {
    let (r, sink) = setup();
    let (l, addr) = listen(&r, A, SocketOpts::default());
    assert_eq!(r.accept(l, B).unwrap(), Accept::Pending);
    sink.dead.lock().unwrap().insert(B);
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    // Poll until the listener's edge was handled: the accepted socket is closed then.
    let end = Instant::now() + PATIENCE;
    while r.poll(Some(Duration::from_millis(5))).unwrap() == 0 {
        assert!(Instant::now() < end, "no accept event");
    }
    assert!(sink.take().is_empty(), "nothing reached the dead acceptor");
    assert_eq!(r.socket_count(), 1, "only the listener is left");
    assert_eq!(
        client.read(&mut [0u8; 1]).unwrap(),
        0,
        "EOF: nobody owns it"
    );
    // A cancelled acceptor is not handed the next connection.
    assert_eq!(r.accept(l, A).unwrap(), Accept::Pending);
    assert!(r.cancel(l, A));
    let _c2 = TcpStream::connect(addr).unwrap();
    assert!(poll_for(&r, &sink, Duration::from_millis(50)).is_empty());
    assert!(matches!(r.accept(l, A).unwrap(), Accept::Ready(_)));
}

/// A native echo "process" per connection, driven from the sink (which may call back
/// into the reactor: no lock is held while it runs).
struct Echo {
    reactor: OnceLock<Weak<Reactor>>,
    listener: OnceLock<SocketId>,
    acceptor: Pid,
    errors: Mutex<Vec<String>>,
}

impl IoSink for Echo {
    fn deliver(&self, to: Pid, event: IoEvent) -> bool {
        let Some(r) = self.reactor.get().and_then(Weak::upgrade) else {
            return true;
        };
        let fail = |e: String| self.errors.lock().unwrap().push(e);
        match event {
            IoEvent::Accepted { result: Ok(s), .. } => {
                self.adopt(&r, s, to);
                self.accept_next(&r);
            }
            IoEvent::Tcp { sock, data } => {
                if let Err(e) = r.send(sock, to, data) {
                    fail(format!("send: {e}"));
                }
                let _ = r.setopts(sock, SetOpts::active(ActiveOpt::Once));
            }
            IoEvent::TcpClosed { sock } => {
                let _ = r.close(sock);
            }
            other => fail(format!("unexpected {other:?}")),
        }
        true
    }
}

impl Echo {
    /// The acceptor hands each connection to a fresh "process" in active once mode.
    fn adopt(&self, r: &Reactor, s: SocketId, acceptor: Pid) {
        let owner = Pid::new(1000 + s.index() as u32, s.generation());
        let mut errors = self.errors.lock().unwrap();
        if let Err(e) = r.controlling_process(s, acceptor, owner) {
            errors.push(format!("controlling_process: {e}"));
        }
        if let Err(e) = r.setopts(s, SetOpts::active(ActiveOpt::Once)) {
            errors.push(format!("setopts: {e}"));
        }
    }

    /// Accepts what is waiting, then leaves one accept pending.
    fn accept_next(&self, r: &Reactor) {
        let l = *self.listener.get().unwrap();
        while let Ok(Accept::Ready(s)) = r.accept(l, self.acceptor) {
            self.adopt(r, s, self.acceptor);
        }
    }
}

#[test]
fn echo_with_200_clients_and_a_poller_thread() {
    let echo = Arc::new(Echo {
        reactor: OnceLock::new(),
        listener: OnceLock::new(),
        acceptor: A,
        errors: Mutex::new(vec![]),
    });
    let r = Arc::new(Reactor::new(echo.clone()).unwrap());
    let _ = echo.reactor.set(Arc::downgrade(&r));
    let (l, addr) = listen(&r, A, SocketOpts::default());
    let _ = echo.listener.set(l);
    echo.accept_next(&r);
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (r, stop) = (r.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                r.poll(Some(Duration::from_millis(10))).unwrap();
            }
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..50)
                    .map(|_| {
                        let c = TcpStream::connect(addr).unwrap();
                        c.set_nodelay(true).unwrap();
                        c.set_read_timeout(Some(PATIENCE)).unwrap();
                        c
                    })
                    .collect();
                for round in 0..20u8 {
                    for (i, c) in conns.iter_mut().enumerate() {
                        let msg = [t as u8 ^ round ^ i as u8; 64];
                        c.write_all(&msg).unwrap();
                        let mut back = [0u8; 64];
                        c.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Every client closed: the echo processes close their sockets on tcp_closed.
    let end = Instant::now() + PATIENCE;
    while r.socket_count() != 1 {
        assert!(Instant::now() < end, "{} sockets left", r.socket_count());
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    r.wake().unwrap();
    poller.join().unwrap();
    assert_eq!(*echo.errors.lock().unwrap(), Vec::<String>::new());
}

#[test]
fn a_5_mib_frame_arrives_whole_and_shared() {
    let (r, sink) = setup();
    let (mut client, _s) = pair(&r, &sink, A, opts(Packet::Len(4), ActiveOpt::Once));
    let body: Vec<u8> = (0..5 << 20).map(|i: u32| (i % 251) as u8).collect();
    let frame = frame4(&body);
    let writer = thread::spawn(move || client.write_all(&frame).map(|_| client));
    let ev = poll_until(&r, &sink, |e| !data_of(e).is_empty());
    let IoEvent::Tcp { data, .. } = &ev[0].1 else {
        panic!("{ev:?}")
    };
    assert!(
        matches!(data, Binary::Refc(_)),
        "a large frame is a refcounted binary"
    );
    assert!(data.as_slice() == body.as_slice());
    writer.join().unwrap().unwrap();
}

/// Routes each pid's events to its own channel: "processes" on their own threads.
#[derive(Default)]
struct Router {
    inboxes: Mutex<std::collections::HashMap<Pid, std::sync::mpsc::Sender<IoEvent>>>,
}

impl IoSink for Router {
    fn deliver(&self, to: Pid, event: IoEvent) -> bool {
        match self.inboxes.lock().unwrap().get(&to) {
            Some(tx) => tx.send(event).is_ok(),
            None => false,
        }
    }
}

#[test]
fn passive_echo_from_4_process_threads_beside_a_poller_thread() {
    let router = Arc::new(Router::default());
    let r = Arc::new(Reactor::new(router.clone()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (r, stop) = (r.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                r.poll(Some(Duration::from_millis(10))).unwrap();
            }
        })
    };
    let workers: Vec<_> = (0..4u32)
        .map(|t| {
            let (r, router) = (r.clone(), router.clone());
            thread::spawn(move || {
                let me = Pid::new(100 + t, 0);
                // A listener each: an accept must pair with this thread's own client.
                let (l, addr) = listen(&r, me, SocketOpts::default());
                let (tx, rx) = std::sync::mpsc::channel();
                router.inboxes.lock().unwrap().insert(me, tx);
                let wait = |what: &str| {
                    rx.recv_timeout(PATIENCE)
                        .unwrap_or_else(|_| panic!("{me}: no {what} event"))
                };
                let mut pairs = vec![];
                for _ in 0..25 {
                    let client = TcpStream::connect(addr).unwrap();
                    client.set_read_timeout(Some(PATIENCE)).unwrap();
                    let s = match r.accept(l, me).unwrap() {
                        Accept::Ready(s) => s,
                        Accept::Pending => match wait("accept") {
                            IoEvent::Accepted { result: Ok(s), .. } => s,
                            other => panic!("{other:?}"),
                        },
                    };
                    pairs.push((client, s));
                }
                for round in 0..20u8 {
                    for (i, (client, s)) in pairs.iter_mut().enumerate() {
                        let msg = [round ^ i as u8 ^ t as u8; 64];
                        client.write_all(&msg).unwrap();
                        let mut got = Vec::new();
                        while got.len() < 64 {
                            let d = match r.recv(*s, me, 0).unwrap() {
                                Recv::Data(d) => d,
                                Recv::Pending => match wait("recv") {
                                    IoEvent::Received { result: Ok(d), .. } => d,
                                    other => panic!("{other:?}"),
                                },
                            };
                            got.extend_from_slice(d.as_slice());
                        }
                        assert_eq!(got, msg);
                        assert_eq!(r.send(*s, me, Binary::new(got)), Ok(SendStatus::Sent));
                        let mut back = [0u8; 64];
                        client.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg);
                    }
                }
                r.owner_exited(me);
                for (mut client, _) in pairs {
                    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    r.wake().unwrap();
    poller.join().unwrap();
    assert_eq!(r.socket_count(), 0, "the owners' exits closed everything");
}

/// A std socket pair over loopback: (the end the reactor watches, the peer).
fn std_pair() -> (TcpStream, TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (s, c)
}

fn ready_count(ev: &[(Pid, IoEvent)], s: SocketId) -> usize {
    count(ev, |e| matches!(e, IoEvent::Ready { sock } if *sock == s))
}

#[test]
fn a_watched_socket_tells_readiness_once_per_arming_and_reads_nothing() {
    let (r, sink) = setup();
    let (ours, mut peer) = std_pair();
    let mine = ours.try_clone().unwrap();
    let s = r.watch(A, ours).unwrap();
    // Registered armed: epoll reports the socket writable at once.
    let ev = poll_until(&r, &sink, |e| ready_count(e, s) == 1);
    assert!(ev.iter().all(|(p, _)| *p == A));
    // Not armed: data coming in is not told (and stays in the kernel for the owner).
    peer.write_all(b"one").unwrap();
    assert_eq!(
        ready_count(&poll_for(&r, &sink, Duration::from_millis(100)), s),
        0
    );
    r.rearm(s).unwrap();
    peer.write_all(b"two").unwrap();
    poll_until(&r, &sink, |e| ready_count(e, s) == 1);
    let mut buf = [0u8; 16];
    let n = (&mine).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"onetwo", "the reactor read none of it");
    // The owner's handle stays blocking: the reactor left the file description alone.
    mine.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let e = (&mine).read(&mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    // The peer closing is readiness too; gen_tcp's operations are refused on it.
    r.rearm(s).unwrap();
    drop(peer);
    poll_until(&r, &sink, |e| ready_count(e, s) == 1);
    assert_eq!(
        r.send(s, A, Binary::new(b"x".to_vec())),
        Err(IoError::Einval)
    );
    assert_eq!((&mine).read(&mut buf).unwrap(), 0);
    assert!(r.peername(s).is_ok());
}

#[test]
fn closing_a_watched_socket_keeps_the_owners_handle_and_owner_exit_closes_it() {
    let (r, sink) = setup();
    let (ours, mut peer) = std_pair();
    let mine = ours.try_clone().unwrap();
    let s = r.watch(A, ours).unwrap();
    poll_until(&r, &sink, |e| ready_count(e, s) == 1);
    r.owner_exited(A);
    assert_eq!(r.socket_count(), 0);
    assert_eq!(r.rearm(s), Err(IoError::Closed));
    // The connection lives on through the owner's own handle, and nothing is told.
    peer.write_all(b"still here").unwrap();
    assert!(poll_for(&r, &sink, Duration::from_millis(100)).is_empty());
    let mut buf = [0u8; 16];
    let n = (&mine).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
    let (ours2, _peer2) = std_pair();
    let s2 = r.watch(B, ours2).unwrap();
    r.close(s2).unwrap();
    r.close(s2).unwrap();
    assert_eq!(r.socket_count(), 0);
}
