"""The HTTP/1.1 messages of the opening handshake: parse and serialize, with header limits."""
from __future__ import annotations

import re
import sys
from collections import abc
from http.client import responses
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from .exceptions import HeaderBlockTooLarge, InvalidHandshake

__all__ = ["Headers", "HeadersLike", "Request", "Response", "MAX_HEADER_BYTES", "MAX_HEADERS",
           "is_token", "join_values", "parse_request", "parse_response", "split_tokens"]

MAX_HEADER_BYTES = 64 * 1024  # DESIGN §5: 64 KiB for the whole header block
MAX_HEADERS = 256

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # RFC 7230 §3.2.6
# RFC 7230 §3.2: header-field = field-name ":" OWS field-value OWS, one per line; the
# whole block is checked in one match, then split (a bad line is looked for only then).
_FIELD = rb"%s:[\x09\x20-\x7e\x80-\xff]*" % _TOKEN.pattern
_HEADER_BLOCK = re.compile(rb"%s(?:\r\n%s)*" % (_FIELD, _FIELD))
_HEADER_LINE = re.compile(_FIELD)


def join_values(values: Optional[List[str]], default: Optional[str] = None) -> Optional[str]:
    """A header's values as one: joined with ", " (RFC 7230 §3.2.2), or ``default`` if none."""
    return ", ".join(values) if values else default


def _check_field(name: str, value: str) -> None:
    if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
        raise ValueError("header names and values cannot contain CR or LF")


class Headers:
    """An ordered multi-map of HTTP headers with case-insensitive names."""

    __slots__ = ("_items", "_lines")

    def __init__(self, items: "Optional[HeadersLike]" = None) -> None:
        self._items: List[Tuple[str, str]] = []  # no index: a connection keeps its headers
        # A parsed block, split into _items at first use: a connection keeps its handshake's
        # headers, one string (~200 B) where the split pairs cost ~650 (by_name() reads it).
        self._lines: Optional[str] = None
        if items is not None:
            # a list first: an ABC's isinstance() runs Python code (time, and C stack that
            # stays resident in each connection's thread); abc's Mapping, not typing's
            pairs = (items if isinstance(items, list)
                     else items.items() if isinstance(items, (dict, Headers, abc.Mapping)) else items)
            append = self._items.append
            for item in pairs:
                name, value = item
                _check_field(name, value)
                append(item if type(item) is tuple else (name, value))  # the caller's, shared

    def add(self, name: str, value: str) -> None:
        """Append a header (a name may repeat); CR and LF are refused (ValueError)."""
        _check_field(name, value)
        self._pairs().append((name, value))

    def _pairs(self) -> List[Tuple[str, str]]:
        if self._lines is not None:
            self._items, self._lines = _split_lines(self._lines), None
        return self._items

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The values of ``name`` as one (see join_values), or ``default``."""
        return join_values(self.get_all(name), default)

    def get_all(self, name: str) -> List[str]:
        """Every value of ``name`` (any case), in order; [] if none."""
        name = name.lower()
        return [value for key, value in self._pairs() if key.lower() == name]

    def by_name(self) -> Dict[str, List[str]]:
        """Every value by lower-cased name, in order: one pass for many lookups."""
        index: Dict[str, List[str]] = {}
        for key, value in self._items if self._lines is None else _split_lines(self._lines):
            index.setdefault(key.lower(), []).append(value)
        return index

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        lower = name.lower()
        self._items = [(k, v) for k, v in self._pairs() if k.lower() != lower]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __iter__(self) -> Iterator[str]:
        return iter(name for name, _ in self._pairs())

    def __len__(self) -> int:
        return len(self._pairs())

    def items(self) -> List[Tuple[str, str]]:
        """(name, value) pairs, in order, repeated names included."""
        return list(self._pairs())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._pairs() == other._pairs()

    def __repr__(self) -> str:
        return f"Headers({self._pairs()!r})"

    def serialize(self) -> bytes:
        """The header lines as sent, each ending in CRLF."""
        return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self._pairs())


HeadersLike = Union[Headers, Mapping[str, str], Iterable[Tuple[str, str]]]


class Request:
    """An HTTP request: the client's opening handshake."""

    __slots__ = {"method": "``GET`` for a WebSocket handshake.",
                 "path": "The request target: path and query (``/chat?room=1``).",
                 "version": "``HTTP/1.1``.", "headers": "The request's :class:`Headers`."}

    def __init__(self, path: str, headers: Headers, method: str = "GET",
                 version: str = "HTTP/1.1") -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers

    def serialize(self) -> bytes:
        """The request head as sent: request line, headers, blank line."""
        start = f"{self.method} {self.path} {self.version}\r\n".encode("latin-1")
        return start + self.headers.serialize() + b"\r\n"

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path})"


