"""What the sans-I/O Protocol hands out: the side and state of a connection, and its
events (RFC 6455 §5.5, §5.6)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Tuple, Union

__all__ = ["Side", "State", "Event", "Message", "Fragment", "Ping", "Pong", "Close", "DataEvent"]


class Side(enum.Enum):
    """Which end of the connection a Protocol is."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.IntEnum):
    """RFC 6455 §4-§7 connection states (CONNECTING belongs to the handshake)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Event:
    """Base class of the events; each is a dataclass, equal to an event of its type
    with the same fields."""

    __slots__ = ()


@dataclass
class Message(Event):
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data",)
    data: Union[str, bytes]


@dataclass
class Fragment(Event):
    """A piece of a message read in streaming mode; ``last`` ends the message."""

    __slots__ = ("data", "last")
    data: Union[str, bytes]
    last: bool


@dataclass
class Ping(Event):
    """A ping; its pong is already queued (RFC 6455 §5.5.2)."""

    __slots__ = ("data",)
    data: bytes


@dataclass
class Pong(Event):
    """A pong; ``acknowledged`` lists the payloads of the pings it answers, oldest first."""

    __slots__ = ("data", "acknowledged")
    data: bytes
    acknowledged: Tuple[bytes, ...]


@dataclass
class Close(Event):
    """The peer's close frame (code 1005 when it had no payload)."""

    __slots__ = ("code", "reason")
    code: int
    reason: str


#: What recv() and recv_streaming() deliver.
DataEvent = Union[Message, Fragment]
