"""HTTP Basic authentication (RFC 7617) for the server's opening handshake."""
from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Callable, Iterable, Mapping, Optional, Tuple, Union

from .http11 import Request, Response

__all__ = ["basic_auth", "parse_basic_auth"]

CheckCredentials = Callable[[str, str], bool]


def parse_basic_auth(header: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(username, password)`` from an ``Authorization: Basic ...`` value, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def basic_auth(credentials: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None, *,
               check_credentials: Optional[CheckCredentials] = None,
               realm: str = "simplews") -> Callable[[Any, Request], Optional[Response]]:
    """A ``process_request`` for serve(): 401 with ``WWW-Authenticate`` (RFC 7617 §2)
    unless the request carries Basic credentials found in ``credentials`` (a mapping or
    pairs of username and password) or accepted by ``check_credentials(username, password)``.
    The handler finds the user in ``parse_basic_auth(ws.request.headers.get("Authorization"))``."""
    if (credentials is None) == (check_credentials is None):
        raise ValueError("give either credentials or check_credentials")
    known = dict(credentials.items() if isinstance(credentials, Mapping) else credentials or ())
    if "\r" in realm or "\n" in realm:
        raise ValueError("a realm cannot contain CR or LF")
    quoted = realm.replace("\\", "\\\\").replace('"', '\\"')  # RFC 7230 §3.2.6 quoted-string
    challenge = f'Basic realm="{quoted}", charset="UTF-8"'

    def check(username: str, password: str) -> bool:
        if check_credentials is not None:
            return check_credentials(username, password)
        expected = known.get(username)
        # compare_digest: the time taken does not tell how much of the password matched
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    def process_request(connection: Any, request: Request) -> Optional[Response]:
        parsed = parse_basic_auth(request.headers.get("Authorization"))
        if parsed is not None and check(*parsed):
            return None
        text = "missing credentials" if parsed is None else "invalid credentials"
        return Response(401, headers=[("WWW-Authenticate", challenge),
                                      ("Content-Type", "text/plain; charset=utf-8")],
                        body=f"401 Unauthorized: {text}\n".encode())

    return process_request
