"""Outbound HTTP to URLs that users give us, without letting them reach this server's network
(SSRF): training images by URL (``custom_models/downloads.py``) and outbound webhooks
(``webhooks/delivery.py``).

Each request (the first and every redirect the client follows) resolves its host name once,
refuses it unless every address is global (``ipaddress`` ``is_global``, also for IPv4 addresses
embedded in IPv6 ones), and connects to the address it checked: a second DNS answer (rebinding)
cannot move the connection. ``PIXELMINT_ALLOW_PRIVATE_URLS`` (single-user setups, tests) lets
private and loopback addresses through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressNotAllowed(Exception):
    """A request's host resolved to an address that is not global (and private addresses are not
    allowed). Raised by ``PinnedTransport`` through the httpx client; callers turn it into their
    domain's error. ``url`` is the request's URL, ``address`` the first refused address."""

    def __init__(self, url: str, address: IPAddress) -> None:
        super().__init__(f"{url} points into a private network ({address})")
        self.url = url
        self.address = address


def is_global(address: IPAddress) -> bool:
    """Whether ``address`` is a global unicast address, and so is any IPv4 address it carries
    (IPv4-mapped, 6to4, NAT64)."""
    addresses: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        addresses += [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
        if address in _NAT64:
            addresses.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(a.is_global and not a.is_multicast for a in addresses)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host`` (the only name resolution of a request). Raises ``OSError``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(sockaddr[0]) for *_, sockaddr in infos]


async def refused_address(url: str, *, allow_private: bool, timeout: float = 3.0) -> IPAddress | None:
    """A check ahead of time (e.g. when a webhook endpoint is created): the first address of
    ``url``'s host that is not global, or ``None`` when all are (or private ones are allowed, or
    the name does not resolve within ``timeout`` seconds now: the check at connection time still
    applies)."""
    if allow_private:
        return None
    try:
        parsed = httpx.URL(url)
        host, port = parsed.raw_host.decode("ascii"), parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await asyncio.wait_for(resolve(host, port), timeout)
    except (OSError, ValueError, UnicodeError, httpx.InvalidURL, TimeoutError):
        return None
    return next((a for a in addresses if not is_global(a)), None)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """Sends every request to the address that was checked for its host name: the URL's host
    becomes that address, while the Host header, TLS SNI and the certificate check keep the name.

    Raises ``AddressNotAllowed`` for an address that is not global unless ``allow_private``,
    ``httpx.ConnectError`` for a name that does not resolve.
    """

    def __init__(self, *, allow_private: bool) -> None:
        # No kept-alive connections: one opened with one host name's SNI and certificate would be
        # reused for another name that resolved to the same address.
        super().__init__(limits=httpx.Limits(max_keepalive_connections=0))
        self.allow_private = allow_private

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and SNI want it
        try:
            addresses = await resolve(host, request.url.port or (443 if request.url.scheme == "https" else 80))
        except (OSError, ValueError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from None
        refused = [a for a in addresses if not is_global(a)]
        if refused and not self.allow_private:
            raise AddressNotAllowed(str(request.url), refused[0])
        pinned = httpx.Request(
            request.method, request.url.copy_with(host=str(addresses[0])), headers=request.headers,
            stream=request.stream, extensions={**request.extensions, "sni_hostname": host},
        )
        return await super().handle_async_request(pinned)


def pinned_client(*, allow_private: bool, timeout: float, follow_redirects: bool, max_redirects: int = 3) -> httpx.AsyncClient:
    """An httpx client whose every request goes through ``PinnedTransport``. ``trust_env=False``:
    a proxy from the environment would connect in our place, unchecked."""
    return httpx.AsyncClient(
        transport=PinnedTransport(allow_private=allow_private), timeout=timeout,
        follow_redirects=follow_redirects, max_redirects=max_redirects, trust_env=False,
    )
