"""Messages: conversions both ways, isolation (received messages are copies), zero-copy
binaries, and values with no term form."""

from __future__ import annotations

import collections
import enum

import beamvm
import pytest
from beamvm import (
    Atom,
    Binary,
    ImproperList,
    ListKey,
    MapKey,
    Pid,
    Ref,
    receive,
    self_pid,
    send,
    spawn,
)
from beamvm._native import roundtrip


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


VALUES = [
    0, 1, -1, 2**59, -(2**59), 2**63 - 1, -(2**63), 2**64, -(2**200), 10**100,
    0.0, -1.5, float("inf"), 1e300,
    "", "héllo ☃", "x" * 1000,
    b"", b"\x00\xff", b"y" * 64,
    True, False, None,
    (), (1,), (1, (2, (3,))),
    [], [1, [2, []]], {}, {"a": 1, 2: "b", (1, 2): [None]},
    Atom("ok"), Atom("with space"),
]


@pytest.mark.parametrize("v", VALUES, ids=repr)
def test_roundtrip_exact(v):
    back = roundtrip(v)
    assert back == v
    assert type(back) is type(v)


def test_roundtrip_through_a_process():
    def main(values):
        out = []
        me = self_pid()
        for v in values:
            send(me, v)
            out.append(receive())
        return out

    assert run(main, VALUES) == VALUES


def test_pid_and_ref_roundtrip():
    def main():
        r = beamvm.make_ref()
        send(self_pid(), (self_pid(), r))
        return receive(), (self_pid(), r)

    got, want = run(main)
    assert got == want and isinstance(got[0], Pid) and isinstance(got[1], Ref)


def test_nan_float():
    assert roundtrip(float("nan")) != roundtrip(float("nan"))  # still a NaN


def test_subclasses_travel_as_base_types():
    class Color(enum.IntEnum):
        RED = 1

    P = collections.namedtuple("P", "x y")
    assert roundtrip(Color.RED) == 1 and type(roundtrip(Color.RED)) is int
    assert roundtrip(P(1, 2)) == (1, 2) and type(roundtrip(P(1, 2))) is tuple
    assert roundtrip(bytearray(b"ab")) == b"ab"


def test_atom_api():
    a = Atom("ok")
    assert a.name == "ok" and str(a) == "ok" and repr(a) == "Atom('ok')"
    assert a == Atom("ok") and a != "ok" and hash(a) == hash(Atom("ok"))
    assert sorted([Atom("b"), Atom("a")]) == [Atom("a"), Atom("b")]
    import pickle

    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(ValueError):
        Atom("x" * 300)


def test_an_atom_made_or_received_is_one_shared_object_and_still_compares_by_name():
    # The runtime's atoms and a program's first few thousand are one Python object
    # each (no allocation per received tag; gen_server checks `tag is GEN_CALL` before
    # `==`). Sharing must change nothing else: equality, hashing, pickling, ordering.
    import pickle

    def main():
        send(self_pid(), (Atom("shared_tag"), [Atom("ok")], {"k": Atom("ok")}))
        return receive()

    got = beamvm.run(main)
    tag = Atom("shared_tag")
    assert got[0] is tag and got[1][0] is Atom("ok") and got[2]["k"] is Atom("ok")
    assert roundtrip(tag) is tag
    assert pickle.loads(pickle.dumps(tag)) is tag
    assert tag == Atom("shared_tag") and hash(tag) == hash(got[0])
    assert tag != Atom("other_tag") and not (tag == "shared_tag")
    assert {tag: 1}[Atom("shared_tag")] == 1


@pytest.mark.parametrize(
    "bad", [object(), {1, 2}, lambda: 1, 1j, [1, object()], {"k": object()}],
    ids=["object", "set", "lambda", "complex", "nested", "dict-value"])
def test_no_term_form_is_type_error(bad):
    with pytest.raises(TypeError, match="cannot convert an object of type"):
        roundtrip(bad)


