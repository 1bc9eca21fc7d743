"""The README's "Testing your WebSocket code" example runs as written (issue 15): its
code block is extracted and run by pytest in a subprocess, with the plugin that
installing simplews registers (the ws_fake_server fixture)."""
from __future__ import annotations

import re
import subprocess
import sys

from support import CLI_TIMEOUT, ROOT, cli_env


def readme_block(after: str) -> str:
    """The first ``.. code-block:: python`` of README.rst after the line ``after``."""
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    rest = text[text.index(after):]
    match = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", rest)
    assert match, f"no code block after {after!r}"
    return "\n".join(line[4:] for line in match.group(1).splitlines()) + "\n"


def test_the_readme_ticker_example_passes(tmp_path):
    source = readme_block("Installing simplews registers a pytest plugin")
    assert "def test_ticker_reconnects_after_a_drop_and_a_refusal(ws_fake_server)" in source
    (tmp_path / "test_ticker.py").write_text(source, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_ticker.py"], cwd=tmp_path, env=cli_env(), capture_output=True,
                            timeout=CLI_TIMEOUT, check=False)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "1 passed" in output, output
