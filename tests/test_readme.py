"""README.rst's first screen runs as written (issue 17): the code blocks of its "Quick
start" section are extracted and run in their order, from the root of the checkout, with
real processes on loopback: ``sh`` blocks run their command (``simplews`` is this
checkout's command-line entry point), ``python`` blocks are written to a file and run by
this interpreter. A block that starts a server (``simplews serve``, ``serve_forever()``)
keeps running in the background until the next server block, which is how the README
tells a reader to proceed: the test then stops it with Ctrl-C (SIGINT, by pid) and
checks that it ended cleanly. Every other block is a client of the server running then.

One change is made to the text: the port 8765 becomes a free port, so that the test does
not collide with a server the machine already runs there.

The README also keeps the two set-up commands, the second one being the very test
command that ``.ci/run`` runs."""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import pytest

import simplews
from support import CLI_TIMEOUT, ROOT, TIMEOUT, cli_env, client_ssl_context, free_port

README = ROOT / "README.rst"
README_PORT = "8765"


def section(title: str) -> str:
    """The text of README.rst's section ``title``, up to the next section's title."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n{'-' * len(title)}\n")
    following = re.search(r"\n[^\n]+\n-{3,}\n", text[start + len(title) + 2:])
    assert following, f"no section after {title!r}"
    return text[start:start + len(title) + 2 + following.start()]


def code_blocks(text: str) -> List[Tuple[str, str]]:
    """The ``.. code-block:: LANGUAGE`` blocks of ``text``: (language, code)."""
    blocks = []
    for match in re.finditer(r"^\.\. code-block:: (\w+)\n\n((?:    .*\n|\n)+)", text, re.MULTILINE):
        code = "\n".join(line[4:] for line in match.group(2).splitlines()).strip("\n") + "\n"
        blocks.append((match.group(1), code))
    return blocks


def is_server(language: str, code: str) -> bool:
    if language == "sh":
        return code.startswith("simplews serve")
    return "serve_forever()" in code


class Runner:
    """Runs the blocks; owns the server processes (stopped by pid at the end)."""

    def __init__(self, tmp_path, port: int) -> None:
        self.tmp_path = tmp_path
        self.port = port
        self.env: Dict[str, str] = cli_env()
        shims = tmp_path / "bin"  # `simplews` on PATH: this checkout's entry point
        shims.mkdir()
        shim = shims / "simplews"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m simplews "$@"\n')
        shim.chmod(0o755)
        self.env["PATH"] = f"{shims}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["PYTHONUNBUFFERED"] = "1"
        self.server: Optional[subprocess.Popen] = None
        self.server_code = ""
        self.started: List[subprocess.Popen] = []
        self.files = 0

    def command(self, language: str, code: str) -> List[str]:
        if language == "sh":
            lines = [line for line in code.splitlines() if line.strip()]
            assert len(lines) == 1, f"one command per sh block: {code!r}"
            args = shlex.split(lines[0])
            assert args[0] == "simplews", f"a command other than simplews: {code!r}"
            return [str(self.tmp_path / "bin" / "simplews"), *args[1:]]
        self.files += 1
        path = self.tmp_path / f"block{self.files}.py"
        path.write_text(code, encoding="utf-8")
        return [sys.executable, str(path)]

    def start_server(self, language: str, code: str) -> None:
        self.stop_server()
        self.server = subprocess.Popen(self.command(language, code), cwd=str(ROOT), env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
        self.started.append(self.server)
        self.server_code = code
        deadline = time.monotonic() + TIMEOUT
        while True:  # until it listens
            assert self.server.poll() is None, f"the server exited: {self.server.communicate()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                assert time.monotonic() < deadline, f"the server never listened: {code}"
                time.sleep(0.05)
            else:
                return

    def stop_server(self) -> None:
        """Ctrl-C, as a reader would; it must end at once, with 0 and no traceback, and
        have logged the address it listened on."""
        server, self.server = self.server, None
        if server is None:
            return
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=CLI_TIMEOUT)
        log = err.decode("utf-8", "replace")
        assert server.returncode == 0, f"{self.server_code}\nexit {server.returncode}:\n{log}"
        assert "Traceback" not in log, log
        assert re.search(rf"listening on (wss?://)?127\.0\.0\.1:{self.port}\b", log), log

    def run_client(self, language: str, code: str) -> str:
        assert self.server is not None, f"a client block before any server block: {code}"
        sent = re.findall(r'ws\.send\("([^"]*)"\)', code) if language == "python" else ["hello"]
        assert sent, f"the block sends nothing: {code}"
        typed = b"" if language == "python" else b"hello\n"  # what a reader types
        result = subprocess.run(self.command(language, code), cwd=str(ROOT), env=self.env,
                                input=typed, capture_output=True, timeout=CLI_TIMEOUT, check=False)
        output = result.stdout.decode("utf-8", "replace")
        assert result.returncode == 0, f"{code}\nexit {result.returncode}:\n{output}\n" \
                                       f"{result.stderr.decode('utf-8', 'replace')}"
        assert output.splitlines() == sent, (code, output)
        return output

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=TIMEOUT)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def runner(tmp_path):
    r = Runner(tmp_path, free_port())
    try:
        yield r
    finally:
        r.close()


def test_the_quick_start_runs_as_written(runner):
    blocks = code_blocks(section("Quick start"))
    kinds = [("server" if is_server(*block) else "client", block[0]) for block in blocks]
    # The order the issue asks for: the echo server, clients against it, a server of your
    # own, then wss: its server before its clients.
    assert kinds == [("server", "sh"), ("client", "sh"), ("client", "python"),
                     ("server", "python"), ("server", "sh"), ("client", "sh"),
                     ("client", "python")], kinds
    assert sum(README_PORT in code for _, code in blocks) == len(blocks)
    blocks = [(language, code.replace(README_PORT, str(runner.port))) for language, code in blocks]
    python_client = blocks[2]
    ran = []
    for language, code in blocks:
        if is_server(language, code):
            stop_holding_a_connection(runner)
            runner.start_server(language, code)
            if language == "python":  # "the client above talks to it as well"
                ran.append(runner.run_client(*python_client))
        else:
            ran.append(runner.run_client(language, code))
    stop_holding_a_connection(runner)
    assert ran == ["hello\n", "hello\n", "hello\n", "hello\n", "hello over TLS\n"]


def stop_holding_a_connection(runner: Runner) -> None:
    """Ctrl-C to the running server while a client is connected: the client gets 1001."""
    if runner.server is None:
        return
    if "--tls-cert" in runner.server_code:
        uri, context = f"wss://localhost:{runner.port}/", client_ssl_context()
    else:
        uri, context = f"ws://127.0.0.1:{runner.port}/", None
    with simplews.connect(uri, ssl=context, open_timeout=TIMEOUT) as held:
        runner.stop_server()
        with pytest.raises(simplews.ConnectionClosedOK):
            held.recv(timeout=TIMEOUT)
        assert held.close_code == 1001


def test_the_readme_gives_the_two_set_up_commands():
    text = README.read_text(encoding="utf-8")
    demo = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
            "&& bash scripts/demo.sh")
    tests = ("python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' "
             "&& python -m pytest -q")
    assert demo in text and tests in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q -e '.[test]'" in ci and "python -m pytest -q" in ci
    assert (ROOT / "scripts" / "demo.sh").exists()