def test_type_error_names_the_type():
    class Widget:
        pass

    with pytest.raises(TypeError, match="'.*Widget'"):
        roundtrip([Widget()])


def test_self_referencing_list_is_rejected():
    a = []
    a.append(a)
    with pytest.raises(ValueError, match="contains itself"):
        roundtrip(a)
    d = {}
    d["me"] = [d]
    with pytest.raises(ValueError, match="contains itself"):
        roundtrip(d)


def test_a_value_shared_twice_is_not_a_cycle():
    x = [1, 2]
    deep = x
    for _ in range(2000):
        deep = (deep, x)  # x appears at every level, beside the path, never on it
    back = roundtrip(deep)
    for _ in range(2000):
        assert back[1] == [1, 2]
        back = back[0]
    assert back == [1, 2]


def _nest(depth, leaf, wrap):
    v = leaf
    for _ in range(depth):
        v = wrap(v)
    return v


def _depth(v, step):
    n = 0
    while True:
        inner = step(v)
        if inner is None:
            return n, v
        v = inner
        n += 1


@pytest.mark.parametrize(
    "wrap,step",
    [
        (lambda v: (v,), lambda v: v[0] if type(v) is tuple else None),
        (lambda v: [0, v], lambda v: v[1] if type(v) is list else None),
        (lambda v: {"k": v}, lambda v: v["k"] if type(v) is dict else None),
    ],
    ids=["tuple", "list", "dict"],
)
def test_deep_values_convert_bounded_by_memory_not_the_stack(wrap, step):
    depth, leaf = _depth(roundtrip(_nest(100_000, "leaf", wrap)), step)
    assert (depth, leaf) == (100_000, "leaf")


def test_a_100k_deep_tuple_is_sent_and_received():
    def main():
        send(self_pid(), _nest(100_000, Atom("bottom"), lambda v: (v,)))
        return _depth(receive(timeout=5), lambda v: v[0] if type(v) is tuple else None)

    assert run(main) == (100_000, Atom("bottom"))


def test_str_is_its_own_kind_and_cannot_be_forged():
    # Before: str travelled as (Atom('$str'), <<utf8>>), so this tuple arrived as 'hi'.
    forged = (Atom("$str"), b"hi")
    assert roundtrip(forged) == forged and type(roundtrip(forged)) is tuple
    # ... and this one was accepted by send and lost at receive with a ValueError.
    bad = (Atom("$str"), b"\xff")
    assert roundtrip(bad) == bad

    def main():
        me = self_pid()
        send(me, bad)
        send(me, "text")
        return receive(timeout=1), receive(timeout=1)

    assert run(main) == (bad, "text")


def test_str_is_not_bytes_and_keeps_its_type():
    for s in ["", "a", "héllo ☃", "x" * 65, "y" * 100_000, "\x00nul"]:
        back = roundtrip(s)
        assert back == s and type(back) is str
    assert roundtrip(["ok", b"ok"]) == ["ok", b"ok"]
    assert type(roundtrip(b"ok")) is bytes


def test_str_patterns_match_only_text():
    def main():
        me = self_pid()
        send(me, b"ok")
        send(me, (b"ok", 1))
        send(me, "ok")
        send(me, ("ok", 2))
        return (
            receive("ok", timeout=0),
            receive(("ok", int), timeout=0),
            receive(str, timeout=0, default="none"),
            receive(tuple, timeout=0),
            receive(bytes, timeout=0),
        )

    assert run(main) == ("ok", ("ok", 2), "none", (b"ok", 1), b"ok")


def test_str_subclass_travels_as_str():
    class Name(str):
        pass

    back = roundtrip(Name("x"))
    assert back == "x" and type(back) is str


