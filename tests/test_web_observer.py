"""The web observer from Python: serve_http's handle, the JSON against statistics_full(),
/metrics through the official prometheus_client parser, answering while the GIL is held
elsewhere, the socket relay and ``python -m beamvm observer --attach``."""

from __future__ import annotations

import errno
import json
import linecache
import mmap
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
import warnings

import beamvm
import pytest
from beamvm import observer, receive, register, send, spawn
from proc_helpers import env_with, observed_program, running_vm, sink, spinner, wait_until

vm = pytest.fixture(running_vm)

# The web observer reuses one snapshot for this long (vm_observer::SNAPSHOT_TTL).
SNAPSHOT_TTL = 0.25


@pytest.fixture
def http():
    h = observer.serve_http(0)
    try:
        yield h
    finally:
        h.close()


def fetch(url: str, timeout: float = 20.0) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def get_json(url: str) -> dict:
    status, ctype, body = fetch(url)
    assert ctype.startswith("application/json"), (status, ctype, body)
    return json.loads(body)


def test_serve_http_returns_a_handle_that_closes(vm):
    h = observer.serve_http(0)
    assert 0 < h.port < 65536 and h.host == "127.0.0.1"
    assert h.url == f"http://127.0.0.1:{h.port}/"
    assert repr(h) == f"<beamvm.observer.HttpObserver {h.url} serving>"
    status, ctype, page = fetch(h.url)
    assert status == 200 and ctype.startswith("text/html")
    assert b"beamvm observer" in page and b"/observer.js" in page
    h.close()
    assert h.closed and "closed" in repr(h)
    h.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(h.url, timeout=5)
    with observer.serve_http(port=0, host="127.0.0.1") as h2:
        assert fetch(h2.url)[0] == 200
    assert h2.closed


def test_serve_http_errors_say_what_is_wrong(http):
    with pytest.raises(OSError) as e:
        observer.serve_http(http.port)
    assert e.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{http.port}" in str(e.value)
    with pytest.raises(ValueError, match="between 0 and 65535"):
        observer.serve_http(70000)
    with pytest.raises(TypeError, match="port must be an int"):
        observer.serve_http("8080")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="host must be"):
        observer.serve_http(0, host="")
    with pytest.raises(OSError):
        observer.serve_http(0, host="no-such-host.invalid")


