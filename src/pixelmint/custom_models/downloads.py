"""Downloading training images given by URL, without letting the URLs reach this server's network.

Each request (the first and every redirect) resolves its host name once, refuses it unless every
address is global (``ipaddress`` ``is_global``, also for IPv4 addresses embedded in IPv6 ones), and
connects to the address it checked: a second DNS answer (rebinding) cannot move the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import tempfile

import httpx

from pixelmint.custom_models.errors import InvalidTrainingImages, TrainingImageUnreachable, TrainingImageUrlNotAllowed
from pixelmint.custom_models.service import MAX_TRAINING_IMAGE_BYTES, MAX_TRAINING_IMAGES, TrainingImage

FIELD = "trainingImageUrls"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    """The addresses of ``host`` (the only name resolution of a download). Raises ``OSError``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(sockaddr[0]) for *_, sockaddr in infos]


class PinnedTransport(httpx.AsyncHTTPTransport):
    """Sends every request to the address that was checked for its host name: the URL's host
    becomes that address, while the Host header, TLS SNI and the certificate check keep the name.

    Raises ``InvalidRequest`` (``training_image_url_not_allowed``) for an address that is not
    global unless ``allow_private``, ``httpx.ConnectError`` for a name that does not resolve.
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
            raise TrainingImageUrlNotAllowed(
                f"{request.url} points into a private network ({refused[0]}); use a public URL or upload the file.",
                field=FIELD,
            )
        pinned = httpx.Request(
            request.method, request.url.copy_with(host=str(addresses[0])), headers=request.headers,
            stream=request.stream, extensions={**request.extensions, "sni_hostname": host},
        )
        return await super().handle_async_request(pinned)


async def download(urls: list[str], into: list[TrainingImage], *, allow_private: bool) -> None:
    """Append the images at ``urls`` to ``into``, each in a spooled temporary file (in memory up to
    1 MiB, then on disk), at most 10 MiB each (the caller closes them). Raises ``InvalidRequest``:
    ``invalid_training_images``, ``training_image_unreachable``, ``training_image_url_not_allowed``.
    """
    if len(urls) > MAX_TRAINING_IMAGES:
        raise InvalidTrainingImages(f"At most {MAX_TRAINING_IMAGES} training images.", field=FIELD)
    transport = PinnedTransport(allow_private=allow_private)
    # trust_env=False: a proxy from the environment would connect in our place, unchecked.
    async with httpx.AsyncClient(transport=transport, timeout=20, follow_redirects=True, max_redirects=3,
                                 trust_env=False) as client:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise InvalidTrainingImages(f"{url!r} is not an http(s) URL.", field=FIELD)
            file = tempfile.SpooledTemporaryFile(max_size=2**20)
            into.append(TrainingImage(url.rsplit("/", 1)[-1].split("?")[0] or "image", file))
            try:
                async with client.stream("GET", url) as response:
                    response.raise_for_status()
                    async for chunk in response.aiter_bytes():
                        file.write(chunk)
                        if file.tell() > MAX_TRAINING_IMAGE_BYTES:
                            raise InvalidTrainingImages(
                                f"{url} is larger than {MAX_TRAINING_IMAGE_BYTES // 2**20} MiB.", field=FIELD
                            )
            except httpx.HTTPError as exc:
                raise TrainingImageUnreachable(f"Could not download {url}: {exc}", field=FIELD) from None
