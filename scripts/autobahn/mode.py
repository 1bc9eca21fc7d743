"""Mode: one side of simplews (client or server, ws:// or wss://) run against wstest."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from typing import Any

from .config import AGENT, CERTS, HERE, ROOT
from .procs import (HarnessError, count_lines, free_port, say, start_process, stop_process,
                    wait_listening, wait_with_progress)
from .report import Outcome


class Mode(Outcome):
    """client: wstest -m fuzzingserver + testee_client.py; server: testee_server.py + -m fuzzingclient."""

    def __init__(self, side: str, tls: bool, cases: list[str], args: argparse.Namespace,
                 python27: str) -> None:
        name = side + ("-tls" if tls else "")
        super().__init__(name, tls, cases, os.path.join(os.path.abspath(args.reports), name))
        self.side = side
        self.args = args
        self.python27 = python27

    def timeout(self) -> float:
        """Seconds allowed for the run: --timeout, else 120 + 4 per case."""
        return float(self.args.timeout) if self.args.timeout else 120.0 + 4 * len(self.cases)

    def testee_env(self) -> dict[str, str]:
        """The simplews testee's environment: --import-path first on PYTHONPATH, unbuffered."""
        env = dict(os.environ)
        path = self.args.import_path
        if path:
            env["PYTHONPATH"] = os.pathsep.join([path, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else path
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def wstest_env() -> dict[str, str]:
        """wstest's environment: no PYTHONPATH / PYTHONHOME of this Python 3, unbuffered."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # its log is the progress of the server side
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        return env

    def wstest(self, mode: str, spec: dict[str, Any]) -> list[str]:
        """The wstest command line for `mode`, its spec written to <outdir>/<mode>.json."""
        spec_path = os.path.join(self.outdir, f"{mode}.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=2)
        loopback = os.path.join(HERE, "wstest_loopback.py")
        return [self.python27, loopback, "-m", mode, "-s", spec_path, "-u", "0"]

    def start_wstest(self, mode: str, spec: dict[str, Any], log: str) -> subprocess.Popen[bytes]:
        return start_process(self.wstest(mode, spec), log, cwd=self.outdir, env=self.wstest_env())

    def run(self) -> None:
        """Run the mode into a fresh <outdir>; a harness failure goes to self.error."""
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

    def await_child(self, proc: subprocess.Popen[bytes], log: str, prefix: str, what: str) -> int:
        """Wait for proc (progress: lines of `log` starting with `prefix`), then stop it; its exit code."""
        try:
            rc = wait_with_progress(proc, self.name, self.timeout(),
                                    lambda: count_lines(log, prefix), len(self.cases))
        finally:
            stop_process(proc)
        if rc is None:
            raise HarnessError(f"{what} timed out after {self.timeout():.0f} s (log: {log})")
        return rc

    def run_client(self) -> None:
        """wstest -m fuzzingserver on a free port (3 tries), then the simplews client against it."""
        wstest_log = os.path.join(self.outdir, "wstest.log")
        testee_log = os.path.join(self.outdir, "testee-client.log")
        for _ in range(3):
            port = free_port()
            spec = {"url": f"{self.scheme}://127.0.0.1:{port}", "outdir": self.outdir,
                    "cases": self.cases, "exclude-cases": [], "exclude-agent-cases": {}}
            if self.tls:
                spec["key"] = os.path.join(CERTS, "server.key")
                spec["cert"] = os.path.join(CERTS, "server.pem")
            fuzzer = self.start_wstest("fuzzingserver", spec, wstest_log)
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
            rc = self.await_child(testee, testee_log, "case ", "the testee client")
            if rc != 0:
                raise HarnessError(f"the testee client exited with {rc} (log: {testee_log})")
            wait_for_file(os.path.join(self.outdir, "index.json"), fuzzer, 0.2,
                          f"the fuzzing server wrote no report (log: {wstest_log})")
        finally:
            stop_process(fuzzer)

    def run_server(self) -> None:
        """The simplews echo server (it writes its port to a file), then wstest -m fuzzingclient."""
        wstest_log = os.path.join(self.outdir, "wstest.log")
        testee_log = os.path.join(self.outdir, "testee-server.log")
        port_file = os.path.join(self.outdir, "testee-server.port")
        cmd = [self.args.python, os.path.join(HERE, "testee_server.py"), "--port-file", port_file]
        if self.tls:
            cmd += ["--cert", os.path.join(CERTS, "server.pem"), "--key", os.path.join(CERTS, "server.key")]
        server = start_process(cmd, testee_log, cwd=ROOT, env=self.testee_env())
        try:
            wait_for_file(port_file, server, 0.1,
                          f"the simplews echo server did not start (log: {testee_log})")
            with open(port_file) as f:
                port = int(f.read())
            spec = {"outdir": self.outdir,
                    "servers": [{"agent": AGENT, "url": f"{self.scheme}://127.0.0.1:{port}"}],
                    "cases": self.cases, "exclude-cases": [], "exclude-agent-cases": {}}
            fuzzer = self.start_wstest("fuzzingclient", spec, wstest_log)
            rc = self.await_child(fuzzer, wstest_log, "Running test case ID", "wstest -m fuzzingclient")
            if server.poll() is not None:
                raise HarnessError(f"the simplews echo server died during the run, exit code "
                                   f"{server.returncode} (log: {testee_log})")
            if rc != 0 or not os.path.exists(os.path.join(self.outdir, "index.json")):
                raise HarnessError(f"wstest -m fuzzingclient exited with {rc}, report missing "
                                   f"(log: {wstest_log})")
        finally:
            code = stop_process(server)
            if code not in (0, None, -signal.SIGTERM):
                say(f"[{self.name}] note: the echo server exited with {code} on SIGTERM (log: {testee_log})")


def wait_for_file(path: str, proc: subprocess.Popen[bytes], poll: float, error: str) -> None:
    """Wait up to 60 s for `path` to exist; HarnessError(error) if proc exits first or time runs out."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise HarnessError(error)
        time.sleep(poll)
