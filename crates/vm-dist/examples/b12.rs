//! B12: distribution on loopback, erl↔erl beside the Rust node (blocking driver) ↔ erl
//! and Rust node ↔ Rust node, in one run.
//!
//! ```sh
//! cargo run --release -p vm-dist --example b12            # 3 fresh node pairs each
//! cargo run --release -p vm-dist --example b12 -- --quick # 1 pair, fewer messages
//! ```
//!
//! For each pair: round trip of a small message between a process on each node (p50,
//! p99), one-way small-message throughput, 1 MiB binary throughput, rpc:call round
//! trip (erl↔erl and Rust↔erl: `rpc:call` made by erl; Rust↔Rust: a rex call), and the
//! first ping of the fresh pair (connection setup). Medians over the
//! pairs are printed. Both pairs use a built-in EPMD on a free port; nothing outlives
//! the run. Needs `erl` and `erlc` (Debian's erlang-base).

#[path = "support/erl.rs"]
mod erl;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use erl::Erl;
use vm_dist::cookie::Cookie;
use vm_dist::epmd::EpmdServer;
use vm_dist::node::{Delivery, Mailbox, Node, NodeConfig};
use vm_dist::Term;

const COOKIE: &str = "b12_cookie";

struct Sizes {
    rtt: usize,
    small: usize,
    big: usize,
    rpc: usize,
    pairs: usize,
}

#[derive(Default, Clone, Copy)]
struct Result {
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    small_msgs_per_s: f64,
    mib_per_s: f64,
    rpc_p50_us: f64,
    first_ping_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn parse_stats(s: &str) -> (f64, f64) {
    let t = s.trim_matches(|c| c == '{' || c == '}');
    let mut it = t
        .split(',')
        .map(|x| x.trim().parse::<f64>().unwrap_or(f64::NAN));
    (it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN))
}

fn num(s: &str) -> f64 {
    s.trim().parse().unwrap_or(f64::NAN)
}

fn unique(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}_{}@localhost", std::process::id())
}

fn erl_node(name: &str, epmd: u16, ebin: &str) -> Erl {
    let mut e = Erl::start(name, COOKIE, epmd, &["-pa", ebin]);
    assert_eq!(e.eval("b12:start_services()."), "ok");
    e
}

fn erl_pair(i: usize, epmd: u16, ebin: &str, s: &Sizes) -> Result {
    let mut a = erl_node(&unique("b12a", i), epmd, ebin);
    let b = erl_node(&unique("b12b", i), epmd, ebin);
    let bn = b.name.clone();
    let first = num(&a.eval(&format!("element(1, timer:tc(net_adm, ping, ['{bn}']))."))) / 1e3;
    let (p50, p99) = parse_stats(&a.eval(&format!("b12:stats(b12:rtt('{bn}', {})).", s.rtt)));
    let small_ns = num(&a.eval(&format!("b12:oneway('{bn}', {}, {{hello, 1}}).", s.small)));
    let big_ns = num(&a.eval(&format!(
        "b12:oneway('{bn}', {}, binary:copy(<<7>>, 1048576)).",
        s.big
    )));
    let (rpc50, _) = parse_stats(&a.eval(&format!("b12:stats(b12:rpc('{bn}', {})).", s.rpc)));
    Result {
        rtt_p50_us: p50 / 1e3,
        rtt_p99_us: p99 / 1e3,
        small_msgs_per_s: s.small as f64 / (small_ns / 1e9),
        mib_per_s: s.big as f64 / (big_ns / 1e9),
        rpc_p50_us: rpc50 / 1e3,
        first_ping_ms: first,
    }
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Sends `n` copies of `msg` to `sink` on `node`, then `{done, Self}`; waits for the
/// count. Seconds taken.
fn oneway(mb: &mut Mailbox, node: &str, n: usize, msg: &Term) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        mb.send_named("sink", node, msg.clone()).expect("send");
    }
    mb.send_named(
        "sink",
        node,
        Term::tuple(vec![Term::atom("done"), Term::Pid(mb.pid().clone())]),
    )
    .expect("send");
    let got = mb.recv_message(Duration::from_secs(120));
    assert!(
        matches!(&got, Some(Term::Tuple(t)) if t.len() == 2 && t[1] == Term::Int(n as i64)),
        "{got:?}"
    );
    t0.elapsed().as_secs_f64()
}

