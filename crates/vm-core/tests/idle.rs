//! An idle VM parks its threads (alone in its own test binary, so no other VM's
//! threads are busy while it measures CPU time).
mod common;
use common::*;

use std::time::Duration;

fn scheduler_cpu_ticks() -> u64 {
    // utime + stime of this process's beamvm threads, in clock ticks.
    let mut total = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("beamvm-") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of comm: state is field 3; utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0);
            let st: u64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
            total += ut + st;
        }
    }
    total
}

#[test]
fn idle_vm_parks_its_threads() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // not Linux: nothing to measure with
    }
    let vm = vm(2);
    for _ in 0..100 {
        vm.spawn(idle()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = scheduler_cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = scheduler_cpu_ticks() - before;
    // Clock ticks are 10 ms (USER_HZ = 100): 2% of one second is 2 ticks. Other VMs
    // in this test binary have their own threads with the same names, so this
    // measures all of them: still must be near zero when all are idle.
    assert!(used <= 2, "idle scheduler threads used {used} ticks in 1 s");
    drop(vm);
}

/// Voluntary context switches (wake-ups, roughly) of each of this process's threads
/// named `name`, by thread id.
fn wakeups_of(name: &str) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                let tid = t.file_name().to_string_lossy().into_owned();
                out.insert(tid, v.trim().parse::<u64>().unwrap_or(0));
            }
        }
    }
    out
}

#[test]
fn an_idle_vms_watchdog_sleeps_and_wakes_with_the_first_slice() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return;
    }
    // Idle: the watchdog looked every 5 ms (200 wake-ups a second); now it sleeps
    // until a scheduler wakes, 100 ms at most.
    let vm = vm(2);
    std::thread::sleep(Duration::from_millis(300));
    // (Another test's VM may come or go meanwhile: the busiest watchdog thread that
    // lived through the second counts. Both VMs are idle.)
    let before = wakeups_of("beamvm-watchdog");
    std::thread::sleep(Duration::from_secs(1));
    let after = wakeups_of("beamvm-watchdog");
    let woke = after
        .iter()
        .filter_map(|(tid, n)| before.get(tid).map(|b| n.saturating_sub(*b)))
        .max()
        .expect("a watchdog thread");
    assert!(woke <= 40, "the idle watchdog woke {woke} times in 1 s");
    // Still on watch: a slice that blocks its scheduler right after the idle period
    // is taken over, so the process it woke into its hand-off slot runs on the other
    // scheduler long before the blocking slice ends.
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = std::time::Instant::now();
    let mut first = true;
    vm.spawn(move |cx: &mut vm_core::Cx<'_>| {
        if first {
            first = false;
            let tx = tx.clone();
            cx.spawn(move |_: &mut vm_core::Cx<'_>| {
                let _ = tx.send(t0.elapsed());
                vm_core::Step::Exit(vm_core::Fragment::from_term(&vm_core::Term::atom("normal")))
            })
            .expect("spawn");
            std::thread::sleep(Duration::from_secs(2)); // stuck with the child in its slot
        }
        vm_core::Step::Exit(vm_core::Fragment::from_term(&vm_core::Term::atom("normal")))
    })
    .unwrap();
    let ran_after = rx.recv_timeout(Duration::from_secs(30)).expect("child ran");
    assert!(
        ran_after < Duration::from_millis(1_500),
        "the child waited for the stuck slice: {ran_after:?}"
    );
    drop(vm);
}
