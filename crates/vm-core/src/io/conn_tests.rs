//! The data path's state machine against a scripted transport (no kernel).

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use super::*;
use crate::io::options::ActiveOpt;

/// A scripted peer: `chunks` are what successive reads return (then WouldBlock, or
/// EOF once `eof` is set); writes take at most `room` bytes before WouldBlock.
#[derive(Default)]
struct Mock {
    chunks: VecDeque<Vec<u8>>,
    eof: bool,
    reset: bool,
    reads: usize,
    written: Vec<u8>,
    room: usize,
    shut: bool,
}

impl Read for Mock {
    /// Like a kernel: as much of what is queued as fits (chunks are coalesced).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let mut n = 0;
        while n < buf.len() {
            let Some(mut c) = self.chunks.pop_front() else {
                break;
            };
            let k = c.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&c[..k]);
            n += k;
            if k < c.len() {
                c.drain(..k);
                self.chunks.push_front(c);
            }
        }
        match n {
            0 if self.reset => Err(io::Error::from_raw_os_error(libc::ECONNRESET)),
            0 if self.eof => Ok(0),
            0 => Err(ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Mock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Mock {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

const OWNER: Pid = Pid::new(7, 0);
const OTHER: Pid = Pid::new(8, 0);
const ID: SocketId = SocketId(1);

fn conn(packet: Packet, active: ActiveOpt) -> ConnState {
    let opts = SocketOpts {
        packet,
        active,
        ..SocketOpts::default()
    };
    ConnState::new(ID, OWNER, opts.validate().unwrap())
}

fn frame4(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn scratch() -> Vec<u8> {
    vec![0u8; READ_CHUNK]
}

/// Data messages and other events for the owner, in order, as short strings.
fn summary(out: &Out) -> Vec<String> {
    out.iter()
        .map(|(pid, ev)| {
            let who = if *pid == OWNER { "" } else { "other:" };
            let what = match ev {
                IoEvent::Tcp { data, .. } => {
                    format!("tcp {}", String::from_utf8_lossy(data.as_slice()))
                }
                IoEvent::TcpClosed { .. } => "closed".into(),
                IoEvent::TcpError { reason, .. } => format!("error {}", reason.reason()),
                IoEvent::TcpPassive { .. } => "passive".into(),
                IoEvent::Received { result, .. } => match result {
                    Ok(d) => format!("recv {}", String::from_utf8_lossy(d.as_slice())),
                    Err(e) => format!("recv error {}", e.reason()),
                },
                IoEvent::SendReady { result, .. } => format!("send_ready {result:?}"),
                other => format!("{other:?}"),
            };
            format!("{who}{what}")
        })
        .collect()
}

#[test]
fn active_5_delivers_exactly_5_messages_then_tcp_passive_and_stops_reading() {
    let mut c = conn(Packet::Len(4), ActiveOpt::N(5));
    let mut io = Mock::default();
    for i in 0..10 {
        io.chunks.push_back(frame4(format!("m{i}").as_bytes()));
    }
    // A read buffer of exactly one frame, so each read takes one and the kernel
    // visibly keeps the rest.
    let mut small = [0u8; 6];
    let mut out = Out::new();
    assert_eq!(
        c.on_ready(&mut io, Ready::READ, &mut small, &mut out),
        After::Keep
    );
    let want: Vec<String> = (0..5)
        .map(|i| format!("tcp m{i}"))
        .chain(["passive".to_string()])
        .collect();
    assert_eq!(summary(&out), want);
    assert_eq!(
        io.reads, 5,
        "no read once the count ran out: the rest stays in the kernel"
    );
    assert_eq!(io.chunks.len(), 5);
    // A new edge while passive reads nothing.
    out.clear();
    assert_eq!(
        c.on_ready(&mut io, Ready::READ, &mut small, &mut out),
        After::Keep
    );
    assert!(out.is_empty());
    assert_eq!(io.reads, 5);
}

#[test]
fn a_passive_socket_with_no_recv_is_not_read_backpressure() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock::default();
    io.chunks.push_back(b"data".to_vec());
    let mut out = Out::new();
    for _ in 0..3 {
        let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    }
    assert_eq!(io.reads, 0);
    assert!(out.is_empty());
    // The cached readiness lets a later recv read without a new edge.
    let got = c.recv(&mut io, OTHER, 0, &mut scratch(), &mut out).unwrap();
    assert_eq!(got.unwrap().as_slice(), b"data");
    assert!(
        out.is_empty(),
        "a result returned at once is not also an event"
    );
}

#[test]
fn once_delivers_one_and_rearming_delivers_the_next_without_a_new_edge() {
    let mut c = conn(Packet::Line, ActiveOpt::Once);
    let mut io = Mock::default();
    io.chunks.push_back(b"a\nb\nc".to_vec());
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["tcp a\n"]);
    out.clear();
    let s = SetOpts::active(ActiveOpt::Once);
    assert_eq!(
        c.setopts(&mut io, s, &mut scratch(), &mut out),
        Ok(After::Keep)
    );
    assert_eq!(summary(&out), ["tcp b\n"]);
    out.clear();
    // "c" is a partial line. The rest arrives while the socket is passive: the edge
    // is remembered, nothing is read, and re-arming reads it without a new edge.
    io.chunks.push_back(b"\n".to_vec());
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    assert!(out.is_empty());
    let reads = io.reads;
    let _ = c.setopts(&mut io, s, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["tcp c\n"]);
    assert_eq!(io.reads, reads + 1);
}

#[test]
fn packet_4_survives_1_byte_reads() {
    let mut c = conn(Packet::Len(4), ActiveOpt::True);
    let mut io = Mock::default();
    let stream = [frame4(b"hello"), frame4(b""), frame4(b"world")].concat();
    let mut out = Out::new();
    for b in stream {
        io.chunks.push_back(vec![b]);
        let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    }
    assert_eq!(summary(&out), ["tcp hello", "tcp ", "tcp world"]);
}

#[test]
fn an_oversize_frame_is_an_error_in_both_modes() {
    let big = (1u32 << 20).to_be_bytes().to_vec();
    let mut c = conn(Packet::Len(4), ActiveOpt::True);
    c.opts.packet_size = 1000;
    let mut io = Mock::default();
    io.chunks.push_back(big.clone());
    let mut out = Out::new();
    assert_eq!(
        c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out),
        After::Close
    );
    assert_eq!(summary(&out), ["error emsgsize", "closed"]);

    let mut c = conn(Packet::Len(4), ActiveOpt::False);
    c.opts.packet_size = 1000;
    let mut io = Mock::default();
    io.chunks.push_back(big);
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    let r = c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out);
    assert_eq!(r, Err(IoError::Emsgsize));
    assert!(c.is_closed());
    assert_eq!(
        c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out),
        Err(IoError::Closed)
    );
}

