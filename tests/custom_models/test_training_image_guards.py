"""Training images: the pixel limit (uploads and URL downloads) and the address checks of URL
downloads (only global addresses, the connection goes to the address that was checked, redirects
included), against real HTTP servers on loopback addresses.

``socket.getaddrinfo`` is the resolver both the checks and the HTTP stack would call; the tests
replace it to answer for made-up host names. ``PUBLIC`` is a global address that, for the test,
"routes" to a server on 127.0.0.2 (``httpcore``'s connect is redirected for that one address),
so that a connection to the checked public address can be observed without a network.

The refusals, which create nothing, share one app and database (``shared_api``, ``shared_db``).
"""

from __future__ import annotations

import io
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import pytest
import trustme
from PIL import Image
from sqlalchemy import text

from tests.builders import auth, make_team, solid_png

PUBLIC = "93.184.215.14"  # a global address


def huge_png() -> bytes:
    """8000 × 6000 (48 megapixels, over the 40 MP default) in a few kilobytes: 1-bit, blank."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, format="PNG")
    return buffer.getvalue()


class Site:
    """An HTTP server on ``host`` (HTTPS with ``tls``): ``/a.png`` is an image, ``/huge.png`` a
    48 MP one, ``/to?url`` redirects to ``url``; ``hits`` records (path, Host header) of each request."""

    def __init__(self, host: str, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        site = self
        self.hits: list[tuple[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                site.hits.append((self.path, self.headers["Host"]))
                if self.path.startswith("/to?"):
                    self.send_response(302)
                    self.send_header("Location", self.path[4:])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = huge_png() if self.path == "/huge.png" else solid_png((20, 200, 20))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """(public, internal): the server standing for ``PUBLIC`` (on 127.0.0.2) and one on 127.0.0.1,
    on the same port (a free one on 127.0.0.2 can be taken on 127.0.0.1 by another connection, even
    a database one of this test run: then another)."""
    for _ in range(20):
        public = Site("127.0.0.2")
        try:
            internal = Site("127.0.0.1", public.port)
            break
        except OSError:
            public.server.shutdown()
            public.server.server_close()
    else:
        raise AssertionError("no port free on both 127.0.0.2 and 127.0.0.1")
    try:
        yield public, internal
    finally:
        public.server.shutdown()
        internal.server.shutdown()


@pytest.fixture
def dns(monkeypatch) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Host name → the addresses successive lookups answer (the last one repeats). Also routes
    connections to ``PUBLIC`` to 127.0.0.2."""
    answers: dict[str, list[str]] = {}
    real_getaddrinfo, real_connect = socket.getaddrinfo, httpcore.AnyIOBackend.connect_tcp

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = answers[name].pop(0) if len(answers[name]) > 1 else answers[name][0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    async def connect_tcp(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return await real_connect(self, "127.0.0.2" if host == PUBLIC else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return answers


async def create(api, team, urls: list[str]):  # type: ignore[no-untyped-def]
    return await api.post("/api/v1/models", headers=auth(team), json={
        "referenceModelId": "lifestyle-home", "name": "m", "trainingImageUrls": urls})


async def models(db) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        return await session.scalar(text("SELECT count(*) FROM custom_models"))


async def test_a_rebound_host_name_is_fetched_from_the_address_that_was_checked(api, db, dns, sites) -> None:
    """The first lookup answers a public address, every later one 127.0.0.1 (DNS rebinding): the
    download still goes to the public address, with the host name in the Host header."""
    public, internal = sites
    dns["rebind.test"] = [PUBLIC, "127.0.0.1"]
    team = await make_team(db, plan="pro", credits="500")
    reply = await create(api, team, [f"http://rebind.test:{public.port}/a.png"])
    assert reply.status_code == 202, reply.text
    assert internal.hits == []
    assert public.hits == [("/a.png", f"rebind.test:{public.port}")]


@pytest.mark.parametrize("certified", ["tls.test", "other.test"])
async def test_https_keeps_the_host_name_for_sni_and_the_certificate_check(api, db, dns, monkeypatch, tmp_path,
                                                                           certified: str) -> None:
    """Connected to the checked address, TLS still sends and verifies the host name: a
    certificate for it passes, one for another name does not."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # trusted by httpx's default context
    names: list[str | None] = []
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified).configure_cert(tls)
    tls.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc]
    site = Site("127.0.0.2", tls=tls)
    dns["tls.test"] = [PUBLIC, "127.0.0.1"]
    try:
        team = await make_team(db, plan="pro", credits="500")
        reply = await create(api, team, [f"https://tls.test:{site.port}/a.png"])
    finally:
        site.server.shutdown()
    assert names == ["tls.test"]
    if certified == "tls.test":
        assert reply.status_code == 202, reply.text
        assert site.hits == [("/a.png", f"tls.test:{site.port}")]
    else:
        assert reply.status_code == 422 and reply.json()["error"] == "training_image_unreachable"
        assert "certificate" in reply.json()["message"].lower() and site.hits == []


@pytest.mark.parametrize("address", ["127.0.0.1", "100.64.0.1", "100.127.255.254", "::ffff:127.0.0.1", "10.1.2.3",
                                     "169.254.169.254", "::1", "fd00::1", "0.0.0.0", "224.0.0.1", "192.0.2.1",
                                     "2002:7f00:1::1", "64:ff9b::7f00:1"])
async def test_addresses_that_are_not_global_are_refused(shared_api, shared_db, dns, sites, address: str) -> None:
    public, internal = sites
    dns["inside.test"] = [address]
    team = await make_team(shared_db, plan="pro", credits="500")
    reply = await create(shared_api, team, [f"http://inside.test:{public.port}/a.png"])
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "training_image_url_not_allowed"
    assert str(ipaddress.ip_address(address)) in reply.json()["message"]
    assert internal.hits == [] and await models(shared_db) == 0


async def test_a_host_with_one_private_address_among_public_ones_is_refused(shared_api, shared_db, dns, sites,
                                                                             monkeypatch) -> None:
    public, internal = sites
    dns["mixed.test"] = [PUBLIC]
    lookup = socket.getaddrinfo

    def both(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        extra = lookup("127.0.0.1", port, *args, **kwargs) if host == "mixed.test" else []
        return lookup(host, port, *args, **kwargs) + extra

    monkeypatch.setattr(socket, "getaddrinfo", both)
    team = await make_team(shared_db, plan="pro", credits="500")
    reply = await create(shared_api, team, [f"http://mixed.test:{public.port}/a.png"])
    assert reply.status_code == 422 and reply.json()["error"] == "training_image_url_not_allowed"
    assert public.hits == [] and internal.hits == []


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/a.png", "http://cgnat.test:{port}/a.png",
                                    "http://[::ffff:127.0.0.1]:{port}/a.png"])
async def test_redirects_to_addresses_that_are_not_global_are_refused(shared_api, shared_db, dns, sites,
                                                                      target: str) -> None:
    public, internal = sites
    dns["public.test"] = [PUBLIC]
    dns["cgnat.test"] = ["100.64.0.1"]
    team = await make_team(shared_db, plan="pro", credits="500")
    url = f"http://public.test:{public.port}/to?{target.format(port=public.port)}"
    reply = await create(shared_api, team, [url])
    assert reply.status_code == 422 and reply.json()["error"] == "training_image_url_not_allowed", reply.text
    assert len(public.hits) == 1 and internal.hits == [] and await models(shared_db) == 0


async def test_a_redirect_to_a_public_host_is_followed(api, db, dns, sites) -> None:
    public, internal = sites
    dns["public.test"] = [PUBLIC]
    dns["cdn.test"] = [PUBLIC, "127.0.0.1"]
    team = await make_team(db, plan="pro", credits="500")
    reply = await create(api, team, [f"http://public.test:{public.port}/to?http://cdn.test:{public.port}/a.png"])
    assert reply.status_code == 202, reply.text
    assert [host for _, host in public.hits] == [f"public.test:{public.port}", f"cdn.test:{public.port}"]
    assert internal.hits == []


async def test_images_over_the_pixel_limit_are_refused_when_uploaded(api, db, settings) -> None:
    team = await make_team(db, plan="pro", credits="500")
    files = [("trainingImages", ("ok.png", solid_png((1, 2, 3)), "image/png")),
             ("trainingImages", ("huge.png", huge_png(), "image/png"))]
    reply = await api.post("/api/v1/models", data={"referenceModelId": "lifestyle-home", "name": "m"},
                           files=files, headers=auth(team))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "image_too_large" and "8000×6000" in reply.json()["message"]
    assert await models(db) == 0 and not any(p.is_file() for p in settings.storage_dir.rglob("*"))

    settings.max_image_pixels = 48_000_000
    reply = await api.post("/api/v1/models", data={"referenceModelId": "lifestyle-home", "name": "m"},
                           files=files, headers=auth(team))
    assert reply.status_code == 202, reply.text


async def test_images_over_the_pixel_limit_are_refused_when_downloaded(shared_api, shared_db, dns, sites) -> None:
    public, _ = sites
    dns["public.test"] = [PUBLIC]
    team = await make_team(shared_db, plan="pro", credits="500")
    reply = await create(shared_api, team, [f"http://public.test:{public.port}/huge.png"])
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "image_too_large" and "huge.png" in reply.json()["message"]
    assert await models(shared_db) == 0
