import pytest

from simplews.exceptions import InvalidURI
from simplews.uri import WebSocketURI, parse_uri


@pytest.mark.parametrize("uri,expected", [
    ("ws://localhost", WebSocketURI(False, "localhost", 80, "/")),
    ("wss://example.com/chat?room=1", WebSocketURI(True, "example.com", 443, "/chat?room=1")),
    ("ws://127.0.0.1:8765/x", WebSocketURI(False, "127.0.0.1", 8765, "/x")),
    ("ws://[::1]:9000", WebSocketURI(False, "::1", 9000, "/")),
    ("ws://user:p%40ss@host/", WebSocketURI(False, "host", 80, "/", ("user", "p@ss"))),
    ("ws://[fe80::1%25eth0]:9/", WebSocketURI(False, "fe80::1%eth0", 9, "/")),  # RFC 6874: was "%25eth0"
])
def test_valid_uris(uri, expected):
    assert parse_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://example.com", "ws://", "ws://host/#frag", "ws://host:99999",
                                 "example.com",
                                 # were accepted: port 0 became 80, an empty fragment was dropped
                                 # (§3: none), and a host with characters RFC 3986 §3.2.2 does not
                                 # allow went raw into the Host header and a proxy's CONNECT line
                                 "ws://host:0/", "ws://host/#", "ws://host/?x=1#", "ws://a b/",
                                 "ws://a\x00b/", 'ws://a"<b/'])
def test_invalid_uris(uri):
    with pytest.raises(InvalidURI):
        parse_uri(uri)


@pytest.mark.parametrize("uri,resource", [
    ("ws://h/café?q=ü", "/caf%C3%A9?q=%C3%BC"),            # an IRI: UTF-8, percent-encoded
    ("ws://h/a b?c d", "/a%20b?c%20d"),                      # characters a URI may not hold
    ("ws://h/%41%2F?x=%20&y=[1]:@!$'()*+,;=", "/%41%2F?x=%20&y=[1]:@!$'()*+,;="),  # kept
])
def test_the_resource_name_is_ascii(uri, resource):
    assert parse_uri(uri).resource_name == resource


@pytest.mark.parametrize("uri", ["ws://alice:s3cret@example.com/#frag", "ws://alice:s3cret@example.com:99999/",
                                 "ws://alice:s3cr/et@example.com/", "ws://alice:s3cr?et@example.com/",
                                 "ws://alice:s3cr#et@example.com/"])
def test_invalid_uri_errors_hide_the_password(uri):
    with pytest.raises(InvalidURI) as info:
        parse_uri(uri)
    assert "s3cr" not in str(info.value) and "***@" in str(info.value)


def test_an_at_sign_in_the_query_hides_nothing():
    """A first mask went up to the last "@" anywhere: the host and the reason were lost."""
    with pytest.raises(InvalidURI) as info:
        parse_uri("ws://example.com:99999/notify?to=alice@corp.example")
    assert str(info.value).startswith("'ws://example.com:99999/notify?to=alice@corp.example' is not a "
                                      "valid URI: Port out of range")


def test_host_header():
    assert parse_uri("ws://[fe80::1%25eth0]/").host_header == "[fe80::1]"  # RFC 6874 §4: no zone ID sent
    assert parse_uri("ws://h:80/").host_header == "h"
    assert parse_uri("wss://h:8443/").host_header == "h:8443"
    assert parse_uri("ws://[::1]:9/").host_header == "[::1]:9"


@pytest.mark.parametrize("uri", ["ws://[zz]/", "ws://[1.2.3.4]/", "ws://[::1::2]:80/"])
def test_an_invalid_ip_literal_is_an_invalid_uri(uri):
    # Python 3.9's urlsplit lets "[zz]" through (3.11 raises ValueError): checked here.
    with pytest.raises(InvalidURI):
        parse_uri(uri)


def test_parsed_uris_are_cached_immutable_and_bounded_and_errors_are_not_cached():
    # connect() parses its URI on every call (14 us): reconnecting clients hit the cache.
    uri = "ws://cached.example:8001/chat?x=1"
    first = parse_uri(uri)
    assert parse_uri(uri) is first
    with pytest.raises(AttributeError):
        first.host = "elsewhere"  # type: ignore[misc]  # a NamedTuple: nobody can spoil the cache
    for _ in range(2):  # raised again each time: an invalid URI is never remembered
        with pytest.raises(InvalidURI):
            parse_uri("ws://cached.example/#fragment")
    for i in range(200):
        parse_uri(f"ws://host{i}.example/")
    info = parse_uri.cache_info()
    assert info.maxsize == 64 and info.currsize <= 64
