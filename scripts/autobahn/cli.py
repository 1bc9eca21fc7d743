"""The command line of scripts/autobahn.py (the usage is the package's docstring)."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time

from .config import CI_SAMPLE, REPORTS, ROOT, VENV
from .mode import Mode
from .procs import HarnessError, on_signal, say, stop_all
from .py27 import all_case_ids, ensure_venv, select_cases


def parser() -> argparse.ArgumentParser:
    """The options; --help shows them."""
    ap = argparse.ArgumentParser(
        description="Run the Autobahn TestSuite against simplews (client and/or server, ws:// or wss://).",
        epilog="CI: `python scripts/autobahn.py all` then "
               "`python scripts/autobahn.py all --tls --ci-sample`.")
    ap.add_argument("mode", nargs="?", choices=["client", "server", "all"], default="all")
    ap.add_argument("--tls", action="store_true",
                    help="wss:// with tests/certs/ (modes client-tls, server-tls)")
    ap.add_argument("--cases", default="*",
                    help="comma-separated case patterns, e.g. 1.*,12.1.* (default: all)")
    ap.add_argument("--ci-sample", action="store_true",
                    help=f"1.* to 10.* and a sample of 12.* and 13.* (--cases {CI_SAMPLE})")
    ap.add_argument("--sequential", action="store_true", help="with all: one mode after the other")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds allowed per mode (default 120 + 4 per case)")
    ap.add_argument("--python", default=sys.executable,
                    help="the Python 3 that runs the simplews testees (default: this one)")
    ap.add_argument("--import-path", default=ROOT,
                    help="prepended to the testees' PYTHONPATH (default: the repository, i.e. the "
                         "working tree's simplews); '' to use the simplews installed in --python")
    ap.add_argument("--reports", default=REPORTS,
                    help="the folder of the reports, one sub-folder per mode (default: reports/)")
    ap.add_argument("--setup-only", action="store_true", help="make the 2.7 virtualenv and stop")
    return ap


def run_modes(args: argparse.Namespace, modes: list[Mode]) -> None:
    """Make the venv, select the cases and run the mode(s) into `modes` (parallel unless --sequential)."""
    python27 = ensure_venv()
    if args.setup_only:
        say(f"virtualenv: {os.path.relpath(VENV, ROOT)}")
        return
    cases = select_cases(all_case_ids(python27), args.cases)
    sides = ["client", "server"] if args.mode == "all" else [args.mode]
    modes += [Mode(side, args.tls, cases, args, python27) for side in sides]
    if len(modes) > 1 and not args.sequential:
        threads = [threading.Thread(target=m.run, name=m.name, daemon=True) for m in modes]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    else:
        for m in modes:
            m.run()


def print_summaries(modes: list[Mode], started: float) -> int:
    """Print each mode's summary (and write its summary.txt), then the totals; the exit code."""
    failed = False
    harness = False
    for m in modes:
        text = m.summary()
        say("")
        say(text)
        with contextlib.suppress(OSError), open(os.path.join(m.outdir, "summary.txt"), "w") as f:
            f.write(text + "\n")
        failed |= not m.passed()
        harness |= bool(m.error)
    say(f"\ntotal time {time.monotonic() - started:.1f} s: "
        + ", ".join(f"{m.name} {'PASS' if m.passed() else 'FAIL'}" for m in modes))
    passed_cases = sum(len(m.result or {}) - len(m.bad_cases()) for m in modes)
    failed_cases = sum(len(m.bad_cases()) + len(m.missing_cases()) for m in modes)
    say(f"autobahn: {passed_cases} passed, {failed_cases} failed")
    return 2 if harness else (1 if failed else 0)


def main() -> int:
    """Run the suite as the options say; the exit status (see the package's docstring)."""
    ap = parser()
    args = ap.parse_args()
    if args.ci_sample:
        if args.cases != "*":
            ap.error("--ci-sample and --cases are exclusive")
        args.cases = CI_SAMPLE

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    modes: list[Mode] = []
    try:
        run_modes(args, modes)
        if args.setup_only:
            return 0
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the child processes")
        stop_all(final=True)
        return 130
    except HarnessError as exc:
        say(f"error: {exc}")
        stop_all(final=True)
        return 2
    finally:
        stop_all()
    return print_summaries(modes, started)
