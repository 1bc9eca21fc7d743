"""python scripts/bench [options]: the same as python scripts/bench.py."""
import os
import sys

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(SCRIPTS), SCRIPTS]   # the tree's simplews first, then this package

from bench.cli import main  # noqa: E402

main()
