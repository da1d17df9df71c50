"""``kit/ids.new_id``: UUIDv7, in creation order."""

from __future__ import annotations

import datetime as dt

from pixelmint.kit.ids import new_id


def test_new_ids_are_version_7_in_creation_order_and_carry_the_time() -> None:
    before = dt.datetime.now(dt.UTC)
    ids = [new_id() for _ in range(10_000)]
    after = dt.datetime.now(dt.UTC)
    assert {i.version for i in ids} == {7}
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    millis = ids[0].int >> 80  # RFC 9562 §5.7: the first 48 bits are Unix milliseconds
    stamped = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    assert before - dt.timedelta(milliseconds=1) <= stamped <= after
