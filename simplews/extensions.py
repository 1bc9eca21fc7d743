"""permessage-deflate (RFC 7692): negotiation of its four parameters, and the codec."""
from __future__ import annotations

import re
import zlib
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from .exceptions import NegotiationError
from .frames import BytesLike

__all__ = [
    "DeflateConfig",
    "DeflateParams",
    "Deflater",
    "Inflater",
    "parse_extensions",
    "client_offer",
    "server_accept",
    "client_accept",
    "compression_config",
    "codec_settings",
]

EXTENSION_NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: the end of a sync flush, stripped on the wire

_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# Matched against a stripped piece: no two \s* side by side, whose split of a run of
# spaces a failing match would try every way of (quadratic: 60,000 spaces took 15 s).
_PARAM = re.compile(rf"({_TOKEN})(?:\s*=\s*({_TOKEN}|{_QUOTED}))?")
_WINDOW_BITS = re.compile(r"[1-9][0-9]?")  # §7.1.2: decimal, no leading zeros

ExtensionParams = List[Tuple[str, Optional[str]]]


class DeflateConfig(NamedTuple):
    """What a client offers, or what a server is willing to accept, for permessage-deflate.

    Client side: ``server_*`` are requests to the server, ``client_no_context_takeover``
    a declaration, and ``client_max_window_bits`` is ``True`` to offer the parameter
    without a value (any window the server picks), an int to announce our own limit,
    or ``None`` not to offer it. Server side: ``server_no_context_takeover`` /
    ``server_max_window_bits`` limit our compressor, ``client_no_context_takeover`` /
    ``client_max_window_bits`` are asked of every client (when it allows it).
    Both sides: messages shorter than ``threshold`` bytes go out uncompressed (RFC 7692
    §6.1 leaves it to the sender, message by message; like Node's ws, whose default is
    1024): below ~100 bytes deflate saves little and costs a zlib call each.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: Optional[int] = None
    client_max_window_bits: Union[int, bool, None] = True
    compress_level: int = 2
    mem_level: int = 8
    threshold: int = 128


class DeflateParams(NamedTuple):
    """The negotiated result, from one endpoint's point of view."""

    local_no_context_takeover: bool = False
    remote_no_context_takeover: bool = False
    local_max_window_bits: int = 15
    remote_max_window_bits: int = 15


def parse_extensions(header: str) -> List[Tuple[str, ExtensionParams]]:
    """RFC 6455 §9.1: ``ext; param; param=value, ext2 ...``. Quoted values are unquoted
    and must then be tokens. Raises NegotiationError on a malformed header."""
    result: List[Tuple[str, ExtensionParams]] = []
    for item in _split_outside_quotes(header, ","):
        if not item.strip():
            continue
        pieces = _split_outside_quotes(item, ";")
        name = pieces[0].strip()
        if not re.fullmatch(_TOKEN, name):
            raise NegotiationError(f"invalid extension name {_shown(name)}")
        params: ExtensionParams = []
        for piece in pieces[1:]:
            match = _PARAM.fullmatch(piece.strip())
            if not match:
                raise NegotiationError(f"invalid extension parameter {_shown(piece.strip())}")
            value = match.group(2)
            if value is not None and value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
                if not re.fullmatch(_TOKEN, value):
                    raise NegotiationError(f"invalid quoted parameter value {_shown(value)}")
            params.append((match.group(1).lower(), value))
        result.append((name.lower(), params))
    return result


def _shown(text: str) -> str:
    """``text`` in an error message (an HTTP 400's body): its repr, cut at 40 characters."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _split_outside_quotes(text: str, sep: str) -> List[str]:
    parts: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _params_dict(params: ExtensionParams, need_value: Tuple[str, ...]) -> Dict[str, Optional[str]]:
    """Known, unique permessage-deflate parameters with valid values (RFC 7692 §7.1)."""
    found: Dict[str, Optional[str]] = {}
    for name, value in params:
        if name in found:
            raise NegotiationError(f"duplicate parameter {name}")
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise NegotiationError(f"{name} takes no value")
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            if value is None:
                if name in need_value:
                    raise NegotiationError(f"{name} needs a value")
            elif not _WINDOW_BITS.fullmatch(value) or not 8 <= int(value) <= 15:
                raise NegotiationError(f"invalid {name}={value}")
        else:
            raise NegotiationError(f"unknown parameter {name}")
        found[name] = value
    return found


def _format(params: List[Tuple[str, Optional[int]]]) -> str:
    return "; ".join([EXTENSION_NAME] + [name if v is None else f"{name}={v}" for name, v in params])


def client_offer(config: DeflateConfig) -> str:
    """The client's Sec-WebSocket-Extensions offer (RFC 7692 §5.1, §7.1)."""
    params: List[Tuple[str, Optional[int]]] = []
    if config.server_no_context_takeover:
        params.append(("server_no_context_takeover", None))
    if config.client_no_context_takeover:
        params.append(("client_no_context_takeover", None))
    if config.server_max_window_bits is not None:
        params.append(("server_max_window_bits", config.server_max_window_bits))
    if config.client_max_window_bits is True:
        params.append(("client_max_window_bits", None))
    elif config.client_max_window_bits:
        params.append(("client_max_window_bits", int(config.client_max_window_bits)))
    return _format(params)


