"""The ``simplews`` command (and ``python -m simplews``): a WebSocket client in the spirit
of ``wscat`` (client.py, session.py) and ``simplews serve``, an echo server (serve.py).
Expected failures end with one line on stderr and an exit code that tells them apart
(errors.py)."""
from __future__ import annotations

import os
import sys
from typing import Sequence

from . import client, serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:  # closed by the caller (<&-): empty, or discarded
            setattr(sys, name, open(os.devnull, mode))  # noqa: SIM115 (for the process's life)
    if args[:1] == ["serve"]:
        return serve.run(serve.parser().parse_args(args[1:]))
    return client.run(client.parser().parse_args(args))
