"""Object storage: the interface and the local-directory backend with HMAC-signed URLs.

Local URLs are ``<base>/files/<key>?expires=<unix seconds>&signature=<hex>``, where the signature
is ``HMAC-SHA256(secret, "<key>\\n<expires>")``; the app serves the file only while the signature
checks and the time has not passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from pixelmint.kit.errors import NotFound
from pixelmint.settings import Settings
from pixelmint.storage.errors import FileNotFound, InvalidSignature, UrlExpired


class StorageError(Exception):
    """A storage write, read or delete failed. When the cause is configuration (bucket,
    credentials, endpoint), the message names the setting to fix."""


class Storage(Protocol):
    async def put(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete_many(self, keys: Sequence[str]) -> None: ...

    def url(self, key: str, *, base_url: str, ttl_seconds: int) -> str: ...


class LocalStorage:
    """Files under ``root``; keys are relative paths such as ``<team>/<yyyy>/<mm>/<dd>/<id>.png``."""

    def __init__(self, root: Path, secret: str) -> None:
        self.root = root
        self._resolved_root = root.resolve()
        self._secret = secret.encode()

    def _path(self, key: str) -> Path:
        """The file of ``key``, checked lexically (no filesystem calls, so that deleting thousands
        of keys stays cheap): a relative path without empty, ``.`` or ``..`` parts. Raises
        ``NotFound`` otherwise. ``verified_path`` also resolves symlinks."""
        if not key or key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in key.split("/")):
            raise FileNotFound("No such file.")
        return self._resolved_root / key

    async def put(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        """Write the file, readable by its owner only (0600, directories 0700)."""
        path = self._path(key)

        def write() -> None:
            self._make_directories(path.parent)
            tmp = path.with_suffix(path.suffix + ".tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
                file.write(data)
            os.replace(tmp, path)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            raise StorageError(f"could not write {key}: {exc}") from exc

    def _make_directories(self, directory: Path) -> None:
        """``directory`` and its missing parents, each 0700 (``mkdir(parents=True)`` would make
        the parents with the umask's mode, usually world-readable)."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for each in reversed(missing):
            each.mkdir(mode=0o700, exist_ok=True)

    async def get(self, key: str) -> bytes:
        """The object's bytes. Raises ``StorageError`` if it cannot be read."""
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc}") from exc

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (an invalid key is not)."""
        try:
            path = self._path(key)
        except NotFound:
            return False
        return await asyncio.to_thread(path.is_file)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete the files of ``keys`` (one thread hop for all); a missing file is not an error.
        Raises ``StorageError`` if a file exists but cannot be removed."""
        paths = [self._path(key) for key in keys]

        def unlink_all() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        try:
            await asyncio.to_thread(unlink_all)
        except OSError as exc:
            raise StorageError(f"could not delete files under {self.root}: {exc}") from exc

    def sign(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, key: str, *, base_url: str, ttl_seconds: int) -> str:
        expires = int(time.time()) + ttl_seconds
        return f"{base_url.rstrip('/')}/files/{quote(key)}?expires={expires}&signature={self.sign(key, expires)}"

    def verified_path(self, key: str, *, expires: int, signature: str) -> Path:
        """The file for a signed URL. Raises ``InvalidSignature`` (403) for a bad or expired
        signature and ``NotFound`` for a missing file."""
        if expires < time.time():
            raise UrlExpired("This link has expired.")
        if not hmac.compare_digest(self.sign(key, expires), signature):
            raise InvalidSignature("The link's signature does not match.")
        path = self._path(key)
        if not path.resolve().is_relative_to(self._resolved_root) or not path.is_file():
            raise FileNotFound("No such file.")
        return path


def from_settings(settings: Settings) -> Storage:
    """The storage backend the settings choose: ``PIXELMINT_STORAGE_BACKEND=local`` (default,
    files under ``<data_dir>/images``) or ``s3`` (``storage/s3.py``). Raises ``StorageError`` when
    the S3 settings are incomplete (no bucket)."""
    if settings.storage_backend == "s3":
        from pixelmint.storage.s3 import S3Storage  # boto3 is imported only when S3 is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_dir, settings.resolved_secret_key())
