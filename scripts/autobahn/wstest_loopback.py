# -*- coding: utf-8 -*-
"""Run Autobahn's ``wstest`` (Python 2.7) with every listening socket on 127.0.0.1.

``wstest -m fuzzingserver`` binds its WebSocket port on all interfaces
(``listenWS(..., interface='')``). This wrapper makes it bind the loopback
interface only, then runs the unmodified ``wstest`` command line. Used by
scripts/autobahn.py; the embedded web server must be disabled with ``-u 0``.
"""
import sys

from autobahntestsuite import fuzzing, wstest  # type: ignore[import-not-found]  # Python 2.7 only

_listenWS = fuzzing.listenWS


def _listen_loopback(factory, contextFactory=None, backlog=50, interface='127.0.0.1'):
    # type: (object, object, int, str) -> object
    return _listenWS(factory, contextFactory, backlog, interface or '127.0.0.1')


fuzzing.listenWS = _listen_loopback

if __name__ == '__main__':
    sys.argv[0] = 'wstest'
    sys.exit(wstest.run())
