"""Proxies (simplews/proxy.py): the environment as urllib reads it, CONNECT tunnels for
ws:// and wss:// through a real tinyproxy, and SOCKS4/SOCKS5 through a real dante
(Debian's packages, started here in the foreground on loopback)."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

import simplews
from simplews.proxy import proxy_for
from simplews.uri import parse_uri
from support import free_port
from conftest import TIMEOUT, client_ssl_context, echo, server_ssl_context
from support import assert_one_line_error, run_cli, running_server, scaled, scripted_proxy, stderr_of

USER, PASSWORD = "alice", "pa55word"  # tinyproxy takes letters and digits only

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                   "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def environ(monkeypatch):
    """A clean proxy environment for the test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_proxy_for_reads_the_environment_like_urllib(environ):
    ws, wss = parse_uri("ws://example.com/"), parse_uri("wss://example.com/")
    assert proxy_for(ws, True) is None
    environ.setenv("HTTP_PROXY", "http://plain:3128")
    environ.setenv("HTTPS_PROXY", "http://secure:3128")
    assert proxy_for(ws, True) == "http://plain:3128"
    assert proxy_for(wss, True) == "http://secure:3128"
    assert proxy_for(ws, None) is None and proxy_for(ws, False) is None
    assert proxy_for(ws, "http://given:1") == "http://given:1"
    environ.setenv("NO_PROXY", "localhost,.example.com")
    assert proxy_for(ws, True) is None
    assert proxy_for(parse_uri("ws://other.org/"), True) == "http://plain:3128"


@pytest.mark.parametrize("name", ["http_proxy", "HTTPS_PROXY", "ALL_PROXY"])
def test_the_environment_is_read_again_at_each_connect(environ, name):
    # The check for "no proxy variable at all" reads os.environ's own table: a variable
    # set or removed after a first connect counts at once, whatever its case.
    uri = parse_uri("wss://example.com/" if "s_" in name.lower() else "ws://example.com/")
    assert proxy_for(uri, True) is None
    environ.setenv(name, "http://late:3128")
    assert proxy_for(uri, True) == "http://late:3128"
    environ.delenv(name)
    assert proxy_for(uri, True) is None


def test_an_environ_without_cpythons_table_is_read_the_plain_way(environ):
    environ.setattr(os, "environ", {"ALL_PROXY": "http://dict:3128"})
    assert proxy_for(parse_uri("ws://example.com/"), True) == "http://dict:3128"
    environ.setattr(os, "environ", {})
    assert proxy_for(parse_uri("ws://example.com/"), True) is None


def test_all_proxy_is_the_fallback(environ):
    environ.setenv("ALL_PROXY", "http://every:3128")
    assert proxy_for(parse_uri("wss://example.com/"), True) == "http://every:3128"


def test_unsupported_proxy_scheme_is_a_clear_error():
    with pytest.raises(simplews.ProxyError, match="scheme 'https'.*socks5h:// are supported"):
        simplews.connect("ws://127.0.0.1:9/", proxy="https://127.0.0.1:1080", open_timeout=TIMEOUT)



def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode}: see its log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        except ConnectionRefusedError:
            time.sleep(0.02)
        else:
            return
    raise TimeoutError(f"the proxy did not listen on {port}")


def find_tinyproxy() -> str:
    installed = "/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None
    path = shutil.which("tinyproxy") or installed
    if path is None:
        if os.environ.get("SIMPLEWS_REQUIRE_PEERS"):
            pytest.fail("tinyproxy is missing (apt-get install tinyproxy); required in CI")
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    return path


class ForegroundProxy:
    """A proxy server process of the tests, in the foreground, stopped by its pid."""

    def start(self, args, log: pathlib.Path, **popen) -> None:
        self.log = log
        self.process = subprocess.Popen(args, **popen)
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log.read_text(errors='replace')}") from None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(TIMEOUT)


class Tinyproxy(ForegroundProxy):
    """tinyproxy in the foreground with its own config: Basic auth, and CONNECT allowed
    only to the given ports (others get 403, as with the usual ``ConnectPort 443``)."""

    def __init__(self, directory: pathlib.Path, allowed_ports) -> None:
        self.port = free_port()
        config = directory / "tinyproxy.conf"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", "Allow 127.0.0.1",
                 "MaxClients 50", "LogLevel Info", f"BasicAuth {USER} {PASSWORD}"]
        lines += [f"ConnectPort {port}" for port in allowed_ports]
        config.write_text("\n".join(lines) + "\n")
        log = directory / "tinyproxy.log"
        with open(log, "wb") as output:
            self.start([find_tinyproxy(), "-d", "-c", str(config)], log, stdout=output,
                       stderr=subprocess.STDOUT)

    def url(self, credentials: bool = True) -> str:
        # "%70" is "p": the client must percent-decode the userinfo (RFC 3986 §2.1)
        auth = f"{USER}:%70{PASSWORD[1:]}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def ports():
    """The ports of the servers below, fixed for the module: tinyproxy's config names them."""
    return {name: free_port() for name in ("ws", "wss", "refused")}


