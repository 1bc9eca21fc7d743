"""The command line of scripts/bench.py (the usage is the package's docstring)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from . import __doc__ as USAGE
from .config import ROWS
from .harness import Bench
from .peervenv import ensure_venv
from .procs import PROCS, worker_main
from .profiling import profile_main
from .scale import add_arguments


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(USAGE or "").split("\n")[0])
    ap.add_argument("--with-peers", action="store_true",
                    help="install the peers into .cache/bench-venv and run there")
    ap.add_argument("--quick", action="store_true", help="scaled-down counts")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--only", help="comma-separated column names")
    ap.add_argument("--rows", help="comma-separated rows (%s)" % ",".join(ROWS))
    ap.add_argument("--profile", action="store_true", help="profile simplews rtt/pipeline instead")
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--pin", type=int, metavar="CPU",
                    help="pin the bench and every server to this CPU (children inherit it): "
                         "measures CPU cost without cross-CPU wake-ups (steadier on VMs)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every measurement")
    add_arguments(ap)
    return ap


def main() -> None:
    """Run the table (or --profile); --client-worker is the worker's own entry."""
    if sys.argv[1:2] == ["--client-worker"]:
        worker_main()
        return
    args = parser().parse_args()
    if args.with_peers:
        ensure_venv()

    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.profile:
            profile_main(args)
        else:
            if args.rounds < 3:
                print("note: fewer than 3 rounds: medians are not robust")
            Bench(args).run()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        PROCS.stop_all()
