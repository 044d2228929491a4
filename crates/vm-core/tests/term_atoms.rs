//! The atom table: one index per name across threads, lock-free names, limits.

use std::sync::Arc;
use std::thread;

use vm_core::term::{atom_count, atom_table_bytes, Atom, TermError, MAX_ATOM_CHARS};

#[test]
fn interning_from_8_threads_gives_one_id_per_name() {
    let before = atom_count();
    let bytes_before = atom_table_bytes();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                // Every thread interns the same 2000 names, in a different order.
                let mut ids = vec![Atom::OK; 2000];
                for k in 0..2000 {
                    let i = (k * 7 + t * 251) % 2000;
                    let name = format!("conc_atom_{i}");
                    let a = Atom::new(&name);
                    assert_eq!(a.as_str(), name);
                    ids[i] = a;
                }
                ids
            })
        })
        .collect();
    let results: Vec<Vec<Atom>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    let mut uniq: Vec<u32> = results[0].iter().map(|a| a.index()).collect();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 2000);
    assert!(atom_count() >= before + 2000);
    assert!(atom_table_bytes() > bytes_before);
    for (i, a) in results[0].iter().enumerate() {
        assert_eq!(a.as_str(), format!("conc_atom_{i}"));
        assert_eq!(Atom::existing(&format!("conc_atom_{i}")), Some(*a));
        assert_eq!(Atom::from_index(a.index()), Some(*a));
    }
}

#[test]
fn limits() {
    let ok = "é".repeat(MAX_ATOM_CHARS); // 255 chars, 510 bytes
    assert_eq!(Atom::try_new(&ok).unwrap().as_str(), ok);
    let long = "a".repeat(MAX_ATOM_CHARS + 1);
    assert_eq!(
        Atom::try_new(&long),
        Err(TermError::AtomTooLong {
            chars: MAX_ATOM_CHARS + 1
        })
    );
    assert!(Atom::existing("never_interned_name_xyz").is_none());
    assert!(Atom::from_index(u32::MAX).is_none());
    assert!(vm_core::term::Term::try_atom(&long).is_err());
}

#[test]
fn well_known_atoms() {
    assert_eq!(Atom::new("ok"), Atom::OK);
    assert_eq!(Atom::new("EXIT"), Atom::EXIT);
    assert_eq!(Atom::new("DOWN"), Atom::DOWN);
    assert_eq!(Atom::SYSTEM_LIMIT.as_str(), "system_limit");
    assert_eq!(Atom::TRAP_EXIT.to_string(), "trap_exit");
    assert_eq!(Atom::from_bool(true), Atom::TRUE);
}
