//! A Rust node an Erlang shell can talk to.
//!
//! ```sh
//! cargo run -p vm-dist --example node -- rs@localhost secret
//! erl -sname erl@localhost -setcookie secret
//! 1> net_adm:ping('rs@localhost').
//! pong
//! 2> {echo, 'rs@localhost'} ! {self(), hello}, flush().
//! Shell got hello
//! 3> rpc:call('rs@localhost', rsmath, add, [1, 2]).
//! 3
//! ```
//!
//! Press Enter to stop the node.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use vm_dist::cookie::Cookie;
use vm_dist::node::{Delivery, Node, NodeConfig};
use vm_dist::Term;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "rs@localhost".into());
    let mut cfg = NodeConfig::new(&name);
    cfg.cookie = args.next().map(|c| Cookie::new(&c));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let node = match Node::start(cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot start {name}: {e}");
            std::process::exit(1);
        }
    };
    node.expose(
        "rsmath",
        "add",
        Arc::new(|args: Vec<Term>| match args.as_slice() {
            [Term::Int(a), Term::Int(b)] => Ok(Term::int(i128::from(*a) + i128::from(*b))),
            _ => Err(Term::atom("badarg")),
        }),
    );
    let mut echo = node.mailbox();
    node.register("echo", &echo);
    std::thread::spawn(move || loop {
        if let Some(Delivery::Message {
            message: Term::Tuple(t),
            ..
        }) = echo.recv(Duration::from_secs(3600))
        {
            if let [Term::Pid(p), body] = t.as_slice() {
                println!("echo: {body:?} back to {p:?}");
                let _ = echo.send(p, body.clone());
            }
        }
    });
    println!(
        "{} up (port {}, built-in EPMD: {}); press Enter to stop",
        node.name(),
        node.port(),
        node.runs_builtin_epmd()
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    node.stop();
}
