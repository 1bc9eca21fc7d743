"""Run the Autobahn TestSuite (RFC 6455 / RFC 7692 conformance) against simplews.

Usage:
    python scripts/autobahn.py [client|server|all] [--tls] [--cases 1.*,12.1.*] [--ci-sample]
    python scripts/autobahn ...   (the same)

Modes:
    client   wstest -m fuzzingserver, driven by an echo client written with
             simplews.connect() (scripts/autobahn/testee_client.py)
    server   wstest -m fuzzingclient against an echo server written with
             simplews.serve() (scripts/autobahn/testee_server.py)
    all      both, in parallel (the default)
    --tls    the same over wss://, with the test certificates in tests/certs/

Case selection: --cases takes comma-separated shell-style patterns matched
against the whole case id ("1.*", "12.1.*", "12.*.1", "7.1.6"); --ci-sample
selects 1.* to 10.* plus a sample of 12.* and 13.* (see CI_SAMPLE in config).

The suite runs under Python 2.7 in a virtualenv of its own, made once in
.cache/autobahn-venv (pinned in config; needs Python 2.7 from pyenv or PATH, or
$AUTOBAHN_PYTHON27, and PyPI). Reports go to reports/<mode>/ (index.html,
index.json, one file per case), the logs of both peers beside them.

Exit status: 0 when every case is OK (7.1.6, 7.13.1 and 7.13.2 may be
INFORMATIONAL) with a clean close, 1 when some case is not, 2 when the
harness itself failed, 130 on Ctrl-C.

The package (scripts/autobahn.py runs cli.main):

    cli        the command line; runs the modes, prints the summaries and the totals
    config     paths, the pinned suite, the informational cases, the CI sample
    procs      child processes (own session, stopped by pid), ports, progress
    py27       finding Python 2.7, the suite's virtualenv, its case ids
    mode       Mode: one side (client or server, ws:// or wss://) run end to end
    report     Outcome: a mode's results, its verdict and its summary text
    testee_client, testee_server: the simplews echo peers (Python 3, run by path)
    wstest_loopback: wstest bound to 127.0.0.1 (Python 2.7, run by path)
"""
