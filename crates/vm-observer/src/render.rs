//! Queued messages as a Python programmer wrote them: `("job", 3, b"payload")`, not
//! the Erlang form `{<<"job"/utf8>>,3,<<"payload">>}`.
//!
//! Follows beamvm's Python conversion (crates/vm-python/src/convert.rs): the atoms
//! `true`, `false`, `undefined` read `True`, `False`, `None`; text (vm-core's
//! `Kind::Str`) is a `str`; binaries are `bytes`; tuples, lists and maps are tuples, lists and dicts;
//! other atoms `Atom('name')`; pids and refs as their `repr`.
//!
//! Bounded: writing stops once [`render`]'s byte budget is spent (a huge message
//! costs the budget, not its size) and nesting deeper than [`MAX_DEPTH`] shows as
//! `...`. It runs under the process's lock (see `VmRef::process_detail`).

use std::fmt::{self, Write as _};

use vm_core::observe::Bounded as Budget;
use vm_core::term::Kind;
use vm_core::View;

/// Longest rendering of one message (bytes of text), "..." appended when cut.
pub const MESSAGE_BYTES: usize = 240;
/// Deepest nesting shown.
pub const MAX_DEPTH: usize = 32;

/// `v` in Python syntax, at most `max` bytes (then "..." is appended).
pub fn render(v: View<'_>, max: usize) -> String {
    let mut b = Budget::new(max);
    let cut = term(&mut b, v, 0).is_err();
    b.finish(cut)
}

/// A message for the process page: [`render`] with [`MESSAGE_BYTES`].
pub fn message(v: View<'_>) -> String {
    render(v, MESSAGE_BYTES)
}

fn seq<'a>(
    b: &mut Budget,
    items: impl Iterator<Item = View<'a>>,
    depth: usize,
) -> Result<usize, fmt::Error> {
    let mut n = 0;
    for (i, x) in items.enumerate() {
        if i > 0 {
            b.write_str(", ")?;
        }
        term(b, x, depth + 1)?;
        n += 1;
    }
    Ok(n)
}

fn term(b: &mut Budget, v: View<'_>, depth: usize) -> fmt::Result {
    if depth > MAX_DEPTH {
        return b.write_str("...");
    }
    match v.kind() {
        Kind::Int => write!(b, "{}", v.as_int().unwrap_or_default()),
        Kind::BigInt => match v.as_bigint() {
            Some(i) => write!(b, "{i}"),
            None => b.write_str("?"),
        },
        Kind::Float => {
            let x = v.as_float().unwrap_or_default();
            if x.is_finite() {
                write!(b, "{x:?}")
            } else {
                write!(b, "float('{x}')")
            }
        }
        Kind::Atom => match v.as_atom().map(|a| a.as_str()) {
            Some("true") => b.write_str("True"),
            Some("false") => b.write_str("False"),
            Some("undefined") => b.write_str("None"),
            Some(name) => {
                b.write_str("Atom(")?;
                quoted(b, name)?;
                b.write_str(")")
            }
            None => b.write_str("?"),
        },
        Kind::Binary => bytes(b, v.as_bytes().unwrap_or_default()),
        Kind::Str => match v.as_str_bytes() {
            Some(raw) => quoted(b, &String::from_utf8_lossy(raw)),
            None => b.write_str("?"),
        },
        Kind::Tuple => {
            b.write_str("(")?;
            let n = match v.tuple_iter() {
                Some(it) => seq(b, it, depth)?,
                None => 0,
            };
            b.write_str(if n == 1 { ",)" } else { ")" })
        }
        Kind::Nil => b.write_str("[]"),
        Kind::List => {
            b.write_str("[")?;
            if let Some(it) = v.list_iter() {
                seq(b, it, depth)?;
            }
            b.write_str("]")
        }
        Kind::Map => {
            b.write_str("{")?;
            if let Some(it) = v.map_iter() {
                for (i, (k, x)) in it.enumerate() {
                    if i > 0 {
                        b.write_str(", ")?;
                    }
                    term(b, k, depth + 1)?;
                    b.write_str(": ")?;
                    term(b, x, depth + 1)?;
                }
            }
            b.write_str("}")
        }
        Kind::Pid => match v.as_pid() {
            Some(p) => write!(b, "{p}"),
            None => b.write_str("?"),
        },
        Kind::Ref => match v.as_ref() {
            Some(r) => write!(b, "{r}"),
            None => b.write_str("?"),
        },
    }
}

