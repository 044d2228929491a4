//! The web observer over real sockets: pages, snapshot and process JSON against a
//! running VM, bad requests, idle clients, busy schedulers, close, a stopped VM, the
//! relay to another process's observer socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vm_core::{Cx, Fragment, Pid, Step, Term, Vm, VmConfig, VmRef};
use vm_observer::{relay::Relay, serve, Backend, Frame, HttpServer, Local, StackTraceFn};

fn vm(n: usize) -> Vm {
    Vm::start(VmConfig {
        schedulers: n,
        schedulers_online: n,
        ..VmConfig::default()
    })
    .expect("vm starts")
}

fn local(v: &Vm, stack: Option<StackTraceFn>) -> HttpServer {
    let h = v.handle();
    serve(
        "127.0.0.1",
        0,
        Backend::Local(Local::new(Arc::new(move || Some(h.clone())), stack)),
    )
    .expect("binds")
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("reads the reply");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head[9..12].parse().expect("a status code");
    Answer {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, target: &str) -> Answer {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

fn idle() -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    |cx: &mut Cx<'_>| {
        while cx.recv().is_some() {}
        Step::Wait
    }
}

/// Never receives: what is sent to it stays queued.
fn hoarder() -> impl FnMut(&mut Cx<'_>) -> Step + Send + 'static {
    |_cx: &mut Cx<'_>| Step::Wait
}

fn int(i: i64) -> Fragment {
    Fragment::from_term(&Term::Int(i))
}

#[test]
fn the_page_and_its_files_are_served() {
    let v = vm(1);
    let srv = local(&v, None);
    let a = srv.local_addr();
    let page = get(a, "/");
    assert_eq!(page.status, 200);
    assert!(page.head.contains("Content-Type: text/html"));
    assert!(page.head.contains("Connection: close"));
    let html = page.text();
    assert!(html.contains("<script src=\"/observer.js\">") && html.contains("chart-util"));
    for chart in [
        "chart-util",
        "chart-runq",
        "chart-memory",
        "chart-procs",
        "chart-reds",
        "chart-msgs",
    ] {
        assert!(html.contains(chart), "{chart}");
    }
    let js = get(a, "/observer.js");
    assert!(js.head.contains("text/javascript") && js.text().contains("/api/snapshot"));
    assert!(get(a, "/observer.css").head.contains("text/css"));
    assert!(get(a, "/process?pid=<0.1.0>")
        .text()
        .contains("data-slot=\"current_stacktrace\""));
    let head = raw(a, b"HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head
        .head
        .contains(&format!("Content-Length: {}", page.body.len())));
}

#[test]
fn a_snapshot_describes_the_vm() {
    let v = vm(2);
    for _ in 0..50 {
        v.spawn(idle()).unwrap();
    }
    let hog = v.spawn(hoarder()).unwrap();
    v.register(vm_core::Atom::new("hog"), hog).unwrap();
    for i in 0..7 {
        v.send(hog, int(i));
    }
    assert!(eventually(5, || v.top(1, "message_queue_len").unwrap()
        == vec![(hog, 7)]));
    let srv = local(&v, None);
    // Wait out the snapshot cache of any earlier request.
    std::thread::sleep(vm_observer::SNAPSHOT_TTL);
    let s = get(srv.local_addr(), "/api/snapshot?n=3").json();
    assert_eq!(s["running"], true);
    assert_eq!(s["process_count"], 51);
    assert_eq!(s["system_info"]["schedulers"], 2);
    let row = &s["top"]["message_queue_len"][0];
    assert_eq!(row["pid"], hog.to_string());
    assert_eq!(row["value"], 7);
    assert_eq!(row["name"], "hog");
    assert_eq!(row["message_queue_len"], 7);
    assert_eq!(s["top"]["memory"].as_array().unwrap().len(), 3);
    assert_eq!(s["messages_queued"], 7);
    let m = &s["memory"];
    let sum: u64 = ["processes", "binary", "atom", "system"]
        .iter()
        .map(|k| m[k].as_u64().unwrap())
        .sum();
    assert_eq!(m["total"].as_u64(), Some(sum));
    let st = &s["statistics"];
    assert_eq!(st["scheduler_wall_time"].as_array().unwrap().len(), 2);
    assert_eq!(st["spawned"], 51);
    assert_eq!(st["messages_sent"].as_u64(), Some(7));
    assert!(s["took"].as_f64().unwrap() >= 0.0);
}

#[test]
fn snapshots_are_shared_for_a_moment() {
    let v = vm(1);
    let srv = local(&v, None);
    let a = srv.local_addr();
    let first = get(a, "/api/snapshot").json();
    let again = get(a, "/api/snapshot").json();
    assert_eq!(
        first["time"], again["time"],
        "within the TTL: the same snapshot"
    );
    std::thread::sleep(vm_observer::SNAPSHOT_TTL + Duration::from_millis(50));
    assert_ne!(get(a, "/api/snapshot").json()["time"], first["time"]);
}

#[test]
fn bad_requests_get_clear_errors() {
    let v = vm(1);
    let srv = local(&v, None);
    let a = srv.local_addr();
    let post = raw(
        a,
        b"POST /api/snapshot HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"));
    for (target, status, says) in [
        (
            "/api/snapshot?n=abc",
            400,
            "n must be an int between 0 and 1000",
        ),
        ("/api/snapshot?n=1001", 400, "between 0 and 1000"),
        ("/api/process", 400, "pid is missing"),
        (
            "/api/process?pid=hello",
            400,
            "not a local pid such as <0.5.0>",
        ),
        ("/api/process?pid=<0.1.0>&sample=-1", 400, "sample must be"),
        ("/nope", 404, "no such page: /nope"),
    ] {
        let r = get(a, target);
        assert_eq!(r.status, status, "{target}");
        let err = r.json()["error"].as_str().unwrap().to_owned();
        assert!(err.contains(says), "{target}: {err}");
    }
    assert_eq!(raw(a, b"GARBAGE\r\n\r\n").status, 400);
    let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..1000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    assert_eq!(raw(a, &huge).status, 431);
    // The server is still fine.
    assert_eq!(get(a, "/api/snapshot").status, 200);
}

