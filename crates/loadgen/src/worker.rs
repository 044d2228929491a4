//! One generator thread: its share of the connections on its own mio `Poll`.
//!
//! A connection is a tiny state machine: `Connecting` until the non-blocking connect
//! completes, then alternately "writing its message" and "reading its echo". Readiness
//! is edge-triggered: a read that returns less than the buffer means the kernel queue
//! was empty, and any later arrival raises a new edge (each message is answered before
//! the next is sent, so nothing is left unread between edges).

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Non-blocking connects in flight per thread: enough to open 10,000 connections in
/// well under a second on loopback, few enough not to overflow a 1,024 accept backlog
/// (an overflow drops the SYN and costs a 1 s retransmit).
const CONNECTS_IN_FLIGHT: usize = 256;
/// epoll events fetched per wait.
const EVENTS: usize = 1024;
/// Longest sleep in `poll`, so the end of the run is noticed on an idle server.
const TICK: Duration = Duration::from_millis(20);
/// Histogram range: 1 ns .. 60 s, 3 significant digits (~0.1% resolution).
const HIST_MAX_NS: u64 = 60_000_000_000;

pub struct Config {
    pub addr: SocketAddr,
    pub connections: usize,
    pub first_id: usize,
    pub size: usize,
    pub connect_timeout: Duration,
}

/// What a worker reports after its connect phase.
pub struct Opened {
    pub count: usize,
    pub error: Option<String>,
}

/// The common time base of every worker.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub measure_from: Instant,
    pub end: Instant,
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errors {
    pub read: u64,
    pub write: u64,
    pub eof: u64,
    pub mismatch: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.read + self.write + self.eof + self.mismatch
    }
}

pub struct WorkerResult {
    pub hist: Histogram<u64>,
    pub round_trips: u64,
    pub errors: Errors,
    pub outstanding: u64,
    pub oldest_outstanding: Duration,
}

impl Default for WorkerResult {
    fn default() -> Self {
        WorkerResult {
            hist: new_histogram(),
            round_trips: 0,
            errors: Errors::default(),
            outstanding: 0,
            oldest_outstanding: Duration::ZERO,
        }
    }
}

