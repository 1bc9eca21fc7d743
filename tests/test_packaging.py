"""The sdist carries what its tests need: built here, unpacked in a temporary directory,
and a quick subset of its own tests run there against its own copy of simplews."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

from support import ROOT, scaled

QUICK = ["tests/test_frames.py", "tests/test_uri.py", "tests/test_protocol.py", "tests/test_client.py"]


def test_the_sdist_runs_its_own_tests(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                            "sdist", "--dist-dir", str(dist)],
                           cwd=ROOT, capture_output=True, text=True, timeout=scaled(120), check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    (archive,) = dist.glob("simplews-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        # our own archive; the "data" filter where this Python has it (3.9.17+, 3.12)
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for needed in ["pyproject.toml", "setup.cfg", "setup.py", "LICENSE", "simplews/py.typed",
                   "simplews/_speedups.c", "tests/conftest.py", "tests/support.py", "tests/peers.py",
                   "tests/certs/ca.pem", "tests/certs/server.key", "scripts/install_peers.py"]:
        assert needed in names, needed
    assert not [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".so"))]
    unpacked = tmp_path / archive.name[:-len(".tar.gz")]
    env = dict(os.environ, PYTHONPATH=str(unpacked))  # its own simplews (pure Python), not ours
    where = subprocess.run([sys.executable, "-c", "import simplews; print(simplews.__file__)"],
                           cwd=unpacked, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(unpacked)), where.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *QUICK],
                           cwd=unpacked, env=env, capture_output=True, text=True,
                           timeout=scaled(300), check=False)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout.splitlines()[-1]