#[test]
fn eof_and_reset_reach_the_owner_or_the_waiter() {
    let mut c = conn(Packet::Raw, ActiveOpt::True);
    let mut io = Mock {
        eof: true,
        ..Mock::default()
    };
    io.chunks.push_back(b"last".to_vec());
    let mut out = Out::new();
    // Data and FIN in one edge: the short read must not hide the EOF.
    let edge = Ready {
        hup: true,
        ..Ready::READ
    };
    assert_eq!(
        c.on_ready(&mut io, edge, &mut scratch(), &mut out),
        After::Close
    );
    assert_eq!(summary(&out), ["tcp last", "closed"]);

    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock::default();
    let mut out = Out::new();
    assert_eq!(
        c.recv(&mut io, OTHER, 0, &mut scratch(), &mut out),
        Ok(None)
    );
    io.reset = true;
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["other:recv error econnreset"]);
    assert!(c.is_closed());
}

#[test]
fn recv_rules() {
    let mut c = conn(Packet::Raw, ActiveOpt::Once);
    let mut io = Mock::default();
    let mut out = Out::new();
    assert_eq!(
        c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out),
        Err(IoError::Einval)
    );
    let _ = c.setopts(
        &mut io,
        SetOpts::active(ActiveOpt::False),
        &mut scratch(),
        &mut out,
    );
    assert_eq!(
        c.recv(&mut io, OWNER, 3, &mut scratch(), &mut out),
        Ok(None)
    );
    assert_eq!(
        c.recv(&mut io, OTHER, 3, &mut scratch(), &mut out),
        Err(IoError::Ealready)
    );
    io.chunks.push_back(b"ab".to_vec());
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    assert!(out.is_empty(), "recv(3) waits for the third byte");
    io.chunks.push_back(b"cd".to_vec());
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["recv abc"]);
    out.clear();
    assert_eq!(
        c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out)
            .unwrap()
            .unwrap()
            .as_slice(),
        b"d"
    );
    // A cancelled recv (timeout) leaves no waiter behind.
    assert_eq!(
        c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out),
        Ok(None)
    );
    assert!(c.cancel(OWNER));
    assert!(!c.cancel(OWNER));
    let mut line = conn(Packet::Line, ActiveOpt::False);
    assert_eq!(
        line.recv(&mut io, OWNER, 5, &mut scratch(), &mut out),
        Err(IoError::Einval)
    );
}

