"""`beamvm._runtime` asks the native binding whether a process runs; nothing patches it."""

from __future__ import annotations

import beamvm
import pytest
from beamvm import _runtime


def test_in_process_is_runtimes_own_function_and_answers_from_the_binding():
    # `import beamvm` used to overwrite `_runtime.in_process` with the native function.
    assert _runtime.in_process.__module__ == "beamvm._runtime"
    assert _runtime.in_process() is False

    def main():
        return _runtime.in_process()

    assert beamvm.run(main, schedulers=1) is True


def test_receive_from_uncompiled_code_in_a_process_says_why():
    # Code made by exec() has no source: it cannot be compiled, so receive() cannot
    # suspend the process from it.
    ns: dict = {}
    exec("def f():\n    import beamvm\n    return beamvm.receive(timeout=0)\n", ns)

    def main():
        try:
            ns["f"]()
        except RuntimeError as e:
            return str(e)

    msg = beamvm.run(main, schedulers=1)
    assert "was called from code beamvm does not compile" in msg


def test_receive_outside_any_process_says_where_it_belongs():
    with pytest.raises(RuntimeError, match=r"receive\(\) must be called inside a beamvm process"):
        beamvm.receive()
