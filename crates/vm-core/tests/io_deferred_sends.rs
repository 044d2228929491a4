//! Sends made by hooked processes (Python's, in the binding) are written when their
//! batch ends, outside the hook (io::defer): they still arrive, in order, whether the
//! process then exits, waits, or sends more than a batch defers.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_core::io::{Accept, Addr, ListenOpts, SockName, SocketId};
use vm_core::term::Binary;
use vm_core::{Cx, Fragment, Pid, SliceHook, Step, Term, Vm, VmConfig};

mod common;
use common::Hooked;

const LONG: Duration = Duration::from_secs(30);

struct NoopHook;
impl SliceHook for NoopHook {}

fn vm(schedulers: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers,
        schedulers_online: schedulers,
        slice_hook: Some(Arc::new(NoopHook)),
        ..VmConfig::default()
    })
    .expect("vm")
}

fn exit() -> Step {
    Step::Exit(Fragment::from_term(&Term::atom("normal")))
}

/// `n` client connections and their accepted ends, owned by `owner`.
fn connections(vm: &Vm, owner: Pid, n: usize) -> Vec<(TcpStream, SocketId)> {
    let r = vm.handle().io().expect("io");
    let any = Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
    let l = r
        .listen(owner, &any, ListenOpts::default())
        .expect("listen");
    let Ok(SockName::Inet(addr)) = r.sockname(l) else {
        panic!("an inet listener has an inet name")
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(LONG)).expect("timeout");
        let deadline = std::time::Instant::now() + LONG;
        let s = loop {
            match r.accept(l, owner).expect("accept") {
                Accept::Ready(s) => break s,
                Accept::Pending => {
                    // Not in the backlog yet: withdraw and look again.
                    assert!(r.cancel(l, owner), "the accept was served meanwhile");
                    assert!(std::time::Instant::now() < deadline, "no connection");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        out.push((c, s));
    }
    r.close(l).expect("close the listener");
    out
}

/// A hooked process that waits for any message, then runs `f` once with the sockets
/// in `slot`, then does what `f` returns.
fn on_message(
    slot: Arc<Mutex<Vec<SocketId>>>,
    mut f: impl FnMut(&mut Cx<'_>, &[SocketId]) -> Step + Send + 'static,
) -> Hooked<impl FnMut(&mut Cx<'_>) -> Step + Send + 'static> {
    let mut done = false;
    Hooked(move |cx: &mut Cx<'_>| {
        while cx.recv().is_some() {
            if !done {
                done = true;
                let socks = slot.lock().expect("slot").clone();
                return f(cx, &socks);
            }
        }
        Step::Wait
    })
}

fn go(vm: &Vm, pid: Pid) {
    assert!(vm.send(pid, Fragment::from_term(&Term::atom("go"))));
}

fn read_n(c: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    c.read_exact(&mut buf).expect("the bytes sent");
    buf
}

/// The bytes a hooked slice sends are written after the slice (the peer has none of
/// them while the slice still runs), then all of them arrive, in order, and the
/// process's exit right after the sends closes the socket only after them.
#[test]
fn sends_of_a_hooked_slice_are_written_after_it_in_order_even_if_it_exits_at_once() {
    let vm = vm(1);
    let slot = Arc::new(Mutex::new(Vec::new()));
    let seen_during = Arc::new(Mutex::new(None));
    let client: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
    let (c2, seen) = (client.clone(), seen_during.clone());
    let pid = vm
        .spawn(on_message(slot.clone(), move |cx, socks| {
            let r = cx.io().expect("io");
            for i in 0..10u8 {
                r.send(socks[0], cx.self_pid(), Binary::new(vec![i; 100]))
                    .expect("send");
            }
            // Still inside the slice: nothing reached the peer yet.
            let mut guard = c2.lock().expect("client");
            let c = guard.as_mut().expect("client");
            c.set_nonblocking(true).expect("nonblocking");
            let mut b = [0u8; 1];
            *seen.lock().expect("seen") = Some(matches!(
                c.read(&mut b),
                Err(e) if e.kind() == ErrorKind::WouldBlock
            ));
            c.set_nonblocking(false).expect("blocking");
            exit()
        }))
        .expect("spawn");
    let (c, s) = connections(&vm, pid, 1).pop().expect("one");
    slot.lock().expect("slot").push(s);
    *client.lock().expect("client") = Some(c);
    go(&vm, pid);
    let deadline = std::time::Instant::now() + LONG;
    while seen_during.lock().expect("seen").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the process never ran"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        *seen_during.lock().expect("seen"),
        Some(true),
        "the peer had data while the slice that sent it still ran"
    );
    let mut c = client.lock().expect("client").take().expect("client");
    let got = read_n(&mut c, 1000);
    let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 100]).collect();
    assert_eq!(got, want);
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).expect("eof"),
        0,
        "EOF after the data"
    );
}

