"""What the local backend exposes: image URLs never take their base from the Host header, served
files are not content-sniffed, and the data directory, image files and secret key are readable by
their owner only."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from pixelmint.settings import Settings
from pixelmint.storage.backend import LocalStorage
from tests.builders import auth, make_team
from tests.storage.builders import FUTURE, make_image, make_job


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_image_urls_ignore_the_host_header_and_files_are_not_sniffed(api, db) -> None:
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    team = await make_team(db, plan="pro")
    await make_image(db, runtime.storage, team=team, job_id=await make_job(db, team=team), expires_in=FUTURE)
    listed = await api.get("/api/v1/images", headers={**auth(team), "Host": "evil.example"})
    url = listed.json()["items"][0]["url"]
    assert url.startswith("http://testserver/files/"), url  # the address the server listens on

    served = await api.get(url)
    assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff"


async def test_the_public_url_setting_is_the_base_when_set(api, db, settings) -> None:
    settings.public_url = "https://images.example.com/"
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    team = await make_team(db, plan="pro")
    await make_image(db, runtime.storage, team=team, job_id=await make_job(db, team=team), expires_in=FUTURE)
    listed = await api.get("/api/v1/images", headers={**auth(team), "Host": "evil.example"})
    assert listed.json()["items"][0]["url"].startswith("https://images.example.com/files/")


async def test_stored_files_and_their_directories_are_private(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "images", "secret")
    await storage.put("team/2026/12/02/a.png", b"png", content_type="image/png", metadata={})
    await storage.put("team/2026/12/02/b.png", b"png", content_type="image/png", metadata={})
    assert mode(tmp_path / "images" / "team/2026/12/02/a.png") == 0o600
    for directory in ("images", "images/team", "images/team/2026", "images/team/2026/12", "images/team/2026/12/02"):
        assert mode(tmp_path / directory) == 0o700, directory


def test_the_secret_key_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Threads that start together on a fresh data directory all get the same key (created
    exclusively, never overwritten), in a 0600 file inside a 0700 directory."""
    settings = Settings(data_dir=tmp_path / "data", secret_key=None)
    keys: list[str] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        keys.append(settings.resolved_secret_key())

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) >= 32
    assert mode(tmp_path / "data") == 0o700 and mode(tmp_path / "data" / "secret_key") == 0o600
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret_key"]  # no temporary files left
