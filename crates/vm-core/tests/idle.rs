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