impl WorkerResult {
    /// Adds counters (not the histogram: the caller merges those with error handling).
    pub fn merge(&mut self, o: &WorkerResult) {
        self.round_trips += o.round_trips;
        self.errors.read += o.errors.read;
        self.errors.write += o.errors.write;
        self.errors.eof += o.errors.eof;
        self.errors.mismatch += o.errors.mismatch;
        self.outstanding += o.outstanding;
        self.oldest_outstanding = self.oldest_outstanding.max(o.oldest_outstanding);
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 3 significant figures over a fixed range cannot fail to construct.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

#[derive(PartialEq, Eq)]
enum State {
    Connecting,
    Idle,
    /// Writing the message (`written` bytes out), then reading `got` bytes of its echo.
    InFlight {
        written: usize,
        got: usize,
    },
    Dead,
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// The message: a per-connection pattern, so a server that crosses streams fails.
    msg: Box<[u8]>,
    sent_at: Instant,
}

/// Runs one worker to completion.
pub fn run(cfg: Config, opened: Sender<Opened>, sched: Receiver<Option<Schedule>>) -> WorkerResult {
    let mut out = WorkerResult::default();
    let (mut poll, mut conns, error) = match connect_all(&cfg) {
        Ok((p, c)) => (Some(p), c, None),
        Err((c, e)) => (None, c, Some(e)),
    };
    let count = conns.iter().filter(|c| c.state == State::Idle).count();
    let _ = opened.send(Opened { count, error });
    let Some(poll) = poll.as_mut() else {
        return out;
    };
    let Ok(Some(schedule)) = sched.recv() else {
        return out;
    };
    drive(poll, &mut conns, schedule, &mut out);
    out
}

type ConnectResult = Result<(Poll, Vec<Conn>), (Vec<Conn>, String)>;

fn connect_all(cfg: &Config) -> ConnectResult {
    let mut conns: Vec<Conn> = Vec::with_capacity(cfg.connections);
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => return Err((conns, format!("epoll_create: {e}"))),
    };
    let mut events = Events::with_capacity(EVENTS);
    let deadline = Instant::now() + cfg.connect_timeout;
    let mut pending = 0usize;
    let mut done = 0usize;
    while done < cfg.connections {
        while pending < CONNECTS_IN_FLIGHT && conns.len() < cfg.connections {
            let id = conns.len();
            let mut stream = match TcpStream::connect(cfg.addr) {
                Ok(s) => s,
                Err(e) => return Err((conns, connect_error(cfg.addr, &e))),
            };
            if let Err(e) = poll.registry().register(
                &mut stream,
                Token(id),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                return Err((conns, format!("epoll_ctl: {e}")));
            }
            let msg: Box<[u8]> = (0..cfg.size)
                .map(|i| (cfg.first_id + id).wrapping_mul(31).wrapping_add(i) as u8)
                .collect();
            conns.push(Conn {
                stream,
                state: State::Connecting,
                msg,
                sent_at: Instant::now(),
            });
            pending += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err((
                conns,
                format!(
                    "{pending} connects still pending after {:?} (accept backlog full or server too slow)",
                    cfg.connect_timeout
                ),
            ));
        }
        if let Err(e) = poll.poll(&mut events, Some((deadline - now).min(TICK))) {
            if e.kind() != ErrorKind::Interrupted {
                return Err((conns, format!("epoll_wait: {e}")));
            }
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.state != State::Connecting || !(ev.is_writable() || ev.is_error()) {
                continue;
            }
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                return Err((conns, connect_error(cfg.addr, &e)));
            }
            match c.stream.peer_addr() {
                Ok(_) => {
                    // Small messages, one at a time: Nagle would only add delay.
                    let _ = c.stream.set_nodelay(true);
                    c.state = State::Idle;
                    pending -= 1;
                    done += 1;
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => {}
                Err(e) => return Err((conns, connect_error(cfg.addr, &e))),
            }
        }
    }
    Ok((poll, conns))
}

fn connect_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            format!("connect to {addr}: {e} (out of file descriptors: raise `ulimit -n`)")
        }
        Some(libc::EADDRNOTAVAIL) => format!(
            "connect to {addr}: {e} (ephemeral ports exhausted: too many connections in TIME_WAIT?)"
        ),
        _ => format!("connect to {addr}: {e}"),
    }
}