@pytest.fixture
def servers(ports):
    """A ws:// and a wss:// echo server that the proxy lets through, and one it refuses;
    started for each test, so that no server thread outlives it."""
    started = {
        "ws": simplews.serve(echo, "127.0.0.1", ports["ws"], close_timeout=2),
        "wss": simplews.serve(echo, "127.0.0.1", ports["wss"], close_timeout=2,
                              ssl=server_ssl_context()),
        "refused": simplews.serve(echo, "127.0.0.1", ports["refused"], close_timeout=2),
    }
    threads = [threading.Thread(target=server.serve_forever) for server in started.values()]
    for thread in threads:
        thread.start()
    yield {name: server.port for name, server in started.items()}
    for server in started.values():
        server.shutdown()
    for thread in threads:
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def tinyproxy(ports, tmp_path_factory):
    proxy = Tinyproxy(tmp_path_factory.mktemp("tinyproxy"), [ports["ws"], ports["wss"]])
    yield proxy
    proxy.stop()


def proxied_peer(ws: simplews.Connection, proxy_port: int) -> bool:
    """Did the client's TCP connection go to the proxy rather than to the server?"""
    return ws.remote_address[1] == proxy_port


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_tunnel_through_tinyproxy_with_basic_auth(scheme, servers, tinyproxy):
    kwargs = {"ssl": client_ssl_context()} if scheme == "wss" else {}
    uri = f"{scheme}://localhost:{servers[scheme]}/chat"
    with simplews.connect(uri, proxy=tinyproxy.url(), open_timeout=TIMEOUT, **kwargs) as ws:
        assert proxied_peer(ws, tinyproxy.port)
        ws.send("through the tunnel")
        assert ws.recv(timeout=TIMEOUT) == "through the tunnel"
        ws.send(b"\x00" * 70000)
        assert ws.recv(timeout=TIMEOUT) == b"\x00" * 70000
    assert ws.close_code == 1000
    assert f"localhost:{servers[scheme]}" in tinyproxy.log.read_text(errors="replace")


def test_proxy_from_the_environment_and_no_proxy(servers, tinyproxy, environ):
    uri = f"ws://127.0.0.1:{servers['ws']}/"
    environ.setenv("HTTP_PROXY", tinyproxy.url())
    with simplews.connect(uri, open_timeout=TIMEOUT) as ws:
        assert proxied_peer(ws, tinyproxy.port)
        ws.send("via HTTP_PROXY")
        assert ws.recv(timeout=TIMEOUT) == "via HTTP_PROXY"
    with simplews.connect(uri, proxy=None, open_timeout=TIMEOUT) as ws:  # proxy=None: never
        assert ws.remote_address[1] == servers["ws"]
    environ.setenv("NO_PROXY", "127.0.0.1")
    with simplews.connect(uri, open_timeout=TIMEOUT) as ws:
        assert ws.remote_address[1] == servers["ws"]


def test_missing_proxy_credentials_raise_407(servers, tinyproxy):
    with pytest.raises(simplews.InvalidProxyStatus) as info:
        simplews.connect(f"ws://127.0.0.1:{servers['ws']}/", proxy=tinyproxy.url(credentials=False),
                         open_timeout=TIMEOUT)
    assert info.value.status == 407
    assert "407" in str(info.value)


def test_refused_connect_port_raises_403(servers, tinyproxy):
    with pytest.raises(simplews.InvalidProxyStatus) as info:
        simplews.connect(f"ws://127.0.0.1:{servers['refused']}/", proxy=tinyproxy.url(),
                         open_timeout=TIMEOUT)
    assert info.value.status == 403
    assert isinstance(info.value, simplews.InvalidHandshake)


def test_proxy_that_is_not_listening_raises_connection_refused():
    with pytest.raises(ConnectionRefusedError):
        simplews.connect("ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{free_port()}",
                         open_timeout=TIMEOUT)


