"""A worked example: a flashcards app that charges a Pixelmint team 10 credits per deck and holds
50 credits while it renders a video.

Set up once, from the repository root (operator; prints the app's service key once), granting the
app the team whose credits it may use (a team can also grant it itself:
``curl -X PUT -H "Authorization: Bearer $TEAM_API_KEY" http://127.0.0.1:8000/api/v1/credits/apps/APP_ID``):
    .venv/bin/pixelmint admin create-app flashcards --operation deck=10 --operation video=50 --team TEAM_ID --json

Run, from the repository root, with the service running (``./scripts/serve``); TEAM_ID is a team's
id (``pixelmint admin create-team`` prints it), the key is the ``serviceKey`` printed above:
    PIXELMINT_URL=http://127.0.0.1:8000 PIXELMINT_SERVICE_KEY=pms_… .venv/bin/python examples/flashcards_app.py TEAM_ID

The pattern: validate before the work (a cheap, advisory check), do the work, consume after it
succeeded — with an Idempotency-Key so a retried consume never charges twice. For work that takes
long, hold the credits first (reserve), then capture or release.
"""

from __future__ import annotations

import os
import sys
import uuid

from pixelmint.client import InsufficientCreditsError, PixelmintCredits


def build_deck(topic: str) -> list[tuple[str, str]]:
    """The app's own work (here: a trivial deck)."""
    return [(f"{topic} #{i}", f"answer {i}") for i in range(1, 11)]


def create_deck(credits: PixelmintCredits, team_id: str, topic: str) -> list[tuple[str, str]] | None:
    check = credits.validate_credits(team_id, "deck")
    if not check.has_credits:
        print(f"not enough credits: need {check.required_credits}, have {check.available_credits}")
        return None
    deck = build_deck(topic)
    try:
        charged = credits.consume_credits(
            team_id, "deck", description=f"deck: {topic}", metadata={"cards": len(deck)},
            idempotency_key=f"deck-{uuid.uuid4()}",
        )
    except InsufficientCreditsError as exc:  # spent elsewhere between validate and consume
        print(f"charge refused: {exc.required_credits} needed, {exc.available_credits} available")
        return None
    print(f"deck of {len(deck)} cards for {charged.consumed_credits} credits; {charged.available_credits} left")
    return deck


def render_video(credits: PixelmintCredits, team_id: str) -> None:
    """A long operation: hold the video's price (50 credits) for up to 10 minutes, then settle:
    capture when the work succeeded, release when it failed."""
    hold = credits.reserve(team_id, "video", ttl_seconds=600)
    try:
        ...  # the long work
    except Exception:
        credits.release(hold.hold_id)
        raise
    captured = credits.capture(hold.hold_id)
    print(f"video rendered: {captured.captured_amount} credits captured")


if __name__ == "__main__":
    client = PixelmintCredits(os.environ.get("PIXELMINT_URL", "http://127.0.0.1:8000"), os.environ["PIXELMINT_SERVICE_KEY"])
    team = sys.argv[1]
    if create_deck(client, team, "Spanish verbs") is not None:
        render_video(client, team)
