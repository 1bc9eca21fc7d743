"""Smoke tests of the benchmark's scale and idle-cpu rows (scripts/bench/): the load
client against the WebSocket floor, and a tiny run of both rows through bench.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench"


def _wsfloor_port(ping_interval: Optional[float] = None) -> int:
    """A wsfloor server in a daemon thread of this process (it serves until exit)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("simplews_bench_wsfloor", BENCH / "wsfloor.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ready = threading.Event()
    port = []

    def on_ready(p: int) -> None:
        port.append(p)
        ready.set()
    threading.Thread(target=mod.serve, args=("127.0.0.1", on_ready, ping_interval), daemon=True).start()
    assert ready.wait(10)
    return port[0]


def _loadgen(*args: str, stdin: str = "") -> Dict[str, Any]:
    out = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), *args], input=stdin,
                         capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines and lines[0].startswith("CONNECTED "), (out.stdout, out.stderr)
    assert lines[-1].startswith("RESULT "), (out.stdout, out.stderr)
    res: Dict[str, Any] = json.loads(lines[-1][7:])
    return res


def test_loadgen_scale_against_the_floor() -> None:
    res = _loadgen("scale", str(_wsfloor_port()), "20", "0.5", "2")
    assert res["lost"] == res["bad"] == res["closed_by_server"] == 0
    assert res["msgs_per_s"] > 0 and 0 < res["p50_ms"] <= res["p99_ms"]
    assert res["sent"] >= res["msgs"] > 0


def test_the_floor_pinging_pings_every_connection_again_and_again() -> None:
    """The idle-cpu row's "floor pinging": each connection gets a ping every interval
    and the server reads its pong (the connection stays up for the next ping)."""
    port = _wsfloor_port(ping_interval=0.05)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101 ")
        for _ in range(3):
            for sock in socks:
                ping = b""
                while len(ping) < 6:
                    ping += sock.recv(6 - len(ping))
                assert ping == b"\x89\x04ping"
                sock.sendall(b"\x8a\x84" + bytes(4) + b"ping")  # its pong, masked with a zero key
    finally:
        for sock in socks:
            sock.close()


def test_loadgen_idle_holds_until_told() -> None:
    res = _loadgen("idle", str(_wsfloor_port()), "20", "0", "2", stdin="stop\n")
    assert res["closed_by_server"] == 0


@pytest.mark.slow
def test_bench_scale_and_idle_cpu_rows(tmp_path: Path) -> None:
    """bench.py --rows scale,idle-cpu at N=20, 0.5 s: a value for the floor and simplews
    in every cell, no error (about 10 s)."""
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.pop("SIMPLEWS_NO_EXTENSIONS", None)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--rows", "scale,idle-cpu",
                          "--rounds", "1", "--only", "floor,simplews", "--scale-n", "20",
                          "--scale-time", "0.5", "--idle-n", "20", "--idle-time", "0.5",
                          "--json", str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert not data["errors"], data["errors"]
    for key in ("scale:20:d", "scale:20:r", "scale:20:d:p99", "idle_cpu", "idle_cpu_kib"):
        assert set(data["medians"][key]) == {"floor", "simplews"}, key
    assert data["medians"]["idle_cpu"]["floor"] < 5
    assert set(data["medians"]["idle_cpu_pinging"]) == {"floor"}
    assert "idle-cpu, floor pinging" in run.stdout  # (its ratio line needs CPU time to divide by)
    assert "x floor" in run.stdout


def test_bench_defaults_row_runs_both_sides_at_the_library_defaults(tmp_path: Path) -> None:
    """bench.py --rows rtt,defaults: a value for the floor and simplews in both rows, the
    goal line of issue 14 item 5; the simplews client and server of that row negotiate
    compression (their defaults), which the rtt row's do not."""
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.pop("SIMPLEWS_NO_EXTENSIONS", None)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--rows", "rtt,defaults",
                          "--rounds", "1", "--quick", "--only", "floor,simplews", "-v",
                          "--json", str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert not data["errors"], data["errors"]
    for key in ("rtt", "defaults"):
        assert set(data["medians"][key]) == {"floor", "simplews"}, key
    assert "x rtt (compression off)" in run.stdout
    code = ("import sys; sys.path.insert(0, %r); from bench import bench_clients as bc; "
            "ws = bc._with_defaults('simplews', int(sys.argv[1])); "
            "print(ws[0].response.headers.get('Sec-WebSocket-Extensions')); ws[4]()") % str(REPO / "scripts")
    for extra, negotiated in ((["--defaults"], True), ([], False)):
        srv = subprocess.Popen([sys.executable, str(BENCH / "bench_servers.py"), "simplews", *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert srv.stdout is not None
            port = json.loads(srv.stdout.readline().split(" ", 1)[1])["port"]
            got = subprocess.run([sys.executable, "-c", code, str(port)], capture_output=True, text=True,
                                 timeout=60, env=env)
            assert got.returncode == 0, got.stderr
            assert ("permessage-deflate" in got.stdout) is negotiated, (extra, got.stdout)
        finally:
            assert srv.stdin is not None
            srv.stdin.close()
            srv.wait(30)
