//! The Rust node against real Erlang nodes (Debian's erlang-base, OTP 25): ping, cookie,
//! EPMD listings, sends both ways, a randomized term echo checked with `=:=` by Erlang,
//! a 100 MB binary, ticks, node death, links and monitors, rpc both ways.
//!
//! Every test starts its own EPMD on a free port (the built-in one, or the system
//! `epmd` binary where that is the point) and its own `erl` nodes with unique names,
//! and stops them all when it ends, pass or fail.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, have_erl, unique, Erl};
use vm_dist::control::ProcRef;
use vm_dist::cookie::Cookie;
use vm_dist::epmd;
use vm_dist::node::{Delivery, Node, NodeConfig, NodeEvent};
use vm_dist::Term;

const COOKIE: &str = "vm_dist_test_cookie";

/// A node stopped when the test ends.
struct RustNode(Node);

impl Drop for RustNode {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl std::ops::Deref for RustNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

fn config(epmd_port: u16, cookie: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(&unique("rs"));
    cfg.cookie = Some(Cookie::new(cookie));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = epmd_port;
    cfg
}

fn rust_node(epmd_port: u16) -> RustNode {
    RustNode(Node::start(config(epmd_port, COOKIE)).expect("node starts"))
}

/// Stops an echo mailbox's thread when dropped.
struct Echo(Arc<AtomicBool>);

impl Drop for Echo {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A mailbox registered as `echo` that sends `T` back to `Pid` for every `{Pid, T}`.
fn start_echo(node: &Node) -> Echo {
    let mut mb = node.mailbox();
    node.register("echo", &mb);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        while !s.load(Ordering::Acquire) {
            if let Some(Delivery::Message {
                message: Term::Tuple(t),
                ..
            }) = mb.recv(Duration::from_millis(100))
            {
                if let [Term::Pid(p), body] = t.as_slice() {
                    let _ = mb.send(p, body.clone());
                }
            }
        }
    });
    Echo(stop)
}

/// A Rust node with an `echo` mailbox and an erl node, both on a fresh built-in EPMD;
/// `None` (test skipped) without erl.
struct EchoSetup {
    erl: Erl,
    _echo: Echo,
    node: RustNode,
}

fn echo_setup() -> Option<EchoSetup> {
    if !have_erl() {
        return None;
    }
    let port = free_port();
    let node = rust_node(port);
    let echo = start_echo(&node);
    let erl = Erl::start(&unique("erl"), COOKIE, port, &[]);
    Some(EchoSetup {
        erl,
        _echo: echo,
        node,
    })
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn erl_pings_the_rust_node_pong_and_both_list_each_other() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let node = rust_node(port);
    assert!(
        node.runs_builtin_epmd(),
        "nothing listened on the port: built-in EPMD"
    );
    let mut erl = Erl::start(&unique("erl"), COOKIE, port, &[]);
    let rs = node.name().to_owned();
    assert_eq!(erl.eval(&format!("net_adm:ping('{rs}').")), "pong");
    assert_eq!(erl.eval(&format!("lists:member('{rs}', nodes()).")), "true");
    assert!(wait_until(Duration::from_secs(5), || node.nodes()
        == vec![erl.name.clone()]));
    // And the other way: the Rust node pings erl over the same connection, and, after
    // a disconnect, over a new one it sets up itself.
    assert!(node.ping(&erl.name, Duration::from_secs(10)));
    node.disconnect(&erl.name);
    assert!(wait_until(Duration::from_secs(5), || node
        .nodes()
        .is_empty()));
    assert!(node.ping(&erl.name, Duration::from_secs(10)));
    assert_eq!(node.nodes(), vec![erl.name.clone()]);
}

#[test]
fn a_wrong_cookie_gives_pang_both_ways_and_no_connection() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let node = rust_node(port);
    let mut erl = Erl::start(&unique("erl"), "some_other_cookie", port, &[]);
    let rs = node.name().to_owned();
    assert_eq!(erl.eval(&format!("net_adm:ping('{rs}').")), "pang");
    assert!(!node.ping(&erl.name, Duration::from_secs(10)));
    assert!(node.nodes().is_empty());
    assert_eq!(erl.eval("nodes()."), "[]");
}

