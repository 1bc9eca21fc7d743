"""simplews: a threaded, synchronous WebSocket client and server (RFC 6455, RFC 7692)."""
from .exceptions import *  # noqa: F401,F403
from .exceptions import __all__ as _exceptions_all
from .version import __version__

__all__ = ["__version__", *_exceptions_all]
