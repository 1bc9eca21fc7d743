"""reconnect(): a new connection after each abnormal close, with exponential backoff."""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Iterator, Optional

from ._io import LONGEST_WAIT
from .client import connect
from .connection import Connection
from .exceptions import InvalidHandshake, InvalidProxy, InvalidProxyStatus, InvalidStatus, ProxyError
from .frames import CloseCode

__all__ = ["reconnect"]

logger = logging.getLogger("simplews.client")

RETRY_STATUSES = frozenset((500, 502, 503, 504))  # any other refusal is raised to the caller
FINAL_CLOSE_CODES = frozenset((CloseCode.NORMAL_CLOSURE, CloseCode.NO_STATUS_RCVD))  # the peer ended it


def reconnect(uri: str, *, initial_delay: float = 1.0, max_delay: float = 60.0,
              factor: float = 1.618, jitter: float = 0.5, max_attempts: Optional[int] = None,
              stable_after: float = 10.0, **connect_options: Any) -> Iterator[Connection]:
    """Yield a connection to ``uri``, and a new one each time the loop asks for the next
    after the previous one closed abnormally (any code but 1000 and 1005: 1001 "going away"
    included) or could not be opened (OSError, TimeoutError, the connection closed before
    the answer, a proxy that fails, HTTP 500/502/503/504 from the server or the proxy;
    not a 407 or a bad proxy URL). The waits between attempts start at
    ``initial_delay`` seconds and grow by ``factor`` after each failure up to
    ``max_delay``, each drawn from ``[delay * (1 - jitter), delay]``.
    A connection that lasted ``stable_after`` seconds (from the handshake to the loop
    asking for the next) is a success: the next attempt is made at once and the waits
    start again; one that ended sooner counts as a failure, so that a server that accepts
    and then closes is not hammered. The loop ends after a normal close (1000 or no code)
    or when the caller breaks out; ``max_attempts`` failures to open in a row raise the
    last error. Options: those of connect()::

        for ws in simplews.reconnect("ws://127.0.0.1:8765/"):
            try:
                for message in ws:
                    handle(message)
            except simplews.ConnectionClosedError:
                continue  # reconnect
    """
    if not (initial_delay >= 0 and max_delay >= 0 and factor >= 1 and 0 <= jitter <= 1
            and stable_after >= 0) or max_attempts is not None and max_attempts < 1:
        raise ValueError("reconnect() needs delays >= 0, factor >= 1, 0 <= jitter <= 1, "
                         "stable_after >= 0 and max_attempts >= 1 or None")
    max_delay = min(max_delay, LONGEST_WAIT)  # (what time.sleep() takes: inf would overflow)
    initial_delay = min(initial_delay, max_delay)  # (max_delay=0.5 alone: no wait past it)
    delay = initial_delay
    failures = 0

    def wait(why: str, *args: Any) -> None:
        """Sleep ``delay`` less up to ``jitter`` of it and log why; the next delay grows."""
        nonlocal delay
        pause = delay * (1 - jitter * random.random())
        logger.info(why + "; next attempt in %.2f s", *args, pause)
        time.sleep(pause)
        delay = min(delay * factor, max_delay)

    while True:
        try:
            ws = connect(uri, **connect_options)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if not _retryable(exc):
                raise
            failures += 1
            if max_attempts is not None and failures >= max_attempts:
                raise
            wait("cannot connect to %s (%s)", uri, exc)
            continue
        failures = 0
        opened = time.monotonic()
        yield ws
        lasted = time.monotonic() - opened
        if ws.close_code is None:  # the caller asked for another one while this one is open
            ws.close()
        elif ws.close_code in FINAL_CLOSE_CODES:
            return
        if lasted >= stable_after:
            logger.info("connection to %s ended after %.1f s (code %s); reconnecting",
                        uri, lasted, ws.close_code)
            delay = initial_delay
        else:
            wait("connection to %s ended after %.2f s (code %s)", uri, lasted, ws.close_code)


def _retryable(exc: Exception) -> bool:
    """Could not open: the connection failed or was lost before the 101 (an EOF then:
    a server restarting, a balancer without a backend), the proxy failed, or HTTP
    500/502/503/504 from the server or the proxy; other refusals (a 407 from the proxy
    included) and a bad proxy URL (InvalidProxy) are final."""
    if isinstance(exc, (InvalidStatus, InvalidProxyStatus)):
        return exc.status in RETRY_STATUSES
    return not isinstance(exc, InvalidHandshake) or isinstance(exc, ProxyError) and not \
        isinstance(exc, InvalidProxy) or isinstance(exc.__cause__, EOFError)
