"""Downloading training images given by URL, without letting the URLs reach this server's network.

Each request (the first and every redirect) goes through ``kit/netguard.py``: its host name is
resolved once, refused unless every address is global, and the connection goes to the address
that was checked.
"""

from __future__ import annotations

import tempfile

import httpx

from pixelmint.custom_models.errors import InvalidTrainingImages, TrainingImageUnreachable, TrainingImageUrlNotAllowed
from pixelmint.custom_models.service import MAX_TRAINING_IMAGE_BYTES, MAX_TRAINING_IMAGES, TrainingImage
from pixelmint.kit.netguard import AddressNotAllowed, pinned_client

FIELD = "trainingImageUrls"


async def download(urls: list[str], into: list[TrainingImage], *, allow_private: bool) -> None:
    """Append the images at ``urls`` to ``into``, each in a spooled temporary file (in memory up to
    1 MiB, then on disk), at most 10 MiB each (the caller closes them). Raises ``InvalidRequest``:
    ``invalid_training_images``, ``training_image_unreachable``, ``training_image_url_not_allowed``.
    """
    if len(urls) > MAX_TRAINING_IMAGES:
        raise InvalidTrainingImages(f"At most {MAX_TRAINING_IMAGES} training images.", field=FIELD)
    async with pinned_client(allow_private=allow_private, timeout=20, follow_redirects=True, max_redirects=3) as client:
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
            except AddressNotAllowed as exc:
                raise TrainingImageUrlNotAllowed(
                    f"{exc.url} points into a private network ({exc.address}); use a public URL or upload the file.",
                    field=FIELD,
                ) from None
            except httpx.HTTPError as exc:
                raise TrainingImageUnreachable(f"Could not download {url}: {exc}", field=FIELD) from None
