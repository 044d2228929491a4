//! Introspection never waits for a process (issue 8, fault 1): `process_info` from
//! inside processes, on each other and on themselves, while they run.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vm_core::{Cx, Pid, SpawnOpts, Step};

/// Makes the peer's body once the spawner's pid is known.
type MakePeer = Box<dyn FnOnce(Pid) -> Box<dyn vm_core::Body> + Send>;

/// Rounds of queries per process.
const ROUNDS: usize = 20;

/// A body that queries `peer` and itself every slice for `ROUNDS` slices, checking what
/// it reads, then exits. `peer` is None for the process that spawns its peer.
fn querier(
    peer: Option<Pid>,
    pair_body: Option<MakePeer>,
    done: Arc<AtomicUsize>,
    bad: Arc<AtomicUsize>,
) -> impl vm_core::Body {
    let mut peer = peer;
    let mut pair_body = pair_body;
    let mut round = 0;
    body(move |cx: &mut Cx<'_>| {
        let me = cx.self_pid();
        if let Some(make) = pair_body.take() {
            let opts = SpawnOpts {
                link: true,
                ..SpawnOpts::default()
            };
            peer = Some(cx.spawn_opts(make(me), opts).expect("spawn peer").0);
        }
        let peer = peer.expect("peer known");
        let vm = cx.vm();
        // On the peer (running, waiting or gone) and on ourselves (running: our own
        // control block is locked by this very slice).
        if let Some(info) = vm.process_info(peer) {
            if info.pid != peer || (round == 0 && !info.links.contains(&me)) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        }
        match vm.process_info(me) {
            Some(info) if info.pid == me && info.status == "running" => {
                if !info.links.contains(&peer) && vm.is_alive(peer) && round == 0 {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        }
        round += 1;
        if round == ROUNDS {
            done.fetch_add(1, Ordering::Relaxed);
            // Unlink first so the peer's exit (normal) is not even a signal to act on.
            cx.unlink(peer);
            return Step::Exit(int(0));
        }
        Step::Yield
    })
}

/// 1,000 pairs of processes call `process_info` on each other (and on themselves) in a
/// loop on two schedulers. On the old code two of them querying each other while both
/// ran froze both schedulers for good (each held its own lock and waited for the
/// other's), and a self-query re-locked the caller's own mutex.
#[test]
fn a_thousand_pairs_query_each_other_and_themselves_and_all_finish() {
    let mut vm = vm(2);
    let done = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    const PAIRS: usize = 1000;
    for _ in 0..PAIRS {
        let (d2, b2) = (done.clone(), bad.clone());
        let make: MakePeer = Box::new(move |parent| Box::new(querier(Some(parent), None, d2, b2)));
        vm.spawn(querier(None, Some(make), done.clone(), bad.clone()))
            .expect("spawn");
    }
    let end = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < 2 * PAIRS && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = done.load(Ordering::Relaxed);
    // Stop even if schedulers froze (so a failure is reported instead of hanging).
    let stuck = vm.shutdown_within(Some(Duration::from_secs(2)));
    assert_eq!(finished, 2 * PAIRS, "processes froze in process_info");
    assert_eq!(stuck, 0);
    assert_eq!(bad.load(Ordering::Relaxed), 0, "wrong answers");
}

/// A native body asks about itself mid-slice: it gets an answer at once, with the
/// links and flags it has now.
#[test]
fn a_process_reads_its_own_info_mid_slice() {
    let mut vm = vm(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let other = vm.spawn(idle()).unwrap();
    vm.spawn(body(move |cx: &mut Cx<'_>| {
        cx.link(other).unwrap();
        cx.trap_exit(true);
        let me = cx.self_pid();
        let info = cx.vm().process_info(me);
        tx.send(info.map(|i| (i.status, i.links, i.trap_exit)))
            .unwrap();
        Step::Exit(int(0))
    }))
    .unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5));
    let stuck = vm.shutdown_within(Some(Duration::from_secs(2)));
    assert_eq!(got, Ok(Some(("running", vec![other], true))));
    assert_eq!(stuck, 0);
}
