"""What the sans-I/O Protocol hands out: the side and state of a connection, and its
events (RFC 6455 §5.5, §5.6)."""
from __future__ import annotations

import enum
from typing import Tuple, Union

__all__ = ["Side", "State", "Event", "Message", "Fragment", "Ping", "Pong", "Close", "DataEvent"]


class Side(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.IntEnum):
    """RFC 6455 §4-§7 connection states (CONNECTING belongs to the handshake)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        slots: Tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in slots)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        slots: Tuple[str, ...] = self.__slots__
        return type(self) is type(other) and all(getattr(self, n) == getattr(other, n) for n in slots)


class Message(Event):
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: Union[str, bytes]) -> None:
        self.data = data


class Fragment(Event):
    """A piece of a message read in streaming mode; ``last`` ends the message."""

    __slots__ = ("data", "last")

    def __init__(self, data: Union[str, bytes], last: bool) -> None:
        self.data = data
        self.last = last


class Ping(Event):
    """A ping; its pong is already queued (RFC 6455 §5.5.2)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Pong(Event):
    """A pong; ``acknowledged`` lists the payloads of the pings it answers, oldest first."""

    __slots__ = ("data", "acknowledged")

    def __init__(self, data: bytes, acknowledged: Tuple[bytes, ...]) -> None:
        self.data = data
        self.acknowledged = acknowledged


class Close(Event):
    """The peer's close frame (code 1005 when it had no payload)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


#: What recv() and recv_streaming() deliver.
DataEvent = Union[Message, Fragment]
