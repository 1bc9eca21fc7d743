"""Python 2.7, the suite's virtualenv in .cache/autobahn-venv, and the suite's case ids."""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import glob
import json
import os
import shutil
import subprocess
import sys

from .config import AUTOBAHN_PINS, BOOTSTRAP, BOOTSTRAP_PINS, CACHE, ROOT, VENV
from .procs import HarnessError, say


def find_python27() -> str:
    """$AUTOBAHN_PYTHON27, else pyenv's newest 2.7, else python2.7 / python2 on PATH."""
    candidates = []
    env = os.environ.get("AUTOBAHN_PYTHON27")
    if env:
        candidates.append(env)
    pyenv = shutil.which("pyenv")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            root = subprocess.run([pyenv, "root"], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
            if root:
                pattern = os.path.join(root, "versions", "2.7*", "bin", "python2.7")
                candidates += sorted(glob.glob(pattern), reverse=True)
    for name in ("python2.7", "python2"):
        path = shutil.which(name)
        if path:
            candidates.append(path)
    for path in candidates:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip() == "2.7":
                return path
    raise HarnessError(
        "Python 2.7 not found (the Autobahn TestSuite runs only on 2.7): install it with "
        "`pyenv install 2.7.18`, put python2.7 on PATH, or set AUTOBAHN_PYTHON27")


def _run(args: list[str], what: str, timeout: float, log: str) -> None:
    """Run one setup step, its output appended to `log`; HarnessError if it fails."""
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(args) + "\n").encode())
        f.flush()
        try:
            proc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{what}: timed out after {timeout:.0f} s (log: {log})") from None
    if proc.returncode != 0:
        raise HarnessError(f"{what}: failed with exit code {proc.returncode} (log: {log})")


def ensure_venv(quiet: bool = False) -> str:
    """Return the venv's python2.7, making the venv first if needed (once; locked)."""
    os.makedirs(CACHE, exist_ok=True)
    stamp_text = "\n".join(["bootstrap:"] + BOOTSTRAP_PINS + ["suite:"] + AUTOBAHN_PINS) + "\n"
    stamp = os.path.join(VENV, "simplews-autobahn.pins")
    python = os.path.join(VENV, "bin", "python")
    with open(os.path.join(CACHE, "autobahn-venv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(stamp) as f:
                if f.read() == stamp_text and os.access(python, os.X_OK):
                    return python
        except OSError:
            pass
        py27 = find_python27()
        log = os.path.join(CACHE, "autobahn-venv.log")
        if not quiet:
            say(f"== making the Autobahn TestSuite virtualenv in {os.path.relpath(VENV, ROOT)} "
                f"(Python 2.7: {py27}; log: {os.path.relpath(log, ROOT)}) ==")
        _make_venv(py27, python, log)
        with open(stamp, "w") as f:
            f.write(stamp_text)
        if not quiet:
            say("== virtualenv ready ==")
        return python


def _make_venv(py27: str, python: str, log: str) -> None:
    """Python 3 bootstrap venv -> virtualenv -p py27 -> pip install the pinned suite."""
    shutil.rmtree(VENV, ignore_errors=True)
    shutil.rmtree(BOOTSTRAP, ignore_errors=True)
    _run([sys.executable, "-m", "venv", BOOTSTRAP], "python3 -m venv", 300, log)
    bpy = os.path.join(BOOTSTRAP, "bin", "python")
    _run([bpy, "-m", "pip", "install", "--disable-pip-version-check", *BOOTSTRAP_PINS],
         "pip install virtualenv", 600, log)
    _run([bpy, "-m", "virtualenv", "--no-download", "--no-periodic-update",
          "--pip", "bundle", "--setuptools", "bundle", "--wheel", "bundle",
          "-p", py27, VENV], "virtualenv -p python2.7", 300, log)
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-python-version-warning",
          *AUTOBAHN_PINS], "pip install autobahntestsuite (Python 2.7)", 1800, log)
    _run([python, "-c", "import autobahntestsuite.fuzzing, wsaccel"], "import autobahntestsuite", 120, log)


def all_case_ids(python: str) -> list[str]:
    """Every case id of the installed suite, in its order."""
    code = ("import json\n"
            "from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, "
            "CaseBasename, CaseSetname\n"
            "from autobahntestsuite.caseset import CaseSet\n"
            "cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)\n"
            "print(json.dumps(cs.parseSpecCases({'cases': ['*']})))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise HarnessError("cannot list the suite's cases:\n" + out.stderr)
    ids: list[str] = json.loads(out.stdout)
    return ids


def select_cases(all_ids: list[str], patterns: str) -> list[str]:
    """The ids matching any comma-separated pattern; HarnessError if a pattern matches none."""
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in all_ids if any(fnmatch.fnmatchcase(c, p) for p in pats)]
    unmatched = [p for p in pats if not any(fnmatch.fnmatchcase(c, p) for c in all_ids)]
    if unmatched:
        raise HarnessError(f"--cases: no case matches {', '.join(unmatched)}")
    return chosen
