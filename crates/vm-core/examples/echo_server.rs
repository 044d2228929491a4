//! B11's beamvm-native server (benches/b11/README.md has the contract): a TCP echo
//! server of native processes, one per connection in `{active, once}`, on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p vm-core --example echo_server [-- --hog] [--port P]
//! ```
//!
//! Prints `READY <port> <pid>` and runs until killed. `--hog` adds one native process
//! that spins forever (the schedulers preempt it).

#[path = "common/echo_native.rs"]
mod echo_native;

use std::net::SocketAddr;

use vm_core::{Vm, VmConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hog = args.iter().any(|a| a == "--hog");
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    raise_nofile();
    let vm = Vm::start(VmConfig::default()).expect("vm");
    let port = echo_native::start(&vm.handle(), SocketAddr::from(([127, 0, 0, 1], port)));
    if port == 0 {
        eprintln!("echo_server: cannot listen");
        std::process::exit(1);
    }
    if hog {
        vm.spawn(echo_native::hog()).expect("hog");
    }
    println!("READY {port} {}", std::process::id());
    loop {
        std::thread::park();
    }
}

/// The soft descriptor limit raised to the hard one (10,000 connections).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the one struct passed, which lives on
    // this stack frame for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
