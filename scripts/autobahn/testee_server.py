"""Autobahn fuzzingclient testee: an echo server written with simplews' public API only.

    python scripts/autobahn/testee_server.py --port-file FILE [--port 0] [--cert C --key K]

Serves on 127.0.0.1; once listening, writes the bound port to FILE.
Stops on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import ssl
import sys
from types import FrameType
from typing import Any, NoReturn, Optional

import simplews


def handler(ws: simplews.Connection) -> None:
    """Echo every message, text as text, binary as binary, until the connection closes."""
    for msg in ws:
        ws.send(msg)


def _stop(signum: int, frame: Optional[FrameType]) -> NoReturn:
    raise SystemExit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop)

    options: dict[str, Any] = dict(compression="deflate", max_size=None, ping_interval=None)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        options["ssl"] = context

    with simplews.serve(handler, "127.0.0.1", args.port, **options) as server:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{server.port}\n")
        os.replace(tmp, args.port_file)
        print(f"listening on 127.0.0.1:{server.port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
