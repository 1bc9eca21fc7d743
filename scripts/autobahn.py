#!/usr/bin/env python3
"""Run the Autobahn TestSuite (RFC 6455 / RFC 7692 conformance) against simplews.

Usage:
    python scripts/autobahn.py [client|server|all] [--tls] [--cases 1.*,12.1.*] [--ci-sample]

Modes:
    client   wstest -m fuzzingserver, driven by an echo client written with
             simplews.connect() (scripts/autobahn/testee_client.py)
    server   wstest -m fuzzingclient against an echo server written with
             simplews.serve() (scripts/autobahn/testee_server.py)
    all      both, in parallel (the default)
    --tls    the same over wss://, with the test certificates in tests/certs/

Case selection: --cases takes comma-separated shell-style patterns matched
against the whole case id ("1.*", "12.1.*", "12.*.1", "7.1.6"); --ci-sample
selects 1.* to 10.* plus a sample of 12.* and 13.* (see CI_SAMPLE below).

The suite runs under Python 2.7 in a virtualenv of its own, made once in
.cache/autobahn-venv (pinned below; needs Python 2.7 from pyenv or PATH, or
$AUTOBAHN_PYTHON27, and PyPI). Reports go to reports/<mode>/ (index.html,
index.json, one file per case), the logs of both peers beside them.

Exit status: 0 when every case is OK (7.1.6, 7.13.1 and 7.13.2 may be
INFORMATIONAL) with a clean close, 1 when some case is not, 2 when the
harness itself failed, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "scripts", "autobahn")
CACHE = os.path.join(ROOT, ".cache")
REPORTS = os.path.join(ROOT, "reports")
CERTS = os.path.join(ROOT, "tests", "certs")
VENV = os.path.join(CACHE, "autobahn-venv")
BOOTSTRAP = os.path.join(CACHE, "autobahn-bootstrap")

AGENT = "simplews"

# A Python 3 venv that holds the last virtualenv able to make Python 2.7
# environments (20.22 dropped 2.7 targets); its seed wheels for 2.7
# (pip 20.3.4, setuptools 44.1.1, wheel 0.37.1) are bundled in it, so the
# 2.7 environment is made offline from that point.
BOOTSTRAP_PINS = [
    "virtualenv==20.21.1",
    "distlib==0.3.6",
    "filelock==3.12.0",
    "platformdirs==3.2.0",
]

# autobahntestsuite 25.10.1's sdist lacks the requirements.txt its setup.py
# reads, so it declares no dependencies: its egg-info lists them, and this is
# the complete resolved set under Python 2.7 (pip freeze of a working venv).
AUTOBAHN_PINS = [
    "autobahntestsuite==25.10.1",
    "autobahn[accelerate,twisted]==0.10.9",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "zope.interface==4.6.0",
    "incremental==16.10.1",
    "constantly==15.1.0",
    "Automat==22.10.0",
    "attrs==21.4.0",
    "hyperlink==21.0.0",
    "idna==2.10",
    "typing==3.10.0.0",
    "PyHamcrest==1.10.1",
    "pyOpenSSL==19.1.0",
    "cryptography==3.3.2",
    "cffi==1.15.1",
    "pycparser==2.21",
    "enum34==1.1.10",
    "ipaddress==1.0.23",
    "service-identity==18.1.0",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "klein==17.10.0",
    "Werkzeug==1.0.1",
    "Jinja2==2.11.3",
    "MarkupSafe==1.1.1",
    "unittest2==1.1.0",
    "linecache2==1.0.0",
    "traceback2==1.4.0",
    "argparse==1.4.0",
    "six==1.16.0",
    "setuptools==44.0.0",
    "wsaccel==0.6.6",
    "ujson==2.0.3",
]

# Informational by nature: the suite records what the peer did, judges nothing.
INFORMATIONAL_CASES = {"7.1.6", "7.13.1", "7.13.2"}

# CI: 1.* to 10.* in full, and for 12.* / 13.* (permessage-deflate) every
# sub-category (message sizes and fragmentations x negotiated parameters) at a
# few message sizes: 16 B, 4 KiB, 64 KiB, and 16 KiB / 128 KiB in fragments of
# 256 B / 32 KiB (361 cases; about 1/3 of a full mode's time).
CI_SAMPLE = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*.1,12.*.5,12.*.9,12.*.12,12.*.18,13.*.1,13.*.5,13.*.9,13.*.12,13.*.18"

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSE_BEHAVIORS = ["OK", "INFORMATIONAL", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "FAILED"]


class HarnessError(Exception):
    """The harness could not run (as opposed to: a case is not OK)."""


# -- processes -------------------------------------------------------------

_procs_lock = threading.Lock()
_procs: List[subprocess.Popen] = []
_stopping = threading.Event()  # set on Ctrl-C / SIGTERM: no new child from then on
_print_lock = threading.Lock()


def say(*parts: object) -> None:
    with _print_lock:
        print(*parts, flush=True)


def start_process(args: List[str], log_path: str, **kw) -> subprocess.Popen:
    """Start a child in its own session (Ctrl-C reaches only us; we stop it by pid)."""
    with _procs_lock:
        if _stopping.is_set():
            raise HarnessError("interrupted")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        _procs.append(proc)
    return proc


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> Optional[int]:
    """SIGTERM this child by its pid, SIGKILL it after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    with _procs_lock:
        if proc in _procs:
            _procs.remove(proc)
    return proc.returncode