/// A Python string literal (single quotes, as `repr`).
fn quoted(b: &mut Budget, s: &str) -> fmt::Result {
    b.write_str("'")?;
    for c in s.chars() {
        match c {
            '\'' => b.write_str("\\'")?,
            '\\' => b.write_str("\\\\")?,
            '\n' => b.write_str("\\n")?,
            '\r' => b.write_str("\\r")?,
            '\t' => b.write_str("\\t")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(b, "\\x{:02x}", c as u32)?,
            c => b.write_char(c)?,
        }
    }
    b.write_str("'")
}

/// A Python bytes literal (`b'...'`, as `repr`).
fn bytes(b: &mut Budget, raw: &[u8]) -> fmt::Result {
    b.write_str("b'")?;
    for &c in raw {
        match c {
            b'\'' => b.write_str("\\'")?,
            b'\\' => b.write_str("\\\\")?,
            b'\n' => b.write_str("\\n")?,
            b'\r' => b.write_str("\\r")?,
            b'\t' => b.write_str("\\t")?,
            0x20..=0x7e => b.write_char(c as char)?,
            _ => write!(b, "\\x{c:02x}")?,
        }
    }
    b.write_str("'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_core::{Fragment, Pid, Term};

    fn r(t: Term) -> String {
        render(Fragment::from_term(&t).view(), 200)
    }

    fn s(x: &str) -> Term {
        Term::str(x)
    }

    #[test]
    fn python_values_read_as_python() {
        assert_eq!(r(Term::Int(-3)), "-3");
        assert_eq!(r(Term::Float(1.5)), "1.5");
        assert_eq!(r(Term::atom("true")), "True");
        assert_eq!(r(Term::atom("false")), "False");
        assert_eq!(r(Term::atom("undefined")), "None");
        assert_eq!(r(Term::atom("ok")), "Atom('ok')");
        assert_eq!(r(s("it's\n")), "'it\\'s\\n'");
        assert_eq!(r(Term::binary(b"a\x00'".to_vec())), "b'a\\x00\\''");
        assert_eq!(r(Term::Tuple(vec![Term::Int(1)])), "(1,)");
        assert_eq!(r(Term::Tuple(vec![])), "()");
        assert_eq!(
            r(Term::Tuple(vec![
                s("job"),
                Term::Int(3),
                Term::binary(b"p".to_vec())
            ])),
            "('job', 3, b'p')"
        );
        assert_eq!(r(Term::List(vec![])), "[]");
        assert_eq!(r(Term::List(vec![Term::Int(1), Term::Int(2)])), "[1, 2]");
        assert_eq!(r(Term::pid(Pid::new(5, 1))), "<0.5.1>");
        assert_eq!(
            r(Term::Map(vec![(s("k"), Term::List(vec![]))])),
            "{'k': []}"
        );
        // A tuple that looks like the old str encoding is a tuple.
        assert_eq!(
            r(Term::Tuple(vec![
                Term::atom("$str"),
                Term::binary(b"x".to_vec())
            ])),
            "(Atom('$str'), b'x')"
        );
    }

    #[test]
    fn huge_and_deep_messages_are_cut() {
        let big = Term::List((0..100_000).map(Term::Int).collect());
        let out = render(Fragment::from_term(&big).view(), 50);
        assert!(
            out.starts_with("[0, 1, 2,") && out.ends_with("..."),
            "{out}"
        );
        assert!(out.len() <= 53);
        let mut deep = Term::Int(0);
        for _ in 0..100 {
            deep = Term::List(vec![deep]);
        }
        let out = render(Fragment::from_term(&deep).view(), 10_000);
        assert!(out.contains("...") && out.len() < 200, "{out}");
    }
}