@pytest.mark.parametrize(
    "mapping",
    [
        collections.OrderedDict([("b", 1), ("a", 2)]),
        collections.defaultdict(list, {"k": [1]}),
        collections.Counter("abracadabra"),
    ],
    ids=["OrderedDict", "defaultdict", "Counter"],
)
def test_dict_subclasses_are_sent_as_maps(mapping):
    def main(m):
        send(self_pid(), m)
        return receive(timeout=1)

    back = run(main, mapping)
    assert back == dict(mapping) and type(back) is dict
    assert roundtrip(mapping) == dict(mapping) and type(roundtrip(mapping)) is dict


def test_send_bad_value_raises_in_sender():
    def main():
        try:
            send(self_pid(), {1, 2})
        except TypeError as e:
            return "set" in str(e)

    assert run(main) is True


def test_isolation_received_message_is_a_copy():
    def mutator(parent):
        m = receive()
        m["list"].append("mutated")
        m["nested"][0][0] = "changed"
        send(parent, m)

    def main():
        original = {"list": [1, 2], "nested": [[0]]}
        pid = spawn(mutator, self_pid())
        send(pid, original)
        back = receive(timeout=2)
        return original, back

    original, back = run(main)
    assert original == {"list": [1, 2], "nested": [[0]]}
    assert back == {"list": [1, 2, "mutated"], "nested": [["changed"]]}


def test_isolation_sender_mutation_after_send():
    def main():
        msg = [1, 2, 3]
        send(self_pid(), msg)
        msg.append(4)
        return receive()

    assert run(main) == [1, 2, 3]


def test_large_binary_is_shared_and_zero_copy():
    big = bytes(range(256)) * 4096  # 1 MiB

    def relay(to):
        m = receive()
        send(to, m)
        send(to, m)

    def main():
        me = self_pid()
        r = spawn(relay, me)
        send(r, big)
        a = receive(timeout=2)
        b = receive(timeout=2)
        mv = memoryview(a)
        return a, b, mv.readonly, len(mv), mv.nbytes, a.address == b.address

    a, b, ro, n, nbytes, same = run(main)
    assert isinstance(a, Binary) and isinstance(b, Binary)
    assert a == big and bytes(a) == big and len(a) == len(big) and hash(a) == hash(big)
    assert ro and n == len(big) and nbytes == len(big)
    assert same  # both receivers see one buffer: no copy between processes


def test_small_bytes_arrive_as_bytes():
    assert type(roundtrip(b"x" * 64)) is bytes
    assert type(roundtrip(b"x" * 65)) is Binary


def test_binary_object_api():
    b = Binary(b"z" * 100)
    assert b == b"z" * 100 and b != b"z" and b == Binary(b"z" * 100)
    assert bytes(b) == b"z" * 100
    assert memoryview(b)[:3].tobytes() == b"zzz"
    assert "100 bytes" in repr(b)
    again = roundtrip(b)
    assert again.address == b.address  # re-sent without a copy
    with pytest.raises(TypeError):
        memoryview(b)[0:1] = b"a"  # read-only


def test_a_100k_deep_exit_reason_reaches_links_and_monitors():
    from beamvm import exit as bexit
    from beamvm import process_flag, spawn_link, spawn_monitor

    def child():
        bexit(_nest(100_000, Atom("bottom"), lambda v: (v,)))

    def main():
        process_flag("trap_exit", True)
        spawn_link(child)
        spawn_monitor(child)
        got = []
        for _ in range(2):
            got.append(receive(timeout=5))
        return got

    def step(v):
        return v[0] if type(v) is tuple else None

    got = sorted((m[0].name, _depth(m[-1], step)) for m in run(main))
    assert got == [
        ("DOWN", (100_000, Atom("bottom"))),
        ("EXIT", (100_000, Atom("bottom"))),
    ]



# Lists and maps as map keys: a dict needs hashable keys, so they arrive as
# beamvm.ListKey / beamvm.MapKey and go back as the same list and map.


