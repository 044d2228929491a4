//! With the atom table full (its own test binary: the table is process-global), the
//! VM keeps working (issue 8, fault 2): sends, exits along links, a crash (whose reason
//! `{panic, Message}` needs atoms) and the watchdog's long_schedule report (which needs
//! atoms too) all work, user atom creation fails with an error, and shutdown completes.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use vm_core::term::{atom_count, Atom, TermError, MAX_ATOMS};
use vm_core::{Cx, Step, Term, Vm, VmConfig};

#[test]
fn a_full_atom_table_never_takes_the_vm_down() {
    let mut i = 0u64;
    while atom_count() < MAX_ATOMS {
        Atom::try_new(&format!("filler_{i}")).expect("room left");
        i += 1;
    }
    assert_eq!(Atom::try_new("one_more"), Err(TermError::AtomTableFull));
    let mut vm = Vm::start(VmConfig {
        schedulers: 2,
        schedulers_online: 2,
        long_schedule: Duration::from_millis(10),
        ..VmConfig::default()
    })
    .expect("vm starts with a full atom table");
    let (mtx, mrx) = mpsc::channel();
    let monitor = vm.spawn(forwarder(mtx)).unwrap();
    vm.set_system_monitor(Some(monitor));
    let (tx, rx) = mpsc::channel();
    let sink = vm.spawn(forwarder(tx)).unwrap();

    // Sends.
    vm.send(sink, int(1));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(1));

    // A crash seen by a monitor, and an exit along a link seen by a trapping process.
    let mut started = false;
    let watcher = vm
        .spawn(body(move |cx: &mut Cx<'_>| {
            if !started {
                started = true;
                cx.trap_exit(true);
                cx.spawn_monitor(body(|_: &mut Cx<'_>| -> Step { panic!("crash") }))
                    .unwrap();
                cx.spawn_link(body(|_: &mut Cx<'_>| {
                    Step::Exit(term(Term::Atom(Atom::SHUTDOWN)))
                }))
                .unwrap();
            }
            while let Some(m) = cx.recv() {
                cx.send(sink, m);
            }
            Step::Wait
        }))
        .unwrap();
    let mut got = vec![recv_timeout(&rx, 5), recv_timeout(&rx, 5)];
    got.sort_by_key(|t| t.to_string());
    let Term::Tuple(down) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(down[0], Term::Atom(Atom::DOWN));
    assert_eq!(
        down[4],
        Term::Tuple(vec![
            Term::Atom(Atom::PANIC),
            Term::binary(b"crash".to_vec())
        ])
    );
    let Term::Tuple(exit) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(exit[0], Term::Atom(Atom::EXIT));
    assert_eq!(exit[2], Term::Atom(Atom::SHUTDOWN));

    // A long slice, reported to the system monitor.
    let mut once = false;
    let hog = vm
        .spawn(body(move |_: &mut Cx<'_>| {
            if once {
                return Step::Exit(int(0));
            }
            once = true;
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(40) {
                std::hint::spin_loop();
            }
            Step::Yield
        }))
        .unwrap();
    // (Other slices may be reported too on a loaded machine: look for the hog's.)
    loop {
        match recv_timeout(&mrx, 5) {
            Term::Tuple(v) => {
                assert_eq!(v[0], Term::Atom(Atom::MONITOR));
                assert_eq!(v[2], Term::Atom(Atom::LONG_SCHEDULE));
                if v[1] == Term::Pid(hog) {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }

    // Still running: a new process answers; user atoms still fail cleanly.
    assert!(vm.is_alive(watcher));
    vm.send(sink, int(2));
    assert_eq!(recv_timeout(&rx, 5), Term::Int(2));
    assert_eq!(Term::try_atom("yet_another"), Err(TermError::AtomTableFull));
    assert_eq!(vm.shutdown_within(Some(Duration::from_secs(5))), 0);
}