/// A process that sends and then waits (an echo's shape) has its bytes written when
/// the batch ends, and sends on more sockets than a batch defers ([`FLUSH_AT`] in
/// io::defer) all arrive, on two schedulers.
#[test]
fn sends_then_a_wait_and_more_sockets_than_a_batch_defers_all_arrive() {
    let vm = vm(2);
    let slot = Arc::new(Mutex::new(Vec::new()));
    let pid = vm
        .spawn(on_message(slot.clone(), move |cx, socks| {
            let r = cx.io().expect("io");
            for round in 0..3u8 {
                for (i, s) in socks.iter().enumerate() {
                    let byte = (i as u8).wrapping_mul(3).wrapping_add(round);
                    r.send(*s, cx.self_pid(), Binary::new(vec![byte; 10]))
                        .expect("send");
                }
            }
            Step::Wait // and never wakes again: its sockets stay open
        }))
        .expect("spawn");
    let mut conns = connections(&vm, pid, 100);
    slot.lock()
        .expect("slot")
        .extend(conns.iter().map(|(_, s)| *s));
    go(&vm, pid);
    for (i, (c, _)) in conns.iter_mut().enumerate() {
        let got = read_n(c, 30);
        let want: Vec<u8> = (0..3u8)
            .flat_map(|round| [(i as u8).wrapping_mul(3).wrapping_add(round); 10])
            .collect();
        assert_eq!(got, want, "connection {i}");
    }
}

/// Stress: several hooked processes on two schedulers send numbered frames on one
/// socket, yielding often, so deferred and written queues interleave across threads
/// and batches; every frame arrives whole, and each sender's frames in its order.
#[test]
fn senders_on_two_schedulers_sharing_a_socket_keep_each_senders_order() {
    const SENDERS: u8 = 4;
    const FRAMES: u16 = 2_000;
    let vm = vm(2);
    let slot = Arc::new(Mutex::new(Vec::new()));
    let owner = vm
        .spawn(on_message(slot.clone(), |_, _| Step::Wait))
        .expect("spawn");
    let (mut c, s) = connections(&vm, owner, 1).pop().expect("one");
    for id in 0..SENDERS {
        let mut next: u16 = 0;
        let mut started = false;
        vm.spawn(Hooked(move |cx: &mut Cx<'_>| {
            while cx.recv().is_some() {
                started = true;
            }
            if !started {
                return Step::Wait;
            }
            let r = cx.io().expect("io");
            for _ in 0..7 {
                if next == FRAMES {
                    return exit();
                }
                let [hi, lo] = next.to_be_bytes();
                r.send(s, cx.self_pid(), Binary::from_slice(&[id, hi, lo]))
                    .expect("send");
                next += 1;
            }
            Step::Yield
        }))
        .map(|pid| go(&vm, pid))
        .expect("spawn");
    }
    let got = read_n(&mut c, usize::from(SENDERS) * usize::from(FRAMES) * 3);
    let mut seen = [0u16; SENDERS as usize];
    for f in got.chunks(3) {
        let id = usize::from(f[0]);
        assert!(id < usize::from(SENDERS), "a torn frame: {f:?}");
        assert_eq!(u16::from_be_bytes([f[1], f[2]]), seen[id], "sender {id}");
        seen[id] += 1;
    }
    assert_eq!(seen, [FRAMES; SENDERS as usize]);
}

/// A slice that blocks (a Python process inside a long C call) after another process
/// of its batch deferred a send does not hold those bytes: the watchdog, handing the
/// stuck scheduler's work over, writes its deferred sends too.
#[test]
fn a_stuck_slice_does_not_hold_the_sends_its_batch_deferred() {
    let vm = vm(1);
    let slot = Arc::new(Mutex::new(Vec::new()));
    let blocked_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = blocked_done.clone();
    let mut started = false;
    let blocker = vm
        .spawn(Hooked(move |cx: &mut Cx<'_>| {
            while cx.recv().is_some() {
                started = true;
            }
            if !started {
                return Step::Wait;
            }
            // Stuck in one slice, far past the watchdog's 2 ms.
            std::thread::sleep(Duration::from_secs(3));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            exit()
        }))
        .expect("spawn");
    let sender = vm
        .spawn(on_message(slot.clone(), move |cx, socks| {
            let r = cx.io().expect("io");
            r.send(
                socks[0],
                cx.self_pid(),
                Binary::from_slice(b"before the stall"),
            )
            .expect("send");
            // The blocker runs next, in this batch, on this scheduler (its LIFO slot).
            cx.send(blocker, Fragment::from_term(&Term::atom("go")));
            Step::Wait
        }))
        .expect("spawn");
    let (mut c, s) = connections(&vm, sender, 1).pop().expect("one");
    slot.lock().expect("slot").push(s);
    go(&vm, sender);
    assert_eq!(read_n(&mut c, 16), b"before the stall");
    assert!(
        !blocked_done.load(std::sync::atomic::Ordering::SeqCst),
        "the bytes waited for the stuck slice to end"
    );
}
