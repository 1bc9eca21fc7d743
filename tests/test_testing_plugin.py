"""The pytest plugin works where only simplews (and pytest) is installed: a fresh virtualenv,
simplews installed from this checkout by pip (without the test extra), and pytest run in a
subprocess on a user's test file that uses ws_fake_server without importing anything but
simplews (tests/plugin_user/user_tests.py)."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
USER_TESTS = pathlib.Path(__file__).resolve().parent / "plugin_user" / "user_tests.py"
PROJECT_FILES = ["setup.py", "setup.cfg", "README.rst", "LICENSE", "MANIFEST.in"]


def run(*args: str, cwd: pathlib.Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> pathlib.Path:
    """A virtualenv with simplews (from a copy of this checkout: pip builds out of the working
    tree) and pytest, nothing else of ours."""
    base = tmp_path_factory.mktemp("plugin")
    source = base / "simplews-src"
    shutil.copytree(ROOT / "simplews", source / "simplews",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, source / name)
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    installed = run(str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "pytest", str(source), cwd=base)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def test_ws_fake_server_in_a_fresh_virtualenv(fresh_venv, tmp_path):
    where = run(str(fresh_venv), "-c", "import simplews, websocket", cwd=tmp_path)
    assert "No module named 'websocket'" in where.stderr  # the test extra is not installed
    location = run(str(fresh_venv), "-c", "import simplews; print(simplews.__file__)", cwd=tmp_path)
    assert "site-packages" in location.stdout and str(ROOT) not in location.stdout
    shutil.copy(USER_TESTS, tmp_path / "test_user.py")
    result = run(str(fresh_venv), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 1 xfailed" in result.stdout
    plugins = run(str(fresh_venv), "-m", "pytest", "--fixtures", "-p", "no:cacheprovider",
                  "test_user.py", cwd=tmp_path)
    assert "ws_fake_server -- " in plugins.stdout and "simplews" in plugins.stdout
