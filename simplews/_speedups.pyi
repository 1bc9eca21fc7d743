"""Types of the optional C accelerator (simplews/_speedups.c), built by setup.py when a
compiler is present; simplews.frames falls back to its pure-Python masking without it."""
from _typeshed import ReadableBuffer

def apply_mask(data: ReadableBuffer, mask: ReadableBuffer, /) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3); ValueError unless
    ``mask`` is 4 bytes long."""
