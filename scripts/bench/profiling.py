"""--profile: simplews' hot paths under cProfile (client and server handler threads)
and the whole server process sampled by py-spy."""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List

from . import bench_clients as bc
from .config import CACHE, FULL, LOGS, QUICK
from .machine import uptime
from .procs import PROCS, Server


def profile_main(args: argparse.Namespace) -> None:
    """Profile each row of --rows (default rtt, pipeline); print the top functions
    and write the .prof files under .cache/bench-prof/."""
    import cProfile
    import pstats
    import simplews  # noqa: F401
    outdir = os.path.join(CACHE, "bench-prof")
    os.makedirs(outdir, exist_ok=True)
    counts = QUICK if args.quick else FULL

    # profile the pipeline's sender thread too (cProfile is per thread)
    thread_profiles: List[cProfile.Profile] = []
    orig_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        p = cProfile.Profile()
        p.enable()
        try:
            orig_run(self)
        finally:
            p.disable()
            thread_profiles.append(p)

    print("profiling simplews (%s); start: %s" % (sys.executable, uptime()))
    rows = args.rows.split(",") if args.rows else ["rtt", "pipeline"]
    for row in rows:
        deflate = row == "deflate"
        spath = os.path.join(outdir, "server-%s.prof" % row)
        if os.path.exists(spath):
            os.remove(spath)
        srv = Server("simplews", deflate, profile=spath, tag="-profile")
        try:
            bc.WORKLOADS[row]("simplews", srv.port, min(2000, counts[row]))   # warm
            del thread_profiles[:]
            threading.Thread.run = run  # type: ignore[method-assign]
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            bc.WORKLOADS[row]("simplews", srv.port, counts[row])
            prof.disable()
            wall = time.perf_counter() - t0
        finally:
            threading.Thread.run = orig_run  # type: ignore[method-assign]
            srv.stop(eof_wait=15)    # on stdin EOF the server dumps its stats, then exits
        paths = [("client (main thread)", os.path.join(outdir, "client-%s.prof" % row))]
        prof.dump_stats(paths[0][1])
        if thread_profiles:
            st = pstats.Stats(thread_profiles[0])
            for p in thread_profiles[1:]:
                st.add(p)
            paths.append(("client (sender thread)", os.path.join(outdir, "client-%s-sender.prof" % row)))
            st.dump_stats(paths[-1][1])
        paths.append(("server (handler threads)", spath))
        print("\n=== %s: %d messages, %.2f s under cProfile (client ext %s, server ext %s)" % (
            row, counts[row], wall, bc.simplews_extensions(), srv.info.get("ext")))
        for side, path in paths:
            if not os.path.exists(path):
                print("--- %s: no stats (%s)" % (side, path))
                continue
            print("--- %s (%s), top by tottime" % (side, path))
            st = pstats.Stats(path)
            st.sort_stats("tottime").print_stats(args.profile_top)
        pyspy_server(row, counts[row], outdir, args.profile_top)


def pyspy_server(row: str, n: int, outdir: str, top: int) -> None:
    """Sample the whole simplews server process (all threads, accept loop and
    handshakes included, no cProfile overhead) with py-spy while the client
    runs the row; print self and inclusive time per function."""
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        exe = shutil.which("py-spy") or ""
    if not exe:
        print("--- py-spy not installed (pip install py-spy, or use --with-peers)")
        return
    srv = Server("simplews", row == "deflate", tag="-pyspy")
    out = os.path.join(outdir, "server-%s.pyspy.txt" % row)
    spy = None
    try:
        bc.WORKLOADS[row]("simplews", srv.port, min(2000, n))   # warm
        spy = PROCS.spawn([exe, "record", "--pid", str(srv.pid), "--rate", "1000", "--format", "raw",
                           "--output", out, "--threads", "--gil", "--function"],
                          os.environ.copy(), "py-spy.log")
        time.sleep(1.0)
        t0 = time.perf_counter()
        bc.WORKLOADS[row]("simplews", srv.port, n)
        wall = time.perf_counter() - t0
    finally:
        if spy is not None:
            os.kill(spy.pid, signal.SIGINT)      # py-spy writes its output on SIGINT
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
            PROCS.stop(spy)
        srv.stop()
    if not os.path.exists(out):
        print("--- py-spy: no output (see %s)" % os.path.join(LOGS, "py-spy.log"))
        return
    print_samples(out, wall, top)


def print_samples(path: str, wall: float, top: int) -> None:
    """Self and inclusive share per function of a py-spy raw (collapsed stacks) file."""
    selft: Dict[str, int] = {}
    incl: Dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, cnt_s = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            cnt = int(cnt_s)
            frames = [fr for fr in stack.split(";") if not fr.startswith("thread (")
                      and not fr.startswith("process ")]
            if not frames:
                continue
            total += cnt
            leaf = frames[-1]
            selft[leaf] = selft.get(leaf, 0) + cnt
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + cnt
    print("--- server, py-spy --gil sampling of the whole process (%d samples at 1 kHz over %.2f s of "
          "client time; %s)" % (total, wall, path))
    print("    self%   incl%  function")
    for fr, c in sorted(selft.items(), key=lambda kv: -kv[1])[:top]:
        print("  %6.1f  %6.1f  %s" % (100.0 * c / total, 100.0 * incl[fr] / total, fr))

