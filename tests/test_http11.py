import pytest

from simplews.exceptions import HeaderBlockTooLarge, InvalidHandshake
from simplews.http11 import (Headers, Request, Response, join_values, parse_request,
                             parse_response, split_tokens)


def test_headers_are_case_insensitive_multimap():
    headers = Headers([("Upgrade", "websocket"), ("X-A", "1"), ("x-a", "2")])
    assert headers["upgrade"] == "websocket"
    assert headers.get("X-A") == "1, 2" and headers.get_all("x-a") == ["1", "2"]
    assert "UPGRADE" in headers and "missing" not in headers
    headers["x-a"] = "3"
    assert headers.get_all("X-A") == ["3"]
    with pytest.raises(ValueError):
        headers.add("X-Evil", "a\r\nb")


@pytest.mark.parametrize("items", [[("X-Evil", "a\r\nb")], {"X\nEvil": "a"}, (("X", "\r"),)])
def test_headers_refuse_cr_and_lf_from_the_constructor_too(items):
    with pytest.raises(ValueError, match="CR or LF"):
        Headers(items)


def test_headers_share_the_callers_tuples_and_requests_their_common_strings():
    """A server keeps each connection's request and response: what every connection has
    in common is one object, not one per connection (a parsed header block is kept as
    one string until its pairs are asked for)."""
    upgrade = ("Upgrade", "websocket")
    assert Headers([upgrade]).items()[0] is upgrade
    assert Headers([["Upgrade", "websocket"]]).items() == [upgrade]  # a list pair: a tuple made
    data = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
    first, second = parse_request(bytearray(data))[0], parse_request(bytearray(data))[0]
    assert first.method is second.method and first.version is second.version


@pytest.mark.parametrize("first", ["by_name", "add", "del", "len", "iter", "eq", "serialize"])
def test_parsed_headers_behave_as_their_pairs_whatever_is_asked_first(first):
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a:\t 2 \r\n\r\n"
    headers = parse_request(data)[0].headers
    pairs = [("Host", "a"), ("X-A", "1"), ("x-a", "2")]
    if first == "by_name":
        assert headers.by_name() == {"host": ["a"], "x-a": ["1", "2"]}
    elif first == "add":
        headers.add("Y", "3")
        pairs.append(("Y", "3"))
    elif first == "del":
        del headers["X-A"]
        pairs = [("Host", "a")]
    elif first == "len":
        assert len(headers) == 3
    elif first == "iter":
        assert list(headers) == ["Host", "X-A", "x-a"]
    elif first == "eq":
        assert headers == Headers(pairs)
    else:
        assert headers.serialize() == b"Host: a\r\nX-A: 1\r\nx-a: 2\r\n"
    assert headers.items() == pairs and headers.by_name() == Headers(pairs).by_name()


def test_headers_by_name_lower_cases_names_and_keeps_every_value_in_order():
    headers = Headers([("Host", "a"), ("X-A", "1"), ("x-a", "2"), ("X-a", "")])
    assert headers.by_name() == {"host": ["a"], "x-a": ["1", "2", ""]}
    assert Headers().by_name() == {}
    index = headers.by_name()  # what the handshake checks read, joined as Headers.get() joins
    for name in ("Host", "X-A", "missing"):
        assert join_values(index.get(name.lower())) == headers.get(name)
    assert join_values([], "none") == headers.get("missing", "none") == "none"


def test_request_round_trip_and_incomplete():
    request = Request("/chat?x=1", Headers([("Host", "example.com")]))
    data = request.serialize()
    assert data == b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    assert parse_request(data[:-1]) is None
    parsed, size = parse_request(data + b"extra")
    assert (parsed.method, parsed.path, parsed.version) == ("GET", "/chat?x=1", "HTTP/1.1")
    assert parsed.headers == request.headers and size == len(data)


def test_response_round_trip():
    response = Response(101, headers=[("Upgrade", "websocket")])
    data = response.serialize()
    assert data == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    parsed, _ = parse_response(data)
    assert parsed.status == 101 and parsed.headers["upgrade"] == "websocket"
    error = Response(404, body=b"nope").serialize()
    assert b"Content-Length: 4\r\n" in error and error.endswith(b"\r\n\r\nnope")


@pytest.mark.parametrize("data", [
    b"GET /\r\n\r\n", b"GET / FTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", b"GET / HTTP/1.1\r\nX: \x00\r\n\r\n",
])
def test_invalid_requests(data):
    with pytest.raises(InvalidHandshake):
        parse_request(data)


@pytest.mark.parametrize("data", [b"HTTP/1.0 101 OK\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                  b"HTTP/1.1\r\n\r\n"])
def test_invalid_responses(data):
    with pytest.raises(InvalidHandshake):
        parse_response(data)


def test_header_values_lose_their_surrounding_whitespace_only_and_are_latin_1():
    data = b"GET / HTTP/1.1\r\nX:  \tcaf\xe9 au lait \t\r\nY:\r\nZ:a:b\r\n\r\n"
    headers = parse_request(data)[0].headers
    assert headers.items() == [("X", "caf\u00e9 au lait"), ("Y", ""), ("Z", "a:b")]
    request, size = parse_request(b"GET / HTTP/1.1\r\n\r\nrest")
    assert len(request.headers) == 0 and size == 18


@pytest.mark.parametrize("block,message", [
    (b"Host: a\r\nX: \x00", "invalid value in header X"),
    (b"Host: a\r\nA: b\nC: d", "invalid value in header A"),  # a bare LF
    (b"Host: a\r\nno colon\r\nX: 1", "invalid header line b'no colon'"),
    (b"Host: a\r\n: empty name", "invalid header line b': empty name'"),
])
def test_the_first_bad_header_line_is_named(block, message):
    with pytest.raises(InvalidHandshake, match=f"^{message}$".replace("(", r"\(")):
        parse_request(b"GET / HTTP/1.1\r\n" + block + b"\r\n\r\n")


def test_header_block_over_64_kib_refused_even_incomplete():
    with pytest.raises(HeaderBlockTooLarge):
        parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * (64 * 1024))


def test_more_than_256_headers_refused():
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(257)) + b"\r\n"
    with pytest.raises(HeaderBlockTooLarge):
        parse_request(data)
    ok = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(256)) + b"\r\n"
    assert len(parse_request(ok)[0].headers) == 256


def test_split_tokens():
    assert split_tokens("keep-alive, Upgrade") == ["keep-alive", "upgrade"]
    assert split_tokens(None) == [] and split_tokens(" , ") == []
