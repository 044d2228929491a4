%% B12's Erlang side: services a node under test runs, and the client loops that
%% measure from an Erlang node. Compiled by examples/b12.rs with erlc at run time.
-module(b12).
-export([start_services/0, rtt/2, oneway/3, rpc/2, stats/1]).

%% echo: {From, Msg} -> From ! Msg.  sink: counts messages until {done, From}.
start_services() ->
    register(echo, spawn(fun echo/0)),
    register(sink, spawn(fun() -> sink(0) end)),
    ok.

echo() ->
    receive {From, M} -> From ! M, echo() end.

sink(K) ->
    receive
        {done, From} -> From ! {counted, K}, sink(0);
        _ -> sink(K + 1)
    end.

%% N round trips of a small message to echo on Node, in nanoseconds each (after 200
%% warm-up trips).
rtt(Node, N) ->
    Echo = {echo, Node},
    [Echo ! {self(), ping} || _ <- lists:seq(1, 1)], receive ping -> ok end,
    _ = [begin Echo ! {self(), ping}, receive ping -> ok end end || _ <- lists:seq(1, 200)],
    [begin
         T0 = erlang:monotonic_time(nanosecond),
         Echo ! {self(), ping},
         receive ping -> ok end,
         erlang:monotonic_time(nanosecond) - T0
     end || _ <- lists:seq(1, N)].

%% Sends N copies of Msg to sink on Node and waits for the count; nanoseconds taken.
oneway(Node, N, Msg) ->
    Sink = {sink, Node},
    T0 = erlang:monotonic_time(nanosecond),
    send_n(Sink, N, Msg),
    Sink ! {done, self()},
    receive {counted, N} -> ok end,
    erlang:monotonic_time(nanosecond) - T0.

send_n(_, 0, _) -> ok;
send_n(To, N, Msg) -> To ! Msg, send_n(To, N - 1, Msg).

%% N rpc:call(Node, b12node, name, []) round trips, nanoseconds each. On an Erlang
%% node the module is erlang:node/0's stand-in; the Rust node exposes it.
rpc(Node, N) ->
    _ = rpc:call(Node, erlang, node, []),
    [begin
         T0 = erlang:monotonic_time(nanosecond),
         Node = rpc:call(Node, erlang, node, []),
         erlang:monotonic_time(nanosecond) - T0
     end || _ <- lists:seq(1, N)].

%% {p50, p99} of a list of numbers.
stats(L) ->
    S = lists:sort(L),
    Len = length(S),
    {lists:nth(max(1, Len div 2), S), lists:nth(max(1, (Len * 99) div 100), S)}.