def stop_all(final: bool = False) -> None:
    with _procs_lock:
        if final:
            _stopping.set()
        procs = list(_procs)
    for proc in procs:
        stop_process(proc, grace=5.0)


def _on_signal(signum, frame):
    raise KeyboardInterrupt


# -- the Python 2.7 virtualenv -----------------------------------------------

def find_python27() -> str:
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
                candidates += sorted(glob.glob(os.path.join(root, "versions", "2.7*", "bin", "python2.7")),
                                     reverse=True)
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


def _run(args: List[str], what: str, timeout: float, log: str) -> None:
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(args) + "\n").encode())
        f.flush()
        try:
            proc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{what}: timed out after {timeout:.0f} s (log: {log})")
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
        with open(stamp, "w") as f:
            f.write(stamp_text)
        if not quiet:
            say("== virtualenv ready ==")
        return python


def all_case_ids(python: str) -> List[str]:
    code = ("import json\n"
            "from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename, CaseSetname\n"
            "from autobahntestsuite.caseset import CaseSet\n"
            "cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)\n"
            "print(json.dumps(cs.parseSpecCases({'cases': ['*']})))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise HarnessError("cannot list the suite's cases:\n" + out.stderr)
    return json.loads(out.stdout)


def select_cases(all_ids: List[str], patterns: str) -> List[str]:
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in all_ids if any(fnmatch.fnmatchcase(c, p) for p in pats)]
    unmatched = [p for p in pats if not any(fnmatch.fnmatchcase(c, p) for c in all_ids)]
    if unmatched:
        raise HarnessError(f"--cases: no case matches {', '.join(unmatched)}")
    return chosen


# -- running one mode ----------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(("127.0.0.1", port))
                return True
            except OSError:
                pass
        time.sleep(0.2)
    return False


def count_lines(path: str, prefix: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(prefix.encode()))
    except OSError:
        return 0


def wait_with_progress(proc: subprocess.Popen, name: str, timeout: float, progress, total: int,
                       interval: float = 60.0) -> Optional[int]:
    """Wait for proc; print progress every `interval` s; None on timeout."""
    started = time.monotonic()
    last = started
    while True:
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - started > timeout:
            return None
        if now - last >= interval:
            last = now
            say(f"[{name}] {progress()}/{total} cases, {now - started:.0f} s")


