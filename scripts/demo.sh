#!/usr/bin/env bash
# The main job in one go: the echo server, and the command-line client talking to it
# (pipe mode, then --once). Run it where `simplews` is installed (see README.rst).
set -euo pipefail
port=${PORT:-8765}
simplews serve --port "$port" &
server=$!
trap 'kill -INT "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do  # until the server listens (at most 10 s)
  python -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null && break
  sleep 0.1
done
printf 'hello\nworld\n' | simplews ws://127.0.0.1:"$port"/
echo '{"op": "status"}' | simplews --once ws://127.0.0.1:"$port"/