fn drive(poll: &mut Poll, conns: &mut [Conn], s: Schedule, out: &mut WorkerResult) {
    let mut events = Events::with_capacity(EVENTS);
    let mut buf = vec![0u8; crate::args::MAX_SIZE.max(4096)];
    let now = Instant::now();
    for c in conns.iter_mut() {
        start(c, now, out);
    }
    loop {
        let now = Instant::now();
        if now >= s.end {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some((s.end - now).min(TICK))) {
            if e.kind() != ErrorKind::Interrupted {
                out.errors.read += 1;
                break;
            }
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if let State::InFlight { written, .. } = c.state {
                if written < c.msg.len() && ev.is_writable() {
                    flush(c, out);
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                read(c, &mut buf, &s, out);
            }
        }
    }
    let end = Instant::now();
    for c in conns.iter() {
        if matches!(c.state, State::InFlight { .. }) {
            out.outstanding += 1;
            out.oldest_outstanding = out.oldest_outstanding.max(end - c.sent_at);
        }
    }
}

fn start(c: &mut Conn, now: Instant, out: &mut WorkerResult) {
    c.state = State::InFlight { written: 0, got: 0 };
    c.sent_at = now;
    flush(c, out);
}

fn flush(c: &mut Conn, out: &mut WorkerResult) {
    let State::InFlight { written, got } = c.state else {
        return;
    };
    let mut w = written;
    while w < c.msg.len() {
        match c.stream.write(&c.msg[w..]) {
            Ok(0) => return kill(c, &mut out.errors.write),
            Ok(n) => w += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return kill(c, &mut out.errors.write),
        }
    }
    c.state = State::InFlight { written: w, got };
}

fn read(c: &mut Conn, buf: &mut [u8], s: &Schedule, out: &mut WorkerResult) {
    loop {
        let State::InFlight { written, got } = c.state else {
            return;
        };
        let want = buf.len();
        match c.stream.read(buf) {
            Ok(0) => return kill(c, &mut out.errors.eof),
            Ok(n) => {
                // More bytes than the message still owes is a protocol error.
                if got + n > c.msg.len() || buf[..n] != c.msg[got..got + n] {
                    return kill(c, &mut out.errors.mismatch);
                }
                let got = got + n;
                if got < c.msg.len() {
                    c.state = State::InFlight { written, got };
                } else {
                    let now = Instant::now();
                    if now >= s.measure_from && now < s.end {
                        out.round_trips += 1;
                        let ns = (now - c.sent_at).as_nanos().min(u128::from(HIST_MAX_NS)) as u64;
                        out.hist.saturating_record(ns.max(1));
                    }
                    if now >= s.end {
                        c.state = State::Idle;
                        return;
                    }
                    start(c, now, out);
                }
                if n < want {
                    return; // drained: the next arrival raises a new edge
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return kill(c, &mut out.errors.read),
        }
    }
}

fn kill(c: &mut Conn, counter: &mut u64) {
    *counter += 1;
    c.state = State::Dead;
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// A tiny echo server on a thread per connection (std, blocking), for the tests.
    fn echo_server(corrupt: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                thread::spawn(move || {
                    let mut b = [0u8; 4096];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 {
                            return;
                        }
                        if corrupt {
                            b[0] ^= 0xff;
                        }
                        // Echo in two pieces to exercise reassembly.
                        let h = n / 2;
                        if s.write_all(&b[..h]).is_err() || s.write_all(&b[h..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn run_against(addr: SocketAddr, connections: usize) -> (usize, Option<String>, WorkerResult) {
        let (otx, orx) = mpsc::channel();
        let (stx, srx) = mpsc::channel();
        let cfg = Config {
            addr,
            connections,
            first_id: 0,
            size: 64,
            connect_timeout: Duration::from_secs(20),
        };
        let h = thread::spawn(move || run(cfg, otx, srx));
        let o = orx.recv().unwrap();
        let now = Instant::now();
        // A worker that failed to connect has already returned: the send may fail.
        let _ = stx.send(if o.error.is_none() {
            Some(Schedule {
                measure_from: now + Duration::from_millis(50),
                end: now + Duration::from_millis(400),
            })
        } else {
            None
        });
        (o.count, o.error, h.join().unwrap())
    }

    #[test]
    fn counts_round_trips_and_latencies_against_an_echo_server() {
        let (opened, err, r) = run_against(echo_server(false), 8);
        assert_eq!((opened, err), (8, None));
        assert!(
            r.round_trips > 0,
            "a working echo server completes round trips"
        );
        assert_eq!(r.hist.len(), r.round_trips);
        assert_eq!(r.errors, Errors::default());
    }

    #[test]
    fn a_server_that_corrupts_the_echo_scores_errors_not_round_trips() {
        let (opened, _, r) = run_against(echo_server(true), 4);
        assert_eq!(opened, 4);
        assert_eq!(r.round_trips, 0);
        assert_eq!(r.errors.mismatch, 4);
    }

    #[test]
    fn a_refused_connect_is_reported_before_measuring() {
        // Bind then drop to find a port nobody listens on.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (opened, err, r) = run_against(addr, 3);
        assert_eq!(opened, 0);
        assert!(err.unwrap().contains("refused"));
        assert_eq!(r.round_trips, 0);
    }
}
