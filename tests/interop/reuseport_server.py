"""One of several simplews server processes sharing a port (serve(..., reuse_port=True)),
for tests/test_interop_nginx.py: ``python reuseport_server.py PORT`` (0: any free port).

Answers each message with "<pid> <message>", prints {"port": ..., "pid": ...} as one
JSON line once listening, and shuts down cleanly when its stdin closes.
"""
import json
import os
import sys
import threading

import simplews


def handler(ws: simplews.Connection) -> None:
    for message in ws:
        ws.send(f"{os.getpid()} {message}")


def main() -> None:
    server = simplews.serve(handler, "127.0.0.1", int(sys.argv[1]), reuse_port=True,
                            close_timeout=5)
    thread = threading.Thread(target=server.serve_forever, name="serve-forever")
    thread.start()
    print(json.dumps({"port": server.port, "pid": os.getpid()}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.shutdown()
    thread.join(10)


if __name__ == "__main__":
    main()
