"""Introspection walks from many threads while processes come and go.

`memory()`, `processes()`, `system_info()` and `statistics()` walk the process table or
read published counters with the GIL released, so several observer threads and the VM's
own Python processes run during the walks. They must stay consistent and never block one
another.
"""

from __future__ import annotations

import threading
import time

import beamvm

OBSERVERS = 4
ROUNDS = 200


def _churn(n):
    # Spawns short-lived processes in waves, so the table changes under the walks.
    for _ in range(n):
        pids = [beamvm.spawn(lambda: None) for _ in range(200)]
        assert len(set(pids)) == 200


def test_walks_from_threads_while_processes_churn():
    beamvm.start(schedulers=2)
    errors: list[BaseException] = []
    seen = []

    def observe():
        try:
            for _ in range(ROUNDS):
                m = beamvm.memory()
                parts = ("processes", "binary", "atom", "system", "allocator")
                assert m["total"] == sum(m[k] for k in parts)
                pids = beamvm.processes()
                assert len(set(pids)) == len(pids)
                info = beamvm.system_info()
                assert info["process_limit"] >= info["process_count"] >= 0
                stats = beamvm.statistics()
                assert stats["spawned"] >= stats["exited"]
                seen.append(len(pids))
        except BaseException as e:  # noqa: BLE001 -- reported by the main thread
            errors.append(e)

    try:
        beamvm.spawn(_churn, 50)
        ts = [threading.Thread(target=observe) for _ in range(OBSERVERS)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in ts), "an observer is blocked"
        assert not errors, errors
        assert len(seen) == OBSERVERS * ROUNDS
        assert time.monotonic() - t0 < 120
    finally:
        beamvm.stop()