#[test]
fn send_suspends_above_the_high_watermark_and_resumes_at_the_low() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock {
        room: 1000,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    let chunk = Binary::new(vec![1u8; 4096]);
    assert_eq!(
        c.send(&mut io, OWNER, chunk.clone(), &mut out),
        Ok(SendStatus::Sent)
    );
    assert_eq!(c.buffered().1, 3096);
    assert_eq!(
        c.send(&mut io, OWNER, chunk.clone(), &mut out),
        Ok(SendStatus::Sent)
    );
    assert_eq!(
        c.send(&mut io, OWNER, chunk, &mut out),
        Ok(SendStatus::Suspend)
    );
    assert!(out.is_empty());
    // The kernel takes some, not enough: still suspended.
    io.room = 4000;
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert!(out.is_empty());
    io.room = 100_000;
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["send_ready Ok(())"]);
    assert_eq!(io.written.len(), 3 * 4096);
}

#[test]
fn packet_2_send_adds_the_header_and_rejects_what_it_cannot_frame() {
    let mut c = conn(Packet::Len(2), ActiveOpt::False);
    let mut io = Mock {
        room: 1 << 20,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert_eq!(
        c.send(&mut io, OWNER, Binary::from_slice(b"hi"), &mut out),
        Ok(SendStatus::Sent)
    );
    assert_eq!(io.written, [0, 2, b'h', b'i']);
    let huge = Binary::new(vec![0; 70_000]);
    assert_eq!(
        c.send(&mut io, OWNER, huge, &mut out),
        Err(IoError::Emsgsize)
    );
    assert!(
        !c.is_closed(),
        "a frame we refuse to send does not break the socket"
    );
}

#[test]
fn shutdown_write_waits_for_the_queue_then_reading_goes_on() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock {
        room: 2,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    let _ = c.send(&mut io, OWNER, Binary::from_slice(b"abcd"), &mut out);
    c.shutdown_write(&mut io, &mut out).unwrap();
    assert!(!io.shut, "two bytes still queued");
    assert_eq!(
        c.send(&mut io, OWNER, Binary::from_slice(b"x"), &mut out),
        Err(IoError::Closed)
    );
    io.room = 10;
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert!(io.shut);
    assert_eq!(io.written, b"abcd");
    io.chunks.push_back(b"reply".to_vec());
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    let got = c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out).unwrap();
    assert_eq!(got.unwrap().as_slice(), b"reply");
}

#[test]
fn close_releases_everyone_suspended() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock::default();
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert_eq!(
        c.send(&mut io, OTHER, Binary::new(vec![0; 20_000]), &mut out),
        Ok(SendStatus::Suspend)
    );
    assert_eq!(
        c.recv(&mut io, OWNER, 0, &mut scratch(), &mut out),
        Ok(None)
    );
    assert_eq!(c.close(&mut io, &mut out), After::Close);
    let mut s = summary(&out);
    s.sort();
    assert_eq!(s, ["other:send_ready Err(Closed)", "recv error closed"]);
    assert_eq!(c.buffered(), (0, 0));
}

#[test]
fn drain_keeps_what_send_queued_until_it_is_written() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock {
        room: 1000,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    // Below the high watermark: `send` returns, the caller thinks it sent 3000 bytes.
    assert_eq!(
        c.send(&mut io, OTHER, Binary::new(vec![1; 3000]), &mut out),
        Ok(SendStatus::Sent)
    );
    assert_eq!(c.drain(&mut io, OTHER, &mut out), 2000, "2000 still queued");
    assert!(out.is_empty(), "nothing to tell yet");
    io.room = 1500;
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert!(out.is_empty(), "500 bytes still queued");
    io.room = 10_000;
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["other:send_ready Ok(())"]);
    assert_eq!(
        io.written.len(),
        3000,
        "every byte went out before the close"
    );
    out.clear();
    assert_eq!(c.drain(&mut io, OTHER, &mut out), 0, "empty: close at once");
    assert_eq!(c.close(&mut io, &mut out), After::Close);
    assert!(out.is_empty(), "the drainer was told once");
}

#[test]
fn a_drain_is_released_by_a_failure_and_withdrawn_by_cancel() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock {
        room: 10,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    let _ = c.send(&mut io, OTHER, Binary::new(vec![1; 100]), &mut out);
    assert_eq!(c.drain(&mut io, OTHER, &mut out), 90);
    assert!(c.cancel(OTHER), "it was waiting");
    assert!(!c.cancel(OTHER), "and is no more");
    assert_eq!(c.drain(&mut io, OTHER, &mut out), 90);
    let _ = c.close(&mut io, &mut out);
    assert_eq!(summary(&out), ["other:send_ready Err(Closed)"]);
    assert_eq!(
        c.drain(&mut io, OTHER, &mut out),
        0,
        "closed: nothing to wait for"
    );
}

