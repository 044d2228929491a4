//! A real `erl` node driven through a tiny eval loop on its stdin: used by the tests
//! against real Erlang and by the B12 benchmark. Killed when dropped.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// The Erlang side of a test: reads one expression per line, evaluates it with
/// bindings kept across lines, prints `=> ~w` of the value (or `=> {eval_error, ...}`).
const REPL: &str = r#"
    Loop = fun L(B) ->
        case io:get_line("") of
            eof -> halt();
            Line ->
                B2 = try
                    {ok, Toks, _} = erl_scan:string(Line),
                    {ok, Exprs} = erl_parse:parse_exprs(Toks),
                    {value, V, NB} = erl_eval:exprs(Exprs, B),
                    io:format("=> ~w~n", [V]),
                    NB
                catch C:R -> io:format("=> ~w~n", [{eval_error, C, R}]), B
                end,
                L(B2)
        end
    end,
    Loop(erl_eval:new_bindings())."#;

/// A running `erl`, killed when dropped.
pub struct Erl {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Erl {
    /// Starts `erl -sname NAME -setcookie COOKIE` against the EPMD on `epmd_port`
    /// (never starting one of its own), with `extra` arguments.
    pub fn start(name: &str, cookie: &str, epmd_port: u16, extra: &[&str]) -> Erl {
        let mut cmd = Command::new("erl");
        cmd.args([
            "-noshell",
            "-sname",
            name,
            "-setcookie",
            cookie,
            "-start_epmd",
            "false",
        ])
        .args(extra)
        .args(["-eval", REPL])
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("erl starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            // Bytes, not lines of UTF-8: erl prints Latin-1 atoms as single bytes.
            let mut reader = BufReader::new(stdout);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                if let Some(v) = line.strip_prefix("=> ") {
                    if tx.send(v.to_owned()).is_err() {
                        break;
                    }
                } else {
                    eprintln!("[erl] {line}");
                }
            }
        });
        let mut erl = Erl {
            name: name.to_owned(),
            child,
            stdin,
            lines: rx,
        };
        // Wait until the node is up and registered.
        assert_eq!(erl.eval("node()."), name);
        erl
    }

    /// Evaluates `expr` (ending in `.`) and returns the printed value.
    pub fn eval(&mut self, expr: &str) -> String {
        self.eval_within(expr, Duration::from_secs(60))
    }

    /// As [`Erl::eval`] with a timeout.
    pub fn eval_within(&mut self, expr: &str, timeout: Duration) -> String {
        let one_line = expr.replace('\n', " ");
        writeln!(self.stdin, "{one_line}").expect("erl stdin");
        self.stdin.flush().expect("erl stdin");
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("erl did not answer {expr}"))
    }

    /// The OS process id.
    pub fn os_pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the node at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}