#[test]
fn a_process_page_shows_info_links_queue_and_the_stacktrace_slot() {
    let v = vm(2);
    let hog = v.spawn(hoarder()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut linked = false;
    let friend = v
        .spawn(Box::new(move |cx: &mut Cx<'_>| {
            if !linked {
                linked = true;
                let _ = cx.link(hog);
                tx.send(()).unwrap();
            }
            Step::Wait
        }))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    v.send(hog, int(1));
    v.send(
        hog,
        Fragment::from_term(&Term::Tuple(vec![Term::atom("hi"), Term::Int(2)])),
    );
    assert!(eventually(5, || v
        .process_info(hog)
        .is_some_and(
            |i| i.message_queue_len == 2 && !i.links.is_empty()
        )));
    let srv = local(&v, None);
    let a = srv.local_addr();
    // Messages still in the inbox (the process has not run since) are not sampled.
    let mut d = Value::Null;
    assert!(eventually(5, || {
        d = get(a, &format!("/api/process?pid={hog}")).json();
        d["in_transit"] == 0
    }));
    assert_eq!(d["alive"], true);
    assert_eq!(d["locked"], true);
    assert_eq!(d["info"]["links"][0], friend.to_string());
    assert_eq!(
        d["queue_sample"],
        serde_json::json!(["1", "(Atom('hi'), 2)"]),
        "{d}"
    );
    assert_eq!(d["stacktrace_available"], false);
    assert!(d["current_stacktrace"].is_null());
    let one = get(a, &format!("/api/process?pid={hog}&sample=1")).json();
    assert_eq!(one["queue_sample"].as_array().unwrap().len(), 1);
    // Percent-encoded, as the page sends it.
    let enc = format!("/api/process?pid=%3C0.{}.{}%3E", hog.index, hog.serial);
    assert_eq!(get(a, &enc).status, 200);
    let dead = get(a, "/api/process?pid=<0.99999.0>");
    assert_eq!(dead.status, 404);
    assert_eq!(dead.json()["alive"], false);

    // With a provider installed (what the call-tracing work adds), the frames show.
    let stack: StackTraceFn = Arc::new(move |p: Pid| {
        (p == hog).then(|| {
            vec![Frame {
                module: "app.orders".into(),
                function: "place".into(),
                file: "app/orders.py".into(),
                line: 42,
            }]
        })
    });
    let srv2 = local(&v, Some(stack));
    let d = get(srv2.local_addr(), &format!("/api/process?pid={hog}")).json();
    assert_eq!(d["stacktrace_available"], true);
    assert_eq!(d["current_stacktrace"][0]["function"], "place");
    assert_eq!(d["current_stacktrace"][0]["line"], 42);
}

#[test]
fn idle_clients_do_not_hold_up_others() {
    let v = vm(1);
    let srv = local(&v, None);
    let a = srv.local_addr();
    // Connections that send nothing (or half a request) and stay open.
    let idle: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = TcpStream::connect(a).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /api/snap").unwrap();
            }
            s
        })
        .collect();
    let t = Instant::now();
    assert_eq!(get(a, "/api/snapshot").status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answered without waiting for the idle clients' timeouts"
    );
    drop(idle);
}

#[test]
fn too_many_connections_get_503_and_the_server_recovers() {
    let v = vm(1);
    let srv = local(&v, None);
    let a = srv.local_addr();
    let hold: Vec<TcpStream> = (0..vm_observer::http::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(a).unwrap())
        .collect();
    // The accept thread sees them in order; the next one is over the cap.
    assert!(eventually(5, || get(a, "/").status == 503));
    drop(hold);
    assert!(eventually(10, || get(a, "/").status == 200));
}

