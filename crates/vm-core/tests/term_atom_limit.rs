//! Filling the atom table (its own test binary: it exhausts the process-global
//! table) returns `AtomTableFull`, never panics, and existing atoms keep working.

use vm_core::term::{atom_count, Atom, TermError, MAX_ATOMS};

#[test]
fn full_table_is_an_error() {
    let first = Atom::new("limit_first");
    let mut i = 0u64;
    let mut last = first;
    while atom_count() < MAX_ATOMS {
        last = Atom::try_new(&format!("f{i}")).expect("room left");
        i += 1;
    }
    assert_eq!(Atom::try_new("one_too_many"), Err(TermError::AtomTableFull));
    assert_eq!(Atom::try_new("another"), Err(TermError::AtomTableFull));
    // Existing names still intern to their index and read back.
    assert_eq!(Atom::try_new("limit_first"), Ok(first));
    assert_eq!(Atom::try_new("ok"), Ok(Atom::OK));
    assert_eq!(last.index() as usize, MAX_ATOMS - 1);
    assert_eq!(last.as_str(), format!("f{}", i - 1));
    assert_eq!(atom_count(), MAX_ATOMS);
}
