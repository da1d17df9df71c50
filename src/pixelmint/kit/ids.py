"""Time-ordered row ids for the tables that grow with use (jobs, images, credit reservations).

``new_id()`` is a UUIDv7 (RFC 9562 §5.7: 48 bits of Unix milliseconds, then random bits of which
``uuid_utils`` uses the first as a counter so that the ids of one millisecond stay in order),
returned as a standard ``uuid.UUID``. Rows written close together get ids
close together, so their primary-key entries share B-tree leaf pages: inserts stay on the index's
right edge, and the bulk updates of old rows (retention marking images deleted and jobs expired,
``flows/retention.py``) touch a few adjacent leaves per batch instead of one random leaf per row —
which at 10M rows means a page read and a full-page WAL image each (PostgreSQL 18's ``uuidv7()``
is the same format; ``../shared/reference/hot-rows-and-scale.md`` E7).

An id tells its row's creation time to the millisecond and is not a secret: nothing is
authorized by knowing one (rows are the team's, image URLs are signed). Tables written rarely
(teams, users, keys, apps) keep random UUIDv4 ids.
"""

from __future__ import annotations

import uuid

from uuid_utils.compat import uuid7


def new_id() -> uuid.UUID:
    """A fresh UUIDv7 (time-ordered, ms resolution, monotonic within a process)."""
    return uuid7()