class Mode:
    def __init__(self, side: str, tls: bool, cases: List[str], args: argparse.Namespace, python27: str):
        self.side = side
        self.tls = tls
        self.cases = cases
        self.args = args
        self.python27 = python27
        self.name = side + ("-tls" if tls else "")
        self.outdir = os.path.join(os.path.abspath(args.reports), self.name)
        self.wall = 0.0
        self.error: Optional[str] = None
        self.result: Optional[dict] = None

    @property
    def scheme(self) -> str:
        return "wss" if self.tls else "ws"

    def timeout(self) -> float:
        return self.args.timeout if self.args.timeout else 120 + 4 * len(self.cases)

    def testee_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        path = self.args.import_path
        if path:
            env["PYTHONPATH"] = os.pathsep.join([path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def wstest_env() -> Dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # its log is the progress of the server side
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        return env

    def wstest(self, mode: str, spec: dict) -> List[str]:
        spec_path = os.path.join(self.outdir, f"{mode}.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=2)
        return [self.python27, os.path.join(HERE, "wstest_loopback.py"), "-m", mode, "-s", spec_path, "-u", "0"]

    def run(self) -> None:
        shutil.rmtree(self.outdir, ignore_errors=True)
        os.makedirs(self.outdir)
        started = time.monotonic()
        say(f"[{self.name}] {len(self.cases)} cases, reports in {os.path.relpath(self.outdir, ROOT)}/")
        try:
            if self.side == "client":
                self.run_client()
            else:
                self.run_server()
        except HarnessError as exc:
            self.error = str(exc)
        finally:
            self.wall = time.monotonic() - started
        self.result = self.collect()

    def run_client(self) -> None:
        wstest_log = os.path.join(self.outdir, "wstest.log")
        testee_log = os.path.join(self.outdir, "testee-client.log")
        for attempt in range(3):
            port = free_port()
            spec = {"url": f"{self.scheme}://127.0.0.1:{port}", "outdir": self.outdir,
                    "cases": self.cases, "exclude-cases": [], "exclude-agent-cases": {}}
            if self.tls:
                spec["key"] = os.path.join(CERTS, "server.key")
                spec["cert"] = os.path.join(CERTS, "server.pem")
            fuzzer = start_process(self.wstest("fuzzingserver", spec), wstest_log, cwd=self.outdir,
                                   env=self.wstest_env())
            if wait_listening(port, fuzzer, 60):
                break
            stop_process(fuzzer)
        else:
            raise HarnessError(f"wstest -m fuzzingserver did not start (log: {wstest_log})")
        try:
            cmd = [self.args.python, os.path.join(HERE, "testee_client.py"),
                   f"{self.scheme}://127.0.0.1:{port}", "--agent", AGENT, "--expect", str(len(self.cases))]
            if self.tls:
                cmd += ["--cafile", os.path.join(CERTS, "ca.pem")]
            testee = start_process(cmd, testee_log, cwd=ROOT, env=self.testee_env())
            try:
                rc = wait_with_progress(testee, self.name, self.timeout(),
                                        lambda: count_lines(testee_log, "case "), len(self.cases))
            finally:
                stop_process(testee)
            if rc is None:
                raise HarnessError(f"the testee client timed out after {self.timeout():.0f} s (log: {testee_log})")
            if rc != 0:
                raise HarnessError(f"the testee client exited with {rc} (log: {testee_log})")
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(self.outdir, "index.json")):
                if time.monotonic() > deadline or fuzzer.poll() is not None:
                    raise HarnessError(f"the fuzzing server wrote no report (log: {wstest_log})")
                time.sleep(0.2)
        finally:
            stop_process(fuzzer)

    def run_server(self) -> None:
        wstest_log = os.path.join(self.outdir, "wstest.log")
        testee_log = os.path.join(self.outdir, "testee-server.log")
        port_file = os.path.join(self.outdir, "testee-server.port")
        cmd = [self.args.python, os.path.join(HERE, "testee_server.py"), "--port-file", port_file]
        if self.tls:
            cmd += ["--cert", os.path.join(CERTS, "server.pem"), "--key", os.path.join(CERTS, "server.key")]
        server = start_process(cmd, testee_log, cwd=ROOT, env=self.testee_env())
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(port_file):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise HarnessError(f"the simplews echo server did not start (log: {testee_log})")
                time.sleep(0.1)
            with open(port_file) as f:
                port = int(f.read())
            spec = {"outdir": self.outdir,
                    "servers": [{"agent": AGENT, "url": f"{self.scheme}://127.0.0.1:{port}"}],
                    "cases": self.cases, "exclude-cases": [], "exclude-agent-cases": {}}
            fuzzer = start_process(self.wstest("fuzzingclient", spec), wstest_log, cwd=self.outdir,
                                   env=self.wstest_env())
            try:
                rc = wait_with_progress(fuzzer, self.name, self.timeout(),
                                        lambda: count_lines(wstest_log, "Running test case ID"), len(self.cases))
            finally:
                stop_process(fuzzer)
            if rc is None:
                raise HarnessError(f"wstest -m fuzzingclient timed out after {self.timeout():.0f} s (log: {wstest_log})")
            if server.poll() is not None:
                raise HarnessError(f"the simplews echo server died during the run, exit code "
                                   f"{server.returncode} (log: {testee_log})")
            if rc != 0 or not os.path.exists(os.path.join(self.outdir, "index.json")):
                raise HarnessError(f"wstest -m fuzzingclient exited with {rc}, report missing (log: {wstest_log})")
        finally:
            rc = stop_process(server)
            if rc not in (0, None, -signal.SIGTERM):
                say(f"[{self.name}] note: the echo server exited with {rc} on SIGTERM (log: {testee_log})")

    # -- results --

    def collect(self) -> Optional[dict]:
        try:
            with open(os.path.join(self.outdir, "index.json")) as f:
                index = json.load(f)
        except (OSError, ValueError):
            return None
        results = index.get(AGENT) or (next(iter(index.values())) if len(index) == 1 else {})
        for case_id, entry in results.items():
            entry["detail"] = {}
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.outdir, entry["reportfile"])) as f:
                    entry["detail"] = json.load(f)
        return results

    def bad_cases(self) -> List[str]:
        """Ids of the cases that ran and are not OK (the three informational ones aside)."""
        results = self.result or {}
        bad = []
        for case_id in sorted(results, key=case_key):
            r = results[case_id]
            ok = ("OK", "INFORMATIONAL") if case_id in INFORMATIONAL_CASES else ("OK",)
            if r["behavior"] not in ok or r["behaviorClose"] not in ok:
                bad.append(case_id)
        return bad

    def missing_cases(self) -> List[str]:
        results = self.result or {}
        return [c for c in self.cases if c not in results]

    def passed(self) -> bool:
        return not self.error and not self.bad_cases() and not self.missing_cases()

    def summary(self) -> str:
        lines = [f"== {self.name}: {self.scheme}://, {len(self.cases)} cases, wall time {self.wall:.1f} s =="]
        if self.error:
            lines.append(f"HARNESS ERROR: {self.error}")
        results = self.result or {}
        if not results:
            lines.append("no results (no index.json)")
            return "\n".join(lines)
        beh = Counter(r["behavior"] for r in results.values())
        clo = Counter(r["behaviorClose"] for r in results.values())
        lines.append("behavior:         " + ", ".join(f"{k} {beh.get(k, 0)}" for k in BEHAVIORS + sorted(set(beh) - set(BEHAVIORS))))
        lines.append("closing behavior: " + ", ".join(f"{k} {clo.get(k, 0)}" for k in CLOSE_BEHAVIORS + sorted(set(clo) - set(CLOSE_BEHAVIORS))))
        info = [c for c in sorted(results, key=case_key)
                if c in INFORMATIONAL_CASES and results[c]["behavior"] == "INFORMATIONAL"]
        if info:
            lines.append(f"accepted INFORMATIONAL: {', '.join(info)}")
        bad = self.bad_cases()
        if bad:
            lines.append(f"NOT OK ({len(bad)}): {', '.join(bad)}")
            # One paragraph per kind of failure: same behaviours, close code and verdict text.
            groups: Dict[tuple, List[str]] = {}
            for case_id in bad:
                r = results[case_id]
                d = r.get("detail", {})
                result = " ".join(str(d.get("result", "")).split())
                if result.startswith("Case did not finish within"):
                    result = "Case did not finish within N seconds."
                key = (r["behavior"], r["behaviorClose"], r["remoteCloseCode"],
                       shorten(d.get("remoteCloseReason") or "", 200), shorten(result, 300),
                       shorten(d.get("resultClose", ""), 200))
                groups.setdefault(key, []).append(case_id)
            for (b, bc, code, reason, result, result_close), ids in groups.items():
                r = results[ids[0]]
                lines.append(f"  {len(ids)} case(s): {compact_ids(ids)}")
                lines.append(f"    behavior {b}, closing {bc}, simplews' close code {code}"
                             + (f" reason {reason!r}" if reason else ""))
                if result:
                    lines.append(f"    result: {result}")
                if result_close:
                    lines.append(f"    resultClose: {result_close}")
                lines.append("    e.g. " + os.path.relpath(
                    os.path.join(self.outdir, r["reportfile"].replace(".json", ".html")), ROOT))
        else:
            lines.append("NOT OK: none")
        missing = self.missing_cases()
        if missing:
            lines.append(f"MISSING ({len(missing)}): {', '.join(missing[:30])}" + (" ..." if len(missing) > 30 else ""))
        slow = sorted(results.items(), key=lambda kv: -kv[1]["duration"])[:10]
        lines.append("slowest: " + ", ".join(f"{c} {r['duration'] / 1000:.2f} s" for c, r in slow))
        total_ms = sum(r["duration"] for r in results.values())
        lines.append(f"sum of case durations {total_ms / 1000:.1f} s, wall time {self.wall:.1f} s")
        lines.append("RESULT: " + ("PASS" if self.passed() else "FAIL"))
        return "\n".join(lines)


