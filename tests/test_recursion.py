"""Deep recursion inside a process ends with RecursionError, never a crash.

On CPython 3.11 the recursion limit is the only bound on C recursion, and process code
recurses through C (a call between compiled functions resumes a generator chain): with
`sys.setrecursionlimit(250_000)`, 190,000 levels overflowed the scheduler thread's stack
and killed the interpreter (SIGSEGV). 3.12+ run such chains without C recursion and bound
recursion through C by a fixed limit of their own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TIMEOUT = 180


def _run(tmp_path: Path, program: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(program))
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=TIMEOUT
    )


def _no_crash(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, f"status {out.returncode}: {out.stderr[-2000:]}"


def test_deep_recursion_between_compiled_functions(tmp_path):
    out = _run(
        tmp_path,
        """
        import sys
        import beamvm

        sys.setrecursionlimit(250_000)

        def rec(n):
            if n == 0:
                return 0
            return rec(n - 1) + 1

        def main():
            try:
                return rec(190_000)
            except RecursionError:
                return "RecursionError"

        print(beamvm.run(main, schedulers=1), sys.getrecursionlimit(), flush=True)
        """,
    )
    _no_crash(out)
    result, limit = out.stdout.split()
    # 3.11 recurses through C here, and the stack holds fewer levels; 3.12+ do not.
    assert result == ("RecursionError" if sys.version_info < (3, 12) else "190000")
    assert limit == "250000", "the user's limit is back outside the process"


def test_deep_recursion_through_c_calls_in_a_process_and_a_dirty_call(tmp_path):
    # Each level is a Python function called by C (map): C stack on every version.
    out = _run(
        tmp_path,
        """
        import sys
        import beamvm

        sys.setrecursionlimit(1_000_000)

        def via_map(n):
            if n == 0:
                return 0
            return list(map(via_map, [n - 1]))[0] + 1

        def attempt(n):
            try:
                return via_map(n)
            except RecursionError:
                return "RecursionError"

        def main():
            return attempt(500_000), beamvm.dirty_cpu(attempt, 500_000), attempt(100)

        print(*beamvm.run(main, schedulers=1), flush=True)
        """,
    )
    _no_crash(out)
    assert out.stdout.split() == ["RecursionError", "RecursionError", "100"]


def test_a_limit_raised_inside_the_process_is_capped_at_its_next_slice(tmp_path):
    # The recursion takes many slices (a budget check per call): the cap applies at
    # each resume, whatever the process set meanwhile.
    out = _run(
        tmp_path,
        """
        import sys
        import beamvm

        def rec(n):
            return 0 if n == 0 else rec(n - 1) + 1

        def main():
            sys.setrecursionlimit(400_000)
            try:
                r = rec(300_000)
            except RecursionError:
                r = "RecursionError"
            return r, sys.getrecursionlimit()

        r, limit = beamvm.run(main, schedulers=1)
        print(r, limit, sys.getrecursionlimit(), flush=True)
        """,
    )
    _no_crash(out)
    r, inside, after = out.stdout.split()
    assert r == ("RecursionError" if sys.version_info < (3, 12) else "300000")
    assert after == "400000", "the limit the process set stays set"
    if sys.version_info < (3, 12):
        assert int(inside) < 400_000, "inside a slice the lowered limit is what applies"
