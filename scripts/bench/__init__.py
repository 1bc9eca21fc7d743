"""simplews benchmark (issue 6): simplews vs. a raw-TCP floor and the peers.

    python scripts/bench.py [--with-peers] [--quick] [--rounds N] [--json FILE]
                            [--only COL,COL] [--rows ROW,ROW] [--profile]
                            [--pin CPU] [-v] [--scale-n N,N] [--scale-time S]
                            [--scale-clients K] [--scale-rounds R]
                            [--switch-interval S] [--idle-n N] [--idle-time S]
    python scripts/bench ...   (the same)

Rows (full counts; --quick scales them down: the first six finish in under a minute,
scale runs N = 100, 200 for 2 s, idle-cpu 500 connections for 5 s):

    rtt         10,000 round trips of a 32-byte text message, one in flight
    defaults    the same with every setting of client and server at the library's
                default, as users run it (compression negotiated where the
                library offers it, keepalive pings on, its max_size); the floor
                is rtt's
    pipeline    40,000 binary 64-byte messages sent by one thread while the
                main thread receives the echoes
    large       64 echoes of a 4 MiB binary message (MiB/s of payload echoed)
    deflate     2,000 echoes of a 17.5 KiB JSON-like text, permessage-deflate
                on both sides (16 distinct texts of the same shape, cycled, so
                context takeover cannot just point at the previous identical
                message); plus the bytes each message takes on the wire in each
                direction, counted by a TCP relay in the bench process
                (steady state: difference between a 48-echo and a 16-echo
                connection, divided by 32)
    handshakes  300 x (connect, one 32-byte echo, close)
    idle        server-side VmRSS and Threads (from /proc/PID/status) added per
                connection for 200 idle connections, on a fresh server process
    scale       how throughput holds as connections grow: for N = 500, 1,000,
                2,000, 4,000 (--scale-n), a fresh server process (the library's
                defaults, keepalive on) and N connections in closed-loop echo of
                32-byte text messages for 10 s (--scale-time; after a 1 s
                warm-up): msg/s, p50 and p99 latency; once with the default
                switch interval, once with sys.setswitchinterval(0.1) in the
                server process (--switch-interval). One load client for every
                server (scripts/bench/loadgen.py: a process forking
                --scale-clients parts, 2 by default, each driving its share of
                the connections with epoll and raw masked frames); its own CPU
                is reported. Every echo is checked (connection and sequence
                number in the payload); a lost or wrong echo, or a connection
                the server closes, makes the cell an error. --scale-rounds
                (default --rounds). Full: about 12-20 s per cell, 8 cells per
                column per round (~2 min per column per round). Past ~1,000
                busy threads the GIL waiters count as runnable: the load
                average the report prints rises from this row itself.
    idle-cpu    the CPU (user+sys from /proc/PID/stat, % of one core) of a fresh
                server process holding 10,000 idle connections (--idle-n) with
                its default keepalive, over 20 s (--idle-time) from 1 s after
                the last one connected (a window of at least ping_interval, 20 s,
                so each connection is pinged in it), and its VmRSS added per
                connection; the load client answers the pings. The floor runs
                twice: as is (no pings) and pinging as often as simplews
                ("floor pinging": wsfloor.py's cheapest keepalive). Both rows raise RLIMIT_NOFILE's
                soft limit to the hard one and say so if that is too low.

Columns:

    floor             raw TCP, blocking sockets, 5-byte prefix (1-byte type +
                      4-byte length), recv_into a reusable buffer, TCP_NODELAY,
                      thread-per-connection echo server (scripts/bench/bench_floor.py);
                      its deflate row runs zlib on both sides the way
                      permessage-deflate does, at the settings simplews
                      negotiates by default (15-bit windows, level 2,
                      memLevel 8, context takeover): the zlib floor.
                      Its scale and idle-cpu rows run a thread-per-connection
                      raw-socket server speaking minimal WebSocket instead
                      (scripts/bench/wsfloor.py)
    simplews          simplews client + simplews server (C accelerator if built)
    simplews (pure)   SIMPLEWS_NO_EXTENSIONS=1 in the server process and in a
                      client worker subprocess (the flag is read at import time,
                      so the client cannot share the bench process); the worker
                      runs the same workload code and times itself, the same
                      way as in-process clients. Shown only when the tree has a
                      compiled simplews module.
    websockets        websockets.sync.client against websockets.sync.server
    simple-websocket  simple_websocket.Client against simple_websocket.Server
                      behind a minimal WSGI-ish thread-per-connection front end
                      (scripts/bench/bench_servers.py); no deflate (its client
                      does not offer permessage-deflate)
    websocket-client  websocket-client against a websockets.sync server (client
                      only: no idle row; no deflate support)

--pin CPU runs the bench and all servers on one CPU: every round trip is then a
context switch on that core rather than a cross-CPU wake-up, so the rows
measure the libraries' CPU cost (client + server), which is what stays stable on
a VM; unpinned rtt on a quiet VM is dominated by vCPU wake-up latency and
compresses every ratio towards 1. Report both.

Every server runs in its own process on 127.0.0.1 with a free port; clients run
in the bench process (except simplews (pure), see above). Compression is off
except in the deflate row, max_size is unlimited, keepalive pings are off, all
other settings are the libraries' defaults (the defaults row: all of them). Rounds are interleaved (every
column for a row, the column order rotating from round to round, then the next
row; then the next round); the median over rounds is reported, with ratios to
the best peer and to the floor. The output also gives each cell's spread
(max/min over rounds) and, for the goals, the "paired" ratio: the median over
rounds of simplews / reference measured in the same round, which cancels most
of the machine's load changes between rounds (rtt is the row most sensitive to
other processes: on a 2-core machine a busy neighbour adds a scheduler wake-up
to every round trip). Run it on a quiet machine and read `uptime` in the output.

--with-peers creates .cache/bench-venv (python -m venv; pip install websockets
simple-websocket websocket-client py-spy pyinstrument, and -e . for simplews)
and re-executes itself there. Without it, a column whose library does not
import is skipped with a note. simplews is always imported from this working
tree (its root is put first on sys.path / PYTHONPATH).

--profile [--rows ROW,...]: instead of the table, profile simplews' hot paths
(default rows: rtt, pipeline):
cProfile on the client (in-process) and on the server handler threads; prints
the top functions and writes .prof files under .cache/bench-prof/.

The package (scripts/bench.py runs cli.main):

    cli          the command line; --client-worker dispatch
    config       paths, counts, rows, table rows, the columns
    machine      uptime, git state, /proc, the tree's compiled modules
    procs        subprocesses: servers, the client worker (both ends), timeouts
    harness      Bench: the interleaved rounds and the measurements
    report       the table, spreads, notes, ratios and goals, --json
    profiling    --profile: cProfile and py-spy
    peervenv     --with-peers: .cache/bench-venv and the re-exec
    relay        the counting TCP relay (also used by tests/peers.py)
    texts        the deflate row's JSON-like texts
    bench_clients, bench_floor, bench_servers: the client adapters and
                 workloads, the raw-TCP floor, the server processes
"""
