"""The machine and the tree: load, git state, a process's memory and threads, the
compiled simplews modules."""
from __future__ import annotations

import os
import subprocess
from typing import List, Tuple

from .config import ROOT


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, or "?"."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def uptime() -> str:
    """`uptime`'s line (falls back to the load averages)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + loadavg()


def tree_state() -> str:
    """HEAD commit and whether simplews/ has uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "simplews"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return "%s%s" % (head[:72], " (+ uncommitted changes in simplews/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def proc_status(pid: int) -> Tuple[int, int]:
    """VmRSS (KiB) and Threads of a process, from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    return out["VmRSS"], out["Threads"]


def _mtimes(suffixes: Tuple[str, ...]) -> List[float]:
    """Modification times of the files under simplews/ with these suffixes."""
    return [os.path.getmtime(os.path.join(base, f))
            for base, _, files in os.walk(os.path.join(ROOT, "simplews"))
            for f in files if f.endswith(suffixes)]


def tree_has_extension() -> bool:
    """True if simplews/ holds a compiled module."""
    return bool(_mtimes((".so", ".pyd")))


def extension_stale() -> bool:
    """True if a C source in simplews/ is newer than a compiled module (or none is built)."""
    src, built = _mtimes((".c",)), _mtimes((".so", ".pyd"))
    return bool(src) and (not built or max(src) > min(built))


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_fds(pid: int) -> int:
    """How many descriptors a process has open (-1 if unknown)."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1
