"""Sphinx extension for simplews' documentation.

- ``.. simplews-help:: client`` (or ``serve``): the ``--help`` text of the command, from
  its argument parser, so the command-line reference never drifts from the code.
- Every public name (``simplews.__all__``, ``simplews.testing.__all__``,
  ``simplews.wsgi.__all__``) must appear in the API reference: a warning otherwise.
- A docstring that autodoc renders must exist and must not send the reader to a file
  they do not have (the design notes, the README, a source file): a warning otherwise,
  except for the names in ``KNOWN`` below, which are reported as information until
  their docstrings are written (delete an entry once its docstring is fixed).
"""
from __future__ import annotations

import importlib
import os
import re
from typing import Any, Dict, List

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

logger = logging.getLogger(__name__)

PUBLIC_MODULES = ("simplews", "simplews.testing", "simplews.wsgi")

# Docstrings known to be missing or to refer to files users lack (issue 17), until they
# are written. Each entry is a dotted name as autodoc documents it.
KNOWN: Dict[str, str] = {}

# Re-exports documented once, under their first name: an alias counts as documented
# when its target is (a second index entry would make references ambiguous).
ALIASES = {"simplews.testing.Opcode": "simplews.Opcode"}

# What a user of the installed package does not have.
ELSEWHERE = re.compile(r"\bDESIGN\b|\bREADME\b|\b[\w/]+\.py\b|\btests/|\bscripts/")


class HelpDirective(Directive):
    """The --help text of ``simplews`` (argument ``client``) or ``simplews serve``."""

    required_arguments = 1

    def run(self) -> List[nodes.Node]:
        which = self.arguments[0]
        if which not in ("client", "serve"):
            raise self.error(f"simplews-help: 'client' or 'serve', not {which!r}")
        module = importlib.import_module(f"simplews.cli.{which}")
        columns = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal: fix the width
        try:
            text = module.parser().format_help()
        finally:
            if columns is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = columns
        text = text.replace("usage: simplews.py", "usage: simplews")
        return [nodes.literal_block(text, text)]


def check_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                    lines: List[str]) -> None:
    if what == "module":
        return
    text = "\n".join(lines)
    problem = None
    if not text.strip():
        problem = "no docstring"
    elif ELSEWHERE.search(text):
        problem = f"refers to a file users do not have ({ELSEWHERE.search(text).group(0)!r})"
    if problem is None:
        return
    if name in KNOWN:
        logger.info("simplews-docs: %s: %s (known, issue 17)", name, problem)
    else:
        logger.warning("simplews-docs: %s: %s", name, problem)


def check_public_names(app: Any, env: Any) -> None:
    documented = set(env.get_domain("py").objects)
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            full = f"{module_name}.{name}"
            if ALIASES.get(full, full) not in documented:
                logger.warning("simplews-docs: %s.%s is public but not in the API reference",
                               module_name, name)


def setup(app: Any) -> Dict[str, Any]:
    app.add_directive("simplews-help", HelpDirective)
    app.connect("autodoc-process-docstring", check_docstring)
    app.connect("env-check-consistency", check_public_names)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
