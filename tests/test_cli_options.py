"""The client's tester options (issue 16, items 2 to 10), in a subprocess against real
simplews servers on loopback; the slash commands and --show-control also in tmux."""
from __future__ import annotations

import queue
import re
import ssl

import pytest

import simplews

from support import (CERTS, CLI_TIMEOUT, assert_one_line_error, run_cli, running_server, server_ssl_context,
                     stderr_of)
import test_cli
from test_cli import Recorder, _shell_command, cli_process, url

serve_process, tmux = test_cli.serve_process, test_cli.tmux  # the fixtures

TIMEOUT = CLI_TIMEOUT
STAMP = r"\d\d:\d\d:\d\d\.\d\d\d "


# -- slash commands (item 2) -------------------------------------------------


def test_slash_commands_in_a_pipe():
    recorder = Recorder()
    with running_server(recorder) as server:
        result = run_cli("--slash", url(server), input=b"/ping hi\n/binary 00ff\n/b64 YWJj\n//slash\n"
                                                        b"/help\n/close 4001 bye\nnot sent\n")
        assert result.returncode == 0, stderr_of(result)
        assert recorder.received() == [b"\x00\xff", b"abc", "/slash"]
        ws = recorder.connections.get(timeout=TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
    assert result.stdout == b"[binary, 2 bytes] 00ff\n[binary, 3 bytes] 616263\n/slash\n"
    err = stderr_of(result)
    assert re.search(r"^pong 'hi' after \d+\.\d ms$", err, re.M), err
    assert "/close [CODE [REASON]]" in err and "//TEXT" in err, err


def test_without_slash_a_pipe_sends_lines_as_they_are():
    recorder = Recorder()
    with running_server(recorder) as server:
        result = run_cli(url(server), input=b"/ping\n//x\n")
        assert result.returncode == 0, stderr_of(result)
        assert recorder.received() == ["/ping", "//x"]
    assert result.stdout == b"/ping\n//x\n"


@pytest.mark.parametrize("line,fragment", [
    (b"/nope\n", "unknown command /nope"),
    (b"/close 1006\n", "not a close code to send: 1006"),
    (b"/close 4000 " + b"r" * 124 + b"\n", "close reason too long"),
    (b"/binary zz\n", "non-hexadecimal"),
    (b"/b64 %%\n", "cannot send"),
    (b"/ping " + b"p" * 126 + b"\n", "at most 125 bytes"),
])
def test_a_bad_command_in_a_pipe_is_a_usage_error(line, fragment):
    recorder = Recorder()
    with running_server(recorder) as server:
        result = run_cli("--slash", url(server), input=line + b"after\n")
        assert_one_line_error(result, 2, "cannot send", fragment)
        assert recorder.close_code() == 1000
        assert recorder.received() == []


# -- --show-control (item 3) ------------------------------------------------


def test_show_control_prints_pings_pongs_and_the_close_frame():
    def handler(ws):
        ws.recv()
        assert ws.ping("are you there").wait(TIMEOUT)
        ws.pong(b"\xff\x00")  # unsolicited, not UTF-8: hex
        ws.send("bye soon")
        ws.close(4001, "kicked")

    with running_server(handler) as server:
        result = run_cli("--show-control", "-t", "--wait", "10", url(server), input=b"go\n")
    assert re.fullmatch(STAMP + "bye soon\n", result.stdout.decode()), result.stdout
    lines = stderr_of(result).splitlines()
    assert re.fullmatch(STAMP + r"\[ping\] 'are you there'", lines[0]), lines
    assert re.fullmatch(STAMP + r"\[pong\] ff00", lines[1]), lines
    assert re.fullmatch(STAMP + r"\[close\] code 4001, reason 'kicked'", lines[2]), lines
    assert lines[3:] == ["simplews: connection closed by the server: code 4001, reason 'kicked'"]
    assert result.returncode == 8


def test_without_show_control_nothing_is_printed_about_control_frames():
    def handler(ws):
        ws.recv()
        assert ws.ping("quiet").wait(TIMEOUT)
        ws.close()

    with running_server(handler) as server:
        result = run_cli("--keep-open", url(server), input=b"go\n")
    assert result.returncode == 0, stderr_of(result)
    assert stderr_of(result) == "connection closed by the server: code 1000 (normal closure)\n"


# -- binary in and out, JSON, timestamps (items 4, 5) ---------------------------


def test_binary_output_formats_and_hex_input():
    recorder = Recorder()
    with running_server(recorder) as server:
        hexed = run_cli("--hex", url(server), input=b"00ff10\n6869\n")
        based = run_cli("--hex", "--binary-output", "base64", url(server), input=b"616263\n")
        raw = run_cli("--hex", "--binary-output", "raw", url(server), input=b"00ff0a\n0102\n")
        text = run_cli("--binary-output", "raw", url(server), input=b"text stays a line\n")
    for result in (hexed, based, raw, text):
        assert result.returncode == 0, stderr_of(result)
    assert hexed.stdout == b"[binary, 3 bytes] 00ff10\n[binary, 2 bytes] 6869\n"
    assert based.stdout == b"[binary, 3 bytes] YWJj\n"
    assert raw.stdout == b"\x00\xff\n\x01\x02"  # the bytes as they are, nothing added
    assert text.stdout == b"text stays a line\n"
    assert recorder.received()[:2] == [b"\x00\xff\x10", b"hi"]


def test_a_line_that_is_not_hex_is_a_usage_error():
    with running_server(Recorder()) as server:
        result = run_cli("--hex", url(server), input=b"0g\n")
    assert_one_line_error(result, 2, "cannot send '0g'", "non-hexadecimal")


def test_json_pretty_prints_and_timestamps_prefix():
    def handler(ws):
        ws.recv()
        for message in ('{"b": [1, 2], "é": null}', "not {json", "42", b"\x01"):
            ws.send(message)
        ws.close()

    with running_server(handler) as server:
        result = run_cli("--json", "--keep-open", url(server), input=b"go\n")
        stamped = run_cli("--json", "-t", "--keep-open", url(server), input=b"go\n")
    assert result.returncode == 0, stderr_of(result)
    assert result.stdout.decode() == ('{\n  "b": [\n    1,\n    2\n  ],\n  "é": null\n}\n'
                                      "not {json\n42\n[binary, 1 bytes] 01\n")
    lines = stamped.stdout.decode().splitlines()
    assert re.fullmatch(STAMP + "{", lines[0]) and lines[1] == '  "b": [', lines
    assert all(re.fullmatch(STAMP + text, line)
               for text, line in zip(["not {json", "42", r"\[binary, 1 bytes\] 01"], lines[-3:])), lines


# -- --reconnect (item 6) ---------------------------------------------------


def test_reconnect_after_an_abnormal_close_until_a_normal_one():
    connections = []

    def handler(ws):
        connections.append(ws)
        if len(connections) == 1:
            ws.close(1012, "restarting")  # service restart: come back later
            return
        for message in ws:
            ws.send(message)

    with running_server(handler) as server, cli_process("--reconnect", url(server)) as proc:
        err = []
        for line in proc.stderr:  # until the second connection is under way
            err.append(line.decode())
            if "next attempt in" in line.decode():
                break
        proc.stdin.write(b"after the restart\n")  # sent once reconnected
        proc.stdin.close()
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stdout.read() == b"after the restart\n"
        err += [line.decode() for line in proc.stderr]
    assert err[0] == ("simplews: connection closed by the server: code 1012 (service restart), "
                      "reason 'restarting'\n")
    assert re.fullmatch(r"connection to ws://\S+ ended after [\d.]+ s \(code 1012\); "
                        r"next attempt in [\d.]+ s\n",
                        err[1]), err
    assert len(err) == 2, err
    assert len(connections) == 2


def test_reconnect_ends_with_a_normal_close():
    def handler(ws):
        ws.send("hello")
        ws.close(1000, "done")

    with running_server(handler) as server, cli_process("--reconnect", url(server)) as proc:
        assert proc.wait(timeout=TIMEOUT) == 0  # stdin stays open: the server's close ends it
        assert proc.stdout.read() == b"hello\n"
        err = proc.stderr.read().decode()
    assert err == "connection closed by the server: code 1000 (normal closure), reason 'done'\n"


# -- client certificates (item 7) -------------------------------------------


def test_client_certificate():
    context = server_ssl_context("server")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(CERTS / "untrusted.pem")  # the client's certificate, self-signed
    peers = queue.Queue()

    def handler(ws):
        peers.put(ws.socket.getpeercert())
        for message in ws:
            ws.send(message)

    with running_server(handler, ssl=context) as server:
        where, trust = url(server, "wss", "localhost"), ("--cafile", str(CERTS / "ca.pem"))
        mine = ("--cert", str(CERTS / "untrusted.pem"), "--key", str(CERTS / "untrusted.key"))
        result = run_cli(*trust, *mine,
                         where, input=b"with a certificate\n")
        assert result.returncode == 0, stderr_of(result)
        assert result.stdout == b"with a certificate\n"
        assert dict(x[0] for x in peers.get(timeout=TIMEOUT)["subject"]) == {"commonName": "localhost"}
        result = run_cli(*trust, where, input=b"without\n")
        assert_one_line_error(result, 6, "TLS error with " + where)
    result = run_cli(*trust, "--cert", str(CERTS / "nope.pem"), where)
    assert_one_line_error(result, 2, "cannot load --cert", "nope.pem")
    result = run_cli("--key", str(CERTS / "untrusted.key"), where)
    assert_one_line_error(result, 2, "--key goes with --cert")


# -- -v (item 8) --------------------------------------------------------------


def test_verbose_logs_the_handshake_with_secrets_redacted():
    recorder = Recorder()
    with running_server(recorder) as server:
        result = run_cli("-v", "-H", "Authorization: Bearer s3cret", "-H", "Cookie: id=s3cret",
                         url(server), input=b"hi\n")
    assert result.returncode == 0, stderr_of(result)
    lines = stderr_of(result).splitlines()
    assert "s3cret" not in stderr_of(result)
    for expected in ("> GET / HTTP/1.1", "> Authorization: <redacted>", "> Cookie: <redacted>",
                     "> Sec-WebSocket-Version: 13", "< HTTP/1.1 101 Switching Protocols",
                     "< Upgrade: websocket", "> TEXT 2 bytes", "< TEXT 'hi' [2]"):
        assert expected in lines, lines
    assert lines.index("> GET / HTTP/1.1") < lines.index("< HTTP/1.1 101 Switching Protocols") \
        < lines.index("> TEXT 2 bytes")
    assert not any("None" in line for line in lines), lines


def test_verbose_logs_a_refusal():
    auth = simplews.basic_auth(credentials={"alice": "pa55"})
    with running_server(Recorder(), process_request=auth) as server:
        result = run_cli("-v", f"ws://bob:wrong@127.0.0.1:{server.port}/", input=b"x\n")
    assert result.returncode == 7
    lines = stderr_of(result).splitlines()
    assert lines[:2] == ["< HTTP/1.1 401 Unauthorized",
                         '< WWW-Authenticate: Basic realm="simplews", charset="UTF-8"']
    assert lines[-1] == "simplews: handshake refused: HTTP 401 Unauthorized: invalid credentials"


# -- messages (item 10) ------------------------------------------------------


@pytest.mark.parametrize("body,expected", [
    (None, "HTTP 401 Unauthorized: missing credentials"),  # basic_auth's "401 Unauthorized: missing ..."
    (b"401 Unauthorized\n", "HTTP 401 Unauthorized"),
    (b"Unauthorized.\n", "HTTP 401 Unauthorized"),
    (b"log in first\n", "HTTP 401 Unauthorized: log in first"),
])
def test_a_refusal_says_its_status_once(body, expected):
    auth = simplews.basic_auth(credentials={"alice": "pa55"})

    def process_request(conn, request):
        answer = auth(conn, request)
        return answer if body is None else simplews.Response(401, "", [], body)

    with running_server(Recorder(), process_request=process_request) as server:
        result = run_cli(url(server), input=b"x\n")
    line = assert_one_line_error(result, 7)
    assert line == "simplews: handshake refused: " + expected


def test_an_unsupported_proxy_is_said_in_full():
    result = run_cli("--proxy", "https://127.0.0.1:1080", "ws://127.0.0.1:9/")
    line = assert_one_line_error(result, 4, "proxy")
    assert line.endswith("http://, socks4://, socks5:// and socks5h:// are supported"), line


# -- simplews serve --broadcast --send-on-connect (item 9) -------------------------


def test_serve_broadcast_and_send_on_connect(serve_process):
    server = serve_process("--broadcast", "--send-on-connect", "welcome")
    where = f"ws://127.0.0.1:{server.port}/"
    with simplews.connect(where, open_timeout=TIMEOUT) as one, \
            simplews.connect(where, open_timeout=TIMEOUT) as two:
        assert one.recv(timeout=TIMEOUT) == two.recv(timeout=TIMEOUT) == "welcome"
        server.wait_for("connected")
        server.wait_for("connected")  # both are in the room
        one.send("from one")
        assert one.recv(timeout=TIMEOUT) == two.recv(timeout=TIMEOUT) == "from one"
        two.send(b"\x00from two")
        assert one.recv(timeout=TIMEOUT) == two.recv(timeout=TIMEOUT) == b"\x00from two"


def test_serve_echoes_to_the_sender_only_and_greets_nobody_by_default(serve_process):
    server = serve_process()
    where = f"ws://127.0.0.1:{server.port}/"
    with simplews.connect(where, open_timeout=TIMEOUT) as one, \
            simplews.connect(where, open_timeout=TIMEOUT) as two:
        one.send("mine")
        two.send("yours")
        assert one.recv(timeout=TIMEOUT) == "mine"
        assert two.recv(timeout=TIMEOUT) == "yours"


# -- in a real terminal (tmux) ------------------------------------------------


def test_interactive_slash_commands_and_control_frames(tmux):
    recorder = Recorder()
    with running_server(recorder) as server:
        term = tmux(_shell_command("--show-control", url(server)))
        term.wait_text("Ctrl-D or Ctrl-C to quit")
        ws = recorder.connections.get(timeout=TIMEOUT)
        term.keys("/ping hey", enter=True)
        term.wait_text("[pong] 'hey'")
        term.wait_for(lambda s: re.search(r"^pong 'hey' after \d+\.\d ms", s, re.M), "the round-trip time")
        term.keys("/binary 0102", enter=True)
        term.wait_text("< [binary, 2 bytes] 0102")
        term.keys("/b64 aGk=", enter=True)
        term.wait_text("< [binary, 2 bytes] 6869")
        term.keys("//literal", enter=True)
        term.wait_text("< /literal")
        term.keys("/nope", enter=True)
        term.wait_text("simplews: unknown command /nope")  # said, and the prompt stays
        term.keys("/help", enter=True)
        term.wait_text("/close [CODE [REASON]]")
        assert ws.ping("from the server").wait(TIMEOUT)
        term.wait_text("[ping] 'from the server'")
        term.keys("/close 4001 bye", enter=True)
        screen = term.wait_text("[exit 0]")
        assert "[close] code 4001" in screen
        assert "connection closed: code 4001" in screen
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
        assert recorder.received() == [b"\x01\x02", b"hi", "/literal"]


def test_interactive_reconnect_keeps_the_prompt(tmux):
    connections = queue.Queue()

    def handler(ws):
        connections.put(ws)
        if connections.qsize() == 1:
            ws.close(1012, "restarting")
            return
        for message in ws:
            ws.send(message)

    with running_server(handler) as server:
        term = tmux(_shell_command("--reconnect", url(server)))
        term.wait_text("next attempt in")
        term.keys("typed meanwhile")  # the prompt stays while it reconnects
        term.wait_for(lambda s: s.count("Ctrl-D or Ctrl-C to quit") == 2, "the second connection")
        term.key("Enter")
        term.wait_text("< typed meanwhile")
        assert "simplews: connection closed by the server: code 1012 (service restart)" in term.screen()
        term.key("C-d")
        term.wait_text("[exit 0]")
        assert connections.qsize() == 2


def test_interactive_ctrl_c_while_waiting_to_reconnect(tmux):
    def handler(ws):
        ws.close(1012, "restarting")

    with running_server(handler) as server:
        term = tmux(_shell_command("--reconnect", url(server)))
        term.wait_text("next attempt in")
        term.key("C-c")
        term.wait_text("[exit 130]")
        term.keys("echoed")  # the terminal has its settings back: what is typed shows
        term.wait_text("echoed")


def test_once_with_hex():
    with running_server(Recorder()) as server:
        result = run_cli("--once", "--hex", url(server), input=b"00ff\n")
        assert result.returncode == 0, stderr_of(result)
        assert result.stdout == b"[binary, 2 bytes] 00ff\n"
        result = run_cli("--once", "--hex", url(server), input=b"0g")
    assert_one_line_error(result, 2, "cannot send stdin", "non-hexadecimal")
