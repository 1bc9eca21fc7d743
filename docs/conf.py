"""Sphinx configuration of simplews' documentation.

Build it (the ``docs`` extra pins Sphinx)::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/build

``.ci/run`` builds it with ``-W``: every warning fails the build. The local extension
``_ext/simplews_docs.py`` adds the command-line reference (from the argument parsers
themselves) and warns when a public name is missing from the API reference, has no
docstring, or points the reader to a file they do not have.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # autodoc imports this checkout's simplews
sys.path.insert(0, os.path.join(HERE, "_ext"))

from simplews import __version__  # noqa: E402

project = "simplews"
author = "the simplews authors"
copyright = "the simplews authors, MIT License"  # noqa: A001 (Sphinx's name)
release = __version__
version = __version__

extensions = ["sphinx.ext.autodoc", "simplews_docs"]

exclude_patterns = ["build", "_build"]  # build/: where the README builds it (git ignores it)
# No intersphinx: it fetches other projects' inventories over the network, which CI
# does not have. Without it, references to the standard library's types in signatures
# (socket.socket, ssl.SSLContext...) cannot resolve, so nitpicky mode stays off; the
# references between our own pages (:doc:, :ref:, :func:) are checked all the same:
# an unknown :doc: or :ref: target is a warning, and -W makes it an error.
nitpicky = False

autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # show "2 ** 20" and "USER_AGENT" as the code writes them
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"

html_theme = "alabaster"
html_title = f"simplews {release}"
html_static_path: list = []