#[test]
fn it_answers_while_every_scheduler_is_busy() {
    let v = vm(2);
    for _ in 0..8 {
        v.spawn(Box::new(|cx: &mut Cx<'_>| {
            cx.bump(4000);
            Step::Yield
        }))
        .unwrap();
    }
    let srv = local(&v, None);
    let a = srv.local_addr();
    assert!(eventually(5, || {
        let s = get(a, "/api/snapshot").json();
        s["processes_by_status"]["runnable"].as_u64().unwrap_or(0)
            + s["processes_by_status"]["running"].as_u64().unwrap_or(0)
            == 8
    }));
    for _ in 0..5 {
        assert_eq!(get(a, "/metrics").status, 200);
    }
}

#[test]
fn close_releases_the_port_and_is_idempotent() {
    let v = vm(1);
    let srv = local(&v, None);
    let a = srv.local_addr();
    assert_eq!(get(a, "/").status, 200);
    srv.close();
    assert!(srv.is_closed());
    srv.close();
    assert!(
        TcpStream::connect(a).is_err(),
        "nothing listens after close"
    );
    let again = serve(
        "127.0.0.1",
        a.port(),
        Backend::Local(Local::new(Arc::new(|| None), None)),
    )
    .expect("the port is free again");
    assert_eq!(get(again.local_addr(), "/").status, 200);
    let taken = serve(
        "127.0.0.1",
        a.port(),
        Backend::Local(Local::new(Arc::new(|| None), None)),
    );
    let err = taken.err().expect("the port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(
        err.raw_os_error(),
        Some(98),
        "the errno is kept for callers"
    );
}

#[test]
fn a_stopped_vm_is_reported_not_an_error() {
    let srv = serve(
        "127.0.0.1",
        0,
        Backend::Local(Local::new(Arc::new(|| None::<VmRef>), None)),
    )
    .unwrap();
    let a = srv.local_addr();
    let s = get(a, "/api/snapshot");
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["running"], false);
    let m = get(a, "/metrics");
    assert!(m.text().contains("\nbeamvm_up 0\n"));
    assert_eq!(get(a, "/api/process?pid=<0.1.0>").status, 503);
}

/// A stand-in for a program's observer socket: answers `{"get": target}` lines with
/// the local back end, as beamvm.observer does.
fn fake_program(path: &std::path::Path, v: VmRef, garbage: bool) {
    let listener = UnixListener::bind(path).unwrap();
    let local = Local::new(Arc::new(move || Some(v.clone())), None);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut w = conn.try_clone().unwrap();
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                if garbage {
                    let _ = w.write_all(b"{\"nonsense\": 1}\n");
                    continue;
                }
                let req: Value = serde_json::from_str(&line).unwrap();
                let target = req["get"].as_str().unwrap().to_owned();
                let parsed =
                    vm_observer::http::parse_head(&format!("GET {target} HTTP/1.1")).unwrap();
                let r = local.answer(&parsed);
                let out = serde_json::json!({
                    "status": r.status,
                    "content_type": r.content_type,
                    "body": String::from_utf8(r.body).unwrap(),
                });
                let _ = w.write_all(format!("{out}\n").as_bytes());
            }
        }
    });
}

#[test]
fn the_relay_serves_another_programs_data() {
    let v = vm(1);
    let hog = v.spawn(hoarder()).unwrap();
    v.send(hog, int(5));
    let dir = std::env::temp_dir().join(format!("bvm-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.sock");
    let bad = dir.join("bad.sock");
    let _ = std::fs::remove_file(&good);
    let _ = std::fs::remove_file(&bad);
    fake_program(&good, v.handle(), false);
    fake_program(&bad, v.handle(), true);

    let relay = Relay::new(&good);
    relay.probe().unwrap();
    let srv = serve("127.0.0.1", 0, Backend::Relay(relay)).unwrap();
    let a = srv.local_addr();
    assert!(get(a, "/").text().contains("beamvm observer"));
    let s = get(a, "/api/snapshot?n=2").json();
    assert_eq!(s["process_count"], 1);
    assert!(eventually(5, || get(a, &format!("/api/process?pid={hog}"))
        .json()["queue_sample"]
        == serde_json::json!(["5"])));
    let m = get(a, "/metrics");
    assert!(m.head.contains("text/plain; version=0.0.4"));
    assert!(m.text().contains("\nbeamvm_processes 1\n"));
    assert_eq!(
        get(a, "/api/snapshot?n=x").status,
        400,
        "errors pass through"
    );
    assert_eq!(get(a, "/elsewhere").status, 404);

    let garbage = serve("127.0.0.1", 0, Backend::Relay(Relay::new(&bad))).unwrap();
    let r = get(garbage.local_addr(), "/api/snapshot");
    assert_eq!(r.status, 502);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("without status/content_type/body"));

    let missing = Relay::new(dir.join("missing.sock"));
    let err = missing.probe().unwrap_err();
    assert!(err.contains("no beamvm observer at") && err.contains("BEAMVM_OBSERVER="));
    let none = serve("127.0.0.1", 0, Backend::Relay(missing)).unwrap();
    assert_eq!(get(none.local_addr(), "/api/snapshot").status, 502);
    assert_eq!(
        get(none.local_addr(), "/").status,
        200,
        "the page still loads"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
