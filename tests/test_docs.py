"""The documentation (docs/, issue 17). Without Sphinx: every public name has its entry
in the API reference, and the README passages that the docs include are still marked.
With Sphinx installed (the ``docs`` extra): the site builds with warnings as errors, as
``.ci/run`` builds it."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from support import ROOT

DOCS = ROOT / "docs"
PUBLIC_MODULES = ("simplews", "simplews.testing", "simplews.wsgi")
ALIASES = {"simplews.testing.Opcode": "simplews.Opcode"}  # as docs/_ext/simplews_docs.py


def test_every_public_name_has_an_entry_in_the_api_reference():
    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    entries = set(re.findall(r"^\.\. (?:auto\w+|py:\w+):: ([\w.]+)", api, re.MULTILINE))
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            full = f"{module_name}.{name}"
            if full not in entries and ALIASES.get(full) not in entries:
                missing.append(full)
    assert missing == []


def test_the_readme_passages_the_docs_include_are_marked():
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    for page in DOCS.glob("*.rst"):
        text = page.read_text(encoding="utf-8")
        for option in re.findall(r"^   :(?:start-after|end-before): (.+)$", text, re.MULTILINE):
            assert option in readme, f"{page.name}: {option!r} is not in README.rst"


def test_the_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx is not installed: pip install -e '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                             "html", "-d", str(tmp_path / "doctrees"), str(DOCS),
                             str(tmp_path / "html")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "api.html").exists()
