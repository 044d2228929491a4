//! A minimal HTTP/1.1 server for GET and HEAD on plain native threads.
//!
//! The observer answers a handful of small GET requests per second; what it must
//! guarantee is that it keeps answering whatever the VM and its clients do. So:
//!
//! * One accept thread and one thread per connection, all plain OS threads that never
//!   touch Python: nothing here needs the GIL, so a VM whose schedulers hold it (busy
//!   Python processes) cannot stall the observer. A thread per connection means a
//!   client that connects and sends nothing holds up no one else.
//! * Bounded everything. At most [`MAX_CONNECTIONS`] connections are served at once;
//!   past it a client gets `503` at once. A request head is read within
//!   [`READ_TIMEOUT`] and [`MAX_HEAD`] bytes, a reply written within [`WRITE_TIMEOUT`];
//!   an idle or stuck client costs one thread for at most that long.
//! * One request per connection (`Connection: close`): a page polling once a second
//!   gains nothing from keep-alive, and it keeps the server stateless.
//! * A handler that panics answers `500`; the worker lives on.
//! * [`HttpServer::close`] (or drop) stops accepting and releases the port before it
//!   returns; connections in hand are finished. In a forked child (which has the
//!   handle but none of the threads) it only marks the handle closed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at once. An operator's page makes about one request a second;
/// 32 leaves room for many tabs and scrapers while bounding the threads an
/// unfriendly client can pin (each for at most [`READ_TIMEOUT`]).
pub const MAX_CONNECTIONS: usize = 32;
/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read a reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accept thread gives an over-the-cap client to send its request
/// before answering `503` (it accepts no one else meanwhile).
pub const BUSY_WAIT: Duration = Duration::from_millis(50);
/// How long a connection stays open after the reply for the client to close it.
pub const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET` or `HEAD` (others are answered `405` before reaching a handler).
    pub method: String,
    /// The request target as sent (path and query, still encoded).
    pub target: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with `status`, `content_type` and `body`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type: content_type.to_owned(),
            body: body.into(),
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply::new(status, "application/json", v.to_string())
    }

    /// A JSON error reply `{"error": msg}`.
    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": msg.into() }))
    }
}

/// What answers requests (called on worker threads).
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running server; [`close`](HttpServer::close) or drop stops it.
pub struct HttpServer {
    addr: SocketAddr,
    closed: Arc<AtomicBool>,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// The listening socket, shared with the accept thread so that `close` can shut it
    /// down (waking a blocked `accept`) while it is certainly open; dropped by `close`.
    listener: Mutex<Option<Arc<TcpListener>>>,
    /// The OS process that started the threads: a forked child has the handle but not
    /// the threads, and must neither wake nor join them (the join would never return).
    owner: u32,
}

impl HttpServer {
    /// Serves `handler` on `listener` (already bound; port 0 was resolved by the bind).
    pub fn start(listener: TcpListener, handler: Handler) -> io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let listener = Arc::new(listener);
        let theirs = listener.clone();
        let accept = std::thread::Builder::new()
            .name("beamvm-observer-http".into())
            .spawn(move || accept_loop(&theirs, &flag, &handler))?;
        Ok(HttpServer {
            addr,
            closed,
            accept: Mutex::new(Some(accept)),
            listener: Mutex::new(Some(listener)),
            owner: std::process::id(),
        })
    }

    /// The address it listens on (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether [`close`](HttpServer::close) has run.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops accepting and releases the port; idempotent. Returns once the listening
    /// socket is closed (a new server may bind the port right after).
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if std::process::id() != self.owner {
            // A forked child: the server runs in the parent only. Forget the handle
            // without touching the thread (joining or detaching a thread that does not
            // exist in this process is not defined).
            std::mem::forget(self.accept.lock().unwrap_or_else(|e| e.into_inner()).take());
            return;
        }
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Wake the accept thread, which sees the flag when `accept` returns: shutting
        // the listening socket down makes a blocked `accept` fail at once (Linux); a
        // connection to it is the portable fallback.
        let shut = listener.as_ref().is_some_and(|l| {
            // SAFETY: `l` keeps the listening socket open for the whole call (this Arc
            // is one of its two owners), so the descriptor is valid and still this
            // socket; shutdown(2) only changes the socket's state.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) == 0 }
        });
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woke = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        let handle = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if shut || woke {
                let _ = h.join();
            } else {
                // Neither could reach it: leave the thread to its next connection
                // rather than block the caller forever.
                drop(h);
            }
        }
        // The accept thread's owner went away with it: this drop closes the socket
        // and frees the port.
        drop(listener);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Counts a connection in [`MAX_CONNECTIONS`] until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: &TcpListener, closed: &AtomicBool, handler: &Handler) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut stream) = conn else {
            // EMFILE and friends: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            busy(&mut stream);
            continue;
        }
        let slot = Slot(active.clone());
        let handler = handler.clone();
        let spawned = std::thread::Builder::new()
            .name("beamvm-observer-conn".into())
            .spawn(move || {
                let _slot = slot;
                let _ = serve_one(stream, &handler);
            });
        if spawned.is_err() {
            // The closure (with the stream and the slot) was dropped: the client sees
            // the connection close, the slot is released.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Answers `503` (the server is at its connection cap) from the accept thread, so
/// waits at most [`BUSY_WAIT`] for the request.
fn busy(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(BUSY_WAIT));
    let _ = stream.set_write_timeout(Some(BUSY_WAIT));
    // Read what came of the request, so closing does not reset the connection (a
    // close with unread data sends RST, which can destroy the reply in flight).
    let _ = stream.read(&mut [0u8; 4096]);
    let _ = write_reply(
        stream,
        false,
        &Reply::error(503, "observer busy: too many connections"),
    );
    let _ = stream.shutdown(Shutdown::Write);
}

/// After the reply: read (and drop) what the client still sends, for at most
/// [`DRAIN_WAIT`], so closing does not turn into a reset that destroys the reply.
fn drain(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(DRAIN_WAIT));
    let mut buf = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn serve_one(mut stream: TcpStream, handler: &Handler) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let (reply, head_only) = match read_head(&stream) {
        Ok(head) => match parse_head(&head) {
            Ok(req) if req.method == "GET" || req.method == "HEAD" => {
                let head_only = req.method == "HEAD";
                let reply = catch_unwind(AssertUnwindSafe(|| handler(&req)))
                    .unwrap_or_else(|_| Reply::error(500, "the observer failed on this request"));
                (reply, head_only)
            }
            Ok(req) => (
                Reply::error(405, format!("{} is not served: use GET", req.method)),
                false,
            ),
            Err(msg) => (Reply::error(400, msg), false),
        },
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            (Reply::error(431, "request head too large"), false)
        }
        Err(e) => return Err(e),
    };
    write_reply(&mut stream, head_only, &reply)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream);
    Ok(())
}

/// Reads up to the blank line that ends the head, at most [`MAX_HEAD`] bytes.
fn read_head(stream: &TcpStream) -> io::Result<String> {
    let mut r = BufReader::new(stream.take(MAX_HEAD as u64 + 1));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return if head.len() >= MAX_HEAD {
                Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"))
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ))
            };
        }
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        head.push_str(&line);
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
}

/// Parses the request line of `head` (headers are not needed by any route).
pub fn parse_head(head: &str) -> Result<Request, String> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported protocol {version:?}"));
    }
    if !target.starts_with('/') {
        return Err(format!("bad request target {target:?}"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        path: decode(path),
        query,
    })
}

/// Percent-decoding (`+` as space in queries is also accepted); invalid escapes and
/// non-UTF-8 results are kept as lossily decoded text, never an error.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_reply(w: &mut impl Write, head_only: bool, r: &Reply) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !head_only {
        w.write_all(&r.body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_with_decoded_query() {
        let r = parse_head("GET /api/process?pid=%3C0.5.0%3E&n=3 HTTP/1.1\r\nHost: x\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/process");
        assert_eq!(r.param("pid"), Some("<0.5.0>"));
        assert_eq!(r.param("n"), Some("3"));
        assert_eq!(r.param("missing"), None);
        let r = parse_head("HEAD / HTTP/1.0").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("HEAD", "/"));
        assert!(r.query.is_empty());
    }

    #[test]
    fn bad_request_lines_are_errors() {
        for bad in [
            "",
            "GET",
            "GET /",
            "GET / HTTP/1.1 extra",
            "GET / SPDY/3",
            "GET http://x/ HTTP/1.1",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoding_keeps_bad_escapes_and_bytes() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%ff"), "\u{fffd}");
    }
}
