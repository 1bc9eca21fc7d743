"""--with-peers: the peers' virtualenv, .cache/bench-venv, and the re-exec into it."""
from __future__ import annotations

import os
import subprocess
import sys

from .config import ENTRY, ROOT, VENV
from .machine import extension_stale

PEER_PACKAGES = ["websockets", "simple-websocket", "websocket-client", "py-spy", "pyinstrument"]


def ensure_venv() -> None:
    """Create .cache/bench-venv with the peers (and simplews -e) and re-exec
    inside it. The peers are never dependencies of simplews."""
    vpy = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    stamp = os.path.join(VENV, ".bench-peers")
    want = "\n".join(PEER_PACKAGES + ["-e " + ROOT]) + "\n"
    try:
        with open(stamp) as f:
            have = f.read()
    except OSError:
        have = None
    if have != want:
        print("setting up %s ..." % VENV, flush=True)
        if not os.path.exists(vpy):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=300)
        subprocess.run([vpy, "-m", "pip", "install", "-q"] + PEER_PACKAGES, check=True, timeout=600)
        # simplews with its own dependencies (certifi); the tree is also first on
        # sys.path/PYTHONPATH, so the working tree is what gets measured
        r = subprocess.run([vpy, "-m", "pip", "install", "-q", "-e", ROOT], timeout=600)
        if r.returncode:
            print("note: pip install -e . failed; installing certifi and importing simplews "
                  "from the tree via PYTHONPATH")
            subprocess.run([vpy, "-m", "pip", "install", "-q", "certifi"], check=True, timeout=600)
        with open(stamp, "w") as f:
            f.write(want)
    elif extension_stale():
        # C sources newer than the built module: rebuild in place (build
        # artifacts only; *.so and build/ are git-ignored)
        print("simplews C sources changed: pip install -e . to rebuild the accelerator", flush=True)
        subprocess.run([vpy, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT], timeout=600)
    sys.stdout.flush()
    os.execv(vpy, [vpy, ENTRY] + sys.argv[1:])
