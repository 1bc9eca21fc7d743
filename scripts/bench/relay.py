"""A loopback TCP relay that counts the bytes going each way.

The bench's deflate row measures the bytes per message on the wire with it; the
interop tests (tests/peers.py imports this file by path) see whether
permessage-deflate is in use, TLS or not. Standard library only, on purpose: the
tests and the bench's own virtualenv both load it.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import List, Tuple


class Flow:
    """One relayed connection: its byte counts, and whether each direction ended."""

    def __init__(self) -> None:
        self.upstream_bytes = 0  # client -> server
        self.downstream_bytes = 0  # server -> client
        self.ended = (threading.Event(), threading.Event())  # upstream, downstream at EOF

    def wait_ended(self, timeout: float) -> bool:
        """True once both directions have ended (each waited for up to timeout)."""
        return all(event.wait(timeout) for event in self.ended)


class TcpRelay:
    """Listens on 127.0.0.1 (``port``) and relays each connection to ``target``,
    counting bytes in total (``upstream_bytes``, ``downstream_bytes``) and per
    connection (``flows``, in the order accepted). A connection's sockets close
    once both directions have ended; ``close()`` ends everything."""

    def __init__(self, target: Tuple[str, int], wait: float = 20.0) -> None:
        self.target = target
        self.wait = wait  # the bound on connecting to the target and on joining a thread
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.upstream_bytes = 0  # client -> server
        self.downstream_bytes = 0  # server -> client
        self.flows: List[Flow] = []
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=self.wait)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            flow = Flow()
            with self._lock:
                self._sockets += [client, server]
                self.flows.append(flow)
                for source, sink, up in ((client, server, True), (server, client, False)):
                    thread = threading.Thread(target=self._pump, args=(source, sink, flow, up),
                                              name="relay-pump", daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, flow: Flow, up: bool) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            while True:
                n = source.recv_into(buf)
                if not n:
                    break
                with self._lock:
                    if up:
                        self.upstream_bytes += n
                        flow.upstream_bytes += n
                    else:
                        self.downstream_bytes += n
                        flow.downstream_bytes += n
                sink.sendall(view[:n])
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        flow.ended[0 if up else 1].set()
        if all(event.is_set() for event in flow.ended):
            source.close()
            sink.close()

    def reset(self) -> None:
        """Zero the totals (the flows keep theirs)."""
        with self._lock:
            self.upstream_bytes = self.downstream_bytes = 0

    def close(self) -> None:
        """Stop accepting, cut every connection and join the threads."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accepting.join(self.wait)
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(self.wait)
        for sock in sockets:
            sock.close()
