"""The testing examples run as written (issues 15 and 17): the README's short example
and the documentation's longer one (docs/testing.rst, the ticker that must reconnect)
are extracted and run by pytest in a subprocess, with the plugin that installing
simplews registers (the ws_fake_server fixture)."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from support import CLI_TIMEOUT, ROOT, cli_env


def code_block(path: pathlib.Path, after: str) -> str:
    """The first ``.. code-block:: python`` of ``path`` after the line ``after``."""
    text = path.read_text(encoding="utf-8")
    rest = text[text.index(after):]
    match = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", rest)
    assert match, f"no code block after {after!r}"
    return "\n".join(line[4:] for line in match.group(1).splitlines()) + "\n"


def run_pytest_on(source: str, name: str, tmp_path: pathlib.Path) -> str:
    (tmp_path / name).write_text(source, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             name], cwd=tmp_path, env=cli_env(), capture_output=True,
                            timeout=CLI_TIMEOUT, check=False)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    return output


def test_the_readme_greeter_example_passes(tmp_path):
    source = code_block(ROOT / "README.rst", "Installing simplews registers a pytest plugin")
    assert "def test_greet_is_refused_then_dropped(ws_fake_server)" in source
    output = run_pytest_on(source, "test_greeter.py", tmp_path)
    assert "1 passed" in output, output


def test_the_docs_ticker_example_passes(tmp_path):
    source = code_block(ROOT / "docs" / "testing.rst", "Installing simplews registers a pytest plugin")
    assert "def test_ticker_reconnects_after_a_drop_and_a_refusal(ws_fake_server)" in source
    output = run_pytest_on(source, "test_ticker.py", tmp_path)
    assert "1 passed" in output, output
