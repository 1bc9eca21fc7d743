"""Build script: metadata lives in setup.cfg; the version and the optional C accelerator here."""
import re
from pathlib import Path

from setuptools import Extension, setup

# Read the version without importing the package (its dependencies may not be installed yet).
VERSION = re.search(
    r'__version__ = "([^"]+)"', Path(__file__).with_name("simplews").joinpath("version.py").read_text()
).group(1)

# Masking in C (simplews/_speedups.c); optional=True: without a compiler the build goes on
# and simplews runs its pure-Python masking.
SPEEDUPS = Extension("simplews._speedups", ["simplews/_speedups.c"], optional=True)

setup(version=VERSION, ext_modules=[SPEEDUPS])