def server_accept(header: Optional[str], config: DeflateConfig) -> Optional[Tuple[str, DeflateParams]]:
    """Pick the first permessage-deflate offer that we can accept (RFC 7692 §5.1): the
    response header and our parameters, or None to decline compression. Offers with
    unknown or duplicate parameters or invalid values are declined (RFC 7692 §7: "A server
    MUST decline ..."); a header that breaks RFC 6455 §9.1's syntax raises NegotiationError."""
    if not header:
        return None
    for name, raw in parse_extensions(header):
        if name != EXTENSION_NAME:
            continue
        try:
            offer = _params_dict(raw, need_value=("server_max_window_bits",))
        except NegotiationError:
            continue
        response: List[Tuple[str, Optional[int]]] = []
        # §7.1.1.1: an offered server_no_context_takeover must be accepted.
        server_nct = "server_no_context_takeover" in offer or config.server_no_context_takeover
        if server_nct:
            response.append(("server_no_context_takeover", None))
        # §7.1.1.2: the server may always ask the client not to keep its context; when the
        # client offered it, we echo it (the client is bound only by what the response says,
        # and a fresh context per message lets our inflater drop its window).
        client_nct = config.client_no_context_takeover or "client_no_context_takeover" in offer
        if client_nct:
            response.append(("client_no_context_takeover", None))
        # §7.1.2.1: the response carries the offered value or a smaller one.
        server_bits = config.server_max_window_bits
        offered = offer.get("server_max_window_bits")
        if offered is not None:
            server_bits = min(int(offered), server_bits or 15)
        if server_bits is not None:
            response.append(("server_max_window_bits", server_bits))
        # §7.1.2.2: client_max_window_bits only if the client offered it.
        client_bits = 15
        if "client_max_window_bits" in offer:
            client_value = offer["client_max_window_bits"]
            client_bits = int(client_value) if client_value else 15
            wanted = config.client_max_window_bits
            if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted < client_bits:
                client_bits = wanted
                response.append(("client_max_window_bits", client_bits))
        params = DeflateParams(
            local_no_context_takeover=server_nct,
            remote_no_context_takeover=client_nct,
            local_max_window_bits=server_bits or 15,
            remote_max_window_bits=client_bits,
        )
        return _format(response), params
    return None


def client_accept(header: Optional[str], config: Optional[DeflateConfig]) -> Optional[DeflateParams]:
    """Check the server's Sec-WebSocket-Extensions against what we offered (RFC 7692 §7.1);
    raise NegotiationError when it accepts something we did not offer or cannot honour."""
    if not header:
        return None
    extensions = parse_extensions(header)
    if config is None or len(extensions) != 1 or extensions[0][0] != EXTENSION_NAME:
        raise NegotiationError(f"server accepted extensions we did not offer: {_shown(header)}")
    answer = _params_dict(extensions[0][1], need_value=("server_max_window_bits", "client_max_window_bits"))
    if config.server_no_context_takeover and "server_no_context_takeover" not in answer:
        raise NegotiationError("server ignored server_no_context_takeover")
    server_bits = int(answer.get("server_max_window_bits") or 15)
    if config.server_max_window_bits is not None:
        if "server_max_window_bits" not in answer:
            raise NegotiationError("server ignored server_max_window_bits")
        if server_bits > config.server_max_window_bits:
            raise NegotiationError("server_max_window_bits larger than requested")
    offered_client_bits = config.client_max_window_bits
    client_bits = 15 if offered_client_bits in (True, None) else int(offered_client_bits)
    if "client_max_window_bits" in answer:
        if offered_client_bits is None or offered_client_bits is False:
            raise NegotiationError("server sent client_max_window_bits that we did not offer")
        value = int(answer["client_max_window_bits"] or 15)
        if value > client_bits:
            raise NegotiationError("client_max_window_bits larger than offered")
        client_bits = value
    return DeflateParams(
        local_no_context_takeover=config.client_no_context_takeover
        or "client_no_context_takeover" in answer,
        remote_no_context_takeover="server_no_context_takeover" in answer,
        local_max_window_bits=client_bits,
        remote_max_window_bits=server_bits,
    )


