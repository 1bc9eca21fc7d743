"""What the bench measures: paths, counts, rows, the table's rows and the columns."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))        # scripts/bench
ROOT = os.path.dirname(os.path.dirname(HERE))            # the working tree
ENTRY = os.path.join(ROOT, "scripts", "bench.py")        # re-executed: worker, venv
CACHE = os.path.join(ROOT, ".cache")
VENV = os.path.join(CACHE, "bench-venv")
LOGS = os.path.join(CACHE, "bench-logs")

FULL = {"rtt": 10000, "defaults": 10000, "pipeline": 40000, "large": 64, "deflate": 2000,
        "handshakes": 300, "idle": 200}
QUICK = {"rtt": 2000, "defaults": 2000, "pipeline": 8000, "large": 4, "deflate": 250,
         "handshakes": 50, "idle": 50}
ROWS = ["rtt", "defaults", "pipeline", "large", "deflate", "handshakes", "idle", "scale", "idle-cpu"]

# table rows: (key, label, unit, higher_is_better)
TABLE: List[Tuple[str, str, str, bool]] = [
    ("rtt", "rtt", "msg/s", True),
    ("defaults", "rtt, library defaults", "msg/s", True),
    ("pipeline", "pipeline", "msg/s", True),
    ("large", "large", "MiB/s", True),
    ("deflate", "deflate", "msg/s", True),
    ("deflate_size_s2c", "deflate size srv->cli", "B/msg", False),
    ("deflate_size_c2s", "deflate size cli->srv", "B/msg", False),
    ("handshakes", "handshakes", "hs/s", True),
    ("idle_kib", "idle memory", "KiB/conn", False),
    ("idle_threads", "idle threads", "thr/conn", False),
    ("idle_cpu", "idle-cpu CPU", "% core", False),
    ("idle_cpu_pinging", "idle-cpu, floor pinging", "% core", False),
    ("idle_cpu_kib", "idle-cpu memory", "KiB/conn", False),
]                        # + the scale rows (scale.table_rows)


class Column:
    """One column of the table: a client library against a server kind."""

    def __init__(self, name: str, lib: str, server: str, peer: bool = False,
                 worker_env: Optional[Dict[str, str]] = None, client_only: bool = False,
                 no_deflate: Optional[str] = None) -> None:
        self.name = name
        self.lib = lib
        self.server = server
        self.peer = peer
        self.worker_env = worker_env      # run the client in a worker with this env
        self.client_only = client_only
        self.no_deflate = no_deflate      # reason
        self.note = ""
        self.version = ""
        self.skip: Optional[str] = None
        self.client_ext: Optional[List[str]] = None   # simplews columns: loaded compiled modules
        self.server_ext: Optional[List[str]] = None


COLUMNS = [
    Column("floor", "floor", "floor"),
    Column("simplews", "simplews", "simplews"),
    Column("simplews (pure)", "simplews", "simplews", worker_env={"SIMPLEWS_NO_EXTENSIONS": "1"}),
    Column("websockets", "websockets", "websockets", peer=True),
    Column("simple-websocket", "simple-websocket", "simple-websocket", peer=True,
           no_deflate="simple_websocket.Client offers no permessage-deflate"),
    Column("websocket-client", "websocket-client", "websockets", peer=True, client_only=True,
           no_deflate="websocket-client has no permessage-deflate"),
]


class BenchTimeout(Exception):
    """A client or a subprocess did not answer in time."""


class BenchError(Exception):
    """A subprocess died or reported an error."""