def test_a_forked_child_can_close_its_copy_without_hanging(http):
    """A child of fork() has the handle but not the server's threads: closing it there
    (explicitly, or at exit) returns at once, and the parent keeps serving."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            http.close()
            observer._close_all()
            os._exit(0 if http.closed else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("close() in the forked child hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not http.closed
    assert fetch(http.url)[0] == 200


def test_requests_during_vm_starts_and_stops_never_fail(http):
    """A client hammering every route while the VM starts, fills and stops five times
    gets an answer every time: JSON that says running or not, never a dropped
    connection or a crash."""
    stop = threading.Event()
    bad: list[object] = []
    answered = [0]

    def client():
        routes = ["api/snapshot", "metrics", "api/process?pid=<0.3.0>", "api/snapshot?n=0"]
        i = 0
        while not stop.is_set():
            status, _, body = fetch(http.url + routes[i % len(routes)])
            i += 1
            if status not in (200, 404, 503) or not body:
                bad.append((routes[i % len(routes)], status, body[:200]))
            answered[0] += 1

    t = threading.Thread(target=client)
    t.start()
    try:
        for _ in range(5):
            beamvm.start(schedulers=2)
            try:
                for _ in range(2000):
                    spawn(sink)
                time.sleep(0.1)
            finally:
                beamvm.stop()
    finally:
        stop.set()
        t.join(30)
    assert not bad, bad[:5]
    assert answered[0] > 10


def test_it_serves_with_the_vm_stopped_and_follows_restarts(http):
    assert get_json(http.url + "api/snapshot")["running"] is False
    _, _, text = fetch(http.url + "metrics")
    assert b"\nbeamvm_up 0\n" in text
    beamvm.start(schedulers=1)
    try:
        pids = [spawn(sink) for _ in range(5)]
        time.sleep(SNAPSHOT_TTL)
        s = get_json(http.url + "api/snapshot")
        assert s["running"] is True and s["process_count"] == 5
        assert {r["pid"] for r in s["top"]["memory"]} == {repr(p) for p in pids}
    finally:
        beamvm.stop()
    time.sleep(SNAPSHOT_TTL)
    assert get_json(http.url + "api/snapshot")["running"] is False


def test_the_snapshot_matches_statistics_full(vm, http):
    hog = spawn(sink)
    register("web_hog", hog)
    for i in range(25):
        send(hog, ("job", i))
    for _ in range(30):
        spawn(sink)
    assert wait_until(lambda: beamvm.top(1)[0] == (hog, 25))
    time.sleep(0.3)  # everything is waiting: the counters stand still
    time.sleep(SNAPSHOT_TTL)
    s = get_json(http.url + "api/snapshot?n=5")
    full = beamvm.statistics_full()
    st = s["statistics"]
    assert set(st) == set(full), "the page's statistics are statistics_full's, key for key"
    for key in ("total_reductions", "context_switches", "spawned", "exited", "messages_sent",
                "gcs", "long_schedules", "run_queue_lengths", "slices"):
        assert st[key] == full[key], key
    assert len(st["scheduler_wall_time"]) == len(full["scheduler_wall_time"]) == 2
    assert s["process_count"] == 31 == full["spawned"] - full["exited"]
    assert s["processes_by_status"]["waiting"] == 31
    assert s["messages_queued"] == 25
    assert s["system_info"] == beamvm.system_info()
    mem = beamvm.memory()
    assert s["memory"]["processes"] == mem["processes"]
    kinds = ("processes", "binary", "atom", "system", "allocator")
    assert s["memory"]["total"] == sum(s["memory"][k] for k in kinds)
    row = s["top"]["message_queue_len"][0]
    assert (row["pid"], row["value"], row["name"]) == (repr(hog), 25, "web_hog")
    assert row["current"] == "sink"
    assert len(s["top"]["reductions"]) == 5
    # The same keys as the socket observer's snapshot_json, and more.
    assert set(observer.snapshot_json(5)) <= set(s)


def test_messages_sent_counts_python_sends(vm, http):
    before = beamvm.statistics_full()["messages_sent"]
    target = spawn(sink)

    def sender(n):
        for i in range(n):
            send(target, i)

    spawn(sender, 500)
    for i in range(7):
        send(target, i)
    assert wait_until(lambda: beamvm.statistics_full()["messages_sent"] == before + 507)


def test_the_process_page_data(vm, http):
    hog = spawn(sink)
    friend = spawn(sink)

    def linker(other):
        beamvm.link(other)
        receive(("never-sent",))

    linked = spawn(linker, hog)
    for i in range(3):
        send(hog, ("job", i, b"payload"))
    assert wait_until(lambda: beamvm.process_info(hog)["message_queue_len"] == 3)
    # The link is made when `linker` runs, which may be after the sends: wait for it.
    assert wait_until(lambda: beamvm.process_info(hog)["links"] == [linked])
    d = get_json(http.url + f"api/process?pid={hog!r}")
    assert d["alive"] is True and d["locked"] is True
    assert d["info"]["links"] == [repr(linked)]
    assert d["queue_sample"] == [f"('job', {i}, b'payload')" for i in range(3)]
    assert d["info"]["current_function"] == "sink"
    # The stack of a Python process (innermost last), lines of the original source.
    assert d["stacktrace_available"] is True
    top = d["current_stacktrace"][-1]
    assert (top["module"], top["function"]) == ("proc_helpers", "sink")
    assert "receive(" in linecache.getline(top["file"], top["line"])
    beamvm.exit(hog, beamvm.KILL)
    assert wait_until(lambda: fetch(http.url + f"api/process?pid={hog!r}")[0] == 404)
    status, _, body = fetch(http.url + "api/process?pid=nonsense")
    assert status == 400 and b"<0.5.0>" in body
    _, ctype, page = fetch(http.url + f"process?pid={friend!r}")
    assert ctype.startswith("text/html") and b'data-slot="current_stacktrace"' in page


# ----------------------------------------------------------------------------- metrics

METRIC_NAME = re.compile(r"^beamvm_[a-z][a-z0-9_]*$")


def parse_metrics(url: str):
    parser = pytest.importorskip(
        "prometheus_client.parser", reason="prometheus_client (a test dependency) is missing"
    )
    status, ctype, body = fetch(url + "metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in parser.text_string_to_metric_families(body.decode())}


def value(fam, **labels):
    for s in fam.samples:
        if s.labels == labels and not s.name.endswith("_created"):
            return s.value
    raise AssertionError(f"{fam.name} has no sample {labels}: {fam.samples}")


def test_metrics_parse_with_prometheus_client_and_follow_conventions(vm, http):
    for _ in range(12):
        spawn(sink)
    hog = spawn(sink)
    for i in range(4):
        send(hog, i)
    assert wait_until(lambda: beamvm.top(1)[0] == (hog, 4))
    time.sleep(0.3)
    fams = parse_metrics(http.url)
    full = beamvm.statistics_full()
    for name, fam in fams.items():
        assert METRIC_NAME.match(name), name
        assert fam.documentation, f"{name} has no HELP"
        assert fam.type in ("counter", "gauge"), (name, fam.type)
        if fam.type == "counter":
            # prometheus_client strips _total from a counter family's name; every sample
            # of it carries the suffix.
            assert all(s.name == name + "_total" for s in fam.samples), name
        else:
            assert not name.endswith("_total"), name
    expected = {
        "beamvm_up", "beamvm_processes", "beamvm_process_limit", "beamvm_memory_bytes",
        "beamvm_scheduler_busy_seconds", "beamvm_scheduler_utilisation_ratio",
        "beamvm_run_queue_length", "beamvm_global_run_queue_length", "beamvm_reductions",
        "beamvm_messages_sent", "beamvm_messages_queued", "beamvm_garbage_collections",
        "beamvm_gc_reclaimed_bytes", "beamvm_dirty_threads", "beamvm_dirty_busy_seconds",
        "beamvm_dirty_queued_jobs", "beamvm_dirty_jobs_completed", "beamvm_long_schedules",
        "beamvm_processes_spawned", "beamvm_processes_exited", "beamvm_context_switches",
    }
    assert expected <= set(fams), expected - set(fams)
    assert fams["beamvm_reductions"].type == "counter"
    assert value(fams["beamvm_up"]) == 1
    assert value(fams["beamvm_processes"]) == 13
    assert value(fams["beamvm_messages_queued"]) == 4
    assert value(fams["beamvm_reductions"]) == full["total_reductions"]
    assert value(fams["beamvm_processes_spawned"]) == full["spawned"]
    assert value(fams["beamvm_messages_sent"]) == full["messages_sent"]
    assert value(fams["beamvm_garbage_collections"]) == full["gcs"]
    mem = beamvm.memory()
    for kind in ("processes", "binary", "atom", "system"):
        assert value(fams["beamvm_memory_bytes"], kind=kind) > 0 or kind == "binary"
    assert value(fams["beamvm_memory_bytes"], kind="processes") == mem["processes"]
    assert [s.labels for s in fams["beamvm_run_queue_length"].samples] == [
        {"scheduler": "1"},
        {"scheduler": "2"},
    ]
    for i, (busy, _total) in enumerate(full["scheduler_wall_time"], start=1):
        got = value(fams["beamvm_scheduler_busy_seconds"], scheduler=str(i))
        assert busy <= got <= busy + 5.0
    io_threads = beamvm.system_info()["dirty_io_schedulers"]
    assert value(fams["beamvm_dirty_threads"], pool="io") == io_threads
    assert value(fams["beamvm_dirty_jobs_completed"], pool="cpu") == full["dirty_cpu_completed"]


# ----------------------------------------------------------------------------- no GIL

CLIENT = textwrap.dedent(
    """
    import json, mmap, sys, time, urllib.request
    url, flag_path = sys.argv[1], sys.argv[2]
    with open(flag_path, "r+b") as f:
        flag = mmap.mmap(f.fileno(), 1)
    while flag[0] != 1:          # wait until the parent holds the GIL
        time.sleep(0.005)
    times = []
    for path in ["api/snapshot", "metrics", "api/snapshot?n=3", "metrics", "api/snapshot"]:
        t = time.monotonic()
        with urllib.request.urlopen(url + path, timeout=30) as r:
            r.read()
        times.append(time.monotonic() - t)
    flag[0] = 2                  # tell the parent we are done
    print(json.dumps(times))
    """
)


def answered_while_the_gil_is_held(url: str, hold: float) -> bool:
    """Hold the GIL without letting go (a huge switch interval and a loop that never
    releases it) while another OS process makes five requests to ``url``; return whether
    they were all answered before ``hold`` seconds."""
    fd, flag_path = tempfile.mkstemp(prefix="bvm-gil-")
    os.write(fd, b"\0")
    os.close(fd)
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, url, flag_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    old = sys.getswitchinterval()
    try:
        with open(flag_path, "r+b") as f:
            flag = mmap.mmap(f.fileno(), 1)
        sys.setswitchinterval(1000.0)
        # From here to the end of the loop this thread keeps the GIL: mmap indexing and
        # time.monotonic() are plain C calls that never release it.
        deadline = time.monotonic() + hold
        flag[0] = 1
        while flag[0] != 2 and time.monotonic() < deadline:
            pass
        done = flag[0] == 2
    finally:
        sys.setswitchinterval(old)
        client.kill()
        client.communicate(timeout=30)
        os.unlink(flag_path)
    return done


def test_it_answers_while_the_gil_is_held_and_every_scheduler_is_busy(vm, http):
    """Python processes spin on every scheduler and this thread holds the GIL for the
    whole time another OS process makes its requests: they are answered, so no part of
    the request path needs the GIL."""
    for _ in range(4):
        spawn(spinner)
    assert wait_until(lambda: all(n > 0 for n in beamvm.statistics_full()["slices"]))
    assert answered_while_the_gil_is_held(http.url, hold=60.0)


def test_the_gil_check_catches_a_server_that_needs_the_gil():
    """The control for the test above: a server on a Python thread gets no answer out
    while the GIL is held, so that test can fail."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server protocol)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.handle_error = lambda *args: None  # type: ignore[method-assign] (killed clients)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        assert fetch(url + "api/snapshot")[0] == 200
        assert not answered_while_the_gil_is_held(url, hold=3.0)
    finally:
        srv.shutdown()
        srv.server_close()