def case_key(case_id: str):
    return tuple(int(x) for x in case_id.split("."))


def compact_ids(ids: List[str], limit: int = 12) -> str:
    """'12.1.1, 12.1.2, ... (90 cases)' for long lists."""
    if len(ids) <= limit:
        return ", ".join(ids)
    return ", ".join(ids[:limit]) + f", ... ({len(ids)} cases, last {ids[-1]})"


def shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 4] + " ..."


# -- main ------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the Autobahn TestSuite against simplews (client and/or server, ws:// or wss://).",
        epilog="CI: `python scripts/autobahn.py all` then `python scripts/autobahn.py all --tls --ci-sample`.")
    parser.add_argument("mode", nargs="?", choices=["client", "server", "all"], default="all")
    parser.add_argument("--tls", action="store_true", help="wss:// with tests/certs/ (modes client-tls, server-tls)")
    parser.add_argument("--cases", default="*", help="comma-separated case patterns, e.g. 1.*,12.1.* (default: all)")
    parser.add_argument("--ci-sample", action="store_true",
                        help=f"1.* to 10.* and a sample of 12.* and 13.* (--cases {CI_SAMPLE})")
    parser.add_argument("--sequential", action="store_true", help="with all: one mode after the other")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds allowed per mode (default 120 + 4 per case)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python 3 that runs the simplews testees (default: this one)")
    parser.add_argument("--import-path", default=ROOT,
                        help="prepended to the testees' PYTHONPATH (default: the repository, i.e. the "
                             "working tree's simplews); '' to use the simplews installed in --python")
    parser.add_argument("--reports", default=REPORTS,
                        help="the folder of the reports, one sub-folder per mode (default: reports/)")
    parser.add_argument("--setup-only", action="store_true", help="make the 2.7 virtualenv and stop")
    args = parser.parse_args()
    if args.ci_sample:
        if args.cases != "*":
            parser.error("--ci-sample and --cases are exclusive")
        args.cases = CI_SAMPLE

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = time.monotonic()
    modes: List[Mode] = []
    try:
        python27 = ensure_venv()
        if args.setup_only:
            say(f"virtualenv: {os.path.relpath(VENV, ROOT)}")
            return 0
        cases = select_cases(all_case_ids(python27), args.cases)
        sides = ["client", "server"] if args.mode == "all" else [args.mode]
        modes = [Mode(side, args.tls, cases, args, python27) for side in sides]
        if len(modes) > 1 and not args.sequential:
            threads = [threading.Thread(target=m.run, name=m.name, daemon=True) for m in modes]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        else:
            for m in modes:
                m.run()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the child processes")
        stop_all(final=True)
        return 130
    except HarnessError as exc:
        say(f"error: {exc}")
        stop_all(final=True)
        return 2
    finally:
        stop_all()

    failed = False
    harness = False
    for m in modes:
        text = m.summary()
        say("")
        say(text)
        with contextlib.suppress(OSError):
            with open(os.path.join(m.outdir, "summary.txt"), "w") as f:
                f.write(text + "\n")
        failed |= not m.passed()
        harness |= bool(m.error)
    say(f"\ntotal time {time.monotonic() - started:.1f} s: "
        + ", ".join(f"{m.name} {'PASS' if m.passed() else 'FAIL'}" for m in modes))
    passed_cases = sum(len(m.result or {}) - len(m.bad_cases()) for m in modes)
    failed_cases = sum(len(m.bad_cases()) + len(m.missing_cases()) for m in modes)
    say(f"autobahn: {passed_cases} passed, {failed_cases} failed")
    return 2 if harness else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
