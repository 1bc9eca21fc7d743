import base64

import pytest

from simplews.exceptions import InvalidHeader, InvalidStatus, NegotiationError
from simplews.extensions import DeflateConfig, DeflateParams
from simplews.handshake import ClientHandshake, ServerHandshake, accept_key
from simplews.http11 import Headers, Response, parse_request
from simplews.uri import parse_uri


def test_accept_key_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # §1.3


def client(**kwargs):
    return ClientHandshake(parse_uri("ws://example.com:8080/chat"), **kwargs)


def test_client_request():
    hs = client(origin="http://example.com", subprotocols=["chat", "superchat"],
                compression=DeflateConfig(), additional_headers={"Authorization": "Bearer x"})
    request, _ = parse_request(hs.request.serialize())
    h = request.headers
    assert request.path == "/chat" and h["Host"] == "example.com:8080"
    assert h["Upgrade"] == "websocket" and h["Connection"] == "Upgrade"
    assert len(base64.b64decode(h["Sec-WebSocket-Key"])) == 16 and h["Sec-WebSocket-Version"] == "13"
    assert h["Origin"] == "http://example.com" and h["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert h["Sec-WebSocket-Extensions"] == "permessage-deflate; client_max_window_bits"
    assert h["Authorization"] == "Bearer x"
    assert client().key != client().key


def test_additional_headers_replace_defaults_and_keep_repeated_names():
    """A name the caller gives replaces the default of that name; a name given twice is
    sent twice (the second replaced the first: only ``Cookie: b=2`` went out)."""
    hs = client(origin="http://example.com", additional_headers=[
        ("Cookie", "a=1"), ("cookie", "b=2"), ("User-Agent", "mine"), ("Origin", "http://other")])
    h = parse_request(hs.request.serialize())[0].headers
    assert h.get_all("Cookie") == ["a=1", "b=2"]
    assert h.get_all("User-Agent") == ["mine"] and h.get_all("Origin") == ["http://other"]


@pytest.mark.parametrize("name", ["a,b", "a b", "", "caf\u00e9", "x\r\n"])
def test_a_subprotocol_that_is_not_a_token_is_refused(name):
    """RFC 6455 §4.1: each subprotocol is a token; "a,b" went out as two offers."""
    with pytest.raises(ValueError, match="token"):
        client(subprotocols=["chat", name])
    with pytest.raises(ValueError, match="token"):  # a server's, at once (serve())
        ServerHandshake(subprotocols=[name])


def test_basic_auth_from_uri():
    hs = ClientHandshake(parse_uri("ws://al:pw@h/"))
    assert hs.request.headers["Authorization"] == "Basic " + base64.b64encode(b"al:pw").decode()


def server_response_for(hs, **kwargs):
    response, accepted = ServerHandshake(**kwargs).accept(parse_request(hs.request.serialize())[0])
    return response, accepted


def test_full_handshake_with_subprotocol_and_deflate():
    hs = client(subprotocols=["v2", "v1"], compression=DeflateConfig())
    response, accepted = server_response_for(hs, subprotocols=["v1", "v2"], compression=DeflateConfig())
    assert response.status == 101 and accepted.subprotocol == "v2"
    assert accepted.deflate == DeflateParams()
    assert hs.check_response(response) == (accepted.subprotocol, DeflateParams())


def test_select_subprotocol_hook():
    hs = client(subprotocols=["a", "b"])
    _, accepted = server_response_for(hs, select_subprotocol=lambda conn, offered: offered[-1])
    assert accepted.subprotocol == "b"


@pytest.mark.parametrize("choice", ["c", "a, b", b"a", 1])
def test_select_subprotocol_must_pick_one_of_the_offered_names(choice):
    """RFC 6455 §4.2.2: the subprotocol is one of the client's values; the server's
    accept() raises (its caller answers 500) rather than send what the client refuses."""
    hs = client(subprotocols=["a", "b"])
    with pytest.raises(ValueError, match="did not offer"):
        server_response_for(hs, select_subprotocol=lambda conn, offered: choice)


def request_with(**changes):
    hs = client()
    request = parse_request(hs.request.serialize())[0]
    for name, value in changes.items():
        name = name.replace("_", "-")
        del request.headers[name]
        if value is not None:
            request.headers.add(name, value)
    return request


@pytest.mark.parametrize("changes,status", [
    (dict(Upgrade=None), 426), (dict(Upgrade="h2c"), 426), (dict(Connection="keep-alive"), 400),
    (dict(Host=None), 400), (dict(Sec_WebSocket_Key="short"), 400),
    (dict(Sec_WebSocket_Key=base64.b64encode(bytes(15)).decode()), 400),
    (dict(Sec_WebSocket_Version="8"), 426), (dict(Sec_WebSocket_Version=None), 426),
])
def test_server_refusals(changes, status):
    response, accepted = ServerHandshake().accept(request_with(**changes))
    assert response.status == status and accepted == (None, None)
    if "Sec_WebSocket_Version" in changes:
        assert response.headers["Sec-WebSocket-Version"] == "13"
    if status == 426:  # RFC 7231 §6.5.15: a 426 MUST name the upgrade
        assert response.headers["Upgrade"] == "websocket" and response.headers["Connection"] == "Upgrade"


def test_upgrade_and_connection_are_case_insensitive_token_lists():
    request = request_with(Upgrade="WebSocket", Connection="keep-alive, UPGRADE")
    response, _ = ServerHandshake().accept(request)
    assert response.status == 101


def test_header_names_in_any_case_and_repeated_fields():
    request = parse_request(client().request.serialize().lower().replace(b"get /", b"GET /")
                            .replace(b"http/1.1", b"HTTP/1.1"))[0]
    assert ServerHandshake().accept(request)[0].status == 101  # names and tokens lower-cased
    for name in ("Host", "Sec-WebSocket-Key", "Sec-WebSocket-Version"):
        request = request_with()
        request.headers.add(name.upper(), request.headers[name])  # the same field twice
        assert ServerHandshake().accept(request)[0].status in (400, 426), name
    hs = client()
    headers = Headers([("upgrade", "WebSocket"), ("CONNECTION", "upgrade"),
                       ("sec-websocket-accept", accept_key(hs.key))])
    assert hs.check_response(Response(101, headers=headers)) == (None, None)
    headers.add("Sec-WebSocket-Accept", accept_key(hs.key))
    with pytest.raises(InvalidHeader):
        hs.check_response(Response(101, headers=headers))


def test_non_get_and_old_http_refused():
    request = request_with()
    request.method = "POST"
    response = ServerHandshake().accept(request)[0]
    assert response.status == 405 and response.headers["Allow"] == "GET"  # RFC 7231 §6.5.5
    request = request_with()
    request.version = "HTTP/1.0"
    assert ServerHandshake().accept(request)[0].status == 400


def test_origins():
    request = request_with(Origin="https://evil.example")
    assert ServerHandshake(origins=["https://good.example"]).accept(request)[0].status == 403
    request = request_with(Origin="https://good.example")
    assert ServerHandshake(origins=["https://good.example"]).accept(request)[0].status == 101
    assert ServerHandshake(origins=[None]).accept(request_with())[0].status == 101


def test_client_checks_the_response():
    hs = client(subprotocols=["a"])
    good = Headers([("Upgrade", "websocket"), ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", accept_key(hs.key))])
    assert hs.check_response(Response(101, headers=good)) == (None, None)
    with pytest.raises(InvalidStatus) as info:
        hs.check_response(Response(403))
    assert info.value.status == 403
    # RFC 6455 §4.1: Upgrade must match "websocket" (another protocol with it: fail)
    for name, value in [("Upgrade", "h2c"), ("Upgrade", "h2c, websocket"), ("Upgrade", "websocket, x"),
                        ("Connection", "close"), ("Sec-WebSocket-Accept", "bad")]:
        headers = Headers(good.items())
        headers[name] = value
        with pytest.raises(InvalidHeader):
            hs.check_response(Response(101, headers=headers))
    headers = Headers(good.items())
    headers.add("Sec-WebSocket-Protocol", "other")
    with pytest.raises(NegotiationError):
        hs.check_response(Response(101, headers=headers))
    headers = Headers(good.items())
    headers.add("Sec-WebSocket-Extensions", "permessage-deflate")
    with pytest.raises(NegotiationError):  # we offered no compression
        hs.check_response(Response(101, headers=headers))


# RFC 6455 §9.1's grammar broken: the handshake does not match §4.2.1, so 400 (issue 12, item 4).
MALFORMED_EXTENSIONS = [";", "permessage-deflate;;", "permessage-deflate; ;",
                        "permessage-deflate; =1", "foo=bar", 'permessage-deflate; a="b',
                        'permessage-deflate; a="b c"',
                        "permessage-deflate; client_max_window_bits=1 0", "permessage-deflate, ;"]
# Well-formed offers that permessage-deflate must decline (RFC 7692 §7): 101, no compression.
DECLINED_OFFERS = ["permessage-deflate; client_max_window_bits=abc",
                   "permessage-deflate; server_max_window_bits=7",
                   "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                   "permessage-deflate; foo", "x-webkit-deflate-frame"]


@pytest.mark.parametrize("header", MALFORMED_EXTENSIONS)
def test_malformed_extensions_header_is_refused_with_400(header):
    response, accepted = ServerHandshake(compression=DeflateConfig()).accept(
        request_with(Sec_WebSocket_Extensions=header))
    assert response.status == 400 and accepted == (None, None)
    assert response.body.startswith(b"invalid Sec-WebSocket-Extensions header: ")


@pytest.mark.parametrize("header", DECLINED_OFFERS)
def test_invalid_permessage_deflate_offer_is_declined(header):
    response, accepted = ServerHandshake(compression=DeflateConfig()).accept(
        request_with(Sec_WebSocket_Extensions=header))
    assert response.status == 101 and accepted.deflate is None
    assert "Sec-WebSocket-Extensions" not in response.headers


def test_extensions_header_is_not_read_without_compression():
    response, _ = ServerHandshake(compression=None).accept(request_with(Sec_WebSocket_Extensions=";"))
    assert response.status == 101
