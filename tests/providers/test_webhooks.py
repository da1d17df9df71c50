"""Webhook signatures: fal's Ed25519 over a JWKS served by the local fal, Replicate's Standard
Webhooks HMAC with a real ``whsec_`` secret (cross-checked against the replicate SDK's own
validator). Payloads are signed here exactly as the providers sign them (protocols.md §1.7, §2.4)."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pixelmint.providers.base import ProviderState, WebhookVerificationError
from pixelmint.providers.webhooks import FalWebhookVerifier, StandardWebhookVerifier
from tests.providers.fake_fal import USER_ID, FakeFal, sign_fal
from tests.providers.fake_replicate import WEBHOOK_SECRET, sign_standard

FAL_BODY = json.dumps({"request_id": "req-1", "gateway_request_id": "req-1", "status": "OK",
                       "payload": {"images": [{"url": "https://x.test/1.png"}], "seed": 3}}).encode()


def fal_headers(key: Ed25519PrivateKey, body: bytes = FAL_BODY, *, timestamp: int | None = None, request_id: str = "req-1") -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": USER_ID,
        "X-Fal-Webhook-Timestamp": ts,
        "X-Fal-Webhook-Signature": sign_fal(key, request_id, USER_ID, ts, body),
    }


def fal_verifier(fake: FakeFal, **kwargs) -> FalWebhookVerifier:
    return FalWebhookVerifier(f"{fake.base}/.well-known/jwks.json", **kwargs)


async def test_fal_signature_verifies_and_jwks_is_cached(fake_fal: FakeFal, fal) -> None:
    verifier = fal_verifier(fake_fal)
    hits = fake_fal.jwks_hits
    assert await verifier.verify(fal_headers(fake_fal.key), FAL_BODY) > 0
    assert await verifier.verify(fal_headers(fake_fal.key), FAL_BODY) > 0
    assert fake_fal.jwks_hits == hits + 1
    event = await fal.verify_webhook(fal_headers(fake_fal.key), FAL_BODY)
    assert (event.request_id, event.state, event.output["seed"]) == ("req-1", ProviderState.SUCCEEDED, 3)
    await verifier.aclose()


async def test_fal_jwks_refetched_after_ttl(fake_fal: FakeFal) -> None:
    verifier = fal_verifier(fake_fal, ttl_seconds=0)
    hits = fake_fal.jwks_hits
    await verifier.verify(fal_headers(fake_fal.key), FAL_BODY)
    await verifier.verify(fal_headers(fake_fal.key), FAL_BODY)
    assert fake_fal.jwks_hits == hits + 2
    await verifier.aclose()


@pytest.mark.parametrize("case", ["tampered body", "unknown key", "other request id", "not hex", "stale", "future", "missing"])
async def test_fal_rejects(fake_fal: FakeFal, case: str) -> None:
    verifier = fal_verifier(fake_fal)
    body, headers = FAL_BODY, fal_headers(fake_fal.key)
    if case == "tampered body":
        body = FAL_BODY.replace(b'"seed": 3', b'"seed": 4')
    elif case == "unknown key":
        headers = fal_headers(Ed25519PrivateKey.generate())
    elif case == "other request id":
        headers["X-Fal-Webhook-Request-Id"] = "req-2"
    elif case == "not hex":
        headers["X-Fal-Webhook-Signature"] = "zz" * 64
    elif case == "stale":
        headers = fal_headers(fake_fal.key, timestamp=int(time.time()) - 301)
    elif case == "future":
        headers = fal_headers(fake_fal.key, timestamp=int(time.time()) + 301)
    elif case == "missing":
        del headers["X-Fal-Webhook-Signature"]
    with pytest.raises(WebhookVerificationError) as caught:
        await verifier.verify(headers, body)
    expected = {"stale": "stale_timestamp", "future": "stale_timestamp", "missing": "missing_header"}.get(case, "bad_signature")
    assert caught.value.reason == expected and caught.value.status_code == 400
    await verifier.aclose()


async def test_fal_rotated_key_triggers_one_early_refetch(fake_fal: FakeFal) -> None:
    old = fake_fal.key
    strict, eager = fal_verifier(fake_fal), fal_verifier(fake_fal, min_refresh_seconds=0)
    await strict.verify(fal_headers(old), FAL_BODY)
    await eager.verify(fal_headers(old), FAL_BODY)
    fake_fal.key = Ed25519PrivateKey.generate()  # fal rotates its signing key
    try:
        assert await eager.verify(fal_headers(fake_fal.key), FAL_BODY) > 0
        with pytest.raises(WebhookVerificationError):  # refetches at most every 5 minutes
            await strict.verify(fal_headers(fake_fal.key), FAL_BODY)
    finally:
        fake_fal.key = old
        await strict.aclose()
        await eager.aclose()


async def test_fal_keys_unavailable_is_503(fake_fal: FakeFal) -> None:
    verifier = FalWebhookVerifier(f"{fake_fal.base}/no/such/jwks")  # not served: an HTTP error
    with pytest.raises(WebhookVerificationError) as caught:
        await verifier.verify(fal_headers(fake_fal.key), FAL_BODY)
    assert caught.value.reason == "keys_unavailable" and caught.value.status_code == 503
    await verifier.aclose()


async def test_fal_payload_must_be_the_documented_json(fake_fal: FakeFal, fal) -> None:
    body = b'{"hello": "world"}'
    with pytest.raises(WebhookVerificationError) as caught:
        await fal.verify_webhook(fal_headers(fake_fal.key, body), body)
    assert caught.value.reason == "bad_payload"


REPLICATE_BODY = json.dumps({"id": "p1", "model": "m/n", "version": "v", "status": "succeeded",
                             "output": ["https://x.test/1.png"], "logs": "a\nb", "error": None}).encode()


def replicate_headers(body: bytes = REPLICATE_BODY, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"webhook-id": "msg_1", "webhook-timestamp": ts, "webhook-signature": sign_standard(secret, "msg_1", ts, body)}


def test_replicate_signature_and_sdk_agree() -> None:
    from replicate.webhook import Webhooks, WebhookSigningSecret

    headers = replicate_headers()
    assert StandardWebhookVerifier(WEBHOOK_SECRET).verify(headers, REPLICATE_BODY)[0] == "msg_1"
    Webhooks.validate(headers=headers, body=REPLICATE_BODY.decode(), secret=WebhookSigningSecret(key=WEBHOOK_SECRET), tolerance=300)
    rotated = dict(headers, **{"webhook-signature": "v1,AAAA " + headers["webhook-signature"]})
    assert StandardWebhookVerifier(WEBHOOK_SECRET).verify(rotated, REPLICATE_BODY)[0] == "msg_1"


async def test_replicate_event(replicate) -> None:
    event = await replicate.verify_webhook(replicate_headers(), REPLICATE_BODY)
    assert (event.request_id, event.delivery_id, event.state) == ("p1", "msg_1", ProviderState.SUCCEEDED)
    assert event.output == ["https://x.test/1.png"] and event.logs == ("a", "b")


@pytest.mark.parametrize("case", ["tampered body", "other secret", "stale", "missing", "not configured"])
def test_replicate_rejects(case: str) -> None:
    verifier = StandardWebhookVerifier(WEBHOOK_SECRET)
    body, headers = REPLICATE_BODY, replicate_headers()
    if case == "tampered body":
        body = REPLICATE_BODY.replace(b"succeeded", b"failed")
    elif case == "other secret":
        headers = replicate_headers(secret="whsec_" + base64.b64encode(b"another-secret-key-0123456789ab").decode())
    elif case == "stale":
        headers = replicate_headers(timestamp=int(time.time()) - 600)
    elif case == "missing":
        del headers["webhook-id"]
    elif case == "not configured":
        verifier = StandardWebhookVerifier(None)
    with pytest.raises(WebhookVerificationError) as caught:
        verifier.verify(headers, body)
    expected = {"stale": "stale_timestamp", "missing": "missing_header", "not configured": "not_configured"}.get(case, "bad_signature")
    assert caught.value.reason == expected
    assert caught.value.status_code == (503 if case == "not configured" else 400)


def test_replicate_secret_format_is_checked() -> None:
    with pytest.raises(ValueError):
        StandardWebhookVerifier("not-a-secret")