def test_cli_through_the_proxy(servers, tinyproxy, environ):
    result = run_cli("--proxy", tinyproxy.url(), f"ws://127.0.0.1:{servers['ws']}/", input=b"via cli\n")
    assert result.returncode == 0, stderr_of(result)
    assert result.stdout == b"via cli\n"
    environ.setenv("HTTP_PROXY", tinyproxy.url())  # inherited by the subprocess
    refused = run_cli(f"ws://127.0.0.1:{servers['refused']}/", input=b"x\n")
    assert_one_line_error(refused, 4, "the proxy refused the tunnel", "HTTP 403")
    direct = run_cli("--no-proxy", f"ws://127.0.0.1:{servers['refused']}/", input=b"direct\n")
    assert direct.returncode == 0 and direct.stdout == b"direct\n", stderr_of(direct)


# -- proxies the library cannot use (issue 12, item 3) -----------------------------------

SOCKS = "https://127.0.0.1:1080"
SUPPORTED = "http://, socks4://, socks5:// and socks5h:// are supported"
SOCKS_ERROR = f"unsupported proxy scheme 'https' in ALL_PROXY ({SOCKS}): {SUPPORTED}"


def test_unusable_proxy_fails_only_the_connections_that_go_through_it(environ):
    environ.setenv("ALL_PROXY", SOCKS)
    with running_server(echo) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        with pytest.raises(simplews.ProxyError) as info:  # loopback is not exempt by itself
            simplews.connect(uri, open_timeout=TIMEOUT)
        assert str(info.value) == SOCKS_ERROR
        environ.setenv("NO_PROXY", "127.0.0.1")
        with simplews.connect(uri, open_timeout=TIMEOUT) as ws:
            assert ws.remote_address[1] == server.port
            ws.send("direct")
            assert ws.recv(timeout=TIMEOUT) == "direct"


def test_the_scheme_s_own_variable_comes_before_all_proxy(environ):
    environ.setenv("ALL_PROXY", SOCKS)
    environ.setenv("http_proxy", "http://plain:3128")
    assert proxy_for(parse_uri("ws://example.com/"), True) == "http://plain:3128"
    assert proxy_for(parse_uri("wss://example.com/"), True) == SOCKS


@pytest.mark.parametrize("variable, value, expected", [
    ("HTTP_PROXY", "http://127.0.0.1:99999", "invalid proxy URL in HTTP_PROXY (http://127.0.0.1:99999): "
                                              "Port out of range 0-65535"),
    ("http_proxy", "http://[::1", "invalid proxy URL in http_proxy (http://[::1): Invalid IPv6 URL"),
    ("HTTP_PROXY", "http://a..b:3128", "invalid proxy URL in HTTP_PROXY (http://a..b:3128): "),
    ("HTTP_PROXY", "http://:3128", "invalid proxy URL in HTTP_PROXY (http://:3128): no host"),
    ("HTTP_PROXY", "https://alice:s3cr@t@proxy:3128", "unsupported proxy scheme 'https' in HTTP_PROXY "
                                                     "(https://***@proxy:3128): http://, socks4://"),
])
def test_invalid_proxy_urls_are_proxy_errors(environ, variable, value, expected):
    environ.setenv(variable, value)
    with pytest.raises(simplews.InvalidProxy) as info:
        simplews.connect("ws://127.0.0.1:9/", open_timeout=TIMEOUT)
    assert str(info.value).startswith(expected)
    assert "s3cr" not in str(info.value)


@pytest.mark.parametrize("url", ["http://alice:s3cr/t@127.0.0.1:3128", "http://alice:s3cr#t@127.0.0.1:3128",
                                 "socks5://alice:s3cr?t@127.0.0.1:1080"])
def test_a_password_holding_a_delimiter_is_hidden_too(url):
    """The mask stopped at "/", "?" or "#": such a password was shown in full, and
    urlsplit's error quoted part of it."""
    with pytest.raises(simplews.InvalidProxy) as info:
        simplews.connect("ws://127.0.0.1:9/", proxy=url, open_timeout=TIMEOUT)
    assert "s3cr" not in str(info.value) and "***@" in str(info.value)


def test_informational_answers_before_the_proxy_s_200_are_skipped():
    """RFC 9110 §15.2: a client parses 1xx answers before the final one (a 100 was
    taken for the answer to CONNECT: InvalidProxyStatus)."""
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    with running_server(echo) as server, scripted_proxy(answer) as (url, requests), \
            simplews.connect(f"ws://127.0.0.1:{server.port}/", proxy=url, open_timeout=TIMEOUT) as ws:
        ws.send("through")
        assert ws.recv(timeout=TIMEOUT) == "through"
    assert requests[0].startswith(f"CONNECT 127.0.0.1:{server.port} ".encode())


