"""Basic authentication (simplews/auth.py): credentials from ws://user:pass@host/ checked
by basic_auth() in a real server's process_request."""
from __future__ import annotations

import base64

import pytest

import simplews
from conftest import TIMEOUT


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_parse_basic_auth():
    assert simplews.parse_basic_auth(basic("al:p:w")) == ("al", "p:w")
    assert simplews.parse_basic_auth("basic " + base64.b64encode("é:ü".encode()).decode()) == ("é", "ü")
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", basic("no-colon"),
                "Basic " + base64.b64encode(b"\xff:x").decode()):
        assert simplews.parse_basic_auth(bad) is None


def test_basic_auth_needs_one_source_of_truth():
    with pytest.raises(ValueError):
        simplews.basic_auth()
    with pytest.raises(ValueError):
        simplews.basic_auth({"a": "b"}, check_credentials=lambda u, p: True)


def test_the_realm_is_a_quoted_string():
    """RFC 7617 §2: realm is a quoted-string; a quote in it made the header malformed, and
    CR or LF gave every handshake a 500 instead of an error at once."""
    refuse = simplews.basic_auth({"a": "b"}, realm='my "realm" \\')
    response = refuse(None, simplews.Request("/", simplews.Headers()))
    assert response.headers["WWW-Authenticate"] == 'Basic realm="my \\"realm\\" \\\\", charset="UTF-8"'
    with pytest.raises(ValueError):
        simplews.basic_auth({"a": "b"}, realm="x\r\nSet-Cookie: y")


def whoami(ws):
    user, _ = simplews.parse_basic_auth(ws.request.headers.get("Authorization"))
    ws.send(user)


def test_credentials_from_the_uri_are_checked(start_server, connect, scheme):
    server = start_server(whoami, process_request=simplews.basic_auth({"alice": "pa:ss wörd"}))
    authority = server.uri.split("://", 1)[1]
    with connect(f"{scheme}://alice:pa%3Ass%20w%C3%B6rd@{authority}") as ws:
        assert ws.recv(timeout=TIMEOUT) == "alice"
    for uri in (server.uri, f"{scheme}://alice:wrong@{authority}", f"{scheme}://bob:x@{authority}"):
        with pytest.raises(simplews.InvalidStatus) as info:
            connect(uri)
        response = info.value.response
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="simplews", charset="UTF-8"'
        assert b"credentials" in response.body


@pytest.mark.parametrize("scheme", ["ws"])
def test_check_credentials_callback(start_server, connect):
    seen = []

    def check(username, password):
        seen.append((username, password))
        return password == username[::-1]

    server = start_server(whoami, process_request=simplews.basic_auth(check_credentials=check,
                                                                      realm="tests"))
    authority = server.uri.split("://", 1)[1]
    with connect(f"ws://abc:cba@{authority}") as ws:
        assert ws.recv(timeout=TIMEOUT) == "abc"
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(f"ws://abc:abc@{authority}")
    assert info.value.response.headers["WWW-Authenticate"].startswith('Basic realm="tests"')
    assert seen == [("abc", "cba"), ("abc", "abc")]
