"""The S3 storage backend: AWS S3 or any S3-compatible server (MinIO, Ceph, R2, moto, ...).

Objects live in one bucket under ``<s3_prefix><key>``; keys come from ``storage/service.py``
(``generated/<team>/<yyyy>/<mm>/<dd>/<image>.png`` for job outputs, ``catalog/...`` for catalog
previews). Every object carries its ``Content-Type`` and the caller's metadata (``team``, ``job``,
``model``) as S3 user metadata (``x-amz-meta-*``).

Image URLs are presigned ``GET`` URLs (SigV4, ``X-Amz-Expires`` = the requested TTL, at most 7
days as SigV4 allows) pointing at the S3 endpoint, or — when ``PIXELMINT_CDN_BASE_URL`` is set —
plain ``<cdn_base_url>/<object key>`` URLs, which only make sense for a public CDN in front of the
bucket (they are neither signed nor expiring).

boto3 is synchronous: every call runs in ``asyncio.to_thread`` (the default executor; the client
is thread-safe and keeps a pool of ``max_pool_connections`` HTTP connections). Every botocore error
becomes a ``StorageError`` whose message names the setting to fix (``PIXELMINT_S3_BUCKET``, the
credentials, ``PIXELMINT_S3_ENDPOINT_URL``, ``PIXELMINT_S3_REGION``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from pixelmint.storage.backend import StorageError
from pixelmint.storage.service import GENERATED_PREFIX

if TYPE_CHECKING:
    from pixelmint.settings import Settings

T = TypeVar("T")

# DeleteObjects takes at most 1,000 keys per request.
DELETE_BATCH = 1000
# SigV4 presigned URLs are valid for at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
LIFECYCLE_RULE_ID = "pixelmint-image-retention"

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}


class S3Storage:
    """Objects in an S3 bucket. Same interface as ``LocalStorage``: ``put``, ``get``, ``exists``,
    ``delete``, ``delete_many``, ``url``; plus ``apply_lifecycle`` for the bucket's retention rule.

    ``client`` is the underlying boto3 S3 client (thread-safe; call it through
    ``asyncio.to_thread`` from async code).
    """

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        cdn_base_url: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not bucket:
            raise StorageError("the S3 backend needs a bucket: set PIXELMINT_S3_BUCKET")
        if bool(access_key_id) != bool(secret_access_key):
            raise StorageError(
                "set both PIXELMINT_S3_ACCESS_KEY_ID and PIXELMINT_S3_SECRET_ACCESS_KEY, or neither "
                "(then boto3's own credential chain is used)"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.prefix = prefix.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.cdn_base_url = cdn_base_url.rstrip("/") if cdn_base_url else None
        custom_endpoint = endpoint_url is not None
        config = Config(
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=32,
            # Path-style URLs work on every S3-compatible server without wildcard DNS; AWS keeps
            # its default (virtual-hosted) style.
            s3={"addressing_style": "path" if custom_endpoint else "auto"},
            # botocore >= 1.36 adds CRC checksums to every upload by default, which several
            # S3-compatible servers reject; send them only where the API requires one.
            request_checksum_calculation="when_required" if custom_endpoint else "when_supported",
            response_checksum_validation="when_required" if custom_endpoint else "when_supported",
        )
        session = boto3.session.Session()
        self.client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=config,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """The backend for ``PIXELMINT_STORAGE_BACKEND=s3``. Raises ``StorageError`` when
        ``PIXELMINT_S3_BUCKET`` is unset or only one of the two credential settings is set."""
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return cls(
            bucket=settings.s3_bucket or "",
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret,
            prefix=settings.s3_prefix,
            cdn_base_url=settings.cdn_base_url,
        )

    def object_key(self, key: str) -> str:
        """The S3 object key of a storage key: ``<s3_prefix><key>``."""
        return f"{self.prefix}{key}"

    # -- objects ---------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        """Store ``data`` (bytes) at ``key`` with ``Content-Type: content_type`` and ``metadata`` as
        S3 user metadata (non-ASCII values are percent-encoded). Overwrites. Raises ``StorageError``."""
        await self._call(
            f"upload of {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self.object_key(key), Body=data, ContentType=content_type,
                Metadata={k.lower(): _ascii(v) for k, v in metadata.items()},
            ),
        )

    async def get(self, key: str) -> bytes:
        """The object's bytes. Raises ``StorageError`` (also when there is no such object)."""

        def read() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            with response["Body"] as body:
                return body.read()

        return await self._call(f"download of {key}", read)

    async def exists(self, key: str) -> bool:
        """Whether the object exists (``HEAD``). Raises ``StorageError`` for any other error."""

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            except ClientError as exc:
                if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

        return await self._call(f"lookup of {key}", head)

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error. Raises ``StorageError``."""
        await self._call(
            f"delete of {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        )

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete objects with ``DeleteObjects``, 1,000 keys per request (one thread hop per
        request). Missing objects are not an error. Raises ``StorageError`` if a request fails or S3
        reports per-key errors (the message counts them and shows the first)."""
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = [{"Key": self.object_key(k)} for k in keys[start : start + DELETE_BATCH]]

            def delete_chunk(chunk: list[dict[str, str]] = chunk) -> dict[str, Any]:
                return self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

            response = await self._call(f"delete of {len(chunk)} objects", delete_chunk)
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 could not delete {len(errors)} of {len(chunk)} objects in bucket {self.bucket!r}; "
                    f"first: {first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip()
                )

    def url(self, key: str, *, base_url: str, ttl_seconds: int) -> str:
        """A presigned GET URL valid for ``ttl_seconds`` (clamped to 1 s .. 7 days), or
        ``<cdn_base_url>/<object key>`` when a CDN is configured. ``base_url`` (the API's own URL)
        is not used: the URL points at the S3 endpoint or the CDN. Computed locally (no request).
        Raises ``StorageError`` when no credentials can be found to sign with."""
        object_key = self.object_key(key)
        if self.cdn_base_url:
            return f"{self.cdn_base_url}/{quote(object_key)}"
        expires_in = max(1, min(int(ttl_seconds), MAX_PRESIGN_SECONDS))
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=expires_in
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"signing a URL for {key}") from exc

    # -- bucket ----------------------------------------------------------------------------

    async def apply_lifecycle(self, *, days: int) -> dict[str, Any]:
        """Set the bucket's lifecycle rule ``pixelmint-image-retention``: objects under
        ``<s3_prefix>generated/`` (job outputs; catalog previews under ``catalog/`` are kept) expire
        ``days`` days after creation, and incomplete multipart uploads are aborted after a day.
        Other rules on the bucket are kept (the configuration is read, our rule replaced, written
        back). Returns the rule written. Raises ``StorageError`` (e.g. missing
        ``s3:PutLifecycleConfiguration`` permission) and ``ValueError`` for ``days < 1``.

        S3 runs lifecycle expiry about once a day, so objects may outlive ``days`` by a day; the
        database rows are marked by ``pixelmint storage cleanup`` (which also deletes the objects):
        the rule is a backstop for objects the database no longer knows about."""
        if days < 1:
            raise ValueError(f"lifecycle expiry needs days >= 1, got {days}")
        rule: dict[str, Any] = {
            "ID": LIFECYCLE_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": self.object_key(GENERATED_PREFIX)},
            "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }

        def apply() -> None:
            try:
                current = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
            except ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                current = []
            rules = [r for r in current if r.get("ID") != LIFECYCLE_RULE_ID] + [rule]
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
            )

        await self._call("lifecycle configuration", apply)
        return rule

    # -- errors ----------------------------------------------------------------------------

    async def _call(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, action) from exc

    def _error(self, exc: BotoCoreError | ClientError, action: str) -> StorageError:
        """A ``StorageError`` that says what failed and which setting to check."""
        where = f"S3 {action} failed (bucket {self.bucket!r}, endpoint {self.endpoint_url or 'AWS default'})"
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            hint = "no S3 credentials found: set PIXELMINT_S3_ACCESS_KEY_ID and PIXELMINT_S3_SECRET_ACCESS_KEY"
        elif isinstance(exc, BotoConnectionError | HTTPClientError):
            hint = f"cannot reach the S3 endpoint: check PIXELMINT_S3_ENDPOINT_URL ({exc})"
        elif isinstance(exc, ParamValidationError):
            hint = f"invalid request, check PIXELMINT_S3_BUCKET and PIXELMINT_S3_PREFIX: {exc}"
        elif isinstance(exc, ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = exc.response.get("Error", {}).get("Message") or ""
            if code in ("NoSuchBucket", "InvalidBucketName"):
                hint = f"{code}: bucket {self.bucket!r} does not exist or is invalid: check PIXELMINT_S3_BUCKET"
            elif code in _CREDENTIAL_CODES:
                hint = (
                    f"{code}: the credentials were rejected: check PIXELMINT_S3_ACCESS_KEY_ID and "
                    "PIXELMINT_S3_SECRET_ACCESS_KEY"
                )
            elif code in _REGION_CODES or status == 301:
                hint = f"{code}: the bucket is in another region: check PIXELMINT_S3_REGION"
            elif code == "AccessDenied" or status == 403:
                hint = (
                    f"{code or 'AccessDenied'}: the credentials (PIXELMINT_S3_ACCESS_KEY_ID) lack permission "
                    f"on bucket {self.bucket!r} ({message})"
                )
            elif code in ("NoSuchKey", "404", "NotFound"):
                hint = "no such object"
            else:
                hint = f"{code or status}: {message}"
        else:
            hint = str(exc)
        return StorageError(f"{where}: {hint}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _ascii(value: str) -> str:
    """S3 user metadata travels in HTTP headers: keep printable ASCII, percent-encode the rest."""
    return value if value.isascii() and value.isprintable() else quote(value, safe="")