class Deflater:
    """Compresses outgoing messages (RFC 7692 §7.2.1); created lazily, kept or reset
    per message according to the negotiated context takeover."""

    __slots__ = ("_compressor", "_reset", "_window_bits", "_level", "_mem_level")

    def __init__(self, params: DeflateParams, level: int = 6, mem_level: int = 8) -> None:
        self._compressor: Optional["zlib._Compress"] = None
        self._reset = params.local_no_context_takeover
        # zlib cannot make a raw deflate stream with a 256-byte window (8 bits); with
        # such a limit we send messages uncompressed, which RFC 7692 §6 allows.
        self._window_bits = params.local_max_window_bits
        self._level = level
        self._mem_level = mem_level

    @property
    def enabled(self) -> bool:
        return self._window_bits > 8

    def compress(self, data: BytesLike, last: bool) -> bytes:
        """Compress one frame's data; the last frame of a message loses the 00 00 ff ff tail."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self._window_bits, self._mem_level)
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if last:
            if out.endswith(_TAIL):
                out = out[:-4]
            if self._reset:
                self._compressor = None
        return out


class Inflater:
    """Decompresses incoming messages (RFC 7692 §7.2.2), never past ``limit`` bytes."""

    __slots__ = ("_decompressor", "_reset")

    def __init__(self, params: DeflateParams) -> None:
        self._decompressor: Optional["zlib._Decompress"] = None
        self._reset = params.remote_no_context_takeover

    def decompress(self, data: bytes, last: bool, limit: Optional[int]) -> bytes:
        """Inflate one frame's data (the tail is fed after the last one), ``limit + 1``
        bytes at most: more than ``limit`` means the message is too big (the caller
        raises); invalid data (cut short, or more after a final block) raises
        zlib.error, however the message is split into frames and reads."""
        decompressor = self._decompressor
        if decompressor is None:
            # A 15-bit window inflates whatever window the peer compressed with.
            decompressor = self._decompressor = zlib.decompressobj(-15)
        out = decompressor.decompress(data) if limit is None else decompressor.decompress(data, limit + 1)
        if limit is not None and len(out) > limit:
            return out  # (the connection fails: nothing more is inflated)
        # RFC 7692 §7.2.3.4: a final block (BFINAL) may end the stream, then one 0x00 octet
        # (with the tail, an empty stored block); zlib keeps what follows the end in
        # unused_data, across calls.
        if decompressor.eof and decompressor.unused_data not in (b"", b"\x00"):
            raise zlib.error("compressed data after the final deflate block")
        if last:
            # §7.2.2: the tail ends an empty stored block, which inflates to nothing;
            # anything else means the data stopped inside a block.
            if not decompressor.eof and decompressor.decompress(_TAIL):
                raise zlib.error("the compressed data ends inside a deflate block")
            if self._reset or decompressor.eof:  # (a final block: the next message needs a new stream)
                self._decompressor = None
        return out


def compression_config(compression: Union[str, DeflateConfig, None]) -> Optional[DeflateConfig]:
    """``"deflate"`` (the defaults), a DeflateConfig, or None for no compression. A
    DeflateConfig no peer or zlib could take is a ValueError: window bits are 8 to 15
    (RFC 7692 §7.1.2.1-2), compress_level -1 to 9, mem_level 1 to 9, threshold >= 0."""
    if compression is None:
        return None
    if isinstance(compression, DeflateConfig):
        checks = {"server_max_window_bits": (8, 15), "client_max_window_bits": (8, 15),
                  "compress_level": (-1, 9), "mem_level": (1, 9), "threshold": (0, None)}
        for name, (low, high) in checks.items():
            value = getattr(compression, name)
            if value is None and name.endswith("bits") or value is True and name.startswith("client"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low or high and value > high:
                bounds = f"from {low} to {high}" if high else f"of {low} or more"
                raise ValueError(f"DeflateConfig: {name} must be an int {bounds}, not {value!r}")
        return compression
    if compression == "deflate":
        return DeflateConfig()
    raise ValueError(f"unsupported compression: {compression!r}")


def codec_settings(config: Optional[DeflateConfig]) -> Dict[str, int]:
    """zlib's settings for what we compress, as Protocol's keyword arguments."""
    if config is None:
        return {}
    return {"compress_level": config.compress_level, "mem_level": config.mem_level,
            "compress_threshold": config.threshold}
