#!/usr/bin/env python3
"""simplews benchmark: runs the scripts/bench/ package (its docstring is the usage).

    python scripts/bench.py [--with-peers] [--quick] [--rounds N] [--json FILE]
                            [--only COL,COL] [--rows ROW,ROW] [--profile]
                            [--pin CPU] [-v] [--scale-n N,N] [--scale-time S]
                            [--scale-clients K] [--scale-rounds R]
                            [--switch-interval S] [--idle-n N] [--idle-time S]
"""
import os
import sys

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(SCRIPTS), SCRIPTS]   # the tree's simplews first, then the package

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