#[test]
fn epmd_names_lists_the_rust_node_and_erl_registers_with_the_builtin_epmd() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let node = rust_node(port);
    let erl = Erl::start(&unique("erl"), COOKIE, port, &[]);
    let epmd_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let names = epmd::names(epmd_addr).unwrap();
    let alive = |n: &str| epmd::alive_name(n).to_owned();
    assert!(
        names.contains(&(alive(node.name()), node.port())),
        "{names:?}"
    );
    assert!(
        names.iter().any(|(n, _)| *n == alive(&erl.name)),
        "{names:?}"
    );
    // erl's own epmd tool reads our server's listing.
    let out = Command::new("epmd")
        .args(["-port", &port.to_string(), "-names"])
        .output()
        .expect("epmd -names runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "name {} at port {}",
            alive(node.name()),
            node.port()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("name {} at port", alive(&erl.name))),
        "{text}"
    );
    // A look-up gives the erl node's port, and the node leaves the list when it exits.
    let entry = epmd::port_please(epmd_addr, &alive(&erl.name))
        .unwrap()
        .unwrap();
    assert_eq!(entry.highest_version, 6);
    drop(erl);
    assert!(wait_until(Duration::from_secs(10), || {
        epmd::port_please(epmd_addr, &entry.name).unwrap().is_none()
    }));
}

/// The system `epmd` binary, stopped when dropped.
struct SystemEpmd(Child);

