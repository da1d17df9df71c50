"""The local-directory backend: delete_many and the key checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pixelmint.kit.errors import NotFound
from pixelmint.storage.backend import LocalStorage


async def test_delete_many_removes_files_and_ignores_missing_ones(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "secret")
    keys = [f"generated/t/2026/11/21/{i}.png" for i in range(3)]
    for key in keys:
        await storage.put(key, b"x", content_type="image/png", metadata={})
    await storage.delete_many([*keys[:2], "generated/t/never.png"])
    assert [(tmp_path / k).exists() for k in keys] == [False, False, True]
    await storage.delete_many([])


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside.png", "a/../../b.png", "a//b.png", "a/./b.png", "a\0b"])
async def test_keys_that_could_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "images", "secret")
    with pytest.raises(NotFound):
        await storage.put(key, b"x", content_type="image/png", metadata={})
    with pytest.raises(NotFound):
        await storage.delete_many(["fine.png", key])


def test_signed_path_does_not_follow_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "images", tmp_path / "secret.txt"
    root.mkdir()
    outside.write_text("not an image")
    (root / "link.png").symlink_to(outside)
    storage = LocalStorage(root, "secret")
    expires = int(time.time()) + 60
    with pytest.raises(NotFound):
        storage.verified_path("link.png", expires=expires, signature=storage.sign("link.png", expires))
