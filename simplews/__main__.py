"""``python -m simplews``: the command-line client and echo server (see simplews.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
