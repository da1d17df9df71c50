"""The S3 backend against a real S3-compatible server (moto's server mode, see conftest.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pixelmint.settings import Settings
from pixelmint.storage import s3 as s3_module
from pixelmint.storage.backend import StorageError, from_settings
from pixelmint.storage.s3 import S3Storage
from tests.storage.conftest import S3_KEYS, free_port


async def test_put_stores_bytes_content_type_and_metadata_under_the_prefix(s3_storage: S3Storage, s3_client: Any) -> None:
    meta = {"team": "t-1", "job": "j-1", "model": "fashion-editorial"}
    await s3_storage.put("generated/t-1/2026/11/21/a.png", b"\x89PNG one", content_type="image/png", metadata=meta)
    head = s3_client.head_object(Bucket=s3_storage.bucket, Key="pm/generated/t-1/2026/11/21/a.png")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == meta
    assert head["ContentLength"] == len(b"\x89PNG one")
    assert await s3_storage.get("generated/t-1/2026/11/21/a.png") == b"\x89PNG one"


async def test_non_ascii_metadata_is_percent_encoded_not_an_error(s3_storage: S3Storage, s3_client: Any) -> None:
    await s3_storage.put("k.png", b"x", content_type="image/png", metadata={"model": "café"})
    assert s3_client.head_object(Bucket=s3_storage.bucket, Key="pm/k.png")["Metadata"] == {"model": "caf%C3%A9"}


async def test_presigned_url_downloads_the_bytes_and_carries_the_ttl(s3_storage: S3Storage) -> None:
    await s3_storage.put("generated/x/img 1.png", b"\x89PNG bytes", content_type="image/png", metadata={})
    url = s3_storage.url("generated/x/img 1.png", base_url="http://api.example", ttl_seconds=120)
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG bytes"
    assert response.headers["content-type"] == "image/png"

    # Expiry is enforced by the S3 server from the signed query; moto does not enforce it, so
    # check what we sign: SigV4, signed now, valid for exactly the TTL asked for.
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and query["X-Amz-Expires"] == "120"
    signed_at = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - signed_at).total_seconds()) < 10
    assert "host" in query["X-Amz-SignedHeaders"] and query["X-Amz-Signature"]
    # SigV4 allows 1 s .. 7 days
    week = s3_storage.url("k", base_url="", ttl_seconds=30 * 24 * 3600)
    assert parse_qs(urlsplit(week).query)["X-Amz-Expires"] == [str(7 * 24 * 3600)]
    assert parse_qs(urlsplit(s3_storage.url("k", base_url="", ttl_seconds=0)).query)["X-Amz-Expires"] == ["1"]


def test_cdn_urls_are_plain_paths_of_the_object_key() -> None:
    storage = S3Storage(bucket="bkt", prefix="/images", cdn_base_url="https://cdn.example/", **S3_KEYS)
    url = storage.url("generated/t/2026/11/21/a b.png", base_url="http://api", ttl_seconds=60)
    assert url == "https://cdn.example/images/generated/t/2026/11/21/a%20b.png"


async def test_delete_and_delete_many_in_batches(s3_storage: S3Storage, s3_client: Any, monkeypatch) -> None:
    keys = [f"generated/t/{i}.png" for i in range(7)]
    for key in keys:
        await s3_storage.put(key, b"x", content_type="image/png", metadata={})
    calls = []
    real = s3_storage.client.delete_objects

    def counting(**kwargs: Any) -> Any:
        calls.append(len(kwargs["Delete"]["Objects"]))
        return real(**kwargs)

    monkeypatch.setattr(s3_module, "DELETE_BATCH", 3)  # 1,000 in production; same code path
    monkeypatch.setattr(s3_storage.client, "delete_objects", counting)
    await s3_storage.delete_many([*keys[:6], "generated/t/never-existed.png"])
    assert calls == [3, 3, 1]
    await s3_storage.delete(keys[6])
    await s3_storage.delete(keys[6])  # missing: not an error
    listed = s3_client.list_objects_v2(Bucket=s3_storage.bucket, Prefix="pm/")
    assert listed["KeyCount"] == 0
    await s3_storage.delete_many([])


async def test_missing_bucket_is_a_storage_error_naming_the_setting(s3_endpoint: str) -> None:
    storage = S3Storage(bucket="no-such-bucket-here", endpoint_url=s3_endpoint, region="us-east-1", **S3_KEYS)
    for call in (
        storage.put("k", b"x", content_type="image/png", metadata={}),
        storage.get("k"),
        storage.delete_many(["k"]),
        storage.apply_lifecycle(days=90),
    ):
        with pytest.raises(StorageError, match="NoSuchBucket.*PIXELMINT_S3_BUCKET"):
            await call


async def test_unreachable_endpoint_is_a_storage_error_naming_the_setting() -> None:
    storage = S3Storage(
        bucket="bkt", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1, connect_timeout=2, **S3_KEYS
    )
    with pytest.raises(StorageError, match="PIXELMINT_S3_ENDPOINT_URL"):
        await storage.put("k", b"x", content_type="image/png", metadata={})


async def test_missing_credentials_are_a_storage_error_naming_the_settings(s3_endpoint: str, tmp_path, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata service
    storage = S3Storage(bucket="bkt", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(StorageError, match="PIXELMINT_S3_ACCESS_KEY_ID"):
        await storage.put("k", b"x", content_type="image/png", metadata={})
    with pytest.raises(StorageError, match="PIXELMINT_S3_ACCESS_KEY_ID"):
        storage.url("k", base_url="", ttl_seconds=60)


def test_settings_choose_the_backend_and_incomplete_s3_settings_fail_clearly(tmp_path) -> None:
    assert type(from_settings(Settings(data_dir=tmp_path, secret_key="s"))).__name__ == "LocalStorage"
    chosen = from_settings(Settings(data_dir=tmp_path, storage_backend="s3", s3_bucket="bkt", s3_prefix="p/",
                                    s3_access_key_id="a", s3_secret_access_key="b"))
    assert isinstance(chosen, S3Storage) and chosen.object_key("k") == "p/k"
    with pytest.raises(StorageError, match="PIXELMINT_S3_BUCKET"):
        from_settings(Settings(data_dir=tmp_path, storage_backend="s3"))
    with pytest.raises(StorageError, match="PIXELMINT_S3_SECRET_ACCESS_KEY"):
        from_settings(Settings(data_dir=tmp_path, storage_backend="s3", s3_bucket="bkt", s3_access_key_id="a"))


async def test_apply_lifecycle_sets_our_rule_and_keeps_other_rules(s3_storage: S3Storage, s3_client: Any) -> None:
    other = {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}
    s3_client.put_bucket_lifecycle_configuration(Bucket=s3_storage.bucket, LifecycleConfiguration={"Rules": [other]})
    await s3_storage.apply_lifecycle(days=30)
    await s3_storage.apply_lifecycle(days=90)  # re-applying replaces our rule, never duplicates it
    rules = {r["ID"]: r for r in s3_client.get_bucket_lifecycle_configuration(Bucket=s3_storage.bucket)["Rules"]}
    assert set(rules) == {"logs", "pixelmint-image-retention"}
    ours = rules["pixelmint-image-retention"]
    assert ours["Filter"] == {"Prefix": "pm/generated/"} and ours["Expiration"] == {"Days": 90}
    assert ours["Status"] == "Enabled"
    with pytest.raises(ValueError):
        await s3_storage.apply_lifecycle(days=0)
