"""Paths, the pinned suite and its bootstrap, and how cases are judged and sampled."""
from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))  # scripts/autobahn: the testees
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(ROOT, ".cache")
REPORTS = os.path.join(ROOT, "reports")
CERTS = os.path.join(ROOT, "tests", "certs")
VENV = os.path.join(CACHE, "autobahn-venv")
BOOTSTRAP = os.path.join(CACHE, "autobahn-bootstrap")

AGENT = "simplews"

# A Python 3 venv that holds the last virtualenv able to make Python 2.7
# environments (20.22 dropped 2.7 targets); its seed wheels for 2.7
# (pip 20.3.4, setuptools 44.1.1, wheel 0.37.1) are bundled in it, so the
# 2.7 environment is made offline from that point.
BOOTSTRAP_PINS = [
    "virtualenv==20.21.1",
    "distlib==0.3.6",
    "filelock==3.12.0",
    "platformdirs==3.2.0",
]

# autobahntestsuite 25.10.1's sdist lacks the requirements.txt its setup.py
# reads, so it declares no dependencies: its egg-info lists them, and this is
# the complete resolved set under Python 2.7 (pip freeze of a working venv).
AUTOBAHN_PINS = [
    "autobahntestsuite==25.10.1",
    "autobahn[accelerate,twisted]==0.10.9",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "zope.interface==4.6.0",
    "incremental==16.10.1",
    "constantly==15.1.0",
    "Automat==22.10.0",
    "attrs==21.4.0",
    "hyperlink==21.0.0",
    "idna==2.10",
    "typing==3.10.0.0",
    "PyHamcrest==1.10.1",
    "pyOpenSSL==19.1.0",
    "cryptography==3.3.2",
    "cffi==1.15.1",
    "pycparser==2.21",
    "enum34==1.1.10",
    "ipaddress==1.0.23",
    "service-identity==18.1.0",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "klein==17.10.0",
    "Werkzeug==1.0.1",
    "Jinja2==2.11.3",
    "MarkupSafe==1.1.1",
    "unittest2==1.1.0",
    "linecache2==1.0.0",
    "traceback2==1.4.0",
    "argparse==1.4.0",
    "six==1.16.0",
    "setuptools==44.0.0",
    "wsaccel==0.6.6",
    "ujson==2.0.3",
]

# Informational by nature: the suite records what the peer did, judges nothing.
INFORMATIONAL_CASES = {"7.1.6", "7.13.1", "7.13.2"}

# CI: 1.* to 10.* in full, and for 12.* / 13.* (permessage-deflate) every
# sub-category (message sizes and fragmentations x negotiated parameters) at a
# few message sizes: 16 B, 4 KiB, 64 KiB, and 16 KiB / 128 KiB in fragments of
# 256 B / 32 KiB (361 cases; about 1/3 of a full mode's time).
CI_SAMPLE = ("1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,"
             "12.*.1,12.*.5,12.*.9,12.*.12,12.*.18,13.*.1,13.*.5,13.*.9,13.*.12,13.*.18")

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSE_BEHAVIORS = ["OK", "INFORMATIONAL", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "FAILED"]
