"""The examples stay runnable: each runs to completion and prints what docs/otp.md says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_kv_service_example_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "kv_service.py")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "store: {'a': 4, 'b': 5, 'c': 10, 'd': 9}" in out
    assert "pool after the crash: {'active': 2, 'specs': 2" in out
    assert "restarted store:" in out and "keys: []" in out
    assert "asyncio reads: asyncio" in out


def test_echo_server_example_serves_its_clients():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "echo_server.py"), "--selftest"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert [line for line in out.splitlines() if line.startswith("echo:")] == [
        f"echo: hello from client {i}" for i in range(3)
    ]


def test_chat_server_example_rooms_and_nicks():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "chat_server.py"), "--selftest"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert out.splitlines()[1:] == [
        "* ann joined #beam",
        "* bob joined #beam",
        "<bob> hello ann",
        "in #beam: ann, bob",
        "* bob left #beam",
        "a 10,000-byte line: closed",
    ]
