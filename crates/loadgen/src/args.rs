//! Command-line options (hand-parsed: nine flags do not earn an argument-parser crate).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub const USAGE: &str = "\
usage: loadgen --port PORT [--host 127.0.0.1] [-c CONNECTIONS] [--size BYTES]
               [--warmup SECONDS] [--duration SECONDS] [--threads N]
               [--server-pid PID] [--connect-timeout SECONDS]

  -c, --connections   concurrent connections, each with one message in flight (100)
  --size              bytes per message, echoed back by the server (64)
  --warmup            seconds of load before measuring (2)
  --duration          seconds measured (10)
  --threads           generator threads, each with its own epoll (1: on two shared
                      cores a second thread takes CPU from the server it measures)
  --server-pid        read this process's CPU time from /proc to report CPU per round trip
  --connect-timeout   seconds allowed to open all connections (30)

Prints one JSON object on stdout; exits non-zero if not every connection opens.";

/// Largest message: the echo is checked against a per-connection pattern held inline.
pub const MAX_SIZE: usize = 65_536;

#[derive(Debug, Clone)]
pub struct Args {
    pub addr: SocketAddr,
    pub connections: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub threads: usize,
    pub server_pid: Option<u32>,
    pub connect_timeout: Duration,
}

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut host = "127.0.0.1".to_string();
        let mut port: Option<u16> = None;
        let mut a = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            connections: 100,
            size: 64,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            threads: 1,
            server_pid: None,
            connect_timeout: Duration::from_secs(30),
        };
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err("help requested".into());
            }
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--host" => host = value()?,
                "--port" | "-p" => port = Some(num(&flag, &value()?)?),
                "-c" | "--connections" => a.connections = num(&flag, &value()?)?,
                "--size" => a.size = num(&flag, &value()?)?,
                "--warmup" => a.warmup = secs(&flag, &value()?)?,
                "--duration" => a.duration = secs(&flag, &value()?)?,
                "--threads" => a.threads = num(&flag, &value()?)?,
                "--server-pid" => a.server_pid = Some(num(&flag, &value()?)?),
                "--connect-timeout" => a.connect_timeout = secs(&flag, &value()?)?,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        let port = port.ok_or("--port is required")?;
        a.addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("--host {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--host {host:?} resolves to no address"))?;
        if a.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if a.size == 0 || a.size > MAX_SIZE {
            return Err(format!("--size must be 1..={MAX_SIZE}"));
        }
        if a.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        if a.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        Ok(a)
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = num(flag, v)?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("{flag}: {v} is not in 0..=86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        Args::parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_overrides() {
        let a = parse(&["--port", "5555"]).unwrap();
        assert_eq!(a.addr.port(), 5555);
        assert_eq!((a.connections, a.size, a.threads), (100, 64, 1));
        assert_eq!(a.duration, Duration::from_secs(10));
        let a = parse(&[
            "-p",
            "1",
            "-c",
            "10000",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ])
        .unwrap();
        assert_eq!(a.connections, 10_000);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert!(a.warmup.is_zero());
    }

    #[test]
    fn bad_input_is_an_error_naming_the_flag() {
        assert!(parse(&[]).unwrap_err().contains("--port"));
        assert!(parse(&["--port", "x"]).unwrap_err().contains("--port"));
        assert!(parse(&["--port", "1", "-c", "0"])
            .unwrap_err()
            .contains("--connections"));
        assert!(parse(&["--port", "1", "--size", "100000"])
            .unwrap_err()
            .contains("--size"));
        assert!(parse(&["--port", "1", "--duration", "-1"])
            .unwrap_err()
            .contains("--duration"));
        assert!(parse(&["--port", "1", "--bogus"])
            .unwrap_err()
            .contains("--bogus"));
        assert!(parse(&["--port"]).unwrap_err().contains("needs a value"));
    }
}
