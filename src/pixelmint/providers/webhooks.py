"""Signature checks for provider callbacks. Both verify over the exact raw request body, so the
endpoint must hand over ``await request.body()`` untouched (never re-serialized JSON).

- fal (protocols.md §1.7): Ed25519. Headers ``X-Fal-Webhook-Request-Id``, ``-User-Id``,
  ``-Timestamp`` (Unix seconds) and ``-Signature`` (hex of the 64-byte signature). The signed
  message is the UTF-8 text ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``. Public
  keys come from a JWKS (``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": <base64url>}]}``,
  ``PIXELMINT_FAL_WEBHOOK_JWKS_URL``), fetched with httpx and cached for
  ``PIXELMINT_FAL_WEBHOOK_JWKS_TTL_SECONDS`` (24 h); a signature no cached key verifies triggers
  one early re-fetch (key rotation) at most every 5 minutes. Any key that verifies is accepted.
- Replicate (protocols.md §2.4): Standard Webhooks / Svix. Headers ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature`` (space-separated ``v1,<base64>``); the signature is
  base64(HMAC-SHA256(key, ``f"{id}.{timestamp}.{body}"``)) with key = base64-decoded part of the
  ``whsec_…`` secret; compared in constant time.

Both reject a timestamp more than ``PIXELMINT_PROVIDER_WEBHOOK_TOLERANCE_SECONDS`` (300) away from
now, in either direction (replays of old deliveries).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pixelmint.providers.base import WebhookVerificationError
from pixelmint.providers.remote import lower_headers

JWKS_MIN_REFRESH_SECONDS = 300.0


def _check_timestamp(raw: str, tolerance: float, now: float) -> int:
    try:
        timestamp = int(raw.strip())
    except ValueError:
        raise WebhookVerificationError("webhook timestamp is not a Unix time", reason="bad_signature") from None
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook timestamp is {int(now - timestamp)} s away from now (tolerance {tolerance:.0f} s)",
            reason="stale_timestamp",
        )
    return timestamp


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class FalWebhookVerifier:
    """fal's Ed25519 webhook signatures against a cached JWKS (module docstring)."""

    HEADERS = ("x-fal-webhook-request-id", "x-fal-webhook-user-id", "x-fal-webhook-timestamp", "x-fal-webhook-signature")

    def __init__(
        self,
        jwks_url: str,
        *,
        ttl_seconds: float = 86400.0,
        tolerance_seconds: float = 300.0,
        timeout: float = 10.0,
        min_refresh_seconds: float = JWKS_MIN_REFRESH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks_url = jwks_url
        self.min_refresh_seconds = min_refresh_seconds
        self.ttl_seconds = ttl_seconds
        self.tolerance_seconds = tolerance_seconds
        self.timeout = timeout
        self.clock = clock
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None  # monotonic
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None

    async def verify(self, headers: Mapping[str, str], body: bytes) -> int:
        """Raise ``WebhookVerificationError`` unless ``body`` is signed by a key of the JWKS;
        returns the signed timestamp (Unix seconds)."""
        values = lower_headers(headers)
        missing = [name for name in self.HEADERS if not values.get(name)]
        if missing:
            raise WebhookVerificationError(f"missing webhook headers: {', '.join(missing)}", reason="missing_header")
        request_id, user_id, raw_timestamp, signature_hex = (values[name] for name in self.HEADERS)
        timestamp = _check_timestamp(raw_timestamp, self.tolerance_seconds, self.clock())
        try:
            signature = bytes.fromhex(signature_hex.strip())
        except ValueError:
            raise WebhookVerificationError("webhook signature is not hex", reason="bad_signature") from None
        if len(signature) != 64:
            raise WebhookVerificationError("webhook signature is not 64 bytes", reason="bad_signature")
        message = "\n".join((request_id, user_id, raw_timestamp, hashlib.sha256(body).hexdigest())).encode()
        if self._verifies(await self._current_keys(), signature, message):
            return timestamp
        if await self._refresh_if_allowed() and self._verifies(self._keys, signature, message):
            return timestamp
        raise WebhookVerificationError("no key of the fal JWKS verifies the webhook signature", reason="bad_signature")

    @staticmethod
    def _verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
        for key in keys:
            try:
                key.verify(signature, message)
                return True
            except InvalidSignature:
                continue
        return False

    async def _current_keys(self) -> list[Ed25519PublicKey]:
        fresh = self._fetched_at is not None and time.monotonic() - self._fetched_at < self.ttl_seconds
        if not fresh:
            async with self._lock:
                fresh = self._fetched_at is not None and time.monotonic() - self._fetched_at < self.ttl_seconds
                if not fresh:
                    await self._fetch(stale_ok=True)
        return self._keys

    async def _refresh_if_allowed(self) -> bool:
        """Re-fetch before the TTL when a signature fails (rotated key), rate-limited."""
        async with self._lock:
            if self._fetched_at is not None and time.monotonic() - self._fetched_at < self.min_refresh_seconds:
                return False
            await self._fetch(stale_ok=True)
            return True

    async def _fetch(self, *, stale_ok: bool) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._http.get(self.jwks_url)
            response.raise_for_status()
            keys = []
            for jwk in response.json().get("keys", []):
                if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and isinstance(jwk.get("x"), str):
                    try:
                        keys.append(Ed25519PublicKey.from_public_bytes(_b64url(jwk["x"])))
                    except (ValueError, binascii.Error):
                        continue
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            if stale_ok and self._keys:
                self._fetched_at = time.monotonic()  # keep serving the last good keys for a while
                return
            raise WebhookVerificationError(
                f"cannot fetch fal webhook keys from {self.jwks_url}: {exc}", reason="keys_unavailable", status_code=503
            ) from exc
        if not keys and not (stale_ok and self._keys):
            raise WebhookVerificationError(
                f"the JWKS at {self.jwks_url} holds no Ed25519 key", reason="keys_unavailable", status_code=503
            )
        self._keys = keys or self._keys
        self._fetched_at = time.monotonic()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class StandardWebhookVerifier:
    """Replicate's webhook signatures (Standard Webhooks, module docstring)."""

    def __init__(
        self, secret: str | None, *, tolerance_seconds: float = 300.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._key: bytes | None = None
        if secret:
            prefix, _, encoded = secret.partition("_")
            if prefix != "whsec" or not encoded:
                raise ValueError("a Replicate webhook secret looks like 'whsec_<base64>'")
            self._key = base64.b64decode(encoded)
        self.tolerance_seconds = tolerance_seconds
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> tuple[str, int]:
        """Raise ``WebhookVerificationError`` unless ``body`` is signed with the secret; returns
        ``(webhook_id, timestamp)``."""
        if self._key is None:
            raise WebhookVerificationError(
                "no webhook secret configured: set PIXELMINT_REPLICATE_WEBHOOK_SECRET", reason="not_configured",
                status_code=503,
            )
        values = lower_headers(headers)
        webhook_id, raw_timestamp, signatures = (values.get(n) for n in ("webhook-id", "webhook-timestamp", "webhook-signature"))
        if not webhook_id or not raw_timestamp or not signatures:
            raise WebhookVerificationError(
                "missing webhook-id, webhook-timestamp or webhook-signature header", reason="missing_header"
            )
        timestamp = _check_timestamp(raw_timestamp, self.tolerance_seconds, self.clock())
        signed = webhook_id.encode() + b"." + raw_timestamp.encode() + b"." + body
        expected = hmac.new(self._key, signed, hashlib.sha256).digest()
        for entry in signatures.split():
            version, _, encoded = entry.partition(",")
            if version != "v1":
                continue
            try:
                candidate = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(candidate, expected):
                return webhook_id, timestamp
        raise WebhookVerificationError("webhook signature does not match the secret", reason="bad_signature")