#[test]
fn a_flood_on_an_active_true_socket_yields_after_a_turn_and_resumes() {
    let mut c = conn(Packet::Raw, ActiveOpt::True);
    let mut io = Mock::default();
    for _ in 0..READS_PER_TURN * 2 + 3 {
        io.chunks.push_back(vec![7u8; READ_CHUNK]);
    }
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::READ, &mut scratch(), &mut out);
    assert_eq!(out.len(), READS_PER_TURN, "one turn's worth");
    assert!(c.take_turn_request());
    assert!(!c.take_turn_request(), "reading the request clears it");
    // Another turn, with no new edge (none would come): it goes on where it stopped.
    let _ = c.on_ready(&mut io, Ready::default(), &mut scratch(), &mut out);
    let _ = c.on_ready(&mut io, Ready::default(), &mut scratch(), &mut out);
    assert_eq!(out.len(), READS_PER_TURN * 2 + 3);
    assert!(
        !c.take_turn_request(),
        "drained: nothing left to ask a turn for"
    );
}

#[test]
fn a_deferred_send_is_queued_until_flushed_and_keeps_its_place_in_the_stream() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock {
        room: 1 << 20,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    let send = |c: &mut ConnState, io: &mut Mock, out: &mut Out, b: &[u8], defer| {
        c.send_or_defer(io, OWNER, Binary::from_slice(b), defer, out)
    };
    // The first deferred send asks to be noted, the second does not (noted already).
    assert_eq!(
        send(&mut c, &mut io, &mut out, b"ab", true),
        Ok((SendStatus::Sent, true))
    );
    assert_eq!(
        send(&mut c, &mut io, &mut out, b"cd", true),
        Ok((SendStatus::Sent, false))
    );
    assert!(io.written.is_empty(), "a deferred send does not write");
    assert_eq!(c.buffered().1, 4);
    // A send that writes at once writes what was deferred first.
    assert_eq!(
        send(&mut c, &mut io, &mut out, b"ef", false),
        Ok((SendStatus::Sent, false))
    );
    assert_eq!(io.written, b"abcdef");
    // The flush finds nothing left, and the next deferred send is noted again.
    assert_eq!(c.flush_deferred(&mut io, &mut out), After::Keep);
    assert_eq!(
        send(&mut c, &mut io, &mut out, b"gh", true),
        Ok((SendStatus::Sent, true))
    );
    assert_eq!(c.flush_deferred(&mut io, &mut out), After::Keep);
    assert_eq!(io.written, b"abcdefgh");
    assert!(out.is_empty());
}

#[test]
fn a_deferred_send_past_the_high_watermark_writes_and_suspends_as_before() {
    let mut c = conn(Packet::Raw, ActiveOpt::False);
    let mut io = Mock {
        room: 1000,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    let chunk = Binary::new(vec![1u8; 4096]);
    let r = c.send_or_defer(&mut io, OWNER, chunk.clone(), true, &mut out);
    assert_eq!(r, Ok((SendStatus::Sent, true)));
    assert!(io.written.is_empty());
    let r = c.send_or_defer(&mut io, OWNER, chunk.clone(), true, &mut out);
    assert_eq!(r, Ok((SendStatus::Sent, false)));
    // 12 KiB queued is past the high watermark (8 KiB): written now, and the kernel
    // takes 1000 bytes only, so the sender suspends.
    let r = c.send_or_defer(&mut io, OWNER, chunk, true, &mut out);
    assert_eq!(r, Ok((SendStatus::Suspend, false)));
    assert_eq!(io.written.len(), 1000);
    io.room = 100_000;
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    assert_eq!(summary(&out), ["send_ready Ok(())"]);
    assert_eq!(io.written.len(), 3 * 4096);
}

#[test]
fn deferred_bytes_are_written_by_close_and_a_closed_socket_flushes_nothing() {
    let mut c = conn(Packet::Len(2), ActiveOpt::False);
    let mut io = Mock {
        room: 1 << 20,
        ..Mock::default()
    };
    let mut out = Out::new();
    let _ = c.on_ready(&mut io, Ready::WRITE, &mut scratch(), &mut out);
    let r = c.send_or_defer(&mut io, OWNER, Binary::from_slice(b"hi"), true, &mut out);
    assert_eq!(r, Ok((SendStatus::Sent, true)));
    assert_eq!(c.close(&mut io, &mut out), After::Close);
    assert_eq!(io.written, [0, 2, b'h', b'i']);
    assert_eq!(c.flush_deferred(&mut io, &mut out), After::Close);
    assert_eq!(io.written.len(), 4);
}
