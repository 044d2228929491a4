#!/usr/bin/env escript
%% -*- erlang -*-
%%! +S 2 -noinput
%% B11 peer server: Erlang gen_tcp echo, one process per connection in {active, once}.
%%
%%   escript benches/b11/echo_server.escript [--hog] [--port N]
%%
%% Prints "READY <port> <os pid>" once listening on 127.0.0.1, then serves until
%% killed (benches/b11/README.md). --hog adds one process spinning forever (the
%% schedulers preempt it by reductions).
-mode(compile).

main(Args) ->
    Port = port_arg(Args),
    {ok, L} = gen_tcp:listen(Port, [binary, {packet, raw}, {active, false},
                                    {reuseaddr, true}, {backlog, 1024},
                                    {nodelay, true}, {ip, {127, 0, 0, 1}}]),
    {ok, Bound} = inet:port(L),
    case lists:member("--hog", Args) of
        true -> spawn(fun() -> spin(0) end);
        false -> ok
    end,
    io:format("READY ~b ~s~n", [Bound, os:getpid()]),
    accept(L).

port_arg(["--port", P | _]) -> list_to_integer(P);
port_arg([_ | T]) -> port_arg(T);
port_arg([]) -> 0.

accept(L) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            Pid = spawn(fun() -> receive go -> ok end, arm(S) end),
            ok = gen_tcp:controlling_process(S, Pid),
            Pid ! go;
        {error, emfile} ->
            timer:sleep(10);  % out of descriptors: back off, keep the acceptor
        {error, _} ->
            ok
    end,
    accept(L).

arm(S) ->
    ok = inet:setopts(S, [{active, once}]),
    loop(S).

loop(S) ->
    receive
        {tcp, S, Data} ->
            gen_tcp:send(S, Data),
            arm(S);
        {tcp_closed, S} -> ok;
        {tcp_error, S, _} -> gen_tcp:close(S)
    end.

spin(N) -> spin((N + 1) band 16#ffffff).