impl Drop for SystemEpmd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_rust_node_registers_with_the_system_epmd_when_one_runs() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let child = Command::new("epmd")
        .args(["-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("epmd starts");
    let _epmd = SystemEpmd(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_until(Duration::from_secs(5), || epmd::names(addr).is_ok()));
    let mut cfg = config(port, COOKIE);
    cfg.start_epmd = false;
    let node = RustNode(Node::start(cfg).unwrap());
    assert!(!node.runs_builtin_epmd());
    assert_ne!(node.creation(), 0);
    let out = Command::new("epmd")
        .args(["-port", &port.to_string(), "-names"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let alive = epmd::alive_name(node.name());
    assert!(
        text.contains(&format!("name {alive} at port {}", node.port())),
        "{text}"
    );
    // A second node with the same name is refused by epmd.
    let mut dup = config(port, COOKIE);
    dup.name = node.name().to_owned();
    dup.start_epmd = false;
    assert!(Node::start(dup).is_err());
}

#[test]
fn send_and_registered_send_both_ways() {
    let Some(mut setup) = echo_setup() else {
        return;
    };
    let (erl, node) = (&mut setup.erl, &setup.node);
    let rs = node.name().to_owned();
    // erl -> registered name on the Rust node -> back to erl's pid.
    assert_eq!(
        erl.eval(&format!(
            "{{echo, '{rs}'}} ! {{self(), {{hello, <<\"wörld\">>, [1|2]}}}}, receive R -> R after 10000 -> timeout end."
        )),
        "{hello,<<119,195,182,114,108,100>>,[1|2]}"
    );
    // Rust -> registered name on erl, and to a pid erl sent us.
    assert_eq!(erl.eval("register(sink, self())."), "true");
    let mut mb = node.mailbox();
    mb.send_named(
        "sink",
        &erl.name,
        Term::tuple(vec![Term::atom("from_rust"), Term::Pid(mb.pid().clone())]),
    )
    .unwrap();
    assert_eq!(
        erl.eval(
            "receive {from_rust, P} -> P ! {pid_reply, self()}, ok after 10000 -> timeout end."
        ),
        "ok"
    );
    let got = mb
        .recv_message(Duration::from_secs(10))
        .expect("reply from erl");
    let erl_pid = match got.as_tuple() {
        Some([tag, Term::Pid(p)]) if tag.as_atom() == Some("pid_reply") => p.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(erl_pid.node.as_str(), erl.name);
    mb.send(&erl_pid, Term::atom("direct")).unwrap();
    assert_eq!(
        erl.eval("receive direct -> got_it after 10000 -> timeout end."),
        "got_it"
    );
    // Order per pair: 1000 messages arrive in the order sent.
    for i in 0..1000 {
        mb.send(&erl_pid, Term::Int(i)).unwrap();
    }
    assert_eq!(
        erl.eval("lists:all(fun(I) -> receive I -> true after 10000 -> false end end, lists:seq(0, 999))."),
        "true"
    );
}

/// Erlang code that builds random terms of every kind the format has and counts those
/// for which the fun stored as `check` in the process dictionary is true (a fun, so its variables are fresh on each run).
const GEN: &str = r#"(fun() ->
    Atoms = ['', a, list_to_atom([104, 233, 108, 108, 111]), list_to_atom([26085, 26412, 35486]),
             'with space', list_to_atom(lists:duplicate(255, $x)), list_to_atom([16#1F600]),
             list_to_atom(lists:duplicate(255, 26085))],
    Self = self(),
    Fun1 = fun(X) -> X + 1 end,
    N0 = 42,
    Fun2 = fun(Y) -> {Y, N0, Self} end,
    Gen = fun G(0) -> hd(Atoms);
              G(D) ->
        case rand:uniform(22) of
            1 -> rand:uniform(256) - 1;
            2 -> rand:uniform(1 bsl 31) - (1 bsl 30);
            3 -> (rand:uniform(1 bsl 200)) * (1 - 2 * rand:uniform(2) + 2) - (1 bsl 199);
            4 -> -(1 bsl 64) - rand:uniform(1000);
            5 -> rand:uniform() * 1.0e10 - 5.0e9;
            6 -> -0.0;
            7 -> lists:nth(rand:uniform(length(Atoms)), Atoms);
            8 -> crypto:strong_rand_bytes(rand:uniform(40) - 1);
            9 -> B = rand:uniform(7), <<(rand:uniform(255)):8, (rand:uniform(1 bsl B) - 1):B>>;
            10 -> list_to_tuple([G(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
            11 -> [G(D - 1) || _ <- lists:seq(1, rand:uniform(4))];
            12 -> [G(D - 1) | G(D - 1)];
            13 -> maps:from_list([{G(D - 1), G(D - 1)} || _ <- lists:seq(1, rand:uniform(4))]);
            14 -> maps:from_list([{I, I * 2} || I <- lists:seq(1, 40)]);
            15 -> {self(), make_ref(), G(D - 1)};
            16 -> Fun1;
            17 -> Fun2;
            18 -> fun lists:map/2;
            19 -> "a charlist";
            20 -> [];
            21 -> hd(erlang:ports());
            22 -> list_to_tuple(lists:seq(1, 300))
        end
    end,
    Terms = [Gen(rand:uniform(5)) || _ <- lists:seq(1, 300)],
    Check = get(check),
    Bad = [T || T <- Terms, Check(T)],
    {length(Terms), length(Bad), lists:sublist(Bad, 3)}
end)().
"#;

#[test]
fn random_erlang_terms_echo_back_exactly() {
    let Some(mut setup) = echo_setup() else {
        return;
    };
    let (erl, node) = (&mut setup.erl, &setup.node);
    let rs = node.name().to_owned();
    assert_eq!(erl.eval(&format!("RS = '{rs}', ok.")), "ok");
    // Echoed back: erl compares with =:= and its own encodings of both.
    assert_eq!(
        erl.eval(
            "Echo = fun(T) -> {echo, RS} ! {self(), T}, receive Back -> \
             Back =/= T orelse term_to_binary(Back) =/= term_to_binary(T) \
             after 10000 -> true end end, ok."
        ),
        "ok"
    );
    // Our encoding of what arrived is byte for byte erl's own
    // term_to_binary(T, [{minor_version, 2}]) (UTF-8 atoms, as toward a peer).
    let mut canon = node.mailbox();
    let canon_pid = canon.pid().clone();
    node.register("canon", &canon);
    let canon_thread = std::thread::spawn(move || {
        let mut mismatches = 0;
        while let Some(Term::Tuple(t)) = canon.recv_message(Duration::from_secs(30)) {
            let [Term::Pid(p), term, Term::Binary(otp)] = t.as_slice() else {
                break;
            };
            let same = vm_dist::etf::encode(term).ok().as_deref() == Some(otp.as_slice());
            if !same {
                mismatches += 1;
                eprintln!("encoding differs from OTP's for {term:?}");
            }
            let _ = canon.send(p, Term::atom(if same { "true" } else { "false" }));
        }
        mismatches
    });
    assert_eq!(
        erl.eval(
            "Canon = fun(T) -> {canon, RS} ! {self(), T, term_to_binary(T, [{minor_version, 2}])}, \
             receive Same -> Same =/= true after 10000 -> true end end, ok."
        ),
        "ok"
    );
    for seed in 1..=3 {
        for check in ["Echo", "Canon"] {
            assert_eq!(
                erl.eval(&format!(
                    "rand:seed(exsss, {seed}), put(check, {check}), ok."
                )),
                "ok"
            );
            let out = erl.eval_within(GEN, Duration::from_secs(120));
            assert_eq!(out, "{300,0,[]}", "seed {seed}, {check}");
        }
    }
    node.send(None, &canon_pid, Term::atom("stop")).unwrap();
    assert_eq!(canon_thread.join().unwrap(), 0);
}

#[test]
fn a_100_mb_binary_round_trips() {
    let Some(mut setup) = echo_setup() else {
        return;
    };
    let (erl, node) = (&mut setup.erl, &setup.node);
    let rs = node.name().to_owned();
    let out = erl.eval_within(
        &format!(
            "Big = binary:copy(crypto:strong_rand_bytes(1024), 100 * 1024), \
             {{echo, '{rs}'}} ! {{self(), {{big, Big}}}}, \
             receive {{big, Back}} -> {{byte_size(Back), Back =:= Big}} after 120000 -> timeout end."
        ),
        Duration::from_secs(180),
    );
    assert_eq!(out, "{104857600,true}");
}

#[test]
fn an_idle_connection_survives_three_tick_periods() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let mut cfg = config(port, COOKIE);
    cfg.conn.net_ticktime = Duration::from_secs(4);
    let node = RustNode(Node::start(cfg).unwrap());
    let events = node.monitor_nodes();
    let mut erl = Erl::start(
        &unique("erl"),
        COOKIE,
        port,
        &["-kernel", "net_ticktime", "4"],
    );
    assert!(node.ping(&erl.name, Duration::from_secs(10)));
    // Three whole net_ticktime periods with no traffic but ticks.
    std::thread::sleep(Duration::from_secs(13));
    assert_eq!(node.nodes(), vec![erl.name.clone()]);
    assert_eq!(
        erl.eval(&format!("lists:member('{}', nodes()).", node.name())),
        "true"
    );
    let downs: Vec<NodeEvent> = events
        .try_iter()
        .filter(|e| matches!(e, NodeEvent::Down(..)))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    assert!(node.ping(&erl.name, Duration::from_secs(10)));
}

#[test]
fn a_killed_or_frozen_erl_node_is_detected_with_noconnection_to_links_and_monitors() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let ticktime = Duration::from_secs(4);
    let mut cfg = config(port, COOKIE);
    cfg.conn.net_ticktime = ticktime;
    let node = RustNode(Node::start(cfg).unwrap());
    for how in ["KILL", "STOP"] {
        let events = node.monitor_nodes();
        let mut erl = Erl::start(
            &unique("erl"),
            COOKIE,
            port,
            &["-kernel", "net_ticktime", "4"],
        );
        let mut mb = node.mailbox();
        node.register("probe", &mb);
        // An erl process that sends us its pid and waits.
        assert_eq!(
            erl.eval(&format!(
                "P = spawn(fun() -> receive stop -> ok end end), {{probe, '{}'}} ! {{pid, P}}, ok.",
                node.name()
            )),
            "ok"
        );
        let p = match mb
            .recv_message(Duration::from_secs(10))
            .and_then(|m| m.as_tuple().map(|t| t.to_vec()))
        {
            Some(t) if t.len() == 2 => t[1].as_pid().cloned().expect("a pid"),
            other => panic!("{other:?}"),
        };
        mb.link(&p).unwrap();
        let mref = mb.monitor(&p).unwrap();
        // The link and monitor are in place on the erl side (signals from different
        // senders are not ordered, so the check polls).
        assert_eq!(
            erl.eval(
                "(fun W(N) -> {links, L} = process_info(P, links), \
                 {monitored_by, M} = process_info(P, monitored_by), \
                 case {length(L), length(M)} of {1, 1} -> ok; \
                 R when N == 0 -> R; _ -> timer:sleep(10), W(N - 1) end end)(500)."
            ),
            "ok"
        );
        let t0 = Instant::now();
        if how == "KILL" {
            erl.kill();
        } else {
            erl.signal("STOP");
        }
        let limit = ticktime + ticktime / 4 + Duration::from_secs(3);
        let ev = loop {
            match events.recv_timeout(limit + Duration::from_secs(2)) {
                Ok(NodeEvent::Up(_)) => continue,
                other => break other,
            }
        };
        let took = t0.elapsed();
        assert!(
            matches!(&ev, Ok(NodeEvent::Down(n, _)) if *n == erl.name),
            "{how}: {ev:?}"
        );
        assert!(took <= limit, "{how}: down after {took:?}");
        let mut got_exit = false;
        let mut got_down = false;
        while let Some(d) = mb.recv(Duration::from_secs(2)) {
            match d {
                Delivery::Exit {
                    from,
                    reason,
                    linked: true,
                } => {
                    assert_eq!(from, p);
                    assert_eq!(reason, Term::atom("noconnection"));
                    got_exit = true;
                }
                Delivery::Down {
                    reference,
                    process,
                    reason,
                } => {
                    assert_eq!(reference, mref);
                    assert_eq!(process, ProcRef::Pid(p.clone()));
                    assert_eq!(reason, Term::atom("noconnection"));
                    got_down = true;
                }
                other => panic!("{other:?}"),
            }
            if got_exit && got_down {
                break;
            }
        }
        assert!(
            got_exit && got_down,
            "{how}: exit {got_exit} down {got_down}"
        );
        assert!(node.nodes().is_empty());
    }
}

#[test]
fn rpc_both_ways() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let node = rust_node(port);
    node.expose(
        "rsmath",
        "add",
        Arc::new(|args: Vec<Term>| match args.as_slice() {
            [Term::Int(a), Term::Int(b)] => Ok(Term::int(i128::from(*a) + i128::from(*b))),
            _ => Err(Term::atom("badarg")),
        }),
    );
    let mut erl = Erl::start(&unique("erl"), COOKIE, port, &[]);
    let rs = node.name().to_owned();
    // rpc:call uses erpc's spawn request on OTP 23+ nodes.
    assert_eq!(
        erl.eval(&format!("rpc:call('{rs}', rsmath, add, [1, 2]).")),
        "3"
    );
    assert_eq!(
        erl.eval(&format!(
            "rpc:call('{rs}', rsmath, add, [1 bsl 62, 1 bsl 62])."
        )),
        "9223372036854775808"
    );
    assert_eq!(
        erl.eval(&format!("rpc:call('{rs}', rsmath, add, [a, 2]).")),
        "{badrpc,{'EXIT',{badarg,[]}}}"
    );
    assert_eq!(
        erl.eval(&format!("catch erpc:call('{rs}', rsmath, add, [40, 2]).")),
        "42"
    );
    // The old rex protocol.
    assert_eq!(
        erl.eval(&format!(
            "gen_server:call({{rex, '{rs}'}}, {{call, rsmath, add, [5, 6], group_leader()}})."
        )),
        "11"
    );
    // From Rust to erl through erl's rex.
    let mut mb = node.mailbox();
    let reply = mb
        .gen_call(
            "rex",
            &erl.name,
            Term::tuple(vec![
                Term::atom("call"),
                Term::atom("erlang"),
                Term::atom("node"),
                Term::Nil,
                Term::atom("user"),
            ]),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(reply, Term::atom(&erl.name));
}

#[test]
fn two_rust_nodes_cluster_through_the_builtin_epmd_and_survive_its_owner_leaving() {
    let port = free_port();
    let a = rust_node(port);
    let b = rust_node(port);
    assert!(a.runs_builtin_epmd());
    assert!(!b.runs_builtin_epmd());
    let _echo = start_echo(&b);
    let mut mb = a.mailbox();
    mb.send_named(
        "echo",
        b.name(),
        Term::tuple(vec![Term::Pid(mb.pid().clone()), Term::atom("hi")]),
    )
    .unwrap();
    assert_eq!(
        mb.recv_message(Duration::from_secs(10)),
        Some(Term::atom("hi"))
    );
    assert!(a.ping(b.name(), Duration::from_secs(5)));
    // The node that runs EPMD stops: b takes EPMD over and is still found by a third.
    drop(a);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let alive = epmd::alive_name(b.name()).to_owned();
    assert!(wait_until(Duration::from_secs(10), || {
        b.runs_builtin_epmd() && epmd::port_please(addr, &alive).ok().flatten().is_some()
    }));
    let c = rust_node(port);
    assert!(c.ping(b.name(), Duration::from_secs(5)));
}

#[test]
fn links_unlinks_and_exit_signals_from_erl_reach_the_mailbox() {
    let Some(mut setup) = echo_setup() else {
        return;
    };
    let (erl, node) = (&mut setup.erl, &setup.node);
    assert!(
        node.ping(node.name(), Duration::from_secs(1)),
        "a node pings itself"
    );
    let mut mb = node.mailbox();
    node.register("target", &mb);
    let rs = node.name().to_owned();
    // erl learns the mailbox's pid, links to it from a process that then dies.
    assert_eq!(
        erl.eval(&format!("{{target, '{rs}'}} ! {{whoami, self()}}, ok.")),
        "ok"
    );
    match mb.recv_message(Duration::from_secs(10)) {
        Some(Term::Tuple(t)) if t.len() == 2 => {
            let Term::Pid(p) = &t[1] else { panic!("{t:?}") };
            mb.send(
                p,
                Term::tuple(vec![Term::atom("you_are"), Term::Pid(mb.pid().clone())]),
            )
            .unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        erl.eval("receive {you_are, T0} -> put(t, T0), ok after 10000 -> timeout end."),
        "ok"
    );
    assert_eq!(
        erl.eval("T = get(t), spawn(fun() -> link(T), timer:sleep(100), exit(boom) end), ok."),
        "ok"
    );
    match mb.recv(Duration::from_secs(10)) {
        Some(Delivery::Exit {
            reason,
            linked: true,
            from,
        }) => {
            assert_eq!(reason, Term::atom("boom"));
            assert_eq!(from.node.as_str(), erl.name);
        }
        other => panic!("{other:?}"),
    }
    // Link then unlink (UNLINK_ID, acknowledged): the later exit does not arrive.
    assert_eq!(
        erl.eval("spawn(fun() -> link(T), unlink(T), timer:sleep(100), exit(quiet) end), ok."),
        "ok"
    );
    // exit/2 from erl arrives as an unlinked exit signal.
    assert_eq!(erl.eval("exit(T, shoo)."), "true");
    match mb.recv(Duration::from_secs(10)) {
        Some(Delivery::Exit {
            reason,
            linked: false,
            ..
        }) => assert_eq!(reason, Term::atom("shoo")),
        other => panic!("{other:?}"),
    }
    assert_eq!(mb.recv(Duration::from_millis(500)), None);
    // A monitor from erl on the mailbox fires when the mailbox goes away.
    // (The message after the monitor, from the same process over the same connection,
    // arrives after it: once it is here, the monitor is in place.)
    assert_eq!(
        erl.eval("MRef = erlang:monitor(process, T), T ! sync, ok."),
        "ok"
    );
    assert_eq!(
        mb.recv_message(Duration::from_secs(10)),
        Some(Term::atom("sync"))
    );
    drop(mb);
    assert_eq!(
        erl.eval("receive {'DOWN', MRef, process, T, R} -> R after 10000 -> timeout end."),
        "normal"
    );
    // And on a name nobody has: noproc at once.
    assert_eq!(
        erl.eval(&format!(
            "M2 = erlang:monitor(process, {{nobody, '{rs}'}}), receive {{'DOWN', M2, process, _, R2}} -> R2 after 10000 -> timeout end."
        )),
        "noproc"
    );
}

#[test]
fn hidden_nodes_are_listed_only_as_hidden() {
    if !have_erl() {
        return;
    }
    let port = free_port();
    let mut cfg = config(port, COOKIE);
    cfg.hidden = true;
    let node = RustNode(Node::start(cfg).unwrap());
    let mut erl = Erl::start(&unique("erl"), COOKIE, port, &[]);
    assert!(node.ping(&erl.name, Duration::from_secs(10)));
    let rs = node.name().to_owned();
    assert_eq!(
        erl.eval(&format!("lists:member('{rs}', nodes()).")),
        "false"
    );
    assert_eq!(
        erl.eval(&format!("lists:member('{rs}', nodes(hidden)).")),
        "true"
    );
    // An erl started with -hidden connecting to a visible Rust node: same the other way.
    let visible = rust_node(port);
    let mut hidden_erl = Erl::start(&unique("erlh"), COOKIE, port, &["-hidden"]);
    let vn = visible.name().to_owned();
    assert_eq!(hidden_erl.eval(&format!("net_adm:ping('{vn}').")), "pong");
    assert_eq!(
        hidden_erl.eval(&format!("lists:member('{vn}', nodes(hidden)).")),
        "true"
    );
    assert_eq!(visible.nodes(), vec![hidden_erl.name.clone()]);
}