def test_list_and_map_keys_arrive_in_key_form_and_go_back_the_same():
    msg = {
        ListKey([1, 2]): Atom("a"),
        MapKey({Atom("k"): [3]}): Atom("b"),
        ListKey([[4]]): Atom("c"),
        ListKey([]): 0,
        (ListKey([5]), 6): "tuple key holding a list",
        (5, 6): "the tuple key, another key",
        "value": [ListKey([7]), MapKey({8: 9})],
    }

    def main():
        me = self_pid()
        spawn(lambda: send(me, msg))
        got = receive(beamvm.ANY, timeout=5)
        # Keys keep (or take) their key form, recursively; values are plain again.
        assert got == msg and len(got) == len(msg)
        keys = {repr(k): k for k in got}
        mk = keys["MapKey({Atom('k'): ListKey([3])})"]
        assert type(mk) is MapKey and mk.to_dict() == {Atom("k"): ListKey([3])}
        assert type(keys["ListKey([ListKey([4])])"][0]) is ListKey
        assert type(keys["(ListKey([5]), 6)"]) is tuple and keys["ListKey([])"] == []
        assert got["value"] == [[7], {8: 9}]
        assert [type(v) for v in got["value"]] == [list, dict]
        # And back: the same message again.
        send(me, got)
        assert receive(beamvm.ANY, timeout=5) == msg
        return True

    assert run(main)
    assert roundtrip(ListKey([1, [2]])) == [1, [2]] and roundtrip(MapKey({1: 2})) == {1: 2}


def test_a_key_nested_deeper_than_recursion_converts_and_hashes():
    key = ListKey([1])
    for _ in range(3000):
        key = ListKey([key])
    mkey = MapKey({1: 2})
    for _ in range(3000):
        mkey = MapKey({mkey: ListKey([])})
    back = roundtrip({key: 1, mkey: 2})
    assert set(back.values()) == {1, 2}
    assert {hash(k) for k in back} == {hash(key), hash(mkey)}


def test_key_forms_equality_hash_repr_and_pickle():
    import pickle

    assert ListKey([1, 2]) == ListKey((1, 2)) == [1, 2]
    assert ListKey([1, 2]) != (1, 2) and (1, 2) != ListKey([1, 2])
    assert hash(ListKey([1, 2])) != hash((1, 2))
    assert len({ListKey([1, 2]): 1, (1, 2): 2}) == 2
    assert ListKey([[1], {2: 3}]) == [[1], {2: 3}]
    assert type(ListKey([[1]])[0]) is ListKey and type(ListKey([{2: 3}])[0]) is MapKey
    assert ListKey([]) == [] and ListKey([]) != ()
    # A map key's order does not matter; it equals a dict with the same items.
    a, b = MapKey({1: 2, 3: [4]}), MapKey([(3, [4]), (1, 2)])
    assert a == b and hash(a) == hash(b) and a == {1: 2, 3: [4]} and a != {1: 2}
    assert not (a != b) and a != ListKey([(1, 2), (3, ListKey([4]))])
    assert MapKey([(1, 2), (1, 3)]) == {1: 3}  # the last value wins, as maps:from_list
    assert a.to_dict() == {1: 2, 3: ListKey([4])}
    assert repr(ListKey([1, [2]])) == "ListKey([1, ListKey([2])])"
    assert repr(MapKey({1: [2]})) == "MapKey({1: ListKey([2])})"
    for k in (ListKey([1, [2]]), MapKey({Atom("a"): {1: [2]}}), ListKey([])):
        back = pickle.loads(pickle.dumps(k))
        assert back == k and type(back) is type(k) and hash(back) == hash(k)
    with pytest.raises(ValueError, match="pairs"):
        roundtrip(tuple.__new__(MapKey, [(1, 2, 3)]))
    # Equal improper lists hash equal, whatever the reprs of their parts (a dict in
    # another order, 1 and 1.0), and those holding lists and dicts are hashable.
    x = ImproperList([{"x": 1, "y": 2}, [1, 2]], 1.0)
    y = ImproperList([{"y": 2, "x": 1}, [1, 2]], 1)
    assert x == y and hash(x) == hash(y) and len({x, y}) == 1