class Response:
    """An HTTP response: the server's answer to the opening handshake, or a refusal."""

    __slots__ = {"status": "The status code: 101 when the connection is upgraded.",
                 "reason": "The reason phrase (``Switching Protocols``).",
                 "headers": "The response's :class:`Headers`.", "body": "The body (bytes)."}

    def __init__(self, status: int, reason: str = "", headers: Optional[HeadersLike] = None,
                 body: bytes = b"") -> None:
        self.status = status
        self.reason = reason or responses.get(status, "")
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    def serialize(self) -> bytes:
        """The response; a body gets Content-Length (and Connection: close) if missing."""
        headers = self.headers
        if self.status != 101 and "Content-Length" not in headers:
            headers = Headers(headers.items())
            headers.add("Content-Length", str(len(self.body)))
            if "Connection" not in headers:
                headers.add("Connection", "close")
        start = f"HTTP/1.1 {self.status} {self.reason}\r\n".encode("latin-1")
        return start + headers.serialize() + b"\r\n" + self.body

    def __repr__(self) -> str:
        return f"Response({self.status} {self.reason})"


def _split_head(buffer: Union[bytes, bytearray]) -> Optional[Tuple[bytes, bytes, int]]:
    """The start line and the header block of a complete head (CRLF between lines) and
    the head's length, or None if incomplete."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise HeaderBlockTooLarge("header block over 64 KiB")
        return None
    start, _, block = bytes(buffer[:end]).partition(b"\r\n")
    if block.count(b"\r\n") >= MAX_HEADERS:
        raise HeaderBlockTooLarge(f"more than {MAX_HEADERS} headers")
    return start, block, end + 4


def _parse_headers(block: bytes) -> Headers:
    headers = Headers()
    if not block:
        return headers
    if _HEADER_BLOCK.fullmatch(block) is None:
        raise _invalid_line(block)
    headers._lines = block.decode("latin-1")  # the pattern admits no CR or LF: no check needed
    return headers


def _split_lines(lines: str) -> List[Tuple[str, str]]:
    """(name, value) pairs of a header block that _HEADER_BLOCK matched."""
    pairs = []
    for line in lines.split("\r\n"):
        name, _, value = line.partition(":")
        pairs.append((name, value.strip(" \t")))
    return pairs


def _invalid_line(block: bytes) -> InvalidHandshake:
    """The error for the first line of ``block`` that is not a header field."""
    line = next((line for line in block.split(b"\r\n") if not _HEADER_LINE.fullmatch(line)), block)
    name, sep, _ = line.partition(b":")
    if sep and _TOKEN.fullmatch(name):
        return InvalidHandshake(f"invalid value in header {name.decode()}")
    return InvalidHandshake(f"invalid header line {line[:80]!r}")


def parse_request(buffer: Union[bytes, bytearray]) -> Optional[Tuple[Request, int]]:
    """Parse a request from the start of ``buffer``: (request, bytes used) or None if
    incomplete. Raises InvalidHandshake (HeaderBlockTooLarge past the limits)."""
    head = _split_head(buffer)
    if head is None:
        return None
    start, block, size = head
    parts = start.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise InvalidHandshake(f"invalid request line {start[:80]!r}")
    method, path, version = parts  # "GET" and "HTTP/1.1" shared: a connection keeps its request
    return Request(path, _parse_headers(block), sys.intern(method), sys.intern(version)), size


def parse_response(buffer: Union[bytes, bytearray],
                   versions: Tuple[bytes, ...] = (b"HTTP/1.1",)) -> Optional[Tuple[Response, int]]:
    """Parse a response head from the start of ``buffer``: (response, bytes used) or None.
    RFC 6455 §4.1 wants HTTP/1.1; a proxy may answer CONNECT in HTTP/1.0."""
    head = _split_head(buffer)
    if head is None:
        return None
    start, block, size = head
    parts = start.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in versions or not parts[1].isdigit() or len(parts[1]) != 3:
        raise InvalidHandshake(f"invalid status line {start[:80]!r}")
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return Response(int(parts[1]), reason, _parse_headers(block)), size


def is_token(text: str) -> bool:
    """Is ``text`` an HTTP token (RFC 7230 §3.2.6): a subprotocol's name, say?"""
    return _TOKEN.fullmatch(text.encode("latin-1", "replace")) is not None


def split_tokens(value: Optional[str]) -> List[str]:
    """A comma-separated list of tokens (RFC 7230 §7), lower-cased, empty items skipped."""
    return [item.strip().lower() for item in (value or "").split(",") if item.strip()]
