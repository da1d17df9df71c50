"""Image favourites: ``POST``/``DELETE /api/v1/images/{id}/favorite`` (idempotent, the team's own
images only), ``favorite`` in the image JSON and the ``favorite`` filter of the list."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.builders import auth, make_team
from tests.storage.builders import FUTURE, make_image, make_job


async def team_with_images(api, db, count: int, *, name: str = "team"):  # type: ignore[no-untyped-def]
    team = await make_team(db, name=name)
    job_id = await make_job(db, team=team)
    for _ in range(count):
        await make_image(db, api.app.state.runtime.storage, team=team, job_id=job_id, expires_in=FUTURE)
    images = (await api.get("/api/v1/images", headers=auth(team))).json()["items"]
    return team, [image["id"] for image in images]  # newest first


async def listed(api, team, **params) -> list[str]:  # type: ignore[no-untyped-def]
    response = await api.get("/api/v1/images", params=params, headers=auth(team))
    assert response.status_code == 200, response.text
    return [image["id"] for image in response.json()["items"]]


async def test_star_and_unstar_are_idempotent_and_filter_the_list(api, db) -> None:
    team, (newest, middle, oldest) = await team_with_images(api, db, 3)
    assert (await api.get(f"/api/v1/images/{newest}", headers=auth(team))).json()["favorite"] is False

    starred = []
    for _ in range(2):  # twice: the same answer, the first star's time kept
        response = await api.post(f"/api/v1/images/{oldest}/favorite", headers=auth(team))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == oldest and response.json()["favorite"] is True
        async with db.transaction() as session:
            starred.append(await session.scalar(text("SELECT favorited_at FROM images WHERE id = :id"), {"id": oldest}))
    assert starred[0] is not None and starred[1] == starred[0]
    await api.post(f"/api/v1/images/{newest}/favorite", headers=auth(team))

    assert await listed(api, team, favorite="true") == [newest, oldest]
    assert await listed(api, team, favorite="false") == [middle]
    assert await listed(api, team) == [newest, middle, oldest]
    assert [i["favorite"] for i in (await api.get("/api/v1/images", headers=auth(team))).json()["items"]] == [
        True, False, True]

    # The cursor pages through the favourites alone.
    page = (await api.get("/api/v1/images", params={"favorite": "true", "limit": 1}, headers=auth(team))).json()
    assert [i["id"] for i in page["items"]] == [newest] and page["nextCursor"]
    rest = (await api.get("/api/v1/images", params={"favorite": "true", "limit": 1, "cursor": page["nextCursor"]},
                          headers=auth(team))).json()
    assert [i["id"] for i in rest["items"]] == [oldest] and rest["nextCursor"] is None

    for _ in range(2):
        response = await api.delete(f"/api/v1/images/{oldest}/favorite", headers=auth(team))
        assert response.status_code == 200 and response.json()["favorite"] is False
    assert await listed(api, team, favorite="true") == [newest]
    assert await listed(api, team, favorite="false") == [middle, oldest]


async def test_another_teams_unknown_or_deleted_image_is_not_found(api, db) -> None:
    owner, (image, deleted) = await team_with_images(api, db, 2, name="owner")
    other, _ = await team_with_images(api, db, 1, name="other")
    assert (await api.delete(f"/api/v1/images/{deleted}", headers=auth(owner))).status_code == 204
    for caller, image_id in ((other, image), (owner, str(uuid.uuid4())), (owner, deleted)):
        for method in ("POST", "DELETE"):
            response = await api.request(method, f"/api/v1/images/{image_id}/favorite", headers=auth(caller))
            assert response.status_code == 404, (method, response.text)
            assert response.json()["error"] == "image_not_found"
    assert await listed(api, owner, favorite="true") == []  # the other team's attempt changed nothing

    assert (await api.post(f"/api/v1/images/{image}/favorite")).status_code == 401
    response = await api.post("/api/v1/images/not-an-id/favorite", headers=auth(owner))
    assert response.status_code == 422 and response.json()["field"] == "image_id"
    response = await api.get("/api/v1/images", params={"favorite": "maybe"}, headers=auth(owner))
    assert response.status_code == 422 and response.json()["field"] == "favorite"


async def test_openapi_documents_favourites(api) -> None:
    schema = api.app.openapi()
    operations = schema["paths"]["/api/v1/images/{image_id}/favorite"]
    for method in ("post", "delete"):
        responses = operations[method]["responses"]
        assert {"200", "401", "404", "422"} <= set(responses), sorted(responses)
        assert "image_not_found" in responses["404"]["description"]
        assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ImageOut"}
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/images"]["get"]["parameters"]}
    assert parameters["favorite"]["in"] == "query"
    assert "favorite" in schema["components"]["schemas"]["ImageOut"]["required"]