def test_the_zone_id_of_an_ipv6_target_is_not_sent_to_the_proxy():
    """RFC 6874 §4: a zone ID means something on this host only (it went out raw)."""
    with scripted_proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n") as (url, requests), \
            pytest.raises(simplews.InvalidProxyStatus):
        simplews.connect("ws://[fe80::1%25eth0]:9/", proxy=url, open_timeout=TIMEOUT)
    assert requests[0].startswith(b"CONNECT [fe80::1]:9 HTTP/1.1\r\nHost: [fe80::1]:9\r\n")


def test_no_proxy_entries_may_name_a_port(environ):
    """As requests and urllib read NO_PROXY (an entry "host:port" was ignored)."""
    with running_server(echo) as server, scripted_proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n") as (url, requests):
        environ.setenv("HTTP_PROXY", url)
        environ.setenv("NO_PROXY", f"127.0.0.1:{server.port + 1}")  # another port: the proxy
        with pytest.raises(simplews.InvalidProxyStatus):
            simplews.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TIMEOUT)
        environ.setenv("NO_PROXY", f"localhost,127.0.0.1:{server.port}")
        with simplews.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TIMEOUT) as ws:
            assert ws.remote_address[1] == server.port
    assert len(requests) == 1


def test_a_proxy_url_without_a_port_means_port_80():
    """As in requests and websockets (RFC 9110 §4.2.1: http's default); it was 8080."""
    from simplews.proxy import _split_proxy_url  # noqa: PLC0415 (the parse alone: nothing listens on 80)
    assert _split_proxy_url("http://proxy.corp", "")[2] == 80
    assert _split_proxy_url("proxy.corp", "")[2] == 80
    assert _split_proxy_url("socks5://proxy.corp", "")[2] == 1080


def test_a_silent_proxy_is_named_in_the_timeout():
    """The timeout named the target server (the direct connection's message replaced
    the proxy's on Python 3.10+, where socket.timeout is TimeoutError)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(TimeoutError, match=f"proxy 127.0.0.1:{silent.getsockname()[1]} to answer"):
            simplews.connect("ws://127.0.0.1:9/", proxy=url, open_timeout=scaled(0.3))


def test_given_proxy_url_errors_name_no_variable():
    with pytest.raises(simplews.ProxyError) as info:
        simplews.connect("ws://127.0.0.1:9/", proxy="https://u:p@127.0.0.1:1080", open_timeout=TIMEOUT)
    assert str(info.value) == f"unsupported proxy scheme 'https' (https://***@127.0.0.1:1080): {SUPPORTED}"


def test_cli_names_the_unusable_proxy_in_one_complete_line(environ):
    environ.setenv("ALL_PROXY", SOCKS)  # inherited by the subprocess
    with running_server(echo) as server:
        result = run_cli(f"ws://127.0.0.1:{server.port}/", input=b"x\n")
        assert_one_line_error(result, 4, "proxy error: " + SOCKS_ERROR)
        environ.setenv("NO_PROXY", "127.0.0.1")
        direct = run_cli(f"ws://127.0.0.1:{server.port}/", input=b"x\n")
    assert direct.returncode == 0, stderr_of(direct)
    assert direct.stdout == b"x\n"


# -- SOCKS through dante (issue 17, item 6) ----------------------------------------------

def find_danted() -> str:
    """dante's server, with python-socks (the socks extra) for the client side."""
    path = shutil.which("danted") or ("/usr/sbin/danted" if os.path.exists("/usr/sbin/danted") else None)
    missing = "danted is not installed (apt-get install dante-server)" if path is None else None
    if importlib.util.find_spec("python_socks") is None:
        missing = "python-socks is not installed (pip install simplews[socks])"
    if missing:
        if os.environ.get("SIMPLEWS_REQUIRE_PEERS"):
            pytest.fail(f"{missing}; required in CI")
        pytest.skip(missing)
    return str(path)