fn rust_node(name: &str, epmd: u16) -> Node {
    let mut cfg = NodeConfig::new(name);
    cfg.cookie = Some(Cookie::new(COOKIE));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = epmd;
    cfg.start_epmd = false;
    let node = Node::start(cfg).expect("node");
    let me = node.name().to_owned();
    node.expose("erlang", "node", Arc::new(move |_| Ok(Term::atom(&me))));
    node
}

/// Measures from `node` against `echo` and `sink` on `peer`: the round trip and
/// throughput fields (rpc and first ping are the caller's).
fn drive_from_rust(node: &Node, peer: &str, s: &Sizes) -> Result {
    let mut mb = node.mailbox();
    let req = Term::tuple(vec![Term::Pid(mb.pid().clone()), Term::atom("ping")]);
    let mut rtts = Vec::with_capacity(s.rtt);
    for k in 0..s.rtt + 200 {
        let t = Instant::now();
        mb.send_named("echo", peer, req.clone()).expect("send");
        let got = mb.recv(Duration::from_secs(10));
        assert!(matches!(got, Some(Delivery::Message { .. })));
        if k >= 200 {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let small = oneway(
        &mut mb,
        peer,
        s.small,
        &Term::tuple(vec![Term::atom("hello"), Term::Int(1)]),
    );
    let big = oneway(&mut mb, peer, s.big, &Term::binary(vec![7u8; 1 << 20]));
    Result {
        rtt_p50_us: percentile(&rtts, 50),
        rtt_p99_us: percentile(&rtts, 99),
        small_msgs_per_s: s.small as f64 / small,
        mib_per_s: s.big as f64 / big,
        rpc_p50_us: f64::NAN,
        first_ping_ms: f64::NAN,
    }
}

fn rust_erl_pair(i: usize, epmd: u16, ebin: &str, s: &Sizes) -> Result {
    let node = rust_node(&unique("b12r", i), epmd);
    let mut e = erl_node(&unique("b12e", i), epmd, ebin);
    let en = e.name.clone();
    let t0 = Instant::now();
    assert!(node.ping(&en, Duration::from_secs(10)));
    let first = t0.elapsed().as_secs_f64() * 1e3;
    let measured = drive_from_rust(&node, &en, s);
    // rpc:call from erl into the Rust node (erpc spawn request), as erl↔erl measures it.
    let (rpc50, _) = parse_stats(&e.eval(&format!(
        "b12:stats(b12:rpc('{}', {})).",
        node.name(),
        s.rpc
    )));
    node.stop();
    Result {
        rpc_p50_us: rpc50 / 1e3,
        first_ping_ms: first,
        ..measured
    }
}

/// The Rust node's `echo` and `sink` (as b12.erl's), until `stop` is set.
fn rust_services(node: &Node, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut echo = node.mailbox();
    node.register("echo", &echo);
    let mut sink = node.mailbox();
    node.register("sink", &sink);
    let (s1, s2) = (stop.clone(), stop.clone());
    vec![
        std::thread::spawn(move || {
            while !s1.load(Ordering::Acquire) {
                if let Some(Term::Tuple(t)) = echo.recv_message(Duration::from_millis(100)) {
                    if let [Term::Pid(p), m] = t.as_slice() {
                        let _ = echo.send(p, m.clone());
                    }
                }
            }
        }),
        std::thread::spawn(move || {
            let mut k = 0i64;
            while !s2.load(Ordering::Acquire) {
                match sink.recv_message(Duration::from_millis(100)) {
                    Some(Term::Tuple(t)) if t.len() == 2 && t[0].as_atom() == Some("done") => {
                        if let Term::Pid(p) = &t[1] {
                            let counted = Term::tuple(vec![Term::atom("counted"), Term::Int(k)]);
                            let _ = sink.send(p, counted);
                        }
                        k = 0;
                    }
                    Some(_) => k += 1,
                    None => {}
                }
            }
        }),
    ]
}

fn rust_rust_pair(i: usize, epmd: u16, s: &Sizes) -> Result {
    let a = rust_node(&unique("b12x", i), epmd);
    let b = rust_node(&unique("b12y", i), epmd);
    let stop = Arc::new(AtomicBool::new(false));
    let services = rust_services(&b, &stop);
    let t0 = Instant::now();
    assert!(a.ping(b.name(), Duration::from_secs(10)));
    let first = t0.elapsed().as_secs_f64() * 1e3;
    let measured = drive_from_rust(&a, b.name(), s);
    // rpc from a into b's rex.
    let mut mb = a.mailbox();
    let call = Term::tuple(vec![
        Term::atom("call"),
        Term::atom("erlang"),
        Term::atom("node"),
        Term::Nil,
        Term::atom("user"),
    ]);
    let mut rpcs: Vec<f64> = (0..s.rpc)
        .map(|_| {
            let t = Instant::now();
            let r = mb.gen_call("rex", b.name(), call.clone(), Duration::from_secs(10));
            assert_eq!(r.ok(), Some(Term::atom(b.name())));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    rpcs.sort_by(|x, y| x.total_cmp(y));
    stop.store(true, Ordering::Release);
    for t in services {
        let _ = t.join();
    }
    drop(mb);
    a.stop();
    b.stop();
    Result {
        rpc_p50_us: percentile(&rpcs, 50),
        first_ping_ms: first,
        ..measured
    }
}

fn summarize(name: &str, rs: &[Result]) -> Result {
    let m = |f: fn(&Result) -> f64| median(rs.iter().map(f).collect());
    let r = Result {
        rtt_p50_us: m(|r| r.rtt_p50_us),
        rtt_p99_us: m(|r| r.rtt_p99_us),
        small_msgs_per_s: m(|r| r.small_msgs_per_s),
        mib_per_s: m(|r| r.mib_per_s),
        rpc_p50_us: m(|r| r.rpc_p50_us),
        first_ping_ms: m(|r| r.first_ping_ms),
    };
    println!(
        "| {name} | {:.1} / {:.1} | {:.3} M | {:.0} MiB/s | {:.1} | {:.1} |",
        r.rtt_p50_us,
        r.rtt_p99_us,
        r.small_msgs_per_s / 1e6,
        r.mib_per_s,
        r.rpc_p50_us,
        r.first_ping_ms
    );
    r
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let s = if quick {
        Sizes {
            rtt: 1000,
            small: 20_000,
            big: 20,
            rpc: 300,
            pairs: 1,
        }
    } else {
        Sizes {
            rtt: 5000,
            small: 200_000,
            big: 200,
            rpc: 2000,
            pairs: 3,
        }
    };
    let ebin = std::env::temp_dir().join(format!("b12_ebin_{}", std::process::id()));
    std::fs::create_dir_all(&ebin).expect("temp dir");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/b12.erl");
    let ok = Command::new("erlc")
        .args(["-o", ebin.to_str().unwrap_or("."), src])
        .status()
        .is_ok_and(|st| st.success());
    if !ok {
        eprintln!("B12 needs erl and erlc (apt-get install erlang-base)");
        return;
    }
    let ebin_s = ebin.to_string_lossy().into_owned();
    let mut epmd = EpmdServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("epmd");
    let port = epmd.local_addr().port();
    let mut erl_results = Vec::new();
    let mut rust_results = Vec::new();
    let mut rr_results = Vec::new();
    // Interleaved, so both see the same machine state.
    for i in 0..s.pairs {
        erl_results.push(erl_pair(i, port, &ebin_s, &s));
        rust_results.push(rust_erl_pair(i, port, &ebin_s, &s));
        rr_results.push(rust_rust_pair(i, port, &s));
    }
    println!(
        "B12 on loopback, medians of {} fresh pair(s) ({} round trips, {} small msgs, {} x 1 MiB, {} rpc calls)\n",
        s.pairs, s.rtt, s.small, s.big, s.rpc
    );
    println!("| pair | round trip p50 / p99 (µs) | one-way small msgs/s | 1 MiB binaries | rpc:call p50 (µs) | first ping (ms) |");
    println!("|---|---|---|---|---|---|");
    let e = summarize("erl ↔ erl", &erl_results);
    let r = summarize("Rust node (blocking driver) ↔ erl", &rust_results);
    let rr = summarize("Rust node ↔ Rust node (blocking driver)", &rr_results);
    println!(
        "\nratios Rust/erl: round trip p50 {:.2}x, throughput {:.2}x, 1 MiB {:.2}x, rpc {:.2}x, first ping {:.2}x",
        r.rtt_p50_us / e.rtt_p50_us,
        r.small_msgs_per_s / e.small_msgs_per_s,
        r.mib_per_s / e.mib_per_s,
        r.rpc_p50_us / e.rpc_p50_us,
        r.first_ping_ms / e.first_ping_ms
    );
    println!(
        "ratios Rust↔Rust/erl↔erl: round trip p50 {:.2}x, throughput {:.2}x, 1 MiB {:.2}x",
        rr.rtt_p50_us / e.rtt_p50_us,
        rr.small_msgs_per_s / e.small_msgs_per_s,
        rr.mib_per_s / e.mib_per_s
    );
    epmd.stop();
    let _ = std::fs::remove_dir_all(&ebin);
}
