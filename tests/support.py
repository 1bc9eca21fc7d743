"""Helpers shared by the tests: certificates, TLS contexts, ports, and the time scale.

SIMPLEWS_TEST_TIME_SCALE (default 1) multiplies every bound a test waits for or
asserts on (``TIMEOUT``, ``scaled()``), for slow or heavily loaded machines.
"""
from __future__ import annotations

import os
import pathlib
import socket
import ssl

CERTS = pathlib.Path(__file__).parent / "certs"
TIME_SCALE = float(os.environ.get("SIMPLEWS_TEST_TIME_SCALE", "1"))
TIMEOUT = 10 * TIME_SCALE  # the bound on anything a test waits for


def scaled(seconds: float) -> float:
    """A time bound of the tests, stretched by SIMPLEWS_TEST_TIME_SCALE."""
    return seconds * TIME_SCALE


def server_ssl_context(cert: str = "server") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERTS / f"{cert}.pem", CERTS / f"{cert}.key")
    return context


def client_ssl_context() -> ssl.SSLContext:
    """Trusts the test CA (tests/certs/ca.pem) only."""
    return ssl.create_default_context(cafile=str(CERTS / "ca.pem"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot report their own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