class Dante(ForegroundProxy):
    """danted in the foreground with its own config on 127.0.0.1 (never the system
    service): no authentication, or ``socksmethod: username`` (system users)."""

    def __init__(self, directory: pathlib.Path, username: bool) -> None:
        self.port = free_port()
        config = directory / "danted.conf"
        method = "username" if username else "none"
        config.write_text(f"""\
logoutput: {directory / "danted.log"}
internal: 127.0.0.1 port = {self.port}
external: 127.0.0.1
clientmethod: none
socksmethod: {method}
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
    command: connect
    log: connect error
}}
""")
        pid = directory / "danted.pid"  # stopped by its pid all the same: its children go with it
        self.start([find_danted(), "-f", str(config), "-p", str(pid), "-N", "1"], directory / "danted.log",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def dante(tmp_path_factory):
    proxy = Dante(tmp_path_factory.mktemp("dante"), username=False)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def socks_user():
    """A throwaway system user with a random password, for dante's username method
    (it checks system users): created here, as root only, and deleted at the end."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("dante's username method checks system users: creating one needs root and useradd")
    name, password = f"swsocks{secrets.token_hex(3)}", secrets.token_hex(12)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, timeout=TIMEOUT)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, timeout=TIMEOUT)
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def dante_auth(tmp_path_factory, socks_user):
    proxy = Dante(tmp_path_factory.mktemp("dante-auth"), username=True)
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("proxy_scheme", ["socks5h", "socks5", "socks4"])
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_socks_proxy_given_explicitly(scheme, proxy_scheme, servers, dante, monkeypatch):
    kwargs = {"ssl": client_ssl_context()} if scheme == "wss" else {}
    uri = f"{scheme}://localhost:{servers[scheme]}/chat"
    if proxy_scheme == "socks5h":  # remote DNS: the proxy resolves the name, this process cannot
        resolve = socket.getaddrinfo

        def local_dns(host, *args, **kwargs):
            if host == "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "resolved here: not remote DNS")
            return resolve(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", local_dns)
    with simplews.connect(uri, proxy=f"{proxy_scheme}://127.0.0.1:{dante.port}", open_timeout=TIMEOUT,
                          **kwargs) as ws:
        assert proxied_peer(ws, dante.port)
        ws.send("through SOCKS")
        assert ws.recv(timeout=TIMEOUT) == "through SOCKS"
        ws.send(b"\x00" * 70000)
        assert ws.recv(timeout=TIMEOUT) == b"\x00" * 70000
    assert ws.close_code == 1000
    assert f"127.0.0.1.{servers[scheme]}" in dante.logged()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_socks_with_a_password_from_all_proxy_and_no_proxy(scheme, servers, dante_auth, socks_user, environ):
    kwargs = {"ssl": client_ssl_context()} if scheme == "wss" else {}
    uri = f"{scheme}://localhost:{servers[scheme]}/"
    user, password = socks_user
    environ.setenv("ALL_PROXY", f"socks5h://{user}:{password}@127.0.0.1:{dante_auth.port}")
    with simplews.connect(uri, open_timeout=TIMEOUT, **kwargs) as ws:
        assert proxied_peer(ws, dante_auth.port)
        ws.send("via ALL_PROXY")
        assert ws.recv(timeout=TIMEOUT) == "via ALL_PROXY"
    environ.setenv("ALL_PROXY", f"socks5h://{user}:wrong@127.0.0.1:{dante_auth.port}")
    with pytest.raises(simplews.ProxyError, match=f"the SOCKS proxy 127.0.0.1:{dante_auth.port} failed"):
        simplews.connect(uri, open_timeout=TIMEOUT, **kwargs)
    environ.setenv("NO_PROXY", "localhost")
    with simplews.connect(uri, open_timeout=TIMEOUT, **kwargs) as ws:
        assert ws.remote_address[1] == servers[scheme]


def test_without_the_socks_extra_only_socks_connections_fail(environ, monkeypatch):
    monkeypatch.setitem(sys.modules, "python_socks", None)  # as if not installed: ImportError
    environ.setenv("ALL_PROXY", "socks5h://127.0.0.1:1080")
    with running_server(echo) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        with pytest.raises(simplews.ProxyError) as info:
            simplews.connect(uri, open_timeout=TIMEOUT)
        assert str(info.value) == ("a socks5h:// proxy (ALL_PROXY) needs python-socks: "
                                   "pip install simplews[socks]")
        with simplews.connect(uri, proxy=None, open_timeout=TIMEOUT) as ws:
            ws.send("direct")
            assert ws.recv(timeout=TIMEOUT) == "direct"
        environ.setenv("NO_PROXY", "127.0.0.1")
        with simplews.connect(uri, open_timeout=TIMEOUT) as ws:
            assert ws.remote_address[1] == server.port
