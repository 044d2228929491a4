"""A full atom table is a clear error for new atoms, never a panic in the binding.

Atoms are never freed, so the table (2^20 atoms) can be filled by user code. Every atom
the binding itself needs must exist before that: the tag that marks a sent `str` used to
be made at the first send of a str, and that send then panicked a scheduler thread.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import beamvm
    from beamvm import Atom

    def crash():
        raise ValueError("a message that travels as a str")

    def main():
        n = 0
        try:
            while True:
                Atom("filler%d" % n)
                n += 1
        except ValueError as e:
            print("full:", "system_limit" in str(e), flush=True)
        me = beamvm.self_pid()
        beamvm.send(me, ("text", "héllo", ["nested", {"k": "v"}]))
        print("received:", beamvm.receive(timeout=5), flush=True)
        try:
            beamvm.register("a_name_never_seen_before")
        except ValueError as e:
            print("register:", "system_limit" in str(e), flush=True)
        pid, ref = beamvm.spawn_monitor(crash)
        print("down:", beamvm.receive(timeout=5)[4], flush=True)
        return "alive"

    print("run:", beamvm.run(main, schedulers=1), flush=True)
    """
)


def test_full_atom_table_then_strings_and_crashes(tmp_path):
    # A fresh interpreter: the filled table stays full for the life of the process.
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    out = subprocess.run(
        [sys.executable, str(prog)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "panicked" not in out.stderr, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "full: True" in lines
    assert "received: ('text', 'héllo', ['nested', {'k': 'v'}])" in lines
    assert "register: True" in lines
    assert (
        "down: (Atom('error'), 'ValueError', 'a message that travels as a str')" in lines
    ), lines
    assert "run: alive" in lines
