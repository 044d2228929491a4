//! The relay: serving the page for a *different* program, attached through its
//! observer socket (`python -m beamvm observer --attach SOCKET --http 8080`).
//!
//! The page and its assets come from this process; every data request (`/api/...`,
//! `/metrics`) is forwarded over the program's Unix-socket observer as one line,
//! `{"get": "/api/snapshot?n=10"}`, and the program answers with one line,
//! `{"status": 200, "content_type": "...", "body": "..."}`, computed there by the same
//! code as a local server ([`crate::Local::answer`]). One connection is kept and
//! re-opened after an error; each exchange has [`RELAY_TIMEOUT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{Reply, Request};

/// How long one forwarded request may take (the program's observer thread may need to
/// wait for its GIL; see docs/observer.md).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer line accepted from the program.
pub const MAX_ANSWER: u64 = 16 << 20;

/// Forwards data requests to a program's observer socket.
pub struct Relay {
    path: PathBuf,
    conn: Mutex<Option<BufReader<UnixStream>>>,
}

impl Relay {
    /// A relay to the observer socket at `path` (connected on first use).
    pub fn new(path: impl Into<PathBuf>) -> Relay {
        Relay {
            path: path.into(),
            conn: Mutex::new(None),
        }
    }

    /// Checks that something answers at the socket, with a clear message if not.
    pub fn probe(&self) -> Result<(), String> {
        self.connect().map(|_| ())
    }

    fn connect(&self) -> Result<BufReader<UnixStream>, String> {
        let s = UnixStream::connect(&self.path).map_err(|e| {
            format!(
                "no beamvm observer at {}: start the program with BEAMVM_OBSERVER={} or call \
                 beamvm.observer.serve({:?}) in it ({e})",
                self.path.display(),
                self.path.display(),
                self.path.display()
            )
        })?;
        s.set_read_timeout(Some(RELAY_TIMEOUT))
            .and_then(|_| s.set_write_timeout(Some(RELAY_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Ok(BufReader::new(s))
    }

    fn exchange(&self, conn: &mut BufReader<UnixStream>, line: &[u8]) -> Result<Value, String> {
        conn.get_mut()
            .write_all(line)
            .map_err(|e| format!("the beamvm observer went away: {e}"))?;
        let mut answer = String::new();
        let n = Read::take(&mut *conn, MAX_ANSWER)
            .read_line(&mut answer)
            .map_err(|e| format!("the beamvm observer did not answer: {e}"))?;
        if n == 0 {
            return Err("the beamvm observer went away".into());
        }
        serde_json::from_str(&answer).map_err(|e| format!("bad answer from the observer: {e}"))
    }

    /// Forwards `req` and returns the program's reply (502 when it cannot be reached).
    pub fn answer(&self, req: &Request) -> Reply {
        let mut line = json!({ "get": req.target }).to_string().into_bytes();
        line.push(b'\n');
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        // One retry on a fresh connection: the program may have restarted its observer.
        let mut last_err = String::new();
        for _ in 0..2 {
            let mut conn = match slot.take() {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => c,
                    Err(e) => return Reply::error(502, e),
                },
            };
            match self.exchange(&mut conn, &line) {
                Ok(v) => {
                    *slot = Some(conn);
                    return reply_of(&v);
                }
                Err(e) => last_err = e,
            }
        }
        Reply::error(502, last_err)
    }
}

/// The reply a program's observer sent, or 502 when it is not one.
fn reply_of(v: &Value) -> Reply {
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Reply::error(502, format!("the beamvm observer: {err}"));
    }
    let status = v.get("status").and_then(Value::as_u64);
    let ctype = v.get("content_type").and_then(Value::as_str);
    let body = v.get("body").and_then(Value::as_str);
    match (status, ctype, body) {
        (Some(s), Some(c), Some(b)) if (100..600).contains(&s) => {
            Reply::new(s as u16, c, b.as_bytes().to_vec())
        }
        _ => Reply::error(
            502,
            "the beamvm observer answered without status/content_type/body (an older beamvm?)",
        ),
    }
}
