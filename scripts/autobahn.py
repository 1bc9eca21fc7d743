#!/usr/bin/env python3
"""Run the Autobahn TestSuite against simplews: runs the scripts/autobahn/ package (its docstring
is the usage).

    python scripts/autobahn.py [client|server|all] [--tls] [--cases 1.*,12.1.*] [--ci-sample]
"""
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]   # scripts/: the package

from autobahn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
