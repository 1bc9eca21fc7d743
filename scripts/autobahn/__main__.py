"""python scripts/autobahn [options]: the same as python scripts/autobahn.py."""
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]  # scripts/: this package

from autobahn.cli import main  # noqa: E402

sys.exit(main())