# ----------------------------------------------------------------------------- relay


def test_the_socket_observer_answers_relayed_requests(vm):
    path = os.path.join(tempfile.mkdtemp(prefix="bvm-relay-"), "o.sock")
    hog = spawn(sink)
    send(hog, "queued")
    with observer.serve(path):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(path)
        f = c.makefile("rwb")

        def ask(req):
            f.write(json.dumps(req).encode() + b"\n")
            f.flush()
            return json.loads(f.readline())

        time.sleep(SNAPSHOT_TTL)
        r = ask({"get": "/api/snapshot?n=1"})
        assert r["status"] == 200 and r["content_type"] == "application/json"
        assert json.loads(r["body"])["process_count"] == 1
        r = ask({"get": "/metrics"})
        assert r["content_type"].startswith("text/plain") and "beamvm_processes 1" in r["body"]
        assert ask({"get": "/nope"})["status"] == 404
        assert "error" in ask({"get": 5})
        assert "error" in ask({"get": "no-slash"})
        assert ask({"n": 1})["process_count"] == 1  # the old protocol still works
        c.close()


def test_attach_serves_a_running_programs_page(tmp_path):
    web = None
    with observed_program(tmp_path, "attached_hog", queued=11, others=20) as (sock, hog, prog):
        try:
            web = subprocess.Popen(
                [sys.executable, "-m", "beamvm", "observer", "--attach", sock, "--http", "0"],
                env=env_with(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert web.stdout is not None
            banner = web.stdout.readline()
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", banner)
            assert m, (banner, web.stderr.read() if web.stderr else "")
            url = m.group(1)
            assert f"for {sock}" in banner
            assert b"beamvm observer" in fetch(url)[2]
            s = get_json(url + "api/snapshot")
            assert s["process_count"] == 22 and s["os_pid"] == prog.pid
            row = s["top"]["message_queue_len"][0]
            assert (row["pid"], row["value"], row["name"]) == (hog, 11, "attached_hog")
            d = get_json(url + f"api/process?pid={hog}")
            assert d["queue_sample"][:3] == ["0", "1", "2"]
            fams = parse_metrics(url)
            assert value(fams["beamvm_processes"]) == 22
            web.send_signal(signal.SIGINT)
            # communicate, not wait: it drains the pipes (a child whose stderr pipe fills
            # blocks on its write and would never exit), and shows what it printed.
            try:
                _, err = web.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                web.kill()
                _, err = web.communicate(timeout=5)
                msg = f"the observer did not stop on Ctrl-C: {err[-4000:]}"
                raise AssertionError(msg) from None
            assert web.returncode == 0, err[-4000:]
        finally:
            if web is not None and web.poll() is None:
                web.kill()
                web.wait(5)


def test_attach_to_nothing_says_so():
    missing = os.path.join(tempfile.mkdtemp(prefix="bvm-none-"), "none.sock")
    r = subprocess.run(
        [sys.executable, "-m", "beamvm", "observer", "--attach", missing, "--http", "0"],
        env=env_with(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert f"no beamvm observer at {missing}" in r.stderr
    assert "BEAMVM_OBSERVER=" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "beamvm", "observer"],
        env=env_with(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "observer needs --attach SOCKET" in r.stderr
