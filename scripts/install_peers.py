"""Install the peers of the interop tests that are no Debian package (.ci/run calls
this after installing the Debian ones, chromium, nginx, nodejs, npm, tinyproxy and
dante-server; a plain ``pytest`` never installs anything and skips the tests whose
peer is missing):

- Node's ``ws``: ``npm install ws@8`` into ``.cache/node`` (git-ignored);
- Python's ``websockets``: a virtualenv ``.cache/websockets-venv`` (git-ignored).

Usage: ``python scripts/install_peers.py``. The standard library only: tests/peers.py
loads this file for the paths and versions below.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from typing import Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
NODE_DIR = CACHE / "node"
WS_NPM_SPEC = "ws@8"
WEBSOCKETS_PIP_SPEC = "websockets>=13"  # websockets.sync since 11; 12 drops wss closes (1006) now and then
WEBSOCKETS_VENV = CACHE / "websockets-venv"
WEBSOCKETS_CHECK = "import websockets.sync.client, websockets.sync.server"
TIMEOUT = 900  # seconds, for one apt-get / npm / pip run


def run(args: Sequence[str], cwd: pathlib.Path = REPO) -> None:
    print("+", " ".join(map(str, args)), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(list(args), cwd=cwd, env=env, stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=True)


def node_ws() -> None:
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        run(["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--no-save",
             "--loglevel=error", WS_NPM_SPEC], cwd=NODE_DIR)


def websockets_venv() -> None:
    python = WEBSOCKETS_VENV / "bin" / "python"
    check = [str(python), "-I", "-c", WEBSOCKETS_CHECK]  # -I: only the venv's packages
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return
    shutil.rmtree(WEBSOCKETS_VENV, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(WEBSOCKETS_VENV)])
    run([str(python), "-I", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         WEBSOCKETS_PIP_SPEC])
    run(check)


if __name__ == "__main__":
    node_ws()
    websockets_venv()
