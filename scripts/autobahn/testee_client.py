"""Autobahn fuzzingserver testee: an echo client written with simplews' public API only.

    python scripts/autobahn/testee_client.py ws://127.0.0.1:9001 [--cafile ca.pem] [--expect N]

Asks the fuzzing server for its case count, runs every case (echoes each
message received, text as text, binary as binary, until the connection
closes), then asks it to write its reports. One line per case on stdout.
"""
from __future__ import annotations

import argparse
import logging
import ssl
import sys
import time
from typing import Any
from urllib.parse import quote

import simplews


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="ws:// or wss:// URI of the fuzzing server, no path")
    parser.add_argument("--agent", default="simplews")
    parser.add_argument("--cafile", help="trust this CA (for wss://)")
    parser.add_argument("--expect", type=int, help="the case count the server must announce")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    options: dict[str, Any] = dict(compression="deflate", max_size=None, ping_interval=None)
    if args.cafile:
        options["ssl"] = ssl.create_default_context(cafile=args.cafile)
    base = args.base.rstrip("/")
    agent = quote(args.agent)

    with simplews.connect(f"{base}/getCaseCount", **options) as ws:
        count = int(ws.recv(timeout=30))
    print(f"case count {count}", flush=True)
    if args.expect is not None and count != args.expect:
        print(f"error: the fuzzing server has {count} cases, expected {args.expect}", flush=True)
        return 2

    for n in range(1, count + 1):
        started = time.monotonic()
        received = 0
        outcome = "?"
        try:
            with simplews.connect(f"{base}/runCase?case={n}&agent={agent}", **options) as ws:
                for message in ws:
                    received += 1
                    ws.send(message)
            outcome = f"closed {ws.close_code} {ws.close_reason!r}"
        except simplews.ConnectionClosed as exc:
            outcome = f"{type(exc).__name__} {getattr(exc, 'code', None)} {getattr(exc, 'reason', '')!r}"
        except (simplews.WebSocketError, OSError, TimeoutError) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        print(f"case {n}/{count} {elapsed:.3f}s messages={received} {outcome}", flush=True)

    with simplews.connect(f"{base}/updateReports?agent={agent}", **options) as ws:
        for _ in ws:
            pass
    print("reports updated", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
