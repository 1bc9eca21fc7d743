"""Types of the optional C accelerator (simplews/_speedups.c), built by setup.py when a
compiler is present; simplews.frames falls back to pure Python without it."""
from typing import Callable

from _typeshed import ReadableBuffer, WriteableBuffer

def apply_mask(data: ReadableBuffer, mask: ReadableBuffer, /) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3); ValueError unless
    ``mask`` is 4 bytes long."""

def mask_frame(header: bytes, data: ReadableBuffer, masks: list[bytes],
               refill: Callable[[], bytes], /) -> bytes:
    """simplews.frames._mask_frame in C: ``header``, a key (``masks.pop()``, or
    ``refill()`` when empty), ``data`` masked with it (RFC 6455 §5.3), as one bytes."""

def take_message(buf: bytearray, client: bool, max_size: int | None, /) -> bytes | str | None:
    """simplews.frames._take_message in C: a whole final TEXT or BINARY frame at the start
    of ``buf``, taken out of it, its payload returned; else None and ``buf`` untouched."""

def mask_in_place(buffer: WriteableBuffer, mask: ReadableBuffer, phase: int, /) -> None:
    """XOR ``buffer`` in place with the repeated ``mask``, starting at its byte
    ``phase & 3``; ValueError unless ``mask`` is 4 bytes long."""

class PayloadBuffer:
    """A new bytes object of ``size`` bytes, written through its (writable) buffer;
    take() returns it, once, when no view of it is left (BufferError otherwise)."""

    def __init__(self, size: int, /) -> None: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def take(self) -> bytes: ...
