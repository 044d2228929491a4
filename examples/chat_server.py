"""A line-based chat server: each client a process, each room a process.

Run ``python examples/chat_server.py [port]`` (default 5555) and connect with
``nc localhost 5555`` from several terminals. Commands::

    /nick NAME     choose your name (default: guestN)
    /join ROOM     leave your room and join ROOM (everyone starts in "lobby")
    /who           who is in your room
    /quit          leave
    anything else  is said to your room

Rooms are processes registered as ``room:NAME``, started on first join and ending when
the last member leaves; a room monitors its members, so a client that drops (or
crashes) is removed at once. ``--selftest`` runs two scripted clients and exits.
"""

from __future__ import annotations

import itertools
import sys

import beamvm
from beamvm import Atom, listener, monitor, receive, self_pid, send, spawn, tcp, whereis

DOWN = Atom("DOWN")
_guests = itertools.count(1)


def room(name: str) -> None:
    """Run a room: members by pid; say everything to everyone; end when empty."""
    members: dict[beamvm.Pid, str] = {}

    def say(line: str) -> None:
        for pid in members:
            send(pid, ("say", line))

    while True:
        match receive():
            case ("join", pid, nick):
                monitor(pid)
                members[pid] = nick
                say(f"* {nick} joined #{name}")
            case ("leave", pid):
                if pid in members:
                    say(f"* {members.pop(pid)} left #{name}")
            case ("nick", pid, nick):
                if pid in members:
                    say(f"* {members[pid]} is now {nick}")
                    members[pid] = nick
            case ("msg", pid, text):
                if pid in members:
                    say(f"<{members[pid]}> {text}")
            case ("who", pid):
                send(pid, ("say", "in #" + name + ": " + ", ".join(sorted(members.values()))))
            case (tag, _, _, pid, _) if tag == DOWN:
                if pid in members:
                    say(f"* {members.pop(pid)} dropped")
        if not members:
            beamvm.unregister(f"room:{name}")
            # A join may have raced with the unregister: hand it to a fresh room.
            while (m := receive(timeout=0, default=None)) is not None:
                if m[0] == "join":
                    send(join_room(name), m)
            return


def join_room(name: str) -> beamvm.Pid:
    """Return the room's process, started if it does not exist."""
    pid = whereis(f"room:{name}")
    if pid is None:
        pid = spawn(room, name)
        try:
            beamvm.register(f"room:{name}", pid)
        except beamvm.BadArg:  # somebody else started it meanwhile
            beamvm.exit(pid, Atom("kill"))
            pid = whereis(f"room:{name}")
    return pid


def client(sock, opts):
    """One connection: lines in from the socket, room lines out to it."""
    me = self_pid()
    nick = f"guest{next(_guests)}"
    current = join_room("lobby")
    send(current, ("join", me, nick))
    tcp.send(sock, f"welcome {nick}; /nick NAME, /join ROOM, /who, /quit\n".encode())
    tcp.setopts(sock, active="once")
    while True:
        match receive():
            case ("tcp", s, data):
                line = bytes(data).decode(errors="replace").strip()
                if line == "/quit":
                    send(current, ("leave", me))
                    tcp.close(s)
                    return
                if line.startswith("/nick "):
                    nick = line[6:].strip() or nick
                    send(current, ("nick", me, nick))
                elif line.startswith("/join "):
                    send(current, ("leave", me))
                    current = join_room(line[6:].strip() or "lobby")
                    send(current, ("join", me, nick))
                elif line == "/who":
                    send(current, ("who", me))
                elif line:
                    send(current, ("msg", me, line))
                tcp.setopts(s, active="once")
            case ("say", text):
                tcp.send(sock, text.encode() + b"\n")
            case ("tcp_closed", _) | ("tcp_error", _, _):
                send(current, ("leave", me))
                return


def selftest(port: int) -> None:
    """Two clients: join a room, talk, list, leave; a third sends an overlong line."""
    a = tcp.connect("127.0.0.1", port, packet="line")
    b = tcp.connect("127.0.0.1", port, packet="line")

    def line(s):
        return bytes(tcp.recv(s, timeout=10)).decode().rstrip("\n")

    def until(s, want):
        while want not in (got := line(s)):
            pass
        return got

    until(a, "welcome")
    until(b, "welcome")
    tcp.send(a, b"/nick ann\n")
    tcp.send(a, b"/join beam\n")
    print(until(a, "ann joined #beam"))
    tcp.send(b, b"/nick bob\n")
    tcp.send(b, b"/join beam\n")
    print(until(a, "bob joined #beam"))
    tcp.send(b, b"hello ann\n")
    print(until(a, "<bob> hello ann"))
    tcp.send(a, b"/who\n")
    print(until(a, "in #beam"))
    tcp.close(b)
    print(until(a, "bob"))
    # A client that sends a line past the limit is dropped, with nothing broadcast.
    c = tcp.connect("127.0.0.1", port, packet="raw")
    tcp.recv(c, timeout=10)  # its welcome
    tcp.send(c, b"x" * 10_000)
    try:
        while tcp.recv(c, timeout=10):
            pass
    except tcp.TcpError as e:
        print(f"a 10,000-byte line: {e.reason}")
    tcp.close(c)


def main(port: int, test: bool) -> None:
    """Start the listener; serve forever (or run the self-test)."""
    # A line longer than 4 KiB is an error (tcp_error emsgsize: the client is dropped),
    # not megabytes buffered and broadcast to the room.
    listener.start(
        "chat", port=port, handler=client, num_acceptors=4, packet="line", packet_size=4096
    )
    port = listener.info("chat")["port"]
    print(f"chat server on 127.0.0.1:{port} (try: nc localhost {port})", flush=True)
    if test:
        selftest(port)
        listener.stop("chat")
        return
    receive()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    test = "--selftest" in sys.argv
    beamvm.run(main, 0 if test else int(args[0]) if args else 5555, test)
